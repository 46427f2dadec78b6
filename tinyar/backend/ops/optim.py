"""Optimizer steps and gradient-norm helpers over flat parameter buffers.

Every parameter of a model lives in one flat ``data`` buffer and its gradient
in one flat ``grad`` buffer (``nn/parameter.py``), so an optimizer step is a
single op over whole 1-D arrays: ``param``, ``grad`` and the optimizer's
state (moments) have the same size and dtype and are contiguous.

The references below are the algorithms as the PyTorch documentation of
``torch.optim`` writes them (https://pytorch.org/docs/stable/optim.html),
for one step ``t`` (counted from 1), with ``g`` the gradient:

    SGD      g += wd p;  b = mu b + (1 - tau) g  (b = g at t = 1);
             g = g + mu b (nesterov) or b;  p -= lr g
    Adagrad  g += wd p;  clr = lr / (1 + (t - 1) lr_decay);  s += g^2;
             p -= clr g / (sqrt(s) + eps)
    RMSprop  g += wd p;  v = alpha v + (1 - alpha) g^2;
             centered: m = alpha m + (1 - alpha) g, v~ = v - m^2;
             b = mu b + g / (sqrt(v~) + eps), p -= lr b   (mu > 0)
             or p -= lr g / (sqrt(v~) + eps)
    Adam     g += wd p (Adam) or p *= 1 - lr wd (AdamW);
             m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;
             amsgrad: v_max = max(v_max, v), used in place of v below;
             p -= lr m^ / (sqrt(v^) + eps),  m^ = m / (1 - b1^t),
             v^ = v / (1 - b2^t)

Each reference returns the new values of the arrays the op updates in place,
in the order of ``inplace``.
"""
from typing import Callable, NamedTuple

import numpy as np

from . import op
from ...errors import DTypeError, ShapeError


# --- shared by the backends' optimizer ops ----------------------------------------
def used_state(op_name, array, needed, what):
    """The state array when these settings read it (then it must be given), else None."""
    if not needed:
        return None
    if array is None:
        raise ValueError(f"{op_name}: {what} is needed with these settings, got None")
    return array


class BufferRules(NamedTuple):
    """What ``flat_buffers`` needs to know about one backend's arrays."""
    kind: str  # "a NumPy array", in error messages
    is_array: Callable  # a -> whether a is this backend's array
    is_c_contiguous: Callable
    contiguous: Callable  # a -> a C-contiguous array with a's values (a itself when it is)
    flat: Callable  # contiguous a -> a 1-D view
    unused: Callable  # dtype -> a placeholder for state these settings do not read


def flat_buffers(op_name, rules, **arrays):
    """1-D views of the buffers of one optimizer op; they must be C-contiguous and alike.

    The buffers an op updates must be contiguous already (a copy would be
    updated instead; ``grad``, only read, may be copied). ``None`` stands for
    state these settings do not use: the kernel gets a placeholder that it
    never reads.
    """
    first_name, first = next(iter(arrays.items()))
    out = []
    for name, a in arrays.items():
        if a is None and name != first_name:
            out.append(rules.unused(first.dtype))
            continue
        if not rules.is_array(a):
            raise DTypeError(f"{op_name}: expected {name} as {rules.kind}, got "
                             f"{type(a).__name__}")
        if a.dtype != first.dtype or not np.issubdtype(a.dtype, np.floating):
            raise DTypeError(f"{op_name}: expected {name} of dtype {first.dtype.name} (like "
                             f"{first_name}), got {a.dtype.name}")
        if a.size != first.size:
            raise ShapeError(f"{op_name}: expected {name} with {first.size} elements (like "
                             f"{first_name}), got shape {tuple(a.shape)}")
        if name == "grad":
            a = rules.contiguous(a)
        elif not rules.is_c_contiguous(a):
            raise ShapeError(f"{op_name}: {name} is updated in place and must be C-contiguous "
                             f"(a flat buffer), got a strided array of shape {tuple(a.shape)}")
        out.append(rules.flat(a))
    return out


_FLAT = 257  # an odd size, so that vectorised loops have a remainder


def _flat(rng, dtype, positive=False):
    x = rng.standard_normal(_FLAT)
    return (np.abs(x) + 0.1 if positive else x).astype(dtype)


def _sgd_example(rng, dtype):
    return dict(param=_flat(rng, dtype), grad=_flat(rng, dtype), momentum_buf=_flat(rng, dtype),
                lr=0.1, momentum=0.9, dampening=0.1, weight_decay=0.01, nesterov=True,
                first_step=False)


@op("param, grad, momentum_buf: (N,) flat buffers of one dtype; updates param, momentum_buf",
    example=_sgd_example, inplace=("param", "momentum_buf"),
    contiguous=("param", "grad", "momentum_buf"))
def sgd_step(param, grad, momentum_buf, lr, momentum, dampening, weight_decay, nesterov,
             first_step):
    """One SGD step; ``first_step`` starts the momentum buffer at g (torch's rule)."""
    g = grad + weight_decay * param
    if momentum != 0:
        momentum_buf = g.copy() if first_step else momentum * momentum_buf + (1 - dampening) * g
        g = g + momentum * momentum_buf if nesterov else momentum_buf
    return param - lr * g, momentum_buf


def _adagrad_example(rng, dtype):
    return dict(param=_flat(rng, dtype), grad=_flat(rng, dtype),
                state_sum=_flat(rng, dtype, positive=True), lr=0.1, lr_decay=0.01,
                weight_decay=0.01, eps=1e-10, step=3)


@op("param, grad, state_sum: (N,) flat buffers of one dtype; step counts from 1; "
    "updates param, state_sum",
    example=_adagrad_example, inplace=("param", "state_sum"),
    contiguous=("param", "grad", "state_sum"))
def adagrad_step(param, grad, state_sum, lr, lr_decay, weight_decay, eps, step):
    """One Adagrad step (``state_sum`` starts at initial_accumulator_value)."""
    g = grad + weight_decay * param
    clr = lr / (1 + (step - 1) * lr_decay)
    state_sum = state_sum + g * g
    return param - clr * g / (np.sqrt(state_sum) + eps), state_sum


def _rmsprop_example(rng, dtype):
    return dict(param=_flat(rng, dtype), grad=_flat(rng, dtype),
                square_avg=_flat(rng, dtype, positive=True) + 2,
                grad_avg=0.3 * _flat(rng, dtype), momentum_buf=_flat(rng, dtype), lr=0.01,
                alpha=0.99, eps=1e-8, weight_decay=0.01, momentum=0.9, centered=True)


@op("param, grad, square_avg: (N,); grad_avg: (N,) when centered, else None; "
    "momentum_buf: (N,) when momentum > 0, else None; updates all four",
    example=_rmsprop_example, inplace=("param", "square_avg", "grad_avg", "momentum_buf"),
    contiguous=("param", "grad", "square_avg", "grad_avg", "momentum_buf"))
def rmsprop_step(param, grad, square_avg, grad_avg, momentum_buf, lr, alpha, eps, weight_decay,
                 momentum, centered):
    """One RMSprop step."""
    g = grad + weight_decay * param
    square_avg = alpha * square_avg + (1 - alpha) * g * g
    v = square_avg
    if centered:
        grad_avg = alpha * grad_avg + (1 - alpha) * g
        v = square_avg - grad_avg * grad_avg
    denom = np.sqrt(v) + eps
    if momentum > 0:
        momentum_buf = momentum * momentum_buf + g / denom
        param = param - lr * momentum_buf
    else:
        param = param - lr * g / denom
    return param, square_avg, grad_avg, momentum_buf


def _adam_example(rng, dtype):
    return dict(param=_flat(rng, dtype), grad=_flat(rng, dtype), exp_avg=_flat(rng, dtype),
                exp_avg_sq=_flat(rng, dtype, positive=True),
                max_exp_avg_sq=_flat(rng, dtype, positive=True), lr=1e-2, beta1=0.9,
                beta2=0.999, eps=1e-8, weight_decay=0.01, step=4, decoupled_weight_decay=True)


@op("param, grad, exp_avg, exp_avg_sq: (N,); max_exp_avg_sq: (N,) for amsgrad, else None; "
    "step counts from 1; updates param and the moments",
    example=_adam_example, inplace=("param", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"),
    contiguous=("param", "grad", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"))
def adam_step(param, grad, exp_avg, exp_avg_sq, lr, beta1, beta2, eps, weight_decay, step,
              decoupled_weight_decay=False, max_exp_avg_sq=None):
    """One Adam step; AdamW when ``decoupled_weight_decay``; AMSGrad when ``max_exp_avg_sq``."""
    g = grad
    if decoupled_weight_decay:
        param = param * (1 - lr * weight_decay)
    else:
        g = g + weight_decay * param
    exp_avg = beta1 * exp_avg + (1 - beta1) * g
    exp_avg_sq = beta2 * exp_avg_sq + (1 - beta2) * g * g
    v = exp_avg_sq
    if max_exp_avg_sq is not None:
        max_exp_avg_sq = np.maximum(max_exp_avg_sq, exp_avg_sq)
        v = max_exp_avg_sq
    m_hat = exp_avg / (1 - beta1 ** step)
    v_hat = v / (1 - beta2 ** step)
    param = param - lr * m_hat / (np.sqrt(v_hat) + eps)
    return param, exp_avg, exp_avg_sq, max_exp_avg_sq


@op("x: (N,) flat buffer; returns a scalar of x's dtype",
    example=lambda rng, dtype: dict(x=_flat(rng, dtype)), contiguous=("x",))
def sum_of_squares(x):
    """sum_i x_i^2 (the squared 2-norm of a gradient buffer)."""
    return x.dtype.type(np.sum(x.astype(np.float64) ** 2))


@op("x: (N,) flat buffer; updates x",
    example=lambda rng, dtype: dict(x=_flat(rng, dtype)), inplace=("x",), contiguous=("x",))
def zero_(x):
    """x = 0 (``zero_grad``: one fill of the flat gradient buffer)."""
    return np.zeros_like(x)


@op("x: (N,) flat buffer; updates x",
    example=lambda rng, dtype: dict(x=_flat(rng, dtype), alpha=0.37), inplace=("x",),
    contiguous=("x",))
def scale_(x, alpha):
    """x *= alpha (gradient-norm clipping)."""
    return x * alpha


@op("x: (N,) flat buffer; updates x",
    example=lambda rng, dtype: dict(x=_flat(rng, dtype), low=-0.5, high=0.7), inplace=("x",),
    contiguous=("x",))
def clamp_(x, low, high):
    """x = min(max(x, low), high) (gradient-value clipping)."""
    return np.clip(x, low, high)
