"""Pooling over spatial windows, channels-last: max, average and adaptive average.

A pooling layer slides a ``kh x kw`` window over each channel of an ``(N, H, W, C)``
map with a stride and reduces every window to one number: its maximum (max pooling,
Ranzato et al. 2007; the down-sampling stage of AlexNet, VGG and ResNet) or its mean
(average pooling; global average pooling replaces the fully connected head in
Lin et al., "Network In Network", 2014). With PyTorch's conventions the output size
along one axis is::

    out = floor((in + 2·pad - dilation·(k - 1) - 1 + (stride - 1 if ceil_mode else 0)) / stride) + 1

and with ``ceil_mode`` the last window must start inside the input or its left padding.

How the kernels stay fast without a loop over pixels: for every kernel offset
``(i, j)`` the values that offset sees in all windows at once form one strided slice
of the (padded) input, ``xp[:, i·d : i·d + s·(Ho-1) + 1 : s, j·d : ... : s, :]``, of
the output's shape. Max pooling is then ``kh·kw`` calls of ``np.maximum`` on slices,
average pooling ``kh·kw`` additions. The backward pass writes (or, for overlapping
windows, adds) one slice per offset. Reducing a ``(N, Ho, kh, Wo, kw, C)`` view over
its small non-adjacent axes does the same arithmetic several times slower
(``../shared/bench/BASELINES.md``).
"""
from dataclasses import dataclass

import numpy as np

from nn import _threads
from nn._checks import check_array, check_bool, check_int, check_pair
from nn._threads import parallel_for, split_range
from nn.functional.upsampling import separable_map, transpose_taps
from nn.tensor import Function, Tensor

__all__ = [
    "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d",
    "max_pool2d_forward", "max_pool2d_backward",
    "avg_pool2d_forward", "avg_pool2d_backward",
    "adaptive_avg_pool2d_forward", "adaptive_avg_pool2d_backward",
    "adaptive_pool_taps", "pool_output_size", "PoolGeometry",
    "MaxPool2dFunction", "AvgPool2dFunction", "AdaptiveAvgPool2dFunction",
]


# ------------------------------------------------------------------ arguments
def _input_array(x, name="x"):
    """The ndarray behind ``x`` (Tensor, ndarray or nested list), checked to be 4-D."""
    array = x.data if isinstance(x, Tensor) else np.asarray(x)
    if array.ndim != 4:
        raise ValueError(
            f"{name} must be a 4-D (N, H, W, C) channels-last array, got shape {array.shape}"
        )
    return array


def pool_output_size(size, kernel, stride, padding, dilation=1, ceil_mode=False):
    """Output length of a pooling window sliding along one axis (PyTorch's formula).

    Args:
        size (int): input length. kernel, stride, padding, dilation (int): the window.
        ceil_mode (bool): round up, keeping only windows that start inside the input
            or its left padding.
    Returns:
        int: number of windows (may be <= 0 for an input that is too small).
    """
    span = dilation * (kernel - 1) + 1
    out = (size + 2 * padding - span + (stride - 1 if ceil_mode else 0)) // stride + 1
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1
    return out


@dataclass(frozen=True)
class PoolGeometry:
    """Where each pooling window reads, for one input size.

    Attributes:
        kernel, stride, padding, dilation (tuple of 2 ints): ``(along H, along W)``.
        in_size (tuple): ``(H, W)`` of the input.
        out_size (tuple): ``(Ho, Wo)`` of the output.
        pad_end (tuple): rows and columns of padding actually read after the input
            (bottom, right): can be less than ``padding`` when the last windows stop
            early, or more with ``ceil_mode``.
    """

    kernel: tuple
    stride: tuple
    padding: tuple
    dilation: tuple
    in_size: tuple
    out_size: tuple
    pad_end: tuple

    @classmethod
    def build(cls, in_size, kernel, stride, padding, dilation, ceil_mode):
        out_size, pad_end = [], []
        for axis in range(2):
            out = pool_output_size(
                in_size[axis], kernel[axis], stride[axis], padding[axis], dilation[axis], ceil_mode
            )
            if out < 1:
                raise ValueError(
                    f"input of spatial size {tuple(in_size)} is too small for "
                    f"kernel_size={kernel}, "
                    f"stride={stride}, padding={padding}, dilation={dilation}: "
                    f"the output size would be {out} along {'HW'[axis]}"
                )
            last = (out - 1) * stride[axis] + dilation[axis] * (kernel[axis] - 1) + 1
            out_size.append(out)
            pad_end.append(max(0, last - in_size[axis] - padding[axis]))
        return cls(kernel, stride, padding, dilation, tuple(in_size), tuple(out_size),
                   tuple(pad_end))

    @property
    def padded_size(self):
        """``(Hp, Wp)``: the input plus the padding that windows read."""
        return tuple(self.padding[a] + self.in_size[a] + self.pad_end[a] for a in range(2))

    @property
    def needs_padding(self):
        return any(self.padding) or any(self.pad_end)

    @property
    def tiling(self):
        """True when the windows cover the padded input exactly once (e.g. 2x2, stride 2)."""
        return all(
            self.dilation[a] == 1 and self.stride[a] == self.kernel[a]
            and self.out_size[a] * self.stride[a] == self.padded_size[a]
            for a in range(2)
        )

    @property
    def overlapping(self):
        """True when an input element can fall into more than one window."""
        return any(
            self.stride[a] < self.dilation[a] * (self.kernel[a] - 1) + 1 for a in range(2)
        )

    def offsets(self):
        """Kernel offsets ``(i, j)`` in window (row-major) order."""
        return [(i, j) for i in range(self.kernel[0]) for j in range(self.kernel[1])]

    def window_slice(self, i, j):
        """Index of the strided slice of the padded input that offset ``(i, j)`` reads.

        ``xp[window_slice(i, j)]`` has shape ``(N, Ho, Wo, C)``: element ``[n, a, b, c]``
        is the value at offset ``(i, j)`` of window ``(a, b)``.
        """
        (sh, sw), (dh, dw), (ho, wo) = self.stride, self.dilation, self.out_size
        rows = slice(i * dh, i * dh + sh * (ho - 1) + 1, sh)
        cols = slice(j * dw, j * dw + sw * (wo - 1) + 1, sw)
        return (slice(None), rows, cols, slice(None))

    def crop(self):
        """Index that removes the padding: ``xp[crop()]`` is the input."""
        (ph, pw), (h, w) = self.padding, self.in_size
        return (slice(None), slice(ph, ph + h), slice(pw, pw + w), slice(None))


def _geometry(x, kernel_size, stride, padding, dilation, ceil_mode):
    """Check the pooling arguments against PyTorch's rules and build the geometry."""
    kernel = check_pair(kernel_size, "kernel_size", 1)
    stride = kernel if stride is None or (isinstance(stride, (tuple, list)) and len(stride) == 0) \
        else check_pair(stride, "stride", 1)
    padding = check_pair(padding, "padding", 0)
    dilation = check_pair(dilation, "dilation", 1)
    ceil_mode = check_bool(ceil_mode, "ceil_mode")
    if padding[0] > kernel[0] // 2 or padding[1] > kernel[1] // 2:
        raise ValueError(
            f"padding must be at most half of kernel_size, got padding={padding}, "
            f"kernel_size={kernel}"
        )
    return PoolGeometry.build(x.shape[1:3], kernel, stride, padding, dilation, bool(ceil_mode))


def _pad(x, geometry, value):
    """``x`` with ``value`` rows/columns around it as ``geometry`` reads them (no copy if none)."""
    if not geometry.needs_padding:
        return x
    n, _, _, c = x.shape
    hp, wp = geometry.padded_size
    xp = np.full((n, hp, wp, c), value, dtype=x.dtype)
    xp[geometry.crop()] = x
    return xp


# -------------------------------------------------------------- max pooling
def max_pool2d_forward(x, geometry):
    """Max pooling kernel: the maximum of every window.

    Args:
        x (ndarray[N, H, W, C]): float or integer input.
        geometry (PoolGeometry): the windows (see ``max_pool2d``).
    Returns:
        tuple: ``y`` (ndarray[N, Ho, Wo, C], dtype of x) and ``cache``
        ``(x, y, geometry)`` for ``max_pool2d_backward``.
    """
    if x.dtype.kind == "f":
        lowest = -np.inf
    else:
        lowest = np.iinfo(x.dtype).min
    xp = _pad(x, geometry, lowest)
    n, c = x.shape[0], x.shape[-1]
    y = np.empty((n, *geometry.out_size, c), dtype=x.dtype)
    offsets = geometry.offsets()
    # Blocks of images on the library's threads; a block's slices are read while in cache.
    blocks = split_range(n, max(1, xp.nbytes // _threads.BLOCK_BYTES))

    def run(b, slot):
        start, stop = blocks[b]
        xb, yb = xp[start:stop], y[start:stop]
        for k, (i, j) in enumerate(offsets):
            window = xb[geometry.window_slice(i, j)]  # (n, Ho, Wo, C), a strided view
            if k == 0:
                yb[...] = window
            else:
                np.maximum(yb, window, out=yb)  # propagates NaN, as PyTorch does

    parallel_for(run, len(blocks))
    return y, (x, y, geometry)


def max_pool2d_backward(grad, cache):
    """Route each output gradient to its window's maximum.

    The maximum of a window is its first maximal element in window (row-major)
    order, PyTorch's rule for ties. Instead of storing argmax indices, the forward
    output is compared with each offset's slice in that order; ``taken`` marks
    windows whose maximum was already found at an earlier offset.

    Args:
        grad (ndarray[N, Ho, Wo, C]): gradient of the output.
        cache (tuple): from ``max_pool2d_forward``.
    Returns:
        ndarray[N, H, W, C]: gradient of the input.
    """
    x, y, geometry = cache
    # Padding with NaN (equal to nothing) keeps the gradient in the input even where
    # a window's maximum is -inf: PyTorch then picks the first element inside the
    # input, and a window lying wholly in the padding gets no gradient at all.
    xp = _pad(x, geometry, np.nan)
    # Tiling windows write every element once below: no need to zero the array first.
    dxp = (np.empty if geometry.tiling else np.zeros)(xp.shape, dtype=grad.dtype)
    offsets = geometry.offsets()
    # Blocks of images on the library's threads, each with three reused masks (fresh
    # arrays per offset cost page faults).
    blocks = split_range(y.shape[0], max(1, xp.nbytes // _threads.BLOCK_BYTES))

    def run(b, slot):
        start, stop = blocks[b]
        xb, yb, gb, db = xp[start:stop], y[start:stop], grad[start:stop], dxp[start:stop]
        equal = np.empty(yb.shape, dtype=bool)
        hit = np.empty(yb.shape, dtype=bool)
        taken = np.empty(yb.shape, dtype=bool)
        routed = np.empty(yb.shape, dtype=grad.dtype) if geometry.overlapping else None
        for k, (i, j) in enumerate(offsets):
            index = geometry.window_slice(i, j)
            np.equal(xb[index], yb, out=equal)
            if k == 0:
                np.copyto(hit, equal)
                np.copyto(taken, equal)
            else:
                np.greater(equal, taken, out=hit)  # equal and not taken (on booleans)
                if k + 1 < len(offsets):
                    np.logical_or(taken, hit, out=taken)
            if geometry.overlapping:
                np.multiply(gb, hit, out=routed)
                db[index] += routed
            else:
                # Disjoint windows: each input element receives from at most one output.
                np.multiply(gb, hit, out=db[index])

    parallel_for(run, len(blocks))
    if not geometry.needs_padding:
        return dxp
    return np.ascontiguousarray(dxp[geometry.crop()])


class MaxPool2dFunction(Function):
    """Autograd glue of ``max_pool2d``."""

    @staticmethod
    def forward(ctx, x, geometry):
        y, ctx.cache = max_pool2d_forward(x, geometry)
        return y

    @staticmethod
    def backward(ctx, grad):
        return max_pool2d_backward(grad, ctx.cache)


def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
    """2-D max pooling over an ``(N, H, W, C)`` map, PyTorch's ``max_pool2d`` semantics.

    ``y[n, a, b, c] = max_{i<kh, j<kw} xp[n, a·sh + i·dh, b·sw + j·dw, c]`` where ``xp``
    is ``x`` padded with ``-inf``. The gradient goes to the first maximum of each
    window in row-major order (PyTorch's tie rule), never to the padding: a window
    lying wholly in the padding gives ``-inf`` and no gradient. NaN inputs propagate
    forward but get no gradient.

    Args:
        x (Tensor or ndarray[N, H, W, C]): float (or integer, forward only) input.
        kernel_size (int or (int, int)): window size.
        stride (int or (int, int), optional): step; defaults to ``kernel_size``.
        padding (int or (int, int)): implicit ``-inf`` border, at most ``kernel_size // 2``.
        dilation (int or (int, int)): spacing between window elements.
        ceil_mode (bool): round the output size up (see the module docstring).
    Returns:
        Tensor[N, Ho, Wo, C]: same dtype as ``x``.
    Raises:
        ValueError: ``x`` is not 4-D, a size is out of range, or the output would be empty.
        TypeError: a size is not an int or pair, or ``x`` is not numeric.
    """
    array = _input_array(x)
    check_array(array, "x", "real", tensor=False)
    geometry = _geometry(array, kernel_size, stride, padding, dilation, ceil_mode)
    return MaxPool2dFunction.apply(x, geometry=geometry)


# ---------------------------------------------------------- average pooling
def _window_counts(size, kernel, stride, padding, out, count_include_pad):
    """Number of elements averaged by each window along one axis (PyTorch's rule).

    With ``count_include_pad`` the padding counts, but not the extra border that
    ``ceil_mode`` reads beyond it.
    """
    start = np.arange(out) * stride - padding  # (out,)
    end = np.minimum(start + kernel, size + padding)
    if count_include_pad:
        return end - start
    return np.minimum(end, size) - np.maximum(start, 0)


def _divisor(geometry, count_include_pad, divisor_override, dtype):
    """``(Ho, Wo, 1)`` array of the number each window sum is divided by."""
    if divisor_override is not None:
        return np.asarray(divisor_override, dtype=dtype)
    rows = _window_counts(geometry.in_size[0], geometry.kernel[0], geometry.stride[0],
                          geometry.padding[0], geometry.out_size[0], count_include_pad)
    cols = _window_counts(geometry.in_size[1], geometry.kernel[1], geometry.stride[1],
                          geometry.padding[1], geometry.out_size[1], count_include_pad)
    return (rows[:, None] * cols[None, :]).astype(dtype)[:, :, None]  # (Ho, Wo, 1)


def avg_pool2d_forward(x, geometry, count_include_pad=True, divisor_override=None):
    """Average pooling kernel: each window's sum divided by its element count.

    Args:
        x (ndarray[N, H, W, C]): float input.
        geometry (PoolGeometry): the windows (dilation 1).
        count_include_pad (bool): zero padding counts in the divisor.
        divisor_override (int, optional): divide every sum by this instead.
    Returns:
        tuple: ``y`` (ndarray[N, Ho, Wo, C]) and ``cache`` ``(divisor, geometry)``.
    """
    xp = _pad(x, geometry, 0)
    total = None
    for i, j in geometry.offsets():
        window = xp[geometry.window_slice(i, j)]  # (N, Ho, Wo, C)
        if total is None:
            total = window.copy()
        else:
            total += window
    divisor = _divisor(geometry, count_include_pad, divisor_override, x.dtype)
    total /= divisor
    return total, (divisor, geometry)


def avg_pool2d_backward(grad, cache):
    """Spread each output gradient evenly over its window.

    Args:
        grad (ndarray[N, Ho, Wo, C]): gradient of the output.
        cache (tuple): from ``avg_pool2d_forward``.
    Returns:
        ndarray[N, H, W, C]: gradient of the input.
    """
    divisor, geometry = cache
    share = grad / divisor  # (N, Ho, Wo, C): what each window element receives
    n, _, _, c = grad.shape
    dxp = np.zeros((n,) + geometry.padded_size + (c,), dtype=grad.dtype)
    for i, j in geometry.offsets():
        index = geometry.window_slice(i, j)
        if geometry.overlapping:
            dxp[index] += share
        else:
            dxp[index] = share
    if not geometry.needs_padding:
        return dxp
    return np.ascontiguousarray(dxp[geometry.crop()])


class AvgPool2dFunction(Function):
    """Autograd glue of ``avg_pool2d``."""

    @staticmethod
    def forward(ctx, x, geometry, count_include_pad, divisor_override):
        y, ctx.cache = avg_pool2d_forward(x, geometry, count_include_pad, divisor_override)
        return y

    @staticmethod
    def backward(ctx, grad):
        return avg_pool2d_backward(grad, ctx.cache)


def avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False,
               count_include_pad=True, divisor_override=None):
    """2-D average pooling over an ``(N, H, W, C)`` map, PyTorch's ``avg_pool2d`` semantics.

    ``y[n, a, b, c] = (1 / D[a, b]) · sum_{i<kh, j<kw} xp[n, a·sh + i, b·sw + j, c]`` with
    ``xp`` zero-padded; ``D`` counts the window's elements, padding included when
    ``count_include_pad`` (but never the extra border of ``ceil_mode``).

    Args:
        x (Tensor or ndarray[N, H, W, C]): float input.
        kernel_size (int or (int, int)): window size.
        stride (int or (int, int), optional): step; defaults to ``kernel_size``.
        padding (int or (int, int)): zero border, at most ``kernel_size // 2``.
        ceil_mode (bool): round the output size up.
        count_include_pad (bool): count the zero padding in the divisor.
        divisor_override (int, optional): a fixed divisor.
    Returns:
        Tensor[N, Ho, Wo, C]: same dtype as ``x``.
    """
    array = _input_array(x)
    check_array(array, "x", "float", tensor=False)
    geometry = _geometry(array, kernel_size, stride, padding, 1, ceil_mode)
    if divisor_override is not None and check_int(divisor_override, "divisor_override") == 0:
        raise ValueError("divisor_override must be a non-zero int or None, got 0")
    return AvgPool2dFunction.apply(
        x, geometry=geometry, count_include_pad=bool(count_include_pad),
        divisor_override=divisor_override,
    )


# -------------------------------------------------- adaptive average pooling
def adaptive_pool_taps(in_size, out_size, dtype=np.float32):
    """Adaptive average pooling along one axis, as taps (see ``nn.functional.upsampling``).

    Output ``i`` averages inputs ``[floor(i·in/out), ceil((i+1)·in/out))``
    (PyTorch's adaptive windows, which may overlap).

    Returns:
        tuple: ``index`` and ``weight`` (ndarray[L, out_size]), ``L`` the longest
        window: tap ``r`` of output ``i`` reads input ``start_i + r`` with weight
        ``1 / length_i``, or weight 0 beyond the window.
    """
    i = np.arange(out_size)
    start = (i * in_size) // out_size
    end = -((-(i + 1) * in_size) // out_size)  # ceil division
    length = end - start  # (out,)
    r = np.arange(length.max())[:, None]  # (L, 1)
    index = np.minimum(start + r, end - 1)  # (L, out): past the end, repeat the last input
    weight = np.where(r < length, 1.0 / length, 0.0).astype(dtype)  # (L, out)
    return index, weight


def adaptive_avg_pool2d_forward(x, output_size):
    """Adaptive average pooling kernel: window sums as taps along H, then along W.

    Args:
        x (ndarray[N, H, W, C]): float input.
        output_size (tuple): ``(Ho, Wo)``.
    Returns:
        tuple: ``y`` (ndarray[N, Ho, Wo, C]) and ``cache`` ``(rows, cols)`` (taps).
    """
    n, h, w, c = x.shape
    out_h, out_w = output_size
    if out_h == 1 and out_w == 1:
        # Global average pooling: one reduction over a contiguous (H·W) axis.
        y = x.reshape(n, h * w, c).mean(axis=1, keepdims=True)  # (N, 1, C)
        return y.reshape(n, 1, 1, c), (None, None)
    rows = adaptive_pool_taps(h, out_h, x.dtype)  # along H
    cols = adaptive_pool_taps(w, out_w, x.dtype)  # along W
    return separable_map(x, rows, cols), (rows, cols)


def adaptive_avg_pool2d_backward(grad, cache, in_size):
    """Gradient of adaptive average pooling: the transposed taps.

    Args:
        grad (ndarray[N, Ho, Wo, C]): gradient of the output.
        cache (tuple): from ``adaptive_avg_pool2d_forward``.
        in_size (tuple): ``(H, W)`` of the input.
    Returns:
        ndarray[N, H, W, C]
    """
    rows, cols = cache
    n, _, _, c = grad.shape
    h, w = in_size
    if rows is None:
        share = grad / (h * w)  # (N, 1, 1, C)
        return np.broadcast_to(share, (n, h, w, c)).copy()
    rows_t, cols_t = transpose_taps(*rows, h), transpose_taps(*cols, w)
    return separable_map(grad, rows_t, cols_t)


class AdaptiveAvgPool2dFunction(Function):
    """Autograd glue of ``adaptive_avg_pool2d``."""

    @staticmethod
    def forward(ctx, x, output_size):
        ctx.in_size = x.shape[1:3]
        y, ctx.cache = adaptive_avg_pool2d_forward(x, output_size)
        return y

    @staticmethod
    def backward(ctx, grad):
        return adaptive_avg_pool2d_backward(grad, ctx.cache, ctx.in_size)


def adaptive_avg_pool2d(x, output_size):
    """Average pooling to a fixed output size, whatever the input size (PyTorch's semantics).

    Output cell ``(a, b)`` averages rows ``[floor(a·H/Ho), ceil((a+1)·H/Ho))`` and the
    columns likewise. ``output_size=1`` is global average pooling.

    Args:
        x (Tensor or ndarray[N, H, W, C]): float input.
        output_size (int or (int or None, int or None)): ``(Ho, Wo)``; None keeps that
            input size.
    Returns:
        Tensor[N, Ho, Wo, C]
    """
    array = _input_array(x)
    check_array(array, "x", "float", tensor=False)
    if isinstance(output_size, (tuple, list)) and len(output_size) == 2:
        output_size = tuple(
            array.shape[1 + a] if v is None else v for a, v in enumerate(output_size)
        )
    output_size = check_pair(output_size, "output_size", 1)
    if array.shape[1] == 0 or array.shape[2] == 0:
        raise ValueError(f"x must have non-empty spatial size, got shape {array.shape}")
    return AdaptiveAvgPool2dFunction.apply(x, output_size=output_size)
