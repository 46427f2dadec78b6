"""The image data sets of ``tinyar classify``: a name or a path -> validated arrays.

``load_dataset(data, hierarchy, ...)`` gives (x_train, y_train, x_test, y_test,
hierarchy, name): float32 images (N, C, H, W) in [0, 1], int64 labels, the
class hierarchy and a name for the run. ``data`` is one of

* ``"glyphs"``: rendered by tinyar, offline (``train_size``/``test_size`` images);
* a named set (``mnist``, ``fashion-mnist``, ``cifar10``, ``cifar100``,
  ``emnist[-subset]``): downloaded once and checked by SHA-256;
* a folder of the user's own files, read as they are (no checksum: the files
  are theirs). Which format it holds is told by the names present:

  =========  ===========================================================
  IDX        train-images-idx3-ubyte, train-labels-idx1-ubyte,
             t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte (each may
             end in .gz; the MNIST layout)
  CIFAR-10   data_batch_1.bin .. data_batch_5.bin, test_batch.bin
  CIFAR-100  train.bin, test.bin
  =========  ===========================================================

* a ``.npz`` file holding ``x_train, y_train, x_test, y_test``.

Every input is validated the same way, before any training, and refused with
a message naming the file and the array rather than silently bent into shape:
images are (N, C, H, W) or (N, H, W), uint8 (0..255, divided by 255) or
floats in [0, 1] (finite); labels are whole numbers >= 0 (a float array of
whole numbers converts losslessly; 3.7 is refused), one per image; train and
test images have the same (C, H, W). For a ``.npz`` file the shapes, dtypes
and counts are checked from the array headers, before any data is read.

The hierarchy: ``hierarchy`` (``--hierarchy``) is a built-in name or a JSON
file ``{"coarse": [label ids]}`` (it may name ids the data does not hold, which
become labels too; every id the data holds must be in it); without it, the data set's built-in one
(CIFAR-10's, CIFAR-100's 20 superclasses, ...), else a flat one: every label
in one class, which makes the multi-level head a plain softmax.
"""
import os
from pathlib import Path

import numpy as np

from .. import fileio
from ..errors import ShapeError
from ..npzfile import NpzReader
from .builtin_hierarchies import (_normalise, builtin_hierarchies, cifar100_hierarchy,
                                  hierarchy_for)
from .glyphs import make_glyphs
from ..nn.hierarchy import ClassHierarchy, HierarchyError
from . import images as image_files
from .images import (CIFAR10_TEST, CIFAR10_TRAIN, ImageFileError, _dataset, _in_folder, _local,
                     integer_labels, load_images, read_cifar10, read_cifar100, read_idx)

__all__ = ["load_dataset", "check_labels", "FOLDER_FORMATS", "MAX_LABELS", "NPZ_KEYS"]

#: Largest label id + 1 accepted (a hierarchy and a head of that many outputs are built).
MAX_LABELS = 100_000
NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
#: Format of a data folder -> split -> the files it reads (IDX names may end in .gz).
FOLDER_FORMATS = {
    "IDX": {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
            "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")},
    "CIFAR-10": {"train": CIFAR10_TRAIN, "test": CIFAR10_TEST},
    "CIFAR-100": {"train": ("train.bin",), "test": ("test.bin",)},
}
_NAMED = ("glyphs", "mnist", "fashion-mnist", "cifar10", "cifar100", "emnist")


def load_dataset(data, hierarchy="", train_size=20_000, test_size=4_000, seed=0):
    """(x_train, y_train, x_test, y_test, hierarchy, name), validated; see the module
    docstring. Errors are ``TinyarError``s naming the file and what is wrong."""
    data = os.fspath(data)
    coarse = None
    if data == "glyphs":
        x_train, y_train = make_glyphs(train_size, seed=seed)
        x_test, y_test = make_glyphs(test_size, seed=seed + 10_000)
        source, name, default = "glyphs", data, hierarchy_for("glyphs")
    elif _is_named(data):
        x_train, y_train = load_images(data, "train")
        x_test, y_test = load_images(data, "test")
        source, name, default = data, data, _named_hierarchy(data)
    else:
        path = Path(data).expanduser()
        if path.is_dir():
            (x_train, y_train, x_test, y_test), coarse, kind = _load_folder(path)
            default = {"CIFAR-10": "cifar10", "CIFAR-100": "cifar100"}.get(kind)
            default = hierarchy_for(default) if default else None
            name = path.resolve().name or str(path)
        elif os.path.lexists(path):
            x_train, y_train, x_test, y_test = _load_npz(path)
            default, name = None, os.path.basename(data)
        else:
            raise fileio.FileError(
                f"classify: --data {data!r} is neither a known data set "
                f"({', '.join(_NAMED)}) nor an existing .npz file or folder")
        source = str(path)
    x_train, y_train = _checked_split(x_train, y_train, f"{source}: training set")
    x_test, y_test = _checked_split(x_test, y_test, f"{source}: test set")
    if x_train.shape[1:] != x_test.shape[1:]:
        raise ShapeError(f"{source}: training images are {x_train.shape[1:]} (C, H, W) but test "
                         f"images are {x_test.shape[1:]}; both splits need the same shape")
    h = _hierarchy(hierarchy, default, y_train, y_test, source, coarse)
    check_labels(h, y_train, "training")
    check_labels(h, y_test, "test")
    return x_train, y_train, x_test, y_test, h, name


def check_labels(hierarchy, y, what):
    if y.size and (y.min() < 0 or y.max() >= hierarchy.num_labels):
        bad = int(y.min()) if y.min() < 0 else int(y.max())
        raise ShapeError(f"classify: {what} label {bad} is outside the hierarchy's "
                         f"{hierarchy.num_labels} labels")


# ------------------------------------------------------------------ the sources
def _is_named(data):
    try:
        _dataset(data)
    except ValueError:
        return False
    return True


def _named_hierarchy(data):
    """The built-in hierarchy of a named set, or a flat one over its classes."""
    ds = _dataset(data)
    if ds.name in builtin_hierarchies():
        return hierarchy_for(ds.name)
    return ClassHierarchy(np.zeros(ds.num_classes, np.int64))


def _load_folder(folder):
    """((x_train, y_train, x_test, y_test), coarse labels or None, format) of a folder
    of the user's own IDX or CIFAR files (see ``FOLDER_FORMATS``)."""
    kind = _folder_format(folder)
    if kind == "IDX":
        arrays = []
        for split in ("train", "test"):
            images, labels = FOLDER_FORMATS["IDX"][split]
            arrays += [read_idx(_local(folder, images + ".gz"), ndim=3),
                       read_idx(_local(folder, labels + ".gz"), ndim=1)]
        return tuple(arrays), None, kind
    if kind == "CIFAR-10":
        return (*read_cifar10(folder, "train"), *read_cifar10(folder, "test")), None, kind
    x_train, y_train, c_train = read_cifar100(folder, "train")
    x_test, y_test, c_test = read_cifar100(folder, "test")
    return (x_train, y_train, x_test, y_test), (y_train, c_train, y_test, c_test), kind


def _found(folder, kind, name):
    if kind == "IDX":
        return _local(folder, name + ".gz") is not None
    return _in_folder(folder, name) is not None


def _folder_format(folder):
    """Which of ``FOLDER_FORMATS`` ``folder`` holds, told by the names present."""
    present = {}
    for kind, splits in FOLDER_FORMATS.items():
        names = [n for split in splits.values() for n in split]
        hits = [n for n in names if _found(folder, kind, n)]
        if hits:
            present[kind] = (hits, [n for n in names if n not in hits])
    if not present:
        expected = "; ".join(f"{kind}: {', '.join(n for s in splits.values() for n in s)}"
                             for kind, splits in FOLDER_FORMATS.items())
        raise ImageFileError(f"{folder}: holds none of the files of a data folder; expected "
                             f"the files of one of these formats (IDX names may end in .gz) "
                             f"-- {expected}")
    if len(present) > 1:
        mixed = "; ".join(f"{kind}: {', '.join(hits)}" for kind, (hits, _) in present.items())
        raise ImageFileError(f"{folder}: holds files of several data formats ({mixed}); keep "
                             f"the files of one format in a folder")
    (kind, (_, missing)), = present.items()
    if missing:
        raise ImageFileError(f"{folder}: holds {kind} files but lacks {', '.join(missing)}"
                             + (" (each may end in .gz)" if kind == "IDX" else ""))
    return kind


def _load_npz(path):
    """The four arrays of a ``.npz`` file, their shapes, dtypes and counts checked from
    the headers before any data is read."""
    with NpzReader(path, what="data file", error=ImageFileError) as npz:
        missing = [k for k in NPZ_KEYS if k not in npz]
        if missing:
            raise ImageFileError(f"{path}: lacks arrays {missing}; expected x_train, y_train, "
                                 f"x_test, y_test")
        headers = {k: npz.header(k) for k in NPZ_KEYS}
        for split in ("train", "test"):
            x, y = headers[f"x_{split}"], headers[f"y_{split}"]
            _check_layout(f"{path}: x_{split}", x.shape, x.dtype, f"y_{split}", y.shape,
                          y.dtype)
        cap = image_files.MAX_DATA_BYTES
        return tuple(npz.read(k, kinds="fiu", max_bytes=cap) for k in NPZ_KEYS)


# ------------------------------------------------------------------- validation
def _check_layout(what, x_shape, x_dtype, y_what, y_shape, y_dtype):
    """Shapes, dtypes and counts of one split (images ``what``, labels ``y_what``)."""
    if len(x_shape) not in (3, 4):
        raise ShapeError(f"{what}: images of shape {tuple(x_shape)}; expected (N, C, H, W) or "
                         f"(N, H, W)")
    if not all(x_shape):
        raise ShapeError(f"{what}: images of shape {tuple(x_shape)} hold no pixels"
                         + ("; the split is empty" if x_shape[0] == 0 else ""))
    if x_dtype != np.uint8 and x_dtype.kind != "f":
        raise ImageFileError(f"{what}: images of dtype {x_dtype}; expected uint8 (0..255) or "
                             f"floats in [0, 1] (convert with x.astype(np.uint8) if the values "
                             f"are 0..255)")
    if len(y_shape) != 1:
        raise ShapeError(f"{what}: labels {y_what} of shape {tuple(y_shape)}; expected (N,), "
                         f"one class id per image")
    if y_dtype.kind not in "iuf":
        raise ImageFileError(f"{what}: labels {y_what} of dtype {y_dtype}; expected integer "
                             f"class ids")
    if y_shape[0] != x_shape[0]:
        raise ShapeError(f"{what}: {x_shape[0]:,} images but {y_shape[0]:,} labels in "
                         f"{y_what}; every image needs one label")


def _checked_split(x, y, what):
    """(float32 images (N, C, H, W) in [0, 1], int64 labels) of one split, validated."""
    x, y = np.asarray(x), np.asarray(y)
    _check_layout(what, x.shape, x.dtype, "labels", y.shape, y.dtype)
    if x.ndim == 3:
        x = x[:, None]
    if x.dtype == np.uint8:
        x = x.astype(np.float32)
        x /= np.float32(255)
    else:
        if not np.isfinite(x).all():
            raise ImageFileError(f"{what}: images hold NaN or infinite values")
        low, high = float(x.min()), float(x.max())
        if low < 0.0 or high > 1.0:
            raise ImageFileError(f"{what}: float images hold values {low:g}..{high:g}; expected "
                                 f"[0, 1] (divide 0..255 pixels by 255)")
        x = x.astype(np.float32)
    y = integer_labels(y, what)
    if y.max() >= MAX_LABELS:
        raise ImageFileError(f"{what}: label {int(y.max())}; at most {MAX_LABELS:,} classes "
                             f"(ids 0..{MAX_LABELS - 1}) are supported")
    return np.ascontiguousarray(x), y


def _hierarchy(option, default, y_train, y_test, source, coarse):
    """``--hierarchy`` (a built-in name or a JSON file over the label ids), else the
    data's own ``default``, else a flat hierarchy over every label seen."""
    num_labels = int(max(y_train.max(), y_test.max())) + 1
    if option:
        if _normalise(option) in builtin_hierarchies():
            return hierarchy_for(option)
        labels = max(default.num_labels if default is not None else 0, num_labels)
        path = Path(option).expanduser()
        if not os.path.lexists(path):
            raise HierarchyError(f"--hierarchy: no built-in hierarchy named {option!r} (known: "
                                 f"{', '.join(builtin_hierarchies())}) and no JSON file at "
                                 f"{path}")
        # the file may name ids the data happens not to hold (a rare class)
        return ClassHierarchy.from_json(path, labels, extend_to=MAX_LABELS)
    if coarse is not None:
        _check_superclasses(source, *coarse)
    if default is not None:
        return default
    return ClassHierarchy(np.zeros(num_labels, np.int64))


def _check_superclasses(source, fine_train, coarse_train, fine_test, coarse_test):
    """A CIFAR-100 folder's coarse label bytes are the official superclasses, so that
    the built-in hierarchy is the one the files describe."""
    official = cifar100_hierarchy().parent
    for split, fine, coarse in (("train.bin", fine_train, coarse_train),
                                ("test.bin", fine_test, coarse_test)):
        bad = np.flatnonzero(official[fine] != coarse)
        if bad.size:
            i = int(bad[0])
            raise ImageFileError(f"{source}: {split} record {i} has fine label {fine[i]} with "
                                 f"coarse label {coarse[i]}, but CIFAR-100's superclass of that "
                                 f"fine label is {official[fine[i]]}; pass --hierarchy FILE.json "
                                 f"for another grouping")
