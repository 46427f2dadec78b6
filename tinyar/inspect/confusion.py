"""Confusion matrices as PNG heat maps, one per level of a class hierarchy.

Rows are the true classes, columns the predicted ones. Normalised, each row
is divided by its support, so the diagonal reads as per-class recall and the
colours compare rare and frequent classes on one scale.
"""
import os

import numpy as np

from ..errors import ShapeError
from .plots import _figure, _save

__all__ = ["plot_confusion_matrix", "plot_level_confusions"]

# above this many classes the cells are too small to carry their numbers
_MAX_ANNOTATED = 20


def _row_normalize(cm):
    support = cm.sum(axis=1, keepdims=True)
    out = np.zeros_like(cm, dtype=np.float64)
    np.divide(cm, support, out=out, where=support > 0)  # classes with no support stay 0
    return out


def plot_confusion_matrix(path, cm, labels=None, title="", normalize=True, groups=None):
    """Save ``cm`` (K, K) as a heat map at ``path``; returns ``path``.

    ``labels``: K tick names (default 0..K-1). ``normalize``: divide each row by
    its support. ``groups``: optional indices where a new block of classes
    starts (e.g. the first fine label of each coarse class when the labels
    are sorted by class), drawn as thin lines. Up to 20 classes each
    non-zero cell shows its value; beyond that, only colours, with tick fonts shrinking as
    K grows so 62 labels stay legible.
    """
    cm = np.asarray(cm)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1] or cm.shape[0] == 0:
        raise ShapeError(f"plot_confusion_matrix: expected a square (K, K) matrix, got shape "
                         f"{cm.shape}")
    k = cm.shape[0]
    labels = [str(i) for i in range(k)] if labels is None else [str(s) for s in labels]
    if len(labels) != k:
        raise ShapeError(f"plot_confusion_matrix: {len(labels)} labels for a {k}x{k} matrix")
    values = _row_normalize(cm) if normalize else cm.astype(np.float64)

    side = float(np.clip(2.5 + 0.17 * k, 4.5, 14.0))
    fig = _figure(side + 1.2, side)
    ax = fig.add_subplot()
    vmax = 1.0 if normalize else max(float(values.max()), 1.0)
    image = ax.imshow(values, cmap="Blues", vmin=0.0, vmax=vmax, interpolation="nearest")
    fig.colorbar(image, ax=ax, shrink=0.8,
                 label="fraction of the true class" if normalize else "count")

    font = 9 if k <= _MAX_ANNOTATED else float(np.clip(400.0 / k, 4.5, 8.0))
    ticks = np.arange(k)
    ax.set_xticks(ticks, labels, fontsize=font, rotation=90 if k > 10 else 45,
                  ha="center" if k > 10 else "right")
    ax.set_yticks(ticks, labels, fontsize=font)
    ax.tick_params(length=2 if k > _MAX_ANNOTATED else 3.5, pad=1.5)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if title:
        ax.set_title(title)

    if k <= _MAX_ANNOTATED:
        for i, j in zip(*np.nonzero(values)):
            v = values[i, j]
            text = f"{v:.2f}" if normalize else f"{int(round(v))}"
            ax.text(j, i, text, ha="center", va="center", fontsize=7 if k > 10 else 8,
                    color="white" if v > 0.6 * vmax else "black")
    for g in groups if groups is not None else ():
        if 0 < g < k:
            ax.axhline(g - 0.5, color="0.35", linewidth=0.6)
            ax.axvline(g - 0.5, color="0.35", linewidth=0.6)
    return _save(fig, path)


def _in(folder, name):
    return None if folder is None else os.path.join(folder, name)


def plot_level_confusions(folder, report, hierarchy, normalize=True, prefix=""):
    """One PNG per level of ``hierarchical_report``'s ``report``; returns their paths.

    Writes ``{prefix}confusion_coarse.png`` and ``{prefix}confusion_fine.png`` in
    ``folder`` (a prefix such as ``"flat_"`` keeps two models' figures apart).
    With ``folder=None`` it saves nothing and returns the two Figures.
    The fine matrix is shown with its labels grouped by coarse class (the
    hierarchy's ``order``), with lines between the classes, so confusions
    inside a class fall in the diagonal blocks.
    """
    paths = []
    coarse = np.asarray(report["coarse"]["confusion_matrix"])
    names = hierarchy.class_names or [f"class {c}" for c in range(hierarchy.num_classes)]
    acc = report["coarse"]["accuracy"]
    paths.append(plot_confusion_matrix(
        _in(folder, f"{prefix}confusion_coarse.png"), coarse, names,
        f"coarse level ({hierarchy.num_classes} classes), accuracy {acc:.3f}", normalize))

    fine = np.asarray(report["fine"]["confusion_matrix"])
    order = hierarchy.order
    labels = hierarchy.label_names or [str(i) for i in range(hierarchy.num_labels)]
    acc = report["fine"]["accuracy"]
    paths.append(plot_confusion_matrix(
        _in(folder, f"{prefix}confusion_fine.png"), fine[np.ix_(order, order)],
        [labels[i] for i in order],
        f"fine level ({hierarchy.num_labels} labels, grouped by class), accuracy {acc:.3f}",
        normalize, groups=hierarchy.starts[1:-1]))
    return paths
