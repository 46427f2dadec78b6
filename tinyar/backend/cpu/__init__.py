"""The CPU backend: NumPy arrays, Numba ``@njit(cache=True)`` kernels, BLAS.

One kernel file per topic; this module gathers their public ops so that a
layer can write ``B = backend_of(x); B.relu_forward(x)``. The list of ops and
what each computes is in ``tinyar/backend/ops``.
"""
from importlib import import_module

import numpy as np

from . import blas  # noqa: F401  (chooses the BLAS: the threading policy depends on it)
from .. import threads
from . import memory  # noqa: F401  (keeps freed memory for the next step: see memory.py)
from .cache import configure as _configure_cache

threads.configure()  # before any kernel runs
_configure_cache()  # before the kernel files below are imported

name = "cpu"
TOPICS = ("linalg", "elementwise", "softmax", "loss", "norm", "embedding", "optim", "rnn", "conv",
          "pool", "multilevel")

for _topic in TOPICS:
    _module = import_module(f".{_topic}", __name__)
    for _op in _module.__all__:
        globals()[_op] = getattr(_module, _op)


# --- memory -----------------------------------------------------------------
def empty(shape, dtype=np.float32):
    return np.empty(shape, dtype=dtype)


def zeros(shape, dtype=np.float32):
    return np.zeros(shape, dtype=dtype)


def asarray(x, dtype=None):
    """Bring host data (NumPy array, list) onto this backend."""
    return np.asarray(x, dtype=dtype)


def to_host(x):
    return np.asarray(x)


def contiguous(x):
    """x itself when C-contiguous, else a C-contiguous copy (e.g. of a slice x[:, -1])."""
    return np.ascontiguousarray(x)


def is_array(x):
    return isinstance(x, np.ndarray)
