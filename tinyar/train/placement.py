"""Which device a command runs on: checked before any data loads.

``tinyar train --device cuda`` on a machine without a GPU must fail at once,
with a message that says what to do, not after minutes of tokenising a
corpus or deep inside the first kernel launch.
"""
from ..device import DEVICES, cuda_available
from ..errors import DeviceError


def check_device(device):
    """Raise ``DeviceError`` when ``device`` is unknown or cannot run here; return its name."""
    name = str(device).split(":")[0]
    if name not in DEVICES:
        raise DeviceError(f"unknown device {device!r}; expected one of {', '.join(DEVICES)}")
    if name == "cuda" and not cuda_available():
        from ..device import _no_gpu_message
        raise DeviceError(_no_gpu_message())
    return name


def place(model, device):
    """``model`` moved to ``device`` (nothing to do on the CPU, where models are built)."""
    if check_device(device) != "cpu":
        model.to(device)
    return model
