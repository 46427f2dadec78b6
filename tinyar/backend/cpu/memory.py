"""The CPU backend's memory functions: arrays are NumPy arrays (``backend/ops/memory.py``
declares what each function means on every backend)."""
import numpy as np

__all__ = ["empty", "zeros", "asarray", "copy", "contiguous", "to_host", "is_array",
           "workspace_bytes",
           "multiplies_stacks"]


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


def workspace_bytes():
    """64 MiB: a larger batch of im2col columns goes through in pieces (chunks of ~1 MiB,
    to stay in the L2 cache, made LeNet's step slower, 16-17 ms against 14)."""
    return 64 << 20


def multiplies_stacks():
    """NumPy arrays have 3-d strided views, and matmul multiplies stacks of them (MKL's
    batched gemm, or NumPy's loop over OpenBLAS)."""
    return True
