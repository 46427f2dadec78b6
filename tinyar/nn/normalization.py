"""``LayerNorm`` and ``BatchNorm1d``: normalise, then scale and shift.

Both compute, over some set of M values of x,

    mean = sum(x) / M,   var = sum((x - mean)^2) / M   (biased),
    x_hat = (x - mean) * rstd,   rstd = 1 / sqrt(var + eps),
    y = weight * x_hat + bias.

LayerNorm takes the statistics over the features of one sample (the same
in training and evaluation); BatchNorm1d over the batch, per channel, and
keeps running averages of them to use in evaluation.

Backward, g = dL/dy, g_hat = g * weight, sums over the same M values:
    dL/dbias   += sum(g)
    dL/dweight += sum(g * x_hat)
    dL/dx = rstd * (g_hat - sum(g_hat) / M - x_hat * sum(g_hat * x_hat) / M)
The two subtracted terms come from mean and var depending on x. When the
statistics are fixed numbers (BatchNorm1d in evaluation), dL/dx = rstd * g_hat.
"""
import numbers
from math import prod

import numpy as np

from ..backend import backend_of
from ..errors import ShapeError
from . import init
from .checks import (check_dtype, check_flag, check_float_input, check_int, check_ints,
                     check_real, check_shape, check_size, describe)
from .module import Module
from .parameter import Parameter


def _flat(p):
    """A parameter's data and grad as 1-D views (None when there is no parameter)."""
    return (None, None) if p is None else (p.data.reshape(-1), p.grad.reshape(-1))


def check_eps(owner, eps):
    """eps > 0: added to the variance under a square root, it keeps 1/sqrt finite."""
    return check_real(owner, "eps", eps, low=0.0, low_open=True)


class LayerNorm(Module):
    """Normalise each sample over its last ``len(normalized_shape)`` axes.

    Shapes:
        x: (*, *normalized_shape)    y: like x
        weight, bias: normalized_shape   (weight = 1, bias = 0 at first; absent when
        elementwise_affine=False; bias absent when bias=False)

    The normalised axes are flattened into F = prod(normalized_shape) features
    and x into rows of F; the statistics are per row (M = F in the module
    docstring's formulas), and ``layer_norm_backward`` applies the backward there.

    Ops: ``B.layer_norm_forward``, ``B.layer_norm_backward``; their NumPy references:
    ``backend/ops/norm.py``.
    """

    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True, bias=True,
                 dtype=np.float32):
        super().__init__()
        name = "LayerNorm"
        count = 1 if isinstance(normalized_shape, numbers.Integral) else \
            len(normalized_shape) if isinstance(normalized_shape, (tuple, list)) else 0
        self.normalized_shape = check_ints(name, "normalized_shape", normalized_shape,
                                           max(count, 1))
        self.eps = check_eps(name, eps)
        self.elementwise_affine = check_flag(name, "elementwise_affine", elementwise_affine)
        bias, dtype = check_flag(name, "bias", bias), check_dtype(name, dtype)
        self.features = prod(self.normalized_shape)
        affine = self.elementwise_affine
        self.weight = Parameter(init.ones(self.normalized_shape, dtype)) if affine else None
        self.bias = Parameter(init.zeros(self.normalized_shape, dtype)) if affine and bias \
            else None

    def extra_repr(self):
        return f"{self.normalized_shape}, eps={self.eps:g}, " \
               f"elementwise_affine={self.elementwise_affine}"

    def forward(self, x):
        check_float_input(self, x, None if self.weight is None else self.weight.dtype)
        k = len(self.normalized_shape)
        expected = "(*, " + ", ".join(map(str, self.normalized_shape)) + ")"
        check_shape(self, x, expected, min_ndim=k)
        if tuple(x.shape[x.ndim - k:]) != self.normalized_shape:
            raise ShapeError(f"{describe(self)}: expected input {expected}, got {tuple(x.shape)}")
        B = backend_of(x)
        self._shape = x.shape
        self._x = x.reshape(-1, self.features)
        y, self._mean, self._rstd = B.layer_norm_forward(
            self._x, _flat(self.weight)[0], _flat(self.bias)[0], self.eps)
        return y.reshape(x.shape)

    def backward(self, grad_out):
        B = backend_of(grad_out)
        weight, grad_weight = _flat(self.weight)
        dx = B.layer_norm_backward(grad_out.reshape(-1, self.features), self._x, self._mean,
                                   self._rstd, weight, grad_weight, _flat(self.bias)[1])
        return dx.reshape(self._shape)


class BatchNorm1d(Module):
    """Normalise each channel over the batch (and the length axis).

    Shapes:
        x: (N, C) or (N, C, L)    y: like x
        weight, bias: (C,)   (1 and 0 at first; absent when affine=False)
        buffers running_mean, running_var: (C,); num_batches_tracked: int64 scalar
        (absent when track_running_stats=False)

    Training (or track_running_stats=False): the statistics of each channel
    are over its M = N * L values of this batch, and the running averages
    are updated as PyTorch does, with the *unbiased* variance:
        running_mean = (1 - m) running_mean + m mean
        running_var  = (1 - m) running_var  + m var * M / (M - 1)
    where m = momentum, or 1 / num_batches_tracked when momentum is None
    (a plain average of all batches so far).
    Evaluation: y = (x - running_mean) / sqrt(running_var + eps) * weight + bias.

    Ops: ``B.batch_norm_forward_train``, ``B.batch_norm_forward_eval``,
    ``B.batch_norm_update_running``; their NumPy references: ``backend/ops/norm.py``.
    """

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True,
                 track_running_stats=True, dtype=np.float32):
        super().__init__()
        name = type(self).__name__
        self.num_features = check_int(name, "num_features", num_features)
        self.eps = check_eps(name, eps)
        self.momentum = None if momentum is None else \
            check_real(name, "momentum", momentum, low=0.0, high=1.0)
        self.affine = check_flag(name, "affine", affine)
        self.track_running_stats = check_flag(name, "track_running_stats", track_running_stats)
        dtype = check_dtype(name, dtype)
        affine = self.affine
        c = self.num_features
        self.weight = Parameter(init.ones(c, dtype)) if affine else None
        self.bias = Parameter(init.zeros(c, dtype)) if affine else None
        if self.track_running_stats:
            self.register_buffer("running_mean", init.zeros(c, dtype))
            self.register_buffer("running_var", init.ones(c, dtype))
            self.register_buffer("num_batches_tracked", np.array(0, dtype=np.int64))
        else:
            self.running_mean = self.running_var = self.num_batches_tracked = None

    def extra_repr(self):
        return f"{self.num_features}, eps={self.eps:g}, momentum={self.momentum}, " \
               f"affine={self.affine}, track_running_stats={self.track_running_stats}"

    def _layer_dtype(self):
        if self.weight is not None:
            return self.weight.dtype
        return None if self.running_mean is None else self.running_mean.dtype

    def forward(self, x):
        c = self.num_features
        check_float_input(self, x, self._layer_dtype())
        check_shape(self, x, f"(N, {c}) or (N, {c}, L)", ndim=(2, 3))
        check_size(self, x, 1, c, f"(N, {c}) or (N, {c}, L)")
        B = backend_of(x)
        weight, bias = _flat(self.weight)[0], _flat(self.bias)[0]
        self._batch_stats = self.training or not self.track_running_stats
        if self._batch_stats:
            count = x.shape[0] * (x.shape[2] if x.ndim == 3 else 1)
            if count < 2:
                raise ShapeError(f"{describe(self)}: expected more than 1 value per channel when "
                                 f"training (N * L >= 2), got input {tuple(x.shape)}")
            y, mean, var = B.batch_norm_forward_train(x, weight, bias, self.eps)
            if self.training and self.track_running_stats:
                self._update_running(B, mean, var, count)
        else:
            mean, var = self.running_mean, self.running_var
            y = B.batch_norm_forward_eval(x, mean, var, weight, bias, self.eps)
        self._x, self._mean, self._var = x, mean, var
        return y

    def _update_running(self, B, mean, var, count):
        batches = self._count_batch()
        momentum = 1.0 / batches if self.momentum is None else self.momentum
        B.batch_norm_update_running(self.running_mean, self.running_var, mean, var, momentum,
                                    count)

    def _count_batch(self):
        """num_batches_tracked += 1, in place (the buffer stays registered); the new count.

        After ``.to("cuda")`` the buffer is a 0-d device array, which has no
        ``+=``: the count makes a round trip through the host (8 bytes each
        way), the one host copy of a BatchNorm training step on a GPU.
        """
        tracked = self.num_batches_tracked
        batches = int(backend_of(tracked).to_host(tracked)) + 1
        tracked[()] = batches
        return batches

    def check_buffer(self, name, value):
        """Loaded running statistics must be possible ones: a variance and a count are >= 0
        (a negative variance would make every evaluation output NaN)."""
        if name in ("running_var", "num_batches_tracked") and value.size and value.min() < 0:
            return f"holds {value.min()}; a {'variance' if name == 'running_var' else 'count'} " \
                   f"is >= 0"
        return None

    def backward(self, grad_out):
        B = backend_of(grad_out)
        weight, grad_weight = _flat(self.weight)
        backward = B.batch_norm_backward if self._batch_stats else B.batch_norm_backward_eval
        return backward(grad_out, self._x, self._mean, self._var, weight, self.eps, grad_weight,
                        _flat(self.bias)[1])
