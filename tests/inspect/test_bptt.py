"""Gradient through time: against PyTorch autograd, central differences, and the
vanishing-gradient claim."""
import numpy as np
import pytest

from tinyar.inspect import figures
from tinyar.inspect.bptt import (compare_cells, gradient_through_time, remember_bias,
                                 state_gradients, steps_back)
from tinyar.nn.recurrent import GRU, LSTM, RNN
from tinyar.random import manual_seed
from tests.helpers import torch_or_skip

LAYERS = {"rnn": RNN, "lstm": LSTM, "gru": GRU}


def make(kind, layers=1, batch_first=True, seed=0, **kw):
    manual_seed(seed)
    return LAYERS[kind](3, 4, num_layers=layers, batch_first=batch_first, dtype=np.float64, **kw)


def torch_state_gradients(layer, x, upstream, tau, h0=None):
    """dL/dh_t of the top layer by torch autograd: unrolled torch cells with the layer's
    weights, ``retain_grad`` on every step's top state. x is (N, T, I)."""
    torch = torch_or_skip()
    cell = {"rnn": torch.nn.RNNCell, "lstm": torch.nn.LSTMCell, "gru": torch.nn.GRUCell}
    state = layer.state_dict()
    H, L = layer.hidden_size, layer.num_layers
    cells = []
    for k in range(L):
        kwargs = {"nonlinearity": layer.nonlinearity} if layer.kind == "rnn" else {}
        c = cell[layer.kind](layer.input_size if k == 0 else H, H, dtype=torch.float64, **kwargs)
        c.load_state_dict({n: torch.from_numpy(np.array(state[f"{n}_l{k}"]))
                           for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")})
        cells.append(c)
    N, T = x.shape[:2]
    if h0 is None:
        hs = [torch.zeros(N, H, dtype=torch.float64) for _ in range(L)]
        cs = [torch.zeros(N, H, dtype=torch.float64) for _ in range(L)]
    else:
        h, c = h0 if layer.kind == "lstm" else (h0, np.zeros_like(h0))
        hs = [torch.from_numpy(h[k].copy()) for k in range(L)]
        cs = [torch.from_numpy(c[k].copy()) for k in range(L)]
    tops = []
    for t in range(T):
        inp = torch.from_numpy(x[:, t].copy())
        for k in range(L):
            if layer.kind == "lstm":
                hs[k], cs[k] = cells[k](inp, (hs[k], cs[k]))
            else:
                hs[k] = cells[k](inp, hs[k])
            inp = hs[k]
        hs[-1].retain_grad()
        tops.append(hs[-1])
    (torch.from_numpy(upstream) * tops[tau]).sum().backward()
    return np.stack([t.grad.numpy() if t.grad is not None else np.zeros((N, H)) for t in tops])


@pytest.mark.torch
@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("layers", [1, 2])
def test_matches_torch_autograd(kind, layers):
    layer = make(kind, layers)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 6, 3))
    upstream = rng.standard_normal((2, 4))
    ours = state_gradients(layer, x, upstream=upstream)
    theirs = torch_state_gradients(layer, x, upstream, tau=5)
    np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-13)
    norms = gradient_through_time(layer, x, upstream=upstream)
    np.testing.assert_allclose(norms, np.linalg.norm(theirs.reshape(6, -1), axis=1), rtol=1e-10)


@pytest.mark.torch
def test_time_major_initial_state_loss_in_the_middle_and_relu():
    layer = make("lstm", 2, batch_first=False)
    rng = np.random.default_rng(2)
    x_nt = rng.standard_normal((3, 7, 3))
    h0 = (rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 3, 4)))
    upstream = rng.standard_normal((3, 4))
    ours = state_gradients(layer, x_nt.transpose(1, 0, 2).copy(), h0=h0, loss_at=4,
                           upstream=upstream)
    theirs = torch_state_gradients(layer, x_nt, upstream, tau=4, h0=h0)
    np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-13)
    assert np.all(ours[5:] == 0)  # the steps after the loss do not affect it
    relu = make("rnn", 1, nonlinearity="relu")
    x = rng.standard_normal((2, 5, 3))
    np.testing.assert_allclose(state_gradients(relu, x, upstream=upstream[:2], loss_at=-2),
                               torch_state_gradients(relu, x, upstream[:2], tau=3),
                               rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_matches_central_differences(kind):
    """Independent of any backward: perturb the top state h_t of the cut-off run and
    watch L = sum(R h_T) move (runs of the layer's forward only)."""
    layer = make(kind, 2).eval()
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 5, 3))
    R = rng.standard_normal((2, 4))
    grads = state_gradients(layer, x, upstream=R)

    def loss_from(t, state):
        out, _ = layer(x[:, t + 1:], state)
        return float(np.sum(R * out[:, -1]))

    eps = 1e-6
    for t in range(4):  # h_4 = h_T: its gradient is R itself
        _, state = layer(x[:, :t + 1])
        numeric = np.zeros((2, 4))
        for idx in np.ndindex(2, 4):
            values = []
            for sign in (1, -1):
                h = (state[0] if kind == "lstm" else state).copy()
                h[-1][idx] += sign * eps
                values.append(loss_from(t, (h, state[1]) if kind == "lstm" else h))
            numeric[idx] = (values[0] - values[1]) / (2 * eps)
        np.testing.assert_allclose(grads[t], numeric, rtol=1e-6, atol=1e-9)
    np.testing.assert_array_equal(grads[4], R)


def test_unbatched_and_float32_layer_left_unchanged():
    layer = LSTM(3, 4)  # float32, as trained
    x = np.random.default_rng(4).standard_normal((6, 3)).astype(np.float32)
    before = layer.state_dict()
    output, _ = layer(x[None])
    grads = state_gradients(layer, x, upstream=np.ones(4))
    assert grads.shape == (6, 4) and grads.dtype == np.float64
    np.testing.assert_array_equal(grads[-1], np.ones(4))
    for k, v in layer.state_dict().items():
        np.testing.assert_array_equal(v, before[k])
    layer.backward(np.ones_like(output))  # the layer's own pending backward still works
    batched = state_gradients(layer, x[None].astype(np.float64), upstream=np.ones((1, 4)))
    np.testing.assert_allclose(grads, batched[:, 0], rtol=1e-6)


def test_bad_arguments():
    with pytest.raises(ValueError, match="loss_at"):
        gradient_through_time(make("rnn"), np.zeros((1, 3, 3)), loss_at=3)
    with pytest.raises(TypeError, match="RNN, LSTM or GRU"):
        from tinyar.nn.rnn_cells import LSTMCell
        gradient_through_time(LSTMCell(3, 4), np.zeros((1, 3, 3)))


def test_vanishing_gradient_rnn_against_gated_cells(tmp_path):
    """30 steps back the plain RNN keeps orders of magnitude less of the gradient than the
    LSTM and the GRU (with the usual remember-gate bias of 1; the margin is > 1e3 on every
    seed we tried, so 100x is a safe bound)."""
    norms = compare_cells(steps=31, seed=0)
    kept = {name: steps_back(n)[1][30] / n[-1] for name, n in norms.items()}
    assert kept["RNN"] < 1e-6
    assert kept["LSTM"] > 100 * kept["RNN"]
    assert kept["GRU"] > 100 * kept["RNN"]
    for n in norms.values():  # each curve decays, but the gated ones far more slowly
        k, values = steps_back(n)
        assert values[0] == pytest.approx(np.linalg.norm(
            np.random.default_rng(0).standard_normal((8, 32))))
        assert values[-1] < values[0]
    path = figures.plot_vanishing_gradients(str(tmp_path / "vanish.png"), norms)
    with open(path, "rb") as f:
        assert f.read(4) == b"\x89PNG"


def test_remember_bias_touches_only_the_remember_gate():
    lstm = make("lstm", 2)
    before = {k: v.copy() for k, v in lstm.state_dict().items()}
    remember_bias(lstm, 1.0)
    after = lstm.state_dict()
    for k in range(2):
        diff = after[f"bias_ih_l{k}"] - before[f"bias_ih_l{k}"]
        np.testing.assert_allclose(diff, np.r_[np.zeros(4), np.ones(4), np.zeros(8)])
        np.testing.assert_array_equal(after[f"bias_hh_l{k}"], before[f"bias_hh_l{k}"])
    rnn = make("rnn")
    before = rnn.state_dict()
    remember_bias(rnn, 1.0)
    for k, v in rnn.state_dict().items():
        np.testing.assert_array_equal(v, before[k])
