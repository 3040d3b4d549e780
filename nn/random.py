"""Seeded randomness: every random choice in detseg draws from a ``np.random.Generator``.

``nn.manual_seed(s)`` reseeds the default generator, which initializers, dropout and
data shuffling use when no generator is passed explicitly. A seeded run is reproducible.
"""
import numpy as np

__all__ = ["manual_seed", "default_generator", "get_generator"]

_default = np.random.default_rng(0)


def manual_seed(seed):
    """Reseed the default generator and return it.

    Args:
        seed (int): a non-negative integer.
    """
    global _default
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    _default = np.random.default_rng(int(seed))
    return _default


def default_generator():
    """The generator used when none is given."""
    return _default


def get_generator(rng=None):
    """``rng`` if it is a Generator, a new one if it is an int seed, else the default."""
    if rng is None:
        return _default
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        return np.random.default_rng(int(rng))
    raise TypeError(f"rng must be None, an int seed or a np.random.Generator, got {type(rng).__name__}")
