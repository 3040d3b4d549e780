"""Fully connected ("dense") layer ``y = x W + b``, weight stored ``(in_features, out_features)``.

The public function is ``nn.functional.linear`` (PyTorch's name); the module is called
``dense`` so that ``nn.functional.linear`` names one thing, the function.

Storing ``W`` as ``(in, out)`` (not PyTorch's ``(out, in)``) makes the forward a plain
``x @ W`` and matches the channels-last convention: the last axis of ``x`` is the
feature axis, and any leading axes (batch, H, W) are flattened into the GEMM rows.
"""
import numpy as np

from nn._checks import check_array, check_same_dtype, check_shape
from nn.tensor import Function

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
    x_data = check_array(x, "x", "float")
    w_data = check_array(weight, "weight")
    check_shape(w_data, "weight", ("in_features", "out_features"))
    if x_data.ndim < 1 or x_data.shape[-1] != w_data.shape[0]:
        raise ValueError(f"x must have shape (..., {w_data.shape[0]}) to match weight "
                         f"{w_data.shape}, got {x_data.shape}")
    check_same_dtype(w_data, "weight", x_data, "x")
    if bias is not None:
        b_data = check_array(bias, "bias")
        check_shape(b_data, "bias", (w_data.shape[1],))
        check_same_dtype(b_data, "bias", x_data, "x")
    return LinearFunction.apply(x, weight, bias)
