"""The fast convolution kernels: im2col + GEMM in cache-sized blocks, on several threads.

``nn/functional/conv.py`` defines the convolution (geometry, checks, the plain
im2col + one GEMM forward and backward, the autograd Functions). This module
computes the same numbers faster, and the Functions call it; tests compare the two
(``tests/nn/test_conv_kernels.py``). Every function here takes a ``ConvGeometry``
that ``conv.py`` has already checked: no argument checks.

**In blocks, on several threads.** The column matrix of a whole layer is large (28-56
MB for the U-Net's first layers): written out, then read back by the GEMM, it makes
the layer memory-bound. So the output rows are cut into blocks of ~1 MB of columns;
a block is padded, copied into a reused per-thread buffer and multiplied while it
is still in cache, and the blocks are shared by the library's threads
(``nn/_threads.py``; BLAS runs single-threaded inside them). For ``dW`` a layer
whose column matrix is at most ``KEEP_COLS_BYTES`` (16 MB) has its blocks written into
one kept matrix instead of the per-thread buffer (the forward's im2col serves the
backward too); a larger one is rebuilt block by block from the kept input. A
stride-1 layer that needs both gradients keeps neither: its backward builds the
columns of ``dy`` once and takes ``dx`` and ``dW`` from them:
``dW[i] = Σ_q x[q]ᵀ g_full[q + k-1-i]`` is a block of ``xᵀ @ im2col(g_full)``, from the
same columns that give ``dx`` (``_stride1_backward``).

**The input gradient without scattered adds.** ``dx[h] = Σ_{i, t: h = i·d - pad + s·t}
g[t] W[i]ᵀ``. With stride 1 this is itself a convolution of ``g`` (zero-padded to
"full" size) with the flipped kernel, so it is im2col + one GEMM again. A stride-``s``
convolution touches input rows ``i·d - pad + s·t``, so the rows split into ``s``
*phases* (``h mod s``); each phase is reached by a subset of the taps and is a
stride-1 convolution of ``g`` with that sub-kernel, interleaved into ``dx`` once (the
sub-pixel view of Shi et al., 2016, "Real-time single image and video
super-resolution using an efficient sub-pixel convolutional neural network").

**Transposed convolution** reuses these: its forward is ``conv2d_input_grad`` and its
input gradient is the convolution's forward (im2col + GEMM).
"""
from dataclasses import dataclass, replace

import numpy as np
from numpy.lib.stride_tricks import as_strided

from nn._threads import BLOCK_BYTES, parallel_for, parallel_sum, split_range

__all__ = [
    "conv2d_forward_blocked", "conv2d_backward", "conv2d_input_grad", "conv2d_weight_grad",
    "conv_transpose2d_forward_blocked", "conv_transpose2d_backward", "im2col_blocked",
    "Conv2dCache", "ConvTranspose2dCache", "KEEP_COLS_BYTES",
]


# ============================================================ im2col and the GEMMs
# Work is cut into blocks of about this many bytes (the library's, nn/_threads.py):
# they fit the 1 MB L2 cache per core, so a block of columns is still in cache when
# its GEMM reads it.
_BLOCK_BYTES = BLOCK_BYTES

# The forward keeps a layer's whole column matrix for ``dW`` when it is at most this
# large (bytes); larger ones are rebuilt block by block from the kept input in the
# backward pass. Memory vs time: keeping costs the columns' memory (kh·kw times the
# input) until the backward pass, rebuilding costs a second im2col copy. Measured on
# the U-Net training step (2 threads): 16 MB keeps 6 of its 10 layers' columns (4-16 MB
# each) and the step runs ~10% faster than rebuilding all; 32-64 MB (all of them) was
# slower than 16 MB (a 64 MB matrix goes through main memory and fresh mmap pages).
# (Since then the stride-1 layers that need dx take dW from dy's columns instead,
# ``_stride1_backward``: this applies to the first layer and to strided convolutions.)
KEEP_COLS_BYTES = 16 << 20


def _pad(x, padding):
    """Zero-pad the H and W axes of ``x (N, H, W, C)`` by ``((top, bottom), (left, right))``."""
    (pt, pb), (pl, pr) = padding
    if pt == pb == pl == pr == 0:
        return x
    n, h, w, c = x.shape
    # One allocation; the borders zeroed and the interior copied per image block, on
    # the library's threads (np.pad is slower here).
    xp = np.empty((n, h + pt + pb, w + pl + pr, c), dtype=x.dtype)
    blocks = split_range(n, _blocks_for(x.nbytes))

    def fill(i, slot):
        n0, n1 = blocks[i]
        block = xp[n0:n1]
        block[:, :pt] = 0
        block[:, pt + h:] = 0
        block[:, pt:pt + h, :pl] = 0
        block[:, pt:pt + h, pl + w:] = 0
        block[:, pt:pt + h, pl:pl + w] = x[n0:n1]

    parallel_for(fill, len(blocks))
    return xp


def _blocks_for(nbytes):
    """How many blocks to cut ``nbytes`` of memory-bound work into: ~1 MB each."""
    return max(1, nbytes // _BLOCK_BYTES)


def _is_plain_gemm(geometry):
    """A 1x1, stride-1, unpadded, ungrouped convolution: the input already is the column matrix."""
    return (geometry.kernel, geometry.stride, geometry.padding, geometry.groups) == (
        (1, 1), (1, 1), ((0, 0), (0, 0)), 1
    )


def im2col_blocked(x, geometry):
    """``conv.im2col(x, geometry)`` (the same array, ``(g, N·Ho·Wo, kh·kw·C/g)``), filled
    in blocks of output rows on the library's threads; a 1x1 stride-1 convolution's
    columns are the input itself (no copy)."""
    n, _, _, c = x.shape
    kh, kw = geometry.kernel
    ho, wo = geometry.out_hw
    g = geometry.groups
    cg = c // g
    if _is_plain_gemm(geometry):
        # A 1x1 stride-1 convolution is a plain GEMM on the input: no copy at all.
        return np.ascontiguousarray(x).reshape(1, n * ho * wo, c)  # (1, N·H·W, C)
    xp = _pad(np.ascontiguousarray(x), geometry.padding)
    k = kh * kw * cg
    cols = np.empty((g, n * ho * wo, k), dtype=x.dtype)  # (g, N·Ho·Wo, K)
    blocks = _row_blocks(n, ho, wo * k * x.itemsize)

    def fill(i, slot):
        n0, n1, h0, h1 = blocks[i]
        r0, r1 = (n0 * ho + h0) * wo, ((n1 - 1) * ho + h1) * wo
        _fill_cols(_input_slab(xp, geometry, n0, n1, h0, h1), geometry, h1 - h0, cols[:, r0:r1])

    parallel_for(fill, len(blocks))
    return cols


def _row_blocks(n, ho, row_bytes, block_bytes=None):
    """Cut the ``N·Ho`` output rows into blocks ``(n0, n1, h0, h1)`` of about 1 MB of columns.

    A block is either whole images ``[n0, n1)`` or rows ``[h0, h1)`` of one image, so
    its rows of the column matrix and of the output are contiguous. Small blocks stay
    in cache between the im2col copy and the GEMM that reads them (a whole column
    matrix of the U-Net's first layers is 28-56 MB: copying it, then reading it back
    from memory, costs as much as the GEMM), and they spread over the threads.
    """
    rows = max(1, (block_bytes or _BLOCK_BYTES) // max(1, row_bytes))  # output rows per block
    if rows >= ho:
        per = rows // ho  # whole images per block
        return [(n0, min(n0 + per, n), 0, ho) for n0 in range(0, n, per)]
    return [(i, i + 1, h0, min(h0 + rows, ho)) for i in range(n) for h0 in range(0, ho, rows)]


def _input_slab(xp, geometry, n0, n1, h0, h1):
    """The rows of the padded input that output rows ``[h0, h1)`` of images ``[n0, n1)`` read."""
    kh = geometry.kernel[0]
    sh, dh = geometry.stride[0], geometry.dilation[0]
    return xp[n0:n1, h0 * sh:(h1 - 1) * sh + dh * (kh - 1) + 1]


def _fill_cols(xp, geometry, ho, out):
    """Write the windows of ``xp`` (padded input rows, ``ho`` output rows) into ``out``.

    Args:
        xp (ndarray[n, Hs, Wp, C]): padded input (a slab of rows of it).
        geometry (ConvGeometry): of the convolution (``out_hw[1]`` is Wo).
        ho (int): output rows the slab yields.
        out (ndarray[g, n·ho·Wo, kh·kw·C/g]): destination (a view into the column matrix).
    """
    n, _, _, c = xp.shape
    kh, kw = geometry.kernel
    sh, sw = geometry.stride
    dh, dw = geometry.dilation
    wo = geometry.out_hw[1]
    g = geometry.groups
    cg = c // g
    s_n, s_h, s_w, s_c = xp.strides
    if g == 1 and (dw == 1 or kw == 1) and c > 0 and out[0].flags.c_contiguous:
        # One window row is kw·C values that are contiguous in NHWC. NumPy copies an
        # array run by run (its innermost axis), with a fixed cost per run: as floats
        # the runs are the N·Ho·Wo·kh window rows; with each window row seen as one
        # opaque record the runs are the N·Ho·Wo windows, kh times fewer (1.7x faster
        # for the first layer's 3 channels).
        record = np.dtype((np.void, kw * c * xp.itemsize))
        # (A slab of whole padded rows is contiguous: ascontiguousarray makes no copy.)
        xp = np.ascontiguousarray(xp)
        s_n, s_h, s_w, s_c = xp.strides
        rows = np.ndarray((n, ho, wo, kh), dtype=record, buffer=xp,
                          strides=(s_n, s_h * sh, s_w * sw, s_h * dh))  # overlapping records
        dest = out[0].reshape(n, ho, wo, kh, kw * c).view(record)  # (n, ho, Wo, kh, 1)
        dest[..., 0] = rows
        return
    # A read-only strided view of every window, then one copy into the rows.
    windows = as_strided(
        xp,
        shape=(g, n, ho, wo, kh, kw, cg),
        strides=(cg * s_c, s_n, s_h * sh, s_w * sw, s_h * dh, s_w * dw, s_c),
        writeable=False,
    )
    out.reshape(g, n, ho, wo, kh, kw, cg)[...] = windows  # (g, n, ho, Wo, kh, kw, C/g)


def _gemm_rows(a, b, out=None, bias=None):
    """``a @ b (+ bias)`` with the rows of ``a (M, K)`` in ~1 MB blocks over the threads.

    Each thread runs single-threaded BLAS on its blocks (see ``nn/_threads.py``).
    Returns ``out (M, N)`` (allocated when None).
    """
    if out is None:
        out = np.empty((a.shape[0], b.shape[1]), dtype=np.result_type(a, b))
    blocks = split_range(a.shape[0], _blocks_for(a.nbytes))

    def work(i, slot):
        r0, r1 = blocks[i]
        np.matmul(a[r0:r1], b, out=out[r0:r1])
        if bias is not None:
            out[r0:r1] += bias

    parallel_for(work, len(blocks))
    return out


def _gemm_tn(a, b):
    """``aᵀ @ b`` for tall ``a (M, K)`` and ``b (M, N)``: ``(K, N)``, summed over M in blocks.

    The threads compute the products of the row blocks, ``b_blockᵀ @ a_block (N, K)``
    (this orientation runs faster than ``a_blockᵀ @ b_block`` for narrow N), which are
    added at the end in block order: the result does not depend on which thread took
    which block (bit-for-bit reproducible training).
    """
    blocks = split_range(a.shape[0], _blocks_for(a.nbytes + b.nbytes))
    products = [None] * len(blocks)

    def work(i, slot):
        r0, r1 = blocks[i]
        products[i] = b[r0:r1].T @ a[r0:r1]  # (N, K)

    parallel_for(work, len(blocks))
    return _sum_in_order(products, (b.shape[1], a.shape[1]), np.result_type(a, b)).T  # (K, N)


def _sum_in_order(arrays, shape, dtype):
    """``Σ arrays`` added in list order (a sum of per-block results that is reproducible)."""
    total = np.zeros(shape, dtype=dtype)
    for array in arrays:
        if array is not None:
            total += array
    return total


def _padded_slab(x, geometry, n0, n1, h0, h1, buffers, slot):
    """The zero-padded input rows that output rows ``[h0, h1)`` of images ``[n0, n1)`` read.

    Without padding this is a view of ``x``. Otherwise the rows are copied into a
    per-thread buffer with zeroed borders: padding one block at a time, in cache,
    costs less than writing and re-reading a padded copy of the whole input.
    Returns ``ndarray[n1 - n0, rows, W + pad_left + pad_right, C]``.
    """
    (pt, pb), (pl, pr) = geometry.padding
    kh = geometry.kernel[0]
    sh, dh = geometry.stride[0], geometry.dilation[0]
    _, h, w, c = x.shape
    top, stop = h0 * sh - pt, (h1 - 1) * sh + dh * (kh - 1) + 1 - pt  # rows of x, may overhang
    if pt == pb == pl == pr == 0:
        return x[n0:n1, top:stop]
    shape = (n1 - n0, stop - top, w + pl + pr, c)
    size = shape[0] * shape[1] * shape[2] * shape[3]
    if buffers.get(slot) is None or buffers[slot].size < size:
        buffers[slot] = np.empty(size, dtype=x.dtype)
    slab = buffers[slot][:size].reshape(shape)
    lo, hi = max(top, 0), min(stop, h)  # rows inside x
    slab[:, :lo - top] = 0
    slab[:, hi - top:] = 0
    slab[:, lo - top:hi - top, :pl] = 0
    slab[:, lo - top:hi - top, pl + w:] = 0
    slab[:, lo - top:hi - top, pl:pl + w] = x[n0:n1, lo:hi]
    return slab


def _conv_blocks(x, geometry, n, k, dtype, work, block_bytes=None, keep=None):
    """Run ``work(cols, r0, r1, slot)`` for every block of output rows (see ``_row_blocks``).

    ``cols (r1 - r0, k)`` holds the im2col rows ``[r0, r1)`` of the input ``x``
    (zero-padded block by block); it lives in a per-thread buffer that is reused
    from block to block, so it is written and read while in cache. With ``keep``
    (an ``(N·Ho·Wo, k)`` array) the block is written into its rows of ``keep``
    instead, which then holds the whole column matrix.
    """
    ho, wo = geometry.out_hw
    blocks = _row_blocks(n, ho, wo * k * np.dtype(dtype).itemsize, block_bytes)
    most = max(((b[1] - b[0]) * (b[3] - b[2]) * wo for b in blocks), default=0)
    buffers, slabs = {}, {}

    def run(i, slot):
        n0, n1, h0, h1 = blocks[i]
        r0, r1 = (n0 * ho + h0) * wo, ((n1 - 1) * ho + h1) * wo
        if keep is not None:
            cols = keep[r0:r1]  # (rows, kh·kw·C)
        else:
            if slot not in buffers:
                buffers[slot] = np.empty((most, k), dtype=dtype)
            cols = buffers[slot][:r1 - r0]  # (rows, kh·kw·C)
        slab = _padded_slab(x, geometry, n0, n1, h0, h1, slabs, slot)
        _fill_cols(slab, geometry, h1 - h0, cols[None])
        work(cols, r0, r1, slot)

    parallel_for(run, len(blocks))


def _forward_in_blocks(xp, w2d, bias, geometry, n, out=None, keep=None):
    """``y = im2col(x) @ W (+ b)`` block by block, ``xp`` the unpadded input (groups == 1).

    Returns ``(N·Ho·Wo, C_out)``; with ``out`` (an ``(N, Ho, Wo, C_out)`` view, e.g. one
    phase of a strided ``dx``) each block is written there instead, from cache. With
    ``keep`` (an ``(N·Ho·Wo, kh·kw·C)`` array) the column matrix is left there for ``dW``.
    """
    ho, wo = geometry.out_hw
    c_out = w2d.shape[1]
    y = np.empty((n * ho * wo, c_out), dtype=xp.dtype) if out is None else None

    def work(cols, r0, r1, slot):
        if out is None:
            block = y[r0:r1]
            np.matmul(cols, w2d, out=block)
        else:
            block = cols @ w2d  # (rows, C_out)
        if bias is not None:
            block += bias
        if out is not None:
            first, last = divmod(r0 // wo, ho), divmod(r1 // wo - 1, ho)  # (image, row)
            out[first[0]:last[0] + 1, first[1]:last[1] + 1] = block.reshape(
                last[0] + 1 - first[0], last[1] + 1 - first[1], wo, c_out)

    _conv_blocks(xp, geometry, n, w2d.shape[0], xp.dtype, work, keep=keep)
    return y if out is None else out


def _weight_grad_blocked(xp, dy_rows, geometry, n):
    """``dW = im2col(xp)ᵀ @ dy`` with the columns rebuilt block by block: ``(K, C_out)``.

    Rebuilding a block of columns from the kept input costs a copy in
    cache; keeping the whole column matrix from the forward pass would cost ~9x the
    memory and a trip through main memory both ways.
    """
    products = {}

    def work(cols, r0, r1, slot):
        products[r0] = dy_rows[r0:r1].T @ cols  # (C_out, K)

    k = geometry.kernel[0] * geometry.kernel[1] * geometry.in_channels_per_group
    # Larger blocks here: each GEMM sums over the block's rows, and longer sums run
    # faster (4 MB blocks: 10% faster than 1 MB on the U-Net's and RetinaNet's layers).
    _conv_blocks(xp, geometry, n, k, xp.dtype, work, 4 * _BLOCK_BYTES)
    # Added in block order whichever thread computed them (reproducible).
    ordered = [products[r0] for r0 in sorted(products)]
    return _sum_in_order(ordered, (dy_rows.shape[1], k), xp.dtype).T  # (K, C_out)


def _fuses_backward(geometry):
    """True when ``_stride1_backward`` applies: stride 1, one group, not a plain GEMM."""
    return (geometry.stride == (1, 1) and geometry.groups == 1
            and not _is_plain_gemm(geometry))


def _stride1_backward(dy, x, weight, geometry):
    """``dx`` and ``dW`` of a stride-1 convolution from one column matrix, ``im2col(dy)``.

    With stride 1, ``dx`` is the convolution of ``dy`` (padded to "full" size) with the
    flipped filters: ``dx[q] = Σ_i dy_full[q + i] W[k-1-i]ᵀ``, i.e. ``cols_dy @ W_back``
    with ``cols_dy = im2col(dy_full)`` (one row per input pixel ``q``). The same
    columns give the weight gradient: ``dW[i] = Σ_q x[q]ᵀ dy[q - i + pad]``, which is
    column block ``k-1-i`` of ``xᵀ @ cols_dy``. So each block of rows builds its dy
    columns once and runs both GEMMs while they are in cache; the input's columns are
    neither kept from the forward pass nor rebuilt. (Measured on the U-Net training
    step, 2 threads: its 32 -> 16 layer's backward 17.8 ms at (8, 48, 144) before,
    13.8 ms at (12, 40, 120) after; the step 218 -> 191 ms, peak RSS 307 -> 237 MB.)

    Args:
        dy (ndarray[N, H', W', C_out]): contiguous output gradient.
        x (ndarray[N, H, W, C]): the forward's input (contiguous).
        weight (ndarray[kh, kw, C, C_out]): HWIO weight.
        geometry (ConvGeometry): stride 1, one group.
    Returns:
        tuple: ``dx (ndarray[N, H, W, C])`` and ``dW (ndarray[kh, kw, C, C_out])``.
    """
    n, h, w, c = x.shape
    kh, kw = geometry.kernel
    ho, wo = geometry.out_hw
    c_out = weight.shape[-1]
    (row,) = _phases(kh, 1, geometry.dilation[0], geometry.padding[0][0], h, ho)
    (col,) = _phases(kw, 1, geometry.dilation[1], geometry.padding[1][0], w, wo)
    # Flipped taps, channel axes swapped: (kh, kw, C_out, C) -> (kh·kw·C_out, C).
    back = np.ascontiguousarray(weight[::-1, ::-1].transpose(0, 1, 3, 2)).reshape(-1, c)
    dy_sub = np.ascontiguousarray(dy[:, row.crop_lo:ho - row.crop_hi, col.crop_lo:wo - col.crop_hi])
    phase_geometry = replace(geometry, stride=(1, 1), padding=(row.pad, col.pad),
                             dilation=(row.step, col.step), in_hw=dy_sub.shape[1:3],
                             out_hw=(h, w), in_channels_per_group=c_out)
    x_rows = x.reshape(n * h * w, c)  # (N·H·W, C): row q is the pixel of dx's row q
    dx = np.empty((n * h * w, c), dtype=dy.dtype)
    products = {}

    def work(cols, r0, r1, slot):
        np.matmul(cols, back, out=dx[r0:r1])  # (rows, C)
        products[r0] = x_rows[r0:r1].T @ cols  # (C, kh·kw·C_out)

    _conv_blocks(dy_sub, phase_geometry, n, back.shape[0], dy.dtype, work)
    # Added in block order whichever thread computed them (reproducible).
    ordered = [products[r0] for r0 in sorted(products)]
    dw_back = _sum_in_order(ordered, (c, back.shape[0]), dy.dtype)  # (C, kh·kw·C_out)
    # Column block (a, b) holds the flipped tap (kh-1-a, kw-1-b).
    dw = dw_back.reshape(c, kh, kw, c_out)[:, ::-1, ::-1].transpose(1, 2, 0, 3)
    return dx.reshape(n, h, w, c), np.ascontiguousarray(dw)


def _grouped_weight(weight, groups):
    """HWIO weight ``(kh, kw, C/g, C_out)`` as per-group operands ``(g, kh·kw·C/g, C_out/g)``."""
    kh, kw, cg, c_out = weight.shape
    if groups == 1:
        return weight.reshape(1, kh * kw * cg, c_out)
    w5 = weight.reshape(kh, kw, cg, groups, c_out // groups)  # (kh, kw, C/g, g, C_out/g)
    return w5.transpose(3, 0, 1, 2, 4).reshape(groups, kh * kw * cg, c_out // groups)


def _ungroup_weight(w_groups, kernel):
    """Inverse of ``_grouped_weight``: ``(g, kh·kw·C/g, C_out/g)`` -> ``(kh, kw, C/g, C_out)``."""
    g, k, cog = w_groups.shape
    kh, kw = kernel
    cg = k // (kh * kw)
    if g == 1:
        return w_groups.reshape(kh, kw, cg, cog)
    w5 = w_groups.reshape(g, kh, kw, cg, cog).transpose(1, 2, 3, 0, 4)  # (kh, kw, C/g, g, C_out/g)
    return np.ascontiguousarray(w5).reshape(kh, kw, cg, g * cog)


def _grouped_rows(y, groups):
    """``(N, H, W, C)`` as per-group GEMM rows ``(g, N·H·W, C/g)`` (a view when g == 1)."""
    n, h, w, c = y.shape
    rows = np.ascontiguousarray(y).reshape(n * h * w, groups, c // groups)  # (N·H·W, g, C/g)
    return rows.transpose(1, 0, 2)  # (g, N·H·W, C/g)


def _conv_gemm(cols, weight, geometry, n):
    """``y = cols @ W`` per group, reshaped to the channels-last output ``(N, Ho, Wo, C_out)``."""
    ho, wo = geometry.out_hw
    g = geometry.groups
    w_groups = _grouped_weight(weight, g)  # (g, kh·kw·C/g, C_out/g)
    c_out = weight.shape[-1]
    if g == 1:
        return _gemm_rows(cols[0], w_groups[0]).reshape(n, ho, wo, c_out)  # (N, Ho, Wo, C_out)
    y = np.matmul(cols, w_groups)  # (g, N·Ho·Wo, C_out/g)
    # Output channel block k comes from group k: (N·Ho·Wo, g, C_out/g) -> C_out.
    return np.ascontiguousarray(y.transpose(1, 0, 2)).reshape(n, ho, wo, c_out)


def conv2d_weight_grad(cols, dy, geometry):
    """``dW = colsᵀ @ dy`` per group.

    Args:
        cols (ndarray[g, N·Ho·Wo, kh·kw·C/g]): the forward's column matrix (``im2col``).
        dy (ndarray[N, Ho, Wo, C_out]): gradient of the output.
        geometry (ConvGeometry): of the convolution.
    Returns:
        ndarray[kh, kw, C/g, C_out]
    """
    g = geometry.groups
    dy_rows = _grouped_rows(dy, g)  # (g, N·Ho·Wo, C_out/g)
    if g > 1:
        dw = np.matmul(cols.transpose(0, 2, 1), dy_rows)  # (g, kh·kw·C/g, C_out/g)
        return _ungroup_weight(dw, geometry.kernel)
    product = _gemm_tn(cols[0], dy_rows[0])  # (kh·kw·C, C_out)
    return _ungroup_weight(product[None], geometry.kernel)


def _add_bias(y, bias):
    """``y += bias`` over the channel axis of ``y (N, H, W, C)``, in place.

    The bias is tiled along W so that the add runs over rows of ``W·C`` values:
    broadcasting a short channel vector directly is 2x slower for small C.
    """
    n, h, w, c = y.shape
    if not y.flags.c_contiguous:
        y += bias  # a reshape would copy, and the add would be lost
        return
    y.reshape(n * h, w * c)[...] += np.tile(bias, w)  # (N·H, W·C) += (W·C,)


def _bias_grad(dy):
    """``db = Σ dy`` over N, H, W: rows of ``W·C`` values summed, then the W blocks.

    (Pure NumPy, as fast as a GEMV here, and no extra BLAS call; see conv2d_input_grad.)"""
    n, h, w, c = dy.shape
    rows = np.ascontiguousarray(dy).reshape(n * h, w * c)  # (N·H, W·C)
    total = parallel_sum(lambda a, b: rows[a:b].sum(axis=0), n * h, w * c * dy.itemsize)
    return total.reshape(w, c).sum(axis=0)


# ================================================================ the input gradient
@dataclass(frozen=True)
class _Phase:
    """One sub-grid of the input along one axis, and the convolution that fills it.

    Input rows ``h = start + stride·u`` (``u < count``) receive the gradient of the
    kernel taps ``taps`` (increasing), from output rows ``t = u - offset(tap)``; the
    offsets grow by ``step`` from tap to tap. That is a stride-1 correlation of ``dy``
    with the taps in reverse order, dilation ``step``, once ``dy`` is cropped to
    ``[crop_lo, n_out - crop_hi)`` and zero-padded by ``pad``.
    """

    start: int
    count: int
    taps: tuple
    step: int
    crop_lo: int
    crop_hi: int
    pad: tuple


def _phases(k, s, d, pad_lo, size, n_out):
    """The phases of one axis (see ``_Phase``) for a convolution with kernel ``k``,
    stride ``s``, dilation ``d``, leading padding ``pad_lo``, input length ``size`` and
    output length ``n_out``. A phase no tap reaches has no taps (its gradient is 0)."""
    phases = []
    for start in range(min(s, size)):
        count = (size - start + s - 1) // s  # rows start, start + s, ... below size
        # Tap i reads input row i·d - pad_lo + s·t, which is start + s·u for u = t + offset.
        taps = [i for i in range(k) if (i * d - pad_lo - start) % s == 0]
        offsets = [(i * d - pad_lo - start) // s for i in taps]
        step = offsets[1] - offsets[0] if len(taps) > 1 else 1
        if not taps:
            phases.append(_Phase(start, count, (), 1, 0, 0, (0, 0)))
            continue
        # phase[u] = Σ_r dy[u - offsets[r]] W[taps[r]]ᵀ = Σ_q dy_pad[u + q·step] W[taps[-1-q]]ᵀ
        # with dy padded by offsets[-1] in front and so much behind that `count` rows come out.
        before = offsets[-1]
        after = count + step * (len(taps) - 1) - n_out - before
        phases.append(_Phase(start, count, tuple(taps), step, max(0, -before), max(0, -after),
                             (max(0, before), max(0, after))))
    return phases


def conv2d_input_grad(dy, weight, in_shape, geometry):
    """``dx`` of a convolution, as a few stride-1 convolutions of ``dy`` (sub-pixel phases).

    Input pixel ``h`` receives ``Σ dy[t] W[i]ᵀ`` over the taps ``i`` and outputs ``t``
    with ``h = i·d - pad + s·t``. With stride 1 that is itself a convolution of ``dy``
    (zero-padded to "full" size) with the kernel flipped and its channel axes swapped:
    the textbook backward pass, done here as im2col + one GEMM. With stride ``s`` the
    input splits into ``s`` phases per axis (``h mod s``); each phase is reached by a
    subset of the taps and is again a stride-1 convolution of ``dy`` with that
    sub-kernel (Shi et al., 2016's sub-pixel view). So ``dx`` costs ``sh·sw`` GEMMs at
    most, and no scattered adds. (One large GEMM per phase rather than one small GEMM
    per tap also keeps BLAS's threads busy: on a shared machine, every separate
    multi-threaded GEMM can wait for a descheduled worker thread.)

    When the windows tile the input (kernel == stride, no padding), every phase has
    one tap: one GEMM and one transposing copy (``_tiled_input_grad``).

    Args:
        dy (ndarray[N, Ho, Wo, C_out]): gradient of the output.
        weight (ndarray[kh, kw, C/g, C_out]): HWIO weight.
        in_shape (tuple): ``(N, H, W, C)`` of the input.
        geometry (ConvGeometry): of the convolution.
    Returns:
        ndarray[N, H, W, C]: gradient of the input, ``dy``'s dtype.
    """
    n, h, w, c = in_shape
    kh, kw = geometry.kernel
    sh, sw = geometry.stride
    dh, dw = geometry.dilation
    ho, wo = geometry.out_hw
    g = geometry.groups
    cg = c // g
    cog = weight.shape[-1] // g
    dilated = (kh > 1 and dh > 1) or (kw > 1 and dw > 1)
    if (kh, kw) == (sh, sw) and geometry.padding == ((0, 0), (0, 0)) and not dilated:
        # The windows tile the input: no two taps meet, no sums at all.
        return _tiled_input_grad(dy, weight, in_shape, geometry)

    # The filters seen from the output side, back[i, j, o, k·C/g + c] = W[i, j, c, k·C_out/g + o]:
    # the HWIO weight (kh, kw, C_out/g, C) of the convolutions that map dy to dx.
    back = weight.reshape(kh, kw, cg, g, cog).transpose(0, 1, 4, 3, 2).reshape(kh, kw, cog, c)
    rows = _phases(kh, sh, dh, geometry.padding[0][0], h, ho)
    cols = _phases(kw, sw, dw, geometry.padding[1][0], w, wo)
    # Positions no tap reaches (stride > dilated kernel, or only padding read) get zero.
    dx = np.empty(in_shape, dtype=dy.dtype)
    empty = [(row, col) for row in rows for col in cols if not row.taps or not col.taps]
    if empty:
        # Zero those phases only, in blocks of images on the library's threads.
        blocks = split_range(n, _blocks_for(dx.nbytes))

        def zero(i, slot):
            n0, n1 = blocks[i]
            for row, col in empty:
                dx[n0:n1, row.start::sh, col.start::sw] = 0

        parallel_for(zero, len(blocks))
    single = len(rows) == 1 and len(cols) == 1  # e.g. stride 1: dx is one phase
    for row in rows:
        for col in cols:
            if not row.taps or not col.taps:
                continue  # no tap reaches this phase: its gradient is zero
            # Reversed taps: the correlation reads the tap with the largest offset first.
            sub = back[np.array(row.taps[::-1])][:, np.array(col.taps[::-1])]  # (Th, Tw, ·, C)
            dy_sub = dy[:, row.crop_lo:ho - row.crop_hi, col.crop_lo:wo - col.crop_hi]
            # The phase's convolution is valid by construction: no argument checks.
            phase_geometry = replace(
                geometry, kernel=sub.shape[:2], stride=(1, 1), padding=(row.pad, col.pad),
                dilation=(row.step, col.step), in_hw=dy_sub.shape[1:3],
                out_hw=(row.count, col.count), in_channels_per_group=cog,
            )
            if single:
                phase, _ = conv2d_forward_blocked(dy_sub, np.ascontiguousarray(sub), None,
                                           phase_geometry, keep_cols=False)
                return phase  # (N, H, W, C)
            if g == 1:
                # Each block of the phase goes straight into its strided place in dx.
                sub2d = np.ascontiguousarray(sub).reshape(-1, c)  # (Th·Tw·C_out, C)
                _forward_in_blocks(np.ascontiguousarray(dy_sub), sub2d, None,
                                      phase_geometry, n, out=dx[:, row.start::sh, col.start::sw])
                continue
            phase, _ = conv2d_forward_blocked(dy_sub, np.ascontiguousarray(sub), None, phase_geometry,
                                       keep_cols=False)  # (N, row.count, col.count, C)
            dx[:, row.start::sh, col.start::sw] = phase
    return dx


def _tiled_input_grad(dy, weight, in_shape, geometry):
    """``dx`` when the windows tile the input (kernel == stride, no padding).

    Each input pixel is read by exactly one tap of one window, so no sums are needed:
    one GEMM gives every tap's contribution, ``(N·Ho·Wo, kh·kw·C)``, and one
    transposing copy puts block ``(i, j)`` of window ``(t, u)`` at pixel
    ``(t·kh + i, u·kw + j)``. This is the transposed convolution with kernel == stride
    (the "k2 s2" upsampling of FCN and U-Net). Rows/columns past the last window
    (``output_padding``) get no gradient.
    """
    n, h, w, c = in_shape
    kh, kw = geometry.kernel
    ho, wo = geometry.out_hw
    g = geometry.groups
    cg = c // g
    cog = weight.shape[-1] // g
    dy_rows = _grouped_rows(dy, g)  # (g, N·Ho·Wo, C_out/g)
    # All taps side by side: w_all[k, o, (i, j, c)] = W[i, j, c, k·C_out/g + o].
    w_all = weight.reshape(kh, kw, cg, g, cog).transpose(3, 4, 0, 1, 2)  # (g, C_out/g, kh, kw, C/g)
    w_all = w_all.reshape(g, cog, kh * kw * cg)
    dx = np.empty(in_shape, dtype=dy.dtype)
    if ho * kh < h:
        dx[:, ho * kh:] = 0
    if wo * kw < w:
        dx[:, :, wo * kw:] = 0
    if (kh, kw, g) == (1, 1, 1) and (ho, wo) == (h, w):
        # 1x1 stride-1: the GEMM writes dx directly.
        _gemm_rows(dy_rows[0], w_all[0], out=dx.reshape(n * h * w, c))
        return dx
    if g > 1:
        cols = np.matmul(dy_rows, w_all)  # (g, N·Ho·Wo, kh·kw·C/g)
        tiles = cols.reshape(g, n, ho, wo, kh, kw, cg).transpose(1, 2, 4, 3, 5, 0, 6)
        dest = dx[:, :ho * kh, :wo * kw].reshape(n, ho, kh, wo, kw, g, cg)  # a view
        dest[...] = tiles  # (N, Ho, kh, Wo, kw, g, C/g)
        return dx
    # Blocks of images on the library's threads: a block's GEMM output is transposed
    # into dx while in cache.
    blocks = split_range(n, _blocks_for(n * ho * wo * kh * kw * cg * dy.itemsize))

    def work(i, slot):
        n0, n1 = blocks[i]
        cols = dy_rows[0, n0 * ho * wo:n1 * ho * wo] @ w_all[0]  # (n·Ho·Wo, kh·kw·C)
        tiles = cols.reshape(n1 - n0, ho, wo, kh, kw, cg).transpose(0, 1, 3, 2, 4, 5)
        dest = dx[n0:n1, :ho * kh, :wo * kw].reshape(n1 - n0, ho, kh, wo, kw, cg)  # a view
        dest[...] = tiles  # (n, Ho, kh, Wo, kw, C)

    parallel_for(work, len(blocks))
    return dx


# ======================================================================== conv2d
@dataclass
class Conv2dCache:
    """What ``conv2d_backward`` needs from the forward pass.

    Attributes:
        x_shape (tuple): ``(N, H, W, C)``.
        cols (ndarray[g, N·Ho·Wo, kh·kw·C/g] or None): column matrix, kept for ``dW``.
        weight (ndarray[kh, kw, C/g, C_out]): the weight, for ``dx``.
        geometry (ConvGeometry): of the convolution.
        x_kept (ndarray[N, H, W, C] or None): the input, kept instead of ``cols`` when
            ``dW`` rebuilds the columns block by block (groups == 1).
    """

    x_shape: tuple
    cols: object
    weight: np.ndarray
    geometry: object  # ConvGeometry
    x_kept: object = None


def conv2d_forward_blocked(x, weight, bias, geometry, keep_cols=True, input_grad=False):
    """Convolution ``y = im2col(x) @ W + b`` in blocks, channels-last.

    Args:
        x (ndarray[N, H, W, C]): input, float32 or float64.
        weight (ndarray[kh, kw, C/groups, C_out]): HWIO filters, ``x``'s dtype.
        bias (ndarray[C_out] or None): added to every output position.
        geometry (ConvGeometry): the checked geometry (``conv.conv2d_geometry``).
        keep_cols (bool): keep what ``dW`` needs (the column matrix or the input);
            False saves memory when the weight needs no gradient.
        input_grad (bool): the backward pass will compute ``dx`` too. A stride-1
            layer then keeps only its input: the backward builds the columns of
            ``dy`` once and takes both gradients from them (``_stride1_backward``).
    Returns:
        tuple: ``y (ndarray[N, Ho, Wo, C_out])`` and a ``Conv2dCache`` for backward.
    """
    n = x.shape[0]
    groups = geometry.groups
    if groups == 1:
        # Blocks of output rows over the threads: im2col of a block, then its GEMM while
        # the block is in cache. dW reads the kept columns or rebuilds them from the input.
        kh, kw, c, c_out = weight.shape
        w2d = weight.reshape(kh * kw * c, c_out)  # (K, C_out)
        if _is_plain_gemm(geometry):
            xp = np.ascontiguousarray(x)
            y = _gemm_rows(xp.reshape(-1, c), w2d, bias=bias)  # (N·H·W, C_out)
            cache = Conv2dCache(x.shape, None, weight, geometry, xp if keep_cols else None)
        else:
            xp = np.ascontiguousarray(x)  # padded block by block
            ho, wo = geometry.out_hw
            k = kh * kw * c
            kept = None
            if keep_cols and not (input_grad and _fuses_backward(geometry)) \
                    and n * ho * wo * k * x.itemsize <= KEEP_COLS_BYTES:
                kept = np.empty((n * ho * wo, k), dtype=x.dtype)  # (N·Ho·Wo, K)
            y = _forward_in_blocks(xp, w2d, bias, geometry, n, keep=kept)  # (N·Ho·Wo, C_out)
            if kept is not None:
                cache = Conv2dCache(x.shape, kept[None], weight, geometry)
            else:
                cache = Conv2dCache(x.shape, None, weight, geometry, xp if keep_cols else None)
        return y.reshape(n, *geometry.out_hw, c_out), cache
    # Grouped: one im2col of every group, one batched GEMM.
    cols = im2col_blocked(x, geometry)  # (g, N·Ho·Wo, kh·kw·C/g)
    y = _conv_gemm(cols, weight, geometry, n)  # (N, Ho, Wo, C_out)
    if bias is not None:
        _add_bias(y, bias)
    cache = Conv2dCache(x.shape, cols if keep_cols else None, weight, geometry)
    return y, cache


def conv2d_backward(dy, cache, need_input_grad=True, need_weight_grad=True, need_bias_grad=True):
    """Gradients of ``conv2d_forward_blocked`` (and of ``conv.conv2d_forward``, which calls it).

    Args:
        dy (ndarray[N, Ho, Wo, C_out]): gradient of the output.
        cache (Conv2dCache): from ``conv2d_forward_blocked``.
        need_input_grad, need_weight_grad, need_bias_grad (bool): skip what is not needed
            (a network's first layer needs no ``dx``).
    Returns:
        tuple: ``(dx[N, H, W, C], dweight[kh, kw, C/g, C_out], dbias[C_out])``, each None
        when not requested.
    """
    dx = dw = db = None
    if need_input_grad and need_weight_grad and cache.cols is None \
            and cache.x_kept is not None and _fuses_backward(cache.geometry):
        # Stride 1: dx and dW from one column matrix, that of dy.
        dx, dw = _stride1_backward(np.ascontiguousarray(dy), cache.x_kept, cache.weight,
                                   cache.geometry)
        return dx, dw, _bias_grad(dy) if need_bias_grad else None
    if need_weight_grad:
        if cache.cols is None and cache.x_kept is None:
            raise ValueError("conv2d_backward: the weight gradient needs the forward's columns "
                             "(call conv2d_forward with keep_cols=True)")
        if cache.cols is None:
            geometry = cache.geometry
            n, c_out = dy.shape[0], dy.shape[-1]
            dy_rows = np.ascontiguousarray(dy).reshape(-1, c_out)  # (N·Ho·Wo, C_out)
            if _is_plain_gemm(geometry):
                dw2d = _gemm_tn(cache.x_kept.reshape(-1, cache.x_shape[-1]), dy_rows)
            else:
                dw2d = _weight_grad_blocked(cache.x_kept, dy_rows, geometry, n)
            dw = np.ascontiguousarray(dw2d).reshape(cache.weight.shape)
        else:
            dw = conv2d_weight_grad(cache.cols, dy, cache.geometry)
    if need_bias_grad:
        db = _bias_grad(dy)
    if need_input_grad:
        dx = conv2d_input_grad(dy, cache.weight, cache.x_shape, cache.geometry)
    return dx, dw, db


# ============================================================== conv_transpose2d
@dataclass
class ConvTranspose2dCache:
    """What ``conv_transpose2d_backward`` needs from the forward pass.

    Attributes:
        x (ndarray[N, H, W, C_in]): the input, for ``dW``.
        weight (ndarray[kh, kw, C_in, C_out/g]): the weight, for ``dx``.
        geometry (ConvGeometry): of the underlying convolution, from the transposed
            conv's output ``(H_out, W_out)`` to its input ``(H, W)``.
    """

    x: np.ndarray
    weight: np.ndarray
    geometry: object  # ConvGeometry


def _as_conv_weight(weight):
    """Transposed-conv weight ``(kh, kw, C_in, C_out/g)`` viewed as the HWIO weight
    ``(kh, kw, C_out/g, C_in)`` of the convolution it is the transpose of."""
    return weight.transpose(0, 1, 3, 2)


def conv_transpose2d_forward_blocked(x, weight, bias, geometry):
    """Transposed convolution: the input gradient of ``conv2d`` applied to ``x``.

    Args:
        x (ndarray[N, H, W, C_in]): input, float32 or float64.
        weight (ndarray[kh, kw, C_in, C_out/groups]): filters, ``x``'s dtype.
        bias (ndarray[C_out] or None).
        geometry (ConvGeometry): of the underlying convolution, from ``(H_out, W_out)``
            to ``(H, W)`` (``conv.conv_transpose2d_geometry``).
    Returns:
        tuple: ``y (ndarray[N, H_out, W_out, C_out])`` and a ``ConvTranspose2dCache``.
    """
    n = x.shape[0]
    h_out, w_out = geometry.in_hw
    c_out = weight.shape[-1] * geometry.groups
    y = conv2d_input_grad(x, _as_conv_weight(weight), (n, h_out, w_out, c_out), geometry)
    if bias is not None:
        _add_bias(y, bias)
    return y, ConvTranspose2dCache(x, weight, geometry)


def conv_transpose2d_backward(dy, cache, need_input_grad=True, need_weight_grad=True,
                              need_bias_grad=True):
    """Gradients of ``conv_transpose2d_forward_blocked``.

    The input gradient is the *forward* convolution of ``dy``; the weight gradient
    reuses the same column matrix ``im2col(dy)``.

    Args:
        dy (ndarray[N, H_out, W_out, C_out]): gradient of the output.
        cache (ConvTranspose2dCache): from ``conv_transpose2d_forward_blocked``.
    Returns:
        tuple: ``(dx[N, H, W, C_in], dweight[kh, kw, C_in, C_out/g], dbias[C_out])``, each
        None when not requested.
    """
    dx = dw = db = None
    geometry = cache.geometry
    if need_input_grad or need_weight_grad:
        cols = im2col_blocked(dy, geometry)  # (g, N·H·W, kh·kw·C_out/g)
        if need_input_grad:
            dx = _conv_gemm(cols, _as_conv_weight(cache.weight), geometry, dy.shape[0])
        if need_weight_grad:
            dw = _as_conv_weight(conv2d_weight_grad(cols, cache.x, geometry))
            dw = np.ascontiguousarray(dw)
    if need_bias_grad:
        db = _bias_grad(dy)
    return dx, dw, db


