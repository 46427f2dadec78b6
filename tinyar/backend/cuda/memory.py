"""The CUDA backend's memory functions: arrays are numba device arrays
(``backend/ops/memory.py`` declares what each function means on every backend).

Allocating needs a GPU or the simulator (``DeviceError`` otherwise); every copy
between host and device is one of these calls, so a reader can find them all.
"""
import numpy as np

from ._util import contiguous  # noqa: F401  (defined beside the kernel helpers that use it)
from ._util import device_empty, fill, host_to_device, is_device_array

__all__ = ["empty", "zeros", "asarray", "copy", "contiguous", "to_host", "is_array",
           "workspace_bytes",
           "multiplies_stacks"]


def empty(shape, dtype=np.float32):
    return device_empty(shape, dtype)


def zeros(shape, dtype=np.float32):
    return fill(device_empty(shape, dtype), 0)


def asarray(x, dtype=None):
    """Bring data onto the GPU: host data (NumPy array, list, number) is copied;
    a device array of the right dtype is returned as is."""
    if is_device_array(x):
        if dtype is None or x.dtype == np.dtype(dtype):
            return x
        x = x.copy_to_host()
    return host_to_device(np.asarray(x, dtype=dtype))


def copy(x):
    """A C-contiguous device copy of ``x`` (numba device arrays have no ``.copy()``)."""
    out = device_empty(x.shape, x.dtype)
    out[(slice(None),) * x.ndim] = x  # numba's strided copy kernel (it takes no "...")
    return out


def to_host(x):
    """A NumPy copy of a device array (host arrays pass through)."""
    if is_device_array(x):
        return x.copy_to_host()
    return np.asarray(x)


def is_array(x):
    """Whether ``x`` is an array of this backend (a device array)."""
    return is_device_array(x)


def workspace_bytes():
    """1 GiB: on a GPU the whole batch's columns in one piece (one launch per product)."""
    return 1 << 30


def multiplies_stacks():
    """No: this backend's matmul is 2-d and a device array has no 3-d transposed views,
    so on a GPU a convolution takes one product for the batch (and the reordering
    after it is one cheap kernel there)."""
    return False
