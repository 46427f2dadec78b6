"""Activations and their derivatives, one element at a time: the bodies of the
elementwise kernels of ``cpu/elementwise.py`` and ``cuda/elementwise.py``, named
as the ops they serve.

Backward functions take what the forward saved: the input x (ReLU, GELU, gated
tanh) or the output y (tanh: 1 - y^2, sigmoid: y (1 - y)). ``zero``, ``one``,
``half`` and the GELU constants come from the kernel, in the dtype it computes
in.
"""

from .functions import erf, exp, sigmoid, tanh


def relu_forward(x, zero):
    return x if x > zero else zero


def relu_backward(grad, x, zero):
    return grad if x > zero else zero


def leaky_relu_forward(x, slope, zero):
    return x if x > zero else x * slope


def leaky_relu_backward(grad, x, slope, zero):
    return grad if x > zero else grad * slope


def tanh_forward(x):
    return tanh(x)


def tanh_backward(grad, y, one):
    return grad * (one - y * y)


def sigmoid_forward(x, one):
    return sigmoid(x, one)


def sigmoid_backward(grad, y, one):
    return grad * y * (one - y)


def gelu_forward(x, half, one, sqrt_half):
    """x Phi(x) = x (1 + erf(x / sqrt 2)) / 2, the exact GELU."""
    return half * x * (one + erf(x * sqrt_half))


def gelu_backward(grad, x, half, one, sqrt_half, inv_sqrt_2pi):
    """dGELU/dx = Phi(x) + x phi(x), phi(x) = e^(-x^2/2) / sqrt(2 pi)."""
    cdf = half * (one + erf(x * sqrt_half))
    pdf = inv_sqrt_2pi * exp(-half * x * x)
    return grad * (cdf + x * pdf)


def gelu_tanh_forward(x, half, one, sqrt_2_over_pi, cubic):
    """x (1 + tanh u) / 2 with u = sqrt(2/pi) (x + 0.044715 x^3): the tanh GELU
    (torch's approximate="tanh", GPT-2's); ``cubic`` is 0.044715."""
    u = sqrt_2_over_pi * (x + cubic * x * x * x)
    return half * x * (one + tanh(u))


def gelu_tanh_backward(grad, x, half, one, sqrt_2_over_pi, cubic, three_cubic):
    """d/dx = (1 + t) / 2 + x (1 - t^2) / 2 * du/dx, t = tanh u,
    du/dx = sqrt(2/pi) (1 + 3 * 0.044715 x^2)."""
    x2 = x * x
    t = tanh(sqrt_2_over_pi * (x + cubic * x2 * x))
    du = sqrt_2_over_pi * (one + three_cubic * x2)
    return grad * (half * (one + t) + half * x * (one - t * t) * du)


def gated_tanh_forward(a, b, one):
    """tanh(a) sigmoid(b), WaveNet's gated activation."""
    return tanh(a) * sigmoid(b, one)


def gated_tanh_backward(grad, a, b, one):
    """-> (dL/da, dL/db) of tanh(a) sigmoid(b)."""
    u, s = tanh(a), sigmoid(b, one)
    return grad * s * (one - u * u), grad * u * s * (one - s)
