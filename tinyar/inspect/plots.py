"""Figures saved as PNG. Built on ``matplotlib.figure.Figure`` directly (no
pyplot), so they render the same on a laptop, a server or in CI without a
display.

Every ``plot_*`` function takes the PNG's path first and returns it; with
``path=None`` it saves nothing and returns the ``Figure`` instead, which a
notebook shows as it is (or ``fig.savefig`` writes anywhere).

A file is written through ``fileio.atomic_write``: to a fresh temporary name,
renamed into place when complete, so an interrupted plot never leaves half a
PNG and a symlink planted at the name is replaced, never written through.
"""
import os

import numpy as np

from .. import fileio


def _figure(width=6.0, height=4.0):
    from matplotlib.figure import Figure
    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _save(fig, path):
    """Write ``fig`` as PNG to ``path`` (a file name or a binary file object) and return
    ``path``; with no path, return the figure."""
    if path is None:
        return fig
    if isinstance(path, (str, os.PathLike)):
        with fileio.atomic_write(path, "wb") as f:
            fig.savefig(f, format="png")
    else:
        fig.savefig(path, format="png")
    return path


def smooth(values, window):
    """Moving average (valid part), to read a noisy loss curve."""
    values = np.asarray(values, dtype=np.float64)
    if window <= 1 or values.size < window:
        return values
    kernel = np.ones(window) / window
    return np.convolve(values, kernel, mode="valid")


def plot_curves(path, curves, xlabel="step", ylabel="loss", title="", logy=False, smoothing=1):
    """Line plot of named curves: ``curves = {"train": (steps, values), ...}``."""
    fig = _figure()
    ax = fig.add_subplot()
    for name, (xs, ys) in curves.items():
        xs, ys = np.asarray(xs), np.asarray(ys)
        ys_s = smooth(ys, smoothing)
        ax.plot(xs[len(xs) - len(ys_s):], ys_s, label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if logy:
        ax.set_yscale("log")
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def plot_decision_boundary(path, predict, X, y, resolution=200, title=""):
    """Colour the plane by ``predict(points) -> labels``; draw the data on top."""
    pad = 0.1 * (X.max(axis=0) - X.min(axis=0))
    lo, hi = X.min(axis=0) - pad, X.max(axis=0) + pad
    gx, gy = np.meshgrid(np.linspace(lo[0], hi[0], resolution), np.linspace(lo[1], hi[1], resolution))
    grid = np.stack([gx.ravel(), gy.ravel()], axis=1).astype(X.dtype)
    labels = np.asarray(predict(grid)).reshape(gx.shape)
    fig = _figure(5.5, 5.0)
    ax = fig.add_subplot()
    num_classes = int(max(labels.max(), y.max())) + 1
    from matplotlib import colormaps
    colors = [colormaps["tab10"](i % 10) for i in range(num_classes)]  # same colour per class
    ax.contourf(gx, gy, labels, levels=np.arange(num_classes + 1) - 0.5, colors=colors, alpha=0.3)
    ax.scatter(X[:, 0], X[:, 1], c=[colors[i] for i in y], s=12, edgecolors="k", linewidths=0.3)
    ax.set_xlim(lo[0], hi[0])
    ax.set_ylim(lo[1], hi[1])
    ax.set_aspect("equal")
    if title:
        ax.set_title(title)
    return _save(fig, path)
