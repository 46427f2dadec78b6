"""The CPU backend's memory functions: arrays are NumPy arrays (``backend/ops/memory.py``
declares what each function means on every backend)."""
import numpy as np

__all__ = ["empty", "zeros", "asarray", "copy", "contiguous", "to_host", "is_array"]


def empty(shape, dtype=np.float32):
    return np.empty(shape, dtype=dtype)


def zeros(shape, dtype=np.float32):
    return np.zeros(shape, dtype=dtype)


def asarray(x, dtype=None):
    """Bring host data (NumPy array, list) onto this backend."""
    return np.asarray(x, dtype=dtype)


def copy(x):
    """A C-contiguous copy of ``x``."""
    return np.array(x, order="C", copy=True)


def contiguous(x):
    """x itself when C-contiguous, else a C-contiguous copy (e.g. of a slice x[:, -1])."""
    return np.ascontiguousarray(x)


def to_host(x):
    return np.asarray(x)


def is_array(x):
    return isinstance(x, np.ndarray)
