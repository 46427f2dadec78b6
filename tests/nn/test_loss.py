import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from tinyar.errors import DTypeError, NumericalError, ShapeError, TargetError
from tinyar.nn.loss import BCEWithLogitsLoss, CrossEntropyLoss, MSELoss, NLLLoss
from tinyar.nn.softmax import LogSoftmax
from tests.helpers import assert_gradcheck, compare_with_torch, torch_or_skip

REDUCTIONS = ["mean", "sum", "none"]
IGNORE = -100


def _class_problem(seed, n, classes, spatial=(), ignore=True):
    """Logits (n, C, *spatial) and int targets (n, *spatial), one of them ignored."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, classes) + tuple(spatial)) * 2
    t = rng.integers(0, classes, (n,) + tuple(spatial))
    if ignore and t.size > 1:
        t.reshape(-1)[0] = IGNORE
    return x, t


def _torch_weight(torch, weight):
    return None if weight is None else torch.from_numpy(np.array(weight))


# --- gradient checks --------------------------------------------------------------
class_shapes = dict(n=st.integers(1, 4), classes=st.integers(2, 5),
                    spatial=st.lists(st.integers(1, 3), max_size=1),
                    reduction=st.sampled_from(REDUCTIONS), weighted=st.booleans())


@settings(max_examples=12, deadline=None)
@given(smoothing=st.sampled_from([0.0, 0.1, 1.0]), **class_shapes)
def test_cross_entropy_gradcheck(n, classes, spatial, reduction, weighted, smoothing):
    x, t = _class_problem(n + 10 * classes, n, classes, spatial)
    weight = np.random.default_rng(n).uniform(0.5, 2.0, classes) if weighted else None
    loss = CrossEntropyLoss(weight=weight, reduction=reduction, label_smoothing=smoothing)
    assert_gradcheck(loss, x, t)


@settings(max_examples=10, deadline=None)
@given(**class_shapes)
def test_nll_gradcheck(n, classes, spatial, reduction, weighted):
    x, t = _class_problem(n + 10 * classes, n, classes, spatial)
    weight = np.random.default_rng(n).uniform(0.5, 2.0, classes) if weighted else None
    assert_gradcheck(NLLLoss(weight=weight, reduction=reduction), x, t)


elementwise_shapes = dict(shape=st.lists(st.integers(1, 4), min_size=1, max_size=3),
                          reduction=st.sampled_from(REDUCTIONS))


@settings(max_examples=10, deadline=None)
@given(**elementwise_shapes)
def test_mse_gradcheck(shape, reduction):
    rng = np.random.default_rng(len(shape))
    assert_gradcheck(MSELoss(reduction=reduction), rng.standard_normal(shape),
                     rng.standard_normal(shape))


@settings(max_examples=10, deadline=None)
@given(pos_weighted=st.booleans(), **elementwise_shapes)
def test_bce_with_logits_gradcheck(shape, reduction, pos_weighted):
    rng = np.random.default_rng(len(shape))
    pos_weight = rng.uniform(0.5, 3.0, shape[-1]) if pos_weighted else None
    assert_gradcheck(BCEWithLogitsLoss(reduction=reduction, pos_weight=pos_weight),
                     rng.standard_normal(shape) * 3, rng.uniform(0, 1, shape))


# --- side by side with PyTorch ------------------------------------------------------
DTYPES = [np.float64, np.float32]


@pytest.mark.torch
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("smoothing", [0.0, 0.25])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("spatial", [(), (3,), (2, 3)])
def test_cross_entropy_matches_torch(spatial, weighted, smoothing, reduction, dtype):
    torch = torch_or_skip()
    x, t = _class_problem(5, 4, 6, spatial)
    weight = np.random.default_rng(1).uniform(0.5, 2.0, 6) if weighted else None
    ours = CrossEntropyLoss(weight=weight, reduction=reduction, label_smoothing=smoothing)
    theirs = torch.nn.CrossEntropyLoss(weight=_torch_weight(torch, weight), reduction=reduction,
                                       label_smoothing=smoothing)
    compare_with_torch(ours, theirs, x, t, dtype=dtype)


@pytest.mark.torch
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_edge_cases_match_torch(reduction, dtype):
    torch = torch_or_skip()
    rng = np.random.default_rng(2)
    # ignore_index inside [0, C) (a padding class)
    x = rng.standard_normal((7, 5)) * 3
    t = rng.integers(0, 5, 7)
    t[:2] = 0
    compare_with_torch(CrossEntropyLoss(ignore_index=0, reduction=reduction, label_smoothing=0.1),
                       torch.nn.CrossEntropyLoss(ignore_index=0, reduction=reduction,
                                                 label_smoothing=0.1),
                       x, t, dtype=dtype)
    # one unbatched sample: input (C,), target ()
    compare_with_torch(CrossEntropyLoss(reduction=reduction),
                       torch.nn.CrossEntropyLoss(reduction=reduction),
                       rng.standard_normal(5), np.array(3), dtype=dtype)
    # masked logits (-inf off the target) and a large common offset
    x = rng.standard_normal((4, 6)) + 500
    t = np.array([0, 1, 2, 3])
    x[np.arange(4), t + 1] = -np.inf
    compare_with_torch(CrossEntropyLoss(reduction=reduction),
                       torch.nn.CrossEntropyLoss(reduction=reduction), x, t, dtype=dtype)


@pytest.mark.torch
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("spatial", [(), (3,)])
def test_nll_matches_torch(spatial, weighted, reduction, dtype):
    torch = torch_or_skip()
    x, t = _class_problem(6, 4, 5, spatial)
    weight = np.random.default_rng(1).uniform(0.5, 2.0, 5) if weighted else None
    compare_with_torch(NLLLoss(weight=weight, reduction=reduction),
                       torch.nn.NLLLoss(weight=_torch_weight(torch, weight), reduction=reduction),
                       x, t, dtype=dtype)


@pytest.mark.torch
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_mse_matches_torch(reduction, dtype):
    torch = torch_or_skip()
    rng = np.random.default_rng(3)
    compare_with_torch(MSELoss(reduction=reduction), torch.nn.MSELoss(reduction=reduction),
                       rng.standard_normal((4, 3, 5)), rng.standard_normal((4, 3, 5)), dtype=dtype)


@pytest.mark.torch
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("pos_weight", [None, "per_class", "single"])
def test_bce_with_logits_matches_torch(pos_weight, reduction, dtype):
    torch = torch_or_skip()
    rng = np.random.default_rng(4)
    x = rng.standard_normal((4, 3, 5)) * 10  # large |x|: the stable form matters
    t = rng.uniform(0, 1, x.shape)
    t[0] = rng.integers(0, 2, t[0].shape)  # hard labels too
    pw = {None: None, "per_class": rng.uniform(0.5, 3.0, 5), "single": np.array([2.5])}[pos_weight]
    ours = BCEWithLogitsLoss(reduction=reduction, pos_weight=pw)
    theirs = torch.nn.BCEWithLogitsLoss(reduction=reduction,
                                        pos_weight=_torch_weight(torch, pw))
    compare_with_torch(ours, theirs, x, t, dtype=dtype)


# --- semantics ----------------------------------------------------------------------
def test_cross_entropy_is_log_softmax_then_nll():
    x, t = _class_problem(7, 5, 4, (3,))
    ce = CrossEntropyLoss()
    log_softmax, nll = LogSoftmax(dim=1), NLLLoss()
    assert ce(x, t) == pytest.approx(nll(log_softmax(x), t), rel=1e-12)
    np.testing.assert_allclose(ce.backward(), log_softmax.backward(nll.backward()),
                               rtol=1e-10, atol=1e-14)


def test_label_smoothing_mean_divides_by_kept_targets():
    # torch's rule: the smoothing term is averaged over the non-ignored targets too
    x = np.random.default_rng(8).standard_normal((4, 3))
    t = np.array([0, IGNORE, 2, 1])
    eps = 0.3
    logp = x - np.log(np.exp(x).sum(axis=1, keepdims=True))
    keep = t != IGNORE
    per_row = -(1 - eps) * logp[keep, t[keep]] - eps / 3 * logp[keep].sum(axis=1)
    got = CrossEntropyLoss(label_smoothing=eps)(x, t)
    assert got == pytest.approx(per_row.sum() / 3, rel=1e-12)


def test_backward_scales_with_the_upstream_gradient():
    x, t = _class_problem(9, 3, 4)
    for reduction in ("mean", "sum"):
        loss = CrossEntropyLoss(reduction=reduction, label_smoothing=0.1)
        loss(x, t)
        np.testing.assert_allclose(loss.backward(2.5), 2.5 * loss.backward(1.0), rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.int32, np.uint8, np.int16])
def test_any_integer_target_dtype_works(dtype):
    x, t = _class_problem(14, 5, 4, ignore=False)
    expected = CrossEntropyLoss(reduction="none")(x, t)
    loss = CrossEntropyLoss(reduction="none")
    np.testing.assert_array_equal(loss(x, t.astype(dtype)), expected)
    assert loss.backward(np.ones(5)).shape == x.shape


def test_float32_stays_float32():
    x, t = _class_problem(10, 6, 5)
    x = x.astype(np.float32)
    for loss in (CrossEntropyLoss(reduction="none"), NLLLoss(reduction="none")):
        assert loss(x, t).dtype == np.float32
        assert loss.backward(np.ones(6, np.float32)).dtype == np.float32
    ce = CrossEntropyLoss()
    assert isinstance(ce(x, t), float) and ce.backward().dtype == np.float32


def test_ignored_rows_get_zero_loss_and_gradient():
    x, t = _class_problem(11, 5, 4)
    t[3] = IGNORE
    loss = CrossEntropyLoss(reduction="none", label_smoothing=0.2)
    losses = loss(x, t)
    assert losses[0] == 0 and losses[3] == 0 and (losses[[1, 2, 4]] > 0).all()
    grad = loss.backward(np.ones(5))
    assert not grad[[0, 3]].any() and grad[[1, 2, 4]].any()


# --- bad input ----------------------------------------------------------------------
def test_cross_entropy_rejects_bad_input():
    ce = CrossEntropyLoss()
    x = np.zeros((4, 5), np.float32)
    name = r"CrossEntropyLoss\(ignore_index=-100, reduction='mean', label_smoothing=0.0\)"
    with pytest.raises(ShapeError, match=name + r": expected input \(N, C, d1, \.\.\.\) or \(C,\)"):
        ce(np.zeros((), np.float32), np.array(0))
    with pytest.raises(ShapeError, match=name + r": expected target \(4,\) for input \(4, 5\), "
                                                r"got \(4, 1\)"):
        ce(x, np.zeros((4, 1), np.int64))
    with pytest.raises(ShapeError, match=r"expected target \(2, 3\) for input \(2, 5, 3\)"):
        ce(np.zeros((2, 5, 3), np.float32), np.zeros((2, 5), np.int64))
    with pytest.raises(DTypeError, match=name + r": expected integer class indices.*float32"):
        ce(x, np.zeros(4, np.float32))
    with pytest.raises(DTypeError, match=name + r": expected a floating-point input.*int64"):
        ce(np.zeros((4, 5), np.int64), np.zeros(4, np.int64))
    with pytest.raises(TargetError, match=name + r": target 5 is outside \[0, 5\)"):
        ce(x, np.array([0, 1, 5, 2]))
    with pytest.raises(TargetError, match=r"target -1 is outside \[0, 5\)"):
        ce(x, np.array([0, 1, -1, 2]))
    ce(x, np.array([0, IGNORE, 4, 2]))  # ignore_index is allowed


def test_cross_entropy_rejects_weight_mismatch():
    weighted = CrossEntropyLoss(weight=np.ones(3, np.float32))
    with pytest.raises(ShapeError, match=r"CrossEntropyLoss.*expected input with 3 classes"):
        weighted(np.zeros((2, 4), np.float32), np.zeros(2, np.int64))
    with pytest.raises(DTypeError, match=r"CrossEntropyLoss.*expected input of dtype float32"):
        weighted(np.zeros((2, 3)), np.zeros(2, np.int64))
    with pytest.raises(ShapeError, match="CrossEntropyLoss: expected weight"):
        CrossEntropyLoss(weight=np.ones((2, 3)))
    with pytest.raises(ValueError, match="reduction must be"):
        CrossEntropyLoss(reduction="average")
    with pytest.raises(ValueError, match="label_smoothing"):
        CrossEntropyLoss(label_smoothing=1.5)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_loss_raises(bad):
    x, t = _class_problem(12, 3, 4, ignore=False)
    x = x.astype(np.float32)
    x[1, 2] = bad
    for loss in (CrossEntropyLoss(), CrossEntropyLoss(reduction="none"), NLLLoss(reduction="sum")):
        with pytest.raises(NumericalError, match=type(loss).__name__ + r".*the loss is"):
            loss(x, np.array([0, 2, 1]))
    for loss in (MSELoss(), BCEWithLogitsLoss()):
        with pytest.raises(NumericalError, match=type(loss).__name__):
            loss(x, np.zeros_like(x))


def test_mean_over_zero_targets_raises():
    x = np.zeros((2, 3), np.float32)
    t = np.array([IGNORE, IGNORE])
    with pytest.raises(NumericalError, match=r"CrossEntropyLoss.*'mean' over zero targets"):
        CrossEntropyLoss()(x, t)
    assert CrossEntropyLoss(reduction="sum")(x, t) == 0.0
    with pytest.raises(NumericalError, match=r"MSELoss.*'mean' over zero targets"):
        MSELoss()(np.zeros((0, 3)), np.zeros((0, 3)))


def test_nll_rejects_bad_targets():
    nll = NLLLoss()
    with pytest.raises(TargetError, match=r"NLLLoss\(ignore_index=-100.*target 3 is outside"):
        nll(np.zeros((2, 3), np.float32), np.array([0, 3]))
    with pytest.raises(DTypeError, match="NLLLoss.*integer class indices"):
        nll(np.zeros((2, 3), np.float32), np.array([0.0, 1.0]))


@pytest.mark.parametrize("cls", [MSELoss, BCEWithLogitsLoss])
def test_elementwise_losses_reject_bad_input(cls):
    loss = cls()
    x = np.zeros((2, 3), np.float32)
    name = cls.__name__ + r"\(reduction='mean'\)"
    with pytest.raises(ShapeError, match=name + r": expected target of the same shape as the "
                                                r"input \(2, 3\), got \(3, 2\)"):
        loss(x, np.zeros((3, 2), np.float32))
    with pytest.raises(DTypeError, match=name + r": expected a floating-point target"):
        loss(x, np.zeros((2, 3), np.int64))
    with pytest.raises(DTypeError, match=name + r": expected target of dtype float32"):
        loss(x, np.zeros((2, 3)))


def test_bce_rejects_pos_weight_of_another_size():
    loss = BCEWithLogitsLoss(pos_weight=np.ones(4, np.float32))
    with pytest.raises(ShapeError, match=r"BCEWithLogitsLoss.*pos_weight \(4,\).*input \(2, 3\)"):
        loss(np.zeros((2, 3), np.float32), np.zeros((2, 3), np.float32))


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_backward_rejects_a_gradient_of_another_shape(reduction):
    loss = CrossEntropyLoss(reduction=reduction)
    x, t = _class_problem(13, 3, 4)
    loss(x, t)
    bad = np.ones(4) if reduction == "none" else np.ones(3)
    with pytest.raises(ShapeError, match="CrossEntropyLoss.*expected (grad|a gradient)"):
        loss.backward(bad)
