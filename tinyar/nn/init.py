"""Weight initialisation, drawn from tinyar's generator (``tinyar.manual_seed``).

The defaults match PyTorch's: a Linear layer's weight and bias are uniform on
[-1/sqrt(fan_in), 1/sqrt(fan_in)] (kaiming_uniform with a = sqrt(5)).
"""
import math

import numpy as np

from ..random import generator


def uniform(shape, bound, dtype=np.float32):
    return generator().uniform(-bound, bound, size=shape).astype(dtype)


def normal(shape, std=1.0, dtype=np.float32):
    return (generator().standard_normal(size=shape) * std).astype(dtype)


def fan_in_uniform(shape, fan_in, dtype=np.float32):
    """U(-1/sqrt(fan_in), 1/sqrt(fan_in)), PyTorch's default for Linear and Conv."""
    return uniform(shape, 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0, dtype)


def zeros(shape, dtype=np.float32):
    return np.zeros(shape, dtype=dtype)


def ones(shape, dtype=np.float32):
    return np.ones(shape, dtype=dtype)
