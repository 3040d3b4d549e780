"""Argument checks shared by the library: one place for "x must be ..., got ...".

Every public function checks its arguments before doing any work and raises an
error that names the argument and says what was expected. The helpers below
return the checked value (converted: ``int``, ``float``, a pair, the ndarray
behind a Tensor), so a call site reads ``groups = check_int(groups, "groups", 1)``.

Errors:

- a value of the wrong kind (a float where an int is needed, a list where an
  array is needed) raises ``ArgumentTypeError``, a ``TypeError`` that is also a
  ``ValueError`` (as NumPy's ``AxisError`` is both an ``IndexError`` and a
  ``ValueError``): an invalid hyperparameter is a ``ValueError`` whatever its type;
- a value of the right kind outside its range raises ``ValueError``;
- an array of the wrong dtype raises ``TypeError``, of the wrong shape ``ValueError``.

``bool`` is never accepted as a number (``True`` is an ``int`` in Python, but
``groups=True`` is a mistake).
"""
import numbers

import numpy as np

from nn.tensor import Tensor

__all__ = [
    "ArgumentTypeError", "is_int", "is_real",
    "check_int", "check_real", "check_finite", "check_positive", "check_non_negative", "check_in_range",
    "check_probability", "check_bool", "check_choice", "check_pair", "check_float_dtype",
    "check_array", "check_ndim", "check_shape", "check_same_shape", "check_same_dtype",
]


class ArgumentTypeError(TypeError, ValueError):
    """An argument of the wrong type: catchable as ``TypeError`` or ``ValueError``."""


# ===================================================================== scalars
def is_int(value):
    """True for Python and NumPy integers, False for bools."""
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def is_real(value):
    """True for Python and NumPy real numbers (ints included), False for bools."""
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def _int_expectation(minimum):
    if minimum is None:
        return "an int"
    if minimum == 1:
        return "a positive int"
    if minimum == 0:
        return "a non-negative int"
    return f"an int >= {minimum}"


def check_int(value, name, minimum=None):
    """``value`` as an ``int``, at least ``minimum`` when given.

    Raises:
        ArgumentTypeError: not an int (a bool or a float is refused).
        ValueError: smaller than ``minimum``.
    """
    expected = _int_expectation(minimum)
    if not is_int(value):
        raise ArgumentTypeError(f"{name} must be {expected}, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be {expected}, got {value!r}")
    return int(value)


def _real(value, name, expected, finite=True):
    if not is_real(value):
        raise ArgumentTypeError(f"{name} must be {expected}, got {value!r}")
    if finite and not np.isfinite(value):
        raise ValueError(f"{name} must be {expected}, got {value!r}")
    if np.isnan(value):
        raise ValueError(f"{name} must be {expected}, got {value!r}")
    return float(value)


def check_real(value, name):
    """``value`` as a ``float`` (any real number, ``inf`` included; not NaN).

    Raises:
        ArgumentTypeError: not a real number.
        ValueError: NaN.
    """
    return _real(value, name, "a real number", finite=False)


def check_finite(value, name):
    """``value`` as a finite ``float``.

    Raises:
        ArgumentTypeError: not a real number.
        ValueError: NaN or infinite.
    """
    return _real(value, name, "a finite number")


def check_positive(value, name, finite=True):
    """``value`` as a ``float > 0`` (finite unless ``finite=False``, which admits ``inf``)."""
    expected = "a finite number > 0" if finite else "a number > 0 (or inf)"
    value = _real(value, name, expected, finite)
    if not value > 0:
        raise ValueError(f"{name} must be {expected}, got {value!r}")
    return value


def check_non_negative(value, name, finite=True):
    """``value`` as a ``float >= 0`` (finite unless ``finite=False``, which admits ``inf``)."""
    expected = "a finite number >= 0" if finite else "a number >= 0 (or inf)"
    value = _real(value, name, expected, finite)
    if not value >= 0:
        raise ValueError(f"{name} must be {expected}, got {value!r}")
    return value


def check_in_range(value, name, low=None, high=None, high_open=False):
    """``value`` as a finite ``float`` in ``[low, high]`` (``[low, high)`` with ``high_open``).

    A bound of None is no bound.
    """
    value = _real(value, name, "a finite number")
    too_low = low is not None and value < low
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high:
        lo = "-inf" if low is None else low
        hi = "inf" if high is None else high
        bracket = ")" if high_open or high is None else "]"
        raise ValueError(f"{name} must be in [{lo}, {hi}{bracket}, got {value!r}")
    return value


def check_probability(value, name):
    """``value`` as a ``float`` in ``[0, 1]``."""
    return check_in_range(value, name, 0, 1)


def check_bool(value, name):
    """``value`` as a ``bool`` (NumPy's bool accepted).

    Raises:
        TypeError: anything else (0 and 1 included).
    """
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, got {value!r}")
    return bool(value)


def _spell(choices):
    """``('a', 'b', None)`` as ``'a', 'b' or None``."""
    words = [repr(choice) for choice in choices]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


def check_choice(value, name, choices):
    """``value``, which must be one of ``choices``.

    Raises:
        ValueError: ``value`` is not among ``choices``.
    """
    if not any(value is choice or (isinstance(value, type(choice)) and value == choice)
               for choice in choices):
        raise ValueError(f"{name} must be {_spell(choices)}, got {value!r}")
    return value


def check_pair(value, name, minimum=None):
    """An int or a pair of ints as a tuple ``(a, b)`` of ints, each at least ``minimum``.

    Raises:
        ArgumentTypeError: neither an int nor a pair of ints.
        ValueError: an entry smaller than ``minimum``.
    """
    if is_int(value):
        pair = (int(value), int(value))
    elif isinstance(value, (tuple, list)) and len(value) == 2 and all(is_int(v) for v in value):
        pair = (int(value[0]), int(value[1]))
    else:
        raise ArgumentTypeError(f"{name} must be an int or a pair of ints, got {value!r}")
    if minimum is not None and min(pair) < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return pair


def check_float_dtype(dtype, name="dtype"):
    """``dtype`` as a floating-point ``np.dtype``.

    Raises:
        TypeError: not a floating-point dtype (or not a dtype at all).
    """
    dtype = np.dtype(dtype)
    if not np.issubdtype(dtype, np.floating):
        raise TypeError(f"{name} must be a floating-point dtype, got {dtype}")
    return dtype


# ===================================================================== arrays
_KINDS = {
    "float": (lambda dtype: np.issubdtype(dtype, np.floating), "a floating-point dtype"),
    "integer": (lambda dtype: np.issubdtype(dtype, np.integer), "an integer dtype"),
    "real": (lambda dtype: np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating),
             "a real (integer or floating-point) dtype"),
}


def check_array(value, name, kind=None, tensor=True):
    """The ndarray behind ``value`` (a Tensor or an ndarray), of dtype ``kind`` when given.

    Args:
        value: the argument.
        name (str): its name, for the error message.
        kind (str or None): "float", "integer" or "real" (either) to require a dtype.
        tensor (bool): accept a Tensor (its ``.data``); False accepts ndarrays only.
    Returns:
        ndarray: ``value`` itself, or the Tensor's data (no copy).
    Raises:
        TypeError: not a Tensor or ndarray, or a dtype not of ``kind``.
    """
    if tensor and isinstance(value, Tensor):
        array = value.data
    elif isinstance(value, np.ndarray):
        array = value
    else:
        expected = "a Tensor or ndarray" if tensor else "an ndarray"
        raise TypeError(f"{name} must be {expected}, got {type(value).__name__}")
    if kind is not None:
        accepts, expected = _KINDS[kind]
        if not accepts(array.dtype):
            raise TypeError(f"{name} must have {expected}, got {array.dtype}")
    return array


def check_ndim(array, name, ndim, axes=None):
    """Raise ``ValueError`` unless ``array`` has ``ndim`` axes.

    ``axes`` names them in the message: ``"x must be 4-D (N, H, W, C), got shape (4, 4)"``.
    """
    if np.ndim(array) != ndim:
        spelled = f" ({axes})" if axes else ""
        raise ValueError(f"{name} must be {ndim}-D{spelled}, got shape {tuple(np.shape(array))}")


def check_shape(array, name, shape):
    """Check that ``array.shape`` fits ``shape``, a tuple of ints and letters.

    An int must match exactly; a letter matches any size, the same letter the same
    size: ``check_shape(confusion, "confusion", ("K", "K"))`` requires a square matrix.

    Returns:
        dict: the size each letter stands for.
    Raises:
        ValueError: ``f"{name} must have shape (N, 4), got (3,)"``.
    """
    sizes = {}
    fits = np.ndim(array) == len(shape)
    if fits:
        for want, got in zip(shape, np.shape(array)):
            if isinstance(want, str):
                fits = sizes.setdefault(want, got) == got
            else:
                fits = want == got
            if not fits:
                break
    if not fits:
        spelled = "(" + ", ".join(str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"
        raise ValueError(f"{name} must have shape {spelled}, got {tuple(np.shape(array))}")
    return sizes


def check_same_shape(array, name, reference, reference_name):
    """Raise ``ValueError`` unless ``array`` has the shape of ``reference``."""
    if np.shape(array) != np.shape(reference):
        raise ValueError(f"{name} must have the shape of {reference_name} "
                         f"{tuple(np.shape(reference))}, got {tuple(np.shape(array))}")


def check_same_dtype(array, name, reference, reference_name):
    """Raise ``TypeError`` unless ``array`` has the dtype of ``reference``."""
    if array.dtype != reference.dtype:
        raise TypeError(
            f"{name} dtype {array.dtype} does not match {reference_name} dtype {reference.dtype}"
        )
