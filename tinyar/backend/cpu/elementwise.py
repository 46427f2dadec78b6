"""Activations, their derivatives and dropout: one serial loop each.

Each kernel works on flat 1-D views; the Python wrapper above it makes the
input contiguous and allocates the output. Serial on purpose (see
``backend/cpu/threads.py``).

Dropout masks: Philox2x32-10 of (seed, offset + i) for element i, the
generator described in ``backend/ops/elementwise.py``, in uint64 integer
arithmetic, so that this loop and the CUDA kernel produce the same bits.
(LLVM vectorises the loop: 1M mask entries take ~0.8 ms, half the time
NumPy's ``rng.random(n) >= p`` took.)
"""

import numpy as np
from numba import njit

from ..ops.elementwise import mask_arguments
from ..scalar import activations
from ._util import ERROR_MODEL, FASTMATH, as_float, contiguous, flat, out_like, scalar_function

__all__ = ["relu_forward", "relu_backward", "leaky_relu_forward", "leaky_relu_backward",
           "tanh_forward", "tanh_backward", "sigmoid_forward", "sigmoid_backward",
           "gelu_forward", "gelu_backward", "gated_tanh_forward",
           "gated_tanh_backward", "dropout_mask", "dropout_apply", "permute"]

# Philox2x32-10's constants (as in ops/elementwise.py), written out here: cached
# kernels freeze globals, and the cache is keyed to this folder's sources only
# (cache.py). uint64, since numba would turn uint64 mixed with int64 into float64.
_M, _W, _ROUNDS = np.uint64(0xD256D193), np.uint64(0x9E3779B9), 10
_LOW32, _32 = np.uint64(0xFFFFFFFF), np.uint64(32)

_SQRT_HALF = 0.7071067811865476
_INV_SQRT_2PI = 0.3989422804014327


# One element of each op: backend/scalar/activations.py, shared with CUDA.
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


@njit(cache=True, fastmath=FASTMATH, error_model=ERROR_MODEL)
def _relu(x, out):
    zero = x.dtype.type(0)
    for i in range(x.size):
        out[i] = _relu_forward_one(x[i], zero)


@njit(cache=True, fastmath=FASTMATH, error_model=ERROR_MODEL)
def _relu_grad(grad, x, out):
    zero = x.dtype.type(0)
    for i in range(x.size):
        out[i] = _relu_backward_one(grad[i], x[i], zero)


@njit(cache=True, fastmath=FASTMATH, error_model=ERROR_MODEL)
def _leaky_relu(x, slope, out):
    zero = x.dtype.type(0)
    for i in range(x.size):
        out[i] = _leaky_relu_forward_one(x[i], slope, zero)


@njit(cache=True, fastmath=FASTMATH, error_model=ERROR_MODEL)
def _leaky_relu_grad(grad, x, slope, out):
    zero = x.dtype.type(0)
    for i in range(x.size):
        out[i] = _leaky_relu_backward_one(grad[i], x[i], slope, zero)


@njit(cache=True, fastmath=FASTMATH, error_model=ERROR_MODEL)
def _tanh(x, out):
    for i in range(x.size):
        out[i] = _tanh_forward_one(x[i])


@njit(cache=True, fastmath=FASTMATH, error_model=ERROR_MODEL)
def _tanh_grad(grad, y, out):
    one = y.dtype.type(1)  # a bare 1 would promote float32 arithmetic to float64
    for i in range(y.size):
        out[i] = _tanh_backward_one(grad[i], y[i], one)


@njit(cache=True, fastmath=FASTMATH, error_model=ERROR_MODEL)
def _sigmoid(x, out):
    one = x.dtype.type(1)
    for i in range(x.size):
        out[i] = _sigmoid_forward_one(x[i], one)


@njit(cache=True, fastmath=FASTMATH, error_model=ERROR_MODEL)
def _sigmoid_grad(grad, y, out):
    one = y.dtype.type(1)
    for i in range(y.size):
        out[i] = _sigmoid_backward_one(grad[i], y[i], one)


# GELU in the array's dtype: float32 with the vectorisable erf and exp of
# fastmath.py (libm's erf is a scalar call, 5x slower), float64 with libm's.
@njit(cache=True, fastmath=FASTMATH, error_model=ERROR_MODEL)
def _gelu(x, out):
    f = x.dtype.type
    half, one, sqrt_half = f(0.5), f(1), f(_SQRT_HALF)
    for i in range(x.size):
        out[i] = _gelu_forward_one(x[i], half, one, sqrt_half)


@njit(cache=True, fastmath=FASTMATH, error_model=ERROR_MODEL)
def _gelu_grad(grad, x, out):
    f = x.dtype.type
    half, one, sqrt_half, inv_sqrt_2pi = f(0.5), f(1), f(_SQRT_HALF), f(_INV_SQRT_2PI)
    for i in range(x.size):
        out[i] = _gelu_backward_one(grad[i], x[i], half, one, sqrt_half, inv_sqrt_2pi)


@njit(cache=True, fastmath=FASTMATH, error_model=ERROR_MODEL)
def _gated_tanh(a, b, out):
    one = a.dtype.type(1)
    for i in range(a.size):
        out[i] = _gated_tanh_forward_one(a[i], b[i], one)


@njit(cache=True, fastmath=FASTMATH, error_model=ERROR_MODEL)
def _gated_tanh_grad(grad, a, b, grad_a, grad_b):
    one = a.dtype.type(1)
    for i in range(a.size):
        grad_a[i], grad_b[i] = _gated_tanh_backward_one(grad[i], a[i], b[i], one)


@njit(cache=True, inline="always")
def philox_word(counter, key):
    """The first output word of Philox2x32-10 (counter: uint64, key: 32 bits in a uint64)."""
    x0, x1 = counter & _LOW32, counter >> _32
    for _ in range(_ROUNDS):
        product = x0 * _M
        x0, x1 = (product >> _32) ^ key ^ x1, product & _LOW32
        key = (key + _W) & _LOW32
    return x0


@njit(cache=True)
def _dropout_mask(seed, offset, threshold, group, keep):
    for i in range(keep.size):
        keep[i] = philox_word(offset + np.uint64(i) // group, seed) >= threshold


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


def gated_tanh_forward(a, b, out=None):
    return _binary(_gated_tanh, a, b, out)


def gated_tanh_backward(grad, a, b, grad_a=None, grad_b=None):
    grad, a, b = contiguous(grad), contiguous(a), contiguous(b)
    grad_a, grad_b = out_like(grad_a, a), out_like(grad_b, a)
    _gated_tanh_grad(flat(grad), flat(a), flat(b), flat(grad_a), flat(grad_b))
    return grad_a, grad_b


def dropout_mask(shape, p, seed, offset, out=None, group=1):
    if out is None:
        keep = np.empty(shape, np.bool_)
    elif out.shape != tuple(shape) or out.dtype != np.bool_ or not out.flags.c_contiguous:
        raise ValueError(f"out must be a C-contiguous bool array of shape {tuple(shape)}, got "
                         f"{out.dtype.name} {out.shape}")
    else:
        keep = out
    seed, offset, threshold = mask_arguments(keep.size, p, seed, offset)
    _dropout_mask(seed, offset, threshold, _group(group), flat(keep))
    return keep


def _group(group):
    if int(group) < 1:
        raise ValueError(f"dropout_mask: group must be a positive count, got {group}")
    return np.uint64(group)


def dropout_apply(x, keep, scale, out=None):
    x, keep = contiguous(x), contiguous(keep)
    out = out_like(out, x)
    _dropout(flat(x), flat(keep), as_float(scale, x), flat(out))
    return out


def permute(x, axes, out=None):
    """A view with the axes reordered (NumPy strides express any order; the kernel
    that reads it copies it if it needs rows contiguous), or a copy into ``out``."""
    view = x.transpose(axes)
    if out is None:
        return view
    if out.shape != view.shape:
        raise ValueError(f"out has shape {out.shape}, expected {view.shape}")
    out[...] = view
    return out
