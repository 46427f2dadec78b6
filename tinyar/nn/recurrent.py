"""Recurrent layers: ``RNN``, ``LSTM``, ``GRU`` over whole sequences, with BPTT by hand.

A layer runs its cell (``nn/rnn_cells.py`` has the equations) over T time
steps, for ``num_layers`` stacked layers; layer l + 1 reads the outputs
h_1 .. h_T of layer l. Shapes, with ``batch_first=True`` (**tinyar's
default; PyTorch's is False**):

    x: (N, T, I)  [or (T, N, I) when batch_first=False; (T, I) unbatched]
    output: (N, T, H), the top layer's h_t for every t  [(T, N, H); (T, H)]
    h_0, h_n: (num_layers, N, H)  [(num_layers, H) unbatched], whatever batch_first is
    LSTM also c_0, c_n: (num_layers, N, H)

Parameters, as PyTorch's (``state_dict`` keys match ``torch.nn.LSTM``'s):
``weight_ih_l{k}`` (G*H, I or H), ``weight_hh_l{k}`` (G*H, H), ``bias_ih_l{k}``,
``bias_hh_l{k}`` (G*H,), with G = 1 (RNN), 4 (LSTM: i, f, g, o), 3 (GRU: r, z, n),
all initialised U(-1/sqrt(H), 1/sqrt(H)). ``dropout=p`` zeroes each output of
every layer but the last with probability p and scales the rest by 1/(1-p), in
training mode only (counter-based masks made where the data is, seeded by
``tinyar.random.generator()``: the same on CPU and GPU, see ``nn/dropout.py``).

How the work is split (this is what makes the layer fast; the time loop itself
is ``B.<kind>_sequence_forward`` in ``backend/cpu/rnn.py``, and on a GPU in
``backend/cuda/rnn.py``, one kernel launch for all T steps)::

    forward, per layer
        A = X W_ih^T                  ONE matrix product for all T*N rows
        for t: A_t += h_{t-1} W_hh^T; gates, c_t, h_t <- A_t (+ biases)   (backend loop)
    backward, per layer, top layer first
        for t = T-1 .. 0: dA_t <- gate derivatives; dh_{t-1} += dA_t W_hh   (backend loop,
                          which also sums db = sum over t and rows of dA_t)
        dW_ih += dA^T X,  dW_hh += dA^T H_prev,  dX = dA W_ih    ONE product each, over
                                                                 all T*N rows at once

Only the products with W_hh are inherently sequential; everything that can
see all steps at once does, as one big BLAS call. Inside the layer all
buffers are *time-major*, (T, N, ...), so one step's rows are one contiguous
block; they are allocated once per (T, N, dtype) and reused, so a training
step allocates little beyond its outputs.

backward's signature mirrors forward's: one gradient per output in, one
gradient per input out, with the same nesting::

    output, h_n = rnn(x, h0)             dx, dh0 = rnn.backward(grad_output, grad_h_n)
    output, (h_n, c_n) = lstm(x, (h0, c0))
    dx, (dh0, dc0) = lstm.backward(grad_output, (grad_h_n, grad_c_n))

Gradients left out (``None``) are zeros. ``backward`` reuses the buffers of
the forward (the gate activations become their gradients), so call
``forward`` again before another ``backward``.

**Truncated BPTT / stateful training.** States are plain arrays, so carrying
the state from one batch to the next is passing it along::

    state = None
    for x, y in batches:                    # consecutive pieces of long sequences
        out, state = lstm(x, state)         # starts where the last batch ended
        ...loss...
        lstm.backward(grad_out)             # stops at this batch's initial state
        state = detach_state(state)         # optional: an independent copy

The gradient never reaches earlier batches: backward returns dL/d(state) for
this batch's initial state, and nothing feeds it further back. That is the
truncation.
"""
import warnings

import numpy as np

from ..backend import backend_of
from ..errors import ShapeError
from .checks import (check_backward_ready, check_flag, check_float_input, check_int,
                     check_real, check_shape, check_size, describe)
from .dropout import new_stream
from .module import Module
from .rnn_cells import (GATES, check_grad, check_nonlinearity, check_sizes, check_state, pair,
                        uniform_weights)


def detach_state(state):
    """An independent copy of a recurrent state (an array, or an LSTM's (h, c) pair).

    For truncated backpropagation through time: feed it as the next batch's
    initial state. (No gradient flows through a state between batches in
    any case; the copy only guarantees nothing else changes it.)
    """
    if state is None:
        return None
    if isinstance(state, (tuple, list)):
        return tuple(detach_state(s) for s in state)
    return backend_of(state).copy(state)


def _workspace_key(B, steps, rows, dtype):
    """What a workspace's buffers fit: (T, N, dtype) on one backend (named, not held: a
    layer is copied and pickled with its workspace)."""
    return steps, rows, np.dtype(dtype), B.__name__


class _Workspace:
    """Time-major buffers of one (T, N, dtype, device), reused while they repeat."""

    def __init__(self, B, layer, steps, rows, dtype):
        L, H, G = layer.num_layers, layer.hidden_size, GATES[layer.kind]
        self.key = _workspace_key(B, steps, rows, dtype)
        self.gates = [B.empty((steps, rows, G * H), dtype) for _ in range(L)]
        self.h = [B.empty((steps + 1, rows, H), dtype) for _ in range(L)]
        self.c = [B.empty((steps + 1, rows, H), dtype) for _ in range(L)] \
            if layer.kind == "lstm" else None
        self.hn = [B.empty((steps, rows, H), dtype) for _ in range(L)] \
            if layer.kind == "gru" else None
        self.grad_gh = B.empty((steps, rows, G * H), dtype) if layer.kind == "gru" else None
        self.grad_h = B.empty((steps + 1, rows, H), dtype)
        self.grad_bias = [B.empty(G * H, dtype), B.empty(G * H, dtype)]
        self.dropped = [None] * L  # inputs of layers 1.. after dropout, made when needed
        self.bias = [B.empty(G * H, dtype) for _ in range(L)]


class _Recurrent(Module):
    """What RNN, LSTM and GRU share: parameters, checks, layers, dropout, weight gradients."""

    kind = "rnn"
    single_backward = True  # backward turns the forward's buffers into gradients

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=True,
                 dropout=0.0, dtype=np.float32):
        name = type(self).__name__
        num_layers = check_int(name, "num_layers", num_layers)
        dropout = check_real(name, "dropout", dropout, low=0.0, high=1.0, high_open=True)
        if dropout > 0 and num_layers == 1:
            warnings.warn(f"{name}: dropout acts between layers; with num_layers=1 it does "
                          f"nothing", stacklevel=3)
        super().__init__()
        self.input_size, self.hidden_size, self.bias, dtype = check_sizes(
            name, input_size, hidden_size, bias, dtype)
        self.num_layers = num_layers
        self.batch_first = check_flag(name, "batch_first", batch_first)
        self.dropout = dropout
        uniform_weights(self, self._parameter_shapes(), self.hidden_size, dtype)
        self._ws = None  # the _Workspace of the last (T, N, dtype)
        self._cache = None  # what backward needs from the last forward

    def _parameter_shapes(self):
        """(name, shape) of every parameter, layer by layer, in PyTorch's order. A generator:
        under an allocation limit a huge num_layers is refused at the first layer past it,
        before a list of billions of names is made."""
        width = GATES[self.kind] * self.hidden_size
        for k in range(self.num_layers):
            fan_in = self.input_size if k == 0 else self.hidden_size
            yield f"weight_ih_l{k}", (width, fan_in)
            yield f"weight_hh_l{k}", (width, self.hidden_size)
            if self.bias:
                yield f"bias_ih_l{k}", (width,)
                yield f"bias_hh_l{k}", (width,)

    def extra_repr(self):
        s = f"input_size={self.input_size}, hidden_size={self.hidden_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if not self.bias:
            s += ", bias=False"
        if not self.batch_first:
            s += ", batch_first=False"
        if self.dropout:
            s += f", dropout={self.dropout}"
        return s

    def weights(self, k):
        """(W_ih, W_hh, b_ih, b_hh) of layer k; the biases are None without bias."""
        get = lambda name: getattr(self, f"{name}_l{k}", None)  # noqa: E731
        return get("weight_ih"), get("weight_hh"), get("bias_ih"), get("bias_hh")

    # --- checks -------------------------------------------------------------------
    def _check_input(self, x):
        check_float_input(self, x, self.weight_ih_l0.dtype)
        layout = "(N, T, {0})" if self.batch_first else "(T, N, {0})"
        expected = (layout + " or (T, {0}) unbatched").format(self.input_size)
        check_shape(self, x, expected, ndim=(2, 3))
        check_size(self, x, -1, self.input_size, expected)
        if 0 in x.shape[:-1]:
            raise ShapeError(f"{describe(self)}: expected input {expected} with at least one "
                             f"time step and one sequence, got {tuple(x.shape)}")

    def _state_shape(self, rows, unbatched):
        L, H = self.num_layers, self.hidden_size
        return (L, H) if unbatched else (L, rows, H)

    # --- forward --------------------------------------------------------------------
    def _time_major(self, B, x):
        """x as a C-contiguous (T, N, I) array, and whether it was unbatched."""
        if self.batch_first and x.ndim == 3:
            return B.swap_axes01(x), False
        if not x.flags["C_CONTIGUOUS"]:  # (NumPy's flags and numba's both take this key)
            x = B.copy(x)
        return (x.reshape(x.shape[0], 1, x.shape[1]) if x.ndim == 2 else x), x.ndim == 2

    def _run(self, x, states):
        """The shared forward: ``states`` are the checked initial states (or None) of
        this kind, (h0,) or (h0, c0). Returns (output, final states)."""
        B = backend_of(x)
        xs, unbatched = self._time_major(B, x)
        steps, rows = xs.shape[:2]
        dtype = xs.dtype
        ws = self._ws
        if ws is None or ws.key != _workspace_key(B, steps, rows, dtype):
            ws = self._ws = _Workspace(B, self, steps, rows, dtype)
        shape = (self.num_layers, rows, self.hidden_size)
        states = [None if s is None else s.reshape(shape) for s in states]
        inputs, masks = [], []
        layer_input = xs
        for k in range(self.num_layers):
            w_ih = self.weights(k)[0]
            gates = ws.gates[k]
            B.matmul(layer_input.reshape(steps * rows, -1), w_ih.data,
                     out=gates.reshape(steps * rows, -1), trans_b=True)
            self._recurrence(B, ws, k, [None if s is None else s[k] for s in states])
            inputs.append(layer_input)
            layer_input, keep = self._dropout(B, ws, k, ws.h[k][1:])
            masks.append(keep)
        self._cache = (inputs, masks, ws, unbatched, x.shape)

        top = ws.h[-1][1:]
        if unbatched:
            output = B.copy(top.reshape(steps, self.hidden_size))
        elif self.batch_first:
            output = B.swap_axes01(top)
        else:
            output = B.copy(top)
        final = []
        for buffers in self._state_buffers(ws):
            s = B.empty(shape, dtype)
            for k in range(self.num_layers):
                s[k] = buffers[k][steps]
            final.append(s.reshape(self._state_shape(rows, unbatched)))
        return output, final

    @staticmethod
    def _set_initial(buffer, state):
        """buffer[0] = the initial state (zeros when None)."""
        if state is None:
            buffer[0] = 0
        else:
            buffer[0] = state

    def _dropout(self, B, ws, k, h):
        """The input of layer k + 1: h_1 .. h_T of layer k, after dropout in training."""
        if not (self.training and self.dropout > 0 and k < self.num_layers - 1):
            return h, None
        keep = B.dropout_mask(h.shape, self.dropout, *new_stream())
        if ws.dropped[k] is None:
            ws.dropped[k] = B.empty(h.shape, h.dtype)
        return B.dropout_apply(h, keep, 1.0 / (1.0 - self.dropout), out=ws.dropped[k]), keep

    # --- backward ----------------------------------------------------------------------
    def _start_backward(self, grad_output, grad_states, names):
        """Checks; the top layer's upstream dL/dh_t into the workspace; the state gradients."""
        if self._cache is None:  # a backward that failed after taking the buffers
            check_backward_ready(self, "consumed")
        inputs, masks, ws, unbatched, x_shape = self._cache
        steps, rows = ws.key[:2]
        dtype = ws.key[2]
        if unbatched:
            out_shape = (steps, self.hidden_size)
        elif self.batch_first:
            out_shape = (rows, steps, self.hidden_size)
        else:
            out_shape = (steps, rows, self.hidden_size)
        check_float_input(self, grad_output, dtype, what="grad_output")
        if tuple(grad_output.shape) != out_shape:
            raise ShapeError(f"{describe(self)}: expected grad_output {out_shape} (the output's "
                             f"shape), got {tuple(grad_output.shape)}")
        state_shape = self._state_shape(rows, unbatched)
        full = (self.num_layers, rows, self.hidden_size)
        grad_states = [None if g is None else
                       check_grad(self, g, name, state_shape, dtype).reshape(full)
                       for g, name in zip(grad_states, names)]
        B = backend_of(grad_output)
        grad_h = ws.grad_h
        if unbatched:
            grad_h[1:] = grad_output.reshape(steps, 1, self.hidden_size)
        elif self.batch_first:
            B.swap_axes01(grad_output, out=grad_h[1:])
        else:
            grad_h[1:] = grad_output
        self._cache = None  # the buffers are about to be overwritten by gradients
        return B, inputs, masks, ws, unbatched, x_shape, grad_states

    def _layer_upstream(self, B, grad_h, grad_h_n, k):
        """grad_h[0] = 0 and dL/dh_n of layer k added to grad_h[T]."""
        grad_h[0] = 0
        if grad_h_n is not None:
            B.axpy(1.0, grad_h_n[k], grad_h[grad_h.shape[0] - 1])

    def _run_backward(self, grad_output, grad_states, names):
        B, inputs, masks, ws, unbatched, x_shape, grad_states = \
            self._start_backward(grad_output, grad_states, names)
        steps, rows = ws.key[:2]
        grad_h, m = ws.grad_h, steps * rows
        grad_initial = [B.empty((self.num_layers, rows, self.hidden_size), ws.key[2])
                        for _ in names]
        self._layer_upstream(B, grad_h, grad_states[0], self.num_layers - 1)
        for k in reversed(range(self.num_layers)):
            w_ih, w_hh, b_ih, b_hh = self.weights(k)
            da_x, da_h = self._recurrence_backward(B, ws, k, grad_states, grad_initial)
            grad_initial[0][k] = grad_h[0]
            da_x, da_h = da_x.reshape(m, -1), da_h.reshape(m, -1)
            B.matmul(da_x, inputs[k].reshape(m, -1), out=w_ih.grad, trans_a=True,
                     accumulate=True)
            B.matmul(da_h, ws.h[k][:steps].reshape(m, -1), out=w_hh.grad, trans_a=True,
                     accumulate=True)
            if self.bias:  # the sums over all steps were accumulated by the time loop
                B.axpy(1.0, ws.grad_bias[0], b_ih.grad)
                B.axpy(1.0, ws.grad_bias[1 if self.kind == "gru" else 0], b_hh.grad)
            if k > 0:  # dL/d(input of layer k) is the upstream of layer k - 1's outputs
                B.matmul(da_x, w_ih.data, out=grad_h[1:].reshape(m, -1))
                if masks[k - 1] is not None:
                    B.dropout_apply(grad_h[1:], masks[k - 1], 1.0 / (1.0 - self.dropout),
                                    out=grad_h[1:])
                self._layer_upstream(B, grad_h, grad_states[0], k - 1)
            else:
                dx = B.matmul(da_x, w_ih.data).reshape(steps, rows, -1)
        if unbatched:
            dx = dx.reshape(x_shape)
        elif self.batch_first:
            dx = B.swap_axes01(dx)
        state_shape = self._state_shape(rows, unbatched)
        return dx, [g.reshape(state_shape) for g in grad_initial]


class _HiddenStateOnly(_Recurrent):
    """RNN and GRU: the state is h alone. forward(x, h0) -> (output, h_n);
    backward(grad_output, grad_h_n) -> (dx, dh0)."""

    def forward(self, x, hx=None):
        self._check_input(x)
        rows = 1 if x.ndim == 2 else x.shape[0 if self.batch_first else 1]
        h0 = check_state(self, hx, "h0", self._state_shape(rows, x.ndim == 2), x.dtype)
        output, (h_n,) = self._run(x, [h0])
        return output, h_n

    def backward(self, grad_output, grad_h_n=None):
        dx, (dh0,) = self._run_backward(grad_output, [grad_h_n], ["grad_h_n"])
        return dx, dh0

    def _state_buffers(self, ws):
        return [ws.h]


class RNN(_HiddenStateOnly):
    """Elman RNN over sequences: h_t = act(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh).

    RNN(input_size, hidden_size, num_layers=1, nonlinearity='tanh', bias=True,
        batch_first=True, dropout=0.0)   -- batch_first=True is tinyar's default, not torch's.

    forward(x, hx=None) -> (output, h_n);  backward(grad_output, grad_h_n=None) -> (dx, dh0).
    Shapes and the calling convention: see the module docstring.

    Backward through time, t = T-1 .. 0 (act' from h_t: tanh' = 1 - h_t^2, relu' = [h_t > 0]):
        da_t = dh_t * act'(h_t)       dh_{t-1} += da_t W_hh
    then over all steps at once: dW_ih += da^T X, dW_hh += da^T H_prev, db += sum_rows(da),
    dX = da W_ih.

    Ops: ``B.rnn_sequence_forward``, ``B.rnn_sequence_backward``, ``B.swap_axes01``,
    ``B.matmul``, ``B.dropout_mask``, ``B.dropout_apply``, ``B.axpy``; their NumPy references:
    ``backend/ops/rnn.py``, ``backend/ops/linalg.py``, ``backend/ops/elementwise.py``.
    """

    kind = "rnn"

    def __init__(self, input_size, hidden_size, num_layers=1, nonlinearity="tanh", bias=True,
                 batch_first=True, dropout=0.0, dtype=np.float32):
        check_nonlinearity(type(self).__name__, nonlinearity)
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout, dtype)
        self.nonlinearity = nonlinearity

    def extra_repr(self):
        return super().extra_repr() + \
            ("" if self.nonlinearity == "tanh" else f", nonlinearity={self.nonlinearity!r}")

    def _recurrence(self, B, ws, k, initial):
        _, w_hh, b_ih, b_hh = self.weights(k)
        self._set_initial(ws.h[k], initial[0])
        B.rnn_sequence_forward(ws.gates[k], w_hh.data, _bias_sum(ws, k, b_ih, b_hh), ws.h[k],
                               self.nonlinearity)

    def _recurrence_backward(self, B, ws, k, grad_states, grad_initial):
        # the preactivations are not needed after the forward: their buffer takes da
        ws.grad_bias[0][:] = 0
        B.rnn_sequence_backward(ws.h[k], self.weights(k)[1].data, ws.grad_h, ws.gates[k],
                                ws.grad_bias[0], self.nonlinearity)
        return ws.gates[k], ws.gates[k]


class LSTM(_Recurrent):
    """Long short-term memory over sequences (the LSTMCell equations at every step).

    LSTM(input_size, hidden_size, num_layers=1, bias=True, batch_first=True, dropout=0.0)
    -- batch_first=True is tinyar's default, not torch's.

    forward(x, hx=None) -> (output, (h_n, c_n)), hx = (h0, c0) (None or either None: zeros).
    backward(grad_output, grad_hx=None) -> (dx, (dh0, dc0)), grad_hx = (grad_h_n, grad_c_n).

    Backward through time, t = T-1 .. 0, carrying dc (dL/dc_t from step t+1, or grad_c_n):
        dc   = dc + dh_t o (1 - tanh^2 c_t)        da_o = dh_t tanh(c_t) o (1 - o)
        da_i = dc g i (1 - i)    da_f = dc c_{t-1} f (1 - f)    da_g = dc i (1 - g^2)
        dc   = dc f  (for step t-1)                dh_{t-1} += da_t W_hh
    then over all steps at once: dW_ih += da^T X, dW_hh += da^T H_prev,
    db_ih = db_hh += sum_rows(da), dX = da W_ih.

    Ops: ``B.lstm_sequence_forward``, ``B.lstm_sequence_backward``, ``B.swap_axes01``,
    ``B.matmul``, ``B.dropout_mask``, ``B.dropout_apply``, ``B.axpy``; their NumPy references:
    ``backend/ops/rnn.py``, ``backend/ops/linalg.py``, ``backend/ops/elementwise.py``.
    """

    kind = "lstm"

    def forward(self, x, hx=None):
        self._check_input(x)
        h0, c0 = pair(self, hx, "hx")
        rows = 1 if x.ndim == 2 else x.shape[0 if self.batch_first else 1]
        shape = self._state_shape(rows, x.ndim == 2)
        states = [check_state(self, h0, "h0", shape, x.dtype),
                  check_state(self, c0, "c0", shape, x.dtype)]
        output, (h_n, c_n) = self._run(x, states)
        return output, (h_n, c_n)

    def backward(self, grad_output, grad_hx=None):
        g_h, g_c = pair(self, grad_hx, "grad_hx", stacked=True)
        dx, (dh0, dc0) = self._run_backward(grad_output, [g_h, g_c], ["grad_h_n", "grad_c_n"])
        return dx, (dh0, dc0)

    def _state_buffers(self, ws):
        return [ws.h, ws.c]

    def _recurrence(self, B, ws, k, initial):
        _, w_hh, b_ih, b_hh = self.weights(k)
        self._set_initial(ws.h[k], initial[0])
        self._set_initial(ws.c[k], initial[1])
        B.lstm_sequence_forward(ws.gates[k], w_hh.data, _bias_sum(ws, k, b_ih, b_hh), ws.h[k],
                                ws.c[k])

    def _recurrence_backward(self, B, ws, k, grad_states, grad_initial):
        grad_c = grad_initial[1][k]  # dL/dc_T in, dL/dc_0 out
        if grad_states[1] is None:
            grad_c[:] = 0
        else:
            grad_c[:] = grad_states[1][k]
        ws.grad_bias[0][:] = 0
        B.lstm_sequence_backward(ws.gates[k], ws.c[k], self.weights(k)[1].data, ws.grad_h,
                                 grad_c, ws.grad_bias[0])
        return ws.gates[k], ws.gates[k]


class GRU(_HiddenStateOnly):
    """Gated recurrent units over sequences (the GRUCell equations, PyTorch's variant).

    GRU(input_size, hidden_size, num_layers=1, bias=True, batch_first=True, dropout=0.0)
    -- batch_first=True is tinyar's default, not torch's.

    forward(x, hx=None) -> (output, h_n);  backward(grad_output, grad_h_n=None) -> (dx, dh0).

    Backward through time, t = T-1 .. 0 (gh_n = h_{t-1} W_hn^T + b_hn, saved by the forward):
        da_n = dh_t (1 - z)(1 - n^2)    da_z = dh_t (h_{t-1} - n) z (1 - z)
        da_r = da_n gh_n r (1 - r)
        dgx_t = [da_r, da_z, da_n]     dgh_t = [da_r, da_z, da_n r]
        dh_{t-1} += dh_t z + dgh_t W_hh
    then over all steps at once: dW_ih += dgx^T X, dW_hh += dgh^T H_prev,
    db_ih += sum_rows(dgx), db_hh += sum_rows(dgh), dX = dgx W_ih.

    Ops: ``B.gru_sequence_forward``, ``B.gru_sequence_backward``, ``B.swap_axes01``,
    ``B.matmul``, ``B.dropout_mask``, ``B.dropout_apply``, ``B.axpy``; their NumPy references:
    ``backend/ops/rnn.py``, ``backend/ops/linalg.py``, ``backend/ops/elementwise.py``.
    """

    kind = "gru"

    def _recurrence(self, B, ws, k, initial):
        _, w_hh, b_ih, b_hh = self.weights(k)
        self._set_initial(ws.h[k], initial[0])
        zero = _zero_bias(ws, k)
        B.gru_sequence_forward(ws.gates[k], w_hh.data, zero if b_ih is None else b_ih.data,
                               zero if b_hh is None else b_hh.data, ws.h[k], ws.hn[k])

    def _recurrence_backward(self, B, ws, k, grad_states, grad_initial):
        ws.grad_bias[0][:] = 0
        ws.grad_bias[1][:] = 0
        B.gru_sequence_backward(ws.gates[k], ws.hn[k], ws.h[k], self.weights(k)[1].data,
                                ws.grad_h, ws.grad_gh, ws.grad_bias[0], ws.grad_bias[1])
        return ws.gates[k], ws.grad_gh


def _bias_sum(ws, k, b_ih, b_hh):
    """b_ih + b_hh of layer k in the workspace (zeros without bias): both biases add to
    the same preactivation, so the kernels add their sum once."""
    bias = ws.bias[k]
    if b_ih is None:
        bias[:] = 0
    else:
        bias[:] = b_ih.data
        backend_of(bias).axpy(1.0, b_hh.data, bias)
    return bias


def _zero_bias(ws, k):
    ws.bias[k][:] = 0
    return ws.bias[k]


class LastStep(Module):
    """A recurrent layer that keeps only its last time step: the sequence's summary.

    LastStep(rnn): x (N, T, I) -> y (N, H), y = output[:, -1, :] of ``rnn``
    (its top layer's h_T); with ``batch_first=False``, x (T, N, I) and
    y = output[-1]. What a sequence classifier puts its head on.

    Backward: dL/d(output) is zero at every step but the last, where it is
    dL/dy; ``rnn.backward`` carries it back through all T steps (BPTT), so
    early inputs get their gradient through the recurrence alone.
    """

    def __init__(self, rnn):
        super().__init__()
        if not isinstance(rnn, _Recurrent):
            raise TypeError(f"LastStep: expected an RNN, LSTM or GRU, got {type(rnn).__name__}")
        self.rnn = rnn

    def forward(self, x):
        output, _ = self.rnn(x)
        self._shape = output.shape
        return backend_of(output).contiguous(
            output[:, -1, :] if self.rnn.batch_first else output[-1])

    def backward(self, grad_out):
        grad_output = backend_of(grad_out).zeros(self._shape, grad_out.dtype)
        if self.rnn.batch_first:
            grad_output[:, -1, :] = grad_out
        else:
            grad_output[-1] = grad_out
        dx, _ = self.rnn.backward(grad_output)
        return dx
