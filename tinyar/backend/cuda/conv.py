"""Convolution kernels: im2col / col2im and the layout changes around the products.

The products themselves are ``linalg.matmul``; the ops here move data (the
formulas are in ``backend/ops/conv.py``). Each runs as one kernel launch:

    im2col             1 launch: one thread per column entry
    col2im             1 launch: one thread per input element
    to_batch_major     1 launch: one thread per output element
    to_channel_major   1 launch: one block per channel
    add_channel_bias   1 launch: one thread per element
    channel_sums       1 launch (+1 to zero ``out`` unless accumulating): one block per channel

im2col. Thread e of the grid-stride loop owns entry e of ``cols``, row
(c, i, j), column (n, oh, ow), and copies x[n, c, oh*sh - top + i*dh,
ow*sw - left + j*dw] there, or 0 on the padding. Neighbouring threads write
neighbouring columns, i.e. neighbouring output positions, and with stride 1
read neighbouring inputs too. x is read through its strides (no copy of a
strided input).

col2im is im2col's adjoint: every column entry is added back to the input it
was copied from, and overlapping windows add up. Written as a scatter (one
thread per column entry) that needs ``cuda.atomic.add``, because up to
kh*kw threads hit the same input. Written as a *gather*, as here, one
thread per input element (n, c, h, w) finds the entries that came from it,
kernel tap by kernel tap: tap (i, j) read it from output (oh, ow) when
h + top - i*dh = oh*sh and w + left - j*dw = ow*sw exactly. The thread sums
them and writes once: no atomics, no zeroing pass, and the sum has a fixed
order, so the result is the same on every run.

The channel reorderings: ``to_batch_major`` (C, N*P) -> (N, C, P) + bias is
one thread per output; ``to_channel_major`` also sums each channel for the
bias gradient, so it gives each channel a block: its threads copy the
channel's N*P values (contiguous runs of P in both layouts) and add them up
with ``block_sum``; thread 0 adds the total to grad_bias[c]. A ReLU after
the convolution fuses into them as on the CPU: max(0, .) as the output is
written (``relu=True``), and its backward, the mask [y > 0], as the
gradient is read (``relu_output=y``).
"""
from numba import cuda

from ._util import (ROW_THREADS, block_sum, contiguous, device, fill, flat, launch_flat,
                    launch_rows, out_like, scratch, updated_in_place, zeros)
from .linalg import matmul

__all__ = ["im2col", "col2im", "to_batch_major", "to_channel_major", "add_channel_bias",
           "channel_sums", "conv_weight_grad"]


def _output_size(size, kernel, stride, pad_before, pad_after, dilation):
    return (size + pad_before + pad_after - dilation * (kernel - 1) - 1) // stride + 1


def _geometry(shape, kernel_size, stride, padding, dilation):
    """(Ho, Wo) and the integer arguments the two kernels take, in their order."""
    (kh, kw), (sh, sw), (top, bottom, left, right), (dh, dw) = (kernel_size, stride, padding,
                                                               dilation)
    out_h = _output_size(shape[2], kh, sh, top, bottom, dh)
    out_w = _output_size(shape[3], kw, sw, left, right, dw)
    ints = tuple(int(v) for v in (kh, kw, sh, sw, top, left, dh, dw, out_h, out_w))
    return out_h, out_w, ints


# --- im2col / col2im ------------------------------------------------------------
@cuda.jit
def _im2col(x, kh, kw, sh, sw, top, left, dh, dw, out_h, out_w, cols):
    """x: (N, C, H, W), any strides; cols: flat (C*kh*kw, N*out_h*out_w)."""
    n_batch, channels, height, width = x.shape
    columns = n_batch * out_h * out_w
    zero = x.dtype.type(0)
    for e in range(cuda.grid(1), cols.size, cuda.gridsize(1)):
        row, col = e // columns, e % columns
        c, tap = row // (kh * kw), row % (kh * kw)
        i, j = tap // kw, tap % kw
        n, spot = col // (out_h * out_w), col % (out_h * out_w)
        h = (spot // out_w) * sh - top + i * dh
        w = (spot % out_w) * sw - left + j * dw
        if 0 <= h < height and 0 <= w < width:
            cols[e] = x[n, c, h, w]
        else:
            cols[e] = zero


@cuda.jit
def _col2im(cols, kh, kw, sh, sw, top, left, dh, dw, out_h, out_w, dx):
    """dx (N, C, H, W) = the adjoint of im2col applied to cols (C*kh*kw, N*out_h*out_w):
    one thread per input element gathers the column entries copied from it."""
    n_batch, channels, height, width = dx.shape
    for e in range(cuda.grid(1), dx.size, cuda.gridsize(1)):
        w = e % width
        h = (e // width) % height
        c = (e // (width * height)) % channels
        n = e // (width * height * channels)
        total = dx.dtype.type(0)
        for i in range(kh):
            rows_apart = h + top - i * dh  # = oh * sh if tap i of output row oh read row h
            if rows_apart < 0 or rows_apart % sh != 0 or rows_apart // sh >= out_h:
                continue
            oh = rows_apart // sh
            for j in range(kw):
                cols_apart = w + left - j * dw
                if cols_apart < 0 or cols_apart % sw != 0 or cols_apart // sw >= out_w:
                    continue
                ow = cols_apart // sw
                total += cols[(c * kh + i) * kw + j, (n * out_h + oh) * out_w + ow]
        dx[n, c, h, w] = total


def im2col(x, kernel_size, stride, padding, dilation, out=None):
    x = device(x)
    n, c = x.shape[:2]
    out_h, out_w, ints = _geometry(x.shape, kernel_size, stride, padding, dilation)
    cols = out_like(out, x, shape=(c * kernel_size[0] * kernel_size[1], n * out_h * out_w))
    launch_flat(_im2col, cols.size, x, *ints, flat(cols))
    return cols


def col2im(cols, input_shape, kernel_size, stride, padding, dilation, out=None):
    cols = device(cols)
    _, _, ints = _geometry(input_shape, kernel_size, stride, padding, dilation)
    dx = out_like(out, cols, shape=tuple(int(s) for s in input_shape))
    launch_flat(_col2im, dx.size, cols, *ints, dx)
    return dx


# --- reordering between (C, N*P) and (N, C, P) ------------------------------------
@cuda.jit
def _to_batch_major(y, bias, batch, relu, out):
    """out[n, c, p] = y[c, n*P + p] + bias[c], then max(0, .) when ``relu``; out flat."""
    channels, columns = y.shape
    spatial = columns // batch
    zero = y.dtype.type(0)
    for e in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        p = e % spatial
        c = (e // spatial) % channels
        n = e // (spatial * channels)
        v = y[c, n * spatial + p] + bias[c]
        if relu:
            v = v if v > zero else zero
        out[e] = v


def to_batch_major(y, batch, bias, out=None, relu=False):
    y = device(y)
    channels, columns = y.shape
    out = out_like(out, y, shape=(batch, channels, columns // batch))
    bias = zeros(channels, y.dtype) if bias is None else flat(contiguous(bias))
    launch_flat(_to_batch_major, out.size, y, bias, int(batch), bool(relu), flat(out))
    return out


@cuda.jit
def _to_channel_major(x, relu_output, masked, grad_bias, has_bias, out):
    """out[c, n*P + p] = x[n, c, p]; grad_bias[c] += the sum of x[:, c, :]. A block a channel.
    When ``masked``, x is first multiplied by [relu_output > 0] (a fused ReLU's backward)."""
    buf = cuda.shared.array(ROW_THREADS, x.dtype)
    n_batch, channels, spatial = x.shape
    zero = x.dtype.type(0)
    for c in range(cuda.blockIdx.x, channels, cuda.gridDim.x):
        s = zero
        for e in range(cuda.threadIdx.x, n_batch * spatial, cuda.blockDim.x):
            n, p = e // spatial, e % spatial
            v = x[n, c, p]
            if masked and not relu_output[n, c, p] > zero:
                v = zero
            out[c, e] = v
            s += v
        total = block_sum(buf, s)  # every thread of the block calls it (barriers)
        if has_bias and cuda.threadIdx.x == 0:
            grad_bias[c] += total


def to_channel_major(x, grad_bias=None, out=None, relu_output=None):
    x = device(x)
    n, c, p = x.shape
    out = out_like(out, x, shape=(c, n * p))
    if grad_bias is None:
        grad_bias, has_bias = scratch(x.dtype), False
    else:
        grad_bias, has_bias = flat(updated_in_place("grad_bias", grad_bias)), True
    masked = relu_output is not None
    # without a mask the kernel is handed x in its place (it never reads it)
    relu_output = contiguous(relu_output).reshape(n, c, p) if masked else x
    launch_rows(_to_channel_major, c, x, relu_output, masked, grad_bias, has_bias, out)
    return out


# --- the per-sample products' bias ------------------------------------------------
@cuda.jit
def _add_channel_bias(y, bias, spatial, relu):
    channels = bias.size
    zero = y.dtype.type(0)
    for e in range(cuda.grid(1), y.size, cuda.gridsize(1)):
        v = y[e] + bias[(e // spatial) % channels]
        if relu:
            v = v if v > zero else zero
        y[e] = v


def add_channel_bias(y, bias, relu=False):
    """y (N, C, ...) += bias[c], then max(0, y) when ``relu``; in place."""
    updated_in_place("y", y)
    bias = flat(contiguous(bias))
    if y.size:
        launch_flat(_add_channel_bias, y.size, flat(y), bias, y.size // (y.shape[0] * bias.size),
                    bool(relu))
    return y


@cuda.jit
def _channel_sums(x, out):
    """out[c] += the sum of x[:, c, :]: one block per channel."""
    buf = cuda.shared.array(ROW_THREADS, x.dtype)
    n_batch, channels, spatial = x.shape
    for c in range(cuda.blockIdx.x, channels, cuda.gridDim.x):
        s = x.dtype.type(0)
        for e in range(cuda.threadIdx.x, n_batch * spatial, cuda.blockDim.x):
            s += x[e // spatial, c, e % spatial]
        total = block_sum(buf, s)
        if cuda.threadIdx.x == 0:
            out[c] += total


def channel_sums(x, out=None, accumulate=False):
    x = device(x)
    if out is None:
        out, accumulate = out_like(None, x, shape=(x.shape[1],)), False
    else:
        updated_in_place("out", out)
    if not accumulate:
        fill(out, 0)
    spatial = x.size // (x.shape[0] * x.shape[1]) if x.size else 1
    if x.ndim != 3:
        x = contiguous(x).reshape(x.shape[0], x.shape[1], spatial)
    launch_rows(_channel_sums, x.shape[1], x, flat(out))
    return out


def conv_weight_grad(grad, cols, out):
    """out += grad @ cols^T: one launch, no temporary (the product accumulates in place)."""
    return matmul(grad, cols, out=out, trans_b=True, accumulate=True)
