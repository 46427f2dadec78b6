"""``Conv1d`` and ``Conv2d``: cross-correlation as one matrix product (im2col).

For Conv2d, with x padded by zeros, stride s, dilation d and g = groups,

    y[n, o, oh, ow] = b[o] + sum over c, i, j of
                      W[o, c, i, j] * x[n, c', oh*s_h + i*d_h, ow*s_w + j*d_w]

where c runs over the C/g input channels of output channel o's group
(c' = its index in x). Unroll every window of x into a column,

    cols = im2col(x)      (C*kh*kw, N*Ho*Wo)   row (c, i, j), column (n, oh, ow)

and the sum is a matrix product per group, Y = W.reshape(O, -1) @ cols,
(O, N*Ho*Wo), reordered to (N, O, Ho, Wo). Backward, G = dL/dy reordered
to (O, N*Ho*Wo), is the backward of that product (see ``linear.py``):

    dL/dW    += G @ cols^T          (per group)
    dL/db    += sum of G over its columns
    dL/dcols  = W.reshape(O, -1)^T @ G
    dL/dx     = col2im(dL/dcols)    every entry of a column added back to the
                                    input it was copied from (windows overlap)

Conv1d is Conv2d on (N, C, 1, L) with a (1, k) kernel.

When the output has more channels than the columns have rows (a first
layer: 1 input channel, 3x3 kernel, 9 rows for 32 channels), the product is
taken per sample instead, y[n] = W @ cols[:, n], which lands in (N, O, P)
without reordering the large output (and dL/dW = sum over n of g[n] @ cols[n]^T).

Speed, measured on the development machine (2-core Xeon, AVX-512; forward +
backward, 2 threads): im2col + BLAS is the method because BLAS runs the
multiply-adds near the machine's peak and a direct Numba loop does not
(docs/performance.md: 15.7 ms against 202 ms at batch 8, 32 -> 64
channels, 32x32). One product for the batch against one per sample:
batch 64, 32 -> 64 channels, 13x13: 5.9 ms against 8.9 ms;
batch 64, 1 -> 32 channels, 28x28: 2.5 ms against 1.7 ms. The whole batch
goes through at once while its columns take at most the backend's
``workspace_bytes()`` (64 MiB on the CPU), and
backward reuses the forward's columns: chunks of ~1 MiB (to stay in the L2
cache) made LeNet's step slower, 16-17 ms against 14.
"""
import numpy as np

from ..backend import backend_of
from ..errors import ConfigError, ShapeError
from . import init
from .checks import (check_choice, check_dtype, check_flag, check_float_input, check_int,
                     check_ints, check_shape, check_size, describe)
from .module import Module
from .parameter import Parameter

# at most this many bytes of columns at once: larger batches are processed in chunks.
# On a GPU each chunk costs its own launches (~30 us each) and memory is plentiful,
# so the limit there is higher: LeNet's second convolution at batch 512 (71 MB of
# columns) stays one chunk.


def _same_padding(kernel, dilation):
    """(before, after) so that the output has the input's size (stride 1); the odd one
    out goes after, as in PyTorch."""
    total = dilation * (kernel - 1)
    return total // 2, total - total // 2


# A fused activation: applied in the same pass as the bias (forward) and the bias
# gradient (backward), so the layer's output needs no separate ReLU pass each way.
ACTIVATIONS = (None, "relu")


class _Conv(Module):
    """The shared machinery; subclasses say how their input maps to (N, C, H, W)."""

    _spatial_names = ("H", "W")

    def __init__(self, in_channels, out_channels, kernel_size, stride, padding, dilation,
                 groups, bias, dtype, weight_kernel, activation=None):
        """``kernel_size`` ... ``padding``: the checked geometry of the 2-d view;
        ``weight_kernel``: the kernel's own shape, (kh, kw) or (k,), for the weight."""
        super().__init__()
        name = type(self).__name__
        self.activation = check_choice(name, "activation", activation, ACTIVATIONS)
        self.in_channels = check_int(name, "in_channels", in_channels)
        self.out_channels = check_int(name, "out_channels", out_channels)
        self.groups = check_int(name, "groups", groups)
        if self.in_channels % self.groups or self.out_channels % self.groups:
            raise ConfigError(f"{name}: in_channels ({self.in_channels}) and out_channels "
                              f"({self.out_channels}) must both be divisible by groups "
                              f"({self.groups})")
        bias, dtype = check_flag(name, "bias", bias), check_dtype(name, dtype)
        # (kh, kw), (sh, sw), (dh, dw) and (top, bottom, left, right), all of the 2-d view
        self._kernel, self._stride, self._dilation, self._padding = (kernel_size, stride,
                                                                     dilation, padding)
        fan_in = self.in_channels // self.groups * kernel_size[0] * kernel_size[1]
        weight_shape = (self.out_channels, self.in_channels // self.groups) + weight_kernel
        self.weight = Parameter(init.fan_in_uniform(weight_shape, fan_in, dtype))
        self.bias = Parameter(init.fan_in_uniform(self.out_channels, fan_in, dtype)) \
            if bias else None

    # --- shapes -------------------------------------------------------------------
    def _as_4d(self, x):
        raise NotImplementedError  # abstract

    def _expected(self):
        return f"(N, {self.in_channels}, " + ", ".join(self._spatial_names) + ")"

    def _output_hw(self, height, width):
        (kh, kw), (sh, sw), (dh, dw) = self._kernel, self._stride, self._dilation
        top, bottom, left, right = self._padding
        return ((height + top + bottom - dh * (kh - 1) - 1) // sh + 1,
                (width + left + right - dw * (kw - 1) - 1) // sw + 1)

    def _check_input(self, x):
        check_float_input(self, x, self.weight.dtype)
        check_shape(self, x, self._expected(), ndim=len(self._spatial_names) + 2)
        check_size(self, x, 1, self.in_channels, self._expected())
        x4 = self._as_4d(x)
        (kh, kw), (dh, dw) = self._kernel, self._dilation
        top, bottom, left, right = self._padding
        padded = (x4.shape[2] + top + bottom, x4.shape[3] + left + right)
        reach = (dh * (kh - 1) + 1, dw * (kw - 1) + 1)
        if padded[0] < reach[0] or padded[1] < reach[1]:
            k = len(self._spatial_names)
            raise ShapeError(f"{describe(self)}: input {tuple(x.shape)} is too small for the "
                             f"kernel: padded size {padded[2 - k:]} < dilated kernel size "
                             f"{reach[2 - k:]}")
        return x4

    def _chunks(self, B, batch, itemsize):
        """(n0, n1) pieces of the batch whose columns take at most the backend's
        ``workspace_bytes()``."""
        rows = self.in_channels * self._kernel[0] * self._kernel[1]
        limit = B.workspace_bytes()
        step = max(1, min(batch, limit // max(1, rows * self._spatial * itemsize)))
        return [(n0, min(batch, n0 + step)) for n0 in range(0, batch, step)]

    def _groups(self):
        """(output rows, column rows) of each group in W.reshape(O, -1) and in cols."""
        o, k = self.out_channels // self.groups, self.weight.size // self.out_channels
        return [(slice(g * o, (g + 1) * o), slice(g * k, (g + 1) * k))
                for g in range(self.groups)]

    def _per_sample(self):
        """Multiply per sample when the output (O rows) is larger than the columns
        (C*kh*kw rows): then reordering the output would cost more than it saves."""
        return self.out_channels > self.weight.size // self.out_channels * self.groups

    def _im2col(self, B, x4):
        return B.im2col(x4, self._kernel, self._stride, self._padding, self._dilation)

    # --- forward and backward -----------------------------------------------------
    def forward(self, x):
        x4 = self._check_input(x)
        B = backend_of(x)
        n = x4.shape[0]
        height, width = self._output_hw(x4.shape[2], x4.shape[3])
        self._spatial = height * width
        y = B.empty((n, self.out_channels, self._spatial), x.dtype)
        chunks, cols = self._chunks(B, n, x.dtype.itemsize), None
        for n0, n1 in chunks:
            cols = self._im2col(B, x4[n0:n1])
            self._forward_chunk(B, cols, y[n0:n1])
        # one chunk (the usual case): keep its columns for backward, else rebuild them there
        self._x4, self._cols = x4, (cols if len(chunks) == 1 else None)
        self._x_shape, self._y_shape = x.shape, self._output_shape(x.shape, height, width)
        self._y = y if self.activation else None  # the ReLU's backward needs y > 0
        return y.reshape(self._y_shape)

    def _forward_chunk(self, B, cols, y):
        """y (n, O, P) = W @ cols (per group) + b, for a chunk of n samples."""
        n, weight = y.shape[0], self.weight.data.reshape(self.out_channels, -1)
        bias = None if self.bias is None else self.bias.data
        relu = self.activation == "relu"
        if self._per_sample() and B.multiplies_stacks():
            # cols viewed as (n, K, P): one product per sample, landing in y as it is
            stacked = cols.reshape(cols.shape[0], n, -1).transpose(1, 0, 2)
            for out_rows, col_rows in self._groups():
                B.matmul(weight[out_rows], stacked[:, col_rows], out=y[:, out_rows])
            if bias is not None:
                B.add_channel_bias(y, bias, relu=relu)
            elif relu:
                B.relu_forward(y, out=y)
        else:
            # one product for the chunk, (O, n*P), then reordered to (n, O, P) with the
            # bias (and the ReLU) in the same pass
            product = B.empty((self.out_channels, cols.shape[1]), cols.dtype)
            for out_rows, col_rows in self._groups():
                B.matmul(weight[out_rows], cols[col_rows], out=product[out_rows])
            B.to_batch_major(product, n, bias, out=y, relu=relu)

    def _output_shape(self, x_shape, height, width):
        raise NotImplementedError  # abstract

    skips_input_grad = True

    def backward(self, grad_out, input_grad=True):
        """dL/dx; ``input_grad=False`` (x is the data, see ``Sequential.backward``) skips
        dL/dcols and col2im, only adds the parameter gradients, and returns None."""
        B = backend_of(grad_out)
        x4 = self._x4
        grad = grad_out.reshape(x4.shape[0], self.out_channels, self._spatial)
        dx = B.empty(x4.shape, x4.dtype) if input_grad else None
        for n0, n1 in self._chunks(B, x4.shape[0], x4.dtype.itemsize):
            cols = self._cols if self._cols is not None else self._im2col(B, x4[n0:n1])
            y = None if self._y is None else self._y[n0:n1]
            dcols = self._backward_chunk(B, grad[n0:n1], cols, input_grad, y)
            if input_grad:
                B.col2im(dcols, x4[n0:n1].shape, self._kernel, self._stride, self._padding,
                         self._dilation, out=dx[n0:n1])
        self._cols = None  # free them (a second backward rebuilds them from x)
        return dx.reshape(self._x_shape) if input_grad else None

    def _backward_chunk(self, B, grad, cols, input_grad, relu_output=None):
        """Add dL/dW, dL/db of a chunk (grad: (n, O, P)); return dL/dcols (K, n*P), or
        None when ``input_grad`` is False. With a fused ReLU, ``relu_output`` is the
        chunk's output y, and dL/d(pre-activation) = grad * [y > 0]."""
        n = grad.shape[0]
        weight = self.weight.data.reshape(self.out_channels, -1)
        grad_weight = self.weight.grad.reshape(self.out_channels, -1)
        grad_bias = None if self.bias is None else self.bias.grad
        dcols = B.empty(cols.shape, cols.dtype) if input_grad else None
        if self._per_sample() and B.multiplies_stacks():
            if relu_output is not None:
                grad = B.relu_backward(grad, relu_output)
            stacked = cols.reshape(cols.shape[0], n, -1).transpose(1, 0, 2)  # (n, K, P)
            if input_grad:
                dstacked = dcols.reshape(cols.shape[0], n, -1).transpose(1, 0, 2)
            for out_rows, col_rows in self._groups():
                g = grad[:, out_rows]
                # dW = sum over samples of g[i] @ cols[i]^T: n products, then their sum
                per_sample = B.matmul(g, stacked[:, col_rows].transpose(0, 2, 1))
                B.sum_rows(per_sample.reshape(n, -1), out=grad_weight[out_rows].reshape(-1),
                           accumulate=True)
                if input_grad:
                    B.matmul(weight[out_rows], g, out=dstacked[:, col_rows], trans_a=True)
            if grad_bias is not None:
                B.channel_sums(grad, out=grad_bias, accumulate=True)
        else:
            # (O, n*P), and dL/db += its row sums; the ReLU's mask in the same pass
            g = B.to_channel_major(grad, grad_bias, relu_output=relu_output)
            for out_rows, col_rows in self._groups():
                B.conv_weight_grad(g[out_rows], cols[col_rows], grad_weight[out_rows])
                if input_grad:
                    B.matmul(weight[out_rows], g[out_rows], out=dcols[col_rows], trans_a=True)
        return dcols


class Conv2d(_Conv):
    """2-d convolution (cross-correlation, as in every framework), PyTorch's layout.

    Shapes:
        x: (N, C_in, H, W)    y: (N, C_out, Ho, Wo)
        weight: (C_out, C_in / groups, kh, kw)    bias: (C_out,)
        Ho = (H + 2 p_h - d_h (kh - 1) - 1) // s_h + 1   (Wo alike)

    kernel_size, stride, dilation: an int or an (h, w) pair; padding: an int,
    a pair, 'valid' (0) or 'same' (output size = input size; stride 1 only).
    groups: the channels split into that many independent convolutions.
    activation: None, or "relu" for y = max(0, conv(x) + b) fused into the
    bias pass (backward: dL/d(conv(x) + b) = dL/dy * [y > 0], fused into the
    bias-gradient pass); the same as Conv2d followed by ReLU, one pass less
    each way.
    Initialisation as PyTorch: weight and bias ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)),
    fan_in = C_in / groups * kh * kw. Forward and backward math: the module
    docstring.

    Ops: ``B.im2col``, ``B.matmul``, ``B.add_channel_bias``, ``B.relu_forward``,
    ``B.to_batch_major``, ``B.col2im``, ``B.relu_backward``, ``B.sum_rows``, ``B.channel_sums``,
    ``B.to_channel_major``, ``B.conv_weight_grad``; their NumPy references:
    ``backend/ops/conv.py``, ``backend/ops/linalg.py``, ``backend/ops/elementwise.py``.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 groups=1, bias=True, dtype=np.float32, activation=None):
        kernel = check_ints("Conv2d", "kernel_size", kernel_size, 2)
        stride = check_ints("Conv2d", "stride", stride, 2)
        dilation = check_ints("Conv2d", "dilation", dilation, 2)
        if isinstance(padding, str):
            shown_padding = check_choice("Conv2d", "padding", padding, ("valid", "same"))
        else:
            shown_padding = check_ints("Conv2d", "padding", padding, 2, low=0)
        if padding == "same":
            if stride != (1, 1):
                raise ConfigError("Conv2d: padding='same' needs stride 1, got stride "
                                  f"{stride}")
            pads = _same_padding(kernel[0], dilation[0]) + _same_padding(kernel[1], dilation[1])
        elif padding == "valid":
            pads = (0, 0, 0, 0)
        else:
            pads = (shown_padding[0],) * 2 + (shown_padding[1],) * 2
        super().__init__(in_channels, out_channels, kernel, stride, pads, dilation, groups, bias,
                         dtype, kernel, activation)
        # as given, for printing (the base class keeps the 2-d view of them)
        self.kernel_size, self.stride, self.dilation = kernel, stride, dilation
        self.padding = shown_padding

    def extra_repr(self):
        text = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, " \
               f"stride={self.stride}"
        if self.padding not in ((0, 0), "valid"):
            text += f", padding={self.padding!r}"
        if self.dilation != (1, 1):
            text += f", dilation={self.dilation}"
        if self.groups != 1:
            text += f", groups={self.groups}"
        if self.activation:
            text += f", activation={self.activation!r}"
        return text + ("" if self.bias is not None else ", bias=False")

    def _as_4d(self, x):
        return x

    def _output_shape(self, x_shape, height, width):
        return (x_shape[0], self.out_channels, height, width)


class Conv1d(_Conv):
    """1-d convolution over (N, C, L), PyTorch's layout, with causal padding.

    Shapes:
        x: (N, C_in, L)    y: (N, C_out, Lo)
        weight: (C_out, C_in / groups, k)    bias: (C_out,)
        Lo = (L + p_left + p_right - d (k - 1) - 1) // s + 1

    padding: an int p (p zeros on each side), 'valid' (0), 'same' (Lo = L,
    stride 1 only) or 'causal': d * (k - 1) zeros on the left only, so that
    Lo = L (stride 1) and y[t] depends on x[<= t] alone, as in WaveNet and
    temporal convolutional networks. With stride s, y[t] sees x[<= t * s].

    Computed as Conv2d on (N, C, 1, L) with a (1, k) kernel (the module
    docstring has the math). ``activation="relu"``: a fused ReLU, as in
    Conv2d. Initialisation as PyTorch: U(+-1/sqrt(fan_in)), fan_in = C_in / groups * k.

    Ops: ``B.im2col``, ``B.matmul``, ``B.add_channel_bias``, ``B.relu_forward``,
    ``B.to_batch_major``, ``B.col2im``, ``B.relu_backward``, ``B.sum_rows``, ``B.channel_sums``,
    ``B.to_channel_major``, ``B.conv_weight_grad``; their NumPy references:
    ``backend/ops/conv.py``, ``backend/ops/linalg.py``, ``backend/ops/elementwise.py``.
    """

    _spatial_names = ("L",)

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 groups=1, bias=True, dtype=np.float32, activation=None):
        (kernel,), (stride,), (dilation,) = (check_ints("Conv1d", "kernel_size", kernel_size, 1),
                                             check_ints("Conv1d", "stride", stride, 1),
                                             check_ints("Conv1d", "dilation", dilation, 1))
        if isinstance(padding, str):
            check_choice("Conv1d", "padding", padding, ("valid", "same", "causal"))
        if padding == "causal":
            pads = (dilation * (kernel - 1), 0)  # (left, right)
        elif padding == "same":
            if stride != 1:
                raise ConfigError(f"Conv1d: padding='same' needs stride 1, got stride {stride}")
            pads = _same_padding(kernel, dilation)
        elif padding == "valid":
            pads = (0, 0)
        else:
            pads = check_ints("Conv1d", "padding", padding, 1, low=0) * 2
        super().__init__(in_channels, out_channels, (1, kernel), (1, stride), (0, 0) + pads,
                         (1, dilation), groups, bias, dtype, (kernel,), activation)
        self.kernel_size, self.stride, self.dilation = (kernel,), (stride,), (dilation,)
        self.padding = padding if isinstance(padding, str) else (pads[0],)

    def extra_repr(self):
        text = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, " \
               f"stride={self.stride}"
        if self.padding not in ((0,), "valid"):
            text += f", padding={self.padding!r}"
        if self.dilation != (1,):
            text += f", dilation={self.dilation}"
        if self.groups != 1:
            text += f", groups={self.groups}"
        if self.activation:
            text += f", activation={self.activation!r}"
        return text + ("" if self.bias is not None else ", bias=False")

    def _as_4d(self, x):
        return x.reshape(x.shape[0], x.shape[1], 1, x.shape[2])

    def _output_shape(self, x_shape, height, width):
        return (x_shape[0], self.out_channels, width)
