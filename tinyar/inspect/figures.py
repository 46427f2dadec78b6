"""Figures for looking inside training, saved as PNG (matplotlib ``Figure``, no pyplot).

    plot_history             loss / metric curves from a log history
    plot_gradient_flow       mean and max |gradient| per parameter, as bars
    plot_update_ratios       log10 ||dw|| / ||w|| per parameter over training
    plot_activation_stats    mean, std and dead / saturated fractions per module
    plot_histograms          activation or gradient histograms at a few steps (ridges)
    plot_vanishing_gradients ||dL/dh_t|| against the number of steps back

Every function takes ``path`` first: a file name, or a binary file object
(the HTML report draws into memory); it returns ``path``, or with
``path=None`` the ``Figure`` itself (to show in a notebook). The recorder
figures take ``Recorder.to_dict()`` (or the JSON it saved).
"""
import math
import warnings

import numpy as np

from .plots import _figure, _save, smooth

#: Keys of a history record that are not curves.
NOT_CURVES = ("step", "epoch", "seconds", "time", "tokens")


def _is_number(v):
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


def finite(value):
    """``float(value)`` when ``value`` is a finite number, else None (text, bools, None,
    NaN, infinities, and integers too large for a float: a log file may hold anything)."""
    if not _is_number(value):
        return None
    try:
        v = float(value)
    except OverflowError:
        return None
    return v if math.isfinite(v) else None


def _values(series):
    """A list with None (or anything not a finite number) for missing values as a float
    array with NaN."""
    return np.array([np.nan if finite(v) is None else float(v) for v in series],
                    dtype=np.float64)


# --- training curves -----------------------------------------------------------------
def history_x_key(history):
    """The key that numbers the records: "step", else "epoch", else None (the index).
    Only a key that every record has, as a number, counts."""
    for key in ("step", "epoch"):
        if history and all(isinstance(r, dict) and finite(r.get(key)) is not None
                           for r in history):
            return key
    return None


def history_series(history, x_key=None):
    """{key: (xs, ys)} for every numeric key of a list of records (``log.json`` history).

    ``x_key``: the key of the x axis (default: ``history_x_key``; the record
    number when there is none). Records without a key are skipped, so a
    validation loss measured every 100 steps gives a curve of its own points.
    Non-finite values, and records that are not dicts or have no numeric x, are dropped.
    """
    x_key = x_key or history_x_key(history)
    series = {}
    for i, record in enumerate(history):
        if not isinstance(record, dict):
            continue
        x = finite(record.get(x_key)) if x_key else i + 1
        if x is None:
            continue
        for key, value in record.items():
            if key == x_key or key in NOT_CURVES:
                continue
            y = finite(value)
            if y is None:
                continue
            xs, ys = series.setdefault(key, ([], []))
            xs.append(x)
            ys.append(y)
    return series


def group_series(series):
    """Curves that belong on one axes: losses together, accuracies together, others alone.

    Returns [(title, {key: (xs, ys)}), ...] in a stable order.
    """
    groups = {}
    for key, curve in series.items():
        lower = key.lower()
        if "loss" in lower:
            title = "loss"
        elif "acc" in lower:
            title = "accuracy"
        elif lower in ("lr", "learning_rate"):
            title = "learning rate"
        elif "grad_norm" in lower:
            title = "gradient norm"
        else:
            title = key
        groups.setdefault(title, {})[key] = curve
    order = {"loss": 0, "accuracy": 1, "learning rate": 2, "gradient norm": 3}
    return sorted(groups.items(), key=lambda item: (order.get(item[0], 4), item[0]))


def _legend(ax, **kwargs):
    """A legend when some curve has a label matplotlib shows (names from a log file may be
    empty or start with "_", which it hides)."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(**kwargs)


def _smoothing(n):
    return max(1, n // 50)


def plot_series(path, curves, title="", xlabel="step", ylabel="", logy=None):
    """Named curves ``{name: (xs, ys)}`` on one axes; long noisy curves are smoothed
    (the raw curve stays in light colour behind). ``logy`` None: log scale when all
    values are positive and span more than a factor 100."""
    fig = _figure(6.0, 3.6)
    ax = fig.add_subplot()
    all_values = np.concatenate([np.asarray(ys, dtype=np.float64) for _, ys in curves.values()])
    if logy is None:
        positive = all_values[np.isfinite(all_values)]
        logy = positive.size > 0 and positive.min() > 0 and positive.max() / positive.min() > 100
    for i, (name, (xs, ys)) in enumerate(curves.items()):
        xs, ys = np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64)
        color = f"C{i % 10}"
        window = _smoothing(len(ys))
        marker = "o" if len(ys) <= 30 else None
        if window > 1:
            ax.plot(xs, ys, color=color, alpha=0.25, linewidth=0.8)
            ys_s = smooth(ys, window)
            ax.plot(xs[len(xs) - len(ys_s):], ys_s, color=color, label=f"{name} (smoothed)")
        else:
            ax.plot(xs, ys, color=color, marker=marker, markersize=3, label=name)
    ax.set_xlabel(xlabel)
    if ylabel:
        ax.set_ylabel(ylabel)
    if logy:
        ax.set_yscale("log")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    _legend(ax, fontsize=8)
    return _save(fig, path)


def plot_history(path, history, keys=None, x_key=None):
    """The curves of a log history, one panel per group (losses, accuracy, lr, ...).

    ``keys``: only these keys (default: every numeric key).
    """
    x_key = x_key or history_x_key(history) or "record"
    series = history_series(history, None if x_key == "record" else x_key)
    if keys is not None:
        series = {k: v for k, v in series.items() if k in keys}
    groups = group_series(series)
    if not groups:
        raise ValueError("plot_history: the history has no numeric series to plot")
    cols = min(2, len(groups))
    rows = math.ceil(len(groups) / cols)
    fig = _figure(5.0 * cols, 3.2 * rows)
    for i, (title, curves) in enumerate(groups):
        ax = fig.add_subplot(rows, cols, i + 1)
        for j, (name, (xs, ys)) in enumerate(curves.items()):
            ax.plot(xs, ys, color=f"C{j}", label=name, marker="o" if len(ys) <= 30 else None,
                    markersize=3)
        ax.set_title(title)
        ax.set_xlabel(x_key)
        ax.grid(alpha=0.3)
        _legend(ax, fontsize=8)
    return _save(fig, path)


# --- recorder figures ------------------------------------------------------------------
def _step_index(record, step):
    steps = record["steps"]
    if not steps:
        raise ValueError("the recorder has no recorded steps")
    if step is None:
        return len(steps) - 1
    if step not in steps:
        raise ValueError(f"step {step} was not recorded; recorded steps: {steps[:5]}...")
    return steps.index(step)


def gradient_flow(record, step=None):
    """(names, mean |g|, max |g|) per parameter at a recorded step (default: averaged
    over all recorded steps, the classic view of how gradient reaches each layer)."""
    names = list(record["parameters"])
    mean_abs, max_abs = [], []
    for name in names:
        s = record["parameters"][name]
        if step is None:
            with warnings.catch_warnings():  # a parameter with no recorded value: NaN
                warnings.simplefilter("ignore", RuntimeWarning)
                mean_abs.append(np.nanmean(_values(s["grad_mean_abs"])))
                max_abs.append(np.nanmax(_values(s["grad_max_abs"])))
        else:
            i = _step_index(record, step)
            mean_abs.append(_values(s["grad_mean_abs"])[i])
            max_abs.append(_values(s["grad_max_abs"])[i])
    return names, np.array(mean_abs), np.array(max_abs)


def plot_gradient_flow(path, record, step=None, title=""):
    """Bars of max |g| (light) and mean |g| (dark) per parameter, input side on the left.

    Layers whose bars are orders of magnitude below the others learn slowly
    (vanishing); bars that reach far above, unstably (exploding). Log scale.
    """
    names, mean_abs, max_abs = gradient_flow(record, step)
    fig = _figure(max(6.0, 0.35 * len(names) + 2), 4.2)
    ax = fig.add_subplot()
    x = np.arange(len(names))
    floor = 1e-12  # log scale: exact zeros drawn at the floor
    ax.bar(x, np.maximum(max_abs, floor), color="C0", alpha=0.35, label="max |grad|")
    ax.bar(x, np.maximum(mean_abs, floor), color="C0", label="mean |grad|")
    ax.set_yscale("log")
    ax.set_xticks(x, names, rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("|gradient|")
    when = "averaged over recorded steps" if step is None else f"step {step}"
    ax.set_title(title or f"gradient flow ({when})")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_update_ratios(path, record, title="update / weight ratio"):
    """log10 ||w_after - w_before|| / ||w_before|| per parameter over the recorded steps,
    with the rule-of-thumb 1e-3 dashed."""
    fig = _figure(8.0, 4.0)
    ax = fig.add_subplot()
    steps = np.asarray(record["steps"], dtype=np.float64)
    drawn = 0
    for i, (name, s) in enumerate(record["parameters"].items()):
        ratio = _values(s["update_ratio"])
        with np.errstate(divide="ignore", invalid="ignore"):
            logr = np.log10(ratio)
        if np.isfinite(logr).any():
            ax.plot(steps, logr, color=f"C{i % 10}", label=name, linewidth=1)
            drawn += 1
    ax.axhline(-3, color="k", linestyle="--", linewidth=0.8)
    ax.set_xlabel("step")
    ax.set_ylabel("log10 update / weight")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if 0 < drawn <= 24:
        ax.legend(fontsize=6, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return _save(fig, path)


def module_label(name, record):
    """"1 (ReLU)": a recorded module's name with its type, unless the name says it."""
    kind = record.get("activations", {}).get(name, {}).get("type")
    return name if not kind or kind.lower() in name.lower() else f"{name} ({kind})"


def plot_activation_stats(path, record, title="activations"):
    """Per module: mean and std of its output over the recorded steps, and the
    fraction of dead (ReLU) or saturated (tanh, sigmoid) outputs."""
    modules = {k: v for k, v in record["activations"].items() if "mean" in v}
    steps = np.asarray(record["steps"], dtype=np.float64)
    fig = _figure(11.0, 3.6)
    axes = [fig.add_subplot(1, 3, i + 1) for i in range(3)]
    special = False
    for i, (name, s) in enumerate(modules.items()):
        color, label = f"C{i % 10}", module_label(name, record)
        axes[0].plot(steps, _values(s["mean"]), color=color, label=label)
        axes[1].plot(steps, _values(s["std"]), color=color, label=label)
        for key, style in (("dead", "-"), ("saturated", "--")):
            if key in s:
                axes[2].plot(steps, _values(s[key]), color=color, linestyle=style,
                             label=f"{label} {key}")
                special = True
    for ax, sub in zip(axes, ("mean", "std", "dead (-) / saturated (--) fraction")):
        ax.set_title(sub, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    if special:
        axes[2].set_ylim(-0.02, 1.02)
        axes[2].legend(fontsize=7)
    else:
        axes[2].text(0.5, 0.5, "no ReLU / tanh / sigmoid\noutputs recorded", ha="center",
                     va="center", transform=axes[2].transAxes, color="0.4")
    if 0 < len(modules) <= 12:
        axes[0].legend(fontsize=7)
    fig.suptitle(title)
    return _save(fig, path)


def histograms_by_name(record, kind):
    """{name: [(step, counts, edges), ...]} of the recorded histograms of one kind
    ("activation" or "gradient"), steps in order."""
    out = {}
    for h in record.get("histograms", []):
        if h["kind"] == kind and h["counts"]:
            out.setdefault(h["name"], []).append((h["step"], np.asarray(h["counts"], float),
                                                  np.asarray(h["edges"], float)))
    for items in out.values():
        items.sort(key=lambda item: item[0])
    return out


def plot_histograms(path, record, kind="activation", names=None, max_panels=6, title=""):
    """Ridge plots: for each module (or parameter) one panel, one ridge per histogram
    step, the earliest at the bottom; each ridge is scaled to its own peak."""
    hists = histograms_by_name(record, kind)
    if names is not None:
        hists = {k: v for k, v in hists.items() if k in names}
    if not hists:
        raise ValueError(f"plot_histograms: no {kind} histograms recorded (give the Recorder "
                         f"histogram_steps)")
    # weights before biases: their histograms say more
    items = sorted(hists.items(), key=lambda item: "bias" in item[0].rsplit(".", 1)[-1])
    items = items[:max_panels]
    cols = min(3, len(items))
    rows = math.ceil(len(items) / cols)
    fig = _figure(3.8 * cols, 3.2 * rows)
    from matplotlib import colormaps
    cmap = colormaps["viridis"]
    for i, (name, ridges) in enumerate(items):
        ax = fig.add_subplot(rows, cols, i + 1)
        for j, (step, counts, edges) in enumerate(ridges):
            centers = 0.5 * (edges[:-1] + edges[1:])
            height = counts / max(counts.max(), 1.0)
            color = cmap(j / max(len(ridges) - 1, 1))
            ax.fill_between(centers, j, j + 0.9 * height, color=color, alpha=0.6)
            ax.plot(centers, j + 0.9 * height, color=color, linewidth=0.8)
        ax.set_yticks(range(len(ridges)), [f"step {s}" for s, _, _ in ridges], fontsize=7)
        ax.set_title(module_label(name, record) if kind == "activation" else name, fontsize=9)
        ax.grid(alpha=0.2)
    fig.suptitle(title or f"{kind} histograms over training")
    return _save(fig, path)


# --- gradient through time -----------------------------------------------------------------
def plot_vanishing_gradients(path, norms_by_name, loss_at="last", title=""):
    """||dL/dh_t|| against k = steps back from the loss (log scale), one curve per
    layer: ``{"RNN": norms, "LSTM": norms, "GRU": norms}`` from
    ``bptt.gradient_through_time`` (each curve divided by its value at the loss,
    so they start at 1)."""
    from .bptt import steps_back
    fig = _figure(6.0, 4.0)
    ax = fig.add_subplot()
    for i, (name, norms) in enumerate(norms_by_name.items()):
        k, values = steps_back(norms, loss_at)
        values = values / values[0] if values[0] > 0 else values
        ax.plot(k, np.maximum(values, 1e-300), color=f"C{i % 10}", marker="o", markersize=2.5,
                label=name)
    ax.set_yscale("log")
    ax.set_xlabel("steps back from the loss, k")
    ax.set_ylabel("||dL/dh_(T-k)|| / ||dL/dh_T||")
    ax.set_title(title or "gradient through time")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    return _save(fig, path)
