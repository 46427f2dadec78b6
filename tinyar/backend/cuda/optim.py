"""Optimizer steps over flat parameter buffers, and the gradient-norm helpers.

All parameters of a model live in one flat buffer (``nn/parameter.py``), so
a whole optimizer step is ONE kernel launch: thread i updates element i of
the parameters, their gradients and the optimizer's moments, in registers,
reading and writing each array once (a grid-stride loop over the buffer).
The update of one element is the same code as on the CPU: the update rules
of ``backend/scalar/optim.py``, in the order of operations of ``torch.optim``,
compiled here as device functions, so float32 trajectories agree to rounding.

``sum_of_squares`` (the gradient norm for clipping) reduces in float64: each
block sums its share in shared memory, and thread 0 of each block adds the
block's total into one float64 with an atomic add. Reading that number back
is the one host-device synchronisation of a clipped step.
"""

import numpy as np
from numba import cuda, float64

from ..ops.optim import BufferRules, flat_buffers, used_state
from ..scalar import optim as scalar_optim
from ._util import (THREADS, as_float, block_sum, blocks_for, contiguous, device_empty, fill, flat,
                    launch, launch_flat, scalar_function, scratch)

__all__ = ["sgd_step", "adagrad_step", "rmsprop_step", "adam_step", "sum_of_squares", "zero_",
           "scale_", "clamp_"]


# The update rules, one element at a time: backend/scalar/optim.py (shared with the CPU).
_sgd_update = scalar_function(scalar_optim.sgd)
_adagrad_update = scalar_function(scalar_optim.adagrad)
_rmsprop_update = scalar_function(scalar_optim.rmsprop)
_adam_update = scalar_function(scalar_optim.adam)


# --- SGD ----------------------------------------------------------------------
@cuda.jit
def _sgd(param, grad, buf, neg_lr, momentum, one_minus_dampening, weight_decay, nesterov,
         first_step):
    for i in range(cuda.grid(1), param.size, cuda.gridsize(1)):
        b = buf[i] if momentum != 0 else param[i]  # buf is unused (may be empty) without momentum
        param[i], b = _sgd_update(param[i], grad[i], b, neg_lr, momentum, one_minus_dampening,
                                  weight_decay, nesterov, first_step)
        if momentum != 0:
            buf[i] = b


def sgd_step(param, grad, momentum_buf, lr, momentum, dampening, weight_decay, nesterov,
             first_step):
    """SGD with momentum, dampening, Nesterov and L2 weight decay, in place."""
    momentum_buf = used_state("sgd_step", momentum_buf, momentum != 0,
                               "momentum_buf (momentum != 0)")
    param, grad, momentum_buf = _flat_buffers("sgd_step", param=param, grad=grad,
                                              momentum_buf=momentum_buf)
    f = _scalars_like(param)
    launch_flat(_sgd, param.size, param, grad, momentum_buf, *f(-lr, momentum, 1 - dampening,
                                                                  weight_decay),
                bool(nesterov), bool(first_step))


# --- Adagrad ------------------------------------------------------------------
@cuda.jit
def _adagrad(param, grad, state_sum, neg_clr, weight_decay, eps):
    for i in range(cuda.grid(1), param.size, cuda.gridsize(1)):
        param[i], state_sum[i] = _adagrad_update(param[i], grad[i], state_sum[i], neg_clr,
                                                 weight_decay, eps)


def adagrad_step(param, grad, state_sum, lr, lr_decay, weight_decay, eps, step):
    """Adagrad, in place; ``step`` counts from 1 (the learning rate decays with it)."""
    param, grad, state_sum = _flat_buffers("adagrad_step", param=param, grad=grad,
                                           state_sum=state_sum)
    clr = lr / (1 + (step - 1) * lr_decay)
    launch_flat(_adagrad, param.size, param, grad, state_sum,
                *_scalars_like(param)(-clr, weight_decay, eps))


# --- RMSprop ------------------------------------------------------------------
@cuda.jit
def _rmsprop(param, grad, square_avg, grad_avg, buf, neg_lr, alpha, one_minus_alpha, eps,
             weight_decay, momentum, centered):
    for i in range(cuda.grid(1), param.size, cuda.gridsize(1)):
        # grad_avg and buf are unused (may be empty) unless centered / momentum > 0
        m = grad_avg[i] if centered else param[i]
        b = buf[i] if momentum > 0 else param[i]
        param[i], square_avg[i], m, b = _rmsprop_update(
            param[i], grad[i], square_avg[i], m, b, neg_lr, alpha, one_minus_alpha, eps,
            weight_decay, momentum, centered)
        if centered:
            grad_avg[i] = m
        if momentum > 0:
            buf[i] = b


def rmsprop_step(param, grad, square_avg, grad_avg, momentum_buf, lr, alpha, eps, weight_decay,
                 momentum, centered):
    """RMSprop, in place; ``grad_avg`` / ``momentum_buf`` may be None when unused."""
    grad_avg = used_state("rmsprop_step", grad_avg, centered, "grad_avg (centered=True)")
    momentum_buf = used_state("rmsprop_step", momentum_buf, momentum > 0,
                               "momentum_buf (momentum > 0)")
    param, grad, square_avg, grad_avg, momentum_buf = _flat_buffers(
        "rmsprop_step", param=param, grad=grad, square_avg=square_avg, grad_avg=grad_avg,
        momentum_buf=momentum_buf)
    f = _scalars_like(param)
    launch_flat(_rmsprop, param.size, param, grad, square_avg, grad_avg, momentum_buf,
                *f(-lr, alpha, 1 - alpha, eps, weight_decay, momentum), bool(centered))


# --- Adam and AdamW -----------------------------------------------------------
@cuda.jit
def _adam(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, neg_step_size, beta1,
          one_minus_beta1, beta2, one_minus_beta2, bias_correction2_sqrt, eps, weight_decay,
          decay, decoupled, amsgrad):
    for i in range(cuda.grid(1), param.size, cuda.gridsize(1)):
        v_max = max_exp_avg_sq[i] if amsgrad else param[i]  # unused (may be empty) otherwise
        param[i], exp_avg[i], exp_avg_sq[i], v_max = _adam_update(
            param[i], grad[i], exp_avg[i], exp_avg_sq[i], v_max, neg_step_size, beta1,
            one_minus_beta1, beta2, one_minus_beta2, bias_correction2_sqrt, eps, weight_decay,
            decay, decoupled, amsgrad)
        if amsgrad:
            max_exp_avg_sq[i] = v_max


def adam_step(param, grad, exp_avg, exp_avg_sq, lr, beta1, beta2, eps, weight_decay, step,
              decoupled_weight_decay=False, max_exp_avg_sq=None):
    """Adam (AdamW when ``decoupled_weight_decay``; AMSGrad when ``max_exp_avg_sq``), in place.

    As in torch, the bias corrections fold into two scalars:
    step_size = lr / (1 - beta1^t), denom = sqrt(v) / sqrt(1 - beta2^t) + eps.
    """
    amsgrad = max_exp_avg_sq is not None
    param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq = _flat_buffers(
        "adam_step", param=param, grad=grad, exp_avg=exp_avg, exp_avg_sq=exp_avg_sq,
        max_exp_avg_sq=max_exp_avg_sq)
    step_size = lr / (1 - beta1 ** step)
    bias_correction2_sqrt = (1 - beta2 ** step) ** 0.5
    f = _scalars_like(param)
    launch_flat(_adam, param.size, param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq,
                *f(-step_size, beta1, 1 - beta1, beta2, 1 - beta2, bias_correction2_sqrt, eps,
                   weight_decay, 1 - lr * weight_decay),
                bool(decoupled_weight_decay), amsgrad)


# --- gradient clipping --------------------------------------------------------
@cuda.jit
def _sum_of_squares(x, total):
    # float64 throughout: a million float32 squares summed in float32 would lose digits
    buf = cuda.shared.array(THREADS, float64)
    partial = 0.0
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        v = float64(x[i])
        partial += v * v
    block_total = block_sum(buf, partial)
    if cuda.threadIdx.x == 0:
        cuda.atomic.add(total, 0, block_total)


def sum_of_squares(x):
    """sum x_i^2, accumulated in float64, as a host scalar of x's dtype (as torch's norm is)."""
    x = flat(contiguous(x))
    total = fill(device_empty(1, np.float64), 0)
    if x.size:
        launch(_sum_of_squares, blocks_for(x.size), THREADS, x, total)
    return x.dtype.type(total.copy_to_host()[0])


@cuda.jit
def _zero(x):
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        x[i] = 0


def zero_(x):
    """x = 0, in place (``zero_grad``)."""
    (x,) = _flat_buffers("zero_", x=x)
    launch_flat(_zero, x.size, x)


@cuda.jit
def _scale(x, alpha):
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        x[i] = x[i] * alpha


def scale_(x, alpha):
    """x *= alpha, in place."""
    (x,) = _flat_buffers("scale_", x=x)
    launch_flat(_scale, x.size, x, as_float(alpha, x))


@cuda.jit
def _clamp(x, low, high):
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        v = x[i]
        if v < low:
            v = low
        elif v > high:
            v = high
        x[i] = v  # a NaN fails both tests and stays NaN


def clamp_(x, low, high):
    """x = min(max(x, low), high), in place."""
    (x,) = _flat_buffers("clamp_", x=x)
    launch_flat(_clamp, x.size, x, as_float(low, x), as_float(high, x))


# --- helpers ------------------------------------------------------------------
def _scalars_like(x):
    """Python floats -> scalars of x's dtype (float32 kernels stay float32)."""
    return lambda *values: [as_float(v, x) for v in values]


_RULES = BufferRules(kind="a CUDA device array",
                     is_array=lambda a: hasattr(a, "__cuda_array_interface__")
                     and not isinstance(a, np.ndarray),
                     is_c_contiguous=lambda a: a.is_c_contiguous(), contiguous=contiguous,
                     flat=flat, unused=scratch)


def _flat_buffers(op, **arrays):
    """1-D views of one op's device buffers, checked (``ops/optim.py``'s ``flat_buffers``)."""
    return flat_buffers(op, _RULES, **arrays)
