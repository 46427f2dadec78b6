"""Pooling: ``MaxPool1d``, ``MaxPool2d``, ``AvgPool2d``, ``AdaptiveAvgPool2d``.

Each output summarises one window of its channel's plane; channels and
samples never mix, and there are no parameters. With window (kh, kw),
stride s and padding p (PyTorch's ``ceil_mode=False``),

    Ho = (H + 2 p_h - kh) // s_h + 1        (Wo alike; stride defaults to the window)

Max pooling: y = max over the window (padding counts as -inf, so it never
wins). Only the winner moved y, so the backward routes each gradient to it:

    dL/dx[n, c, h, w] = sum of g[n, c, oh, ow] over the windows whose maximum is x[n, c, h, w]

(forward records the winner's index; overlapping windows may share one,
hence the sum). Average pooling: y = sum over the window / (kh * kw), zero
padding included (``count_include_pad=True``), so each input in a window
receives g / (kh * kw). Adaptive average pooling: window i of an axis of
size H and Ho outputs is [floor(i H / Ho), ceil((i + 1) H / Ho)), each
input receiving g / (the window's area).
"""
import numbers

from ..backend import backend_of
from ..errors import ConfigError, ShapeError
from .checks import check_float_input, check_ints, check_shape, describe
from .module import Module


class _Pool2d(Module):
    """Window geometry and input checks shared by MaxPool2d and AvgPool2d."""

    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        name = type(self).__name__
        self.kernel_size = check_ints(name, "kernel_size", kernel_size, 2, low=1)
        self.stride = self.kernel_size if stride is None else \
            check_ints(name, "stride", stride, 2, low=1)
        self.padding = check_ints(name, "padding", padding, 2, low=0)
        if any(2 * p > k for p, k in zip(self.padding, self.kernel_size)):
            raise ConfigError(f"{name}: padding {self.padding} must be at most half of "
                             f"kernel_size {self.kernel_size} (a window of padding alone has "
                             f"no maximum)")

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"

    def _as_4d(self, x):
        """Check x (N, C, H, W) and return it with its output's (Ho, Wo)."""
        check_float_input(self, x)
        check_shape(self, x, "(N, C, H, W)", ndim=4)
        return x, self._output_hw(x, x.shape[2:])

    def _output_hw(self, x, size):
        out = tuple((n + 2 * p - k) // s + 1 for n, k, s, p in
                    zip(size, self.kernel_size, self.stride, self.padding))
        if min(out) < 1:
            shown = x.ndim - 2  # MaxPool1d: only the length axis of its (1, L) view
            padded = tuple(n + 2 * p for n, p in zip(size, self.padding))[-shown:]
            raise ShapeError(f"{describe(self)}: input {tuple(x.shape)} is too small for the "
                             f"window: padded size {padded} < kernel_size "
                             f"{self.kernel_size[-shown:]}")
        return out


class MaxPool2d(_Pool2d):
    """The maximum of each window, per channel.

    Shapes: x (N, C, H, W) -> y (N, C, Ho, Wo). kernel_size, stride (default:
    kernel_size), padding: an int or an (h, w) pair; padding at most half the
    window. Ties go to the first maximum in row-major order; a NaN in a
    window wins (y is NaN), as in PyTorch. Backward: the module docstring.

    Ops: ``B.max_pool2d_forward``, ``B.max_pool2d_backward``; their NumPy references:
    ``backend/ops/pool.py``.
    """

    def forward(self, x):
        x4, out_hw = self._as_4d(x)
        B = backend_of(x)
        y, self._indices = B.max_pool2d_forward(x4, self.kernel_size, self.stride, self.padding)
        self._x_shape, self._hw, self._y_shape = x.shape, x4.shape[2:], y.shape
        return y

    def backward(self, grad_out):
        dx = backend_of(grad_out).max_pool2d_backward(grad_out, self._indices, self._hw)
        return dx.reshape(self._x_shape)


class MaxPool1d(MaxPool2d):
    """The maximum of each window of length k along L, per channel.

    Shapes: x (N, C, L) -> y (N, C, Lo), Lo = (L + 2 p - k) // s + 1;
    stride defaults to kernel_size. Computed as MaxPool2d on (N, C, 1, L)
    with a (1, k) window.

    Ops: ``B.max_pool2d_forward``, ``B.max_pool2d_backward``; their NumPy references:
    ``backend/ops/pool.py``.
    """

    def __init__(self, kernel_size, stride=None, padding=0):
        (k,) = check_ints("MaxPool1d", "kernel_size", kernel_size, 1, low=1)
        (s,) = (k,) if stride is None else check_ints("MaxPool1d", "stride", stride, 1, low=1)
        (p,) = check_ints("MaxPool1d", "padding", padding, 1, low=0)
        super().__init__((1, k), (1, s), (0, p))

    def extra_repr(self):
        return f"kernel_size={self.kernel_size[1]}, stride={self.stride[1]}, " \
               f"padding={self.padding[1]}"

    def _as_4d(self, x):
        check_float_input(self, x)
        check_shape(self, x, "(N, C, L)", ndim=3)
        x4 = x.reshape(x.shape[0], x.shape[1], 1, x.shape[2])
        return x4, self._output_hw(x, x4.shape[2:])

    def forward(self, x):
        y = super().forward(x)
        return y.reshape(self._x_shape[:2] + (y.shape[-1],))

    def backward(self, grad_out):
        return super().backward(grad_out.reshape(self._y_shape))


class AvgPool2d(_Pool2d):
    """The mean of each window, per channel, zero padding counted.

    Shapes: x (N, C, H, W) -> y (N, C, Ho, Wo). Divisor kh * kw everywhere
    (PyTorch's count_include_pad=True). Backward: the module docstring.

    Ops: ``B.avg_pool2d_forward``, ``B.avg_pool2d_backward``; their NumPy references:
    ``backend/ops/pool.py``.
    """

    def forward(self, x):
        x4, _ = self._as_4d(x)
        B = backend_of(x)
        y = B.avg_pool2d_forward(x4, self.kernel_size, self.stride, self.padding)
        self._x_shape, self._y_shape = x.shape, y.shape
        return y

    def backward(self, grad_out):
        return backend_of(grad_out).avg_pool2d_backward(grad_out, self._x_shape[-2:],
                                                        self.kernel_size, self.stride,
                                                        self.padding)


class AdaptiveAvgPool2d(Module):
    """Average over a grid of output_size windows that tile the input.

    Shapes: x (N, C, H, W) -> y (N, C, Ho, Wo) with (Ho, Wo) = output_size
    (an int for a square; None in a pair keeps that input size).
    ``AdaptiveAvgPool2d(1)`` is global average pooling: y[n, c] is the mean
    of channel c. Windows: the module docstring.

    Ops: ``B.adaptive_avg_pool2d_forward``, ``B.adaptive_avg_pool2d_backward``; their NumPy
    references: ``backend/ops/pool.py``.
    """

    def __init__(self, output_size):
        super().__init__()
        given = output_size
        if isinstance(output_size, numbers.Integral) or output_size is None:
            output_size = (output_size, output_size)
        ok = isinstance(output_size, (tuple, list)) and len(output_size) == 2 and all(
            s is None or (isinstance(s, numbers.Integral) and not isinstance(s, bool) and s >= 1)
            for s in output_size)
        if not ok:
            raise ConfigError(f"AdaptiveAvgPool2d: output_size must be a positive int or a pair "
                              f"of them (None keeps the input size), got {given!r}")
        self.output_size = tuple(None if s is None else int(s) for s in output_size)

    def extra_repr(self):
        return f"output_size={self.output_size}"

    def forward(self, x):
        check_float_input(self, x)
        check_shape(self, x, "(N, C, H, W)", ndim=4)
        size = tuple(n if s is None else s for n, s in zip(x.shape[2:], self.output_size))
        if min(x.shape[2:]) < 1:
            raise ShapeError(f"{describe(self)}: expected a non-empty (H, W), got input "
                             f"{tuple(x.shape)}")
        y = backend_of(x).adaptive_avg_pool2d_forward(x, size)
        self._x_shape, self._y_shape = x.shape, y.shape
        return y

    def backward(self, grad_out):
        return backend_of(grad_out).adaptive_avg_pool2d_backward(grad_out, self._x_shape[-2:])
