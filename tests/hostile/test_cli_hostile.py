"""Hostile command lines: every option of every command given values it must refuse.

Each refusal must be: exit status 2, ONE line on stderr that names the option
(``tinyar CMD: error: --flag: expected ..., got ...``), no traceback, and no work
started. "No work" is checked by replacing every function that does work (training,
loading a run, loading data, drawing the demo, gradcheck, the report) with one that
raises ``Started``: a refused option must never reach them. Where a value is valid,
the command must start with exactly that value (the flag acts).
"""
import os
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tinyar.cli import main


class Started(Exception):
    """Work began (a loader or a training loop was called): not a ValueError, so the
    command line does not turn it into an error message."""

    def __init__(self, what, args, kwargs):
        super().__init__(what)
        self.what, self.args_, self.kwargs = what, args, kwargs


@pytest.fixture
def no_work(monkeypatch):
    """Every entry point that does work raises ``Started``."""
    from tinyar import demo
    from tinyar.inspect import commands, report
    from tinyar.train import classify, lm

    def stub(what):
        def start(*args, **kwargs):
            raise Started(what, args, kwargs)
        return start

    for module, names in ((lm, ("train_lm", "load_run", "evaluate_run", "load_corpus")),
                          (classify, ("train_classifier", "evaluate_run", "load_dataset")),
                          (demo, ("run_demo",)), (commands, ("run_gradcheck",)),
                          (report, ("write_report", "build_report"))):
        for name in names:
            monkeypatch.setattr(module, name, stub(f"{module.__name__}.{name}"))


def run_cli(argv, capsys):
    """(exit status, stderr) of ``tinyar ARGV``; ``Started`` propagates."""
    capsys.readouterr()
    code = main(argv)
    return code, capsys.readouterr().err


def assert_refused(argv, flag, capsys):
    code, err = run_cli(argv, capsys)
    command = argv[0]
    assert code == 2, (argv, code, err)
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, (argv, err)
    assert lines[0].startswith(f"tinyar {command}: error: "), lines[0]
    assert flag in lines[0], (flag, lines[0])


# --- the options, and which of the generic values each accepts ------------------------------
# (command prefix, flag, kind, values among 0 / -1 that are valid)
RUN = "some-run"
OPTIONS = [
    # tinyar train
    *[(["train"], f, "int", ()) for f in (
        "--max-chars", "--vocab", "--embed", "--hidden", "--layers", "--steps", "--batch",
        "--bptt", "--eval-every", "--eval-tokens", "--sample-every", "--sample-tokens",
        "--checkpoint-every")],
    *[(["train"], f, "int", ("0",)) for f in ("--classes", "--warmup", "--early-stop",
                                             "--record-every", "--seed")],
    *[(["train"], f, "float", ("0",)) for f in ("--dropout", "--epochs", "--weight-decay",
                                               "--clip", "--max-seconds")],
    (["train"], "--lr", "float", ()),
    *[(["train"], f, "choice", ()) for f in ("--level", "--backbone", "--cell", "--head",
                                            "--optimizer", "--schedule", "--device")],
    # tinyar classify
    *[(["classify"], f, "int", ()) for f in ("--train-size", "--test-size", "--hidden",
                                            "--epochs", "--batch")],
    *[(["classify"], f, "int", ("0",)) for f in ("--pretrain-steps", "--early-stop", "--seed")],
    *[(["classify"], f, "float", ()) for f in ("--label-fraction", "--lr", "--pretrain-lr")],
    *[(["classify"], f, "float", ("0",)) for f in ("--val-fraction", "--clip")],
    *[(["classify"], f, "choice", ()) for f in ("--model", "--arch", "--cell", "--head",
                                               "--decode", "--optimizer", "--device")],
    # tinyar classify --eval RUN
    (["classify", "--eval", RUN], "--test-size", "int", ()),
    (["classify", "--eval", RUN], "--decode", "choice", ()),
    (["classify", "--eval", RUN], "--device", "choice", ()),
    # tinyar sample RUN / eval RUN
    (["sample", RUN], "--tokens", "int", ()),
    (["sample", RUN], "--top-k", "int", ()),
    (["sample", RUN], "--seed", "int", ("0",)),
    (["sample", RUN], "--temperature", "float", ("0",)),
    (["sample", RUN], "--device", "choice", ()),
    (["eval", RUN], "--split", "choice", ()),
    (["eval", RUN], "--device", "choice", ()),
    # tinyar demo / gradcheck
    (["demo"], "--steps", "int", ()),
    (["demo"], "--hidden", "int", ()),
    (["demo"], "--lr", "float", ()),
    (["demo"], "--seed", "int", ("0",)),
    (["gradcheck", "Linear"], "--tol", "float", ()),
    (["gradcheck", "Linear"], "--seed", "int", ("0",)),
]

GENERIC = ["0", "-1", "nan", "inf", "-inf", "1e30", "abc", "", " ", "1_000", "0x10"]
NOT_AN_INTEGER = ["1.5", "2e3", "1e30", "1" * 40]
NOT_A_CHOICE = ["CPU", "lstm ", "x" * 200]


def _bad_cases():
    for prefix, flag, kind, valid in OPTIONS:
        values = [v for v in GENERIC if v not in valid]
        if kind == "int":
            values += NOT_AN_INTEGER
        if kind == "choice":
            values += NOT_A_CHOICE
        for value in values:
            yield pytest.param(prefix, flag, value, id=f"{' '.join(prefix)} {flag}={value!r}")


@pytest.mark.parametrize("prefix, flag, value", list(_bad_cases()))
def test_a_bad_value_is_refused_in_one_line_before_any_work(prefix, flag, value, no_work,
                                                            capsys):
    # "--flag=VALUE": argparse would read "-inf" after a space as another option
    assert_refused([*prefix, f"{flag}={value}"], flag, capsys)


@pytest.mark.parametrize("prefix, flag, value", [
    (["train"], "--steps", "-1"), (["classify"], "--epochs", "-1"),
    (["sample", RUN], "--tokens", "-1"), (["demo"], "--lr", "-1"), (["train"], "--data", ""),
    (["train"], "--out", ""), (["classify"], "--data", " "), (["classify"], "--hierarchy", ""),
])
def test_values_after_a_space_are_refused_too(prefix, flag, value, no_work, capsys):
    assert_refused([*prefix, flag, value], flag, capsys)


@pytest.mark.parametrize("bad", ["nan", "-1", "1e30", "abc", "inf"])
@pytest.mark.parametrize("position", [0, 1])
def test_each_level_weight_is_checked(bad, position, no_work, capsys):
    weights = ["1", "1"]
    weights[position] = bad
    assert_refused(["classify", "--level-weights", *weights], "--level-weights", capsys)


# --- options that would have no effect, or contradict each other -------------------------------
CONFLICTS = [
    (["train", "--tie"], "--tie"),                                   # multi-level head
    (["train", "--tie", "--head", "flat"], "--tie"),                 # embed 64 != hidden 256
    (["train", "--vocab", "500"], "--vocab"),                        # character level
    (["train", "--classes", "5", "--head", "flat"], "--classes"),
    (["train", "--warmup", "5", "--schedule", "constant"], "--warmup"),
    (["train", "--cell", "gru", "--backbone", "conv"], "--cell"),
    (["train", "--heads", "2"], "--heads"),                          # recurrent backbone
    (["train", "--context", "32", "--backbone", "conv"], "--context"),
    (["train", "--activation", "gelu_tanh"], "--activation"),
    (["train", "--backbone", "transformer", "--heads", "3"], "--heads"),   # 256 % 3
    (["train", "--backbone", "transformer", "--embed", "32"], "--embed"),  # != --hidden
    (["train", "--backbone", "transformer", "--bptt", "65"], "--bptt"),    # > --context 64
    (["train", "--epochs", "2", "--steps", "10"], "--epochs"),
    (["classify", "--arch", "vgg", "--model", "rnn"], "--arch"),
    (["classify", "--hidden", "16"], "--hidden"),                    # --model cnn
    (["classify", "--cell", "gru"], "--cell"),
    (["classify", "--pretrain-steps", "3"], "--pretrain-steps"),
    (["classify", "--pretrain-lr", "0.1", "--model", "rnn"], "--pretrain-lr"),
    (["classify", "--decode", "greedy", "--head", "flat"], "--decode"),
    (["classify", "--level-weights", "0", "0"], "--level-weights"),
    (["classify", "--weight-schedule", "1:1,1"], "--weight-schedule"),
    (["classify", "--weight-schedule", "0:1,1;0:1,2"], "--weight-schedule"),
    (["classify", "--weight-schedule", "0:1"], "--weight-schedule"),
    (["classify", "--weight-schedule", "0:nan,1"], "--weight-schedule"),
    (["classify", "--weight-schedule", "0:1,1", "--level-weights", "1", "2"], "--level-weights"),
    (["classify", "--weight-schedule", "0:1,1", "--head", "flat"], "--weight-schedule"),
    (["classify", "--hierarchy", "h.json"], "--hierarchy"),          # glyphs has its own
    (["classify", "--train-size", "10", "--data", "mnist"], "--train-size"),
    (["classify", "--last"], "--last"),
    (["classify", "--eval", RUN, "--lr", "0.1"], "--lr"),
    (["classify", "--eval", RUN, "--augment"], "--augment"),
    (["classify", "--eval", RUN, "--resume", RUN], "--resume"),
    (["sample", RUN, "--top-k", "3", "--temperature", "0"], "--top-k"),
]


@pytest.mark.parametrize("argv, flag", CONFLICTS, ids=[" ".join(a) for a, _ in CONFLICTS])
def test_an_option_without_effect_is_refused(argv, flag, no_work, capsys):
    assert_refused(argv, flag, capsys)


# --- what argparse itself refuses, in one line too ---------------------------------------------
@pytest.mark.parametrize("argv, named", [
    (["train", "--no-such-option"], "--no-such-option"),
    (["train", "--step", "5"], "--step"),            # abbreviations are not accepted
    (["classify", "--eval"], "--eval"),              # a value is missing
    (["train", "--steps"], "--steps"),
    (["sample"], "RUN"),                             # the run folder is missing
    (["eval"], "RUN"),
    (["inspect"], "RUN"),
    (["no-such-command"], "no-such-command"),
    (["classify", "--level-weights", "1"], "--level-weights"),
    (["sample", RUN, "extra"], "extra"),
])
def test_argparse_errors_are_one_line(argv, named, no_work, capsys):
    code, err = run_cli(argv, capsys)
    assert code == 2 and "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and named in lines[0] and ": error: " in lines[0], err


@pytest.mark.parametrize("argv", [["sample", ""], ["eval", " "], ["inspect", ""],
                                  ["train", "--resume", ""], ["classify", "--eval", ""]])
def test_an_empty_run_folder_name_is_refused(argv, no_work, capsys):
    code, err = run_cli(argv, capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err


# --- valid values reach the work, with the value given -----------------------------------------
def _started(argv, capsys):
    with pytest.raises(Started) as info:
        main(argv)
    capsys.readouterr()
    return info.value


@pytest.mark.parametrize("argv, attribute, value", [
    (["train", "--steps", "7"], "steps", 7),
    (["train", "--clip", "0"], "clip", 0.0),
    (["train", "--early-stop", "3"], "early_stop", 3),
    (["train", "--tie", "--head", "flat", "--embed", "32", "--hidden", "32"], "tie", True),
    (["train", "--prompt", ""], "prompt", ""),
    (["classify", "--val-fraction", "0.25"], "val_fraction", 0.25),
    (["classify", "--early-stop", "2"], "early_stop", 2),
    (["classify", "--level-weights", "0", "2"], "level_weights", [0.0, 2.0]),
    (["classify", "--weight-schedule", "0:0.9,0.1;2:0.5,0.5"], "weight_schedule",
     "0:0.9,0.1;2:0.5,0.5"),
])
def test_a_valid_option_acts(argv, attribute, value, no_work, capsys):
    started = _started(argv, capsys)
    config = started.args_[0]
    assert getattr(config, attribute) == value


@pytest.mark.parametrize("argv, overrides", [
    (["train", "--resume", RUN], {}),
    (["train", "--resume", RUN, "--steps", "20", "--max-seconds", "5"],
     {"steps": 20, "max_seconds": 5.0}),
    (["classify", "--resume", RUN, "--epochs", "4"], {"epochs": 4}),
])
def test_resume_passes_exactly_the_options_given(argv, overrides, no_work, capsys):
    started = _started(argv, capsys)
    assert started.kwargs["resume"] == RUN
    assert started.kwargs["overrides"] == overrides


@pytest.mark.parametrize("argv, what, keywords", [
    (["sample", RUN, "--last"], "load_run", {"which": "last"}),
    (["sample", RUN], "load_run", {}),
    (["eval", RUN, "--last", "--split", "all"], "evaluate_run",
     {"which": "last", "split_name": "all"}),
    (["classify", "--eval", RUN, "--last", "--test-size", "50"], "evaluate_run",
     {"which": "last", "test_size": 50}),
])
def test_last_picks_the_last_checkpoint(argv, what, keywords, no_work, capsys):
    started = _started(argv, capsys)
    assert started.what.endswith(what)
    for key, value in keywords.items():
        assert started.kwargs[key] == value
    if not keywords.get("which"):
        assert started.kwargs.get("which", "best") == "best"


# --- any text at all: refused in one line, or the value given is the value used ----------------
SETTINGS = dict(max_examples=60, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])
TEXT = st.one_of(st.text(max_size=12), st.integers(-10**12, 10**12).map(str),
                 st.floats(allow_nan=True, allow_infinity=True).map(repr))


@pytest.mark.parametrize("flag, attribute, kind", [
    ("--steps", "steps", int), ("--lr", "lr", float), ("--dropout", "dropout", float),
    ("--classes", "classes", int), ("--max-seconds", "max_seconds", float),
])
@settings(**SETTINGS)
@given(text=TEXT)
def test_any_text_for_a_train_option(flag, attribute, kind, text, no_work, capsys):
    capsys.readouterr()
    try:
        code = main(["train", f"{flag}={text}"])
    except Started as started:
        assert getattr(started.args_[0], attribute) == kind(text)
        return
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and flag in err
    assert "Traceback" not in err


@settings(**SETTINGS)
@given(text=TEXT)
def test_any_text_for_top_k_and_temperature(text, no_work, capsys):
    for flag in ("--top-k", "--temperature", "--tokens"):
        capsys.readouterr()
        try:
            code = main(["sample", RUN, f"{flag}={text}"])
        except Started:
            continue
        err = capsys.readouterr().err
        assert code == 2 and len(err.strip().splitlines()) == 1 and flag in err


# --- the Python API refuses the same values ----------------------------------------------------
@pytest.mark.parametrize("kwargs, flag", [
    ({"steps": 0}, "--steps"), ({"eval_every": 0}, "--eval-every"), ({"clip": float("nan")},
                                                                     "--clip"),
    ({"epochs": float("nan")}, "--epochs"), ({"lr": float("inf")}, "--lr"),
    ({"batch": 2.5}, "--batch"), ({"steps": True}, "--steps"), ({"cell": "LSTM"}, "--cell"),
    ({"tie": True}, "--tie"), ({"dropout": -0.1}, "--dropout"), ({"data": ""}, "--data"),
    ({"seed": -1}, "--seed"), ({"device": "tpu"}, "--device"),
])
def test_lm_config_validate(kwargs, flag):
    from tinyar.errors import ConfigError
    from tinyar.train.config import LMConfig
    with pytest.raises(ConfigError, match=f"^{flag}: "):
        LMConfig(**kwargs).validate()


@pytest.mark.parametrize("kwargs, flag", [
    ({"epochs": 0}, "--epochs"), ({"label_fraction": 0.0}, "--label-fraction"),
    ({"val_fraction": 1.0}, "--val-fraction"), ({"level_weights": [1.0]}, "--level-weights"),
    ({"level_weights": [1.0, float("nan")]}, "--level-weights"),
    ({"pretrain_steps": 2}, "--pretrain-steps"), ({"batch": 0}, "--batch"),
    ({"weight_schedule": "0:1,x"}, "--weight-schedule"),
])
def test_classify_config_validate(kwargs, flag):
    from tinyar.errors import ConfigError
    from tinyar.train.config import ClassifyConfig
    with pytest.raises(ConfigError, match=f"^{flag}: "):
        ClassifyConfig(**kwargs).validate()


def test_defaults_are_valid_and_help_shows_them(capsys):
    from tinyar.train.config import (ClassifyConfig, DemoOptions, EvalOptions,
                                     GradcheckOptions, LMConfig, SampleOptions)
    for cls in (LMConfig, ClassifyConfig, SampleOptions, EvalOptions, DemoOptions,
                GradcheckOptions):
        cls().validate()
    assert main(["train", "--help"]) == 0
    text = capsys.readouterr().out
    assert "(default: None)" not in text
    assert "(default: 600)" in text and "(default: 0.003)" in text and "--early-stop" in text
    assert main(["classify", "--help"]) == 0
    text = capsys.readouterr().out
    assert "--val-fraction" in text and "(default: 0.1)" in text and "--resume" in text
    assert text.count("--device") == 1 + text.count("[--device")  # declared once
    for command in ("sample", "eval"):
        assert main([command, "--help"]) == 0
        assert "--last" in capsys.readouterr().out


@pytest.mark.parametrize("kwargs", [{"steps": 0}, {"hidden": -1}, {"lr": float("nan")},
                                    {"seed": -5}, {"out": ""}, {"num_classes": 1}])
def test_run_demo_checks_before_training(kwargs, tmp_path):
    from tinyar.demo import run_demo
    from tinyar.errors import ConfigError
    kwargs.setdefault("out", str(tmp_path / "demo"))
    with pytest.raises(ConfigError):
        run_demo(quiet=True, **kwargs)
    assert not (tmp_path / "demo").exists()


@pytest.mark.parametrize("tol", [0.0, -1.0, float("nan"), float("inf"), 2.0])
def test_run_gradcheck_checks_its_tolerance(tol):
    from tinyar.errors import ConfigError
    from tinyar.inspect.commands import run_gradcheck
    with pytest.raises(ConfigError, match="--tol"):
        run_gradcheck(["Linear"], tol=tol)


# --- TINYAR_BLAS ------------------------------------------------------------------------------
def _cli_in_subprocess(env, argv):
    code = f"import sys; from tinyar.cli import main; sys.exit(main({argv!r}))"
    return subprocess.run([sys.executable, "-c", code], env=dict(os.environ, **env),
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("setting", ["atlas", "mkl"])
def test_a_blas_that_is_not_there_is_one_line(setting):
    from tinyar.backend.cpu import blas
    if setting == "mkl" and blas.mkl_candidates():
        pytest.skip("MKL is installed here")
    result = _cli_in_subprocess({"TINYAR_BLAS": setting, "TINYAR_MKL_PATH": "/nonexistent"},
                                ["gradcheck", "Linear"])
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tinyar gradcheck: error: TINYAR_BLAS")
    if setting == "mkl":
        assert 'pip install "tinyar[mkl]"' in lines[0] and "TINYAR_BLAS=auto" in lines[0]


def test_a_missing_mkl_is_a_tinyar_error_in_python(monkeypatch):
    from tinyar.backend.cpu import blas
    from tinyar.errors import TinyarError
    monkeypatch.setattr(blas, "mkl_candidates", lambda: [])
    monkeypatch.setenv("TINYAR_BLAS", "mkl")
    with pytest.raises(TinyarError, match="TINYAR_BLAS=mkl"):
        blas._choose()


# --- errors that are not about options: one line too, but bugs keep their traceback ------------
@pytest.mark.parametrize("exc, expected", [
    (FileNotFoundError(2, "No such file or directory", "/x/y"), "'/x/y': No such file"),
    (PermissionError(13, "Permission denied", "/root/z"), "'/root/z': Permission denied"),
    (IsADirectoryError(21, "Is a directory", "d"), "'d': Is a directory"),
    (ValueError("a\nmulti-line\nmessage"), "a multi-line message"),
    (MemoryError(), "out of memory"),
])
def test_os_and_value_errors_become_one_line(exc, expected, monkeypatch, capsys):
    from tinyar.train import lm

    def fail(*args, **kwargs):
        raise exc
    monkeypatch.setattr(lm, "load_run", fail)
    code, err = run_cli(["sample", RUN], capsys)
    assert code == 2 and expected in err and len(err.strip().splitlines()) == 1


def test_a_bug_keeps_its_traceback(monkeypatch, capsys):
    from tinyar.train import lm

    def bug(*args, **kwargs):
        raise AttributeError("a real bug")
    monkeypatch.setattr(lm, "load_run", bug)
    with pytest.raises(AttributeError):
        main(["sample", RUN])


def test_interrupt_is_130(monkeypatch, capsys):
    from tinyar.train import lm

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(lm, "load_run", interrupt)
    code, err = run_cli(["sample", RUN], capsys)
    assert code == 130 and "interrupted" in err
