"""``tinyar gradcheck`` and ``tinyar inspect``: output and exit codes."""
import argparse
import io
import json
import os

import numpy as np
import pytest

from tinyar import nn
from tinyar.errors import CheckpointError
from tinyar.inspect import commands
from tinyar.inspect.commands import add_commands, gradcheck_cases, run_gradcheck, run_inspect


class WrongTanh(nn.Tanh):
    """A deliberately wrong backward: the command must fail on it."""

    def backward(self, grad_out):
        return grad_out * (1 - self._y)


def parser():
    p = argparse.ArgumentParser(prog="tinyar")
    add_commands(p.add_subparsers(dest="command"))
    return p


def call(argv):
    args = parser().parse_args(argv)
    return args.func(args)


def test_gradcheck_prints_tables_and_passes():
    out = io.StringIO()
    assert run_gradcheck(["linear", "LSTM", "mlp", "lm"], out=out) == 0
    text = out.getvalue()
    assert "gradcheck Linear(in_features=4" in text
    assert "weight_hh_l1" in text  # the two-layer LSTM, every parameter
    assert "lm.head.fine.weight" in text and "mlp: Sequential" in text
    assert "4 of 4 passed" in text and " NO" not in text


def test_gradcheck_all_covers_every_available_case(capsys):
    out = io.StringIO()
    assert run_gradcheck(["all"], out=out) == 0
    text = out.getvalue()
    available = [name for name in gradcheck_cases() if commands._find(name) is not None or
                 name in ("mlp", "lm")]
    assert f"{len(available)} of {len(available)} passed" in text
    for name in ("CrossEntropyLoss", "MultiLevelSoftmax", "GRUCell", "BatchNorm1d", "Embedding"):
        assert name in text


def test_gradcheck_fails_on_a_wrong_backward(monkeypatch):
    cases = {"WrongTanh": lambda r: (WrongTanh(), (r.standard_normal((3, 3)),)),
             "Tanh": lambda r: (nn.Tanh(), (r.standard_normal((3, 3)),))}
    monkeypatch.setattr(commands, "gradcheck_cases", lambda: cases)
    out = io.StringIO()
    assert run_gradcheck(["all"], out=out) == 1
    assert "1 of 2 passed; FAILED: WrongTanh" in out.getvalue()
    with pytest.raises(SystemExit) as exit_info:  # the CLI's exit status says so too
        call(["gradcheck", "wrongtanh"])
    assert exit_info.value.code == 1
    assert call(["gradcheck", "tanh"]) == 0


def test_gradcheck_unknown_name_and_listing(capsys):
    err = io.StringIO()
    assert run_gradcheck(["Linear", "Transformer"], out=io.StringIO(), err=err) == 2
    assert "unknown 'Transformer'" in err.getvalue() and "LSTM" in err.getvalue()
    assert call(["gradcheck", "--list"]) == 0
    listed = capsys.readouterr().out.split()
    assert "LSTM" in listed and "lm" in listed
    with pytest.raises(SystemExit) as exit_info:
        call(["gradcheck"])
    assert exit_info.value.code == 2


def test_gradcheck_unavailable_optional_layer(monkeypatch):
    monkeypatch.setattr(commands, "_find", lambda name: None)
    err = io.StringIO()
    assert run_gradcheck(["Conv2d"], out=io.StringIO(), err=err) == 2
    assert "Conv2d not available" in err.getvalue()


def test_inspect_command_writes_the_page(tmp_path, capsys):
    with open(tmp_path / "log.json", "w") as f:
        json.dump({"config": {"lr": 0.1}, "history": [{"step": 1, "loss": 1.0},
                                                      {"step": 2, "loss": 0.5}]}, f)
    assert call(["inspect", str(tmp_path)]) == 0
    path = os.path.join(str(tmp_path), "report.html")
    assert capsys.readouterr().out.strip() == path
    assert "data:image/png;base64," in open(path).read()
    other = str(tmp_path / "elsewhere.html")
    assert run_inspect(str(tmp_path), other, stdout=io.StringIO()) == 0
    assert os.path.exists(other)
    with pytest.raises(CheckpointError):
        call(["inspect", str(tmp_path / "nope")])


def test_language_model_loss_wrapper_reports_the_model_loss():
    case = gradcheck_cases()["lm"]
    module, (ids, targets) = case(np.random.default_rng(0))
    assert module(ids, targets) == pytest.approx(module.lm.loss(ids, targets)[0])
