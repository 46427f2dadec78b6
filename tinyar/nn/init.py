"""Weight initialisation, drawn from tinyar's generator (``tinyar.manual_seed``).

The defaults match PyTorch's: a Linear layer's weight and bias are uniform on
[-1/sqrt(fan_in), 1/sqrt(fan_in)] (kaiming_uniform with a = sqrt(5)).

Every function here is where a layer's parameters (and BatchNorm's running
statistics) are allocated, so it is also where their size can be bounded.
Inside ``allocation_limit(max_elements, what)`` each function first *charges*
the elements it is about to allocate and raises ``CheckpointError`` when the
total would pass the limit, before any memory is taken::

    with init.allocation_limit(10_000, "model.npz's config"):
        LSTM(64, 40_000)    # CheckpointError: ... would allocate 10,240,000 values ...

That is how a checkpoint whose JSON config says ``hidden_size: 40000`` while its
arrays hold a few thousand values is refused in microseconds, instead of asking
for 48 GiB (``checkpoint.build``).
"""
import contextlib
import math
import numbers
import threading

import numpy as np

from ..errors import CheckpointError
from ..random import generator

_limits = threading.local()


class _Limit:
    """An allocation budget: ``used`` of ``limit`` elements so far."""

    def __init__(self, limit, what):
        self.limit, self.what, self.used = int(limit), what, 0


@contextlib.contextmanager
def allocation_limit(max_elements, what="the model"):
    """Refuse, with ``CheckpointError``, to allocate more than ``max_elements`` parameter
    values in total inside this block (nested limits all apply). Yields the budget, whose
    ``used`` says how many were allocated."""
    if isinstance(max_elements, bool) or not isinstance(max_elements, numbers.Integral) \
            or max_elements < 0:
        raise ValueError(f"allocation_limit: max_elements must be an integer >= 0, got "
                         f"{max_elements!r}")
    stack = getattr(_limits, "stack", None)
    if stack is None:
        stack = _limits.stack = []
    budget = _Limit(max_elements, what)
    stack.append(budget)
    try:
        yield budget
    finally:
        stack.remove(budget)


def _charge(shape):
    """Count the elements of an array of ``shape`` against every active limit; raise before
    allocating when one would be exceeded. Python ints: a hostile shape cannot overflow."""
    dims = (shape,) if isinstance(shape, numbers.Integral) else tuple(shape)
    count = math.prod(int(n) for n in dims)
    for budget in getattr(_limits, "stack", ()):
        if budget.used + count > budget.limit:
            raise CheckpointError(
                f"{budget.what}: building the model would allocate more than its limit of "
                f"{budget.limit:,} values (an array of shape {dims} needs {count:,}, "
                f"{budget.used:,} are allocated already)")
    for budget in getattr(_limits, "stack", ()):
        budget.used += count


def uniform(shape, bound, dtype=np.float32):
    _charge(shape)
    return generator().uniform(-bound, bound, size=shape).astype(dtype)


def normal(shape, std=1.0, dtype=np.float32):
    _charge(shape)
    return (generator().standard_normal(size=shape) * std).astype(dtype)


def fan_in_uniform(shape, fan_in, dtype=np.float32):
    """U(-1/sqrt(fan_in), 1/sqrt(fan_in)), PyTorch's default for Linear and Conv."""
    return uniform(shape, 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0, dtype)


def zeros(shape, dtype=np.float32):
    _charge(shape)
    return np.zeros(shape, dtype=dtype)


def ones(shape, dtype=np.float32):
    _charge(shape)
    return np.ones(shape, dtype=dtype)
