"""Recurrent layers on the CPU: per time step one BLAS product and ONE fused gate kernel.

What runs where (``nn/recurrent.py`` has the math and does the big products)::

    forward, per layer
        A = X W_ih^T                  one GEMM over all T*N rows            (the layer)
        for t = 0 .. T-1:                                                   (this file)
            A_t += h_{t-1} W_hh^T     BLAS gemm, beta = 1, in place
            gates, c_t, h_t <- A_t + b       ONE fused kernel
    backward, per layer
        for t = T-1 .. 0:                                                   (this file)
            dA_t, dc_{t-1}, db += ...        ONE fused kernel
            dh_{t-1} += dA_t W_hh     BLAS gemm, beta = 1, in place
        dW_ih += dA^T X, dW_hh += dA^T H_prev, dX = dA W_ih   one GEMM each (the layer)

Design choices, measured on the 2-core development machine (Xeon, AVX-512;
2-layer LSTM, H = 256, batch 32, T = 128; ``benchmarks/bench_lstm.py``):

* **The time loop is compiled.** ``_lstm_forward_loop`` and its siblings run
  all T steps in one ``@njit`` call: Numba calls the BLAS ``gemm`` through a
  ctypes function pointer passed as an argument (``blas.py`` finds it,
  ``gemm.py`` wraps the calls; as an argument, not a global, it is looked up
  at run time and the kernel can be cached). Versus a Python loop calling
  NumPy and the kernels, this saves ~10 us per step, ~1.5 ms per layer and
  direction. Without a BLAS that Numba can call, the same loop runs in
  Python (``matmul``).
* **Time-major buffers.** A layer keeps (T, N, G*H) and (T+1, N, H) arrays,
  so the slice of step t is one contiguous (N, G*H) block that BLAS reads and
  writes in place, and the same buffers reshape to (T*N, ...) matrices for
  the big weight-gradient products. (A feature-major layout, (G*H, T*N), makes
  an isolated step's product ~20 % faster, W (4H, H) @ h^T (H, N); inside the
  loop the gain shrank to ~8 % forward, ~2 % backward, and the kernels over
  strided (G*H, N) blocks lost more than that.)
* **In place, nothing allocated in the loop.** The preactivations of step t
  are overwritten by the gate activations (forward) and then by their
  gradients (backward); the recurrent product is added straight into them by
  ``gemm`` with beta = 1. The bias gradients are summed by the backward
  kernels as they go, instead of a pass over the (T*N, G*H) gradient after.
* **The gate math of a step is one kernel**: sigmoid, tanh, the cell update,
  the saved activations, in one pass, with ``fast_sigmoid`` / ``fast_tanh``
  (``fastmath.py``) in float32 and the exact functions in float64. Two
  things keep its loop vectorised (measured 5x and 3x): 1-D row views of the
  gate blocks (indexing gates[n, H + j] of one 2-D array made LLVM give up),
  and ``error_model="numpy"`` (Python's error model adds a division-by-zero
  branch inside ``fast_tanh``). Forward step: ~15 us for N*H = 8192 units
  when its data is in cache, ~27 us inside the loop; backward ~6 / ~23 us
  (it reads the activations saved ~60 ms earlier, from memory).
* **W_hh^T is copied once per sequence** to a contiguous (H, 4H) array:
  OpenBLAS computes h (N, H) @ W^T ~30 % faster from it than from the
  transposed view (MKL ~20 %, ~45 % for 16 rows). A short sequence
  (``COPY_MIN_STEPS``; generation runs one step at a time) reads W_hh
  transposed instead, as the copy would cost more than it saves. The backward
  product dA (N, 4H) @ W_hh (4H, H) reads W_hh as it is.

Where the time goes (~110 ms per training step, float32): the 512 per-step
products ~47 ms (86 us forward, 98 us backward: BLAS at ~190 GFLOP/s on such
thin matrices), the big products ~45 ms (~300 GFLOP/s), the gate kernels
~13 ms, layout copies and the rest ~3 ms (OpenBLAS; serial kernels).

* **Threads: one block of batch rows each.** Where kernels may share the
  BLAS's threads (MKL on GNU OpenMP, ``backend/cpu/threads.py``), each thread runs
  the whole recurrence of its own rows, products and gate kernels alike, with
  no synchronisation until the end; otherwise the loop is serial and BLAS
  threads each product. For the word LM's LSTM (H = 256, batch 32, T = 35)
  the embedding + LSTM step went from 14.0 to 12.3 ms: both cores now also run
  the gate kernels, and 35 x 2 thread launches per layer became 2.
"""
import numpy as np
from numba import njit, prange

from ..scalar import rnn as scalar_rnn
from ._util import FASTMATH, chunk_bounds, contiguous, scalar_function, thread_chunks
from .blas import gemm_routine
from .gemm import gemm_nn, gemm_weight_t
from .linalg import matmul

__all__ = ["rnn_cell_forward", "rnn_cell_backward", "rnn_sequence_forward",
           "rnn_sequence_backward", "lstm_cell_forward", "lstm_cell_backward",
           "lstm_sequence_forward", "lstm_sequence_backward", "gru_cell_forward",
           "gru_cell_backward", "gru_sequence_forward", "gru_sequence_backward", "swap_axes01"]


# --- kernels: one time step, (N, G*H) rows --------------------------------------------
# Each kernel walks the rows n and, within a row, the hidden units j through
# 1-D views of the gate blocks (a_i = gates[n, 0:H], a_f = gates[n, H:2H], ...).
# Written so, LLVM vectorises the loop over j; indexing gates[n, H + j] in one
# 2-D array instead made it fall back to scalar code (5x slower, measured).
# error_model="numpy" drops Python's division-by-zero check inside fast_tanh,
# whose branch would also keep the loop scalar.
_KERNEL = dict(cache=True, fastmath=FASTMATH, error_model="numpy")
_THREADED = dict(_KERNEL, parallel=True)


# The gate math of one (row, unit): backend/scalar/rnn.py, shared with CUDA.
_activate = scalar_function(scalar_rnn.activate)
_activate_backward = scalar_function(scalar_rnn.activate_backward)
_lstm_cell = scalar_function(scalar_rnn.lstm_cell)
_lstm_cell_backward = scalar_function(scalar_rnn.lstm_cell_backward)
_gru_cell = scalar_function(scalar_rnn.gru_cell)
_gru_cell_backward = scalar_function(scalar_rnn.gru_cell_backward)


@njit(**_KERNEL)
def _rnn_step(pre, bias, h, relu):
    """h = act(h + pre + bias), in place: h holds h_{t-1} W_hh^T on entry."""
    rows, hidden = h.shape
    zero = h.dtype.type(0)
    for n in range(rows):
        p, y = pre[n], h[n]
        for j in range(hidden):
            y[j] = _activate(y[j] + p[j] + bias[j], relu, zero)


@njit(**_KERNEL)
def _rnn_step_backward(grad_h, h, grad_pre, relu, grad_bias):
    """grad_pre = grad_h * act'(pre), from h = act(pre); grad_bias += its column sums."""
    rows, hidden = h.shape
    zero, one = h.dtype.type(0), h.dtype.type(1)
    for n in range(rows):
        g, y, d = grad_h[n], h[n], grad_pre[n]
        for j in range(hidden):
            d[j] = _activate_backward(g[j], y[j], relu, zero, one)
            grad_bias[j] += d[j]


@njit(**_KERNEL)
def _lstm_step(gates, bias, c_prev, h, c):
    """gates (+ bias): preactivations [i, f, g, o] in, activations out; writes h and c."""
    rows, hidden = c.shape
    H = hidden
    one = c.dtype.type(1)
    b_i, b_f, b_g, b_o = bias[:H], bias[H:2 * H], bias[2 * H:3 * H], bias[3 * H:]
    for n in range(rows):
        a_i, a_f, a_g, a_o = gates[n, :H], gates[n, H:2 * H], gates[n, 2 * H:3 * H], \
            gates[n, 3 * H:]
        cp, cn, hn = c_prev[n], c[n], h[n]
        for j in range(hidden):
            a_i[j], a_f[j], a_g[j], a_o[j], cn[j], hn[j] = _lstm_cell(
                a_i[j] + b_i[j], a_f[j] + b_f[j], a_g[j] + b_g[j], a_o[j] + b_o[j], cp[j], one)


@njit(**_KERNEL)
def _lstm_step_backward(grad_h, grad_c, gates, c_prev, c, grad_bias):
    """gates: activations in, dL/d(preactivations) out; grad_c: dL/dc_t in, dL/dc_{t-1} out;
    grad_bias += the column sums of dL/d(preactivations)."""
    rows, hidden = c.shape
    H = hidden
    one = c.dtype.type(1)
    gb_i, gb_f, gb_g, gb_o = grad_bias[:H], grad_bias[H:2 * H], grad_bias[2 * H:3 * H], \
        grad_bias[3 * H:]
    for n in range(rows):
        a_i, a_f, a_g, a_o = gates[n, :H], gates[n, H:2 * H], gates[n, 2 * H:3 * H], \
            gates[n, 3 * H:]
        dh, dc_n, cp, cn = grad_h[n], grad_c[n], c_prev[n], c[n]
        for j in range(hidden):
            d_i, d_f, d_g, d_o, dc_n[j] = _lstm_cell_backward(
                dh[j], dc_n[j], a_i[j], a_f[j], a_g[j], a_o[j], cp[j], cn[j], one)
            a_i[j], a_f[j], a_g[j], a_o[j] = d_i, d_f, d_g, d_o
            gb_i[j] += d_i
            gb_f[j] += d_f
            gb_g[j] += d_g
            gb_o[j] += d_o


@njit(**_KERNEL)
def _gru_step(gates, b_ih, gh, b_hh, h_prev, h, hn):
    """gates (+ b_ih): x W_ih^T in, activations [r, z, n] out; gh = h_prev W_hh^T."""
    rows, hidden = h.shape
    H = hidden
    one = h.dtype.type(1)
    bx_r, bx_z, bx_n = b_ih[:H], b_ih[H:2 * H], b_ih[2 * H:]
    bh_r, bh_z, bh_n = b_hh[:H], b_hh[H:2 * H], b_hh[2 * H:]
    for n in range(rows):
        x_r, x_z, x_n = gates[n, :H], gates[n, H:2 * H], gates[n, 2 * H:]
        h_r, h_z, h_n = gh[n, :H], gh[n, H:2 * H], gh[n, 2 * H:]
        hp, ho, hn_n = h_prev[n], h[n], hn[n]
        for j in range(hidden):
            ghn = h_n[j] + bh_n[j]
            x_r[j], x_z[j], x_n[j], ho[j] = _gru_cell(
                x_r[j] + bx_r[j], x_z[j] + bx_z[j], x_n[j] + bx_n[j], h_r[j] + bh_r[j],
                h_z[j] + bh_z[j], ghn, hp[j], one)
            hn_n[j] = ghn


@njit(**_KERNEL)
def _gru_step_backward(grad_h, gates, hn, h_prev, grad_gh, grad_h_prev, accumulate, grad_b_ih,
                       grad_b_hh):
    """gates: activations in, dL/d(gx) out; writes dL/d(gh) and the direct dL/dh_prev = dh z;
    grad_b_ih, grad_b_hh += the column sums of dL/d(gx), dL/d(gh)."""
    rows, hidden = h_prev.shape
    H = hidden
    one = h_prev.dtype.type(1)
    gx_r, gx_z, gx_n = grad_b_ih[:H], grad_b_ih[H:2 * H], grad_b_ih[2 * H:]
    gh_r, gh_z, gh_n = grad_b_hh[:H], grad_b_hh[H:2 * H], grad_b_hh[2 * H:]
    for n in range(rows):
        a_r, a_z, a_n = gates[n, :H], gates[n, H:2 * H], gates[n, 2 * H:]
        d_hr, d_hz, d_hn = grad_gh[n, :H], grad_gh[n, H:2 * H], grad_gh[n, 2 * H:]
        dh, hp, ghn, dhp = grad_h[n], h_prev[n], hn[n], grad_h_prev[n]
        for j in range(hidden):
            r = a_r[j]
            d_r, d_z, d_n, direct = _gru_cell_backward(dh[j], r, a_z[j], a_n[j], ghn[j], hp[j],
                                                       one)
            a_r[j], a_z[j], a_n[j] = d_r, d_z, d_n
            d_hr[j], d_hz[j], d_hn[j] = d_r, d_z, d_n * r
            gx_r[j] += d_r
            gx_z[j] += d_z
            gx_n[j] += d_n
            gh_r[j] += d_r
            gh_z[j] += d_z
            gh_n[j] += d_n * r
            if accumulate:
                dhp[j] += direct
            else:
                dhp[j] = direct


# --- helpers --------------------------------------------------------------------------
def _out(out, shape, dtype):
    """``out`` (checked) or a new array."""
    if out is None:
        return np.empty(shape, dtype)
    if out.shape != tuple(shape) or not out.flags.c_contiguous:
        raise ValueError(f"out must be C-contiguous of shape {tuple(shape)}, got {out.shape}")
    return out


def _into(out, values):
    """Copy ``values`` into ``out`` (allocated when None) unless they are the same array."""
    if out is None:
        return np.array(values, order="C")
    if out is not values:
        out[...] = values
    return out


def _inplace(*arrays):
    for a in arrays:
        if not a.flags.c_contiguous:
            raise ValueError("arrays updated in place must be C-contiguous")


def _relu_flag(nonlinearity):
    if nonlinearity not in ("tanh", "relu"):
        raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
    return nonlinearity == "relu"


# --- time loops: the whole recurrence of one layer in one compiled call ------------
# Each loop runs the recurrence of the batch rows r0:r1. Rows never mix (row n
# of h_t depends only on row n of h_{t-1}), so the threaded variants give
# each thread its own block of rows for the whole sequence, with no
# synchronisation inside it; inside the prange MKL runs its products
# single-threaded. Only the bias gradients are shared: each thread sums into
# its own row of ``partials``, added up after.
@njit(**_KERNEL)
def _rnn_forward_loop(gemm, pre, w, w_is_t, bias, h, relu, r0, r1):
    for t in range(pre.shape[0]):
        gemm_weight_t(gemm, h[t, r0:r1], w, w_is_t, h[t + 1, r0:r1], 0.0)  # h[t] W_hh^T
        _rnn_step(pre[t, r0:r1], bias, h[t + 1, r0:r1], relu)


@njit(**_KERNEL)
def _rnn_backward_loop(gemm, h, w_hh, grad_h, grad_pre, grad_bias, relu, r0, r1):
    for t in range(grad_pre.shape[0] - 1, -1, -1):
        _rnn_step_backward(grad_h[t + 1, r0:r1], h[t + 1, r0:r1], grad_pre[t, r0:r1], relu,
                           grad_bias)
        # grad_h[t] += d pre[t] W_hh
        gemm_nn(gemm, grad_pre[t, r0:r1], w_hh, grad_h[t, r0:r1], 1.0)


@njit(**_KERNEL)
def _lstm_forward_loop(gemm, gates, w, w_is_t, bias, h, c, r0, r1):
    for t in range(gates.shape[0]):
        # gates[t] += h[t] W_hh^T
        gemm_weight_t(gemm, h[t, r0:r1], w, w_is_t, gates[t, r0:r1], 1.0)
        _lstm_step(gates[t, r0:r1], bias, c[t, r0:r1], h[t + 1, r0:r1], c[t + 1, r0:r1])


@njit(**_KERNEL)
def _lstm_backward_loop(gemm, gates, c, w_hh, grad_h, grad_c, grad_bias, r0, r1):
    for t in range(gates.shape[0] - 1, -1, -1):
        _lstm_step_backward(grad_h[t + 1, r0:r1], grad_c[r0:r1], gates[t, r0:r1],
                            c[t, r0:r1], c[t + 1, r0:r1], grad_bias)
        # grad_h[t] += d gates[t] W_hh
        gemm_nn(gemm, gates[t, r0:r1], w_hh, grad_h[t, r0:r1], 1.0)


@njit(**_KERNEL)
def _gru_forward_loop(gemm, gates, w, w_is_t, b_ih, b_hh, h, hn, gh, r0, r1):
    for t in range(gates.shape[0]):
        gemm_weight_t(gemm, h[t, r0:r1], w, w_is_t, gh[r0:r1], 0.0)  # gh = h[t] W_hh^T
        _gru_step(gates[t, r0:r1], b_ih, gh[r0:r1], b_hh, h[t, r0:r1], h[t + 1, r0:r1],
                  hn[t, r0:r1])


@njit(**_KERNEL)
def _gru_backward_loop(gemm, gates, hn, h, w_hh, grad_h, grad_gh, grad_b_ih, grad_b_hh, r0, r1):
    for t in range(gates.shape[0] - 1, -1, -1):
        _gru_step_backward(grad_h[t + 1, r0:r1], gates[t, r0:r1], hn[t, r0:r1], h[t, r0:r1],
                           grad_gh[t, r0:r1], grad_h[t, r0:r1], True, grad_b_ih, grad_b_hh)
        # grad_h[t] += d gh[t] W_hh
        gemm_nn(gemm, grad_gh[t, r0:r1], w_hh, grad_h[t, r0:r1], 1.0)


@njit(**_THREADED)
def _rnn_forward_threads(gemm, pre, w, w_is_t, bias, h, relu, pieces):
    for p in prange(pieces):
        r0, r1 = chunk_bounds(p, pieces, h.shape[1])
        _rnn_forward_loop(gemm, pre, w, w_is_t, bias, h, relu, r0, r1)


@njit(**_THREADED)
def _rnn_backward_threads(gemm, h, w_hh, grad_h, grad_pre, partials, relu, pieces):
    for p in prange(pieces):
        r0, r1 = chunk_bounds(p, pieces, h.shape[1])
        _rnn_backward_loop(gemm, h, w_hh, grad_h, grad_pre, partials[p], relu, r0, r1)


@njit(**_THREADED)
def _lstm_forward_threads(gemm, gates, w, w_is_t, bias, h, c, pieces):
    for p in prange(pieces):
        r0, r1 = chunk_bounds(p, pieces, h.shape[1])
        _lstm_forward_loop(gemm, gates, w, w_is_t, bias, h, c, r0, r1)


@njit(**_THREADED)
def _lstm_backward_threads(gemm, gates, c, w_hh, grad_h, grad_c, partials, pieces):
    for p in prange(pieces):
        r0, r1 = chunk_bounds(p, pieces, c.shape[1])
        _lstm_backward_loop(gemm, gates, c, w_hh, grad_h, grad_c, partials[p], r0, r1)


@njit(**_THREADED)
def _gru_forward_threads(gemm, gates, w, w_is_t, b_ih, b_hh, h, hn, gh, pieces):
    for p in prange(pieces):
        r0, r1 = chunk_bounds(p, pieces, h.shape[1])
        _gru_forward_loop(gemm, gates, w, w_is_t, b_ih, b_hh, h, hn, gh, r0, r1)


@njit(**_THREADED)
def _gru_backward_threads(gemm, gates, hn, h, w_hh, grad_h, grad_gh, partials_ih, partials_hh,
                          pieces):
    for p in prange(pieces):
        r0, r1 = chunk_bounds(p, pieces, h.shape[1])
        _gru_backward_loop(gemm, gates, hn, h, w_hh, grad_h, grad_gh, partials_ih[p],
                           partials_hh[p], r0, r1)


# Each thread's block keeps at least this many rows: a thinner block makes its
# per-step product a matrix-vector-like sweep over all of W_hh, which two
# threads would each read.
MIN_ROWS_PER_THREAD = 8


def _pieces(gates):
    """How many row blocks the time loop over ``gates`` (T, N, G*H) runs as: one per
    thread where kernels may share the BLAS's threads (``backend/cpu/threads.py``) and
    the batch is wide enough, else 1 (the serial loop, BLAS threading each product)."""
    return thread_chunks(gates.size, gates.shape[1] // MIN_ROWS_PER_THREAD)


def _partials(pieces, like):
    """One zeroed bias-gradient row per thread."""
    return np.zeros((pieces, like.size), like.dtype)


# From this many time steps on, the forward loop multiplies by a contiguous copy
# of W_hh^T rather than by W_hh read transposed. For H = 256 (W_hh 1024 x 256)
# the copy takes ~280 us and saves, per step of a batch of 32, 12 us with MKL
# (24.8 against 45.1 us for a thread's 16 rows) and 37 us with OpenBLAS; with
# one row (generation) it saves nothing, and one step at a time paid the copy
# every token (~40 % of a generated token's time).
COPY_MIN_STEPS = 16


def _recurrent_weight(w_hh, steps):
    """(w, w_is_t): W_hh^T as a contiguous copy for a long sequence, else W_hh itself."""
    if steps >= COPY_MIN_STEPS:
        return np.ascontiguousarray(w_hh.T), True
    return contiguous(w_hh), False


# --- vanilla RNN ----------------------------------------------------------------------
def _zeros(n, like):
    return np.zeros(n, like.dtype)


def rnn_cell_forward(pre, nonlinearity="tanh", out=None):
    relu = _relu_flag(nonlinearity)
    pre = contiguous(pre)
    out = _out(out, pre.shape, pre.dtype)
    out[...] = 0  # the kernel computes act(out + pre + 0)
    shape = (-1, pre.shape[-1])
    _rnn_step(pre.reshape(shape), _zeros(pre.shape[-1], pre), out.reshape(shape), relu)
    return out


def rnn_cell_backward(grad_h, h, nonlinearity="tanh", out=None):
    relu = _relu_flag(nonlinearity)
    grad_h, h = contiguous(grad_h), contiguous(h)
    out = _out(out, h.shape, h.dtype)
    shape = (-1, h.shape[-1])
    _rnn_step_backward(grad_h.reshape(shape), h.reshape(shape), out.reshape(shape), relu,
                       _zeros(h.shape[-1], h))
    return out


def rnn_sequence_forward(pre, w_hh, bias, h, nonlinearity="tanh"):
    relu = _relu_flag(nonlinearity)
    _inplace(h)
    pre, bias = contiguous(pre), contiguous(bias)
    w, w_is_t = _recurrent_weight(w_hh, pre.shape[0])
    gemm = gemm_routine(h.dtype)
    pieces = _pieces(pre)
    if gemm is not None and pieces > 1:
        _rnn_forward_threads(gemm, pre, w, w_is_t, bias, h, relu, pieces)
        return h
    if gemm is not None:
        _rnn_forward_loop(gemm, pre, w, w_is_t, bias, h, relu, 0, h.shape[1])
        return h
    for t in range(pre.shape[0]):  # the same loop, in Python
        matmul(h[t], w, out=h[t + 1], trans_b=not w_is_t)
        _rnn_step(pre[t], bias, h[t + 1], relu)
    return h


def rnn_sequence_backward(h, w_hh, grad_h, grad_pre, grad_bias, nonlinearity="tanh"):
    relu = _relu_flag(nonlinearity)
    _inplace(grad_h, grad_pre, grad_bias)
    h, w_hh = contiguous(h), contiguous(w_hh)
    gemm = gemm_routine(h.dtype)
    pieces = _pieces(grad_pre)
    if gemm is not None and pieces > 1:
        partials = _partials(pieces, grad_bias)
        _rnn_backward_threads(gemm, h, w_hh, grad_h, grad_pre, partials, relu, pieces)
        grad_bias += partials.sum(axis=0)
        return grad_h, grad_pre, grad_bias
    if gemm is not None:
        _rnn_backward_loop(gemm, h, w_hh, grad_h, grad_pre, grad_bias, relu, 0, h.shape[1])
        return grad_h, grad_pre, grad_bias
    for t in range(grad_pre.shape[0] - 1, -1, -1):
        _rnn_step_backward(grad_h[t + 1], h[t + 1], grad_pre[t], relu, grad_bias)
        matmul(grad_pre[t], w_hh, out=grad_h[t], accumulate=True)
    return grad_h, grad_pre, grad_bias


# --- LSTM ---------------------------------------------------------------------------
def lstm_cell_forward(gates, c_prev, h=None, c=None, acts=None):
    c_prev = contiguous(c_prev)
    acts = _into(acts, gates)
    h = _out(h, c_prev.shape, c_prev.dtype)
    c = _out(c, c_prev.shape, c_prev.dtype)
    _lstm_step(acts, _zeros(acts.shape[-1], acts), c_prev, h, c)
    return h, c, acts


def lstm_cell_backward(grad_h, grad_c, acts, c_prev, c, grad_gates=None, grad_c_prev=None):
    grad_h, c_prev, c = contiguous(grad_h), contiguous(c_prev), contiguous(c)
    grad_gates = _into(grad_gates, acts)
    grad_c_prev = _into(grad_c_prev, grad_c)
    _lstm_step_backward(grad_h, grad_c_prev, grad_gates, c_prev, c,
                        _zeros(acts.shape[-1], acts))
    return grad_gates, grad_c_prev


def lstm_sequence_forward(gates, w_hh, bias, h, c):
    _inplace(gates, h, c)
    bias = contiguous(bias)
    w, w_is_t = _recurrent_weight(w_hh, gates.shape[0])
    gemm = gemm_routine(gates.dtype)
    pieces = _pieces(gates)
    if gemm is not None and pieces > 1:
        _lstm_forward_threads(gemm, gates, w, w_is_t, bias, h, c, pieces)
        return gates, h, c
    if gemm is not None:
        _lstm_forward_loop(gemm, gates, w, w_is_t, bias, h, c, 0, h.shape[1])
        return gates, h, c
    for t in range(gates.shape[0]):  # the same loop, in Python
        matmul(h[t], w, out=gates[t], trans_b=not w_is_t, accumulate=True)
        _lstm_step(gates[t], bias, c[t], h[t + 1], c[t + 1])
    return gates, h, c


def lstm_sequence_backward(gates, c, w_hh, grad_h, grad_c, grad_bias):
    _inplace(gates, grad_h, grad_c, grad_bias)
    c, w_hh = contiguous(c), contiguous(w_hh)
    gemm = gemm_routine(gates.dtype)
    pieces = _pieces(gates)
    if gemm is not None and pieces > 1:
        partials = _partials(pieces, grad_bias)
        _lstm_backward_threads(gemm, gates, c, w_hh, grad_h, grad_c, partials, pieces)
        grad_bias += partials.sum(axis=0)
        return gates, grad_h, grad_c, grad_bias
    if gemm is not None:
        _lstm_backward_loop(gemm, gates, c, w_hh, grad_h, grad_c, grad_bias, 0, c.shape[1])
        return gates, grad_h, grad_c, grad_bias
    for t in range(gates.shape[0] - 1, -1, -1):  # the same loop, in Python
        _lstm_step_backward(grad_h[t + 1], grad_c, gates[t], c[t], c[t + 1], grad_bias)
        matmul(gates[t], w_hh, out=grad_h[t], accumulate=True)
    return gates, grad_h, grad_c, grad_bias


# --- GRU ----------------------------------------------------------------------------
def gru_cell_forward(gx, gh, b_hh, h_prev, h=None, acts=None, hn=None):
    gh, b_hh, h_prev = contiguous(gh), contiguous(b_hh), contiguous(h_prev)
    acts = _into(acts, gx)
    h = _out(h, h_prev.shape, h_prev.dtype)
    hn = _out(hn, h_prev.shape, h_prev.dtype)
    _gru_step(acts, _zeros(acts.shape[-1], acts), gh, b_hh, h_prev, h, hn)
    return h, acts, hn


def gru_cell_backward(grad_h, acts, hn, h_prev, grad_gx=None, grad_gh=None, grad_h_prev=None):
    grad_h, hn, h_prev = contiguous(grad_h), contiguous(hn), contiguous(h_prev)
    grad_gx = _into(grad_gx, acts)
    grad_gh = _out(grad_gh, acts.shape, acts.dtype)
    grad_h_prev = _out(grad_h_prev, h_prev.shape, h_prev.dtype)
    scratch = _zeros(acts.shape[-1], acts)
    _gru_step_backward(grad_h, grad_gx, hn, h_prev, grad_gh, grad_h_prev, False, scratch, scratch)
    return grad_gx, grad_gh, grad_h_prev


def gru_sequence_forward(gates, w_hh, b_ih, b_hh, h, hn):
    _inplace(gates, h, hn)
    b_ih, b_hh = contiguous(b_ih), contiguous(b_hh)
    w, w_is_t = _recurrent_weight(w_hh, gates.shape[0])
    gh = np.empty(gates.shape[1:], gates.dtype)  # h_{t-1} W_hh^T of the current step
    gemm = gemm_routine(gates.dtype)
    pieces = _pieces(gates)
    if gemm is not None and pieces > 1:
        _gru_forward_threads(gemm, gates, w, w_is_t, b_ih, b_hh, h, hn, gh, pieces)
        return gates, h, hn
    if gemm is not None:
        _gru_forward_loop(gemm, gates, w, w_is_t, b_ih, b_hh, h, hn, gh, 0, h.shape[1])
        return gates, h, hn
    for t in range(gates.shape[0]):  # the same loop, in Python
        matmul(h[t], w, out=gh, trans_b=not w_is_t)
        _gru_step(gates[t], b_ih, gh, b_hh, h[t], h[t + 1], hn[t])
    return gates, h, hn


def gru_sequence_backward(gates, hn, h, w_hh, grad_h, grad_gh, grad_b_ih, grad_b_hh):
    _inplace(gates, grad_h, grad_gh, grad_b_ih, grad_b_hh)
    hn, h, w_hh = contiguous(hn), contiguous(h), contiguous(w_hh)
    gemm = gemm_routine(gates.dtype)
    pieces = _pieces(gates)
    if gemm is not None and pieces > 1:
        partials_ih, partials_hh = _partials(pieces, grad_b_ih), _partials(pieces, grad_b_hh)
        _gru_backward_threads(gemm, gates, hn, h, w_hh, grad_h, grad_gh, partials_ih,
                              partials_hh, pieces)
        grad_b_ih += partials_ih.sum(axis=0)
        grad_b_hh += partials_hh.sum(axis=0)
        return gates, grad_h, grad_gh, grad_b_ih, grad_b_hh
    if gemm is not None:
        _gru_backward_loop(gemm, gates, hn, h, w_hh, grad_h, grad_gh, grad_b_ih, grad_b_hh, 0,
                           h.shape[1])
        return gates, grad_h, grad_gh, grad_b_ih, grad_b_hh
    for t in range(gates.shape[0] - 1, -1, -1):  # the same loop, in Python
        _gru_step_backward(grad_h[t + 1], gates[t], hn[t], h[t], grad_gh[t], grad_h[t], True,
                           grad_b_ih, grad_b_hh)
        matmul(grad_gh[t], w_hh, out=grad_h[t], accumulate=True)
    return gates, grad_h, grad_gh, grad_b_ih, grad_b_hh


# --- layout -------------------------------------------------------------------------
def swap_axes01(x, out=None):
    shape = (x.shape[1], x.shape[0]) + tuple(x.shape[2:])
    out = _out(out, shape, x.dtype)
    np.copyto(out, np.swapaxes(x, 0, 1))
    return out
