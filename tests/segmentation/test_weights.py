"""Weight maps for touching objects: separation of instances, gap weights, size weights."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from segmentation.weights import (IGNORE_INDEX, hard_pixel_weights, separate_instances,
                                  separation_weights, size_weights)


# ------------------------------------------------------------------ separate_instances
def _separate_loop(instances):
    h, w = instances.shape
    out = instances.copy()
    for y in range(h):
        for x in range(w):
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    v, u = y + dy, x + dx
                    if 0 <= v < h and 0 <= u < w and instances[v, u] not in (0, instances[y, x]):
                        out[y, x] = 0
    return out


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 9), st.integers(1, 9), st.integers(1, 4))
def test_separate_instances_equals_loop_and_leaves_no_contact(seed, h, w, count):
    rng = np.random.default_rng(seed)
    instances = rng.integers(0, count + 1, size=(h, w))
    out = separate_instances(instances)
    np.testing.assert_array_equal(out, _separate_loop(instances))
    # no two different instances are 8-adjacent any more
    for i in range(1, count + 1):
        grown = ndimage.binary_dilation(out == i, structure=np.ones((3, 3), bool))
        assert not (grown & (out != 0) & (out != i)).any()


def test_separate_instances_batch_and_single_instance():
    one = np.zeros((2, 4, 4), np.int64)
    one[0, 1:3, 1:3] = 5
    np.testing.assert_array_equal(separate_instances(one), one)  # nothing touches
    two = one.copy()
    two[1, :, :2], two[1, :, 2:] = 1, 2
    out = separate_instances(two)
    np.testing.assert_array_equal(out[0], one[0])  # crops are independent
    assert (out[1, :, 1:3] == 0).all() and (out[1, :, 0] == 1).all() and (out[1, :, 3] == 2).all()
    with pytest.raises(ValueError, match="instances"):
        separate_instances(np.zeros(3, np.int64))


# ------------------------------------------------------------------ separation_weights
def _weights_loop(labels, weight):
    out = np.ones(labels.shape, np.float32)
    for n in range(labels.shape[0]):
        blobs, _ = ndimage.label((labels[n] != 0) & (labels[n] != IGNORE_INDEX),
                                 structure=np.ones((3, 3), bool))
        h, w = blobs.shape
        for y in range(h):
            for x in range(w):
                if labels[n, y, x] != 0:
                    continue
                seen = {blobs[v, u] for v in range(max(y - 1, 0), min(y + 2, h))
                        for u in range(max(x - 1, 0), min(x + 2, w))} - {0}
                if len(seen) >= 2:
                    out[n, y, x] = weight
    return out


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from([0.0, 1.0, 10.0]))
def test_separation_weights_equal_loop(seed, weight):
    rng = np.random.default_rng(seed)
    labels = np.zeros((3, 7, 11), np.int64)
    for n in range(3):
        for _ in range(rng.integers(0, 5)):
            y, x = rng.integers(0, 6), rng.integers(0, 10)
            labels[n, y:y + rng.integers(1, 4), x:x + rng.integers(1, 4)] = rng.choice([3, 5, 13])
    labels[rng.random(labels.shape) < 0.05] = IGNORE_INDEX
    np.testing.assert_array_equal(separation_weights(labels, weight), _weights_loop(labels, weight))


def test_separation_weights_mark_only_gaps_between_two_characters():
    labels = np.zeros((1, 3, 9), np.int64)
    labels[0, :, 0:3] = 3
    labels[0, :, 4:6] = 3  # same class, another character: the gap at column 3 counts
    weights = separation_weights(labels, 10.0)
    assert (weights[0, :, 3] == 10).all()
    assert (weights[0, :, [0, 1, 2, 4, 5, 6, 7, 8]] == 1).all()  # column 6 touches one only
    with pytest.raises(ValueError, match="labels"):
        separation_weights(np.zeros((3, 3), np.int64))
    with pytest.raises(ValueError, match="weight"):
        separation_weights(labels, -1.0)


# ------------------------------------------------------------------------ size_weights
def test_size_weights_lift_small_characters_to_the_median():
    labels = np.zeros((2, 6, 12), np.int64)
    labels[0, 0:4, 0:3] = 3  # 12 px
    labels[0, 0:4, 5:8] = 7  # 12 px
    labels[1, 5, 0] = 13  # a 1-px dot
    labels[1, 0:2, 10:12] = 13  # a 4-px dash
    labels[1, 0:4, 4:7] = 255  # ignored pixels are no character
    weights = size_weights(labels, max_weight=5.0)
    # areas 12, 12, 1, 4: median 8 -> weights 1 (clipped), 1, 5 (clipped from 8), 2
    expected = np.ones(labels.shape, np.float32)
    expected[1, 5, 0] = 5
    expected[1, 0:2, 10:12] = 2
    np.testing.assert_array_equal(weights, expected)
    np.testing.assert_array_equal(size_weights(labels, max_weight=1.0), np.ones(labels.shape))
    np.testing.assert_array_equal(size_weights(np.zeros((1, 2, 2), np.int64)), np.ones((1, 2, 2)))
    with pytest.raises(ValueError, match="max_weight"):
        size_weights(labels, max_weight=0.5)
    with pytest.raises(ValueError, match="labels"):
        size_weights(labels[0])


def test_hard_pixel_weights_grow_with_the_error_and_skip_ignored_pixels():
    """``1 + s (1 - p)^2`` with ``p`` the softmax probability of the true class."""
    logits = np.zeros((1, 1, 4, 3), np.float32)
    logits[0, 0, 0] = [20, 0, 0]                  # class 0 certain
    logits[0, 0, 1] = [np.log(2), 0, 0]           # p(0) = 2/4 = 0.5
    logits[0, 0, 2] = [0, 20, 0]                  # class 1 certain, the truth 0
    masks = np.array([[[0, 0, 0, 255]]])
    weights = hard_pixel_weights(logits, masks, 8.0, ignore_index=255)
    assert weights.dtype == np.float32 and weights.shape == (1, 1, 4)
    np.testing.assert_allclose(weights[0, 0], [1, 1 + 8 * 0.25, 9, 1], atol=1e-5)
    np.testing.assert_array_equal(hard_pixel_weights(logits, masks, 0.0), np.ones((1, 1, 4)))


@pytest.mark.parametrize("logits, labels, strength, message", [
    (np.zeros((2, 3, 4)), np.zeros((2, 3), int), 1.0, "logits"),
    (np.zeros((1, 2, 3, 4)), np.zeros((1, 2, 2), int), 1.0, "labels"),
    (np.zeros((1, 2, 3, 4)), np.zeros((1, 2, 3)), 1.0, "labels"),
    (np.zeros((1, 2, 3, 4)), np.full((1, 2, 3), 4), 1.0, "labels must be in"),
    (np.zeros((1, 2, 3, 4)), np.zeros((1, 2, 3), int), -1.0, "strength"),
    (np.zeros((1, 2, 3, 4)), np.zeros((1, 2, 3), int), float("nan"), "strength"),
    (np.zeros((1, 2, 3, 4)), np.zeros((1, 2, 3), int), True, "strength"),
])
def test_hard_pixel_weights_bad_input_is_named(logits, labels, strength, message):
    with pytest.raises(ValueError, match=message):
        hard_pixel_weights(logits, labels, strength)
