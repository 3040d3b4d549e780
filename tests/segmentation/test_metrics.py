import numpy as np
import pytest
from hypothesis import given, strategies as st

from segmentation.metrics import (
    ConfusionMatrix, confusion_matrix, dice_per_class, iou_per_class, mean_iou, pixel_accuracy,
)


def brute_confusion(pred, target, k, ignore):
    m = np.zeros((k, k), np.int64)
    for p, t in zip(pred.ravel(), target.ravel()):
        if t == ignore:
            continue
        m[t, p] += 1
    return m


def brute_iou(pred, target, k, ignore):
    out = []
    for c in range(k):
        valid = target != ignore
        tp = np.sum((pred == c) & (target == c) & valid)
        fp = np.sum((pred == c) & (target != c) & valid)
        fn = np.sum((pred != c) & (target == c) & valid)
        out.append(np.nan if tp + fp + fn == 0 else tp / (tp + fp + fn))
    return np.array(out)


@given(seed=st.integers(0, 10_000), k=st.integers(1, 6), n=st.integers(0, 60))
def test_against_brute_force(seed, k, n):
    rng = np.random.default_rng(seed)
    pred = rng.integers(0, k, size=n)
    target = rng.integers(0, k, size=n)
    target[rng.random(n) < 0.2] = 255
    assert np.array_equal(confusion_matrix(pred, target, k), brute_confusion(pred, target, k, 255))
    np.testing.assert_allclose(iou_per_class(pred, target, k), brute_iou(pred, target, k, 255))
    expected = brute_iou(pred, target, k, 255)
    present = expected[~np.isnan(expected)]
    got = mean_iou(pred, target, k)
    if present.size:
        assert got == pytest.approx(present.mean())
    else:
        assert np.isnan(got)


def test_hand_computed():
    target = np.array([[0, 0, 1, 1], [2, 2, 255, 1]])
    pred = np.array([[0, 1, 1, 1], [2, 0, 2, 1]])
    m = confusion_matrix(pred, target, 4)
    assert m.tolist() == [[1, 1, 0, 0], [0, 3, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]]
    iou = iou_per_class(pred, target, 4)
    np.testing.assert_allclose(iou[:3], [1 / 3, 3 / 4, 1 / 2])
    assert np.isnan(iou[3])  # class 3 absent from both: left out of the mean
    assert mean_iou(pred, target, 4) == pytest.approx((1 / 3 + 3 / 4 + 1 / 2) / 3)
    assert mean_iou(pred, target, 4, classes=[1, 2]) == pytest.approx((3 / 4 + 1 / 2) / 2)
    np.testing.assert_allclose(dice_per_class(pred, target, 4)[:3], [2 / 4, 6 / 7, 2 / 3])
    assert pixel_accuracy(pred, target) == pytest.approx(5 / 7)
    assert ConfusionMatrix(4).update(pred, target).pixel_accuracy() == pytest.approx(5 / 7)


def test_accumulator_equals_one_shot():
    rng = np.random.default_rng(0)
    pred = rng.integers(0, 5, size=(4, 8, 8))
    target = rng.integers(0, 5, size=(4, 8, 8))
    cm = ConfusionMatrix(5)
    for i in range(4):
        cm.update(pred[i], target[i])
    assert np.array_equal(cm.matrix, confusion_matrix(pred, target, 5))
    assert cm.mean_iou() == pytest.approx(mean_iou(pred, target, 5))
    cm.reset()
    assert cm.matrix.sum() == 0


def test_empty_and_all_ignored():
    empty = np.zeros((0,), np.int64)
    assert confusion_matrix(empty, empty, 3).sum() == 0
    assert np.isnan(mean_iou(empty, empty, 3))
    assert np.isnan(pixel_accuracy(np.zeros(4, int), np.full(4, 255)))


def test_pixel_accuracy_needs_no_class_count():
    target = np.array([[0, 7, 255], [300, 7, 1]])
    pred = np.array([[0, 7, 255], [300, 2, 2]])
    assert pixel_accuracy(pred, target) == pytest.approx(3 / 5)  # the 255 pixel is left out
    assert pixel_accuracy(pred, target, ignore_index=None) == pytest.approx(4 / 6)
    assert pixel_accuracy(pred, target, ignore_index=7) == pytest.approx(3 / 4)
    with pytest.raises(TypeError):
        pixel_accuracy(pred, target, 4)  # a class count is not an argument (nor ignore_index)
    with pytest.raises(ValueError, match="shape"):
        pixel_accuracy(pred, target[:, :2])
    with pytest.raises(TypeError, match="integer"):
        pixel_accuracy(pred.astype(float), target)


@pytest.mark.parametrize(
    "pred, target, k, error",
    [
        (np.zeros(3, int), np.zeros(4, int), 2, "shape"),
        (np.zeros(3), np.zeros(3, int), 2, "integer"),
        (np.array([0, 5, 1]), np.zeros(3, int), 2, "pred"),
        (np.zeros(3, int), np.array([0, 7, 1]), 2, "target"),
        (np.zeros(3, int), np.zeros(3, int), 0, "num_classes"),
    ],
)
def test_bad_input(pred, target, k, error):
    with pytest.raises((ValueError, TypeError), match=error):
        confusion_matrix(pred, target, k)
