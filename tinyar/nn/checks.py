"""Input checks that turn a bad call into a clear error naming the layer.

A wrong shape must never reach a kernel, where it would crash or silently
read out of bounds. Messages follow one pattern::

    Linear(in_features=128): expected input (..., 128), got (32, 100)
"""
import numpy as np

from ..errors import DeviceError, DTypeError, NumericalError, ShapeError, TargetError


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
