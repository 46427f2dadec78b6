"""Recorder: its numbers against direct computation, and that it leaves the model alone."""
import json

import numpy as np
import pytest

from tinyar import nn
from tinyar.inspect import figures
from tinyar.inspect.recorder import Recorder
from tinyar.nn.recurrent import RNN
from tinyar.optim import SGD
from tinyar.random import manual_seed


def mlp(seed=0):
    manual_seed(seed)
    model = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 6), nn.Tanh(),
                          nn.Linear(6, 4), nn.Sigmoid())
    model[2].weight.data[...] *= 6  # push the tanh into saturation, so that is measured
    return model


def batch(step, rows=16):
    rng = np.random.default_rng(step)
    return rng.standard_normal((rows, 3)).astype(np.float32), \
        rng.standard_normal((rows, 4)).astype(np.float32)


def train_step(model, optimizer, step):
    x, y = batch(step)
    out = model(x)
    model.zero_grad()
    model.backward(2 * (out - y) / out.size)  # d/dout of the mean squared error
    optimizer.step()
    return x, out


def test_numbers_match_direct_computation():
    model = mlp()
    lr = 0.1
    optimizer = SGD(model.parameters(), lr=lr)
    recorder = Recorder(model, histogram_steps=(2,))
    expected_params, expected_acts = [], []
    for step in range(1, 4):
        before = {n: p.data.copy() for n, p in model.named_parameters()}
        x, _ = train_step(model, optimizer, step)
        # redo the forward by hand (float64) to know each layer's output
        h1 = np.maximum(x.astype(np.float64) @ before["0.weight"].T + before["0.bias"], 0)
        h3 = np.tanh(h1 @ before["2.weight"].T + before["2.bias"])
        h5 = 1 / (1 + np.exp(-(h3 @ before["4.weight"].T + before["4.bias"])))
        expected_acts.append({"1": h1, "3": h3, "5": h5})
        expected_params.append({n: (p.grad.astype(np.float64).copy(), before[n],
                                    p.data.astype(np.float64).copy())
                                for n, p in model.named_parameters()})
        recorder.step()
    record = recorder.to_dict()
    assert record["steps"] == [1, 2, 3]
    for i, params in enumerate(expected_params):
        for name, (g, w0, w1) in params.items():
            s = record["parameters"][name]
            assert s["grad_norm"][i] == pytest.approx(np.linalg.norm(g), rel=1e-6)
            assert s["grad_mean_abs"][i] == pytest.approx(np.abs(g).mean(), rel=1e-6)
            assert s["grad_max_abs"][i] == pytest.approx(np.abs(g).max(), rel=1e-6)
            assert s["param_norm"][i] == pytest.approx(np.linalg.norm(w1), rel=1e-6)
            # plain SGD: w1 - w0 = -lr g, so the ratio is lr ||g|| / ||w0||
            assert s["update_ratio"][i] == pytest.approx(
                lr * np.linalg.norm(g) / np.linalg.norm(w0), rel=1e-4)
    acts = record["activations"]
    assert acts["1"]["type"] == "ReLU" and acts["3"]["kind"] == "tanh"
    for i, outputs in enumerate(expected_acts):
        h1, h3, h5 = outputs["1"], outputs["3"], outputs["5"]
        assert acts["1"]["mean"][i] == pytest.approx(h1.mean(), rel=1e-5)
        assert acts["1"]["std"][i] == pytest.approx(h1.std(), rel=1e-5)
        assert acts["1"]["dead"][i] == pytest.approx(np.mean(h1 == 0), abs=1e-9)
        assert acts["1"]["dead_units"][i] == pytest.approx(np.mean((h1 == 0).all(axis=0)))
        assert acts["3"]["saturated"][i] == pytest.approx(np.mean(np.abs(h3) > 0.97), abs=1e-9)
        assert acts["5"]["saturated"][i] == pytest.approx(np.mean((h5 < 0.03) | (h5 > 0.97)),
                                                          abs=1e-9)
        assert acts["3"]["mean"][i] == pytest.approx(h3.mean(), rel=1e-4, abs=1e-6)
    assert 0 < acts["3"]["saturated"][0] < 1  # the test measures something
    assert 0 < acts["1"]["dead"][0] < 1
    # dL/d(output) of the last layer is the gradient we fed in
    x, y = batch(1)
    assert acts["5"]["grad_norm"][0] == pytest.approx(
        np.linalg.norm(2 * (expected_acts[0]["5"] - y) / y.size), rel=1e-4)
    hists = [h for h in record["histograms"] if h["step"] == 2]
    assert {h["kind"] for h in hists} == {"activation", "gradient"}
    relu_hist = next(h for h in hists if h["name"] == "1")
    assert sum(relu_hist["counts"]) == expected_acts[1]["1"].size
    assert relu_hist["edges"][0] == pytest.approx(0.0)


def test_every_and_histogram_steps_choose_the_recorded_steps():
    model = mlp()
    optimizer = SGD(model.parameters(), lr=0.01)
    recorder = Recorder(model, every=3, histogram_steps=(5,))
    for step in range(1, 9):
        train_step(model, optimizer, step)
        recorder.step()
    record = recorder.to_dict()
    assert record["steps"] == [1, 4, 5, 7]
    assert {h["step"] for h in record["histograms"]} == {5}
    for series in record["parameters"].values():
        assert all(len(v) == 4 for v in series.values())
        assert all(r is not None and r > 0 for r in series["update_ratio"])


def test_detach_restores_the_model_and_recording_changes_nothing():
    plain, watched = mlp(), mlp()
    recorder = Recorder(watched, histogram_steps=(1,))
    assert "forward" in watched[1].__dict__
    x, _ = batch(0)
    np.testing.assert_array_equal(watched(x), plain(x))
    g = np.ones((16, 4), np.float32)
    np.testing.assert_array_equal(watched.backward(g), plain.backward(g))
    recorder.detach()
    for _, module in watched.named_modules():
        assert "forward" not in module.__dict__ and "backward" not in module.__dict__
    assert not recorder.attached
    assert type(watched[1]).forward is nn.ReLU.forward
    # after detach nothing is recorded any more
    recorder.step()
    watched(x)
    recorder.step()
    assert recorder.to_dict()["activations"]["1"]["mean"][1] is None


def test_detach_keeps_an_instance_forward_that_was_there_before():
    model = mlp()
    custom = model[1].forward
    object.__setattr__(model[1], "forward", custom)
    recorder = Recorder(model)
    assert model[1].forward is not custom
    recorder.detach()
    assert model[1].__dict__["forward"] is custom


def test_calls_in_one_step_are_pooled_and_paused_calls_ignored():
    model = mlp()
    recorder = Recorder(model)
    a, _ = batch(1)
    b, _ = batch(2)
    ya, yb = model[0](a), model[0](b)
    with recorder.paused():
        model[0](100 * a)  # an "evaluation" forward: must not count
    recorder.step()
    both = np.concatenate([ya, yb]).astype(np.float64)
    s = recorder.to_dict()["activations"]["0"]
    assert s["mean"][0] == pytest.approx(both.mean(), rel=1e-5)
    assert s["std"][0] == pytest.approx(both.std(), rel=1e-5)


def test_recurrent_outputs_and_json(tmp_path):
    manual_seed(0)
    rnn = RNN(3, 5, nonlinearity="relu")  # a bare layer is a model too
    recorder = Recorder(rnn, histogram_steps=(1,))
    x = np.random.default_rng(0).standard_normal((2, 4, 3)).astype(np.float32)
    output, h_n = rnn(x)
    rnn.backward(np.ones_like(output))
    recorder.step()
    record = recorder.to_dict()
    s = record["activations"]["RNN"]
    assert s["kind"] == "relu"
    assert s["dead"][0] == pytest.approx(np.mean(output == 0))
    assert s["grad_norm"][0] == pytest.approx(np.sqrt(output.size), rel=1e-6)
    text = json.dumps(record, allow_nan=False)  # strict JSON: no NaN
    path = recorder.save(str(tmp_path / "sub" / "recorder.json"))
    assert Recorder.load(path) == json.loads(text)
    assert "Recorder(" in repr(recorder)


def test_bad_arguments():
    with pytest.raises(ValueError, match="every"):
        Recorder(mlp(), every=0)
    with pytest.raises(ValueError, match="modules"):
        Recorder(mlp(), modules="some")


def test_recorder_figures(tmp_path):
    model = mlp()
    optimizer = SGD(model.parameters(), lr=0.05)
    recorder = Recorder(model, histogram_steps=(1, 3, 6))
    for step in range(1, 7):
        train_step(model, optimizer, step)
        recorder.step()
    record = recorder.to_dict()
    names, mean_abs, max_abs = figures.gradient_flow(record)
    assert names == [n for n, _ in model.named_parameters()]
    assert np.all(max_abs >= mean_abs) and np.all(mean_abs > 0)
    paths = [figures.plot_gradient_flow(str(tmp_path / "flow.png"), record),
             figures.plot_gradient_flow(str(tmp_path / "flow3.png"), record, step=3),
             figures.plot_update_ratios(str(tmp_path / "ratio.png"), record),
             figures.plot_activation_stats(str(tmp_path / "acts.png"), record),
             figures.plot_histograms(str(tmp_path / "hist.png"), record, "activation"),
             figures.plot_histograms(str(tmp_path / "ghist.png"), record, "gradient")]
    for path in paths:
        with open(path, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="not recorded"):
        figures.gradient_flow(record, step=99)
    with pytest.raises(ValueError, match="histograms"):
        figures.plot_histograms(str(tmp_path / "none.png"), {"histograms": []})


def test_a_deep_copy_of_a_watched_model_is_independent():
    """gradcheck deep-copies modules: the copy must run its own weights, unrecorded."""
    import copy
    from tinyar.inspect import gradcheck
    model = mlp()
    recorder = Recorder(model)
    twin = copy.deepcopy(model)
    assert twin[0].forward.__self__ is twin[0]  # the plain method, bound to the copy
    twin[0].weight.data[...] = 0
    x, _ = batch(0)
    y_twin = twin[0](x)
    np.testing.assert_array_equal(y_twin, np.broadcast_to(twin[0].bias.data, y_twin.shape))
    y = model[0](x)
    recorder.step()
    assert recorder.to_dict()["activations"]["0"]["mean"][0] == pytest.approx(
        y.astype(np.float64).mean(), rel=1e-5)  # only the original's call counted
    assert gradcheck(model, x.astype(np.float64)).ok()


# --- a GPT: leaves that their parent computes inline -------------------------------------------
def _gpt(seed=0):
    from tinyar.models.language_model import AutoregressiveLM
    manual_seed(seed)
    return AutoregressiveLM(vocab_size=11, embed_dim=8, hidden_size=8, num_layers=2,
                            head="flat", backbone="transformer", num_heads=2, context=6)


def test_every_leaf_with_parameters_of_a_gpt_is_recorded():
    """TransformerBlock.linear1 (its bias + GELU fused) and TransformerStack.pos_embedding
    (its rows added in place) never run their own forward or backward: they are recorded
    all the same, activations and gradients, checked against direct computation. With one
    sequence (N = 1) dL/d(positions' rows) is pos_embedding's gradient, and with one row
    (N = T = 1) dL/d(linear1's output) is linear1's bias gradient."""
    model = _gpt()
    block = model.backbone.block1
    norm2_outputs = []  # linear1's input, caught on the way (the recorder wraps this too)
    norm2_forward = block.norm2.forward
    object.__setattr__(block.norm2, "forward",
                       lambda x: norm2_outputs.append(norm2_forward(x)) or norm2_outputs[-1])
    recorder = Recorder(model, histogram_steps=(1,))
    rng = np.random.default_rng(3)
    expected = []
    for steps in (4, 1):  # step 1: one sequence of 4 tokens; step 2: a single token
        ids, targets = rng.integers(0, 11, (2, 1, steps))
        model.loss(ids, targets)
        model.zero_grad()
        model.backward()
        w1, b1 = block.linear1.weight.data, block.linear1.bias.data
        linear1_out = norm2_outputs[-1].reshape(-1, 8).astype(np.float64) @ w1.T + b1
        positions = model.backbone.pos_embedding.weight
        expected.append({"linear1": (linear1_out, np.linalg.norm(block.linear1.bias.grad)),
                         "positions": (positions.data[:steps].astype(np.float64),
                                       np.linalg.norm(positions.grad[:steps]))})
        recorder.step()
    record = recorder.to_dict()
    acts = record["activations"]
    leaves = [name for name, m in model.named_modules() if not m._modules and m._parameters]
    assert {"backbone.pos_embedding", "backbone.block0.linear1",
            "backbone.block1.linear1"} <= set(leaves)
    for name in leaves:
        for key in ("mean", "std", "grad_norm"):
            assert all(v is not None for v in acts[name][key]), (name, key, acts[name])
        assert acts[name]["grad_norm"][0] > 0, name
    histogram_names = {h["name"] for h in record["histograms"] if h["kind"] == "activation"}
    assert set(leaves) <= histogram_names
    linear1, positions = acts["backbone.block1.linear1"], acts["backbone.pos_embedding"]
    for i, step in enumerate(expected):
        y, _ = step["linear1"]
        assert linear1["mean"][i] == pytest.approx(y.mean(), rel=1e-4, abs=1e-7)
        assert linear1["std"][i] == pytest.approx(y.std(), rel=1e-4)
        rows, grad_norm = step["positions"]
        assert positions["mean"][i] == pytest.approx(rows.mean(), rel=1e-4, abs=1e-7)
        assert positions["std"][i] == pytest.approx(rows.std(), rel=1e-4)
        assert positions["grad_norm"][i] == pytest.approx(grad_norm, rel=1e-5)
    assert linear1["grad_norm"][1] == pytest.approx(expected[1]["linear1"][1], rel=1e-5)
    recorder.detach()
    for _, module in model.named_modules():
        assert not {"_run", "_mlp_hidden", "backward"} & set(module.__dict__), module


def test_recording_a_gpt_changes_nothing_in_its_training():
    plain, watched = _gpt(), _gpt()
    recorder = Recorder(watched, modules="all")
    ids, targets = np.random.default_rng(4).integers(0, 11, (2, 3, 6))
    for model in (plain, watched):
        model.loss(ids, targets)
        model.zero_grad()
        model.backward()
    recorder.step()
    for (name, p), q in zip(plain.named_parameters(), watched.parameters()):
        np.testing.assert_array_equal(p.grad, q.grad, err_msg=name)
    assert recorder.to_dict()["activations"]["backbone.block0.linear1"]["grad_norm"][0] > 0
