"""Resizing feature maps: nearest and bilinear ``interpolate``, channels-last.

Decoders upsample: FCN's score maps, U-Net's expanding path and the top-down
pathway of a feature pyramid (Lin et al., "Feature Pyramid Networks for Object
Detection", 2017, uses nearest 2x) all call ``interpolate``. The semantics are
PyTorch's to the last index, including its float32 arithmetic:

- **nearest**: output index ``o`` reads input ``min(floor(o · scale), in - 1)``
  computed in float32, where ``scale = 1 / scale_factor`` when a scale factor was
  given (and not recomputed) and ``in / out`` otherwise; an output as large as the
  input, or exactly twice as large, reads ``o`` and ``o // 2`` without arithmetic.
  ``nearest-exact`` reads ``min(floor((o + 0.5) · scale), in - 1)``.
- **bilinear** (separable: linear along H, then along W)::

      align_corners=True:   src = o · (in - 1) / (out - 1)
      align_corners=False:  src = max(scale · (o + 0.5) - 0.5, 0)   (half-pixel centres)
      i0 = min(floor(src), in - 1),  i1 = min(i0 + 1, in - 1),  l1 = src - i0
      y[o] = (1 - l1) · x[i0] + l1 · x[i1]

  with ``scale`` chosen as for nearest, so ``scale_factor=1.5`` and the
  equivalent ``size`` give different maps unless ``recompute_scale_factor=True``.

Both modes are separable linear maps: along each axis, output ``o`` is a weighted
sum of a few inputs. The kernels store such a map as *taps* (a sparse "ELL"
matrix): ``index[r, o]`` and ``weight[r, o]`` for ``r < R``, the ``r``-th input of
output ``o`` and its weight (bilinear: ``R = 2``; padded taps have weight 0). One
axis is then ``R`` gathers (``np.take``) and multiply-adds, and the gradient is the
same with the transposed taps (for each input, the outputs that read it), so there
is no scatter-add. Gathers along H copy whole ``W·C`` rows; along W, runs of ``C``.
Nearest with integer factors (``Ho = k·H``) is one broadcast copy forward and a sum
over the ``k`` replicas backward. (Dense ``(Ho, H)`` matrices applied with GEMMs
cost ``O(H)`` per output instead of ``O(R)``, and the column pass becomes thousands
of tiny GEMMs, which OpenBLAS runs badly on a busy machine.)
"""
import math

import numpy as np

from nn._checks import check_choice, check_pair, check_positive
from nn.tensor import Function, Tensor

__all__ = [
    "interpolate", "interpolate_forward", "interpolate_backward",
    "nearest_source_indices", "linear_source_weights", "interpolation_taps",
    "transpose_taps", "taps_matrix", "apply_taps", "separable_map", "InterpolateFunction",
]

MODES = ("nearest", "nearest-exact", "bilinear")


# ------------------------------------------------------- source positions
def _kernel_scale(in_size, out_size, scale, dtype):
    """Input pixels per output pixel as PyTorch's kernels compute it, in ``dtype``.

    ``1 / scale_factor`` (computed in double, then rounded) when a scale factor is
    passed to the kernel, else ``in / out`` computed in ``dtype``.
    """
    if scale is not None and scale > 0:
        return dtype.type(1.0 / scale)
    return dtype.type(in_size) / dtype.type(out_size)


def nearest_source_indices(in_size, out_size, scale=None, exact=False):
    """Input index read by each output index in ``nearest`` (or ``nearest-exact``) mode.

    Args:
        in_size, out_size (int): lengths along the axis.
        scale (float, optional): the scale factor handed to the kernel (None: use sizes).
        exact (bool): ``nearest-exact`` (pixel centres) instead of PyTorch's legacy rule.
    Returns:
        ndarray[out_size] int64, non-decreasing.
    """
    dst = np.arange(out_size)
    if not exact:
        if out_size == in_size:
            return dst
        if out_size == 2 * in_size:
            return dst >> 1
    s = _kernel_scale(in_size, out_size, scale, np.dtype(np.float32))
    if exact:
        # PyTorch: floorf((dst + 0.5) * scale): a double product rounded to float32.
        src = np.floor(((dst + 0.5) * np.float64(s)).astype(np.float32))
    else:
        src = np.floor(dst.astype(np.float32) * s)  # float32 product, as floorf(dst * scale)
    return np.minimum(src.astype(np.int64), in_size - 1)


def linear_source_weights(in_size, out_size, scale=None, align_corners=False, dtype=np.float32):
    """The two input indices and weights of each output index in linear interpolation.

    Computed in ``dtype`` (float32 for float32 data, as PyTorch's kernels do).

    Returns:
        tuple: ``i0, i1`` (ndarray[out_size] int64) and ``l0, l1`` (ndarray[out_size],
        ``dtype``) with ``y[o] = l0[o] · x[i0[o]] + l1[o] · x[i1[o]]``.
    """
    dtype = np.dtype(dtype)
    dst = np.arange(out_size)
    if out_size == in_size:
        return dst, dst, np.ones(out_size, dtype), np.zeros(out_size, dtype)
    if align_corners:
        ratio = dtype.type(0)
        if out_size > 1:
            ratio = dtype.type(in_size - 1) / dtype.type(out_size - 1)
        src = ratio * dst.astype(dtype)
    else:
        ratio = _kernel_scale(in_size, out_size, scale, dtype)
        src = ratio * (dst.astype(dtype) + dtype.type(0.5)) - dtype.type(0.5)
        src = np.maximum(src, dtype.type(0))  # a centre before the first pixel reads it
    i0 = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    l1 = np.clip(src - i0.astype(dtype), 0, 1).astype(dtype)
    i1 = i0 + (i0 < in_size - 1)
    return i0, i1, (dtype.type(1) - l1).astype(dtype), l1


def interpolation_taps(in_size, out_size, mode, scale=None, align_corners=False,
                       dtype=np.float32):
    """Interpolation along one axis as taps.

    Returns:
        tuple: ``index`` (ndarray[R, out_size] int64) and ``weight``
        (ndarray[R, out_size] of ``dtype``, or None for a single tap of weight 1):
        ``y[o] = sum_r weight[r, o] · x[index[r, o]]``. ``R`` is 1 for nearest modes
        and 2 for bilinear.
    """
    if mode == "bilinear":
        i0, i1, l0, l1 = linear_source_weights(in_size, out_size, scale, align_corners, dtype)
        return np.stack([i0, i1]), np.stack([l0, l1])
    indices = nearest_source_indices(in_size, out_size, scale, mode == "nearest-exact")
    return indices[None, :], None


def transpose_taps(index, weight, in_size):
    """The taps of the transposed map: for each input, the outputs that read it.

    Args:
        index (ndarray[R, out] int64), weight (ndarray[R, out] or None): taps of a map
            from ``in_size`` inputs to ``out`` outputs.
        in_size (int): number of inputs.
    Returns:
        tuple: ``index`` (ndarray[R', in_size] int64) and ``weight``
        (ndarray[R', in_size]), ``R'`` the most outputs any input feeds; unused
        taps point at output 0 with weight 0.
    """
    taps, out_size = index.shape
    if weight is None:
        weight = np.ones((taps, out_size))
    sources = index.reshape(-1)  # (R·out,): input of each (tap, output) pair
    outputs = np.tile(np.arange(out_size), taps)  # (R·out,)
    values = weight.reshape(-1)
    order = np.argsort(sources, kind="stable")  # group the pairs by input
    sources, outputs, values = sources[order], outputs[order], values[order]
    counts = np.bincount(sources, minlength=in_size)  # (in,)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.arange(sources.size) - starts[sources]  # position within its input's group
    width = max(int(counts.max()) if counts.size else 0, 1)
    t_index = np.zeros((width, in_size), dtype=np.int64)
    t_weight = np.zeros((width, in_size), dtype=weight.dtype)
    t_index[rank, sources] = outputs
    t_weight[rank, sources] = values
    return t_index, t_weight


def taps_matrix(index, weight, in_size):
    """The dense ``(out, in_size)`` matrix of taps (for inspection and tests)."""
    taps, out_size = index.shape
    matrix = np.zeros((out_size, in_size))
    rows = np.arange(out_size)
    for r in range(taps):
        matrix[rows, index[r]] += 1.0 if weight is None else weight[r]
    return matrix


def apply_taps(x, index, weight, axis):
    """``y[.., o, ..] = sum_r weight[r, o] · x[.., index[r, o], ..]`` along ``axis``.

    Args:
        x (ndarray): input.
        index (ndarray[R, out] int64), weight (ndarray[R, out] or None): the taps.
        axis (int): the axis mapped from ``x.shape[axis]`` to ``out`` elements.
    Returns:
        ndarray: ``x``'s shape with ``out`` along ``axis``.
    """
    y = np.take(x, index[0], axis=axis, mode="clip")  # indices are valid: no bounds pass
    if weight is None:
        return y
    shape = [1] * x.ndim
    shape[axis] = -1
    y *= weight[0].reshape(shape)
    term = None
    for r in range(1, index.shape[0]):
        term = np.take(x, index[r], axis=axis, mode="clip", out=term)  # one reused buffer
        term *= weight[r].reshape(shape)
        y += term
    return y


def separable_map(x, rows, cols):
    """Apply taps ``rows`` along H and ``cols`` along W of an ``(N, H, W, C)`` array.

    ``y[n, a, b, c] = sum_{h, w} R[a, h] · x[n, h, w, c] · C[b, w]`` with ``R`` and ``C``
    the matrices of the taps. The pass that leaves the smaller intermediate goes first.

    Args:
        x (ndarray[N, H, W, C]).
        rows, cols (tuple): ``(index, weight)`` taps along H (``Ho`` outputs) and
            along W (``Wo`` outputs).
    Returns:
        ndarray[N, Ho, Wo, C]
    """
    _, h, w, _ = x.shape
    out_h, out_w = rows[0].shape[1], cols[0].shape[1]
    if out_h * w <= h * out_w:
        return apply_taps(apply_taps(x, *rows, axis=1), *cols, axis=2)
    return apply_taps(apply_taps(x, *cols, axis=2), *rows, axis=1)


# ------------------------------------------------------------------ kernels
def _integer_factor(indices, in_size):
    """``k`` when ``indices == arange(k · in) // k`` (plain replication), else None."""
    out_size = indices.shape[0]
    if out_size % in_size:
        return None
    k = out_size // in_size
    return k if np.array_equal(indices, np.arange(out_size) // k) else None


def interpolate_forward(x, out_size, mode, scales=(None, None), align_corners=False):
    """Interpolation kernel.

    Args:
        x (ndarray[N, H, W, C]): input (any dtype for nearest modes, float for bilinear).
        out_size (tuple): ``(Ho, Wo)``.
        mode (str): "nearest", "nearest-exact" or "bilinear".
        scales (tuple): scale factors handed to the kernel per axis, or None each.
        align_corners (bool): bilinear only.
    Returns:
        tuple: ``y`` (ndarray[N, Ho, Wo, C]) and ``cache`` for ``interpolate_backward``:
        ``("identity",)``, ``("repeat", kh, kw)`` or ``("taps", rows, cols, (H, W))``.
    """
    n, h, w, c = x.shape
    out_h, out_w = out_size
    if mode == "bilinear" and (out_h, out_w) == (h, w):
        return x.copy(), ("identity",)
    dtype = x.dtype if x.dtype.kind == "f" else np.dtype(np.float32)
    rows = interpolation_taps(h, out_h, mode, scales[0], align_corners, dtype)  # along H
    cols = interpolation_taps(w, out_w, mode, scales[1], align_corners, dtype)  # along W
    if mode != "bilinear":
        kh, kw = _integer_factor(rows[0][0], h), _integer_factor(cols[0][0], w)
        if kh is not None and kw is not None:
            # Replication: one copy of a broadcast (N, H, kh, W, kw, C) view.
            y = np.broadcast_to(x[:, :, None, :, None, :], (n, h, kh, w, kw, c))
            return y.reshape(n, out_h, out_w, c), ("repeat", kh, kw)
    return separable_map(x, rows, cols), ("taps", rows, cols, (h, w))


def interpolate_backward(grad, cache):
    """Gradient of ``interpolate_forward`` with respect to its input.

    Args:
        grad (ndarray[N, Ho, Wo, C]): gradient of the output.
        cache (tuple): from ``interpolate_forward``.
    Returns:
        ndarray[N, H, W, C]
    """
    kind = cache[0]
    if kind == "identity":
        return grad.copy()
    n, out_h, out_w, c = grad.shape
    if kind == "repeat":
        _, kh, kw = cache
        h, w = out_h // kh, out_w // kw
        g = np.ascontiguousarray(grad)
        # Sum the kh row replicas over long (W·kw·C) rows, then the kw column replicas.
        g = g.reshape(n, h, kh, out_w * c).sum(axis=2)  # (N, H, Wo·C)
        return g.reshape(n, h, w, kw, c).sum(axis=3)  # (N, H, W, C)
    # Each input gathers the outputs that read it: the transposed taps.
    _, rows, cols, (h, w) = cache
    rows_t = transpose_taps(*rows, h)
    cols_t = transpose_taps(*cols, w)
    rows_t = (rows_t[0], rows_t[1].astype(grad.dtype))
    cols_t = (cols_t[0], cols_t[1].astype(grad.dtype))
    return separable_map(grad, rows_t, cols_t)


class InterpolateFunction(Function):
    """Autograd glue of ``interpolate``."""

    @staticmethod
    def forward(ctx, x, out_size, mode, scales, align_corners):
        y, ctx.cache = interpolate_forward(x, out_size, mode, scales, align_corners)
        return y

    @staticmethod
    def backward(ctx, grad):
        return interpolate_backward(grad, ctx.cache)


# ---------------------------------------------------------------- arguments
def interpolate(x, size=None, scale_factor=None, mode="nearest", align_corners=None,
                recompute_scale_factor=None):
    """Resize an ``(N, H, W, C)`` map, PyTorch's ``F.interpolate`` semantics (2-D modes).

    Exactly one of ``size`` and ``scale_factor`` is given. With ``scale_factor`` the
    output size is ``floor(in · scale_factor)`` and, unless ``recompute_scale_factor``,
    the kernel samples at ``1 / scale_factor`` input pixels per output pixel (see the
    module docstring for the index formulas).

    Args:
        x (Tensor or ndarray[N, H, W, C]): input; float for bilinear, any numeric
            dtype (e.g. integer label maps) for nearest modes.
        size (int or (int, int), optional): output ``(Ho, Wo)``.
        scale_factor (float or (float, float), optional): multiplier of ``(H, W)``.
        mode (str): "nearest" (PyTorch's default rule), "nearest-exact" or "bilinear".
        align_corners (bool, optional): bilinear only; False (default) samples at
            pixel centres, True maps corner pixels onto corner pixels.
        recompute_scale_factor (bool, optional): sample at ``in / out`` computed from
            the output size instead of the given ``scale_factor``.
    Returns:
        Tensor[N, Ho, Wo, C]: dtype of ``x``.
    Raises:
        ValueError: not 4-D, both or neither of ``size``/``scale_factor``, an output
            size below 1, an unknown mode, ``align_corners`` with a nearest mode.
        TypeError: sizes that are not ints, a dtype the mode cannot interpolate.
    """
    array = x.data if isinstance(x, Tensor) else np.asarray(x)
    if array.ndim != 4:
        raise ValueError(
            f"x must be a 4-D (N, H, W, C) channels-last array, got shape {array.shape}"
        )
    check_choice(mode, "mode", MODES)
    if mode == "bilinear":
        if array.dtype.kind != "f":
            raise TypeError(f"bilinear interpolation needs a floating-point x, got {array.dtype}")
        align_corners = bool(align_corners) if align_corners is not None else False
    else:
        if align_corners is not None:
            raise ValueError(
                f"align_corners can only be set with mode='bilinear', got mode={mode!r}"
            )
        if array.dtype.kind not in "fiub":
            raise TypeError(f"x must have a numeric dtype, got {array.dtype}")
    if (size is None) == (scale_factor is None):
        raise ValueError("exactly one of size and scale_factor must be given, got "
                         + ("both" if size is not None else "neither"))
    in_size = array.shape[1:3]
    if size is not None:
        if recompute_scale_factor:
            raise ValueError("recompute_scale_factor is not meaningful with an explicit size")
        out_size = check_pair(size, "size")
        scales = (None, None)
    else:
        factors = scale_factor if isinstance(scale_factor, (tuple, list)) else (scale_factor,) * 2
        if len(factors) != 2:
            raise ValueError(f"scale_factor must be a number or a pair (H, W), got {scale_factor!r}")
        factors = tuple(check_positive(f, "scale_factor") for f in factors)
        # PyTorch: floor(float(in) * scale), in double precision.
        out_size = tuple(int(math.floor(float(i) * f)) for i, f in zip(in_size, factors))
        scales = (None, None) if recompute_scale_factor else factors
    if min(out_size) < 1 or min(in_size) < 1:
        raise ValueError(
            f"input and output sizes must be at least 1, got input {tuple(in_size)} and "
            f"output {out_size}"
        )
    return InterpolateFunction.apply(
        x, out_size=out_size, mode=mode, scales=scales, align_corners=align_corners,
    )
