"""Matrix products (a tiled GEMM) and the bias sums around them.

``matmul``: out (M, N) = op(a) (M, K) @ op(b) (K, N), op = transpose or not.
A naive kernel (one thread per output, K loads from global memory each)
is memory bound. The tiled kernel below (its body the device function
``block_tile_product``, which ``attention.py``'s batched product calls for
each product of its stack) cuts ``out`` into BM x BN tiles, one per block,
and walks K in steps of BK:

    1. the block's threads copy a BM x BK tile of op(a) and a BK x BN tile of
       op(b) into shared memory (each value read from global memory once
       per block instead of once per thread);
    2. barrier; each thread multiplies the tiles into its own TM x TN patch
       of outputs, held in registers ("register blocking": per k it loads
       TM + TN values from shared memory and does TM * TN multiply-adds);
    3. barrier (the tiles are overwritten next), next k step.

Threads load tile elements in the order in which they lie in memory (along
K for an untransposed a, along M for a transposed one, ...), so that
neighbouring threads read neighbouring addresses. Transposes are not
copied: ``op(a)[i, k]`` is read as ``a[k, i]`` when ``trans_a``. Strided
inputs are read in place (numba indexes them through their strides).

Tile sizes: 64 x 64 x 8 with 4 x 4 per thread (256 threads) on a GPU: a
plain, untuned choice (docs/performance.md: 128 x 128 x 8 with 8 x 8 reached
13.3 TFLOP/s at 4096^3 on an H100, 26 % of cuBLAS). Under the simulator
4 x 4 x 4 with 2 x 2 per thread, so that the 5 x 7 @ 7 x 3 test product
already spans two blocks and two k steps.
"""
from numba import cuda

from ._util import (SIMULATOR, THREADS, as_float, contiguous, device, flat, fill, launch,
                    launch_flat, out_like, updated_in_place)

__all__ = ["matmul", "add_bias", "sum_rows", "axpy"]

if SIMULATOR:
    BM, BN, BK, TM, TN = 4, 4, 4, 2, 2
    SUM_ROWS_CHUNK = 4  # rows per block of sum_rows
else:
    BM, BN, BK, TM, TN = 64, 64, 8, 4, 4
    SUM_ROWS_CHUNK = 256
GEMM_THREADS = (BM // TM) * (BN // TN)


@cuda.jit(device=True)
def block_tile_product(a, b, out, trans_a, trans_b, accumulate, a_tile, b_tile):
    """The calling block's tile of out = op(a) @ op(b) (+= when accumulate), a, b, out 2-D:
    rows blockIdx.y * BM .., columns blockIdx.x * BN .., by steps 1-3 above. The kernel
    allocates the shared tiles (a_tile (BK, BM), b_tile (BK, BN)); they are free again on
    return, so a kernel may call this once per product of a stack (``attention._bmm``)."""
    m, n = out.shape
    k_total = a.shape[0] if trans_a else a.shape[1]
    # a_tile[kk, i] = op(a)[row0 + i, k0 + kk], b_tile[kk, j] = op(b)[k0 + kk, col0 + j]
    acc = cuda.local.array((TM, TN), a.dtype)
    a_reg = cuda.local.array(TM, a.dtype)
    b_reg = cuda.local.array(TN, b.dtype)
    zero = a.dtype.type(0)

    tid = cuda.threadIdx.x
    threads = cuda.blockDim.x
    ti = (tid // (BN // TN)) * TM  # this thread's patch: rows ti.., cols tj.. of the tile
    tj = (tid % (BN // TN)) * TN
    row0 = cuda.blockIdx.y * BM
    col0 = cuda.blockIdx.x * BN
    for i in range(TM):
        for j in range(TN):
            acc[i, j] = zero

    for k0 in range(0, k_total, BK):
        # 1. load the tiles (zeros past the edges of the matrices)
        for e in range(tid, BM * BK, threads):
            if trans_a:  # a is (K, M): consecutive threads along M
                kk, i = e // BM, e % BM
            else:        # a is (M, K): consecutive threads along K
                i, kk = e // BK, e % BK
            r, k = row0 + i, k0 + kk
            value = zero
            if r < m and k < k_total:
                value = a[k, r] if trans_a else a[r, k]
            a_tile[kk, i] = value
        for e in range(tid, BK * BN, threads):
            if trans_b:  # b is (N, K): consecutive threads along K
                j, kk = e // BK, e % BK
            else:        # b is (K, N): consecutive threads along N
                kk, j = e // BN, e % BN
            c, k = col0 + j, k0 + kk
            value = zero
            if c < n and k < k_total:
                value = b[c, k] if trans_b else b[k, c]
            b_tile[kk, j] = value
        cuda.syncthreads()
        # 2. multiply the tiles into the registers
        for kk in range(BK):
            for i in range(TM):
                a_reg[i] = a_tile[kk, ti + i]
            for j in range(TN):
                b_reg[j] = b_tile[kk, tj + j]
            for i in range(TM):
                for j in range(TN):
                    acc[i, j] += a_reg[i] * b_reg[j]
        cuda.syncthreads()  # 3. the tiles are overwritten next

    for i in range(TM):
        for j in range(TN):
            r, c = row0 + ti + i, col0 + tj + j
            if r < m and c < n:
                if accumulate:
                    out[r, c] += acc[i, j]
                else:
                    out[r, c] = acc[i, j]


@cuda.jit
def _gemm(a, b, out, trans_a, trans_b, accumulate):
    a_tile = cuda.shared.array((BK, BM), a.dtype)
    b_tile = cuda.shared.array((BK, BN), b.dtype)
    block_tile_product(a, b, out, trans_a, trans_b, accumulate, a_tile, b_tile)


def matmul(a, b, out=None, trans_a=False, trans_b=False, accumulate=False):
    """out = op(a) @ op(b), or out += op(a) @ op(b) (a weight gradient adding up)."""
    a, b = device(a), device(b)
    if a.ndim != 2 or b.ndim != 2:
        raise ValueError(f"matmul expects 2-D arrays, got {tuple(a.shape)} and {tuple(b.shape)}")
    m, k = (a.shape[1], a.shape[0]) if trans_a else a.shape
    k_b, n = (b.shape[1], b.shape[0]) if trans_b else b.shape
    if k != k_b or a.dtype != b.dtype:
        raise ValueError(f"matmul: op(a) is {a.dtype.name} ({m}, {k}), op(b) is {b.dtype.name} "
                         f"({k_b}, {n})")
    if accumulate and out is None:
        raise ValueError("matmul: accumulate=True needs out")
    if out is None:
        out = out_like(None, a, shape=(m, n))
    elif tuple(out.shape) != (m, n) or out.dtype != a.dtype:
        raise ValueError(f"matmul: out must be {a.dtype.name} ({m}, {n}), got "
                         f"{out.dtype.name} {tuple(out.shape)}")
    if m and n:
        blocks = ((n + BN - 1) // BN, (m + BM - 1) // BM)
        launch(_gemm, blocks, GEMM_THREADS, a, b, out, bool(trans_a), bool(trans_b),
               bool(accumulate))
    return out


@cuda.jit
def _add_bias(y, bias):
    features = bias.size
    for i in range(cuda.grid(1), y.size, cuda.gridsize(1)):
        y[i] += bias[i % features]


def add_bias(y, bias):
    """y += bias along the last axis, in place."""
    updated_in_place("y", y)
    bias = contiguous(bias)
    if y.shape[-1] != bias.size:
        raise ValueError(f"add_bias: y {tuple(y.shape)} and bias {tuple(bias.shape)} differ")
    launch_flat(_add_bias, y.size, flat(y), flat(bias))
    return y


@cuda.jit
def _sum_rows(x, out, rows_per_block):
    # block (bx, by) sums rows [by * rows_per_block, ...) of columns bx * blockDim + t
    rows, cols = x.shape
    c = cuda.grid(1)
    if c >= cols:
        return
    start = cuda.blockIdx.y * rows_per_block
    stop = start + rows_per_block
    if stop > rows:  # (no min(): numba 0.68's CUDA target fails to compile it)
        stop = rows
    total = x.dtype.type(0)
    for r in range(start, stop):  # neighbouring threads read neighbouring columns
        total += x[r, c]
    if cuda.gridDim.y == 1:
        out[c] += total
    else:  # several blocks add into the same column
        cuda.atomic.add(out, c, total)


def sum_rows(x, out=None, accumulate=False):
    """out = x.sum(axis=0), or out += x.sum(axis=0) (a bias gradient adding up)."""
    x = contiguous(x)
    rows, cols = x.shape
    if out is None:
        out = out_like(None, x, shape=(cols,))
        accumulate = False
    else:
        updated_in_place("out", out)
    if not accumulate:
        fill(out, 0)
    if rows and cols:
        blocks = ((cols + THREADS - 1) // THREADS, (rows + SUM_ROWS_CHUNK - 1) // SUM_ROWS_CHUNK)
        launch(_sum_rows, blocks, THREADS, x, flat(out), SUM_ROWS_CHUNK)
    return out


@cuda.jit
def _axpy(alpha, x, y):
    for i in range(cuda.grid(1), y.size, cuda.gridsize(1)):
        y[i] += alpha * x[i]


def axpy(alpha, x, y):
    """y += alpha * x, in place."""
    updated_in_place("y", y)
    x = contiguous(x)
    if x.size != y.size:
        raise ValueError(f"axpy: x {tuple(x.shape)} and y {tuple(y.shape)} differ")
    launch_flat(_axpy, y.size, as_float(alpha, y), flat(x), flat(y))
    return y
