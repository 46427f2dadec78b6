"""Pooling kernels: one thread per output in the forward, one per input in the backward.

The ops and their conventions (window placement, padding, indices) are in
``backend/ops/pool.py``. Launches per call:

    max_pool2d_forward            1: one thread per output (max and its index)
    max_pool2d_backward           2: zero dx, then one thread per output adds its
                                     gradient at its index (atomically)
    avg_pool2d_forward            1: one thread per output
    avg_pool2d_backward           1: one thread per input gathers its windows
    adaptive_avg_pool2d_forward   1: one thread per output
    adaptive_avg_pool2d_backward  1: one thread per input gathers its bins

Forward. Thread e owns output (n, c, i, j) and loops over its window,
clipped to the input (max pooling's -inf padding never wins, average
pooling's zeros add nothing but count in the divisor). Inputs are read
through their strides: a strided x is not copied first.

Backward, two ways. A gradient goes back to the inputs its output read.
Average pooling knows its windows, so each input (h, w) can *gather*: the
outputs whose window holds it are the rows oh with
oh*sh - ph <= h < oh*sh - ph + kh (and columns alike), a range it computes
directly; it sums their gradients and writes once: no atomics, no zeroing.
Max pooling's backward gets only the winners' indices (its signature has
no window geometry), so it *scatters*: each output adds its gradient at its
winner's index. Windows that overlap (stride < kernel) can pick the same
winner, and then two threads add to one address at once; ``cuda.atomic.add``
makes both additions count (on distinct addresses it costs about a plain
store, so it is used whatever the stride).
"""
import numpy as np
from numba import cuda

from ._util import as_float, contiguous, device, fill, flat, launch_flat, out_like

__all__ = ["max_pool2d_forward", "max_pool2d_backward", "avg_pool2d_forward",
           "avg_pool2d_backward", "adaptive_avg_pool2d_forward", "adaptive_avg_pool2d_backward"]


def _pooled_size(size, kernel, stride, padding):
    return (size + 2 * padding - kernel) // stride + 1


def _window_ints(kernel_size, stride, padding):
    return tuple(int(v) for v in (*kernel_size, *stride, *padding))


@cuda.jit(device=True)
def _output_position(e, channels, out_h, out_w):
    """(n, c, i, j) of flat output index e."""
    j = e % out_w
    i = (e // out_w) % out_h
    c = (e // (out_w * out_h)) % channels
    return e // (out_w * out_h * channels), c, i, j


@cuda.jit(device=True)
def _window(i, j, kh, kw, sh, sw, ph, pw, height, width):
    """Rows [h0, h1) and columns [w0, w1) of output (i, j)'s window, clipped to the
    input (the padding never wins a max and adds nothing to a sum)."""
    h0, w0 = i * sh - ph, j * sw - pw
    h1, w1 = h0 + kh, w0 + kw
    h0 = h0 if h0 > 0 else 0
    w0 = w0 if w0 > 0 else 0
    h1 = h1 if h1 < height else height
    w1 = w1 if w1 < width else width
    return h0, h1, w0, w1


# --- max pooling ----------------------------------------------------------------
@cuda.jit
def _max_pool(x, kh, kw, sh, sw, ph, pw, y, indices):
    """y, indices: flat (N*C*Ho*Wo); indices[e] = h * W + w of the window's maximum."""
    n_batch, channels, height, width = x.shape
    out_h, out_w = (height + 2 * ph - kh) // sh + 1, (width + 2 * pw - kw) // sw + 1
    for e in range(cuda.grid(1), y.size, cuda.gridsize(1)):
        n, c, i, j = _output_position(e, channels, out_h, out_w)
        h0, h1, w0, w1 = _window(i, j, kh, kw, sh, sw, ph, pw, height, width)
        best, at = x[n, c, h0, w0], h0 * width + w0
        for h in range(h0, h1):
            for w in range(w0, w1):
                v = x[n, c, h, w]
                if v > best or v != v:  # NaN wins, as in PyTorch
                    best, at = v, h * width + w
        y[e] = best
        indices[e] = at


def max_pool2d_forward(x, kernel_size, stride, padding, out=None, out_indices=None):
    x = device(x)
    (kh, kw), (sh, sw), (ph, pw) = kernel_size, stride, padding
    n, c, height, width = x.shape
    shape = (n, c, _pooled_size(height, kh, sh, ph), _pooled_size(width, kw, sw, pw))
    y = out_like(out, x, shape=shape)
    # int32: an index inside one (H, W) plane (as on the CPU)
    indices = out_like(out_indices, x, dtype=np.int32, shape=shape)
    launch_flat(_max_pool, y.size, x, *_window_ints(kernel_size, stride, padding), flat(y),
                flat(indices))
    return y, indices


@cuda.jit
def _max_pool_backward(grad, indices, plane_out, plane_in, dx):
    """dx (flat, zeroed) [plane of e, indices[e]] += grad[e]; grad, indices flat."""
    for e in range(cuda.grid(1), grad.size, cuda.gridsize(1)):
        cuda.atomic.add(dx, (e // plane_out) * plane_in + indices[e], grad[e])


def max_pool2d_backward(grad, indices, input_size, out=None):
    grad = contiguous(grad)
    indices = contiguous(device(indices))
    n, c, out_h, out_w = grad.shape
    dx = out_like(out, grad, shape=(n, c) + tuple(int(s) for s in input_size))
    fill(dx, 0)
    launch_flat(_max_pool_backward, grad.size, flat(grad), flat(indices), out_h * out_w,
                int(input_size[0]) * int(input_size[1]), flat(dx))
    return dx


# --- average pooling ------------------------------------------------------------
@cuda.jit
def _avg_pool(x, kh, kw, sh, sw, ph, pw, scale, y):
    n_batch, channels, height, width = x.shape
    out_h, out_w = (height + 2 * ph - kh) // sh + 1, (width + 2 * pw - kw) // sw + 1
    for e in range(cuda.grid(1), y.size, cuda.gridsize(1)):
        n, c, i, j = _output_position(e, channels, out_h, out_w)
        h0, h1, w0, w1 = _window(i, j, kh, kw, sh, sw, ph, pw, height, width)
        s = x.dtype.type(0)
        for h in range(h0, h1):
            for w in range(w0, w1):
                s += x[n, c, h, w]
        y[e] = s * scale


@cuda.jit(device=True)
def _windows_holding(h, kernel, stride, pad, outputs):
    """[first, last] outputs whose window (start o*stride - pad, length kernel) holds h."""
    reach = h + pad  # = o*stride + (offset inside the window, 0 .. kernel-1)
    last = reach // stride
    first = reach - kernel + 1
    first = 0 if first <= 0 else (first + stride - 1) // stride
    last = last if last < outputs else outputs - 1
    return first, last


@cuda.jit
def _avg_pool_backward(grad, kh, kw, sh, sw, ph, pw, scale, dx):
    """dx (N, C, H, W) flat; each input sums grad * scale over the windows that hold it."""
    n_batch, channels, out_h, out_w = grad.shape
    height, width = dx.shape[2], dx.shape[3]
    for e in range(cuda.grid(1), dx.size, cuda.gridsize(1)):
        n, c, h, w = _output_position(e, channels, height, width)
        i0, i1 = _windows_holding(h, kh, sh, ph, out_h)
        j0, j1 = _windows_holding(w, kw, sw, pw, out_w)
        s = dx.dtype.type(0)
        for i in range(i0, i1 + 1):
            for j in range(j0, j1 + 1):
                s += grad[n, c, i, j]
        dx[n, c, h, w] = s * scale


def avg_pool2d_forward(x, kernel_size, stride, padding, out=None):
    x = device(x)
    (kh, kw), (sh, sw), (ph, pw) = kernel_size, stride, padding
    n, c, height, width = x.shape
    shape = (n, c, _pooled_size(height, kh, sh, ph), _pooled_size(width, kw, sw, pw))
    y = out_like(out, x, shape=shape)
    launch_flat(_avg_pool, y.size, x, *_window_ints(kernel_size, stride, padding),
                as_float(1.0 / (kh * kw), x), flat(y))
    return y


def avg_pool2d_backward(grad, input_size, kernel_size, stride, padding, out=None):
    grad = device(grad)
    (kh, kw) = kernel_size
    n, c = grad.shape[:2]
    dx = out_like(out, grad, shape=(n, c) + tuple(int(s) for s in input_size))
    launch_flat(_avg_pool_backward, dx.size, grad, *_window_ints(kernel_size, stride, padding),
                as_float(1.0 / (kh * kw), grad), dx)
    return dx


# --- adaptive average pooling ---------------------------------------------------
# Bin i of an axis of `size` inputs and `bins` outputs covers
# [floor(i * size / bins), ceil((i + 1) * size / bins)), as in PyTorch.
@cuda.jit(device=True)
def _bin(i, size, bins):
    return i * size // bins, ((i + 1) * size + bins - 1) // bins


@cuda.jit
def _adaptive_avg(x, y):
    n_batch, channels, height, width = x.shape
    out_h, out_w = y.shape[2], y.shape[3]
    for e in range(cuda.grid(1), y.size, cuda.gridsize(1)):
        n, c, i, j = _output_position(e, channels, out_h, out_w)
        h0, h1 = _bin(i, height, out_h)
        w0, w1 = _bin(j, width, out_w)
        s = x.dtype.type(0)
        for h in range(h0, h1):
            for w in range(w0, w1):
                s += x[n, c, h, w]
        y[n, c, i, j] = s / x.dtype.type((h1 - h0) * (w1 - w0))


@cuda.jit(device=True)
def _bins_holding(h, size, bins):
    """[first, last] bins that hold input h: bin i does when i*size//bins <= h and
    ceil((i+1)*size/bins) > h, i.e. from h*bins//size to ceil((h+1)*bins/size) - 1."""
    first = h * bins // size
    last = ((h + 1) * bins + size - 1) // size - 1
    return first, (last if last < bins else bins - 1)


@cuda.jit
def _adaptive_avg_backward(grad, dx):
    n_batch, channels, out_h, out_w = grad.shape
    height, width = dx.shape[2], dx.shape[3]
    for e in range(cuda.grid(1), dx.size, cuda.gridsize(1)):
        n, c, h, w = _output_position(e, channels, height, width)
        i0, i1 = _bins_holding(h, height, out_h)
        j0, j1 = _bins_holding(w, width, out_w)
        s = dx.dtype.type(0)
        for i in range(i0, i1 + 1):
            h0, h1 = _bin(i, height, out_h)
            for j in range(j0, j1 + 1):
                w0, w1 = _bin(j, width, out_w)
                s += grad[n, c, i, j] / dx.dtype.type((h1 - h0) * (w1 - w0))
        dx[n, c, h, w] = s


def adaptive_avg_pool2d_forward(x, output_size, out=None):
    x = device(x)
    n, c = x.shape[:2]
    y = out_like(out, x, shape=(n, c) + tuple(int(s) for s in output_size))
    launch_flat(_adaptive_avg, y.size, x, y)
    return y


def adaptive_avg_pool2d_backward(grad, input_size, out=None):
    grad = device(grad)
    n, c = grad.shape[:2]
    dx = out_like(out, grad, shape=(n, c) + tuple(int(s) for s in input_size))
    launch_flat(_adaptive_avg_backward, dx.size, grad, dx)
    return dx
