"""``Flatten``: merge axes into one; backward restores the shape."""
from ..errors import DTypeError, ShapeError
from .checks import check_int, describe
from .module import Module


class Flatten(Module):
    """(N, d1, d2, ...) -> (N, d1*d2*...) for the default start_dim=1, end_dim=-1.

    Backward: dL/dx is dL/dy reshaped back to x's shape (a view, no copy).
    """

    def __init__(self, start_dim=1, end_dim=-1):
        super().__init__()
        self.start_dim = check_int("Flatten", "start_dim", start_dim, low=-64, high=63)
        self.end_dim = check_int("Flatten", "end_dim", end_dim, low=-64, high=63)

    def extra_repr(self):
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"

    def forward(self, x):
        if not hasattr(x, "shape"):
            raise DTypeError(f"{describe(self)}: expected input as an array, got "
                             f"{type(x).__name__}")
        start = self.start_dim + x.ndim if self.start_dim < 0 else self.start_dim
        end = self.end_dim + x.ndim if self.end_dim < 0 else self.end_dim
        if not 0 <= start <= end < x.ndim:
            raise ShapeError(f"{describe(self)}: expected input with axes {self.start_dim} to "
                             f"{self.end_dim}, got {tuple(x.shape)}")
        self._shape = x.shape
        merged = 1
        for size in x.shape[start:end + 1]:
            merged *= size
        return x.reshape(*x.shape[:start], merged, *x.shape[end + 1:])

    def backward(self, grad_out):
        return grad_out.reshape(self._shape)
