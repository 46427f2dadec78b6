"""Softmax and log-softmax over the last axis of a (rows, classes) array.

One block per row (``_util.launch_rows``). The block's threads split the
row's classes (thread t takes c = t, t + blockDim, ...), and each step that
needs the whole row combines their partial results in shared memory:

    m = max_c x_c              block_max     the shift that keeps exp from overflowing
    s = sum_c exp(x_c - m)     block_sum     1 <= s <= C, so log s is safe
    softmax_c     = exp(x_c - m) / s
    log_softmax_c = (x_c - m) - log s

Every thread of a block runs the same number of reductions (they contain
barriers), whatever its share of the row.
"""
import math

from numba import cuda

from ._util import ROW_THREADS, block_max, block_sum, contiguous, launch_rows, out_like

__all__ = ["softmax_forward", "softmax_backward", "log_softmax_forward", "log_softmax_backward"]


@cuda.jit(device=True)
def row_max(buf, x, r):
    """max_c x[r, c] over the whole block."""
    m = x.dtype.type(-math.inf)
    for c in range(cuda.threadIdx.x, x.shape[1], cuda.blockDim.x):
        if x[r, c] > m:
            m = x[r, c]
    return block_max(buf, m)


@cuda.jit(device=True)
def row_log_sum_exp(buf, x, r):
    """(m, log sum_c exp(x[r, c] - m)) with m the row max."""
    m = row_max(buf, x, r)
    s = x.dtype.type(0)
    for c in range(cuda.threadIdx.x, x.shape[1], cuda.blockDim.x):
        s += math.exp(x[r, c] - m)
    return m, math.log(block_sum(buf, s))


@cuda.jit
def _softmax(x, out):
    buf = cuda.shared.array(ROW_THREADS, x.dtype)
    for r in range(cuda.blockIdx.x, x.shape[0], cuda.gridDim.x):
        m = row_max(buf, x, r)
        s = x.dtype.type(0)
        for c in range(cuda.threadIdx.x, x.shape[1], cuda.blockDim.x):
            e = math.exp(x[r, c] - m)
            out[r, c] = e
            s += e
        inv = x.dtype.type(1) / block_sum(buf, s)
        for c in range(cuda.threadIdx.x, x.shape[1], cuda.blockDim.x):
            out[r, c] *= inv  # each thread rescales the entries it wrote


@cuda.jit
def _softmax_grad(grad, y, out):
    # dx = y * (g - <g, y>): the Jacobian diag(y) - y y^T applied to g
    buf = cuda.shared.array(ROW_THREADS, y.dtype)
    for r in range(cuda.blockIdx.x, y.shape[0], cuda.gridDim.x):
        dot = y.dtype.type(0)
        for c in range(cuda.threadIdx.x, y.shape[1], cuda.blockDim.x):
            dot += grad[r, c] * y[r, c]
        dot = block_sum(buf, dot)
        for c in range(cuda.threadIdx.x, y.shape[1], cuda.blockDim.x):
            out[r, c] = y[r, c] * (grad[r, c] - dot)


@cuda.jit
def _log_softmax(x, out):
    buf = cuda.shared.array(ROW_THREADS, x.dtype)
    for r in range(cuda.blockIdx.x, x.shape[0], cuda.gridDim.x):
        m, log_s = row_log_sum_exp(buf, x, r)
        for c in range(cuda.threadIdx.x, x.shape[1], cuda.blockDim.x):
            out[r, c] = (x[r, c] - m) - log_s


@cuda.jit
def _log_softmax_grad(grad, y, out):
    # dx = g - softmax * sum(g), with softmax = exp(y)
    buf = cuda.shared.array(ROW_THREADS, y.dtype)
    for r in range(cuda.blockIdx.x, y.shape[0], cuda.gridDim.x):
        total = y.dtype.type(0)
        for c in range(cuda.threadIdx.x, y.shape[1], cuda.blockDim.x):
            total += grad[r, c]
        total = block_sum(buf, total)
        for c in range(cuda.threadIdx.x, y.shape[1], cuda.blockDim.x):
            out[r, c] = grad[r, c] - math.exp(y[r, c]) * total


def _rows(kernel, *arrays, out=None):
    arrays = [contiguous(a) for a in arrays]
    for a in arrays:
        if a.ndim != 2 or tuple(a.shape) != tuple(arrays[-1].shape):
            raise ValueError(f"expected (rows, classes) arrays of one shape, got "
                             f"{[tuple(b.shape) for b in arrays]}")
    out = out_like(out, arrays[-1])
    if out.size:  # a (rows, 0) input has nothing to normalise
        launch_rows(kernel, out.shape[0], *arrays, out)
    return out


def softmax_forward(x, out=None):
    return _rows(_softmax, x, out=out)


def softmax_backward(grad, y, out=None):
    return _rows(_softmax_grad, grad, y, out=out)


def log_softmax_forward(x, out=None):
    return _rows(_log_softmax, x, out=out)


def log_softmax_backward(grad, y, out=None):
    return _rows(_log_softmax_grad, grad, y, out=out)
