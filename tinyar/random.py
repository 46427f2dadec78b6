"""Where tinyar's randomness comes from.

All random numbers (weight initialisation, dropout masks, data shuffling)
are drawn from one ``numpy.random.Generator``. ``manual_seed(n)`` replaces it,
so the same seed gives the same CPU run bit for bit.
"""
import numpy as np

_generator = np.random.default_rng(0)


def manual_seed(seed: int) -> np.random.Generator:
    """Reseed tinyar's generator; returns it."""
    global _generator
    _generator = np.random.default_rng(int(seed))
    return _generator


def generator() -> np.random.Generator:
    """The generator every tinyar component draws from."""
    return _generator
