"""Hypothesis strategies shared by the tests (valid boxes, conv geometries, ...)."""
import numpy as np
from hypothesis import strategies as st

__all__ = ["float_arrays"]


@st.composite
def float_arrays(draw, shape, low=-2.0, high=2.0, dtype=np.float64):
    """An array of the given shape with values drawn from a seeded generator."""
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    return rng.uniform(low, high, size=shape).astype(dtype)
