"""The CUDA backend: numba device arrays and ``numba.cuda`` kernels.

The same ops as the CPU backend (``backend/cpu``), under the same names and
signatures, one kernel file per topic; this module gathers their public ops
so that a layer can write ``B = backend_of(x); B.relu_forward(x)`` whatever
the device. The list of ops and what each computes is in ``tinyar/backend/ops``.

Without a GPU, ``NUMBA_ENABLE_CUDASIM=1`` (set before numba is imported)
runs every kernel in numba's CUDA simulator: slow (each GPU thread is a
Python thread), but exact, which is how the tests check these kernels on
any machine. Importing this module needs no GPU; allocating does
(``DeviceError`` otherwise).
"""
from importlib import import_module
from pathlib import Path

import numpy as np

from ..ops import REGISTRY
from . import _util
from ._util import SIMULATOR  # noqa: F401  (True under numba's CUDA simulator)
from ._util import count_launches  # noqa: F401
from ._util import contiguous  # noqa: F401  (x, or a C-contiguous device copy)
from ._util import device_empty, fill, host_to_device, is_device_array

name = "cuda"
ALL_TOPICS = ("linalg", "elementwise", "softmax", "loss", "norm", "embedding", "optim",
              "rnn", "conv", "pool", "multilevel")
# A topic is implemented when its kernel file exists here (one file a topic).
TOPICS = tuple(t for t in ALL_TOPICS
               if (Path(__file__).parent / f"{t}.py").exists())

# Topics of backend/ops whose ops this backend does not implement yet. The op
# tests skip their ops (tests/backend/test_ops.py) and name them in the skip
# reason; an op missing from any other topic fails the tests.
NOT_YET_TOPICS = tuple(t for t in ALL_TOPICS if t not in TOPICS)
NOT_YET = frozenset(op_name for op_name, spec in REGISTRY.items()
                    if spec.reference.__module__.rsplit(".", 1)[-1] in NOT_YET_TOPICS)

for _topic in TOPICS:
    _module = import_module(f".{_topic}", __name__)
    for _op in _module.__all__:
        globals()[_op] = getattr(_module, _op)


def is_available():
    """True when CUDA kernels can run here: a GPU, or the simulator."""
    return _util.is_available()


# --- memory -----------------------------------------------------------------
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


def to_host(x):
    """A NumPy copy of a device array (host arrays pass through)."""
    if is_device_array(x):
        return x.copy_to_host()
    return np.asarray(x)


def is_array(x):
    """Whether ``x`` is an array of this backend (a device array)."""
    return is_device_array(x)
