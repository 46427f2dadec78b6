"""Class hierarchies: which coarse class each fine label belongs to.

A two-level hierarchy maps every fine label (a word of the vocabulary, an
image class) to one coarse class. The multi-level softmax factorises

    P(y | h) = P(class(y) | h) * P(y | class(y), h)

so it needs, for each coarse class, the list of its fine labels. We store the
fine labels *grouped by class*: ``order`` lists every fine label, class 0's
first, then class 1's, and so on, and ``starts[c]:starts[c + 1]`` is class
c's slice of ``order``. The output weights of the fine level are stored in
that order too, so the weights of one class are one contiguous block of rows:
one BLAS call per class.

Hierarchies come from

* ``from_counts(counts, num_classes)``: frequency binning on the square root
  of the counts (Mikolov et al. 2011, "Extensions of recurrent neural network
  language model", sec. 3): labels sorted by frequency and cut into classes of
  about equal sqrt-frequency mass, so frequent words sit in small classes and
  rare words share large ones;
* ``from_parents(parents)``: a given label -> class mapping;
* ``from_mapping({"vehicles": ["car", ...], ...}, labels)``, and the same
  mapping read from a JSON file by ``from_json(path, labels)``.
"""
import json
import os
from pathlib import Path

import numpy as np

from ..errors import TinyarError


class HierarchyError(TinyarError, ValueError):
    """A hierarchy that does not fit its labels (a leaf missing, an unknown class...)."""


class ClassHierarchy:
    """Two levels: ``parent[label]`` is the coarse class of each fine label.

    Attributes:
        parent:  (num_labels,) int64, coarse class of each fine label
        order:   (num_labels,) int64, fine labels grouped by class
        position:(num_labels,) int64, where each label sits in ``order``
        starts:  (num_classes + 1,) int64, class c owns order[starts[c]:starts[c+1]]
        class_names, label_names: optional lists of strings
    """

    def __init__(self, parent, class_names=None, label_names=None):
        parent = np.asarray(parent)
        if parent.ndim != 1 or parent.size == 0:
            raise HierarchyError(f"ClassHierarchy: expected a non-empty 1-D parent array, got "
                                 f"shape {parent.shape}")
        if not np.issubdtype(parent.dtype, np.integer):
            raise HierarchyError(f"ClassHierarchy: parent must hold integer class ids, got "
                                 f"{parent.dtype}")
        num_classes = int(parent.max()) + 1
        if parent.min() < 0:
            raise HierarchyError(f"ClassHierarchy: class id {int(parent.min())} is negative")
        sizes = np.bincount(parent, minlength=num_classes)
        if (sizes == 0).any():
            empty = np.flatnonzero(sizes == 0)[:5].tolist()
            raise HierarchyError(f"ClassHierarchy: classes {empty} have no labels; class ids "
                                 f"must be 0..{num_classes - 1} with no gaps")
        self.parent = parent.astype(np.int64)
        self.order = np.argsort(self.parent, kind="stable").astype(np.int64)
        self.position = np.empty_like(self.order)
        self.position[self.order] = np.arange(self.order.size)
        self.starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        if class_names is not None and len(class_names) != num_classes:
            raise HierarchyError(f"ClassHierarchy: {len(class_names)} class names for "
                                 f"{num_classes} classes")
        if label_names is not None and len(label_names) != parent.size:
            raise HierarchyError(f"ClassHierarchy: {len(label_names)} label names for "
                                 f"{parent.size} labels")
        self.class_names = list(class_names) if class_names is not None else None
        self.label_names = list(label_names) if label_names is not None else None

    # --- sizes --------------------------------------------------------------
    @property
    def num_labels(self):
        return int(self.parent.size)

    @property
    def num_classes(self):
        return int(self.starts.size - 1)

    def class_size(self, c):
        return int(self.starts[c + 1] - self.starts[c])

    def sizes(self):
        return np.diff(self.starts)

    def labels_of(self, c):
        """The fine labels of class ``c`` (in their stored order)."""
        return self.order[self.starts[c]:self.starts[c + 1]]

    def local_index(self, labels):
        """Index of each label inside its own class (0 .. class_size - 1)."""
        labels = np.asarray(labels)
        return self.position[labels] - self.starts[self.parent[labels]]

    # --- builders -----------------------------------------------------------
    @classmethod
    def from_parents(cls, parent, class_names=None, label_names=None):
        return cls(parent, class_names, label_names)

    @classmethod
    def from_counts(cls, counts, num_classes=None, label_names=None):
        """Frequency binning on sqrt(count); ``num_classes`` defaults to round(sqrt(V)).

        Classes that binning would leave empty (a single word heavier than
        1/num_classes of the mass) are dropped, so the result may have fewer
        classes than asked for; it never has more.
        """
        counts = np.asarray(counts, dtype=np.float64)
        vocab = counts.size
        if vocab < 1:
            raise HierarchyError("ClassHierarchy.from_counts: no labels")
        if num_classes is None:
            num_classes = max(1, int(round(np.sqrt(vocab))))
        num_classes = int(num_classes)
        if not 1 <= num_classes <= vocab:
            raise HierarchyError(f"ClassHierarchy.from_counts: num_classes must be in "
                                 f"[1, {vocab}] (the number of labels), got {num_classes}")
        by_frequency = np.argsort(-counts, kind="stable")
        mass = np.sqrt(np.maximum(counts[by_frequency], 0.0))
        total = mass.sum()
        if total <= 0:
            mass, total = np.ones(vocab), float(vocab)
        before = np.cumsum(mass) - mass  # sqrt-mass of all more frequent labels
        bins = np.minimum((before / total * num_classes).astype(np.int64), num_classes - 1)
        # at least one label per class where possible: the k-th most frequent label can
        # not be in a class beyond k
        bins = np.minimum(bins, np.arange(vocab))
        _, dense = np.unique(bins, return_inverse=True)
        parent = np.empty(vocab, np.int64)
        parent[by_frequency] = dense
        return cls(parent, label_names=label_names)

    @classmethod
    def from_mapping(cls, mapping, labels):
        """``{"class name": [label, ...], ...}`` over the list ``labels`` (every label once)."""
        index = {label: i for i, label in enumerate(labels)}
        parent = np.full(len(labels), -1, np.int64)
        for c, (name, members) in enumerate(mapping.items()):
            for label in members:
                if label not in index:
                    raise HierarchyError(f"ClassHierarchy: class {name!r} lists {label!r}, which "
                                         f"is not one of the {len(labels)} labels")
                if parent[index[label]] >= 0:
                    raise HierarchyError(f"ClassHierarchy: label {label!r} is in two classes")
                parent[index[label]] = c
        uncovered = [labels[i] for i in np.flatnonzero(parent < 0)]
        if uncovered:
            raise HierarchyError(f"ClassHierarchy: the classes do not cover every label; "
                                 f"{len(uncovered)} missing, e.g. {uncovered[:5]}")
        return cls(parent, class_names=list(mapping), label_names=list(labels))

    @classmethod
    def from_json(cls, path, labels):
        """Read a mapping file ``{"class name": [label, ...], ...}`` over ``labels``.

        ``labels`` lists the data's fine labels in label-id order (label id i is
        ``labels[i]``); an int n stands for the ids 0..n-1, which the file then
        names as JSON integers. Every label must appear in exactly one class;
        the errors name the file and the offending class or labels.
        """
        path = Path(path).expanduser()
        try:
            with open(path, encoding="utf-8") as f:
                mapping = json.load(f)
        except json.JSONDecodeError as e:
            raise HierarchyError(f"{path}: not valid JSON ({e})") from None
        if isinstance(labels, (int, np.integer)):
            labels = list(range(int(labels)))
        labels = list(labels)
        if not isinstance(mapping, dict) or not mapping:
            raise HierarchyError(f"{path}: expected a JSON object {{\"class name\": [labels...]}}, "
                                 f"got {type(mapping).__name__}")
        for name, members in mapping.items():
            if not isinstance(members, list):
                raise HierarchyError(f"{path}: class {name!r} must map to a list of labels, got "
                                     f"{type(members).__name__}")
            if not members:
                raise HierarchyError(f"{path}: class {name!r} has no labels")
        try:
            return cls.from_mapping(mapping, labels)
        except HierarchyError as e:
            raise HierarchyError(f"{path}: {e}") from None

    # --- persistence --------------------------------------------------------
    def to_dict(self):
        return {"parent": self.parent.tolist(), "class_names": self.class_names,
                "label_names": self.label_names}

    @classmethod
    def from_dict(cls, data):
        return cls(np.asarray(data["parent"], np.int64), data.get("class_names"),
                   data.get("label_names"))

    def save(self, path):
        tmp = f"{path}.tmp"
        with open(tmp, "w") as f:
            json.dump(self.to_dict(), f)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path):
        with open(path) as f:
            return cls.from_dict(json.load(f))

    def __repr__(self):
        sizes = self.sizes()
        return (f"ClassHierarchy({self.num_labels} labels in {self.num_classes} classes, "
                f"class sizes {sizes.min()}..{sizes.max()})")
