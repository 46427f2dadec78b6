"""tinyar classify, end to end on a few hundred rendered glyphs."""
import json
import os

import numpy as np

from tinyar.cli import main

TINY = ["--train-size", "186", "--test-size", "124", "--epochs", "1", "--batch", "32"]


def test_cnn_multilevel_run_eval_and_inspect(tmp_path, capsys):
    run = str(tmp_path / "run")
    assert main(["classify", "--model", "cnn", "--out", run, *TINY]) == 0
    for name in ["model.npz", "best.npz", "metrics.json", "log.json", "confusion_coarse.png",
                 "confusion_fine.png", "loss_curve.png"]:
        assert os.path.exists(os.path.join(run, name)), name
    report = json.load(open(os.path.join(run, "metrics.json")))
    assert report["fine"]["num_classes"] == 62 and report["coarse"]["num_classes"] == 3
    assert 0 <= report["fine"]["accuracy"] <= 1 and "mistakes" in report
    capsys.readouterr()
    assert main(["classify", "--eval", run, "--test-size", "124"]) == 0
    assert "coarse" in capsys.readouterr().out
    assert main(["inspect", run]) == 0
    assert os.path.getsize(os.path.join(run, "report.html")) > 1000


def test_resume_adds_epochs_and_last_evaluates_the_last_checkpoint(tmp_path, capsys):
    run = str(tmp_path / "run")
    assert main(["classify", "--model", "cnn", "--out", run, *TINY]) == 0
    assert main(["classify", "--resume", run, "--epochs", "2"]) == 0
    log = json.load(open(os.path.join(run, "log.json")))
    assert {r["epoch"] for r in log["history"]} == {0, 1} and log["best_step"] is not None
    assert sum("val_loss" in r for r in log["history"]) == 2  # one validation an epoch
    capsys.readouterr()
    assert main(["classify", "--eval", run, "--last", "--test-size", "124"]) == 0
    assert "coarse" in capsys.readouterr().out


def test_rnn_with_pretraining_and_flat_head(tmp_path):
    run = str(tmp_path / "run")
    assert main(["classify", "--model", "rnn", "--hidden", "16", "--pretrain-steps", "2",
                 "--head", "flat", "--label-fraction", "0.5", "--out", run, *TINY]) == 0
    log = json.load(open(os.path.join(run, "log.json")))
    assert len(log["pretrain_losses"]) == 2


def test_npz_data_with_a_json_hierarchy_and_bad_labels(tmp_path, capsys):
    rng = np.random.default_rng(0)
    path = tmp_path / "data.npz"
    np.savez(path, x_train=rng.random((40, 12, 12)), y_train=rng.integers(0, 4, 40),
             x_test=rng.random((8, 12, 12)), y_test=rng.integers(0, 4, 8))
    hierarchy = tmp_path / "h.json"
    hierarchy.write_text(json.dumps({"low": [0, 1], "high": [2, 3]}))
    run = str(tmp_path / "run")
    assert main(["classify", "--data", str(path), "--hierarchy", str(hierarchy), "--epochs", "1",
                 "--out", run]) == 0
    np.savez(path, x_train=rng.random((40, 12, 12)), y_train=rng.integers(0, 6, 40),
             x_test=rng.random((8, 12, 12)), y_test=rng.integers(0, 4, 8))
    capsys.readouterr()
    assert main(["classify", "--data", str(path), "--hierarchy", str(hierarchy),
                 "--out", str(tmp_path / "r2")]) == 2
    assert "do not cover every label" in capsys.readouterr().err


def test_bad_arguments(tmp_path, capsys):
    assert main(["classify", "--label-fraction", "0", "--out", str(tmp_path / "r"), *TINY]) == 2
    assert "label-fraction" in capsys.readouterr().err
    assert main(["classify", "--data", str(tmp_path / "nothing.npz")]) == 2
    assert main(["classify", "--model", "cnn", "--pretrain-steps", "3", "--out",
                 str(tmp_path / "r3"), *TINY]) == 2
    assert "needs --model rnn" in capsys.readouterr().err
