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
from ..errors import ConfigError, ShapeError
from .checks import (check_dtype, check_float_input, check_int, check_ints, check_output_grad,
                     check_shape, check_size, describe)
from .conv import Conv1d
from .module import Module


class GatedActivation(Module):
    """(N, 2C, T) -> (N, C, T): tanh of the first C channels times sigmoid of the last C.

        y = tanh(a) * sigmoid(b),   a, b = the two halves of z
        dL/da = dL/dy * s * (1 - u^2),  dL/db = dL/dy * u * s * (1 - s)
        (u = tanh(a), s = sigmoid(b), recomputed in backward by the same kernel)

    The halves are split and joined by the convolution's reordering ops: z
    viewed as (N, 2, C*T) holds two "channels" of C*T values each;
    ``to_channel_major`` lays them out as two contiguous rows (one pass,
    on any backend) and ``to_batch_major`` puts two rows back. The gate math
    itself is one fused kernel each way (``gated_tanh_forward/backward``).

    Ops: ``B.to_channel_major``, ``B.gated_tanh_forward``, ``B.gated_tanh_backward``,
    ``B.to_batch_major``; their NumPy references: ``backend/ops/conv.py``,
    ``backend/ops/elementwise.py``.
    """

    def forward(self, z):
        check_float_input(self, z)
        check_shape(self, z, "(N, 2C, T)", ndim=3)
        if z.shape[1] % 2:
            raise ShapeError(f"{describe(self)}: expected input (N, 2C, T) with an even number "
                             f"of channels (two halves), got {tuple(z.shape)}")
        B = backend_of(z)
        n, channels, steps = z.shape[0], z.shape[1] // 2, z.shape[2]
        self._halves = B.to_channel_major(z.reshape(n, 2, channels * steps))  # (2, N*C*T)
        self._shape = (n, channels, steps)
        return B.gated_tanh_forward(self._halves[0], self._halves[1]).reshape(self._shape)

    def backward(self, grad_out):
        B = backend_of(grad_out)
        a, b = self._halves[0], self._halves[1]
        grad_halves = B.empty(self._halves.shape, grad_out.dtype)
        B.gated_tanh_backward(grad_out.reshape(-1), a, b, grad_a=grad_halves[0],
                              grad_b=grad_halves[1])
        n, channels, steps = self._shape
        return B.to_batch_major(grad_halves, n, None).reshape(n, 2 * channels, steps)


class ResidualBlock(Module):
    """h + Conv1x1(gate(CausalConv(h))); see the module docstring."""

    def __init__(self, channels, kernel_size, dilation, dtype=np.float32):
        super().__init__()
        name = "ResidualBlock"
        channels, kernel_size = check_int(name, "channels", channels), \
            check_int(name, "kernel_size", kernel_size)
        dilation, dtype = check_int(name, "dilation", dilation), check_dtype(name, dtype)
        self.dilated = Conv1d(channels, 2 * channels, kernel_size, padding="causal",
                              dilation=dilation, dtype=dtype)
        self.gate = GatedActivation()
        self.mix = Conv1d(channels, channels, 1, dtype=dtype)

    def forward(self, h):
        y = self.mix(self.gate(self.dilated(h)))  # a new array: the sum can go into it
        return backend_of(y).axpy(1.0, h, y)

    def backward(self, grad_out):
        dh = self.dilated.backward(self.gate.backward(self.mix.backward(grad_out)))
        return backend_of(dh).axpy(1.0, grad_out, dh)


class CausalConvStack(Module):
    """Shapes: x (N, T, input_size) -> output (N, T, channels), batch first.

    ``dilations`` default to 1, 2, 4, ..., 2^(num_layers-1) (cycling after 2^7).
    """

    def __init__(self, input_size, channels, num_layers=6, kernel_size=2, dilations=None,
                 dtype=np.float32):
        super().__init__()
        name = "CausalConvStack"
        self.input_size = check_int(name, "input_size", input_size)
        self.channels = check_int(name, "channels", channels)
        self.num_layers = check_int(name, "num_layers", num_layers)
        self.kernel_size = check_int(name, "kernel_size", kernel_size)
        dtype = check_dtype(name, dtype)
        if dilations is not None:
            if not isinstance(dilations, (tuple, list)):
                raise ConfigError(f"CausalConvStack: dilations must be a list of one int per "
                                  f"layer, got {dilations!r}")
            if len(dilations) != self.num_layers:
                raise ConfigError(f"CausalConvStack: {len(dilations)} dilations for "
                                  f"{self.num_layers} layers; give one per layer")
            dilations = check_ints(name, "dilations", dilations, self.num_layers)
        self.project = Conv1d(self.input_size, self.channels, 1, dtype=dtype)
        # block by block (not a list of them first), so that under an allocation limit a
        # huge num_layers is refused at the first block past it
        self.dilations = []
        for i in range(self.num_layers):
            d = 2 ** (i % 8) if dilations is None else dilations[i]
            setattr(self, f"block{i}", ResidualBlock(self.channels, self.kernel_size, d, dtype))
            self.dilations.append(d)
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
        h = self.project(_swap_last_axes(x))  # (N, C, T)
        for block in self._blocks():
            h = block(h)
        output = _swap_last_axes(h)
        self._output_shape = output.shape
        return output, None

    def backward(self, grad_output, grad_state=None):
        """(dx, None): no gradient reaches a state, as there is none."""
        check_output_grad(self, grad_output, self._output_shape,
                   what="grad_output of the output's shape")
        g = _swap_last_axes(grad_output)
        for block in reversed(self._blocks()):
            g = block.backward(g)
        dx = self.project.backward(g)
        return _swap_last_axes(dx), None


def _swap_last_axes(x):
    """(N, A, B) -> (N, B, A), C-contiguous: between batch-first sequences and channels."""
    if isinstance(x, np.ndarray):
        return np.ascontiguousarray(x.transpose(0, 2, 1))
    return backend_of(x).permute(x, (0, 2, 1))  # a device array has no 3-d views: a copy
