"""Tests of nn._checks: what each check accepts, returns and refuses, and its message."""
import numpy as np
import pytest

import nn
from nn._checks import (
    ArgumentTypeError, check_array, check_bool, check_choice, check_finite, check_float_dtype,
    check_in_range, check_int, check_ndim, check_non_negative, check_pair, check_positive,
    check_probability, check_real, check_same_dtype, check_same_shape, check_shape,
)


def test_argument_type_error_is_both_a_type_and_a_value_error():
    assert issubclass(ArgumentTypeError, TypeError) and issubclass(ArgumentTypeError, ValueError)


@pytest.mark.parametrize("value, minimum, expected", [
    (3, None, 3), (np.int64(4), 1, 4), (0, 0, 0), (7, 2, 7),
])
def test_check_int_returns_a_python_int(value, minimum, expected):
    got = check_int(value, "n", minimum)
    assert got == expected and type(got) is int


@pytest.mark.parametrize("value, minimum, error, message", [
    (1.0, None, ArgumentTypeError, "n must be an int, got 1.0"),
    (True, 1, ArgumentTypeError, "n must be a positive int, got True"),
    ("3", 0, ArgumentTypeError, "n must be a non-negative int, got '3'"),
    (0, 1, ValueError, "n must be a positive int, got 0"),
    (-1, 0, ValueError, "n must be a non-negative int, got -1"),
    (1, 2, ValueError, "n must be an int >= 2, got 1"),
])
def test_check_int_refuses(value, minimum, error, message):
    with pytest.raises(error) as info:
        check_int(value, "n", minimum)
    assert str(info.value) == message
    if error is ValueError:
        assert not isinstance(info.value, TypeError)


def test_real_number_checks():
    assert check_finite(np.float32(1.5), "x") == 1.5 and type(check_finite(2, "x")) is float
    assert check_real(float("inf"), "x") == float("inf")
    assert check_positive(0.5, "eps") == 0.5
    assert check_non_negative(0, "beta") == 0.0
    assert check_positive(float("inf"), "norm_type", finite=False) == float("inf")
    assert check_non_negative(float("inf"), "max_norm", finite=False) == float("inf")
    assert check_probability(1, "p") == 1.0
    assert check_in_range(0.999, "beta", 0, 1, high_open=True) == 0.999
    cases = [
        (lambda: check_finite(float("nan"), "x"), ValueError, "x must be a finite number, got nan"),
        (lambda: check_finite(True, "x"), ArgumentTypeError, "x must be a finite number"),
        (lambda: check_real(float("nan"), "slope"), ValueError, "slope must be a real number"),
        (lambda: check_real("1", "slope"), ArgumentTypeError, "slope must be a real number"),
        (lambda: check_positive(0.0, "eps"), ValueError, "eps must be a finite number > 0, got 0.0"),
        (lambda: check_positive(float("inf"), "eps"), ValueError, "eps must be a finite number > 0"),
        (lambda: check_non_negative(-1, "beta"), ValueError, "beta must be a finite number >= 0"),
        (lambda: check_non_negative(float("nan"), "m", finite=False), ValueError, "m must be a number"),
        (lambda: check_probability(1.5, "p"), ValueError, r"p must be in \[0, 1\], got 1.5"),
        (lambda: check_in_range(1.0, "beta", 0, 1, high_open=True), ValueError,
         r"beta must be in \[0, 1\), got 1.0"),
        (lambda: check_in_range(-1, "lr", 0), ValueError, r"lr must be in \[0, inf\), got -1.0"),
        (lambda: check_in_range(3, "alpha", None, 1), ValueError, r"alpha must be in \[-inf, 1\]"),
    ]
    for call, error, message in cases:
        with pytest.raises(error, match=message):
            call()


def test_check_bool_and_choice():
    assert check_bool(np.bool_(True), "aligned") is True
    with pytest.raises(TypeError, match="aligned must be a bool, got 1"):
        check_bool(1, "aligned")
    assert check_choice(None, "norm", ("batch", "group", None)) is None
    assert check_choice("group", "norm", ("batch", "group", None)) == "group"
    with pytest.raises(ValueError, match="norm must be 'batch', 'group' or None, got 'layer'"):
        check_choice("layer", "norm", ("batch", "group", None))
    with pytest.raises(ValueError, match="mode must be 'fast', got 0"):
        check_choice(0, "mode", ("fast",))


def test_check_pair():
    assert check_pair(3, "stride") == (3, 3)
    assert check_pair([2, np.int32(1)], "stride", 1) == (2, 1)
    for bad in (True, 2.0, (1, 2, 3), (1, 2.0), "2"):
        with pytest.raises(ArgumentTypeError, match="stride must be an int or a pair of ints"):
            check_pair(bad, "stride", 1)
    with pytest.raises(ValueError, match=r"padding must be >= 0, got \(1, -1\)"):
        check_pair((1, -1), "padding", 0)


def test_check_float_dtype():
    assert check_float_dtype(np.float32) == np.dtype(np.float32)
    with pytest.raises(TypeError, match="dtype must be a floating-point dtype, got int64"):
        check_float_dtype(np.int64)


def test_array_checks():
    x = np.zeros((2, 3), np.float32)
    assert check_array(x, "x") is x
    assert check_array(nn.Tensor(x), "x", "float") is not None
    assert check_array(np.zeros(2, np.int8), "t", "integer").dtype == np.int8
    assert check_array(np.zeros(2, np.int8), "t", "real").dtype == np.int8
    with pytest.raises(TypeError, match="x must be a Tensor or ndarray, got list"):
        check_array([1.0], "x")
    with pytest.raises(TypeError, match="x must be an ndarray, got Tensor"):
        check_array(nn.Tensor(x), "x", tensor=False)
    with pytest.raises(TypeError, match="x must have a floating-point dtype, got int64"):
        check_array(np.zeros(2, np.int64), "x", "float")
    with pytest.raises(TypeError, match="t must have an integer dtype, got float32"):
        check_array(x, "t", "integer")
    with pytest.raises(TypeError, match="real"):
        check_array(np.zeros(2, bool), "t", "real")


def test_shape_checks():
    assert check_shape(np.zeros((3, 3)), "confusion", ("K", "K")) == {"K": 3}
    assert check_shape(np.zeros((5, 4)), "boxes", ("N", 4)) == {"N": 5}
    with pytest.raises(ValueError, match=r"confusion must have shape \(K, K\), got \(3, 2\)"):
        check_shape(np.zeros((3, 2)), "confusion", ("K", "K"))
    with pytest.raises(ValueError, match=r"bias must have shape \(4,\), got \(3,\)"):
        check_shape(np.zeros(3), "bias", (4,))
    with pytest.raises(ValueError, match=r"boxes must have shape \(N, 4\), got \(4,\)"):
        check_shape(np.zeros(4), "boxes", ("N", 4))
    check_ndim(np.zeros((1, 2, 2, 1)), "x", 4)
    with pytest.raises(ValueError, match=r"x must be 4-D \(N, H, W, C\), got shape \(2, 2\)"):
        check_ndim(np.zeros((2, 2)), "x", 4, "N, H, W, C")
    check_same_shape(np.zeros(2), "target", np.ones(2), "input")
    with pytest.raises(ValueError, match=r"target must have the shape of input \(2,\), got \(3,\)"):
        check_same_shape(np.zeros(3), "target", np.ones(2), "input")
    check_same_dtype(np.zeros(2), "weight", np.ones(2), "x")
    with pytest.raises(TypeError, match="weight dtype float32 does not match x dtype float64"):
        check_same_dtype(np.zeros(2, np.float32), "weight", np.ones(2), "x")
