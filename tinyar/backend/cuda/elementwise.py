"""Activations, their derivatives and dropout: one thread per element.

Each kernel is a grid-stride loop over flat 1-D views (``_util.py``); the
Python wrapper below it makes the input contiguous and allocates the output.
Constants are made in the array's dtype (``x.dtype.type(1)``): a bare ``1.0``
is a float64 and would turn float32 arithmetic into float64 arithmetic,
which a GPU runs many times slower.

Dropout masks: each thread computes Philox2x32-10 of (seed, offset + i) for
its elements i (``backend/ops/elementwise.py``): no generator state to
share between threads, and the same integer arithmetic as the CPU loop, so
a CPU and a GPU run from the same seed drop the same units.

``permute``: numba device arrays cannot be strided views with reordered
axes (their ``transpose`` copies, and only 2-D arrays), so moving an axis
is a gather: the thread for output element i unravels i over the output's
shape and sums the coordinates times the input's strides along the same
axes. The shape and strides travel as small int64 device arrays, copied
once per (shape, axes) and then reused.
"""
from functools import lru_cache

import numpy as np
from numba import cuda

from ..ops.elementwise import PHILOX_M, PHILOX_ROUNDS, PHILOX_W, mask_arguments
from ..scalar import activations
from ._util import as_float, contiguous, device, flat, launch_flat, out_like, scalar_function

__all__ = ["relu_forward", "relu_backward", "leaky_relu_forward", "leaky_relu_backward",
           "tanh_forward", "tanh_backward", "sigmoid_forward", "sigmoid_backward",
           "gelu_forward", "gelu_backward", "gated_tanh_forward",
           "gated_tanh_backward", "dropout_mask", "dropout_apply", "permute"]

# uint64 constants: uint64 mixed with int64 would become float64
_M, _W = np.uint64(PHILOX_M), np.uint64(PHILOX_W)
_LOW32, _32 = np.uint64(0xFFFFFFFF), np.uint64(32)

_SQRT_HALF = 0.7071067811865476
_INV_SQRT_2PI = 0.3989422804014327


# One element of each op: backend/scalar/activations.py, shared with the CPU.
_relu_forward_one = scalar_function(activations.relu_forward)
_relu_backward_one = scalar_function(activations.relu_backward)
_leaky_relu_forward_one = scalar_function(activations.leaky_relu_forward)
_leaky_relu_backward_one = scalar_function(activations.leaky_relu_backward)
_tanh_forward_one = scalar_function(activations.tanh_forward)
_tanh_backward_one = scalar_function(activations.tanh_backward)
_sigmoid_forward_one = scalar_function(activations.sigmoid_forward)
_sigmoid_backward_one = scalar_function(activations.sigmoid_backward)
_gelu_forward_one = scalar_function(activations.gelu_forward)
_gelu_backward_one = scalar_function(activations.gelu_backward)
_gated_tanh_forward_one = scalar_function(activations.gated_tanh_forward)
_gated_tanh_backward_one = scalar_function(activations.gated_tanh_backward)


@cuda.jit
def _relu(x, out):
    zero = x.dtype.type(0)
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        out[i] = _relu_forward_one(x[i], zero)


@cuda.jit
def _relu_grad(grad, x, out):
    zero = x.dtype.type(0)
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        out[i] = _relu_backward_one(grad[i], x[i], zero)


@cuda.jit
def _leaky_relu(x, slope, out):
    zero = x.dtype.type(0)
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        out[i] = _leaky_relu_forward_one(x[i], slope, zero)


@cuda.jit
def _leaky_relu_grad(grad, x, slope, out):
    zero = x.dtype.type(0)
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        out[i] = _leaky_relu_backward_one(grad[i], x[i], slope, zero)


@cuda.jit
def _tanh(x, out):
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        out[i] = _tanh_forward_one(x[i])


@cuda.jit
def _tanh_grad(grad, y, out):
    one = y.dtype.type(1)
    for i in range(cuda.grid(1), y.size, cuda.gridsize(1)):
        out[i] = _tanh_backward_one(grad[i], y[i], one)


@cuda.jit
def _sigmoid(x, out):
    one = x.dtype.type(1)
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        out[i] = _sigmoid_forward_one(x[i], one)


@cuda.jit
def _sigmoid_grad(grad, y, out):
    one = y.dtype.type(1)
    for i in range(cuda.grid(1), y.size, cuda.gridsize(1)):
        out[i] = _sigmoid_backward_one(grad[i], y[i], one)


@cuda.jit
def _gated_tanh(a, b, out):
    one = a.dtype.type(1)
    for i in range(cuda.grid(1), a.size, cuda.gridsize(1)):
        out[i] = _gated_tanh_forward_one(a[i], b[i], one)


@cuda.jit
def _gated_tanh_grad(grad, a, b, grad_a, grad_b):
    one = a.dtype.type(1)
    for i in range(cuda.grid(1), a.size, cuda.gridsize(1)):
        grad_a[i], grad_b[i] = _gated_tanh_backward_one(grad[i], a[i], b[i], one)


@cuda.jit
def _gelu(x, out):
    half, one = x.dtype.type(0.5), x.dtype.type(1)
    sqrt_half = x.dtype.type(_SQRT_HALF)
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        out[i] = _gelu_forward_one(x[i], half, one, sqrt_half)


@cuda.jit
def _gelu_grad(grad, x, out):
    half, one = x.dtype.type(0.5), x.dtype.type(1)
    sqrt_half, inv_sqrt_2pi = x.dtype.type(_SQRT_HALF), x.dtype.type(_INV_SQRT_2PI)
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        out[i] = _gelu_backward_one(grad[i], x[i], half, one, sqrt_half, inv_sqrt_2pi)


@cuda.jit(device=True)
def philox_word(counter, key):
    """The first output word of Philox2x32-10 (counter: uint64, key: 32 bits in a uint64)."""
    x0, x1 = counter & _LOW32, counter >> _32
    for _ in range(PHILOX_ROUNDS):
        product = x0 * _M
        x0, x1 = (product >> _32) ^ key ^ x1, product & _LOW32
        key = (key + _W) & _LOW32
    return x0


@cuda.jit
def _dropout_mask(seed, offset, threshold, group, keep):
    for i in range(cuda.grid(1), keep.size, cuda.gridsize(1)):
        keep[i] = philox_word(offset + np.uint64(i) // group, seed) >= threshold


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


def gated_tanh_forward(a, b, out=None):
    return _binary(_gated_tanh, a, b, out)


def gated_tanh_backward(grad, a, b, grad_a=None, grad_b=None):
    grad, a, b = contiguous(grad), contiguous(a), contiguous(b)
    _same_shape(grad, a)
    _same_shape(a, b)
    grad_a, grad_b = out_like(grad_a, a), out_like(grad_b, a)
    launch_flat(_gated_tanh_grad, a.size, flat(grad), flat(a), flat(b), flat(grad_a),
                flat(grad_b))
    return grad_a, grad_b


def dropout_mask(shape, p, seed, offset, out=None, group=1):
    """The keep mask (bool) of ``shape``; one thread per element."""
    shape = tuple(int(n) for n in shape)
    if int(group) < 1:
        raise ValueError(f"dropout_mask: group must be a positive count, got {group}")
    keep = out_like(out, None, dtype=np.bool_, shape=shape)
    seed, offset, threshold = mask_arguments(keep.size, p, seed, offset)
    launch_flat(_dropout_mask, keep.size, seed, offset, threshold, np.uint64(group), flat(keep))
    return keep


def dropout_apply(x, keep, scale, out=None):
    """x * keep * scale; ``keep`` a bool array (host masks are copied to the device)."""
    x, keep = contiguous(x), contiguous(keep)
    _same_shape(x, keep)
    out = out_like(out, x)
    launch_flat(_dropout, x.size, flat(x), flat(keep), as_float(scale, x), flat(out))
    return out


@cuda.jit
def _permute(x, shape, strides, out):
    # shape: out's shape; strides[d]: the step in x (in elements) along out's axis d
    ndim = shape.size
    for i in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        rest, source = i, 0
        for d in range(ndim - 1, -1, -1):
            source += (rest % shape[d]) * strides[d]
            rest //= shape[d]
        out[i] = x[source]


@lru_cache(maxsize=128)
def _permute_plan(shape, axes):
    """(out's shape, x's strides along out's axes) as int64 device arrays, for contiguous x."""
    strides = [1] * len(shape)
    for d in range(len(shape) - 2, -1, -1):
        strides[d] = strides[d + 1] * shape[d + 1]
    return (device(np.array([shape[a] for a in axes], np.int64)),
            device(np.array([strides[a] for a in axes], np.int64)))


def permute(x, axes, out=None):
    """A C-contiguous copy of x with its axes reordered (one gather kernel)."""
    x = contiguous(x)
    axes = tuple(int(a) for a in axes)
    if len(axes) != x.ndim or sorted(a % x.ndim for a in axes) != list(range(x.ndim)):
        raise ValueError(f"permute: axes {axes} are not a permutation of the {x.ndim} axes of "
                         f"an array of shape {tuple(x.shape)}")
    axes = tuple(a % x.ndim for a in axes)
    out = out_like(out, x, shape=tuple(x.shape[a] for a in axes))
    if x.size:
        shape, strides = _permute_plan(tuple(x.shape), axes)
        launch_flat(_permute, x.size, flat(x), shape, strides, flat(out))
    return out
