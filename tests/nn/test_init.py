"""Tests of nn.init: fan convention, bounds, statistics, dtype, seeding, bad input."""
import math

import numpy as np
import pytest

import nn
from nn import init
from nn.modules.module import Parameter


@pytest.mark.parametrize(
    "shape, expected",
    [
        ((5, 7), (5, 7)),                  # Linear (in, out)
        ((3, 3, 4, 8), (36, 72)),          # conv HWIO
        ((1, 1, 16, 32), (16, 32)),        # 1x1 conv
        ((2, 0, 3), (0, 6)),               # empty receptive field
    ],
)
def test_fan_in_fan_out_channels_last(shape, expected):
    assert init._calculate_fan_in_and_fan_out(shape) == expected


def test_fan_needs_two_dims():
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        init._calculate_fan_in_and_fan_out((5,))


def test_calculate_gain_table():
    assert init.calculate_gain("linear") == 1.0
    assert init.calculate_gain("relu") == pytest.approx(math.sqrt(2))
    assert init.calculate_gain("tanh") == pytest.approx(5 / 3)
    assert init.calculate_gain("leaky_relu", math.sqrt(5)) == pytest.approx(math.sqrt(1 / 3))
    with pytest.raises(ValueError, match="nonlinearity"):
        init.calculate_gain("swish")


def test_kaiming_uniform_sqrt5_bound_is_pytorch_default():
    w = Parameter(np.zeros((50, 40), dtype=np.float32))
    init.kaiming_uniform_(w, a=math.sqrt(5))
    bound = 1 / math.sqrt(50)
    assert w.dtype == np.float32
    assert np.abs(w.data).max() <= bound
    assert np.abs(w.data).max() > 0.9 * bound


@pytest.mark.parametrize("fn, expected_std", [
    (lambda t: init.kaiming_normal_(t, mode="fan_in", nonlinearity="relu"), math.sqrt(2 / 288)),
    (lambda t: init.kaiming_normal_(t, mode="fan_out", nonlinearity="relu"), math.sqrt(2 / 576)),
    (lambda t: init.kaiming_uniform_(t, nonlinearity="relu"), math.sqrt(2 / 288)),
    (lambda t: init.xavier_normal_(t), math.sqrt(2 / (288 + 576))),
    (lambda t: init.xavier_uniform_(t), math.sqrt(2 / (288 + 576))),
    (lambda t: init.normal_(t, 0.0, 0.3), 0.3),
    (lambda t: init.trunc_normal_(t, 0.0, 1.0, -2.0, 2.0), 0.8796),
])
def test_initializer_std(fn, expected_std):
    t = nn.Tensor(np.zeros((3, 3, 32, 64), dtype=np.float32))  # fan_in 288, fan_out 576
    out = fn(t)
    assert out is t
    assert t.dtype == np.float32
    assert abs(t.data.std() / expected_std - 1) < 0.05
    assert abs(t.data.mean()) < 0.05 * expected_std * 10


def test_uniform_constant_zeros_ones_keep_dtype_and_identity():
    t = nn.Tensor(np.empty((4, 5), dtype=np.float64))
    view = t.data
    init.uniform_(t, -0.5, 0.25)
    assert t.data is view  # in place
    assert t.dtype == np.float64
    assert t.data.min() >= -0.5 and t.data.max() <= 0.25
    init.constant_(t, 3.0)
    assert np.all(t.data == 3.0)
    init.zeros_(t)
    assert np.all(t.data == 0)
    init.ones_(t)
    assert np.all(t.data == 1)


def test_trunc_normal_within_bounds():
    t = nn.Tensor(np.zeros((1000,), dtype=np.float32))
    init.trunc_normal_(t, 0.0, 1.0, -0.5, 0.5)
    assert t.data.min() >= -0.5 and t.data.max() <= 0.5


def test_seeded_and_explicit_generator_reproducible():
    a = nn.Tensor(np.zeros((6, 6), dtype=np.float32))
    b = nn.Tensor(np.zeros((6, 6), dtype=np.float32))
    nn.manual_seed(7)
    init.kaiming_uniform_(a)
    nn.manual_seed(7)
    init.kaiming_uniform_(b)
    assert np.array_equal(a.data, b.data)
    init.xavier_normal_(a, generator=np.random.default_rng(3))
    init.xavier_normal_(b, generator=np.random.default_rng(3))
    assert np.array_equal(a.data, b.data)
    init.xavier_normal_(b, generator=np.random.default_rng(4))
    assert not np.array_equal(a.data, b.data)


def test_bad_inputs():
    with pytest.raises(TypeError, match="tensor"):
        init.zeros_([1.0, 2.0])
    with pytest.raises(TypeError, match="floating"):
        init.zeros_(nn.Tensor(np.zeros(3, dtype=np.int64)))
    t = nn.Tensor(np.zeros((2, 2), dtype=np.float32))
    with pytest.raises(ValueError, match="a <= b"):
        init.uniform_(t, 1.0, 0.0)
    with pytest.raises(ValueError, match="std"):
        init.normal_(t, 0.0, -1.0)
    with pytest.raises(ValueError, match="mode"):
        init.kaiming_uniform_(t, mode="fan_avg")
    with pytest.raises(TypeError, match="generator"):
        init.normal_(t, generator="seed")
