"""What every tutorial shares: where figures go, the fast mode, a timer.

    from _common import FAST, figure_path, pick, savefig

* ``FAST``: True when the environment variable ``TINYAR_TUTORIAL_FAST=1`` is
  set. The tutorials then train for a few steps only, so that the test suite
  can run all of them in about a minute; the numbers they print are then not
  meaningful. Without it they train for real (each in under 3 minutes on a
  2-core CPU).
* Figures are written as PNG files into, in order of preference: the folder
  given on the command line as ``--out DIR``, the folder in the environment
  variable ``TINYAR_TUTORIAL_OUT``, or ``tutorials/figures/``.

Opened as a notebook (jupytext, VS Code), the tutorials import this file from
the notebook's folder, ``tutorials/``.
"""
import argparse
import importlib.util
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

# A fresh clone that was not `pip install`ed: import tinyar from the checkout.
if importlib.util.find_spec("tinyar") is None:
    sys.path.insert(0, str(HERE.parent))

FAST = os.environ.get("TINYAR_TUTORIAL_FAST", "") not in ("", "0")


def _figure_dir():
    # parse_known_args: a Jupyter kernel passes arguments of its own (-f ...)
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--out", default=None)
    args, _ = parser.parse_known_args()
    folder = args.out or os.environ.get("TINYAR_TUTORIAL_OUT") or HERE / "figures"
    return Path(folder)


FIGURE_DIR = _figure_dir()


def pick(default, fast):
    """``default`` normally, ``fast`` in the fast mode (TINYAR_TUTORIAL_FAST=1)."""
    return fast if FAST else default


def figure_path(name):
    """Where the figure ``name`` (e.g. ``"01_loss_curve.png"``) is written; makes the folder."""
    FIGURE_DIR.mkdir(parents=True, exist_ok=True)
    return str(FIGURE_DIR / name)


def savefig(fig, name):
    """Save a matplotlib ``Figure`` as ``name`` in the figure folder, then ``show`` it."""
    path = figure_path(name)
    fig.savefig(path, dpi=100)
    show(path)


def in_notebook():
    """True inside a Jupyter kernel (a notebook, VS Code's interactive window)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and "IPKernelApp" in shell.config


def show(path):
    """Report a saved PNG: print where it is, and in a notebook also show it inline."""
    print(f"saved {path}")
    if in_notebook():
        from IPython.display import Image, display
        display(Image(filename=str(path)))


def new_figure(width=6.0, height=4.0, **kwargs):
    """A matplotlib ``Figure`` made without pyplot: no display needed, works in CI.

    ``savefig`` writes it to a PNG file and, in a notebook, shows it.
    """
    from matplotlib.figure import Figure
    return Figure(figsize=(width, height), layout="constrained", **kwargs)


def median_time(fn, repeats=7, warmup=1):
    """Median wall-clock seconds of ``fn()`` over ``repeats`` calls, after ``warmup`` calls.

    The warm-up calls absorb one-time costs (a Numba kernel compiles on its
    first call; caches and memory pages are touched); the median ignores the
    odd slow call caused by something else running on the machine.
    """
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)
