"""``AutoregressiveLM(backbone="transformer")``: a GPT.

Checked here: the whole model against a PyTorch twin with the same weights
(loss and every gradient; the twin is the one ``benchmarks/bench_gpt.py``
times), generation with the key/value cache against the uncached model, the
window past the context, its config and checkpoint, and the command line.
"""
import json
import os
import sys

import numpy as np
import pytest

import tinyar
from tinyar.cli import main
from tinyar.errors import ConfigError
from tinyar.models import AutoregressiveLM
from tinyar.nn.hierarchy import ClassHierarchy

torch = pytest.importorskip("torch")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks"))
from gpt_twins import torch_gpt  # noqa: E402

V, WIDTH, LAYERS, HEADS, CONTEXT = 11, 8, 2, 2, 6


def gpt(head="flat", dtype=np.float64, **kw):
    tinyar.manual_seed(0)
    hierarchy = ClassHierarchy.from_counts(np.arange(V) + 1, 3) if head == "multilevel" else None
    settings = dict(tie_weights=head == "flat", backbone="transformer", num_heads=HEADS,
                    context=CONTEXT, head=head, hierarchy=hierarchy, dtype=dtype)
    settings.update(kw)
    return AutoregressiveLM(V, WIDTH, WIDTH, LAYERS, **settings)


def ids(n, t, seed=0):
    return np.random.default_rng(seed).integers(0, V, (n, t)).astype(np.int64)


@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-10), (np.float32, 1e-5)])
def test_loss_and_every_gradient_equal_the_pytorch_twin(dtype, rtol):
    model = gpt(dtype=dtype)
    x, y = ids(3, CONTEXT), ids(3, CONTEXT, seed=1)
    loss, state = model.loss(x, y)
    assert state is None  # a transformer carries nothing from one window to the next
    model.zero_grad()
    model.backward()
    twin = torch_gpt(torch, V, WIDTH, LAYERS, HEADS, CONTEXT, state=model.state_dict())
    twin = twin.double() if dtype == np.float64 else twin
    theirs = twin(torch.from_numpy(x), torch.from_numpy(y))
    theirs.backward()
    np.testing.assert_allclose(loss, theirs.item(), rtol=rtol)
    grads = dict(twin.named_parameters())
    for name, p in model.named_parameters():
        if name == "head.linear.weight":  # tied: the embedding's gradient holds both parts
            continue
        np.testing.assert_allclose(p.grad, grads[name].grad.numpy(), rtol=rtol * 10,
                                   atol=rtol * 1e-2, err_msg=name)


def test_state_dict_names_match_the_pytorch_twin_one_to_one():
    model = gpt()
    twin = torch_gpt(torch, V, WIDTH, LAYERS, HEADS, CONTEXT)
    ours = set(model.state_dict())
    theirs = set(twin.state_dict()) - {"head.linear.weight"}  # tied: the embedding's, once
    assert ours == theirs, (ours ^ theirs)


@pytest.mark.parametrize("head", ["flat", "multilevel"])
def test_cached_generation_equals_the_uncached_model(head):
    """next_log_probs with the key/value cache, one token at a time, equals the model run
    on the whole prefix, at every position; past the context the cache restarts from the
    last context-1 tokens, as the uncached model sees its last window."""
    model = gpt(head).eval()
    sequence = ids(1, 3 * CONTEXT, seed=2)[0]
    cached, state = model.next_log_probs(sequence[None, :2])
    for t in range(2, len(sequence)):
        full, _ = model.next_log_probs(sequence[None, max(0, t - CONTEXT + 1):t + 1])
        cached, state = model.next_log_probs(sequence[None, t:t + 1], state)
        if t + 1 <= CONTEXT:  # within the first window: the very same computation
            np.testing.assert_allclose(cached, full, rtol=1e-10, atol=1e-12, err_msg=str(t))
    assert np.isfinite(cached).all()


def test_generate_uses_the_cache_and_stays_in_the_vocabulary():
    model = gpt()
    out = model.generate(np.array([1, 2, 3]), 3 * CONTEXT, temperature=0.0)
    assert out.shape == (3 + 3 * CONTEXT,) and out.min() >= 0 and out.max() < V
    # greedy decoding is deterministic, cache or not
    assert (model.generate(np.array([1, 2, 3]), 3 * CONTEXT, temperature=0.0) == out).all()
    long_prompt = ids(1, 2 * CONTEXT)[0]
    assert model.generate(long_prompt, 2).shape == (2 * CONTEXT + 2,)


def test_a_window_longer_than_the_context_is_refused_in_training():
    model = gpt()
    with pytest.raises(ValueError, match="context"):
        model.loss(ids(1, CONTEXT + 1), ids(1, CONTEXT + 1))


def test_evaluate_reads_windows_of_the_context():
    model = gpt()
    stream = ids(1, 200, seed=3)[0]
    nats = model.evaluate(stream, batch_size=2, bptt=64)
    assert np.isfinite(nats) and 0 < nats < 2 * np.log(V)


def test_config_round_trip_and_older_configs_load():
    model = gpt(dtype=np.float32, activation="gelu_tanh")
    config = model.config()
    assert config["backbone"] == "transformer" and config["activation"] == "gelu_tanh"
    again = AutoregressiveLM.from_config(json.loads(json.dumps(config)))
    again.load_state_dict(model.state_dict())
    x = ids(2, 4)
    np.testing.assert_array_equal(again.loss(x, x)[0], model.loss(x, x)[0])
    old = AutoregressiveLM(V, 4, 5, 1, head="flat").config()
    for key in ("num_heads", "context", "activation"):
        del old[key]
    assert AutoregressiveLM.from_config(old).backbone_kind == "rnn"


@pytest.mark.parametrize("kw, match", [
    (dict(num_heads=3), "num_heads"), (dict(context=0), "context"),
    (dict(activation="relu"), "activation")])
def test_bad_transformer_settings_are_refused(kw, match):
    with pytest.raises(ConfigError, match=match):
        gpt(**kw)
    with pytest.raises(ConfigError, match="embed_dim == hidden_size"):
        AutoregressiveLM(V, 4, 8, 1, backbone="transformer", num_heads=2, head="flat")


def test_gpt_init_scales_the_residual_projections():
    model = AutoregressiveLM(V, 64, 64, 4, backbone="transformer", head="flat", num_heads=4,
                             context=8)
    state = model.state_dict()
    out_proj = state["backbone.block0.self_attn.out_proj.weight"].std()
    in_proj = state["backbone.block0.self_attn.in_proj_weight"].std()
    assert abs(in_proj - 0.02) < 0.003 and abs(out_proj - 0.02 / np.sqrt(8)) < 0.002
    assert (state["backbone.block0.linear1.bias"] == 0).all()
    assert (state["backbone.block0.norm1.weight"] == 1).all()


# --- the command line ---------------------------------------------------------------------------
CORPUS = "to be, or not to be, that is the question:\n" * 40
TINY = ["--backbone", "transformer", "--heads", "2", "--context", "8", "--layers", "2",
        "--hidden", "8", "--batch", "2", "--eval-every", "3", "--eval-tokens", "64",
        "--sample-every", "3", "--sample-tokens", "5", "--checkpoint-every", "2",
        "--record-every", "2"]


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(CORPUS)
    return str(path)


def test_train_sample_eval_resume_from_the_command_line(tmp_path, corpus, capsys):
    run = str(tmp_path / "run")
    assert main(["train", "--data", corpus, "--steps", "4", "--out", run, *TINY]) == 0
    meta = json.load(open(os.path.join(run, "log.json")))
    assert meta["history"][-1]["step"] == 4
    from tinyar.train import lm
    model_meta = lm.Run(run).load_meta()["model"]
    assert model_meta["backbone"] == "transformer" and model_meta["context"] == 8
    assert model_meta["embed_dim"] == 8 and model_meta["num_heads"] == 2
    assert main(["sample", run, "--tokens", "20", "--prompt", "to be"]) == 0
    assert main(["eval", run]) == 0
    assert main(["train", "--resume", run, "--steps", "6"]) == 0
    history = json.load(open(os.path.join(run, "log.json")))["history"]
    assert [r["step"] for r in history] == list(range(1, 7))
    assert main(["inspect", run]) == 0


def test_resumed_transformer_run_equals_an_uninterrupted_one(tmp_path, corpus):
    whole, split_run = str(tmp_path / "whole"), str(tmp_path / "split")
    common = ["--data", corpus, "--seed", "3", "--dropout", "0.1", *TINY]
    assert main(["train", "--steps", "6", "--out", whole, *common]) == 0
    assert main(["train", "--steps", "3", "--out", split_run, *common]) == 0
    assert main(["train", "--resume", split_run, "--steps", "6"]) == 0

    def losses(run):
        return [r["loss"] for r in json.load(open(os.path.join(run, "log.json")))["history"]]
    assert losses(split_run) == losses(whole)
