# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 09 · Inspecting a model while it trains
#
# A loss curve says *that* training goes well or badly, rarely *why*. The why is
# inside: how much gradient reaches each layer, how far each step moves the
# weights, what the activations look like. This chapter watches a deep network
# train with `tinyar.inspect.Recorder` and reads the symptoms:
#
# 1. what the recorder measures, and how it attaches without changing the model;
# 2. a deep MLP with **tanh** and with **ReLU**: gradient flow per layer, update
#    to weight ratios, activation statistics, histograms over training;
# 3. the same networks with a learning rate 100 times too high: what that looks
#    like in every one of these plots;
# 4. a run folder from `tinyar.train.lm.train_lm` and its HTML report
#    (`write_report`, or `tinyar inspect RUN` on the command line).

# %%
from _common import FAST, figure_path, new_figure, pick, savefig, show

import os
import shutil
import tempfile
import time
import warnings

import numpy as np
from matplotlib import colormaps

import tinyar
from tinyar import nn
from tinyar.backend.cpu.threads import set_blas_threads
from tinyar.data import make_spiral
from tinyar.inspect import Recorder, write_report
from tinyar.inspect.figures import gradient_flow, plot_histograms
from tinyar.nn.loss import CrossEntropyLoss
from tinyar.optim import Adam
from tinyar.train.lm import LMConfig, train_lm

tinyar.manual_seed(0)                 # the same weights on every run
# the figures this chapter saves (tests/tutorials checks that it does)
FIGURES = ["09_loss.png", "09_gradient_flow.png", "09_update_ratios.png", "09_activations.png",
           "09_histograms_tanh.png", "09_histograms_tanh_high_lr.png"]

# The networks here are small: one BLAS thread is as fast as two, and on a busy
# machine much faster (chapter 10).
set_blas_threads(1)

# %% [markdown]
# ## What the recorder measures
#
# `Recorder(model, every=10)` watches a model without changing its code. Call
# `recorder.step()` right after each `optimizer.step()`; every `every`-th step
# (and at the steps in `histogram_steps`) it records, **per parameter**:
#
# * `grad_norm`, `grad_mean_abs`, `grad_max_abs`: the size of the gradient the
#   optimizer just used, ‖g‖, mean |g|, max |g|;
# * `param_norm`: ‖w‖ after the update;
# * `update_ratio` = ‖w_after − w_before‖ / ‖w_before‖: the learning rate *as the
#   weights feel it*. A rule of thumb (Karpathy's) is around 1e-3 per step;
#   1e-1 means the weights are thrown about, 1e-6 that they hardly move.
#
# and **per module**, from its forward output and the gradient its backward gets:
#
# * `mean`, `std` of the output;
# * `dead`: the fraction of exact zeros after a ReLU, and `dead_units`, the units
#   that are zero for every sample of the batch (a dead ReLU passes no gradient,
#   so it may never come back);
# * `saturated`: the fraction of a tanh's outputs beyond ±0.97 (or a sigmoid's
#   below 0.03 or above 0.97): the flat part, where the slope and with it the
#   gradient is nearly zero;
# * `grad_norm`: ‖dL/d(output)‖ as it passes back through the module;
#
# and, at the `histogram_steps`, histograms of every output and every gradient.
#
# How does it see inside? It sets an instance attribute `forward` (and `backward`)
# on every module, a small wrapper that calls the class's method and looks at
# the result. `recorder.detach()` removes them, and the model is exactly as it was.
# Only a few numbers per step are kept.
#
# ## The patient: a deep MLP on the spiral
#
# Chapter 01's spiral (300 points, 3 classes), but a network of 8 hidden layers of
# 64 units instead of 1, with tanh or ReLU between them, PyTorch's default
# initialisation and full-batch Adam. Four runs of 1,000 steps, recorded every
# 10 steps, with histograms at steps 1, 100 and 1,000:
#
# * tanh and ReLU at a sensible learning rate, 1e-3;
# * tanh and ReLU at 1e-1, a hundred times too high.

# %%
X, y = make_spiral(points_per_class=100, num_classes=3, seed=0)
depth, width = 8, 64
steps, every = pick(1000, fast=40), pick(10, fast=2)
histogram_steps = (1, pick(100, fast=10), steps)


def deep_mlp(activation):
    layers = [nn.Linear(2, width), activation()]
    for _ in range(depth - 1):
        layers += [nn.Linear(width, width), activation()]
    return nn.Sequential(*layers, nn.Linear(width, 3))


def train(activation, lr):
    tinyar.manual_seed(0)                  # the same initial weights for every run
    model = deep_mlp(activation)
    criterion = CrossEntropyLoss()
    optimizer = Adam(model.parameters(), lr=lr)
    recorder = Recorder(model, every=every, histogram_steps=histogram_steps)
    losses = []
    with warnings.catch_warnings():        # a diverging run overflows; that is the point
        warnings.simplefilter("ignore", RuntimeWarning)
        for _ in range(steps):
            loss = criterion(model(X), y)
            model.zero_grad()
            model.backward(criterion.backward())
            optimizer.step()
            recorder.step()
            losses.append(loss)
    with recorder.paused():                # evaluation: not part of the record
        accuracy = float(np.mean(model(X).argmax(axis=1) == y))
    recorder.detach()
    return recorder.to_dict(), losses, accuracy


started = time.perf_counter()
runs = {}
for name, activation, lr in (("tanh, lr 1e-3", nn.Tanh, 1e-3), ("ReLU, lr 1e-3", nn.ReLU, 1e-3),
                             ("tanh, lr 1e-1", nn.Tanh, 1e-1), ("ReLU, lr 1e-1", nn.ReLU, 1e-1)):
    runs[name] = train(activation, lr)
    record, losses, accuracy = runs[name]
    print(f"{name}: loss {losses[0]:.3f} → {losses[-1]:.3f} (highest {max(losses):.1f}), "
          f"training accuracy {accuracy:.0%}")
print(f"({time.perf_counter() - started:.0f} s)")
print(deep_mlp(nn.Tanh))

# %% [markdown]
# The record is a plain dictionary (`recorder.to_dict()`, or `recorder.save(path)`
# for JSON): `steps`, then `parameters[name][statistic]` and
# `activations[module name][statistic]`, each a list with one value per recorded
# step. The module names are those of `named_modules()`: in a `Sequential`,
# "0" is the first Linear, "1" the first activation, and so on.

# %%
record = runs["tanh, lr 1e-3"][0]
print("recorded steps:", record["steps"][:5], "...", record["steps"][-1])
print("parameters:", list(record["parameters"])[:4], "...")
print("statistics per parameter:", list(record["parameters"]["0.weight"]))
print("statistics of module '1' (a Tanh):", [k for k in record["activations"]["1"]
                                             if isinstance(record["activations"]["1"][k], list)])
print("update ratio of 0.weight, first recorded steps:",
      np.round(record["parameters"]["0.weight"]["update_ratio"][:4], 5))

# %%
fig = new_figure(7, 4)
ax = fig.add_subplot()
for i, (name, (_, losses, _)) in enumerate(runs.items()):
    ax.semilogy(np.arange(1, steps + 1), losses, color=f"C{i % 2}",
                ls="-" if "1e-3" in name else "--", label=name)
ax.axhline(np.log(3), color="0.5", ls=":", lw=1, label="log 3: guessing")
ax.set_xlabel("step")
ax.set_ylabel("cross-entropy (nats), log scale")
ax.set_title(f"{depth} hidden layers of {width} on the spiral, Adam")
ax.grid(alpha=0.3, which="both")
ax.legend()
savefig(fig, "09_loss.png")

# %% [markdown]
# At 1e-3 both networks learn the spiral (the tanh network's loss has a few
# spikes it recovers from: moments where Adam's steps briefly overshoot). At 1e-1
# both fail. The tanh network's loss jumps in the first steps and then sits at
# log 3 ≈ 1.10, the loss of a network that gives every point the same output.
# The ReLU network even learns a little at first; then, around step 240, one
# step sends the loss to over 100, and afterwards it too sits at log 3 for good.
# The loss curve says no more than that. The plots below say what happened
# inside.
#
# ## Gradient flow
#
# For each weight matrix, from the input (left) to the output (right), the mean
# and the largest |gradient| (`tinyar.inspect.figures.gradient_flow(record)`, which
# averages over the recorded steps; `plot_gradient_flow` draws it for one run).
# In a healthy network the bars are of similar height across the layers: every
# layer gets enough signal to learn. Bars falling towards the input mean a
# vanishing gradient, bars at zero a layer that cannot learn at all.

# %%
def weights_only(names, *values):
    keep = [i for i, n in enumerate(names) if n.endswith("weight")]
    return [names[i] for i in keep], *[np.asarray(v)[keep] for v in values]


fig = new_figure(13, 3.6)
axes = fig.subplots(1, 4, sharey=True)
for ax, (name, (record, _, _)) in zip(axes, runs.items()):
    names, mean_abs, max_abs = weights_only(*gradient_flow(record))
    x = np.arange(len(names))
    ax.bar(x, np.maximum(max_abs, 1e-12), color="C0", alpha=0.35, label="max |g|")
    ax.bar(x, np.maximum(mean_abs, 1e-12), color="C0", label="mean |g|")
    ax.set_yscale("log")
    ax.set_xticks(x, [n.split(".")[0] for n in names], fontsize=8)
    ax.set_xlabel("layer (weight of module ...)")
    ax.set_title(name)
    ax.grid(alpha=0.3, axis="y")
axes[0].set_ylabel("|gradient|, averaged over the steps")
axes[0].legend(fontsize=8)
fig.suptitle("gradient flow: input on the left, output on the right")
savefig(fig, "09_gradient_flow.png")
for name, (record, _, _) in runs.items():
    names, mean_abs, _ = weights_only(*gradient_flow(record))
    print(f"{name}: mean |g| first layer {mean_abs[0]:.1e}, "
          f"middle {mean_abs[len(names) // 2]:.1e}, last {mean_abs[-1]:.1e}")

# %% [markdown]
# * **At 1e-3** every layer gets a gradient within a factor of ten or so of the
#   others: eight layers are not enough to make it vanish (a plain RNN over 60
#   steps, chapter 05, is a much deeper network).
# * **tanh at 1e-1**: the hidden layers get about 1e-6, ten thousand times less than
#   the output layer. Something between them blocks the gradient.
# * **ReLU at 1e-1**: huge maxima, from the violent steps before the network
#   died, and small means. Averages over the whole run hide that sequence; the
#   plots over time show it.
#
# ## Update-to-weight ratios
#
# log10 of ‖Δw‖/‖w‖ per step for every weight matrix, with the rule-of-thumb 1e-3
# dashed (`plot_update_ratios` draws this for one run). Adam's step is about the
# learning rate for every weight whatever its gradient, so for weights of size
# ~0.1 (PyTorch's default initialisation, ±1/√64) the ratio starts near lr/0.1.

# %%
fig = new_figure(13, 3.6)
axes = fig.subplots(1, 4, sharey=True)
for ax, (name, (record, _, _)) in zip(axes, runs.items()):
    steps_recorded = np.asarray(record["steps"])
    for i, (pname, series) in enumerate(record["parameters"].items()):
        if not pname.endswith("weight"):
            continue
        ratio = np.array([np.nan if v is None else v for v in series["update_ratio"]])
        with np.errstate(divide="ignore"):
            ax.plot(steps_recorded, np.log10(ratio), lw=1, color=f"C{i // 2 % 10}",
                    label=pname.split(".")[0])
    ax.axhline(-3, color="k", ls="--", lw=0.8)
    ax.set_title(name)
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
    ax.set_ylim(-7, 1)
axes[0].set_ylabel("log10 ‖Δw‖ / ‖w‖")
axes[-1].legend(fontsize=6, title="layer", title_fontsize=7, loc="lower right", ncol=3)
savefig(fig, "09_update_ratios.png")

# %% [markdown]
# * **At 1e-3** the ratios start near 1e-2 and settle between 1e-4 and 1e-3 as
#   the loss falls and Adam's steps shrink. The bumps are the loss spikes seen
#   above.
# * **At 1e-1** the first updates change the weights by about 100% of their own
#   size (ratio ~1, log 0): the network is thrown somewhere far away in one or two
#   steps. Then:
#   - tanh: within 200 steps every hidden layer stops moving (1e-6 and below);
#     only the output layer, which still gets a gradient, keeps changing;
#   - ReLU: the weights keep being thrown about (1e-2 per step) until step ~240,
#     and then the ratios drop out of the plot, to exactly 0: no gradient
#     arrives any more, so even Adam has nothing to do.
#
#   That is the signature of a dead network, not of a converged one: the loss
#   is at log 3.
#
# ## Activation statistics
#
# For every activation layer (a line per layer, from light = near the input to
# dark = near the output): the standard deviation of its output, and the
# fraction of **dead** (ReLU: exactly 0) or **saturated** (tanh: |y| > 0.97)
# outputs (`plot_activation_stats` draws mean, std and these fractions for one run).

# %%
fig = new_figure(13, 6.2)
axes = fig.subplots(2, 4, sharex=True)
for column, (name, (record, _, _)) in enumerate(runs.items()):
    steps_recorded = np.asarray(record["steps"])
    layers = [k for k, v in record["activations"].items() if v["type"] in ("Tanh", "ReLU")]
    key = "dead" if "ReLU" in name else "saturated"
    for j, module in enumerate(layers):
        series = record["activations"][module]
        color = colormaps["viridis_r"](0.1 + 0.85 * j / max(len(layers) - 1, 1))
        values = {k: np.array([np.nan if v is None else v for v in series[k]])
                  for k in ("std", key)}
        axes[0, column].semilogy(steps_recorded, values["std"], color=color, lw=1,
                                 label=f"module {module}")
        axes[1, column].plot(steps_recorded, values[key], color=color, lw=1)
    axes[0, column].set_title(name)
    axes[1, column].set_ylim(-0.02, 1.02)
    axes[1, column].set_xlabel("step")
    axes[1, column].set_ylabel(f"{key} fraction" if column in (0, 1) else "")
    for ax in axes[:, column]:
        ax.grid(alpha=0.3)
axes[0, 0].set_ylabel("std of the output")
axes[0, 1].legend(fontsize=6, ncol=2)
savefig(fig, "09_activations.png")

for name, (record, _, _) in runs.items():
    key = "dead" if "ReLU" in name else "saturated"
    layers = [k for k, v in record["activations"].items() if v["type"] in ("Tanh", "ReLU")]
    start = [record["activations"][m]["std"][0] for m in layers]
    end = [record["activations"][m][key][-1] for m in layers]
    print(f"{name}: std at step 1 from the first to the last layer "
          f"{' '.join(f'{s:.2f}' for s in start)};  {key} at the end "
          f"{' '.join(f'{e:.2f}' for e in end)}")

# %% [markdown]
# Three things to read here:
#
# * **At step 1 the activations shrink with depth** (top row, left end): the std
#   falls from layer to layer. PyTorch's default initialisation draws weights
#   from U(±1/√fan_in), variance 1/(3·fan_in), so each layer multiplies the
#   variance by about 1/3 before the activation (and ReLU halves it again). The
#   "Kaiming" and "Xavier" initialisations choose the variance so that it stays
#   constant instead; here Adam repairs it within the first hundred steps.
# * **A healthy ReLU network has many zeros**, 30–50% per layer here: each unit
#   is active on part of the plane, which is how a ReLU network cuts it into
#   pieces. A healthy tanh network saturates few of its units, except near the
#   output, where the last layer commits to its answers (30% there at the end).
# * **At 1e-1**, within the first steps, the tanh network saturates almost all its
#   units (outputs stuck at ±1, slope 0) and the ReLU network kills most of its
#   units (outputs stuck at 0, slope 0), and at step ~240 nearly all. Either way
#   the gradient can no longer pass, and the network stays where the wild steps
#   left it. That is what blocked the gradient flow above. The cure is a smaller
#   learning rate (or warm-up: start small, chapter 02), and these plots show
#   the problem long before the loss curve makes it obvious.
#
# ## Histograms over training
#
# The recorder takes full histograms at the `histogram_steps`.
# `plot_histograms(path, record, kind="activation")` draws them as ridges, one
# panel per module, the earliest step at the bottom. The tanh network at 1e-3
# and at 1e-1:

# %%
tanh_layers = ["1", "7", "15"]            # the first, a middle and the last Tanh
show(plot_histograms(figure_path("09_histograms_tanh.png"), runs["tanh, lr 1e-3"][0],
                     kind="activation", names=tanh_layers,
                     title="tanh outputs, lr 1e-3: steps 1, 100, 1000 from the bottom"))
show(plot_histograms(figure_path("09_histograms_tanh_high_lr.png"), runs["tanh, lr 1e-1"][0],
                     kind="activation", names=tanh_layers,
                     title="tanh outputs, lr 1e-1: saturated at ±1"))

# %% [markdown]
# At 1e-3 the step-1 histograms of the deeper layers are narrow spikes around 0
# (the shrinking activations) and widen as the network learns, filling (−1, 1);
# only the last layer moves most of its outputs to the ends. At 1e-1 every layer
# but the first piles up at −1 and +1 by step 100, the flat parts of the tanh: a
# saturated network. (Each ridge is scaled to its own peak.)
#
# ## A run folder and its report
#
# The training commands record all of this for you. `tinyar train` (and
# `tinyar.train.lm.train_lm(LMConfig(...))`, the same thing from Python) attaches
# a `Recorder` every `record_every` steps and writes a **run folder**: the
# checkpoint `model.npz`, `log.json` (the settings and a record per step:
# loss, learning rate, gradient norm, validation loss, samples), `recorder.json`,
# `loss_curve.png`, `samples.txt` and the vocabulary.
#
# Here is a very small character-level LSTM language model, trained for a few
# seconds into a temporary folder (chapter 06 explains the model), and the report
# of its run folder.

# %%
run_folder = os.path.join(tempfile.mkdtemp(prefix="tinyar-tutorial-09-"), "char-lm")
config = LMConfig(data="stdlib", max_chars=pick(200_000, fast=50_000), level="char",
                  embed=32, hidden=pick(128, fast=32), layers=1, head="flat",
                  steps=pick(150, fast=6), batch=32, bptt=64, eval_every=pick(50, fast=3),
                  eval_tokens=5_000, sample_every=pick(75, fast=6), sample_tokens=100,
                  record_every=pick(5, fast=1), checkpoint_every=10**9, out=run_folder)
started = time.perf_counter()
train_lm(config, quiet=True)
print(f"trained {config.steps} steps in {time.perf_counter() - started:.0f} s")
for name in sorted(os.listdir(run_folder)):
    print(f"  {name:<16}{os.path.getsize(os.path.join(run_folder, name)):>10,} bytes")

report_path = write_report(run_folder)
print(f"\nthe report: {report_path} ({os.path.getsize(report_path):,} bytes)")
print(f"open it in a browser, e.g.:  python -m webbrowser file://{os.path.abspath(report_path)}")
if FAST:                                   # the test suite's quick run: leave nothing behind
    shutil.rmtree(os.path.dirname(run_folder))

# %% [markdown]
# `write_report(run)` writes one self-contained HTML page, `RUN/report.html`:
# no JavaScript, no files next to it (the figures are embedded as PNG data), so
# it can be mailed or archived as it is. It shows whatever the folder holds: the
# settings as a table, the curves of every number in the log, the generated
# samples, the recorder's gradient flow, update ratios, activation statistics and
# histograms (made with the same `plot_*` functions as above), the model's
# parameters, and the PNGs in the folder (a classifier run's confusion matrices,
# say).
#
# To open it, double-click the file, or use `python -m webbrowser
# file:///path/to/RUN/report.html`, or `open` (macOS) / `xdg-open` (Linux) /
# `start` (Windows). On a remote machine, copy the one file to your own. From the
# command line the same report is
#
# ```
# tinyar train --level char --steps 300 --out runs/mine     # or any run folder
# tinyar inspect runs/mine                                  # writes runs/mine/report.html
# ```
#
# (The folder above is a temporary one, left for you to open; your system deletes
# it eventually. In the test suite's fast mode it is removed at once.)
#
# ## What to take away
#
# * `Recorder(model, every=...)` + `recorder.step()` after each optimizer step:
#   gradient and update sizes per parameter, activation statistics per module,
#   histograms at chosen steps; `detach()` leaves the model as it was.
# * Healthy: gradients of similar size in every layer, update ratios around
#   1e-3, a moderate fraction of zero ReLUs, few saturated tanh units.
# * A learning rate that is far too high shows as update ratios near 1 in the
#   first steps, then saturated or dead units and gradients that stop arriving,
#   while the loss just sits at chance level.
# * Every `tinyar train` / `tinyar classify` run folder can be turned into one
#   HTML page with `tinyar inspect RUN` (`write_report`).
#
# Next: chapter 10 times tinyar against PyTorch, and explains how to time at all.
