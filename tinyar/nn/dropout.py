"""``Dropout``: zero random entries while training, to regularise."""
import numpy as np

from ..backend import backend_of
from ..random import generator
from .checks import check_float_input
from .module import Module


class Dropout(Module):
    """Inverted dropout: y = x * keep / (1 - p), keep ~ Bernoulli(1 - p) per entry.

    Shapes: any; y has the shape of x.

    Dividing by the keep probability during training keeps E[y] = x, so that
    evaluation (where Dropout is the identity) needs no rescaling. The mask
    is drawn from tinyar's generator: ``tinyar.manual_seed`` makes it repeatable.

    Backward, with the same mask: dL/dx = dL/dy * keep / (1 - p).
    Special cases: evaluation mode and p = 0 are the identity (the input itself is
    returned, as PyTorch does); p = 1 drops everything (y = 0, dL/dx = 0).
    """

    def __init__(self, p=0.5):
        super().__init__()
        p = float(p)
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"Dropout: p is the probability of dropping an entry and must lie "
                             f"in [0, 1], got {p}")
        self.p = p

    def extra_repr(self):
        return f"p={self.p}"

    def forward(self, x):
        check_float_input(self, x)
        if not self.training or self.p == 0.0:
            self._keep = None
            return x
        B = backend_of(x)
        # u ~ U[0, 1): P(u >= p) = 1 - p
        self._keep = B.asarray(generator().random(x.shape, dtype=np.float32) >= self.p)
        self._scale = 0.0 if self.p == 1.0 else 1.0 / (1.0 - self.p)
        return B.dropout_apply(x, self._keep, self._scale)

    def backward(self, grad_out):
        if self._keep is None:
            return grad_out
        return backend_of(grad_out).dropout_apply(grad_out, self._keep, self._scale)
