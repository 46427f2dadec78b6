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
# # 02 · Optimizers and learning-rate schedules
#
# Chapter 01 trained with the plainest rule there is, w ← w − η g (g = dL/dw). It
# works, but it is slow where the loss surface is a long narrow valley, and it
# treats every weight alike. The optimizers in `tinyar.optim` are all small
# changes to that one line: remember past gradients (momentum), or scale each
# weight's step by the size of its recent gradients (Adagrad, RMSprop, Adam). A
# learning-rate *schedule* changes η as training goes.
#
# This chapter:
#
# 1. writes down each update rule;
# 2. runs every optimizer on a two-dimensional valley where you can *see* its path;
# 3. trains the same network on the spiral with each optimizer, each at its best
#    learning rate from a small sweep, and compares the loss curves;
# 4. plots StepLR, cosine-with-warm-up and ReduceLROnPlateau and shows what they
#    do to training.
#
# Every optimizer updates all of a model's parameters with **one kernel call**:
# the parameters are views into one flat buffer (`tinyar/nn/parameter.py`), and
# the optimizer's state (momentum, moment estimates) is flat arrays of the same
# length. The update rules below are therefore written per element.

# %%
from _common import FAST, new_figure, pick, savefig

import math

import numpy as np

import tinyar
from tinyar import nn
from tinyar.data import make_spiral
from tinyar.inspect.plots import smooth
from tinyar.nn.loss import CrossEntropyLoss
from tinyar.optim import SGD, Adagrad, Adam, AdamW, RMSprop
from tinyar.optim.lr_scheduler import CosineAnnealingLR, ReduceLROnPlateau, StepLR

# the figures this chapter saves (tests/tutorials checks that it does)
FIGURES = ["02_trajectories.png", "02_optimizers.png", "02_lr_schedules.png"]

# %% [markdown]
# ## The update rules
#
# g is the gradient of one weight at step t, η the learning rate. These are
# torch.optim's algorithms (tinyar matches them step for step; see the docstrings
# in `tinyar/optim/`).
#
# | optimizer | state | update |
# |---|---|---|
# | SGD | none | w ← w − η g |
# | SGD + momentum μ | velocity b | b ← μ b + g;  w ← w − η b |
# | Nesterov | velocity b | b ← μ b + g;  w ← w − η (g + μ b) |
# | Adagrad | sum of squares s | s ← s + g²;  w ← w − η g / (√s + ε) |
# | RMSprop | mean square v | v ← α v + (1 − α) g²;  w ← w − η g / (√v + ε) |
# | Adam | mean m, mean square v | m ← β₁ m + (1 − β₁) g;  v ← β₂ v + (1 − β₂) g²;  w ← w − η m̂ / (√v̂ + ε) |
# | AdamW | as Adam | w ← w (1 − η λ), then the Adam step |
#
# * **Momentum** keeps a decaying sum of past gradients, a velocity. Where
#   successive gradients agree (along the floor of a valley) it builds up speed;
#   where they alternate (across the valley) they cancel. With μ = 0.9 the
#   velocity remembers roughly the last 1/(1 − μ) = 10 gradients, and under a
#   steady gradient the step grows to 10 η g.
# * **Nesterov** momentum steps with the gradient plus the *updated* velocity: a
#   look-ahead that damps the overshoot of plain momentum.
# * **Adagrad, RMSprop, Adam** divide by the root of a sum (Adagrad) or a running
#   mean (RMSprop, Adam) of g², so each weight's step has roughly the size η
#   whatever the scale of its gradient (Adagrad's shrinks with time).
#   Adagrad's sum only grows, so its steps shrink forever; RMSprop and Adam forget
#   old gradients (time constants 1/(1 − α) and 1/(1 − β₂) steps).
# * **Adam** also averages g itself (momentum). m and v start at 0, so early on
#   they are too small; m̂ = m / (1 − β₁ᵗ) and v̂ = v / (1 − β₂ᵗ) undo that bias.
# * **AdamW** shrinks the weights by a factor (1 − ηλ) each step, *decoupled* from
#   the gradient. Adam's own `weight_decay` adds λw to g instead, and the division
#   by √v̂ then weakens the decay exactly for the weights with large gradients
#   (Loshchilov & Hutter, 2019).

# %% [markdown]
# ## Part 1: paths through a narrow valley
#
# A loss you can draw has two parameters. Take the quadratic bowl
#
# ```
# f(w) = ½ (w − w*)ᵀ A (w − w*),     A = R diag(1, 25) Rᵀ,     gradient  A (w − w*)
# ```
#
# with R a rotation by 30°. Its contours are ellipses 5 times longer than wide:
# the curvature is 25 across the valley and 1 along it. Plain gradient descent
# multiplies the error along each axis of the ellipse by (1 − η λ) per step, λ the
# curvature there. Across the valley that factor must stay above −1, so
# η < 2/25 = 0.08; along the valley it is then at best 1 − 0.08 = 0.92 per step.
# The ratio of the two curvatures, the *condition number* (25 here), is what makes
# gradient descent slow, and what the other optimizers try to get around.
#
# To use tinyar's optimizers on it, we write f as a tiny `Module` with one
# parameter, the 2-vector w. Its `backward` adds the gradient into `w.grad`, as
# every tinyar layer does.

# %%
theta = math.radians(30)
R = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
A = R @ np.diag([1.0, 25.0]) @ R.T
W_STAR = np.array([1.0, 0.5])     # the minimum
START = [-3.5, 2.5]


class Valley(nn.Module):
    """f(w) = ½ (w − w*)ᵀ A (w − w*), one 2-vector parameter w."""

    def __init__(self, start):
        super().__init__()
        self.w = nn.Parameter(np.array(start, dtype=np.float64))

    def forward(self):
        d = self.w.data - W_STAR
        return 0.5 * float(d @ A @ d)

    def backward(self, grad=1.0):
        self.w.grad += grad * (A @ (self.w.data - W_STAR))   # ADD, like every layer


# Learning rates picked by hand to show each method's character.
valley_optimizers = {
    "SGD, η=0.07": lambda p: SGD(p, lr=0.07),
    "SGD+momentum, η=0.02": lambda p: SGD(p, lr=0.02, momentum=0.9),
    "Nesterov, η=0.02": lambda p: SGD(p, lr=0.02, momentum=0.9, nesterov=True),
    "Adagrad, η=1": lambda p: Adagrad(p, lr=1.0),
    "RMSprop, η=0.1": lambda p: RMSprop(p, lr=0.1),
    "Adam, η=0.3": lambda p: Adam(p, lr=0.3),
    "AdamW, η=0.3, λ=0.1": lambda p: AdamW(p, lr=0.3, weight_decay=0.1),
}
valley_steps = 200
paths, values = {}, {}
for name, make in valley_optimizers.items():
    valley = Valley(START)
    optimizer = make(valley.parameters())
    path, fs = [valley.w.data.copy()], []
    for step in range(valley_steps):
        fs.append(valley())
        optimizer.zero_grad()
        valley.backward()
        optimizer.step()
        path.append(valley.w.data.copy())
    paths[name], values[name] = np.array(path), np.array(fs)
    print(f"{name:<22} f after 10 steps {fs[10]:9.4f}   after {valley_steps}: {fs[-1]:.2e}"
          f"   ends at ({path[-1][0]:+.3f}, {path[-1][1]:+.3f})")

# %%
fig = new_figure(13, 6.4)
axes = fig.subplots(2, 4).ravel()
gx, gy = np.meshgrid(np.linspace(-4.5, 4.5, 300), np.linspace(-3.0, 4.0, 300))
d = np.stack([gx - W_STAR[0], gy - W_STAR[1]], axis=-1)
surface = 0.5 * np.einsum("...i,ij,...j->...", d, A, d)
for ax, (name, path) in zip(axes, paths.items()):
    ax.contour(gx, gy, surface, levels=np.geomspace(0.02, 200, 12), colors="0.75",
               linewidths=0.6)
    ax.plot(path[:, 0], path[:, 1], ".-", ms=3, lw=1, color="C0")
    ax.plot(*W_STAR, "k*", ms=10)
    ax.plot(*START, "o", color="C3", ms=5)
    ax.set_xlim(-4.5, 4.5)
    ax.set_ylim(-3.0, 4.0)
    ax.set_aspect("equal")
    ax.set_title(name, fontsize=10)
for name, fs in values.items():
    axes[-1].semilogy(fs, label=name.split(",")[0])
axes[-1].set_xlabel("step")
axes[-1].set_ylabel("f(w)")
axes[-1].set_title("loss along the way", fontsize=10)
axes[-1].legend(fontsize=7)
axes[-1].grid(alpha=0.3)
fig.suptitle(f"{valley_steps} steps from the red dot to the minimum (★) of a narrow valley")
savefig(fig, "02_trajectories.png")

# %% [markdown]
# What to look for in the figure:
#
# * **SGD** with η just under the limit of 0.08 bounces from wall to wall across
#   the valley at first; once that dies out it converges at a steady geometric
#   rate, a straight line on the log plot.
# * **Momentum** races down the valley but overshoots and circles the minimum: the
#   velocity takes many steps to die out, hence the ripples in its loss.
#   **Nesterov**'s look-ahead damps most of that overshoot with the same η and μ.
# * **Adagrad, RMSprop and Adam** first move along the diagonal, at 45° whatever the
#   shape of the valley: dividing by √(mean g²) makes both components of the early
#   steps about the same size (±η for Adam's first step), a *sign* descent. Per-weight scaling fixes badly scaled *axes*;
#   this valley is rotated, so it does not fix it. Then they creep along the
#   valley floor. Adagrad slows down for good (its sum of g² only grows); RMSprop
#   and Adam recover as their averages forget the steep start.
# * **AdamW** stops short, at about (0.58, 0.25): each step pulls w toward 0 by the
#   weight decay, and it settles where that pull balances the gradient. Weight
#   decay is a regulariser; it changes the point you converge to.
#
# On a quadratic the classical methods win: a well-chosen η for SGD follows from
# the two curvatures, and momentum tuned to them (Polyak's heavy ball) converges
# as fast as any method that only sees gradients can. That says little about which optimizer suits a neural network,
# whose loss surface is neither quadratic nor two-dimensional. For that we have
# to try.

# %% [markdown]
# ## Part 2: the same network, seven optimizers
#
# A 2 → 64 → 64 → 3 ReLU network on the spiral (600 points), trained on random
# minibatches of 32 points. Every run starts from the **same initial weights**
# (`tinyar.manual_seed(0)` before building the model) and sees the **same
# minibatches** (a NumPy generator with a fixed seed), so only the optimizer
# differs.
#
# A comparison at one shared η would be meaningless: as the sweep below shows, the
# best η for SGD here is hundreds of times Adam's. So each optimizer gets a small
# sweep over η (factors of about 3),
# and we keep the η whose training loss over the last fifth of training is
# lowest. We record the loss on the whole training set every few steps, which is
# much less noisy than the minibatch loss.

# %%
X, y = make_spiral(points_per_class=200, num_classes=3, seed=0)
criterion = CrossEntropyLoss()


def make_model():
    tinyar.manual_seed(0)                    # the same initial weights for every run
    return nn.Sequential(nn.Linear(2, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(),
                         nn.Linear(64, 3))


def train(make_optimizer, steps, batch_size=32, record_every=10):
    """Train a fresh model; returns (steps recorded, full-data losses)."""
    model = make_model()
    optimizer = make_optimizer(model)
    batches = np.random.default_rng(0)       # the same minibatches for every run
    xs, losses = [], []
    for step in range(steps + 1):
        if step % record_every == 0:
            xs.append(step)
            losses.append(criterion(model(X), y))
        if step == steps:
            break
        rows = batches.integers(0, len(X), batch_size)
        criterion(model(X[rows]), y[rows])
        optimizer.zero_grad()
        model.backward(criterion.backward())
        optimizer.step()
    return np.array(xs), np.array(losses)


# optimizer -> (how to build it for a learning rate, the learning rates to try)
sweeps = {
    "SGD": (lambda m, lr: SGD(m, lr=lr), [0.1, 0.3, 1.0, 3.0]),
    "SGD+momentum": (lambda m, lr: SGD(m, lr=lr, momentum=0.9), [0.01, 0.03, 0.1, 0.3]),
    "Nesterov": (lambda m, lr: SGD(m, lr=lr, momentum=0.9, nesterov=True),
                 [0.01, 0.03, 0.1, 0.3]),
    "Adagrad": (lambda m, lr: Adagrad(m, lr=lr), [0.03, 0.1, 0.3, 1.0]),
    "RMSprop": (lambda m, lr: RMSprop(m, lr=lr), [0.001, 0.003, 0.01, 0.03]),
    "Adam": (lambda m, lr: Adam(m, lr=lr), [0.001, 0.003, 0.01, 0.03]),
    "AdamW": (lambda m, lr: AdamW(m, lr=lr, weight_decay=0.01), [0.001, 0.003, 0.01, 0.03]),
}
steps = pick(1500, fast=60)
best = {}
print("training loss (mean over the last fifth of training) for each η:")
for name, (make, rates) in sweeps.items():
    if FAST:
        rates = rates[1:2]
    results = {}
    for lr in rates:
        xs, losses = train(lambda m: make(m, lr), steps)
        tail = losses[len(losses) * 4 // 5:].mean()
        results[lr] = (tail, xs, losses)
    lr_best = min(results, key=lambda lr: results[lr][0])
    best[name] = (lr_best,) + results[lr_best]
    row = "   ".join(f"η={lr:<6g}{results[lr][0]:.4f}" for lr in rates)
    print(f"{name:<14}{row}   -> best η={lr_best:g}")

# %%
fig = new_figure(7, 4.5)
ax = fig.add_subplot()
window = 5 if len(best["SGD"][2]) > 20 else 1   # a moving average over 5 records = 50 steps
for name, (lr, tail, xs, losses) in best.items():
    style = "--" if name in ("AdamW", "Nesterov") else "-"
    smoothed = smooth(losses, window)
    ax.semilogy(xs[len(xs) - len(smoothed):], smoothed, style, label=f"{name} (η={lr:g})")
ax.set_xlabel("step (minibatches of 32)")
ax.set_ylabel("training-set cross-entropy (moving average)")
ax.set_title("spiral, 2-64-64-3 ReLU network: each optimizer at its best η")
ax.grid(alpha=0.3)
ax.legend()
savefig(fig, "02_optimizers.png")

# %% [markdown]
# How to read this (your numbers will differ a little with the machine and the
# seed):
#
# * The adaptive methods (RMSprop, Adam, AdamW, and here Adagrad) usually get
#   lower, sooner. Their per-weight step sizes suit networks whose layers have
#   gradients of very different sizes.
# * Momentum and Nesterov usually beat plain SGD; the two are close.
# * The winners on this small problem are not the winners everywhere: well-tuned
#   SGD with momentum is still used for image classifiers because it often
#   *generalises* better, a question about the test set, not this curve.
# * Look at the sweep table too: for most optimizers the spread across its own
#   four η values is as large as the spread between the optimizers at their best
#   η, or larger. Tune η first.

# %% [markdown]
# ## Part 3: learning-rate schedules
#
# A large η makes fast progress early, but near a minimum the noise of the
# minibatches keeps the weights bouncing at a distance proportional to η. Lowering
# η later lets them settle. Three common ways to lower it, all in
# `tinyar.optim.lr_scheduler` with torch's semantics:
#
# * **StepLR**: η(e) = η₀ γ^⌊e / s⌋, a drop by a factor γ every s epochs.
# * **Cosine annealing with warm-up**: a linear rise from 0 over W epochs, then
#   η(e) = η_min + (η₀ − η_min)(1 + cos(π (e − W)/(T − W)))/2, a smooth fall to
#   η_min at epoch T. The warm-up keeps the first, largest gradients of a fresh
#   network from throwing it somewhere bad. (tinyar's `warmup_steps` is an
#   extension; torch's CosineAnnealingLR has no warm-up.)
# * **ReduceLROnPlateau**: watch a metric (here the loss on a validation spiral)
#   and multiply η by a factor when it has not improved for `patience` epochs. It
#   adapts to the run instead of following a fixed plan.
#
# A scheduler changes `optimizer.param_groups[0]["lr"]` when you call its `step()`,
# once per epoch here, *after* the epoch's optimizer steps. Creating one already
# sets the lr of epoch 0 (0 for the warm-up), so build it right after its optimizer
# and never build two on one optimizer.
#
# Each run: SGD with momentum 0.9 from η₀ = 0.1 (deliberately on the high side),
# the same weights and batches, and one epoch = one pass over the 600 points in
# shuffled minibatches of 32.

# %%
X_val, y_val = make_spiral(points_per_class=200, num_classes=3, seed=1)
epochs = pick(60, fast=6)
schedules = {
    "constant η": lambda opt: None,
    "StepLR (every 20 epochs ×0.2)": lambda opt: StepLR(opt, step_size=20, gamma=0.2),
    "cosine, 5 epochs warm-up": lambda opt: CosineAnnealingLR(opt, T_max=epochs,
                                                              warmup_steps=min(5, epochs - 1)),
    "ReduceLROnPlateau (×0.2, patience 4)": lambda opt: ReduceLROnPlateau(opt, factor=0.2,
                                                                          patience=4),
}
history = {}
for name, make_scheduler in schedules.items():
    model = make_model()
    optimizer = SGD(model, lr=0.1, momentum=0.9)
    scheduler = make_scheduler(optimizer)
    shuffle = np.random.default_rng(0)
    lrs, val_losses = [], []
    for epoch in range(epochs):
        lrs.append(optimizer.lr)                     # the η this epoch trains with
        order = shuffle.permutation(len(X))
        for start in range(0, len(X), 32):
            rows = order[start:start + 32]
            criterion(model(X[rows]), y[rows])
            optimizer.zero_grad()
            model.backward(criterion.backward())
            optimizer.step()
        val_losses.append(criterion(model(X_val), y_val))
        if isinstance(scheduler, ReduceLROnPlateau):
            scheduler.step(val_losses[-1])          # it needs the metric
        elif scheduler is not None:
            scheduler.step()
    accuracy = (model(X_val).argmax(axis=1) == y_val).mean()
    history[name] = (lrs, val_losses)
    print(f"{name:<38} validation loss: last {val_losses[-1]:.4f}, mean of the last 10 "
          f"epochs {np.mean(val_losses[-10:]):.4f}; accuracy {accuracy:.1%}; final η {lrs[-1]:.2g}")

# %%
fig = new_figure(11, 4.2)
ax_lr, ax_loss = fig.subplots(1, 2)
for name, (lrs, val_losses) in history.items():
    ax_lr.plot(np.arange(epochs), lrs, label=name, drawstyle="steps-post")
    ax_loss.semilogy(np.arange(1, epochs + 1), val_losses, label=name)
ax_lr.set_xlabel("epoch")
ax_lr.set_ylabel("learning rate η")
ax_lr.set_title("the schedules")
ax_loss.set_xlabel("epoch")
ax_loss.set_ylabel("validation cross-entropy")
ax_loss.set_title("what they do (SGD + momentum, η₀ = 0.1)")
for ax in (ax_lr, ax_loss):
    ax.grid(alpha=0.3)
ax_lr.legend(fontsize=8)
savefig(fig, "02_lr_schedules.png")

# %% [markdown]
# With a constant η = 0.1 the validation loss stays high and jumpy: the weights
# keep bouncing around the minimum. Every schedule that lowers η ends far lower;
# notice how the StepLR curve drops right at its first step down. The cosine
# schedule starts at 0 (the warm-up) and ends near 0. ReduceLROnPlateau made its
# own decisions from the validation loss: compare when it lowered η with the
# StepLR plan.
#
# ## What to take away
#
# * Every optimizer here is w ← w − η × (a processed gradient); they differ in the
#   memory they keep (a velocity, a mean square) and all run as one fused kernel
#   over tinyar's flat parameter buffer.
# * Momentum fights ill-conditioning along a valley; per-weight scaling (Adagrad,
#   RMSprop, Adam) fights badly scaled axes; neither removes the need to tune η.
# * Lower η late in training. A schedule is often worth as much as a better
#   optimizer.
#
# Next: chapter 03 opens one of these kernels and writes a kernel of its own.
