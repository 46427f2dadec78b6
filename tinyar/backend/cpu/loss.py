"""Loss kernels: cross-entropy (fused with log-softmax), NLL, MSE, BCE with logits.

The ops and their formulas are listed in ``backend/ops/loss.py``. Every
kernel is one serial loop; the cross-entropy ones read each row of logits
in one or two sweeps:

    forward:  max (vectorised ``maxnum``), then sum of exp(z - max)
              (+ a third sweep for the smoothing term when eps > 0)
    backward: one sweep: p = exp((z - max) - log_sum) -> gradient

Targets are assumed valid here: the layers check them (``check_targets``)
before calling, since an index outside [0, C) would read out of bounds.
"""
import numpy as np
from numba import njit

from ..scalar import loss as scalar_loss
from ._util import ERROR_MODEL, FASTMATH, as_float, contiguous, flat, out_like, scalar_function
from .fastmath import fast_exp
from .softmax import IN_ORDER, row_log_sum_exp

__all__ = ["cross_entropy_forward", "cross_entropy_backward", "nll_forward", "nll_backward",
           "mse_forward", "mse_backward", "bce_with_logits_forward", "bce_with_logits_backward"]


# --- cross-entropy over rows of logits ------------------------------------------
@njit(cache=True, fastmath=FASTMATH, error_model=ERROR_MODEL)
def _weighted_sum_shifted(row, weight, m):
    """sum_c w_c (z_c - m): from shifted logits (all <= 0), so nothing cancels."""
    total = row.dtype.type(0)
    for c in range(row.size):
        total += weight[c] * (row[c] - m)
    return total


@njit(cache=True, fastmath=IN_ORDER, error_model=ERROR_MODEL)
def _cross_entropy(logits, targets, weight, ignore_index, hit, spread, losses, maxes, log_sums):
    # hit = 1 - eps, spread = eps / C; -log p_c = log_s - (z_c - m)
    total_weight = weight.sum()
    for r in range(logits.shape[0]):
        row = logits[r]
        m, log_s = row_log_sum_exp(row)
        maxes[r], log_sums[r] = m, log_s
        t = targets[r]
        if t == ignore_index:
            losses[r] = 0
            continue
        loss = hit * weight[t] * (log_s - (row[t] - m))
        if spread != 0:  # + eps/C sum_c w_c (-log p_c)
            loss += spread * (total_weight * log_s - _weighted_sum_shifted(row, weight, m))
        losses[r] = loss


@njit(cache=True, fastmath=IN_ORDER, error_model=ERROR_MODEL)
def _cross_entropy_grad(logits, maxes, log_sums, targets, row_scale, weight, ignore_index, hit,
                        spread, out):
    total_weight = weight.sum()
    for r in range(logits.shape[0]):
        row, g = logits[r], out[r]
        m, log_s = maxes[r], log_sums[r]
        t = targets[r]
        if t == ignore_index:
            g[:] = 0
            continue
        k = row_scale[r]
        a = k * (hit * weight[t] + spread * total_weight)  # coefficient of p_c
        if spread != 0:
            b = k * spread
            for c in range(row.size):
                g[c] = a * fast_exp((row[c] - m) - log_s) - b * weight[c]
        else:
            for c in range(row.size):
                g[c] = a * fast_exp((row[c] - m) - log_s)
        g[t] -= k * hit * weight[t]


def _class_weight(weight, classes, like):
    if weight is None:
        return np.ones(classes, like.dtype)
    return contiguous(weight)


def _int64(targets):
    return np.ascontiguousarray(targets, dtype=np.int64)


def _rows_out(out, rows, like):
    return np.empty(rows, like.dtype) if out is None else out


def cross_entropy_forward(logits, targets, weight=None, ignore_index=-100, label_smoothing=0.0,
                          out_losses=None, out_max=None, out_log_sum=None):
    logits = contiguous(logits)
    rows, classes = logits.shape
    losses = _rows_out(out_losses, rows, logits)
    row_max, log_sum = _rows_out(out_max, rows, logits), _rows_out(out_log_sum, rows, logits)
    if logits.size:
        eps = float(label_smoothing)
        _cross_entropy(logits, _int64(targets), _class_weight(weight, classes, logits),
                       int(ignore_index), as_float(1 - eps, logits),
                       as_float(eps / classes, logits), losses, row_max, log_sum)
    return losses, row_max, log_sum


def cross_entropy_backward(logits, row_max, log_sum, targets, row_scale, weight=None,
                           ignore_index=-100, label_smoothing=0.0, out=None):
    logits = contiguous(logits)
    rows, classes = logits.shape
    out = out_like(out, logits)
    if logits.size:
        eps = float(label_smoothing)
        _cross_entropy_grad(logits, contiguous(row_max), contiguous(log_sum), _int64(targets),
                            contiguous(row_scale), _class_weight(weight, classes, logits),
                            int(ignore_index), as_float(1 - eps, logits),
                            as_float(eps / classes, logits), out)
    return out


# --- negative log-likelihood over rows of log-probabilities ---------------------
@njit(cache=True, fastmath=FASTMATH, error_model=ERROR_MODEL)
def _nll(logprobs, targets, weight, ignore_index, losses):
    for r in range(logprobs.shape[0]):
        t = targets[r]
        if t == ignore_index:
            losses[r] = 0
        else:
            losses[r] = -weight[t] * logprobs[r, t]


@njit(cache=True, fastmath=FASTMATH, error_model=ERROR_MODEL)
def _nll_grad(targets, row_scale, weight, ignore_index, out):
    out[:] = 0
    for r in range(out.shape[0]):
        t = targets[r]
        if t != ignore_index:
            out[r, t] = -row_scale[r] * weight[t]


def nll_forward(logprobs, targets, weight=None, ignore_index=-100, out=None):
    logprobs = contiguous(logprobs)
    rows, classes = logprobs.shape
    out = _rows_out(out, rows, logprobs)
    _nll(logprobs, _int64(targets), _class_weight(weight, classes, logprobs), int(ignore_index),
         out)
    return out


def nll_backward(targets, row_scale, num_classes, weight=None, ignore_index=-100, out=None):
    row_scale = contiguous(row_scale)
    if out is None:
        out = np.empty((row_scale.shape[0], int(num_classes)), row_scale.dtype)
    _nll_grad(_int64(targets), row_scale, _class_weight(weight, num_classes, row_scale),
              int(ignore_index), out)
    return out


# --- elementwise losses: mean squared error, binary cross-entropy with logits ---
# One element of each: backend/scalar/loss.py, shared with CUDA.
_squared_error = scalar_function(scalar_loss.squared_error)
_squared_error_backward = scalar_function(scalar_loss.squared_error_backward)
_bce_with_logits = scalar_function(scalar_loss.bce_with_logits)
_bce_with_logits_backward = scalar_function(scalar_loss.bce_with_logits_backward)


@njit(cache=True, fastmath=FASTMATH, error_model=ERROR_MODEL)
def _mse(x, t, out):
    for i in range(x.size):
        out[i] = _squared_error(x[i], t[i])


@njit(cache=True, fastmath=FASTMATH, error_model=ERROR_MODEL)
def _mse_grad(x, t, grad, has_grad, two_scale, out):
    for i in range(x.size):
        g = grad[i] if has_grad else x.dtype.type(1)
        out[i] = _squared_error_backward(g, x[i], t[i], two_scale)


@njit(cache=True, fastmath=FASTMATH, error_model=ERROR_MODEL)
def _bce(x, t, pos_weight, out):
    # rows of (pos_weight.size,): pos_weight broadcasts along the last axis
    one, zero = x.dtype.type(1), x.dtype.type(0)
    for r in range(x.shape[0]):
        for c in range(x.shape[1]):
            out[r, c] = _bce_with_logits(x[r, c], t[r, c], pos_weight[c], one, zero)


@njit(cache=True, fastmath=FASTMATH, error_model=ERROR_MODEL)
def _bce_grad(x, t, pos_weight, grad, has_grad, scale, out):
    one = x.dtype.type(1)
    for r in range(x.shape[0]):
        for c in range(x.shape[1]):
            g = grad[r, c] if has_grad else one
            out[r, c] = _bce_with_logits_backward(g, x[r, c], t[r, c], pos_weight[c], scale,
                                                  one)


def _upstream(grad, like):
    """(grad as a contiguous array, True), or (a stand-in never read, False) when
    there is no upstream array (the kernel multiplies by 1)."""
    return (like, False) if grad is None else (contiguous(grad), True)


def mse_forward(input, target, out=None):
    x, t = contiguous(input), contiguous(target)
    out = out_like(out, x)
    _mse(flat(x), flat(t), flat(out))
    return out


def mse_backward(input, target, grad=None, scale=1.0, out=None):
    x, t = contiguous(input), contiguous(target)
    out = out_like(out, x)
    grad, has_grad = _upstream(grad, x)
    _mse_grad(flat(x), flat(t), flat(grad), has_grad, as_float(2 * scale, x), flat(out))
    return out


def _as_rows(x, pos_weight):
    """x as (rows, K) with K its last axis, and pos_weight as (K,) (ones when None)."""
    k = x.shape[-1] if x.ndim else 1
    if pos_weight is None:
        pos_weight = np.ones(k, x.dtype)
    elif pos_weight.size == 1:
        pos_weight = np.full(k, pos_weight.reshape(-1)[0], x.dtype)
    return x.reshape(-1, k), contiguous(pos_weight.reshape(-1))


def bce_with_logits_forward(input, target, pos_weight=None, out=None):
    x, t = contiguous(input), contiguous(target)
    out = out_like(out, x)
    if x.size:
        x2, pw = _as_rows(x, pos_weight)
        _bce(x2, t.reshape(x2.shape), pw, out.reshape(x2.shape))
    return out


def bce_with_logits_backward(input, target, grad=None, scale=1.0, pos_weight=None, out=None):
    x, t = contiguous(input), contiguous(target)
    out = out_like(out, x)
    if x.size:
        x2, pw = _as_rows(x, pos_weight)
        grad, has_grad = _upstream(grad, x)
        _bce_grad(x2, t.reshape(x2.shape), pw, grad.reshape(x2.shape), has_grad, as_float(scale, x),
                  out.reshape(x2.shape))
    return out
