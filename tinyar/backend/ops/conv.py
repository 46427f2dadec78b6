"""Convolution as a matrix product: im2col, col2im and the layout changes around them.

A convolution of x (N, C, H, W) with weights W (O, C, kh, kw) is one matrix
product once every window of x is unrolled into a column:

    cols = im2col(x)           (C*kh*kw, N*Ho*Wo)   row (c, i, j), column (n, oh, ow)
    Y    = W.reshape(O, -1) @ cols                  (O, N*Ho*Wo)
    y    = to_batch_major(Y, N, bias)               (N, O, Ho*Wo)

and its backward is two more products and the adjoint of im2col:

    G     = to_channel_major(g)          (O, N*Ho*Wo), and dL/db += the row sums of G
    dW   += G @ cols^T
    dx    = col2im(W.reshape(O, -1)^T @ G)

When the output has more channels than the columns have rows (a first
layer: C*kh*kw = 9 rows for 32 channels), reordering the large output costs
more than it saves; the layer then multiplies per sample, with a stacked
``matmul`` (N, O, K) @ (N, K, P) that writes (N, O, P) directly, and adds the
bias with ``add_channel_bias`` (its gradient: ``channel_sums``).

Conventions: ``kernel_size``, ``stride`` and ``dilation`` are (height,
width) pairs; ``padding`` is (top, bottom, left, right) so that causal and
'same' padding (more on one side) need no copy of x. Input row h of output
row oh and kernel row i is ``h = oh * stride_h - top + i * dilation_h``
(zero outside the input), and

    Ho = (H + top + bottom - dilation_h * (kh - 1) - 1) // stride_h + 1   (Wo alike).
"""
import numpy as np

from . import op


def conv_output_size(size, kernel, stride, pad_before, pad_after, dilation):
    return (size + pad_before + pad_after - dilation * (kernel - 1) - 1) // stride + 1


def _geometry(input_shape, kernel_size, stride, padding, dilation):
    (kh, kw), (sh, sw), (top, bottom, left, right), (dh, dw) = (kernel_size, stride, padding,
                                                               dilation)
    ho = conv_output_size(input_shape[2], kh, sh, top, bottom, dh)
    wo = conv_output_size(input_shape[3], kw, sw, left, right, dw)
    return ho, wo


def _taps(kernel_size, stride, dilation, ho, wo):
    """(i, j, rows, cols): the slices of the padded input that kernel tap (i, j) reads."""
    (kh, kw), (sh, sw), (dh, dw) = kernel_size, stride, dilation
    for i in range(kh):
        for j in range(kw):
            yield i, j, slice(i * dh, i * dh + sh * (ho - 1) + 1, sh), \
                slice(j * dw, j * dw + sw * (wo - 1) + 1, sw)


def _conv_example(rng, dtype):
    return dict(x=rng.standard_normal((2, 3, 6, 7)).astype(dtype), kernel_size=(3, 2),
                stride=(2, 1), padding=(1, 0, 2, 1), dilation=(1, 2))


@op("x: (N, C, H, W); kernel_size, stride, dilation: pairs; padding: (top, bottom, left, "
    "right); out: (C*kh*kw, N*Ho*Wo)", example=_conv_example)
def im2col(x, kernel_size, stride, padding, dilation, out=None):
    """cols[(c, i, j), (n, oh, ow)] = x_padded[n, c, oh*sh + i*dh, ow*sw + j*dw]."""
    n, c = x.shape[:2]
    (kh, kw), (top, bottom, left, right) = kernel_size, padding
    ho, wo = _geometry(x.shape, kernel_size, stride, padding, dilation)
    padded = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    cols = np.empty((c, kh, kw, n, ho, wo), x.dtype)
    for i, j, rows, columns in _taps(kernel_size, stride, dilation, ho, wo):
        cols[:, i, j] = padded[:, :, rows, columns].transpose(1, 0, 2, 3)
    return cols.reshape(c * kh * kw, n * ho * wo)


def _col2im_example(rng, dtype):
    args = _conv_example(rng, dtype)
    x = args.pop("x")
    cols = im2col(x, **args)
    return dict(cols=rng.standard_normal(cols.shape).astype(dtype), input_shape=x.shape, **args)


@op("cols: (C*kh*kw, N*Ho*Wo); input_shape: (N, C, H, W); kernel_size, stride, dilation: "
    "pairs; padding: (top, bottom, left, right); out: (N, C, H, W)", example=_col2im_example)
def col2im(cols, input_shape, kernel_size, stride, padding, dilation, out=None):
    """The adjoint of im2col: every column entry added back where im2col read it
    (overlapping windows add up; what falls on the padding is dropped)."""
    n, c, h, w = input_shape
    (kh, kw), (top, bottom, left, right) = kernel_size, padding
    ho, wo = _geometry(input_shape, kernel_size, stride, padding, dilation)
    padded = np.zeros((n, c, h + top + bottom, w + left + right), cols.dtype)
    cols6 = cols.reshape(c, kh, kw, n, ho, wo)
    for i, j, rows, columns in _taps(kernel_size, stride, dilation, ho, wo):
        padded[:, :, rows, columns] += cols6[:, i, j].transpose(1, 0, 2, 3)
    return padded[:, :, top:top + h, left:left + w]


@op("y: (C, N*P); bias: (C,) or None; out: (N, C, P)",
    example=lambda rng, dtype: dict(y=rng.standard_normal((4, 3 * 5)).astype(dtype), batch=3,
                                    bias=rng.standard_normal(4).astype(dtype)))
def to_batch_major(y, batch, bias, out=None, relu=False):
    """out[n, c, p] = y[c, n*P + p] + bias[c]: a product's output back to (N, C, P);
    then max(0, out) when ``relu`` (a fused activation)."""
    out = y.reshape(y.shape[0], batch, -1).transpose(1, 0, 2)
    out = out + bias[None, :, None] if bias is not None else out.copy()
    return np.maximum(out, 0) if relu else out


def _channel_major_example(rng, dtype):
    return dict(x=rng.standard_normal((3, 4, 5)).astype(dtype),
                grad_bias=rng.standard_normal(4).astype(dtype),
                out=np.zeros((4, 15), dtype))


@op("x: (N, C, P); grad_bias: (C,) or None; out: (C, N*P); updates grad_bias",
    example=_channel_major_example, inplace=("grad_bias", "out"))
def to_channel_major(x, grad_bias=None, out=None, relu_output=None):
    """out[c, n*P + p] = x[n, c, p]; grad_bias += x summed over n and p (a bias gradient).

    With ``relu_output`` (N, C, P), the output of a fused ReLU, x is first
    multiplied by [relu_output > 0]: the ReLU's backward."""
    if relu_output is not None:
        x = x * (relu_output > 0)
    n, c, p = x.shape
    moved = x.transpose(1, 0, 2).reshape(c, n * p)
    return (None if grad_bias is None else grad_bias + x.sum(axis=(0, 2))), moved


@op("y: (N, C, P); bias: (C,); updates y",
    example=lambda rng, dtype: dict(y=rng.standard_normal((3, 4, 5)).astype(dtype),
                                    bias=rng.standard_normal(4).astype(dtype)),
    inplace=("y",))
def add_channel_bias(y, bias, relu=False):
    """y[n, c, p] += bias[c]; then max(0, y) when ``relu`` (a fused activation)."""
    y = y + bias[None, :, None]
    return np.maximum(y, 0) if relu else y


@op("x: (N, C, P); out: (C,)",
    example=lambda rng, dtype: dict(x=rng.standard_normal((3, 4, 5)).astype(dtype),
                                    out=rng.standard_normal(4).astype(dtype), accumulate=True),
    inplace=("out",))
def channel_sums(x, out=None, accumulate=False):
    """out = x.sum(axis=(0, 2)), or out += ... when accumulate (a bias gradient)."""
    s = x.sum(axis=(0, 2))
    return out + s if accumulate else s


@op("grad: (O, M); cols: (K, M); out: (O, K); updates out",
    example=lambda rng, dtype: dict(grad=rng.standard_normal((4, 9)).astype(dtype),
                                    cols=rng.standard_normal((6, 9)).astype(dtype),
                                    out=rng.standard_normal((4, 6)).astype(dtype)),
    inplace=("out",))
def conv_weight_grad(grad, cols, out):
    """out += grad @ cols^T: a convolution's weight gradient, dL/dW += G cols^T, with G
    the output gradient (O, N*P) and cols the im2col columns (K, N*P)."""
    return (out + grad @ cols.T,)
