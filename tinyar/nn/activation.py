"""Elementwise activations: y = f(x), dL/dx = f'(x) * dL/dy.

Shapes: any; y and dL/dx have the shape of x. Each layer keeps what its
derivative needs: ReLU, LeakyReLU and GELU keep x; Tanh and Sigmoid keep y,
since tanh' = 1 - y^2 and sigmoid' = y (1 - y) are cheapest from the output.
"""
from ..backend import backend_of
from .checks import check_float_input, check_real
from .module import Module


class ReLU(Module):
    """y = max(x, 0);  dL/dx = dL/dy * [x > 0].

    Ops: ``B.relu_forward``, ``B.relu_backward``; their NumPy references:
    ``backend/ops/elementwise.py``.
    """

    def forward(self, x):
        check_float_input(self, x)
        self._x = x
        return backend_of(x).relu_forward(x)

    def backward(self, grad_out):
        return backend_of(grad_out).relu_backward(grad_out, self._x)


class LeakyReLU(Module):
    """y = x if x > 0 else a x;  dL/dx = dL/dy * (1 if x > 0 else a).

    Ops: ``B.leaky_relu_forward``, ``B.leaky_relu_backward``; their NumPy references:
    ``backend/ops/elementwise.py``.
    """

    def __init__(self, negative_slope=0.01):
        super().__init__()
        self.negative_slope = check_real("LeakyReLU", "negative_slope", negative_slope)

    def extra_repr(self):
        return f"negative_slope={self.negative_slope}"

    def forward(self, x):
        check_float_input(self, x)
        self._x = x
        return backend_of(x).leaky_relu_forward(x, self.negative_slope)

    def backward(self, grad_out):
        return backend_of(grad_out).leaky_relu_backward(grad_out, self._x, self.negative_slope)


class Tanh(Module):
    """y = tanh x;  dL/dx = dL/dy * (1 - y^2).

    Ops: ``B.tanh_forward``, ``B.tanh_backward``; their NumPy references:
    ``backend/ops/elementwise.py``.
    """

    def forward(self, x):
        check_float_input(self, x)
        self._y = backend_of(x).tanh_forward(x)
        return self._y

    def backward(self, grad_out):
        return backend_of(grad_out).tanh_backward(grad_out, self._y)


class Sigmoid(Module):
    """y = 1 / (1 + e^-x);  dL/dx = dL/dy * y (1 - y).

    Ops: ``B.sigmoid_forward``, ``B.sigmoid_backward``; their NumPy references:
    ``backend/ops/elementwise.py``.
    """

    def forward(self, x):
        check_float_input(self, x)
        self._y = backend_of(x).sigmoid_forward(x)
        return self._y

    def backward(self, grad_out):
        return backend_of(grad_out).sigmoid_backward(grad_out, self._y)


class GELU(Module):
    """y = x Phi(x) (exact, erf-based, as torch's default);
    dL/dx = dL/dy * (Phi(x) + x phi(x)), phi the standard normal density.

    Ops: ``B.gelu_forward``, ``B.gelu_backward``; their NumPy references:
    ``backend/ops/elementwise.py``.
    """

    def forward(self, x):
        check_float_input(self, x)
        self._x = x
        return backend_of(x).gelu_forward(x)

    def backward(self, grad_out):
        return backend_of(grad_out).gelu_backward(grad_out, self._x)
