"""A run folder is not an attack surface: symlinks planted in it never redirect a write.

A run folder may come from someone else (a shared tarball). At every name tinyar writes
in a run folder (and at the ``NAME.tmp`` names older versions used, and at ``.lock``)
the test plants a symlink to a file outside the folder (or to a missing file, or to a
folder), then runs ``tinyar train``, ``train --resume``, ``tinyar classify``,
``classify --resume`` or ``tinyar inspect`` on the folder. Whatever happens:

* the file the link points to is untouched (a missing one is not created), and its
  content never shows up in what tinyar wrote (``inspect``'s report);
* the command either succeeds, and then every name it writes is a regular file (the
  link replaced, never written through) and the old temporary names are gone, or it
  refuses with exit status 2 and a one-line error; never a traceback.
"""
import json
import os
import shutil
import stat

import numpy as np
import pytest

from tinyar.cli import main

SECRET = b"SECRET-CONTENT-OUTSIDE-THE-RUN-FOLDER"
LM_WRITES = {"model.npz", "best.npz", "vocab.json", "hierarchy.json", "log.json",
             "recorder.json", "loss_curve.png", "samples.txt"}
CLASSIFY_WRITES = {"model.npz", "best.npz", "log.json", "metrics.json",
                   "confusion_coarse.png", "confusion_fine.png", "loss_curve.png"}
OLD_TMP = ["log.json.tmp", "recorder.json.tmp", "hierarchy.json.tmp", "report.html.tmp",
           "model.npz.tmp", "vocab.json.tmp", "samples.txt.tmp", "metrics.json.tmp"]
NAMES = sorted(LM_WRITES | CLASSIFY_WRITES | {"report.html"}) + OLD_TMP + [".lock"]
WRITES = {"train": LM_WRITES, "train-resume": LM_WRITES, "classify": CLASSIFY_WRITES,
          "classify-resume": CLASSIFY_WRITES, "inspect-lm": {"report.html"},
          "inspect-classify": {"report.html"}}
TINY_LM = ["--embed", "4", "--hidden", "6", "--layers", "1", "--batch", "2", "--bptt", "8",
           "--eval-every", "3", "--sample-every", "3", "--sample-tokens", "4",
           "--checkpoint-every", "2", "--record-every", "1", "--eval-tokens", "64",
           "--warmup", "1"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A corpus, an image set, and a finished run of each kind to resume or inspect."""
    folder = tmp_path_factory.mktemp("inputs")
    corpus = folder / "corpus.txt"
    corpus.write_text("def add(a, b):\n    return a + b\n\n" * 40)
    rng = np.random.default_rng(0)
    data = folder / "tiny.npz"
    np.savez(data, x_train=rng.random((24, 1, 10, 10)).astype(np.float32),
             y_train=np.arange(24) % 4, x_test=rng.random((8, 1, 10, 10)).astype(np.float32),
             y_test=np.arange(8) % 4)
    groups = folder / "groups.json"
    groups.write_text(json.dumps({"low": [0, 1], "high": [2, 3]}))
    paths = {"corpus": str(corpus), "data": str(data), "groups": str(groups),
             "lm": str(folder / "lm"), "classify": str(folder / "classify")}
    assert main(["train", "--data", paths["corpus"], "--out", paths["lm"], "--steps", "3",
                 *TINY_LM]) == 0
    assert main(classify_args(paths, paths["classify"])) == 0
    return paths


def classify_args(paths, out):
    return ["classify", "--data", paths["data"], "--hierarchy", paths["groups"], "--out", out,
            "--epochs", "1", "--batch", "6"]


def command(kind, paths, run):
    """(argv, the finished run to start from or None) of a command on run folder ``run``."""
    return {
        "train": (["train", "--data", paths["corpus"], "--out", run, "--steps", "3", *TINY_LM],
                  None),
        "train-resume": (["train", "--resume", run, "--steps", "6"], paths["lm"]),
        "classify": (classify_args(paths, run), None),
        "classify-resume": (["classify", "--resume", run, "--epochs", "2"], paths["classify"]),
        "inspect-lm": (["inspect", run], paths["lm"]),
        "inspect-classify": (["inspect", run], paths["classify"]),
    }[kind]


def plant(run, name, target_kind, outside):
    """A symlink at RUN/NAME to something outside the folder; returns what it points to."""
    target = outside / f"{name}.target"
    if target_kind == "file":
        target.write_bytes(SECRET)
    elif target_kind == "folder":
        target.mkdir()
        (target / "inside").write_bytes(SECRET)
    path = os.path.join(run, name)
    if os.path.lexists(path):
        os.unlink(path)
    os.symlink(target, path)
    return target


def untouched(target, target_kind):
    if target_kind == "missing":
        return not os.path.lexists(target)
    if target_kind == "folder":
        return sorted(os.listdir(target)) == ["inside"] and \
            (target / "inside").read_bytes() == SECRET
    return target.read_bytes() == SECRET


def is_regular(path):
    return stat.S_ISREG(os.lstat(path).st_mode)


CASES = [(kind, name, target) for kind in WRITES for name in NAMES
         for target in (("file", "missing", "folder") if kind == "train" else
                        ("file", "missing") if not kind.startswith("inspect") else ("file",))]


@pytest.mark.parametrize("kind,name,target_kind", CASES)
def test_a_planted_symlink_never_redirects_a_write(kind, name, target_kind, inputs, tmp_path,
                                                   capsys):
    outside = tmp_path / "outside"
    outside.mkdir()
    run = str(tmp_path / "run")
    argv, start_from = command(kind, inputs, run)
    if start_from is None:
        os.mkdir(run)
    else:
        shutil.copytree(start_from, run)
    target = plant(run, name, target_kind, outside)
    capsys.readouterr()
    code = main(argv)
    err = capsys.readouterr().err
    assert untouched(target, target_kind)
    assert "Traceback" not in err
    if code != 0:
        errors = [line for line in err.splitlines() if " error: " in line]
        assert code == 2 and len(errors) == 1, err
        assert errors[0].startswith(f"tinyar {argv[0]}: error: ")
        return
    for written in WRITES[kind]:
        path = os.path.join(run, written)
        if written == name or os.path.lexists(path):
            assert is_regular(path), f"{written} is not a regular file after {argv}"
    if name.endswith(".tmp") and not kind.startswith("inspect"):
        assert not os.path.lexists(os.path.join(run, name))  # leftovers are removed
    report = os.path.join(run, "report.html")
    if kind.startswith("inspect"):
        assert SECRET.decode() not in open(report, encoding="utf-8").read()


@pytest.mark.parametrize("name", ["model.npz", ".lock"])
@pytest.mark.parametrize("kind", ["train", "train-resume", "classify", "classify-resume"])
def test_a_symlink_where_the_run_state_belongs_is_refused(kind, name, inputs, tmp_path, capsys):
    """model.npz and .lock are never replaced silently: a link there is refused."""
    outside = tmp_path / "outside"
    outside.mkdir()
    run = str(tmp_path / "run")
    argv, start_from = command(kind, inputs, run)
    if start_from is None:
        os.mkdir(run)
    else:
        shutil.copytree(start_from, run)
    target = plant(run, name, "file", outside)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert repr(run)[1:-1] in err or run in err
    assert untouched(target, "file") and os.path.islink(os.path.join(run, name))
