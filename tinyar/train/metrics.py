"""Classification metrics, flat and for a two-level class hierarchy.

Flat metrics (one level of labels):

* ``confusion_matrix(y_true, y_pred, K)``: ``cm[i, j]`` counts the samples of
  true class i predicted as class j. Rows sum to the support of each class,
  columns to how often each class was predicted, the diagonal holds the hits.
* ``accuracy(y_true, y_pred)``: the fraction of hits, ``trace(cm) / sum(cm)``.
* ``precision_recall_f1(cm, average)``: for class k, with tp = cm[k, k],
  fp = column k minus tp, fn = row k minus tp::

      precision_k = tp / (tp + fp)      of the samples predicted k, how many are k
      recall_k    = tp / (tp + fn)      of the samples that are k, how many were found
      f1_k        = 2 tp / (2 tp + fp + fn)   (the harmonic mean of the two)

  A ratio whose denominator is 0 (class k never predicted: no precision;
  class k absent from the targets: no recall) counts as **0**, like
  scikit-learn's ``zero_division=0``.

Hierarchical metrics (``hierarchical_report``) for a multi-level classifier
P(y) = P(coarse | x) P(fine | coarse, x) over a ``ClassHierarchy``: the flat
metrics at each level, how often the two levels agree, hierarchical
precision/recall (Kiritchenko et al. 2005) and the severity of the mistakes
(Bertinetto et al. 2020, "Making Better Mistakes"). ``format_report`` prints
the report as a table.
"""
import numpy as np

from ..errors import DTypeError, ShapeError, TargetError

__all__ = ["confusion_matrix", "accuracy", "precision_recall_f1", "hierarchical_report",
           "format_report"]

_AVERAGES = (None, "macro", "micro", "weighted")


# --- input checks -----------------------------------------------------------
def _labels(name, values, what, upper=None):
    """A 1-D int64 array of class ids in [0, upper) (``upper`` None: no upper check)."""
    values = np.asarray(values)
    if values.size == 0:
        values = values.astype(np.int64)  # np.asarray([]) is float64
    if values.ndim != 1:
        raise ShapeError(f"{name}: expected {what} as a 1-D array of class ids, got shape "
                         f"{values.shape}")
    if not np.issubdtype(values.dtype, np.integer):
        raise DTypeError(f"{name}: expected integer class ids in {what}, got dtype "
                         f"{values.dtype.name}")
    if values.size:
        lo, hi = int(values.min()), int(values.max())
        if lo < 0 or (upper is not None and hi >= upper):
            bad = lo if lo < 0 else hi
            bound = f"[0, {upper})" if upper is not None else ">= 0"
            raise TargetError(f"{name}: {what} holds class id {bad}, outside {bound}")
    return values.astype(np.int64, copy=False)


def _same_length(name, a, b, names):
    if a.shape != b.shape:
        raise ShapeError(f"{name}: {names[0]} and {names[1]} must have the same length, got "
                         f"{a.shape[0]} and {b.shape[0]}")


# --- flat metrics -----------------------------------------------------------
def confusion_matrix(y_true, y_pred, num_classes):
    """(num_classes, num_classes) int64 counts: ``cm[i, j]`` = #(true i, predicted j).

    One ``bincount`` over the flat index ``i * K + j`` of each (true, predicted)
    pair counts every cell at once.
    """
    num_classes = int(num_classes)
    if num_classes < 1:
        raise ValueError(f"confusion_matrix: num_classes must be >= 1, got {num_classes}")
    y_true = _labels("confusion_matrix", y_true, "y_true", num_classes)
    y_pred = _labels("confusion_matrix", y_pred, "y_pred", num_classes)
    _same_length("confusion_matrix", y_true, y_pred, ("y_true", "y_pred"))
    flat = y_true * num_classes + y_pred
    counts = np.bincount(flat, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes).astype(np.int64, copy=False)


def accuracy(y_true, y_pred):
    """Fraction of samples with ``y_pred == y_true`` (top-1 accuracy), a float."""
    y_true = _labels("accuracy", y_true, "y_true")
    y_pred = _labels("accuracy", y_pred, "y_pred")
    _same_length("accuracy", y_true, y_pred, ("y_true", "y_pred"))
    if y_true.size == 0:
        raise ShapeError("accuracy: no samples (empty y_true and y_pred)")
    return float(np.mean(y_true == y_pred))


def _check_cm(name, cm):
    cm = np.asarray(cm)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1] or cm.shape[0] == 0:
        raise ShapeError(f"{name}: expected a square (K, K) confusion matrix, got shape "
                         f"{cm.shape}")
    if not (np.issubdtype(cm.dtype, np.integer) or np.issubdtype(cm.dtype, np.floating)):
        raise DTypeError(f"{name}: expected a numeric confusion matrix, got dtype {cm.dtype.name}")
    if (cm < 0).any():
        raise ValueError(f"{name}: a confusion matrix holds counts; found a negative entry")
    return cm.astype(np.float64)


def _ratio(num, den):
    """num / den elementwise, 0 where den == 0 (zero_division=0)."""
    out = np.zeros_like(num, dtype=np.float64)
    np.divide(num, den, out=out, where=den > 0)
    return out


def precision_recall_f1(cm, average="macro"):
    """Precision, recall and F1 from a confusion matrix; returns ``(p, r, f1)``.

    ``average``:

    * ``None``: three (K,) arrays, one value per class;
    * ``"macro"``: the plain mean over the classes *present*, i.e. those that
      appear among the targets or the predictions (a row or column of ``cm``
      that is not all zero), so every class counts the same however rare.
      Classes in neither are left out, as scikit-learn does when it infers
      the labels from the data; a class predicted but never true (or true
      but never predicted) is kept and scores 0 in the empty ratio;
    * ``"micro"``: pooled counts; for single-label data every sample is one tp
      or one (fp, fn) pair, so all three equal the accuracy;
    * ``"weighted"``: the mean weighted by each class's support (row sum).

    Empty ratios count as 0 (scikit-learn's ``zero_division=0``): a class
    never predicted has precision 0, a class with no support recall 0, and F1
    is ``2 tp / (2 tp + fp + fn)``, 0 when that denominator is 0. With no
    class present at all (an empty ``cm``) the averages are 0.
    """
    if average not in _AVERAGES:
        raise ValueError(f"precision_recall_f1: average must be one of {_AVERAGES}, got "
                         f"{average!r}")
    cm = _check_cm("precision_recall_f1", cm)
    tp = np.diag(cm)
    predicted = cm.sum(axis=0)          # tp + fp
    support = cm.sum(axis=1)            # tp + fn
    if average == "micro":
        total = cm.sum()
        value = float(tp.sum() / total) if total > 0 else 0.0
        return value, value, value
    precision = _ratio(tp, predicted)
    recall = _ratio(tp, support)
    f1 = _ratio(2 * tp, predicted + support)   # 2tp + fp + fn = (tp + fp) + (tp + fn)
    if average is None:
        return precision, recall, f1
    if average == "macro":
        weights = ((predicted > 0) | (support > 0)).astype(np.float64)
    else:
        weights = support
    total = weights.sum()
    if total == 0:
        return 0.0, 0.0, 0.0
    return tuple(float(np.dot(weights, m) / total) for m in (precision, recall, f1))


# --- two levels -------------------------------------------------------------
def _level(cm, names):
    """One level's entry of the report: plain Python numbers only (JSON)."""
    p, r, f = precision_recall_f1(cm, average=None)
    mp, mr, mf = precision_recall_f1(cm, average="macro")
    total = int(cm.sum())
    return {
        "num_classes": int(cm.shape[0]),
        "accuracy": float(np.trace(cm) / total),
        "precision": mp, "recall": mr, "f1": mf,
        "per_class": {"precision": p.tolist(), "recall": r.tolist(), "f1": f.tolist(),
                      "support": cm.sum(axis=1).astype(int).tolist()},
        "names": list(names) if names is not None else None,
        "confusion_matrix": cm.astype(int).tolist(),
    }


def hierarchical_report(hierarchy, y_true_fine, y_pred_fine, y_pred_coarse=None):
    """Metrics of a two-level classifier, as a JSON-ready dict.

    Args:
        hierarchy:     ``ClassHierarchy``; ``parent[y]`` is the coarse class of fine label y
        y_true_fine:   (N,) int, the true fine labels
        y_pred_fine:   (N,) int, the predicted fine labels
        y_pred_coarse: (N,) int or None, the predicted coarse classes when the
                       model predicts them itself (a multi-level head's argmax
                       of P(coarse | x)); None: use ``parent[y_pred_fine]``

    Returns a dict of plain floats, ints and lists:

    * ``"coarse"``, ``"fine"``: per level ``accuracy`` (top-1), macro
      ``precision``/``recall``/``f1`` (see ``precision_recall_f1``),
      ``per_class`` lists, ``names`` and the ``confusion_matrix`` (nested
      list, rows = true, columns = predicted, in class/label-id order). The
      true coarse class is ``parent[y_true_fine]``.
    * ``"consistency"``: the fraction of samples whose predicted coarse class
      is the parent of the predicted fine label (1.0 when y_pred_coarse is
      None, since it is then derived from the fine prediction).
    * ``"hierarchical"``: hierarchical precision/recall/F1 (Kiritchenko et al.
      2005). Each sample's true set is its fine label plus its ancestors,
      root excluded: Y = {y_fine, parent(y_fine)}; the predicted set is
      Ŷ = {ŷ_fine, ŷ_coarse}, with ŷ_coarse the given coarse prediction or
      else parent(ŷ_fine). Coarse classes and fine labels are distinct nodes
      (class 3 never matches label 3). Then::

          hP = Σ|Ŷ ∩ Y| / Σ|Ŷ|,   hR = Σ|Ŷ ∩ Y| / Σ|Y|,   hF = 2 hP hR / (hP + hR)

      Here every set has exactly two nodes, so hP = hR = hF = the mean of
      the coarse and fine accuracies: a wrong fine label under the right
      coarse class earns half a hit, a wrong coarse class none.
    * ``"mistakes"``: the severity of the fine-level mistakes (Bertinetto et
      al. 2020). For each misclassified sample, the height of the lowest
      common ancestor of the true and predicted fine labels in the tree
      root -> coarse classes -> fine labels: 1 when they share a coarse class
      (the LCA is that class), 2 when the LCA is the root. ``count`` (the
      number of mistakes), ``same_coarse`` and ``other_coarse`` (how many of
      height 1 and 2), ``rate`` (count / N) and ``mean_height`` (the mean over
      the mistakes only; None when there are none). The tree is used here,
      not y_pred_coarse: it measures how far apart the two fine labels are.
    * ``"num_samples"``.
    """
    name = "hierarchical_report"
    parent = hierarchy.parent
    y_true = _labels(name, y_true_fine, "y_true_fine", hierarchy.num_labels)
    y_pred = _labels(name, y_pred_fine, "y_pred_fine", hierarchy.num_labels)
    _same_length(name, y_true, y_pred, ("y_true_fine", "y_pred_fine"))
    if y_true.size == 0:
        raise ShapeError(f"{name}: no samples (empty y_true_fine and y_pred_fine)")
    coarse_true = parent[y_true]
    coarse_of_fine = parent[y_pred]
    if y_pred_coarse is None:
        coarse_pred = coarse_of_fine
    else:
        coarse_pred = _labels(name, y_pred_coarse, "y_pred_coarse", hierarchy.num_classes)
        _same_length(name, y_true, coarse_pred, ("y_true_fine", "y_pred_coarse"))
    n = y_true.size

    fine_hit = y_pred == y_true
    coarse_hit = coarse_pred == coarse_true
    # |Ŷ ∩ Y| per sample is one node per level that matches; |Ŷ| = |Y| = 2
    overlap = float(fine_hit.sum() + coarse_hit.sum())
    hp = overlap / (2 * n)
    hr = overlap / (2 * n)
    hf = 2 * hp * hr / (hp + hr) if hp + hr > 0 else 0.0

    wrong = ~fine_hit
    same = int((wrong & (coarse_of_fine == coarse_true)).sum())
    count = int(wrong.sum())
    other = count - same
    return {
        "num_samples": int(n),
        "coarse": _level(confusion_matrix(coarse_true, coarse_pred, hierarchy.num_classes),
                         hierarchy.class_names),
        "fine": _level(confusion_matrix(y_true, y_pred, hierarchy.num_labels),
                       hierarchy.label_names),
        "consistency": float(np.mean(coarse_pred == coarse_of_fine)),
        "hierarchical": {"precision": hp, "recall": hr, "f1": hf},
        "mistakes": {"count": count, "rate": count / n, "same_coarse": same,
                     "other_coarse": other,
                     "mean_height": (same * 1 + other * 2) / count if count else None},
    }


def format_report(report):
    """The report of ``hierarchical_report`` as a table for the terminal."""
    lines = [f"{'level':<8}{'classes':>8}{'accuracy':>10}{'precision':>11}{'recall':>9}"
             f"{'F1':>8}   (precision/recall/F1: macro)"]
    for level in ("coarse", "fine"):
        r = report[level]
        lines.append(f"{level:<8}{r['num_classes']:>8}{r['accuracy']:>10.4f}"
                     f"{r['precision']:>11.4f}{r['recall']:>9.4f}{r['f1']:>8.4f}")
    h = report["hierarchical"]
    lines.append(f"{'hier.':<8}{'':>8}{'':>10}{h['precision']:>11.4f}{h['recall']:>9.4f}"
                 f"{h['f1']:>8.4f}   (Kiritchenko et al. 2005)")
    lines.append(f"consistency: {report['consistency']:.4f} (predicted coarse class = parent "
                 f"of predicted fine label)")
    m = report["mistakes"]
    n = report["num_samples"]
    if m["count"]:
        lines.append(f"mistakes: {m['count']} of {n} ({m['rate']:.2%}); mean LCA height "
                     f"{m['mean_height']:.3f} ({m['same_coarse']} inside the true coarse "
                     f"class, {m['other_coarse']} in another)")
    else:
        lines.append(f"mistakes: none in {n} samples")
    return "\n".join(lines)
