"""``FlatSoftmaxHead``: a softmax over every label, with the interface of every head.

A model holds ``self.backbone`` (x -> features h) and ``self.head`` (h -> a loss, or a
distribution over labels) and never asks which head it has. Both heads, this one and
``MultiLevelSoftmax`` (``nn/multilevel.py``), have

    forward(h, targets) -> mean loss (a float)     backward(grad=1.0) -> dL/dh
    log_prob(h) -> (M, V) log P(y | h)             predict(h, decode) -> (M,) label ids
    sample(h, temperature, top_k, rng) -> (M,)     loss_parts() -> named parts of the loss
    level_log_probs(h) -> (log P(coarse | h) (M, C), log P(fine | h) (M, V)), with a hierarchy
    predict_levels(h, decode) -> (coarse, fine) predictions, with a hierarchy
    set_epoch(epoch)                               (level-weight schedules; a no-op here)
    predicts_coarse                                whether the coarse level is its own

The flat head (H = in_features, V = num_labels):

    z = h W^T + b  (M, V)       L = mean_m -log softmax(z_m)[y_m]

Backward (p = softmax(z), e = one-hot of the target):
    dL/dz = (p - e) / M,  dW += dz^T h,  db += sum_rows dz,  dL/dh = dz W

Ops: ``Linear``'s (``matmul``, ``add_bias``, ``sum_rows``: ``backend/ops/linalg.py``) and
``CrossEntropyLoss``'s (``cross_entropy_forward``/``_backward``: ``backend/ops/loss.py``);
``log_softmax_forward`` (``backend/ops/softmax.py``) for ``log_prob``.

Weight tying (Press & Wolf 2017): ``tied_weight=embedding.weight`` makes W the embedding's
(V, H) matrix; both layers then add into one gradient.

With a ``hierarchy`` (a classifier over fine labels grouped into coarse classes) the
coarse level is read off the flat distribution: P(c | h) = the sum of P(y | h) over
the labels y of class c.
"""
import numpy as np

from ..backend import backend_of
from ..device import to_host
from ..errors import ConfigError
from .checks import check_dtype, check_flag, check_int, check_output_grad, describe
from .hierarchy import ClassHierarchy
from .linear import Linear
from .loss import CrossEntropyLoss
from .module import Module
from .parameter import Parameter
from .sampling import sample_from_log_probs


class FlatSoftmaxHead(Module):
    """Linear(in_features, num_labels) and cross-entropy; see the module docstring.

    Ops: ``B.matmul``, ``B.add_bias``, ``B.sum_rows``, ``B.cross_entropy_forward``,
    ``B.cross_entropy_backward``, ``B.log_softmax_forward``; their NumPy references:
    ``backend/ops/linalg.py``, ``backend/ops/loss.py``, ``backend/ops/softmax.py``.
    """

    #: Whether the head models the coarse level itself (the multi-level head does).
    predicts_coarse = False

    #: As a bare Linear (tinyar before heads had one interface), its entries were
    #: ``weight`` and ``bias``.
    RENAMED = {"weight": "linear.weight", "bias": "linear.bias"}

    def __init__(self, in_features, num_labels, bias=True, tied_weight=None, hierarchy=None,
                 dtype=np.float32):
        super().__init__()
        name = type(self).__name__
        in_features = check_int(name, "in_features", in_features)
        num_labels = check_int(name, "num_labels", num_labels)
        bias = check_flag(name, "bias", bias)
        dtype = check_dtype(name, dtype)
        if hierarchy is not None and not isinstance(hierarchy, ClassHierarchy):
            raise TypeError(f"{name}: hierarchy must be a ClassHierarchy, got "
                            f"{type(hierarchy).__name__}")
        if hierarchy is not None and hierarchy.num_labels != num_labels:
            raise ConfigError(f"{name}: the hierarchy has {hierarchy.num_labels} labels, the "
                              f"head {num_labels}")
        self.linear = Linear(in_features, num_labels, bias=bias, dtype=dtype)
        if tied_weight is not None:
            if not isinstance(tied_weight, Parameter) or \
                    tuple(tied_weight.shape) != (num_labels, in_features):
                raise ConfigError(f"{name}: tied_weight must be a Parameter of shape "
                                  f"({num_labels}, {in_features}), got "
                                  f"{getattr(tied_weight, 'shape', type(tied_weight).__name__)}")
            self.linear.weight = tied_weight
        self.criterion = CrossEntropyLoss()
        self.hierarchy = hierarchy

    def extra_repr(self):
        return f"in_features={self.linear.in_features}, labels={self.linear.out_features}"

    @property
    def num_labels(self):
        return self.linear.out_features

    # --- training -----------------------------------------------------------
    def forward(self, h, targets):
        return self.criterion(self.linear(h), targets)

    def backward(self, grad=1.0):
        check_output_grad(self, grad, (), what="grad as a number (the loss is one):")
        return self.linear.backward(self.criterion.backward(grad))

    def loss_parts(self):
        """The named parts of the last loss: the flat head's loss has one."""
        return {}

    def set_epoch(self, epoch):
        """Nothing changes with the epoch (the multi-level head's level weights may)."""

    # --- inference ----------------------------------------------------------
    def logits(self, h):
        return self.linear(h)

    def log_prob(self, h):
        """log P(y | h) for every label: (M, V)."""
        return backend_of(h).log_softmax_forward(self.linear(h))

    def predict(self, h, decode="joint"):
        """The most likely label per row (``decode`` is the multi-level head's choice;
        here both ways are the argmax)."""
        _check_decode(self, decode)
        return to_host(self.linear(h)).argmax(axis=1)

    def sample(self, h, temperature=1.0, top_k=None, rng=None):
        """Draw a label per row from softmax(z / temperature), among the top k."""
        return sample_from_log_probs(self.linear(h), temperature, top_k, rng)

    def level_log_probs(self, h):
        """(log P(c | h) (M, C), log P(y | h) (M, V)), float64 host arrays; P(c | h) sums
        P(y | h) over the labels of c."""
        fine = _log_softmax64(to_host(self.linear(h)))
        coarse = _log_class_marginal(np.exp(fine), self._hierarchy())
        return coarse, fine

    def predict_levels(self, h, decode="joint"):
        """(coarse, fine) predictions: fine = argmax_y P(y | h), coarse = argmax_c of the
        marginal P(c | h), which can differ from the fine label's class (what the
        consistency rate measures)."""
        _check_decode(self, decode)
        coarse, fine = self.level_log_probs(h)
        return coarse.argmax(axis=1), fine.argmax(axis=1)

    def _hierarchy(self):
        if self.hierarchy is None:
            raise ConfigError(f"{describe(self)}: levels need a hierarchy "
                              f"(FlatSoftmaxHead(..., hierarchy=...))")
        return self.hierarchy


def _check_decode(head, decode):
    if decode not in ("joint", "greedy"):
        raise ValueError(f"{describe(head)}: decode must be 'joint' or 'greedy', got {decode!r}")


def _log_softmax64(logits):
    z = logits.astype(np.float64)
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def _log_class_marginal(p, hierarchy):
    """log P(c) = log of the sum of P(y) over the labels y of class c: (M, V) -> (M, C)."""
    marginal = np.zeros((p.shape[0], hierarchy.num_classes))
    np.add.at(marginal.T, hierarchy.parent, p.T)  # row c of marginal.T sums p's columns y in c
    with np.errstate(divide="ignore"):
        return np.log(marginal)
