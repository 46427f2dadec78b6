"""Optimizer steps over flat parameter buffers, and the gradient-norm helpers.

All parameters of a model live in one flat buffer (``nn/parameter.py``), so
one optimizer step is one pass over a few 1-D arrays: the parameters, their
gradients and the optimizer's moments. Each optimizer has

* ``_<name>(param, grad, ...)``: a plain loop over the elements applying the
  update rule of one element, ``_<name>_update`` (written once for both devices in
  ``backend/scalar/optim.py``, inlined here, and vectorised by LLVM);
* ``_<name>_threads(chunks, ...)``: the buffer cut into one chunk per
  thread (``prange``), each running the plain loop on its slice (a slice,
  not ``range(lo, hi)``: a loop that does not start at 0 does not vectorise,
  as Numba must allow for negative indices). Sweeps over whole parameter
  buffers are the only kernels allowed threads (``backend/cpu/threads.py``);
* the public op, which checks the buffers, turns the hyperparameters into
  scalars of the buffer's dtype, and keeps small buffers on one thread, where
  starting the others would cost more than it saves.

Float32 buffers are updated in float32 arithmetic, in the order of
operations of ``torch.optim``'s single-tensor implementations, so that
trajectories match PyTorch's to float32 rounding. Scalars that depend only on
the hyperparameters and the step (bias corrections, ``1 - beta``) are
computed once in Python, in double precision, as PyTorch does.

``error_model="numpy"``: a division by zero gives inf/NaN as in NumPy instead
of raising, which lets LLVM vectorise the loops that divide.
"""

import numpy as np
from numba import get_num_threads, njit, prange

from . import threads
from ..ops.optim import BufferRules, flat_buffers, used_state
from ..scalar import optim as scalar_optim
from ._util import (FASTMATH, as_float, chunk_bounds, contiguous, flat, scalar_function,
                    thread_chunks)

__all__ = ["sgd_step", "adagrad_step", "rmsprop_step", "adam_step", "sum_of_squares", "zero_",
           "scale_", "clamp_"]

# Buffers smaller than this are swept by one thread. Measured on the 2-core
# development machine: one thread runs Adam over 669,706 float32 in 0.37 ms
# (the loop vectorises); the workqueue threading layer (backend/cpu/threads.py)
# costs 20-60 us a launch and its second worker woke too late to help
# (0.41 ms on two threads), while the omp layer halved it (0.19 ms). These
# thresholds keep the launch cost under ~10 % of a sweep where threads do pay.
# The norm, scale and clamp passes touch 1-2 arrays per element instead of
# 3-7, so their threshold is higher.
PARALLEL_MIN_SIZE = 1 << 20
PARALLEL_MIN_SIZE_ONE_ARRAY = 1 << 22

_KERNEL = dict(cache=True, fastmath=FASTMATH, error_model="numpy")
_THREADED = dict(_KERNEL, parallel=True)


# The update rules, one element at a time: backend/scalar/optim.py (shared with CUDA).
_sgd_update = scalar_function(scalar_optim.sgd)
_adagrad_update = scalar_function(scalar_optim.adagrad)
_rmsprop_update = scalar_function(scalar_optim.rmsprop)
_adam_update = scalar_function(scalar_optim.adam)


# --- SGD ----------------------------------------------------------------------
@njit(**_KERNEL)
def _sgd(param, grad, buf, neg_lr, momentum, one_minus_dampening, weight_decay, nesterov,
         first_step):
    for i in range(param.size):
        b = buf[i] if momentum != 0 else param[i]  # buf is unused (may be empty) without momentum
        param[i], b = _sgd_update(param[i], grad[i], b, neg_lr, momentum, one_minus_dampening,
                                  weight_decay, nesterov, first_step)
        if momentum != 0:
            buf[i] = b


@njit(**_THREADED)
def _sgd_threads(chunks, param, grad, buf, neg_lr, momentum, one_minus_dampening, weight_decay,
                 nesterov, first_step):
    for c in prange(chunks):
        lo, hi = chunk_bounds(c, chunks, param.size)
        _sgd(param[lo:hi], grad[lo:hi], buf[lo:hi], neg_lr, momentum, one_minus_dampening,
             weight_decay, nesterov, first_step)


def sgd_step(param, grad, momentum_buf, lr, momentum, dampening, weight_decay, nesterov,
             first_step):
    """SGD with momentum, dampening, Nesterov and L2 weight decay, in place.

    ``momentum_buf`` may be None when ``momentum == 0`` (it is not read);
    ``first_step`` starts it at the gradient, as torch does.
    """
    momentum_buf = used_state("sgd_step", momentum_buf, momentum != 0,
                               "momentum_buf (momentum != 0)")
    param, grad, momentum_buf = _flat_buffers("sgd_step", param=param, grad=grad,
                                              momentum_buf=momentum_buf)
    f = _scalars_like(param)
    _launch(_sgd, _sgd_threads, PARALLEL_MIN_SIZE, param, grad, momentum_buf, *f(-lr, momentum),
            *f(1 - dampening, weight_decay), bool(nesterov), bool(first_step))


# --- Adagrad ------------------------------------------------------------------
@njit(**_KERNEL)
def _adagrad(param, grad, state_sum, neg_clr, weight_decay, eps):
    for i in range(param.size):
        param[i], state_sum[i] = _adagrad_update(param[i], grad[i], state_sum[i], neg_clr,
                                                 weight_decay, eps)


@njit(**_THREADED)
def _adagrad_threads(chunks, param, grad, state_sum, neg_clr, weight_decay, eps):
    for c in prange(chunks):
        lo, hi = chunk_bounds(c, chunks, param.size)
        _adagrad(param[lo:hi], grad[lo:hi], state_sum[lo:hi], neg_clr, weight_decay, eps)


def adagrad_step(param, grad, state_sum, lr, lr_decay, weight_decay, eps, step):
    """Adagrad, in place; ``step`` counts from 1 (the learning rate decays with it).

    ``state_sum`` starts at ``initial_accumulator_value``: the optimizer fills
    it when it creates the state, as torch does.
    """
    param, grad, state_sum = _flat_buffers("adagrad_step", param=param, grad=grad,
                                           state_sum=state_sum)
    clr = lr / (1 + (step - 1) * lr_decay)
    _launch(_adagrad, _adagrad_threads, PARALLEL_MIN_SIZE, param, grad, state_sum,
            *_scalars_like(param)(-clr, weight_decay, eps))


# --- RMSprop ------------------------------------------------------------------
@njit(**_KERNEL)
def _rmsprop(param, grad, square_avg, grad_avg, buf, neg_lr, alpha, one_minus_alpha, eps,
             weight_decay, momentum, centered):
    for i in range(param.size):
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


@njit(**_THREADED)
def _rmsprop_threads(chunks, param, grad, square_avg, grad_avg, buf, neg_lr, alpha,
                     one_minus_alpha, eps, weight_decay, momentum, centered):
    for c in prange(chunks):
        lo, hi = chunk_bounds(c, chunks, param.size)
        _rmsprop(param[lo:hi], grad[lo:hi], square_avg[lo:hi], grad_avg[lo:hi], buf[lo:hi],
                 neg_lr, alpha, one_minus_alpha, eps, weight_decay, momentum, centered)


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
    _launch(_rmsprop, _rmsprop_threads, PARALLEL_MIN_SIZE, param, grad, square_avg, grad_avg,
            momentum_buf, *f(-lr, alpha, 1 - alpha, eps, weight_decay, momentum), bool(centered))


# --- Adam and AdamW -----------------------------------------------------------
@njit(**_KERNEL)
def _adam(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, neg_step_size, beta1,
          one_minus_beta1, beta2, one_minus_beta2, bias_correction2_sqrt, eps, weight_decay,
          decay, decoupled, amsgrad):
    for i in range(param.size):
        v_max = max_exp_avg_sq[i] if amsgrad else param[i]  # unused (may be empty) otherwise
        param[i], exp_avg[i], exp_avg_sq[i], v_max = _adam_update(
            param[i], grad[i], exp_avg[i], exp_avg_sq[i], v_max, neg_step_size, beta1,
            one_minus_beta1, beta2, one_minus_beta2, bias_correction2_sqrt, eps, weight_decay,
            decay, decoupled, amsgrad)
        if amsgrad:
            max_exp_avg_sq[i] = v_max


@njit(**_THREADED)
def _adam_threads(chunks, param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, neg_step_size,
                  beta1, one_minus_beta1, beta2, one_minus_beta2, bias_correction2_sqrt, eps,
                  weight_decay, decay, decoupled, amsgrad):
    for c in prange(chunks):
        lo, hi = chunk_bounds(c, chunks, param.size)
        _adam(param[lo:hi], grad[lo:hi], exp_avg[lo:hi], exp_avg_sq[lo:hi],
              max_exp_avg_sq[lo:hi], neg_step_size, beta1, one_minus_beta1, beta2,
              one_minus_beta2, bias_correction2_sqrt, eps, weight_decay, decay, decoupled,
              amsgrad)


def adam_step(param, grad, exp_avg, exp_avg_sq, lr, beta1, beta2, eps, weight_decay, step,
              decoupled_weight_decay=False, max_exp_avg_sq=None):
    """Adam (AdamW when ``decoupled_weight_decay``; AMSGrad when ``max_exp_avg_sq``), in place.

    ``step`` counts from 1. As in torch, the bias corrections fold into two
    scalars: step_size = lr / (1 - beta1^t), and
    denom = sqrt(v) / sqrt(1 - beta2^t) + eps.
    """
    amsgrad = max_exp_avg_sq is not None
    param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq = _flat_buffers(
        "adam_step", param=param, grad=grad, exp_avg=exp_avg, exp_avg_sq=exp_avg_sq,
        max_exp_avg_sq=max_exp_avg_sq)
    step_size = lr / (1 - beta1 ** step)
    bias_correction2_sqrt = (1 - beta2 ** step) ** 0.5
    f = _scalars_like(param)
    _launch(_adam, _adam_threads, PARALLEL_MIN_SIZE, param, grad, exp_avg, exp_avg_sq,
            max_exp_avg_sq, *f(-step_size, beta1, 1 - beta1, beta2, 1 - beta2,
                               bias_correction2_sqrt, eps, weight_decay, 1 - lr * weight_decay),
            bool(decoupled_weight_decay), amsgrad)


# --- gradient clipping --------------------------------------------------------
@njit(**_KERNEL)
def _sum_of_squares(x):
    total = 0.0  # float64: a million float32 squares summed in float32 would lose digits
    for i in range(x.size):
        v = np.float64(x[i])
        total += v * v
    return total


@njit(**_THREADED)
def _sum_of_squares_threads(chunks, x):
    partial = np.zeros(chunks)
    for c in prange(chunks):
        lo, hi = chunk_bounds(c, chunks, x.size)
        partial[c] = _sum_of_squares(x[lo:hi])
    return partial.sum()


def sum_of_squares(x):
    """sum x_i^2, accumulated in float64, as a scalar of x's dtype (as torch's norm is)."""
    x = flat(contiguous(x))
    if x.size < PARALLEL_MIN_SIZE_ONE_ARRAY or not threads.THREADS_USABLE:
        return x.dtype.type(_sum_of_squares(x))
    return x.dtype.type(_sum_of_squares_threads(get_num_threads(), x))


@njit(**_KERNEL)
def _zero(x):
    for i in range(x.size):
        x[i] = 0


@njit(**_THREADED)
def _zero_threads(chunks, x):
    for c in prange(chunks):
        lo, hi = chunk_bounds(c, chunks, x.size)
        _zero(x[lo:hi])


def zero_(x):
    """x = 0, in place: ``zero_grad``. Clearing a word LM's 5.7 million float32
    gradients, out of cache as they are by then, took 2.3 ms with NumPy's fill,
    1.3-1.5 ms with this loop on one thread and 0.9 ms on two, where kernels
    share the BLAS's threads (on the workqueue layer two threads were slower
    than one: 1.7 ms)."""
    (x,) = _flat_buffers("zero_", x=x)
    chunks = thread_chunks(x.size, x.size)
    if chunks == 1:
        _zero(x)
    else:
        _zero_threads(chunks, x)


@njit(**_KERNEL)
def _scale(x, alpha):
    for i in range(x.size):
        x[i] = x[i] * alpha


@njit(**_THREADED)
def _scale_threads(chunks, x, alpha):
    for c in prange(chunks):
        lo, hi = chunk_bounds(c, chunks, x.size)
        _scale(x[lo:hi], alpha)


def scale_(x, alpha):
    """x *= alpha, in place."""
    (x,) = _flat_buffers("scale_", x=x)
    _launch(_scale, _scale_threads, PARALLEL_MIN_SIZE_ONE_ARRAY, x, as_float(alpha, x))


@njit(**_KERNEL)
def _clamp(x, low, high):
    for i in range(x.size):
        v = x[i]
        if v < low:
            v = low
        elif v > high:
            v = high
        x[i] = v  # a NaN fails both tests and stays NaN


@njit(**_THREADED)
def _clamp_threads(chunks, x, low, high):
    for c in prange(chunks):
        lo, hi = chunk_bounds(c, chunks, x.size)
        _clamp(x[lo:hi], low, high)


def clamp_(x, low, high):
    """x = min(max(x, low), high), in place."""
    (x,) = _flat_buffers("clamp_", x=x)
    _launch(_clamp, _clamp_threads, PARALLEL_MIN_SIZE_ONE_ARRAY, x, as_float(low, x),
            as_float(high, x))


# --- helpers ------------------------------------------------------------------
def _launch(one_thread, on_threads, min_size, x, *args):
    """One sweep over buffer ``x`` (and the rest): on one thread when small (or where
    threads cannot start, ``backend/cpu/threads.py``), else on all."""
    if x.size < min_size or not threads.THREADS_USABLE:
        one_thread(x, *args)
    else:
        on_threads(get_num_threads(), x, *args)


def _scalars_like(x):
    """Python floats -> scalars of x's dtype (float32 kernels stay float32)."""
    return lambda *values: [as_float(v, x) for v in values]


_RULES = BufferRules(kind="a NumPy array", is_array=lambda a: isinstance(a, np.ndarray),
                     is_c_contiguous=lambda a: a.flags.c_contiguous, contiguous=contiguous,
                     flat=flat, unused=lambda dtype: np.empty(0, dtype))


def _flat_buffers(op, **arrays):
    """1-D views of one op's buffers, checked (``ops/optim.py``'s ``flat_buffers``)."""
    return flat_buffers(op, _RULES, **arrays)
