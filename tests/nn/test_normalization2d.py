"""BatchNorm2d and Dropout2d: gradient checks, PyTorch twins, running statistics, masks, errors."""
import numpy as np
import pytest
from hypothesis import assume, given, settings, strategies as st

import tinyar
from tinyar.errors import DTypeError, ShapeError
from tinyar.nn.normalization2d import BatchNorm2d, Dropout2d
from tests.helpers import assert_gradcheck, compare_with_torch, torch_or_skip

SETTINGS = settings(max_examples=10, deadline=None)
DTYPES = [np.float64, np.float32]


def _randomize(layer, rng):
    """Affine parameters away from 1 / 0, so that their role is tested."""
    if layer.weight is not None:
        layer.weight.data[...] = rng.standard_normal(layer.weight.shape) + 1.0
        layer.bias.data[...] = rng.standard_normal(layer.bias.shape)
    return layer


def _x(rng, shape, offset=0.0):
    return rng.standard_normal(shape) * 1.5 + offset


# --- BatchNorm2d ----------------------------------------------------------------
@SETTINGS
@given(n=st.integers(1, 2), c=st.integers(1, 3), h=st.integers(1, 3), w=st.integers(1, 3),
       affine=st.booleans(), seed=st.integers(0, 99))
def test_batch_norm2d_gradcheck_train(n, c, h, w, affine, seed):
    # two values per channel normalise to about -1, +1 whatever x is: nothing to check
    assume(n * h * w >= 3)
    rng = np.random.default_rng([seed, 1])
    layer = _randomize(BatchNorm2d(c, affine=affine), rng)
    assert_gradcheck(layer, _x(rng, (n, c, h, w), offset=1.0))


def test_batch_norm2d_gradcheck_eval(rng):
    layer = _randomize(BatchNorm2d(3), rng)
    layer.running_mean[...] = rng.standard_normal(3)
    layer.running_var[...] = rng.random(3) + 0.5
    layer.eval()
    assert_gradcheck(layer, _x(rng, (2, 3, 2, 3)))
    assert_gradcheck(layer, _x(rng, (1, 3, 1, 1)))  # one value per channel is fine in eval


@pytest.mark.torch
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("shape, kwargs", [
    ((4, 3, 5, 6), {}),
    ((2, 4, 3, 3), dict(affine=False)),
    ((3, 2, 4, 1), dict(eps=1e-3, momentum=None)),
    ((2, 3, 4, 4), dict(track_running_stats=False)),
])
def test_batch_norm2d_matches_torch(shape, kwargs, train, dtype, rng):
    torch = torch_or_skip()
    c = shape[1]
    ours = _randomize(BatchNorm2d(c, **kwargs), rng)
    if ours.track_running_stats:
        ours.running_mean[...] = rng.standard_normal(c)
        ours.running_var[...] = rng.random(c) + 0.5
    theirs = torch.nn.BatchNorm2d(c, **kwargs)
    compare_with_torch(ours, theirs, _x(rng, shape, offset=1.0), dtype=dtype, train=train)
    if ours.track_running_stats:
        for name in ("running_mean", "running_var"):
            np.testing.assert_allclose(getattr(ours, name), getattr(theirs, name).numpy(),
                                       rtol=1e-5 if dtype == np.float32 else 1e-12, err_msg=name)


@pytest.mark.torch
@pytest.mark.parametrize("momentum", [0.1, None])
def test_batch_norm2d_running_stats_and_state_dict_match_torch(momentum, rng):
    torch = torch_or_skip()
    ours = BatchNorm2d(4, momentum=momentum, dtype=np.float64)
    theirs = torch.nn.BatchNorm2d(4, momentum=momentum).double()
    for step in range(4):
        x = _x(rng, (3, 4, 2, 5), offset=step - 1.0) * (step + 1)
        ours(x)
        theirs(torch.from_numpy(x))
    state, t_state = ours.state_dict(), theirs.state_dict()
    assert list(state) == list(t_state)  # weight, bias, running_mean, running_var, num_batches
    assert state["num_batches_tracked"] == 4
    for name, value in state.items():
        np.testing.assert_allclose(value, t_state[name].numpy(), rtol=1e-12, err_msg=name)
    ours.eval()
    theirs.eval()
    x = _x(rng, (2, 4, 3, 3))
    np.testing.assert_allclose(ours(x), theirs(torch.from_numpy(x)).detach().numpy(),
                               rtol=1e-12, atol=1e-12)


def test_batch_norm2d_normalises_over_batch_and_space(rng):
    y = BatchNorm2d(3, dtype=np.float64)(_x(rng, (4, 3, 5, 6), offset=-7.0))
    np.testing.assert_allclose(y.mean(axis=(0, 2, 3)), 0, atol=1e-12)
    np.testing.assert_allclose(y.var(axis=(0, 2, 3)), 1, rtol=1e-4)
    per_sample = y.mean(axis=(2, 3))  # not per (sample, channel): those means differ
    assert np.ptp(per_sample, axis=0).max() > 1e-3


@pytest.mark.parametrize("shape", [(2, 4), (2, 4, 5), (2, 3, 4, 4), (1, 2, 4, 4, 4)])
def test_batch_norm2d_rejects_wrong_shape(shape):
    with pytest.raises(ShapeError, match=r"BatchNorm2d\(4.*expected input \(N, 4, H, W\)"):
        BatchNorm2d(4)(np.zeros(shape, np.float32))


def test_batch_norm2d_rejects_one_value_per_channel_in_training():
    layer = BatchNorm2d(2)
    with pytest.raises(ShapeError, match=r"BatchNorm2d\(2.*N \* H \* W >= 2"):
        layer(np.zeros((1, 2, 1, 1), np.float32))
    assert int(layer.num_batches_tracked) == 0
    layer.eval()
    layer(np.zeros((1, 2, 1, 1), np.float32))


def test_batch_norm2d_rejects_wrong_dtype_and_grad_shape():
    with pytest.raises(DTypeError, match="BatchNorm2d"):
        BatchNorm2d(2)(np.zeros((2, 2, 2, 2), np.float64))
    layer = BatchNorm2d(2)
    layer(np.ones((2, 2, 2, 2), np.float32))
    with pytest.raises(ShapeError, match=r"BatchNorm2d.*gradient of the output's shape"):
        layer.backward(np.zeros((2, 2, 4), np.float32))


# --- Dropout2d ------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(40, 50, 3, 4), (40, 50, 7)])
@pytest.mark.parametrize("p", [0.2, 0.7])
def test_dropout2d_drops_whole_channels(shape, p):
    x = np.full(shape, 3.0, np.float32)
    y = Dropout2d(p)(x)
    planes = y.reshape(shape[0], shape[1], -1)
    kept = planes[:, :, 0] != 0
    # every plane is kept or dropped as a whole
    assert np.all((planes != 0).all(axis=2) == kept) and np.all((planes == 0).all(axis=2) == ~kept)
    count = kept.size
    assert abs(kept.mean() - (1 - p)) < 5 * np.sqrt(p * (1 - p) / count)
    np.testing.assert_allclose(planes[kept], 3.0 / (1 - p), rtol=1e-6)
    assert y.dtype == np.float32


def test_dropout2d_backward_uses_the_forward_mask(rng):
    layer = Dropout2d(0.4)
    x = rng.standard_normal((5, 6, 2, 3))
    y = layer(x)
    keep = (y != 0).all(axis=(2, 3), keepdims=True)
    g = rng.standard_normal(x.shape)
    np.testing.assert_allclose(layer.backward(g), g * keep / 0.6)
    np.testing.assert_allclose(y, x * keep / 0.6)


def test_dropout2d_gradcheck(rng):
    assert_gradcheck(Dropout2d(0.5), rng.standard_normal((3, 4, 2, 2)))


def test_dropout2d_repeatable_with_seed_and_identity_in_eval(rng):
    x = np.ones((20, 10, 2, 2), np.float32)
    layer = Dropout2d(0.5)
    tinyar.manual_seed(5)
    first = layer(x)
    tinyar.manual_seed(5)
    np.testing.assert_array_equal(layer(x), first)
    assert (layer(x) != first).any()
    layer.eval()
    assert layer(x) is x and layer.backward(x) is x
    assert Dropout2d(0.0)(x) is x
    dropped = Dropout2d(1.0)
    assert np.all(dropped(x) == 0) and np.all(dropped.backward(x) == 0)


def test_dropout2d_errors():
    with pytest.raises(ValueError, match="Dropout2d: p"):
        Dropout2d(1.5)
    with pytest.raises(ShapeError, match=r"Dropout2d\(p=0.5\).*expected input \(N, C, H, W\)"):
        Dropout2d()(np.zeros((4, 5), np.float32))
    with pytest.raises(DTypeError, match="Dropout2d"):
        Dropout2d()(np.zeros((2, 3, 4, 4), np.int64))
