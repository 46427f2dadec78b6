"""``tinyar demo``: a small MLP learns the spiral, end to end in a few seconds.

Read top to bottom, this is a whole training loop with no magic:
forward, loss, backward, optimizer step; then a plot of what was learned.
"""
import os
import time

import numpy as np

from . import fileio, nn, save
from .data.spiral import make_spiral
from .errors import ConfigError
from .inspect.plots import plot_curves, plot_decision_boundary
from .nn.loss import CrossEntropyLoss
from .optim import Adam
from .random import manual_seed
from .progress import ProgressBar


def build_mlp(hidden=64, num_classes=3):
    return nn.Sequential(nn.Linear(2, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                         nn.Linear(hidden, num_classes))


def _check_count(name, value, low, high):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or \
            not low <= value <= high:
        raise ConfigError(f"run_demo: {name}: expected an integer in [{low}, {high}], "
                          f"got {value!r}")


def run_demo(out="runs/demo", steps=1500, hidden=64, lr=0.01, seed=0, num_classes=3,
             points_per_class=200, quiet=False):
    """Train, report, save ``model.npz``, ``loss_curve.png``, ``decision_boundary.png``
    and ``log.json`` into ``out``; returns the log (a dict). The options are checked
    before anything runs (``ConfigError``); every file is written atomically."""
    from .train.config import DemoOptions
    options = DemoOptions(out=out, steps=steps, hidden=hidden, lr=lr, seed=seed).validate()
    out, steps, hidden, lr, seed = (options.out, options.steps, options.hidden, options.lr,
                                    options.seed)
    _check_count("num_classes", num_classes, 2, 100)
    _check_count("points_per_class", points_per_class, 1, 10**6)
    if os.path.exists(out) and not os.path.isdir(out):
        raise ConfigError(f"--out: expected a folder, got the file {out!r}")
    manual_seed(seed)
    X, y = make_spiral(points_per_class, num_classes, seed=seed)
    model = build_mlp(hidden, num_classes)
    criterion = CrossEntropyLoss()
    optimizer = Adam(model.parameters(), lr=lr)

    losses = []
    start = time.perf_counter()
    with ProgressBar(steps, "demo", unit="step", disable=quiet) as bar:
        for step in range(steps):
            logits = model(X)                      # forward
            loss = criterion(logits, y)            # loss
            model.zero_grad()
            model.backward(criterion.backward(), input_grad=False)   # backward: dL/dlogits, then the chain rule
            optimizer.step()                       # one fused update of every parameter
            losses.append(loss)
            bar.update(1, loss=loss)
    seconds = time.perf_counter() - start

    model.eval()
    accuracy = float((model(X).argmax(axis=1) == y).mean())
    log = {"steps": steps, "hidden": hidden, "lr": lr, "seed": seed, "final_loss": losses[-1],
           "accuracy": accuracy, "train_seconds": seconds,
           "files": {"checkpoint": os.path.join(out, "model.npz"),
                     "loss_curve": os.path.join(out, "loss_curve.png"),
                     "decision_boundary": os.path.join(out, "decision_boundary.png")}}
    save(model, log["files"]["checkpoint"], meta={"kind": "spiral-mlp", "hidden": hidden,
                                                   "num_classes": num_classes})
    plot_curves(log["files"]["loss_curve"], {"train": (np.arange(steps), losses)},
                title="spiral MLP: cross-entropy", logy=True)
    plot_decision_boundary(log["files"]["decision_boundary"],
                           lambda points: model(points).argmax(axis=1), X, y,
                           title=f"decision boundary (accuracy {accuracy:.1%})")
    fileio.write_json(os.path.join(out, "log.json"), log, indent=2)
    if not quiet:
        print(f"final loss {losses[-1]:.4f}, training accuracy {accuracy:.1%} "
              f"({steps} steps in {seconds:.1f} s)")
        print(f"saved {', '.join(log['files'].values())}")
    return log
