"""Which device a command runs on: checked before any data loads.

``tinyar train --device cuda`` on a machine without a GPU must fail at once,
with a message that says what to do, not after minutes of tokenising a
corpus or deep inside the first kernel launch.
"""
import sys

from ..backend import resolve_device
from ..device import _no_gpu_message, cuda_available
from ..distributed.world import launched_rank
from ..errors import DeviceError

SIMULATOR_NOTE = ("note: NUMBA_ENABLE_CUDASIM=1 is set: the CUDA kernels run in numba's "
                  "simulator, exact but thousands of times slower than a GPU (keep models "
                  "and batches tiny)")


def check_device(device):
    """Raise ``DeviceError`` when ``device`` is unknown or cannot run here; return its name."""
    name = resolve_device(device)
    if name == "cuda" and not cuda_available():
        raise DeviceError(_no_gpu_message())
    if name == "cuda" and _simulated() and not _announced:
        if launched_rank() == 0:  # once a job: rank 0 alone prints
            print(SIMULATOR_NOTE, file=sys.stderr)
        _announced.append(True)  # once a process
    return name


_announced = []


def _simulated():
    from ..backend.cuda import SIMULATOR
    return SIMULATOR


def place(model, device):
    """``model`` moved to ``device`` (nothing to do on the CPU, where models are built)."""
    if check_device(device) != "cpu":
        model.to(device)
    return model
