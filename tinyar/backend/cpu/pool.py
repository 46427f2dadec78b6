"""Pooling kernels: one serial loop over the (H, W) planes of (N, C, H, W) arrays.

Every kernel sees its arrays as (planes, H, W) with planes = N * C, so one
loop body serves all batch and channel indices. A window is clipped to the
input (``max``/``min`` on its bounds) instead of padding a copy of x: max
pooling's padding is -inf and can never win, and average pooling's zero
padding adds nothing but still counts in the divisor (count_include_pad).

The 2x2, stride-2 max-pool without padding (LeNet's, VGG's) has its own
kernel: no clipping, the four comparisons written out, flat unsigned
indices (see ``conv.py`` for why unsigned). LeNet's first pool, 64 x 32
planes of 26 x 26: 1.05 ms against 2.9 ms for the general loop (one thread).

Serial, except where the threads are shared with the BLAS (MKL on GNU OpenMP,
``backend/cpu/threads.py``): then the 2x2 max-pool, forward and backward, splits
its planes over all cores (LeNet's step: 11.2 -> 9.8 ms with the omp layer;
no gain on the workqueue layer next to OpenBLAS, so serial there).
"""
import numpy as np
from numba import njit, prange, uint64

from ._util import FASTMATH, as_float, chunk_bounds, contiguous, thread_chunks

__all__ = ["max_pool2d_forward", "max_pool2d_backward", "avg_pool2d_forward",
           "avg_pool2d_backward", "adaptive_avg_pool2d_forward", "adaptive_avg_pool2d_backward"]


def _planes(x):
    """Contiguous x as (N * C, H, W)."""
    x = contiguous(x)
    return x.reshape(x.shape[0] * x.shape[1], x.shape[2], x.shape[3])


def _out(out, shape, dtype):
    if out is None:
        return np.empty(shape, dtype)
    if out.shape != tuple(shape) or not out.flags.c_contiguous or out.dtype != dtype:
        raise ValueError(f"out must be a C-contiguous {np.dtype(dtype).name} array of shape "
                         f"{tuple(shape)}, got {out.dtype} {out.shape}")
    return out


def _pooled_size(size, kernel, stride, padding):
    return (size + 2 * padding - kernel) // stride + 1


# --- max pooling ----------------------------------------------------------------
@njit(cache=True, fastmath=FASTMATH)
def _max_pool(x, kh, kw, sh, sw, ph, pw, y, indices):
    planes, height, width = x.shape
    _, out_h, out_w = y.shape
    for p in range(planes):
        for i in range(out_h):
            h0 = max(i * sh - ph, 0)
            h1 = min(i * sh - ph + kh, height)
            for j in range(out_w):
                w0 = max(j * sw - pw, 0)
                w1 = min(j * sw - pw + kw, width)
                best, at = x[p, h0, w0], h0 * width + w0
                for h in range(h0, h1):
                    for w in range(w0, w1):
                        v = x[p, h, w]
                        if v > best or v != v:  # NaN wins, as in PyTorch
                            best, at = v, h * width + w
                y[p, i, j] = best
                indices[p, i, j] = at


@njit(cache=True, fastmath=FASTMATH)
def _max_pool_2x2(x, y, indices, first_plane, end_plane):
    """``_max_pool`` for 2x2 windows, stride 2, no padding, on flat arrays; planes
    ``first_plane`` to ``end_plane`` (exclusive)."""
    _, height, width = x.shape
    _, out_h, out_w = y.shape
    xf, yf, jf = x.reshape(-1), y.reshape(-1), indices.reshape(-1)
    for p in range(first_plane, end_plane):
        plane = uint64(p * height * width)
        for i in range(out_h):
            out = uint64((p * out_h + i) * out_w)
            top = uint64(2 * i * width)  # index of the window row in the plane
            for j in range(uint64(out_w)):
                a = top + 2 * j
                b = a + uint64(width)
                best, at = xf[plane + a], a
                v = xf[plane + a + 1]
                if v > best or v != v:
                    best, at = v, a + 1
                v = xf[plane + b]
                if v > best or v != v:
                    best, at = v, b
                v = xf[plane + b + 1]
                if v > best or v != v:
                    best, at = v, b + 1
                yf[out + j] = best
                jf[out + j] = at


@njit(cache=True, fastmath=FASTMATH, parallel=True)
def _max_pool_2x2_threads(x, y, indices, chunks):
    planes = x.shape[0]
    for c in prange(chunks):
        first, end = chunk_bounds(c, chunks, planes)
        _max_pool_2x2(x, y, indices, first, end)


def max_pool2d_forward(x, kernel_size, stride, padding, out=None, out_indices=None):
    (kh, kw), (sh, sw), (ph, pw) = kernel_size, stride, padding
    n, c, height, width = x.shape
    shape = (n, c, _pooled_size(height, kh, sh, ph), _pooled_size(width, kw, sw, pw))
    y = _out(out, shape, x.dtype)
    # int32: an index inside one (H, W) plane, half the memory traffic of int64
    indices = _out(out_indices, shape, np.dtype(np.int32))
    if y.size:
        planes, y3, i3 = _planes(x), y.reshape(-1, *shape[2:]), indices.reshape(-1, *shape[2:])
        if (kh, kw, sh, sw, ph, pw) == (2, 2, 2, 2, 0, 0):
            chunks = thread_chunks(x.size, planes.shape[0])
            if chunks > 1:
                _max_pool_2x2_threads(planes, y3, i3, chunks)
            else:
                _max_pool_2x2(planes, y3, i3, 0, planes.shape[0])
        else:
            _max_pool(planes, kh, kw, sh, sw, ph, pw, y3, i3)
    return y, indices


@njit(cache=True, fastmath=FASTMATH)
def _max_pool_backward(grad, indices, dx, first_plane, end_plane):
    """dx = 0, then each output's gradient added at its window's maximum; planes
    ``first_plane`` to ``end_plane`` (exclusive)."""
    outputs = grad.shape[1]
    for p in range(first_plane, end_plane):
        dx[p, :] = 0
        for i in range(outputs):
            dx[p, indices[p, i]] += grad[p, i]


@njit(cache=True, fastmath=FASTMATH, parallel=True)
def _max_pool_backward_threads(grad, indices, dx, chunks):
    planes = grad.shape[0]
    for c in prange(chunks):
        first, end = chunk_bounds(c, chunks, planes)
        _max_pool_backward(grad, indices, dx, first, end)


def max_pool2d_backward(grad, indices, input_size, out=None):
    n, c = grad.shape[:2]
    dx = _out(out, (n, c) + tuple(input_size), grad.dtype)
    args = (contiguous(grad).reshape(n * c, -1),
            contiguous(indices).astype(np.int32, copy=False).reshape(n * c, -1),
            dx.reshape(n * c, -1))
    chunks = thread_chunks(dx.size, n * c)
    if chunks > 1:
        _max_pool_backward_threads(*args, chunks)
    else:
        _max_pool_backward(*args, 0, n * c)
    return dx


# --- average pooling ------------------------------------------------------------
@njit(cache=True, fastmath=FASTMATH)
def _avg_pool(x, kh, kw, sh, sw, ph, pw, scale, y):
    planes, height, width = x.shape
    _, out_h, out_w = y.shape
    for p in range(planes):
        for i in range(out_h):
            h0, h1 = max(i * sh - ph, 0), min(i * sh - ph + kh, height)
            for j in range(out_w):
                w0, w1 = max(j * sw - pw, 0), min(j * sw - pw + kw, width)
                s = x.dtype.type(0)
                for h in range(h0, h1):
                    for w in range(w0, w1):
                        s += x[p, h, w]
                y[p, i, j] = s * scale


@njit(cache=True, fastmath=FASTMATH)
def _avg_pool_backward(grad, kh, kw, sh, sw, ph, pw, scale, dx):
    planes, height, width = dx.shape
    _, out_h, out_w = grad.shape
    dx[:] = 0
    for p in range(planes):
        for i in range(out_h):
            h0, h1 = max(i * sh - ph, 0), min(i * sh - ph + kh, height)
            for j in range(out_w):
                w0, w1 = max(j * sw - pw, 0), min(j * sw - pw + kw, width)
                g = grad[p, i, j] * scale
                for h in range(h0, h1):
                    for w in range(w0, w1):
                        dx[p, h, w] += g


def avg_pool2d_forward(x, kernel_size, stride, padding, out=None):
    (kh, kw), (sh, sw), (ph, pw) = kernel_size, stride, padding
    n, c, height, width = x.shape
    shape = (n, c, _pooled_size(height, kh, sh, ph), _pooled_size(width, kw, sw, pw))
    y = _out(out, shape, x.dtype)
    if y.size:
        _avg_pool(_planes(x), kh, kw, sh, sw, ph, pw, as_float(1.0 / (kh * kw), x),
                  y.reshape(-1, *shape[2:]))
    return y


def avg_pool2d_backward(grad, input_size, kernel_size, stride, padding, out=None):
    (kh, kw), (sh, sw), (ph, pw) = kernel_size, stride, padding
    n, c = grad.shape[:2]
    dx = _out(out, (n, c) + tuple(input_size), grad.dtype)
    if dx.size:
        _avg_pool_backward(_planes(grad), kh, kw, sh, sw, ph, pw,
                           as_float(1.0 / (kh * kw), grad), dx.reshape(n * c, *input_size))
    return dx


# --- adaptive average pooling ---------------------------------------------------
# Bin i of an axis of `size` inputs and `bins` outputs covers
# [floor(i * size / bins), ceil((i + 1) * size / bins)), as in PyTorch.
@njit(cache=True, fastmath=FASTMATH)
def _adaptive_avg(x, y):
    planes, height, width = x.shape
    _, out_h, out_w = y.shape
    for p in range(planes):
        for i in range(out_h):
            h0, h1 = i * height // out_h, ((i + 1) * height + out_h - 1) // out_h
            for j in range(out_w):
                w0, w1 = j * width // out_w, ((j + 1) * width + out_w - 1) // out_w
                s = x.dtype.type(0)
                for h in range(h0, h1):
                    for w in range(w0, w1):
                        s += x[p, h, w]
                y[p, i, j] = s / x.dtype.type((h1 - h0) * (w1 - w0))


@njit(cache=True, fastmath=FASTMATH)
def _adaptive_avg_backward(grad, dx):
    planes, height, width = dx.shape
    _, out_h, out_w = grad.shape
    dx[:] = 0
    for p in range(planes):
        for i in range(out_h):
            h0, h1 = i * height // out_h, ((i + 1) * height + out_h - 1) // out_h
            for j in range(out_w):
                w0, w1 = j * width // out_w, ((j + 1) * width + out_w - 1) // out_w
                g = grad[p, i, j] / grad.dtype.type((h1 - h0) * (w1 - w0))
                for h in range(h0, h1):
                    for w in range(w0, w1):
                        dx[p, h, w] += g


def adaptive_avg_pool2d_forward(x, output_size, out=None):
    n, c = x.shape[:2]
    y = _out(out, (n, c) + tuple(output_size), x.dtype)
    if y.size:
        _adaptive_avg(_planes(x), y.reshape(n * c, *output_size))
    return y


def adaptive_avg_pool2d_backward(grad, input_size, out=None):
    n, c = grad.shape[:2]
    dx = _out(out, (n, c) + tuple(input_size), grad.dtype)
    if dx.size:
        _adaptive_avg_backward(_planes(grad), dx.reshape(n * c, *input_size))
    return dx
