"""Matrix products through BLAS (NumPy's), and the bias sums around them.

Dense products are never written as Numba loops: OpenBLAS reaches ~60 GFLOP/s
here, a Numba prange loop ~22 (../shared/NUMBA_NOTES.md).
"""
import numpy as np
from numba import njit

from ._util import ERROR_MODEL, FASTMATH, as_float, contiguous, flat
from .blas import gemm_accumulate

__all__ = ["matmul", "add_bias", "sum_rows", "axpy"]


def matmul(a, b, out=None, trans_a=False, trans_b=False, accumulate=False):
    """out = op(a) @ op(b), or out += op(a) @ op(b) in one BLAS pass (beta = 1).

    Transposes are views: BLAS reads them in place.
    """
    a = a.T if trans_a else a
    b = b.T if trans_b else b
    if not accumulate:
        return np.matmul(a, b, out=out)
    if not gemm_accumulate(a, b, out):
        out += a @ b
    return out


@njit(cache=True, fastmath=FASTMATH, error_model=ERROR_MODEL)
def _add_bias(y, bias):
    rows, cols = y.shape
    for r in range(rows):
        for c in range(cols):
            y[r, c] += bias[c]


def add_bias(y, bias):
    if not y.flags.c_contiguous:
        y += bias
        return y
    _add_bias(y.reshape(-1, bias.shape[0]), contiguous(bias))
    return y


@njit(cache=True, fastmath=FASTMATH, error_model=ERROR_MODEL)
def _sum_rows(x, out, accumulate):
    rows, cols = x.shape
    if not accumulate:
        out[:] = 0
    for r in range(rows):
        for c in range(cols):
            out[c] += x[r, c]


def sum_rows(x, out=None, accumulate=False):
    x = contiguous(x)
    if out is None:
        out = np.empty(x.shape[1], x.dtype)
    _sum_rows(x, out, accumulate)
    return out


@njit(cache=True, fastmath=FASTMATH, error_model=ERROR_MODEL)
def _axpy(alpha, x, y):
    for i in range(x.size):
        y[i] += alpha * x[i]


def axpy(alpha, x, y):
    if not y.flags.c_contiguous:
        y += alpha * x
        return y
    _axpy(as_float(alpha, y), flat(contiguous(x)), flat(y))
    return y
