"""LayerNorm and BatchNorm1d: gradient checks, PyTorch twins, running statistics, errors."""
import numpy as np
import pytest
from hypothesis import assume, given, settings, strategies as st

from tinyar.errors import DTypeError, ShapeError
from tinyar.nn.normalization import BatchNorm1d, LayerNorm
from tests.helpers import assert_gradcheck, compare_with_torch, torch_or_skip

SETTINGS = settings(max_examples=10, deadline=None)
DTYPES = [np.float64, np.float32]


def _randomize(layer, rng):
    """Affine parameters away from 1 / 0, so that their role is tested."""
    for p in layer.parameters():
        p.data[...] = rng.standard_normal(p.shape) + (1.0 if p is getattr(layer, "weight") else 0)
    return layer


def _x(rng, shape, offset=0.0):
    return (rng.standard_normal(shape) * 1.5 + offset).astype(np.float64)


# --- LayerNorm ----------------------------------------------------------------
@SETTINGS
@given(lead=st.lists(st.integers(1, 3), min_size=0, max_size=2),
       normalized=st.lists(st.integers(1, 4), min_size=0, max_size=1).map(lambda s: s + [3]),
       variant=st.sampled_from(["affine", "no_affine", "no_bias"]), seed=st.integers(0, 99))
def test_layer_norm_gradcheck(lead, normalized, variant, seed):
    # (one feature would make y = bias, with dL/dx = 0: nothing to check)
    rng = np.random.default_rng([seed, 1])  # a stream apart from gradcheck's own (seed + 1)
    layer = LayerNorm(tuple(normalized), elementwise_affine=variant != "no_affine",
                      bias=variant != "no_bias")
    _randomize(layer, rng)
    assert_gradcheck(layer, _x(rng, tuple(lead) + tuple(normalized), offset=0.5))


@pytest.mark.torch
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, normalized, kwargs", [
    ((4, 7), 7, {}),
    ((2, 3, 5), 5, {}),
    ((2, 3, 4, 5), (4, 5), {}),
    ((3, 6), 6, dict(elementwise_affine=False)),
    ((2, 5, 8), (8,), dict(bias=False)),
    ((6, 16), 16, dict(eps=1e-3)),
])
def test_layer_norm_matches_torch(shape, normalized, kwargs, dtype, rng):
    torch = torch_or_skip()
    ours = _randomize(LayerNorm(normalized, **kwargs), rng)
    theirs = torch.nn.LayerNorm(normalized, **kwargs)
    compare_with_torch(ours, theirs, _x(rng, shape, offset=2.0), dtype=dtype)


def test_layer_norm_float32_keeps_precision_far_from_zero(rng):
    """Values around 1000 with spread 1: the one-pass statistics must not cancel."""
    x = (1000.0 + rng.standard_normal((8, 64))).astype(np.float32)
    y = LayerNorm(64)(x)
    x64 = x.astype(np.float64)
    expected = (x64 - x64.mean(1, keepdims=True)) / np.sqrt(x64.var(1, keepdims=True) + 1e-5)
    np.testing.assert_allclose(y, expected, atol=2e-3)


def test_layer_norm_output_statistics(rng):
    y = LayerNorm((3, 4), dtype=np.float64)(_x(rng, (5, 3, 4), offset=-3.0))
    rows = y.reshape(5, 12)
    np.testing.assert_allclose(rows.mean(1), 0, atol=1e-12)
    np.testing.assert_allclose(rows.var(1), 1, rtol=1e-4)  # eps = 1e-5 keeps it just below 1


def test_layer_norm_float64_and_param_shapes():
    layer = LayerNorm((3, 4)).double()
    assert layer.weight.shape == (3, 4) and layer.bias.shape == (3, 4)
    assert layer(np.ones((2, 3, 4))).dtype == np.float64


def test_layer_norm_accumulates_grads(rng):
    layer = _randomize(LayerNorm(5, dtype=np.float64), rng)
    x, g = _x(rng, (3, 5)), rng.standard_normal((3, 5))
    layer(x)
    layer.backward(g)
    once = (layer.weight.grad.copy(), layer.bias.grad.copy())
    layer(x)
    layer.backward(g)
    np.testing.assert_allclose(layer.weight.grad, 2 * once[0])
    np.testing.assert_allclose(layer.bias.grad, 2 * once[1])


@pytest.mark.parametrize("shape", [(4, 6), (4, 5, 3), (5,)])
def test_layer_norm_rejects_wrong_shape(shape):
    layer = LayerNorm((5, 6))
    with pytest.raises(ShapeError, match=r"LayerNorm\(\(5, 6\).*expected input \(\*, 5, 6\)"):
        layer(np.zeros(shape, np.float32))


def test_layer_norm_rejects_wrong_dtype():
    with pytest.raises(DTypeError, match="LayerNorm"):
        LayerNorm(4)(np.zeros((2, 4), np.float64))
    with pytest.raises(DTypeError, match="LayerNorm"):
        LayerNorm(4)(np.zeros((2, 4), np.int64))


def test_layer_norm_rejects_wrong_grad_shape():
    layer = LayerNorm(4)
    layer(np.zeros((2, 4), np.float32))
    with pytest.raises(ShapeError, match="LayerNorm"):
        layer.backward(np.zeros((3, 4), np.float32))


# --- BatchNorm1d --------------------------------------------------------------
@SETTINGS
@given(n=st.integers(2, 4), c=st.integers(1, 3), length=st.sampled_from([None, 1, 2, 3]),
       affine=st.booleans(), seed=st.integers(0, 99))
def test_batch_norm_gradcheck_train(n, c, length, affine, seed):
    # two values per channel normalise to about -1, +1 whatever x is: dL/dx ~ 0, nothing to check
    assume(n * (length or 1) >= 3)
    rng = np.random.default_rng([seed, 1])  # a stream apart from gradcheck's own (seed + 1)
    layer = _randomize(BatchNorm1d(c, affine=affine), rng)
    shape = (n, c) if length is None else (n, c, length)
    assert_gradcheck(layer, _x(rng, shape, offset=1.0))


def test_batch_norm_gradcheck_eval(rng):
    layer = _randomize(BatchNorm1d(3), rng)
    layer.running_mean[...] = rng.standard_normal(3)
    layer.running_var[...] = rng.random(3) + 0.5
    layer.eval()
    assert_gradcheck(layer, _x(rng, (2, 3, 4)))
    assert_gradcheck(layer, _x(rng, (1, 3)))  # one sample is fine in evaluation


@pytest.mark.torch
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("shape, kwargs", [
    ((8, 5), {}),
    ((4, 3, 6), {}),
    ((5, 4), dict(affine=False)),
    ((3, 2, 7), dict(eps=1e-3, momentum=None)),
    ((6, 3), dict(track_running_stats=False)),
    ((2, 4, 5), dict(track_running_stats=False, affine=False)),
])
def test_batch_norm_matches_torch(shape, kwargs, train, dtype, rng):
    torch = torch_or_skip()
    c = shape[1]
    ours = _randomize(BatchNorm1d(c, **kwargs), rng)
    if ours.track_running_stats:
        ours.running_mean[...] = rng.standard_normal(c)
        ours.running_var[...] = rng.random(c) + 0.5
    theirs = torch.nn.BatchNorm1d(c, **kwargs)
    compare_with_torch(ours, theirs, _x(rng, shape, offset=1.0), dtype=dtype, train=train)
    if ours.track_running_stats:  # the running statistics moved (train) or not (eval) alike
        for name in ("running_mean", "running_var"):
            np.testing.assert_allclose(getattr(ours, name), getattr(theirs, name).numpy(),
                                       rtol=1e-5 if dtype == np.float32 else 1e-12, err_msg=name)


@pytest.mark.torch
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("momentum", [0.1, 0.3, None])
@pytest.mark.parametrize("shape", [(6, 4), (3, 4, 5)])
def test_batch_norm_running_stats_match_torch(shape, momentum, dtype, rng):
    torch = torch_or_skip()
    ours = BatchNorm1d(4, momentum=momentum).to(dtype)
    theirs = torch.nn.BatchNorm1d(4, momentum=momentum).to(
        torch.float64 if dtype == np.float64 else torch.float32)
    for step in range(5):
        x = _x(rng, shape, offset=step - 2.0).astype(dtype) * (step + 1)
        ours(x)
        theirs(torch.from_numpy(x))
    state, t_state = ours.state_dict(), theirs.state_dict()
    assert list(state) == list(t_state)
    assert state["num_batches_tracked"].dtype == np.int64 and state["num_batches_tracked"] == 5
    for name, value in state.items():
        np.testing.assert_allclose(value, t_state[name].numpy(),
                                   rtol=1e-5 if dtype == np.float32 else 1e-12, err_msg=name)
    # evaluation then uses those statistics
    ours.eval()
    theirs.eval()
    x = _x(rng, shape).astype(dtype)
    np.testing.assert_allclose(ours(x), theirs(torch.from_numpy(x)).detach().numpy(),
                               rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-6)


def test_batch_norm_float32_keeps_precision_far_from_zero(rng):
    x = (1000.0 + rng.standard_normal((16, 3, 8))).astype(np.float32)
    y = BatchNorm1d(3)(x)
    x64 = x.astype(np.float64)
    mean, var = x64.mean(axis=(0, 2), keepdims=True), x64.var(axis=(0, 2), keepdims=True)
    np.testing.assert_allclose(y, (x64 - mean) / np.sqrt(var + 1e-5), atol=2e-3)


def test_batch_norm_eval_does_not_touch_running_stats(rng):
    layer = BatchNorm1d(3)
    layer(_x(rng, (4, 3)).astype(np.float32))
    before = layer.state_dict()
    layer.eval()
    layer(_x(rng, (4, 3)).astype(np.float32))
    for name, value in layer.state_dict().items():
        np.testing.assert_array_equal(value, before[name])


def test_batch_norm_train_output_statistics(rng):
    y = BatchNorm1d(3, dtype=np.float64)(_x(rng, (10, 3, 4), offset=5.0))
    np.testing.assert_allclose(y.mean(axis=(0, 2)), 0, atol=1e-12)
    np.testing.assert_allclose(y.var(axis=(0, 2)), 1, rtol=1e-4)


def test_batch_norm_without_running_stats_has_no_buffers():
    layer = BatchNorm1d(3, track_running_stats=False)
    assert list(layer.state_dict()) == ["weight", "bias"]


@pytest.mark.parametrize("shape", [(1, 4), (1, 4, 1)])
def test_batch_norm_rejects_one_value_per_channel_in_training(shape):
    layer = BatchNorm1d(4)
    with pytest.raises(ShapeError, match=r"BatchNorm1d\(4.*more than 1 value per channel"):
        layer(np.zeros(shape, np.float32))
    assert int(layer.num_batches_tracked) == 0  # refused before anything changed
    layer(np.ones((1, 4, 2), np.float32))  # two values per channel: fine
    layer.eval()
    layer(np.zeros(shape, np.float32))  # running statistics: fine


@pytest.mark.parametrize("shape", [(4,), (2, 3), (2, 3, 5), (2, 4, 3, 3)])
def test_batch_norm_rejects_wrong_shape(shape):
    with pytest.raises(ShapeError, match=r"BatchNorm1d\(4.*expected input \(N, 4\) or \(N, 4, L\)"):
        BatchNorm1d(4)(np.zeros(shape, np.float32))


def test_batch_norm_rejects_wrong_dtype():
    with pytest.raises(DTypeError, match="BatchNorm1d"):
        BatchNorm1d(4)(np.zeros((2, 4), np.float64))
    with pytest.raises(DTypeError, match="BatchNorm1d"):
        BatchNorm1d(4, affine=False)(np.zeros((2, 4), np.float64))


# --- both -----------------------------------------------------------------------
@pytest.mark.torch
@pytest.mark.parametrize("make", [
    lambda nn: nn.LayerNorm(6), lambda nn: nn.LayerNorm((2, 3), bias=False),
    lambda nn: nn.LayerNorm(6, elementwise_affine=False),
    lambda nn: nn.BatchNorm1d(6), lambda nn: nn.BatchNorm1d(6, affine=False),
    lambda nn: nn.BatchNorm1d(6, track_running_stats=False),
])
def test_state_dict_names_and_shapes_match_torch(make):
    torch = torch_or_skip()
    from tinyar.nn import normalization
    ours, theirs = make(normalization), make(torch.nn).state_dict()
    state = ours.state_dict()
    assert list(state) == list(theirs)
    for name, value in state.items():
        assert value.shape == tuple(theirs[name].shape), name
        np.testing.assert_array_equal(value, theirs[name].numpy(), err_msg=name)


def test_reprs():
    assert repr(LayerNorm(8)) == "LayerNorm((8,), eps=1e-05, elementwise_affine=True)"
    assert repr(BatchNorm1d(4)) == \
        "BatchNorm1d(4, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True)"
