"""Hypothesis strategies shared by the tests (valid boxes, conv geometries, ...)."""
import numpy as np
from hypothesis import strategies as st

__all__ = ["float_arrays"]


@st.composite
def float_arrays(draw, shape, low=-2.0, high=2.0, dtype=np.float64):
    """An array of the given shape with values drawn from a seeded generator."""
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    return rng.uniform(low, high, size=shape).astype(dtype)


@st.composite
def pool2d_geometries(draw, max_kernel=4, max_stride=3, max_dilation=2, max_extra=7):
    """Valid PyTorch pooling arguments with an input shape they fit.

    Returns:
        dict: ``kernel_size``, ``stride``, ``padding``, ``dilation`` (pairs of ints),
        ``ceil_mode`` (bool) and ``shape`` ``(N, H, W, C)`` of a channels-last input
        for which every output size is at least 1.
    """
    kernel = (draw(st.integers(1, max_kernel)), draw(st.integers(1, max_kernel)))
    stride = (draw(st.integers(1, max_stride)), draw(st.integers(1, max_stride)))
    padding = tuple(draw(st.integers(0, k // 2)) for k in kernel)
    dilation = (draw(st.integers(1, max_dilation)), draw(st.integers(1, max_dilation)))
    sizes = []
    for k, p, d in zip(kernel, padding, dilation):
        smallest = max(1, d * (k - 1) + 1 - 2 * p)
        sizes.append(draw(st.integers(smallest, smallest + max_extra)))
    shape = (draw(st.integers(1, 2)), sizes[0], sizes[1], draw(st.integers(1, 3)))
    return {
        "kernel_size": kernel, "stride": stride, "padding": padding,
        "dilation": dilation, "ceil_mode": draw(st.booleans()), "shape": shape,
    }


@st.composite
def roi_boxes(draw, num_images, height, width, spatial_scale=1.0, max_boxes=6,
              overhang=1.5, malformed=False):
    """RoIs ``(K, 5)`` float64 ``[batch_index, x1, y1, x2, y2]`` for an (N, H, W, C) map.

    Coordinates are in input-image pixels (feature cells / ``spatial_scale``) and may
    reach ``overhang`` cells past the map on every side, to exercise the border rules.
    With ``malformed=True`` some boxes have ``x2 < x1`` or ``y2 < y1``. K may be 0.
    """
    count = draw(st.integers(0, max_boxes))
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    index = rng.integers(0, num_images, size=count)
    lo = np.array([-overhang, -overhang])
    hi = np.array([width + overhang, height + overhang])
    first = rng.uniform(lo, hi, size=(count, 2))
    second = rng.uniform(lo, hi, size=(count, 2))
    if not malformed:
        first, second = np.minimum(first, second), np.maximum(first, second)
    corners = np.concatenate([first, second], axis=1) / spatial_scale
    return np.concatenate([index[:, None].astype(np.float64), corners], axis=1)


@st.composite
def conv2d_geometries(draw, transposed=False, max_kernel=4, max_stride=3, max_dilation=2,
                      max_groups=3, max_extra=5):
    """Valid PyTorch conv2d (or conv_transpose2d) arguments with an input shape they fit.

    Returns:
        dict: ``shape`` ``(N, H, W, C_in)`` of a channels-last input, ``out_channels``,
        ``kernel_size``, ``stride``, ``padding``, ``dilation`` (pairs of ints) and
        ``groups``; with ``transposed=True`` also ``output_padding`` (smaller than the
        stride or the dilation, as PyTorch requires). Every output size is >= 1.
    """
    groups = draw(st.integers(1, max_groups))
    c_in = groups * draw(st.integers(1, 3))
    c_out = groups * draw(st.integers(1, 3))
    kernel = (draw(st.integers(1, max_kernel)), draw(st.integers(1, max_kernel)))
    stride = (draw(st.integers(1, max_stride)), draw(st.integers(1, max_stride)))
    dilation = (draw(st.integers(1, max_dilation)), draw(st.integers(1, max_dilation)))
    sizes, padding, output_padding = [], [], []
    for k, s, d in zip(kernel, stride, dilation):
        if transposed:
            size = draw(st.integers(1, 1 + max_extra))
            op = draw(st.integers(0, max(s, d) - 1))
            # The output (size-1)·s - 2p + d(k-1) + op + 1 must stay >= 1.
            p = draw(st.integers(0, min(2, ((size - 1) * s + d * (k - 1) + op) // 2)))
            output_padding.append(op)
        else:
            p = draw(st.integers(0, 2))
            smallest = max(1, d * (k - 1) + 1 - 2 * p)
            size = draw(st.integers(smallest, smallest + max_extra))
        sizes.append(size)
        padding.append(p)
    geometry = {
        "shape": (draw(st.integers(1, 2)), sizes[0], sizes[1], c_in),
        "out_channels": c_out, "kernel_size": kernel, "stride": stride,
        "padding": tuple(padding), "dilation": dilation, "groups": groups,
    }
    if transposed:
        geometry["output_padding"] = tuple(output_padding)
    return geometry


@st.composite
def xyxy_boxes(draw, min_boxes=0, max_boxes=12, dtype=np.float64, grid=False,
               allow_empty=True, scale=100.0):
    """Valid xyxy boxes ``(N, 4)``: ``x1 <= x2`` and ``y1 <= y2``.

    With ``grid=True`` the coordinates are small integers drawn by hypothesis
    (identical, touching and nested boxes and IoUs exactly at round thresholds are
    common, and failures shrink); otherwise continuous coordinates in
    ``[-scale, scale]`` with sizes up to ``scale`` from a seeded generator.
    ``allow_empty=False`` gives every box a positive width and height.
    """
    count = draw(st.integers(min_boxes, max_boxes))
    min_side = 0 if allow_empty else 1
    if grid:
        corner = st.integers(-8, 8)
        side = st.integers(min_side, 8)
        rows = draw(st.lists(st.tuples(corner, corner, side, side), min_size=count, max_size=count))
        values = np.array(rows, dtype=np.float64).reshape(count, 4)
        boxes = np.concatenate([values[:, :2], values[:, :2] + values[:, 2:]], axis=1)
        return boxes.astype(dtype)
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    corners = rng.uniform(-scale, scale, size=(count, 2))
    sides = rng.uniform(0.0 if allow_empty else scale * 1e-3, scale, size=(count, 2))
    if allow_empty and count:
        sides[rng.random((count, 2)) < 0.1] = 0.0        # some empty boxes
    return np.concatenate([corners, corners + sides], axis=1).astype(dtype)


@st.composite
def scored_boxes(draw, min_boxes=0, max_boxes=30, dtype=np.float64, grid=False, ties=False):
    """``(boxes (N, 4), scores (N,))`` detections; ``ties=True`` repeats score values."""
    boxes = draw(xyxy_boxes(min_boxes=min_boxes, max_boxes=max_boxes, dtype=dtype, grid=grid))
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    if ties:
        scores = rng.integers(0, 4, size=len(boxes)) / 4.0
    else:
        scores = rng.random(len(boxes))
    return boxes, scores.astype(dtype)
