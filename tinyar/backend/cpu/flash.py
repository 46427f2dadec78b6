"""Memory-efficient ("flash") causal attention: tiles of keys and an online softmax.

The math and shapes are in ``backend/ops/flash.py``. q: (S, Tq, D); k, v:
(S, Tk, D); query i attends keys j <= i + off, off = Tk - Tq. The (Tq, Tk)
score matrix is never stored: only a (BQ, BK) tile of it at a time.

Forward (FlashAttention, Dao et al. 2022). A work item is one head s and a block
of BQ queries; for each tile of BK keys that any of them may attend, each row i
keeps a running max m_i, a running sum l_i and an accumulator a_i (D,):

    s_ij  = scale * q_i . k_j                     for j in the tile, j <= i + off
    m'    = max(m_i, max_j s_ij)
    l_i   = exp(m_i - m') l_i + sum_j exp(s_ij - m')
    a_i   = exp(m_i - m') a_i + sum_j exp(s_ij - m') v_j
    m_i   = m'

and at the end o_i = a_i / l_i, lse_i = m_i + log l_i. Work items run in
parallel (``prange`` over S x query blocks, split into one chunk per thread).

Backward (the recompute of FlashAttention-2's order). A work item is one head:
D_i = dO_i . o_i for its rows, then for each block of BK keys (whose dk, dv rows
stay in cache) the queries that attend them, with P recomputed from lse:

    P_ij = exp(scale q_i . k_j - lse_i),  dS_ij = P_ij (dO_i . v_j - D_i)
    dv_j += P_ij dO_i,   dk_j += dS_ij q_i,   dq_i += dS_ij k_j

(dk, dq are scaled once at the end). dq_i gathers from every key block, so two
key blocks of one head on two threads would race on it: heads run in parallel,
the blocks of a head in order. Stacks of heads are the common case (S = batch x
heads >= the 2 cores here).

Threads: flash work is compute-bound (O(S Tq Tk D) flops on O(S T D) memory), so
it uses every core even beside OpenBLAS (``threads.THREADS_USABLE``); the launch
cost (20-60 us on the workqueue layer) is small next to a head's work.

Measured on the 2-core AMD EPYC, float32, S=48 (12 x 4 heads), D=32, Tq = Tk = T,
forward + backward, median of 20 runs after warm-up, against the naive path in
NumPy (batched matmul q k^T, causal softmax, P v; backward dP = dO v^T, dS,
dq = dS k, dk = dS^T q, dv = P^T dO; it stores the (S, T, T) matrices)::

    T      naive (ms)   flash (ms)   naive / flash
    64        3.0          5.8          0.51
    128       (250)        34           (7.3: a neighbour stalled OpenBLAS)
    256      44.5         78.2          0.57
    512       176          204          0.87
    1024      864          772          1.12

So flash wins from T = 1024 here (and in every round where another process
made OpenBLAS's spinning threads collapse, which the naive path suffers and
flash, with no BLAS call, does not); below that the naive path's BLAS products
(~60 GFLOP/s against ~15 for these loops) outrun its extra memory traffic. Its
real gain is memory: the naive path holds (S, T, T) float32 matrices, 200 MB
each at T = 1024, flash O(S T D). The figures were taken while other processes
shared the 2 cores (alternating rounds): re-measure before relying on them.

Scores of one query against a key tile are computed with the tile transposed,
(D, BK), so the loop over the tile's keys vectorises instead of a short dot
product per key reduced across lanes (not measured apart under the contention
above: an A/B on a quiet machine is still to do).
"""
import math

import numpy as np
from numba import get_num_threads, njit, prange

from . import threads
from ._util import ERROR_MODEL, FASTMATH, chunk_bounds, contiguous, out_like
from .fastmath import fast_exp

__all__ = ["flash_attention_forward", "flash_attention_backward"]

BLOCK_Q = 32  # queries a forward work item keeps (m, l and a (BQ, D) accumulator)
BLOCK_K = 64  # keys a tile holds: a (BQ, BK) score tile, 8 KB in float32


# --- forward -------------------------------------------------------------------
@njit(cache=True, fastmath=FASTMATH, error_model=ERROR_MODEL)
def _transpose_tile(x, s, j0, j1, xt):
    """xt[c, j - j0] = x[s, j, c]: a key tile with keys along the fast axis, so that
    the scores of one query against the whole tile are one vectorised loop."""
    for j in range(j0, j1):
        for c in range(x.shape[2]):
            xt[c, j - j0] = x[s, j, c]


@njit(cache=True, fastmath=FASTMATH, error_model=ERROR_MODEL)
def _forward_block(q, k, v, scale, o, lse, s, i0, i1, m, l, acc, scores, kt):
    """Rows i0:i1 of head s: o[s, i0:i1] and lse[s, i0:i1], one key tile at a time."""
    tq, tk, d = q.shape[1], k.shape[1], q.shape[2]
    off = tk - tq
    zero = q.dtype.type(0)
    for r in range(i1 - i0):
        m[r] = -np.inf
        l[r] = zero
        for c in range(d):
            acc[r, c] = zero
    last_key = i1 - 1 + off  # the last key any row of the block attends
    for j0 in range(0, last_key + 1, BLOCK_K):
        j1 = min(j0 + BLOCK_K, last_key + 1)
        _transpose_tile(k, s, j0, j1, kt)
        for r in range(i1 - i0):
            i = i0 + r
            n = min(j1, i + off + 1) - j0  # keys of the tile row i attends (causal edge)
            if n <= 0:
                continue
            row = scores[r]
            for jj in range(n):
                row[jj] = zero
            for c in range(d):
                qc = scale * q[s, i, c]
                for jj in range(n):
                    row[jj] += qc * kt[c, jj]
            tile_max = -np.inf
            for jj in range(n):
                tile_max = max(tile_max, row[jj])
            m_new = max(m[r], tile_max)
            alpha = fast_exp(m[r] - m_new)  # exp(-inf) = 0 on the first tile
            total = l[r] * alpha
            for c in range(d):
                acc[r, c] *= alpha
            for jj in range(n):
                p = fast_exp(row[jj] - m_new)
                total += p
                for c in range(d):
                    acc[r, c] += p * v[s, j0 + jj, c]
            l[r] = total
            m[r] = m_new
    for r in range(i1 - i0):
        inv = q.dtype.type(1) / l[r]
        for c in range(d):
            o[s, i0 + r, c] = acc[r, c] * inv
        lse[s, i0 + r] = m[r] + math.log(l[r])


@njit(cache=True, fastmath=FASTMATH, error_model=ERROR_MODEL, parallel=True)
def _forward(q, k, v, scale, o, lse, chunks):
    n_blocks = (q.shape[1] + BLOCK_Q - 1) // BLOCK_Q
    items = q.shape[0] * n_blocks  # (head, query block) pairs
    for t in prange(chunks):
        # each chunk allocates its own scratch once: the tile buffers of one item
        m = np.empty(BLOCK_Q, q.dtype)
        l = np.empty(BLOCK_Q, q.dtype)
        acc = np.empty((BLOCK_Q, q.shape[2]), q.dtype)
        scores = np.empty((BLOCK_Q, BLOCK_K), q.dtype)
        kt = np.empty((q.shape[2], BLOCK_K), q.dtype)
        first, end = chunk_bounds(t, chunks, items)
        for item in range(first, end):
            s, b = item // n_blocks, item % n_blocks
            i0 = b * BLOCK_Q
            i1 = min(i0 + BLOCK_Q, q.shape[1])
            _forward_block(q, k, v, scale, o, lse, s, i0, i1, m, l, acc, scores, kt)


# --- backward ------------------------------------------------------------------
@njit(cache=True, fastmath=FASTMATH, error_model=ERROR_MODEL)
def _backward_head(grad, q, k, v, o, lse, scale, dq, dk, dv, s, row_d, kt, vt, p, ds):
    """dq[s], dk[s], dv[s] of head s. Scratch: row_d (Tq,) for D_i; kt, vt (D, BK)
    the key block transposed; p, ds (BK,) one query's row of P and dS."""
    tq, tk, d = q.shape[1], k.shape[1], q.shape[2]
    off = tk - tq
    zero = q.dtype.type(0)
    for i in range(tq):
        dot = zero
        for c in range(d):
            dot += grad[s, i, c] * o[s, i, c]
            dq[s, i, c] = zero
        row_d[i] = dot
    for j0 in range(0, tk, BLOCK_K):
        j1 = min(j0 + BLOCK_K, tk)
        _transpose_tile(k, s, j0, j1, kt)
        _transpose_tile(v, s, j0, j1, vt)
        for j in range(j0, j1):
            for c in range(d):
                dk[s, j, c] = zero
                dv[s, j, c] = zero
        # queries that attend a key of the block: i + off >= j0
        for i in range(max(0, j0 - off), tq):
            n = min(j1, i + off + 1) - j0
            for jj in range(n):  # p <- q_i . k_j, ds <- dO_i . v_j, for the whole block
                p[jj] = zero
                ds[jj] = zero
            for c in range(d):
                qc, gc = q[s, i, c], grad[s, i, c]
                for jj in range(n):
                    p[jj] += qc * kt[c, jj]
                    ds[jj] += gc * vt[c, jj]
            for jj in range(n):
                p[jj] = fast_exp(scale * p[jj] - lse[s, i])
                ds[jj] = p[jj] * (ds[jj] - row_d[i])
            for jj in range(n):
                j = j0 + jj
                for c in range(d):
                    dv[s, j, c] += p[jj] * grad[s, i, c]
                    dk[s, j, c] += ds[jj] * q[s, i, c]
                    dq[s, i, c] += ds[jj] * k[s, j, c]
        for j in range(j0, j1):
            for c in range(d):
                dk[s, j, c] *= scale
    for i in range(tq):
        for c in range(d):
            dq[s, i, c] *= scale


@njit(cache=True, fastmath=FASTMATH, error_model=ERROR_MODEL, parallel=True)
def _backward(grad, q, k, v, o, lse, scale, dq, dk, dv, chunks):
    for t in prange(chunks):
        row_d = np.empty(q.shape[1], q.dtype)
        kt = np.empty((q.shape[2], BLOCK_K), q.dtype)
        vt = np.empty((q.shape[2], BLOCK_K), q.dtype)
        p = np.empty(BLOCK_K, q.dtype)
        ds = np.empty(BLOCK_K, q.dtype)
        first, end = chunk_bounds(t, chunks, q.shape[0])
        for s in range(first, end):
            _backward_head(grad, q, k, v, o, lse, scale, dq, dk, dv, s, row_d, kt, vt, p, ds)


# --- wrappers ------------------------------------------------------------------
def _check(q, k, v):
    if q.ndim != 3 or k.shape != v.shape or k.ndim != 3 or q.shape[0] != k.shape[0] \
            or q.shape[2] != k.shape[2] or q.shape[1] > k.shape[1]:
        raise ValueError(f"flash attention: expected q (S, Tq, D) and k, v (S, Tk, D) with "
                         f"Tq <= Tk, got q {q.shape}, k {k.shape}, v {v.shape}")


def _chunks(pieces):
    """One chunk per thread (at most one per piece); 1 where threads may not run."""
    if not threads.THREADS_USABLE:
        return 1
    return max(1, min(get_num_threads(), pieces))


def flash_attention_forward(q, k, v, scale, out=None):
    q, k, v = contiguous(q), contiguous(k), contiguous(v)
    _check(q, k, v)
    o = out_like(out, q)
    lse = np.empty(q.shape[:2], q.dtype)
    if q.size:
        items = q.shape[0] * -(-q.shape[1] // BLOCK_Q)
        _forward(q, k, v, q.dtype.type(scale), o, lse, _chunks(items))
    return o, lse


def flash_attention_backward(grad, q, k, v, o, lse, scale, out_q=None, out_k=None, out_v=None):
    grad, q, k, v, o, lse = (contiguous(a) for a in (grad, q, k, v, o, lse))
    _check(q, k, v)
    dq, dk, dv = out_like(out_q, q), out_like(out_k, k), out_like(out_v, v)
    if q.size:
        _backward(grad, q, k, v, o, lse, q.dtype.type(scale), dq, dk, dv, _chunks(q.shape[0]))
    elif k.size:  # no queries: nothing reaches the keys
        dk[...] = 0
        dv[...] = 0
    return dq, dk, dv
