"""Activations, their derivatives and dropout: one thread per element.

Each kernel is a grid-stride loop over flat 1-D views (``_util.py``); the
Python wrapper below it makes the input contiguous and allocates the output.
Constants are made in the array's dtype (``x.dtype.type(1)``): a bare ``1.0``
is a float64 and would turn float32 arithmetic into float64 arithmetic,
which a GPU runs many times slower.
"""
import math

from numba import cuda

from ._util import as_float, contiguous, flat, launch_flat, out_like

__all__ = ["relu_forward", "relu_backward", "leaky_relu_forward", "leaky_relu_backward",
           "tanh_forward", "tanh_backward", "sigmoid_forward", "sigmoid_backward",
           "gelu_forward", "gelu_backward", "dropout_apply"]

_SQRT_HALF = 0.7071067811865476
_INV_SQRT_2PI = 0.3989422804014327


@cuda.jit
def _relu(x, out):
    zero = x.dtype.type(0)
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        out[i] = x[i] if x[i] > zero else zero


@cuda.jit
def _relu_grad(grad, x, out):
    zero = x.dtype.type(0)
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        out[i] = grad[i] if x[i] > zero else zero


@cuda.jit
def _leaky_relu(x, slope, out):
    zero = x.dtype.type(0)
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        out[i] = x[i] if x[i] > zero else x[i] * slope


@cuda.jit
def _leaky_relu_grad(grad, x, slope, out):
    zero = x.dtype.type(0)
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        out[i] = grad[i] if x[i] > zero else grad[i] * slope


@cuda.jit
def _tanh(x, out):
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        out[i] = math.tanh(x[i])


@cuda.jit
def _tanh_grad(grad, y, out):
    one = y.dtype.type(1)
    for i in range(cuda.grid(1), y.size, cuda.gridsize(1)):
        out[i] = grad[i] * (one - y[i] * y[i])


@cuda.jit(device=True)
def sigmoid(v, one):
    """1 / (1 + e^-v) without overflow: e^-v is only formed for v >= 0.
    (``one`` is 1 in v's dtype: a device function cannot make it from a scalar.)"""
    if v >= 0:
        return one / (one + math.exp(-v))
    e = math.exp(v)
    return e / (one + e)


@cuda.jit
def _sigmoid(x, out):
    one = x.dtype.type(1)
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        out[i] = sigmoid(x[i], one)


@cuda.jit
def _sigmoid_grad(grad, y, out):
    one = y.dtype.type(1)
    for i in range(cuda.grid(1), y.size, cuda.gridsize(1)):
        out[i] = grad[i] * y[i] * (one - y[i])


@cuda.jit
def _gelu(x, out):
    half, one = x.dtype.type(0.5), x.dtype.type(1)
    sqrt_half = x.dtype.type(_SQRT_HALF)
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        v = x[i]
        out[i] = half * v * (one + math.erf(v * sqrt_half))


@cuda.jit
def _gelu_grad(grad, x, out):
    half, one = x.dtype.type(0.5), x.dtype.type(1)
    sqrt_half, inv_sqrt_2pi = x.dtype.type(_SQRT_HALF), x.dtype.type(_INV_SQRT_2PI)
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        v = x[i]
        cdf = half * (one + math.erf(v * sqrt_half))
        pdf = inv_sqrt_2pi * math.exp(-half * v * v)
        out[i] = grad[i] * (cdf + v * pdf)


@cuda.jit
def _dropout(x, keep, scale, out):
    zero = x.dtype.type(0)
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        out[i] = x[i] * scale if keep[i] else zero


def _unary(kernel, x, out, *scalars):
    x = contiguous(x)
    out = out_like(out, x)
    launch_flat(kernel, x.size, flat(x), *[as_float(s, x) for s in scalars], flat(out))
    return out


def _binary(kernel, grad, saved, out, *scalars):
    grad, saved = contiguous(grad), contiguous(saved)
    _same_shape(grad, saved)
    out = out_like(out, saved)
    launch_flat(kernel, saved.size, flat(grad), flat(saved), *[as_float(s, saved) for s in scalars],
                flat(out))
    return out


def _same_shape(a, b):
    if tuple(a.shape) != tuple(b.shape):
        raise ValueError(f"expected arrays of the same shape, got {tuple(a.shape)} and "
                         f"{tuple(b.shape)}")


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
    """x * keep * scale; ``keep`` a bool array (host masks are copied to the device)."""
    x, keep = contiguous(x), contiguous(keep)
    _same_shape(x, keep)
    out = out_like(out, x)
    launch_flat(_dropout, x.size, flat(x), flat(keep), as_float(scale, x), flat(out))
    return out
