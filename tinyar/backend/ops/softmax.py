"""Softmax and log-softmax over the last axis of a (rows, classes) array.

Layers with more axes move the class axis last and reshape to (rows, C).
Backward ops take ``grad`` = dL/dy and the forward's output y, and return
dL/dx.
"""
import numpy as np

from . import op


def _logits(rng, dtype, shape=(6, 7)):
    x = rng.standard_normal(shape) * 3
    x[0] += 200  # a large common offset: only a max-shifted softmax survives it
    return x.astype(dtype)


def _grad_and_output(fwd):
    def example(rng, dtype):
        return dict(grad=rng.standard_normal((6, 7)).astype(dtype),
                    y=fwd(_logits(rng, dtype)).astype(dtype))
    return example


def _shift(x):
    return x - x.max(axis=-1, keepdims=True)


@op("x: (R, C); out: (R, C)", example=lambda rng, dtype: dict(x=_logits(rng, dtype)))
def softmax_forward(x, out=None):
    """y = exp(x - max) / sum(exp(x - max)) along each row."""
    e = np.exp(_shift(x))
    return e / e.sum(axis=-1, keepdims=True)


@op("grad, y = softmax(x): (R, C); out: (R, C)", example=_grad_and_output(softmax_forward))
def softmax_backward(grad, y, out=None):
    """dx = y * (g - sum_c g_c y_c)."""
    return y * (grad - (grad * y).sum(axis=-1, keepdims=True))


@op("x: (R, C); out: (R, C)", example=lambda rng, dtype: dict(x=_logits(rng, dtype)))
def log_softmax_forward(x, out=None):
    """y = (x - max) - log sum(exp(x - max)) along each row."""
    z = _shift(x)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


@op("grad, y = log_softmax(x): (R, C); out: (R, C)",
    example=_grad_and_output(log_softmax_forward))
def log_softmax_backward(grad, y, out=None):
    """dx = g - exp(y) * sum_c g_c."""
    return grad - np.exp(y) * grad.sum(axis=-1, keepdims=True)
