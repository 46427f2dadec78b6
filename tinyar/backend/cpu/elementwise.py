"""Activations, their derivatives and dropout: one serial loop each.

Each kernel works on flat 1-D views; the Python wrapper above it makes the
input contiguous and allocates the output. Serial on purpose (see
``backend/threads.py``).
"""
import math

from numba import njit

from ._util import ERROR_MODEL, FASTMATH, as_float, contiguous, flat, out_like
from .fastmath import fast_sigmoid, fast_tanh

__all__ = ["relu_forward", "relu_backward", "leaky_relu_forward", "leaky_relu_backward",
           "tanh_forward", "tanh_backward", "sigmoid_forward", "sigmoid_backward",
           "gelu_forward", "gelu_backward", "dropout_apply"]

_SQRT_HALF = 0.7071067811865476
_INV_SQRT_2PI = 0.3989422804014327


@njit(cache=True, fastmath=FASTMATH, error_model=ERROR_MODEL)
def _relu(x, out):
    for i in range(x.size):
        out[i] = x[i] if x[i] > 0 else 0


@njit(cache=True, fastmath=FASTMATH, error_model=ERROR_MODEL)
def _relu_grad(grad, x, out):
    for i in range(x.size):
        out[i] = grad[i] if x[i] > 0 else 0


@njit(cache=True, fastmath=FASTMATH, error_model=ERROR_MODEL)
def _leaky_relu(x, slope, out):
    for i in range(x.size):
        out[i] = x[i] if x[i] > 0 else x[i] * slope


@njit(cache=True, fastmath=FASTMATH, error_model=ERROR_MODEL)
def _leaky_relu_grad(grad, x, slope, out):
    for i in range(x.size):
        out[i] = grad[i] if x[i] > 0 else grad[i] * slope


@njit(cache=True, fastmath=FASTMATH, error_model=ERROR_MODEL)
def _tanh(x, out):
    for i in range(x.size):
        out[i] = fast_tanh(x[i])


@njit(cache=True, fastmath=FASTMATH, error_model=ERROR_MODEL)
def _tanh_grad(grad, y, out):
    one = y.dtype.type(1)  # a bare 1 would promote float32 arithmetic to float64
    for i in range(y.size):
        out[i] = grad[i] * (one - y[i] * y[i])


@njit(cache=True, fastmath=FASTMATH, error_model=ERROR_MODEL)
def _sigmoid(x, out):
    for i in range(x.size):
        out[i] = fast_sigmoid(x[i])


@njit(cache=True, fastmath=FASTMATH, error_model=ERROR_MODEL)
def _sigmoid_grad(grad, y, out):
    one = y.dtype.type(1)
    for i in range(y.size):
        out[i] = grad[i] * y[i] * (one - y[i])


@njit(cache=True, error_model=ERROR_MODEL)
def _gelu(x, out):
    for i in range(x.size):
        v = x[i]
        out[i] = 0.5 * v * (1.0 + math.erf(v * _SQRT_HALF))


@njit(cache=True, error_model=ERROR_MODEL)
def _gelu_grad(grad, x, out):
    for i in range(x.size):
        v = x[i]
        cdf = 0.5 * (1.0 + math.erf(v * _SQRT_HALF))
        pdf = _INV_SQRT_2PI * math.exp(-0.5 * v * v)
        out[i] = grad[i] * (cdf + v * pdf)


@njit(cache=True, fastmath=FASTMATH, error_model=ERROR_MODEL)
def _dropout(x, keep, scale, out):
    for i in range(x.size):
        out[i] = x[i] * scale if keep[i] else 0


def _unary(kernel, x, out, *scalars):
    x = contiguous(x)
    out = out_like(out, x)
    kernel(flat(x), *[as_float(s, x) for s in scalars], flat(out))
    return out


def _binary(kernel, grad, saved, out, *scalars):
    grad, saved = contiguous(grad), contiguous(saved)
    out = out_like(out, saved)
    kernel(flat(grad), flat(saved), *[as_float(s, saved) for s in scalars], flat(out))
    return out


def relu_forward(x, out=None):
    return _unary(_relu, x, out)


def relu_backward(grad, x, out=None):
    return _binary(_relu_grad, grad, x, out)


def leaky_relu_forward(x, negative_slope, out=None):
    return _unary(_leaky_relu, x, out, negative_slope)


def leaky_relu_backward(grad, x, negative_slope, out=None):
    return _binary(_leaky_relu_grad, grad, x, out, negative_slope)


def tanh_forward(x, out=None):
    return _unary(_tanh, x, out)


def tanh_backward(grad, y, out=None):
    return _binary(_tanh_grad, grad, y, out)


def sigmoid_forward(x, out=None):
    return _unary(_sigmoid, x, out)


def sigmoid_backward(grad, y, out=None):
    return _binary(_sigmoid_grad, grad, y, out)


def gelu_forward(x, out=None):
    return _unary(_gelu, x, out)


def gelu_backward(grad, x, out=None):
    return _binary(_gelu_grad, grad, x, out)


def dropout_apply(x, keep, scale, out=None):
    x, keep = contiguous(x), contiguous(keep)
    out = out_like(out, x)
    _dropout(flat(x), flat(keep), as_float(scale, x), flat(out))
    return out
