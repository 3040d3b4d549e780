"""Elementwise activations, softmax and dropout.

Each activation is a pair of plain NumPy kernels (``*_forward`` / ``*_backward`` on
ndarrays) and a thin autograd ``Function`` around them; the public functions
(``relu``, ``softmax``, ...) accept Tensors or ndarrays and return Tensors.
All kernels keep the input's dtype (float32 stays float32, float64 stays float64).

Numerical stability: ``sigmoid`` never evaluates ``exp`` of a positive number, and
``softmax``/``log_softmax`` subtract the maximum along the class axis first
(``softmax(x) = softmax(x - max(x))``), so logits of ±1000 give exact results.
"""
import numpy as np

from nn._checks import check_array, check_probability, check_real
from nn._threads import parallel_rows
from nn.random import get_generator
from nn.tensor import Function, Tensor, normalize_axis

__all__ = [
    "relu", "leaky_relu", "sigmoid", "tanh", "softmax", "log_softmax", "dropout",
    "sigmoid_forward", "log_sigmoid_forward", "softmax_forward", "log_softmax_forward",
    "relu_forward", "relu_backward", "softmax_backward", "log_softmax_backward",
]


# ------------------------------------------------------------------- kernels
def _elementwise_blocks(function, x):
    """``function(x)`` evaluated on ~1 MB blocks of ``x`` on the library's threads."""
    flat = np.ascontiguousarray(x).reshape(-1)
    out = np.empty_like(flat)

    def block(a, b, slot):
        out[a:b] = function(flat[a:b])

    parallel_rows(block, flat.size, flat.itemsize)
    return out.reshape(np.shape(x))


def _sigmoid(x):
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(x.dtype, copy=False)


def _log_sigmoid(x):
    return (np.minimum(x, 0) - np.log1p(np.exp(-np.abs(x)))).astype(x.dtype, copy=False)


def sigmoid_forward(x):
    """Stable logistic function ``1 / (1 + exp(-x))`` on an ndarray.

    Uses ``e = exp(-|x|) <= 1``: ``sigmoid(x) = 1/(1+e)`` for x >= 0 and ``e/(1+e)``
    for x < 0, so nothing overflows. Evaluated in blocks on the library's threads.
    """
    return _elementwise_blocks(_sigmoid, np.asarray(x))


def log_sigmoid_forward(x):
    """Stable ``log(sigmoid(x)) = -softplus(-x) = min(x, 0) - log1p(exp(-|x|))``."""
    return _elementwise_blocks(_log_sigmoid, np.asarray(x))


def _last_axis_rows(x, axis):
    """``x`` as contiguous rows ``(R, K)`` when ``axis`` is its last axis, else None."""
    if x.ndim == 0 or axis % x.ndim != x.ndim - 1 or not x.flags.c_contiguous:
        return None
    return x.reshape(-1, x.shape[-1])


def softmax_forward(x, axis=-1):
    """``exp(x - max) / sum(exp(x - max))`` along ``axis`` (ndarray in, ndarray out).

    Along the last axis (the class axis of channels-last logits) the rows are cut
    into ~1 MB blocks, each normalized in cache, on the library's threads.
    """
    axis = normalize_axis(axis, x.ndim)
    if x.shape[axis] == 0:
        return x.copy()
    rows = _last_axis_rows(x, axis)
    if rows is None:
        shifted = x - x.max(axis=axis, keepdims=True)
        e = np.exp(shifted)
        return e / e.sum(axis=axis, keepdims=True)
    y = np.empty_like(rows)  # (R, K)

    def block(a, b, slot):
        out = y[a:b]
        np.subtract(rows[a:b], rows[a:b].max(axis=1, keepdims=True), out=out)
        np.exp(out, out=out)
        out /= out.sum(axis=1, keepdims=True)

    parallel_rows(block, rows.shape[0], rows.shape[1] * rows.itemsize)
    return y.reshape(x.shape)


def log_softmax_forward(x, axis=-1, return_probs=False):
    """``x - max - log(sum(exp(x - max)))`` along ``axis`` (ndarray in, ndarray out).

    With ``return_probs`` also returns ``softmax(x)``, which backward passes need:
    dividing the exponentials already computed here is ~3x cheaper than a second
    ``exp`` of the log-probabilities later. Along the last axis the rows go in
    ~1 MB blocks over the library's threads.
    """
    axis = normalize_axis(axis, x.ndim)
    if x.shape[axis] == 0:
        return (x.copy(), x.copy()) if return_probs else x.copy()
    rows = _last_axis_rows(x, axis)
    if rows is None:
        shifted = x - x.max(axis=axis, keepdims=True)
        e = np.exp(shifted)
        total = e.sum(axis=axis, keepdims=True)
        shifted -= np.log(total)  # now the log-probabilities
        if not return_probs:
            return shifted
        e /= total  # now the probabilities
        return shifted, e
    logp = np.empty_like(rows)  # (R, K)
    probs = np.empty_like(rows) if return_probs else None

    def block(a, b, slot):
        shifted = logp[a:b]
        np.subtract(rows[a:b], rows[a:b].max(axis=1, keepdims=True), out=shifted)
        e = np.exp(shifted) if probs is None else np.exp(shifted, out=probs[a:b])
        total = e.sum(axis=1, keepdims=True)
        shifted -= np.log(total)  # now the log-probabilities
        if probs is not None:
            e /= total  # now the probabilities

    parallel_rows(block, rows.shape[0], rows.shape[1] * rows.itemsize)
    if not return_probs:
        return logp.reshape(x.shape)
    return logp.reshape(x.shape), probs.reshape(x.shape)


def softmax_backward(grad, y, axis=-1):
    """``y ⊙ (g - Σ g ⊙ y)`` along ``axis``: the vector-Jacobian product of softmax.

    Along the last axis, in ~1 MB blocks of rows on the library's threads.
    """
    grad = np.ascontiguousarray(grad)
    rows, y_rows = _last_axis_rows(grad, axis), _last_axis_rows(y, axis)
    if rows is None or y_rows is None:
        return y * (grad - (grad * y).sum(axis=axis, keepdims=True))
    dx = np.empty_like(rows)  # (R, K)

    def block(a, b, slot):
        out = dx[a:b]
        np.multiply(rows[a:b], y_rows[a:b], out=out)
        total = out.sum(axis=1, keepdims=True)  # Σ g ⊙ y per row
        np.subtract(rows[a:b], total, out=out)
        out *= y_rows[a:b]

    parallel_rows(block, rows.shape[0], rows.shape[1] * rows.itemsize)
    return dx.reshape(grad.shape)


def log_softmax_backward(grad, probs, axis=-1):
    """``g - softmax(x) ⊙ Σ g`` along ``axis``, in blocks of rows along the last axis."""
    grad = np.ascontiguousarray(grad)
    rows, p_rows = _last_axis_rows(grad, axis), _last_axis_rows(probs, axis)
    if rows is None or p_rows is None:
        return grad - probs * grad.sum(axis=axis, keepdims=True)
    dx = np.empty_like(rows)  # (R, K)

    def block(a, b, slot):
        out = dx[a:b]
        np.multiply(p_rows[a:b], rows[a:b].sum(axis=1, keepdims=True), out=out)
        np.subtract(rows[a:b], out, out=out)

    parallel_rows(block, rows.shape[0], rows.shape[1] * rows.itemsize)
    return dx.reshape(grad.shape)


def relu_forward(x):
    """``(max(x, 0), x > 0)`` on an ndarray, in ~1 MB blocks over the library's threads."""
    flat = np.ascontiguousarray(x).reshape(-1)
    mask = np.empty(flat.shape, dtype=bool)
    y = np.empty_like(flat)

    def block(a, b, slot):
        np.greater(flat[a:b], 0, out=mask[a:b])
        np.multiply(flat[a:b], mask[a:b], out=y[a:b])

    parallel_rows(block, flat.size, flat.itemsize)
    return y.reshape(x.shape), mask.reshape(x.shape)


def relu_backward(grad, mask):
    """``grad · mask`` in ~1 MB blocks over the library's threads."""
    flat = np.ascontiguousarray(grad).reshape(-1)
    flat_mask = mask.reshape(-1)
    dx = np.empty_like(flat)
    parallel_rows(lambda a, b, slot: np.multiply(flat[a:b], flat_mask[a:b], out=dx[a:b]),
                  flat.size, flat.itemsize)
    return dx.reshape(grad.shape)


# --------------------------------------------------------------- Functions
class ReLUFunction(Function):
    """``max(x, 0)``; the gradient at exactly 0 is 0 (PyTorch's choice)."""

    @staticmethod
    def forward(ctx, x):
        y, mask = relu_forward(x)
        ctx.save_for_backward(mask)
        return y

    @staticmethod
    def backward(ctx, grad):
        (mask,) = ctx.saved_tensors
        return relu_backward(grad, mask)


class LeakyReLUFunction(Function):
    """``x`` for x > 0, ``negative_slope · x`` otherwise."""

    @staticmethod
    def forward(ctx, x, negative_slope=0.01):
        mask = x > 0
        ctx.save_for_backward(mask)
        ctx.negative_slope = negative_slope
        return np.where(mask, x, x * x.dtype.type(negative_slope))

    @staticmethod
    def backward(ctx, grad):
        (mask,) = ctx.saved_tensors
        return np.where(mask, grad, grad * grad.dtype.type(ctx.negative_slope))


class SigmoidFunction(Function):
    """``σ(x) = 1 / (1 + exp(-x))``; ``dσ/dx = σ (1 - σ)``."""

    @staticmethod
    def forward(ctx, x):
        y = sigmoid_forward(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad):
        (y,) = ctx.saved_tensors
        return grad * y * (1 - y)


class TanhFunction(Function):
    """``tanh(x)``; derivative ``1 - tanh²``."""

    @staticmethod
    def forward(ctx, x):
        y = np.tanh(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad):
        (y,) = ctx.saved_tensors
        return grad * (1 - y * y)


class SoftmaxFunction(Function):
    """Softmax along ``axis``; backward ``y ⊙ (g - Σ g ⊙ y)`` (the Jacobian-vector product)."""

    @staticmethod
    def forward(ctx, x, axis=-1):
        y = softmax_forward(x, axis)
        ctx.save_for_backward(y)
        ctx.axis = axis
        return y

    @staticmethod
    def backward(ctx, grad):
        (y,) = ctx.saved_tensors
        return softmax_backward(grad, y, ctx.axis)


class LogSoftmaxFunction(Function):
    """Log-softmax along ``axis``; backward ``g - softmax(x) ⊙ Σ g``."""

    @staticmethod
    def forward(ctx, x, axis=-1):
        out, probs = log_softmax_forward(x, axis, return_probs=True)
        ctx.save_for_backward(probs)
        ctx.axis = axis
        return out

    @staticmethod
    def backward(ctx, grad):
        (probs,) = ctx.saved_tensors
        return log_softmax_backward(grad, probs, ctx.axis)


class DropoutFunction(Function):
    """Multiply by a fixed mask already scaled by ``1 / (1 - p)`` (inverted dropout)."""

    @staticmethod
    def forward(ctx, x, mask=None):
        ctx.save_for_backward(mask)
        return x * mask

    @staticmethod
    def backward(ctx, grad):
        (mask,) = ctx.saved_tensors
        return grad * mask


# ------------------------------------------------------------ public API
def relu(x):
    """Rectified linear unit ``max(x, 0)``.

    Args:
        x (Tensor or ndarray[...]): floating point.
    Returns:
        Tensor[...]: same shape and dtype.
    """
    check_array(x, "x", "float")
    return ReLUFunction.apply(x)


def leaky_relu(x, negative_slope=0.01):
    """Leaky ReLU (Maas et al., 2013): ``x if x > 0 else negative_slope · x``.

    Args:
        x (Tensor or ndarray[...]): floating point.
        negative_slope (float): slope for negative inputs.
    Returns:
        Tensor[...]: same shape and dtype.
    """
    check_array(x, "x", "float")
    negative_slope = check_real(negative_slope, "negative_slope")
    return LeakyReLUFunction.apply(x, negative_slope=negative_slope)


def sigmoid(x):
    """Logistic function ``1 / (1 + exp(-x))``, stable for any finite ``x``.

    Args:
        x (Tensor or ndarray[...]): floating point.
    Returns:
        Tensor[...]: values in [0, 1], same dtype.
    """
    check_array(x, "x", "float")
    return SigmoidFunction.apply(x)


def tanh(x):
    """Hyperbolic tangent.

    Args:
        x (Tensor or ndarray[...]): floating point.
    Returns:
        Tensor[...]: values in [-1, 1], same dtype.
    """
    check_array(x, "x", "float")
    return TanhFunction.apply(x)


def softmax(x, axis=-1):
    """Softmax ``exp(x_k) / Σ_j exp(x_j)`` along ``axis`` (the class axis, last by default).

    Args:
        x (Tensor or ndarray[..., K]): logits, floating point.
        axis (int): axis of the classes.
    Returns:
        Tensor[..., K]: probabilities summing to 1 along ``axis``.
    """
    check_array(x, "x", "float")
    axis = normalize_axis(axis, x.ndim)
    return SoftmaxFunction.apply(x, axis=axis)


def log_softmax(x, axis=-1):
    """``log(softmax(x))`` computed as ``x - logsumexp(x)``, stable for ±1000 logits.

    Args:
        x (Tensor or ndarray[..., K]): logits, floating point.
        axis (int): axis of the classes.
    Returns:
        Tensor[..., K]: log-probabilities (<= 0).
    """
    check_array(x, "x", "float")
    axis = normalize_axis(axis, x.ndim)
    return LogSoftmaxFunction.apply(x, axis=axis)


def dropout(x, p=0.5, training=True, generator=None):
    """Inverted dropout (Srivastava et al., 2014): zero each element with probability
    ``p`` and scale the rest by ``1 / (1 - p)``, so the expectation is unchanged.

    Args:
        x (Tensor or ndarray[...]): floating point.
        p (float): drop probability in [0, 1]; p = 1 gives zeros.
        training (bool): when False (or p = 0) the input is returned unchanged.
        generator (np.random.Generator or int, optional): source of the mask; defaults
            to the generator seeded by ``nn.manual_seed``.
    Returns:
        Tensor[...]: same shape and dtype.
    """
    check_array(x, "x", "float")
    p = check_probability(p, "dropout probability p")
    if not training or p == 0.0:
        return x if isinstance(x, Tensor) else Tensor(x)
    rng = get_generator(generator)
    dtype = x.dtype
    keep = rng.random(x.shape) >= p
    scale = 0.0 if p == 1.0 else 1.0 / (1.0 - p)
    mask = keep.astype(dtype) * dtype.type(scale)
    return DropoutFunction.apply(x, mask=mask)
