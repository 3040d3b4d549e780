"""Batch normalization and group normalization over the channel axis (the last one).

Batch normalization (Ioffe & Szegedy, "Batch Normalization: Accelerating Deep Network
Training by Reducing Internal Covariate Shift", 2015) standardizes every channel
with statistics over the batch and the spatial positions, then applies a learned
per-channel affine map::

    mu_c = mean_{n,h,w} x[n,h,w,c],   var_c = mean_{n,h,w} (x[n,h,w,c] - mu_c)^2
    y[n,h,w,c] = (x[n,h,w,c] - mu_c) / sqrt(var_c + eps) · weight_c + bias_c

In training the batch statistics are used and running estimates are updated,
``running = (1 - momentum) · running + momentum · batch`` with the *unbiased* batch
variance ``var_c · M / (M - 1)`` (``M`` values per channel), as PyTorch does; in
evaluation the running estimates replace the batch statistics.

Group normalization (Wu & He, "Group Normalization", 2018) computes the same
standardization per sample over groups of ``C / G`` channels and all positions, so
it does not depend on the batch size (detection heads train with 2 images a batch).

Speed: with channels last, an ``(N, H, W, C)`` array is viewed as a wide 2-D matrix
``(N·H, W·C)``: per-channel vectors are tiled to length ``W·C`` and column sums are
folded back to ``C``. Long rows keep NumPy's inner loops long (a ``(N·H·W, C)`` view
with ``C = 32`` is 1.5-6x slower). The backward passes use the fused closed forms
(one reduction pass, one elementwise pass) instead of differentiating step by step.
"""
import numpy as np

from nn._checks import check_array, check_finite, check_int, check_non_negative
from nn._threads import parallel_rows, parallel_sum
from nn.tensor import Function, Tensor

__all__ = [
    "batch_norm", "group_norm",
    "batch_norm_forward", "batch_norm_backward", "group_norm_forward", "group_norm_backward",
    "BatchNormFunction", "GroupNormFunction",
]


# ----------------------------------------------------------------- helpers
def _wide(a):
    """A ``(rows, K·C)`` view of a channels-last array, and ``K`` (positions per row).

    For ``(N, H, W, C)`` this is ``(N·H, W·C)``; for ``(N, C)`` it is ``(N, C)``.
    """
    k = a.shape[-2] if a.ndim >= 3 else 1
    return np.ascontiguousarray(a).reshape(-1, k * a.shape[-1]), k


def _as_array(value):
    return value.data if isinstance(value, Tensor) else value


# ------------------------------------------------------------- batch norm
def batch_norm_forward(x, weight, bias, running_mean, running_var, training, momentum, eps):
    """Batch normalization kernel over the last axis; updates running stats in place.

    Args:
        x (ndarray[N, ..., C]): float input.
        weight, bias (ndarray[C] or None): affine parameters.
        running_mean, running_var (ndarray[C] or None): running estimates; updated in
            place when ``training``; used instead of batch statistics otherwise.
        training (bool): use (and record) batch statistics.
        momentum (float): weight of the new batch in the running estimates.
        eps (float): added to the variance.
    Returns:
        tuple: ``y`` (ndarray, shape and dtype of x) and ``cache``
        ``(xc, invstd, weight, training)`` for ``batch_norm_backward``, where ``xc`` is
        ``x`` minus the mean used and ``invstd`` is ``1 / sqrt(var + eps)``.
    """
    c = x.shape[-1]
    wide, k = _wide(x)  # (rows, K·C)
    rows = wide.shape[0]
    count = rows * k  # M: values per channel
    row_bytes = wide.shape[1] * wide.itemsize
    # Every pass runs over ~1 MB blocks of rows on the library's threads; centering a
    # block and its sum of squares happen while the block is in cache.
    xc = np.empty_like(wide)  # (rows, K·C): x minus the mean used
    if training:
        total = parallel_sum(lambda a, b: wide[a:b].sum(axis=0), rows, row_bytes)  # (K·C,)
        mean = total.reshape(k, c).sum(axis=0) / count  # (C,)
        tiled_mean = np.tile(mean, k)

        def center(a, b):
            np.subtract(wide[a:b], tiled_mean, out=xc[a:b])
            return np.einsum("ij,ij->j", xc[a:b], xc[a:b])

        var = parallel_sum(center, rows, row_bytes).reshape(k, c).sum(axis=0) / count  # biased
        if running_mean is not None:
            running_mean *= 1 - momentum
            running_mean += momentum * mean
            running_var *= 1 - momentum
            running_var += momentum * var * (count / (count - 1))  # unbiased
    else:
        mean, var = running_mean.astype(x.dtype), running_var.astype(x.dtype)
        tiled_mean = np.tile(mean, k)
        parallel_rows(lambda a, b, slot: np.subtract(wide[a:b], tiled_mean, out=xc[a:b]),
                      rows, row_bytes)
    invstd = (1.0 / np.sqrt(var + eps)).astype(x.dtype)  # (C,)
    scale = invstd if weight is None else invstd * weight
    tiled_scale = np.tile(scale, k)
    tiled_bias = None if bias is None else np.tile(bias, k)
    y = np.empty_like(wide)

    def affine(a, b, slot):
        np.multiply(xc[a:b], tiled_scale, out=y[a:b])
        if tiled_bias is not None:
            y[a:b] += tiled_bias

    parallel_rows(affine, rows, row_bytes)
    return y.reshape(x.shape), (xc, invstd, weight, training)


def batch_norm_backward(grad, cache, needs_weight_grad=True, needs_bias_grad=True):
    """Gradients of batch normalization (the fused closed form).

    With ``xhat = xc · invstd``, ``g`` the output gradient, ``M`` values per channel::

        dbias   = sum g,   dweight = sum g · xhat
        dx      = weight · invstd · (g - dbias / M - xhat · dweight / M)   (training)
        dx      = weight · invstd · g                                      (evaluation)

    Args:
        grad (ndarray[N, ..., C]): gradient of the output.
        cache (tuple): from ``batch_norm_forward``.
    Returns:
        tuple: ``(dx, dweight, dbias)``; ``dweight``/``dbias`` are None without weight/bias.
    """
    xc, invstd, weight, training = cache
    c = grad.shape[-1]
    g, k = _wide(grad)  # (rows, K·C)
    rows, width = g.shape
    count = rows * k
    row_bytes = width * g.itemsize
    # In training both sums enter dx; in evaluation only the parameters need them.
    need_dbias = training or needs_bias_grad
    need_dweight = training or (weight is not None and needs_weight_grad)
    dbias = dweight = None
    if need_dbias or need_dweight:
        # One pass over ~1 MB blocks of rows gives both sums: (2, K·C).
        def sums(a, b):
            out = np.zeros((2, width), dtype=g.dtype)
            if need_dbias:
                out[0] = g[a:b].sum(axis=0)
            if need_dweight:
                out[1] = np.einsum("ij,ij->j", g[a:b], xc[a:b])
            return out

        both = parallel_sum(sums, rows, row_bytes).reshape(2, k, c).sum(axis=1)  # (2, C)
        dbias = both[0] if need_dbias else None  # sum g
        dweight = both[1] * invstd if need_dweight else None  # sum g · xhat
    scale = invstd if weight is None else invstd * weight  # (C,)
    tiled_scale = np.tile(scale, k)
    dx = np.empty_like(g)  # (rows, K·C)
    if training:
        # dx = scale · (g - dbias / M - xc · invstd · dweight / M), block by block in cache.
        tiled_coef = np.tile(invstd * dweight / count, k)
        tiled_shift = np.tile(dbias / count, k)

        def input_grad(a, b, slot):
            block = dx[a:b]
            np.multiply(xc[a:b], tiled_coef, out=block)
            block += tiled_shift
            np.subtract(g[a:b], block, out=block)
            block *= tiled_scale
    else:
        def input_grad(a, b, slot):
            np.multiply(g[a:b], tiled_scale, out=dx[a:b])

    parallel_rows(input_grad, rows, row_bytes)
    return (
        dx.reshape(grad.shape),
        dweight.astype(grad.dtype) if weight is not None and needs_weight_grad else None,
        dbias.astype(grad.dtype) if needs_bias_grad else None,
    )


def _norm_input_grads(ctx, grad, kernel_backward):
    """Gradients of ``(x, weight, bias)`` of a normalization Function from its backward
    kernel (``batch_norm_backward``, ``group_norm_backward``) and ``ctx.cache``; zeros
    for an empty input (``ctx.cache`` None: no statistics to use)."""
    if ctx.cache is None:
        c = grad.shape[-1]
        zeros = [np.zeros(c, grad.dtype) if need else None for need in ctx.needs_input_grad[1:]]
        return (np.zeros_like(grad), *zeros)
    return kernel_backward(
        grad, ctx.cache, ctx.needs_input_grad[1], ctx.needs_input_grad[2] and ctx.has_bias
    )


class BatchNormFunction(Function):
    """Autograd glue of ``batch_norm``: inputs ``(x, weight, bias)``."""

    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, training, momentum, eps):
        ctx.has_bias = bias is not None
        if x.size == 0:
            # PyTorch returns an empty output and leaves the running estimates alone.
            ctx.cache = None
            return x.copy()
        y, ctx.cache = batch_norm_forward(
            x, weight, bias, running_mean, running_var, training, momentum, eps
        )
        return y

    @staticmethod
    def backward(ctx, grad):
        return _norm_input_grads(ctx, grad, batch_norm_backward)


def _check_channel_vector(value, name, channels, dtype):
    if value is None:
        return None
    array = _as_array(value)
    if not isinstance(array, np.ndarray):
        raise TypeError(f"{name} must be an ndarray, a Tensor or None, got {type(value).__name__}")
    if array.shape != (channels,):
        raise ValueError(
            f"{name} must have shape ({channels},) to match the {channels} channels of x, "
            f"got {array.shape}"
        )
    check_array(array, name, "float", tensor=False)
    if dtype is not None and array.dtype != dtype:
        raise TypeError(f"{name} has dtype {array.dtype} but x has dtype {dtype}")
    return array


def _check_input(x, min_ndim, what):
    array = x.data if isinstance(x, Tensor) else np.asarray(x)
    if array.ndim < min_ndim:
        raise ValueError(f"x must be {what}, got shape {array.shape}")
    check_array(array, "x", "float", tensor=False)
    return array


def batch_norm(x, running_mean, running_var, weight=None, bias=None, training=False,
               momentum=0.1, eps=1e-5):
    """Batch normalization over the last (channel) axis, PyTorch's ``batch_norm`` semantics.

    Args:
        x (Tensor or ndarray[N, ..., C]): float input, channels last (``(N, H, W, C)``
            for images, ``(N, C)`` for vectors).
        running_mean, running_var (ndarray[C] or None): running estimates, updated in
            place when ``training`` (variance unbiased); None to keep none (then
            ``training`` must be True).
        weight, bias (Tensor or ndarray[C], optional): per-channel affine map.
        training (bool): normalize with batch statistics (else with the running ones).
        momentum (float): weight of the current batch in the running estimates.
        eps (float): added to the variance for stability.
    Returns:
        Tensor: same shape and dtype as ``x``.
    Raises:
        ValueError: a shape that does not match the channels, one running value per
            channel in training, evaluation without running statistics.
        TypeError: non-float input, or parameters of another dtype than ``x``.
    """
    array = _check_input(x, 2, "at least 2-D (N, ..., C) with channels last")
    c = array.shape[-1]
    running_mean = _check_channel_vector(running_mean, "running_mean", c, None)
    running_var = _check_channel_vector(running_var, "running_var", c, None)
    _check_channel_vector(weight, "weight", c, array.dtype)
    _check_channel_vector(bias, "bias", c, array.dtype)
    if (running_mean is None) != (running_var is None):
        raise ValueError("running_mean and running_var must both be given or both be None")
    if not training and running_mean is None:
        raise ValueError("batch_norm in evaluation mode (training=False) needs running_mean "
                         "and running_var")
    if training and array.size // max(c, 1) <= 1 and array.size > 0:
        raise ValueError(
            f"batch_norm in training needs more than 1 value per channel, got input shape "
            f"{array.shape}"
        )
    momentum = check_finite(momentum, "momentum")
    eps = check_non_negative(eps, "eps")
    return BatchNormFunction.apply(
        x, weight, bias, running_mean=running_mean, running_var=running_var,
        training=bool(training), momentum=momentum, eps=eps,
    )


# ------------------------------------------------------------- group norm
def _sample_wide(a):
    """A ``(N, R, K·C)`` view of a channels-last array, and ``K`` (positions per row)."""
    k = a.shape[-2] if a.ndim >= 3 else 1
    return np.ascontiguousarray(a).reshape(a.shape[0], -1, k * a.shape[-1]), k


def _per_sample_channel(wide, k, c):
    """Per-sample, per-channel sums: ``(N, R, K·C) -> (N, C)``."""
    return wide.sum(axis=1).reshape(-1, k, c).sum(axis=1)


def _per_sample_channel_dot(wide_a, wide_b, k, c):
    """Per-sample, per-channel ``sum(a · b)``: ``-> (N, C)``."""
    return np.einsum("nrj,nrj->nj", wide_a, wide_b).reshape(-1, k, c).sum(axis=1)


def group_norm_forward(x, num_groups, weight, bias, eps):
    """Group normalization kernel: statistics per sample and group of channels.

    Args:
        x (ndarray[N, ..., C]): float input; ``C`` divisible by ``num_groups``.
        num_groups (int): ``G``.
        weight, bias (ndarray[C] or None): affine parameters.
        eps (float): added to the variance.
    Returns:
        tuple: ``y`` (ndarray, shape and dtype of x) and ``cache``
        ``(xc, invstd, weight, k)``: ``xc`` is ``x`` minus its group means as an
        ``(N, R, K·C)`` view, ``invstd`` the ``(N, G)`` inverse standard deviations.
    """
    n, c = x.shape[0], x.shape[-1]
    group = c // num_groups
    wide, k = _sample_wide(x)  # (N, R, K·C)
    count = wide.shape[1] * k * group  # values per (sample, group)

    def group_sum(v):  # (N, C) -> (N, G)
        return v.reshape(n, num_groups, group).sum(axis=-1)

    def per_channel(v):  # (N, G) -> (N, C)
        return np.repeat(v, group, axis=1)

    def to_wide(v):  # (N, C) -> (N, 1, K·C): one value per channel, tiled over K
        return np.tile(v, (1, k))[:, None, :]

    mean = group_sum(_per_sample_channel(wide, k, c)) / count  # (N, G)
    xc = wide - to_wide(per_channel(mean))  # (N, R, K·C)
    var = group_sum(_per_sample_channel_dot(xc, xc, k, c)) / count  # (N, G), biased
    invstd = (1.0 / np.sqrt(var + eps)).astype(x.dtype)  # (N, G)
    scale = per_channel(invstd) if weight is None else per_channel(invstd) * weight  # (N, C)
    y = xc * to_wide(scale)
    if bias is not None:
        y += np.tile(bias, k)
    return y.reshape(x.shape), (xc, invstd, weight, k)


def group_norm_backward(grad, cache, needs_weight_grad=True, needs_bias_grad=True):
    """Gradients of group normalization (the fused closed form, per sample and group).

    With ``xhat = xc · invstd``, ``d = g · weight`` and means over a group's values::

        dx      = invstd · (d - mean(d) - xhat · mean(d · xhat))
        dweight = sum_{n, positions} g · xhat,    dbias = sum_{n, positions} g

    Args:
        grad (ndarray[N, ..., C]): gradient of the output.
        cache (tuple): from ``group_norm_forward``.
    Returns:
        tuple: ``(dx, dweight, dbias)``; the parameter gradients are None when not needed.
    """
    xc, invstd, weight, k = cache
    n, c = grad.shape[0], grad.shape[-1]
    num_groups = invstd.shape[1]
    group = c // num_groups
    count = xc.shape[1] * k * group
    g = np.ascontiguousarray(grad).reshape(xc.shape)  # (N, R, K·C)

    def group_sum(v):  # (N, C) -> (N, G)
        return v.reshape(n, num_groups, group).sum(axis=-1)

    def per_channel(v):  # (N, G) -> (N, C)
        return np.repeat(v, group, axis=1)

    def to_wide(v):  # (N, C) -> (N, 1, K·C)
        return np.tile(v, (1, k))[:, None, :]

    w = np.ones(c, dtype=g.dtype) if weight is None else weight
    sum_g = _per_sample_channel(g, k, c)  # (N, C)
    sum_g_xc = _per_sample_channel_dot(g, xc, k, c)  # (N, C)
    mean_d = group_sum(sum_g * w) / count  # (N, G)
    mean_d_xhat = group_sum(sum_g_xc * w) * invstd / count  # (N, G)
    dx = g * to_wide(per_channel(invstd) * w)
    dx -= xc * to_wide(per_channel(invstd * invstd * mean_d_xhat))
    dx -= to_wide(per_channel(invstd * mean_d))
    dweight = dbias = None
    if weight is not None and needs_weight_grad:
        dweight = (sum_g_xc * per_channel(invstd)).sum(axis=0).astype(grad.dtype)  # (C,)
    if needs_bias_grad:
        dbias = sum_g.sum(axis=0).astype(grad.dtype)  # (C,)
    return dx.reshape(grad.shape), dweight, dbias


class GroupNormFunction(Function):
    """Autograd glue of ``group_norm``: inputs ``(x, weight, bias)``."""

    @staticmethod
    def forward(ctx, x, weight, bias, num_groups, eps):
        ctx.has_bias = bias is not None
        if x.size == 0:
            ctx.cache = None
            return x.copy()
        y, ctx.cache = group_norm_forward(x, num_groups, weight, bias, eps)
        return y

    @staticmethod
    def backward(ctx, grad):
        return _norm_input_grads(ctx, grad, group_norm_backward)


def group_norm(x, num_groups, weight=None, bias=None, eps=1e-5):
    """Group normalization over the last (channel) axis, PyTorch's ``group_norm`` semantics.

    Channels are split into ``num_groups`` consecutive groups; each sample's group is
    standardized with its own mean and (biased) variance over all positions, then the
    per-channel affine map is applied.

    Args:
        x (Tensor or ndarray[N, ..., C]): float input, channels last.
        num_groups (int): ``G``, dividing ``C``.
        weight, bias (Tensor or ndarray[C], optional): per-channel affine map.
        eps (float): added to the variance.
    Returns:
        Tensor: same shape and dtype as ``x``.
    """
    array = _check_input(x, 2, "at least 2-D (N, ..., C) with channels last")
    c = array.shape[-1]
    num_groups = check_int(num_groups, "num_groups", 1)
    if c % num_groups != 0:
        raise ValueError(f"num_groups={num_groups} must divide the number of channels {c}")
    _check_channel_vector(weight, "weight", c, array.dtype)
    _check_channel_vector(bias, "bias", c, array.dtype)
    if array.size // num_groups == 1:
        # PyTorch's check: a single value in all (sample, group) pairs cannot be normalized.
        raise ValueError(
            f"group_norm needs more than 1 value per group over the batch, got input shape "
            f"{array.shape} with num_groups={num_groups}"
        )
    eps = check_non_negative(eps, "eps")
    return GroupNormFunction.apply(x, weight, bias, num_groups=num_groups, eps=eps)
