"""Small helpers shared by the CPU kernel files."""
import numpy as np
from numba import get_num_threads, njit

from . import threads
from ..scalar import compiler
from .fastmath import fast_erf, fast_exp, fast_sigmoid, fast_tanh

# LLVM may reassociate, contract into FMAs and use reciprocals, but must keep
# NaN and infinity semantics: a NaN loss has to stay visible.
FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}

# Numba's default error_model="python" checks every float division for zero
# (to raise ZeroDivisionError), and that check stops LLVM from vectorising the
# loop: Adam over 670k floats took 1.34 ms with it, 0.37 ms without. With
# "numpy" a division by zero gives inf/NaN, as in NumPy.
ERROR_MODEL = "numpy"


def _scalar_jit(fn):
    return njit(inline="always", fastmath=FASTMATH, error_model=ERROR_MODEL)(fn)


#: ``scalar_function(f)``: a function of ``backend/scalar`` compiled for the CPU, inlined
#: into each kernel that calls it (so LLVM vectorises the kernel's loop as if the
#: formula were written in it), with the vectorisable float32 tanh/sigmoid/exp/erf.
@njit(inline="always")
def _sigmoid(x, one):
    return fast_sigmoid(x)


scalar_function = compiler(_scalar_jit, {"tanh": fast_tanh, "sigmoid": _sigmoid,
                                         "exp": fast_exp, "erf": fast_erf})


def contiguous(x):
    """x itself when C-contiguous, else a C-contiguous copy (kernels index flat)."""
    return x if x.flags.c_contiguous else np.ascontiguousarray(x)


def out_like(out, x, dtype=None):
    """The output array of an op: ``out`` when given, else a new one like ``x``."""
    if out is None:
        return np.empty(x.shape, dtype=dtype or x.dtype)
    if out.shape != x.shape:
        raise ValueError(f"out has shape {out.shape}, expected {x.shape}")
    return out


def flat(x):
    """A 1-D view of a contiguous array."""
    return x.reshape(-1)


def as_float(value, like):
    """A Python scalar as the dtype of ``like`` (keeps float32 kernels float32)."""
    return like.dtype.type(value)


# Below this many elements a sweep stays on one thread even where kernels may use
# all (backend/cpu/threads.py): an omp prange launch costs ~2 us, a serial sweep of
# 64k floats ~15 us.
PARALLEL_MIN_ELEMENTS = 1 << 16


def thread_chunks(elements, pieces):
    """How many of its ``pieces`` (samples, planes, channels) a kernel's sweep over
    ``elements`` should be split into: the thread count, at most ``pieces``, where
    kernels may use every core and the sweep is large; else 1."""
    if not threads.PARALLEL_KERNELS or elements < PARALLEL_MIN_ELEMENTS:
        return 1
    return max(1, min(get_num_threads(), pieces))


@njit(cache=True)
def chunk_bounds(piece, pieces, n):
    """Bounds (first, end) of block ``piece`` of ``pieces`` near-equal blocks of
    ``range(n)``: how a threaded kernel's ``prange`` over pieces splits its sweep."""
    return piece * n // pieces, (piece + 1) * n // pieces
