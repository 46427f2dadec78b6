"""Activations and their derivatives; dropout.

Backward ops take ``grad`` (dL/dy) and what the forward saved (x or y) and
return dL/dx.
"""
import numpy as np
from math import erf, sqrt, pi

from . import op


def _x(rng, dtype, shape=(4, 3, 5)):
    return rng.standard_normal(shape).astype(dtype) * 2


def _unary(rng, dtype):
    return dict(x=_x(rng, dtype))


def _grad_x(rng, dtype):
    return dict(grad=_x(rng, dtype), x=_x(rng, dtype))


def _grad_y(fwd):
    def example(rng, dtype):
        return dict(grad=_x(rng, dtype), y=fwd(_x(rng, dtype)).astype(dtype))
    return example


@op("x: any shape; out: like x", example=_unary)
def relu_forward(x, out=None):
    return np.maximum(x, 0)


@op("grad, x: any shape, same; out: like x", example=_grad_x)
def relu_backward(grad, x, out=None):
    return grad * (x > 0)


@op("x: any shape; out: like x", example=lambda rng, dtype: dict(x=_x(rng, dtype), negative_slope=0.1))
def leaky_relu_forward(x, negative_slope, out=None):
    return np.where(x > 0, x, x * negative_slope)


@op("grad, x: any shape, same; out: like x",
    example=lambda rng, dtype: dict(**_grad_x(rng, dtype), negative_slope=0.1))
def leaky_relu_backward(grad, x, negative_slope, out=None):
    return grad * np.where(x > 0, 1.0, negative_slope)


@op("x: any shape; out: like x", example=_unary)
def tanh_forward(x, out=None):
    return np.tanh(x)


@op("grad, y = tanh(x): same shape; out: like y", example=_grad_y(np.tanh))
def tanh_backward(grad, y, out=None):
    return grad * (1 - y * y)


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


@op("x: any shape; out: like x", example=_unary)
def sigmoid_forward(x, out=None):
    return _sigmoid(x)


@op("grad, y = sigmoid(x): same shape; out: like y", example=_grad_y(_sigmoid))
def sigmoid_backward(grad, y, out=None):
    return grad * y * (1 - y)


_erf = np.vectorize(erf, otypes=[np.float64])


@op("x: any shape; out: like x", example=_unary)
def gelu_forward(x, out=None):
    """The exact GELU: x * Phi(x), Phi the standard normal CDF."""
    return 0.5 * x * (1 + _erf(x / sqrt(2)))


@op("grad, x: any shape, same; out: like x", example=_grad_x)
def gelu_backward(grad, x, out=None):
    """d/dx [x Phi(x)] = Phi(x) + x phi(x)."""
    cdf = 0.5 * (1 + _erf(x / sqrt(2)))
    pdf = np.exp(-0.5 * x * x) / sqrt(2 * pi)
    return grad * (cdf + x * pdf)


@op("x, keep (bool): same shape; out: like x",
    example=lambda rng, dtype: dict(x=_x(rng, dtype), keep=rng.random((4, 3, 5)) > 0.3, scale=1 / 0.7))
def dropout_apply(x, keep, scale, out=None):
    """Inverted dropout, forward and backward alike: x * keep * scale."""
    return x * keep * scale
