"""Parameters, and the flat buffers they live in.

A ``Parameter`` holds two arrays, ``data`` and ``grad``, of the same shape.
Every parameter of a model is a *view* into one flat ``data`` buffer, and its
gradient a view into a second flat ``grad`` buffer, so that an optimizer
step, a gradient-norm clip or ``zero_grad`` is one pass over one array::

    flat.data = [ W1 (512*784) | b1 (512) | W2 (512*512) | ... ]
    flat.grad = [ dW1          | db1      | dW2          | ... ]

``FlatBuffer.pack(params)`` builds the buffers and rebinds each parameter to
its views; a ``Module`` does this for all its parameters when it has been
constructed (see ``Module``), and again if parameters are added later.
"""
import numpy as np


class Parameter:
    """A learnable array and its gradient (which backward *adds* into)."""

    __slots__ = ("data", "grad", "flat")

    def __init__(self, data):
        self.data = data
        self.grad = data * 0  # same type, shape and device as data
        self.flat = None  # the FlatBuffer this parameter is a view of

    @property
    def shape(self):
        return self.data.shape

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def size(self):
        return self.data.size

    def __repr__(self):
        return f"Parameter(shape={tuple(self.shape)}, dtype={np.dtype(self.dtype).name})"


class FlatBuffer:
    """One flat ``data`` and one flat ``grad`` array holding a list of parameters."""

    def __init__(self, params, data, grad):
        self.params = params
        self.data = data
        self.grad = grad

    @classmethod
    def pack(cls, params, dtype=None, device=None):
        """Copy ``params`` into new flat buffers and rebind them as views.

        ``dtype`` and ``device`` convert on the way (``Module.to``).
        """
        from ..backend import backend_of, get_backend

        params = list(params)
        if not params:
            return cls(params, np.zeros(0, np.float32), np.zeros(0, np.float32))
        dtype = np.dtype(dtype or params[0].dtype)
        B = get_backend(device) if device else backend_of(params[0].data)
        total = sum(p.size for p in params)
        data, grad = B.zeros(total, dtype), B.zeros(total, dtype)
        offset = 0
        for p in params:
            n = p.size
            data_view = data[offset:offset + n].reshape(p.shape)
            grad_view = grad[offset:offset + n].reshape(p.shape)
            data_view[every_index(data_view)] = _convert(p.data, B, dtype)
            grad_view[every_index(grad_view)] = _convert(p.grad, B, dtype)
            p.data, p.grad, p.flat = data_view, grad_view, None
            offset += n
        buffer = cls(params, data, grad)
        for p in params:
            p.flat = buffer
        return buffer

    @classmethod
    def of(cls, params):
        """The buffer that holds exactly ``params`` in this order, packing them if needed."""
        params = list(params)
        if params and all(p.flat is params[0].flat for p in params):
            buffer = params[0].flat
            if buffer is not None and len(buffer.params) == len(params) and all(
                    a is b for a, b in zip(buffer.params, params)):
                return buffer
        return cls.pack(params)


def every_index(view):
    """The index of every element, ``view[...]``, spelled as one ``:`` per axis:
    numba's CUDA device arrays do not accept ``...``."""
    return (slice(None),) * view.ndim


def _convert(array, B, dtype):
    """``array`` as ``dtype`` on backend ``B`` (a no-op when it already is)."""
    if B.is_array(array) and array.dtype == dtype:
        return array
    # crossing devices, or converting a device array (which has no .astype),
    # goes through the host
    from ..backend import backend_of
    array = backend_of(array).to_host(array)
    return B.asarray(array.astype(dtype, copy=False))
