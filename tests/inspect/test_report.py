"""The HTML report of a run folder: self-contained, well formed, showing what is there."""
import base64
import json
import os
from html.parser import HTMLParser

import numpy as np
import pytest

from tinyar.cli import main
from tinyar.errors import CheckpointError
from tinyar.inspect import figures
from tinyar.inspect.recorder import Recorder
from tinyar.inspect.report import build_report, write_report
from tinyar.train.lm import load_run

CORPUS = "def add(a, b):\n    return a + b\n\n" * 200
PNG = b"\x89PNG\r\n\x1a\n"
VOID = {"meta", "img", "br", "hr", "link", "input"}


def train_tiny_lm(folder):
    """A real ``tinyar train`` run folder, 4 steps of a tiny model."""
    corpus = os.path.join(folder, "corpus.txt")
    with open(corpus, "w") as f:
        f.write(CORPUS)
    run = os.path.join(folder, "run")
    assert main(["train", "--data", corpus, "--steps", "4", "--embed", "8", "--hidden", "16",
                 "--layers", "1", "--batch", "4", "--bptt", "16", "--sample-every", "2",
                 "--out", run]) == 0
    return run


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory):
    run = train_tiny_lm(str(tmp_path_factory.mktemp("lm")))
    # a recorder over a few more steps of the trained model, saved into the folder
    model, tokenizer, _ = load_run(run)
    recorder = Recorder(model, histogram_steps=(1, 3))
    ids = tokenizer.encode(CORPUS)
    for step in range(3):
        x = ids[step * 16:step * 16 + 32].reshape(2, 16)
        y = ids[step * 16 + 1:step * 16 + 33].reshape(2, 16)
        model.loss(x, y)
        model.zero_grad()
        model.backward()
        recorder.step()
    recorder.save(os.path.join(run, "recorder.json"))
    return run


class Checker(HTMLParser):
    """Collects tags, checks that they nest, and decodes every embedded image."""

    def __init__(self):
        super().__init__()
        self.stack, self.errors, self.images, self.tags = [], [], [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag == "img":
            src = dict(attrs)["src"]
            assert src.startswith("data:image/png;base64,"), src[:40]
            self.images.append(base64.b64decode(src.split(",", 1)[1]))
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes <{self.stack[-1] if self.stack else None}>")
        else:
            self.stack.pop()


def check_html(text):
    checker = Checker()
    checker.feed(text)
    checker.close()
    assert not checker.errors, checker.errors[:5]
    assert not checker.stack, checker.stack
    assert text.startswith("<!DOCTYPE html>")
    assert "<script" not in text and "http://" not in text and "https://" not in text
    for image in checker.images:
        assert image.startswith(PNG)
    return checker


def test_report_of_a_language_model_run(lm_run):
    path = write_report(lm_run)
    assert path == os.path.join(lm_run, "report.html")
    text = open(path, encoding="utf-8").read()
    checker = check_html(text)
    assert text.count("data:image/png;base64,") == len(checker.images) >= 8
    for heading in ("Configuration", "Training curves", "Final metrics", "Generated samples",
                    "Inside training", "Model", "loss_curve.png"):
        assert heading in text, heading
    log = json.load(open(os.path.join(lm_run, "log.json")))
    sample = next(r["sample"] for r in log["history"] if "sample" in r)
    assert _html_text(sample) in text
    assert "val_loss" in text and "backbone.weight_hh_l0" in text
    assert "progress.rng" not in text  # a generator's state is not a result


def _html_text(s):
    import html
    return html.escape(s)


def test_generic_results_without_a_log(tmp_path):
    """What a classifier (or anything else) might leave: rendered by the shape of the data."""
    metrics = {"accuracy": 0.75, "names": ["cat", "dog"],
               "per_class": {"precision": [0.5, 1.0], "recall": [1.0, 0.5]},
               "confusion_matrix": [[3, 0], [1, 2]],
               "epochs": [{"epoch": 1, "loss": 1.0, "val_acc": 0.5},
                          {"epoch": 2, "loss": 0.5, "val_acc": 0.75}],
               "curve": [3.0, 2.0, 1.5, 1.2], "note": "<b>escaped</b>"}
    with open(tmp_path / "metrics.json", "w") as f:
        json.dump(metrics, f)
    figures.plot_vanishing_gradients(str(tmp_path / "extra.png"), {"RNN": np.r_[0.1, 0.5, 1.0]})
    text = build_report(str(tmp_path))
    checker = check_html(text)
    assert len(checker.images) == 4  # epochs: loss + accuracy, curve, extra.png
    assert "<td>dog</td>" in text and "<th>cat</th>" in text  # names label the rows
    assert "&lt;b&gt;escaped&lt;/b&gt;" in text and "<b>escaped" not in text
    assert "0.75" in text


def test_a_broken_file_is_reported_not_fatal(tmp_path):
    (tmp_path / "log.json").write_text("{not json")
    (tmp_path / "recorder.json").write_text(json.dumps({"steps": [1], "parameters": {"w": {}},
                                                        "activations": {}}))
    text = build_report(str(tmp_path))
    check_html(text)
    assert "log.json could not be read" in text
    # a record without series: said in the page, and the figures drawn without them
    assert "recorder.json: &#x27;parameters.w.grad_norm&#x27; is not a list of 1 numbers" in text


def test_not_a_folder(tmp_path):
    with pytest.raises(CheckpointError, match="not a folder"):
        write_report(str(tmp_path / "missing"))


def test_history_helpers():
    history = [{"step": 1, "loss": 2.0, "lr": 0.1, "sample": "x"},
               {"step": 2, "loss": 1.5, "lr": 0.1, "val_loss": 1.7, "acc": 0.4},
               {"step": 3, "loss": float("nan"), "lr": 0.05, "flag": True}]
    series = figures.history_series(history)
    assert series["loss"] == ([1, 2], [2.0, 1.5])  # NaN dropped
    assert series["val_loss"] == ([2], [1.7])
    assert "flag" not in series and "sample" not in series and "step" not in series
    groups = dict(figures.group_series(series))
    assert set(groups["loss"]) == {"loss", "val_loss"}
    assert list(groups) == ["loss", "accuracy", "learning rate"]
    assert figures.history_x_key([{"epoch": 1}, {"epoch": 2}]) == "epoch"
    assert figures.history_x_key([{"a": 1}]) is None
