"""A causal, dilated convolutional sequence model (WaveNet-like) for autoregression.

    x (N, T, I) -> 1x1 conv to C channels -> L residual blocks -> (N, T, C)

Each residual block (van den Oord et al. 2016, "WaveNet"):

    z = CausalConv1d(C -> 2C, kernel k, dilation d)(h)        y[t] sees h[<= t]
    a = tanh(z[:C]) * sigmoid(z[C:])                           gated activation
    h = h + Conv1d(C -> C, kernel 1)(a)                        residual

with dilations 1, 2, 4, ..., so the receptive field, 1 + (k - 1) * sum(d),
grows exponentially with depth while every output stays causal: position t
never sees inputs after t, which is what lets it predict token t + 1.

It has the interface of the recurrent layers, so ``AutoregressiveLM`` can use
it in their place: ``forward(x, state=None) -> (output, None)`` and
``backward(grad_output, grad_state=None) -> (dx, None)``. It keeps no state
between batches (its memory is its receptive field).

Backward of the gated activation, with u = tanh(z_f), s = sigmoid(z_g), a = u s:
    dz_f = da * s * (1 - u^2)        dz_g = da * u * s * (1 - s)
"""
import numpy as np

from ..backend import backend_of
from .checks import check_float_input, check_shape, check_size
from .conv import Conv1d
from .module import Module


class GatedActivation(Module):
    """(N, 2C, T) -> (N, C, T): tanh of the first C channels times sigmoid of the last C."""

    def forward(self, z):
        B = backend_of(z)
        channels = z.shape[1] // 2
        self._u = B.tanh_forward(np.ascontiguousarray(z[:, :channels]))
        self._s = B.sigmoid_forward(np.ascontiguousarray(z[:, channels:]))
        return self._u * self._s

    def backward(self, grad_out):
        B = backend_of(grad_out)
        grad_f = B.tanh_backward(grad_out * self._s, self._u)
        grad_g = B.sigmoid_backward(grad_out * self._u, self._s)
        return np.concatenate([grad_f, grad_g], axis=1)


class ResidualBlock(Module):
    """h + Conv1x1(gate(CausalConv(h))); see the module docstring."""

    def __init__(self, channels, kernel_size, dilation, dtype=np.float32):
        super().__init__()
        self.dilated = Conv1d(channels, 2 * channels, kernel_size, padding="causal",
                              dilation=dilation, dtype=dtype)
        self.gate = GatedActivation()
        self.mix = Conv1d(channels, channels, 1, dtype=dtype)

    def forward(self, h):
        return h + self.mix(self.gate(self.dilated(h)))

    def backward(self, grad_out):
        return grad_out + self.dilated.backward(self.gate.backward(self.mix.backward(grad_out)))


class CausalConvStack(Module):
    """Shapes: x (N, T, input_size) -> output (N, T, channels), batch first.

    ``dilations`` default to 1, 2, 4, ..., 2^(num_layers-1) (cycling after 2^7).
    """

    def __init__(self, input_size, channels, num_layers=6, kernel_size=2, dilations=None,
                 dtype=np.float32):
        super().__init__()
        self.input_size, self.channels = int(input_size), int(channels)
        self.num_layers, self.kernel_size = int(num_layers), int(kernel_size)
        if dilations is None:
            dilations = [2 ** (i % 8) for i in range(self.num_layers)]
        if len(dilations) != self.num_layers:
            raise ValueError(f"CausalConvStack: {len(dilations)} dilations for "
                             f"{self.num_layers} layers")
        self.dilations = [int(d) for d in dilations]
        self.project = Conv1d(self.input_size, self.channels, 1, dtype=dtype)
        for i, d in enumerate(self.dilations):
            setattr(self, f"block{i}", ResidualBlock(self.channels, self.kernel_size, d, dtype))
        self.hidden_size = self.channels  # what a language-model head reads

    def extra_repr(self):
        return (f"input_size={self.input_size}, channels={self.channels}, "
                f"kernel_size={self.kernel_size}, dilations={self.dilations}, "
                f"receptive_field={self.receptive_field}")

    @property
    def receptive_field(self):
        return 1 + (self.kernel_size - 1) * sum(self.dilations)

    def _blocks(self):
        return [getattr(self, f"block{i}") for i in range(self.num_layers)]

    def forward(self, x, state=None):
        check_float_input(self, x, self.project.weight.dtype)
        check_shape(self, x, f"(N, T, {self.input_size})", ndim=3)
        check_size(self, x, 2, self.input_size, f"(N, T, {self.input_size})")
        h = self.project(np.ascontiguousarray(x.transpose(0, 2, 1)))  # (N, C, T)
        for block in self._blocks():
            h = block(h)
        return np.ascontiguousarray(h.transpose(0, 2, 1)), None

    def backward(self, grad_output, grad_state=None):
        g = np.ascontiguousarray(grad_output.transpose(0, 2, 1))
        for block in reversed(self._blocks()):
            g = block.backward(g)
        dx = self.project.backward(g)
        return np.ascontiguousarray(dx.transpose(0, 2, 1)), None
