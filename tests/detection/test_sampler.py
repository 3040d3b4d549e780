"""Tests of detection.sampler.BalancedPositiveNegativeSampler."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

import nn
from detection.sampler import BalancedPositiveNegativeSampler


@given(st.lists(st.integers(0, 60), min_size=1, max_size=4), st.integers(0, 64),
       st.sampled_from([0.0, 0.25, 0.5, 1.0]), st.integers(0, 2**31 - 1))
def test_counts_and_membership(sizes, batch_size, fraction, seed):
    rng = np.random.default_rng(seed)
    # -2, -1 ignored, 0 negative, 1 and 2 positive
    images = [rng.integers(-2, 3, size=n) for n in sizes]
    sampler = BalancedPositiveNegativeSampler(batch_size, fraction, generator=seed)
    positives, negatives = sampler(images)
    assert len(positives) == len(negatives) == len(images)
    for labels, pos, neg in zip(images, positives, negatives):
        assert pos.dtype == bool and neg.dtype == bool and pos.shape == neg.shape == labels.shape
        assert np.all(labels[pos] >= 1)
        assert np.all(labels[neg] == 0)
        expected_pos = min(int((labels >= 1).sum()), int(batch_size * fraction))
        expected_neg = min(int((labels == 0).sum()), batch_size - expected_pos)
        assert pos.sum() == expected_pos
        assert neg.sum() == expected_neg


def test_hand_case_fills_with_negatives_when_positives_are_few():
    labels = np.array([1, 0, 0, 0, 0, 0, -1, 2, 0, 0])
    positives, negatives = BalancedPositiveNegativeSampler(6, 0.5, generator=0)([labels])
    assert positives[0].sum() == 2 and negatives[0].sum() == 4
    np.testing.assert_array_equal(np.flatnonzero(positives[0]), [0, 7])


def test_reproducible_and_seeded_by_nn_manual_seed():
    labels = [np.r_[np.ones(50, int), np.zeros(200, int)]]
    first = BalancedPositiveNegativeSampler(32, 0.25, generator=7)(labels)
    second = BalancedPositiveNegativeSampler(32, 0.25, generator=7)(labels)
    other = BalancedPositiveNegativeSampler(32, 0.25, generator=8)(labels)
    assert np.array_equal(first[0][0], second[0][0]) and np.array_equal(first[1][0], second[1][0])
    assert not np.array_equal(first[1][0], other[1][0])
    nn.manual_seed(3)
    a = BalancedPositiveNegativeSampler(32, 0.25)(labels)
    nn.manual_seed(3)
    b = BalancedPositiveNegativeSampler(32, 0.25)(labels)
    assert np.array_equal(a[1][0], b[1][0])


def test_sampling_is_uniform():
    labels = np.r_[np.ones(10, int), np.zeros(20, int)]
    sampler = BalancedPositiveNegativeSampler(10, 0.3, generator=np.random.default_rng(0))
    counts_pos, counts_neg = np.zeros(30), np.zeros(30)
    draws = 2000
    for _ in range(draws):
        (pos,), (neg,) = sampler([labels])
        counts_pos += pos
        counts_neg += neg
    # each positive is picked with probability 3/10, each negative with 7/20
    np.testing.assert_allclose(counts_pos[:10] / draws, 0.3, atol=0.05)
    np.testing.assert_allclose(counts_neg[10:] / draws, 0.35, atol=0.05)
    assert counts_pos[10:].sum() == 0 and counts_neg[:10].sum() == 0


def test_images_are_independent_and_empty_images_work():
    images = [np.array([1, 1, 0, 0], int), np.zeros(0, int), np.array([0, 0, 0], int)]
    positives, negatives = BalancedPositiveNegativeSampler(2, 0.5, generator=0)(images)
    assert [p.sum() for p in positives] == [1, 0, 0]
    assert [n.sum() for n in negatives] == [1, 0, 2]
    assert positives[1].shape == (0,)
    pos, neg = BalancedPositiveNegativeSampler(4, 0.5)([])
    assert pos == [] and neg == []
    (single_pos,), (single_neg,) = BalancedPositiveNegativeSampler(4, 0.5)(np.array([1, 0, 0]))
    assert single_pos.sum() == 1 and single_neg.sum() == 2


def test_errors():
    with pytest.raises(ValueError, match="batch_size_per_image"):
        BalancedPositiveNegativeSampler(-1, 0.5)
    with pytest.raises(ValueError, match="positive_fraction"):
        BalancedPositiveNegativeSampler(8, 1.5)
    with pytest.raises(TypeError, match="generator|rng"):
        BalancedPositiveNegativeSampler(8, 0.5, generator="seed")
    with pytest.raises(ValueError, match=r"matched_idxs\[0\]"):
        BalancedPositiveNegativeSampler(8, 0.5)([np.zeros((2, 2), int)])
    with pytest.raises(ValueError, match=r"matched_idxs\[1\]"):
        BalancedPositiveNegativeSampler(8, 0.5)([np.zeros(2, int), np.zeros(2)])
