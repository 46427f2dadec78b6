"""Attention maps: their numbers, their figure, the report's section, the recorder on a GPT."""
import os
import re
import shutil

import numpy as np
import pytest

from tinyar.cli import main
from tinyar.errors import ShapeError, TinyarError
from tinyar.inspect.attention import (FALLBACK_PROMPT, SAMPLE_TOKENS, attention_maps,
                                      plot_attention, prompt_ids, token_label)
from tinyar.inspect.recorder import Recorder
from tinyar.inspect.report import build_report
from tinyar.models import AutoregressiveLM
from tinyar.nn.attention import CausalSelfAttention
from tinyar.nn.transformer import TransformerBlock, TransformerStack
from tinyar.optim import Adam
from tinyar.random import manual_seed

from .test_report import CORPUS, PNG, check_html

NEW_MODULES = (CausalSelfAttention, TransformerBlock, TransformerStack)


def gpt(context=12, layers=2, heads=2, width=8, vocab=11, seed=0):
    manual_seed(seed)
    return AutoregressiveLM(vocab, embed_dim=width, hidden_size=width, num_layers=layers,
                            backbone="transformer", num_heads=heads, context=context,
                            head="flat")


def prompt(length=9, vocab=11):
    return np.random.default_rng(1).integers(0, vocab, length)


def causal_softmax(scores):
    """softmax over the keys j <= i of each query row i (the reference)."""
    steps = scores.shape[-1]
    scores = np.where(np.triu(np.ones((steps, steps), bool), k=1), -np.inf, scores)
    e = np.exp(scores - scores.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


# --- attention_maps -----------------------------------------------------------------------
def test_maps_are_causal_distributions_and_the_model_is_left_as_it_was():
    model = gpt()
    model.train()
    ids = prompt()
    maps = attention_maps(model, ids)
    assert len(maps) == 2 and all(m.shape == (2, 9, 9) for m in maps)
    for m in maps:
        np.testing.assert_allclose(m.sum(axis=-1), 1.0, rtol=1e-5)
        assert np.all(m >= 0)
        assert np.all(m[:, np.triu_indices(9, k=1)[0], np.triu_indices(9, k=1)[1]] == 0)
        np.testing.assert_array_equal(m[:, 0, 0], 1.0)  # the first query sees only itself
    assert all(m.training for m in model.modules())  # back in training mode
    for block in (model.backbone.block0, model.backbone.block1):
        assert block.self_attn.keep_attention is False and block.self_attn.last_attention is None


def test_the_first_layer_map_is_softmax_of_q_k():
    """Layer 0 by hand: x = E[ids] + pos, z = norm1(x), [q; k; v] = z W^T + b, per head
    P = causal_softmax(q k^T / sqrt(D))."""
    model = gpt(heads=2, width=8)
    ids = prompt()
    maps = attention_maps(model, ids)
    x = model.embedding.weight.data[ids] + model.backbone.pos_embedding.weight.data[:len(ids)]
    block = model.backbone.block0
    z = block.norm1(x[None].astype(np.float32))[0].astype(np.float64)
    qkv = z @ block.self_attn.in_proj_weight.data.T.astype(np.float64) + \
        block.self_attn.in_proj_bias.data
    q, k = qkv[:, :8], qkv[:, 8:16]
    for h in range(2):
        qh, kh = q[:, 4 * h:4 * h + 4], k[:, 4 * h:4 * h + 4]
        np.testing.assert_allclose(maps[0][h], causal_softmax(qh @ kh.T / 2.0), atol=1e-5)


def test_maps_on_every_backend_match_the_cpu(backend):
    model = gpt(context=4, layers=1, heads=2, width=8)
    ids = np.array([1, 2, 3])
    expected = attention_maps(model, ids)
    model.to(backend.name)
    got = attention_maps(model, ids)
    assert isinstance(got[0], np.ndarray)  # host arrays whatever the device
    np.testing.assert_allclose(got[0], expected[0], atol=1e-6)


def test_keep_attention_already_set_is_kept():
    model = gpt()
    attn = model.backbone.block1.self_attn
    attn.keep_attention = True
    attention_maps(model, prompt())
    assert attn.keep_attention is True and attn.last_attention is None


def test_bad_inputs():
    with pytest.raises(ShapeError, match="1-D"):
        attention_maps(gpt(), prompt().reshape(1, -1))
    with pytest.raises(TinyarError, match="no CausalSelfAttention"):
        attention_maps(AutoregressiveLM(11, embed_dim=4, hidden_size=4, num_layers=1,
                                        head="flat"), prompt())
    with pytest.raises(ShapeError, match="context"):
        attention_maps(gpt(context=4), prompt(9))


# --- the prompt and the figure -------------------------------------------------------------
class Chars:
    """The part of a tokenizer that prompt_ids uses: characters a..z and space."""
    itos = list("abcdefghijklmnopqrstuvwxyz ")

    def encode(self, text, errors="strict"):
        return np.array([self.itos.index(c) for c in text if c in self.itos], np.int64)


def test_prompt_choice():
    tok = Chars()
    ids, where = prompt_ids(tok, "hello", ["sample text"])
    assert where == "the run's prompt" and ids.tolist() == tok.encode("hello").tolist()
    ids, where = prompt_ids(tok, "", [None, "z" * 100], limit=50)
    assert where == "the first training sample" and len(ids) == SAMPLE_TOKENS
    ids, where = prompt_ids(tok, "", [], limit=3)
    assert where == "a fixed prompt" and ids.tolist() == tok.encode(FALLBACK_PROMPT)[:3].tolist()
    ids, where = prompt_ids(tok, "!!!", ["???"])  # nothing encodes: the next candidate
    assert where == "a fixed prompt"


def test_token_labels_are_visible_and_escaped():
    assert token_label(" ") == "\u2423" and token_label("\n") == "\\n"
    assert token_label("\t") == "\\t" and token_label("\x0b") == "\\x0b"
    assert token_label("\u200b") == "\\u200b" and token_label("\udc80") == "\\udc80"
    assert token_label("$x$") == r"\$x\$"  # no mathtext
    assert token_label("") == "''"
    assert token_label("abcdefghijkl") == "abcdefghij\u2026"


def test_plot_attention_writes_a_png(tmp_path):
    maps = attention_maps(gpt(heads=2), prompt(6))
    tokens = [" ", "\n", "$a$", "\x00", "long token", "\u00e9"]
    path = plot_attention(str(tmp_path / "att.png"), maps, tokens)
    assert path == str(tmp_path / "att.png")
    with open(path, "rb") as f:
        assert f.read(8) == PNG
    fig = plot_attention(None, maps, tokens, layers=[1], heads=[0])
    assert len([ax for ax in fig.axes if ax.get_title()]) == 1
    assert fig.axes[0].get_title() == "layer 1, head 0"
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert labels == [token_label(t) for t in tokens]
    with pytest.raises(ValueError, match="layers"):
        plot_attention(None, maps, tokens, layers=[2])
    with pytest.raises(ShapeError, match="tokens"):
        plot_attention(None, maps, tokens[:3])


# --- the report ----------------------------------------------------------------------------
def train(folder, *extra):
    corpus = os.path.join(folder, "corpus.txt")
    with open(corpus, "w") as f:
        f.write(CORPUS)
    run = os.path.join(folder, "run")
    assert main(["train", "--data", corpus, "--steps", "3", "--hidden", "8", "--layers", "2",
                 "--batch", "2", "--sample-every", "2", "--sample-tokens", "20", "--out", run,
                 *extra]) == 0
    return run


@pytest.fixture(scope="module")
def gpt_run(tmp_path_factory):
    return train(str(tmp_path_factory.mktemp("gpt")), "--backbone", "transformer",
                 "--heads", "2", "--context", "16")


def section(text, anchor):
    """The HTML of one <h2> section of the page."""
    match = re.search(f'<h2 id="{anchor}">.*?(?=<h2 |</body>)', text, re.S)
    return match.group(0) if match else None


def test_report_of_a_transformer_run_has_attention_maps(gpt_run):
    text = build_report(gpt_run)
    check_html(text)
    maps = section(text, "attention")
    assert maps is not None and '<a href="#attention">Attention</a>' in text
    assert maps.count("data:image/png;base64,") == 2  # 2 layers, 2 heads each: one figure each
    assert "layer 0, heads 0-1" in maps and "layer 1, heads 0-1" in maps
    assert "16 tokens of the first training sample" in maps  # min(context 16, 32)
    assert 'class="error"' not in maps


def test_a_given_prompt_is_used(gpt_run, tmp_path):
    out = str(tmp_path / "page.html")
    assert main(["inspect", gpt_run, "--prompt", "def f", "--out", out]) == 0
    maps = section(open(out, encoding="utf-8").read(), "attention")
    assert "5 tokens of the given prompt" in maps and "<pre>def f</pre>" in maps


def test_layers_and_heads_past_the_limits_are_named(gpt_run, monkeypatch):
    from tinyar.inspect import report
    monkeypatch.setattr(report, "MAX_ATTENTION_LAYERS", 1)
    monkeypatch.setattr(report, "MAX_ATTENTION_HEADS", 1)
    maps = section(build_report(gpt_run), "attention")
    assert maps.count("data:image/png;base64,") == 1
    assert "2 layers x 2 heads; not drawn: layer 1, head 1 of every layer" in maps


def test_a_damaged_model_gives_one_error_line(gpt_run, tmp_path):
    run = str(tmp_path / "run")
    shutil.copytree(gpt_run, run)
    for name in ("best.npz", "model.npz"):
        path = os.path.join(run, name)
        if os.path.exists(path):
            with open(path, "r+b") as f:
                f.truncate(os.path.getsize(path) // 2)
    text = build_report(run)
    check_html(text)
    maps = section(text, "attention")
    assert maps.count('class="error"') == 1 and "attention maps of" in maps
    assert "data:image/png" not in maps
    assert section(text, "curves") is not None and section(text, "files") is not None


def test_no_attention_section_for_other_runs(tmp_path):
    run = train(str(tmp_path), "--embed", "4")
    text = build_report(run)
    assert 'id="attention"' not in text and "Model" in text


# --- the recorder --------------------------------------------------------------------------
def test_recorder_on_a_transformer_records_every_new_module():
    model = gpt(context=8, heads=2, width=8)
    recorder = Recorder(model, modules="all", histogram_steps=(2,))
    optimizer = Adam(model.parameters(), lr=1e-3)
    ids = np.random.default_rng(0).integers(0, 11, (2, 9))
    for _ in range(2):
        model.loss(ids[:, :-1], ids[:, 1:])
        model.zero_grad()
        model.backward()
        optimizer.step()
        recorder.step()
    record = recorder.to_dict()
    new = [name for name, m in model.named_modules() if isinstance(m, NEW_MODULES)]
    assert len(new) == 5  # the stack, 2 blocks, 2 attention layers
    for name in new:
        s = record["activations"][name]
        assert all(v is not None for v in s["mean"] + s["std"] + s["grad_norm"]), name
    hists = {h["name"] for h in record["histograms"] if h["kind"] == "activation"}
    assert set(new) <= hists
    for name in ("in_proj_weight", "out_proj.weight"):  # (the biases start at zero: no ratio)
        s = record["parameters"][f"backbone.block0.self_attn.{name}"]
        assert all(v is not None and v > 0 for v in s["grad_norm"] + s["update_ratio"])
    recorder.detach()
    assert all("forward" not in m.__dict__ for m in model.modules())


def test_recorder_leaves_on_a_transformer_and_generation():
    """The default (leaves): every leaf the forward runs has numbers; a cached forward
    (generation, tuples with a KVCache) goes through the hooks too."""
    model = gpt(context=8)
    recorder = Recorder(model)
    ids = np.random.default_rng(0).integers(0, 11, (2, 9))
    model.loss(ids[:, :-1], ids[:, 1:])
    model.zero_grad()
    model.backward()
    recorder.step()
    acts = recorder.to_dict()["activations"]
    for name in ("backbone.block0.self_attn.out_proj", "backbone.block0.self_attn.attn_drop",
                 "backbone.block1.norm2", "backbone.block1.linear2", "backbone.norm"):
        assert acts[name]["mean"][0] is not None and acts[name]["grad_norm"][0] is not None
    # the attention probabilities (attn_drop's input, p = 0): rows of T keys sum to 1
    assert acts["backbone.block0.self_attn.attn_drop"]["mean"][0] == pytest.approx(1 / 8)
    model.eval()
    out = model.generate(ids[0, :3], 4, rng=np.random.default_rng(0))
    assert len(out) >= 4
