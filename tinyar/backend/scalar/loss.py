"""The elementwise losses for one element: the bodies of the MSE and
binary-cross-entropy kernels of ``cpu/loss.py`` and ``cuda/loss.py``.
(The cross-entropy and NLL losses reduce over rows; their row loops are
written per device.)"""
import math

from .functions import exp, sigmoid


def squared_error(x, t):
    d = x - t
    return d * d


def squared_error_backward(g, x, t, two_scale):
    """scale * dL/dx of (x - t)^2 = 2 scale g (x - t)."""
    return two_scale * g * (x - t)


def bce_with_logits(v, y, pos_weight, one, zero):
    """(1 - y) v + (1 + (pw - 1) y) softplus(-v): binary cross-entropy of the logit v
    against the target y, with softplus(-v) = log(1 + e^-v) computed without overflow
    for either sign of v."""
    log_weight = one + (pos_weight - one) * y
    softplus_neg = math.log1p(exp(-abs(v))) + (-v if v < zero else zero)
    return (one - y) * v + log_weight * softplus_neg


def bce_with_logits_backward(g, v, y, pos_weight, scale, one):
    """scale * g * dL/dv = scale g ((1 - y) - (1 + (pw - 1) y) sigmoid(-v))."""
    log_weight = one + (pos_weight - one) * y
    return scale * g * ((one - y) - log_weight * sigmoid(-v, one))
