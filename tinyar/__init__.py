"""tinyar: a deep-learning engine written out by hand, on Numba kernels.

    import tinyar
    from tinyar import nn, optim
"""
__version__ = "0.1.0"

from .errors import (CheckpointError, ConfigError, DeviceError, DTypeError, FileError,
                     NumericalError, OptimizerError, ShapeError, TargetError, TinyarError)
from .random import manual_seed
from .checkpoint import load, save
from .device import cuda_available, to_device, to_host
from . import backend, nn, optim

# The data sets (downloads, image readers) and the models load when first used, so that
# ``import tinyar.nn`` stays the engine alone: ``tinyar.data`` and ``tinyar.models`` work
# as attributes as usual.
_LAZY = ("data", "models", "train", "inspect")


def __getattr__(name):
    if name in _LAZY:
        import importlib
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'tinyar' has no attribute {name!r}")
