"""2-D convolution and transposed convolution, channels-last, with PyTorch's semantics.

A convolution layer slides a ``kh x kw`` window over the (zero-padded) input and
takes, at every output position, a dot product between the window and each filter:

    y[n, ho, wo, o] = b[o] + Σ_{i,j,c} x_pad[n, ho·sh + i·dh, wo·sw + j·dw, c] · W[i, j, c, o]

(LeCun et al., 1998, "Gradient-based learning applied to document recognition";
the arithmetic of strides, padding and dilation follows Dumoulin & Visin, 2016,
"A guide to convolution arithmetic for deep learning"). The output size is

    Ho = floor((H + pad_top + pad_bottom - dh·(kh - 1) - 1) / sh) + 1.

**Forward = im2col + one matrix product.** Copy every window into one row of a
column matrix ``cols`` of shape ``(N·Ho·Wo, kh·kw·C)`` and the whole layer is the
GEMM ``cols @ W.reshape(kh·kw·C, C_out)``, whose output already is the next
channels-last feature map. In NHWC a window row reads contiguous runs of ``kw·C``
values, which is why this library is channels-last (Chellapilla et al., 2006,
"High performance convolutional neural networks for document processing").

**Backward.** With ``g = dL/dy`` flattened to ``(N·Ho·Wo, C_out)``:

- ``dW = colsᵀ @ g``;
- ``db = Σ g`` over N, Ho, Wo;
- ``dx = col2im(g @ Wᵀ)``: row ``(n, ho, wo)`` of ``g @ Wᵀ`` is the gradient of the
  window the forward copied into that row, and ``col2im`` (the adjoint of
  ``im2col``) adds each entry back to the input pixel it was copied from.

**Transposed convolution** ("deconvolution", Zeiler et al., 2010; used for learnable
upsampling by Long et al., 2015, "Fully convolutional networks for semantic
segmentation") *is* the input gradient of a convolution: ``conv_transpose2d(x, W)``
equals ``∂/∂z <conv2d(z, W'), x>`` where ``W'[i, j, c, o] = W[i, j, o, c]`` is the same
filter bank with its channel axes swapped. No kernel flip is involved. Its output size is

    H_out = (H - 1)·sh - pad_top - pad_bottom + dh·(kh - 1) + output_padding + 1,

so its forward is the convolution's input gradient and its input gradient is the
convolution's forward (im2col + GEMM). The two are adjoint:
``<conv2d(x, W), y> == <x, conv_transpose2d(y, W')>``.

Layouts: ``x`` is ``(N, H, W, C)``; a conv weight is ``(kh, kw, C_in // groups, C_out)``
("HWIO"); a transposed-conv weight is ``(kh, kw, C_in, C_out // groups)``. With
``groups = g`` the channels split into ``g`` independent convolutions (Krizhevsky
et al., 2012); output channel block ``k`` sees input channel block ``k`` only.

This file, top to bottom: the geometry and its checks (``conv2d_geometry``), the
definition (``im2col``, ``col2im``, ``conv2d_forward_plain``, ``conv2d_backward_plain``
and the transposed pair: plain NumPy, the path to read first), the checked kernels
on ndarrays (``conv2d_forward``, ``conv_transpose2d_forward`` and their backward
passes), the autograd Functions and the differentiable ``conv2d`` /
``conv_transpose2d``. The kernels the Functions run compute the same numbers as
the plain definition in cache-sized blocks on several threads; they live in
``nn/functional/conv_kernels.py``.
"""
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import as_strided

from nn._checks import (check_array, check_int, check_ndim, check_pair, check_same_dtype,
                        check_shape)
from nn.functional.conv_kernels import (
    Conv2dCache, ConvTranspose2dCache, conv2d_backward, conv2d_forward_blocked, conv2d_input_grad,
    conv2d_weight_grad, conv_transpose2d_backward, conv_transpose2d_forward_blocked,
)
from nn.tensor import Function

__all__ = [
    "conv2d", "conv_transpose2d",
    "conv2d_geometry", "conv_transpose2d_geometry",
    "im2col", "col2im", "conv2d_forward_plain", "conv2d_backward_plain",
    "conv_transpose2d_forward_plain", "conv_transpose2d_backward_plain",
    "conv2d_forward", "conv2d_backward", "conv2d_input_grad", "conv2d_weight_grad",
    "conv_transpose2d_forward", "conv_transpose2d_backward",
    "conv2d_output_size", "conv_transpose2d_output_size",
    "ConvGeometry", "Conv2dCache", "ConvTranspose2dCache",
    "Conv2dFunction", "ConvTranspose2dFunction",
]


# =========================================================================== geometry
def _padding_pairs(padding, kernel, stride, dilation):
    """Padding as ``((top, bottom), (left, right))``.

    Accepts an int, a pair ``(ph, pw)`` (both sides alike), the strings "valid"
    (no padding) and "same" (output size = input size; stride 1 only, as in
    PyTorch, which puts the odd extra row/column at the bottom/right), or an
    explicit ``((top, bottom), (left, right))``.
    """
    if isinstance(padding, str):
        if padding == "valid":
            return ((0, 0), (0, 0))
        if padding == "same":
            if stride != (1, 1):
                raise ValueError(
                    f"padding='same' is not supported for strided convolutions, got stride {stride}"
                )
            pairs = []
            for k, d in zip(kernel, dilation):
                total = d * (k - 1)
                pairs.append((total // 2, total - total // 2))
            return tuple(pairs)
        raise ValueError(f"padding must be an int, a pair, 'same' or 'valid', got {padding!r}")
    if (
        isinstance(padding, (tuple, list))
        and len(padding) == 2
        and all(isinstance(p, (tuple, list)) for p in padding)
    ):
        pairs = tuple(check_pair(tuple(p), "padding", 0) for p in padding)
        return pairs
    ph, pw = check_pair(padding, "padding", 0)
    return ((ph, ph), (pw, pw))


def conv2d_output_size(size, kernel, stride, padding, dilation):
    """Output length of a convolution along one axis.

    ``floor((size + pad_lo + pad_hi - dilation·(kernel - 1) - 1) / stride) + 1``.
    """
    pad_lo, pad_hi = padding
    return (size + pad_lo + pad_hi - dilation * (kernel - 1) - 1) // stride + 1


def conv_transpose2d_output_size(size, kernel, stride, padding, dilation, output_padding):
    """Output length of a transposed convolution along one axis.

    ``(size - 1)·stride - pad_lo - pad_hi + dilation·(kernel - 1) + output_padding + 1``.
    """
    pad_lo, pad_hi = padding
    return (size - 1) * stride - pad_lo - pad_hi + dilation * (kernel - 1) + output_padding + 1


@dataclass(frozen=True)
class ConvGeometry:
    """Everything about a convolution except the arrays.

    Attributes:
        kernel (tuple[int, int]): ``(kh, kw)``.
        stride (tuple[int, int]): ``(sh, sw)``.
        padding (tuple[tuple[int, int], tuple[int, int]]): ``((top, bottom), (left, right))``.
        dilation (tuple[int, int]): ``(dh, dw)``.
        groups (int): number of channel groups.
        in_hw (tuple[int, int]): input ``(H, W)`` of the convolution.
        out_hw (tuple[int, int]): output ``(Ho, Wo)`` of the convolution.
        in_channels_per_group (int): ``C/g`` of the convolution's input.
    """

    kernel: tuple
    stride: tuple
    padding: tuple
    dilation: tuple
    groups: int
    in_hw: tuple
    out_hw: tuple
    in_channels_per_group: int


# ==================================================================== input checks
def _check_common(x, weight, bias, n_out):
    """Rank and dtype checks shared by conv2d and conv_transpose2d."""
    check_array(x, "x", "float", tensor=False)
    check_array(weight, "weight", "float", tensor=False)
    check_ndim(x, "x", 4, "N, H, W, C")
    check_ndim(weight, "weight", 4, "kh, kw, ·, ·")
    check_same_dtype(weight, "weight", x, "x")
    if bias is not None:
        check_array(bias, "bias", "float", tensor=False)
        check_shape(bias, "bias", (n_out,))
        check_same_dtype(bias, "bias", x, "x")


def conv2d_geometry(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """Check a conv2d call's arguments and return its ``ConvGeometry`` (no work is done).

    Args:
        x, weight, bias (ndarray): as in ``conv2d``, ndarrays only.
        stride, padding, dilation, groups: as in ``conv2d``.
    Returns:
        ConvGeometry: with ``out_hw = (Ho, Wo)``.
    Raises:
        ValueError, TypeError: see ``conv2d``.
    """
    groups = check_int(groups, "groups", 1)
    _check_common(x, weight, bias, weight.shape[-1] if np.ndim(weight) == 4 else -1)
    _, h, w, c = x.shape
    kh, kw, c_per_group, c_out = weight.shape
    if min(kh, kw) < 1:
        raise ValueError(f"conv2d: kernel size must be positive, got weight shape {weight.shape}")
    if c % groups or c_out % groups:
        raise ValueError(
            f"conv2d: groups={groups} must divide both input channels ({c}) and "
            f"output channels ({c_out})"
        )
    if c_per_group * groups != c:
        raise ValueError(
            f"conv2d: x has {c} channels but weight {weight.shape} expects "
            f"{c_per_group} x groups={groups} = {c_per_group * groups} "
            f"(weight is (kh, kw, C_in // groups, C_out))"
        )
    stride = check_pair(stride, "stride", 1)
    dilation = check_pair(dilation, "dilation", 1)
    pads = _padding_pairs(padding, (kh, kw), stride, dilation)
    out = []
    for axis, size, k, s, p, d in zip("HW", (h, w), (kh, kw), stride, pads, dilation):
        if size + p[0] + p[1] < d * (k - 1) + 1:
            raise ValueError(
                f"conv2d: kernel size {d * (k - 1) + 1} (dilated) along {axis} is larger than the "
                f"padded input size {size + p[0] + p[1]}"
            )
        out.append(conv2d_output_size(size, k, s, p, d))
    return ConvGeometry((kh, kw), stride, pads, dilation, groups, (h, w), tuple(out), c_per_group)


def conv_transpose2d_geometry(x, weight, bias=None, stride=1, padding=0, output_padding=0,
                              dilation=1, groups=1, output_size=None):
    """Check a conv_transpose2d call; return the geometry of the *underlying* conv2d.

    The transposed convolution maps ``(N, H, W, C_in)`` to ``(N, H_out, W_out, C_out)``;
    the geometry returned describes the convolution from ``(H_out, W_out)`` back to
    ``(H, W)``, whose input gradient the transposed convolution computes.
    """
    groups = check_int(groups, "groups", 1)
    n_out = weight.shape[-1] * groups if np.ndim(weight) == 4 else -1
    _check_common(x, weight, bias, n_out)
    _, h, w, c = x.shape
    kh, kw, c_in, _ = weight.shape
    if min(kh, kw) < 1:
        raise ValueError(
            f"conv_transpose2d: kernel size must be positive, got weight shape {weight.shape}"
        )
    if c != c_in:
        raise ValueError(
            f"conv_transpose2d: x has {c} channels but weight {weight.shape} expects {c_in} "
            f"(weight is (kh, kw, C_in, C_out // groups))"
        )
    if c % groups:
        raise ValueError(f"conv_transpose2d: groups={groups} must divide input channels ({c})")
    if isinstance(padding, str):
        raise ValueError(f"conv_transpose2d: padding must be an int or a pair, got {padding!r}")
    stride = check_pair(stride, "stride", 1)
    dilation = check_pair(dilation, "dilation", 1)
    ph, pw = check_pair(padding, "padding", 0)
    pads = ((ph, ph), (pw, pw))
    output_padding = check_pair(output_padding, "output_padding", 0)
    if output_size is not None:
        output_padding = _output_padding_for_size(
            output_size, (h, w), (kh, kw), stride, pads, dilation, output_padding
        )
    for axis, op, s, d in zip("HW", output_padding, stride, dilation):
        if op >= s and op >= d:
            raise ValueError(
                f"conv_transpose2d: output_padding along {axis} must be smaller than either "
                f"stride ({s}) or dilation ({d}), got {op}"
            )
    out = []
    for axis, size, k, s, p, d, op in zip("HW", (h, w), (kh, kw), stride, pads, dilation,
                                          output_padding):
        length = conv_transpose2d_output_size(size, k, s, p, d, op)
        if length < 1:
            raise ValueError(
                f"conv_transpose2d: the output size along {axis} would be {length} "
                f"(input {size}, kernel {k}, stride {s}, padding {p[0]}, dilation {d}, "
                f"output_padding {op}); it must be positive"
            )
        out.append(length)
    # The underlying convolution reads the C_out/groups channels of each group.
    return ConvGeometry((kh, kw), stride, pads, dilation, groups, tuple(out), (h, w),
                        weight.shape[-1])


def _output_padding_for_size(output_size, in_hw, kernel, stride, pads, dilation, output_padding):
    """The ``output_padding`` that makes a transposed conv give ``output_size`` (PyTorch's rule)."""
    if isinstance(output_size, (tuple, list)) and len(output_size) == 4:
        output_size = tuple(output_size[1:3])  # (N, H, W, C) -> (H, W)
    size = check_pair(output_size, "output_size", 1)
    result = []
    for axis, want, n, k, s, p, d, op in zip("HW", size, in_hw, kernel, stride, pads, dilation,
                                             output_padding):
        smallest = conv_transpose2d_output_size(n, k, s, p, d, 0)
        largest = smallest + s - 1
        if not smallest <= want <= largest:
            raise ValueError(
                f"conv_transpose2d: requested output_size {want} along {axis} is not in "
                f"[{smallest}, {largest}] for input size {n}"
            )
        if op not in (0, want - smallest):
            raise ValueError(
                f"conv_transpose2d: output_padding {op} along {axis} contradicts output_size "
                f"{want} (which needs output_padding {want - smallest}); give one of them"
            )
        result.append(want - smallest)
    return tuple(result)



# ============================================ the definition: im2col + one GEMM
def im2col(x, geometry):
    """The column matrices of a (grouped) convolution, one row per output position.

    Args:
        x (ndarray[N, H, W, C]): input, float.
        geometry (ConvGeometry): of the convolution.
    Returns:
        ndarray[g, N·Ho·Wo, kh·kw·C/g]: row ``(n, ho, wo)`` of group ``k``
        holds the window ``x_pad[n, ho·sh + i·dh, wo·sw + j·dw, k·C/g + c]`` ordered
        ``(i, j, c)``.
    """
    n, _, _, c = x.shape
    kh, kw = geometry.kernel
    sh, sw = geometry.stride
    dh, dw = geometry.dilation
    ho, wo = geometry.out_hw
    g = geometry.groups
    cg = c // g
    (pt, pb), (pl, pr) = geometry.padding
    xp = np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))  # (N, H + pt + pb, W + pl + pr, C)
    s_n, s_h, s_w, s_c = xp.strides
    # Every window as a read-only view (no copy): group k, image n, window (ho, wo),
    # tap (i, j), channel c. Neighbouring windows overlap in memory.
    windows = as_strided(
        xp,
        shape=(g, n, ho, wo, kh, kw, cg),
        strides=(cg * s_c, s_n, s_h * sh, s_w * sw, s_h * dh, s_w * dw, s_c),
        writeable=False,
    )
    return windows.reshape(g, n * ho * wo, kh * kw * cg)  # the one copy: (g, N·Ho·Wo, K)


def col2im(cols, geometry, x_shape):
    """The adjoint of ``im2col``: each column entry added back to the pixel it came from.

    Where windows overlap, their entries are summed; pixels no window reads get 0.
    One strided add per kernel tap ``(i, j)`` (a loop over taps, not over pixels).

    Args:
        cols (ndarray[g, N·Ho·Wo, kh·kw·C/g]): one row per output position.
        geometry (ConvGeometry): of the convolution.
        x_shape (tuple): ``(N, H, W, C)`` of the convolution's input.
    Returns:
        ndarray[N, H, W, C]
    """
    n, h, w, c = x_shape
    kh, kw = geometry.kernel
    sh, sw = geometry.stride
    dh, dw = geometry.dilation
    ho, wo = geometry.out_hw
    g = geometry.groups
    (pt, pb), (pl, pr) = geometry.padding
    taps = cols.reshape(g, n, ho, wo, kh, kw, c // g)
    xp = np.zeros((n, h + pt + pb, w + pl + pr, c), dtype=cols.dtype)
    for i in range(kh):
        for j in range(kw):
            # Tap (i, j) of window (ho, wo) read x_pad[ho·sh + i·dh, wo·sw + j·dw].
            rows = slice(i * dh, i * dh + sh * (ho - 1) + 1, sh)
            columns = slice(j * dw, j * dw + sw * (wo - 1) + 1, sw)
            tap = taps[:, :, :, :, i, j].transpose(1, 2, 3, 0, 4)  # (N, Ho, Wo, g, C/g)
            xp[:, rows, columns] += tap.reshape(n, ho, wo, c)
    return np.ascontiguousarray(xp[:, pt:pt + h, pl:pl + w])  # crop the padding


def _weight_per_group(weight, groups):
    """HWIO weight ``(kh, kw, C/g, C_out)`` as GEMM operands ``(g, kh·kw·C/g, C_out/g)``."""
    kh, kw, cg, c_out = weight.shape
    return weight.reshape(kh * kw * cg, groups, c_out // groups).transpose(1, 0, 2)


def _rows_per_group(a, groups):
    """``(N, H, W, C)`` as GEMM rows ``(g, N·H·W, C/g)``: channel block ``k`` in group ``k``."""
    return a.reshape(-1, groups, a.shape[-1] // groups).transpose(1, 0, 2)


def _channels_last(rows, shape):
    """Per-group rows ``(g, N·H·W, C/g)`` back to a channels-last ``shape (N, H, W, C)``."""
    return rows.transpose(1, 0, 2).reshape(shape)


def conv2d_forward_plain(x, weight, bias, geometry):
    """Convolution by its definition: ``y = im2col(x) @ W + b`` (one GEMM per group).

    Args:
        x (ndarray[N, H, W, C]): input, float32 or float64.
        weight (ndarray[kh, kw, C/groups, C_out]): HWIO filters, ``x``'s dtype.
        bias (ndarray[C_out] or None): added to every output position.
        geometry (ConvGeometry): from ``conv2d_geometry``.
    Returns:
        tuple: ``y (ndarray[N, Ho, Wo, C_out])`` and ``cols``, the column matrix
        ``(g, N·Ho·Wo, kh·kw·C/g)`` that ``conv2d_backward_plain`` needs.
    """
    n, c_out = x.shape[0], weight.shape[-1]
    cols = im2col(x, geometry)  # (g, N·Ho·Wo, kh·kw·C/g)
    y = cols @ _weight_per_group(weight, geometry.groups)  # (g, N·Ho·Wo, C_out/g)
    y = _channels_last(y, (n, *geometry.out_hw, c_out))  # (N, Ho, Wo, C_out)
    if bias is not None:
        y = y + bias
    return y, cols


def _input_grad_plain(dy, weight, x_shape, geometry):
    """``dx = col2im(dy @ Wᵀ)``: each window's gradient, added back where it was read."""
    g = geometry.groups
    dy_rows = _rows_per_group(dy, g)  # (g, N·Ho·Wo, C_out/g)
    dcols = dy_rows @ _weight_per_group(weight, g).transpose(0, 2, 1)  # (g, N·Ho·Wo, K)
    return col2im(dcols, geometry, x_shape)


def _weight_grad_plain(cols, dy, weight_shape, groups):
    """``dW = colsᵀ @ dy`` per group, as an HWIO weight of ``weight_shape``."""
    dy_rows = _rows_per_group(dy, groups)  # (g, N·Ho·Wo, C_out/g)
    dw = cols.transpose(0, 2, 1) @ dy_rows  # (g, kh·kw·C/g, C_out/g)
    return np.ascontiguousarray(dw.transpose(1, 0, 2)).reshape(weight_shape)


def conv2d_backward_plain(dy, cols, weight, x_shape, geometry):
    """Gradients of ``conv2d_forward_plain``.

    Args:
        dy (ndarray[N, Ho, Wo, C_out]): gradient of the output.
        cols (ndarray[g, N·Ho·Wo, kh·kw·C/g]): the forward's column matrix.
        weight (ndarray[kh, kw, C/g, C_out]): the forward's weight.
        x_shape (tuple): ``(N, H, W, C)`` of the input.
        geometry (ConvGeometry): of the convolution.
    Returns:
        tuple: ``dx (ndarray[N, H, W, C])``, ``dweight (ndarray[kh, kw, C/g, C_out])``,
        ``dbias (ndarray[C_out])``.
    """
    dx = _input_grad_plain(dy, weight, x_shape, geometry)
    dw = _weight_grad_plain(cols, dy, weight.shape, geometry.groups)
    db = dy.sum(axis=(0, 1, 2))
    return dx, dw, db


def conv_transpose2d_forward_plain(x, weight, bias, geometry):
    """Transposed convolution by its definition: the input gradient of a convolution.

    Args:
        x (ndarray[N, H, W, C_in]): input, float32 or float64.
        weight (ndarray[kh, kw, C_in, C_out/groups]): filters, ``x``'s dtype.
        bias (ndarray[C_out] or None).
        geometry (ConvGeometry): from ``conv_transpose2d_geometry`` (that of the
            convolution from ``(H_out, W_out)`` to ``(H, W)``).
    Returns:
        ndarray[N, H_out, W_out, C_out]
    """
    n = x.shape[0]
    c_out = weight.shape[-1] * geometry.groups
    conv_weight = weight.transpose(0, 1, 3, 2)  # (kh, kw, C_out/g, C_in): the convolution's
    y = _input_grad_plain(x, conv_weight, (n, *geometry.in_hw, c_out), geometry)
    if bias is not None:
        y = y + bias
    return y


def conv_transpose2d_backward_plain(dy, x, weight, geometry):
    """Gradients of ``conv_transpose2d_forward_plain``.

    The input gradient is the *forward* convolution of ``dy``; the weight gradient
    comes from the same column matrix ``im2col(dy)``.

    Args:
        dy (ndarray[N, H_out, W_out, C_out]): gradient of the output.
        x (ndarray[N, H, W, C_in]): the forward's input.
        weight (ndarray[kh, kw, C_in, C_out/g]): the forward's weight.
        geometry (ConvGeometry): from ``conv_transpose2d_geometry``.
    Returns:
        tuple: ``dx (ndarray[N, H, W, C_in])``, ``dweight (ndarray[kh, kw, C_in, C_out/g])``,
        ``dbias (ndarray[C_out])``.
    """
    conv_weight = weight.transpose(0, 1, 3, 2)  # (kh, kw, C_out/g, C_in)
    dx, cols = conv2d_forward_plain(dy, conv_weight, None, geometry)  # (N, H, W, C_in)
    # The convolution's dW, with dy as its input and x as its output gradient.
    dw = _weight_grad_plain(cols, x, conv_weight.shape, geometry.groups).transpose(0, 1, 3, 2)
    return dx, np.ascontiguousarray(dw), dy.sum(axis=(0, 1, 2))


# ================================================= checked kernels on ndarrays
def conv2d_forward(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, keep_cols=True):
    """Convolution ``y = im2col(x) @ W + b``, channels-last, on the fast kernels.

    Checks its arguments, then runs ``conv_kernels.conv2d_forward_blocked`` (the same
    numbers as ``conv2d_forward_plain``, in cache-sized blocks on several threads).

    Args:
        x (ndarray[N, H, W, C]): input, float32 or float64.
        weight (ndarray[kh, kw, C/groups, C_out]): HWIO filters, ``x``'s dtype.
        bias (ndarray[C_out] or None): added to every output position.
        stride (int or pair): step of the window.
        padding (int, pair, "same", "valid" or ((top, bottom), (left, right))):
            zeros added around H and W.
        dilation (int or pair): spacing between kernel taps.
        groups (int): number of independent channel groups.
        keep_cols (bool): keep what ``dW`` needs in the cache
            (False saves memory when the weight needs no gradient).
    Returns:
        tuple: ``y (ndarray[N, Ho, Wo, C_out])`` and a ``Conv2dCache`` for
        ``conv2d_backward``.
    Raises:
        ValueError, TypeError: see ``conv2d``.
    """
    geometry = conv2d_geometry(x, weight, bias, stride, padding, dilation, groups)
    return conv2d_forward_blocked(x, weight, bias, geometry, keep_cols)


def conv_transpose2d_forward(x, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                             dilation=1, output_size=None):
    """Transposed convolution on the fast kernels (checked; see ``conv_transpose2d``).

    Args:
        x (ndarray[N, H, W, C_in]): input, float32 or float64.
        weight (ndarray[kh, kw, C_in, C_out/groups]): filters, ``x``'s dtype.
        bias (ndarray[C_out] or None).
        stride, padding, output_padding, dilation (int or pair): PyTorch's meaning.
        groups (int): number of channel groups.
        output_size (pair or None): requested ``(H_out, W_out)``; sets ``output_padding``.
    Returns:
        tuple: ``y (ndarray[N, H_out, W_out, C_out])`` and a ``ConvTranspose2dCache`` for
        ``conv_transpose2d_backward``.
    """
    geometry = conv_transpose2d_geometry(
        x, weight, bias, stride, padding, output_padding, dilation, groups, output_size
    )
    return conv_transpose2d_forward_blocked(x, weight, bias, geometry)


# ======================================================================== autograd
def _needed_grads(backward, ctx, grad):
    """``(dx, dweight, dbias)`` from a kernel's ``backward``, computing only what is needed."""
    need = ctx.needs_input_grad
    return backward(np.ascontiguousarray(grad), ctx.cache, need_input_grad=need[0],
                    need_weight_grad=need[1], need_bias_grad=ctx.has_bias and need[2])


class Conv2dFunction(Function):
    """Autograd glue around ``conv2d_forward`` / ``conv2d_backward``."""

    @staticmethod
    def forward(ctx, x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1,
                geometry=None):
        # The column matrix is only needed for dW; without it backward keeps less memory.
        keep_cols = len(ctx.needs_input_grad) > 1 and ctx.needs_input_grad[1]
        if geometry is None:
            geometry = conv2d_geometry(x, weight, bias, stride, padding, dilation, groups)
        # (conv2d passes the geometry it checked: no second round of checks.)
        y, ctx.cache = conv2d_forward_blocked(x, weight, bias, geometry, keep_cols,
                                              input_grad=ctx.needs_input_grad[0])
        ctx.has_bias = bias is not None
        return y

    @staticmethod
    def backward(ctx, grad):
        return _needed_grads(conv2d_backward, ctx, grad)


class ConvTranspose2dFunction(Function):
    """Autograd glue around ``conv_transpose2d_forward`` / ``conv_transpose2d_backward``."""

    @staticmethod
    def forward(ctx, x, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                dilation=1, output_size=None):
        y, ctx.cache = conv_transpose2d_forward(
            x, weight, bias, stride, padding, output_padding, groups, dilation, output_size
        )
        ctx.has_bias = bias is not None
        return y

    @staticmethod
    def backward(ctx, grad):
        return _needed_grads(conv_transpose2d_backward, ctx, grad)


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """2-D convolution over channels-last input (PyTorch's ``conv2d`` semantics).

    ``y[n, ho, wo, o] = b[o] + Σ_{i,j,c} x_pad[n, ho·sh + i·dh, wo·sw + j·dw, c] W[i, j, c, o]``
    (``c`` within ``o``'s group), computed as im2col + one GEMM.

    Args:
        x (Tensor or ndarray[N, H, W, C]): input, float32 or float64.
        weight (Tensor or ndarray[kh, kw, C/groups, C_out]): HWIO filters, ``x``'s dtype.
        bias (Tensor or ndarray[C_out], optional).
        stride (int or pair): default 1.
        padding (int, pair, "same" or "valid"): zeros around H and W; "same" keeps the
            size (stride 1 only; an odd total puts the extra row/column at the end).
        dilation (int or pair): spacing between kernel taps.
        groups (int): split the channels into independent convolutions.
    Returns:
        Tensor[N, Ho, Wo, C_out] with ``Ho = floor((H + 2p - d(k-1) - 1)/s) + 1``.
    Raises:
        ValueError: x or weight not 4-D, channels not matching the weight, groups not
            dividing the channels, a kernel larger than the padded input, bad padding.
        TypeError: non-float input or dtypes that differ between x, weight and bias.
    """
    x_data, w_data = check_array(x, "x"), check_array(weight, "weight")
    b_data = None if bias is None else check_array(bias, "bias")
    geometry = conv2d_geometry(x_data, w_data, b_data, stride, padding, dilation, groups)
    return Conv2dFunction.apply(
        x, weight, bias, stride=stride, padding=padding, dilation=dilation, groups=groups,
        geometry=geometry,
    )


def conv_transpose2d(x, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1, output_size=None):
    """2-D transposed convolution over channels-last input (PyTorch's semantics).

    The gradient of ``conv2d`` with respect to its input, used as a learnable
    upsampling: ``H_out = (H - 1)·s - 2p + d·(k - 1) + output_padding + 1``.

    Args:
        x (Tensor or ndarray[N, H, W, C_in]): input, float32 or float64.
        weight (Tensor or ndarray[kh, kw, C_in, C_out/groups]): filters, ``x``'s dtype.
        bias (Tensor or ndarray[C_out], optional).
        stride, padding, dilation (int or pair): those of the convolution this is the
            transpose of.
        output_padding (int or pair): extra rows/columns at the bottom/right; must be
            smaller than the stride or the dilation.
        groups (int): channel groups.
        output_size (pair or None): ``(H_out, W_out)`` (or ``(N, H_out, W_out, C)``)
            choosing among the sizes a stride allows, as ``nn.ConvTranspose2d`` does.
    Returns:
        Tensor[N, H_out, W_out, C_out]
    Raises:
        ValueError, TypeError: as ``conv2d``; also for ``output_padding`` too large or an
            ``output_size`` that the stride cannot reach.
    """
    x_data, w_data = check_array(x, "x"), check_array(weight, "weight")
    b_data = None if bias is None else check_array(bias, "bias")
    conv_transpose2d_geometry(
        x_data, w_data, b_data, stride, padding, output_padding, dilation, groups, output_size
    )
    return ConvTranspose2dFunction.apply(
        x, weight, bias, stride=stride, padding=padding, output_padding=output_padding,
        groups=groups, dilation=dilation, output_size=output_size,
    )

