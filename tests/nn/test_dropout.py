"""Dropout: mask statistics, scaling, modes, repeatability, gradient, errors."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import tinyar
from tinyar.errors import DTypeError
from tinyar.nn.dropout import Dropout
from tests.helpers import assert_gradcheck, torch_or_skip


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_fraction_kept_and_scaling(p):
    x = np.full((200, 500), 2.0, np.float32)
    y = Dropout(p)(x)
    kept = y != 0
    n = x.size
    # binomial: the kept fraction is within 5 standard deviations of 1 - p
    assert abs(kept.mean() - (1 - p)) < 5 * np.sqrt(p * (1 - p) / n)
    np.testing.assert_allclose(y[kept], 2.0 / (1 - p), rtol=1e-6)
    assert y.dtype == np.float32
    assert abs(y.mean() - 2.0) < 0.05  # inverted dropout keeps the expectation


def test_backward_uses_the_forward_mask(rng):
    layer = Dropout(0.3)
    x = rng.standard_normal((6, 7))
    y = layer(x)
    keep = y != 0
    g = rng.standard_normal((6, 7))
    np.testing.assert_allclose(layer.backward(g), g * keep / 0.7)
    np.testing.assert_allclose(y, x * keep / 0.7)


def test_same_seed_same_mask_and_new_draw_each_call():
    x = np.ones((50, 40), np.float32)
    layer = Dropout(0.5)
    tinyar.manual_seed(11)
    first, second = layer(x), layer(x)
    tinyar.manual_seed(11)
    np.testing.assert_array_equal(layer(x), first)
    assert (first != second).any()  # the mask is drawn anew every forward
    tinyar.manual_seed(12)
    assert (layer(x) != first).any()


def test_eval_mode_is_the_identity(rng):
    layer = Dropout(0.5).eval()
    x = rng.standard_normal((3, 4)).astype(np.float32)
    assert layer(x) is x
    g = rng.standard_normal((3, 4)).astype(np.float32)
    assert layer.backward(g) is g
    layer.train()
    assert (layer(x) == 0).any()


def test_p_zero_is_the_identity_and_p_one_drops_everything(rng):
    x = rng.standard_normal((4, 5))
    g = rng.standard_normal((4, 5))
    identity = Dropout(0.0)
    assert identity(x) is x and identity.backward(g) is g
    drop_all = Dropout(1.0)
    assert not drop_all(x).any() and not drop_all.backward(g).any()


@settings(max_examples=10, deadline=None)
@given(shape=st.lists(st.integers(1, 4), min_size=1, max_size=3),
       p=st.sampled_from([0.2, 0.5, 0.8]), seed=st.integers(0, 99))
def test_dropout_gradcheck(shape, p, seed):
    x = np.random.default_rng([seed, 1]).standard_normal(shape)
    assert_gradcheck(Dropout(p), x, seed=seed)


def test_float64_stays_float64(rng):
    assert Dropout(0.5)(rng.standard_normal((3, 3))).dtype == np.float64


@pytest.mark.parametrize("p", [-0.1, 1.5])
def test_rejects_p_outside_unit_interval(p):
    with pytest.raises(ValueError, match=r"Dropout: .*\[0, 1\]"):
        Dropout(p)


def test_rejects_integer_input():
    with pytest.raises(DTypeError, match=r"Dropout\(p=0.5\)"):
        Dropout(0.5)(np.ones((2, 2), np.int64))


@pytest.mark.torch
def test_state_dict_is_empty_like_torch():
    torch = torch_or_skip()
    assert list(Dropout(0.2).state_dict()) == list(torch.nn.Dropout(0.2).state_dict()) == []
