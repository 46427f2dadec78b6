"""Classifiers with a flat or a multi-level head, on convolutional or recurrent backbones.

    image (N, C, H, W) -> backbone -> features (N, F) -> head

Heads:
* ``flat``: Linear(F, num_labels) and cross-entropy; the coarse prediction is
  the class of largest total probability (the sum over its labels).
* ``multilevel``: ``MultiLevelClassifier``, P(y|x) = P(coarse|x) P(fine|coarse,x),
  with per-level loss weights (optionally scheduled) and joint or greedy decoding.

Backbones:
* ``CNNClassifier(arch="lenet")``: conv 3x3 (32) - ReLU - max-pool 2 - conv 3x3 (64)
  - ReLU - max-pool 2 - flatten - Linear(., 128) - ReLU (each convolution's ReLU
  fused into it: ``Conv2d(..., activation="relu")``);
* ``CNNClassifier(arch="vgg")``: two VGG blocks [conv 3x3 - BatchNorm2d - ReLU] x 2
  + max-pool, 32 then 64 channels, then global average pooling;
* ``RowRNNClassifier``: reads the image row by row, a sequence of H rows of
  C*W pixels, with an RNN/LSTM/GRU; its last hidden state is the feature. It
  can be pre-trained without labels as an autoregressive model of the image
  (``pretrain_loss``: predict row t+1 from rows <= t), then fine-tuned with
  the head.

Every model has ``loss(x, y) -> float``, ``backward()``, ``features(x)``,
``predict_levels(x, decode) -> (coarse, fine)`` and ``level_probabilities(x)
-> (P(coarse|x), P(fine|x))``. Images may come from the
host (a data loader's NumPy batch) whatever the model's device: a model
moved to a GPU copies the batch over as it comes in.

``model.config()`` is a JSON object that, with the hierarchy, rebuilds the model:
``classifier_from_config(config, hierarchy)`` (or ``CNNClassifier.from_config``),
which checks every key first (``config_checks``) and raises ``CheckpointError``
naming a missing, unknown or out-of-range one.
"""
import numpy as np

from ..backend import backend_of
from ..nn.hierarchy import ClassHierarchy
from ..device import device_of, to_device, to_host
from ..errors import CheckpointError, ConfigError, ShapeError
from ..nn import (BatchNorm1d, FlatSoftmaxHead, Flatten, Linear, Module, MultiLevelClassifier,
                  ReLU, Sequential)
from ..nn.checks import describe
from ..nn.loss import BCEWithLogitsLoss
from ..nn.recurrent import GRU, LSTM, RNN, LastStep
from . import config_checks as cc

HEADS = ("flat", "multilevel")
CELLS = {"lstm": LSTM, "gru": GRU, "rnn": RNN}
#: The shared keys of both classifiers' configs; each adds its own (``CONFIG_SPEC``).
_COMMON_SPEC = {"image_shape": cc.image_shape(), "head": cc.choice(*HEADS),
                "level_weights": cc.level_weights(), "schedule": cc.schedule()}


class _Classifier(Module):
    """A backbone (``self.backbone``: x -> (N, F)) and a head over a hierarchy."""

    kind = None  # "cnn" or "rnn": the ``model`` entry of the config

    def _check_arguments(self, hierarchy, arguments):
        """The constructor's arguments checked by the class's CONFIG_SPEC (model excluded)."""
        name = type(self).__name__
        if not isinstance(hierarchy, ClassHierarchy):
            raise TypeError(f"{name}: hierarchy must be a ClassHierarchy, got "
                            f"{type(hierarchy).__name__}")
        return cc.check_arguments(name, arguments, self.CONFIG_SPEC)

    def _make_head(self, features, hierarchy, head, level_weights=(1.0, 1.0), schedule=None):
        self.head_kind, self.hierarchy = head, hierarchy
        self.level_weights, self.schedule = tuple(level_weights), schedule
        if head == "flat":
            self.head = FlatSoftmaxHead(features, hierarchy.num_labels, hierarchy=hierarchy)
        else:
            self.head = MultiLevelClassifier(features, hierarchy, level_weights, schedule)

    #: Before heads had one interface the head was called ``classifier``.
    RENAMED = {"classifier": "head"}

    def _check_images(self, x):
        if getattr(x, "ndim", None) != 4 or tuple(x.shape[1:]) != self.image_shape:
            raise ShapeError(f"{describe(self)}: expected images (N, {', '.join(map(str, self.image_shape))}), "
                             f"got {tuple(np.shape(x))}")

    def _on_model_device(self, x):
        """The batch going in: images moved to where the parameters are (no copy when
        they are there already)."""
        return to_device(x, device_of(self.flat_parameters().data))

    def features(self, x):
        self._check_images(x)
        return self.backbone(self._on_model_device(x))

    def loss(self, x, y):
        """Mean cross-entropy of the fine labels ``y`` (weighted per level for multilevel)."""
        return self.head(self.features(x), y)

    forward = loss

    def backward(self, grad=1.0):
        return self.backbone.backward(self.head.backward(grad))

    def _per_level(self, x, batch_size, levels):
        """``levels(h) -> (coarse, fine)`` over the features of ``x`` in batches, in
        evaluation mode; both parts concatenated over the batches."""
        was_training = self.training
        self.eval()
        coarse, fine = [], []
        try:
            for start in range(0, x.shape[0], batch_size):
                c, f = levels(self.features(x[start:start + batch_size]))
                coarse.append(c)
                fine.append(f)
        finally:
            self.train(was_training)
        return np.concatenate(coarse), np.concatenate(fine)

    def predict_levels(self, x, decode="joint", batch_size=512):
        """(coarse, fine) predictions, each level's own (see ``level_probabilities``)."""
        return self._per_level(x, batch_size, lambda h: self.head.predict_levels(h, decode))

    def level_probabilities(self, x, batch_size=512):
        """(P(coarse | x) (N, C), P(fine | x) (N, V)) as float64 host arrays, computed in
        batches in evaluation mode; each row of each sums to 1.

        Multi-level head: P(c|x) is its coarse level, P(y|x) = P(c(y)|x) P(y|c(y), x).
        Flat head: P(y|x) is its softmax, P(c|x) the sum of P(y|x) over the labels of c.
        """
        def levels(h):
            coarse, fine = self.head.level_log_probs(h)
            return np.exp(coarse), np.exp(fine)
        return self._per_level(x, batch_size, levels)

    def set_epoch(self, epoch):
        self.head.set_epoch(epoch)

    def config(self):
        """What ``from_config`` needs, with the hierarchy, to rebuild this model."""
        own = {key: getattr(self, key) for key in self.CONFIG_SPEC
               if key not in _COMMON_SPEC and key != "model"}
        return dict(own, model=self.kind, image_shape=list(self.image_shape),
                    head=self.head_kind, level_weights=list(self.level_weights),
                    schedule=None if self.schedule is None else self.schedule.to_list())

    @classmethod
    def from_config(cls, config, hierarchy):
        """The model ``config()`` describes, checked key by key (see the module docstring)."""
        values = cc.check_config(cls.__name__, config, cls.CONFIG_SPEC)
        del values["model"]
        return cc.construct(cls.__name__, lambda **kw: cls(hierarchy, **kw), values)


def classifier_from_config(config, hierarchy):
    """A ``CNNClassifier`` or ``RowRNNClassifier`` from its ``config()`` (its ``model``
    entry says which)."""
    kinds = {"cnn": CNNClassifier, "rnn": RowRNNClassifier}
    kind = config.get("model") if isinstance(config, dict) else None
    if kind not in kinds:
        raise CheckpointError(f"classifier config: model must be one of 'cnn', 'rnn', got "
                              f"{kind!r}")
    return kinds[kind].from_config(config, hierarchy)


#: LeNet's widths: the channels of its two convolutions and the features of its Linear layer.
LENET_WIDTHS = (32, 64, 128)


def _conv_layers():
    from ..nn.conv import Conv2d
    from ..nn.normalization2d import BatchNorm2d
    from ..nn.pooling import AdaptiveAvgPool2d, MaxPool2d
    return Conv2d, BatchNorm2d, MaxPool2d, AdaptiveAvgPool2d


class CNNClassifier(_Classifier):
    """Convolutional classifier; ``arch`` "lenet" or "vgg" (see the module docstring).

    Shapes: x (N, C, H, W) float; y (N,) fine labels of ``hierarchy``.
    """

    kind = "cnn"
    CONFIG_SPEC = dict(_COMMON_SPEC, model=cc.choice("cnn"), arch=cc.choice("lenet", "vgg"))

    def __init__(self, hierarchy, image_shape=(1, 28, 28), arch="lenet", head="multilevel",
                 level_weights=(1.0, 1.0), schedule=None):
        super().__init__()
        args = self._check_arguments(hierarchy, dict(
            image_shape=image_shape, arch=arch, head=head, level_weights=level_weights,
            schedule=schedule))
        Conv2d, BatchNorm2d, MaxPool2d, AdaptiveAvgPool2d = _conv_layers()
        self.image_shape, self.arch = args["image_shape"], args["arch"]
        c, height, width = self.image_shape
        if self.arch == "lenet":
            side_h, side_w = ((height - 2) // 2 - 2) // 2, ((width - 2) // 2 - 2) // 2
            if side_h < 1 or side_w < 1:
                raise ConfigError(f"CNNClassifier(lenet): images of {height}x{width} are too "
                                  f"small (at least 10x10)")
            # each convolution's ReLU fused into it (one pass less each way)
            c1, c2, features = LENET_WIDTHS
            self.backbone = Sequential(
                Conv2d(c, c1, 3, activation="relu"), MaxPool2d(2),
                Conv2d(c1, c2, 3, activation="relu"), MaxPool2d(2),
                Flatten(), Linear(c2 * side_h * side_w, features), ReLU())
        else:  # vgg
            self.backbone = Sequential(
                Conv2d(c, 32, 3, padding=1), BatchNorm2d(32), ReLU(),
                Conv2d(32, 32, 3, padding=1), BatchNorm2d(32), ReLU(), MaxPool2d(2),
                Conv2d(32, 64, 3, padding=1), BatchNorm2d(64), ReLU(),
                Conv2d(64, 64, 3, padding=1), BatchNorm2d(64), ReLU(), MaxPool2d(2),
                AdaptiveAvgPool2d(1), Flatten())
            features = 64
        self._make_head(features, hierarchy, args["head"], args["level_weights"],
                        args["schedule"])

    def extra_repr(self):
        return f"arch={self.arch!r}, head={self.head_kind!r}, labels={self.hierarchy.num_labels}"


def _image_rows(x):
    """(N, C, H, W) -> (N, H, C*W), C-contiguous, on the device of x."""
    n, c, h, w = x.shape
    if c == 1:
        return x.reshape(n, h, w)
    # NumPy's reshape copies the permuted view; the GPU's permute is a copy already
    return backend_of(x).permute(x, (0, 2, 1, 3)).reshape(n, h, c * w)


class _Rows(Module):
    """(N, C, H, W) images as sequences of H rows of C*W values: (N, H, C*W)."""

    def forward(self, x):
        self._shape = x.shape
        return _image_rows(x)

    def backward(self, grad_out):
        n, c, h, w = self._shape
        return backend_of(grad_out).permute(grad_out.reshape(n, h, c, w), (0, 2, 1, 3))


class RowRNNClassifier(_Classifier):
    """Reads an image row by row with a recurrent network; see the module docstring.

    Pre-training (no labels): ``pretrain_loss(x)`` predicts row t+1 from rows
    <= t through ``self.row_decoder`` (Linear(H, C*W)) with a per-pixel
    binary cross-entropy on pixels in [0, 1]; ``pretrain_backward()``.
    """

    kind = "rnn"
    CONFIG_SPEC = dict(_COMMON_SPEC, model=cc.choice("rnn"), hidden=cc.size(), layers=cc.size(),
                       cell=cc.choice(*CELLS))

    def __init__(self, hierarchy, image_shape=(1, 28, 28), hidden=128, layers=1, cell="lstm",
                 head="multilevel", level_weights=(1.0, 1.0), schedule=None):
        super().__init__()
        args = self._check_arguments(hierarchy, dict(
            image_shape=image_shape, hidden=hidden, layers=layers, cell=cell, head=head,
            level_weights=level_weights, schedule=schedule))
        self.image_shape, self.cell = args["image_shape"], args["cell"]
        self.hidden, self.layers = args["hidden"], args["layers"]
        hidden = self.hidden
        c, height, width = self.image_shape
        self.rows = _Rows()
        self.rnn = CELLS[self.cell](c * width, hidden, self.layers)
        # right after the RNN, so that the pre-training parameters (rnn + row_decoder)
        # are one contiguous slice of the flat buffer: one optimizer kernel, no repacking
        self.row_decoder = Linear(hidden, c * width)
        self.last = LastStep(self.rnn)
        self.norm = BatchNorm1d(hidden)
        self.backbone = Sequential(self.rows, self.last, self.norm)
        self.pretrain_criterion = BCEWithLogitsLoss()
        self._make_head(hidden, hierarchy, args["head"], args["level_weights"], args["schedule"])

    def extra_repr(self):
        return f"cell={self.cell!r}, head={self.head_kind!r}, labels={self.hierarchy.num_labels}"

    def pretrain_loss(self, x):
        """Autoregressive loss of the image: predict row t+1 from rows <= t (mean BCE per pixel)."""
        self._check_images(x)
        host = to_host(x)  # (a data loader's batch: no copy)
        sequence = self.rows(self._on_model_device(host))  # (N, H, C*W)
        B = backend_of(sequence)
        inputs = B.empty((sequence.shape[0], sequence.shape[1] - 1, sequence.shape[2]),
                         sequence.dtype)
        inputs[:] = sequence[:, :-1]
        output, _ = self.rnn(inputs)                    # reads rows 0 .. H-2
        self._pre_shape = output.shape
        logits = self.row_decoder(output.reshape(-1, output.shape[-1]))
        # rows 1 .. H-1 as pixel probabilities, made on the host where the batch is
        target = np.clip(_image_rows(host)[:, 1:], 0, 1).astype(host.dtype)
        return self.pretrain_criterion(logits, B.asarray(target.reshape(logits.shape)))

    def pretrain_backward(self, grad=1.0):
        grad_logits = self.pretrain_criterion.backward(grad)
        grad_output = self.row_decoder.backward(grad_logits).reshape(self._pre_shape)
        self.rnn.backward(grad_output)
