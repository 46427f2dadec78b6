"""Per-channel layers for images: ``BatchNorm2d`` and ``Dropout2d``.

Both treat a channel of one sample, an (H, W) plane, as one unit.
BatchNorm2d is BatchNorm1d on the (N, C, H*W) view of x: each channel is
normalised over its N * H * W values (the math is in ``normalization.py``).
Dropout2d drops whole channels: neighbouring pixels of a feature map are
strongly correlated, so dropping single pixels regularises little (Tompson
et al., 2015, "Efficient object localization using convolutional networks").
"""
import numpy as np

from ..backend import backend_of
from ..errors import ShapeError
from .checks import check_float_input, check_shape, check_size, describe
from .dropout import Dropout, new_stream
from .normalization import BatchNorm1d


class BatchNorm2d(BatchNorm1d):
    """Normalise each channel over the batch and both spatial axes.

    Shapes:
        x: (N, C, H, W)    y: like x
        weight, bias: (C,); buffers running_mean, running_var: (C,),
        num_batches_tracked: int64 scalar (PyTorch's names, so state dicts match)

    Training: statistics over the M = N * H * W values of each channel;
    running averages updated with the unbiased variance (as BatchNorm1d).
    Evaluation: the running statistics. Forward and backward are
    BatchNorm1d's on the (N, C, H*W) view of x (a reshape, no copy when x is
    contiguous), so the formulas are those of ``normalization.py`` with L = H * W.

    Ops: ``B.batch_norm_forward_train``, ``B.batch_norm_forward_eval``,
    ``B.batch_norm_backward``, ``B.batch_norm_backward_eval``, ``B.batch_norm_update_running``;
    their NumPy references: ``backend/ops/norm.py``.
    """

    def forward(self, x):
        c = self.num_features
        expected = f"(N, {c}, H, W)"
        check_float_input(self, x, self._layer_dtype())
        check_shape(self, x, expected, ndim=4)
        check_size(self, x, 1, c, expected)
        if (self.training or not self.track_running_stats) and \
                x.shape[0] * x.shape[2] * x.shape[3] < 2:
            raise ShapeError(f"{describe(self)}: expected more than 1 value per channel when "
                             f"training (N * H * W >= 2), got input {tuple(x.shape)}")
        self._shape4 = x.shape
        return super().forward(x.reshape(x.shape[0], c, -1)).reshape(x.shape)

    def backward(self, grad_out):
        n, c = self._shape4[:2]
        return super().backward(grad_out.reshape(n, c, -1)).reshape(self._shape4)


class Dropout2d(Dropout):
    """Channel dropout: each (sample, channel) plane is kept whole or zeroed.

    Shapes: x (N, C, H, W), or (N, C, L) (channel-wise 1-d dropout, as
    PyTorch does with a 3-d input); y like x.

    keep[n, c] ~ Bernoulli(1 - p), one counter-based draw per plane (as
    ``Dropout``: seeded by tinyar's generator, the same on CPU and GPU), and
        y[n, c] = x[n, c] * keep[n, c] / (1 - p)
        dL/dx[n, c] = dL/dy[n, c] * keep[n, c] / (1 - p)      (the same mask)
    Evaluation mode and p = 0: the identity, as Dropout.

    Ops: ``B.dropout_mask``, ``B.dropout_apply``; their NumPy references:
    ``backend/ops/elementwise.py``.
    """

    def forward(self, x):
        check_float_input(self, x)
        check_shape(self, x, "(N, C, H, W) or (N, C, L)", ndim=(3, 4))
        if not self.training or self.p == 0.0:
            self._keep = None
            return x
        B = backend_of(x)
        plane = int(np.prod(x.shape[2:]))
        # one draw per (sample, channel) plane, expanded to one entry per element on the
        # device where x is: forward and backward reuse it
        self._keep = B.dropout_mask(x.shape, self.p, *new_stream(), group=plane)
        self._scale = 0.0 if self.p == 1.0 else 1.0 / (1.0 - self.p)
        return B.dropout_apply(x, self._keep, self._scale)
