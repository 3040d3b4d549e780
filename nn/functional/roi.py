"""Region-of-interest pooling: RoIPool (Fast R-CNN) and RoIAlign (Mask R-CNN).

A two-stage detector computes one feature map per image and then needs a
fixed-size feature (e.g. 7×7×C) for each of hundreds of proposed boxes. These
operators crop-and-resize the feature map under every box.

**RoIPool** (Girshick, "Fast R-CNN", ICCV 2015) rounds the box to the feature
grid, splits it into ``oh × ow`` integer bins and takes the maximum of each bin.
The two roundings (box to grid, bin to grid) misplace features by up to a cell —
harmless for classification, harmful for masks and precise boxes.

**RoIAlign** (He et al., "Mask R-CNN", ICCV 2017) keeps the box continuous:
each bin is sampled at ``g_h × g_w`` regular points, each point is read by
bilinear interpolation and the bin is their average::

    out[k, i, j, c] = 1/(g_h·g_w) Σ_{a<g_h} Σ_{b<g_w} bilinear(x[b_k, ..., c], y_{k,i,a}, x_{k,j,b})
    y_{k,i,a} = y1' + i·bin_h + (a + ½)·bin_h / g_h,   bin_h = (y2' - y1') / oh

with ``y1' = y1·spatial_scale - offset`` (``offset = ½`` when ``aligned``, so that
a box edge at pixel border 0 maps to the continuous coordinate of pixel centres).

The sample grid is a product of a grid in y and a grid in x, and bilinear
interpolation is a product of a weight in y and a weight in x, so RoIAlign is
*separable*: for each box a matrix ``Wy[k]`` of shape ``(oh, H)`` (bin-averaged
interpolation weights along y) and ``Wx[k]`` of shape ``(ow, W)`` give::

    out[k, :, :, c] = Wy[k] @ x[b_k, :, :, c] @ Wx[k]ᵀ

Each row of ``Wy`` or ``Wx`` is non-zero on only a few cells (the bin's samples and
their neighbours), so the whole operator is one sparse matrix ``A`` whose row
``(k, i, j)`` is the outer product of row ``i`` of ``Wy[k]`` and row ``j`` of
``Wx[k]``, placed at image ``b_k``'s cells: ``out = A @ x.reshape(N·H·W, C)`` and
the map's gradient is ``Aᵀ @ grad``, with no loop over boxes or images. (Dense
``Wy[k] @ x @ Wx[k]ᵀ`` GEMMs were measured 2x slower: they multiply mostly zeros.)
The gradient with respect to the box coordinates goes through the separable form
and the derivative of each interpolation weight with respect to its sample position.

Both operators follow torchvision's definitions (``torchvision.ops.roi_align`` and
``roi_pool``) including their edge rules, on channels-last ``(N, H, W, C)`` maps.
"""
from typing import NamedTuple

import numpy as np
from scipy.sparse import csr_array

from nn._checks import check_bool, check_int, check_pair, check_positive
from nn.tensor import Function, Tensor, as_array, concat

__all__ = [
    "roi_align", "roi_pool",
    "roi_align_forward", "roi_align_backward", "roi_pool_forward", "roi_pool_backward",
    "RoIAlignFunction", "RoIPoolFunction",
]


# ---------------------------------------------------------------- argument checks
def _check_feature_map(x):
    """The data of ``x`` after checking it is a 4-D floating (N, H, W, C) map."""
    data = as_array(x)
    if data.ndim != 4:
        raise ValueError(
            f"x must be a 4-D channels-last feature map (N, H, W, C), got shape {data.shape}"
        )
    if not np.issubdtype(data.dtype, np.floating):
        raise TypeError(f"x must be a floating-point array, got dtype {data.dtype}")
    if data.shape[1] == 0 or data.shape[2] == 0:
        raise ValueError(f"x must have a non-empty spatial size, got shape {data.shape}")
    return data


def _as_box_array(value, name):
    data = value.data if isinstance(value, Tensor) else np.asarray(value)
    if not (np.issubdtype(data.dtype, np.floating) or np.issubdtype(data.dtype, np.integer)):
        raise TypeError(f"{name} must hold real numbers, got dtype {data.dtype}")
    return data


def _rois_from_boxes(boxes, num_images, dtype):
    """Split the ``boxes`` argument into coordinates and image indices.

    Args:
        boxes: ``(K, 5)`` array/Tensor ``[batch_index, x1, y1, x2, y2]``, or a list
            (one entry per image) of ``(K_i, 4)`` arrays/Tensors ``[x1, y1, x2, y2]``.
        num_images (int): N, the batch size of the feature map.
        dtype: floating dtype of the feature map (integer boxes are cast to it).
    Returns:
        tuple: ``coords`` (Tensor or ndarray[K, 4], still attached to the graph when
        the input was a Tensor) and ``batch_index`` (ndarray[K], int64).
    Raises:
        ValueError: wrong shape, non-finite coordinates, a bad batch index.
    """
    if isinstance(boxes, (list, tuple)):
        if len(boxes) > num_images:
            raise ValueError(
                f"boxes is a list of {len(boxes)} per-image arrays but x holds {num_images} images"
            )
        parts, counts = [], []
        for i, item in enumerate(boxes):
            data = _as_box_array(item, f"boxes[{i}]")
            if data.size == 0 and data.ndim <= 2:
                data = data.reshape(0, 4)
                item = data if not isinstance(item, Tensor) else item.reshape(0, 4)
            if data.ndim != 2 or data.shape[1] != 4:
                raise ValueError(
                    f"boxes[{i}] must have shape (K_i, 4) [x1, y1, x2, y2], got {data.shape}"
                )
            if not np.all(np.isfinite(data)):
                raise ValueError(f"boxes[{i}] has non-finite coordinates")
            parts.append(item)
            counts.append(data.shape[0])
        batch_index = np.repeat(np.arange(len(counts), dtype=np.int64), counts)
        if any(isinstance(p, Tensor) for p in parts):
            coords = concat([p if isinstance(p, Tensor) else Tensor(np.asarray(p, dtype))
                             for p in parts]) if parts else np.zeros((0, 4), dtype)
        else:
            coords = (np.concatenate([np.asarray(p, dtype) for p in parts])
                      if parts else np.zeros((0, 4), dtype))
        return coords, batch_index

    data = _as_box_array(boxes, "boxes")
    if data.size == 0 and data.ndim <= 2 and (data.ndim < 2 or data.shape[-1] in (0, 5)):
        return np.zeros((0, 4), dtype), np.zeros(0, np.int64)
    if data.ndim != 2 or data.shape[1] != 5:
        raise ValueError(
            "boxes must be a (K, 5) array [batch_index, x1, y1, x2, y2] or a list of "
            f"(K_i, 4) arrays, got shape {data.shape}"
        )
    if not np.all(np.isfinite(data)):
        raise ValueError("boxes has non-finite values")
    index = data[:, 0]
    if np.any(index != np.floor(index)):
        raise ValueError("boxes[:, 0] (batch index) must hold integers")
    if np.any(index < 0) or np.any(index >= num_images):
        raise ValueError(
            f"boxes[:, 0] (batch index) must lie in [0, {num_images}), got values in "
            f"[{index.min():g}, {index.max():g}]"
        )
    coords = boxes[:, 1:] if isinstance(boxes, Tensor) else data[:, 1:].astype(dtype)
    return coords, index.astype(np.int64)


# ------------------------------------------------------------------- RoIAlign
# Adaptive sampling takes ceil(box length / bins) samples per bin: a box of 1e9
# cells would need an absurd sample grid, so it is refused with a clear error.
_MAX_ADAPTIVE_SAMPLES = 4096


class AxisSamples(NamedTuple):
    """RoIAlign's sample points along one axis (y or x) for every box.

    Shapes: K boxes, P output bins, G sample slots per bin (the largest grid),
    S = size of the feature map along the axis.

    Attributes:
        weights (ndarray[K, P, S]): bin-averaged bilinear weights (``Wy`` or ``Wx``).
        low, high (ndarray[K, P, G], int64): the two grid cells each sample reads.
        slope (ndarray[K, P, G]): d(weight of ``high``)/d(position), divided by the
            grid size: ``1/g`` for a sample interpolating inside the map, 0 where
            the sample is clamped to the border, out of range or unused.
        along (ndarray[K, P, G]): ``(p + (a + ½)/g) / P``, the sample's relative
            position inside the box (d position / d box length).
        follows_length (ndarray[K], bool): False where aligned=False forced the
            length of a malformed box up to 1 (the position then ignores the end).
        cells, taps (ndarray[K, P, T]): a compact footprint of ``weights``: row
            ``(k, p)`` of ``weights`` is the sum of ``taps[k, p, t]`` at cells
            ``cells[k, p, t]`` (cells may repeat; unused taps weigh 0).
    """
    weights: np.ndarray
    low: np.ndarray
    high: np.ndarray
    slope: np.ndarray
    along: np.ndarray
    follows_length: np.ndarray
    cells: np.ndarray
    taps: np.ndarray


def _compact_footprint(weights, sample_cells, sample_taps):
    """The fewest (cell, weight) taps per bin that reproduce a row of ``weights``.

    A bin's samples read only a few cells. Either list every sample's two cells
    (2G taps, cells may repeat) or, when the samples are dense (adaptive grids,
    small bins), the contiguous window of cells from the first to the last
    non-zero weight. All rows get the same width T, the smaller of the two.

    Args:
        weights (ndarray[K, P, S]): per-axis interpolation weights.
        sample_cells, sample_taps (ndarray[K, P, 2G]): the samples' cells and weights.
    Returns:
        tuple: ``cells`` (ndarray[K, P, T], int64) and ``taps`` (ndarray[K, P, T]).
    """
    size = weights.shape[2]
    nonzero = weights != 0
    first = np.argmax(nonzero, axis=2)                            # (K, P), 0 for an empty row
    last = size - 1 - np.argmax(nonzero[:, :, ::-1], axis=2)
    span = np.where(nonzero.any(axis=2), last - first + 1, 1)
    width = int(span.max()) if span.size else 1
    if width >= sample_cells.shape[2]:
        return sample_cells, sample_taps
    first = np.minimum(first, size - width)  # keep the window inside the map
    cells = first[:, :, None] + np.arange(width)                  # (K, P, T)
    return cells, np.take_along_axis(weights, cells, axis=2)


def _axis_samples(lo, hi, size, bins, spatial_scale, sampling_ratio, aligned, dtype):
    """Sample positions and interpolation weights of RoIAlign along one axis.

    Follows torchvision's ``roi_align`` exactly, in the feature map's dtype:
    ``start = lo·scale - offset``, ``length = hi·scale - offset - start`` (at least 1
    when not ``aligned``), ``g = sampling_ratio`` or ``ceil(length / bins)``,
    sample ``a`` of bin ``p`` at ``start + p·bin + (a + ½)·bin/g``. A sample below
    -1 or above ``size`` reads zero; one in [-1, 0] reads cell 0; one at or past
    ``size - 1`` reads the last cell.

    Args:
        lo, hi (ndarray[K]): box start and end coordinates (x1, x2 or y1, y2).
        size (int): S, the feature map's size along this axis.
        bins (int): P, the number of output bins along this axis.
    Returns:
        AxisSamples
    """
    lo = lo.astype(dtype, copy=False)
    hi = hi.astype(dtype, copy=False)
    scale = dtype.type(spatial_scale)
    offset = dtype.type(0.5 if aligned else 0.0)
    start = lo * scale - offset                                   # (K,)
    length = (hi * scale - offset) - start                        # (K,)
    follows_length = np.ones(lo.shape, dtype=bool)
    if not aligned:
        # torchvision forces malformed boxes to a length of one cell
        follows_length = length >= 1
        length = np.maximum(length, dtype.type(1))
    bin_size = length / dtype.type(bins)                          # (K,)
    if sampling_ratio > 0:
        grid = np.full(lo.shape, sampling_ratio, dtype=np.int64)
    else:
        # adaptive: about one sample per cell; a box of length <= 0 has no sample
        per_bin = np.maximum(np.ceil(length / dtype.type(bins)), 0)
        if per_bin.size and per_bin.max() > _MAX_ADAPTIVE_SAMPLES:
            raise ValueError(
                f"a box spans {float(per_bin.max() * bins):.3g} cells: adaptive sampling "
                f"(sampling_ratio <= 0) would take more than {_MAX_ADAPTIVE_SAMPLES} samples "
                "per bin and axis; pass sampling_ratio > 0 or check the box coordinates"
            )
        grid = per_bin.astype(np.int64)
    num_boxes = lo.shape[0]
    slots = int(grid.max()) if num_boxes else 1
    slots = max(slots, 1)

    grid_safe = np.maximum(grid, 1).astype(dtype)[:, None, None]  # (K, 1, 1)
    p = np.arange(bins, dtype=dtype)[None, :, None]               # (1, P, 1)
    a = np.arange(slots)[None, None, :]                           # (1, 1, G)
    pos = (start[:, None, None] + p * bin_size[:, None, None]
           + (a + dtype.type(0.5)).astype(dtype) * bin_size[:, None, None] / grid_safe)  # (K, P, G)
    used = a < grid[:, None, None]                                # (K, 1, G)
    inside = used & (pos >= -1) & (pos <= size)
    # Clip before the integer cast: samples far outside read nothing anyway.
    clamped = np.clip(pos, 0, size)
    low = np.floor(clamped).astype(np.int64)
    at_end = low >= size - 1
    low = np.where(at_end, size - 1, low)
    high = np.where(at_end, size - 1, low + 1)
    frac = np.where(at_end, 0, clamped - low).astype(dtype)       # weight of `high`
    share = inside / grid_safe                                     # 1/g for a live sample

    # Each sample puts 1 - frac on cell `low` and frac on cell `high`.
    sample_cells = np.concatenate([low, high], axis=2)            # (K, P, 2G)
    sample_taps = np.concatenate([(1 - frac) * share, frac * share], axis=2).astype(dtype)
    # Scatter them into dense (K, P, S) matrices. np.bincount is a fast
    # scatter-add (np.add.at is ~25x slower).
    row = (np.arange(num_boxes)[:, None, None] * bins + np.arange(bins)[None, :, None]) * size
    weights = np.bincount((row + sample_cells).ravel(), weights=sample_taps.ravel(),
                          minlength=num_boxes * bins * size)
    weights = weights.reshape(num_boxes, bins, size).astype(dtype)
    cells, taps = _compact_footprint(weights, sample_cells, sample_taps)

    # The weight moves with the position only while interpolating between cells.
    moving = inside & (pos > 0) & ~at_end
    slope = moving / grid_safe
    along = (p + (a + 0.5) / grid_safe) / bins                    # (K, P, G)
    return AxisSamples(weights, low, high, slope, np.broadcast_to(along, pos.shape),
                       follows_length, cells, taps)


def _axis_coordinate_grad(samples, weight_grad, spatial_scale):
    """d loss / d (lo, hi) of one axis from d loss / d weights.

    Args:
        samples (AxisSamples): from ``_axis_samples``.
        weight_grad (ndarray[K, P, S]): gradient with respect to ``samples.weights``.
    Returns:
        tuple of ndarray[K]: gradients with respect to the box's lo and hi coordinates.
    """
    # d weights[high]/d pos = +1, d weights[low]/d pos = -1 (times 1/g, see slope)
    g_high = np.take_along_axis(weight_grad, samples.high, axis=2)   # (K, P, G)
    g_low = np.take_along_axis(weight_grad, samples.low, axis=2)     # (K, P, G)
    d_pos = samples.slope * (g_high - g_low)                         # (K, P, G)
    # pos = start + along·length; length = end - start unless it was forced to 1
    stretch = samples.along * samples.follows_length[:, None, None]
    d_start = np.sum(d_pos * (1 - stretch), axis=(1, 2))
    d_end = np.sum(d_pos * stretch, axis=(1, 2))
    return d_start * spatial_scale, d_end * spatial_scale


def roi_align_matrix(rows, cols, batch_index, num_images, height, width):
    """RoIAlign as one sparse matrix over all images' cells.

    Row ``(k, i, j)`` holds ``Wy[k, i, h] · Wx[k, j, w]`` at column
    ``(b_k, h, w)``: the output is then ``A @ x.reshape(N·H·W, C)``, and the
    gradient of the map is ``Aᵀ @ grad``. Each row has only ``Ty·Tx`` stored
    entries (the bin's bilinear footprint), so both products cost about what
    torchvision's sample loop costs, with no Python loop at all.

    Args:
        rows, cols (AxisSamples): the y and x samples of the K boxes.
        batch_index (ndarray[K], int): image of each box.
        num_images, height, width (int): N, H, W of the feature map.
    Returns:
        scipy.sparse.csr_array of shape (K·oh·ow, N·H·W).
    """
    cells_y, taps_y = rows.cells, rows.taps                       # (K, oh, Ty)
    cells_x, taps_x = cols.cells, cols.taps                       # (K, ow, Tx)
    num_boxes, oh, ty = cells_y.shape
    ow, tx = cells_x.shape[1], cells_x.shape[2]
    per_row = ty * tx
    num_rows = num_boxes * oh * ow
    num_cols = num_images * height * width
    # scipy wants int32 indices when they fit (its fastest path)
    index_dtype = np.int32 if max(num_rows * per_row, num_cols) < 2**31 - 1 else np.int64
    # flat cell index of (b_k, h, w) = (b_k·H + h)·W + w; the row part is small
    row_part = ((batch_index[:, None, None] * height + cells_y) * width).astype(index_dtype)
    column = (row_part[:, :, None, :, None]
              + cells_x.astype(index_dtype)[:, None, :, None, :])  # (K, oh, ow, Ty, Tx)
    value = taps_y[:, :, None, :, None] * taps_x[:, None, :, None, :]
    indptr = np.arange(0, num_rows * per_row + 1, per_row, dtype=index_dtype)
    return csr_array((value.ravel(), column.ravel(), indptr),
                     shape=(num_rows, num_cols))


class RoIAlignCache(NamedTuple):
    """What ``roi_align_backward`` needs from the forward pass."""
    x: np.ndarray
    batch_index: np.ndarray
    matrix: object  # scipy.sparse.csr_array (K·oh·ow, N·H·W)
    rows: AxisSamples
    cols: AxisSamples
    spatial_scale: float


def roi_align_forward(x, boxes, batch_index, output_size, spatial_scale=1.0,
                      sampling_ratio=-1, aligned=False):
    """RoIAlign on ndarrays (the numeric kernel behind ``roi_align``).

    Args:
        x (ndarray[N, H, W, C]): feature maps, float.
        boxes (ndarray[K, 4]): ``[x1, y1, x2, y2]`` in input-image coordinates.
        batch_index (ndarray[K], int): image of each box.
        output_size (tuple): ``(oh, ow)``.
        spatial_scale (float): feature-map cells per input pixel (1/stride).
        sampling_ratio (int): samples per bin and axis; <= 0 means
            ``ceil(box length / bins)`` per box.
        aligned (bool): shift box coordinates by -½ cell (pixel-centre convention).
    Returns:
        tuple: ``out`` (ndarray[K, oh, ow, C], dtype of x) and a ``RoIAlignCache``.
    """
    n, height, width, channels = x.shape
    oh, ow = output_size
    rows = _axis_samples(boxes[:, 1], boxes[:, 3], height, oh, spatial_scale,
                         sampling_ratio, aligned, x.dtype)
    cols = _axis_samples(boxes[:, 0], boxes[:, 2], width, ow, spatial_scale,
                         sampling_ratio, aligned, x.dtype)
    matrix = roi_align_matrix(rows, cols, batch_index, n, height, width)
    flat = x.reshape(n * height * width, channels)                # (N·H·W, C)
    out = np.asarray(matrix @ flat, dtype=x.dtype).reshape(boxes.shape[0], oh, ow, channels)
    cache = RoIAlignCache(x, batch_index, matrix, rows, cols, spatial_scale)
    return out, cache


def _axis_matrix(samples, batch_index, num_images, size):
    """``Wy`` (or ``Wx``) of all boxes as one sparse matrix over all images' rows.

    Returns:
        scipy.sparse.csr_array of shape (K·P, N·S): row ``(k, p)`` holds
        ``weights[k, p, s]`` at column ``(b_k, s)``.
    """
    num_boxes, bins, taps = samples.cells.shape
    column = batch_index[:, None, None] * size + samples.cells    # (K, P, T)
    indptr = np.arange(0, num_boxes * bins * taps + 1, taps)
    return csr_array((samples.taps.ravel(), column.ravel(), indptr),
                     shape=(num_boxes * bins, num_images * size))


def _weight_grads(grad, cache):
    """d loss / d ``Wy`` and d loss / d ``Wx`` through the separable form.

    Per channel ``out[k] = Wy[k] @ x[b_k] @ Wx[k]ᵀ``, so with ``g = d loss / d out``::

        dWy[k, i, h] = Σ_{j, c} g[k, i, j, c] · (Σ_w Wx[k, j, w] x[b_k, h, w, c])
        dWx[k, j, w] = Σ_{i, c} g[k, i, j, c] · (Σ_h Wy[k, i, h] x[b_k, h, w, c])

    Each inner sum is one sparse product over all boxes (``Wx`` or ``Wy`` as a
    sparse matrix times a transposed copy of the maps), laid out so that the
    outer sum is a batched matrix product over boxes.
    """
    x, rows, cols = cache.x, cache.rows, cache.cols
    n, height, width, channels = x.shape
    num_boxes, oh, ow, _ = grad.shape
    x_wch = x.transpose(0, 2, 3, 1).reshape(n * width, channels * height)   # (N·W, C·H)
    inner = _axis_matrix(cols, cache.batch_index, n, width) @ x_wch         # (K·ow, C·H)
    inner = np.asarray(inner, dtype=x.dtype).reshape(num_boxes, ow * channels, height)
    grad_wy = np.matmul(grad.reshape(num_boxes, oh, ow * channels), inner)  # (K, oh, H)
    del inner
    x_hcw = x.transpose(0, 1, 3, 2).reshape(n * height, channels * width)  # (N·H, C·W)
    inner = _axis_matrix(rows, cache.batch_index, n, height) @ x_hcw        # (K·oh, C·W)
    inner = np.asarray(inner, dtype=x.dtype).reshape(num_boxes, oh * channels, width)
    g_by_column = grad.transpose(0, 2, 1, 3).reshape(num_boxes, ow, oh * channels)
    grad_wx = np.matmul(g_by_column, inner)                                  # (K, ow, W)
    return grad_wy, grad_wx


def roi_align_backward(grad, cache, need_x=True, need_boxes=False):
    """Gradients of RoIAlign.

    The map's gradient is the transposed sparse product ``Aᵀ @ grad``; the box
    coordinates' gradient goes through the per-axis weights (``_weight_grads``)
    and the derivative of each bilinear weight with respect to its sample position.

    Args:
        grad (ndarray[K, oh, ow, C]): gradient of the loss with respect to the output.
        cache (RoIAlignCache): from ``roi_align_forward``.
        need_x, need_boxes (bool): which gradients to compute.
    Returns:
        tuple: ``grad_x`` (ndarray[N, H, W, C] or None) and ``grad_boxes``
        (ndarray[K, 4] float64 or None, ``[x1, y1, x2, y2]``).
    """
    x = cache.x
    n, height, width, channels = x.shape
    grad = np.ascontiguousarray(grad, dtype=x.dtype)
    grad_x = None
    if need_x:
        flat_grad = cache.matrix.T @ grad.reshape(-1, channels)   # (N·H·W, C)
        grad_x = np.asarray(flat_grad, dtype=x.dtype).reshape(x.shape)
    grad_boxes = None
    if need_boxes:
        grad_wy, grad_wx = _weight_grads(grad, cache)
        grad_boxes = np.zeros((grad.shape[0], 4), dtype=np.float64)
        grad_boxes[:, 1], grad_boxes[:, 3] = _axis_coordinate_grad(
            cache.rows, grad_wy, cache.spatial_scale)
        grad_boxes[:, 0], grad_boxes[:, 2] = _axis_coordinate_grad(
            cache.cols, grad_wx, cache.spatial_scale)
    return grad_x, grad_boxes


class RoIAlignFunction(Function):
    """Autograd glue of ``roi_align`` (gradients for the map and the box coordinates)."""

    @staticmethod
    def forward(ctx, x, boxes, batch_index=None, output_size=(7, 7), spatial_scale=1.0,
                sampling_ratio=-1, aligned=False):
        out, cache = roi_align_forward(x, boxes, batch_index, output_size, spatial_scale,
                                       sampling_ratio, aligned)
        ctx.cache = cache
        ctx.boxes_dtype = boxes.dtype
        return out

    @staticmethod
    def backward(ctx, grad):
        need_x, need_boxes = ctx.needs_input_grad
        grad_x, grad_boxes = roi_align_backward(grad, ctx.cache, need_x, need_boxes)
        if grad_boxes is not None:
            grad_boxes = grad_boxes.astype(ctx.boxes_dtype)
        return grad_x, grad_boxes


def roi_align(x, boxes, output_size, spatial_scale=1.0, sampling_ratio=-1, aligned=False):
    """RoIAlign (He et al., "Mask R-CNN", 2017) with torchvision's semantics.

    Each box is split into ``oh × ow`` bins; each bin averages ``g × g`` bilinear
    samples placed on a regular grid inside it (see the module docstring)::

        out[k, i, j, :] = 1/(g_h g_w) Σ_a Σ_b bilinear(x[b_k], y_{k,i,a}, x_{k,j,b})

    Args:
        x (Tensor or ndarray[N, H, W, C]): feature maps, float32 or float64.
        boxes: ``(K, 5)`` Tensor/ndarray ``[batch_index, x1, y1, x2, y2]``, or a list
            (one per image) of ``(K_i, 4)`` Tensors/ndarrays ``[x1, y1, x2, y2]``, in
            input-image coordinates (xyxy, continuous).
        output_size (int or tuple): ``(oh, ow)``.
        spatial_scale (float): feature cells per input pixel, e.g. 1/16.
        sampling_ratio (int): samples per bin along each axis; <= 0 takes
            ``ceil(box length / bins)`` per box (adaptive).
        aligned (bool): subtract ½ cell from the box coordinates so that a box
            ``[0, 0, W, H]`` covers exactly the pixel centres (Detectron2's fix;
            False reproduces the original Mask R-CNN op).
    Returns:
        Tensor[K, oh, ow, C]: dtype of x. Differentiable with respect to x and to
        the box coordinates (the batch index gets no gradient).
    Raises:
        ValueError: x not 4-D, malformed boxes, batch index out of range or not an
            integer, non-finite coordinates, invalid output_size or spatial_scale.
        TypeError: non-float x, non-int sampling_ratio.
    """
    data = _check_feature_map(x)
    output_size = check_pair(output_size, "output_size", 1)
    spatial_scale = check_positive(spatial_scale, "spatial_scale")
    sampling_ratio = check_int(sampling_ratio, "sampling_ratio")
    aligned = check_bool(aligned, "aligned")
    coords, batch_index = _rois_from_boxes(boxes, data.shape[0], data.dtype)
    return RoIAlignFunction.apply(
        x, coords, batch_index=batch_index, output_size=output_size,
        spatial_scale=spatial_scale, sampling_ratio=sampling_ratio, aligned=bool(aligned),
    )


# -------------------------------------------------------------------- RoIPool
def _round_half_away(v):
    """C's ``round``: halves go away from zero (NumPy's ``np.round`` goes to even)."""
    magnitude = np.abs(v)
    whole = np.floor(magnitude)
    whole = whole + (magnitude - whole >= 0.5)  # the subtraction is exact
    return np.copysign(whole, v)


def _pool_bins(lo, hi, size, bins, spatial_scale, dtype):
    """Integer bin bounds ``[start, end)`` of RoIPool along one axis (torchvision's).

    ``s = round(lo·scale)``, ``e = round(hi·scale)``, ``L = max(e - s + 1, 1)``;
    bin ``p`` covers ``[s + floor(p·L/P), s + ceil((p+1)·L/P))`` clipped to
    ``[0, size]``, computed in the map's dtype as torchvision does.

    Returns:
        tuple of ndarray[K, P], int64: starts and ends.
    """
    scale = dtype.type(spatial_scale)
    limit = 2.0 ** 30  # keeps absurd coordinates inside int64 arithmetic
    start = np.clip(_round_half_away(lo.astype(dtype) * scale).astype(np.float64), -limit, limit)
    end = np.clip(_round_half_away(hi.astype(dtype) * scale).astype(np.float64), -limit, limit)
    start, end = start.astype(np.int64), end.astype(np.int64)
    length = np.maximum(end - start + 1, 1)                       # (K,)
    bin_size = length.astype(dtype) / dtype.type(bins)            # (K,)
    p = np.arange(bins, dtype=dtype)
    first = np.floor(p[None, :] * bin_size[:, None]).astype(np.int64)       # (K, P)
    last = np.ceil((p[None, :] + 1) * bin_size[:, None]).astype(np.int64)   # (K, P)
    first = np.clip(first + start[:, None], 0, size)
    last = np.clip(last + start[:, None], 0, size)
    return first, last


def _merge_max(value_a, index_a, value_b, index_b):
    """Elementwise max of two windows; a tie keeps the cell earlier in row-major order."""
    take_b = (value_b > value_a) | ((value_b == value_a) & (index_b < index_a))
    return np.maximum(value_a, value_b), np.where(take_b, index_b, index_a)


def _sparse_tables(x, top_level_y, top_level_x, with_argmax):
    """Yield ``(i, j, value, index)``: maxima of every ``2^i × 2^j`` window of x.

    ``value[n, h, w]`` is the max of ``x[n, h:h + 2^i, w:w + 2^j]`` and ``index``
    (int32, or None without argmax) its first cell ``h·W + w`` in row-major order.
    Each level is two shifted copies of the level below, so only a few tables
    live at a time.
    """
    n, height, width, channels = x.shape
    cells = np.arange(height * width, dtype=np.int32).reshape(1, height, width, 1)
    row_value = x
    row_index = np.broadcast_to(cells, x.shape) if with_argmax else None
    for j in range(top_level_x + 1):
        if j > 0:  # windows 1 × 2^j from two windows 1 × 2^(j-1)
            half = 1 << (j - 1)
            a, b = (slice(None), slice(None), slice(None, -half)), (slice(None), slice(None),
                                                                     slice(half, None))
            if with_argmax:
                row_value, row_index = _merge_max(row_value[a], row_index[a],
                                                  row_value[b], row_index[b])
            else:
                row_value = np.maximum(row_value[a], row_value[b])
        value, index = row_value, row_index
        for i in range(top_level_y + 1):
            if i > 0:  # windows 2^i × 2^j from two windows 2^(i-1) × 2^j
                half = 1 << (i - 1)
                if with_argmax:
                    value, index = _merge_max(value[:, :-half], index[:, :-half],
                                              value[:, half:], index[:, half:])
                else:
                    value = np.maximum(value[:, :-half], value[:, half:])
            yield i, j, value, index


def roi_pool_forward(x, boxes, batch_index, output_size, spatial_scale=1.0, with_argmax=True):
    """RoIPool on ndarrays (the numeric kernel behind ``roi_pool``).

    The maximum of each integer bin is answered with a 2-D sparse table
    (range-maximum queries, Bentley 1980; Bender & Farach-Colton 2000): the table
    of level ``(i, j)`` holds the max of every ``2^i × 2^j`` window, and any
    rectangle is covered by four such windows anchored at its corners. A loop runs
    over the table levels (logarithmic in the bin size), never over boxes or bins.
    Ties go to the first cell in row-major order, as torchvision's loop does.

    Args:
        x (ndarray[N, H, W, C]): feature maps, float.
        boxes (ndarray[K, 4]): ``[x1, y1, x2, y2]`` in input-image coordinates.
        batch_index (ndarray[K], int): image of each box.
        output_size (tuple): ``(oh, ow)``.
        spatial_scale (float): feature cells per input pixel.
        with_argmax (bool): also locate each maximum (needed for the gradient).
    Returns:
        tuple: ``out`` (ndarray[K, oh, ow, C]; an empty bin gives 0) and
        ``argmax`` (ndarray[K, oh, ow, C], int32 flat index ``h·W + w`` into the
        box's image, -1 for an empty bin; None unless ``with_argmax``).
    """
    n, height, width, channels = x.shape
    oh, ow = output_size
    num_boxes = boxes.shape[0]
    top, bottom = _pool_bins(boxes[:, 1], boxes[:, 3], height, oh, spatial_scale, x.dtype)
    left, right = _pool_bins(boxes[:, 0], boxes[:, 2], width, ow, spatial_scale, x.dtype)
    out = np.zeros((num_boxes * oh * ow, channels), dtype=x.dtype)     # (K·oh·ow, C)
    argmax = np.full(out.shape, -1, dtype=np.int32) if with_argmax else None
    rows_len = (bottom - top)[:, :, None]                         # (K, oh, 1)
    cols_len = (right - left)[:, None, :]                         # (K, 1, ow)
    filled = (rows_len > 0) & (cols_len > 0)                      # (K, oh, ow)
    if filled.any():
        # table level of each bin: the largest power of two not above its length
        level_y = np.floor(np.log2(np.maximum(rows_len, 1))).astype(np.int64)
        level_x = np.floor(np.log2(np.maximum(cols_len, 1))).astype(np.int64)
        level_y, level_x = np.broadcast_arrays(level_y, level_x)
        tables = _sparse_tables(x, int(level_y[filled].max()), int(level_x[filled].max()),
                                with_argmax)
        # a bin exactly 2^i long is one window along y (likewise x): fewer corners
        exact_y = rows_len == (1 << level_y)
        exact_x = cols_len == (1 << level_x)
        for i, j, value, index in tables:
            table = value.reshape(-1, channels)                   # (N·H_i·W_j, C)
            where = index.reshape(-1, channels) if with_argmax else None
            at_level = filled & (level_y == i) & (level_x == j)
            for one_y, one_x in ((True, True), (True, False), (False, True), (False, False)):
                k, py, px = np.nonzero(at_level & (exact_y == one_y) & (exact_x == one_x))
                if k.size == 0:
                    continue
                # flat row of each window corner in the table seen as (N·H_i·W_j, C)
                first_row = batch_index[k] * value.shape[1]
                anchors_y = [top[k, py]] + ([] if one_y else [bottom[k, py] - (1 << i)])
                anchors_x = [left[k, px]] + ([] if one_x else [right[k, px] - (1 << j)])
                corners = [(first_row + yy) * value.shape[2] + xx
                           for yy in anchors_y for xx in anchors_x]
                picks = [np.take(table, c, axis=0) for c in corners]   # 1, 2 or 4 × (M, C)
                best = picks[0]
                for pick in picks[1:]:
                    best = np.maximum(best, pick)
                target = (k * oh + py) * ow + px
                out[target] = best
                if with_argmax:
                    # the windows overlap: the answer is the earliest of those that reach
                    # the max (each window already holds its earliest maximal cell)
                    first = np.take(where, corners[0], axis=0)
                    if len(corners) > 1:
                        first = np.where(picks[0] == best, first, np.iinfo(np.int32).max)
                        for pick, c in zip(picks[1:], corners[1:]):
                            candidate = np.where(pick == best, np.take(where, c, axis=0), first)
                            np.minimum(first, candidate, out=first)
                    argmax[target] = first
    out = out.reshape(num_boxes, oh, ow, channels)
    if with_argmax:
        argmax = argmax.reshape(num_boxes, oh, ow, channels)
    return out, argmax


def roi_pool_backward(grad, argmax, batch_index, input_shape):
    """Gradient of RoIPool: each output's gradient goes to its argmax cell.

    Args:
        grad (ndarray[K, oh, ow, C]): gradient of the loss with respect to the output.
        argmax (ndarray[K, oh, ow, C], int): from ``roi_pool_forward``.
        batch_index (ndarray[K], int): image of each box.
        input_shape (tuple): ``(N, H, W, C)``.
    Returns:
        ndarray[N, H, W, C]: gradient with respect to the feature maps (float64).
    """
    n, height, width, channels = input_shape
    # flat index of the winning element: ((b·H·W + cell)·C + c)
    first = (batch_index.astype(np.int64) * (height * width * channels))[:, None, None, None]
    target = argmax * np.int64(channels) + (first + np.arange(channels))  # (K, oh, ow, C), int64
    weights = grad
    if np.any(argmax < 0):  # empty bins (outside the map) send nothing back
        hit = argmax >= 0
        target, weights = target[hit], grad[hit]
    # several bins may share an argmax cell: bincount adds them up (fast scatter-add)
    flat = np.bincount(target.ravel(), weights=weights.ravel(),
                       minlength=n * height * width * channels)
    return flat.reshape(input_shape)


class RoIPoolFunction(Function):
    """Autograd glue of ``roi_pool`` (gradient for the feature map only)."""

    @staticmethod
    def forward(ctx, x, boxes, batch_index=None, output_size=(7, 7), spatial_scale=1.0):
        out, argmax = roi_pool_forward(x, boxes, batch_index, output_size, spatial_scale,
                                       with_argmax=ctx.needs_input_grad[0])
        ctx.argmax = argmax
        ctx.batch_index = batch_index
        ctx.input_shape = x.shape
        ctx.dtype = x.dtype
        return out

    @staticmethod
    def backward(ctx, grad):
        grad_x = None
        if ctx.needs_input_grad[0]:
            grad_x = roi_pool_backward(grad, ctx.argmax, ctx.batch_index,
                                       ctx.input_shape).astype(ctx.dtype)
        # the bins are integer: the output is piecewise constant in the coordinates
        return grad_x, None


def roi_pool(x, boxes, output_size, spatial_scale=1.0):
    """RoIPool (Girshick, "Fast R-CNN", 2015) with torchvision's semantics.

    The box is rounded to the feature grid (``round`` half away from zero, as C's
    ``round``; onnxruntime's ``MaxRoiPool`` rounds the same way), made at least one
    cell large (``L = e - s + 1``), and split into ``oh × ow`` integer bins; each
    output is the maximum over its bin (0 for a bin that falls outside the map)::

        out[k, i, j, c] = max_{h ∈ bin_i, w ∈ bin_j} x[b_k, h, w, c]

    Args:
        x (Tensor or ndarray[N, H, W, C]): feature maps, float32 or float64.
        boxes: ``(K, 5)`` Tensor/ndarray ``[batch_index, x1, y1, x2, y2]``, or a list
            (one per image) of ``(K_i, 4)`` Tensors/ndarrays, input-image coordinates.
        output_size (int or tuple): ``(oh, ow)``.
        spatial_scale (float): feature cells per input pixel.
    Returns:
        Tensor[K, oh, ow, C]: dtype of x. Differentiable with respect to x (the
        gradient goes to the first maximal cell of each bin); the coordinates get
        no gradient (the output is piecewise constant in them).
    Raises:
        ValueError: x not 4-D, malformed boxes, batch index out of range or not an
            integer, non-finite coordinates, invalid output_size or spatial_scale.
        TypeError: non-float x.

    Note:
        onnxruntime's ``MaxRoiPool`` starts its running max at ``FLT_MIN`` (the
        smallest *positive* float) instead of ``-FLT_MAX``, so on a bin whose
        values are all negative it returns ~1e-38 where torchvision and detseg
        return the bin's maximum. Elsewhere the two agree.
    """
    data = _check_feature_map(x)
    output_size = check_pair(output_size, "output_size", 1)
    spatial_scale = check_positive(spatial_scale, "spatial_scale")
    coords, batch_index = _rois_from_boxes(boxes, data.shape[0], data.dtype)
    return RoIPoolFunction.apply(
        x, coords, batch_index=batch_index, output_size=output_size, spatial_scale=spatial_scale,
    )
