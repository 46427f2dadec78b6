"""Losses: per-row or per-element loss values, and their gradients.

The ops return unreduced losses; the loss layers (``nn/loss.py``) sum them
and fold the reduction ('mean', 'sum', 'none') and the upstream gradient
into the scale a backward op multiplies by.

Class-index losses work on (R, C) rows with integer ``targets`` (R,) (int64
in the kernels; the CPU wrappers convert other integer dtypes). A row whose
target equals ``ignore_index`` has loss 0 and gradient 0. ``weight`` (C,)
rescales each class (None: all 1), as in ``torch.nn.CrossEntropyLoss``.

Cross-entropy with label smoothing eps, p = softmax(z), row target t:

    loss = (1 - eps) w_t (-log p_t) + (eps / C) sum_c w_c (-log p_c)
    dloss/dz_c = ((1 - eps) w_t + (eps / C) sum_k w_k) p_c - (1 - eps) w_t [c = t] - (eps / C) w_c

which for w = 1 is softmax minus the smoothed one-hot, p_c - ((1 - eps)[c = t] + eps / C).
The forward saves only two numbers per row, the row max m and
log_sum = log sum_c exp(z_c - m), so that log p_c = (z_c - m) - log_sum:
backward recomputes p from the logits, which costs one exp per logit and
saves writing an (R, C) array of log-probabilities.
"""
import numpy as np

from . import op

IGNORE = -100


def _targets(rng, rows, classes):
    t = rng.integers(0, classes, rows)
    t[1] = IGNORE
    return t


def _class_weight(rng, dtype, classes):
    return rng.uniform(0.5, 2.0, classes).astype(dtype)


def _ce_example(rng, dtype, rows=6, classes=7):
    logits = rng.standard_normal((rows, classes)) * 3
    logits[0] += 200  # a large common offset: only a max-shifted log-sum-exp survives it
    return dict(logits=logits.astype(dtype), targets=_targets(rng, rows, classes),
                weight=_class_weight(rng, dtype, classes), ignore_index=IGNORE,
                label_smoothing=0.1)


def _log_softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def _weights(weight, classes, like):
    return np.ones(classes, like.dtype) if weight is None else weight


def _smoothed_loss(logp, targets, weight, ignore_index, label_smoothing):
    rows, classes = logp.shape
    w = _weights(weight, classes, logp)
    keep = targets != ignore_index
    t = np.where(keep, targets, 0)
    nll = -w[t] * logp[np.arange(rows), t]
    smooth = -(logp * w).sum(axis=1)
    eps = label_smoothing
    return np.where(keep, (1 - eps) * nll + (eps / classes) * smooth, 0).astype(logp.dtype)


@op("logits: (R, C), targets: (R,) int, weight: (C,) or None; "
    "returns losses (R,), row_max (R,), log_sum (R,)", example=_ce_example)
def cross_entropy_forward(logits, targets, weight=None, ignore_index=IGNORE, label_smoothing=0.0,
                          out_losses=None, out_max=None, out_log_sum=None):
    """Per-row cross-entropy of softmax(logits) with label smoothing; 0 for ignored rows.

    Also returns what backward needs: row_max m and log_sum = log sum_c exp(z_c - m)
    (log p_c = (z_c - m) - log_sum; kept apart, not as m + log_sum, because
    rounding that sum in float32 would cost accuracy when the logits are large).
    """
    m = logits.max(axis=1)
    log_sum = np.log(np.exp(logits - m[:, None]).sum(axis=1))
    logp = (logits - m[:, None]) - log_sum[:, None]
    losses = _smoothed_loss(logp, targets, weight, ignore_index, label_smoothing)
    return losses, m, log_sum


def _ce_backward_example(rng, dtype):
    args = _ce_example(rng, dtype)
    _, m, log_sum = cross_entropy_forward(**args)
    args.update(row_max=m.astype(dtype), log_sum=log_sum.astype(dtype),
                row_scale=rng.uniform(0.1, 2.0, 6).astype(dtype))
    return args


@op("logits: (R, C), row_max, log_sum: (R,) from the forward, targets: (R,) int, "
    "row_scale: (R,), weight: (C,) or None; out: (R, C)", example=_ce_backward_example)
def cross_entropy_backward(logits, row_max, log_sum, targets, row_scale, weight=None,
                           ignore_index=IGNORE, label_smoothing=0.0, out=None):
    """dL/dlogits = row_scale * dloss/dlogits (formula above); 0 for ignored rows."""
    rows, classes = logits.shape
    w = _weights(weight, classes, logits)
    eps = label_smoothing
    keep = targets != ignore_index
    t = np.where(keep, targets, 0)
    w_t = w[t]
    p = np.exp((logits - row_max[:, None]) - log_sum[:, None])
    grad = ((1 - eps) * w_t + eps / classes * w.sum())[:, None] * p - eps / classes * w
    grad[np.arange(rows), t] -= (1 - eps) * w_t
    return (grad * (row_scale * keep)[:, None]).astype(logits.dtype)


def _nll_example(rng, dtype, rows=6, classes=7):
    return dict(logprobs=_log_softmax(rng.standard_normal((rows, classes))).astype(dtype),
                targets=_targets(rng, rows, classes), weight=_class_weight(rng, dtype, classes),
                ignore_index=IGNORE)


@op("logprobs: (R, C), targets: (R,) int, weight: (C,) or None; out: (R,)",
    example=_nll_example)
def nll_forward(logprobs, targets, weight=None, ignore_index=IGNORE, out=None):
    """losses_r = -w[t_r] logprobs[r, t_r]; 0 for ignored rows."""
    return _smoothed_loss(logprobs, targets, weight, ignore_index, 0.0)


@op("targets: (R,) int, row_scale: (R,), weight: (C,) or None; out: (R, num_classes)",
    example=lambda rng, dtype: dict(targets=_targets(rng, 6, 7), num_classes=7,
                                    row_scale=rng.uniform(0.1, 2.0, 6).astype(dtype),
                                    weight=_class_weight(rng, dtype, 7), ignore_index=IGNORE))
def nll_backward(targets, row_scale, num_classes, weight=None, ignore_index=IGNORE, out=None):
    """out[r, t_r] = -row_scale_r w[t_r]; every other entry (and ignored rows) 0."""
    rows = targets.shape[0]
    w = _weights(weight, num_classes, row_scale)
    keep = targets != ignore_index
    t = np.where(keep, targets, 0)
    grad = np.zeros((rows, num_classes), row_scale.dtype)
    grad[np.arange(rows), t] = np.where(keep, -row_scale * w[t], 0)
    return grad


def _pair(rng, dtype, shape=(4, 3, 5)):
    return dict(input=(rng.standard_normal(shape) * 3).astype(dtype),
                target=rng.standard_normal(shape).astype(dtype))


@op("input, target: any shape, same; out: like input", example=_pair)
def mse_forward(input, target, out=None):
    """(input - target)^2 elementwise."""
    return (input - target) ** 2


@op("input, target, grad: any shape, same (grad None: 1); out: like input",
    example=lambda rng, dtype: dict(**_pair(rng, dtype), scale=0.25,
                                    grad=rng.standard_normal((4, 3, 5)).astype(dtype)))
def mse_backward(input, target, grad=None, scale=1.0, out=None):
    """2 (input - target) * grad * scale."""
    g = 1 if grad is None else grad
    return 2 * (input - target) * g * scale


def _bce_example(rng, dtype, shape=(4, 3, 5)):
    return dict(input=(rng.standard_normal(shape) * 4).astype(dtype),
                target=rng.uniform(0, 1, shape).astype(dtype),
                pos_weight=rng.uniform(0.5, 3.0, shape[-1]).astype(dtype))


def _log_weight(target, pos_weight):
    return 1 if pos_weight is None else 1 + (pos_weight - 1) * target


@op("input (logits), target in [0, 1]: any shape, same; pos_weight: (input.shape[-1],) or (1,) "
    "or None; out: like input", example=_bce_example)
def bce_with_logits_forward(input, target, pos_weight=None, out=None):
    """(1 - t) x + (1 + (pw - 1) t) softplus(-x), softplus(-x) = log1p(exp(-|x|)) + max(-x, 0);
    with pw = 1: max(x, 0) - x t + log1p(exp(-|x|))."""
    softplus_neg = np.log1p(np.exp(-np.abs(input))) + np.maximum(-input, 0)
    return (1 - target) * input + _log_weight(target, pos_weight) * softplus_neg


@op("input, target, grad: any shape, same (grad None: 1); pos_weight as in the forward; "
    "out: like input",
    example=lambda rng, dtype: dict(**_bce_example(rng, dtype), scale=0.25,
                                    grad=rng.standard_normal((4, 3, 5)).astype(dtype)))
def bce_with_logits_backward(input, target, grad=None, scale=1.0, pos_weight=None, out=None):
    """((1 - t) - (1 + (pw - 1) t) sigmoid(-x)) * grad * scale; with pw = 1: sigmoid(x) - t."""
    g = 1 if grad is None else grad
    sigmoid_neg = 1 / (1 + np.exp(input))
    return ((1 - target) - _log_weight(target, pos_weight) * sigmoid_neg) * g * scale
