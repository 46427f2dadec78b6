"""The list of backend ops: one entry per op, with its shapes and the NumPy
expression it computes.

Every backend (``backend/cpu``, ``backend/cuda``) implements each op under the
same name and signature, and ``tests/backend/test_ops.py`` checks every op of
every backend against the ``reference`` below on random inputs (contiguous,
non-contiguous, float32 and float64).

Conventions shared by all ops:

* An op takes its inputs first, then ``out=`` arguments (allocated when
  ``None``) and returns its outputs.
* Ops marked ``inplace`` update some of their arguments (an optimizer step
  updates the parameters and the moments); their ``reference`` returns the
  new values of those arguments, in order.
* ``example(rng, dtype)`` builds keyword arguments for a test call.
"""
from dataclasses import dataclass, field
from typing import Callable, Dict, Tuple


@dataclass(frozen=True)
class OpSpec:
    name: str
    shapes: str
    reference: Callable
    example: Callable
    inplace: Tuple[str, ...] = ()
    # arrays an op needs contiguous (flat parameter buffers); the test skips
    # the non-contiguous variant for them
    contiguous: Tuple[str, ...] = ()
    # integer index arrays: not converted to float in tests
    rtol32: float = 1e-5
    atol32: float = 1e-6
    tags: Tuple[str, ...] = field(default_factory=tuple)


REGISTRY: Dict[str, OpSpec] = {}


def op(shapes: str, example: Callable, inplace=(), contiguous=(), rtol32=1e-5, atol32=1e-6):
    """Register the decorated NumPy function as the reference of an op."""

    def register(reference):
        name = reference.__name__
        if name in REGISTRY:
            raise RuntimeError(f"op {name!r} is listed twice")
        REGISTRY[name] = OpSpec(name, shapes, reference, example, tuple(inplace),
                                tuple(contiguous), rtol32, atol32)
        return reference

    return register


#: The topics, one kernel file each in every backend (``backend/cpu/<topic>.py``,
#: ``backend/cuda/<topic>.py``) and one reference file here; ``memory`` holds the
#: memory functions (``memory.py``), the others register their ops with ``@op``.
TOPICS = ("memory", "linalg", "elementwise", "softmax", "loss", "norm", "embedding", "optim",
          "rnn", "conv", "pool", "multilevel", "attention", "flash")

# the topic files register their ops on import
from . import linalg, elementwise, softmax, loss, norm, embedding, optim, rnn, conv, pool, multilevel  # noqa: E402,F401,E501
from . import flash  # noqa: E402,F401
from . import attention  # noqa: E402,F401
from .memory import MEMORY  # noqa: E402


def protocol():
    """Every name a backend must provide: the memory functions and the ops."""
    return sorted(MEMORY) + sorted(REGISTRY)
