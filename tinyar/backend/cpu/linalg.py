"""Matrix products through BLAS (``blas.py``: MKL or NumPy's OpenBLAS), and the
bias sums around them.

Dense products are never written as Numba loops: OpenBLAS reaches ~60 GFLOP/s
here, a Numba prange loop ~22 (docs/performance.md).
"""
import numpy as np
from numba import njit

from ._util import ERROR_MODEL, FASTMATH, as_float, contiguous, flat
from .blas import gemm, gemm_batched

__all__ = ["matmul", "add_bias", "sum_rows", "axpy"]


def matmul(a, b, out=None, trans_a=False, trans_b=False, accumulate=False):
    """out = op(a) @ op(b), or out += op(a) @ op(b) in one BLAS pass (beta = 1).

    Transposes are views: BLAS reads them in place.
    """
    a = a.T if trans_a else a
    b = b.T if trans_b else b
    if accumulate:
        if not gemm(a, b, out, beta=1.0):
            out += a @ b
        return out
    if a.dtype == b.dtype and a.ndim in (2, 3) and b.ndim in (2, 3) and a.shape[-1] == b.shape[-2]:
        if a.ndim == 2 and b.ndim == 2:
            result = np.empty((a.shape[0], b.shape[1]), a.dtype) if out is None else out
            if gemm(a, b, result):
                return result
        else:
            count = a.shape[0] if a.ndim == 3 else b.shape[0]
            result = np.empty((count, a.shape[-2], b.shape[-1]), a.dtype) if out is None else out
            if gemm_batched(a, b, result):
                return result
    return np.matmul(a, b, out=out)  # mixed, integer or broadcast-incompatible operands


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
