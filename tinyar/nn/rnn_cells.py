"""Recurrent cells: one time step of an RNN, an LSTM and a GRU.

A cell maps an input x (N, I) and a state h (N, H) to the next state. All
three start with the same two matrix products, the *preactivations* of G
gate blocks laid side by side (PyTorch's layouts and gate orders):

    a = x W_ih^T + b_ih + h W_hh^T + b_hh        (N, G*H)
    W_ih: (G*H, I)   W_hh: (G*H, H)   b_ih, b_hh: (G*H,)

and then differ in the elementwise gate math, which is one fused backend op
(``B.rnn_cell_forward``, ``B.lstm_cell_forward``, ``B.gru_cell_forward``;
the equations are in each class). Backward is the chain rule through that
math (one fused op again), then the same products transposed:

    dx = da W_ih    dh = da W_hh    dW_ih += da^T x    dW_hh += da^T h
    db_ih += sum_rows(da)           db_hh += sum_rows(da)

Cells are for writing your own time loop. To run a whole sequence use
``RNN``, ``LSTM``, ``GRU`` (``nn/recurrent.py``): they do the input products
of all steps at once and run the loop in the backend, many times faster.

Calling convention (also the layers'): ``backward`` takes one gradient per
output of ``forward`` and returns one gradient per input, in the same
nesting. ``LSTMCell.forward(x, (h, c))`` returns ``(h', c')``, so
``backward(grad_h, grad_c)`` returns ``(dx, (dh, dc))``. A state left out
(``None``) is zeros; a gradient left out is zeros too.
"""
import math

import numpy as np

from ..backend import backend_of
from ..errors import ShapeError
from . import init
from .checks import (check_choice, check_dtype, check_flag, check_float_input, check_int,
                     check_shape, check_size, describe)
from .module import Module
from .parameter import Parameter

GATES = {"rnn": 1, "lstm": 4, "gru": 3}


def uniform_weights(module, names_and_shapes, hidden_size, dtype):
    """PyTorch's init for every recurrent weight and bias: U(-1/sqrt(H), 1/sqrt(H)),
    drawn in the order given (= PyTorch's parameter order)."""
    bound = 1.0 / math.sqrt(hidden_size) if hidden_size > 0 else 0.0
    for name, shape in names_and_shapes:
        setattr(module, name, Parameter(init.uniform(shape, bound, dtype)))


def check_state(layer, state, name, shape, dtype):
    """A state argument: None (the caller uses zeros), else a float array of exactly ``shape``
    and the layer's dtype."""
    if state is None:
        return None
    check_float_input(layer, state, dtype, what=name)
    if tuple(state.shape) != tuple(shape):
        raise ShapeError(f"{describe(layer)}: expected {name} {tuple(shape)}, got "
                         f"{tuple(state.shape)}")
    return state


def check_grad(layer, grad, name, shape, dtype):
    """An upstream gradient given to backward: None (zeros) or an array of ``shape``."""
    return check_state(layer, grad, name, shape, dtype)


def check_nonlinearity(name, nonlinearity):
    return check_choice(name, "nonlinearity", nonlinearity, ("tanh", "relu"))


def check_sizes(name, input_size, hidden_size, bias, dtype):
    """The arguments every cell and recurrent layer shares, checked and converted."""
    return (check_int(name, "input_size", input_size), check_int(name, "hidden_size", hidden_size),
            check_flag(name, "bias", bias), check_dtype(name, dtype))


def zeros_if_none(B, a, shape, dtype):
    return B.zeros(shape, dtype) if a is None else a


class _Cell(Module):
    """Parameters, checks and the shared products of the three cells."""

    kind = "rnn"
    accepts_no_grad = True  # a gradient left out is zeros (the module docstring)

    def __init__(self, input_size, hidden_size, bias=True, dtype=np.float32):
        super().__init__()
        self.input_size, self.hidden_size, self.bias, dtype = check_sizes(
            type(self).__name__, input_size, hidden_size, bias, dtype)
        width = GATES[self.kind] * self.hidden_size
        shapes = [("weight_ih", (width, self.input_size)),
                  ("weight_hh", (width, self.hidden_size))]
        if self.bias:
            shapes += [("bias_ih", (width,)), ("bias_hh", (width,))]
        else:
            self.bias_ih = self.bias_hh = None
        uniform_weights(self, shapes, self.hidden_size, dtype)

    def extra_repr(self):
        return f"input_size={self.input_size}, hidden_size={self.hidden_size}" + \
            ("" if self.bias else ", bias=False")

    def _check(self, x, states, names):
        """x as (N, I) rows, the states as (N, H) (zeros for None), and whether unbatched."""
        dtype = self.weight_ih.dtype
        check_float_input(self, x, dtype)
        expected = f"(N, {self.input_size}) or ({self.input_size},)"
        check_shape(self, x, expected, ndim=(1, 2))
        check_size(self, x, -1, self.input_size, expected)
        unbatched = x.ndim == 1
        rows = 1 if unbatched else x.shape[0]
        shape = (self.hidden_size,) if unbatched else (rows, self.hidden_size)
        B = backend_of(x)
        out = [x.reshape(rows, self.input_size)]
        for state, name in zip(states, names):
            state = check_state(self, state, name, shape, dtype)
            out.append(zeros_if_none(B, state, shape, dtype).reshape(rows, self.hidden_size))
        return B, unbatched, out

    def _check_grad(self, grad, name):
        """An upstream gradient as (N, H) rows; None means zeros."""
        shape = (self.hidden_size,) if self._unbatched else self._x.shape[:1] + (self.hidden_size,)
        grad = check_grad(self, grad, name, shape, self._x.dtype)
        rows = (self._x.shape[0], self.hidden_size)
        return zeros_if_none(backend_of(self._x), grad, rows, self._x.dtype).reshape(rows)

    def _products(self, B, x, h):
        """x W_ih^T (+ h W_hh^T) (+ biases): the preactivations, one new (N, G*H) array."""
        a = B.matmul(x, self.weight_ih.data, trans_b=True)
        B.matmul(h, self.weight_hh.data, out=a, trans_b=True, accumulate=True)
        if self.bias:
            B.add_bias(a, self.bias_ih.data)
            B.add_bias(a, self.bias_hh.data)
        return a

    def _backward_products(self, B, da_x, da_h, dh_direct=None):
        """Parameter gradients from dL/d(x-part) and dL/d(h-part) of the preactivations,
        and (dx, dh); dh_direct is a part of dh that bypasses W_hh (GRU)."""
        B.matmul(da_x, self._x, out=self.weight_ih.grad, trans_a=True, accumulate=True)
        B.matmul(da_h, self._h, out=self.weight_hh.grad, trans_a=True, accumulate=True)
        if self.bias:
            B.sum_rows(da_x, out=self.bias_ih.grad, accumulate=True)
            B.sum_rows(da_h, out=self.bias_hh.grad, accumulate=True)
        dx = B.matmul(da_x, self.weight_ih.data)
        if dh_direct is None:
            dh = B.matmul(da_h, self.weight_hh.data)
        else:
            dh = B.matmul(da_h, self.weight_hh.data, out=dh_direct, accumulate=True)
        return self._shape_out(dx, self.input_size), self._shape_out(dh, self.hidden_size)

    def _shape_out(self, a, size):
        return a.reshape(size) if self._unbatched else a


class RNNCell(_Cell):
    """Elman cell:  h' = act(x W_ih^T + b_ih + h W_hh^T + b_hh),  act = tanh or relu.

    Shapes: x (N, I) or (I,); h, h' (N, H) or (H,).
    forward(x, hx=None) -> h'  (hx None: zeros).
    backward(grad_h) -> (dx, dh), with da = grad_h * act'(a):
        tanh' = 1 - h'^2, relu' = [h' > 0];  dx = da W_ih,  dh = da W_hh,
        dW_ih += da^T x,  dW_hh += da^T h,  db_ih = db_hh += sum_rows(da).

    Ops: ``B.rnn_cell_forward``, ``B.rnn_cell_backward``, ``B.matmul``, ``B.add_bias``,
    ``B.sum_rows``; their NumPy references: ``backend/ops/rnn.py``, ``backend/ops/linalg.py``.
    """

    kind = "rnn"

    def __init__(self, input_size, hidden_size, bias=True, nonlinearity="tanh",
                 dtype=np.float32):
        check_nonlinearity(type(self).__name__, nonlinearity)
        super().__init__(input_size, hidden_size, bias, dtype)
        self.nonlinearity = nonlinearity

    def extra_repr(self):
        return super().extra_repr() + \
            ("" if self.nonlinearity == "tanh" else f", nonlinearity={self.nonlinearity!r}")

    def forward(self, x, hx=None):
        B, self._unbatched, (self._x, self._h) = self._check(x, (hx,), ("hx",))
        self._y = B.rnn_cell_forward(self._products(B, self._x, self._h), self.nonlinearity)
        return self._shape_out(self._y, self.hidden_size)

    def backward(self, grad_h):
        grad_h = self._check_grad(grad_h, "grad_h")
        B = backend_of(grad_h)
        da = B.rnn_cell_backward(grad_h, self._y, self.nonlinearity)
        return self._backward_products(B, da, da)


class LSTMCell(_Cell):
    """Long short-term memory cell (Hochreiter & Schmidhuber), PyTorch's gate order i, f, g, o.

        [a_i, a_f, a_g, a_o] = x W_ih^T + b_ih + h W_hh^T + b_hh      (N, 4H)
        i = sigmoid(a_i)  f = sigmoid(a_f)  g = tanh(a_g)  o = sigmoid(a_o)
        c' = f * c + i * g                  h' = o * tanh(c')

    Shapes: x (N, I) or (I,); h, c, h', c' (N, H) or (H,).
    forward(x, hx=None) -> (h', c'), hx = (h, c) (None or either None: zeros).
    backward(grad_h, grad_c=None) -> (dx, (dh, dc)):
        dc'  = grad_c + grad_h * o * (1 - tanh^2 c')       (the total dL/dc')
        da_o = grad_h * tanh(c') * o (1 - o)     da_i = dc' * g * i (1 - i)
        da_f = dc' * c * f (1 - f)               da_g = dc' * i * (1 - g^2)
        dc   = dc' * f,  and dx, dh, dW, db from da as in every cell.

    Ops: ``B.lstm_cell_forward``, ``B.lstm_cell_backward``, ``B.matmul``, ``B.add_bias``,
    ``B.sum_rows``; their NumPy references: ``backend/ops/rnn.py``, ``backend/ops/linalg.py``.
    """

    kind = "lstm"

    def forward(self, x, hx=None):
        h, c = pair(self, hx, "hx")
        B, self._unbatched, (self._x, self._h, self._c) = self._check(x, (h, c), ("h", "c"))
        a = self._products(B, self._x, self._h)
        h_new, self._c_new, self._acts = B.lstm_cell_forward(a, self._c, acts=a)
        return (self._shape_out(h_new, self.hidden_size),
                self._shape_out(self._c_new, self.hidden_size))

    def backward(self, grad_h, grad_c=None):
        grad_h, grad_c = self._check_grad(grad_h, "grad_h"), self._check_grad(grad_c, "grad_c")
        B = backend_of(grad_h)
        da, dc = B.lstm_cell_backward(grad_h, grad_c, self._acts, self._c, self._c_new)
        dx, dh = self._backward_products(B, da, da)
        return dx, (dh, self._shape_out(dc, self.hidden_size))


class GRUCell(_Cell):
    """Gated recurrent unit (Cho et al.), PyTorch's variant and gate order r, z, n.

        gx = x W_ih^T + b_ih,  gh = h W_hh^T + b_hh        (N, 3H) each, blocks [r, z, n]
        r = sigmoid(gx_r + gh_r)    z = sigmoid(gx_z + gh_z)
        n = tanh(gx_n + r * gh_n)   h' = (1 - z) * n + z * h

    The reset gate multiplies gh_n = h W_hn^T + b_hn, *after* the product, as in
    PyTorch (the original paper applies r before it). So the two preactivation
    parts stay separate here.

    Shapes: x (N, I) or (I,); h, h' (N, H) or (H,).
    forward(x, hx=None) -> h'.   backward(grad_h) -> (dx, dh):
        da_n = grad_h (1 - z)(1 - n^2)     da_z = grad_h (h - n) z (1 - z)
        da_r = da_n gh_n r (1 - r)
        dgx = [da_r, da_z, da_n]           dgh = [da_r, da_z, da_n * r]
        dx = dgx W_ih    dh = grad_h z + dgh W_hh
        dW_ih += dgx^T x   dW_hh += dgh^T h   db_ih += sum_rows(dgx)   db_hh += sum_rows(dgh)

    Ops: ``B.matmul``, ``B.add_bias``, ``B.gru_cell_forward``, ``B.gru_cell_backward``,
    ``B.sum_rows``; their NumPy references: ``backend/ops/linalg.py``, ``backend/ops/rnn.py``.
    """

    kind = "gru"

    def forward(self, x, hx=None):
        B, self._unbatched, (self._x, self._h) = self._check(x, (hx,), ("hx",))
        gx = B.matmul(self._x, self.weight_ih.data, trans_b=True)
        if self.bias:
            B.add_bias(gx, self.bias_ih.data)
        gh = B.matmul(self._h, self.weight_hh.data, trans_b=True)
        b_hh = self.bias_hh.data if self.bias else B.zeros(gh.shape[1], gh.dtype)
        h_new, self._acts, self._hn = B.gru_cell_forward(gx, gh, b_hh, self._h, acts=gx)
        return self._shape_out(h_new, self.hidden_size)

    def backward(self, grad_h):
        grad_h = self._check_grad(grad_h, "grad_h")
        B = backend_of(grad_h)
        dgx, dgh, dh_direct = B.gru_cell_backward(grad_h, self._acts, self._hn, self._h)
        return self._backward_products(B, dgx, dgh, dh_direct)


def pair(layer, hx, name, stacked=False):
    """(h, c) from an LSTM state argument: None, or a pair whose items may be None.

    ``stacked``: also accept one array of shape (2, ...) (how ``gradcheck``
    hands back the gradient of a pair output).
    """
    if hx is None:
        return None, None
    if stacked and hasattr(hx, "shape") and len(hx.shape) >= 1 and hx.shape[0] == 2:
        return hx[0], hx[1]
    if not isinstance(hx, (tuple, list)) or len(hx) != 2:
        raise ShapeError(f"{describe(layer)}: expected {name} as a pair (h, c), got "
                         f"{type(hx).__name__}")
    return hx[0], hx[1]
