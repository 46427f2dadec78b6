"""``Dropout``: zero random entries while training, to regularise.

The mask comes from a counter-based generator (Philox2x32-10, see
``backend/ops/elementwise.py``): entry i is kept when a hash of
(seed, offset + i) clears a threshold. Each forward draws a fresh
(seed, offset) from tinyar's generator, a few bytes on the host, and the
backend computes the mask where the data is: on a GPU no mask is made on
the host and copied over, and a CPU and a GPU run from the same
``tinyar.manual_seed`` drop the same units.
"""
from ..backend import backend_of
from ..random import generator
from .checks import check_float_input, check_real
from .module import Module


def new_stream():
    """A fresh (seed, offset) for ``B.dropout_mask``, drawn from tinyar's generator.

    The seed is Philox's 32-bit key; the offset's high 32 bits are random
    too (its low 32 bits are 0, room for 2^32 mask entries), so two draws
    give the same mask with probability 2^-64.
    """
    # one 64-bit word of the generator's raw stream (0.4 us; Generator.integers takes 5)
    word = int(generator().bit_generator.random_raw())
    return word & 0xFFFFFFFF, (word >> 32) << 32


class Dropout(Module):
    """Inverted dropout: y = x * keep / (1 - p), keep ~ Bernoulli(1 - p) per entry.

    Shapes: any; y has the shape of x.

    Dividing by the keep probability during training keeps E[y] = x, so that
    evaluation (where Dropout is the identity) needs no rescaling. The mask
    is drawn anew every forward (``new_stream``); ``tinyar.manual_seed``
    makes the sequence of masks repeatable, on the CPU and on a GPU alike.

    Backward, with the same mask: dL/dx = dL/dy * keep / (1 - p).
    Special cases: evaluation mode and p = 0 are the identity (the input itself is
    returned, as PyTorch does); p = 1 drops everything (y = 0, dL/dx = 0).

    Subclasses that draw another kind of mask (``Dropout2d``) set ``_keep``
    (a bool array of x's shape) and ``_scale`` in their forward and reuse
    this backward.

    Ops: ``B.dropout_mask``, ``B.dropout_apply``; their NumPy references:
    ``backend/ops/elementwise.py``.
    """

    def __init__(self, p=0.5):
        super().__init__()
        # p = 1 is allowed (as in PyTorch): everything is dropped, y = 0
        self.p = check_real(type(self).__name__, "p", p, low=0.0, high=1.0)

    def extra_repr(self):
        return f"p={self.p}"

    def forward(self, x):
        check_float_input(self, x)
        if not self.training or self.p == 0.0:
            self._keep = None
            return x
        B = backend_of(x)
        self._keep = B.dropout_mask(x.shape, self.p, *new_stream())
        self._scale = 0.0 if self.p == 1.0 else 1.0 / (1.0 - self.p)
        return B.dropout_apply(x, self._keep, self._scale)

    def backward(self, grad_out):
        if self._keep is None:
            return grad_out
        return backend_of(grad_out).dropout_apply(grad_out, self._keep, self._scale)
