"""The tutorials run top to bottom and save the figures they promise.

Each tutorial ``tutorials/NN_name.py`` declares ``FIGURES = [...]``, the PNG
files it writes. Every one runs here in a fresh Python process in its fast mode
(``TINYAR_TUTORIAL_FAST=1``: a few training steps, so the numbers it prints
mean nothing), with the figure folder set to a temporary directory and a
working directory of its own, so that none relies on being started from the
repository root or writes anywhere else.
"""
import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TUTORIAL_DIR = ROOT / "tutorials"
TUTORIALS = sorted(TUTORIAL_DIR.glob("[0-9][0-9]_*.py"))
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def declared_figures(path):
    """The literal list assigned to ``FIGURES`` at the top level of a tutorial, or None."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
                isinstance(target, ast.Name) and target.id == "FIGURES" for target in node.targets):
            return ast.literal_eval(node.value)
    return None


def percent_cells(path):
    """The jupytext "percent" cells of a script: a list of (kind, lines), kind 'code' or
    'markdown'. Lines before the first ``# %%`` marker (the jupytext header) are left out."""
    cells = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("# %%"):
            cells.append(("markdown" if "[markdown]" in line else "code", []))
        elif cells:
            cells[-1][1].append(line)
    return cells


def run_tutorial(path, out, cwd):
    env = dict(os.environ, TINYAR_TUTORIAL_FAST="1", TINYAR_TUTORIAL_OUT=str(out),
               MPLBACKEND="Agg", PYTHONIOENCODING="utf-8")
    return subprocess.run([sys.executable, str(path)], cwd=cwd, env=env,
                          capture_output=True, text=True, encoding="utf-8", errors="replace",
                          timeout=600)


def test_the_tutorials_are_found():
    assert len(TUTORIALS) >= 5, [p.name for p in TUTORIALS]


@pytest.mark.parametrize("path", TUTORIALS, ids=lambda p: p.stem)
def test_tutorial_is_a_percent_script_that_declares_its_figures(path):
    figures = declared_figures(path)
    number = path.name[:2]
    assert isinstance(figures, list) and figures, f"{path.name}: no FIGURES = [...] list"
    assert len(set(figures)) == len(figures), f"{path.name}: a figure is listed twice"
    for name in figures:
        assert isinstance(name, str) and name.startswith(f"{number}_") and name.endswith(".png"), \
            f"{path.name}: figure {name!r} should be named '{number}_*.png'"

    cells = percent_cells(path)
    kinds = [kind for kind, _ in cells]
    assert kinds and kinds[0] == "markdown", f"{path.name}: should open with a markdown cell"
    assert "code" in kinds and kinds.count("markdown") >= 3, f"{path.name}: {kinds}"
    title = next(line for line in cells[0][1] if line.strip())
    assert title.startswith(f"# # {number} "), f"{path.name}: first line of text is {title!r}"
    for kind, lines in cells:
        if kind == "markdown":
            bad = [line for line in lines if line and not (line == "#" or line.startswith("# "))]
            assert not bad, f"{path.name}: markdown lines must start with '# ': {bad[:3]}"


@pytest.mark.parametrize("path", TUTORIALS, ids=lambda p: p.stem)
def test_tutorial_runs_and_saves_its_figures(path, tmp_path):
    out, cwd = tmp_path / "figures", tmp_path / "cwd"
    cwd.mkdir()
    proc = run_tutorial(path, out, cwd)
    assert proc.returncode == 0, (f"{path.name} exited with {proc.returncode}\n"
                                  f"--- stdout (end) ---\n{proc.stdout[-3000:]}\n"
                                  f"--- stderr (end) ---\n{proc.stderr[-3000:]}")
    figures = declared_figures(path)
    written = sorted(p.name for p in out.glob("*")) if out.exists() else []
    assert written == sorted(figures), f"{path.name}: declared {figures}, wrote {written}"
    for name in figures:
        data = (out / name).read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 5000, f"{path.name}: {name} is not a real PNG"
    assert not any(cwd.iterdir()), f"{path.name} wrote into the working directory: " \
                                   f"{[p.name for p in cwd.iterdir()]}"


def test_figure_folder_comes_from_out_then_environment(tmp_path):
    script = "import _common; print(_common.FIGURE_DIR); print(_common.FAST)"
    env = dict(os.environ, TINYAR_TUTORIAL_OUT=str(tmp_path / "from_env"),
               TINYAR_TUTORIAL_FAST="1")

    def folder(*args, environment):
        proc = subprocess.run([sys.executable, "-c", script, *args], cwd=TUTORIAL_DIR,
                              env=environment, capture_output=True, text=True, check=True)
        return proc.stdout.split()

    assert folder("--out", str(tmp_path / "from_arg"), environment=env) == \
        [str(tmp_path / "from_arg"), "True"]
    assert folder(environment=env) == [str(tmp_path / "from_env"), "True"]
    plain = {k: v for k, v in env.items() if not k.startswith("TINYAR_TUTORIAL")}
    assert folder(environment=plain) == [str(TUTORIAL_DIR / "figures"), "False"]


def test_the_index_lists_every_tutorial():
    index = (TUTORIAL_DIR / "README.md").read_text(encoding="utf-8")
    missing = [p.name for p in TUTORIALS if p.name not in index]
    assert not missing, f"tutorials/README.md does not list {missing}"
