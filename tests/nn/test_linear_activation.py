import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from tinyar import nn
from tinyar.errors import DTypeError, ShapeError
from tests.helpers import assert_gradcheck, compare_with_torch, torch_or_skip

ACTIVATIONS = {
    "ReLU": (lambda: nn.ReLU(), "ReLU", {}),
    "LeakyReLU": (lambda: nn.LeakyReLU(0.2), "LeakyReLU", {"negative_slope": 0.2}),
    "Tanh": (lambda: nn.Tanh(), "Tanh", {}),
    "Sigmoid": (lambda: nn.Sigmoid(), "Sigmoid", {}),
    "GELU": (lambda: nn.GELU(), "GELU", {}),
}

small = st.integers(1, 4)


@settings(max_examples=10, deadline=None)
@given(n=small, fin=small, fout=small, bias=st.booleans(), lead=st.integers(0, 2))
def test_linear_gradcheck(n, fin, fout, bias, lead):
    x = np.random.default_rng(n * 7 + fin).standard_normal((n,) + (2,) * lead + (fin,))
    assert_gradcheck(nn.Linear(fin, fout, bias=bias), x)


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
@settings(max_examples=5, deadline=None)
@given(shape=st.lists(st.integers(1, 4), min_size=1, max_size=3))
def test_activation_gradcheck(name, shape):
    x = np.random.default_rng(len(shape)).standard_normal(shape) * 2
    x[np.abs(x) < 1e-3] = 0.5  # stay off the ReLU kink, where the derivative is undefined
    assert_gradcheck(ACTIVATIONS[name][0](), x)


@pytest.mark.torch
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_linear_matches_torch(dtype):
    torch = torch_or_skip()
    x = np.random.default_rng(0).standard_normal((6, 5, 7))
    compare_with_torch(nn.Linear(7, 3), torch.nn.Linear(7, 3), x, dtype=dtype)
    compare_with_torch(nn.Linear(7, 3, bias=False), torch.nn.Linear(7, 3, bias=False), x,
                       dtype=dtype)


@pytest.mark.torch
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activation_matches_torch(name, dtype):
    torch = torch_or_skip()
    make, torch_name, kwargs = ACTIVATIONS[name]
    x = np.random.default_rng(1).standard_normal((4, 3, 5)) * 3
    compare_with_torch(make(), getattr(torch.nn, torch_name)(**kwargs), x, dtype=dtype)


@pytest.mark.torch
def test_mlp_matches_torch():
    torch = torch_or_skip()
    ours = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 8), nn.GELU(), nn.Linear(8, 2))
    theirs = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 8),
                                 torch.nn.GELU(), torch.nn.Linear(8, 2))
    x = np.random.default_rng(2).standard_normal((9, 5))
    for dtype in (np.float64, np.float32):
        compare_with_torch(ours, theirs, x, dtype=dtype)


def test_linear_rejects_wrong_feature_size():
    with pytest.raises(ShapeError, match=r"Linear\(in_features=128.*expected input \(\.\.\., 128\), "
                                         r"got \(32, 100\)"):
        nn.Linear(128, 4)(np.zeros((32, 100), np.float32))


def test_linear_rejects_scalar_input():
    with pytest.raises(ShapeError, match="Linear"):
        nn.Linear(3, 4)(np.zeros((), np.float32))


def test_linear_rejects_wrong_dtype():
    with pytest.raises(DTypeError, match="expected input of dtype float32.*got float64"):
        nn.Linear(3, 4)(np.zeros((2, 3)))
    with pytest.raises(DTypeError, match="floating-point input, got dtype int64"):
        nn.Linear(3, 4)(np.zeros((2, 3), np.int64))


def test_activation_rejects_integers():
    with pytest.raises(DTypeError, match="ReLU"):
        nn.ReLU()(np.arange(3))


def test_flatten_round_trip_and_errors():
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    f = nn.Flatten()
    y = f(x)
    assert y.shape == (2, 12)
    np.testing.assert_array_equal(f.backward(y), x)
    assert nn.Flatten(0, 1)(x).shape == (6, 4)
    with pytest.raises(ShapeError, match="Flatten"):
        nn.Flatten()(np.zeros(3, np.float32))


@pytest.mark.torch
def test_flatten_matches_torch():
    torch = torch_or_skip()
    x = np.random.default_rng(3).standard_normal((2, 3, 4, 5))
    for args in [(), (2,), (0, 2), (1, -2)]:
        ours, theirs = nn.Flatten(*args), torch.nn.Flatten(*args)
        compare_with_torch(ours, theirs, x)
