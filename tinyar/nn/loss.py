"""Losses: ``CrossEntropyLoss``, ``NLLLoss``, ``MSELoss``, ``BCEWithLogitsLoss``.

A loss is a Module with

    forward(input, target) -> the loss: a Python float for reduction 'mean' or
                              'sum', an array of per-target losses for 'none'
    backward(grad=1.0)     -> dL/d(input); grad = dL/d(loss): a number for
                              'mean'/'sum', an array of the 'none' output's shape

Semantics follow ``torch.nn`` (ignore_index, label_smoothing, class weights,
pos_weight, the divisor of 'mean'), with one deliberate difference: a NaN
or infinite loss raises ``NumericalError`` where torch returns nan, and so
does a 'mean' over zero targets (all ignored, or an empty batch).

The kernels return unreduced losses (one per row or element); the reduction
is folded into the scale the backward kernels multiply by:

    'sum':  dL/dloss_i = grad          'mean': dL/dloss_i = grad / divisor
    'none': dL/dloss_i = grad_i

On a GPU the losses stay device arrays; what crosses to the host is the
loss value (a Python float, the sum of the per-row losses) and, for 'mean'
over class indices, the targets and class weights the divisor is counted
from (targets usually live on the host anyway: data loaders make them there).
"""
import numpy as np

from ..backend import backend_of
from ..device import to_host
from ..errors import ConfigError, NumericalError, ShapeError
from .checks import (check_choice, check_finite_loss, check_float_input, check_int, check_real,
                     check_same_shape, check_shape, check_targets, describe)
from .module import Module

REDUCTIONS = ("mean", "sum", "none")


def _class_weights(owner, name, weight):
    """A loss's per-class weights as a floating array: real numbers, finite and >= 0 (a
    negative or NaN weight would make the loss meaningless, silently)."""
    array = np.array(weight)
    if array.dtype.kind not in "fiu":
        raise ConfigError(f"{owner}: {name} must hold real numbers, got dtype {array.dtype}")
    if not np.issubdtype(array.dtype, np.floating):
        array = array.astype(np.float32)
    if array.size and not (np.isfinite(array).all() and array.min() >= 0):
        raise ConfigError(f"{owner}: {name} must be finite and >= 0, got {weight!r}")
    return array


class _Loss(Module):
    """Reduction handling shared by every loss."""

    def __init__(self, reduction="mean"):
        super().__init__()
        self.reduction = check_choice(type(self).__name__, "reduction", reduction, REDUCTIONS)

    def extra_repr(self):
        return f"reduction={self.reduction!r}"

    def check_buffer(self, name, value):
        """Loaded class weights (``weight``, ``pos_weight``) must be >= 0, as given ones."""
        if value.size and value.min() < 0:
            return f"holds {value.min()}; a loss weight is >= 0"
        return None

    def _reduce(self, losses, divisor, shape):
        """The forward's result from the unreduced ``losses``; 'mean' divides by ``divisor``."""
        total = float(np.sum(backend_of(losses).to_host(losses), dtype=np.float64))
        check_finite_loss(self, total)
        self._divisor, self._loss_shape = divisor, tuple(shape)
        if self.reduction == "none":
            return losses.reshape(shape)
        if self.reduction == "sum":
            return total
        if divisor == 0:
            raise NumericalError(f"{describe(self)}: 'mean' over zero targets is undefined (an "
                                 f"empty batch, or every target is ignore_index / has weight 0)")
        return total / divisor

    def _upstream(self, grad, like):
        """(scale, per-loss gradient or None): dL/dloss_i = scale * (grad_i or 1)."""
        if self.reduction != "none":
            if np.ndim(grad) != 0:
                raise ShapeError(f"{describe(self)}: expected grad as a number for reduction "
                                 f"{self.reduction!r}, got shape {np.shape(grad)}")
            scale = float(grad)
            return (scale / self._divisor if self.reduction == "mean" else scale), None
        if not hasattr(grad, "shape"):
            grad = np.asarray(grad)  # a number, for a loss of shape ()
        if tuple(grad.shape) != self._loss_shape:
            raise ShapeError(f"{describe(self)}: expected grad of the loss's shape "
                             f"{self._loss_shape}, got {tuple(grad.shape)}")
        return 1.0, backend_of(like).asarray(grad, dtype=like.dtype)


class _ClassIndexLoss(_Loss):
    """Scores over classes with integer targets, shaped as in torch:

        input (N, C)            target (N,)
        input (N, C, d1, ...)   target (N, d1, ...)    (class axis moved last)
        input (C,)              target ()              (one sample)

    The kernels see rows: input (R, C), target (R,).
    """

    def __init__(self, weight=None, ignore_index=-100, reduction="mean"):
        super().__init__(reduction)
        name = type(self).__name__
        self.ignore_index = check_int(name, "ignore_index", ignore_index, low=-2**62,
                                      high=2**62)
        if weight is None:
            self.weight = None
        else:
            weight = _class_weights(name, "weight", weight)
            if weight.ndim != 1:
                raise ShapeError(f"{type(self).__name__}: expected weight (C,), one per class, "
                                 f"got {weight.shape}")
            self.register_buffer("weight", weight)  # torch's buffer name

    def extra_repr(self):
        return f"ignore_index={self.ignore_index}, reduction={self.reduction!r}"

    def _rows(self, input, target):
        """Check the call; input as (R, C) rows, target as (R,)."""
        weight = self.weight
        check_float_input(self, input, None if weight is None else weight.dtype)
        check_shape(self, input, "(N, C, d1, ...) or (C,)", min_ndim=1)
        classes = input.shape[0] if input.ndim == 1 else input.shape[1]
        if weight is not None and weight.shape != (classes,):
            raise ShapeError(f"{describe(self)}: expected input with {weight.shape[0]} classes "
                             f"(the weight's), got {tuple(input.shape)}")
        check_targets(self, target, classes, self.ignore_index)
        expected = () if input.ndim == 1 else (input.shape[0],) + tuple(input.shape[2:])
        if tuple(target.shape) != expected:
            raise ShapeError(f"{describe(self)}: expected target {expected} for input "
                             f"{tuple(input.shape)}, got {tuple(target.shape)}")
        self._input_shape = tuple(input.shape)
        if input.ndim > 2:
            input = backend_of(input).permute(input, (0,) + tuple(range(2, input.ndim)) + (1,))
        return input.reshape(-1, classes), target.reshape(-1)

    def _from_rows(self, grad_rows):
        """(R, C) gradient rows back to the input's shape (class axis back to 1)."""
        shape = self._input_shape
        if len(shape) <= 2:
            return grad_rows.reshape(shape)
        moved = grad_rows.reshape((shape[0],) + shape[2:] + (shape[1],))
        return backend_of(moved).permute(
            moved, (0, len(shape) - 1) + tuple(range(1, len(shape) - 1)))

    def _mean_divisor(self, targets):
        """torch's divisor of 'mean': the summed weight of the non-ignored targets
        (None for the other reductions, which need none). Counted on the host."""
        if self.reduction != "mean":
            return None
        targets = to_host(targets)
        keep = targets[targets != self.ignore_index]
        if self.weight is None:
            return keep.size
        return float(np.sum(to_host(self.weight)[keep], dtype=np.float64))

    def _row_scale(self, grad, like):
        """dL/dloss_r for each row, as an array of the logits' dtype."""
        scale, per_row = self._upstream(grad, like)
        if per_row is not None:
            return per_row.reshape(-1)
        return backend_of(like).asarray(np.full(like.shape[0], scale, like.dtype))


class CrossEntropyLoss(_ClassIndexLoss):
    """Cross-entropy of softmax(input) against class indices, with a fused log-softmax.

    Shapes: input (N, C) logits, target (N,) ints in [0, C) or ignore_index;
    also (N, C, d1, ...) with target (N, d1, ...), and (C,) with target ().
    'none' returns losses of the target's shape.

    For a row with logits z, p = softmax(z), target t, smoothing eps, class
    weights w (all 1 by default):

        loss = (1 - eps) w_t (-log p_t) + (eps / C) sum_c w_c (-log p_c)

    'mean' divides the summed loss by sum of w_t over the non-ignored rows
    (their count when unweighted), as torch does, label smoothing included.

    Backward, per row (0 for ignored rows):

        dloss/dz = ((1 - eps) w_t + (eps / C) sum_c w_c) p
                   - (1 - eps) w_t onehot(t) - (eps / C) w

    i.e. p - ((1 - eps) onehot(t) + eps / C) when unweighted: softmax minus
    the smoothed target. The forward saves two numbers per row (max z and
    log sum exp(z - max)); the backward recomputes p from the logits in the
    same sweep that writes dz.

    Ops: ``B.cross_entropy_forward``, ``B.cross_entropy_backward``, ``B.permute``; their NumPy
    references: ``backend/ops/loss.py``, ``backend/ops/elementwise.py``.
    """

    def __init__(self, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0):
        super().__init__(weight, ignore_index, reduction)
        self.label_smoothing = check_real("CrossEntropyLoss", "label_smoothing", label_smoothing,
                                          low=0.0, high=1.0)

    def extra_repr(self):
        return super().extra_repr() + f", label_smoothing={self.label_smoothing}"

    def forward(self, input, target):
        logits, targets = self._rows(input, target)
        losses, row_max, log_sum = backend_of(input).cross_entropy_forward(
            logits, targets, self.weight, self.ignore_index, self.label_smoothing)
        self._saved = (logits, row_max, log_sum, targets)
        return self._reduce(losses, self._mean_divisor(targets), target.shape)

    def backward(self, grad=1.0):
        logits, row_max, log_sum, targets = self._saved
        d_logits = backend_of(logits).cross_entropy_backward(
            logits, row_max, log_sum, targets, self._row_scale(grad, logits), self.weight,
            self.ignore_index, self.label_smoothing)
        return self._from_rows(d_logits)


class NLLLoss(_ClassIndexLoss):
    """Negative log-likelihood of log-probabilities (a LogSoftmax output).

    Shapes as ``CrossEntropyLoss``. Per row, loss = -w_t input[t] (0 when
    t = ignore_index); 'mean' divides by the summed w_t of the kept rows.

    Backward: dloss/dinput = -w_t onehot(t): one nonzero per row.

    Ops: ``B.nll_forward``, ``B.nll_backward``, ``B.permute``; their NumPy references:
    ``backend/ops/loss.py``, ``backend/ops/elementwise.py``.
    """

    def forward(self, input, target):
        logprobs, targets = self._rows(input, target)
        losses = backend_of(input).nll_forward(logprobs, targets, self.weight, self.ignore_index)
        self._saved = (logprobs, targets)
        return self._reduce(losses, self._mean_divisor(targets), target.shape)

    def backward(self, grad=1.0):
        logprobs, targets = self._saved
        d_input = backend_of(logprobs).nll_backward(
            targets, self._row_scale(grad, logprobs), logprobs.shape[1], self.weight,
            self.ignore_index)
        return self._from_rows(d_input)


class _ElementwiseLoss(_Loss):
    """input and a float target of the same shape and dtype; one loss per element."""

    def _check(self, input, target, dtype=None):
        check_float_input(self, input, dtype)
        check_float_input(self, target, input.dtype, what="target")
        check_same_shape(self, input, target)
        self._saved = (input, target)


class MSELoss(_ElementwiseLoss):
    """Squared error: loss_i = (input_i - target_i)^2; 'mean' divides by input.size.

    Shapes: input, target: any shape, the same (torch broadcasts with a
    warning; here that is a ShapeError). 'none' returns input's shape.

    Backward: dloss_i/dinput_i = 2 (input_i - target_i).

    Ops: ``B.mse_forward``, ``B.mse_backward``; their NumPy references: ``backend/ops/loss.py``.
    """

    def forward(self, input, target):
        self._check(input, target)
        losses = backend_of(input).mse_forward(input, target)
        return self._reduce(losses, input.size, input.shape)

    def backward(self, grad=1.0):
        input, target = self._saved
        scale, per_element = self._upstream(grad, input)
        return backend_of(input).mse_backward(input, target, per_element, scale)


class BCEWithLogitsLoss(_ElementwiseLoss):
    """Binary cross-entropy of sigmoid(input) against targets in [0, 1], from logits.

    Shapes: input (logits), target: any shape, the same. ``pos_weight``
    (a weight of the positive class) has shape (C,) with C = input.shape[-1]
    (one per class, torch's usual use), or one element. torch's elementwise
    ``weight`` is not supported.

    With x = input, t = target, l = 1 + (pos_weight - 1) t:

        loss = (1 - t) x + l log(1 + e^-x)            (= max(x, 0) - x t + log(1 + e^-|x|)
                                                        for pos_weight = 1)

    computed as log1p(exp(-|x|)) + max(-x, 0) for log(1 + e^-x), which does
    not overflow for large |x|. 'mean' divides by input.size.

    Backward: dloss/dx = (1 - t) - l sigmoid(-x)   (= sigmoid(x) - t for pos_weight = 1).

    Ops: ``B.bce_with_logits_forward``, ``B.bce_with_logits_backward``; their NumPy references:
    ``backend/ops/loss.py``.
    """

    def __init__(self, reduction="mean", pos_weight=None):
        super().__init__(reduction)
        if pos_weight is None:
            self.pos_weight = None
        else:
            pos_weight = _class_weights("BCEWithLogitsLoss", "pos_weight", pos_weight)
            if pos_weight.ndim > 1:
                raise ShapeError(f"BCEWithLogitsLoss: expected pos_weight (C,), one per class, "
                                 f"or a single number, got shape {pos_weight.shape}")
            self.register_buffer("pos_weight", pos_weight)  # torch's buffer name

    def forward(self, input, target):
        pos_weight = self.pos_weight
        self._check(input, target, None if pos_weight is None else pos_weight.dtype)
        if pos_weight is not None and pos_weight.size != 1 and (
                input.ndim == 0 or pos_weight.shape != (input.shape[-1],)):
            raise ShapeError(f"{describe(self)}: pos_weight {tuple(pos_weight.shape)} must have "
                             f"one element or one per class of the input's last axis, got input "
                             f"{tuple(input.shape)}")
        losses = backend_of(input).bce_with_logits_forward(input, target, pos_weight)
        return self._reduce(losses, input.size, input.shape)

    def backward(self, grad=1.0):
        input, target = self._saved
        scale, per_element = self._upstream(grad, input)
        return backend_of(input).bce_with_logits_backward(input, target, per_element, scale,
                                                          self.pos_weight)
