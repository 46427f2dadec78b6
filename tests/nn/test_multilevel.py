import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from tinyar.data.hierarchy import ClassHierarchy
from tinyar.errors import DTypeError, ShapeError, TargetError
from tinyar.nn import MultiLevelSoftmax
from tests.helpers import assert_gradcheck


def head(num_labels=12, num_classes=4, hidden=5, seed=0, dtype=np.float64):
    counts = np.random.default_rng(seed).integers(1, 100, num_labels)
    m = MultiLevelSoftmax(hidden, ClassHierarchy.from_counts(counts, num_classes))
    return m.to(dtype)


@settings(max_examples=10, deadline=None)
@given(labels=st.integers(2, 9), classes=st.integers(1, 4), rows=st.integers(1, 6),
       hidden=st.integers(1, 4), seed=st.integers(0, 100))
def test_gradcheck(labels, classes, rows, hidden, seed):
    classes = min(classes, labels)
    m = head(labels, classes, hidden, seed)
    rng = np.random.default_rng(seed + 1)
    assert_gradcheck(m, rng.standard_normal((rows, hidden)), rng.integers(0, labels, rows))


def test_gradcheck_with_level_weights():
    m = head()
    m.level_weights = (0.3, 2.0)
    rng = np.random.default_rng(0)
    assert_gradcheck(m, rng.standard_normal((6, 5)), rng.integers(0, 12, 6))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_full_log_probabilities_sum_to_one(dtype):
    m = head(40, 6, 8, dtype=dtype)
    x = np.random.default_rng(0).standard_normal((10, 8)).astype(dtype) * 3
    total = np.exp(m.log_prob(x).astype(np.float64)).sum(axis=1)
    np.testing.assert_allclose(total, 1.0, atol=1e-6)


def test_loss_is_the_cross_entropy_of_the_factored_distribution():
    m = head()
    rng = np.random.default_rng(1)
    x, t = rng.standard_normal((9, 5)), rng.integers(0, 12, 9)
    loss = m(x, t)
    logp = m.log_prob(x)
    assert loss == pytest.approx(-logp[np.arange(9), t].mean(), rel=1e-12)
    coarse, fine = m.last_losses
    assert loss == pytest.approx(coarse + fine, rel=1e-12)
    class_logp = m.coarse_log_prob(x)
    assert coarse == pytest.approx(-class_logp[np.arange(9), m.hierarchy.parent[t]].mean())


def test_backward_touches_only_the_classes_of_the_targets():
    """The O(H (C + |class|)) promise: fine rows of other classes get no gradient."""
    m = head(30, 5)
    target_class = 2
    labels = m.hierarchy.labels_of(target_class)
    x = np.random.default_rng(0).standard_normal((4, 5))
    m.zero_grad()
    m(x, labels[np.arange(4) % labels.size])
    m.backward()
    starts = m.hierarchy.starts
    touched = np.flatnonzero(np.abs(m.fine.weight.grad).sum(axis=1))
    assert touched.min() >= starts[target_class] and touched.max() < starts[target_class + 1]
    assert np.abs(m.coarse.weight.grad).sum() > 0


def test_joint_decoding_is_the_exact_argmax_and_greedy_follows_the_class():
    m = head(30, 5, 6)
    x = np.random.default_rng(2).standard_normal((50, 6)) * 2
    logp = m.log_prob(x)
    np.testing.assert_array_equal(m.predict(x), logp.argmax(axis=1))
    greedy = m.predict(x, decode="greedy")
    best_class = m.coarse_log_prob(x).argmax(axis=1)
    np.testing.assert_array_equal(m.hierarchy.parent[greedy], best_class)
    for i in range(50):
        members = m.hierarchy.labels_of(best_class[i])
        assert greedy[i] == members[logp[i, members].argmax()]
    with pytest.raises(ValueError, match="joint' or 'greedy"):
        m.predict(x, decode="beam")


def test_sampling_follows_the_distribution():
    m = head(8, 3, 4)
    x = np.random.default_rng(3).standard_normal((1, 4))
    p = np.exp(m.log_prob(x))[0]
    draws = m.sample(np.repeat(x, 20000, axis=0), rng=np.random.default_rng(0))
    freq = np.bincount(draws, minlength=8) / draws.size
    np.testing.assert_allclose(freq, p, atol=0.015)
    cold = m.sample(np.repeat(x, 50, axis=0), temperature=0)
    assert (cold == m.predict(x, decode="greedy")[0]).all()


def test_top_k_sampling_stays_inside_the_top_k():
    m = head(20, 4, 4)
    x = np.random.default_rng(4).standard_normal((1, 4))
    draws = m.sample(np.repeat(x, 500, axis=0), top_k=1, rng=np.random.default_rng(0))
    assert (draws == m.predict(x, decode="greedy")[0]).all()


def test_state_dict_names():
    assert list(head().state_dict()) == ["coarse.weight", "coarse.bias", "fine.weight", "fine.bias"]


def test_bad_inputs_name_the_layer():
    m = head()
    x = np.zeros((3, 5))
    with pytest.raises(TargetError, match=r"MultiLevelSoftmax.*12 is outside \[0, 12\)"):
        m(x, np.array([0, 1, 12]))
    with pytest.raises(ShapeError, match=r"expected targets \(3,\)"):
        m(x, np.array([0, 1]))
    with pytest.raises(ShapeError, match=r"expected input \(M, 5\), got \(3, 4\)"):
        m(np.zeros((3, 4)), np.array([0, 1, 2]))
    with pytest.raises(DTypeError, match="integer class indices"):
        m(x, np.array([0.0, 1.0, 2.0]))
    with pytest.raises(TypeError, match="ClassHierarchy"):
        MultiLevelSoftmax(4, [0, 1])


def test_level_weight_schedule_and_classifier_levels():
    from tinyar.nn.multilevel import LevelWeightSchedule, MultiLevelClassifier
    schedule = LevelWeightSchedule([(0, (0.9, 0.1)), (10, (0.5, 0.5)), (20, (0.1, 0.9))])
    assert schedule(0) == (0.9, 0.1) and schedule(15) == (0.5, 0.5) and schedule(99) == (0.1, 0.9)
    with pytest.raises(ValueError, match="first milestone must start at 0"):
        LevelWeightSchedule([(1, (1, 1))])
    with pytest.raises(ValueError, match="not both 0"):
        LevelWeightSchedule([(0, (0, 0))])
    h = ClassHierarchy.from_counts(np.arange(1, 13), 4)
    clf = MultiLevelClassifier(5, h, schedule=schedule).double()
    assert clf.level_weights == (0.9, 0.1)
    assert clf.set_epoch(12) == (0.5, 0.5)
    x = np.random.default_rng(0).standard_normal((20, 5))
    own_coarse = clf.coarse_log_prob(x).argmax(axis=1)
    for decode in ("joint", "greedy"):
        coarse, fine = clf.predict_levels(x, decode)
        np.testing.assert_array_equal(coarse, own_coarse)  # the coarse level's own argmax
        np.testing.assert_array_equal(fine, clf.predict(x, decode))
    coarse, fine = clf.predict_levels(x, "greedy")
    np.testing.assert_array_equal(coarse, h.parent[fine])  # greedy: consistent by construction
    with pytest.raises(ValueError, match="decode must be"):
        clf.predict_levels(x, "beam")
    rng = np.random.default_rng(1)
    assert_gradcheck(clf, rng.standard_normal((6, 5)), rng.integers(0, 12, 6))


@pytest.mark.parametrize("decode", ["joint", "greedy"])
def test_predict_levels_computes_the_coarse_level_once(decode, monkeypatch):
    from tinyar.nn.multilevel import MultiLevelClassifier
    clf = MultiLevelClassifier(5, ClassHierarchy.from_counts(np.arange(1, 13), 4)).double()
    x = np.random.default_rng(2).standard_normal((7, 5))
    expected = clf.predict(x, decode)
    calls = []
    original = clf.coarse_log_prob
    monkeypatch.setattr(clf, "coarse_log_prob", lambda h: calls.append(1) or original(h))
    _, fine = clf.predict_levels(x, decode)
    assert len(calls) == 1
    np.testing.assert_array_equal(fine, expected)


# --- the threaded class loop (where kernels share BLAS's threads) ---------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_threaded_class_loop_matches_the_serial_one(dtype, monkeypatch):
    """With kernels allowed threads, runs of class blocks of near-equal work go to the
    threads (cpu/multilevel.py); the loss and every gradient stay the serial loop's."""
    from tinyar.backend.cpu import threads
    from tinyar.backend.cpu import _util, multilevel
    m = head(60, 7, 9, dtype=dtype)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((50, 9)).astype(dtype)
    t = rng.integers(0, 60, 50)

    def run():
        m.zero_grad()
        loss = m(x, t)
        dx = m.backward()
        return loss, dx, {name: p.grad.copy() for name, p in m.named_parameters()}
    serial = run()
    monkeypatch.setattr(threads, "PARALLEL_KERNELS", True)
    monkeypatch.setattr(_util, "PARALLEL_MIN_ELEMENTS", 0)
    monkeypatch.setattr(_util, "get_num_threads", lambda: 3)
    groups = m._cache[3][1]
    offsets, size = multilevel._offsets(groups)
    bounds = multilevel._split(groups, offsets, size, 9)
    # at most one run per thread, none empty (a block bigger than a third of the
    # work leaves fewer runs than threads)
    assert bounds[0] == 0 and bounds[-1] == len(groups) and 3 <= len(bounds) <= 4
    assert np.all(np.diff(bounds) > 0)
    threaded = run()
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-14)
    assert threaded[0] == pytest.approx(serial[0], rel=tol["rtol"])
    np.testing.assert_allclose(threaded[1], serial[1], **tol)
    for name, g in serial[2].items():
        np.testing.assert_allclose(threaded[2][name], g, err_msg=name, **tol)


def test_one_dominant_class_block_stays_on_the_serial_loop(monkeypatch):
    """A split into a single run would put every product on one thread; the serial loop,
    whose products the BLAS threads, runs it instead."""
    from tinyar.backend.cpu import threads
    from tinyar.backend.cpu import _util, multilevel
    monkeypatch.setattr(threads, "PARALLEL_KERNELS", True)
    monkeypatch.setattr(_util, "PARALLEL_MIN_ELEMENTS", 0)
    monkeypatch.setattr(_util, "get_num_threads", lambda: 2)
    groups = np.array([[0, 90, 0, 50], [90, 91, 50, 53]])  # 4,500 of 4,503 elements
    offsets, size = multilevel._offsets(groups)
    assert multilevel._split(groups, offsets, size, 8) is None
    groups = np.array([[0, 40, 0, 50], [40, 80, 50, 100]])
    offsets, size = multilevel._offsets(groups)
    np.testing.assert_array_equal(multilevel._split(groups, offsets, size, 8), [0, 1, 2])
