"""Gradient clipping: ``clip_grad_norm_`` and ``clip_grad_value_``.

Both work on the flat gradient buffer when the parameters share one (all of
a model's do): the norm is one pass over it, the rescale a second one.
"""
import math

from ..backend import backend_of
from ..errors import NumericalError
from ..nn.module import Module
from ..nn.parameter import Parameter
from .optimizer import OptimizerError, _span_in_buffer, check_number


def clip_grad_norm_(parameters, max_norm, norm_type=2.0, error_if_nonfinite=False):
    """Rescale the gradients so that their total norm is at most ``max_norm``.

    The total norm is taken over all gradients together, as if they were
    concatenated into one vector (they are: the flat gradient buffer):

        total = (sum_i |g_i|^p)^(1/p)        (p = norm_type; max_i |g_i| for inf)
        if total > max_norm:  g <- g * max_norm / (total + 1e-6)

    as torch.nn.utils.clip_grad_norm_ does (the 1e-6 keeps the division safe).
    The direction of the update is unchanged; only a step from an unusually
    large gradient (an exploding RNN) is shortened.

    ``parameters``: a Module or an iterable of Parameters. Returns the total
    norm before clipping, as a Python float. ``error_if_nonfinite``: raise
    NumericalError when the norm is NaN or infinite (else the gradients then
    become NaN, as in torch).
    """
    max_norm = check_number("clip_grad_norm_", "max_norm", max_norm, low=0)
    norm_type = float(norm_type)
    if not (norm_type > 0):
        raise OptimizerError(f"clip_grad_norm_: expected norm_type > 0 (2.0, 1.0, inf, ...), "
                             f"got {norm_type}")
    grads = _grad_buffers(parameters, "clip_grad_norm_")
    if not grads:
        return 0.0
    B = backend_of(grads[0])
    if norm_type == 2.0:
        total = math.sqrt(sum(float(B.sum_of_squares(g)) for g in grads))
    else:
        # other norms are rare: a NumPy pass on the host, no kernel of their own
        hosts = [abs(B.to_host(g).astype("float64")) for g in grads]
        if math.isinf(norm_type):
            total = max(float(h.max()) if h.size else 0.0 for h in hosts)
        else:
            total = sum(float((h ** norm_type).sum()) for h in hosts) ** (1.0 / norm_type)
    if error_if_nonfinite and not math.isfinite(total):
        raise NumericalError(f"clip_grad_norm_: the total {norm_type}-norm of the gradients is "
                             f"{total}; training has diverged or the gradients hold NaN/inf")
    if total > max_norm or not math.isfinite(total):
        coefficient = max_norm / (total + 1e-6)
        for g in grads:
            B.scale_(g, coefficient)
    return total


def clip_grad_value_(parameters, clip_value):
    """Clamp every gradient element into ``[-clip_value, clip_value]``, in place.

    As torch.nn.utils.clip_grad_value_: one pass over the flat gradient buffer.
    """
    clip_value = check_number("clip_grad_value_", "clip_value", clip_value, low=0)
    for g in _grad_buffers(parameters, "clip_grad_value_"):
        backend_of(g).clamp_(g, -clip_value, clip_value)


def _grad_buffers(parameters, owner):
    """The gradient arrays to sweep: one flat slice when the parameters share a buffer.

    Unlike an optimizer, clipping never repacks parameters: a set that is not
    consecutive in one buffer is swept one gradient array at a time.
    """
    if isinstance(parameters, Module):
        parameters = parameters.parameters()
    elif isinstance(parameters, Parameter):
        parameters = [parameters]
    params = list(parameters)
    for i, p in enumerate(params):
        if not isinstance(p, Parameter):
            raise OptimizerError(f"{owner}: parameters[{i}] is a {type(p).__name__}, not a "
                                 f"Parameter")
    if not params:
        return []
    unique = list({id(p): p for p in params}.values())
    span = _span_in_buffer(unique)
    if span is not None:
        buffer, lo, hi = span
        return [buffer.grad[lo:hi]]
    # flags["C_CONTIGUOUS"]: a numba device array's .flags is a plain dict (no .c_contiguous)
    return [p.grad.reshape(-1) if p.grad.flags["C_CONTIGUOUS"] else p.grad for p in unique]
