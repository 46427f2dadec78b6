"""Where arrays live and how kernels run.

A layer never imports a kernel file: it asks for the backend of its input,
``B = backend_of(x)``, and calls named ops on it. The CPU backend works on
``numpy.ndarray``; the CUDA backend (``backend/cuda``) on numba device arrays,
with the same op names and signatures (listed in ``backend/ops``).
"""
import numpy as np

from ..errors import DeviceError

_BACKENDS = {}
DEVICES = ("cpu", "cuda")


def resolve_device(device):
    """The backend name of a device: ``"cpu"``, or ``"cuda"`` for ``"cuda"`` and
    ``"cuda:N"``; anything else is a ``DeviceError``. The one place device names are
    read (``get_backend``, ``tinyar.to_device``, the command line's ``--device``)."""
    name = str(device).split(":")[0]
    if name not in DEVICES:
        raise DeviceError(f"unknown device {device!r}; expected 'cpu' or 'cuda'")
    return name


def get_backend(device="cpu"):
    """The backend module for a device name: ``"cpu"`` or ``"cuda"``."""
    device = resolve_device(device)
    if device not in _BACKENDS:
        if device == "cpu":
            from . import cpu as module
        elif device == "cuda":
            try:
                from . import cuda as module
            except ImportError as exc:
                raise DeviceError(
                    f"device 'cuda' could not be loaded ({exc}); install the cuda extra "
                    f"(pip install tinyar[cuda]) or use device='cpu'") from exc
        _BACKENDS[device] = module
    return _BACKENDS[device]


def backend_of(x):
    """The backend that owns array ``x``."""
    if isinstance(x, np.ndarray):
        return get_backend("cpu")
    if hasattr(x, "__cuda_array_interface__"):
        return get_backend("cuda")
    raise TypeError(f"expected a NumPy or CUDA device array, got {type(x).__name__}")
