"""``Softmax`` and ``LogSoftmax`` along one axis.

For a vector x (one slice along ``dim``):

    softmax(x)_i     = exp(x_i) / sum_j exp(x_j)
    log_softmax(x)_i = x_i - log sum_j exp(x_j)

Both are computed with the row maximum subtracted first (the result is the
same, and exp cannot overflow). The kernels work on the last axis of a
(rows, C) array: for another ``dim`` the axis is moved last (``B.permute``,
one copy), normalised, and moved back (on the CPU a strided view, no copy;
numba's GPU arrays cannot be such views, so there it is a second copy).

For a classifier, feed the raw logits to ``CrossEntropyLoss`` instead of
Softmax -> log -> NLLLoss: it fuses the log-softmax and is more accurate.
"""
from ..backend import backend_of
from ..errors import ShapeError
from .checks import check_float_input, check_int, describe
from .module import Module


class _AlongAxis(Module):
    """Moves axis ``dim`` last and flattens the rest to rows, and back."""

    def __init__(self, dim=-1):
        super().__init__()
        self.dim = check_int(type(self).__name__, "dim", dim, low=-64, high=63)

    def extra_repr(self):
        return f"dim={self.dim}"

    def _axis(self, x):
        if not -x.ndim <= self.dim < x.ndim:
            raise ShapeError(f"{describe(self)}: expected input with an axis {self.dim} "
                             f"(at least {self.dim + 1 if self.dim >= 0 else -self.dim} axes), "
                             f"got {tuple(x.shape)}")
        return self.dim % x.ndim

    def _to_rows(self, x):
        """x as (rows, C) with the softmax axis last; remembers how to undo it."""
        axis = self._axis(x)
        self._shape = x.shape
        self._axes = None
        if axis != x.ndim - 1:
            self._axes = tuple(a for a in range(x.ndim) if a != axis) + (axis,)
            x = backend_of(x).permute(x, self._axes)
        self._moved_shape = x.shape
        return x.reshape(-1, x.shape[-1])

    def _grad_to_rows(self, grad_out):
        """dL/dy as rows (its shape, the output's, was checked by ``Module``)."""
        return self._to_rows(grad_out)

    def _from_rows(self, rows):
        y = rows.reshape(self._moved_shape)
        if self._axes is None:
            return y
        inverse = [0] * len(self._axes)
        for position, axis in enumerate(self._axes):
            inverse[axis] = position
        return backend_of(y).permute(y, inverse)


class Softmax(_AlongAxis):
    """y = softmax(x) along ``dim`` (default -1; torch has no default).

    Shapes: x: any shape with at least one axis; y: like x.

    Backward: the Jacobian of one slice is diag(y) - y y^T, so with g = dL/dy

        dL/dx = y * (g - sum_dim(g * y))

    computed from the saved output y.

    Ops: ``B.softmax_forward``, ``B.softmax_backward``, ``B.permute``; their NumPy references:
    ``backend/ops/softmax.py``, ``backend/ops/elementwise.py``.
    """

    def forward(self, x):
        check_float_input(self, x)
        rows = self._to_rows(x)
        self._y = backend_of(x).softmax_forward(rows)
        return self._from_rows(self._y)

    def backward(self, grad_out):
        g = self._grad_to_rows(grad_out)
        return self._from_rows(backend_of(grad_out).softmax_backward(g, self._y))


class LogSoftmax(_AlongAxis):
    """y = log softmax(x) = x - log sum_dim exp(x) along ``dim`` (default -1).

    Shapes: x: any shape with at least one axis; y: like x.

    Backward: dy_i/dx_j = [i = j] - softmax_j, so with g = dL/dy

        dL/dx = g - exp(y) * sum_dim(g)

    computed from the saved output y (exp(y) is the softmax).

    Ops: ``B.log_softmax_forward``, ``B.log_softmax_backward``, ``B.permute``; their NumPy
    references: ``backend/ops/softmax.py``, ``backend/ops/elementwise.py``.
    """

    def forward(self, x):
        check_float_input(self, x)
        rows = self._to_rows(x)
        self._y = backend_of(x).log_softmax_forward(rows)
        return self._from_rows(self._y)

    def backward(self, grad_out):
        g = self._grad_to_rows(grad_out)
        return self._from_rows(backend_of(grad_out).log_softmax_backward(g, self._y))
