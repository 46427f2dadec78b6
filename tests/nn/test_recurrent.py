"""RNN / LSTM / GRU layers and cells: gradient checks, PyTorch twins, errors, BPTT patterns."""
import warnings

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import tinyar
from tinyar.errors import DTypeError, ShapeError
from tinyar.nn.module import Module
from tinyar.nn.recurrent import GRU, LSTM, RNN, detach_state
from tinyar.nn.rnn_cells import GRUCell, LSTMCell, RNNCell
from tinyar.inspect import gradcheck
from tests.helpers import TOL, torch_or_skip

LAYERS = {"rnn_tanh": (RNN, {}), "rnn_relu": (RNN, {"nonlinearity": "relu"}),
          "lstm": (LSTM, {}), "gru": (GRU, {})}
CELLS = {"rnn_tanh": (RNNCell, {}), "rnn_relu": (RNNCell, {"nonlinearity": "relu"}),
         "lstm": (LSTMCell, {}), "gru": (GRUCell, {})}
GRADCHECK = settings(max_examples=6, deadline=None)


def _rand(rng, *shape):
    return rng.standard_normal(shape)


def _layer_input(rng, layer, n, t):
    shape = (n, t, layer.input_size) if layer.batch_first else (t, n, layer.input_size)
    return _rand(rng, *shape)


class _Flat(Module):
    """A layer or cell whose state arguments are spelled out, (h, c) -> h, c, so that
    gradcheck differentiates with respect to each of them."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x, h, c=None):
        if isinstance(self.inner, LSTM):
            out, (h_n, c_n) = self.inner(x, (h, c))
            return out, h_n, c_n
        if isinstance(self.inner, LSTMCell):
            return self.inner(x, (h, c))
        return self.inner(x, h)

    def backward(self, *grads):
        if isinstance(self.inner, LSTM):
            dx, (dh, dc) = self.inner.backward(grads[0], (grads[1], grads[2]))
            return dx, dh, dc
        if isinstance(self.inner, LSTMCell):
            dx, (dh, dc) = self.inner.backward(*grads)
            return dx, dh, dc
        return self.inner.backward(*grads)


# --- gradient checks (float64 central differences) ----------------------------------------
def assert_gradcheck(module, *inputs, **kwargs):
    """tests.helpers.assert_gradcheck, except that a tensor whose whole gradient has vanished
    (a saturated tanh over a few steps can leave dL/dh0 ~ 1e-6) passes when the absolute error
    is below 1e-9: central differences in float64 resolve ~1e-11 there, so the relative error
    of a ~1e-6 gradient is noise. A wrong gradient is off by its own size, far above 1e-9."""
    report = gradcheck(module, *inputs, **kwargs)
    assert report.rows, "gradcheck checked nothing"
    bad = [r for r in report.rows if not r.ok(report.tol) and r.max_abs_error > 1e-9]
    assert not bad, f"\n{report}"
    return report


@pytest.mark.parametrize("kind", sorted(CELLS))
@GRADCHECK
@given(n=st.integers(1, 3), i=st.integers(1, 4), h=st.integers(1, 4), seed=st.integers(0, 99))
def test_cell_gradcheck(kind, n, i, h, seed):
    cls, kw = CELLS[kind]
    tinyar.manual_seed(seed)
    rng = np.random.default_rng(seed)
    cell = _Flat(cls(i, h, **kw))
    states = [_rand(rng, n, h)] * (2 if kind == "lstm" else 1)
    report = assert_gradcheck(cell, _rand(rng, n, i), *[s.copy() for s in states])
    assert len(report.rows) == 4 + 1 + len(states)  # 4 parameters, x, the states


@pytest.mark.parametrize("kind", sorted(LAYERS))
@GRADCHECK
@given(n=st.integers(1, 3), t=st.integers(1, 4), i=st.integers(1, 3), h=st.integers(1, 4),
       layers=st.integers(1, 2), batch_first=st.booleans(), seed=st.integers(0, 99))
def test_layer_gradcheck(kind, n, t, i, h, layers, batch_first, seed):
    cls, kw = LAYERS[kind]
    tinyar.manual_seed(seed)
    rng = np.random.default_rng(seed)
    layer = cls(i, h, num_layers=layers, batch_first=batch_first, **kw)
    x = _layer_input(rng, layer, n, t)
    states = [_rand(rng, layers, n, h) for _ in range(2 if kind == "lstm" else 1)]
    report = assert_gradcheck(_Flat(layer), x, *states)
    assert len(report.rows) == 4 * layers + 1 + len(states)


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn_tanh"])
def test_layer_gradcheck_without_bias_and_unbatched(kind, rng):
    cls, kw = LAYERS[kind]
    layer = cls(3, 4, num_layers=2, bias=False, **kw)
    report = assert_gradcheck(layer, _rand(rng, 5, 3))  # (T, I): unbatched
    assert len(report.rows) == 2 * 2 + 1


def test_lstm_gradcheck_through_its_own_signature(rng):
    """gradcheck hands the (h_n, c_n) gradient back as one stacked array: accepted."""
    assert_gradcheck(LSTM(3, 4, num_layers=2), _rand(rng, 2, 3, 3))


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_gradcheck_with_dropout_between_layers(kind, rng):
    """gradcheck reseeds tinyar's generator before each forward, so the masks repeat."""
    cls, kw = LAYERS[kind]
    layer = cls(3, 4, num_layers=2, dropout=0.5, **kw)
    assert_gradcheck(layer, _rand(rng, 2, 3, 3))


# --- PyTorch twins --------------------------------------------------------------------------
def _torch_twin(torch, ours):
    """A torch module of the same kind and configuration, with our weights."""
    if isinstance(ours, (RNN, LSTM, GRU)):
        cls = {RNN: torch.nn.RNN, LSTM: torch.nn.LSTM, GRU: torch.nn.GRU}[type(ours)]
        kw = {"nonlinearity": ours.nonlinearity} if isinstance(ours, RNN) else {}
        twin = cls(ours.input_size, ours.hidden_size, num_layers=ours.num_layers,
                   bias=ours.bias, batch_first=ours.batch_first, **kw)
    else:
        cls = {RNNCell: torch.nn.RNNCell, LSTMCell: torch.nn.LSTMCell,
               GRUCell: torch.nn.GRUCell}[type(ours)]
        kw = {"nonlinearity": ours.nonlinearity} if isinstance(ours, RNNCell) else {}
        twin = cls(ours.input_size, ours.hidden_size, bias=ours.bias, **kw)
    assert list(twin.state_dict()) == list(ours.state_dict())
    return twin


def _close(name, ours, theirs, dtype):
    np.testing.assert_allclose(np.asarray(ours, np.float64), theirs.detach().numpy().astype(
        np.float64), err_msg=name, **TOL[np.dtype(dtype).type])


def compare_recurrent(ours, x, states, dtype, seed=0):
    """Same weights, inputs, states and upstream gradients as the torch twin: same outputs,
    final states, dL/dx, dL/d(initial states) and parameter gradients.

    ``states``: [h0] or [h0, c0] (LSTM); each may be None.
    """
    torch = torch_or_skip()
    ours.to(dtype)
    twin = _torch_twin(torch, ours).to({np.float64: torch.float64,
                                        np.float32: torch.float32}[np.dtype(dtype).type])
    twin.load_state_dict({k: torch.from_numpy(v) for k, v in ours.state_dict().items()})
    lstm = isinstance(ours, (LSTM, LSTMCell))
    x = x.astype(dtype)
    states = [None if s is None else s.astype(dtype) for s in states]
    tx = torch.tensor(x, requires_grad=True)
    ts = [None if s is None else torch.tensor(s, requires_grad=True) for s in states]
    given = all(s is not None for s in states)
    hx = (tuple(states) if given else None) if lstm else states[0]
    t_hx = (tuple(ts) if given else None) if lstm else ts[0]

    ours.zero_grad()
    y = ours(x, hx)
    ty = twin(tx, t_hx)
    if isinstance(ours, (RNN, GRU)):
        outs, t_outs = [y[0], y[1]], [ty[0], ty[1]]
    elif isinstance(ours, LSTM):
        outs, t_outs = [y[0], *y[1]], [ty[0], *ty[1]]
    elif isinstance(ours, LSTMCell):
        outs, t_outs = list(y), list(ty)
    else:
        outs, t_outs = [y], [ty]
    rng = np.random.default_rng(seed)
    ups = [rng.standard_normal(o.shape).astype(dtype) for o in outs]
    for k, (a, b) in enumerate(zip(outs, t_outs)):
        _close(f"output {k}", a, b, dtype)
    sum((b * torch.from_numpy(u)).sum() for b, u in zip(t_outs, ups)).backward()

    if isinstance(ours, LSTM):
        dx, (dh, dc) = ours.backward(ups[0], (ups[1], ups[2]))
        grads = [dx, dh, dc]
    elif isinstance(ours, LSTMCell):
        dx, (dh, dc) = ours.backward(*ups)
        grads = [dx, dh, dc]
    else:
        grads = list(ours.backward(*ups))
    _close("grad input", grads[0], tx.grad, dtype)
    for k, t in enumerate(ts):
        if t is not None:
            _close(f"grad state {k}", grads[1 + k], t.grad, dtype)
    t_params = dict(twin.named_parameters())
    for name, p in ours.named_parameters():
        _close(f"grad {name}", p.grad, t_params[name].grad, dtype)


@pytest.mark.torch
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("kind", sorted(LAYERS))
def test_layer_matches_torch(kind, batch_first, dtype, rng):
    cls, kw = LAYERS[kind]
    layer = cls(4, 6, num_layers=2, batch_first=batch_first, **kw)
    x = _layer_input(rng, layer, 3, 5)
    states = [_rand(rng, 2, 3, 6) for _ in range(2 if kind == "lstm" else 1)]
    compare_recurrent(layer, x, states, dtype)


@pytest.mark.torch
@pytest.mark.parametrize("kind", sorted(LAYERS))
def test_layer_matches_torch_zero_state_unbatched_no_bias(kind, rng):
    cls, kw = LAYERS[kind]
    compare_recurrent(cls(3, 5, num_layers=2, **kw), _rand(rng, 2, 4, 3),
                      [None] * (2 if kind == "lstm" else 1), np.float64)
    compare_recurrent(cls(3, 5, num_layers=1, bias=False, **kw), _rand(rng, 4, 3),
                      [_rand(rng, 1, 5)] * (2 if kind == "lstm" else 1), np.float64)


@pytest.mark.torch
def test_lstm_matches_torch_at_benchmark_width_in_float32(rng):
    """The float32 activations are approximations (fastmath.py): still within 1e-5 after
    20 steps of 2 layers of 64 units."""
    compare_recurrent(LSTM(16, 64, num_layers=2), _rand(rng, 4, 20, 16),
                      [_rand(rng, 2, 4, 64), _rand(rng, 2, 4, 64)], np.float32)


@pytest.mark.torch
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("kind", sorted(CELLS))
def test_cell_matches_torch(kind, dtype, rng):
    cls, kw = CELLS[kind]
    states = [_rand(rng, 3, 5) for _ in range(2 if kind == "lstm" else 1)]
    compare_recurrent(cls(4, 5, **kw), _rand(rng, 3, 4), states, dtype)
    compare_recurrent(cls(4, 5, **kw), _rand(rng, 4), [None] * len(states), dtype)  # unbatched


@pytest.mark.torch
@pytest.mark.parametrize("kind", sorted(LAYERS) + ["cells"])
def test_state_dict_keys_are_torchs(kind):
    torch = torch_or_skip()
    if kind == "cells":
        modules = [cls(3, 4, **kw) for cls, kw in CELLS.values()] + [LSTMCell(3, 4, bias=False)]
    else:
        cls, kw = LAYERS[kind]
        modules = [cls(3, 4, num_layers=3, **kw), cls(3, 4, num_layers=2, bias=False, **kw)]
    for ours in modules:
        twin = _torch_twin(torch, ours)
        assert list(ours.state_dict()) == list(twin.state_dict())
        for name, value in ours.state_dict().items():
            assert value.shape == tuple(twin.state_dict()[name].shape), name


def test_initialisation_is_uniform_in_one_over_sqrt_hidden():
    layer = LSTM(30, 100, num_layers=2)
    for name, value in layer.state_dict().items():
        assert np.abs(value).max() <= 0.1, name
        assert np.abs(value).max() > 0.09, name  # fills the range
        assert abs(value.mean()) < 0.01, name
    assert layer.weight_ih_l0.dtype == np.float32


# --- dropout between layers --------------------------------------------------------------
def test_dropout_is_seeded_and_only_in_training(rng):
    layer = LSTM(4, 8, num_layers=3, dropout=0.4)
    x = _rand(rng, 3, 6, 4).astype(np.float32)
    tinyar.manual_seed(1)
    a, _ = layer(x)
    tinyar.manual_seed(1)
    b, _ = layer(x)
    c, _ = layer(x)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    plain = LSTM(4, 8, num_layers=3).load_state_dict(layer.state_dict())
    layer.eval()
    np.testing.assert_array_equal(layer(x)[0], plain(x)[0])


def test_dropout_masks_keep_the_right_fraction_and_scale(rng):
    layer = GRU(4, 64, num_layers=3, dropout=0.3)
    x = _rand(rng, 16, 32, 4).astype(np.float32)
    layer(x)
    inputs, masks = layer._cache[0], layer._cache[1]
    assert masks[-1] is None  # never after the last layer
    for k in (0, 1):
        keep = masks[k]
        # 32k Bernoulli(0.7) draws: the mean is within 0.01 of 0.7 (4 standard deviations)
        assert abs(keep.mean() - 0.7) < 0.01
        expected = np.where(keep, layer._ws.h[k][1:] / 0.7, 0)
        np.testing.assert_allclose(inputs[k + 1], expected, rtol=1e-6)


def test_dropout_with_one_layer_warns_and_does_nothing(rng):
    with pytest.warns(UserWarning, match="dropout"):
        layer = RNN(3, 4, dropout=0.5)
    x = _rand(rng, 2, 3, 3).astype(np.float32)
    plain = RNN(3, 4).load_state_dict(layer.state_dict())
    np.testing.assert_array_equal(layer(x)[0], plain(x)[0])


# --- stateful training: truncated BPTT --------------------------------------------------------
@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_state_carried_between_batches_continues_the_sequence(kind, rng):
    cls, _ = LAYERS[kind]
    layer = cls(3, 5, num_layers=2)
    x = _rand(rng, 2, 8, 3).astype(np.float32)
    whole, final = layer(x)
    first, state = layer(x[:, :5])
    second, state = layer(x[:, 5:], state)
    np.testing.assert_allclose(np.concatenate([first, second], axis=1), whole, rtol=1e-6,
                               atol=1e-7)
    for a, b in zip(np.atleast_3d(state) if kind == "gru" else state,
                    np.atleast_3d(final) if kind == "gru" else final):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_truncated_bptt_gradients_stop_at_the_batch_boundary(rng):
    """The returned state is an independent array (later calls do not change it), and the
    second batch's gradients are those of a run that starts from that state as a constant."""
    layer = LSTM(3, 4, num_layers=2).double()
    x1, x2 = _rand(rng, 2, 4, 3), _rand(rng, 2, 4, 3)
    g1, g2 = _rand(rng, 2, 4, 4), _rand(rng, 2, 4, 4)
    _, state = layer(x1)
    kept = detach_state(state)
    layer.backward(g1)
    layer.zero_grad()
    _, _ = layer(x2, state)
    dx, (dh0, dc0) = layer.backward(g2)
    for a, b in zip(state, kept):  # not aliased to the layer's reused buffers
        np.testing.assert_array_equal(a, b)
    fresh = LSTM(3, 4, num_layers=2).double().load_state_dict(layer.state_dict())
    fresh(x2, kept)
    dx_fresh, (dh0_fresh, _) = fresh.backward(g2)
    np.testing.assert_array_equal(dx, dx_fresh)
    np.testing.assert_array_equal(dh0, dh0_fresh)
    for (name, p), q in zip(layer.named_parameters(), fresh.parameters()):
        np.testing.assert_array_equal(p.grad, q.grad, err_msg=name)
    assert np.abs(dh0).max() > 0  # the gradient at the boundary exists; it is just not used


@pytest.mark.torch
def test_truncated_bptt_matches_torch_detach(rng):
    """Two consecutive batches, the state detached in between, gradients accumulated."""
    torch = torch_or_skip()
    layer = GRU(3, 4, num_layers=2).double()
    twin = torch.nn.GRU(3, 4, num_layers=2, batch_first=True).double()
    twin.load_state_dict({k: torch.from_numpy(v) for k, v in layer.state_dict().items()})
    state, t_state = None, None
    layer.zero_grad()
    for _ in range(2):
        x, g = _rand(rng, 2, 4, 3), _rand(rng, 2, 4, 4)
        _, state = layer(x, state)
        layer.backward(g)
        out, t_state = twin(torch.from_numpy(x), t_state)
        (out * torch.from_numpy(g)).sum().backward()
        t_state = t_state.detach()
        _close("state", state, t_state, np.float64)
    for name, p in layer.named_parameters():
        _close(name, p.grad, dict(twin.named_parameters())[name].grad, np.float64)


def test_detach_state_copies_arrays_and_pairs():
    h, c = np.ones((1, 2, 3)), np.zeros((1, 2, 3))
    h2, c2 = detach_state((h, c))
    h2 += 1
    assert h[0, 0, 0] == 1 and c2 is not c
    assert detach_state(None) is None


# --- buffers are reused, results are not ----------------------------------------------------
def test_outputs_survive_later_calls_with_other_shapes(rng):
    layer = LSTM(3, 4, num_layers=2)
    x = _rand(rng, 2, 5, 3).astype(np.float32)
    out, (h, c) = layer(x)
    saved = out.copy(), h.copy(), c.copy()
    layer.backward(np.ones_like(out))
    layer(_rand(rng, 3, 2, 3).astype(np.float32))
    layer(x * 2)
    for a, b in zip((out, h, c), saved):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("batch_first", [True, False])
def test_strided_inputs_and_states(batch_first, rng):
    layer = LSTM(3, 4, num_layers=2, batch_first=batch_first)
    x = _rand(rng, 4, 4, 6).astype(np.float32)[:, :, ::2]  # N = T = 4
    h0 = _rand(rng, 2, 4, 8).astype(np.float32)[:, :, ::2]
    out, (h_n, _) = layer(x, (h0, h0))
    g = _rand(rng, 4, 4, 8).astype(np.float32)[:, :, ::2]
    dx, (dh0, _) = layer.backward(g)
    ref_out, (ref_h, _) = layer(x.copy(), (h0.copy(), h0.copy()))
    ref_dx, (ref_dh0, _) = layer.backward(g.copy())
    for a, b in [(out, ref_out), (h_n, ref_h), (dx, ref_dx), (dh0, ref_dh0)]:
        np.testing.assert_array_equal(a, b)


def test_backward_twice_needs_a_new_forward(rng):
    layer = GRU(3, 4)
    out, _ = layer(_rand(rng, 2, 5, 3).astype(np.float32))
    layer.backward(np.ones_like(out))
    with pytest.raises(tinyar.TinyarError, match=r"GRU\(.*backward called twice.*forward"):
        layer.backward(np.ones_like(out))


def test_float64_layer_and_float32_default(rng):
    x = _rand(rng, 2, 3, 3)
    layer = RNN(3, 4)
    assert layer(x.astype(np.float32))[0].dtype == np.float32
    layer.double()
    out, h_n = layer(x)
    assert out.dtype == h_n.dtype == np.float64


# --- bad input ------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", sorted(LAYERS))
def test_layer_bad_input_errors_name_the_layer(kind):
    cls, kw = LAYERS[kind]
    layer = cls(3, 4, num_layers=2, **kw)
    name = type(layer).__name__ + r"\(input_size=3"
    good = np.zeros((2, 5, 3), np.float32)
    with pytest.raises(ShapeError, match=name + r".*\(N, T, 3\).*\(2, 5, 3, 1\)"):
        layer(good[..., None])
    with pytest.raises(ShapeError, match=name + r".*got \(5,\)"):
        layer(np.zeros(5, np.float32))
    with pytest.raises(ShapeError, match=name + r".*\(2, 5, 6\)"):
        layer(np.zeros((2, 5, 6), np.float32))
    with pytest.raises(ShapeError, match=name + r".*at least one time step"):
        layer(np.zeros((2, 0, 3), np.float32))
    with pytest.raises(DTypeError, match=name + r".*float32.*float64"):
        layer(good.astype(np.float64))
    with pytest.raises(DTypeError, match=name + r".*floating-point.*int64"):
        layer(good.astype(np.int64))
    bad_h = np.zeros((1, 2, 4), np.float32)
    with pytest.raises(ShapeError, match=name + r".*h0 \(2, 2, 4\), got \(1, 2, 4\)"):
        layer(good, (bad_h, bad_h) if kind == "lstm" else bad_h)
    with pytest.raises(DTypeError, match=name + r".*h0.*float64"):
        h64 = np.zeros((2, 2, 4))
        layer(good, (h64, h64) if kind == "lstm" else h64)
    out, _ = layer(good)
    with pytest.raises(ShapeError, match=name + r".*grad_output \(2, 5, 4\).*\(5, 2, 4\)"):
        layer.backward(np.zeros((5, 2, 4), np.float32))
    layer(good)
    with pytest.raises(ShapeError, match=name + r".*grad_h_n \(2, 2, 4\)"):
        g = np.zeros((2, 3, 4), np.float32)
        layer.backward(out, (g, None) if kind == "lstm" else g)


def test_lstm_state_must_be_a_pair():
    layer = LSTM(3, 4)
    x = np.zeros((2, 5, 3), np.float32)
    with pytest.raises(ShapeError, match=r"LSTM\(input_size=3.*pair \(h, c\)"):
        layer(x, np.zeros((1, 2, 4), np.float32))
    with pytest.raises(ShapeError, match=r"LSTM\(.*c0 \(1, 2, 4\), got \(1, 3, 4\)"):
        layer(x, (np.zeros((1, 2, 4), np.float32), np.zeros((1, 3, 4), np.float32)))


def test_time_major_layout_error_message():
    layer = GRU(3, 4, batch_first=False)
    with pytest.raises(ShapeError, match=r"batch_first=False.*\(T, N, 3\)"):
        layer(np.zeros((2, 5, 7), np.float32))


@pytest.mark.parametrize("kind", sorted(CELLS))
def test_cell_bad_input_errors_name_the_cell(kind):
    cls, kw = CELLS[kind]
    cell = cls(3, 4, **kw)
    name = type(cell).__name__ + r"\(input_size=3"
    with pytest.raises(ShapeError, match=name + r".*\(N, 3\).*\(2, 5\)"):
        cell(np.zeros((2, 5), np.float32))
    with pytest.raises(ShapeError, match=name):
        cell(np.zeros((2, 2, 3), np.float32))
    with pytest.raises(DTypeError, match=name + r".*float32.*float64"):
        cell(np.zeros((2, 3)))
    bad = np.zeros((3, 4), np.float32)
    with pytest.raises(ShapeError, match=name + r".*\(2, 4\), got \(3, 4\)"):
        cell(np.zeros((2, 3), np.float32), (bad, bad) if kind == "lstm" else bad)


def test_constructor_errors():
    with pytest.raises(ValueError, match="RNN: nonlinearity"):
        RNN(3, 4, nonlinearity="sigmoid")
    with pytest.raises(ValueError, match="RNNCell: nonlinearity"):
        RNNCell(3, 4, nonlinearity="gelu")
    with pytest.raises(ValueError, match="num_layers"):
        LSTM(3, 4, num_layers=0)
    with pytest.raises(ValueError, match="dropout"):
        GRU(3, 4, num_layers=2, dropout=1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        LSTM(3, 4, num_layers=2, dropout=0.2)  # no warning with two layers


# --- LastStep ----------------------------------------------------------------------
@pytest.mark.parametrize("batch_first", [True, False])
def test_last_step_keeps_the_last_output_and_backpropagates_through_time(batch_first, rng):
    from tinyar.nn import LastStep
    from tests.helpers import assert_gradcheck
    rnn = GRU(3, 4, num_layers=2, batch_first=batch_first, dtype=np.float64)
    layer = LastStep(rnn)
    x = rng.standard_normal((2, 5, 3) if batch_first else (5, 2, 3))
    y = layer(x)
    output, _ = rnn(x)
    np.testing.assert_array_equal(y, output[:, -1] if batch_first else output[-1])
    assert y.shape == (2, 4)
    assert_gradcheck(layer, x)
    with pytest.raises(ShapeError, match="expected a gradient of the output's shape"):
        layer.backward(np.ones((3, 4)))


# --- the threaded time loop (where kernels share BLAS's threads) ------------------------
def _run_layer(layer, x, grad_out):
    layer.zero_grad()
    out, state = layer(x)
    dx, dstate = layer.backward(grad_out)
    grads = {name: p.grad.copy() for name, p in layer.named_parameters()}
    return out, state, dx, dstate, grads


@pytest.mark.parametrize("kind", LAYERS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_threaded_time_loop_matches_the_serial_one(kind, dtype, monkeypatch):
    """With kernels allowed threads, each thread runs the recurrence of its own block
    of batch rows (cpu/rnn.py); outputs, states and every gradient stay the serial
    loop's (to rounding: the bias gradients are summed per thread, then added)."""
    from tinyar.backend.cpu import threads
    from tinyar.backend.cpu import _util, rnn
    cls, kwargs = LAYERS[kind]
    tinyar.manual_seed(0)
    layer = cls(5, 7, num_layers=2, dtype=dtype, **kwargs)
    rng = np.random.default_rng(4)
    n = 3 * rnn.MIN_ROWS_PER_THREAD + 1  # three blocks, one row longer
    x = rng.standard_normal((n, 6, 5)).astype(dtype)
    grad_out = rng.standard_normal((n, 6, 7)).astype(dtype)
    serial = _run_layer(layer, x, grad_out)
    monkeypatch.setattr(threads, "PARALLEL_KERNELS", True)
    monkeypatch.setattr(_util, "PARALLEL_MIN_ELEMENTS", 0)
    monkeypatch.setattr(_util, "get_num_threads", lambda: 4)
    assert rnn._pieces(np.empty((6, n, 4 * 7))) == 3  # capped by rows per thread
    threaded = _run_layer(layer, x, grad_out)
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-13)
    for ours, reference in zip(threaded[:4], serial[:4]):
        for a, b in zip(*(v if isinstance(v, tuple) else (v,) for v in (ours, reference))):
            np.testing.assert_allclose(a, b, **tol)
    for name, g in serial[4].items():
        np.testing.assert_allclose(threaded[4][name], g, err_msg=name, **tol)


@pytest.mark.parametrize("kind", LAYERS)
def test_recurrent_weight_copied_or_read_transposed_gives_the_same_results(kind, monkeypatch):
    """Long sequences multiply by a contiguous copy of W_hh^T, short ones (generation) by
    W_hh read transposed (cpu/rnn.py, COPY_MIN_STEPS): both give the same outputs and
    gradients, in the compiled loop and in the Python one (no BLAS pointer)."""
    from tinyar.backend.cpu import rnn
    cls, kwargs = LAYERS[kind]
    tinyar.manual_seed(1)
    layer = cls(4, 6, num_layers=2, dtype=np.float64, **kwargs)
    rng = np.random.default_rng(7)
    x, grad_out = rng.standard_normal((3, 5, 4)), rng.standard_normal((3, 5, 6))
    results = []
    for copy_from, routine in [(1, rnn.gemm_routine), (10 ** 9, rnn.gemm_routine),
                               (1, lambda dtype: None), (10 ** 9, lambda dtype: None)]:
        monkeypatch.setattr(rnn, "COPY_MIN_STEPS", copy_from)
        monkeypatch.setattr(rnn, "gemm_routine", routine)
        results.append(_run_layer(layer, x, grad_out))
    for other in results[1:]:
        for ours, reference in zip(other[:4], results[0][:4]):
            for a, b in zip(*(v if isinstance(v, tuple) else (v,) for v in (ours, reference))):
                np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-13)
        for name, g in results[0][4].items():
            np.testing.assert_allclose(other[4][name], g, rtol=1e-12, atol=1e-13, err_msg=name)
