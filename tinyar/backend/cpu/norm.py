"""LayerNorm and BatchNorm kernels: one pass for the statistics, one to normalise.

The statistics are the sums of d = x - s and d^2 over the values being
normalised, with s the first of them:

    mean = s + sum(d) / n,    var = sum(d^2) / n - (sum(d) / n)^2

One pass, and vectorisable (Welford's update divides at every element). The
textbook one-pass formula (s = 0) loses all precision when |mean| >> std
(the two terms nearly cancel); shifting by a value of the data keeps both
terms of the size of the variance. The second pass normalises and applies
the affine transform in the same loop: y = (x - mean) * (rstd * weight) + bias.

A missing weight / bias (no affine transform) is passed to the kernels as
ones / zeros, and a missing gradient as a scratch array, so one kernel serves
every variant. Serial on purpose (``backend/cpu/threads.py``).
"""
import math

import numpy as np
from numba import njit

from ._util import ERROR_MODEL, FASTMATH, as_float, contiguous

__all__ = ["layer_norm_forward", "layer_norm_backward", "batch_norm_forward_train",
           "batch_norm_forward_eval", "batch_norm_backward", "batch_norm_backward_eval",
           "batch_norm_update_running"]


# --- helpers ------------------------------------------------------------------
def _ones_if_none(a, n, like):
    return np.ones(n, like.dtype) if a is None else contiguous(a).reshape(-1)


def _zeros_if_none(a, n, like):
    return np.zeros(n, like.dtype) if a is None else contiguous(a).reshape(-1)


def _accumulator(a, n, like):
    """The array a backward adds into, as a flat view (a scratch array when ``a`` is None)."""
    if a is None:
        return np.zeros(n, like.dtype)
    if not a.flags.c_contiguous:
        raise ValueError("gradient arrays updated in place must be C-contiguous")
    return a.reshape(-1)


def _out(out, shape, dtype):
    if out is None:
        return np.empty(shape, dtype)
    if out.shape != tuple(shape) or not out.flags.c_contiguous:
        raise ValueError(f"out must be C-contiguous of shape {tuple(shape)}, got {out.shape}")
    return out


def _as_ncl(x):
    """Contiguous x and its (N, C, L) view (an (N, C) input is (N, C, 1))."""
    x = contiguous(x)
    return x, x.reshape(x.shape[0], x.shape[1], -1)


# --- LayerNorm ----------------------------------------------------------------
@njit(cache=True, fastmath=FASTMATH, error_model=ERROR_MODEL)
def _layer_norm_forward(x, weight, bias, eps, y, mean, rstd):
    rows, features = x.shape
    zero, one = x.dtype.type(0), x.dtype.type(1)
    inv_n = one / x.dtype.type(features)
    for r in range(rows):
        shift = x[r, 0]
        s1, s2 = zero, zero
        for f in range(features):
            d = x[r, f] - shift
            s1 += d
            s2 += d * d
        m = s1 * inv_n
        var = max(s2 * inv_n - m * m, zero)
        mu = shift + m
        s = one / math.sqrt(var + eps)
        mean[r], rstd[r] = mu, s
        for f in range(features):
            y[r, f] = (x[r, f] - mu) * (s * weight[f]) + bias[f]


def layer_norm_forward(x, weight, bias, eps, out=None, out_mean=None, out_rstd=None):
    x = contiguous(x)
    rows, features = x.shape
    y = _out(out, x.shape, x.dtype)
    mean = _out(out_mean, (rows,), x.dtype)
    rstd = _out(out_rstd, (rows,), x.dtype)
    if features:
        _layer_norm_forward(x, _ones_if_none(weight, features, x),
                            _zeros_if_none(bias, features, x), as_float(eps, x), y, mean, rstd)
    return y, mean, rstd


@njit(cache=True, fastmath=FASTMATH, error_model=ERROR_MODEL)
def _layer_norm_backward(grad, x, mean, rstd, weight, grad_weight, grad_bias, dx):
    rows, features = x.shape
    zero = x.dtype.type(0)
    inv_n = x.dtype.type(1) / x.dtype.type(features)
    for r in range(rows):
        mu, s = mean[r], rstd[r]
        # a = mean(g_hat), b = mean(g_hat * x_hat), g_hat = g * weight
        a, b = zero, zero
        for f in range(features):
            x_hat = (x[r, f] - mu) * s
            g_hat = grad[r, f] * weight[f]
            a += g_hat
            b += g_hat * x_hat
            grad_weight[f] += grad[r, f] * x_hat
            grad_bias[f] += grad[r, f]
        a *= inv_n
        b *= inv_n
        for f in range(features):
            x_hat = (x[r, f] - mu) * s
            dx[r, f] = s * (grad[r, f] * weight[f] - a - x_hat * b)


def layer_norm_backward(grad, x, mean, rstd, weight, grad_weight, grad_bias, out=None):
    grad, x = contiguous(grad), contiguous(x)
    features = x.shape[1]
    dx = _out(out, x.shape, x.dtype)
    _layer_norm_backward(grad, x, contiguous(mean), contiguous(rstd),
                         _ones_if_none(weight, features, x),
                         _accumulator(grad_weight, features, x),
                         _accumulator(grad_bias, features, x), dx)
    return dx


# --- BatchNorm ----------------------------------------------------------------
# Each kernel walks x (N, C, L) in memory order with per-channel factors worked
# out beforehand. For BatchNorm1d's (N, C) input (L = 1) the innermost loop
# runs along the channels, on a 2-D view: a loop of length 1 per channel does
# not vectorise (the forward was 9x slower at (256, 512)).
@njit(cache=True, fastmath=FASTMATH, error_model=ERROR_MODEL)
def _batch_stats(x, mean, var):
    """Per-channel mean and biased variance of x (N, C, L), one pass."""
    n, channels, length = x.shape
    zero, one = x.dtype.type(0), x.dtype.type(1)
    inv_m = one / x.dtype.type(n * length)
    shift = np.empty(channels, x.dtype)
    for c in range(channels):
        shift[c] = x[0, c, 0]
    s1 = np.zeros(channels, x.dtype)
    s2 = np.zeros(channels, x.dtype)
    if length == 1:
        x2 = x.reshape(n, channels)
        for i in range(n):
            for c in range(channels):
                d = x2[i, c] - shift[c]
                s1[c] += d
                s2[c] += d * d
    else:
        for i in range(n):
            for c in range(channels):
                a, b = zero, zero
                for j in range(length):
                    d = x[i, c, j] - shift[c]
                    a += d
                    b += d * d
                s1[c] += a
                s2[c] += b
    for c in range(channels):
        m = s1[c] * inv_m
        mean[c] = shift[c] + m
        var[c] = max(s2[c] * inv_m - m * m, zero)


@njit(cache=True, fastmath=FASTMATH, error_model=ERROR_MODEL)
def _batch_normalize(x, mean, var, weight, bias, eps, y):
    """y = (x - mean) * scale + bias, scale = weight / sqrt(var + eps), per channel."""
    n, channels, length = x.shape
    one = x.dtype.type(1)
    scale = np.empty(channels, x.dtype)
    for c in range(channels):
        scale[c] = weight[c] * (one / math.sqrt(var[c] + eps))
    if length == 1:
        x2, y2 = x.reshape(n, channels), y.reshape(n, channels)
        for i in range(n):
            for c in range(channels):
                y2[i, c] = (x2[i, c] - mean[c]) * scale[c] + bias[c]
    else:
        for i in range(n):
            for c in range(channels):
                mu, k, b = mean[c], scale[c], bias[c]
                for j in range(length):
                    y[i, c, j] = (x[i, c, j] - mu) * k + b


def batch_norm_forward_train(x, weight, bias, eps, out=None, out_mean=None, out_var=None):
    x, x3 = _as_ncl(x)
    channels = x3.shape[1]
    y = _out(out, x.shape, x.dtype)
    mean = _out(out_mean, (channels,), x.dtype)
    var = _out(out_var, (channels,), x.dtype)
    if x.size:
        _batch_stats(x3, mean, var)
        _batch_normalize(x3, mean, var, _ones_if_none(weight, channels, x),
                         _zeros_if_none(bias, channels, x), as_float(eps, x), y.reshape(x3.shape))
    return y, mean, var


def batch_norm_forward_eval(x, mean, var, weight, bias, eps, out=None):
    x, x3 = _as_ncl(x)
    channels = x3.shape[1]
    y = _out(out, x.shape, x.dtype)
    _batch_normalize(x3, contiguous(mean), contiguous(var), _ones_if_none(weight, channels, x),
                     _zeros_if_none(bias, channels, x), as_float(eps, x), y.reshape(x3.shape))
    return y


@njit(cache=True, fastmath=FASTMATH, error_model=ERROR_MODEL)
def _batch_norm_backward(grad, x, mean, var, weight, eps, grad_weight, grad_bias, dx, training):
    n, channels, length = x.shape
    zero, one = x.dtype.type(0), x.dtype.type(1)
    inv_m = one / x.dtype.type(n * length)
    # pass 1: per channel, sum(g) and sum(g * (x - mean))
    sum_g = np.zeros(channels, x.dtype)
    sum_gd = np.zeros(channels, x.dtype)
    if length == 1:
        g2, x2 = grad.reshape(n, channels), x.reshape(n, channels)
        for i in range(n):
            for c in range(channels):
                sum_g[c] += g2[i, c]
                sum_gd[c] += g2[i, c] * (x2[i, c] - mean[c])
    else:
        for i in range(n):
            for c in range(channels):
                mu = mean[c]
                a, b = zero, zero
                for j in range(length):
                    a += grad[i, c, j]
                    b += grad[i, c, j] * (x[i, c, j] - mu)
                sum_g[c] += a
                sum_gd[c] += b
    # dx = k_g g - k_0 - k_x (x - mean): the module docstring's formula, per-channel factors
    k_g = np.empty(channels, x.dtype)
    k_0 = np.zeros(channels, x.dtype)
    k_x = np.zeros(channels, x.dtype)
    for c in range(channels):
        rstd = one / math.sqrt(var[c] + eps)
        sum_gx = sum_gd[c] * rstd
        grad_weight[c] += sum_gx
        grad_bias[c] += sum_g[c]
        k_g[c] = weight[c] * rstd
        if training:  # the batch statistics depend on x: two more terms
            k_0[c] = k_g[c] * sum_g[c] * inv_m
            k_x[c] = k_g[c] * rstd * sum_gx * inv_m
    # pass 2
    if length == 1:
        g2, x2, dx2 = grad.reshape(n, channels), x.reshape(n, channels), dx.reshape(n, channels)
        for i in range(n):
            for c in range(channels):
                dx2[i, c] = k_g[c] * g2[i, c] - k_0[c] - k_x[c] * (x2[i, c] - mean[c])
    else:
        for i in range(n):
            for c in range(channels):
                a, b, d, mu = k_g[c], k_0[c], k_x[c], mean[c]
                for j in range(length):
                    dx[i, c, j] = a * grad[i, c, j] - b - d * (x[i, c, j] - mu)


def _bn_backward(grad, x, mean, var, weight, eps, grad_weight, grad_bias, out, training):
    x, x3 = _as_ncl(x)
    grad = contiguous(grad).reshape(x3.shape)
    channels = x3.shape[1]
    dx = _out(out, x.shape, x.dtype)
    _batch_norm_backward(grad, x3, contiguous(mean), contiguous(var),
                         _ones_if_none(weight, channels, x), as_float(eps, x),
                         _accumulator(grad_weight, channels, x),
                         _accumulator(grad_bias, channels, x), dx.reshape(x3.shape), training)
    return dx


def batch_norm_backward(grad, x, mean, var, weight, eps, grad_weight, grad_bias, out=None):
    return _bn_backward(grad, x, mean, var, weight, eps, grad_weight, grad_bias, out, True)


def batch_norm_backward_eval(grad, x, mean, var, weight, eps, grad_weight, grad_bias, out=None):
    return _bn_backward(grad, x, mean, var, weight, eps, grad_weight, grad_bias, out, False)


@njit(cache=True, fastmath=FASTMATH, error_model=ERROR_MODEL)
def _update_running(running_mean, running_var, mean, var, momentum, unbias):
    keep = running_mean.dtype.type(1) - momentum
    for c in range(running_mean.size):
        running_mean[c] = keep * running_mean[c] + momentum * mean[c]
        running_var[c] = keep * running_var[c] + momentum * (var[c] * unbias)


def batch_norm_update_running(running_mean, running_var, mean, var, momentum, count):
    if not (running_mean.flags.c_contiguous and running_var.flags.c_contiguous):
        raise ValueError("running statistics updated in place must be C-contiguous")
    _update_running(running_mean.reshape(-1), running_var.reshape(-1),
                    contiguous(mean).reshape(-1), contiguous(var).reshape(-1),
                    as_float(momentum, running_mean), as_float(count / (count - 1), running_mean))
    return running_mean, running_var
