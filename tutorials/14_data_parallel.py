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
# # 14 · Data parallelism: many processes, one model
#
# One process trains on one batch at a time. **Data parallelism** runs N
# processes (*ranks*), each with a full copy of the model. Each step, every
# rank takes its own share of the batch, computes the gradient of its share,
# and then all ranks **average their gradients** so that every one of them
# holds the same average. Each rank takes the same optimizer step from the same
# weights with the same gradient, so the copies stay identical, and together
# they have computed one step at an N times larger batch. That is how
# PyTorch's `DistributedDataParallel` and Horovod train on many GPUs, and what
# `tinyar.distributed` does over MPI.
#
# In this chapter:
#
# 1. why the mean over ranks of the ranks' mean gradients *is* the gradient of
#    the global mean loss, checked in one process by splitting a batch;
# 2. what an **all-reduce** does: a ring all-reduce simulated in NumPy over N
#    ranks, step by step, and its cost model;
# 3. why the batch grows with the ranks and the learning rate with it (the
#    **linear scaling rule**, with warm-up);
# 4. **buckets**: starting the reduction of the last layers' gradients while
#    the first layers are still in backward, drawn as a timeline;
# 5. running it: `mpiexec -n 2` on a tiny script, two ranks ending with equal
#    parameters (when mpi4py and an MPI are installed).

# %%
from _common import new_figure, pick, savefig

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

import tinyar
from tinyar import nn
from tinyar.backend.cpu.threads import set_blas_threads
from tinyar.data import make_spiral
from tinyar.distributed import GradientAverager, World, rank_rows, world
from tinyar.nn.loss import CrossEntropyLoss
from tinyar.optim import SGD

tinyar.manual_seed(0)                 # the same weights on every run
rng = np.random.default_rng(0)
# the figures this chapter saves (tests/tutorials checks that it does)
FIGURES = ["14_ring_allreduce.png", "14_cost_model.png", "14_linear_scaling.png",
           "14_bucket_timeline.png"]

# Small matrices: a second BLAS thread gains little here and can cost a lot on a busy
# machine (chapter 10), and the two ranks launched at the end need a core each.
set_blas_threads(1)

# %% [markdown]
# ## 1. The averaged gradient
#
# The loss of a step is a mean over the B examples of the batch,
# L(w) = (1/B) Σᵢ ℓᵢ(w). With N ranks and B = N·b, rank r takes the rows
# r, r+N, r+2N, ... (`tinyar.distributed.rank_rows(x, world)`: the slice
# `x[r::N]`), b rows each, and computes its own mean loss and its gradient:
#
# ```
# L_r = (1/b) Σ_{i in rows(r)} ℓᵢ               g_r = ∇L_r
#
# (1/N) Σ_r L_r = (1/N) Σ_r (1/b) Σ_{i in rows(r)} ℓᵢ = (1/(N b)) Σ_all ℓᵢ = L
# (1/N) Σ_r g_r = ∇ (1/N) Σ_r L_r = ∇L               (the gradient is linear)
# ```
#
# So averaging the ranks' gradients gives *exactly* the gradient one process
# would compute on the whole batch, up to the order of floating-point sums.
# Two conditions hide in the second line:
#
# * **every rank holds the same number of rows b.** With unequal shares the
#   plain mean of means weights the small share's rows more; the global mean
#   needs weights b_r / B. (The same goes for a loss that averages over a
#   count that differs per rank, such as the tokens not ignored by
#   `ignore_index`.)
# * **the loss is a sum over examples.** BatchNorm breaks that: its statistics
#   are computed per rank over b rows, not over B, so N ranks are N small
#   batches as far as BatchNorm is concerned (PyTorch's answer is
#   `SyncBatchNorm`, which all-reduces the statistics too).
#
# Checked in one process, in float64 so that only rounding can differ: a
# small network on the spiral, one gradient over a batch of 48, against the
# average of 4 "ranks'" gradients over their 12 rows each.

# %%
def spiral_net():
    """2 -> 64 -> 64 -> 3 with ReLUs: small enough to train in seconds."""
    return nn.Sequential(nn.Linear(2, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(),
                         nn.Linear(64, 3))


def gradient(model, criterion, x, y):
    """The flat gradient (a copy) of the mean loss over (x, y) at the model's weights."""
    loss = criterion(model(x), y)
    model.zero_grad()
    model.backward(criterion.backward(), input_grad=False)
    return loss, model.flat_parameters().grad.copy()


X, y = make_spiral(points_per_class=1000, num_classes=3, seed=0)
net = spiral_net().double()
criterion = CrossEntropyLoss()
N_RANKS, GLOBAL = 4, 48
xb, yb = X[:GLOBAL].astype(np.float64), y[:GLOBAL]

loss_all, grad_all = gradient(net, criterion, xb, yb)
# World(rank=r, size=N) stands for rank r of an N-rank job (rank_rows reads only those two)
shares = [World(rank=r, size=N_RANKS) for r in range(N_RANKS)]
per_rank = [gradient(net, criterion, rank_rows(xb, w), rank_rows(yb, w)) for w in shares]
loss_mean = np.mean([loss for loss, _ in per_rank])
grad_mean = np.mean([g for _, g in per_rank], axis=0)
print(f"{net.num_parameters():,} parameters; batch {GLOBAL} in one process against "
      f"{N_RANKS} ranks x {GLOBAL // N_RANKS} rows")
print(f"loss:     one process {loss_all:.15f}   mean over ranks {loss_mean:.15f}")
print(f"gradient: largest difference {np.max(np.abs(grad_all - grad_mean)):.1e} "
      f"(largest entry {np.max(np.abs(grad_all)):.2f})")

# two unequal shares: 40 rows and 8 rows
_, g_big = gradient(net, criterion, xb[:40], yb[:40])
_, g_small = gradient(net, criterion, xb[40:], yb[40:])
print(f"unequal shares (40 + 8 rows): plain mean of the two gradients is off by "
      f"{np.max(np.abs(grad_all - (g_big + g_small) / 2)):.1e}; weighted by rows "
      f"(40/48, 8/48) {np.max(np.abs(grad_all - (40 * g_big + 8 * g_small) / 48)):.1e}")

# %% [markdown]
# This is why `tinyar train` gives every rank the same
# number of rows of each global batch (`--batch` rows each), and why the
# averager sums the ranks' gradients and then divides by N once. After that,
# gradient clipping, the optimizer and the loss that is logged all see the
# averaged figures: with N ranks at batch b the run computes what one process
# at batch N·b computes (`tinyar.distributed`'s tests check it, parameter for
# parameter).

# %% [markdown]
# ## 2. The all-reduce
#
# "Every rank gets the sum of every rank's buffer" is an **all-reduce**. The
# obvious way, every rank sends its buffer of S bytes to rank 0, which adds
# them up and sends the sum back, makes rank 0's link carry 2(N−1)·S bytes:
# the time grows with N. The **ring all-reduce** (Patarasuk & Yuan 2009; the
# algorithm that Baidu brought to deep learning in 2017 and Horovod and NCCL
# use) keeps every link equally busy. The ranks stand in a ring, each
# buffer is cut into N chunks, and each rank only ever talks to its right
# neighbour:
#
# * **reduce-scatter**, N−1 steps: at step s, rank r sends chunk (r − s) mod N
#   to rank r+1, which adds it into its own copy of that chunk. After N−1
#   steps rank r holds the complete sum of chunk (r + 1) mod N.
# * **all-gather**, N−1 steps: the complete chunks travel round the ring the
#   same way, each rank overwriting its copy, until every rank has all of them.
#
# Each step every rank sends S/N bytes and receives S/N, so over the 2(N−1)
# steps each rank sends **2(N−1)/N · S** bytes, under 2S however many ranks
# there are. Here it is in NumPy, with a record of whose contributions each
# rank's copy of each chunk holds after every step:

# %%
def ring_allreduce(buffers):
    """Simulate a ring all-reduce over len(buffers) ranks. Returns (results, history,
    bytes_sent): each rank's summed buffer, after each step an (N, N) array of how many
    ranks' values rank r's copy of chunk c holds, and the bytes each rank sent."""
    n = len(buffers)
    chunks = [np.array_split(np.array(b, dtype=np.float64), n) for b in buffers]
    holds = [[{r} for _ in range(n)] for r in range(n)]  # whose values each copy includes
    history = [np.array([[len(h) for h in row] for row in holds])]
    sent = np.zeros(n, np.int64)
    for phase in ("reduce-scatter", "all-gather"):
        for step in range(n - 1):
            # every rank sends at once: take all messages before anyone applies one
            offset = step if phase == "reduce-scatter" else step - 1
            messages = []
            for r in range(n):
                c = (r - offset) % n
                messages.append((r, c, chunks[r][c].copy(), set(holds[r][c])))
                sent[r] += chunks[r][c].nbytes
            for r, c, data, who in messages:
                right = (r + 1) % n
                if phase == "reduce-scatter":
                    chunks[right][c] += data
                    holds[right][c] |= who
                else:
                    chunks[right][c][:] = data
                    holds[right][c] = who
            history.append(np.array([[len(h) for h in row] for row in holds]))
    return [np.concatenate(c) for c in chunks], history, sent


N_RING, LENGTH = 4, 1_000_003        # a length N does not divide: chunks differ by one
buffers = [rng.standard_normal(LENGTH) for _ in range(N_RING)]
results, history, sent = ring_allreduce(buffers)
total = np.sum(buffers, axis=0)
S = buffers[0].nbytes
print(f"{N_RING} ranks, buffers of {LENGTH:,} float64 ({S / 1e6:.1f} MB)")
for r, result in enumerate(results):
    print(f"rank {r}: largest difference from the sum {np.max(np.abs(result - total)):.1e}; "
          f"sent {sent[r] / 1e6:.2f} MB = {sent[r] / S:.3f} S "
          f"(2(N-1)/N = {2 * (N_RING - 1) / N_RING:.3f})")

# %%
steps = len(history)
fig = new_figure(2.0 * steps, 2.9)
axes = fig.subplots(1, steps, sharey=True)
for k, (ax, counts) in enumerate(zip(axes, history)):
    ax.imshow(counts, vmin=1, vmax=N_RING, cmap="viridis")
    for r in range(N_RING):
        for c in range(N_RING):
            ax.text(c, r, counts[r, c], ha="center", va="center",
                    color="black" if counts[r, c] == N_RING else "white", fontsize=9)
    phase = "start" if k == 0 else ("reduce-scatter" if k < N_RING else "all-gather")
    step_in_phase = k if k < N_RING else k - (N_RING - 1)
    ax.set_title(phase if k == 0 else f"{phase}\nstep {step_in_phase}", fontsize=9)
    ax.set_xticks(range(N_RING))
    ax.set_xlabel("chunk")
    ax.set_yticks(range(N_RING))
axes[0].set_ylabel("rank")
fig.suptitle(f"ring all-reduce over {N_RING} ranks: how many ranks' values each copy of "
             "each chunk holds (4 = the complete sum)", fontsize=10)
savefig(fig, "14_ring_allreduce.png")

# %% [markdown]
# Read the panels left to right: during the reduce-scatter the counts grow
# along a diagonal, one rank's worth per step, until each rank holds one
# complete chunk (the yellow 4s); during the all-gather the complete chunks
# spread until the whole grid is 4.
#
# ### The cost model
#
# Sending m bytes costs α + m/β: a latency α per message and a bandwidth β.
# The ring takes 2(N−1) steps of S/N bytes; the send-to-root way 2(N−1)
# messages of S bytes through rank 0's link:
#
# ```
# t_ring  = 2(N−1) α + 2(N−1)/N · S/β          → 2 S/β as N grows: independent of N
# t_root  = 2(N−1) α + 2(N−1)   · S/β          → grows with N
# ```
#
# Two consequences. The ring's time hardly depends on the number of ranks, so
# adding ranks keeps the communication cost per step constant while the
# compute per rank shrinks (at a fixed global batch) or stays (at a fixed
# batch per rank). And a small buffer is latency-bound: 2(N−1)α does not
# shrink with S, which is why gradients are not reduced one small tensor at a
# time but gathered in buckets of a megabyte or more.
#
# On one machine, "sending" is a copy through shared memory, so β is about a
# memcpy's bandwidth: `benchmarks/bench_distributed.py` measures tinyar's
# all-reduce against `np.copyto` of the same size. Below, α = 20 µs and
# β = 1.25 GB/s, a 10-gigabit Ethernet between machines:

# %%
ALPHA, BETA = 20e-6, 1.25e9


def t_ring(n, size):
    return 2 * (n - 1) * ALPHA + 2 * (n - 1) / n * size / BETA


def t_root(n, size):
    return 2 * (n - 1) * ALPHA + 2 * (n - 1) * size / BETA


fig = new_figure(11, 4)
ax_n, ax_s = fig.subplots(1, 2)
ranks = np.arange(2, 65)
size = 100e6                        # 25 M float32 parameters: a ResNet-50's gradient
ax_n.plot(ranks, [t_ring(n, size) for n in ranks], label="ring")
ax_n.plot(ranks, [t_root(n, size) for n in ranks], label="through rank 0")
ax_n.set_yscale("log")
ax_n.set(xlabel="ranks N", ylabel="seconds", title="all-reduce of 100 MB against N")
ax_n.legend()
sizes = np.logspace(3, 9, 61)
ax_s.loglog(sizes, [t_ring(8, s) for s in sizes], label="ring, N = 8")
ax_s.loglog(sizes, [2 * 7 * ALPHA] * len(sizes), "--", label="latency term 2(N-1)α")
ax_s.loglog(sizes, [2 * 7 / 8 * s / BETA for s in sizes], ":",
            label="bandwidth term 2(N-1)/N S/β")
ax_s.set(xlabel="buffer size S (bytes)", ylabel="seconds",
         title="ring all-reduce against S, N = 8")
ax_s.legend()
fig.suptitle(f"cost model: α = {ALPHA * 1e6:.0f} µs, β = {BETA / 1e9:.2f} GB/s", fontsize=10)
savefig(fig, "14_cost_model.png")
crossover = 2 * 7 * ALPHA / (2 * 7 / 8 / BETA)
print(f"N = 8: latency and bandwidth terms are equal at S = {crossover / 1e3:.0f} KB; "
      f"100 MB takes {t_ring(8, size) * 1e3:.0f} ms by the ring, "
      f"{t_root(8, size) * 1e3:.0f} ms through rank 0")

# %% [markdown]
# ## 3. The batch and the learning rate
#
# N ranks at b rows each take one step on a batch of N·b. An epoch then has N
# times fewer steps, and with the learning rate unchanged training gets less
# done per epoch: each step moves the weights as far as a small-batch step
# did, with a better-averaged gradient. The **linear scaling rule** (Goyal et
# al. 2017, "Accurate, Large Minibatch SGD: Training ImageNet in 1 Hour"):
# *when the batch grows k-fold, multiply the learning rate by k.* The reason:
# k small steps of SGD move the weights by
#
# ```
# w_{t+k} = w_t − η Σ_{j<k} ∇L_{t+j}(w_{t+j})
# ```
#
# and one big step over the same k·b examples by w_t − kη · (1/k) Σ_j ∇L_{t+j}(w_t).
# The two agree when ∇L(w_{t+j}) ≈ ∇L(w_t), when the weights change little
# over k steps. Early in training they change fast, and the large rate can
# throw the network off; hence a **warm-up**: start at the small rate and
# raise it linearly to kη over the first few epochs (Goyal et al. used 5 of
# 90, and trained ResNet-50 at batch 8,192 to the accuracy of batch 256).
# The rule holds up to a limit (about 8k there), past which no learning rate
# recovers the small-batch accuracy.
#
# Tried on the spiral: SGD with momentum at batch 16 and η = 0.02 as the
# reference, then batch 16k (k = 16: what 16 ranks at 16 rows compute) with
# η, with 16η, and with 16η after a warm-up of two epochs.

# %%
def train_spiral(batch, lr, epochs, warmup_epochs=0, warmup_from=None, seed=0):
    """Train spiral_net on (X, y) with SGD(momentum 0.9) at ``lr``; with a warm-up, the lr
    rises by equal steps from ``warmup_from`` to ``lr`` over the first ``warmup_epochs``
    (Goyal et al.'s gradual warm-up). Returns the mean training loss of each epoch."""
    tinyar.manual_seed(seed)
    model, criterion = spiral_net(), CrossEntropyLoss()
    optimizer = SGD(model.parameters(), lr=lr, momentum=0.9)
    order_rng = np.random.default_rng(seed)
    steps_per_epoch = len(X) // batch
    warmup_steps = warmup_epochs * steps_per_epoch
    losses, step = [], 0
    for _ in range(epochs):
        order, total = order_rng.permutation(len(X)), 0.0
        for start in range(0, steps_per_epoch * batch, batch):
            if step < warmup_steps:
                optimizer.lr = warmup_from + (lr - warmup_from) * step / warmup_steps
            elif step == warmup_steps:
                optimizer.lr = lr
            rows = order[start:start + batch]
            loss = criterion(model(X[rows]), y[rows])
            model.zero_grad()
            model.backward(criterion.backward(), input_grad=False)
            optimizer.step()
            total += float(loss)
            step += 1
        losses.append(total / steps_per_epoch)
    return losses


EPOCHS = pick(30, 3)
BASE_BATCH, BASE_LR, K = 16, 0.02, 16
runs = {f"batch {BASE_BATCH}, lr {BASE_LR}": train_spiral(BASE_BATCH, BASE_LR, EPOCHS),
        f"batch {K * BASE_BATCH}, lr {BASE_LR}": train_spiral(K * BASE_BATCH, BASE_LR, EPOCHS),
        f"batch {K * BASE_BATCH}, lr {K * BASE_LR:g} (linear rule)":
            train_spiral(K * BASE_BATCH, K * BASE_LR, EPOCHS),
        f"batch {K * BASE_BATCH}, lr {K * BASE_LR:g}, 2 epochs of warm-up":
            train_spiral(K * BASE_BATCH, K * BASE_LR, EPOCHS, warmup_epochs=min(2, EPOCHS - 1),
                         warmup_from=BASE_LR)}
for name, losses in runs.items():
    print(f"{name:<45} loss after epoch 1: {losses[0]:.3f}   last: {losses[-1]:.3f}")

fig = new_figure(7, 4.2)
ax = fig.subplots()
for name, losses in runs.items():
    ax.plot(np.arange(1, EPOCHS + 1), losses, label=name)
ax.set(xlabel="epoch", ylabel="training loss (mean over the epoch)", yscale="log",
       title=f"spiral, {len(X):,} points: the linear scaling rule (k = {K})")
ax.legend(fontsize=8)
savefig(fig, "14_linear_scaling.png")

# %% [markdown]
# Per epoch, the large batch at the small rate falls behind: it takes 16 times
# fewer steps of the same length. Scaled by 16, the large batch follows the
# reference curve again, and that is what lets N ranks finish an epoch N times
# sooner with the same result. Whether the warm-up matters depends on how far
# the scaled rate is from the edge of stability: on this small problem the run
# without it may be as good; on ImageNet at k = 32 it was not. With tinyar,
# `--batch` is the batch of one rank, so `mpiexec -n 4 tinyar train --batch 8`
# trains at a global batch of 32, and its learning rate is yours to scale.

# %% [markdown]
# ## 4. Buckets: reducing while backward still runs
#
# The simplest scheme waits for the whole backward pass, then all-reduces the
# whole flat gradient buffer: t_step = t_forward + t_backward + t_allreduce(S).
# But backward runs from the last layer to the first, and the last layers'
# gradients are final long before the first layers' are. **Buckets**
# (PyTorch DDP, Horovod's tensor fusion) use that: the flat buffer is cut into
# buckets of about `bucket_bytes` (DDP: 25 MB; tinyar: 1 MiB, for its smaller
# models), filled in reverse layer order; when every layer owning a parameter
# of a bucket has finished its backward, the bucket's non-blocking
# `Iallreduce` starts, while the earlier layers' backward goes on. Before the
# optimizer step all buckets are waited for. Only the last bucket's reduction
# is left exposed after backward, in the best case.
#
# `GradientAverager(model, world, mode="bucketed")` does this; the sketch
# below uses measured per-layer backward times of a 6-layer network on this
# machine and the cost model above (8 ranks, 10-gigabit Ethernet) for the
# reductions, each bucket queued behind the one before it on the network.

# %%
WIDTH, DEPTH, BATCH = 512, 6, 64
layers = [nn.Linear(784, WIDTH), nn.ReLU()]
for _ in range(DEPTH - 2):
    layers += [nn.Linear(WIDTH, WIDTH), nn.ReLU()]
layers.append(nn.Linear(WIDTH, 10))
mlp, mlp_loss = nn.Sequential(*layers), CrossEntropyLoss()
x_mlp = rng.standard_normal((BATCH, 784)).astype(np.float32)
y_mlp = rng.integers(0, 10, BATCH)


def backward_times():
    """Seconds each layer's backward takes, last layer first (as backward runs them)."""
    mlp_loss(mlp(x_mlp), y_mlp)
    mlp.zero_grad()
    grad, times = mlp_loss.backward(), []
    for i, layer in reversed(list(enumerate(mlp))):
        start = time.perf_counter()
        # the first layer skips dL/dx, as Sequential.backward(..., input_grad=False) does
        grad = layer.backward(grad) if i else layer.backward(grad, input_grad=False)
        times.append(time.perf_counter() - start)
    return times


for _ in range(3):                   # warm-up: the kernels compile on first use
    backward_times()
per_layer = np.median([backward_times() for _ in range(pick(20, 3))], axis=0)
print("backward, last layer first:")
for layer, seconds in zip(reversed(list(mlp)), per_layer):
    params = sum(p.size for p in layer.parameters())
    print(f"  {type(layer).__name__:<7} {params:>9,} parameters  {seconds * 1e3:6.3f} ms")

# %% [markdown]
# tinyar plans the buckets when the averager is built (here in the world of
# one process, where `begin` and `finish` do nothing but the plan is made all
# the same): runs of consecutive parameters taken from the *end* of the flat
# buffer, the last layers first, each bucket closed once it holds
# `bucket_bytes` or more. `averager.buckets` lists them as (start, end)
# element ranges of the flat gradient buffer, in the order they are reduced.
# A bucket can go once every layer with a parameter in it has finished its
# backward; the layers' 512 x 512 weights here are 1 MiB each, so with 1 MiB
# buckets nearly every Linear layer gets a bucket of its own.

# %%
planned = GradientAverager(mlp, world(), mode="bucketed", bucket_bytes=1 << 20).buckets


def layers_of_buckets(model, buckets):
    """For each bucket (start, end) of the flat buffer, the layers holding parameters in
    it, as indices into the layers in backward order (the last layer is 0)."""
    spans, offset = [], 0
    for layer in model:
        size = sum(p.size for p in layer.parameters())
        spans.append((offset, offset + size))
        offset += size
    last = len(spans) - 1
    return [sorted(last - i for i, (a, b) in enumerate(spans) if a < end and start < b)
            for start, end in buckets]


buckets = layers_of_buckets(mlp, planned)
for (start, end), layer_ids in zip(planned, buckets):
    print(f"bucket of elements {start:>9,} .. {end:>9,} ({(end - start) * 4 / 2**20:.2f} MiB):"
          f" layers {[len(mlp) - 1 - i for i in layer_ids]} (0 = the first)")


# %%
def timeline(per_layer, layer_bytes, buckets, n_ranks):
    """(compute spans, network spans, step end): backward layers run back to back; a
    bucket's reduction starts when its last layer is done and the network is free."""
    ends = np.cumsum(per_layer)
    compute = [(end - t, t) for end, t in zip(ends, per_layer)]
    network, free = [], 0.0
    for bucket in buckets:
        start = max(ends[max(bucket)], free)
        duration = t_ring(n_ranks, sum(layer_bytes[i] for i in bucket))
        network.append((start, duration))
        free = start + duration
    return compute, network, max(ends[-1], free)


layer_bytes = [sum(p.size for p in layer.parameters()) * 4 for layer in reversed(list(mlp))]
S_mlp = sum(layer_bytes)
compute, network_bucketed, end_bucketed = timeline(per_layer, layer_bytes, buckets, 8)
_, network_blocking, end_blocking = timeline(per_layer, layer_bytes,
                                             [list(range(len(layer_bytes)))], 8)
print(f"{len(buckets)} buckets, {S_mlp / 1e6:.1f} MB of gradients; backward "
      f"{sum(per_layer) * 1e3:.2f} ms, one all-reduce of everything "
      f"{t_ring(8, S_mlp) * 1e3:.2f} ms")
print(f"backward + reduction: blocking {end_blocking * 1e3:.2f} ms, "
      f"bucketed {end_bucketed * 1e3:.2f} ms")

# %%
def in_ms(spans):
    return [(start * 1e3, width * 1e3) for start, width in spans]


fig = new_figure(11, 3.8)
ax = fig.subplots()
layer_colors = [f"C{i % 10}" if nbytes else "0.8" for i, nbytes in enumerate(layer_bytes)]
with_parameters = [i for i, nbytes in enumerate(layer_bytes) if nbytes]  # last first
number = {i: len(with_parameters) - k for k, i in enumerate(with_parameters)}
for row, network, end in ((3, network_blocking, end_blocking),
                          (1, network_bucketed, end_bucketed)):
    ax.broken_barh(in_ms(compute), (row + 0.55, 0.8), facecolors=layer_colors,
                   edgecolor="white")
    ax.broken_barh(in_ms(network), (row - 0.35, 0.8), edgecolor="white",
                   facecolors=["0.45"] if len(network) == 1 else
                   [("C3", "C1")[k % 2] for k in range(len(network))])
    for i, (start, width) in enumerate(compute):
        if i in number:
            ax.text((start + width / 2) * 1e3, row + 0.95, f"L{number[i]}", ha="center",
                    va="center", fontsize=8, color="white")
    ax.vlines(end * 1e3, row - 0.45, row + 1.45, color="black", lw=1)
    ax.text(end * 1e3, row + 1.55, f" step's backward + reduction: {end * 1e3:.2f} ms",
            fontsize=8, va="center")
ax.set_yticks([1.05, 1.95, 3.05, 3.95],
              ["network, bucketed", "backward", "network, blocking", "backward"])
ax.set_ylim(0.4, 5.0)
ax.set_xlim(0, max(end_blocking, end_bucketed) * 1e3 * 1.3)
ax.set_xlabel("milliseconds after backward starts (L1 = the first Linear layer)")
ax.set_title(f"backward (measured here, last layer first) and all-reduce (modelled: 8 "
             f"ranks, α = 20 µs, β = 1.25 GB/s), {len(buckets)} buckets (1 MiB)",
             fontsize=10)
savefig(fig, "14_bucket_timeline.png")

# %% [markdown]
# In the top pair, the network sits idle during backward and the CPU during
# the reduction. In the bottom pair, each bucket's reduction starts as soon as
# its layers are done, so most of the communication hides behind the rest of
# backward; what remains is the tail after the first layer's backward.
# Overlap pays when communication and computation are of similar size; when
# one dominates, the step is as long as that one either way.
#
# Two caveats for tinyar on a CPU. The MPI library has to make progress on a
# non-blocking reduction while Python computes the next layer, and many MPIs
# (MPICH included) progress it only inside MPI calls unless asked for a
# progress thread (`MPIR_CVAR_ASYNC_PROGRESS=1`), which takes a core of its
# own; so tinyar's hook also tests the reductions in flight after each
# layer's backward, which lets them advance between layers. And on one
# machine the "network" is memory bandwidth that backward also uses.
# `benchmarks/bench_distributed.py` measures both modes; the bucket layout
# tinyar chose is in `averager.buckets`.

# %% [markdown]
# ## 5. Running it
#
# tinyar's data parallelism runs over MPI through mpi4py, an extra:
# `pip install 'tinyar[distributed]'` installs mpi4py and MPICH from the
# package index. A training script needs five additions, all in
# `tinyar.distributed`:
#
# ```python
# w = world()                                   # rank and size; size 1 without mpiexec
# with abort_on_exception(w):                   # an error on one rank ends every rank
#     configure_threads(w)                      # cores / (ranks on this machine) each
#     broadcast_model(model, w)                 # rank 0's weights everywhere
#     averager = GradientAverager(model, w, mode="bucketed")
#     for x, y in batches:                      # the same global batches on every rank
#         loss = criterion(model(rank_rows(x, w)), rank_rows(y, w))
#         model.zero_grad()
#         averager.begin()
#         model.backward(criterion.backward())
#         averager.finish()                     # grad = mean over ranks
#         optimizer.step()
# ```
#
# The cell below writes such a script into a temporary folder and runs it as
# `mpiexec -n 2`. The ranks start from *different* random weights on purpose
# (`rank_seed` gives each its own seed), so that the broadcast has something
# to do; each rank then writes its parameters after the broadcast and after
# 20 steps in each gradient mode to a file of its own (two ranks printing long
# lines into one pipe could interleave them), and this process prints their
# checksums. Then it
# replays the same 20 steps alone, at the global batch, from rank 0's
# starting weights.

# %%
RANK_SCRIPT = textwrap.dedent('''
    """Two ranks train the spiral network; each writes its parameters to rank<r>.json
    (one file a rank: two ranks printing long lines to one pipe may interleave them)."""
    import json
    import sys

    import numpy as np

    import tinyar
    from tinyar import nn
    from tinyar.data import make_spiral
    from tinyar.distributed import (GradientAverager, abort_on_exception, allreduce_mean,
                                    broadcast_model, configure_threads, rank_rows, rank_seed,
                                    world)
    from tinyar.nn.loss import CrossEntropyLoss
    from tinyar.optim import SGD

    STEPS, GLOBAL_BATCH = int(sys.argv[1]), int(sys.argv[2])
    w = world()
    with abort_on_exception(w):
        threads = configure_threads(w)
        X, y = make_spiral(points_per_class=200, num_classes=3, seed=0)  # every rank: all

        def net():
            return nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 3))

        report = {"rank": w.rank, "size": w.size, "threads": threads}
        tinyar.manual_seed(rank_seed(0, w))             # a different start on each rank
        first = net()
        report["before broadcast"] = float(first.flat_parameters().data.sum())
        broadcast_model(first, w)
        report["start"] = first.flat_parameters().data.tolist()
        for mode in ("blocking", "bucketed"):
            model = net()
            model.load_state_dict(first.state_dict())
            criterion = CrossEntropyLoss()
            optimizer = SGD(model.parameters(), lr=0.1, momentum=0.9)
            averager = GradientAverager(model, w, mode=mode)
            for step in range(STEPS):
                rows = np.arange(step * GLOBAL_BATCH, (step + 1) * GLOBAL_BATCH) % len(X)
                x_rank, y_rank = rank_rows(X[rows], w), rank_rows(y[rows], w)
                loss = criterion(model(x_rank), y_rank)
                model.zero_grad()
                averager.begin()
                model.backward(criterion.backward(), input_grad=False)
                averager.finish()
                optimizer.step()
            report[mode] = model.flat_parameters().data.tolist()
            report[mode + " loss"] = float(allreduce_mean([float(loss)], w)[0])
        with open(f"rank{w.rank}.json", "w", encoding="utf-8") as out:
            json.dump(report, out)
''')


def find_mpiexec():
    """mpiexec beside this Python (the mpich package puts it in the environment's bin/),
    else on PATH; None when there is none."""
    beside = Path(sys.executable).parent / "mpiexec"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("mpiexec")


def replay(start, steps, global_batch):
    """The same training in this one process at the global batch: the flat parameters."""
    X2, y2 = make_spiral(points_per_class=200, num_classes=3, seed=0)
    model = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 3))
    model.flat_parameters().data[:] = np.asarray(start, np.float32)
    criterion = CrossEntropyLoss()
    optimizer = SGD(model.parameters(), lr=0.1, momentum=0.9)
    for step in range(steps):
        rows = np.arange(step * global_batch, (step + 1) * global_batch) % len(X2)
        criterion(model(X2[rows]), y2[rows])
        model.zero_grad()
        model.backward(criterion.backward(), input_grad=False)
        optimizer.step()
    return model.flat_parameters().data.copy()


RANK_STEPS, RANK_BATCH = 20, 32
mpiexec = find_mpiexec()
if importlib.util.find_spec("mpi4py") is None or mpiexec is None:
    missing = "mpi4py is not installed" if mpiexec else "no mpiexec was found"
    print(f"skipped: {missing}, so the two-rank run cannot start. Install the extra with "
          "pip install 'tinyar[distributed]' (mpi4py and MPICH), then run this chapter again.")
else:
    with tempfile.TemporaryDirectory(prefix="tinyar-ch14-") as folder:
        script = Path(folder) / "two_ranks.py"
        script.write_text(RANK_SCRIPT, encoding="utf-8")
        package_root = str(Path(tinyar.__file__).resolve().parents[1])
        # an enclosing MPI job's variables would make the ranks join it: leave them out
        env = {name: value for name, value in os.environ.items()
               if not name.startswith(("PMI_", "PMIX_", "OMPI_", "PRTE_", "HYDRA_",
                                       "MPI_LOCAL"))}
        # Open MPI refuses to run as root or more ranks than cores unless told (in a
        # container, on a one-core machine); MPICH ignores these
        env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
                   OMPI_MCA_rmaps_base_oversubscribe="1")
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root,
                                                          env.get("PYTHONPATH")]))
        command = [mpiexec, "-n", "2", sys.executable, str(script), str(RANK_STEPS),
                   str(RANK_BATCH)]
        print(f"$ mpiexec -n 2 python {script.name} {RANK_STEPS} {RANK_BATCH}")
        started = time.perf_counter()
        # a session of its own, so that a timeout can end mpiexec and both ranks together
        job = subprocess.Popen(command, cwd=folder, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            stdout, stderr = job.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            os.killpg(job.pid, signal.SIGKILL)
            stdout, stderr = job.communicate()
            raise RuntimeError(f"mpiexec -n 2 did not finish in 300 s:\n{stdout[-2000:]}\n"
                               f"{stderr[-2000:]}") from None
        print(f"(finished in {time.perf_counter() - started:.1f} s, exit status "
              f"{job.returncode})")
        if job.returncode != 0:
            raise RuntimeError(f"mpiexec -n 2 failed with status {job.returncode}:\n"
                               f"{stdout[-2000:]}\n{stderr[-2000:]}")
        reports = [json.loads((Path(folder) / f"rank{r}.json").read_text(encoding="utf-8"))
                   for r in (0, 1)]
    for report in reports:
        print(f"rank {report['rank']} of {report['size']} ({report['threads']} thread): "
              f"sum of parameters before the broadcast {report['before broadcast']:+.6f}, "
              f"after {np.sum(report['start']):+.6f}, after {RANK_STEPS} steps "
              f"{np.sum(report['blocking']):+.6f} (blocking), "
              f"{np.sum(report['bucketed']):+.6f} (bucketed); loss "
              f"{report['bucketed loss']:.4f}")
    rank0, rank1 = (np.array(reports[r]["bucketed"]) for r in (0, 1))
    print(f"rank 0 against rank 1: largest difference {np.max(np.abs(rank0 - rank1)):.1e}")
    blocking0 = np.array(reports[0]["blocking"])
    print(f"blocking against bucketed: largest difference "
          f"{np.max(np.abs(blocking0 - rank0)):.1e}")
    alone = replay(reports[0]["start"], RANK_STEPS, RANK_BATCH)
    print(f"one process at batch {RANK_BATCH} against 2 ranks at {RANK_BATCH // 2}: largest "
          f"difference {np.max(np.abs(alone - rank0)):.1e} (float32 rounding: the sums "
          f"are taken in another order)")

# %% [markdown]
# The sums before the broadcast differ (each rank drew its own weights) and
# are equal afterwards; after 20 steps the two ranks hold the same parameters,
# in either mode, and one process at batch 32 ends within float32 rounding of
# them. The run from the command line is the same thing with the rest of a
# training run around it:
#
# ```
# mpiexec -n 2 tinyar train --batch 16           # two ranks, global batch 32
# mpiexec -n 2 tinyar classify --batch 32        # a classifier, global batch 64
# mpiexec -f hosts -n 8 tinyar train ...         # eight ranks on the machines in hosts
# ```
#
# Only rank 0 prints and writes the run folder. The classifier's epoch rarely
# divides into whole batches; its last batch is then shared unevenly, and
# each rank's mean loss is weighed by its share of the batch, N b_r / B, so
# that the mean over the ranks is still the batch's mean. `docs/distributed.md` covers
# running on several machines, threads per rank, GPUs and CUDA-aware MPI.
#
# ## What to take away
#
# * The mean of equal shares' mean gradients is the global mean gradient, so N
#   ranks at batch b are one process at batch N·b; BatchNorm and unequal
#   shares are the exceptions.
# * The ring all-reduce sends 2(N−1)/N · S bytes per rank whatever N is;
#   small messages pay latency, so gradients go in buckets.
# * A larger global batch needs a larger learning rate: linear scaling, with
#   a warm-up.
# * Buckets reduced in reverse layer order overlap communication with the rest
#   of backward; at best only the last bucket's reduction is left after it.
