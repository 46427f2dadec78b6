"""Metrics of tinyar.train.metrics and the confusion plots of tinyar.inspect.confusion.

Hand-computed examples for each metric, and every metric against a plain
per-sample Python loop on random data.
"""
import json
import struct

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from tinyar.data.hierarchy import ClassHierarchy
from tinyar.errors import DTypeError, ShapeError, TargetError
from tinyar.inspect import confusion
from tinyar.inspect.confusion import plot_confusion_matrix, plot_level_confusions
from tinyar.train.metrics import (accuracy, confusion_matrix, format_report,
                                  hierarchical_report, precision_recall_f1)


# --- loop references ----------------------------------------------------------
def loop_confusion(y_true, y_pred, k):
    cm = [[0] * k for _ in range(k)]
    for t, p in zip(y_true, y_pred):
        cm[t][p] += 1
    return np.array(cm)


def loop_prf(y_true, y_pred, k):
    """Per-class precision/recall/F1 by counting, 0 for an empty ratio; macro over present."""
    rows = []
    for c in range(k):
        tp = sum(1 for t, p in zip(y_true, y_pred) if t == c and p == c)
        fp = sum(1 for t, p in zip(y_true, y_pred) if t != c and p == c)
        fn = sum(1 for t, p in zip(y_true, y_pred) if t == c and p != c)
        prec = tp / (tp + fp) if tp + fp else 0.0
        rec = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
        rows.append((prec, rec, f1, tp + fp + fn > 0))
    present = [r for r in rows if r[3]]
    macro = tuple(sum(r[i] for r in present) / len(present) if present else 0.0
                  for i in range(3))
    return np.array([r[:3] for r in rows]).T, macro


def loop_hierarchical(parent, y_true, y_pred, y_pred_coarse):
    """hP/hR/hF from explicit node sets, LCA heights from explicit ancestor paths."""
    inter = size_pred = size_true = 0
    heights, consistent = [], 0
    for i, (t, p) in enumerate(zip(y_true, y_pred)):
        pc = parent[p] if y_pred_coarse is None else y_pred_coarse[i]
        true_set = {("fine", t), ("coarse", parent[t])}
        pred_set = {("fine", p), ("coarse", pc)}
        inter += len(true_set & pred_set)
        size_pred += len(pred_set)
        size_true += len(true_set)
        consistent += pc == parent[p]
        if t != p:
            # paths leaf -> root; a node's height is its index on the path
            path_t = [("fine", t), ("coarse", parent[t]), ("root",)]
            path_p = [("fine", p), ("coarse", parent[p]), ("root",)]
            heights.append(next(h for h, node in enumerate(path_t) if node in path_p))
    hp, hr = inter / size_pred, inter / size_true
    hf = 2 * hp * hr / (hp + hr) if hp + hr else 0.0
    mean = sum(heights) / len(heights) if heights else None
    return hp, hr, hf, consistent / len(y_true), heights, mean


# --- confusion matrix and accuracy ------------------------------------------
def test_confusion_matrix_by_hand():
    cm = confusion_matrix([0, 0, 1, 1, 2], [0, 1, 1, 1, 0], 4)
    assert cm.dtype == np.int64
    np.testing.assert_array_equal(cm, [[1, 1, 0, 0], [0, 2, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]])
    np.testing.assert_array_equal(confusion_matrix([], [], 3), np.zeros((3, 3)))


def test_accuracy_by_hand():
    assert accuracy([0, 1, 2, 3], [0, 1, 2, 3]) == 1.0
    assert accuracy([0, 1, 2, 3], [1, 0, 3, 2]) == 0.0
    assert accuracy(np.array([0, 0, 1, 1, 2]), np.array([0, 1, 1, 1, 0])) == pytest.approx(0.6)


@pytest.mark.parametrize("call, error, words", [
    (lambda: confusion_matrix([0, 3], [0, 1], 3), TargetError, ["y_true", "3", "[0, 3)"]),
    (lambda: confusion_matrix([0, 1], [-1, 1], 3), TargetError, ["y_pred", "-1"]),
    (lambda: confusion_matrix([0, 1], [0, 1, 1], 3), ShapeError, ["same length", "2", "3"]),
    (lambda: confusion_matrix([[0, 1]], [[0, 1]], 3), ShapeError, ["1-D", "(1, 2)"]),
    (lambda: confusion_matrix([0.0, 1.0], [0, 1], 3), DTypeError, ["integer", "float64"]),
    (lambda: confusion_matrix([0], [0], 0), ValueError, ["num_classes"]),
    (lambda: accuracy([], []), ShapeError, ["no samples"]),
    (lambda: accuracy([0, 1], [1]), ShapeError, ["same length"]),
    (lambda: precision_recall_f1(np.ones((2, 3))), ShapeError, ["square", "(2, 3)"]),
    (lambda: precision_recall_f1(-np.eye(2)), ValueError, ["negative"]),
    (lambda: precision_recall_f1(np.eye(2), average="mean"), ValueError, ["'mean'", "macro"]),
])
def test_bad_inputs_raise_clear_errors(call, error, words):
    with pytest.raises(error) as info:
        call()
    message = str(info.value)
    assert message.split(":")[0] in ("confusion_matrix", "accuracy", "precision_recall_f1")
    for word in words:
        assert word in message


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 6).flatmap(lambda k: st.tuples(
    st.just(k), st.lists(st.tuples(st.integers(0, k - 1), st.integers(0, k - 1)), max_size=30))))
def test_confusion_and_accuracy_match_loop(data):
    k, pairs = data
    y_true = np.array([t for t, _ in pairs], np.int64)
    y_pred = np.array([p for _, p in pairs], np.int64)
    cm = confusion_matrix(y_true, y_pred, k)
    np.testing.assert_array_equal(cm, loop_confusion(y_true, y_pred, k))
    assert cm.sum() == len(pairs)
    if pairs:
        hits = sum(t == p for t, p in pairs)
        assert accuracy(y_true, y_pred) == pytest.approx(hits / len(pairs))


# --- precision, recall, F1 ----------------------------------------------------
def test_precision_recall_f1_by_hand():
    # class 2 is true once and never predicted; class 3 is in neither
    cm = confusion_matrix([0, 0, 1, 1, 2], [0, 1, 1, 1, 0], 4)
    p, r, f = precision_recall_f1(cm, average=None)
    np.testing.assert_allclose(p, [1 / 2, 2 / 3, 0, 0])
    np.testing.assert_allclose(r, [1 / 2, 1, 0, 0])
    np.testing.assert_allclose(f, [1 / 2, 4 / 5, 0, 0])
    # macro: over classes 0, 1, 2 (class 3 is absent from both, left out)
    np.testing.assert_allclose(precision_recall_f1(cm), [7 / 18, 1 / 2, 1.3 / 3])
    np.testing.assert_allclose(precision_recall_f1(cm, "micro"), [0.6, 0.6, 0.6])
    np.testing.assert_allclose(precision_recall_f1(cm, "weighted"), [7 / 15, 0.6, 0.52])


def test_precision_recall_f1_predicted_but_never_true_counts_in_macro():
    # class 1 predicted once, never true: precision 0, recall 0 (no support) -> in the mean
    cm = confusion_matrix([0, 0], [0, 1], 2)
    np.testing.assert_allclose(precision_recall_f1(cm, None), [[1, 0], [0.5, 0], [2 / 3, 0]])
    np.testing.assert_allclose(precision_recall_f1(cm), [0.5, 0.25, 1 / 3])


def test_precision_recall_f1_perfect_all_wrong_and_empty():
    perfect = confusion_matrix([0, 1, 2, 2], [0, 1, 2, 2], 3)
    assert precision_recall_f1(perfect) == (1.0, 1.0, 1.0)
    wrong = confusion_matrix([0, 1, 2, 2], [1, 2, 0, 1], 3)
    assert precision_recall_f1(wrong) == (0.0, 0.0, 0.0)
    assert precision_recall_f1(np.zeros((3, 3), np.int64)) == (0.0, 0.0, 0.0)
    for average in ("macro", "micro", "weighted"):
        assert all(isinstance(v, float) for v in precision_recall_f1(wrong, average))


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 6).flatmap(lambda k: st.tuples(
    st.just(k), st.lists(st.tuples(st.integers(0, k - 1), st.integers(0, k - 1)), max_size=30))))
def test_precision_recall_f1_match_loop(data):
    k, pairs = data
    y_true = [t for t, _ in pairs]
    y_pred = [p for _, p in pairs]
    cm = confusion_matrix(np.array(y_true, np.int64), np.array(y_pred, np.int64), k)
    per_class, macro = loop_prf(y_true, y_pred, k)
    np.testing.assert_allclose(np.array(precision_recall_f1(cm, None)), per_class, atol=1e-12)
    np.testing.assert_allclose(precision_recall_f1(cm), macro, atol=1e-12)
    if pairs:
        np.testing.assert_allclose(precision_recall_f1(cm, "micro"),
                                   [sum(t == p for t, p in pairs) / len(pairs)] * 3)


# --- the hierarchical report --------------------------------------------------
# labels 0, 1 in class 0 ("a"); labels 2, 3, 4 in class 1 ("b")
PARENT = [0, 0, 1, 1, 1]


def small_hierarchy():
    return ClassHierarchy(np.array(PARENT), class_names=["a", "b"],
                          label_names=["a0", "a1", "b0", "b1", "b2"])


def test_report_perfect_predictions():
    y = np.arange(5)
    r = hierarchical_report(small_hierarchy(), y, y)
    for level in ("coarse", "fine"):
        assert [r[level][m] for m in ("accuracy", "precision", "recall", "f1")] == [1.0] * 4
    assert r["coarse"]["confusion_matrix"] == [[2, 0], [0, 3]]
    assert r["fine"]["confusion_matrix"] == np.eye(5, dtype=int).tolist()
    assert r["consistency"] == 1.0
    assert r["hierarchical"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0}
    assert r["mistakes"] == {"count": 0, "rate": 0.0, "same_coarse": 0, "other_coarse": 0,
                             "mean_height": None}
    assert "mistakes: none in 5 samples" in format_report(r)


def test_report_all_wrong_across_classes():
    r = hierarchical_report(small_hierarchy(), [0, 1, 2, 3, 4], [2, 2, 0, 0, 1])
    assert r["fine"]["accuracy"] == 0.0 and r["coarse"]["accuracy"] == 0.0
    assert (r["fine"]["precision"], r["fine"]["recall"], r["fine"]["f1"]) == (0.0, 0.0, 0.0)
    assert r["coarse"]["confusion_matrix"] == [[0, 2], [3, 0]]
    assert r["hierarchical"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0}
    assert r["mistakes"]["count"] == 5 and r["mistakes"]["mean_height"] == 2.0
    assert r["mistakes"]["other_coarse"] == 5 and r["mistakes"]["same_coarse"] == 0


def test_report_mistake_severity_inside_vs_across_classes():
    # a0->a1 inside (height 1), a0->b0 across (2), b0->b1 inside (1), b0 right
    r = hierarchical_report(small_hierarchy(), [0, 0, 2, 2], [1, 2, 3, 2])
    m = r["mistakes"]
    assert (m["count"], m["same_coarse"], m["other_coarse"]) == (3, 2, 1)
    assert m["mean_height"] == pytest.approx(4 / 3)
    assert m["rate"] == 0.75
    assert r["fine"]["accuracy"] == 0.25
    assert r["coarse"]["accuracy"] == 0.75
    # overlaps 0+1, 0+0, 0+1, 1+1 = 4 of 8 nodes
    assert r["hierarchical"]["precision"] == r["hierarchical"]["recall"] == 0.5
    # only-inside mistakes are milder than only-across ones
    inside = hierarchical_report(small_hierarchy(), [0, 2], [1, 4])["mistakes"]["mean_height"]
    across = hierarchical_report(small_hierarchy(), [0, 2], [3, 0])["mistakes"]["mean_height"]
    assert (inside, across) == (1.0, 2.0)


def test_report_with_inconsistent_coarse_predictions():
    y_true, y_fine, y_coarse = [0, 0, 2, 2], [0, 1, 2, 4], [0, 1, 0, 1]
    r = hierarchical_report(small_hierarchy(), y_true, y_fine, y_coarse)
    # parents of the fine predictions: 0, 0, 1, 1 -> samples 1 and 2 disagree
    assert r["consistency"] == 0.5
    # the coarse level uses the coarse predictions, not the parents of the fine ones
    assert r["coarse"]["confusion_matrix"] == [[1, 1], [1, 1]]
    assert r["coarse"]["accuracy"] == 0.5
    assert r["fine"]["accuracy"] == 0.5
    # node hits: fine 1+0+1+0, coarse 1+0+0+1 -> 4 of 8
    assert r["hierarchical"]["f1"] == 0.5
    # severity follows the tree: both mistakes stay inside the true class (height 1),
    # although the coarse head predicted the wrong class for sample 1
    assert r["mistakes"]["mean_height"] == 1.0
    derived = hierarchical_report(small_hierarchy(), y_true, y_fine)
    assert derived["consistency"] == 1.0
    assert derived["coarse"]["confusion_matrix"] == [[2, 0], [0, 2]]


def test_report_coarse_class_never_predicted():
    # nothing is ever predicted in class "b": its precision is 0, not a division error
    r = hierarchical_report(small_hierarchy(), [0, 1, 2, 3], [0, 0, 1, 0])
    assert r["coarse"]["per_class"]["precision"] == [0.5, 0.0]
    assert r["coarse"]["per_class"]["recall"] == [1.0, 0.0]
    assert r["coarse"]["per_class"]["support"] == [2, 2]
    assert r["coarse"]["precision"] == 0.25 and r["coarse"]["recall"] == 0.5


@pytest.mark.parametrize("args, error, words", [
    (([0, 5], [0, 1]), TargetError, ["y_true_fine", "5", "[0, 5)"]),
    (([0, 1], [0, 1], [0, 2]), TargetError, ["y_pred_coarse", "2", "[0, 2)"]),
    (([0, 1], [0, 1], [0]), ShapeError, ["y_pred_coarse", "same length"]),
    (([0, 1], [0]), ShapeError, ["y_pred_fine", "same length"]),
    (([], []), ShapeError, ["no samples"]),
])
def test_report_bad_inputs(args, error, words):
    with pytest.raises(error) as info:
        hierarchical_report(small_hierarchy(), *args)
    assert str(info.value).startswith("hierarchical_report:")
    for word in words:
        assert word in str(info.value)


def _plain(value):
    """Only JSON's own types, all the way down (no numpy scalars)."""
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_plain(v) for v in value)
    return value is None or type(value) in (bool, int, float, str)


def test_report_is_json_serialisable():
    rng = np.random.default_rng(0)
    y_true, y_pred = rng.integers(0, 5, 40), rng.integers(0, 5, 40)
    r = hierarchical_report(small_hierarchy(), y_true, y_pred, rng.integers(0, 2, 40))
    assert _plain(r)
    assert json.loads(json.dumps(r, allow_nan=False)) == r
    assert r["fine"]["names"] == ["a0", "a1", "b0", "b1", "b2"]
    assert r["coarse"]["names"] == ["a", "b"]


def test_format_report_table():
    r = hierarchical_report(small_hierarchy(), [0, 0, 2, 2], [1, 2, 3, 2], [0, 0, 0, 1])
    text = format_report(r)
    lines = text.splitlines()
    assert lines[0].split()[:6] == ["level", "classes", "accuracy", "precision", "recall", "F1"]
    assert lines[1].split()[:3] == ["coarse", "2", f"{r['coarse']['accuracy']:.4f}"]
    assert lines[2].split()[:3] == ["fine", "5", "0.2500"]
    assert "consistency: 0.5000" in text  # parents 0, 1, 1, 1 vs 0, 0, 0, 1
    assert "mistakes: 3 of 4" in text and "1.333" in text


@st.composite
def hierarchies_and_predictions(draw):
    labels = draw(st.integers(1, 8))
    raw = draw(st.lists(st.integers(0, 3), min_size=labels, max_size=labels))
    parent = np.unique(raw, return_inverse=True)[1].astype(np.int64)  # classes without gaps
    classes = int(parent.max()) + 1
    n = draw(st.integers(1, 25))
    y_true = draw(st.lists(st.integers(0, labels - 1), min_size=n, max_size=n))
    y_pred = draw(st.lists(st.integers(0, labels - 1), min_size=n, max_size=n))
    y_coarse = draw(st.none() | st.lists(st.integers(0, classes - 1), min_size=n, max_size=n))
    return parent, y_true, y_pred, y_coarse


@settings(max_examples=60, deadline=None)
@given(hierarchies_and_predictions())
def test_report_matches_loop(case):
    parent, y_true, y_pred, y_coarse = case
    hierarchy = ClassHierarchy(parent)
    r = hierarchical_report(hierarchy, np.array(y_true), np.array(y_pred),
                            None if y_coarse is None else np.array(y_coarse))
    hp, hr, hf, consistency, heights, mean = loop_hierarchical(parent, y_true, y_pred, y_coarse)
    assert r["hierarchical"]["precision"] == pytest.approx(hp)
    assert r["hierarchical"]["recall"] == pytest.approx(hr)
    assert r["hierarchical"]["f1"] == pytest.approx(hf)
    assert r["consistency"] == pytest.approx(consistency)
    assert r["mistakes"]["count"] == len(heights)
    assert r["mistakes"]["same_coarse"] == heights.count(1)
    assert r["mistakes"]["other_coarse"] == heights.count(2)
    assert r["mistakes"]["mean_height"] == (None if mean is None else pytest.approx(mean))

    coarse_true = [int(parent[t]) for t in y_true]
    coarse_pred = [int(parent[p]) for p in y_pred] if y_coarse is None else y_coarse
    for level, t, p, k in (("fine", y_true, y_pred, hierarchy.num_labels),
                           ("coarse", coarse_true, coarse_pred, hierarchy.num_classes)):
        assert r[level]["confusion_matrix"] == loop_confusion(t, p, k).tolist()
        assert r[level]["accuracy"] == pytest.approx(np.mean(np.array(t) == np.array(p)))
        per_class, macro = loop_prf(t, p, k)
        assert [r[level][m] for m in ("precision", "recall", "f1")] == pytest.approx(macro)
        assert r[level]["per_class"]["f1"] == pytest.approx(per_class[2].tolist())


# --- plots --------------------------------------------------------------------
def png_size(path):
    with open(path, "rb") as f:
        head = f.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    assert head[12:16] == b"IHDR"
    return struct.unpack(">II", head[16:24])


def test_plot_confusion_matrix_62_classes(tmp_path):
    rng = np.random.default_rng(0)
    k = 62
    y = rng.integers(0, k, 2000)
    cm = confusion_matrix(y, np.where(rng.random(2000) < 0.7, y, rng.integers(0, k, 2000)), k)
    path = plot_confusion_matrix(str(tmp_path / "sub" / "cm.png"), cm,
                                 [f"L{i}" for i in range(k)], "62 classes")
    width, height = png_size(path)
    assert width >= 1000 and height >= 1000  # big enough for 62 readable rows


def test_plot_confusion_matrix_counts_and_errors(tmp_path):
    cm = confusion_matrix([0, 1, 1, 2], [0, 1, 2, 2], 3)
    png_size(plot_confusion_matrix(str(tmp_path / "counts.png"), cm, None, "", normalize=False))
    with pytest.raises(ShapeError, match=r"plot_confusion_matrix: .*\(2, 3\)"):
        plot_confusion_matrix(str(tmp_path / "x.png"), np.ones((2, 3)))
    with pytest.raises(ShapeError, match="2 labels for a 3x3"):
        plot_confusion_matrix(str(tmp_path / "x.png"), cm, ["a", "b"])


def test_plot_level_confusions_groups_fine_labels_by_class(tmp_path, monkeypatch):
    # labels interleaved across classes, so grouping by class reorders them
    hierarchy = ClassHierarchy(np.array([1, 0, 1, 0, 2]), class_names=["x", "y", "z"],
                               label_names=["p", "q", "r", "s", "t"])
    rng = np.random.default_rng(1)
    r = hierarchical_report(hierarchy, rng.integers(0, 5, 50), rng.integers(0, 5, 50))
    paths = plot_level_confusions(str(tmp_path), r, hierarchy)
    assert [p.rsplit("/", 1)[-1] for p in paths] == ["confusion_coarse.png", "confusion_fine.png"]
    for p in paths:
        png_size(p)

    calls = []
    monkeypatch.setattr(confusion, "plot_confusion_matrix",
                        lambda path, cm, labels, title, normalize, groups=None:
                        calls.append((cm, labels, groups)) or path)
    plot_level_confusions(str(tmp_path), r, hierarchy)
    (coarse_cm, coarse_labels, _), (fine_cm, fine_labels, groups) = calls
    assert coarse_labels == ["x", "y", "z"]
    np.testing.assert_array_equal(coarse_cm, r["coarse"]["confusion_matrix"])
    assert fine_labels == ["q", "s", "p", "r", "t"]
    order = [1, 3, 0, 2, 4]
    np.testing.assert_array_equal(fine_cm, np.array(r["fine"]["confusion_matrix"])[order][:, order])
    assert list(groups) == [2, 4]
