"""Attention's kernels: batched products, the causal softmax, bias + GELU, moving heads.

One kernel launch per op.

``batched_matmul``: the tiled GEMM of ``linalg.py`` (its device function
``block_tile_product``: same tiles, same loads, same register blocking), with the
stack on the grid's third axis: block (bx, by, bz) computes tile (by, bx) of
out[s] for s = bz, bz + gridDim.z, ... (a grid-stride loop, since gridDim.z is
at most 65535).

``causal_softmax_forward`` / ``_backward``: one block per row (s, i) of the
(S, Tq, Tk) scores, as ``softmax.py`` (block_max, block_sum). Row i sees keys
j < limit = i + Tk - Tq + 1; every thread handles the same columns in every
pass, reading an element before writing it, so ``out`` may be the input.

``bias_gelu_*``, ``split_heads``, ``merge_heads``, ``append_steps``: grid-stride
loops over the *output*'s elements, so that neighbouring threads write
neighbouring addresses; each thread works out where its element comes from.
"""
import math

from numba import cuda

from ..scalar import activations
from ._util import (ROW_THREADS, as_float, block_max, block_sum, contiguous, device, flat,
                    is_device_array, launch, launch_flat, launch_rows, out_like,
                    scalar_function)
from .linalg import BK, BM, BN, GEMM_THREADS, block_tile_product

__all__ = ["batched_matmul", "causal_softmax_forward", "causal_softmax_backward",
           "bias_gelu_forward", "bias_gelu_backward", "split_heads", "merge_heads",
           "append_steps"]

_SQRT_HALF = 0.7071067811865476
_INV_SQRT_2PI = 0.3989422804014327
_SQRT_2_OVER_PI = 0.7978845608028654
_GELU_TANH_CUBIC = 0.044715
_MAX_GRID_Z = 65535


# --- batched_matmul -------------------------------------------------------------
@cuda.jit
def _bmm(a, b, out, trans_a, trans_b, accumulate):
    a_tile = cuda.shared.array((BK, BM), a.dtype)
    b_tile = cuda.shared.array((BK, BN), b.dtype)
    for s in range(cuda.blockIdx.z, out.shape[0], cuda.gridDim.z):
        block_tile_product(a[s], b[s], out[s], trans_a, trans_b, accumulate, a_tile, b_tile)


def batched_matmul(a, b, out=None, trans_a=False, trans_b=False, accumulate=False):
    """out[s] = op(a[s]) @ op(b[s]) (or += when accumulate) for a stack of S products;
    strided operands are read in place."""
    a, b = device(a), device(b)
    if a.ndim != 3 or b.ndim != 3:
        raise ValueError(f"batched_matmul expects 3-D arrays, got {tuple(a.shape)} and "
                         f"{tuple(b.shape)}")
    s, m, k = (a.shape[0], a.shape[2], a.shape[1]) if trans_a else tuple(a.shape)
    s_b, k_b, n = (b.shape[0], b.shape[2], b.shape[1]) if trans_b else tuple(b.shape)
    if s != s_b or k != k_b or a.dtype != b.dtype:
        raise ValueError(f"batched_matmul: op(a) is {a.dtype.name} ({s}, {m}, {k}), op(b) is "
                         f"{b.dtype.name} ({s_b}, {k_b}, {n})")
    if accumulate and out is None:
        raise ValueError("batched_matmul: accumulate=True needs out")
    out = out_like(out, a, shape=(s, m, n))
    if s and m and n:
        blocks = ((n + BN - 1) // BN, (m + BM - 1) // BM, min(s, _MAX_GRID_Z))
        launch(_bmm, blocks, GEMM_THREADS, a, b, out, bool(trans_a), bool(trans_b),
               bool(accumulate))
    return out


# --- causal softmax ---------------------------------------------------------------
@cuda.jit
def _causal_softmax(x, scale, out):
    buf = cuda.shared.array(ROW_THREADS, x.dtype)
    tq, tk = x.shape[1], x.shape[2]
    for r in range(cuda.blockIdx.x, x.shape[0] * tq, cuda.gridDim.x):
        s, i = r // tq, r % tq
        limit = i + tk - tq + 1  # keys 0..limit-1 are visible
        m = x.dtype.type(-math.inf)
        for j in range(cuda.threadIdx.x, limit, cuda.blockDim.x):
            z = scale * x[s, i, j]
            if z > m:
                m = z
        m = block_max(buf, m)
        total = x.dtype.type(0)
        for j in range(cuda.threadIdx.x, tk, cuda.blockDim.x):
            e = x.dtype.type(0)
            if j < limit:
                e = math.exp(scale * x[s, i, j] - m)
            out[s, i, j] = e
            total += e
        inv = x.dtype.type(1) / block_sum(buf, total)
        for j in range(cuda.threadIdx.x, limit, cuda.blockDim.x):
            out[s, i, j] *= inv  # each thread rescales the entries it wrote


@cuda.jit
def _causal_softmax_grad(grad, p, scale, out):
    buf = cuda.shared.array(ROW_THREADS, p.dtype)
    tq, tk = p.shape[1], p.shape[2]
    for r in range(cuda.blockIdx.x, p.shape[0] * tq, cuda.gridDim.x):
        s, i = r // tq, r % tq
        limit = i + tk - tq + 1
        dot = p.dtype.type(0)
        for j in range(cuda.threadIdx.x, limit, cuda.blockDim.x):
            dot += grad[s, i, j] * p[s, i, j]
        dot = block_sum(buf, dot)
        for j in range(cuda.threadIdx.x, tk, cuda.blockDim.x):
            value = p.dtype.type(0)
            if j < limit:
                value = scale * p[s, i, j] * (grad[s, i, j] - dot)
            out[s, i, j] = value


def _check_causal(x, name):
    if x.ndim != 3 or x.shape[1] > x.shape[2]:
        raise ValueError(f"{name}: expected (S, Tq, Tk) with Tq <= Tk, got {tuple(x.shape)}")


def causal_softmax_forward(scores, scale, out=None):
    """P = causal softmax of scale * scores (S, Tq, Tk); out may be scores."""
    x = contiguous(scores)
    _check_causal(x, "causal_softmax_forward")
    out = out_like(out, x)
    if x.size:
        launch_rows(_causal_softmax, x.shape[0] * x.shape[1], x, as_float(scale, x), out)
    return out


def causal_softmax_backward(grad, p, scale, out=None):
    """dL/dscores from dL/dP and P (S, Tq, Tk); out may be grad."""
    grad, p = contiguous(grad), contiguous(p)
    _check_causal(p, "causal_softmax_backward")
    if tuple(grad.shape) != tuple(p.shape):
        raise ValueError(f"causal_softmax_backward: grad {tuple(grad.shape)} and p "
                         f"{tuple(p.shape)} differ")
    out = out_like(out, p)
    if p.size:
        launch_rows(_causal_softmax_grad, p.shape[0] * p.shape[1], grad, p,
                    as_float(scale, p), out)
    return out


# --- bias + GELU ------------------------------------------------------------------
# One element of each: backend/scalar/activations.py, shared with the CPU.
_gelu_forward_one = scalar_function(activations.gelu_forward)
_gelu_backward_one = scalar_function(activations.gelu_backward)
_gelu_tanh_forward_one = scalar_function(activations.gelu_tanh_forward)
_gelu_tanh_backward_one = scalar_function(activations.gelu_tanh_backward)


@cuda.jit
def _bias_gelu(x, bias, grad, approximate, backward, out):
    # constants in the array's dtype: a bare 0.5 would make float32 kernels float64
    f = x.dtype.type
    half, one = f(0.5), f(1)
    sqrt_half, inv_sqrt_2pi = f(_SQRT_HALF), f(_INV_SQRT_2PI)
    c0, c1, c3 = f(_SQRT_2_OVER_PI), f(_GELU_TANH_CUBIC), f(3 * _GELU_TANH_CUBIC)
    features = bias.size
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        u = x[i] + bias[i % features]
        if approximate:
            if backward:
                out[i] = _gelu_tanh_backward_one(grad[i], u, half, one, c0, c1, c3)
            else:
                out[i] = _gelu_tanh_forward_one(u, half, one, c0, c1)
        elif backward:
            out[i] = _gelu_backward_one(grad[i], u, half, one, sqrt_half, inv_sqrt_2pi)
        else:
            out[i] = _gelu_forward_one(u, half, one, sqrt_half)


def _bias_gelu_launch(x, bias, grad, approximate, out):
    x, bias = contiguous(x), contiguous(bias)
    if tuple(x.shape[-1:]) != tuple(bias.shape):
        raise ValueError(f"bias_gelu: x {tuple(x.shape)} and bias {tuple(bias.shape)} differ")
    backward = grad is not None
    grad = contiguous(grad) if backward else x
    if tuple(grad.shape) != tuple(x.shape):
        raise ValueError(f"bias_gelu_backward: grad {tuple(grad.shape)} and x "
                         f"{tuple(x.shape)} differ")
    out = out_like(out, x)
    launch_flat(_bias_gelu, x.size, flat(x), bias, flat(grad), bool(approximate), backward,
                flat(out))
    return out


def bias_gelu_forward(x, bias, approximate=False, out=None):
    """GELU(x + bias), x (M, F), bias (F,); the tanh form when approximate."""
    return _bias_gelu_launch(x, bias, None, approximate, out)


def bias_gelu_backward(grad, x, bias, approximate=False, out=None):
    """grad * GELU'(x + bias) = dL/dx (and dL/d(x + bias))."""
    return _bias_gelu_launch(x, bias, grad, approximate, out)


# --- moving heads -----------------------------------------------------------------
@cuda.jit
def _split_heads(x, heads, out):
    # out (G, N * H, T, D) element (g, n H + h, t, d) <- x[n, t, (g H + h) D + d]
    groups, rows, steps, width = out.shape
    for e in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        d = e % width
        t = (e // width) % steps
        row = (e // (width * steps)) % rows
        g = e // (width * steps * rows)
        n, h = row // heads, row % heads
        out[g, row, t, d] = x[n, t, (g * heads + h) * width + d]


@cuda.jit
def _merge_heads(x, out):
    # out (N, T, G * H * D) element (n, t, (g H + h) D + d) <- x[g, n H + h, t, d]
    groups, rows, steps, width = x.shape
    batch = out.shape[0]
    heads = rows // batch
    columns = out.shape[2]
    for e in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        c = e % columns
        t = (e // columns) % steps
        n = e // (columns * steps)
        d = c % width
        h = (c // width) % heads
        g = c // (width * heads)
        out[n, t, c] = x[g, n * heads + h, t, d]


def split_heads(x, groups, num_heads, out=None):
    """x (N, T, G * H * D) -> (G, N * H, T, D), contiguous; strided x is read in place."""
    x = device(x)
    n, t, width = x.shape
    if width % (groups * num_heads):
        raise ValueError(f"split_heads: last axis {width} is not groups ({groups}) x "
                         f"num_heads ({num_heads}) x head size")
    d = width // (groups * num_heads)
    out = out_like(out, x, shape=(groups, n * num_heads, t, d))
    launch_flat(_split_heads, out.size, x, int(num_heads), out)
    return out


def merge_heads(x, batch, out=None):
    """x (G, N * H, T, D) -> (N, T, G * H * D), contiguous; strided x is read in place."""
    x = device(x)
    g, s, t, d = x.shape
    if s % batch:
        raise ValueError(f"merge_heads: axis 1 ({s}) is not a multiple of batch ({batch})")
    out = out_like(out, x, shape=(batch, t, g * (s // batch) * d))
    launch_flat(_merge_heads, out.size, x, out)
    return out


# --- append_steps -----------------------------------------------------------------
@cuda.jit
def _append(cache, new, out, copy_cache):
    # out (S, Ta + Tb, D): steps < Ta from cache (skipped when they are there already)
    ta, tb, width = cache.shape[1], new.shape[1], out.shape[2]
    steps = tb if not copy_cache else ta + tb
    first = ta if not copy_cache else 0
    total = out.shape[0] * steps * width
    for e in range(cuda.grid(1), total, cuda.gridsize(1)):
        d = e % width
        t = first + (e // width) % steps
        s = e // (width * steps)
        if t < ta:
            out[s, t, d] = cache[s, t, d]
        else:
            out[s, t, d] = new[s, t - ta, d]


def _address(x):
    return x.__cuda_array_interface__["data"][0]


def append_steps(cache, new, out=None):
    """cache (S, Ta, D), new (S, Tb, D) -> (S, Ta + Tb, D), concatenated along time.

    ``out`` may hold ``cache`` as its first Ta steps (``cache = out[:, :Ta]`` of a
    buffer allocated for the whole generation): then only ``new`` is copied.
    """
    cache, new = device(cache), device(new)
    if cache.ndim != 3 or new.ndim != 3 or cache.shape[0] != new.shape[0] \
            or cache.shape[2] != new.shape[2] or cache.dtype != new.dtype:
        raise ValueError(f"append_steps: cache {cache.dtype.name} {tuple(cache.shape)} and new "
                         f"{new.dtype.name} {tuple(new.shape)} differ outside axis 1")
    s, ta, d = cache.shape
    shape = (s, ta + new.shape[1], d)
    if out is None:
        out = out_like(None, cache, shape=shape)
    else:
        if not is_device_array(out):  # (it may be a strided view of a longer buffer)
            raise TypeError(f"out must be a device array, got {type(out).__name__}")
        if tuple(out.shape) != shape or out.dtype != cache.dtype:
            raise ValueError(f"append_steps: out must be {cache.dtype.name} {shape}, got "
                             f"{out.dtype.name} {tuple(out.shape)}")
    copy_cache = not (cache.size and _address(cache) == _address(out)
                      and tuple(cache.strides) == tuple(out.strides))
    steps = shape[1] if copy_cache else new.shape[1]
    launch_flat(_append, s * steps * d, cache, new, out, copy_cache)
    return out
