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
  rare words share large ones; with ``shortlist=k`` the k most frequent labels
  are each a class of their own first (the first level then predicts those
  words directly, as the head of Grave et al. 2017's adaptive softmax does);
* ``from_parents(parents)``: a given label -> class mapping;
* ``from_mapping({"vehicles": ["car", ...], ...}, labels)``, and the same
  mapping read from a JSON file by ``from_json(path, labels)``.

Files are written and read through ``tinyar.fileio`` (atomic, bounded,
depth-limited), and ``from_dict`` / ``from_json`` check every field of what
they read: a hierarchy may come from someone else's checkpoint.
"""
import numbers
from pathlib import Path

import numpy as np

from .. import fileio
from ..errors import TinyarError

#: Most labels a hierarchy read from a file may have.
MAX_LABELS = 10_000_000


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
        if parent.min() < 0:
            raise HierarchyError(f"ClassHierarchy: class id {int(parent.min())} is negative")
        # every class holds a label, so there are at most as many classes as labels: a
        # larger id is an error, found before bincount would allocate that many counters
        if parent.max() >= parent.size:
            raise HierarchyError(f"ClassHierarchy: class id {int(parent.max())} for "
                                 f"{parent.size} labels; class ids must be 0..num_classes-1 "
                                 f"with no gaps, so at most {parent.size - 1}")
        num_classes = int(parent.max()) + 1
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
    def from_counts(cls, counts, num_classes=None, label_names=None, shortlist=0):
        """Frequency binning on sqrt(count); ``num_classes`` defaults to round(sqrt(V)).

        Classes that binning would leave empty (a single word heavier than
        1/num_classes of the mass) are dropped, so the result may have fewer
        classes than asked for; it never has more.

        ``shortlist`` = k > 0: the k most frequent labels come first, each a
        class of its own (classes 0..k-1, most frequent first, so P(y) is the
        first level's probability alone for them), and the other V - k labels
        are binned as above into ``num_classes`` classes (default
        round(sqrt(V - k))), numbered from k.
        """
        counts = np.asarray(counts, dtype=np.float64)
        vocab = counts.size
        if vocab < 1:
            raise HierarchyError("ClassHierarchy.from_counts: no labels")
        if isinstance(shortlist, bool) or not isinstance(shortlist, numbers.Integral) or \
                not 0 <= shortlist < vocab:
            raise HierarchyError(f"ClassHierarchy.from_counts: shortlist must be an integer "
                                 f"in [0, {vocab - 1}] (fewer than the {vocab} labels), got "
                                 f"{shortlist!r}")
        by_frequency = np.argsort(-counts, kind="stable")
        shortlist = int(shortlist)
        if shortlist:
            rest = by_frequency[shortlist:]
            binned = cls.from_counts(counts[rest], num_classes)
            parent = np.empty(vocab, np.int64)
            parent[by_frequency[:shortlist]] = np.arange(shortlist)
            parent[rest] = shortlist + binned.parent
            return cls(parent, label_names=label_names)
        if num_classes is None:
            num_classes = max(1, int(round(np.sqrt(vocab))))
        num_classes = int(num_classes)
        if not 1 <= num_classes <= vocab:
            raise HierarchyError(f"ClassHierarchy.from_counts: num_classes must be in "
                                 f"[1, {vocab}] (the number of labels), got {num_classes}")
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
        """``{"class name": [label, ...], ...}`` over the list ``labels`` (every label once).

        Labels are strings or integers; a label matches only one of its own type, so
        ``true`` or ``1.0`` in a JSON file never stands for label 1.
        """
        index = {_key(label): i for i, label in enumerate(labels)}
        parent = np.full(len(labels), -1, np.int64)
        for c, (name, members) in enumerate(mapping.items()):
            for label in members:
                if _key(label) not in index:
                    raise HierarchyError(f"ClassHierarchy: class {_short(name)} lists "
                                         f"{_short(label)}, which is not one of the "
                                         f"{len(labels)} labels")
                if parent[index[_key(label)]] >= 0:
                    raise HierarchyError(f"ClassHierarchy: label {_short(label)} is in two "
                                         f"classes")
                parent[index[_key(label)]] = c
        uncovered = [labels[i] for i in np.flatnonzero(parent < 0)]
        if uncovered:
            raise HierarchyError(f"ClassHierarchy: the classes do not cover every label; "
                                 f"{len(uncovered)} missing, e.g. {uncovered[:5]}")
        return cls(parent, class_names=list(mapping), label_names=list(labels))

    @classmethod
    def from_json(cls, path, labels, extend_to=None):
        """Read a mapping file ``{"class name": [label, ...], ...}`` over ``labels``.

        ``labels`` lists the data's fine labels in label-id order (label id i is
        ``labels[i]``); an int n stands for the ids 0..n-1, which the file then
        names as JSON integers. Every label must appear in exactly one class;
        the errors name the file and the offending class or labels.

        ``extend_to`` (with an int ``labels``): the file may also name ids from n
        up to ``extend_to - 1``, which become labels too (classes that a small data
        set happens not to hold).
        """
        path = Path(path).expanduser()
        try:
            mapping = fileio.read_json(path, what="hierarchy file")
        except fileio.FileError as e:
            raise HierarchyError(str(e)) from None
        if not isinstance(mapping, dict) or not mapping:
            raise HierarchyError(f"{path}: expected a JSON object {{\"class name\": [labels...]}}, "
                                 f"got {type(mapping).__name__}" + (" (empty)" if mapping == {}
                                                                    else ""))
        for name, members in mapping.items():
            if not isinstance(members, list):
                raise HierarchyError(f"{path}: class {name!r} must map to a list of labels, got "
                                     f"{type(members).__name__}")
            if not members:
                raise HierarchyError(f"{path}: class {name!r} has no labels")
            for label in members:
                if _key(label) is None:
                    raise HierarchyError(f"{path}: class {name!r} lists {_short(label)}; labels "
                                         f"are strings or integers")
        if isinstance(labels, (int, np.integer)):
            labels = int(labels)
            if extend_to is not None:
                named = [m for members in mapping.values() for m in members if _is_int(m)
                         and labels <= m < extend_to]
                labels = max([labels] + [m + 1 for m in named])
            labels = list(range(labels))
        labels = list(labels)
        try:
            return cls.from_mapping(mapping, labels)
        except HierarchyError as e:
            raise HierarchyError(f"{path}: {e}") from None

    # --- persistence --------------------------------------------------------
    def to_dict(self):
        return {"parent": self.parent.tolist(), "class_names": self.class_names,
                "label_names": self.label_names}

    @classmethod
    def from_dict(cls, data, num_labels=None):
        """Rebuild from ``to_dict()``, checking every key (``data`` may come from a
        tampered checkpoint); ``num_labels``, when given, is the number of labels the
        hierarchy must have (the model's). Errors are one-line ``HierarchyError``s."""
        who = "ClassHierarchy.from_dict"
        if not isinstance(data, dict):
            raise HierarchyError(f"{who}: expected an object with keys 'parent', "
                                 f"'class_names', 'label_names', got {type(data).__name__}")
        unknown = [k for k in data if k not in ("parent", "class_names", "label_names")]
        if unknown:
            raise HierarchyError(f"{who}: unknown keys {_short(unknown[:5])}")
        parent = data.get("parent")
        if not isinstance(parent, list) or not parent:
            raise HierarchyError(f"{who}: key 'parent' must be a non-empty list of class ids, "
                                 f"got {_short(parent)}")
        if len(parent) > MAX_LABELS:
            raise HierarchyError(f"{who}: key 'parent' lists {len(parent):,} labels; at most "
                                 f"{MAX_LABELS:,} are read")
        for i, c in enumerate(parent):
            if not _is_int(c) or not 0 <= c < len(parent):
                raise HierarchyError(f"{who}: key 'parent' item {i} must be a class id in "
                                     f"[0, {len(parent)}), got {_short(c)}")
        if num_labels is not None and len(parent) != num_labels:
            raise HierarchyError(f"{who}: key 'parent' covers {len(parent):,} labels, "
                                 f"expected {num_labels:,}")
        num_classes = max(parent) + 1
        class_names = _names(who, "class_names", data.get("class_names"), num_classes, (str,))
        label_names = _names(who, "label_names", data.get("label_names"), len(parent),
                             (str, int))
        try:
            return cls(np.asarray(parent, np.int64), class_names, label_names)
        except HierarchyError as e:
            raise HierarchyError(f"{who}: key 'parent': {e}") from None

    def save(self, path):
        """Write ``to_dict()`` as JSON (a fresh temporary file, renamed over ``path``)."""
        fileio.write_json(path, self.to_dict())
        return Path(path)

    @classmethod
    def load(cls, path, follow_symlinks=True, num_labels=None):
        """Read a file written by ``save`` (bounded in size and depth)."""
        try:
            data = fileio.read_json(path, follow_symlinks=follow_symlinks,
                                    what="hierarchy file")
        except fileio.FileError as e:
            raise HierarchyError(str(e)) from None
        try:
            return cls.from_dict(data, num_labels)
        except HierarchyError as e:
            raise HierarchyError(f"{path}: {e}") from None

    def __repr__(self):
        sizes = self.sizes()
        return (f"ClassHierarchy({self.num_labels} labels in {self.num_classes} classes, "
                f"class sizes {sizes.min()}..{sizes.max()})")


def _is_int(value):
    """A JSON integer (``True`` is a bool, not the number 1)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _key(label):
    """A dictionary key that tells a label's type apart (``1``, ``"1"``, ``True``, ``1.0``
    would otherwise collide), or None for a value that cannot be a label."""
    if isinstance(label, str):
        return ("s", label)
    if _is_int(label):
        return ("i", int(label))
    return None


def _short(value, limit=60):
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _names(who, key, names, n, types):
    """``names`` checked: None, or a list of ``n`` distinct values of ``types``."""
    if names is None:
        return None
    if not isinstance(names, list) or len(names) != n:
        got = f"{len(names)} entries" if isinstance(names, list) else type(names).__name__
        raise HierarchyError(f"{who}: key {key!r} must be null or a list of {n} names, got {got}")
    for i, name in enumerate(names):
        if not isinstance(name, types) or isinstance(name, bool):
            raise HierarchyError(f"{who}: key {key!r} item {i} must be a "
                                 f"{' or '.join(t.__name__ for t in types)}, got {_short(name)}")
    if len({_key(v) for v in names}) != n:
        raise HierarchyError(f"{who}: key {key!r} lists a name twice")
    return names
