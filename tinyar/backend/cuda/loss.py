"""Loss kernels: cross-entropy (fused with log-softmax), NLL, MSE, BCE with logits.

The ops and their formulas are listed in ``backend/ops/loss.py``.

Cross-entropy works like the softmax (``softmax.py``): one block per row of
logits, whose threads reduce the row max and the sum of exp(z - max) in
shared memory; thread 0 writes the row's loss. With label smoothing two
more block sums give sum_c w_c and sum_c w_c (z_c - m). The backward needs
no reduction (except sum_c w_c when smoothing): each thread writes
dz_c = a p_c - b w_c for its classes, with p_c = exp((z_c - m) - log_sum)
recomputed from the forward's two numbers per row, and the thread that
holds the target class subtracts its one-hot term.

NLL, MSE and BCE are elementwise: one thread per row or element.

Targets may be host or device integer arrays (a host array is copied over);
the layers check their range before calling (``check_targets``): a kernel
cannot raise, and an index outside [0, C) would read outside the row.
"""
import math

import numpy as np
from numba import cuda

from ..scalar import loss as scalar_loss
from ._util import (ROW_THREADS, as_float, block_sum, contiguous, device, flat, launch_flat,
                    launch_rows, ones, out_like, scalar_function)
from .softmax import row_log_sum_exp

__all__ = ["cross_entropy_forward", "cross_entropy_backward", "nll_forward", "nll_backward",
           "mse_forward", "mse_backward", "bce_with_logits_forward", "bce_with_logits_backward"]


# --- cross-entropy over rows of logits ------------------------------------------
@cuda.jit
def _cross_entropy(logits, targets, weight, ignore_index, hit, spread, losses, maxes, log_sums):
    # hit = 1 - eps, spread = eps / C; -log p_c = log_s - (z_c - m)
    buf = cuda.shared.array(ROW_THREADS, logits.dtype)
    zero = logits.dtype.type(0)
    classes = logits.shape[1]
    for r in range(cuda.blockIdx.x, logits.shape[0], cuda.gridDim.x):
        m, log_s = row_log_sum_exp(buf, logits, r)
        smooth = zero
        if spread != zero:
            # eps/C sum_c w_c (-log p_c) = eps/C (log_s sum_c w_c - sum_c w_c (z_c - m))
            sw, swz = zero, zero
            for c in range(cuda.threadIdx.x, classes, cuda.blockDim.x):
                sw += weight[c]
                swz += weight[c] * (logits[r, c] - m)
            sw = block_sum(buf, sw)
            swz = block_sum(buf, swz)
            smooth = spread * (sw * log_s - swz)
        if cuda.threadIdx.x == 0:
            maxes[r], log_sums[r] = m, log_s
            t = targets[r]
            if t == ignore_index:
                losses[r] = zero
            else:
                losses[r] = hit * weight[t] * (log_s - (logits[r, t] - m)) + smooth


@cuda.jit
def _cross_entropy_grad(logits, maxes, log_sums, targets, row_scale, weight, ignore_index, hit,
                        spread, out):
    buf = cuda.shared.array(ROW_THREADS, logits.dtype)
    zero = logits.dtype.type(0)
    classes = logits.shape[1]
    for r in range(cuda.blockIdx.x, logits.shape[0], cuda.gridDim.x):
        total_weight = zero
        if spread != zero:
            for c in range(cuda.threadIdx.x, classes, cuda.blockDim.x):
                total_weight += weight[c]
            total_weight = block_sum(buf, total_weight)
        t = targets[r]
        if t == ignore_index:
            for c in range(cuda.threadIdx.x, classes, cuda.blockDim.x):
                out[r, c] = zero
            continue
        m, log_s, k = maxes[r], log_sums[r], row_scale[r]
        a = k * (hit * weight[t] + spread * total_weight)  # coefficient of p_c
        b = k * spread
        for c in range(cuda.threadIdx.x, classes, cuda.blockDim.x):
            g = a * math.exp((logits[r, c] - m) - log_s) - b * weight[c]
            if c == t:
                g -= k * hit * weight[t]
            out[r, c] = g


def _class_weight(weight, classes, like):
    return ones(classes, like.dtype) if weight is None else contiguous(weight)


def _targets(targets, classes=None):
    """Targets as a flat int64 device array (host targets are copied over)."""
    if isinstance(targets, np.ndarray) or not hasattr(targets, "__cuda_array_interface__"):
        return device(np.ascontiguousarray(targets, dtype=np.int64).reshape(-1))
    targets = contiguous(targets)
    if targets.dtype not in (np.int32, np.int64):
        raise TypeError(f"expected integer targets (int32 or int64), got {targets.dtype.name}")
    return flat(targets)


def _rows_out(out, rows, like):
    return out_like(out, like, shape=(rows,))


def cross_entropy_forward(logits, targets, weight=None, ignore_index=-100, label_smoothing=0.0,
                          out_losses=None, out_max=None, out_log_sum=None):
    logits = contiguous(logits)
    rows, classes = logits.shape
    losses = _rows_out(out_losses, rows, logits)
    row_max, log_sum = _rows_out(out_max, rows, logits), _rows_out(out_log_sum, rows, logits)
    if logits.size:
        eps = float(label_smoothing)
        launch_rows(_cross_entropy, rows, logits, _targets(targets),
                    _class_weight(weight, classes, logits), int(ignore_index),
                    as_float(1 - eps, logits), as_float(eps / classes, logits), losses, row_max,
                    log_sum)
    return losses, row_max, log_sum


def cross_entropy_backward(logits, row_max, log_sum, targets, row_scale, weight=None,
                           ignore_index=-100, label_smoothing=0.0, out=None):
    logits = contiguous(logits)
    rows, classes = logits.shape
    out = out_like(out, logits)
    if logits.size:
        eps = float(label_smoothing)
        launch_rows(_cross_entropy_grad, rows, logits, flat(contiguous(row_max)),
                    flat(contiguous(log_sum)), _targets(targets), flat(contiguous(row_scale)),
                    _class_weight(weight, classes, logits), int(ignore_index),
                    as_float(1 - eps, logits), as_float(eps / classes, logits), out)
    return out


# --- negative log-likelihood over rows of log-probabilities ---------------------
@cuda.jit
def _nll(logprobs, targets, weight, ignore_index, losses):
    for r in range(cuda.grid(1), losses.size, cuda.gridsize(1)):
        t = targets[r]
        if t == ignore_index:
            losses[r] = logprobs.dtype.type(0)
        else:
            losses[r] = -weight[t] * logprobs[r, t]


@cuda.jit
def _nll_grad(targets, row_scale, weight, ignore_index, classes, out):
    # one thread per entry of out (R, C), flat: -row_scale_r w_t at the target, 0 elsewhere
    for i in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        r, c = i // classes, i % classes
        t = targets[r]
        if c == t and t != ignore_index:
            out[i] = -row_scale[r] * weight[t]
        else:
            out[i] = row_scale.dtype.type(0)


def nll_forward(logprobs, targets, weight=None, ignore_index=-100, out=None):
    logprobs = contiguous(logprobs)
    rows, classes = logprobs.shape
    out = _rows_out(out, rows, logprobs)
    launch_flat(_nll, rows, logprobs, _targets(targets), _class_weight(weight, classes, logprobs),
                int(ignore_index), out)
    return out


def nll_backward(targets, row_scale, num_classes, weight=None, ignore_index=-100, out=None):
    row_scale = flat(contiguous(row_scale))
    out = out_like(out, row_scale, shape=(row_scale.size, int(num_classes)))
    launch_flat(_nll_grad, out.size, _targets(targets), row_scale,
                _class_weight(weight, num_classes, row_scale), int(ignore_index),
                int(num_classes), flat(out))
    return out


# --- elementwise losses: mean squared error, binary cross-entropy with logits ---
# One element of each: backend/scalar/loss.py, shared with the CPU.
_squared_error = scalar_function(scalar_loss.squared_error)
_squared_error_backward = scalar_function(scalar_loss.squared_error_backward)
_bce_with_logits = scalar_function(scalar_loss.bce_with_logits)
_bce_with_logits_backward = scalar_function(scalar_loss.bce_with_logits_backward)


@cuda.jit
def _mse(x, t, out):
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        out[i] = _squared_error(x[i], t[i])


@cuda.jit
def _mse_grad(x, t, grad, has_grad, two_scale, out):
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        g = grad[i] if has_grad else x.dtype.type(1)
        out[i] = _squared_error_backward(g, x[i], t[i], two_scale)


@cuda.jit
def _bce(x, t, pos_weight, out):
    # pos_weight (K,) broadcasts along the last axis: element i uses pos_weight[i % K]
    one, zero = x.dtype.type(1), x.dtype.type(0)
    k = pos_weight.size
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        out[i] = _bce_with_logits(x[i], t[i], pos_weight[i % k], one, zero)


@cuda.jit
def _bce_grad(x, t, pos_weight, grad, has_grad, scale, out):
    one = x.dtype.type(1)
    k = pos_weight.size
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        g = grad[i] if has_grad else one
        out[i] = _bce_with_logits_backward(g, x[i], t[i], pos_weight[i % k], scale, one)


def _pair(input, target):
    x, t = contiguous(input), contiguous(target)
    if tuple(x.shape) != tuple(t.shape):
        raise ValueError(f"input {tuple(x.shape)} and target {tuple(t.shape)} differ")
    return x, t


def _upstream(grad, like):
    """(grad as a flat contiguous array, True), or (a stand-in never read, False) when
    there is no upstream array (the kernel multiplies by 1)."""
    return (flat(like), False) if grad is None else (flat(contiguous(grad)), True)


def _pos_weight(pos_weight, x):
    """pos_weight as (K,), K = x's last axis (ones when None; a (1,) weight is repeated)."""
    k = x.shape[-1] if x.ndim else 1
    if pos_weight is None:
        return ones(k, x.dtype)
    pos_weight = flat(contiguous(pos_weight))
    if pos_weight.size == 1 and k != 1:
        value = pos_weight.copy_to_host()[0]
        return device(np.full(k, value, x.dtype))
    return pos_weight


def mse_forward(input, target, out=None):
    x, t = _pair(input, target)
    out = out_like(out, x)
    launch_flat(_mse, x.size, flat(x), flat(t), flat(out))
    return out


def mse_backward(input, target, grad=None, scale=1.0, out=None):
    x, t = _pair(input, target)
    out = out_like(out, x)
    grad, has_grad = _upstream(grad, x)
    launch_flat(_mse_grad, x.size, flat(x), flat(t), grad, has_grad, as_float(2 * scale, x),
                flat(out))
    return out


def bce_with_logits_forward(input, target, pos_weight=None, out=None):
    x, t = _pair(input, target)
    out = out_like(out, x)
    if x.size:
        launch_flat(_bce, x.size, flat(x), flat(t), _pos_weight(pos_weight, x), flat(out))
    return out


def bce_with_logits_backward(input, target, grad=None, scale=1.0, pos_weight=None, out=None):
    x, t = _pair(input, target)
    out = out_like(out, x)
    if x.size:
        grad, has_grad = _upstream(grad, x)
        launch_flat(_bce_grad, x.size, flat(x), flat(t), _pos_weight(pos_weight, x), grad,
                    has_grad, as_float(scale, x), flat(out))
    return out
