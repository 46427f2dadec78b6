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
from . import backend, data, nn, optim, models
