"""Softmax and log-softmax over the last axis of a (rows, classes) array.

Every kernel walks the rows one at a time, and inside a row does

    m = max_c x_c                  the shift that keeps exp from overflowing
    s = sum_c exp(x_c - m)         1 <= s <= C, so log s is safe
    softmax_c     = exp(x_c - m) / s
    log_softmax_c = (x_c - m) - log s

A row of 10,000 float32 logits is 40 KB: it stays in cache between the two
passes, so "max, then sum-exp" costs little more than one sweep of memory.
Kernels are serial (``backend/cpu/threads.py``).

The vectorisable ``fast_exp`` and ``maxnum`` they use live in ``fastmath.py``.
"""
import math

from numba import njit

from ._util import ERROR_MODEL, FASTMATH, contiguous, out_like
from .fastmath import fast_exp, maxnum

__all__ = ["softmax_forward", "softmax_backward", "log_softmax_forward", "log_softmax_backward"]

# For loops that compute (x - m) - log_s: with "reassoc" LLVM may hoist m + log_s
# out of the loop, and rounding that sum costs accuracy when the logits are
# large (float32 logits near 500: 1.5e-5 relative error in the softmax).
# Elementwise loops vectorise without it; only sums need "reassoc".
IN_ORDER = FASTMATH - {"reassoc"}


@njit(cache=True, fastmath=FASTMATH, error_model=ERROR_MODEL)
def row_max(row):
    """max of a 1-D array (NaNs ignored: see ``maxnum``)."""
    m = row[0]
    for c in range(1, row.size):
        m = maxnum(m, row[c])
    return m


@njit(cache=True, fastmath=FASTMATH, error_model=ERROR_MODEL)
def row_log_sum_exp(row):
    """(m, log sum_c exp(row_c - m)) with m the row max; the log-normaliser is their sum."""
    m = row_max(row)
    s = row.dtype.type(0)
    for c in range(row.size):
        s += fast_exp(row[c] - m)
    return m, math.log(s)


# --- kernels -----------------------------------------------------------------
@njit(cache=True, fastmath=FASTMATH, error_model=ERROR_MODEL)
def _softmax(x, out):
    for r in range(x.shape[0]):
        row, y = x[r], out[r]
        m = row_max(row)
        s = row.dtype.type(0)
        for c in range(row.size):
            e = fast_exp(row[c] - m)
            y[c] = e
            s += e
        inv = row.dtype.type(1) / s
        for c in range(row.size):
            y[c] *= inv


@njit(cache=True, fastmath=FASTMATH, error_model=ERROR_MODEL)
def _softmax_grad(grad, y, out):
    # dx = y * (g - <g, y>): the Jacobian diag(y) - y y^T applied to g
    for r in range(y.shape[0]):
        dot = y.dtype.type(0)
        for c in range(y.shape[1]):
            dot += grad[r, c] * y[r, c]
        for c in range(y.shape[1]):
            out[r, c] = y[r, c] * (grad[r, c] - dot)


@njit(cache=True, fastmath=IN_ORDER, error_model=ERROR_MODEL)
def _log_softmax(x, out):
    for r in range(x.shape[0]):
        row, y = x[r], out[r]
        m, log_s = row_log_sum_exp(row)
        for c in range(row.size):
            y[c] = (row[c] - m) - log_s


@njit(cache=True, fastmath=FASTMATH, error_model=ERROR_MODEL)
def _log_softmax_grad(grad, y, out):
    # dx = g - softmax * sum(g), with softmax = exp(y)
    for r in range(y.shape[0]):
        total = y.dtype.type(0)
        for c in range(y.shape[1]):
            total += grad[r, c]
        for c in range(y.shape[1]):
            out[r, c] = grad[r, c] - fast_exp(y[r, c]) * total


# --- wrappers ----------------------------------------------------------------
def _rows(kernel, *arrays, out=None):
    arrays = [contiguous(a) for a in arrays]
    out = out_like(out, arrays[-1])
    if out.size:  # a (rows, 0) input has nothing to normalise
        kernel(*arrays, out)
    return out


def softmax_forward(x, out=None):
    return _rows(_softmax, x, out=out)


def softmax_backward(grad, y, out=None):
    return _rows(_softmax_grad, grad, y, out=out)


def log_softmax_forward(x, out=None):
    return _rows(_log_softmax, x, out=out)


def log_softmax_backward(grad, y, out=None):
    return _rows(_log_softmax_grad, grad, y, out=out)
