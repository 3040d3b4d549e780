"""Weight initialization, with PyTorch's names and formulas, for channels-last weights.

Every initializer fills a Tensor (or Parameter) **in place** (its ``.data`` array is
overwritten, its dtype kept: float32 parameters stay float32) and returns it. Random
values come from ``generator`` (a ``np.random.Generator``) or, when it is None, from
the default generator that ``nn.manual_seed`` seeds.

Fan convention (channels-last)
------------------------------
The **last axis is the fan-out axis**, the **second-to-last axis is the fan-in axis**
and the leading axes form the receptive field::

    fan_in  = shape[-2] * prod(shape[:-2])
    fan_out = shape[-1] * prod(shape[:-2])

so a Linear weight ``(in_features, out_features)`` has ``fan_in = in_features`` and a
conv weight in HWIO layout ``(kh, kw, C_in // groups, C_out)`` has
``fan_in = kh·kw·C_in/groups`` and ``fan_out = kh·kw·C_out`` — the same numbers
PyTorch computes from its ``(C_out, C_in // groups, kh, kw)`` layout. (A transposed
conv weight ``(kh, kw, C_in, C_out // groups)`` gets ``fan_in = kh·kw·C_in``; PyTorch
reads its ``(C_in, C_out // groups, kh, kw)`` weight as ``fan_in = kh·kw·C_out/groups``,
so a ConvTranspose2d that wants PyTorch's exact bounds computes them itself.)

Formulas
--------
- Xavier/Glorot (Glorot & Bengio, 2010, "Understanding the difficulty of training deep
  feedforward neural networks"): ``std = gain · sqrt(2 / (fan_in + fan_out))``;
  uniform bound ``sqrt(3) · std``.
- Kaiming/He (He et al., 2015, "Delving Deep into Rectifiers"):
  ``std = gain / sqrt(fan)`` with ``fan`` = fan_in (default) or fan_out;
  uniform bound ``sqrt(3) · std``. ``gain = calculate_gain(nonlinearity, a)``.
"""
import math
import numbers

import numpy as np

from nn.random import get_generator
from nn.tensor import Tensor

__all__ = [
    "calculate_gain", "uniform_", "normal_", "constant_", "zeros_", "ones_",
    "xavier_uniform_", "xavier_normal_", "kaiming_uniform_", "kaiming_normal_",
    "trunc_normal_",
]


def _array_of(tensor, name="tensor"):
    """The ndarray an initializer writes into (a Tensor's ``.data`` or an ndarray)."""
    if isinstance(tensor, Tensor):
        array = tensor.data
    elif isinstance(tensor, np.ndarray):
        array = tensor
    else:
        raise TypeError(f"{name} must be a Tensor, Parameter or ndarray, got {type(tensor).__name__}")
    if not np.issubdtype(array.dtype, np.floating):
        raise TypeError(f"{name} must have a floating-point dtype, got {array.dtype}")
    return array


def _fill(tensor, values):
    """Write ``values`` into ``tensor`` in place, keeping its dtype; return ``tensor``."""
    array = _array_of(tensor)
    array[...] = values.astype(array.dtype, copy=False)
    return tensor


def _check_number(value, name):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite real number, got {value!r}")
    return float(value)


def _calculate_fan_in_and_fan_out(shape):
    """Fan-in and fan-out of a channels-last weight shape (see the module docstring).

    Args:
        shape (tuple of int, or Tensor/ndarray): at least 2 dimensions.
    Returns:
        tuple(int, int): ``(fan_in, fan_out)``.
    """
    if isinstance(shape, (Tensor, np.ndarray)):
        shape = shape.shape
    shape = tuple(int(s) for s in shape)
    if len(shape) < 2:
        raise ValueError(
            f"fan in and fan out need a weight with at least 2 dimensions "
            f"(..., fan_in, fan_out), got shape {shape}"
        )
    receptive_field = int(np.prod(shape[:-2], dtype=np.int64)) if len(shape) > 2 else 1
    return shape[-2] * receptive_field, shape[-1] * receptive_field


def calculate_gain(nonlinearity, param=None):
    """Recommended gain for a nonlinearity (PyTorch's table).

    Args:
        nonlinearity (str): "linear", "conv2d", "conv_transpose2d", "sigmoid", "tanh",
            "relu", "leaky_relu" or "selu".
        param (float, optional): negative slope for "leaky_relu" (default 0.01).
    Returns:
        float: 1 for linear/conv/sigmoid, 5/3 for tanh, sqrt(2) for relu,
        sqrt(2 / (1 + slope²)) for leaky_relu, 3/4 for selu.
    """
    linear_fns = ("linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d",
                  "conv_transpose2d", "conv_transpose3d", "sigmoid")
    if nonlinearity in linear_fns:
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3.0
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        slope = 0.01 if param is None else _check_number(param, "param (negative slope)")
        return math.sqrt(2.0 / (1.0 + slope ** 2))
    if nonlinearity == "selu":
        return 3.0 / 4.0
    raise ValueError(f"unsupported nonlinearity {nonlinearity!r}")


def uniform_(tensor, a=0.0, b=1.0, generator=None):
    """Fill with values drawn from U(a, b)."""
    array = _array_of(tensor)
    a, b = _check_number(a, "a"), _check_number(b, "b")
    if a > b:
        raise ValueError(f"uniform_ needs a <= b, got a={a}, b={b}")
    rng = get_generator(generator)
    return _fill(tensor, rng.uniform(a, b, size=array.shape))


def normal_(tensor, mean=0.0, std=1.0, generator=None):
    """Fill with values drawn from N(mean, std²)."""
    array = _array_of(tensor)
    mean, std = _check_number(mean, "mean"), _check_number(std, "std")
    if std < 0:
        raise ValueError(f"std must be non-negative, got {std}")
    rng = get_generator(generator)
    return _fill(tensor, rng.normal(mean, std, size=array.shape))


def trunc_normal_(tensor, mean=0.0, std=1.0, a=-2.0, b=2.0, generator=None):
    """Fill with N(mean, std²) values redrawn until they fall in [a, b] (rejection sampling)."""
    array = _array_of(tensor)
    mean, std = _check_number(mean, "mean"), _check_number(std, "std")
    a, b = _check_number(a, "a"), _check_number(b, "b")
    if a >= b:
        raise ValueError(f"trunc_normal_ needs a < b, got a={a}, b={b}")
    rng = get_generator(generator)
    values = rng.normal(mean, std, size=array.shape)
    bad = (values < a) | (values > b)
    # Each round redraws only the rejected values; vectorized over all of them.
    while np.any(bad):
        values[bad] = rng.normal(mean, std, size=int(bad.sum()))
        bad = (values < a) | (values > b)
    return _fill(tensor, values)


def constant_(tensor, val):
    """Fill with the constant ``val``."""
    array = _array_of(tensor)
    val = _check_number(val, "val")
    array[...] = val
    return tensor


def zeros_(tensor):
    """Fill with zeros."""
    return constant_(tensor, 0.0)


def ones_(tensor):
    """Fill with ones."""
    return constant_(tensor, 1.0)


def xavier_uniform_(tensor, gain=1.0, generator=None):
    """Glorot uniform: U(-bound, bound), ``bound = gain · sqrt(6 / (fan_in + fan_out))``."""
    array = _array_of(tensor)
    gain = _check_number(gain, "gain")
    fan_in, fan_out = _calculate_fan_in_and_fan_out(array.shape)
    std = gain * math.sqrt(2.0 / float(fan_in + fan_out)) if fan_in + fan_out else 0.0
    bound = math.sqrt(3.0) * std
    return uniform_(tensor, -bound, bound, generator=generator)


def xavier_normal_(tensor, gain=1.0, generator=None):
    """Glorot normal: N(0, std²), ``std = gain · sqrt(2 / (fan_in + fan_out))``."""
    array = _array_of(tensor)
    gain = _check_number(gain, "gain")
    fan_in, fan_out = _calculate_fan_in_and_fan_out(array.shape)
    std = gain * math.sqrt(2.0 / float(fan_in + fan_out)) if fan_in + fan_out else 0.0
    return normal_(tensor, 0.0, std, generator=generator)


def _kaiming_std(shape, a, mode, nonlinearity):
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"mode must be 'fan_in' or 'fan_out', got {mode!r}")
    fan_in, fan_out = _calculate_fan_in_and_fan_out(shape)
    fan = fan_in if mode == "fan_in" else fan_out
    if fan == 0:
        return 0.0  # an empty weight: nothing to fill
    gain = calculate_gain(nonlinearity, a)
    return gain / math.sqrt(fan)


def kaiming_uniform_(tensor, a=0.0, mode="fan_in", nonlinearity="leaky_relu", generator=None):
    """He uniform: U(-bound, bound), ``bound = sqrt(3) · gain / sqrt(fan)``.

    Args:
        tensor (Tensor[..., fan_in, fan_out]): filled in place.
        a (float): negative slope of the leaky ReLU that follows (``a = sqrt(5)``
            gives PyTorch's default Linear/Conv bound ``1 / sqrt(fan_in)``).
        mode (str): "fan_in" keeps the forward variance, "fan_out" the backward one.
        nonlinearity (str): "relu" or "leaky_relu" (see ``calculate_gain``).
        generator (np.random.Generator, optional): defaults to nn.random's generator.
    """
    array = _array_of(tensor)
    std = _kaiming_std(array.shape, a, mode, nonlinearity)
    bound = math.sqrt(3.0) * std
    return uniform_(tensor, -bound, bound, generator=generator)


def kaiming_normal_(tensor, a=0.0, mode="fan_in", nonlinearity="leaky_relu", generator=None):
    """He normal: N(0, std²), ``std = gain / sqrt(fan)`` (arguments as ``kaiming_uniform_``)."""
    array = _array_of(tensor)
    std = _kaiming_std(array.shape, a, mode, nonlinearity)
    return normal_(tensor, 0.0, std, generator=generator)
