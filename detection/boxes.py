"""Boxes: areas, IoU, GIoU, format conversion, clipping, and the GIoU loss.

A box is ``(x1, y1, x2, y2)`` in continuous pixel coordinates ("xyxy", no "+1"):
``x1 <= x2`` and ``y1 <= y2``, width ``x2 - x1``, height ``y2 - y1`` — torchvision's
convention. A box whose width or height is zero (or negative) is *empty*: its area
is 0 and its IoU with anything is 0, never NaN.

Intersection over union, the lecture's localization metric:

    IoU(A, B) = |A ∩ B| / |A ∪ B| = |A ∩ B| / (|A| + |B| - |A ∩ B|)      (in [0, 1])

Generalized IoU (Rezatofighi et al., "Generalized Intersection over Union", CVPR 2019)
subtracts the part of the smallest enclosing box C that neither box covers, so that
disjoint boxes still get a useful (negative) score and a gradient:

    GIoU(A, B) = IoU(A, B) - (|C| - |A ∪ B|) / |C|                       (in [-1, 1])

The array functions here take ndarrays (or Tensors, whose data they read), keep
float32 and float64 as given (integers become float32) and return ndarrays;
``generalized_box_iou_loss`` works on Tensors and is differentiable.

Huge coordinates. An area is a product of two lengths and a union a sum of two areas,
so in float32 they overflow to inf from coordinates of about 1.3e19 (float64: 1e154),
long before the coordinates themselves do; inf / inf would then make IoU NaN. When the
largest coordinate is beyond ``PRODUCT_SAFE`` of its dtype, float32 boxes are computed
in float64 and float64 boxes are scaled by a power of two (exact: IoU and GIoU do not
change under scaling); the results keep the input dtype. Below that bound (every real
image) the arithmetic is the plain one in the input dtype.
"""
import numpy as np

from nn.tensor import Tensor, as_array, where

__all__ = [
    "as_boxes", "box_area", "box_iou", "generalized_box_iou", "box_convert",
    "clip_boxes_to_image", "remove_small_boxes", "generalized_box_iou_loss", "overflow_safe",
    "PRODUCT_SAFE",
]

BOX_FORMATS = ("xyxy", "xywh", "cxcywh")

# Largest |coordinate| m for which box arithmetic cannot overflow in that dtype: a
# width is at most 2m, an area 4m², a union (two areas) 8m² — for m = 2**61 that is
# 2**125 < 2**128 (float32's range); for m = 2**509, 2**1021 < 2**1024 (float64's).
PRODUCT_SAFE = {np.dtype(np.float32): 2.0 ** 61, np.dtype(np.float64): 2.0 ** 509}
# The GIoU loss's backward involves a union's square (d(a/b)/db = -a / b²), which must
# stay within the range, reciprocal included: 8m² <= 2**61 for float32 (m = 2**29),
# <= 2**509 for float64 (m = 2**253).
LOSS_SAFE = {np.dtype(np.float32): 2.0 ** 29, np.dtype(np.float64): 2.0 ** 253}


def as_boxes(boxes, name="boxes"):
    """Check and return ``boxes`` as a float ndarray of shape ``(N, 4)``.

    Args:
        boxes (array-like or Tensor[N, 4]): coordinates. An empty sequence
            (shape ``(0,)``) is read as ``(0, 4)``.
        name (str): argument name used in error messages.
    Returns:
        ndarray[N, 4]: float32 or float64 (float64 kept; integers, float16 and Python
        lists become float32). Not copied when already a float32/float64 ndarray.
    Raises:
        TypeError: not numeric.
        ValueError: wrong shape, or a NaN / infinite coordinate.
    """
    array = as_array(boxes)
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)
            or array.dtype == np.bool_):
        raise TypeError(f"{name} must be a numeric array of shape (N, 4), got dtype {array.dtype}")
    if array.dtype not in (np.float32, np.float64):
        array = array.astype(np.float32)
    if array.ndim == 1 and array.size == 0:
        array = array.reshape(0, 4)
    if array.ndim != 2 or array.shape[1] != 4:
        raise ValueError(f"{name} must have shape (N, 4), got {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contains non-finite coordinates (NaN or inf)")
    return array


def _largest_coordinate(*arrays):
    """``max |coordinate|`` over the arrays (0.0 when all are empty), as a float."""
    return max((max(float(a.max()), -float(a.min())) for a in arrays if a.size), default=0.0)


def overflow_safe(*arrays):
    """The box arrays in a dtype and scale in which their areas cannot overflow.

    Args:
        *arrays (ndarray[K, 4]): checked boxes (finite, float32 or float64).
    Returns:
        tuple of ndarray: the inputs themselves when their largest coordinate is within
        ``PRODUCT_SAFE`` of their common dtype; else float32 ones as float64 and float64
        ones times a power of two that brings the largest coordinate within the bound
        (exact, except that coordinates below ~1e-308 of the largest underflow). Ratios
        of areas (IoU, GIoU) of the returned boxes are those of the given ones.
    """
    dtype = np.result_type(*arrays)
    largest = _largest_coordinate(*arrays)
    if largest <= PRODUCT_SAFE[dtype]:
        return arrays
    if dtype == np.float32:
        return tuple(a.astype(np.float64) for a in arrays)
    exponent = int(np.frexp(largest)[1]) - 509  # largest < 2**(exponent + 509)
    return tuple(np.ldexp(a, -exponent) for a in arrays)


def box_area(boxes):
    """Area of each box; an empty (zero or negative width/height) box has area 0.

    No intermediate overflows (module docstring): an area beyond the range of the
    dtype is inf, a representable one is finite even when a side length is not.

    Args:
        boxes (ndarray[N, 4]): xyxy boxes, float.
    Returns:
        ndarray[N]: ``max(x2 - x1, 0) * max(y2 - y1, 0)``, same dtype as ``boxes``.
    """
    boxes = as_boxes(boxes)
    if _largest_coordinate(boxes) <= PRODUCT_SAFE[boxes.dtype]:
        return _area(boxes)
    with np.errstate(over="ignore"):  # an area beyond the dtype's range is inf
        if boxes.dtype == np.float32:
            return _area(boxes.astype(np.float64)).astype(np.float32)
        # Halving is exact, and half a difference of finite floats never overflows.
        return _area(boxes * 0.5) * 4.0


def _area(boxes):
    """``box_area`` without the input checks, for callers that already checked."""
    widths = np.maximum(boxes[:, 2] - boxes[:, 0], 0)
    heights = np.maximum(boxes[:, 3] - boxes[:, 1], 0)
    return widths * heights


def _pairwise_inter_union(boxes1, boxes2):
    """Intersection and union areas of every pair, both ``(N, M)``."""
    top_left = np.maximum(boxes1[:, None, :2], boxes2[None, :, :2])      # (N, M, 2)
    bottom_right = np.minimum(boxes1[:, None, 2:], boxes2[None, :, 2:])  # (N, M, 2)
    wh = np.maximum(bottom_right - top_left, 0)                           # (N, M, 2)
    inter = wh[..., 0] * wh[..., 1]                                       # (N, M)
    union = _area(boxes1)[:, None] + _area(boxes2)[None, :] - inter
    return inter, union


def _checked_iou(boxes1, boxes2):
    """The checked boxes (overflow-safe), their combined dtype, and the pairwise union and
    IoU ndarray[N, M] of ``box_iou`` and ``generalized_box_iou``."""
    boxes1 = as_boxes(boxes1, "boxes1")
    boxes2 = as_boxes(boxes2, "boxes2")
    dtype = np.result_type(boxes1, boxes2)
    boxes1, boxes2 = overflow_safe(boxes1, boxes2)
    inter, union = _pairwise_inter_union(boxes1, boxes2)
    # union > 0 unless both boxes are empty, where inter is 0 too: define 0/0 as 0.
    iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    return boxes1, boxes2, dtype, union, iou


def box_iou(boxes1, boxes2):
    """Pairwise intersection over union.

    ``IoU = |A ∩ B| / (|A| + |B| - |A ∩ B|)``; a pair whose union is empty (both boxes
    empty) has IoU 0.

    Args:
        boxes1 (ndarray[N, 4]): xyxy boxes, float.
        boxes2 (ndarray[M, 4]): xyxy boxes, float.
    Returns:
        ndarray[N, M]: IoU in [0, 1], dtype of ``boxes1`` and ``boxes2`` combined.
    Raises:
        ValueError: a shape is not ``(K, 4)`` or a coordinate is not finite.
    """
    _, _, dtype, _, iou = _checked_iou(boxes1, boxes2)
    return iou.astype(dtype, copy=False)


def generalized_box_iou(boxes1, boxes2):
    """Pairwise generalized IoU (Rezatofighi et al., 2019).

    ``GIoU = IoU - (|C| - |A ∪ B|) / |C|`` with C the smallest box enclosing A and B.
    When C itself has zero area (both boxes are degenerate and collinear) the
    penalty term is taken as 0, so GIoU = IoU = 0 there instead of NaN.

    Args:
        boxes1 (ndarray[N, 4]): xyxy boxes, float.
        boxes2 (ndarray[M, 4]): xyxy boxes, float.
    Returns:
        ndarray[N, M]: GIoU in [-1, 1], dtype of ``boxes1`` and ``boxes2`` combined.
    """
    boxes1, boxes2, dtype, union, iou = _checked_iou(boxes1, boxes2)
    enclose_tl = np.minimum(boxes1[:, None, :2], boxes2[None, :, :2])     # (N, M, 2)
    enclose_br = np.maximum(boxes1[:, None, 2:], boxes2[None, :, 2:])     # (N, M, 2)
    enclose_wh = np.maximum(enclose_br - enclose_tl, 0)
    enclose = enclose_wh[..., 0] * enclose_wh[..., 1]                     # (N, M)
    penalty = np.divide(enclose - union, enclose, out=np.zeros_like(enclose), where=enclose > 0)
    return (iou - penalty).astype(dtype, copy=False)


def box_convert(boxes, in_fmt, out_fmt):
    """Convert boxes between ``"xyxy"``, ``"xywh"`` and ``"cxcywh"``.

    - ``xyxy``: corners ``(x1, y1, x2, y2)``;
    - ``xywh``: top-left corner and size ``(x1, y1, w, h)`` (COCO's annotation format);
    - ``cxcywh``: center and size ``(cx, cy, w, h)`` (YOLO's and DETR's).

    Args:
        boxes (ndarray[N, 4]): boxes in ``in_fmt``, float.
        in_fmt (str): format of ``boxes``.
        out_fmt (str): wanted format.
    Returns:
        ndarray[N, 4]: a new array in ``out_fmt``, same dtype.
    """
    for name, fmt in (("in_fmt", in_fmt), ("out_fmt", out_fmt)):
        if fmt not in BOX_FORMATS:
            raise ValueError(f"{name} must be one of {BOX_FORMATS}, got {fmt!r}")
    boxes = as_boxes(boxes)
    a, b, c, d = boxes.T
    # Go through xyxy: two small conversions instead of six.
    if in_fmt == "xywh":
        a, b, c, d = a, b, a + c, b + d
    elif in_fmt == "cxcywh":
        half_w, half_h = c / 2, d / 2
        a, b, c, d = a - half_w, b - half_h, a + half_w, b + half_h
    if out_fmt == "xywh":
        a, b, c, d = a, b, c - a, d - b
    elif out_fmt == "cxcywh":
        # a/2 + c/2 is (a + c)/2 without its overflow for coordinates near the range
        a, b, c, d = a / 2 + c / 2, b / 2 + d / 2, c - a, d - b
    return np.stack([a, b, c, d], axis=1).astype(boxes.dtype, copy=False)


def _is_real(value):
    """A real number (Python or NumPy), not a bool."""
    return not isinstance(value, bool) and isinstance(value, (int, float, np.integer, np.floating))


def _check_image_size(size, name="size"):
    if not isinstance(size, (tuple, list)) or len(size) != 2:
        raise ValueError(f"{name} must be a pair (H, W), got {size!r}")
    height, width = size
    for label, value in (("H", height), ("W", width)):
        if not _is_real(value):
            raise TypeError(f"{name} must hold numbers (H, W), got {label}={value!r}")
        if not np.isfinite(value) or value <= 0:
            raise ValueError(f"{name} must hold positive finite numbers (H, W), got {size!r}")
    return height, width


def clip_boxes_to_image(boxes, size):
    """Clip boxes to the image: x to ``[0, W]``, y to ``[0, H]``.

    Args:
        boxes (ndarray[N, 4]): xyxy boxes, float.
        size (tuple): ``(H, W)`` of the image.
    Returns:
        ndarray[N, 4]: clipped copy, same dtype. A box fully outside becomes empty.
    """
    height, width = _check_image_size(size)
    boxes = as_boxes(boxes)
    clipped = np.empty_like(boxes)
    np.clip(boxes[:, 0::2], 0, width, out=clipped[:, 0::2])
    np.clip(boxes[:, 1::2], 0, height, out=clipped[:, 1::2])
    return clipped


def remove_small_boxes(boxes, min_size):
    """Indices of the boxes whose width and height are both at least ``min_size``.

    Args:
        boxes (ndarray[N, 4]): xyxy boxes, float.
        min_size (float): minimum side length, ``>= 0``.
    Returns:
        ndarray[K]: int64 indices into ``boxes``, increasing.
    """
    if not _is_real(min_size):
        raise TypeError(f"min_size must be a number, got {type(min_size).__name__}")
    if not np.isfinite(min_size) or min_size < 0:
        raise ValueError(f"min_size must be finite and >= 0, got {min_size!r}")
    boxes = as_boxes(boxes)
    widths = boxes[:, 2] - boxes[:, 0]
    heights = boxes[:, 3] - boxes[:, 1]
    return np.flatnonzero((widths >= min_size) & (heights >= min_size)).astype(np.int64)


def _maximum(a, b):
    """Elementwise max of Tensors; at a tie the gradient goes to ``b``."""
    return where(a.data > b.data, a, b)


def _minimum(a, b):
    """Elementwise min of Tensors; at a tie the gradient goes to ``b``."""
    return where(a.data < b.data, a, b)


def _as_box_tensor(boxes, name):
    tensor = boxes if isinstance(boxes, Tensor) else Tensor(as_array(boxes))
    if not np.issubdtype(tensor.dtype, np.floating):
        tensor = tensor.astype(np.float32)
    if tensor.ndim < 1 or tensor.shape[-1] != 4:
        raise ValueError(f"{name} must have shape (..., 4), got {tensor.shape}")
    if not np.isfinite(tensor.data).all():
        raise ValueError(f"{name} contains non-finite coordinates (NaN or inf)")
    return tensor


def generalized_box_iou_loss(boxes1, boxes2, reduction="none", eps=1e-7):
    """GIoU loss ``1 - GIoU`` of matched box pairs, differentiable (torchvision's definition).

    The boxes are paired elementwise (``boxes1[i]`` with ``boxes2[i]``), not all
    pairs. As in ``torchvision.ops.generalized_box_iou_loss``:

        IoU  = |A ∩ B| / (|A ∪ B| + eps)
        loss = 1 - IoU + (|C| - |A ∪ B|) / (|C| + eps)

    with C the smallest enclosing box (Rezatofighi et al., CVPR 2019). The loss is in
    [0, 2]; it is 0 for identical boxes and keeps a gradient for disjoint ones. Built
    from Tensor operations, so gradients flow to both arguments; at exact ties of
    coordinates (``x1 == x1'``) the max/min gradient goes to ``boxes2``. Coordinates
    beyond ``LOSS_SAFE`` (2**29 in float32, where the backward's squared unions would
    overflow) are computed in float64, or scaled by a power of two beyond 2**253 in
    float64 (module docstring); the loss and the gradients keep the input dtype.

    Args:
        boxes1 (Tensor[..., 4]): xyxy boxes (e.g. decoded predictions), float.
        boxes2 (Tensor[..., 4]): xyxy boxes of the same shape (e.g. targets).
        reduction (str): ``"none"`` | ``"mean"`` | ``"sum"``.
        eps (float): keeps the divisions finite for empty boxes.
    Returns:
        Tensor: shape ``boxes1.shape[:-1]`` for ``"none"``, else a scalar. The mean
        of zero pairs is 0 (still connected to the inputs).
    """
    if reduction not in ("none", "mean", "sum"):
        raise ValueError(f"reduction must be 'none', 'mean' or 'sum', got {reduction!r}")
    boxes1 = _as_box_tensor(boxes1, "boxes1")
    boxes2 = _as_box_tensor(boxes2, "boxes2")
    if boxes1.shape != boxes2.shape:
        raise ValueError(
            f"boxes1 and boxes2 must have the same shape, got {boxes1.shape} and {boxes2.shape}"
        )
    dtype = np.result_type(boxes1.dtype, boxes2.dtype)
    largest = _largest_coordinate(boxes1.data, boxes2.data)
    if largest > LOSS_SAFE[dtype]:
        boxes1, boxes2 = boxes1.astype(np.float64), boxes2.astype(np.float64)
        if largest > LOSS_SAFE[np.dtype(np.float64)]:
            scale = np.ldexp(1.0, 253 - int(np.frexp(largest)[1]))  # a power of two
            boxes1, boxes2 = boxes1 * scale, boxes2 * scale
        loss = _giou_loss(boxes1, boxes2, eps).astype(dtype)
    else:
        loss = _giou_loss(boxes1, boxes2, eps)
    if reduction == "sum":
        return loss.sum()
    if reduction == "mean":
        return loss.mean() if loss.size > 0 else loss.sum() * 0.0
    return loss


def _giou_loss(boxes1, boxes2, eps):
    """``1 - GIoU`` of each pair of Tensors ``(..., 4)`` (``generalized_box_iou_loss``)."""
    x1, y1, x2, y2 = (boxes1[..., k] for k in range(4))
    x1g, y1g, x2g, y2g = (boxes2[..., k] for k in range(4))

    # Intersection: positive only where both overlaps are positive.
    xi1, yi1 = _maximum(x1, x1g), _maximum(y1, y1g)
    xi2, yi2 = _minimum(x2, x2g), _minimum(y2, y2g)
    overlaps = (xi2.data > xi1.data) & (yi2.data > yi1.data)
    inter = where(overlaps, (xi2 - xi1) * (yi2 - yi1), 0.0)
    union = (x2 - x1) * (y2 - y1) + (x2g - x1g) * (y2g - y1g) - inter
    iou = inter / (union + eps)

    # Smallest enclosing box C.
    xc1, yc1 = _minimum(x1, x1g), _minimum(y1, y1g)
    xc2, yc2 = _maximum(x2, x2g), _maximum(y2, y2g)
    enclose = (xc2 - xc1) * (yc2 - yc1)
    return 1 - iou + (enclose - union) / (enclose + eps)
