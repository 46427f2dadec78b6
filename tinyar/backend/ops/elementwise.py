"""Activations and their derivatives; dropout masks; moving axes.

Backward ops take ``grad`` (dL/dy) and what the forward saved (x or y) and
return dL/dx.

Dropout masks come from a *counter-based* generator, Philox2x32-10 (Salmon,
Moraes, Dror & Shaw, "Parallel random numbers: as easy as 1, 2, 3", SC 2011;
cuRAND and PyTorch's GPU dropout use its 4x32 sibling). Element i's random
number is a pure function of (seed, offset + i): ten rounds of a 32 x 32 ->
64-bit multiply and xors scramble the counter under the key. No state passes
from one element to the next, so every GPU thread computes its own elements
independently, and the CPU loop and the GPU kernel give the same bits.
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


# --- WaveNet's gated activation -------------------------------------------------
def _gate_example(rng, dtype):
    return dict(a=_x(rng, dtype), b=_x(rng, dtype))


@op("a, b: any shape, same; out: like a", example=_gate_example)
def gated_tanh_forward(a, b, out=None):
    """y = tanh(a) * sigmoid(b): the gate of WaveNet's residual blocks, one pass."""
    return np.tanh(a) * _sigmoid(b)


@op("grad, a, b: any shape, same; grad_a, grad_b: like a",
    example=lambda rng, dtype: dict(grad=_x(rng, dtype), **_gate_example(rng, dtype)))
def gated_tanh_backward(grad, a, b, grad_a=None, grad_b=None):
    """u = tanh(a), s = sigmoid(b), recomputed (cheaper than storing them):
    dL/da = grad * s * (1 - u^2), dL/db = grad * u * s * (1 - s)."""
    u, s = np.tanh(a), _sigmoid(b)
    return grad * s * (1 - u * u), grad * u * s * (1 - s)


# --- Philox2x32-10: the constants of Random123 (philox.h) -------------------------
PHILOX_M = 0xD256D193       # the round multiplier
PHILOX_W = 0x9E3779B9       # the key's increment between rounds (the golden ratio, 32 bits)
PHILOX_ROUNDS = 10


def philox2x32(counter, key):
    """Philox2x32-10 of 64-bit counters (a uint64 array) under a 32-bit key.

    The counter splits into two 32-bit words (low, high); each round
    multiplies the low word by M, keeps the product's low half as the new
    high word and xors its high half with the key and the old high word:

        x0, x1 <- hi(M x0) ^ key ^ x1,  lo(M x0);      key <- key + W

    Returns both output words, as uint64 arrays holding 32-bit values (32 x
    32-bit products fit in 64 bits, so nothing overflows).
    """
    mask = np.uint64(0xFFFFFFFF)
    counter = np.asarray(counter, dtype=np.uint64)
    x0, x1, k = counter & mask, counter >> np.uint64(32), np.uint64(key)
    for _ in range(PHILOX_ROUNDS):
        product = x0 * np.uint64(PHILOX_M)
        x0, x1 = (product >> np.uint64(32)) ^ k ^ x1, product & mask
        k = (k + np.uint64(PHILOX_W)) & mask
    return x0, x1


def dropout_threshold(p):
    """The 32-bit random word r drops its element when r < threshold = floor(p 2^32):
    P(drop) = p to within 2^-32, and p = 1 drops every element (r < 2^32 always)."""
    return int(float(p) * 2.0 ** 32)


_TWO_32, _TWO_64 = 2 ** 32, 2 ** 64


def mask_arguments(size, p, seed, offset):
    """(seed, offset, threshold) as the uint64 scalars the mask kernels take, checked.

    Both backends call this, so they agree on the threshold; uint64 throughout,
    since numba turns uint64 mixed with int64 into float64.
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout_mask: p must lie in [0, 1], got {p}")
    if not 0 <= seed < _TWO_32:
        raise ValueError(f"dropout_mask: seed is a 32-bit key, in [0, 2**32), got {seed}")
    if not 0 <= offset <= _TWO_64 - size:
        raise ValueError(f"dropout_mask: offset + {size} counters must fit in 64 bits, got "
                         f"offset {offset}")
    return np.uint64(seed), np.uint64(offset), np.uint64(dropout_threshold(p))


def _mask_example(rng, dtype):
    # the counter of elements 35-39 (group 5: draw 7) is Random123's known-answer counter
    # (0x85a308d3, 0x243f6a88)
    return dict(shape=(4, 3, 5), p=0.3, seed=0x13198A2E, offset=0x85A308D3243F6A88 - 7,
                group=5)


@op("shape: a tuple; p in [0, 1]; seed: 32-bit key; offset: the first counter (64-bit); "
    "out: bool, of that shape", example=_mask_example)
def dropout_mask(shape, p, seed, offset, out=None, group=1):
    """keep[i] = philox2x32(offset + i // group, seed)[0] >= floor(p 2^32), i the flat
    (C-order) index: ``group`` consecutive elements share one draw (``Dropout2d``
    keeps or drops a whole (H, W) plane with group = H * W).

    Bit for bit the same on every backend; a new (seed, offset) gives a new mask.
    """
    size = int(np.prod(shape, dtype=np.int64))
    counters = np.uint64(offset) + np.arange(size, dtype=np.uint64) // np.uint64(group)
    word, _ = philox2x32(counters, seed)
    return (word >= np.uint64(dropout_threshold(p))).reshape(shape)


@op("x, keep (bool): same shape; out: like x",
    example=lambda rng, dtype: dict(x=_x(rng, dtype), keep=rng.random((4, 3, 5)) > 0.3, scale=1 / 0.7))
def dropout_apply(x, keep, scale, out=None):
    """Inverted dropout, forward and backward alike: x * keep * scale."""
    return x * keep * scale


@op("x: any shape; axes: a permutation of range(x.ndim); out: (x.shape[a] for a in axes), "
    "C-contiguous (the CPU returns a view of x instead: read it, do not write to it)",
    example=lambda rng, dtype: dict(x=_x(rng, dtype), axes=(2, 0, 1)))
def permute(x, axes, out=None):
    """out[i_0, ..., i_k] with out.shape[j] = x.shape[axes[j]]: np.transpose(x, axes).

    Layers move one axis last (a softmax over dim 1, a loss over the class
    axis of (N, C, d1, ...)) and back with it.
    """
    return np.transpose(x, axes)
