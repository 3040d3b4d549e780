"""Tests of detection.nms: nms, batched_nms, soft_nms."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

from detection.boxes import box_iou
from detection.nms import nms, batched_nms, soft_nms
from tests.oracles import onnx_nms_session, require
from tests.strategies import scored_boxes


# ------------------------------------------------------------ slow references
def nms_loop(boxes, scores, iou_threshold, max_output=None):
    """The lecture's greedy algorithm, one candidate at a time."""
    iou = box_iou(boxes, boxes)
    order = sorted(range(len(boxes)), key=lambda i: (-scores[i], i))
    keep = []
    for i in order:
        if max_output is not None and len(keep) == max_output:
            break
        if np.all(iou[i, keep] <= iou_threshold):       # each kept box, one row
            keep.append(i)
    return np.array(keep, dtype=np.int64)


def per_class_nms_merged(boxes, scores, labels, iou_threshold):
    kept = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        kept.extend(members[nms_loop(boxes[members], scores[members], iou_threshold)].tolist())
    return np.array(sorted(kept, key=lambda i: (-scores[i], i)), dtype=np.int64)


def soft_nms_loop(boxes, scores, sigma, iou_threshold, score_threshold, method):
    current = {i: float(s) for i, s in enumerate(scores)}
    keep, kept_scores = [], []
    while current:
        best = min(current, key=lambda i: (-current[i], i))
        if current[best] < score_threshold:
            break
        keep.append(best)
        kept_scores.append(current.pop(best))
        for j in list(current):
            iou = box_iou(boxes[best:best + 1], boxes[j:j + 1])[0, 0]
            if method == "gaussian":
                current[j] *= np.exp(-iou * iou / sigma)
            elif iou > iou_threshold:
                current[j] *= 1 - iou
            if current[j] < score_threshold:
                del current[j]
    return np.array(keep, dtype=np.int64), np.array(kept_scores)


def clustered_detections(rng, num_boxes, num_objects, image_size=800.0, jitter=0.05):
    """Detector-like boxes: jittered copies of a few objects, distinct random scores."""
    centers = rng.uniform(0, image_size, (num_objects, 2))
    sizes = rng.uniform(20, 200, (num_objects, 2))
    owner = rng.integers(0, num_objects, num_boxes)
    center = centers[owner] + rng.normal(0, jitter, (num_boxes, 2)) * sizes[owner]
    size = sizes[owner] * np.exp(rng.normal(0, jitter, (num_boxes, 2)))
    boxes = np.concatenate([center - size / 2, center + size / 2], axis=1)
    return boxes.astype(np.float32), distinct_scores(rng, num_boxes)


def distinct_scores(rng, count):
    """Scores in (0, 1) without repeats (float32 draws of 3000 values collide often)."""
    return ((rng.permutation(count) + rng.random(count)) / count).astype(np.float32)


# ----------------------------------------------------------------- hand cases
def test_lecture_example():
    boxes = np.array([
        [10, 10, 50, 50],      # 0: object A, best score
        [12, 12, 52, 52],      # 1: A again (IoU 0.82 with 0) -> removed
        [100, 100, 140, 150],  # 2: object B
        [30, 30, 70, 70],      # 3: IoU 0.14 with 0 -> stays
        [101, 99, 141, 149],   # 4: B again -> removed
    ], np.float32)
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.95], np.float32)
    keep = nms(boxes, scores, 0.5)
    np.testing.assert_array_equal(keep, [4, 0, 3])
    assert keep.dtype == np.int64
    np.testing.assert_array_equal(nms(boxes, scores, 0.5, max_output=2), [4, 0])
    np.testing.assert_array_equal(nms(boxes, scores, 0.5, max_output=0), np.zeros(0))


def test_threshold_is_strict_and_ties_keep_lower_index_first():
    boxes = np.array([[0, 0, 2, 1], [0, 0, 1, 1]], np.float64)      # IoU exactly 0.5
    scores = np.array([0.5, 0.5])
    np.testing.assert_array_equal(nms(boxes, scores, 0.5), [0, 1])   # 0.5 is not > 0.5
    np.testing.assert_array_equal(nms(boxes, scores, 0.49), [0])     # tie: index 0 first
    np.testing.assert_array_equal(nms(boxes[::-1], scores, 0.49), [0])


def test_duplicates_zero_area_and_threshold_extremes():
    boxes = np.array([[0, 0, 4, 4], [0, 0, 4, 4], [2, 2, 2, 2], [2, 2, 2, 2], [1, 1, 5, 5]],
                     np.float32)
    scores = np.array([0.1, 0.9, 0.8, 0.7, 0.2], np.float32)
    # empty boxes never overlap anything
    np.testing.assert_array_equal(nms(boxes, scores, 0.5), [1, 2, 3, 4])
    np.testing.assert_array_equal(nms(boxes, scores, 1.0), [1, 2, 3, 4, 0])
    np.testing.assert_array_equal(nms(boxes, scores, 0.0), [1, 2, 3])     # any overlap suppresses


def test_empty_input():
    keep = nms(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), 0.5)
    assert keep.shape == (0,) and keep.dtype == np.int64
    assert nms([], [], 0.5).dtype == np.int64
    assert batched_nms(np.zeros((0, 4)), np.zeros(0), np.zeros(0, int), 0.5).shape == (0,)
    indices, new_scores = soft_nms(np.zeros((0, 4), np.float32), np.zeros(0, np.float32))
    assert indices.shape == (0,) and indices.dtype == np.int64
    assert new_scores.shape == (0,) and new_scores.dtype == np.float32


@pytest.mark.parametrize("call, error, words", [
    (lambda: nms(np.zeros((3, 4)), np.zeros(2), 0.5), ValueError, "scores must have shape (3,)"),
    (lambda: nms(np.zeros((3, 3)), np.zeros(3), 0.5), ValueError, "boxes must have shape"),
    (lambda: nms(np.array([[0, 0, 1, np.nan]]), np.zeros(1), 0.5), ValueError,
     "boxes contains non-finite"),
    (lambda: nms(np.zeros((1, 4)), np.array([np.inf]), 0.5), ValueError,
     "scores contains non-finite"),
    (lambda: nms(np.zeros((1, 4)), np.zeros(1), 1.5), ValueError, "iou_threshold"),
    (lambda: nms(np.zeros((1, 4)), np.zeros(1), -0.1), ValueError, "iou_threshold"),
    (lambda: nms(np.zeros((1, 4)), np.zeros(1), "0.5"), TypeError, "iou_threshold"),
    (lambda: nms(np.zeros((1, 4)), np.zeros(1), 0.5, max_output=-1), ValueError, "max_output"),
    (lambda: nms(np.zeros((1, 4)), np.zeros(1), 0.5, max_output=2.0), ValueError, "max_output"),
    (lambda: batched_nms(np.zeros((2, 4)), np.zeros(2), np.zeros(3, int), 0.5), ValueError, "idxs"),
    (lambda: batched_nms(np.zeros((2, 4)), np.zeros(2), np.zeros(2), 0.5), TypeError, "idxs"),
    (lambda: soft_nms(np.zeros((1, 4)), np.zeros(1), method="hard"), ValueError, "method"),
    (lambda: soft_nms(np.zeros((1, 4)), np.zeros(1), sigma=0.0), ValueError, "sigma"),
    (lambda: soft_nms(np.zeros((1, 4)), np.zeros(1), score_threshold=np.nan), ValueError,
     "score_threshold"),
])
def test_bad_input_raises_before_work(call, error, words):
    with pytest.raises(error) as info:
        call()
    assert words in str(info.value)


def test_dtypes_are_accepted():
    rng = np.random.default_rng(0)
    boxes, scores = clustered_detections(rng, 200, 10)
    expected = nms(boxes, scores, 0.5)
    np.testing.assert_array_equal(nms(boxes.astype(np.float64), scores, 0.5), nms_loop(
        boxes.astype(np.float64), scores, 0.5))
    np.testing.assert_array_equal(nms(boxes, scores.astype(np.float64), 0.5), expected)
    np.testing.assert_array_equal(nms(np.round(boxes).astype(np.int32), scores, 0.5),
                                  nms(np.round(boxes), scores, 0.5))
    np.testing.assert_array_equal(nms(boxes, (scores * 1000).astype(np.int64), 0.5),
                                  nms_loop(boxes, (scores * 1000).astype(np.int64), 0.5))


# ---------------------------------------------------------- loop references
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("threshold", [0.0, 1e-6, 0.3, 0.5, 0.7, 0.999999, 1.0])
def test_matches_loop_reference_on_clustered_boxes(dtype, threshold):
    rng = np.random.default_rng(int(threshold * 1e6))
    boxes, scores = clustered_detections(rng, 600, 12, jitter=0.2)
    boxes[:40, 2] = boxes[:40, 0] + rng.uniform(0, 1e-3, 40)      # some needle-thin boxes
    boxes[40:50, 2] = boxes[40:50, 0] + 700                       # some very wide ones
    boxes, scores = boxes.astype(dtype), scores.astype(dtype)
    for max_output in (None, 5):
        np.testing.assert_array_equal(nms(boxes, scores, threshold, max_output),
                                      nms_loop(boxes, scores, threshold, max_output))


@given(scored_boxes(max_boxes=40, grid=True, ties=True),
       st.sampled_from([0.0, 0.25, 1 / 3, 0.5, 0.75, 1.0]),
       st.sampled_from([np.float32, np.float64]))
def test_matches_loop_reference_on_grid_boxes_with_ties(detections, threshold, dtype):
    boxes, scores = (a.astype(dtype) for a in detections)
    np.testing.assert_array_equal(nms(boxes, scores, threshold), nms_loop(boxes, scores, threshold))


# --------------------------------------------------------------- properties
@given(scored_boxes(max_boxes=40), st.floats(0.0, 1.0))
def test_nms_properties(detections, threshold):
    boxes, scores = detections
    keep = nms(boxes, scores, threshold)
    assert keep.dtype == np.int64
    assert len(np.unique(keep)) == len(keep)
    # sorted by decreasing score
    assert np.all(np.diff(scores[keep]) <= 0)
    # no kept pair above the threshold
    iou = box_iou(boxes, boxes)
    kept_iou = iou[np.ix_(keep, keep)]
    assert np.all(kept_iou[~np.eye(len(keep), dtype=bool)] <= threshold)
    # every dropped box overlaps a kept box that comes before it, above the threshold
    position = {int(k): p for p, k in enumerate(keep)}
    rank = {i: r for r, i in enumerate(sorted(range(len(boxes)), key=lambda i: (-scores[i], i)))}
    for dropped in set(range(len(boxes))) - set(position):
        assert any(iou[dropped, k] > threshold and rank[int(k)] < rank[dropped] for k in keep)
    # NMS of its own output changes nothing
    np.testing.assert_array_equal(keep[nms(boxes[keep], scores[keep], threshold)], keep)


@pytest.mark.parametrize("threshold", [5e-324, 1e-310, 1.1125369292536007e-308, 1e-307, 1e-300,
                                       1e-12])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_tiny_thresholds_equal_the_loop(threshold, dtype):
    """Denormal thresholds once overflowed the search window to inf/NaN, and a threshold
    near 1e-308 the product width · (1 - t) / 2t (hypothesis found both)."""
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 50, (60, 2))
    wh = rng.uniform(0, 20, (60, 2))
    wh[:5] = 0  # degenerate boxes too
    boxes = np.concatenate([xy, xy + wh], axis=1).astype(dtype)
    scores = rng.random(60).astype(dtype)
    np.testing.assert_array_equal(nms(boxes, scores, threshold), nms_loop(boxes, scores, threshold))


@given(scored_boxes(max_boxes=30, grid=True, ties=True), st.integers(0, 2**31 - 1),
       st.sampled_from([0.0, 0.3, 0.5, 1.0]))
def test_batched_nms_equals_per_class_nms_merged(detections, seed, threshold):
    boxes, scores = detections
    labels = np.random.default_rng(seed).integers(-3, 3, len(boxes))
    np.testing.assert_array_equal(batched_nms(boxes, scores, labels, threshold),
                                  per_class_nms_merged(boxes, scores, labels, threshold))


def test_batched_nms_is_correct_where_torchvisions_offset_trick_fails():
    # torchvision shifts class c by c * (max_coordinate + 1). With negative coordinates
    # that offset (here 1) is smaller than the extent of the boxes: classes collide.
    boxes = np.array([[-10, -10, 0, 0], [-9, -9, 0, 0]], np.float64)
    scores = np.array([0.9, 0.8])
    labels = np.array([0, 1])
    offsets = labels * (boxes.max() + 1)
    shifted = boxes + offsets[:, None]
    assert box_iou(shifted[:1], shifted[1:])[0, 0] > 0.5     # the trick would drop box 1
    np.testing.assert_array_equal(batched_nms(boxes, scores, labels, 0.5), [0, 1])
    np.testing.assert_array_equal(batched_nms(boxes, scores, np.zeros(2, int), 0.5), [0])


# ------------------------------------------------------------ oracle tests
@pytest.fixture(scope="module")
def onnx_nms():
    """onnxruntime's NonMaxSuppression (opset 11, center_point_box=0) as a function."""
    require("onnxruntime")
    require("onnx")
    session = onnx_nms_session()

    def run(boxes, scores, iou_threshold, max_output=None):
        # ONNX boxes are [y1, x1, y2, x2]
        yxyx = np.ascontiguousarray(boxes[:, [1, 0, 3, 2]], dtype=np.float32)[None]
        limit = len(boxes) if max_output is None else max_output
        selected = session.run(None, {
            "boxes": yxyx, "scores": scores.astype(np.float32)[None, None],
            "max_output": np.array([limit], np.int64),
            "iou_threshold": np.array([iou_threshold], np.float32)})[0]
        return selected[:, 2]
    return run


@pytest.mark.oracle
@pytest.mark.parametrize("threshold", [0.0, 0.3, 0.5, 0.7, 1.0])
@pytest.mark.parametrize("kind", ["uniform", "clustered"])
def test_indices_identical_to_onnxruntime(onnx_nms, kind, threshold):
    # Scores are distinct (onnxruntime's priority queue orders equal scores arbitrarily)
    # and continuous (no IoU sits exactly at the threshold), so the two agree exactly:
    # both compute IoU in float32 as inter / (area1 + area2 - inter) and drop IoU > t.
    rng = np.random.default_rng(int(threshold * 10) + (kind == "clustered"))
    if kind == "clustered":
        boxes, scores = clustered_detections(rng, 3000, 30)
    else:
        corners = rng.uniform(0, 800, (3000, 2))
        sides = rng.uniform(10, 200, (3000, 2))
        boxes = np.concatenate([corners, corners + sides], 1).astype(np.float32)
        scores = rng.random(3000).astype(np.float32)
    assert len(np.unique(scores)) == len(scores)
    expected = onnx_nms(boxes, scores, threshold)
    np.testing.assert_array_equal(nms(boxes, scores, threshold), expected)
    np.testing.assert_array_equal(nms(boxes, scores, threshold, max_output=17),
                                  onnx_nms(boxes, scores, threshold, max_output=17))


# ------------------------------------------------------------------ soft-NMS
@pytest.mark.parametrize("method", ["gaussian", "linear"])
@pytest.mark.parametrize("seed", range(3))
def test_soft_nms_matches_loop_reference(method, seed):
    rng = np.random.default_rng(seed)
    boxes, scores = clustered_detections(rng, 60, 4, jitter=0.15)
    boxes, scores = boxes.astype(np.float64), scores.astype(np.float64)
    keep, new_scores = soft_nms(boxes, scores, sigma=0.5, iou_threshold=0.3, score_threshold=0.05,
                                method=method)
    ref_keep, ref_scores = soft_nms_loop(boxes, scores, 0.5, 0.3, 0.05, method)
    np.testing.assert_array_equal(keep, ref_keep)
    np.testing.assert_allclose(new_scores, ref_scores, rtol=1e-12)
    assert np.all(np.diff(new_scores) <= 0)
    assert np.all(new_scores <= scores[keep])


def test_soft_nms_hand_case():
    # IoU(0, 1) = 0.5
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 5], [20, 20, 30, 30]], np.float64)
    scores = np.array([0.9, 0.8, 0.3])
    keep, new = soft_nms(boxes, scores, sigma=0.5, method="gaussian")
    np.testing.assert_array_equal(keep, [0, 1, 2])      # box 1 decays to 0.8·exp(-0.5) = 0.485
    np.testing.assert_allclose(new, [0.9, 0.8 * np.exp(-0.25 / 0.5), 0.3])
    keep, new = soft_nms(boxes, scores, iou_threshold=0.4, method="linear")
    np.testing.assert_array_equal(keep, [0, 1, 2])
    np.testing.assert_allclose(new, [0.9, 0.4, 0.3])
    keep, new = soft_nms(boxes, scores, iou_threshold=0.5, method="linear")   # 0.5 is not > 0.5
    np.testing.assert_allclose(new, [0.9, 0.8, 0.3])
    keep, _ = soft_nms(boxes, scores, iou_threshold=0.4, method="linear", score_threshold=0.35)
    np.testing.assert_array_equal(keep, [0, 1])         # 0.3 < 0.35 is dropped
    assert soft_nms(boxes.astype(np.float32), scores.astype(np.float32))[1].dtype == np.float32


@given(scored_boxes(min_boxes=1, max_boxes=25, grid=True))
def test_soft_nms_with_a_tiny_sigma_is_hard_nms_at_zero_overlap(detections):
    # exp(-IoU² / sigma) vanishes for every overlapping pair: Soft-NMS becomes NMS(t = 0).
    # Grid boxes overlap by at least 1 / 256 of their union, so IoU² / 1e-9 is huge.
    boxes, scores = detections
    scores = scores + 0.5                       # all above the score threshold
    keep, new_scores = soft_nms(boxes, scores, sigma=1e-9, score_threshold=1e-3)
    np.testing.assert_array_equal(keep, nms(boxes, scores, 0.0))
    np.testing.assert_array_equal(new_scores, scores[keep])


# ------------------------------------------------- huge coordinates (no overflow)
@pytest.mark.parametrize("dtype, scale", [(np.float32, 2.0 ** 63), (np.float32, 2.0 ** 125),
                                          (np.float64, 2.0 ** 700), (np.float64, 2.0 ** 1020)])
def test_nms_of_huge_boxes_removes_duplicates(dtype, scale):
    # 0 and 1 identical, 2 overlaps 0 by IoU 0.5 exactly (powers of two scale exactly),
    # 3 disjoint
    unit = np.array([[1, 1, 3, 3], [1, 1, 3, 3], [1, 1, 2, 3], [-4, -4, -2, -2]])
    boxes = (unit * scale).astype(dtype)
    scores = np.array([0.9, 0.8, 0.7, 0.6], dtype)
    np.testing.assert_array_equal(nms(boxes, scores, 0.5), [0, 2, 3])
    np.testing.assert_array_equal(nms(boxes, scores, 0.4), [0, 3])
    np.testing.assert_array_equal(nms(boxes, scores, 0.5), nms_loop(boxes, scores, 0.5))
    np.testing.assert_array_equal(batched_nms(boxes, scores, [0, 0, 1, 0], 0.4), [0, 2, 3])
    keep, new = soft_nms(boxes, scores, iou_threshold=0.3, method="linear")
    np.testing.assert_array_equal(keep, [0, 3, 2])    # the duplicate decays to 0.8·(1 - 1)
    assert new.dtype == dtype
    np.testing.assert_allclose(new, [0.9, 0.6, 0.35], rtol=1e-6)   # 2: 0.7·(1 - 0.5)
    keep_ref, new_ref = soft_nms_loop(boxes, scores, 0.5, 0.3, 0.001, "linear")
    np.testing.assert_array_equal(keep, keep_ref)


@pytest.mark.parametrize("seed", range(3))
def test_nms_of_mixed_huge_and_small_boxes_matches_loop(seed):
    # a few huge boxes force the wide path; the small ones must give the same result
    rng = np.random.default_rng(seed)
    boxes, scores = clustered_detections(rng, 300, 20)
    huge = np.array([[0, 0, 3e19, 3e19], [1e18, 0, 3e19, 3e19]], np.float32)
    all_boxes = np.concatenate([boxes, huge])
    all_scores = np.concatenate([scores, np.float32([0.5, 0.4])])
    keep = nms(all_boxes, all_scores, 0.5)
    np.testing.assert_array_equal(keep, nms_loop(all_boxes, all_scores, 0.5))
    small = keep[keep < len(boxes)]
    np.testing.assert_array_equal(small, nms(boxes, scores, 0.5))
    assert (keep >= len(boxes)).sum() == 1    # IoU of the huge pair is 29/30
