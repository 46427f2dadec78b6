"""Moving arrays between the host (NumPy) and a CUDA GPU (numba device arrays).

    x_gpu = tinyar.to_device(x, "cuda")    # a device copy of a NumPy array
    x     = tinyar.to_host(x_gpu)          # a NumPy copy of a device array
    model.to("cuda")                       # a model's parameters and buffers

A training step copies nothing between the two except what the code asks
for (the loss value each step, a sample), so these calls belong at the edges
of a program: the batch going in, the result coming out.

Without a GPU, ``NUMBA_ENABLE_CUDASIM=1`` (set before numba is imported)
runs the CUDA kernels in numba's simulator: same results, far slower.
"""
import numpy as np

from .backend import backend_of, get_backend, resolve_device
from .errors import DeviceError

def cuda_available():
    """True when ``"cuda"`` works here: a CUDA GPU, or numba's CUDA simulator."""
    try:
        from numba import cuda
    except ImportError:
        return False
    try:
        return bool(cuda.is_available())
    except Exception:  # a broken driver install counts as no GPU
        return False


def device_of(x):
    """``"cpu"`` for a NumPy array, ``"cuda"`` for a device array."""
    return backend_of(x).name


def to_device(x, device):
    """``x`` (an array, list or number) on ``device``; no copy when it is already there."""
    name = resolve_device(device)
    if name == "cuda" and not cuda_available():
        raise DeviceError(_no_gpu_message())
    target = get_backend(name)
    if _is_array(x) and backend_of(x) is target:
        return x
    return target.asarray(to_host(x))


def to_host(x):
    """A NumPy array with the values of ``x`` (a copy for a device array)."""
    if _is_array(x):
        return backend_of(x).to_host(x)
    return np.asarray(x)


def _no_gpu_message():
    try:
        from .backend.cuda._util import NO_GPU_MESSAGE
    except ImportError:  # no numba.cuda at all
        return ("no CUDA support: numba.cuda cannot be imported (pip install tinyar[cuda]); "
                "use --device cpu")
    return NO_GPU_MESSAGE


def _is_array(x):
    return isinstance(x, np.ndarray) or hasattr(x, "__cuda_array_interface__")
