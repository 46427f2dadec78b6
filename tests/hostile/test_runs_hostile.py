"""Training runs under faults: interrupted (Ctrl-C at every kind of moment, ``kill -9``),
resumed, locked, fed bad options and data, diverging, out of disk; and the best model kept.

The central property: an interrupted-and-resumed run gives the same losses, bit for
bit on the CPU, as the run that was never stopped; and whatever the interruption, the
run folder is consistent (log.json = the checkpoint, no temporary files left behind).
"""
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from tinyar import fileio
from tinyar.cli import main
from tinyar.errors import CheckpointError, ConfigError, FileError, NumericalError
from tinyar.models import AutoregressiveLM
from tinyar.models.classifiers import CNNClassifier
from tinyar.optim import Adam
from tinyar.train import classify, lm, run as runmod
from tinyar.train.classify import ClassifyConfig, split_validation, train_classifier
from tinyar.train.lm import LMConfig, train_lm

CORPUS = "def add(a, b):\n    return a + b\n\nclass Point:\n    x = 1\n" * 30
BACKBONES = {"lstm": dict(cell="lstm", layers=2), "gru": dict(cell="gru", layers=2),
             "conv": dict(backbone="conv", layers=2),
             "transformer": dict(backbone="transformer", layers=2, embed=8, hidden=8, heads=2,
                                 context=8)}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text(CORPUS)
    return str(path)


def lm_config(corpus, out, **kw):
    settings_ = dict(data=corpus, out=str(out), embed=4, hidden=6, layers=1, batch=2, bptt=8,
                     steps=10, warmup=2, eval_every=3, eval_tokens=64, sample_every=4,
                     sample_tokens=4, checkpoint_every=2, record_every=2, dropout=0.2, seed=1)
    settings_.update(kw)
    return LMConfig(**settings_)


def history(folder):
    return json.load(open(os.path.join(folder, "log.json")))["history"]


def losses(folder):
    """Everything of each record that must repeat exactly (not the wall-clock seconds)."""
    return [{k: v for k, v in r.items() if k != "seconds"} for r in history(folder)]


def leftovers(folder):
    return [n for n in os.listdir(folder) if n.endswith(".tmp")]


def assert_consistent(folder):
    """log.json holds the checkpoint's history; no temporary file is left."""
    meta = runmod.RunFolder(folder).read_meta()
    log = json.load(open(os.path.join(folder, "log.json")))
    assert log["progress"]["step"] == meta["progress"]["step"]
    assert log["history"] == json.loads(fileio.dumps_json(meta["history"]))
    assert leftovers(folder) == []


_REFERENCE = {}


def reference(corpus, tmp_path_factory, kind, **kw):
    """The losses of the uninterrupted run (computed once per configuration)."""
    key = (kind, tuple(sorted(kw.items())))
    if key not in _REFERENCE:
        out = tmp_path_factory.mktemp("reference")
        if kind == "classifier":
            train_classifier(classifier_config(kw.pop("data"), out / "run", **kw), quiet=True)
        else:
            train_lm(lm_config(corpus, out / "run", **BACKBONES[kind], **kw), quiet=True)
        _REFERENCE[key] = losses(out / "run")
        _REFERENCE[key, "recorder"] = recorded(out / "run")
    return _REFERENCE[key]


def recorded(folder):
    """recorder.json (gradient and activation statistics), or None when there is none."""
    path = os.path.join(folder, "recorder.json")
    return json.load(open(path)) if os.path.exists(path) else None


def interrupt_at(monkeypatch, owner, name, call):
    """``owner.name`` raises KeyboardInterrupt at its ``call``-th call (a Ctrl-C there)."""
    real = getattr(owner, name)
    count = {"n": 0}

    def wrapper(*args, **kwargs):
        count["n"] += 1
        if count["n"] == call:
            raise KeyboardInterrupt
        return real(*args, **kwargs)
    monkeypatch.setattr(owner, name, wrapper)
    return lambda: monkeypatch.setattr(owner, name, real)


# --- exact resume after Ctrl-C at every kind of moment -------------------------------------
# where the interrupt lands: the compute phase (clip), the report (validation, sample),
# a checkpoint write, the update (optimizer step: the checkpoint on disk is kept)
POINTS = [(lm, "clip_grad_norm_", 1), (lm, "clip_grad_norm_", 5), (lm, "clip_grad_norm_", 10),
          (AutoregressiveLM, "evaluate", 2), (lm, "sample_text", 1), (lm, "sample_text", 3),
          (runmod.RunFolder, "save_checkpoint", 4), (Adam, "step", 7)]


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
@pytest.mark.parametrize("owner,name,call", POINTS,
                         ids=[f"{n}-{c}" for _, n, c in POINTS])
def test_ctrl_c_anywhere_then_resume_is_exact(backbone, owner, name, call, corpus, tmp_path,
                                              tmp_path_factory, monkeypatch):
    ref = reference(corpus, tmp_path_factory, backbone)
    folder = tmp_path / "run"
    restore = interrupt_at(monkeypatch, owner, name, call)
    with pytest.raises(KeyboardInterrupt):
        train_lm(lm_config(corpus, folder, **BACKBONES[backbone]), quiet=True)
    restore()
    assert_consistent(folder)
    train_lm(LMConfig(), resume=str(folder), quiet=True)
    assert losses(folder) == ref
    assert recorded(folder) == _REFERENCE[(backbone, ()), "recorder"]  # continued, not restarted
    assert_consistent(folder)


@pytest.mark.parametrize("call", [1, 4, 6])
def test_a_real_sigint_during_the_update_waits_for_its_end(call, corpus, tmp_path,
                                                           tmp_path_factory, monkeypatch):
    """SIGINT delivered inside optimizer.step: the step completes, is saved, then stops."""
    ref = reference(corpus, tmp_path_factory, "lstm")
    real = Adam.step
    count = {"n": 0}

    def step_with_sigint(self, *args):
        count["n"] += 1
        if count["n"] == call:
            os.kill(os.getpid(), signal.SIGINT)
        return real(self, *args)
    monkeypatch.setattr(Adam, "step", step_with_sigint)
    folder = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train_lm(lm_config(corpus, folder, **BACKBONES["lstm"]), quiet=True)
    monkeypatch.setattr(Adam, "step", real)
    assert runmod.RunFolder(folder).read_meta()["progress"]["step"] == call
    train_lm(LMConfig(), resume=str(folder), quiet=True)
    assert losses(folder) == ref


@pytest.mark.parametrize("arch,call", [("lenet", 2), ("vgg", 3), ("vgg", 7), ("rnn", 5)])
def test_classifier_ctrl_c_then_resume_is_exact(arch, call, npz_data, tmp_path,
                                                tmp_path_factory, monkeypatch):
    """Epoch, position in the epoch's order, RNG (augmentation), schedule and BatchNorm
    statistics (vgg) all continue."""
    kw = dict(model="rnn", hidden=5) if arch == "rnn" else dict(arch=arch)
    ref = reference(None, tmp_path_factory, "classifier", data=npz_data, **kw)
    folder = tmp_path / "run"
    restore = interrupt_at(monkeypatch, classify, "clip_grad_norm_", call)
    with pytest.raises(KeyboardInterrupt):
        train_classifier(classifier_config(npz_data, folder, **kw), quiet=True)
    restore()
    assert_consistent(folder)
    _, report = train_classifier(ClassifyConfig(), resume=str(folder), quiet=True)
    assert losses(folder) == ref
    assert_consistent(folder)
    assert report["model"] == "best"


@pytest.mark.parametrize("call", [2, 5, 9])
def test_classifier_checkpoints_inside_an_epoch_resume_exactly(call, npz_data, tmp_path,
                                                               tmp_path_factory, monkeypatch):
    """With a checkpoint after every step (AUTOSAVE_SECONDS = 0), an interrupt inside the
    update keeps the checkpoint of the step before, in the middle of an epoch."""
    ref = reference(None, tmp_path_factory, "classifier", data=npz_data, arch="vgg")
    monkeypatch.setattr(classify, "AUTOSAVE_SECONDS", 0.0)
    folder = tmp_path / "run"
    restore = interrupt_at(monkeypatch, Adam, "step", call)
    with pytest.raises(KeyboardInterrupt):
        train_classifier(classifier_config(npz_data, folder, arch="vgg"), quiet=True)
    restore()
    progress = runmod.RunFolder(folder).read_meta()["progress"]
    assert progress["step"] == call - 1 and progress["batch"] == (call - 1) % 4
    train_classifier(ClassifyConfig(), resume=str(folder), quiet=True)
    assert losses(folder) == ref


# --- kill -9 at random moments ---------------------------------------------------------------
CHILD = textwrap.dedent("""
    import json, sys
    from tinyar.train import classify, lm
    kind, settings = sys.argv[1], json.loads(sys.argv[2])
    owner = classify.ClassifierTraining if kind == "classifier" else lm.LMTraining
    real_save = owner.save
    def save(self, *args, **kwargs):   # say when each checkpoint starts: the parent aims there
        print("SAVE", self.progress["step"], flush=True)
        return real_save(self, *args, **kwargs)
    owner.save = save
    resume = sys.argv[3] if len(sys.argv) > 3 else None
    if kind == "classifier":
        classify.train_classifier(classify.ClassifyConfig(**settings), resume=resume, quiet=True)
    else:
        lm.train_lm(lm.LMConfig(**settings), resume=resume, quiet=True)
""")


def run_child(kind, settings_, tmp_path, resume=None):
    """The same training to its end in a fresh process. The killed run's first part ran in
    one, so the reference and the resumed part do too: bit-for-bit equality is a claim
    about processes that start alike (a test process's earlier tests can leave BLAS
    threads or kernel settings otherwise)."""
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    subprocess.run([sys.executable, str(script), kind, json.dumps(settings_)] +
                   ([resume] if resume else []), check=True, stdout=subprocess.DEVNULL,
                   timeout=300)


def kill_during(kind, settings_, tmp_path, seed):
    """Run a training in a child process and ``kill -9`` it at a random moment: after a
    random number of checkpoint starts, plus a random delay of up to a few milliseconds
    (often inside a write)."""
    rng = random.Random(seed)
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    child = subprocess.Popen([sys.executable, str(script), kind, json.dumps(settings_)],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    target, seen = rng.randint(1, 5), 0
    try:
        for line in child.stdout:
            seen += line.startswith("SAVE")
            if seen >= target:
                time.sleep(rng.random() * 0.004)
                break
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    return seen


@pytest.mark.parametrize("backbone,seed", [("lstm", 0), ("lstm", 1), ("gru", 2), ("conv", 3),
                                           ("transformer", 6)])
def test_kill_9_then_resume_is_exact_and_consistent(backbone, seed, corpus, tmp_path,
                                                    tmp_path_factory):
    reference_config = lm_config(corpus, tmp_path / "reference", **BACKBONES[backbone],
                                 checkpoint_every=1)
    run_child("lm", vars(reference_config), tmp_path)
    folder = tmp_path / "run"
    config = lm_config(corpus, folder, **BACKBONES[backbone], checkpoint_every=1)
    kill_during("lm", vars(config), tmp_path, seed)
    if (folder / "model.npz").exists():
        run_child("lm", vars(LMConfig()), tmp_path, resume=str(folder))
    else:  # killed inside the first checkpoint: nothing to resume, the folder takes a new run
        run_child("lm", vars(config), tmp_path)
    assert losses(folder) == losses(tmp_path / "reference")
    assert_consistent(folder)


@pytest.mark.parametrize("seed", [4, 5])
def test_classifier_kill_9_then_resume_is_exact(seed, npz_data, tmp_path, tmp_path_factory):
    run_child("classifier", vars(classifier_config(npz_data, tmp_path / "reference", arch="vgg")),
              tmp_path)
    folder = tmp_path / "run"
    config = classifier_config(npz_data, folder, arch="vgg")
    kill_during("classifier", vars(config), tmp_path, seed)
    if (folder / "model.npz").exists():
        run_child("classifier", vars(ClassifyConfig()), tmp_path, resume=str(folder))
    else:
        run_child("classifier", vars(config), tmp_path)
    assert losses(folder) == losses(tmp_path / "reference")
    assert_consistent(folder)


# --- the checkpoint is the source of truth -------------------------------------------------
@pytest.mark.parametrize("damage", ["behind", "ahead", "missing", "garbage", "deep", "directory"])
def test_a_log_out_of_step_with_the_checkpoint_is_rewritten(damage, corpus, tmp_path,
                                                           tmp_path_factory, monkeypatch,
                                                           capsys):
    ref = reference(corpus, tmp_path_factory, "lstm")
    folder = tmp_path / "run"
    restore = interrupt_at(monkeypatch, lm, "clip_grad_norm_", 6)
    with pytest.raises(KeyboardInterrupt):
        train_lm(lm_config(corpus, folder, **BACKBONES["lstm"]), quiet=True)
    restore()
    log_path = folder / "log.json"
    log = json.loads(log_path.read_text())
    if damage == "behind":
        log["history"], log["progress"]["step"] = log["history"][:-2], log["progress"]["step"] - 2
    elif damage == "ahead":
        log["history"].append(dict(log["history"][-1], step=99))
        log["progress"]["step"] = 99
    os.unlink(log_path)
    if damage in ("behind", "ahead"):
        log_path.write_text(json.dumps(log))
    elif damage == "garbage":
        log_path.write_text("{not json")
    elif damage == "deep":
        log_path.write_text("[" * 100_000 + "]" * 100_000)
    elif damage == "directory":
        log_path.mkdir()
    capsys.readouterr()
    if damage == "directory":  # tinyar does not delete a folder the user made
        with pytest.raises(FileError, match="log.json"):
            train_lm(LMConfig(), resume=str(folder), quiet=True)
        return
    train_lm(LMConfig(), resume=str(folder), quiet=True)
    assert "rewritten from the checkpoint" in capsys.readouterr().err
    assert losses(folder) == ref


@pytest.mark.parametrize("name", [".model.npz.k2j3h4.tmp", "log.json.tmp", "recorder.json.tmp",
                                  "hierarchy.json.tmp", ".log.json.abc.tmp", "samples.txt.tmp"])
def test_leftover_temporary_files_are_removed_when_a_run_restarts(name, corpus, tmp_path):
    folder = tmp_path / "run"
    train_lm(lm_config(corpus, folder, steps=2), quiet=True)
    (folder / name).write_bytes(b"half a file")
    train_lm(LMConfig(), resume=str(folder), steps=4, quiet=True)
    assert leftovers(folder) == []


# --- options on resume -----------------------------------------------------------------------
REFUSED = [("lr", 1000.0), ("out", "elsewhere"), ("hidden", 64), ("data", "stdlib"),
           ("seed", 5), ("batch", 4), ("bptt", 16), ("optimizer", "sgd"), ("head", "flat"),
           ("level", "word"), ("clip", 0.0), ("dropout", 0.5), ("warmup", 0),
           ("record_every", 3), ("cell", "gru"), ("layers", 3)]


@pytest.mark.parametrize("option,value", REFUSED)
def test_options_that_made_the_checkpoint_are_refused_on_resume(option, value, corpus,
                                                                tmp_path):
    folder = tmp_path / "run"
    train_lm(lm_config(corpus, folder, steps=2), quiet=True)
    before = (folder / "model.npz").read_bytes()
    with pytest.raises(ConfigError) as err:
        train_lm(LMConfig(), resume=str(folder), overrides={option: value, "steps": 4},
                 quiet=True)
    message = str(err.value)
    assert "\n" not in message and "--" + option.replace("_", "-") in message
    assert "--steps" not in message.split("allowed")[0]
    assert (folder / "model.npz").read_bytes() == before


def test_several_refused_options_are_named_together_and_equal_values_pass(corpus, tmp_path):
    folder = tmp_path / "run"
    train_lm(lm_config(corpus, folder, steps=2), quiet=True)
    with pytest.raises(ConfigError, match="--lr, --out cannot change"):
        train_lm(LMConfig(), resume=str(folder), overrides={"lr": 1000.0, "out": "X"},
                 quiet=True)
    # the saved values themselves are no change
    train_lm(LMConfig(), resume=str(folder), overrides={"hidden": 6, "steps": 3}, quiet=True)
    assert len(history(folder)) == 3


@pytest.mark.parametrize("option,value,check", [
    ("steps", 5, lambda h: len(h) == 5),
    ("epochs", 0.1, lambda h: len(h) == 10),   # 94 batches an epoch
    ("eval_every", 1, lambda h: all("val_loss" in r for r in h[2:])),
    ("sample_every", 1, lambda h: all("sample" in r for r in h[2:])),
    ("sample_tokens", 9, lambda h: len(h[-1]["sample"]) == 10),
    ("checkpoint_every", 1, lambda h: len(h) == 12),
    ("max_seconds", 1e-9, lambda h: len(h) == 2),
    ("prompt", "def", lambda h: h[-1]["sample"].startswith("def")),
])
def test_options_allowed_on_resume_act(option, value, check, corpus, tmp_path):
    folder = tmp_path / "run"
    train_lm(lm_config(corpus, folder, steps=2), quiet=True)
    overrides = {option: value} if option in ("steps", "epochs") else {option: value, "steps": 12}
    train_lm(LMConfig(), resume=str(folder), overrides=overrides, quiet=True)
    assert check(history(folder))
    if len(history(folder)) > 2:  # it trained, so its checkpoint holds the new setting
        assert runmod.RunFolder(folder).read_meta()["config"][option] == value


def test_early_stop_counts_the_evaluations_before_a_resume(corpus, tmp_path, monkeypatch):
    values = iter([3.0, 4.0, 5.0, 6.0])
    monkeypatch.setattr(AutoregressiveLM, "evaluate", lambda self, *a, **k: next(values))
    folder = tmp_path / "run"
    train_lm(lm_config(corpus, folder, steps=6, eval_every=3), quiet=True)
    train_lm(LMConfig(), resume=str(folder), overrides={"steps": 30, "early_stop": 2},
             quiet=True)
    assert len(history(folder)) == 9  # one worse evaluation before, one after


def test_resume_refuses_fewer_steps_than_done(corpus, tmp_path):
    folder = tmp_path / "run"
    train_lm(lm_config(corpus, folder, steps=4), quiet=True)
    with pytest.raises(ConfigError, match="at step 4 already"):
        train_lm(LMConfig(), resume=str(folder), steps=2, quiet=True)


def test_resume_refuses_changed_data(corpus, tmp_path):
    folder = tmp_path / "run"
    data = tmp_path / "text.txt"
    data.write_text(CORPUS)
    train_lm(lm_config(str(data), folder, steps=2), quiet=True)
    data.write_text(CORPUS.replace("Point", "Pixel"))
    with pytest.raises(ConfigError, match="not the one the run was trained on"):
        train_lm(LMConfig(), resume=str(folder), steps=4, quiet=True)


@pytest.mark.parametrize("option,value", [("lr", 1.0), ("arch", "vgg"), ("val_fraction", 0.5),
                                          ("augment", False), ("seed", 3), ("batch", 4)])
def test_classifier_resume_refuses_the_options_of_the_checkpoint(option, value, npz_data,
                                                                 tmp_path):
    folder = tmp_path / "run"
    train_classifier(classifier_config(npz_data, folder, epochs=1), quiet=True)
    with pytest.raises(ConfigError, match="--" + option.replace("_", "-")):
        train_classifier(ClassifyConfig(), resume=str(folder),
                         overrides={option: value, "epochs": 2}, quiet=True)
    train_classifier(ClassifyConfig(), resume=str(folder), overrides={"epochs": 2}, quiet=True)
    assert max(r["epoch"] for r in history(folder)) == 1


# --- one writer at a time ----------------------------------------------------------------------
@pytest.mark.parametrize("how", ["fresh", "resume", "classify-resume"])
def test_a_second_writer_is_refused_at_once(how, corpus, npz_data, tmp_path):
    folder = tmp_path / "run"
    if how == "classify-resume":
        train_classifier(classifier_config(npz_data, folder, epochs=1), quiet=True)
    else:
        train_lm(lm_config(corpus, folder, steps=2), quiet=True)
    before = {n: (folder / n).read_bytes() for n in os.listdir(folder) if n != ".lock"}
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from tinyar.fileio import RunLock
        with RunLock({str(folder)!r}):
            print("locked", flush=True)
            time.sleep(60)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        started = time.perf_counter()
        with pytest.raises(FileError, match=f"in use by another tinyar process .pid {holder.pid}"):
            if how == "fresh":
                train_lm(lm_config(corpus, folder, steps=2), quiet=True)
            elif how == "resume":
                train_lm(LMConfig(), resume=str(folder), steps=4, quiet=True)
            else:
                train_classifier(ClassifyConfig(), resume=str(folder), overrides={"epochs": 2},
                                 quiet=True)
        assert time.perf_counter() - started < 5
    finally:
        holder.kill()
        holder.wait()
    assert before == {n: (folder / n).read_bytes() for n in os.listdir(folder) if n != ".lock"}


def test_a_new_run_never_replaces_a_run_in_its_folder(corpus, tmp_path, capsys):
    folder = tmp_path / "run"
    train_lm(lm_config(corpus, folder, steps=2), quiet=True)
    before = (folder / "model.npz").read_bytes()
    assert main(["train", "--data", corpus, "--out", str(folder), "--steps", "2"]) == 2
    err = capsys.readouterr().err
    assert "already holds a training run" in err and "--resume" in err
    assert (folder / "model.npz").read_bytes() == before


def test_files_get_the_users_umask(corpus, tmp_path):
    old = os.umask(0o027)
    try:
        train_lm(lm_config(corpus, tmp_path / "run", steps=2), quiet=True)
    finally:
        os.umask(old)
    for name in ("model.npz", "best.npz", "log.json", "vocab.json", "loss_curve.png"):
        assert os.stat(tmp_path / "run" / name).st_mode & 0o777 == 0o640, name


# --- validate before work ------------------------------------------------------------------------
@pytest.fixture
def no_training(monkeypatch):
    """Any training forward fails the test: the error must come before the first step."""
    def refuse(*args, **kwargs):
        raise AssertionError("a training step ran before the error")
    monkeypatch.setattr(AutoregressiveLM, "backward", refuse)
    monkeypatch.setattr(CNNClassifier, "backward", refuse)


LM_BAD = [
    (["--prompt", "é"], "--prompt"),
    (["--prompt", "ü∑"], "--prompt"),
    (["--classes", "500"], "--classes 500"),
    (["--batch", "64", "--bptt", "64"], "--batch 64 --bptt 64"),
    (["--bptt", "5000"], "--bptt"),
    (["--eval-tokens", "1"], "--eval-tokens"),
    (["--tie"], "--tie"),
    (["--tie", "--head", "flat", "--embed", "4", "--hidden", "6"], "--tie"),
    (["--classes", "3", "--head", "flat"], "--classes"),
    (["--cell", "gru", "--backbone", "conv"], "--cell"),
    (["--vocab", "50"], "--vocab"),
    (["--warmup", "5", "--schedule", "constant"], "--warmup"),
    (["--steps", "5", "--epochs", "1"], "--epochs"),
]


@pytest.mark.parametrize("args,named", LM_BAD)
def test_lm_bad_options_fail_before_any_step_and_leave_no_folder(args, named, corpus,
                                                                 tmp_path, capsys, no_training):
    out = tmp_path / "runs" / "new"
    code = main(["train", "--data", corpus, "--out", str(out), "--steps", "3", "--embed", "4",
                 "--hidden", "6", "--layers", "1", "--batch", "2", "--bptt", "8", *args])
    err = capsys.readouterr().err
    assert code == 2 and named in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("make", ["file", "parent-file", "lock-dir"])
def test_an_out_that_cannot_hold_a_run_fails_at_once(make, corpus, tmp_path, capsys,
                                                     no_training):
    target = tmp_path / "x"
    if make == "file":
        target.write_text("mine")
        out = target
    elif make == "parent-file":
        target.write_text("mine")
        out = target / "run"
    else:
        (target / ".lock").mkdir(parents=True)
        out = target
    code = main(["train", "--data", corpus, "--out", str(out), "--steps", "3"])
    err = capsys.readouterr().err
    assert code == 2 and str(out) in err and err.count("\n") == 1
    if make != "lock-dir":
        assert target.read_text() == "mine"


def _npz(path, x_train, y_train, x_test, y_test):
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return str(path)


@pytest.fixture(scope="module")
def npz_data(tmp_path_factory):
    rng = np.random.default_rng(0)
    folder = tmp_path_factory.mktemp("images")
    path = _npz(folder / "tiny.npz", rng.random((24, 1, 10, 10)).astype(np.float32),
                np.arange(24) % 4, rng.random((8, 1, 10, 10)).astype(np.float32),
                np.arange(8) % 4)
    (folder / "groups.json").write_text(json.dumps({"low": [0, 1], "high": [2, 3]}))
    return path


def classifier_config(data, out, **kw):
    settings_ = dict(data=data, hierarchy=os.path.join(os.path.dirname(data), "groups.json"),
                     epochs=3, batch=6, hidden=128, out=str(out), augment=True, seed=2)
    settings_.update(kw)
    return ClassifyConfig(**settings_)


CLASSIFY_BAD = [
    (["--pretrain-steps", "2"], "--pretrain-steps"),
    (["--weight-schedule", "0:0.9"], "--weight-schedule"),
    (["--weight-schedule", "1:0.5,0.5"], "--weight-schedule"),
    (["--weight-schedule", "0:nan,1"], "--weight-schedule"),
    (["--head", "flat", "--decode", "greedy"], "--decode"),
    (["--arch", "vgg", "--model", "rnn"], "--arch"),
    (["--early-stop", "2", "--val-fraction", "0"], "--early-stop"),
    (["--label-fraction", "0"], "--label-fraction"),
]


@pytest.mark.parametrize("args,named", CLASSIFY_BAD)
def test_classify_bad_options_fail_before_any_step(args, named, npz_data, tmp_path, capsys,
                                                   no_training):
    out = tmp_path / "runs" / "new"
    code = main(["classify", "--data", npz_data, "--hierarchy",
                 os.path.join(os.path.dirname(npz_data), "groups.json"), "--out", str(out),
                 "--epochs", "1", *args])
    err = capsys.readouterr().err
    assert code == 2 and named in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("damage", ["test-shape", "test-channels", "count", "label-range",
                                    "tiny-augment"])
def test_classify_bad_data_fails_before_any_step(damage, tmp_path, capsys, no_training):
    rng = np.random.default_rng(1)
    x, y = rng.random((12, 1, 10, 10)).astype(np.float32), np.arange(12) % 3
    xt, yt = rng.random((6, 1, 10, 10)).astype(np.float32), np.arange(6) % 3
    extra = []
    if damage == "test-shape":
        xt = rng.random((6, 1, 12, 12)).astype(np.float32)
    elif damage == "test-channels":
        xt = rng.random((6, 3, 10, 10)).astype(np.float32)
    elif damage == "count":
        yt = np.arange(5) % 3
    elif damage == "label-range":
        y = np.arange(12) % 3 - 1
    else:
        x, xt, extra = x[:, :, :3, :3], xt[:, :, :3, :3], ["--augment", "--model", "rnn"]
    data = _npz(tmp_path / "d.npz", x, y, xt, yt)
    code = main(["classify", "--data", data, "--out", str(tmp_path / "run"), "--epochs", "1",
                 *extra])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "run").exists()


# --- a full disk, a diverging loss ------------------------------------------------------------
@pytest.mark.parametrize("kind", ["lm", "classifier"])
def test_a_save_that_fails_at_the_end_goes_to_a_rescue_folder(kind, corpus, npz_data, tmp_path,
                                                              monkeypatch, capsys):
    import tempfile
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    os.makedirs(tmp_path / "tmp")
    folder = tmp_path / "run"
    real = runmod.RunFolder.save_checkpoint
    calls = {"n": 0}

    def full_disk(self, name, *args, **kwargs):
        if self.folder == str(folder):
            calls["n"] += 1
            if calls["n"] > 1:  # the first checkpoint (step 0) fits, nothing after it
                raise FileError(f"cannot write {self.path(name)!r}: No space left on device")
        return real(self, name, *args, **kwargs)
    monkeypatch.setattr(runmod.RunFolder, "save_checkpoint", full_disk)
    if kind == "lm":
        saved = train_lm(lm_config(corpus, folder, steps=6), quiet=True)
        steps = 6
    else:
        saved, _ = train_classifier(classifier_config(npz_data, folder, epochs=2), quiet=True)
        steps = 2 * 4
    err = capsys.readouterr().err
    assert saved.startswith(str(tmp_path / "tmp")) and f"saved it in {saved!r}" in err
    assert "No space left on device" in err
    monkeypatch.setattr(runmod.RunFolder, "save_checkpoint", real)
    rescued = runmod.RunFolder(saved)
    assert rescued.read_meta()["progress"]["step"] == steps
    assert len(history(saved)) == steps and rescued.has("best.npz")
    assert runmod.RunFolder(folder).read_meta()["progress"]["step"] == 0


@pytest.mark.parametrize("kind,at", [("lm", 1), ("lm", 4), ("lm", 7), ("classifier", 3),
                                     ("classifier", 6)])
def test_a_nan_loss_stops_with_one_line_and_keeps_the_last_good_state(kind, at, corpus,
                                                                      npz_data, tmp_path,
                                                                      monkeypatch):
    cls = AutoregressiveLM if kind == "lm" else CNNClassifier
    real = cls.loss
    count = {"n": 0}

    def nan_at(self, *args, **kwargs):
        result = real(self, *args, **kwargs)
        if self.training:
            count["n"] += 1
            if count["n"] == at:
                return (float("nan"), result[1]) if kind == "lm" else float("inf")
        return result
    monkeypatch.setattr(cls, "loss", nan_at)
    folder = tmp_path / "run"
    with pytest.raises(NumericalError) as err:
        if kind == "lm":
            train_lm(lm_config(corpus, folder, steps=10), quiet=True)
        else:
            train_classifier(classifier_config(npz_data, folder), quiet=True)
    message = str(err.value)
    assert "\n" not in message and f"step {at}:" in message and "diverged" in message
    meta = runmod.RunFolder(folder).read_meta()
    assert meta["progress"]["step"] == at - 1
    assert_consistent(folder)
    if kind == "lm":
        lm.load_run(str(folder), which="last")  # the weights saved are finite and load


# --- the best model is kept ---------------------------------------------------------------------
@pytest.mark.parametrize("scores", [[3.0, 2.0, 5.0, 6.0], [4.0, 3.0, 2.0, 1.0],
                                    [1.0, 2.0, 3.0, 4.0], [2.0, float("nan"), 1.5, 9.0],
                                    [5.0, 5.0, 4.0, 4.0]])
def test_best_npz_holds_the_best_validation_loss(scores, corpus, tmp_path, monkeypatch):
    values = iter(scores)
    monkeypatch.setattr(AutoregressiveLM, "evaluate", lambda self, *a, **k: next(values))
    folder = tmp_path / "run"
    train_lm(lm_config(corpus, folder, steps=12, eval_every=3), quiet=True)
    finite = [(s, (i + 1) * 3) for i, s in enumerate(scores) if np.isfinite(s)]
    best_loss, best_step = min(finite, key=lambda p: (p[0], p[1]))
    run = runmod.RunFolder(folder)
    assert run.read_meta("best.npz")["progress"]["step"] == best_step
    log = json.load(open(folder / "log.json"))
    assert log["best_step"] == best_step and log["best"]["val_loss"] == best_loss
    assert lm.load_run(str(folder))[2]["progress"]["step"] == best_step
    assert lm.load_run(str(folder), which="last")[2]["progress"]["step"] == 12


@pytest.mark.parametrize("patience,scores,stopped_at", [
    (1, [3.0, 4.0, 5.0, 6.0, 7.0], 6), (2, [3.0, 4.0, 5.0, 6.0, 7.0], 9),
    (2, [3.0, 4.0, 2.0, 5.0, 6.0, 7.0], 15), (3, [3.0] * 10, 12)])
def test_early_stop_after_n_evaluations_without_improvement(patience, scores, stopped_at,
                                                            corpus, tmp_path, monkeypatch):
    values = iter(scores)
    monkeypatch.setattr(AutoregressiveLM, "evaluate", lambda self, *a, **k: next(values))
    folder = tmp_path / "run"
    train_lm(lm_config(corpus, folder, steps=30, eval_every=3, early_stop=patience), quiet=True)
    assert len(history(folder)) == stopped_at


def test_older_run_folders_without_best_npz_fall_back_to_the_last(corpus, tmp_path, capsys):
    folder = tmp_path / "run"
    train_lm(lm_config(corpus, folder, steps=3), quiet=True)
    os.unlink(folder / "best.npz")
    capsys.readouterr()
    assert main(["eval", str(folder)]) == 0
    assert "no best.npz" in capsys.readouterr().err


def test_the_classifier_picks_its_best_epoch_on_validation_not_test(npz_data, tmp_path,
                                                                    monkeypatch):
    scores = iter([0.9, 0.5, 0.7, 0.8])
    monkeypatch.setattr(classify, "validation_loss", lambda *a: (next(scores), 0.5))
    folder = tmp_path / "run"
    _, report = train_classifier(classifier_config(npz_data, folder, epochs=4), quiet=True)
    assert report["best_epoch"] == 2 and report["model"] == "best"
    assert json.load(open(folder / "metrics.json"))["best_step"] == 2 * 4
    assert runmod.RunFolder(folder).read_meta("best.npz")["progress"]["step"] == 8
    again = classify.evaluate_run(str(folder), quiet=True)
    assert again["fine"]["accuracy"] == report["fine"]["accuracy"]


@pytest.mark.parametrize("patience,scores,epochs_run", [(1, [1.0, 2.0, 3.0], 2),
                                                        (2, [1.0, 2.0, 0.5, 3.0, 4.0], 5)])
def test_classifier_early_stop(patience, scores, epochs_run, npz_data, tmp_path, monkeypatch):
    values = iter(scores)
    monkeypatch.setattr(classify, "validation_loss", lambda *a: (next(values), 0.5))
    folder = tmp_path / "run"
    train_classifier(classifier_config(npz_data, folder, epochs=8, early_stop=patience),
                     quiet=True)
    assert max(r["epoch"] for r in history(folder)) + 1 == epochs_run


@settings(max_examples=60, deadline=None)
@given(counts=st.lists(st.integers(1, 30), min_size=1, max_size=8),
       fraction=st.floats(0.01, 0.9), seed=st.integers(0, 2**31))
def test_the_validation_split_is_stratified_disjoint_and_seeded(counts, fraction, seed):
    y = np.repeat(np.arange(len(counts)), counts)
    np.random.default_rng(seed).shuffle(y)
    train, val = split_validation(y, fraction, np.random.default_rng(seed))
    again = split_validation(y, fraction, np.random.default_rng(seed))
    np.testing.assert_array_equal(val, again[1])
    assert np.intersect1d(train, val).size == 0 and train.size + val.size == y.size
    assert set(np.unique(y[train])) == set(range(len(counts)))  # a training image per class
    for c, n in enumerate(counts):  # each class holds out its share, rounded one way
        held = int(np.sum(y[val] == c))
        assert held <= n - 1 and abs(held - fraction * n) < 1
    if y.size > len(counts):
        assert val.size >= 1


# --- loading the wrong kind of run ------------------------------------------------------------
def test_a_run_of_the_other_kind_is_refused_with_one_line(corpus, npz_data, tmp_path, capsys):
    lm_run, cl_run = tmp_path / "lm", tmp_path / "cl"
    train_lm(lm_config(corpus, lm_run, steps=2), quiet=True)
    train_classifier(classifier_config(npz_data, cl_run, epochs=1), quiet=True)
    with pytest.raises(CheckpointError, match="classifier run"):
        lm.load_run(str(cl_run))
    with pytest.raises(CheckpointError, match="language-model run"):
        classify.evaluate_run(str(lm_run))
    with pytest.raises(CheckpointError, match="classifier run"):
        train_lm(LMConfig(), resume=str(cl_run), quiet=True)
    for argv in (["sample", str(cl_run)], ["eval", str(cl_run)],
                 ["classify", "--eval", str(lm_run)]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err


# --- --augment acts on every kind of image data -----------------------------------------------
def _idx_folder(folder, x, y, xt, yt):
    from tinyar.data import write_idx
    folder.mkdir()
    write_idx((x[:, 0] * 255).astype(np.uint8), folder / "train-images-idx3-ubyte")
    write_idx(y.astype(np.uint8), folder / "train-labels-idx1-ubyte")
    write_idx((xt[:, 0] * 255).astype(np.uint8), folder / "t10k-images-idx3-ubyte")
    write_idx(yt.astype(np.uint8), folder / "t10k-labels-idx1-ubyte")
    return str(folder)


@pytest.mark.parametrize("source", ["npz", "idx-folder", "glyphs"])
def test_augment_changes_training_on_any_image_data(source, tmp_path):
    rng = np.random.default_rng(3)
    x, y = rng.random((16, 1, 12, 12)).astype(np.float32), np.arange(16) % 4
    xt, yt = rng.random((4, 1, 12, 12)).astype(np.float32), np.arange(4)
    if source == "npz":
        data = _npz(tmp_path / "d.npz", x, y, xt, yt)
    elif source == "idx-folder":
        data = _idx_folder(tmp_path / "idx", x, y, xt, yt)
    else:
        data = "glyphs"
    runs = {}
    for augment in (False, True):
        config = ClassifyConfig(data=data, epochs=1, batch=8, augment=augment,
                                out=str(tmp_path / f"run-{augment}"), train_size=70,
                                test_size=10, val_fraction=0.1)
        if source != "glyphs":
            config.train_size, config.test_size = ClassifyConfig().train_size, \
                ClassifyConfig().test_size
        train_classifier(config, quiet=True)
        runs[augment] = [r["loss"] for r in history(config.out)]
    assert runs[True][1:] != runs[False][1:]
