"""``Linear``: an affine map, y = x W^T + b."""
import numpy as np

from ..backend import backend_of
from . import init
from .checks import check_dtype, check_flag, check_float_input, check_int, check_shape, check_size
from .module import Module
from .parameter import Parameter


class Linear(Module):
    """y = x W^T + b.

    Shapes:
        x: (..., in_features)    y: (..., out_features)
        weight: (out_features, in_features)    bias: (out_features,)   (PyTorch's layout)

    Backward, with g = dL/dy flattened to (M, out) and x to (M, in):
        dL/dx = g W          (M, in)
        dL/dW += g^T x       (out, in)   one BLAS gemm with beta = 1
        dL/db += sum_rows g  (out,)

    Ops: ``B.matmul``, ``B.add_bias``, ``B.sum_rows``; their NumPy references:
    ``backend/ops/linalg.py``.
    """

    def __init__(self, in_features, out_features, bias=True, dtype=np.float32):
        super().__init__()
        self.in_features = check_int("Linear", "in_features", in_features)
        self.out_features = check_int("Linear", "out_features", out_features)
        bias, dtype = check_flag("Linear", "bias", bias), check_dtype("Linear", dtype)
        shape = (self.out_features, self.in_features)
        self.weight = Parameter(init.fan_in_uniform(shape, self.in_features, dtype))
        self.bias = Parameter(init.fan_in_uniform(self.out_features, self.in_features, dtype)) \
            if bias else None

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, " \
               f"bias={self.bias is not None}"

    def forward(self, x):
        check_float_input(self, x, self.weight.dtype)
        check_shape(self, x, f"(..., {self.in_features})", min_ndim=1)
        check_size(self, x, -1, self.in_features, f"(..., {self.in_features})")
        B = backend_of(x)
        self._x = x.reshape(-1, self.in_features)
        y = B.matmul(self._x, self.weight.data, trans_b=True)
        if self.bias is not None:
            B.add_bias(y, self.bias.data)
        self._lead_shape = x.shape[:-1]
        return y.reshape(*self._lead_shape, self.out_features)

    skips_input_grad = True

    def backward(self, grad_out, input_grad=True):
        """``input_grad=False`` skips dL/dx = g W (and returns None) when x is the data."""
        B = backend_of(grad_out)
        g = grad_out.reshape(-1, self.out_features)
        B.matmul(g, self._x, out=self.weight.grad, trans_a=True, accumulate=True)
        if self.bias is not None:
            B.sum_rows(g, out=self.bias.grad, accumulate=True)
        if not input_grad:
            return None
        dx = B.matmul(g, self.weight.data)
        return dx.reshape(*self._lead_shape, self.in_features)
