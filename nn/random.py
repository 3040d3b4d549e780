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


def get_generator(generator=None):
    """The ``np.random.Generator`` that an optional ``generator`` argument stands for.

    Args:
        generator (np.random.Generator | int | None): a Generator (returned as it is),
            a non-negative int seed (a new Generator seeded with it) or None (the default
            generator, seeded by ``manual_seed``).
    Returns:
        np.random.Generator.
    Raises:
        TypeError: ``generator`` is none of these; ValueError: a negative seed.
    """
    if generator is None:
        return _default
    if isinstance(generator, np.random.Generator):
        return generator
    if isinstance(generator, (int, np.integer)) and not isinstance(generator, bool):
        if generator < 0:
            raise ValueError(f"generator seed must be a non-negative integer, got {generator}")
        return np.random.default_rng(int(generator))
    raise TypeError(f"generator must be None, an int seed or a np.random.Generator, got "
                    f"{type(generator).__name__}")
