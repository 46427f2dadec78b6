"""Hostile run folders: every file of a real tiny run corrupted in many ways, then
``tinyar inspect`` and every command that reads a run folder run on it.

The rule for every case: the command ends with exit status 0 or 2, nothing on stderr
is a traceback, nothing hangs (a FIFO where a file should be must not block), and no
file outside the folder is read into the page or written. ``inspect`` must render the
rest of the folder with a visible note for the broken part, or fail with one line.

The runs are made by the real command line (``tinyar train`` / ``tinyar classify``,
tiny sizes) once per module; each case works on its own copy.
"""
import contextlib
import html.parser
import json
import os
import shutil
import signal

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tinyar.cli import main
from tinyar.inspect import report

CORPUS = "def add(a, b):\n    return a + b\n\n" * 100
SECRET = "SECRET-7f3a9c: must never appear in a report"
#: Longest any one command may take on a corrupted folder.
TIME_LIMIT = 60


# --- the real runs ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("runs")
    corpus = base / "corpus.txt"
    corpus.write_text(CORPUS)
    lm, cls = str(base / "lm"), str(base / "cls")
    assert main(["train", "--data", str(corpus), "--steps", "4", "--embed", "4", "--hidden", "6",
                 "--layers", "1", "--batch", "2", "--bptt", "8", "--eval-every", "2",
                 "--sample-every", "2", "--checkpoint-every", "2", "--record-every", "1",
                 "--eval-tokens", "200", "--sample-tokens", "5", "--warmup", "1",
                 "--out", lm]) == 0
    assert main(["classify", "--train-size", "100", "--test-size", "62", "--epochs", "1",
                 "--batch", "32", "--out", cls]) == 0
    for run in (lm, cls):  # a report of the intact run, to corrupt too
        assert main(["inspect", run]) == 0
    secret = base / "secret.txt"
    secret.write_text(SECRET)
    return {"lm": lm, "cls": cls, "secret": str(secret), "base": str(base)}


def _files(run):
    return sorted(n for n in os.listdir(run) if not n.startswith("."))


@contextlib.contextmanager
def time_limit(seconds=TIME_LIMIT):
    """Fail instead of hanging (a blocking open of a FIFO, an endless loop)."""
    def expire(signum, frame):
        raise TimeoutError(f"the command ran longer than {seconds} s")
    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def run_cli(argv, capsys):
    """Exit status and stderr of ``tinyar ARGV``: 0 or 2 and no traceback, or the test fails."""
    capsys.readouterr()
    with time_limit():
        code = main(argv)
    captured = capsys.readouterr()
    assert code in (0, 2), (argv, code, captured.err[-2000:])
    assert "Traceback" not in captured.err, captured.err
    if code == 2:
        lines = [line for line in captured.err.splitlines() if line.startswith("tinyar ")]
        assert lines and ": error: " in lines[-1], captured.err[-2000:]
    return code, captured.err


class HTMLCheck(html.parser.HTMLParser):
    VOID = {"meta", "img", "br", "hr", "link", "input"}

    def __init__(self):
        super().__init__()
        self.stack, self.errors = [], []

    def handle_starttag(self, tag, attrs):
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(tag)
        else:
            self.stack.pop()


def check_page(path):
    """The report at ``path``: a regular file of well-formed HTML with nothing of the
    secret in it; returns its text."""
    assert os.path.isfile(path) and not os.path.islink(path)
    with open(path, encoding="utf-8") as f:
        text = f.read()
    checker = HTMLCheck()
    checker.feed(text)
    checker.close()
    assert not checker.errors and not checker.stack, (checker.errors[:5], checker.stack[:5])
    assert "SECRET-7f3a9c" not in text
    assert "<script" not in text
    return text


def error_notes(text):
    """The texts of the page's error notes (unescaped)."""
    import html
    import re
    return [html.unescape(m) for m in re.findall(r'<p class="error">(.*?)</p>', text, re.S)]


# --- corrupting a file --------------------------------------------------------------------------
def _write(path, data):
    with open(path, "wb") as f:
        f.write(data)


def _remove(path):
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    else:
        os.remove(path)


def truncate(path, secret):
    data = open(path, "rb").read()
    _write(path, data[:len(data) // 2])


def empty(path, secret):
    _write(path, b"")


def garbage(path, secret):
    _write(path, np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8).tobytes())


def fifo(path, secret):
    _remove(path)
    os.mkfifo(path)


def directory(path, secret):
    _remove(path)
    os.mkdir(path)
    _write(os.path.join(path, "inside"), b"{}")


def symlink_out(path, secret):
    _remove(path)
    os.symlink(secret, path)


def dangling(path, secret):
    _remove(path)
    os.symlink("/nonexistent/tinyar/target", path)


BYTE_MODES = [truncate, empty, garbage, fifo, directory, symlink_out, dangling]
#: Modes after which inspect must say something about the file (not just list it).
NOTED = {"fifo", "directory", "symlink_out", "dangling"}


def corrupt_copy(runs, kind, name, mode, tmp_path):
    """A copy of run ``kind`` with file ``name`` corrupted by ``mode``; its path."""
    run = str(tmp_path / kind)
    shutil.copytree(runs[kind], run, symlinks=True)
    mode(os.path.join(run, name), runs["secret"])
    return run


def _cases(kinds, names=None):
    # the real runs are made in a fixture, so their file names are listed here by hand
    files = {"lm": ["best.npz", "hierarchy.json", "log.json", "loss_curve.png", "model.npz",
                    "recorder.json", "report.html", "samples.txt", "vocab.json"],
             "cls": ["best.npz", "confusion_coarse.png", "confusion_fine.png", "log.json",
                     "loss_curve.png", "metrics.json", "model.npz", "report.html"]}
    for kind in kinds:
        for name in names or files[kind]:
            for mode in BYTE_MODES:
                yield pytest.param(kind, name, mode, id=f"{kind}-{name}-{mode.__name__}")


def test_the_runs_have_the_files_the_cases_name(runs):
    cases = {(p.values[0], p.values[1]) for p in _cases(["lm", "cls"])}
    for kind in ("lm", "cls"):
        assert {n for k, n in cases if k == kind} <= set(_files(runs[kind])), _files(runs[kind])


#: What inspect reads (the rest it only lists, with its kind).
READ = ("log.json", "metrics.json", "recorder.json", "model.npz")
KIND_SHOWN = {"fifo": "FIFO", "directory": "folder", "symlink_out": "symlink",
              "dangling": "symlink"}


@pytest.mark.parametrize("kind, name, mode", list(_cases(["lm", "cls"])))
def test_inspect_a_corrupted_file(runs, kind, name, mode, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(report, "MAX_FIGURES", 2)  # the intact files' figures: drawn once
    run = corrupt_copy(runs, kind, name, mode, tmp_path)
    secret_before = open(runs["secret"]).read()
    code, err = run_cli(["inspect", run], capsys)
    assert open(runs["secret"]).read() == secret_before  # nothing written through a link
    if name == "report.html" and mode.__name__ == "directory":
        assert code == 2 and "directory" in err  # nowhere to write the page
        return
    assert code == 0, err
    text = check_page(os.path.join(run, "report.html"))
    notes = error_notes(text)
    read = name in READ or name.endswith(".png")
    if mode.__name__ in NOTED and name != "report.html":
        if read:
            assert any(name in note for note in notes), (name, notes)
        else:
            assert f"<td>{name}</td><td>{KIND_SHOWN[mode.__name__]}" in text
    if mode.__name__ in ("truncate", "empty", "garbage") and name == "model.npz":
        assert any("model.npz" in note for note in notes), notes
    if mode.__name__ in ("garbage", "empty") and name in READ[:3]:
        assert any(name in note for note in notes), notes


def test_a_symlinked_png_or_json_is_not_embedded(runs, tmp_path, capsys):
    run = str(tmp_path / "run")
    shutil.copytree(runs["cls"], run, symlinks=True)
    outside_png = tmp_path / "outside.png"
    shutil.copy(os.path.join(run, "loss_curve.png"), outside_png)
    with open(outside_png, "ab") as f:
        f.write(SECRET.encode())  # still a PNG signature, with the secret inside
    os.symlink(outside_png, os.path.join(run, "stolen.png"))
    os.symlink(runs["secret"], os.path.join(run, "stolen.json"))
    os.symlink(os.path.join(runs["base"]), os.path.join(run, "up.json"))
    assert run_cli(["inspect", run], capsys)[0] == 0
    text = check_page(os.path.join(run, "report.html"))
    import base64
    assert base64.b64encode(outside_png.read_bytes()).decode() not in text
    notes = " ".join(error_notes(text))
    assert "stolen.png" in notes and "stolen.json" in notes and "symlink" in notes


@pytest.mark.parametrize("planted", ["report.html", "report.html.tmp", ".report.html.tmp"])
def test_a_symlink_planted_at_the_page_is_replaced_not_written_through(planted, runs,
                                                                       tmp_path, capsys):
    run = str(tmp_path / "run")
    shutil.copytree(runs["cls"], run, symlinks=True)
    target = tmp_path / "victim.txt"
    target.write_text("keep me")
    path = os.path.join(run, planted)
    if os.path.lexists(path):
        os.remove(path)
    os.symlink(target, path)
    assert run_cli(["inspect", run], capsys)[0] == 0
    assert target.read_text() == "keep me"
    check_page(os.path.join(run, "report.html"))


@pytest.mark.parametrize("make", ["missing", "file", "fifo", "dangling"])
def test_a_run_that_is_not_a_folder_is_one_line(make, tmp_path, capsys):
    run = str(tmp_path / "run")
    if make == "file":
        _write(run, b"{}")
    elif make == "fifo":
        os.mkfifo(run)
    elif make == "dangling":
        os.symlink("/nonexistent/run", run)
    code, err = run_cli(["inspect", run], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("out", ["dir", "missing-parent-file"])
def test_out_that_cannot_be_written_is_one_line(out, runs, tmp_path, capsys):
    target = tmp_path / "out"
    if out == "dir":
        target.mkdir()
        path = str(target)
    else:
        target.write_text("x")
        path = str(target / "report.html")  # a file where the folder should be
    code, err = run_cli(["inspect", runs["cls"], "--out", path], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1


def test_files_over_the_caps_are_noted_not_read(runs, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(report, "MAX_JSON_BYTES", 1000)
    monkeypatch.setattr(report, "MAX_PNG_BYTES", 1000)
    run = str(tmp_path / "run")
    shutil.copytree(runs["lm"], run, symlinks=True)
    assert run_cli(["inspect", run], capsys)[0] == 0
    notes = " ".join(error_notes(check_page(os.path.join(run, "report.html"))))
    for name in ("log.json", "recorder.json", "loss_curve.png"):
        assert name in notes and "at most 1,000" in notes


def test_too_many_figures_are_capped(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(report, "MAX_FIGURES", 5)
    history = [{"step": s, **{f"metric_{k}": float(s * k) for k in range(300)}}
               for s in range(1, 4)]
    (tmp_path / "log.json").write_text(json.dumps({"history": history}))
    assert run_cli(["inspect", str(tmp_path)], capsys)[0] == 0
    text = check_page(str(tmp_path / "report.html"))
    assert text.count("<img") == 5
    assert any("more figures were not drawn" in n for n in error_notes(text))


def test_a_recorder_with_too_many_parameters_is_capped(tmp_path, capsys):
    n = 3
    series = {k: [0.1] * n for k in ("grad_norm", "grad_mean_abs", "grad_max_abs",
                                      "param_norm", "update_ratio")}
    record = {"every": 1, "steps": [1, 2, 3], "parameters": {f"p{i}": series for i in range(300)},
              "activations": {}, "histograms": []}
    (tmp_path / "recorder.json").write_text(json.dumps(record))
    assert run_cli(["inspect", str(tmp_path)], capsys)[0] == 0
    text = check_page(str(tmp_path / "report.html"))
    assert any("only the first 200 of 300" in n for n in error_notes(text))


# --- malformed JSON content, file by file --------------------------------------------------------
WRONG = ["text", 7, None, [], {}, [[[]]], -1e308, True]
#: The wrong values tried where each case runs several commands.
FEW_WRONG = ["text", None, [], {}, 7]


def _json_cases():
    """(kind, name, label, new text) variants of the real runs' JSON files, made from
    their content: each top-level key dropped or given a value of each wrong type,
    non-JSON, deep nesting, NaN and huge numbers, non-UTF-8."""
    cases = []
    fixed = [("not-json", '{"history": [1, 2'), ("deep", "[" * 100_000 + "]" * 100_000),
             ("deep-dict", '{"a":' * 5000 + "1" + "}" * 5000),
             ("nan", '{"history": [{"step": NaN, "loss": Infinity}], "config": '
                     '{"lr": -Infinity}, "steps": [NaN], "parameters": {"w": NaN}}'),
             ("huge-int", '{"history": [{"step": 1, "loss": 1' + "0" * 4000 + "}]}"),
             ("too-long-int", '{"history": [{"step": 1, "loss": 1' + "0" * 5000 + "}]}"),
             ("huge-float", '{"history": [{"step": 1e999, "loss": 1e400}, {"step": 2}]}'),
             ("top-list", "[1, 2, 3]"), ("top-string", '"hello"'), ("top-null", "null"),
             ("records-not-dicts", '{"history": [1, "a", null, [], {"step": "x", '
                                   '"loss": "y"}, {"step": 3, "loss": 0.5}]}'),
             ("bad-surrogate", '{"history": [{"step": 1, "sample": "\\ud800"}], '
                               '"config": {"\\udfff": 1}}'),
             ("histograms", '{"steps": [1], "parameters": {}, "histograms": [1, {"kind": '
                            '"gradient", "name": "w", "step": 1, "counts": [1, 2], "edges": '
                            '[0]}, {"kind": "activation", "name": 5, "step": "x", "counts": '
                            '"a", "edges": null}]}')]
    for name in ("log.json", "recorder.json", "metrics.json"):
        for label, text in fixed:
            cases.append((name, label, text))
    cases.append(("log.json", "not-utf8", b"\xff\xfe{\x00}"))
    return cases


def _structure_variants(data):
    """Each top-level key dropped, and set to each wrong value."""
    if not isinstance(data, dict):
        return
    for key in data:
        yield f"drop-{key}", {k: v for k, v in data.items() if k != key}
        for i, wrong in enumerate(WRONG):
            yield f"{key}={i}", {**data, key: wrong}
    nested = {k: v for k, v in data.items() if isinstance(v, dict)}
    for key, inner in nested.items():  # one level down: the series of a recorder, ...
        for sub in list(inner)[:2]:
            for i, wrong in enumerate(FEW_WRONG[:3]):
                yield f"{key}.{sub}={i}", {**data, key: {**inner, sub: wrong}}


def _inspect_single(tmp_path, name, content, capsys):
    """inspect a folder that holds only ``name`` with ``content``; the page's text."""
    folder = tmp_path / "run"
    folder.mkdir(exist_ok=True)
    path = folder / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8",
                                                                               "surrogatepass"))
    assert run_cli(["inspect", str(folder)], capsys)[0] == 0
    return check_page(str(folder / "report.html"))


@pytest.mark.parametrize("name, label, text", _json_cases(),
                         ids=[f"{n}-{label}" for n, label, _ in _json_cases()])
def test_inspect_malformed_json(name, label, text, tmp_path, capsys):
    page = _inspect_single(tmp_path, name, text, capsys)
    if label in ("not-json", "deep", "deep-dict", "too-long-int", "not-utf8"):
        assert any(name in note for note in error_notes(page)), error_notes(page)


@pytest.mark.parametrize("kind, name", [("lm", "log.json"), ("lm", "recorder.json"),
                                        ("cls", "log.json"), ("cls", "metrics.json")])
def test_inspect_every_wrong_type_and_missing_key(kind, name, runs, tmp_path, capsys,
                                                  monkeypatch):
    monkeypatch.setattr(report, "MAX_FIGURES", 1)  # the drawing is tested elsewhere
    data = json.load(open(os.path.join(runs[kind], name)))
    variants = list(_structure_variants(data))
    assert len(variants) >= 10
    for label, variant in variants:
        page = _inspect_single(tmp_path, name, json.dumps(variant), capsys)
        assert "<h1>" in page, label


# --- any JSON at all ---------------------------------------------------------------------------
JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-10**30, 10**30) |
    st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=5) |
    st.dictionaries(st.sampled_from(["step", "epoch", "loss", "val_loss", "acc", "lr", "names",
                                     "history", "config", "steps", "parameters", "activations",
                                     "histograms", "counts", "edges", "kind", "name", "mean",
                                     "grad_norm", "sample", "x"]) | st.text(max_size=4),
                    inner, max_size=6),
    max_leaves=30)


@pytest.mark.parametrize("name", ["log.json", "metrics.json", "recorder.json", "other.json"])
@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=JSON)
def test_inspect_any_json(name, data, tmp_path, monkeypatch):
    monkeypatch.setattr(report, "MAX_FIGURES", 2)
    folder = tmp_path / "any"
    folder.mkdir(exist_ok=True)
    (folder / name).write_text(json.dumps(data, allow_nan=True))
    with time_limit():
        text = report.build_report(str(folder))
    checker = HTMLCheck()
    checker.feed(text)
    assert not checker.errors
    text.encode("utf-8")  # the page can be written


# --- every command that reads a run folder --------------------------------------------------------
def _commands(kind, run):
    """The commands that read run ``run`` of kind ``kind``, and those given the wrong kind."""
    return {"lm": [["sample", run, "--tokens", "3"], ["eval", run], ["sample", run, "--last"],
                   ["train", "--resume", run], ["classify", "--eval", run]],
            "cls": [["classify", "--eval", run], ["classify", "--eval", run, "--last"],
                    ["classify", "--resume", run], ["sample", run], ["eval", run]]}[kind]


@pytest.mark.parametrize("kind, name, mode", [
    *_cases(["lm"], ["model.npz", "best.npz", "log.json", "vocab.json", "hierarchy.json"]),
    *_cases(["cls"], ["model.npz", "best.npz", "log.json", "metrics.json"])])
def test_commands_on_a_corrupted_file(runs, kind, name, mode, tmp_path, capsys):
    run = corrupt_copy(runs, kind, name, mode, tmp_path)
    secret_before = open(runs["secret"]).read()
    for argv in _commands(kind, run):
        run_cli(argv, capsys)
    assert open(runs["secret"]).read() == secret_before


def _rewrite_meta(path, change):
    """Rewrite checkpoint ``path`` with ``change(header)`` applied to its JSON header."""
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    header = json.loads(str(arrays["__tinyar__"]))
    header = change(header)
    arrays["__tinyar__"] = np.array(json.dumps(header, allow_nan=True))
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def _meta_cases():
    keys = {"lm": ["kind", "config", "model", "tokenizer", "hierarchy", "progress", "history"],
            "cls": ["kind", "config", "hierarchy", "progress", "history", "image_shape"]}
    for kind, names in keys.items():
        for key in names:
            yield pytest.param(kind, key, "drop", id=f"{kind}-{key}-drop")
            for i in range(len(FEW_WRONG)):
                yield pytest.param(kind, key, i, id=f"{kind}-{key}-{FEW_WRONG[i]!r}")
        for label in ("meta-null", "meta-list", "header-list", "format-2", "deep"):
            yield pytest.param(kind, None, label, id=f"{kind}-{label}")


def _change(key, how):
    def change(header):
        if how == "meta-null":
            header["meta"] = None
        elif how == "meta-list":
            header["meta"] = [1, 2]
        elif how == "header-list":
            return [header]
        elif how == "format-2":
            header["format"] = 2
        elif how == "deep":
            header["meta"]["deep"] = json.loads("[" * 900 + "]" * 900)
        elif how == "drop":
            header["meta"].pop(key, None)
        else:
            header["meta"][key] = FEW_WRONG[how]
        return header
    return change


@pytest.mark.parametrize("kind, key, how", list(_meta_cases()))
def test_commands_on_checkpoint_metadata_of_the_wrong_shape(runs, kind, key, how, tmp_path,
                                                            capsys, monkeypatch):
    monkeypatch.setattr(report, "MAX_FIGURES", 1)
    run = str(tmp_path / kind)
    shutil.copytree(runs[kind], run, symlinks=True)
    for name in ("model.npz", "best.npz"):
        _rewrite_meta(os.path.join(run, name), _change(key, how))
    for argv in _commands(kind, run) + [["inspect", run]]:
        run_cli(argv, capsys)


@pytest.mark.parametrize("source, target", [("lm", "cls"), ("cls", "lm")])
def test_a_run_of_the_other_kind(runs, source, target, tmp_path, capsys):
    """An LM checkpoint in a classifier's folder and the other way round: the commands of
    the folder's own kind refuse it in one line."""
    run = str(tmp_path / "run")
    shutil.copytree(runs[target], run, symlinks=True)
    for name in ("model.npz", "best.npz"):
        shutil.copy(os.path.join(runs[source], name), os.path.join(run, name))
    own = ("classify",) if target == "cls" else ("sample", "eval", "train")
    for argv in _commands(target, run) + [["inspect", run]]:
        code, _ = run_cli(argv, capsys)
        if argv[0] in own:
            assert code == 2, argv
