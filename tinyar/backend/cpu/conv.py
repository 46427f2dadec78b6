"""Convolution kernels: im2col / col2im copy loops; the products go to BLAS.

Why im2col + BLAS and not a direct loop. docs/performance.md has, at
batch 8, 32 -> 64 channels, 32x32, 3x3: im2col + BLAS 15.7 ms against 202 ms
for a direct ``prange`` loop. Here (2-core Xeon, AVX-512, 2 BLAS threads),
LeNet's second convolution (batch 64, 32 -> 64 channels, 13x13, 3x3):
im2col 0.8 ms, the forward product 1.2 ms; forward + backward 5.9 ms in all.
A direct loop does the same multiply-adds at a fraction of BLAS's speed;
im2col costs one copy of the input per kernel tap and buys BLAS's speed.

How the loops are written. Both kernels walk flat arrays with *unsigned*
indices: a signed index makes Numba emit a negative-index wraparound check
that stops LLVM from vectorising the copy (runs of 11 floats: 0.94 ms with
signed indices, 0.51 ms unsigned, 0.60 ms for NumPy's memcpy of the same
bytes). Each copy run is one output row ``ow = lo .. hi-1`` of one kernel
tap; [lo, hi) is the part that reads inside the input, the rest is padding
(zeros in im2col, dropped in col2im), worked out once per tap. Views
(``x[n, c, h]``) inside the loops were 2x slower: every view costs a
reference-count update. With these, im2col went from 2.2 ms to 0.8 ms.

Threads. Each copy kernel takes a range of samples (channels for
``to_channel_major``, whose bias gradient sums over samples), so that one
call can do it all on one thread or a ``prange`` can split it. Split only where
the kernels share BLAS's threads (MKL on GNU OpenMP, ``backend/cpu/threads.py``):
next to OpenBLAS, ``prange`` versions of im2col, col2im and the max-pool made
LeNet's training step slower, 14.0-14.6 ms against 12.9-13.4 ms serial (2
cores, workqueue layer), since the OpenBLAS workers still spin on the second
core when these kernels run.

``to_batch_major`` / ``to_channel_major`` reorder between the product's
(C, N*P) layout and (N, C, P), with the bias add / bias gradient fused into
the same pass, and a ReLU's forward / backward too when the layer has
``activation="relu"``; ``add_channel_bias`` / ``channel_sums`` do those for
the per-sample products (see ``nn/conv.py`` for when each is used).
"""
import numpy as np
from numba import njit, prange, uint64

from ._util import FASTMATH, chunk_bounds, contiguous, thread_chunks
from .linalg import axpy, matmul

__all__ = ["im2col", "col2im", "to_batch_major", "to_channel_major", "add_channel_bias",
           "channel_sums", "conv_weight_grad"]


def _output_size(size, kernel, stride, pad_before, pad_after, dilation):
    return (size + pad_before + pad_after - dilation * (kernel - 1) - 1) // stride + 1


@njit(cache=True)
def _inside(offset, stride, size, count):
    """[lo, hi): the outputs k in [0, count) with 0 <= k * stride + offset < size."""
    lo = 0 if offset >= 0 else (-offset + stride - 1) // stride
    hi = 0 if size - offset <= 0 else (size - offset + stride - 1) // stride
    hi = min(hi, count)
    return min(lo, hi), hi


@njit(cache=True, fastmath=FASTMATH)
def _im2col(x, shape, kernel, stride, padding, dilation, out_h, out_w, cols, first, end):
    """x: flat (N, C, H, W); cols: flat (C*kh*kw, N*out_h*out_w); samples first..end-1."""
    n_batch, channels, height, width = shape
    kh, kw = kernel
    sh, sw = stride
    top, left = padding
    dh, dw = dilation
    zero = x.dtype.type(0)
    spatial = out_h * out_w
    width_out = uint64(out_w)
    for c in range(channels):
        for i in range(kh):
            for j in range(kw):
                row = (c * kh + i) * kw + j
                offset = j * dw - left
                lo, hi = _inside(offset, sw, width, out_w)
                lo, hi = uint64(lo), uint64(hi)
                for n in range(first, end):
                    plane = (n * channels + c) * height * width
                    for oh in range(out_h):
                        dst = uint64((row * n_batch + n) * spatial + oh * out_w)
                        h = oh * sh - top + i * dh
                        if h < 0 or h >= height:
                            for k in range(width_out):
                                cols[dst + k] = zero
                            continue
                        # may wrap around below 0: src + k * sw is exact for k >= lo
                        src = uint64(plane + h * width + offset)
                        for k in range(lo):
                            cols[dst + k] = zero
                        if sw == 1:
                            for k in range(lo, hi):
                                cols[dst + k] = x[src + k]
                        else:
                            step = uint64(sw)
                            for k in range(lo, hi):
                                cols[dst + k] = x[src + k * step]
                        for k in range(hi, width_out):
                            cols[dst + k] = zero


@njit(cache=True, fastmath=FASTMATH)
def _col2im(cols, shape, kernel, stride, padding, dilation, out_h, out_w, dx, first, end):
    """The adjoint of ``_im2col``: dx (flat, zeroed here) += the columns; samples
    first..end-1."""
    n_batch, channels, height, width = shape
    kh, kw = kernel
    sh, sw = stride
    top, left = padding
    dh, dw = dilation
    spatial = out_h * out_w
    dx[first * channels * height * width:end * channels * height * width] = 0
    for c in range(channels):
        for i in range(kh):
            for j in range(kw):
                row = (c * kh + i) * kw + j
                offset = j * dw - left
                lo, hi = _inside(offset, sw, width, out_w)
                lo, hi = uint64(lo), uint64(hi)
                for n in range(first, end):
                    plane = (n * channels + c) * height * width
                    for oh in range(out_h):
                        h = oh * sh - top + i * dh
                        if h < 0 or h >= height:
                            continue
                        src = uint64((row * n_batch + n) * spatial + oh * out_w)
                        dst = uint64(plane + h * width + offset)
                        if sw == 1:
                            for k in range(lo, hi):
                                dx[dst + k] += cols[src + k]
                        else:
                            step = uint64(sw)
                            for k in range(lo, hi):
                                dx[dst + k * step] += cols[src + k]


@njit(cache=True, fastmath=FASTMATH, parallel=True)
def _im2col_threads(x, shape, kernel, stride, padding, dilation, out_h, out_w, cols, chunks):
    n_batch = shape[0]
    for t in prange(chunks):
        first, end = chunk_bounds(t, chunks, n_batch)
        _im2col(x, shape, kernel, stride, padding, dilation, out_h, out_w, cols, first, end)


@njit(cache=True, fastmath=FASTMATH, parallel=True)
def _col2im_threads(cols, shape, kernel, stride, padding, dilation, out_h, out_w, dx, chunks):
    n_batch = shape[0]
    for t in prange(chunks):
        first, end = chunk_bounds(t, chunks, n_batch)
        _col2im(cols, shape, kernel, stride, padding, dilation, out_h, out_w, dx, first, end)


def _out(out, shape, dtype):
    if out is None:
        return np.empty(shape, dtype)
    if out.shape != tuple(shape) or not out.flags.c_contiguous or out.dtype != dtype:
        raise ValueError(f"out must be a C-contiguous {np.dtype(dtype).name} array of shape "
                         f"{tuple(shape)}, got {out.dtype} {out.shape}")
    return out


def _geometry(shape, kernel_size, stride, padding, dilation):
    (kh, kw), (sh, sw), (top, bottom, left, right), (dh, dw) = (kernel_size, stride, padding,
                                                               dilation)
    return (_output_size(shape[2], kh, sh, top, bottom, dh),
            _output_size(shape[3], kw, sw, left, right, dw))


def _ints(*pairs):
    return tuple(tuple(int(v) for v in pair) for pair in pairs)


def im2col(x, kernel_size, stride, padding, dilation, out=None):
    x = contiguous(x)
    n, c = x.shape[:2]
    out_h, out_w = _geometry(x.shape, kernel_size, stride, padding, dilation)
    cols = _out(out, (c * kernel_size[0] * kernel_size[1], n * out_h * out_w), x.dtype)
    if cols.size:
        kernel, strides, dilations, pads = _ints(kernel_size, stride, dilation,
                                                 (padding[0], padding[2]))
        args = (x.reshape(-1), _ints(x.shape)[0], kernel, strides, pads, dilations, out_h,
                out_w, cols.reshape(-1))
        chunks = thread_chunks(cols.size, n)
        if chunks > 1:
            _im2col_threads(*args, chunks)
        else:
            _im2col(*args, 0, n)
    return cols


def col2im(cols, input_shape, kernel_size, stride, padding, dilation, out=None):
    cols = contiguous(cols)
    out_h, out_w = _geometry(input_shape, kernel_size, stride, padding, dilation)
    dx = _out(out, tuple(input_shape), cols.dtype)
    if dx.size:
        kernel, strides, dilations, pads = _ints(kernel_size, stride, dilation,
                                                 (padding[0], padding[2]))
        args = (cols.reshape(-1), _ints(input_shape)[0], kernel, strides, pads, dilations,
                out_h, out_w, dx.reshape(-1))
        chunks = thread_chunks(cols.size, dx.shape[0])
        if chunks > 1:
            _col2im_threads(*args, chunks)
        else:
            _col2im(*args, 0, dx.shape[0])
    return dx


@njit(cache=True, fastmath=FASTMATH)
def _to_batch_major(y, bias, relu, out, first, end):
    """y (C, N, P) -> out (N, C, P), + bias[c], then max(0, .) when ``relu`` (fused:
    one pass instead of three); samples first..end-1."""
    channels, n_batch, spatial = y.shape
    zero = y.dtype.type(0)
    for n in range(first, end):
        for c in range(channels):
            b = bias[c]
            if relu:
                for p in range(uint64(spatial)):
                    v = y[c, n, p] + b
                    out[n, c, p] = v if v > zero else zero
            else:
                for p in range(uint64(spatial)):
                    out[n, c, p] = y[c, n, p] + b


def to_batch_major(y, batch, bias, out=None, relu=False):
    y = contiguous(y)
    channels = y.shape[0]
    y3 = y.reshape(channels, batch, -1)
    out = _out(out, (batch, channels, y3.shape[2]), y.dtype)
    bias = np.zeros(channels, y.dtype) if bias is None else contiguous(bias)
    chunks = thread_chunks(y.size, batch)
    if chunks > 1:
        _to_batch_major_threads(y3, bias, bool(relu), out, chunks)
    else:
        _to_batch_major(y3, bias, bool(relu), out, 0, batch)
    return out


@njit(cache=True, fastmath=FASTMATH, parallel=True)
def _to_batch_major_threads(y, bias, relu, out, chunks):
    n_batch = y.shape[1]
    for t in prange(chunks):
        first, end = chunk_bounds(t, chunks, n_batch)
        _to_batch_major(y, bias, relu, out, first, end)


@njit(cache=True, fastmath=FASTMATH)
def _to_channel_major(x, relu_output, masked, grad_bias, out, first, end):
    """x (N, C, P) -> out (C, N, P); grad_bias[c] += the sum of x[:, c, :] (fused).
    When ``masked``, x is first multiplied by [relu_output > 0] (the ReLU's
    backward, fused too). Channels first..end-1."""
    n_batch, channels, spatial = x.shape
    zero = x.dtype.type(0)
    for c in range(first, end):
        for n in range(n_batch):
            s = zero
            if masked:
                for p in range(uint64(spatial)):
                    v = x[n, c, p] if relu_output[n, c, p] > zero else zero
                    out[c, n, p] = v
                    s += v
            else:
                for p in range(uint64(spatial)):
                    v = x[n, c, p]
                    out[c, n, p] = v
                    s += v
            grad_bias[c] += s


def to_channel_major(x, grad_bias=None, out=None, relu_output=None):
    x = contiguous(x)
    n, c, p = x.shape
    out = _out(out, (c, n * p), x.dtype)
    if grad_bias is None:
        grad_bias = np.zeros(c, x.dtype)
    elif not grad_bias.flags.c_contiguous:
        raise ValueError("grad_bias is updated in place and must be C-contiguous")
    masked = relu_output is not None
    relu_output = contiguous(relu_output).reshape(x.shape) if masked else x
    args = (x, relu_output, masked, grad_bias.reshape(-1), out.reshape(c, n, p))
    chunks = thread_chunks(x.size, c)
    if chunks > 1:
        _to_channel_major_threads(*args, chunks)
    else:
        _to_channel_major(*args, 0, c)
    return out


@njit(cache=True, fastmath=FASTMATH, parallel=True)
def _to_channel_major_threads(x, relu_output, masked, grad_bias, out, chunks):
    channels = x.shape[1]
    for t in prange(chunks):
        first, end = chunk_bounds(t, chunks, channels)
        _to_channel_major(x, relu_output, masked, grad_bias, out, first, end)


@njit(cache=True, fastmath=FASTMATH)
def _add_channel_bias(y, bias, relu, first, end):
    """y[n, c, :] += bias[c] (then max(0, .) when ``relu``), samples first..end-1."""
    _, channels, spatial = y.shape
    zero = y.dtype.type(0)
    for n in range(first, end):
        for c in range(channels):
            b = bias[c]
            if relu:
                for p in range(uint64(spatial)):
                    v = y[n, c, p] + b
                    y[n, c, p] = v if v > zero else zero
            else:
                for p in range(uint64(spatial)):
                    y[n, c, p] += b


def add_channel_bias(y, bias, relu=False):
    if not y.flags.c_contiguous:
        y += bias[None, :, None]
        if relu:
            np.maximum(y, 0, out=y)
        return y
    args = (y.reshape(y.shape[0], y.shape[1], -1), contiguous(bias), bool(relu))
    chunks = thread_chunks(y.size, y.shape[0])
    if chunks > 1:
        _add_channel_bias_threads(*args, chunks)
    else:
        _add_channel_bias(*args, 0, y.shape[0])
    return y


@njit(cache=True, fastmath=FASTMATH, parallel=True)
def _add_channel_bias_threads(y, bias, relu, chunks):
    n_batch = y.shape[0]
    for t in prange(chunks):
        first, end = chunk_bounds(t, chunks, n_batch)
        _add_channel_bias(y, bias, relu, first, end)


@njit(cache=True, fastmath=FASTMATH)
def _channel_sums(x, out, accumulate):
    n_batch, channels, spatial = x.shape
    if not accumulate:
        out[:] = 0
    for n in range(n_batch):
        for c in range(channels):
            s = x.dtype.type(0)
            for p in range(uint64(spatial)):
                s += x[n, c, p]
            out[c] += s


def channel_sums(x, out=None, accumulate=False):
    x = contiguous(x)
    if out is None:
        out, accumulate = np.empty(x.shape[1], x.dtype), False
    elif not out.flags.c_contiguous:
        raise ValueError("out is updated in place and must be C-contiguous")
    _channel_sums(x.reshape(x.shape[0], x.shape[1], -1), out.reshape(-1), accumulate)
    return out


def conv_weight_grad(grad, cols, out):
    """out += grad @ cols^T. Computed as (cols @ grad^T)^T into a temporary, then added:
    with more rows than columns (K >= O in a convolution) BLAS splits that product
    better (LeNet's second convolution: 1.26 ms against 1.59 ms for grad @ cols^T
    accumulated in place)."""
    transposed = matmul(cols, grad, trans_b=True)  # (K, O)
    axpy(1.0, transposed.T, out)
    return out
