import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from tinyar.errors import DTypeError, ShapeError
from tinyar.nn.softmax import LogSoftmax, Softmax
from tests.helpers import assert_gradcheck, compare_with_torch, torch_or_skip

LAYERS = {"Softmax": Softmax, "LogSoftmax": LogSoftmax}


def _reference(name, x, axis):
    """float64 NumPy softmax / log-softmax along ``axis``."""
    z = x.astype(np.float64) - x.max(axis=axis, keepdims=True)
    log_y = z - np.log(np.exp(z).sum(axis=axis, keepdims=True))
    return np.exp(log_y) if name == "Softmax" else log_y


@pytest.mark.parametrize("name", sorted(LAYERS))
@settings(max_examples=10, deadline=None)
@given(shape=st.lists(st.integers(1, 4), min_size=1, max_size=3), data=st.data())
def test_gradcheck(name, shape, data):
    dim = data.draw(st.integers(-len(shape), len(shape) - 1), label="dim")
    x = np.random.default_rng(sum(shape)).standard_normal(shape) * 2
    assert_gradcheck(LAYERS[name](dim=dim), x)


@pytest.mark.torch
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("dim", [-1, 0, 1, -2])
@pytest.mark.parametrize("name", sorted(LAYERS))
def test_matches_torch(name, dim, dtype):
    torch = torch_or_skip()
    x = np.random.default_rng(3).standard_normal((4, 3, 6)) * 3
    compare_with_torch(LAYERS[name](dim=dim), getattr(torch.nn, name)(dim=dim), x, dtype=dtype)


@pytest.mark.parametrize("name", sorted(LAYERS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_forward_matches_float64_reference_over_a_wide_range(name, dtype):
    # logits from -100 to 100: float32 exp underflows and must not turn into NaN
    x = np.random.default_rng(0).uniform(-100, 100, (64, 33)).astype(dtype)
    x[0] += 1e4  # a huge common offset: only a max-shifted softmax survives it
    y = LAYERS[name]()(x)
    assert y.dtype == dtype and y.shape == x.shape
    expected = _reference(name, x, -1)
    if name == "Softmax":
        np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(y.sum(axis=-1), 1, rtol=1e-6)
    else:
        np.testing.assert_allclose(y, expected, rtol=1e-6, atol=1e-4)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_masked_logits_get_exactly_zero_probability(dtype):
    x = np.array([[0.0, -np.inf, 1.0, -np.inf]], dtype)
    y = Softmax()(x)
    assert y[0, 1] == 0 and y[0, 3] == 0
    np.testing.assert_allclose(y[0, [0, 2]], [1 / (1 + np.e), np.e / (1 + np.e)], rtol=1e-6)
    assert LogSoftmax()(x)[0, 1] == -np.inf


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_nan_spreads_to_its_row_only(name):
    x = np.random.default_rng(1).standard_normal((3, 5)).astype(np.float32)
    x[1, 2] = np.nan
    y = LAYERS[name]()(x)
    assert np.isnan(y[1]).all()
    assert np.isfinite(y[[0, 2]]).all()


def test_dim_other_than_last_equals_moving_the_axis():
    x = np.random.default_rng(2).standard_normal((3, 4, 5)).astype(np.float32)
    layer = LogSoftmax(dim=1)
    y = layer(x)
    np.testing.assert_allclose(y, _reference("LogSoftmax", x, 1), rtol=1e-5, atol=1e-6)
    g = np.random.default_rng(3).standard_normal(x.shape).astype(np.float32)
    dx = layer.backward(g)
    moved = LogSoftmax(dim=-1)
    moved(np.moveaxis(x, 1, -1))
    np.testing.assert_allclose(dx, np.moveaxis(moved.backward(np.moveaxis(g, 1, -1)), -1, 1),
                               rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_rejects_integer_input(name):
    with pytest.raises(DTypeError, match=rf"{name}\(dim=-1\).*floating-point input.*int64"):
        LAYERS[name]()(np.zeros((2, 3), np.int64))


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_rejects_a_missing_axis(name):
    with pytest.raises(ShapeError, match=rf"{name}\(dim=2\).*axis 2.*got \(2, 3\)"):
        LAYERS[name](dim=2)(np.zeros((2, 3), np.float32))
    with pytest.raises(ShapeError, match=rf"{name}\(dim=-1\).*got \(\)"):
        LAYERS[name]()(np.zeros((), np.float32))


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_backward_rejects_a_gradient_of_another_shape(name):
    layer = LAYERS[name]()
    layer(np.zeros((2, 3), np.float32))
    with pytest.raises(ShapeError, match=rf"{name}.*gradient of the output.s shape \(2, 3\), got \(2, 4\)"):
        layer.backward(np.zeros((2, 4), np.float32))


def test_float32_exp_is_accurate_over_its_whole_range():
    # rows [0, z]: softmax_1 = e^z / (1 + e^z) exercises the kernel's float32 exp for
    # every z down to where e^z underflows (about -87.3); a worse exp shows up here
    z = np.linspace(-87, 0, 20001, dtype=np.float32)
    x = np.stack([np.zeros_like(z), z], axis=1)
    y = Softmax()(x)[:, 1]
    e = np.exp(z.astype(np.float64))
    np.testing.assert_allclose(y, e / (1 + e), rtol=5e-7, atol=0)
    tiny = Softmax()(np.array([[0, -88], [0, -104], [0, -np.inf]], np.float32))[:, 1]
    assert (tiny >= 0).all() and (tiny < 1e-38).all()
