"""``MultiLevelSoftmax``: a class-factored softmax over a large label set.

    P(y | h) = P(c(y) | h) * P(y | c(y), h)

with c(y) the coarse class of label y in a ``ClassHierarchy``. The coarse
level is a softmax over the C classes; the fine level a softmax over the
labels *of one class only*. For a language model over V words with C ~ sqrt(V)
classes of ~sqrt(V) words, a training token costs O(H (C + |c(y)|)) instead
of O(H V) (Goodman 2001; Mikolov et al. 2011). The same component is the
head of the multi-level image classifier, where the levels are coarse and
fine categories.

Parameters (H = in_features, C classes, V labels):
    coarse.weight (C, H), coarse.bias (C,)
    fine.weight   (V, H), fine.bias (V,)   rows stored grouped by class
                  (row r is label hierarchy.order[r]), so the rows of class c
                  are the contiguous block starts[c]:starts[c+1]

Training loss for a batch of M rows h (M, H) with targets y (M,):

    L = (w_c * sum_m -log P(c_m | h_m) + w_f * sum_m -log P(y_m | c_m, h_m)) / M

with level weights w_c, w_f (1 and 1 by default: then L is exactly the
cross-entropy of the full factored distribution). Forward sorts the rows by
their target's class, so each class present in the batch costs one BLAS
product with its block of ``fine.weight``; the loop over the classes is one
compiled kernel (``backend/cpu/multilevel.py``), not Python. On a GPU the
whole fine level is one kernel (``backend/cuda/multilevel.py``: a block per
row). The sorting is index work on the targets, which come from the data
loader on the host: it stays there, and only the index arrays go over.

Backward (z = logits of one softmax, p = softmax(z), e = one-hot of the target):
    dL/dz = w (p - e) / M    for the coarse softmax and for each row's class softmax
    dW += dz^T h,  db += sum_rows dz,  dh += dz W    (per level, per class block)
"""
import numpy as np

from ..backend import backend_of
from .hierarchy import ClassHierarchy
from ..device import to_host
from ..errors import ConfigError, ShapeError
from ..random import generator
from .checks import (check_dtype, check_finite_loss, check_float_input, check_int, check_real,
                     check_shape, check_size, check_targets, describe)
from .linear import Linear
from .module import Module
from .sampling import sample_from_log_probs


class MultiLevelSoftmax(Module):
    """Two-level (class, then label) softmax head; see the module docstring.

    ``forward(h, targets)`` returns the mean loss (a float) and remembers what
    ``backward(grad=1.0)`` needs; ``backward`` returns dL/dh.
    ``log_prob(h)`` gives the exact (M, V) log-probabilities;
    ``predict(h, decode="joint"|"greedy")`` and ``sample(h, ...)`` decode.

    Ops: ``B.matmul``, ``B.add_bias``, ``B.cross_entropy_forward``, ``B.gather_rows``,
    ``B.multilevel_fine_forward``, ``B.cross_entropy_backward``, ``B.sum_rows``,
    ``B.multilevel_fine_backward``, ``B.scatter_add_rows``, ``B.log_softmax_forward``,
    ``B.add_channel_bias``; their NumPy references: ``backend/ops/linalg.py``,
    ``backend/ops/loss.py``, ``backend/ops/embedding.py``, ``backend/ops/multilevel.py``,
    ``backend/ops/softmax.py``, ``backend/ops/conv.py``.
    """

    #: It models P(coarse | h) itself (``nn/heads.py`` lists the interface of every head).
    predicts_coarse = True

    def __init__(self, in_features, hierarchy: ClassHierarchy, level_weights=(1.0, 1.0),
                 dtype=np.float32):
        super().__init__()
        if not isinstance(hierarchy, ClassHierarchy):
            raise TypeError(f"MultiLevelSoftmax: expected a ClassHierarchy, got "
                            f"{type(hierarchy).__name__}")
        name = type(self).__name__
        self.in_features = check_int(name, "in_features", in_features)
        self.hierarchy = hierarchy
        self.level_weights = check_level_weights(name, level_weights)
        dtype = check_dtype(name, dtype)
        C, V, H = hierarchy.num_classes, hierarchy.num_labels, self.in_features
        self.coarse = Linear(H, C, dtype=dtype)
        self.fine = Linear(H, V, dtype=dtype)  # rows grouped by class: see the module docstring
        self._order = hierarchy.order
        self._starts = hierarchy.starts
        self._parent = hierarchy.parent
        self._local = hierarchy.local_index(np.arange(V))
        self.last_losses = (float("nan"), float("nan"))

    def extra_repr(self):
        return (f"in_features={self.in_features}, classes={self.hierarchy.num_classes}, "
                f"labels={self.hierarchy.num_labels}")

    @property
    def num_classes(self):
        return self.hierarchy.num_classes

    @property
    def num_labels(self):
        return self.hierarchy.num_labels

    # --- checks -------------------------------------------------------------
    def _check_h(self, h):
        check_float_input(self, h, self.coarse.weight.dtype)
        check_shape(self, h, f"(M, {self.in_features})", ndim=2)
        check_size(self, h, 1, self.in_features, f"(M, {self.in_features})")

    # --- training -----------------------------------------------------------
    def forward(self, h, targets):
        self._check_h(h)
        targets = to_host(targets)  # the index work below is done on the host
        if targets.shape != (h.shape[0],):
            raise ShapeError(f"{describe(self)}: expected targets ({h.shape[0]},) for input "
                             f"{tuple(h.shape)}, got {tuple(targets.shape)}")
        check_targets(self, targets, self.num_labels)
        B = backend_of(h)
        h = B.contiguous(h)
        M = h.shape[0]
        w_coarse, w_fine = self.level_weights
        classes = self._parent[targets]
        # sorting by class happens on the host, where the targets are; the index
        # arrays the backend reads go over once (on the CPU, B.asarray copies nothing)
        by_class = np.argsort(classes, kind="stable")
        sorted_classes = classes[by_class]
        present, first = np.unique(sorted_classes, return_index=True)
        groups = np.stack([first, np.append(first[1:], M), self._starts[present],
                           self._starts[present + 1]], axis=1)
        local = B.asarray(self._local[targets[by_class]])
        classes_b, by_class_b = B.asarray(classes), B.asarray(by_class)

        # coarse level: one product with all C class vectors
        z = B.matmul(h, self.coarse.weight.data, trans_b=True)
        B.add_bias(z, self.coarse.bias.data)
        coarse_losses, coarse_max, coarse_logsum = B.cross_entropy_forward(z, classes_b)

        # fine level: rows sorted by class (a gather), then one op for all the classes
        # present (on the CPU a compiled loop of one BLAS product and one in-place
        # softmax per class block; on a GPU one kernel, a block per row)
        h_sorted = B.gather_rows(h, by_class_b)
        sorted_losses, probs = B.multilevel_fine_forward(h_sorted, self.fine.weight.data,
                                                          self.fine.bias.data, groups, local)
        fine_losses = np.empty(M, h.dtype)
        fine_losses[by_class] = B.to_host(sorted_losses)
        groups = (by_class_b, groups, h_sorted, local, probs)

        coarse_mean = float(B.to_host(coarse_losses).mean())
        fine_mean = float(fine_losses.mean())
        self.last_losses = (coarse_mean, fine_mean)
        self._cache = (h, classes_b, (z, coarse_max, coarse_logsum), groups)
        loss = w_coarse * coarse_mean + w_fine * fine_mean
        check_finite_loss(self, loss)
        return loss

    def backward(self, grad=1.0):
        if np.ndim(grad) != 0:
            raise ShapeError(f"{describe(self)}: expected grad as a number (the loss is one), "
                             f"got shape {np.shape(grad)}")
        h, classes, coarse_saved, groups = self._cache
        B = backend_of(h)
        M = h.shape[0]
        w_coarse, w_fine = self.level_weights
        scale = float(grad) / M

        row_scale = B.asarray(np.full(M, w_coarse * scale, h.dtype))
        dz = B.cross_entropy_backward(*coarse_saved, classes, row_scale)
        B.matmul(dz, h, out=self.coarse.weight.grad, trans_a=True, accumulate=True)
        B.sum_rows(dz, out=self.coarse.bias.grad, accumulate=True)
        dh = B.matmul(dz, self.coarse.weight.data)

        by_class, blocks, h_sorted, local, probs = groups
        dh_sorted = B.empty(h_sorted.shape, h_sorted.dtype)
        B.multilevel_fine_backward(probs, h_sorted, self.fine.weight.data, blocks, local,
                                   w_fine * scale, self.fine.weight.grad, self.fine.bias.grad,
                                   dh_sorted)
        # dh[by_class] += dh_sorted: a scatter-add of rows (by_class is a permutation)
        B.scatter_add_rows(dh_sorted, by_class, dh)
        return dh

    def loss_parts(self):
        """The last loss's two levels, as the language model logs them."""
        return {"class_loss": self.last_losses[0], "word_loss": self.last_losses[1]}

    def set_epoch(self, epoch):
        """Nothing changes with the epoch (``MultiLevelClassifier`` may schedule its level
        weights)."""
        return self.level_weights

    # --- inference ----------------------------------------------------------
    def coarse_log_prob(self, h):
        """log P(c | h) for every class: (M, C)."""
        self._check_h(h)
        B = backend_of(h)
        z = B.matmul(B.contiguous(h), self.coarse.weight.data, trans_b=True)
        B.add_bias(z, self.coarse.bias.data)
        return B.log_softmax_forward(z)

    def fine_log_prob(self, h, c):
        """log P(y | c, h) for the labels of class ``c``: (M, |c|), in ``labels_of(c)`` order."""
        B = backend_of(h)
        block = slice(self._starts[c], self._starts[c + 1])
        z = B.matmul(B.contiguous(h), self.fine.weight.data[block], trans_b=True)
        B.add_bias(z, self.fine.bias.data[block])
        return B.log_softmax_forward(z)

    def log_prob(self, h):
        """Exact log P(y | h) for every label y, in label-id order: (M, V).

        Costs O(H V) per row, like a flat softmax: for evaluation and
        inspection, not for training.
        """
        return self._log_prob(h, self.coarse_log_prob(h))

    def _log_prob(self, h, coarse):
        """``log_prob`` given the coarse level's log-probabilities (M, C), on h's backend:
        each class's block log P(y | c, h) + log P(c | h) goes into ``stored`` (M, V), in
        the stored order of ``fine.weight``'s rows; one gather then puts the columns in
        label-id order (on the transposes: ``gather_rows`` gathers rows)."""
        B = backend_of(h)
        M = h.shape[0]
        coarse_t = B.contiguous(coarse.T)  # (C, M): row c is log P(c | h) of every row
        stored = B.empty((M, self.num_labels), coarse.dtype)
        for c in range(self.num_classes):
            block = self.fine_log_prob(h, c)  # (M, |c|)
            B.add_channel_bias(block.reshape(1, M, block.shape[1]), coarse_t[c])
            stored[:, self._starts[c]:self._starts[c + 1]] = block
        # out[:, y] = stored[:, position[y]]
        return B.contiguous(B.gather_rows(B.contiguous(stored.T),
                                          B.asarray(self.hierarchy.position)).T)

    def level_log_probs(self, h):
        """(log P(c | h) (M, C), log P(y | h) (M, V)) as float64 host arrays."""
        coarse = self.coarse_log_prob(h)
        fine = self._log_prob(h, coarse)
        return (to_host(coarse).astype(np.float64), to_host(fine).astype(np.float64))

    def predict_levels(self, h, decode="joint"):
        """(coarse, fine) predictions as host int64 arrays: (M,) each; the coarse level
        is computed once for both. The coarse prediction is the coarse level's own,
        argmax_c P(c|x), with either decoding of the fine label (``predict``)."""
        self._check_decode(decode)
        coarse = self.coarse_log_prob(h)
        fine = self._predict(h, coarse, decode)
        return to_host(coarse).argmax(axis=1), np.asarray(to_host(fine), np.int64)

    def predict(self, h, decode="joint"):
        """Most likely label per row.

        ``joint``: the exact argmax over labels of P(c) P(y|c).
        ``greedy``: the most likely class, then the most likely label in it
        (cheaper, O(H (C + |c|)), and not always the joint argmax).
        """
        self._check_decode(decode)
        return self._predict(h, self.coarse_log_prob(h), decode)

    def _check_decode(self, decode):
        if decode not in ("joint", "greedy"):
            raise ValueError(f"{describe(self)}: decode must be 'joint' or 'greedy', got {decode!r}")

    def _predict(self, h, coarse, decode):
        """``predict`` given the coarse level's log-probabilities (M, C)."""
        if decode == "joint":
            return to_host(self._log_prob(h, coarse)).argmax(axis=1)
        classes = to_host(coarse).argmax(axis=1)
        out = np.empty(h.shape[0], np.int64)
        for c in np.unique(classes):
            rows = np.flatnonzero(classes == c)
            local = to_host(self.fine_log_prob(_rows(h, rows), c)).argmax(axis=1)
            out[rows] = self.hierarchy.labels_of(c)[local]
        return out

    def sample(self, h, temperature=1.0, top_k=None, rng=None):
        """Draw a label per row: a class from P(c|h), then a label from P(y|c,h).

        ``temperature`` divides the log-probabilities of both levels;
        ``top_k`` keeps the k most likely classes and, within the class, the k
        most likely labels.
        """
        rng = rng or generator()
        coarse = to_host(self.coarse_log_prob(h))  # drawing happens on the host
        classes = sample_from_log_probs(coarse, temperature, top_k, rng)
        out = np.empty(h.shape[0], np.int64)
        for c in np.unique(classes):
            rows = np.flatnonzero(classes == c)
            fine = to_host(self.fine_log_prob(_rows(h, rows), c))
            local = sample_from_log_probs(fine, temperature, top_k, rng)
            out[rows] = self.hierarchy.labels_of(c)[local]
        return out


def _rows(h, rows):
    """h[rows] for host row indices, as a gather on h's backend."""
    return backend_of(h).gather_rows(h, rows)


def check_level_weights(owner, weights):
    """(w_coarse, w_fine): two finite numbers >= 0, not both 0 (the loss would be 0)."""
    if not isinstance(weights, (tuple, list)) or len(weights) != 2:
        raise ConfigError(f"{owner}: level_weights must be a pair (w_coarse, w_fine), got "
                          f"{weights!r}")
    pair = tuple(check_real(owner, f"level_weights[{i}]", w, low=0.0)
                 for i, w in enumerate(weights))
    if pair == (0.0, 0.0):
        raise ConfigError(f"{owner}: level weights must be >= 0 and not both 0, got {pair}")
    return pair


class LevelWeightSchedule:
    """Per-level loss weights that change during training, as in branch CNNs
    (B-CNN, Zhu & Bajwa 2017): learn the coarse level first, then shift the
    weight to the fine level.

    ``LevelWeightSchedule([(0, (0.9, 0.1)), (10, (0.5, 0.5)), (20, (0.1, 0.9))])``
    gives (w_coarse, w_fine) = (0.9, 0.1) from epoch 0, (0.5, 0.5) from epoch
    10 and (0.1, 0.9) from epoch 20 (epochs, or steps: whatever the caller counts).
    """

    def __init__(self, milestones):
        name = "LevelWeightSchedule"
        if not isinstance(milestones, (tuple, list)):
            raise ConfigError(f"{name}: expected a list of (start, (w_coarse, w_fine)), got "
                              f"{type(milestones).__name__}")
        checked = []
        for i, milestone in enumerate(milestones):
            if not isinstance(milestone, (tuple, list)) or len(milestone) != 2:
                raise ConfigError(f"{name}: milestone {i} must be (start, (w_coarse, w_fine)), "
                                  f"got {milestone!r}")
            start = check_int(name, f"milestone {i}'s start", milestone[0], low=0)
            checked.append((start, check_level_weights(name, milestone[1])))
        milestones = sorted(checked)
        if not milestones or milestones[0][0] != 0:
            raise ConfigError("LevelWeightSchedule: the first milestone must start at 0, got "
                              f"{milestones[:1]}")
        self.milestones = milestones

    def __call__(self, epoch):
        weights = self.milestones[0][1]
        for start, w in self.milestones:
            if epoch >= start:
                weights = w
        return weights

    def to_list(self):
        return [[start, list(w)] for start, w in self.milestones]


class MultiLevelClassifier(MultiLevelSoftmax):
    """The multi-level softmax as a classifier head: P(y|x) = P(coarse|x) P(fine|coarse,x).

    Adds to ``MultiLevelSoftmax`` a level-weight schedule (``set_epoch``). Its
    ``predict_levels`` returns the coarse and the fine prediction: the coarse
    prediction is the coarse level's own, argmax_c P(c|x), with either decoding
    of the fine label:

    * ``joint``: fine = argmax_y P(c(y)) P(y|c(y)) exactly. Its class can differ
      from the coarse prediction (a confident label in a less likely class), which
      is what the consistency rate of ``train.metrics`` measures;
    * ``greedy``: fine = argmax within the predicted class (consistent by
      construction, and cheaper; it can miss the joint optimum).

    Ops: ``MultiLevelSoftmax``'s (listed there).
    """

    def __init__(self, in_features, hierarchy, level_weights=(1.0, 1.0), schedule=None,
                 dtype=np.float32):
        super().__init__(in_features, hierarchy, level_weights, dtype)
        if schedule is not None and not isinstance(schedule, LevelWeightSchedule):
            raise TypeError(f"MultiLevelClassifier: schedule must be a LevelWeightSchedule or "
                            f"None, got {type(schedule).__name__}")
        self.schedule = schedule
        if schedule is not None:
            self.level_weights = schedule(0)

    def set_epoch(self, epoch):
        if self.schedule is not None:
            self.level_weights = self.schedule(epoch)
        return self.level_weights
