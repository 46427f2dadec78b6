"""The image data sets of ``tinyar classify``: a name or a path -> validated arrays.

``load_dataset(data, ...)`` gives (x_train, y_train, x_test, y_test, hierarchy,
name) with float32 images (N, C, H, W) in [0, 1] and int64 labels, for
``glyphs`` (rendered offline), the named downloadable sets, or a ``.npz`` file
of ``x_train, y_train, x_test, y_test`` with an optional hierarchy file.
"""
import os

import numpy as np

from ..errors import ShapeError
from .builtin_hierarchies import hierarchy_for
from .glyphs import make_glyphs
from .hierarchy import ClassHierarchy
from .images import load_images


def _float_images(x):
    x = np.asarray(x)
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4:
        raise ShapeError(f"classify: expected images (N, C, H, W) or (N, H, W), got {x.shape}")
    return (x.astype(np.float32) / 255.0) if x.dtype == np.uint8 else x.astype(np.float32)


def load_dataset(data, hierarchy="", train_size=20_000, test_size=4_000, seed=0):
    """(x_train, y_train, x_test, y_test, hierarchy, name) as float32 images in [0, 1]."""
    name = data
    if name == "glyphs":
        x_train, y_train = make_glyphs(train_size, seed=seed)
        x_test, y_test = make_glyphs(test_size, seed=seed + 10_000)
        return x_train, y_train, x_test, y_test, hierarchy_for("glyphs"), name
    if name in ("mnist", "fashion-mnist", "cifar10", "cifar100", "emnist"):
        x_train, y_train = load_images(name, "train")
        x_test, y_test = load_images(name, "test")
        return (_float_images(x_train), y_train, _float_images(x_test), y_test,
                hierarchy_for(name), name)
    if not os.path.exists(name):
        raise FileNotFoundError(f"classify: --data {name!r} is neither a known data set (glyphs, "
                                f"mnist, fashion-mnist, cifar10, cifar100) nor an existing file")
    with np.load(name, allow_pickle=False) as f:
        missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in f.files]
        if missing:
            raise ShapeError(f"classify: {name} lacks arrays {missing}; expected x_train, y_train, "
                             f"x_test, y_test")
        x_train, y_train = _float_images(f["x_train"]), f["y_train"].astype(np.int64)
        x_test, y_test = _float_images(f["x_test"]), f["y_test"].astype(np.int64)
    num_labels = int(max(y_train.max(), y_test.max())) + 1
    hierarchy = hierarchy_for(hierarchy, labels=num_labels) if hierarchy else \
        ClassHierarchy(np.zeros(num_labels, np.int64))
    return x_train, y_train, x_test, y_test, hierarchy, os.path.basename(name)


def check_labels(hierarchy, y, what):
    if y.size and (y.min() < 0 or y.max() >= hierarchy.num_labels):
        bad = int(y.min()) if y.min() < 0 else int(y.max())
        raise ShapeError(f"classify: {what} label {bad} is outside the hierarchy's "
                         f"{hierarchy.num_labels} labels")


