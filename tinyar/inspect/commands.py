"""The ``tinyar gradcheck`` and ``tinyar inspect`` commands.

    tinyar gradcheck LSTM            one layer, built tiny, random float64 inputs
    tinyar gradcheck mlp lm          small models
    tinyar gradcheck all             everything in the list (``--list`` prints it)
    tinyar inspect runs/lm-...       writes runs/lm-.../report.html

``add_commands(subparsers)`` registers both on an argparse sub-parser set;
``run_gradcheck`` and ``run_inspect`` do the work and return an exit code.
"""
import importlib
import sys

import numpy as np

from ..nn.module import Module

# --- what gradcheck can build ---------------------------------------------------------------


def _away_from_zero(rng, shape, margin=0.1):
    """Standard normal values kept at least ``margin`` from 0 (where ReLU has a kink)."""
    x = rng.standard_normal(shape)
    return np.sign(x) * (np.abs(x) + margin)


def _find(name):
    """A layer class by name from tinyar.nn or the files layers may live in (None: absent)."""
    for module_name in ("tinyar.nn", "tinyar.nn.conv", "tinyar.nn.pooling",
                        "tinyar.nn.normalization2d", "tinyar.nn.recurrent", "tinyar.nn.rnn_cells"):
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        if hasattr(module, name):
            return getattr(module, name)
    return None


def _hierarchy(labels=12, classes=4, seed=0):
    from ..nn.hierarchy import ClassHierarchy
    counts = np.random.default_rng(seed).integers(1, 100, labels)
    return ClassHierarchy.from_counts(counts, classes)


class LanguageModelLoss(Module):
    """An ``AutoregressiveLM`` seen as a loss of (ids, targets): gradcheck's view of it
    (the model's own forward also returns the recurrent state)."""

    def __init__(self, lm):
        super().__init__()
        self.lm = lm

    def extra_repr(self):
        return self.lm.extra_repr()

    def forward(self, ids, targets):
        return self.lm.loss(ids, targets)[0]

    def backward(self, grad=1.0):
        self.lm.backward(grad)


def _layer_cases():
    """name -> builder(rng) returning (module, inputs); layers of tinyar.nn at tiny sizes."""
    C = {}

    def add(name, build):
        C[name] = build

    add("Linear", lambda r: (_find("Linear")(4, 3), (r.standard_normal((2, 4)),)))
    for act in ("ReLU", "LeakyReLU", "Tanh", "Sigmoid", "GELU"):
        add(act, lambda r, a=act: (_find(a)(), (_away_from_zero(r, (3, 4)),)))
    add("Softmax", lambda r: (_find("Softmax")(), (r.standard_normal((3, 5)),)))
    add("LogSoftmax", lambda r: (_find("LogSoftmax")(), (r.standard_normal((3, 5)),)))
    add("LayerNorm", lambda r: (_find("LayerNorm")(5), (r.standard_normal((3, 5)),)))
    add("BatchNorm1d", lambda r: (_find("BatchNorm1d")(4), (r.standard_normal((6, 4)),)))
    add("Embedding", lambda r: (_find("Embedding")(7, 3), (r.integers(0, 7, (2, 4)),)))
    add("Dropout", lambda r: (_find("Dropout")(0.3), (r.standard_normal((3, 4)),)))
    add("Flatten", lambda r: (_find("Flatten")(), (r.standard_normal((2, 3, 2)),)))
    add("CrossEntropyLoss", lambda r: (_find("CrossEntropyLoss")(),
                                       (r.standard_normal((4, 5)), r.integers(0, 5, 4))))
    add("NLLLoss", lambda r: (_find("NLLLoss")(), (r.standard_normal((4, 5)), r.integers(0, 5, 4))))
    add("MSELoss", lambda r: (_find("MSELoss")(), (r.standard_normal((3, 4)),
                                                   r.standard_normal((3, 4)))))
    add("BCEWithLogitsLoss", lambda r: (_find("BCEWithLogitsLoss")(),
                                        (r.standard_normal((3, 4)), r.random((3, 4)))))
    add("MultiLevelSoftmax", lambda r: (_find("MultiLevelSoftmax")(5, _hierarchy()),
                                        (r.standard_normal((6, 5)), r.integers(0, 12, 6))))
    for rnn in ("RNN", "LSTM", "GRU"):
        add(rnn, lambda r, k=rnn: (_find(k)(3, 4, num_layers=2), (r.standard_normal((2, 5, 3)),)))
    # a nonzero initial state, so that the W_hh gradients are tested too
    add("RNNCell", lambda r: (_find("RNNCell")(3, 4), (r.standard_normal((2, 3)),
                                                       r.standard_normal((2, 4)))))
    add("GRUCell", lambda r: (_find("GRUCell")(3, 4), (r.standard_normal((2, 3)),
                                                       r.standard_normal((2, 4)))))
    add("LSTMCell", lambda r: (_find("LSTMCell")(3, 4), (r.standard_normal((2, 3)), (
        r.standard_normal((2, 4)), r.standard_normal((2, 4))))))
    # layers other files may provide; skipped when absent
    add("Conv2d", lambda r: (_find("Conv2d")(2, 3, 3, padding=1),
                             (r.standard_normal((2, 2, 5, 5)),)))
    add("Conv1d", lambda r: (_find("Conv1d")(2, 3, 3, padding=1), (r.standard_normal((2, 2, 6)),)))
    add("MaxPool2d", lambda r: (_find("MaxPool2d")(2), (r.standard_normal((2, 2, 4, 4)),)))
    add("MaxPool1d", lambda r: (_find("MaxPool1d")(2), (r.standard_normal((2, 2, 6)),)))
    add("AvgPool2d", lambda r: (_find("AvgPool2d")(2), (r.standard_normal((2, 2, 4, 4)),)))
    add("AdaptiveAvgPool2d", lambda r: (_find("AdaptiveAvgPool2d")(1),
                                        (r.standard_normal((2, 2, 3, 3)),)))
    add("BatchNorm2d", lambda r: (_find("BatchNorm2d")(2), (r.standard_normal((3, 2, 3, 3)),)))
    add("Dropout2d", lambda r: (_find("Dropout2d")(0.3), (r.standard_normal((2, 3, 3, 3)),)))
    return C


def _mlp(r):
    nn = importlib.import_module("tinyar.nn")
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3))
    return model, (r.standard_normal((5, 4)),)


def _lm(r):
    from ..models import AutoregressiveLM
    lm = AutoregressiveLM(9, embed_dim=3, hidden_size=4, num_layers=1, cell="lstm",
                          head="multilevel", hierarchy=_hierarchy(9, 3))
    ids = r.integers(0, 9, (2, 4))
    return LanguageModelLoss(lm), (ids, r.integers(0, 9, (2, 4)))


def gradcheck_cases():
    """Every name ``tinyar gradcheck`` accepts -> builder(rng) -> (module, inputs)."""
    cases = _layer_cases()
    cases["mlp"] = _mlp
    cases["lm"] = _lm
    return cases


#: Cases whose layer another part of tinyar may or may not provide yet.
_OPTIONAL = ("Conv2d", "Conv1d", "MaxPool2d", "MaxPool1d", "AvgPool2d", "AdaptiveAvgPool2d",
             "BatchNorm2d", "Dropout2d")


def _resolve(names, cases):
    """Case-insensitive names -> canonical ones; 'all' -> every available case."""
    lower = {k.lower(): k for k in cases}
    out, unknown = [], []
    for name in names:
        if name.lower() == "all":
            out += [k for k in cases if k not in _OPTIONAL or _find(k) is not None]
        elif name.lower() in lower:
            out.append(lower[name.lower()])
        else:
            unknown.append(name)
    return list(dict.fromkeys(out)), unknown


def run_gradcheck(names, tol=1e-6, seed=0, out=None, err=None):
    """Check each named layer/model; print the reports; 0 if all pass, 1 if any fails,
    2 for an unknown or unavailable name. ``tol`` and ``seed`` are checked first
    (``ConfigError``)."""
    from ..train.config import GradcheckOptions
    from .gradcheck import gradcheck
    options = GradcheckOptions(tol=tol, seed=seed).validate()
    tol, seed = options.tol, options.seed
    out, err = out or sys.stdout, err or sys.stderr
    cases = gradcheck_cases()
    chosen, unknown = _resolve(names, cases)
    if unknown:
        print(f"tinyar gradcheck: unknown {', '.join(_show(n) for n in unknown)}; choose from "
              f"{', '.join(cases)} or all", file=err)
        return 2
    failed, missing = [], []
    for name in chosen:
        if name in _OPTIONAL and _find(name) is None:
            missing.append(name)
            continue
        module, inputs = cases[name](np.random.default_rng(seed))
        report = gradcheck(module, *inputs, tol=tol, seed=seed)
        if not report.title.startswith(name + "("):
            report.title = f"{name}: {report.title}"
        print(report, file=out)
        print(file=out)
        if not report.rows or not report.ok():
            failed.append(name)
    if missing:
        print(f"tinyar gradcheck: {', '.join(missing)} not available in this tinyar", file=err)
    checked = len(chosen) - len(missing)
    print(f"{checked - len(failed)} of {checked} passed" +
          (f"; FAILED: {', '.join(failed)}" if failed else ""), file=out)
    if failed:
        return 1
    return 2 if missing else 0


def _show(name):
    from ..train.config import show
    return show(name, limit=40)


def run_inspect(run, out=None, stdout=None, prompt=None):
    """Write the HTML report of a run folder; print and return 0 (errors raise TinyarError).
    ``prompt``: the text whose attention maps a transformer's page shows."""
    from .report import write_report
    path = write_report(run, out, prompt)
    print(path, file=stdout or sys.stdout)
    return 0


# --- argparse ---------------------------------------------------------------------------------
def _gradcheck_command(args):
    from ..train.config import GradcheckOptions, given_options
    given = given_options(args, GradcheckOptions)
    options = GradcheckOptions(**given).validate(given)
    if args.list:
        print("\n".join(gradcheck_cases()))
        return 0
    if not args.targets:
        print("tinyar gradcheck: name a layer (e.g. LSTM), mlp, lm or all; --list shows them",
              file=sys.stderr)
        raise SystemExit(2)
    from ..backend import get_backend
    get_backend("cpu")  # a wrong TINYAR_BLAS is reported now, before any check runs
    code = run_gradcheck(args.targets, tol=options.tol, seed=options.seed)
    if code:  # the exit status is the verdict, whatever the caller does with a return value
        raise SystemExit(code)
    return 0


def _inspect_options():
    """``tinyar inspect``'s options (RUN, --out, --prompt), declared like every other
    command's."""
    from ..train.config import Option
    run = Option(help="run folder (of tinyar train, tinyar classify, ...)", kind=str,
                 flag="run", metavar="RUN")
    out = Option(help="where to write the page (default: RUN/report.html)", kind=str,
                 metavar="FILE")
    prompt = Option(help="text whose attention maps a transformer's page shows (default: the "
                         "run's --prompt, else its first sample)", kind=str, metavar="TEXT")
    return run, out, prompt


def _inspect_command(args):
    from ..train.config import read_argument
    run_opt, out_opt, prompt_opt = _inspect_options()
    return run_inspect(read_argument(args, "run", run_opt), read_argument(args, "out", out_opt),
                       prompt=read_argument(args, "prompt", prompt_opt))


def add_commands(subparsers):
    """Register ``gradcheck`` and ``inspect`` on an ``argparse`` sub-parser set."""
    from ..train.config import GradcheckOptions, add_argument, add_arguments
    g = subparsers.add_parser(
        "gradcheck", help="check layers' backward against central differences",
        description="Build each named layer (or the small 'mlp' / 'lm' model) at a tiny size "
                    "and compare its hand-written backward with float64 central differences. "
                    "Exits 1 if any check fails.")
    g.add_argument("targets", nargs="*", metavar="MODEL_OR_LAYER",
                   help="layer names (Linear, LSTM, ...), mlp, lm, or all")
    add_arguments(g, GradcheckOptions)
    g.add_argument("--list", action="store_true", help="list the names and exit")
    g.set_defaults(func=_gradcheck_command)

    i = subparsers.add_parser(
        "inspect", help="write an HTML report of a run folder",
        description="Read a run folder (log.json, metrics.json, recorder.json, model.npz, "
                    "PNGs) and write a self-contained RUN/report.html. Only regular files "
                    "inside the folder are read (symlinks, FIFOs and folders are listed, "
                    "not followed).")
    run_opt, out_opt, prompt_opt = _inspect_options()
    add_argument(i, "run", run_opt)
    add_argument(i, "out", out_opt)
    add_argument(i, "prompt", prompt_opt)
    i.set_defaults(func=_inspect_command)
    return subparsers
