"""Checks that turn a bad call into a clear error naming the layer.

A wrong shape must never reach a kernel, where it would crash or silently
read out of bounds, and a wrong size or option must never reach an
allocation. Messages follow one pattern, one line naming the layer, what it
expected and what it got::

    Linear(in_features=128): expected input (..., 128), got (32, 100)
    Linear: in_features must be an integer >= 1, got 0
    Linear(in_features=4, out_features=3, bias=True): backward called before forward

The argument checks (``check_int``, ``check_real``, ...) are what every layer's
constructor calls; they return the value converted (an ``int``, a ``float``),
so a constructor reads ``self.size = check_int(name, "size", size)``.
"""
import math
import numbers

import numpy as np

from ..errors import (ConfigError, DeviceError, DTypeError, NumericalError, ShapeError,
                      TargetError, TinyarError)

#: Largest size a layer accepts for one dimension: far beyond any real model, and small
#: enough that products of a few of them stay exact in int64 index arithmetic.
MAX_SIZE = 2**31 - 1
#: Floating dtypes a layer can hold its parameters in.
FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


# --- constructor arguments ---------------------------------------------------------------
def check_int(owner, name, value, low=1, high=MAX_SIZE):
    """``value`` as an ``int`` in [low, high]; a bool, a float (even 3.0) or a string is refused:
    a size is counted, never rounded."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral) \
            or not low <= value <= high:
        bound = f">= {low}" if high == MAX_SIZE else f"in [{low}, {high}]"
        raise ConfigError(f"{owner}: {name} must be an integer {bound}, got {value!r}")
    return int(value)


def check_ints(owner, name, value, count, low=1):
    """An int or a sequence of ``count`` ints, each >= ``low``, as a tuple of ``count`` ints
    (a convolution's kernel_size 3 or (3, 5))."""
    given = value
    if isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_)):
        value = (value,) * count
    ok = isinstance(value, (tuple, list)) and len(value) == count and all(
        isinstance(v, numbers.Integral) and not isinstance(v, (bool, np.bool_))
        and low <= v <= MAX_SIZE for v in value)
    if not ok:
        if count == 1:
            expected = f"an int >= {low}"
        else:
            sign = "positive" if low == 1 else "non-negative" if low == 0 else f">= {low}"
            expected = f"{sign} (an int or {count} ints >= {low})"
        raise ConfigError(f"{owner}: {name} must be {expected}, got {given!r}")
    return tuple(int(v) for v in value)


def check_real(owner, name, value, low=None, high=None, low_open=False, high_open=False):
    """``value`` as a finite ``float`` inside the interval given (open ends as asked)."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)) \
        and math.isfinite(value)
    if ok:
        ok = not (low is not None and (value <= low if low_open else value < low)) and \
            not (high is not None and (value >= high if high_open else value > high))
    if not ok:
        left = "(-inf" if low is None else ("(" if low_open else "[") + f"{low:g}"
        right = "inf)" if high is None else f"{high:g}" + (")" if high_open else "]")
        raise ConfigError(f"{owner}: {name} must be a finite number in {left}, {right}, "
                          f"got {value!r}")
    return float(value)


def check_choice(owner, name, value, choices):
    """``value`` must be one of ``choices`` (compared with ==, strings mostly)."""
    if not any(value is c or (type(value) is type(c) and value == c) for c in choices):
        raise ConfigError(f"{owner}: {name} must be one of {', '.join(map(repr, choices))}, "
                          f"got {value!r}")
    return value


def check_flag(owner, name, value):
    """``value`` as a ``bool``: True/False (or 1/0), never a string such as "False"."""
    if isinstance(value, (bool, np.bool_)) or (isinstance(value, numbers.Integral)
                                              and value in (0, 1)):
        return bool(value)
    raise ConfigError(f"{owner}: {name} must be True or False, got {value!r}")


def check_dtype(owner, dtype):
    """The parameters' dtype: float32 or float64 (what the kernels are compiled for)."""
    try:
        resolved = None if dtype is None else np.dtype(dtype)
    except TypeError:
        resolved = None
    # (not ``resolved in FLOAT_DTYPES``: NumPy compares None equal to float64)
    if resolved is None or not any(resolved == d for d in FLOAT_DTYPES):
        raise DTypeError(f"{owner}: dtype must be float32 or float64, got {dtype!r}")
    return resolved


# --- backward ----------------------------------------------------------------------------
def check_backward_ready(layer, state):
    """Raise unless a forward has run since the last backward that consumed it.

    ``state``: what ``Module`` recorded, None before any forward, ``"consumed"`` after
    the backward of a layer that reuses its forward's buffers (``single_backward``).
    """
    if state is None:
        raise TinyarError(f"{describe(layer)}: backward called before forward")
    if state == "consumed":
        raise TinyarError(f"{describe(layer)}: backward called twice after one forward; this "
                          f"layer's backward reuses the forward's buffers, so run forward again")


def check_output_grad(layer, grad, shape, allow_none=False,
                      what="a gradient of the output's shape"):
    """dL/d(output) handed to backward: a floating array of exactly ``shape`` (a number when
    the output was a scalar; None only where the layer reads it as zeros)."""
    if grad is None:
        if allow_none:
            return
        raise ShapeError(f"{describe(layer)}: expected {what} {tuple(shape)}, got None")
    got = getattr(grad, "shape", None)
    if got is None:
        if np.ndim(grad) == 0 and tuple(shape) == () and isinstance(grad, numbers.Real):
            return
        raise ShapeError(f"{describe(layer)}: expected {what} {tuple(shape)} as an array, got "
                         f"{type(grad).__name__}")
    if tuple(got) != tuple(shape):
        raise ShapeError(f"{describe(layer)}: expected {what} {tuple(shape)}, got {tuple(got)}")
    dtype = getattr(grad, "dtype", None)
    if dtype is not None and not np.issubdtype(dtype, np.floating):
        raise DTypeError(f"{describe(layer)}: expected a floating-point gradient, got dtype "
                         f"{np.dtype(dtype).name}")


def describe(layer):
    """``Linear(in_features=128, ...)``: how errors name a layer."""
    return f"{type(layer).__name__}({layer.extra_repr()})"


def check_float_input(layer, x, dtype=None, what="input"):
    """x must be a floating array, of ``dtype`` when given (the layer's dtype)."""
    x_dtype = getattr(x, "dtype", None)
    if x_dtype is None:
        raise DTypeError(f"{describe(layer)}: expected {what} as an array, got {type(x).__name__}")
    if not np.issubdtype(x_dtype, np.floating):
        raise DTypeError(f"{describe(layer)}: expected a floating-point {what}, got dtype "
                         f"{np.dtype(x_dtype).name}")
    if dtype is not None and np.dtype(x_dtype) != np.dtype(dtype):
        raise DTypeError(f"{describe(layer)}: expected {what} of dtype {np.dtype(dtype).name} "
                         f"(the layer's), got {np.dtype(x_dtype).name}; convert one of them with "
                         f".astype() / .to()")
    check_same_device(layer, x, what)


def check_same_device(layer, x, what="input"):
    """x must be where the layer's parameters are (a NumPy array with a GPU layer would
    otherwise fail deep inside a kernel)."""
    for p in getattr(layer, "_parameters", {}).values():
        if p is not None:
            if isinstance(x, np.ndarray) != isinstance(p.data, np.ndarray):
                here, there = ("cpu", "cuda") if isinstance(x, np.ndarray) else ("cuda", "cpu")
                raise DeviceError(f"{describe(layer)}: the {what} is on {here} and the layer's "
                                  f"parameters on {there}; move one of them "
                                  f"(tinyar.to_device(x, {there!r}) or .to({here!r}))")
            return


def check_shape(layer, x, expected, ndim=None, min_ndim=None, what="input"):
    """Compare ``x.shape`` with a pattern; ``expected`` is how the pattern prints.

    ``ndim``: exact rank (an int or a tuple of allowed ranks); ``min_ndim``:
    at least that rank. Trailing sizes are checked by the caller with
    ``check_size``.
    """
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if x.ndim not in allowed:
            raise ShapeError(f"{describe(layer)}: expected {what} {expected}, got {tuple(x.shape)}")
    if min_ndim is not None and x.ndim < min_ndim:
        raise ShapeError(f"{describe(layer)}: expected {what} {expected}, got {tuple(x.shape)}")


def check_size(layer, x, axis, size, expected, what="input"):
    """``x.shape[axis]`` must equal ``size``."""
    if x.shape[axis] != size:
        raise ShapeError(f"{describe(layer)}: expected {what} {expected}, got {tuple(x.shape)}")


def check_same_shape(layer, a, b, names=("input", "target")):
    if tuple(a.shape) != tuple(b.shape):
        raise ShapeError(f"{describe(layer)}: expected {names[1]} of the same shape as the "
                         f"{names[0]} {tuple(a.shape)}, got {tuple(b.shape)}")


def check_targets(layer, targets, num_classes, ignore_index=None, what="target"):
    """Integer class targets inside ``[0, num_classes)`` (``ignore_index`` allowed)."""
    dtype = getattr(targets, "dtype", None)
    if dtype is None or not np.issubdtype(dtype, np.integer):
        got = np.dtype(dtype).name if dtype is not None else type(targets).__name__
        raise DTypeError(f"{describe(layer)}: expected integer class indices as {what}, got {got}")
    if targets.size == 0:
        return
    t = np.asarray(targets)
    if ignore_index is not None:
        t = t[t != ignore_index]
        if t.size == 0:
            return
    low, high = int(t.min()), int(t.max())
    if low < 0 or high >= num_classes:
        bad = low if low < 0 else high
        raise TargetError(f"{describe(layer)}: {what} {bad} is outside [0, {num_classes}) "
                          f"(num_classes={num_classes})")


def check_finite_loss(layer, value):
    """A NaN or infinite loss means training diverged: say so where it happens."""
    if not np.isfinite(value):
        raise NumericalError(f"{describe(layer)}: the loss is {value}; training has diverged "
                             f"or the input holds NaN/inf (lower the learning rate, clip "
                             f"gradients, or check the data)")
