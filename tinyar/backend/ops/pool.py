"""Pooling over the two spatial axes of (N, C, H, W) arrays.

Conventions shared by these ops: ``kernel_size``, ``stride`` and
``padding`` are (height, width) pairs; windows start at
``oh * stride - padding`` and the output has

    Ho = (H + 2 * padding_h - kernel_h) // stride_h + 1     (and Wo alike)

positions (PyTorch's ``ceil_mode=False``). The 1-d layers call these ops on
(N, C, 1, L) views.

Max pooling pads with -inf (padding never wins) and records, for every
output, the index ``h * W + w`` of the winning input inside its (H, W)
plane; its backward sends each gradient to that index (adding, since
overlapping windows may pick the same input). Average pooling pads with
zeros and divides by the whole window, padding included (PyTorch's
``count_include_pad=True``).
"""
import math

import numpy as np

from . import op


def _windows(x, kernel_size, stride, padding, fill):
    """(N, C, Ho, Wo, kh, kw) view of the windows of x padded with ``fill``."""
    (kh, kw), (sh, sw), (ph, pw) = kernel_size, stride, padding
    padded = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=fill)
    view = np.lib.stride_tricks.sliding_window_view(padded, (kh, kw), axis=(2, 3))
    return view[:, :, ::sh, ::sw]


def _pool_example(rng, dtype, shape=(2, 3, 7, 6)):
    return dict(x=rng.standard_normal(shape).astype(dtype), kernel_size=(3, 2), stride=(2, 1),
                padding=(1, 1))


def _max_indices(x, kernel_size, stride, padding):
    """The index h * W + w of each window's (first) maximum in its input plane."""
    (kh, kw), (sh, sw), (ph, pw) = kernel_size, stride, padding
    win = _windows(x, kernel_size, stride, padding, -np.inf)
    n, c, ho, wo = win.shape[:4]
    best = win.reshape(n, c, ho, wo, kh * kw).argmax(axis=-1)
    h = np.arange(ho)[:, None] * sh - ph + best // kw
    w = np.arange(wo)[None, :] * sw - pw + best % kw
    return (h * x.shape[3] + w).astype(np.int32)


@op("x: (N, C, H, W); kernel_size, stride, padding: pairs; out: (N, C, Ho, Wo); "
    "out_indices: (N, C, Ho, Wo) int32", example=_pool_example)
def max_pool2d_forward(x, kernel_size, stride, padding, out=None, out_indices=None):
    """(y, indices): the maximum of each window and where it is (h * W + w)."""
    win = _windows(x, kernel_size, stride, padding, -np.inf)
    return win.max(axis=(4, 5)), _max_indices(x, kernel_size, stride, padding)


def _max_backward_example(rng, dtype):
    args = _pool_example(rng, dtype)
    indices = _max_indices(args["x"], args["kernel_size"], args["stride"], args["padding"])
    return dict(grad=rng.standard_normal(indices.shape).astype(dtype), indices=indices,
                input_size=args["x"].shape[2:])


@op("grad, indices: (N, C, Ho, Wo); input_size: (H, W); out: (N, C, H, W)",
    example=_max_backward_example)
def max_pool2d_backward(grad, indices, input_size, out=None):
    """dL/dx: each grad[n, c, i, j] added at indices[n, c, i, j] of plane (n, c)."""
    n, c = grad.shape[:2]
    dx = np.zeros((n * c, input_size[0] * input_size[1]), grad.dtype)
    rows = np.repeat(np.arange(n * c), grad[0, 0].size)
    np.add.at(dx, (rows, indices.reshape(-1)), grad.reshape(-1))
    return dx.reshape(n, c, *input_size)


@op("x: (N, C, H, W); kernel_size, stride, padding: pairs; out: (N, C, Ho, Wo)",
    example=_pool_example)
def avg_pool2d_forward(x, kernel_size, stride, padding, out=None):
    """The mean of each window, zero padding counted (divisor kh * kw)."""
    return _windows(x, kernel_size, stride, padding, 0).mean(axis=(4, 5))


def _avg_backward_example(rng, dtype):
    args = _pool_example(rng, dtype)
    y = avg_pool2d_forward(**args)
    return dict(grad=rng.standard_normal(y.shape).astype(dtype), input_size=args["x"].shape[2:],
                **{k: args[k] for k in ("kernel_size", "stride", "padding")})


@op("grad: (N, C, Ho, Wo); input_size: (H, W); kernel_size, stride, padding: pairs; "
    "out: (N, C, H, W)", example=_avg_backward_example)
def avg_pool2d_backward(grad, input_size, kernel_size, stride, padding, out=None):
    """dL/dx: each grad / (kh * kw) added to every input of its window."""
    (kh, kw), (sh, sw), (ph, pw) = kernel_size, stride, padding
    n, c, ho, wo = grad.shape
    padded = np.zeros((n, c, input_size[0] + 2 * ph, input_size[1] + 2 * pw), grad.dtype)
    share = grad / (kh * kw)
    for i in range(kh):
        for j in range(kw):
            padded[:, :, i:i + sh * ho:sh, j:j + sw * wo:sw] += share
    return padded[:, :, ph:ph + input_size[0], pw:pw + input_size[1]]


def adaptive_bins(size, out_size):
    """PyTorch's adaptive windows: bin i covers [floor(i*size/out), ceil((i+1)*size/out))."""
    return [(i * size // out_size, math.ceil((i + 1) * size / out_size)) for i in range(out_size)]


def _adaptive_example(rng, dtype):
    return dict(x=rng.standard_normal((2, 3, 7, 5)).astype(dtype), output_size=(3, 2))


@op("x: (N, C, H, W); output_size: (Ho, Wo); out: (N, C, Ho, Wo)", example=_adaptive_example)
def adaptive_avg_pool2d_forward(x, output_size, out=None):
    """The mean of each adaptive bin (bins may overlap when Ho does not divide H)."""
    y = np.empty(x.shape[:2] + tuple(output_size), x.dtype)
    for i, (h0, h1) in enumerate(adaptive_bins(x.shape[2], output_size[0])):
        for j, (w0, w1) in enumerate(adaptive_bins(x.shape[3], output_size[1])):
            y[:, :, i, j] = x[:, :, h0:h1, w0:w1].mean(axis=(2, 3))
    return y


@op("grad: (N, C, Ho, Wo); input_size: (H, W); out: (N, C, H, W)",
    example=lambda rng, dtype: dict(grad=rng.standard_normal((2, 3, 3, 2)).astype(dtype),
                                    input_size=(7, 5)))
def adaptive_avg_pool2d_backward(grad, input_size, out=None):
    """dL/dx: each grad / (bin area) added to every input of its bin."""
    dx = np.zeros(grad.shape[:2] + tuple(input_size), grad.dtype)
    for i, (h0, h1) in enumerate(adaptive_bins(input_size[0], grad.shape[2])):
        for j, (w0, w1) in enumerate(adaptive_bins(input_size[1], grad.shape[3])):
            dx[:, :, h0:h1, w0:w1] += grad[:, :, i:i + 1, j:j + 1] / ((h1 - h0) * (w1 - w0))
    return dx
