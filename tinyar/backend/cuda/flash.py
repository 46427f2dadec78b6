"""Memory-efficient ("flash") causal attention: one kernel forward, one backward.

The math and shapes are in ``backend/ops/flash.py``: q (S, Tq, D); k, v
(S, Tk, D); query i attends keys j <= i + off, off = Tk - Tq. The CPU version
(``backend/cpu/flash.py``) walks the same tiles.

Forward, ``_forward``: a block of TILE threads takes one head s and TILE
queries, one query a thread (q_i, pre-scaled, and its accumulator a_i in
registers). For each tile of TILE keys that the block's queries may attend, the
threads copy k and v of the tile into shared memory together, wait
(``syncthreads``), and each runs the online softmax over the tile for its row:

    s_ij = scale q_i . k_j;  if s_ij > m_i:  a_i, l_i *= exp(m_i - s_ij), m_i = s_ij
    p = exp(s_ij - m_i);     l_i += p;       a_i += p v_j

then o_i = a_i / l_i and lse_i = m_i + log l_i. Only (TILE, D) tiles of k and
v are ever held; no (Tq, Tk) matrix.

Backward, ``_backward``: one launch whose grid has two kinds of blocks, so that
every output element has exactly one writer (no atomics, no zeroing pass,
deterministic results):

* query blocks (the first nq = ceil(Tq / TILE) of each head): a thread owns
  dq_i and walks the key tiles, recomputing P_ij = exp(scale q_i . k_j - lse_i)
  and dS_ij = P_ij (dO_i . v_j - D_i), D_i = dO_i . o_i:  dq_i = scale sum_j dS_ij k_j;
* key blocks (the next nk = ceil(Tk / TILE)): a thread owns dk_j, dv_j and walks
  the query tiles that attend its keys (q, dO, lse and D of the tile in shared
  memory):  dv_j = sum_i P_ij dO_i,  dk_j = scale sum_i dS_ij q_i.

The price is computing P and dS twice (once per kind of block), against
atomics on dq (one per query, dimension and key block) and a launch to zero it.

The block's branch and its tile loops depend on the block only, so all its
threads meet every ``syncthreads``; threads past the last row still help load.
q, k, v rows of a thread live in local arrays of MAX_HEAD_DIM elements (numba
needs their size at compile time): D > MAX_HEAD_DIM is refused.
"""
import math

from numba import cuda

from ._util import SIMULATOR, blocks_for, contiguous, launch, out_like

__all__ = ["flash_attention_forward", "flash_attention_backward"]

if SIMULATOR:  # each simulated thread is a Python thread: tiny blocks, tiny rows
    TILE = 4
    MAX_HEAD_DIM = 8
else:
    TILE = 32           # queries (or keys) a block owns = threads a block = keys a tile
    MAX_HEAD_DIM = 64   # two float64 (TILE, 64) shared tiles: 32 KB of the 48 KB a block gets


@cuda.jit(device=True)
def _dot(a, b, r, d):
    """sum_c a[c] * b[r, c]: a row of a thread against row r of a shared tile."""
    total = a[0] * b[r, 0]  # d >= 1: empty heads launch nothing; keeps the dtype
    for c in range(1, d):
        total += a[c] * b[r, c]
    return total


@cuda.jit(device=True)
def _load_tile(dst_a, dst_b, a, b, s, first, n, d):
    """dst_a[r] = a[s, first + r], dst_b[r] = b[s, first + r] for first + r < n (all threads)."""
    for e in range(cuda.threadIdx.x, TILE * d, cuda.blockDim.x):
        r = e // d
        c = e - r * d
        if first + r < n:
            dst_a[r, c] = a[s, first + r, c]
            dst_b[r, c] = b[s, first + r, c]


@cuda.jit(device=True)
def _keys_of_block(i0, off, tk):
    """One past the last key that queries i0 .. i0 + TILE - 1 attend: min(i0 + TILE + off, tk)
    (no min(): numba 0.68's CUDA target fails to compile it)."""
    end = i0 + TILE + off
    if end > tk:
        end = tk
    return end


@cuda.jit(device=True)
def _keys_of_row(j0, i, off):
    """One past the last key of the tile starting at j0 that query i attends: the tile's
    end or the causal edge i + off, whichever comes first."""
    end = j0 + TILE
    if end > i + off + 1:
        end = i + off + 1
    return end


@cuda.jit
def _forward(q, k, v, scale, o, lse):
    ks = cuda.shared.array((TILE, MAX_HEAD_DIM), q.dtype)
    vs = cuda.shared.array((TILE, MAX_HEAD_DIM), q.dtype)
    qi = cuda.local.array(MAX_HEAD_DIM, q.dtype)
    acc = cuda.local.array(MAX_HEAD_DIM, q.dtype)
    tq, tk, d = q.shape[1], k.shape[1], q.shape[2]
    off = tk - tq
    zero = q.dtype.type(0)
    n_blocks = (tq + TILE - 1) // TILE
    for item in range(cuda.blockIdx.x, q.shape[0] * n_blocks, cuda.gridDim.x):
        s = item // n_blocks
        i0 = (item - s * n_blocks) * TILE
        i = i0 + cuda.threadIdx.x
        active = i < tq
        m = q.dtype.type(-math.inf)
        l = zero
        for c in range(d):
            qi[c] = q[s, i, c] * scale if active else zero
            acc[c] = zero
        for j0 in range(0, _keys_of_block(i0, off, tk), TILE):
            _load_tile(ks, vs, k, v, s, j0, tk, d)
            cuda.syncthreads()
            if active:
                for j in range(j0, _keys_of_row(j0, i, off)):
                    sc = _dot(qi, ks, j - j0, d)
                    if sc > m:  # a new max: rescale what was summed under the old one
                        alpha = math.exp(m - sc)
                        l *= alpha
                        for c in range(d):
                            acc[c] *= alpha
                        m = sc
                    p = math.exp(sc - m)
                    l += p
                    for c in range(d):
                        acc[c] += p * vs[j - j0, c]
            cuda.syncthreads()  # everyone is done with the tile before the next load
        if active:
            for c in range(d):
                o[s, i, c] = acc[c] / l
            lse[s, i] = m + math.log(l)


@cuda.jit
def _backward(grad, q, k, v, o, lse, scale, dq, dk, dv):
    tile_a = cuda.shared.array((TILE, MAX_HEAD_DIM), q.dtype)  # k (query blocks) or q
    tile_b = cuda.shared.array((TILE, MAX_HEAD_DIM), q.dtype)  # v (query blocks) or dO
    tile_lse = cuda.shared.array(TILE, q.dtype)
    tile_d = cuda.shared.array(TILE, q.dtype)
    row_a = cuda.local.array(MAX_HEAD_DIM, q.dtype)
    row_b = cuda.local.array(MAX_HEAD_DIM, q.dtype)
    acc_a = cuda.local.array(MAX_HEAD_DIM, q.dtype)
    acc_b = cuda.local.array(MAX_HEAD_DIM, q.dtype)
    tq, tk, d = q.shape[1], k.shape[1], q.shape[2]
    off = tk - tq
    zero = q.dtype.type(0)
    nq = (tq + TILE - 1) // TILE
    per_head = nq + (tk + TILE - 1) // TILE
    t = cuda.threadIdx.x
    for item in range(cuda.blockIdx.x, q.shape[0] * per_head, cuda.gridDim.x):
        s = item // per_head
        b = item - s * per_head
        if b < nq:
            # --- a query block: thread t owns dq_i --------------------------------
            i0 = b * TILE
            i = i0 + t
            active = i < tq
            lse_i = lse[s, i] if active else zero
            d_i = zero
            for c in range(d):
                row_a[c] = q[s, i, c] if active else zero
                row_b[c] = grad[s, i, c] if active else zero
                acc_a[c] = zero
                if active:
                    d_i += row_b[c] * o[s, i, c]
            for j0 in range(0, _keys_of_block(i0, off, tk), TILE):
                _load_tile(tile_a, tile_b, k, v, s, j0, tk, d)
                cuda.syncthreads()
                if active:
                    for j in range(j0, _keys_of_row(j0, i, off)):
                        p = math.exp(scale * _dot(row_a, tile_a, j - j0, d) - lse_i)
                        ds = p * (_dot(row_b, tile_b, j - j0, d) - d_i)
                        for c in range(d):
                            acc_a[c] += ds * tile_a[j - j0, c]
                cuda.syncthreads()
            if active:
                for c in range(d):
                    dq[s, i, c] = scale * acc_a[c]
        else:
            # --- a key block: thread t owns dk_j and dv_j ----------------------------
            j0 = (b - nq) * TILE
            j = j0 + t
            active = j < tk
            for c in range(d):
                row_a[c] = k[s, j, c] if active else zero
                row_b[c] = v[s, j, c] if active else zero
                acc_a[c] = zero
                acc_b[c] = zero
            first = j0 - off  # the first query that attends key j0
            if first < 0:
                first = 0
            for i0 in range(first - first % TILE, tq, TILE):
                _load_tile(tile_a, tile_b, q, grad, s, i0, tq, d)
                if i0 + t < tq:  # thread t brings lse and D of row t of the tile
                    tile_lse[t] = lse[s, i0 + t]
                    d_i = zero
                    for c in range(d):
                        d_i += grad[s, i0 + t, c] * o[s, i0 + t, c]
                    tile_d[t] = d_i
                cuda.syncthreads()
                if active:
                    for r in range(TILE):
                        i = i0 + r
                        if i < tq and j <= i + off:
                            p = math.exp(scale * _dot(row_a, tile_a, r, d) - tile_lse[r])
                            ds = p * (_dot(row_b, tile_b, r, d) - tile_d[r])
                            for c in range(d):
                                acc_b[c] += p * tile_b[r, c]
                                acc_a[c] += ds * tile_a[r, c]
                cuda.syncthreads()
            if active:
                for c in range(d):
                    dk[s, j, c] = scale * acc_a[c]
                    dv[s, j, c] = acc_b[c]


def _check(q, k, v):
    if q.ndim != 3 or k.ndim != 3 or tuple(k.shape) != tuple(v.shape) \
            or q.shape[0] != k.shape[0] or q.shape[2] != k.shape[2] or q.shape[1] > k.shape[1]:
        raise ValueError(f"flash attention: expected q (S, Tq, D) and k, v (S, Tk, D) with "
                         f"Tq <= Tk, got q {tuple(q.shape)}, k {tuple(k.shape)}, "
                         f"v {tuple(v.shape)}")
    if q.shape[2] > MAX_HEAD_DIM:
        raise ValueError(f"flash attention on CUDA: head dimension D={q.shape[2]} is over "
                         f"the kernels' MAX_HEAD_DIM={MAX_HEAD_DIM}")


def flash_attention_forward(q, k, v, scale, out=None):
    q, k, v = contiguous(q), contiguous(k), contiguous(v)
    _check(q, k, v)
    o = out_like(out, q)
    lse = out_like(None, q, shape=q.shape[:2])
    if q.size:
        items = q.shape[0] * -(-q.shape[1] // TILE)
        launch(_forward, blocks_for(items, 1), TILE, q, k, v, q.dtype.type(scale), o, lse)
    return o, lse


def flash_attention_backward(grad, q, k, v, o, lse, scale, out_q=None, out_k=None, out_v=None):
    grad, q, k, v, o, lse = (contiguous(a) for a in (grad, q, k, v, o, lse))
    _check(q, k, v)
    dq, dk, dv = out_like(out_q, q), out_like(out_k, k), out_like(out_v, v)
    if k.size:  # with Tq = 0 the key blocks write the zeros dk, dv are
        items = q.shape[0] * (-(-q.shape[1] // TILE) + -(-k.shape[1] // TILE))
        launch(_backward, blocks_for(items, 1), TILE, grad, q, k, v, o, lse,
               q.dtype.type(scale), dq, dk, dv)
    return dq, dk, dv
