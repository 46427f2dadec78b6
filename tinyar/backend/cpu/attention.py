"""Attention's kernels: batched products, the causal softmax, bias + GELU, moving heads.

``batched_matmul``: S independent products out[s] = op(a[s]) @ op(b[s]), each a
BLAS ``gemm`` called from compiled code (``gemm.py``: the routine is passed as a
ctypes pointer). NumPy's BLAS has no batched gemm, so how to run the S products
was measured (2-core AMD EPYC, OpenBLAS 0.3.31, float32, b transposed, median µs
of three alternating rounds each, while other processes kept the machine at a
load of 2-3, as they often do during development):

    S, M x N x K              this op      loop, BLAS's    np.matmul       torch.bmm
                              (as below)   own threads
    48, 64 x 64 x 32          208-310      209-306         203-280         154-226
    384, 256 x 256 x 64       25k-53k      32k-1.3M        33k-6.0M        56k-109k

Small stacks are call bound and every variant costs the same, so below
``THREADED_MACS`` multiply-adds the products run one after another in one
compiled call (each BLAS call threads itself as it sees fit). Above it each
thread takes a share of the S products and runs them on a single-threaded BLAS:
the fastest, and unlike OpenBLAS's own spinning threads (the 1.3 s and 6.0 s
rounds) it does not collapse when another process holds a core. With MKL the
stack goes to MKL's own batched gemm (``blas.gemm_batched``), except when
accumulating. Rerun before relying on a figure: they move with the load.

``causal_softmax_forward``: per row (s, i) of scores, query i of Tq sits
at absolute position i + Tk - Tq and sees keys j < limit = i + Tk - Tq + 1:

    m = max_{j < limit} scale * x_j;   e_j = exp(scale * x_j - m);   P_j = e_j / sum e
    P_j = 0 for j >= limit  (the max and the sum never see the masked entries)

One pass per row (max, exp-sum, normalise; the row stays in cache), elementwise
in place, so ``out`` may be ``scores``. The backward (out may be grad) is
dS_j = scale * P_j (dP_j - sum_j' dP_j' P_j') over the allowed j, 0 beyond.

Threads: row kernels and copies follow ``threads.py`` (``thread_chunks``: a
``prange`` over samples only where kernels share BLAS's pool).
"""
import numpy as np
from numba import get_num_threads, njit, prange, uint64

from ..scalar import activations
from . import blas, threads
from ._util import (ERROR_MODEL, FASTMATH, chunk_bounds, contiguous, out_like, scalar_function,
                    thread_chunks)
from .fastmath import fast_exp, maxnum

__all__ = ["batched_matmul", "causal_softmax_forward", "causal_softmax_backward",
           "bias_gelu_forward", "bias_gelu_backward", "split_heads", "merge_heads",
           "append_steps"]

_KERNEL = dict(cache=True, fastmath=FASTMATH, error_model=ERROR_MODEL)
_THREADED = dict(_KERNEL, parallel=True)
_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112  # CBLAS's enum values

# Stacks of at least this many multiply-adds (~0.3 ms on one core) are split over
# the threads; below, a prange launch (20-60 µs on the workqueue layer) would not pay.
THREADED_MACS = 1 << 24

# written out (as in ops/attention.py): cached kernels freeze globals, and the cache
# is keyed to the sources of this folder and backend/scalar only (cache.py)
_SQRT_HALF = 0.7071067811865476
_INV_SQRT_2PI = 0.3989422804014327
SQRT_2_OVER_PI = 0.7978845608028654
GELU_TANH_CUBIC = 0.044715


# --- batched_matmul -------------------------------------------------------------
@njit(**_KERNEL)
def _bmm(gemm, a, b, out, trans_a, trans_b, beta, first, end):
    """out[s] = op(a[s]) @ op(b[s]) + beta out[s] for s in first..end-1 (C-contiguous
    stacks: each matrix's leading dimension is its last axis)."""
    m, n = out.shape[1], out.shape[2]
    k = a.shape[1] if trans_a else a.shape[2]
    one, beta = out.dtype.type(1), out.dtype.type(beta)
    for s in range(first, end):
        gemm(_ROW_MAJOR, _TRANS if trans_a else _NO_TRANS, _TRANS if trans_b else _NO_TRANS,
             m, n, k, one, a[s].ctypes.data, a.shape[2], b[s].ctypes.data, b.shape[2], beta,
             out[s].ctypes.data, n)


@njit(**_THREADED)
def _bmm_threads(gemm, a, b, out, trans_a, trans_b, beta, pieces):
    for p in prange(pieces):  # each thread its own run of the stack: nothing shared
        first, end = chunk_bounds(p, pieces, out.shape[0])
        _bmm(gemm, a, b, out, trans_a, trans_b, beta, first, end)


def _bmm_pieces(count, macs):
    """How many threads share a stack of ``count`` products (1: one after another)."""
    if not threads.THREADS_USABLE or count < 2 or macs < THREADED_MACS \
            or blas.get_threads() is None:  # (a BLAS we cannot hold to one thread)
        return 1
    return min(get_num_threads(), count)


def _check_bmm(a, b, trans_a, trans_b):
    if a.ndim != 3 or b.ndim != 3:
        raise ValueError(f"batched_matmul expects 3-D arrays, got {a.shape} and {b.shape}")
    s, m, k = (a.shape[0], a.shape[2], a.shape[1]) if trans_a else a.shape
    s_b, k_b, n = (b.shape[0], b.shape[2], b.shape[1]) if trans_b else b.shape
    if s != s_b or k != k_b:
        raise ValueError(f"batched_matmul: op(a) is ({s}, {m}, {k}), op(b) is "
                         f"({s_b}, {k_b}, {n})")
    return s, m, n, k


def batched_matmul(a, b, out=None, trans_a=False, trans_b=False, accumulate=False):
    """out[s] = op(a[s]) @ op(b[s]) (or +=, beta = 1, when accumulate) for a stack of
    S products; op = transpose (of the last two axes) or not. See the module docstring."""
    s, m, n, k = _check_bmm(a, b, trans_a, trans_b)
    if accumulate and out is None:
        raise ValueError("batched_matmul: accumulate=True needs out")
    if out is not None and out.shape != (s, m, n):
        raise ValueError(f"batched_matmul: out has shape {out.shape}, expected {(s, m, n)}")
    dtype = np.result_type(a, b)
    target = out
    if out is None:
        target = np.empty((s, m, n), dtype)
    elif not out.flags.c_contiguous or out.dtype != dtype or np.may_share_memory(out, a) \
            or np.may_share_memory(out, b):
        target = np.empty((s, m, n), dtype)  # computed aside, then placed
    gemm = blas.gemm_routine(dtype) if a.dtype == b.dtype == dtype else None
    if gemm is None or min(s, m, n, k) == 0:
        product = np.matmul(a.swapaxes(1, 2) if trans_a else a,
                            b.swapaxes(1, 2) if trans_b else b)
        if accumulate:
            out += product
            return out
        target[...] = product
    elif not accumulate and blas.LIBRARY == "mkl" and \
            blas.gemm_batched(a.swapaxes(1, 2) if trans_a else a,
                              b.swapaxes(1, 2) if trans_b else b, target):
        pass  # MKL's batched gemm (it threads the stack itself)
    else:
        a, b = contiguous(a), contiguous(b)
        if accumulate and target is not out:
            target[...] = out
        beta = 1.0 if accumulate else 0.0
        pieces = _bmm_pieces(s, s * m * n * k)
        if pieces > 1:
            previous = blas.get_threads()
            blas.set_threads(1)  # the threads split the stack; each product on one
            try:
                _bmm_threads(gemm, a, b, target, bool(trans_a), bool(trans_b), beta, pieces)
            finally:
                blas.set_threads(previous)
        else:
            _bmm(gemm, a, b, target, bool(trans_a), bool(trans_b), beta, 0, s)
    if out is None:
        return target
    if target is not out:
        out[...] = target
    return out


# --- causal softmax ---------------------------------------------------------------
@njit(**_KERNEL)
def _causal_softmax(x, scale, out, first, end):
    """Samples first..end-1 of x (S, Tq, Tk) -> out: the masked softmax of scale * x."""
    tq, tk = x.shape[1], x.shape[2]
    zero = x.dtype.type(0)
    for s in range(first, end):
        for i in range(tq):
            limit = i + tk - tq + 1  # keys 0..limit-1 are visible (limit >= 1)
            m = scale * x[s, i, 0]
            for j in range(1, limit):
                m = maxnum(m, scale * x[s, i, j])
            total = zero
            for j in range(limit):
                e = fast_exp(scale * x[s, i, j] - m)
                out[s, i, j] = e
                total += e
            inv = x.dtype.type(1) / total
            for j in range(limit):
                out[s, i, j] *= inv
            for j in range(limit, tk):
                out[s, i, j] = zero


@njit(**_KERNEL)
def _causal_softmax_grad(grad, p, scale, out, first, end):
    """dS = scale * P * (dP - <dP, P>) over the visible keys, 0 beyond."""
    tq, tk = p.shape[1], p.shape[2]
    zero = p.dtype.type(0)
    for s in range(first, end):
        for i in range(tq):
            limit = i + tk - tq + 1
            dot = zero
            for j in range(limit):
                dot += grad[s, i, j] * p[s, i, j]
            for j in range(limit):
                out[s, i, j] = scale * p[s, i, j] * (grad[s, i, j] - dot)
            for j in range(limit, tk):
                out[s, i, j] = zero


@njit(**_THREADED)
def _causal_softmax_threads(x, scale, out, pieces):
    for p in prange(pieces):
        first, end = chunk_bounds(p, pieces, x.shape[0])
        _causal_softmax(x, scale, out, first, end)


@njit(**_THREADED)
def _causal_softmax_grad_threads(grad, p, scale, out, pieces):
    for t in prange(pieces):
        first, end = chunk_bounds(t, pieces, p.shape[0])
        _causal_softmax_grad(grad, p, scale, out, first, end)


def _rows_out(out, like):
    """(array the kernel writes, out): ``out`` itself when it is C-contiguous (it may
    be one of the inputs: the kernels work element by element in place)."""
    out = out_like(out, like)
    return (out if out.flags.c_contiguous else np.empty(like.shape, like.dtype)), out


def _place(target, out):
    if target is not out:
        out[...] = target
    return out


def _check_causal(x, name):
    if x.ndim != 3 or x.shape[1] > x.shape[2]:
        raise ValueError(f"{name}: expected (S, Tq, Tk) with Tq <= Tk, got {x.shape}")


def causal_softmax_forward(scores, scale, out=None):
    """P = causal softmax of scale * scores (S, Tq, Tk); out may be scores."""
    _check_causal(scores, "causal_softmax_forward")
    x = contiguous(scores)
    target, out = _rows_out(out, x)
    if x.size:
        scale = x.dtype.type(scale)
        pieces = thread_chunks(x.size, x.shape[0])
        if pieces > 1:
            _causal_softmax_threads(x, scale, target, pieces)
        else:
            _causal_softmax(x, scale, target, 0, x.shape[0])
    return _place(target, out)


def causal_softmax_backward(grad, p, scale, out=None):
    """dL/dscores from dL/dP and P (S, Tq, Tk); out may be grad."""
    _check_causal(p, "causal_softmax_backward")
    grad, p = contiguous(grad), contiguous(p)
    target, out = _rows_out(out, p)
    if p.size:
        scale = p.dtype.type(scale)
        pieces = thread_chunks(p.size, p.shape[0])
        if pieces > 1:
            _causal_softmax_grad_threads(grad, p, scale, target, pieces)
        else:
            _causal_softmax_grad(grad, p, scale, target, 0, p.shape[0])
    return _place(target, out)


# --- bias + GELU ------------------------------------------------------------------
# One element of each: backend/scalar/activations.py, shared with CUDA.
_gelu_forward_one = scalar_function(activations.gelu_forward)
_gelu_backward_one = scalar_function(activations.gelu_backward)
_gelu_tanh_forward_one = scalar_function(activations.gelu_tanh_forward)
_gelu_tanh_backward_one = scalar_function(activations.gelu_tanh_backward)


# Both forms in the array's dtype: in float32 with fastmath.py's vectorisable erf,
# exp and tanh (libm's erf, a scalar call, made this the slowest kernel of a GPT
# step), in float64 with libm's.
@njit(**_KERNEL)
def _bias_gelu_erf(x, bias, grad, backward, out, first, end):
    f = x.dtype.type
    half, one, sqrt_half, inv_sqrt_2pi = f(0.5), f(1), f(_SQRT_HALF), f(_INV_SQRT_2PI)
    for r in range(first, end):
        for c in range(x.shape[1]):
            u = x[r, c] + bias[c]
            if backward:
                out[r, c] = _gelu_backward_one(grad[r, c], u, half, one, sqrt_half,
                                               inv_sqrt_2pi)
            else:
                out[r, c] = _gelu_forward_one(u, half, one, sqrt_half)


@njit(**_KERNEL)
def _bias_gelu_tanh(x, bias, grad, backward, out, first, end):
    f = x.dtype.type
    half, one, c0, c1 = f(0.5), f(1), f(SQRT_2_OVER_PI), f(GELU_TANH_CUBIC)
    c3 = f(3 * GELU_TANH_CUBIC)
    for r in range(first, end):
        for c in range(x.shape[1]):
            u = x[r, c] + bias[c]
            if backward:
                out[r, c] = _gelu_tanh_backward_one(grad[r, c], u, half, one, c0, c1, c3)
            else:
                out[r, c] = _gelu_tanh_forward_one(u, half, one, c0, c1)


@njit(**_THREADED)
def _bias_gelu_erf_threads(x, bias, grad, backward, out, pieces):
    for p in prange(pieces):
        first, end = chunk_bounds(p, pieces, x.shape[0])
        _bias_gelu_erf(x, bias, grad, backward, out, first, end)


@njit(**_THREADED)
def _bias_gelu_tanh_threads(x, bias, grad, backward, out, pieces):
    for p in prange(pieces):
        first, end = chunk_bounds(p, pieces, x.shape[0])
        _bias_gelu_tanh(x, bias, grad, backward, out, first, end)


def _bias_gelu(x, bias, grad, approximate, out):
    x, bias = contiguous(x), contiguous(bias)
    if x.shape[-1:] != bias.shape:
        raise ValueError(f"bias_gelu: x {x.shape} and bias {bias.shape} differ")
    target, out = _rows_out(out, x)
    backward = grad is not None
    rows = x.reshape(-1, bias.shape[0]) if x.ndim != 2 else x
    grad = contiguous(grad).reshape(rows.shape) if backward else rows
    written = target.reshape(rows.shape)
    if rows.size:
        pieces = thread_chunks(rows.size, rows.shape[0])
        kernels = (_bias_gelu_tanh, _bias_gelu_tanh_threads) if approximate else \
            (_bias_gelu_erf, _bias_gelu_erf_threads)
        if pieces > 1:
            kernels[1](rows, bias, grad, backward, written, pieces)
        else:
            kernels[0](rows, bias, grad, backward, written, 0, rows.shape[0])
    return _place(target, out)


def bias_gelu_forward(x, bias, approximate=False, out=None):
    """GELU(x + bias), x (M, F), bias (F,); the tanh form when approximate."""
    return _bias_gelu(x, bias, None, approximate, out)


def bias_gelu_backward(grad, x, bias, approximate=False, out=None):
    """grad * GELU'(x + bias) = dL/dx (and dL/d(x + bias))."""
    return _bias_gelu(x, bias, grad, approximate, out)


# --- moving heads -----------------------------------------------------------------
# Rows (n, t) of the (N, T, G, H, D) side, first..end-1; the D-long copies run on
# unsigned indices, which LLVM vectorises (conv.py).
@njit(**_KERNEL)
def _move_heads(rows, heads_side, split, first, end):
    """Between rows (N, T, G, H, D) and heads_side (G, N * H, T, D):
    heads_side[g, n H + h, t, d] = rows[n, t, g, h, d] when split, the reverse when not."""
    steps, groups, heads, width = rows.shape[1], rows.shape[2], rows.shape[3], rows.shape[4]
    for row in range(first, end):
        n, t = row // steps, row % steps
        for g in range(groups):
            for h in range(heads):
                if split:
                    for d in range(uint64(width)):
                        heads_side[g, n * heads + h, t, d] = rows[n, t, g, h, d]
                else:
                    for d in range(uint64(width)):
                        rows[n, t, g, h, d] = heads_side[g, n * heads + h, t, d]


@njit(**_THREADED)
def _move_heads_threads(rows, heads_side, split, pieces):
    for p in prange(pieces):
        first, end = chunk_bounds(p, pieces, rows.shape[0] * rows.shape[1])
        _move_heads(rows, heads_side, split, first, end)


def _out(out, shape, dtype):
    if out is None:
        return np.empty(shape, dtype)
    if out.shape != tuple(shape) or out.dtype != dtype:
        raise ValueError(f"out is {out.dtype} {out.shape}, expected {np.dtype(dtype)} "
                         f"{tuple(shape)}")
    return out


def _move(split, x, out, five_shape, out_shape):
    """Run a heads copy (``split``: x is the (N, T, ...) side) into out or a contiguous
    stand-in; five_shape is the (N, T, G, H, D) view of that side."""
    out = _out(out, out_shape, x.dtype)
    target = out if out.flags.c_contiguous and not np.may_share_memory(out, x) else \
        np.empty(out_shape, x.dtype)
    if x.size:
        rows_side, heads_side = (x.reshape(five_shape), target) if split else \
            (target.reshape(five_shape), x)
        rows = five_shape[0] * five_shape[1]
        pieces = thread_chunks(x.size, rows)
        if pieces > 1:
            _move_heads_threads(rows_side, heads_side, split, pieces)
        else:
            _move_heads(rows_side, heads_side, split, 0, rows)
    return _place(target, out)


def split_heads(x, groups, num_heads, out=None):
    """x (N, T, G * H * D) -> (G, N * H, T, D), contiguous."""
    n, t, width = x.shape
    if width % (groups * num_heads):
        raise ValueError(f"split_heads: last axis {width} is not groups ({groups}) x "
                         f"num_heads ({num_heads}) x head size")
    d = width // (groups * num_heads)
    return _move(True, contiguous(x), out, (n, t, groups, num_heads, d),
                 (groups, n * num_heads, t, d))


def merge_heads(x, batch, out=None):
    """x (G, N * H, T, D) -> (N, T, G * H * D), contiguous."""
    g, s, t, d = x.shape
    if s % batch:
        raise ValueError(f"merge_heads: axis 1 ({s}) is not a multiple of batch ({batch})")
    h = s // batch
    return _move(False, contiguous(x), out, (batch, t, g, h, d), (batch, t, g * h * d))


# --- append_steps -----------------------------------------------------------------
@njit(**_KERNEL)
def _append(cache, new, out, copy_cache, first, end):
    """out[s, :Ta] = cache[s] (unless it is there already), out[s, Ta:] = new[s]."""
    ta, tb = cache.shape[1], new.shape[1]
    for s in range(first, end):
        if copy_cache:
            for t in range(ta):
                for d in range(uint64(cache.shape[2])):
                    out[s, t, d] = cache[s, t, d]
        for t in range(tb):
            for d in range(uint64(new.shape[2])):
                out[s, ta + t, d] = new[s, t, d]


@njit(**_THREADED)
def _append_threads(cache, new, out, copy_cache, pieces):
    for p in prange(pieces):
        first, end = chunk_bounds(p, pieces, out.shape[0])
        _append(cache, new, out, copy_cache, first, end)


def _is_prefix(cache, out):
    """Whether ``cache`` is ``out[:, :Ta]`` (a preallocated buffer being filled)."""
    return cache.size and cache.ctypes.data == out.ctypes.data and \
        cache.strides == out.strides


def append_steps(cache, new, out=None):
    """cache (S, Ta, D), new (S, Tb, D) -> (S, Ta + Tb, D), concatenated along time.

    ``out`` may hold ``cache`` as its first Ta steps (``cache = out[:, :Ta]`` of a
    buffer allocated for the whole generation): then only ``new`` is copied, and a
    generated token costs O(Tb) instead of O(Ta + Tb).
    """
    if cache.ndim != 3 or new.ndim != 3 or cache.shape[::2] != new.shape[::2]:
        raise ValueError(f"append_steps: cache {cache.shape} and new {new.shape} differ "
                         f"outside axis 1")
    s, ta, d = cache.shape
    out = _out(out, (s, ta + new.shape[1], d), np.result_type(cache, new))
    copy_cache = not _is_prefix(cache, out)
    new = contiguous(new) if not np.may_share_memory(new, out) else new.copy()
    if copy_cache:
        cache = contiguous(cache) if not np.may_share_memory(cache, out) else cache.copy()
    if out.size:
        pieces = thread_chunks(out.size, s)
        if pieces > 1:
            _append_threads(cache, new, out, copy_cache, pieces)
        else:
            _append(cache, new, out, copy_cache, 0, s)
    return out
