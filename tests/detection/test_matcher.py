"""Tests of detection.matcher.Matcher."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

from detection.boxes import box_iou
from detection.matcher import Matcher


def match_loop(quality, high, low, allow_low_quality):
    """torchvision's Matcher, one anchor at a time (ground truths with best IoU 0 claim nothing)."""
    num_gt, num_anchors = quality.shape
    if num_gt == 0 or num_anchors == 0:
        return np.full(num_anchors, -1)
    out = np.empty(num_anchors, dtype=np.int64)
    best_gt = []
    for n in range(num_anchors):
        column = quality[:, n].tolist()
        best = max(column)
        gt = column.index(best)                 # first maximum
        best_gt.append(gt)
        out[n] = gt if best >= high else (-1 if best < low else -2)
    if allow_low_quality:
        for m in range(num_gt):
            row = quality[m].tolist()
            best = max(row)
            if best <= 0:
                continue
            for n in range(num_anchors):
                if row[n] == best:
                    out[n] = best_gt[n]
    return out


def test_hand_case_thresholds():
    quality = np.array([
        [0.9, 0.5, 0.31, 0.29, 0.7, 0.0],
        [0.1, 0.6, 0.20, 0.00, 0.7, 0.0],
    ])
    matches = Matcher(0.7, 0.3)(quality)
    # >= 0.7 positive (ties: lower gt), [0.3, 0.7) ignored, < 0.3 background
    np.testing.assert_array_equal(matches, [0, -2, -2, -1, 0, -1])
    assert matches.dtype == np.int64
    assert Matcher.BELOW_LOW_THRESHOLD == -1 and Matcher.BETWEEN_THRESHOLDS == -2


def test_equal_thresholds_have_no_ignored_band():
    quality = np.array([[0.2, 0.5, 0.8]])
    np.testing.assert_array_equal(Matcher(0.5, 0.5)(quality), [-1, 0, 0])


def test_low_quality_matches_rescue_each_ground_truths_best_anchors():
    quality = np.array([
        [0.10, 0.40, 0.40, 0.05],     # best 0.40 at anchors 1 and 2 (a tie: both)
        [0.20, 0.10, 0.00, 0.80],     # already a positive at anchor 3
        [0.00, 0.00, 0.00, 0.00],     # overlaps nothing: claims nothing
    ])
    plain = Matcher(0.7, 0.3)(quality)
    np.testing.assert_array_equal(plain, [-1, -2, -2, 1])
    rescued = Matcher(0.7, 0.3, allow_low_quality_matches=True)(quality)
    np.testing.assert_array_equal(rescued, [-1, 0, 0, 1])


def test_low_quality_match_keeps_the_anchors_own_best_ground_truth():
    # gt 0's best anchor is anchor 0 (0.3), but anchor 0 overlaps gt 1 more (0.35):
    # torchvision restores the anchor's own best match, gt 1.
    quality = np.array([[0.30, 0.1], [0.35, 0.9]])
    np.testing.assert_array_equal(Matcher(0.7, 0.4, True)(quality), [1, 1])


def test_empty_inputs():
    assert Matcher(0.5, 0.4)(np.zeros((0, 5))).tolist() == [-1] * 5
    out = Matcher(0.5, 0.4, True)(np.zeros((3, 0)))
    assert out.shape == (0,) and out.dtype == np.int64
    assert Matcher(0.5, 0.4)(np.zeros((0, 0))).shape == (0,)


@pytest.mark.parametrize("allow", [False, True])
@given(st.integers(0, 6), st.integers(0, 12), st.integers(0, 2**31 - 1), st.booleans())
def test_matches_loop_reference(allow, num_gt, num_anchors, seed, coarse):
    rng = np.random.default_rng(seed)
    quality = rng.random((num_gt, num_anchors))
    if coarse:                     # many exact ties and values exactly at the thresholds
        quality = np.round(quality * 10) / 10
    matcher = Matcher(0.7, 0.3, allow_low_quality_matches=allow)
    np.testing.assert_array_equal(matcher(quality), match_loop(quality, 0.7, 0.3, allow))


def test_on_real_boxes():
    gt = np.array([[0, 0, 10, 10], [20, 20, 30, 30]], np.float32)
    anchors = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [21, 20, 31, 30], [50, 50, 60, 60],
                        [5, 0, 15, 10]], np.float32)
    # IoUs with their best ground truth: 1.0, 0.68, 0.82, 0.0, 0.33
    matches = Matcher(0.7, 0.3)(box_iou(gt, anchors))
    np.testing.assert_array_equal(matches, [0, -2, 1, -1, -2])


def test_errors():
    with pytest.raises(ValueError, match="low_threshold"):
        Matcher(0.3, 0.7)
    with pytest.raises(ValueError, match="finite"):
        Matcher(np.nan, 0.3)
    with pytest.raises(TypeError, match="high_threshold"):
        Matcher("0.7", 0.3)
    matcher = Matcher(0.7, 0.3)
    with pytest.raises(ValueError, match="M gt, N anchors"):
        matcher(np.zeros(4))
    with pytest.raises(ValueError, match="non-finite"):
        matcher(np.array([[np.nan, 0.5]]))
