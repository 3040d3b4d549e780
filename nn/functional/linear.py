"""Fully connected layer ``y = x W + b`` with the weight stored ``(in_features, out_features)``.

Storing ``W`` as ``(in, out)`` (not PyTorch's ``(out, in)``) makes the forward a plain
``x @ W`` and matches the channels-last convention: the last axis of ``x`` is the
feature axis, and any leading axes (batch, H, W) are flattened into the GEMM rows.
"""
import numpy as np

from nn.tensor import Function, Tensor

__all__ = ["linear", "linear_forward", "linear_backward", "LinearFunction"]


def _num_rows(shape):
    # An explicit row count (not -1) so that zero-size inputs reshape too.
    return int(np.prod(shape[:-1], dtype=np.int64))


def linear_forward(x, weight, bias=None):
    """``y = x @ weight + bias`` over the last axis of ``x``.

    Args:
        x (ndarray[..., in]): input.
        weight (ndarray[in, out]): weight.
        bias (ndarray[out] or None): bias.
    Returns:
        ndarray[..., out]
    """
    rows = x.reshape(_num_rows(x.shape), x.shape[-1])  # (prod(...), in)
    y = rows @ weight  # (prod(...), out)
    if bias is not None:
        y += bias
    return y.reshape(x.shape[:-1] + (weight.shape[1],))  # (..., out)


def linear_backward(grad, x, weight, need_x=True, need_weight=True, need_bias=True):
    """Gradients of ``linear_forward``: ``dx = g Wᵀ``, ``dW = xᵀ g``, ``db = Σ g``.

    Args:
        grad (ndarray[..., out]): gradient of the output.
        x (ndarray[..., in]), weight (ndarray[in, out]): forward inputs.
    Returns:
        tuple: ``(dx or None, dweight or None, dbias or None)``.
    """
    rows = _num_rows(x.shape)
    g2 = grad.reshape(rows, grad.shape[-1])  # (prod(...), out)
    dx = (g2 @ weight.T).reshape(x.shape) if need_x else None
    dw = x.reshape(rows, x.shape[-1]).T @ g2 if need_weight else None  # (in, out)
    db = g2.sum(axis=0) if need_bias else None
    return dx, dw, db


class LinearFunction(Function):
    """Autograd glue around ``linear_forward`` / ``linear_backward``."""

    @staticmethod
    def forward(ctx, x, weight, bias=None):
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return linear_forward(x, weight, bias)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        need = ctx.needs_input_grad
        dx, dw, db = linear_backward(
            grad, x, weight,
            need_x=need[0], need_weight=need[1], need_bias=ctx.has_bias and need[2],
        )
        return dx, dw, db


def _shape_dtype(value, name):
    if isinstance(value, (Tensor, np.ndarray)):
        return value.shape, value.dtype
    raise TypeError(f"{name} must be a Tensor or ndarray, got {type(value).__name__}")


def linear(x, weight, bias=None):
    """Affine map over the last axis: ``y = x W + b``.

    Args:
        x (Tensor or ndarray[..., in]): floating point, at least 1-D.
        weight (Tensor or ndarray[in, out]): same dtype as ``x``.
        bias (Tensor or ndarray[out], optional).
    Returns:
        Tensor[..., out]
    Raises:
        ValueError: mismatched shapes; TypeError: mismatched or non-float dtypes.
    """
    x_shape, x_dtype = _shape_dtype(x, "x")
    w_shape, w_dtype = _shape_dtype(weight, "weight")
    if not np.issubdtype(x_dtype, np.floating):
        raise TypeError(f"x must have a floating-point dtype, got {x_dtype}")
    if len(w_shape) != 2:
        raise ValueError(f"weight must have shape (in_features, out_features), got {w_shape}")
    if len(x_shape) < 1 or x_shape[-1] != w_shape[0]:
        raise ValueError(
            f"x must have shape (..., {w_shape[0]}) to match weight {w_shape}, got {x_shape}"
        )
    if w_dtype != x_dtype:
        raise TypeError(f"weight dtype {w_dtype} does not match x dtype {x_dtype}")
    if bias is not None:
        b_shape, b_dtype = _shape_dtype(bias, "bias")
        if b_shape != (w_shape[1],):
            raise ValueError(f"bias must have shape ({w_shape[1]},), got {b_shape}")
        if b_dtype != x_dtype:
            raise TypeError(f"bias dtype {b_dtype} does not match x dtype {x_dtype}")
    return LinearFunction.apply(x, weight, bias)
