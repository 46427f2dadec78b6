"""The transcendental functions the shared scalar math calls, by their meaning.

Each backend binds these names to its own versions when it compiles a function
of ``backend/scalar`` (``scalar.compiler``): on the CPU ``tanh`` and ``sigmoid``
are ``cpu/fastmath.py``'s polynomials in float32 (LLVM vectorises them; libm's
do not vectorise) and libm's in float64; on CUDA the GPU's own ``tanh`` and
``exp``. The plain versions below are what the names mean, and what runs when
a function is called from Python.

``one`` is 1 in the dtype of ``x``: a bare ``1`` would turn float32 arithmetic
into float64 arithmetic.
"""
import math


def tanh(x):
    return math.tanh(x)


def sigmoid(x, one):
    """1 / (1 + e^-x)."""
    return one / (one + math.exp(-x))


def exp(x):
    return math.exp(x)


def erf(x):
    return math.erf(x)
