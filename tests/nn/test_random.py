import numpy as np
import pytest

import nn
from nn.random import default_generator, get_generator


def test_get_generator_none_is_the_default_generator_of_manual_seed():
    seeded = nn.manual_seed(21)
    assert get_generator() is seeded and get_generator(None) is default_generator()
    first = get_generator().random(3)
    nn.manual_seed(21)
    np.testing.assert_array_equal(get_generator(generator=None).random(3), first)


def test_get_generator_returns_a_generator_as_it_is_and_seeds_an_int():
    rng = np.random.default_rng(4)
    assert get_generator(rng) is rng
    np.testing.assert_array_equal(get_generator(generator=7).random(4),
                                  np.random.default_rng(7).random(4))
    np.testing.assert_array_equal(get_generator(np.int64(7)).random(4),
                                  np.random.default_rng(7).random(4))


@pytest.mark.parametrize("bad, error", [("seed", TypeError), (True, TypeError), (1.5, TypeError),
                                        (np.random.RandomState(0), TypeError), (-1, ValueError)])
def test_get_generator_rejects_what_is_not_a_generator_or_a_seed(bad, error):
    with pytest.raises(error, match="generator"):
        get_generator(bad)


def test_manual_seed_rejects_negative_and_non_int_seeds():
    for bad in (-1, 1.0, True, "0"):
        with pytest.raises(ValueError, match="seed"):
            nn.manual_seed(bad)
