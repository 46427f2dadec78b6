"""LayerNorm and BatchNorm kernels: block reductions for the statistics, then
one thread per element to normalise.

Statistics are sums of d = x - s and d^2 with s the first value being
normalised (as on the CPU, ``backend/cpu/norm.py``):

    mean = s + sum(d) / n,    var = sum(d^2) / n - (sum(d) / n)^2

so that |mean| >> std does not cancel away the variance. Each sum is a
block reduction (``_util.block_sum``): one block per row for LayerNorm, one
block per channel for BatchNorm (its N * L values x[:, c, :]).

LayerNorm's weight and bias gradients sum over rows, a column reduction:
one thread per feature walks a chunk of rows; chunks of the same features
in other blocks add in with atomics (as ``linalg.sum_rows``).

A missing weight / bias is passed to the kernels as ones / zeros, and a
missing gradient is skipped with a flag.
"""
import math

from numba import cuda

from ._util import (ROW_THREADS, THREADS, as_float, block_sum, contiguous, device_empty, flat,
                    launch, launch_flat, launch_rows, ones, out_like, scratch, updated_in_place,
                    zeros)
from .linalg import SUM_ROWS_CHUNK

__all__ = ["layer_norm_forward", "layer_norm_backward", "batch_norm_forward_train",
           "batch_norm_forward_eval", "batch_norm_backward", "batch_norm_backward_eval",
           "batch_norm_update_running"]


# --- helpers ------------------------------------------------------------------
def _ones_if_none(a, n, like):
    return ones(n, like.dtype) if a is None else flat(contiguous(a))


def _zeros_if_none(a, n, like):
    return zeros(n, like.dtype) if a is None else flat(contiguous(a))


def _accumulator(name, a, like):
    """(flat array a backward adds into, True), or (a stand-in, False) when ``a`` is None."""
    if a is None:
        return scratch(like.dtype), False
    return flat(updated_in_place(name, a)), True


def _as_ncl(x):
    """Contiguous x and its (N, C, L) view (an (N, C) input is (N, C, 1))."""
    x = contiguous(x)
    length = x.size // (x.shape[0] * x.shape[1]) if x.size else 1
    return x, x.reshape(x.shape[0], x.shape[1], length)


# --- LayerNorm ----------------------------------------------------------------
@cuda.jit
def _layer_norm_forward(x, weight, bias, eps, y, mean, rstd):
    buf = cuda.shared.array(ROW_THREADS, x.dtype)
    rows, features = x.shape
    zero, one = x.dtype.type(0), x.dtype.type(1)
    inv_n = one / x.dtype.type(features)
    for r in range(cuda.blockIdx.x, rows, cuda.gridDim.x):
        shift = x[r, 0]
        s1, s2 = zero, zero
        for f in range(cuda.threadIdx.x, features, cuda.blockDim.x):
            d = x[r, f] - shift
            s1 += d
            s2 += d * d
        m = block_sum(buf, s1) * inv_n
        var = block_sum(buf, s2) * inv_n - m * m
        if var < zero:  # rounding can leave a tiny negative
            var = zero
        mu = shift + m
        s = one / math.sqrt(var + eps)
        if cuda.threadIdx.x == 0:
            mean[r], rstd[r] = mu, s
        for f in range(cuda.threadIdx.x, features, cuda.blockDim.x):
            y[r, f] = (x[r, f] - mu) * (s * weight[f]) + bias[f]


def layer_norm_forward(x, weight, bias, eps, out=None, out_mean=None, out_rstd=None):
    x = contiguous(x)
    rows, features = x.shape
    y = out_like(out, x)
    mean = out_like(out_mean, x, shape=(rows,))
    rstd = out_like(out_rstd, x, shape=(rows,))
    if features:
        launch_rows(_layer_norm_forward, rows, x, _ones_if_none(weight, features, x),
                    _zeros_if_none(bias, features, x), as_float(eps, x), y, mean, rstd)
    return y, mean, rstd


@cuda.jit
def _layer_norm_backward_dx(grad, x, mean, rstd, weight, dx):
    buf = cuda.shared.array(ROW_THREADS, x.dtype)
    rows, features = x.shape
    zero = x.dtype.type(0)
    inv_n = x.dtype.type(1) / x.dtype.type(features)
    for r in range(cuda.blockIdx.x, rows, cuda.gridDim.x):
        mu, s = mean[r], rstd[r]
        # a = mean(g_hat), b = mean(g_hat * x_hat), g_hat = g * weight
        a, b = zero, zero
        for f in range(cuda.threadIdx.x, features, cuda.blockDim.x):
            g_hat = grad[r, f] * weight[f]
            a += g_hat
            b += g_hat * ((x[r, f] - mu) * s)
        a = block_sum(buf, a) * inv_n
        b = block_sum(buf, b) * inv_n
        for f in range(cuda.threadIdx.x, features, cuda.blockDim.x):
            x_hat = (x[r, f] - mu) * s
            dx[r, f] = s * (grad[r, f] * weight[f] - a - x_hat * b)


@cuda.jit
def _layer_norm_backward_params(grad, x, mean, rstd, grad_weight, has_weight, grad_bias,
                                has_bias, rows_per_block):
    # grad_weight[f] += sum_r g[r, f] x_hat[r, f];  grad_bias[f] += sum_r g[r, f]
    rows, features = x.shape
    f = cuda.grid(1)
    if f >= features:
        return
    start = cuda.blockIdx.y * rows_per_block
    stop = start + rows_per_block
    if stop > rows:
        stop = rows
    gw, gb = x.dtype.type(0), x.dtype.type(0)
    for r in range(start, stop):
        gw += grad[r, f] * ((x[r, f] - mean[r]) * rstd[r])
        gb += grad[r, f]
    if has_weight:
        cuda.atomic.add(grad_weight, f, gw)
    if has_bias:
        cuda.atomic.add(grad_bias, f, gb)


def layer_norm_backward(grad, x, mean, rstd, weight, grad_weight, grad_bias, out=None):
    grad, x = contiguous(grad), contiguous(x)
    rows, features = x.shape
    dx = out_like(out, x)
    mean, rstd = flat(contiguous(mean)), flat(contiguous(rstd))
    if not x.size:
        return dx
    launch_rows(_layer_norm_backward_dx, rows, grad, x, mean, rstd,
                _ones_if_none(weight, features, x), dx)
    grad_weight, has_weight = _accumulator("grad_weight", grad_weight, x)
    grad_bias, has_bias = _accumulator("grad_bias", grad_bias, x)
    if has_weight or has_bias:
        blocks = ((features + THREADS - 1) // THREADS,
                  (rows + SUM_ROWS_CHUNK - 1) // SUM_ROWS_CHUNK)
        launch(_layer_norm_backward_params, blocks, THREADS, grad, x, mean, rstd, grad_weight,
               has_weight, grad_bias, has_bias, SUM_ROWS_CHUNK)
    return dx


# --- BatchNorm ----------------------------------------------------------------
@cuda.jit
def _batch_stats(x, mean, var):
    """Per-channel mean and biased variance of x (N, C, L): one block per channel."""
    buf = cuda.shared.array(ROW_THREADS, x.dtype)
    n, channels, length = x.shape
    zero, one = x.dtype.type(0), x.dtype.type(1)
    count = n * length
    inv_m = one / x.dtype.type(count)
    for c in range(cuda.blockIdx.x, channels, cuda.gridDim.x):
        shift = x[0, c, 0]
        s1, s2 = zero, zero
        for e in range(cuda.threadIdx.x, count, cuda.blockDim.x):
            d = x[e // length, c, e % length] - shift
            s1 += d
            s2 += d * d
        m = block_sum(buf, s1) * inv_m
        v = block_sum(buf, s2) * inv_m - m * m
        if cuda.threadIdx.x == 0:
            mean[c] = shift + m
            var[c] = v if v > zero else zero


@cuda.jit
def _batch_normalize(x, mean, var, weight, bias, eps, channels, length, y):
    """y = (x - mean) * (weight / sqrt(var + eps)) + bias; x, y flat (N * C * L)."""
    one = x.dtype.type(1)
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        c = (i // length) % channels
        y[i] = (x[i] - mean[c]) * (weight[c] * (one / math.sqrt(var[c] + eps))) + bias[c]


def batch_norm_forward_train(x, weight, bias, eps, out=None, out_mean=None, out_var=None):
    x, x3 = _as_ncl(x)
    _, channels, length = x3.shape
    y = out_like(out, x)
    mean = out_like(out_mean, x, shape=(channels,))
    var = out_like(out_var, x, shape=(channels,))
    if x.size:
        launch_rows(_batch_stats, channels, x3, mean, var)
        launch_flat(_batch_normalize, x.size, flat(x), mean, var,
                    _ones_if_none(weight, channels, x), _zeros_if_none(bias, channels, x),
                    as_float(eps, x), channels, length, flat(y))
    return y, mean, var


def batch_norm_forward_eval(x, mean, var, weight, bias, eps, out=None):
    x, x3 = _as_ncl(x)
    _, channels, length = x3.shape
    y = out_like(out, x)
    launch_flat(_batch_normalize, x.size, flat(x), flat(contiguous(mean)), flat(contiguous(var)),
                _ones_if_none(weight, channels, x), _zeros_if_none(bias, channels, x),
                as_float(eps, x), channels, length, flat(y))
    return y


@cuda.jit
def _batch_norm_backward_sums(grad, x, mean, var, weight, eps, grad_weight, has_weight,
                              grad_bias, has_bias, training, factors):
    """Per channel (one block each): sum(g), sum(g * x_hat) -> the parameter gradients,
    and the factors of dx = k_g g - k_0 - k_x (x - mean) into factors[0:3, c]."""
    buf = cuda.shared.array(ROW_THREADS, x.dtype)
    n, channels, length = x.shape
    zero, one = x.dtype.type(0), x.dtype.type(1)
    count = n * length
    inv_m = one / x.dtype.type(count)
    for c in range(cuda.blockIdx.x, channels, cuda.gridDim.x):
        mu = mean[c]
        a, b = zero, zero
        for e in range(cuda.threadIdx.x, count, cuda.blockDim.x):
            g = grad[e // length, c, e % length]
            a += g
            b += g * (x[e // length, c, e % length] - mu)
        sum_g = block_sum(buf, a)
        sum_gd = block_sum(buf, b)
        if cuda.threadIdx.x == 0:
            rstd = one / math.sqrt(var[c] + eps)
            sum_gx = sum_gd * rstd
            if has_weight:
                grad_weight[c] += sum_gx
            if has_bias:
                grad_bias[c] += sum_g
            k_g = weight[c] * rstd
            factors[0, c] = k_g
            if training:  # the batch statistics depend on x: two more terms
                factors[1, c] = k_g * sum_g * inv_m
                factors[2, c] = k_g * rstd * sum_gx * inv_m
            else:
                factors[1, c] = zero
                factors[2, c] = zero


@cuda.jit
def _batch_norm_backward_dx(grad, x, mean, factors, channels, length, dx):
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        c = (i // length) % channels
        dx[i] = factors[0, c] * grad[i] - factors[1, c] - factors[2, c] * (x[i] - mean[c])


def _bn_backward(grad, x, mean, var, weight, eps, grad_weight, grad_bias, out, training):
    x, x3 = _as_ncl(x)
    _, channels, length = x3.shape
    grad = contiguous(grad)
    dx = out_like(out, x)
    if not x.size:
        return dx
    mean = flat(contiguous(mean))
    grad_weight, has_weight = _accumulator("grad_weight", grad_weight, x)
    grad_bias, has_bias = _accumulator("grad_bias", grad_bias, x)
    factors = device_empty((3, channels), x.dtype)
    launch_rows(_batch_norm_backward_sums, channels, grad.reshape(x3.shape), x3, mean,
                flat(contiguous(var)), _ones_if_none(weight, channels, x), as_float(eps, x),
                grad_weight, has_weight, grad_bias, has_bias, bool(training), factors)
    launch_flat(_batch_norm_backward_dx, x.size, flat(grad), flat(x), mean, factors, channels,
                length, flat(dx))
    return dx


def batch_norm_backward(grad, x, mean, var, weight, eps, grad_weight, grad_bias, out=None):
    return _bn_backward(grad, x, mean, var, weight, eps, grad_weight, grad_bias, out, True)


def batch_norm_backward_eval(grad, x, mean, var, weight, eps, grad_weight, grad_bias, out=None):
    return _bn_backward(grad, x, mean, var, weight, eps, grad_weight, grad_bias, out, False)


@cuda.jit
def _update_running(running_mean, running_var, mean, var, momentum, unbias):
    keep = running_mean.dtype.type(1) - momentum
    for c in range(cuda.grid(1), running_mean.size, cuda.gridsize(1)):
        running_mean[c] = keep * running_mean[c] + momentum * mean[c]
        running_var[c] = keep * running_var[c] + momentum * (var[c] * unbias)


def batch_norm_update_running(running_mean, running_var, mean, var, momentum, count):
    running_mean = updated_in_place("running_mean", running_mean)
    running_var = updated_in_place("running_var", running_var)
    launch_flat(_update_running, running_mean.size, flat(running_mean), flat(running_var),
                flat(contiguous(mean)), flat(contiguous(var)), as_float(momentum, running_mean),
                as_float(count / (count - 1), running_mean))
    return running_mean, running_var
