"""The language-model command line, end to end on a tiny corpus."""
import json
import os

import numpy as np
import pytest

from tinyar.cli import main
from tinyar.train import lm

CORPUS = "def add(a, b):\n    return a + b\n\n" * 300
TINY = ["--embed", "8", "--hidden", "16", "--layers", "1", "--batch", "4", "--bptt", "16",
        "--eval-every", "4", "--sample-every", "4", "--checkpoint-every", "4", "--warmup", "2"]


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(CORPUS)
    return str(path)


def test_train_sample_eval(tmp_path, corpus, capsys):
    run = str(tmp_path / "run")
    assert main(["train", "--data", corpus, "--steps", "8", "--out", run, *TINY]) == 0
    for name in ["model.npz", "best.npz", "vocab.json", "hierarchy.json", "log.json",
                 "recorder.json", "loss_curve.png", "samples.txt"]:
        assert os.path.exists(os.path.join(run, name)), name
    log = json.load(open(os.path.join(run, "log.json")))
    assert len(log["history"]) == 8 and "val_loss" in log["history"][-1]
    assert "class_loss" in log["history"][0]
    capsys.readouterr()
    assert main(["sample", run, "--prompt", "def ", "--tokens", "20"]) == 0
    assert capsys.readouterr().out.startswith("def ")
    assert main(["eval", run]) == 0
    out = capsys.readouterr().out
    assert "perplexity" in out and "bits_per_char" in out
    assert log["best_step"] in (4, 8) and main(["sample", run, "--last", "--tokens", "3"]) == 0


def test_flat_head_and_word_level(tmp_path, corpus):
    run = str(tmp_path / "run")
    assert main(["train", "--data", corpus, "--steps", "4", "--out", run, "--head", "flat",
                 "--level", "word", *TINY]) == 0
    meta = lm.Run(run).load_meta()
    assert meta["model"]["head"] == "flat" and meta["tokenizer"]["type"] == "WordTokenizer"
    assert not os.path.exists(os.path.join(run, "hierarchy.json"))


def test_shortlist_gives_the_most_frequent_tokens_classes_of_their_own(tmp_path, corpus,
                                                                       capsys):
    run = str(tmp_path / "run")
    assert main(["train", "--data", corpus, "--steps", "2", "--out", run, "--shortlist", "3",
                 "--classes", "2", *TINY]) == 0
    vocab = json.load(open(os.path.join(run, "vocab.json")))
    hierarchy = json.load(open(os.path.join(run, "hierarchy.json")))
    parents = np.asarray(hierarchy["parent"])
    assert sorted(np.bincount(parents)[:3]) == [1, 1, 1] and parents.max() == 4
    tokens = vocab["tokens"] if isinstance(vocab, dict) else vocab
    counts = np.array([CORPUS.count(token) for token in tokens])
    # the singleton classes hold tokens no less frequent than any other (ties may go either way)
    assert counts[parents < 3].min() >= counts[parents >= 3].max()
    assert main(["eval", run]) == 0
    for bad, message in ((["--shortlist", "-1"], "--shortlist"),
                         (["--shortlist", "100"], "--shortlist: expected fewer tokens"),
                         (["--shortlist", "5", "--classes", "100"], "at most"),
                         (["--shortlist", "2", "--head", "flat"], "--shortlist")):
        capsys.readouterr()
        assert main(["train", "--data", corpus, "--out", str(tmp_path / "bad"), *bad,
                     *TINY]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err


def test_interrupt_saves_and_resume_continues(tmp_path, corpus, monkeypatch):
    run = str(tmp_path / "run")
    calls = {"n": 0}
    real_clip = lm.clip_grad_norm_

    def clip_then_interrupt(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 6:
            raise KeyboardInterrupt
        return real_clip(*args, **kwargs)

    monkeypatch.setattr(lm, "clip_grad_norm_", clip_then_interrupt)
    assert main(["train", "--data", corpus, "--steps", "10", "--out", run, *TINY]) == 130
    assert lm.Run(run).load_meta()["progress"]["step"] == 5
    monkeypatch.setattr(lm, "clip_grad_norm_", real_clip)
    assert main(["train", "--resume", run, "--lr", "1000"]) == 2  # made the checkpoint
    assert main(["train", "--resume", run]) == 0
    history = json.load(open(os.path.join(run, "log.json")))["history"]
    assert [r["step"] for r in history] == list(range(1, 11))
    assert main(["train", "--resume", run, "--steps", "12"]) == 0
    assert len(json.load(open(os.path.join(run, "log.json")))["history"]) == 12


def test_bad_arguments_are_clear_errors(tmp_path, corpus, capsys):
    assert main(["train", "--data", corpus, "--classes", "500", "--out", str(tmp_path / "r"),
                 *TINY]) == 2
    assert "--classes 500 is larger than the vocabulary" in capsys.readouterr().err
    assert main(["train", "--data", str(tmp_path / "missing.txt"), *TINY]) == 2
    assert main(["sample", str(tmp_path / "nothing")]) == 2
    assert "not a tinyar run folder" in capsys.readouterr().err
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    assert main(["train", "--data", str(empty), *TINY]) == 2


def test_sample_with_unknown_prompt_characters(tmp_path, corpus, capsys):
    run = str(tmp_path / "run")
    main(["train", "--data", corpus, "--steps", "2", "--out", run, *TINY])
    capsys.readouterr()
    assert main(["sample", run, "--prompt", "é"]) == 2
    assert "unknown" in capsys.readouterr().err


def test_checkpoint_from_another_vocabulary_is_rejected(tmp_path, corpus):
    from tinyar import load
    from tinyar.errors import CheckpointError
    from tinyar.models import AutoregressiveLM
    run = str(tmp_path / "run")
    main(["train", "--data", corpus, "--steps", "2", "--out", run, "--head", "flat", *TINY])
    other = AutoregressiveLM(5, 8, 16, 1, head="flat")
    with pytest.raises(CheckpointError, match="embedding.weight"):
        load(other, os.path.join(run, "model.npz"))
    np.testing.assert_equal(other.vocab_size, 5)


def test_conv_backbone_from_the_command_line(tmp_path, corpus):
    run = str(tmp_path / "run")
    args = [a for a in TINY if a not in ("--layers", "1")]
    assert main(["train", "--data", corpus, "--steps", "4", "--out", run, "--backbone", "conv",
                 "--layers", "4", *args]) == 0
    assert lm.Run(run).load_meta()["model"]["backbone"] == "conv"
    assert main(["sample", run, "--tokens", "5"]) == 0


def test_time_budget_stops_training_early(tmp_path, corpus):
    run = str(tmp_path / "run")
    assert main(["train", "--data", corpus, "--steps", "100000", "--max-seconds", "0.5",
                 "--out", run, *TINY]) == 0
    history = json.load(open(os.path.join(run, "log.json")))["history"]
    assert len(history) < 100000 and "val_loss" in history[-1]
