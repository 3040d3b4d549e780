"""Non-maximum suppression: greedy NMS, class-aware NMS, and Soft-NMS.

A detector scores thousands of overlapping boxes around each object. NMS keeps one
per object, the lecture's algorithm (Faster R-CNN: 9000 anchors in, 100 proposals out):

    1. take the remaining box A with the highest score;
    2. add A to the output;
    3. remove A and every remaining box whose IoU with A is > iou_threshold;
    4. stop when nothing remains or the output is full; else go to 1.

Conventions (torchvision's and onnxruntime's): a box is discarded when its IoU
with a kept box is strictly greater than the threshold; equal scores are taken in
index order (lower index first); the result lists the kept indices by decreasing
score. Against onnxruntime's ``NonMaxSuppression`` (``center_point_box=0``) the kept
indices are identical, with two documented differences: onnxruntime takes equal
scores in an arbitrary (heap) order, and it reads a box with ``x1 > x2`` as the box
between the two coordinates, where detseg treats it as empty (area 0, IoU 0).

How the fast version works. Sorting once by score turns step 1 into "the next box
that is still alive". The cost is step 3: the IoU of A with every remaining box.
Two facts make it cheap:

- Only boxes near A can have an IoU above t. If IoU(A, B) > t > 0, then their
  horizontal center distance is below ``w_A · (1 - t) / min(1, 2t)`` (w_A the width of
  A; ``w_A / 2`` at t = 0.5). With the boxes also sorted once by center x, the
  candidates of A are one contiguous slice, found by binary search — a few hundred
  boxes instead of all N.
- Nothing is compacted or copied inside the loop: an ``alive`` flag per box (in score
  order) is cleared for the suppressed ones, and ``alive.argmax()`` finds the next box.

The IoU inside the loop is computed with exactly the operations of ``box_iou``
(same rounding), so the result equals the slow reference bit for bit. Boxes with
coordinates so large that their areas would overflow (beyond
``detection.boxes.PRODUCT_SAFE``, ~2e18 in float32) are handled as ``box_iou`` handles
them: in float64, or scaled by a power of two, the IoU rounded back to the boxes' dtype
before the comparison; ordinary boxes never take that path. On 10,000
clustered detections this runs close to onnxruntime's C++ kernel (see
``benchmarks/bench_detection.py``).

Soft-NMS (Bodla et al., "Soft-NMS -- Improving Object Detection With One Line of
Code", ICCV 2017) decays the scores of overlapping boxes instead of removing them:
``s_j <- s_j · exp(-IoU² / sigma)`` (Gaussian) or ``s_j <- s_j · (1 - IoU)`` when
``IoU > iou_threshold`` (linear).
"""
import numpy as np

from nn.tensor import as_array
from detection.boxes import as_boxes, overflow_safe, _area

__all__ = ["nms", "batched_nms", "soft_nms"]


# ----------------------------------------------------------------- input checks
def _check_scores(scores, num_boxes, name="scores"):
    scores = as_array(scores)
    if not (np.issubdtype(scores.dtype, np.floating) or np.issubdtype(scores.dtype, np.integer)):
        raise TypeError(f"{name} must be a numeric array of shape (N,), got dtype {scores.dtype}")
    if scores.dtype not in (np.float32, np.float64):
        scores = scores.astype(np.float32)
    if scores.ndim == 1 and scores.size == 0 and num_boxes == 0:
        return scores
    if scores.ndim != 1 or scores.shape[0] != num_boxes:
        raise ValueError(
            f"{name} must have shape ({num_boxes},) to match boxes, got {scores.shape}"
        )
    if not np.isfinite(scores).all():
        raise ValueError(f"{name} contains non-finite values (NaN or inf)")
    return scores


def _is_real(value):
    return not isinstance(value, bool) and isinstance(value, (int, float, np.integer, np.floating))


def _check_threshold(value, name, low=0.0, high=1.0):
    if not _is_real(value):
        raise TypeError(f"{name} must be a number, got {value!r}")
    if not np.isfinite(value) or not low <= value <= high:
        raise ValueError(f"{name} must be in [{low}, {high}], got {value!r}")
    return float(value)


def _check_max_output(max_output):
    if max_output is None:
        return None
    if isinstance(max_output, bool) or not isinstance(max_output, (int, np.integer)) \
            or max_output < 0:
        raise ValueError(f"max_output must be None or an integer >= 0, got {max_output!r}")
    return int(max_output)


# ---------------------------------------------------------------------- sorting
def _float32_sort_key(values):
    """uint32 keys that sort like the float32 ``values`` (IEEE-754 order trick).

    Non-negative floats sort like their bit patterns once the sign bit is set;
    negative ones sort reversed, which flipping all their bits fixes.
    """
    bits = (values + np.float32(0.0)).view(np.uint32)     # + 0.0 turns -0.0 into +0.0
    negative = bits >= np.uint32(0x80000000)
    return np.where(negative, ~bits, bits | np.uint32(0x80000000))


def _argsort_float32(values, descending):
    """Stable argsort of float32 values through one SIMD ``np.sort`` of uint64 keys.

    The key is ``(sortable value bits) << 32 | index``: sorting it orders by value and
    breaks ties by index, and is about 3x faster than ``np.argsort`` (which has no
    vectorized path for float32 here) and 8x faster than a stable argsort.
    """
    high = _float32_sort_key(values)
    if descending:
        high = ~high
    key = (high.astype(np.uint64) << np.uint64(32)) | np.arange(values.size, dtype=np.uint64)
    key.sort()
    return (key & np.uint64(0xFFFFFFFF)).astype(np.int64)


def _score_order(scores):
    """Indices by decreasing score, equal scores in increasing index order."""
    if scores.dtype == np.float32 and scores.size < 2**32:
        return _argsort_float32(scores, descending=True)
    return np.argsort(-scores, kind="stable")


def _ascending_order(values):
    """Indices sorting ``values`` increasingly (the order among ties is irrelevant)."""
    if values.dtype == np.float32 and values.size < 2**32:
        return _argsort_float32(values, descending=False)
    return np.argsort(values)


# ------------------------------------------------------------------ the kernel
def _search_half_widths(widths, iou_threshold, coordinate_scale, dtype):
    """Half-width of the window of box centers that can have IoU > t with each box.

    For IoU(A, B) > t > 0 the overlap width w_I satisfies w_I > t·w_A, w_I > t·w_B and
    w_I <= (w_A + w_B)/2 - |cx_A - cx_B|, which gives

        |cx_A - cx_B| < w_A · (1 - t) / min(1, 2t),

    and any overlap at all needs |cx_A - cx_B| < (w_A + max_width) / 2. Slack absorbs
    the rounding of the computed IoU and centers, so the window never misses a box.
    """
    widths = widths.astype(np.float64)
    overlap_bound = (widths + widths.max()) / 2
    t = iou_threshold * (1 - 1e-4)     # a computed IoU may exceed the exact one by ulps
    ratio = (1 - t) / min(1.0, 2 * t) if t > 0 else np.inf
    if np.isfinite(ratio):
        # A tiny t (1e-308) leaves the ratio finite but widths · ratio may overflow to
        # inf, where the overlap bound is the smaller one anyway.
        with np.errstate(over="ignore"):
            bound = np.minimum(widths * ratio, overlap_bound)
    else:  # t == 0 or so tiny (a denormal) that the ratio overflows: overlap is the bound
        bound = overlap_bound
    slack = 64 * np.finfo(dtype).eps * (coordinate_scale + 1)
    return bound * (1 + 1e-4) + slack


def _greedy_nms(boxes, scores, iou_threshold, labels=None, max_output=None):
    """Greedy NMS on checked inputs; boxes of different ``labels`` never suppress each other.

    Args:
        boxes (ndarray[N, 4]): xyxy, float32 or float64.
        scores (ndarray[N]): float32 or float64.
        iou_threshold (float): in [0, 1].
        labels (ndarray[N] int64 or None): class of each box.
        max_output (int or None): stop after this many kept boxes.
    Returns:
        ndarray[K]: int64 indices of the kept boxes by decreasing score.
    """
    num_boxes = boxes.shape[0]
    limit = num_boxes if max_output is None else min(max_output, num_boxes)
    if limit == 0:
        return np.zeros(0, dtype=np.int64)
    iou_dtype = boxes.dtype.type                       # box_iou's output dtype
    (boxes,) = overflow_safe(boxes)                    # the same boxes unless huge
    dtype = boxes.dtype.type
    rounded = dtype is not iou_dtype                   # widened: round the IoU back

    order = _score_order(scores)                       # score rank -> box index
    rank = np.empty(num_boxes, dtype=np.int64)         # box index -> score rank
    rank[order] = np.arange(num_boxes)

    x1, y1, x2, y2 = np.ascontiguousarray(boxes.T)     # (N,) each, contiguous
    widths = x2 - x1
    area = _area(boxes)
    centers = (x1 + x2) * dtype(0.5)

    # Boxes sorted by center x (within each label): a kept box's candidates are one slice.
    by_x = _ascending_order(centers)
    if labels is not None:
        by_x = by_x[np.argsort(labels[by_x], kind="stable")]
        sorted_labels = labels[by_x]
        segment_lo = np.searchsorted(sorted_labels, labels, side="left")    # (N,) per box
        segment_hi = np.searchsorted(sorted_labels, labels, side="right")
    cx_sorted = centers[by_x]
    x1_s, y1_s, x2_s, y2_s = x1[by_x], y1[by_x], x2[by_x], y2[by_x]
    area_s = area[by_x]
    rank_s = rank[by_x]                                # score rank of each x-sorted box
    half = _search_half_widths(widths, iou_threshold, np.abs(boxes).max(), boxes.dtype)
    # In the boxes' dtype (searchsorted would otherwise convert cx_sorted on every call);
    # the slack in `half` covers this rounding.
    window = np.stack([centers - half, centers + half], axis=1).astype(boxes.dtype)  # (N, 2)

    threshold = iou_dtype(iou_threshold)
    zero = dtype(0)
    alive = np.ones(num_boxes, dtype=bool)             # in score order: not yet kept or removed
    keep = []
    position = 0                                       # score rank of the box to keep next
    with np.errstate(invalid="ignore", divide="ignore"):   # 0/0 of two empty boxes: NaN, not > t
        while True:
            i = order[position]
            keep.append(i)
            if len(keep) == limit:
                break
            if labels is None:
                lo, hi = cx_sorted.searchsorted(window[i])
            else:
                first, last = segment_lo[i], segment_hi[i]
                lo, hi = cx_sorted[first:last].searchsorted(window[i]) + first
            # IoU of box i with the candidates, as box_iou computes it.
            inter = np.fmin(x2_s[lo:hi], x2[i])
            inter -= np.fmax(x1_s[lo:hi], x1[i])
            np.fmax(inter, zero, out=inter)            # overlap width (height sign suffices)
            inter_h = np.fmin(y2_s[lo:hi], y2[i])
            inter_h -= np.fmax(y1_s[lo:hi], y1[i])
            inter *= inter_h
            union = area_s[lo:hi] + area[i]
            union -= inter
            inter /= union                             # IoU
            if rounded:
                inter = inter.astype(iou_dtype)
            alive[rank_s[lo:hi][inter > threshold]] = False
            alive[position] = False
            rest = alive[position + 1:]
            if rest.size == 0:
                break
            step = rest.argmax()
            if not rest[step]:
                break
            position += 1 + int(step)
    return np.array(keep, dtype=np.int64)


# ------------------------------------------------------------------ public API
def nms(boxes, scores, iou_threshold, max_output=None):
    """Greedy non-maximum suppression (the lecture's algorithm).

    Args:
        boxes (ndarray[N, 4]): xyxy boxes, float32 or float64.
        scores (ndarray[N]): score of each box, float.
        iou_threshold (float): in [0, 1]; a box whose IoU with a kept box is
            ``> iou_threshold`` is discarded.
        max_output (int, optional): keep at most this many boxes (the lecture's
            "output set is equal to 100"). None keeps all survivors.
    Returns:
        ndarray[K]: int64 indices into ``boxes`` of the kept boxes, by decreasing score
        (equal scores: lower index first). ``(0,)`` for zero boxes.
    Raises:
        ValueError: wrong shapes, non-finite coordinates or scores, threshold out of range.
    """
    boxes = as_boxes(boxes)
    scores = _check_scores(scores, boxes.shape[0])
    iou_threshold = _check_threshold(iou_threshold, "iou_threshold")
    max_output = _check_max_output(max_output)
    return _greedy_nms(boxes, scores, iou_threshold, max_output=max_output)


def batched_nms(boxes, scores, idxs, iou_threshold):
    """Class-aware NMS: boxes suppress only boxes of the same category.

    torchvision runs one NMS after shifting the boxes of class c by
    ``c · (max_coordinate + 1)`` so that classes never overlap. That offset is wrong
    for negative coordinates (it must exceed ``max - min``, not ``max``), and adding
    a large offset rounds the coordinates, which changes IoUs in their last bits.
    Here the same one pass runs on the unshifted boxes and a kept box only examines
    candidates of its own class, so the result is exactly the per-class NMS results
    merged.

    Args:
        boxes (ndarray[N, 4]): xyxy boxes, float.
        scores (ndarray[N]): scores, float.
        idxs (ndarray[N]): integer category of each box (any integers, negative too).
        iou_threshold (float): in [0, 1].
    Returns:
        ndarray[K]: int64 indices of the kept boxes by decreasing score (ties: lower
        index first).
    """
    boxes = as_boxes(boxes)
    scores = _check_scores(scores, boxes.shape[0])
    idxs = as_array(idxs)
    if idxs.size == 0 and boxes.shape[0] == 0:
        idxs = idxs.reshape(0)
    if not (np.issubdtype(idxs.dtype, np.integer) or idxs.dtype == np.bool_):
        raise TypeError(f"idxs must be an integer array of shape (N,), got dtype {idxs.dtype}")
    if idxs.shape != (boxes.shape[0],):
        raise ValueError(
            f"idxs must have shape ({boxes.shape[0]},) to match boxes, got {idxs.shape}"
        )
    iou_threshold = _check_threshold(iou_threshold, "iou_threshold")
    return _greedy_nms(boxes, scores, iou_threshold, labels=idxs.astype(np.int64))


def soft_nms(boxes, scores, sigma=0.5, iou_threshold=0.3, score_threshold=0.001,
             method="gaussian"):
    """Soft-NMS (Bodla et al., ICCV 2017): decay the scores of overlapping boxes.

    Repeatedly take the box with the highest *current* score (ties: lower index);
    stop when that score is below ``score_threshold``; keep it; decay every other
    remaining box j by its IoU with it:

        gaussian:  s_j <- s_j · exp(-IoU² / sigma)
        linear:    s_j <- s_j · (1 - IoU)   if IoU > iou_threshold, else unchanged

    Boxes whose score falls below ``score_threshold`` are dropped.

    Args:
        boxes (ndarray[N, 4]): xyxy boxes, float.
        scores (ndarray[N]): scores, float.
        sigma (float): Gaussian width, > 0 (used by ``"gaussian"``).
        iou_threshold (float): in [0, 1] (used by ``"linear"``).
        score_threshold (float): smallest score kept.
        method (str): ``"gaussian"`` or ``"linear"``.
    Returns:
        tuple(ndarray[K] int64, ndarray[K]): kept indices in selection order, and
        their decayed scores (non-increasing, dtype of ``scores``).
    """
    if method not in ("gaussian", "linear"):
        raise ValueError(f"method must be 'gaussian' or 'linear', got {method!r}")
    boxes = as_boxes(boxes)
    scores = _check_scores(scores, boxes.shape[0])
    if not _is_real(sigma) or not np.isfinite(sigma) or sigma <= 0:
        raise ValueError(f"sigma must be a positive finite number, got {sigma!r}")
    iou_threshold = _check_threshold(iou_threshold, "iou_threshold")
    if not _is_real(score_threshold) or not np.isfinite(score_threshold):
        raise ValueError(f"score_threshold must be a finite number, got {score_threshold!r}")

    # The remaining boxes, compacted as they drop out, in index order (so argmax
    # breaks ties by lower index).
    index = np.arange(boxes.shape[0])
    current = scores.copy()
    iou_dtype = boxes.dtype
    (boxes,) = overflow_safe(boxes)                    # the same boxes unless huge
    x1, y1, x2, y2 = np.ascontiguousarray(boxes.T)
    area = _area(boxes)
    keep, kept_scores = [], []
    while index.size:
        best = int(current.argmax())
        if current[best] < score_threshold:
            break
        keep.append(index[best])
        kept_scores.append(current[best])
        inter_w = np.maximum(np.minimum(x2, x2[best]) - np.maximum(x1, x1[best]), 0)
        inter_h = np.maximum(np.minimum(y2, y2[best]) - np.maximum(y1, y1[best]), 0)
        inter = inter_w * inter_h
        union = area + area[best] - inter
        iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
        iou = iou.astype(iou_dtype, copy=False)        # as box_iou gives it
        if method == "gaussian":
            decay = np.exp(-(iou * iou) / sigma)
        else:
            decay = np.where(iou > iou_threshold, 1 - iou, 1)
        current = current * decay.astype(current.dtype, copy=False)
        survive = current >= score_threshold
        survive[best] = False
        index, current = index[survive], current[survive]
        x1, y1, x2, y2, area = x1[survive], y1[survive], x2[survive], y2[survive], area[survive]
    return np.array(keep, dtype=np.int64), np.array(kept_scores, dtype=scores.dtype)
