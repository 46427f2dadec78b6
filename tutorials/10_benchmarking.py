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
# # 10 · Benchmarking tinyar against PyTorch
#
# "How fast is it?" has no answer without "compared with what, on which
# machine, measured how". A training step that takes 4 ms on one laptop takes
# 12 ms on another, and 60 ms on the first one while it is compiling something
# else. This chapter is about measuring honestly, then measuring tinyar:
#
# 1. how to time: warm-up, the median of many, noise, and why we compare
#    **ratios** of two libraries measured **in the same process**;
# 2. threads: what BLAS threads do on a small or busy machine, and
#    `set_blas_threads`;
# 3. short versions of the benchmarks in `benchmarks/` (MLP, LeNet-like CNN,
#    character LSTM language model): tinyar against PyTorch, same weights, same
#    data;
# 4. where the time of a step goes, with Python's profiler `cProfile`;
# 5. GPUs.
#
# PyTorch is optional: without it, tinyar is timed alone.

# %%
from _common import HERE, new_figure, pick, savefig

import cProfile
import io
import os
import pstats
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from matplotlib.ticker import FuncFormatter

import tinyar
from tinyar.backend.cpu.threads import set_blas_threads

# the benchmark scripts live in benchmarks/ at the top of the repository
sys.path.insert(0, str(HERE.parent / "benchmarks"))
import bench_lenet  # noqa: E402
import bench_mlp  # noqa: E402
from common import machine  # noqa: E402
from lm_twins import batch as lm_batch, tinyar_lm, torch_lm  # noqa: E402

try:
    import torch
except ImportError:
    torch = None
    print("PyTorch is not installed: tinyar is timed alone, and there are no ratios "
          "(pip install torch, or pip install -e .[compare], for the comparison)")

tinyar.manual_seed(0)
# the figures this chapter saves (tests/tutorials checks that it does)
FIGURES = ["10_timing_noise.png", "10_threads.png", "10_ratios.png", "10_profile.png"]
print("machine:", machine())

# %% [markdown]
# ## Timing a training step
#
# The thing we time is one **training step**: forward, loss, backward, optimizer
# step, on a fixed batch. `bench_mlp.tinyar_step(x, y)` builds the benchmark's
# MLP (784 → 512 → 512 → 10, batch 128, Adam) and returns a function that does one
# step; `bench_mlp.torch_step` builds PyTorch's twin with the same weights.
#
# Watch the first calls of each, one by one:

# %%
rng = np.random.default_rng(0)
x_mlp = rng.standard_normal((bench_mlp.BATCH, 784)).astype(np.float32)
y_mlp = rng.integers(0, 10, bench_mlp.BATCH).astype(np.int64)


def call_times(step, n):
    """Seconds of each of n calls of step()."""
    times = []
    for _ in range(n):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    return np.array(times)


set_blas_threads(1)                          # why: the next section
if torch is not None:
    torch.set_num_threads(1)
n_calls = pick(300, fast=30)
mlp_model, tinyar_mlp = bench_mlp.tinyar_step(x_mlp, y_mlp)
first = {"tinyar": call_times(tinyar_mlp, n_calls)}
if torch is not None:
    torch_mlp = bench_mlp.torch_step(torch, mlp_model.state_dict(), x_mlp, y_mlp)
    first["torch"] = call_times(torch_mlp, n_calls)
for name, t in first.items():
    print(f"{name:>6}: first call {t[0] * 1e3:7.1f} ms, second {t[1] * 1e3:5.2f} ms; "
          f"after 10 calls: median {np.median(t[10:]) * 1e3:.2f} ms, mean "
          f"{np.mean(t[10:]) * 1e3:.2f} ms, fastest {t[10:].min() * 1e3:.2f} ms, slowest "
          f"{t[10:].max() * 1e3:.2f} ms")

# %%
fig = new_figure(12, 4)
ax_calls, ax_hist = fig.subplots(1, 2)
for i, (name, t) in enumerate(first.items()):
    ax_calls.semilogy(np.arange(1, len(t) + 1), t * 1e3, ".", ms=3, color=f"C{i}", label=name)
    after = t[10:] * 1e3
    ax_hist.hist(after, bins=40, range=(0.8 * after.min(), np.percentile(after, 99)),
                 color=f"C{i}", alpha=0.5, label=name)
    ax_hist.axvline(np.median(after), color=f"C{i}", lw=2, label=f"{name} median")
    ax_hist.axvline(np.mean(after), color=f"C{i}", lw=1, ls="--", label=f"{name} mean")
ax_calls.set_xlabel("call")
ax_calls.set_ylabel("milliseconds (log scale)")
ax_calls.set_title("MLP training step, call by call")
ax_hist.set_xlabel("milliseconds")
ax_hist.set_ylabel("calls")
ax_hist.set_title("after 10 warm-up calls (slowest 1% not shown)")
for ax in (ax_calls, ax_hist):
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
savefig(fig, "10_timing_noise.png")

# %% [markdown]
# What this shows, and the rules that follow:
#
# * **The first call is slow.** tinyar's takes about a hundred times longer than
#   the later ones: Numba loads every kernel the step uses from its disk cache
#   (or compiles it, on the very first run after installing). PyTorch's kernels
#   are compiled ahead of time, but its first calls still allocate and touch
#   memory for the first time and find the caches cold. **Warm up** before
#   timing: run the step a few times and throw those times away.
# * **Then the times scatter**: the same step, the same data, and still some
#   calls take twice as long, because the operating system, other programs and
#   the CPU's clock speed all change under us. The distribution has a long tail
#   to the right, so the **mean** is pulled up by a few slow calls; the
#   **median** is what a typical call costs. Take the median of many calls.
# * **Absolute times belong to one machine** on one day. Run both libraries in
#   the **same process**, one after the other (better: in alternating rounds),
#   and report the **ratio**: it says much more, and travels better, than "3.8
#   ms". (`benchmarks/common.py` has `median_ms(step, warmup, repeats)` and the
#   Markdown table the benchmark scripts print.)
#
# Below we alternate the contenders in rounds, so that a slow spell of the
# machine hits both alike.

# %%
def interleaved(steps, warmup=3, repeats=15, rounds=3):
    """Median seconds of each step in ``steps`` ({name: step}), after ``warmup`` calls each,
    the ``repeats`` timed calls split into ``rounds`` blocks taken in turn."""
    for step in steps.values():
        for _ in range(warmup):
            step()
    times = {name: [] for name in steps}
    per_round = -(-repeats // rounds)
    for _ in range(rounds):
        for name, step in steps.items():
            times[name].extend(call_times(step, per_round))
    return {name: statistics.median(t) for name, t in times.items()}


# %% [markdown]
# ## Threads
#
# A matrix product can use several cores. NumPy's BLAS library (OpenBLAS,
# usually) starts one thread per core by default, and PyTorch has its own
# threads. On an idle machine with many cores and big matrices that is a gain.
# But on a small machine that is doing something else too, or for small
# matrices, threads that wait for each other can make every product *much*
# slower (OpenBLAS's threads spin while they wait for their partners; when a
# partner has no core to run on, everyone waits). Two pools of threads on the same
# cores are the worst case, so tinyar keeps one: beside NumPy's OpenBLAS its own
# kernels are serial and the matrix products use BLAS's threads; with MKL (the
# `mkl` extra) MKL and Numba share GNU OpenMP's threads, and the kernels between
# the products run on every core too (`tinyar/backend/cpu/threads.py` explains the
# policy; `benchmarks/bench_threads.py` times the kernels both ways).
#
# `tinyar.backend.cpu.threads.set_blas_threads(n)` sets the number of BLAS threads
# while the program runs (`TINYAR_BLAS_THREADS=n` in the environment does it at
# import time); `torch.set_num_threads(n)` is PyTorch's. Here is the MLP step with
# one thread and with one per core:

# %%
cores = os.cpu_count() or 1
threads_ms = {}
for n in sorted({1, cores}):
    set_blas_threads(n)
    contenders = {"tinyar": tinyar_mlp}
    if torch is not None:
        torch.set_num_threads(n)
        contenders["torch"] = torch_mlp
    for name, seconds in interleaved(contenders, warmup=3, repeats=pick(15, fast=3)).items():
        threads_ms[(name, n)] = seconds * 1e3
    print(f"{n} thread{'s' if n > 1 else ' '}: " + ",  ".join(
        f"{name} {threads_ms[(name, n)]:.2f} ms" for name in contenders))
set_blas_threads(1)                           # the rest of the chapter: one thread each
if torch is not None:
    torch.set_num_threads(1)

fig = new_figure(6.5, 3.8)
ax = fig.add_subplot()
names = ["tinyar"] + (["torch"] if torch is not None else [])
width = 0.38
for j, n in enumerate(sorted({1, cores})):
    heights = [threads_ms[(name, n)] for name in names]
    positions = np.arange(len(names)) + (j - 0.5) * width
    ax.bar(positions, heights, width, label=f"{n} thread{'s' if n > 1 else ''}",
           color=f"C{j + 2}")
    for x_pos, h in zip(positions, heights):
        ax.text(x_pos, h, f"{h:.1f}", ha="center", va="bottom", fontsize=9)
ax.set_xticks(np.arange(len(names)), names)
if max(threads_ms.values()) > 8 * min(threads_ms.values()):   # a collapse: log scale
    ax.set_yscale("log")
    for axis_formatter in (ax.yaxis.set_major_formatter, ax.yaxis.set_minor_formatter):
        axis_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set_ylabel("median step (ms), log scale")
else:
    ax.set_ylabel("median step (ms)")
ax.set_title(f"MLP training step: one thread or {cores} ({cores} cores here)")
ax.grid(alpha=0.3, axis="y", which="both")
ax.legend()
savefig(fig, "10_threads.png")

# %% [markdown]
# On an idle machine with several cores, more threads help a little at this size
# (the products are 128 × 784 × 512 and smaller). On a machine whose cores are
# shared with other work, like a busy laptop, a CI runner or a small virtual
# machine, the multi-threaded steps of both libraries can be several times
# *slower* than the one-thread steps: on the 2-core development machine, with
# other programs running, we have measured from 2.5 to 30 times, changing from
# minute to minute. Whatever your machine shows, the lessons are:
#
# * **report the thread counts** with every timing (`benchmarks/common.py`'s
#   `machine()` does), and compare libraries at the same count;
# * **one thread each** is the steadiest comparison, and measures the code rather
#   than the threading; the rest of this chapter uses it;
# * if tinyar is unexpectedly slow on a shared machine, try
#   `TINYAR_BLAS_THREADS=1`.
#
# ## tinyar against PyTorch
#
# Short versions of three benchmarks (the scripts in `benchmarks/` run longer and
# print Markdown tables):
#
# * **MLP**, `bench_mlp.py`: 784 → 512 → 512 → 10, batch 128, Adam;
# * **LeNet-like CNN**, `bench_lenet.py`: chapter 04's network, batch 64, 1×28×28,
#   SGD with momentum;
# * **char LM**, `bench_char_lm.py`: embedding 64, 2-layer LSTM of 256, a flat
#   softmax over 65 characters, batch 32 × 128 time steps, Adam.
#
# Each builds tinyar's model, copies its weights into PyTorch's twin (the
# parameter names match), and returns one step function per library.

# %%
x_img = rng.standard_normal((bench_lenet.BATCH, 1, 28, 28)).astype(np.float32)
y_img = rng.integers(0, 10, bench_lenet.BATCH).astype(np.int64)
tinyar.manual_seed(0)
lenet = bench_lenet.tinyar_model()
benchmarks = {"MLP": {"tinyar": tinyar_mlp}, "LeNet": {"tinyar": bench_lenet.tinyar_step(
    lenet, x_img, y_img)}}
V, EMBED, HIDDEN, LAYERS, STEPS = 65, 64, 256, 2, pick(128, fast=16)
x_lm, y_lm = lm_batch(V, 32, STEPS)
lm_model, tinyar_lm_step = tinyar_lm(V, EMBED, HIDDEN, LAYERS, "flat", x_lm, y_lm)
benchmarks["char LM"] = {"tinyar": tinyar_lm_step}
if torch is not None:
    benchmarks["MLP"]["torch"] = torch_mlp
    benchmarks["LeNet"]["torch"] = bench_lenet.torch_step(torch, lenet.state_dict(), x_img,
                                                          y_img)
    benchmarks["char LM"]["torch"] = torch_lm(torch, V, EMBED, HIDDEN, LAYERS, "flat", x_lm, y_lm,
                                              state=lm_model.state_dict())[1]

results = {}
for name, contenders in benchmarks.items():
    repeats = pick(30, fast=3) if name != "char LM" else pick(9, fast=2)
    results[name] = interleaved(contenders, warmup=pick(3, fast=1), repeats=repeats)
    line = ",  ".join(f"{lib} {seconds * 1e3:7.2f} ms" for lib, seconds in results[name].items())
    ratio = (f"   tinyar / torch = {results[name]['tinyar'] / results[name]['torch']:.2f}"
             if torch is not None else "")
    print(f"{name:<8} {line}{ratio}")

# %%
fig = new_figure(7, 3.8)
ax = fig.add_subplot()
names = list(results)
if torch is not None:
    ratios = [results[n]["tinyar"] / results[n]["torch"] for n in names]
    ax.barh(names[::-1], ratios[::-1], color=["C0" if r <= 1 else "C3" for r in ratios[::-1]])
    ax.axvline(1.0, color="k", lw=1)
    for i, r in enumerate(ratios[::-1]):
        ax.text(r, i, f" {r:.2f}", va="center")
    ax.set_xlabel("tinyar time / PyTorch time (below 1: tinyar is faster)")
    ax.set_xlim(0, max(1.5, 1.2 * max(ratios)))
    ax.set_title("training step, one thread each, same weights and data")
else:
    ms = [results[n]["tinyar"] * 1e3 for n in names]
    ax.barh(names[::-1], ms[::-1], color="C0")
    ax.set_xscale("log")
    ax.set_xlabel("tinyar median step (ms); PyTorch is not installed: no ratios")
    ax.set_title("training step, one thread")
ax.grid(alpha=0.3, axis="x")
savefig(fig, "10_ratios.png")

# %% [markdown]
# On the development machine (2 cores, one thread each) tinyar took about 0.75
# to 1.0 times PyTorch's time on all three; other machines, BLAS libraries and
# thread counts give other ratios, which is exactly why the scripts print the
# machine with the table. Two libraries that both spend their
# time in the same BLAS products *should* be close. Where tinyar wins, it is
# usually by doing less around the products: fused elementwise kernels, no
# autograd graph to record, buffers reused from step to step. Where it loses, it
# is by having fewer specialised kernels.
#
# ## Where the time goes
#
# `cProfile`, Python's built-in profiler, records every Python-level function
# call: how often, its own time ("tottime") and its time including what it
# calls ("cumtime"). A tinyar step calls a few hundred Python functions; the
# arithmetic happens inside Numba kernels and BLAS calls, which cProfile sees as
# single calls, so the top of the list names the kernels that cost the most.
# (The profiler adds a little overhead to every Python call; the proportions are
# what count.)

# %%
profiled_steps = pick(5, fast=1)
profiler = cProfile.Profile()
profiler.enable()
for _ in range(profiled_steps):
    tinyar_lm_step()
profiler.disable()
text = io.StringIO()
stats = pstats.Stats(profiler, stream=text).sort_stats("tottime")
stats.print_stats(12)
print("\n".join(line for line in text.getvalue().splitlines()[4:] if line.strip()))

# %%
entries = sorted(stats.stats.items(), key=lambda item: -item[1][2])[:12]
total = sum(v[2] for v in stats.stats.values())
labels = [f"{Path(file).name}:{fn}" if file != "~" else fn.strip("<>") for (file, _, fn), _ in
          entries]
own = [v[2] / profiled_steps * 1e3 for _, v in entries]
fig = new_figure(9, 4.6)
ax = fig.add_subplot()
ax.barh(labels[::-1], own[::-1], color="C0")
ax.set_xlabel("own time per step (ms)")
ax.set_title(f"char LM training step ({total / profiled_steps * 1e3:.0f} ms under the profiler): "
             f"the 12 most expensive functions", fontsize=10)
ax.tick_params(axis="y", labelsize=8)
ax.grid(alpha=0.3, axis="x")
savefig(fig, "10_profile.png")

# %% [markdown]
# How to read it, for the LSTM language model:
#
# * The recurrent loops, `_lstm_forward_loop` and `_lstm_backward_loop`
#   (`tinyar/backend/cpu/rnn.py`): compiled loops over the 128 time steps, each
#   step one small product with W_hh per layer (BLAS, called from inside the
#   loop) and the fused gate math. That loop is inherently sequential, the part
#   no batching can remove. Together about half of the step.
# * The big products over all T·N rows at once: `gemm_accumulate`
#   (`backend/cpu/blas.py`, BLAS called directly to add the weight gradients
#   dW += daᵀ X into `.grad` in place) and `matmul` (`backend/cpu/linalg.py`:
#   the input projections X W_ihᵀ, dX, the output layer). The other half.
# * Everything else, the loss, the embedding, Adam's kernel and a long tail of
#   small Python functions (checks, reshapes, the module calls), a few per cent
#   together.
#
# Profile before optimising: the bottleneck is rarely where one guesses, and a
# kernel that takes 2% of the step cannot make it more than 2% faster. For a
# layer-by-layer view, `python benchmarks/bench_lenet.py --profile` wraps every
# layer's forward and backward with a timer.
#
# ## GPUs
#
# tinyar has a CUDA backend written with `numba.cuda` (chapter 03 wrote a kernel
# for it). Timing it against PyTorch's GPU kernels is **future work**: the
# benchmarks here are CPU benchmarks, and GPU timing needs rules of its own (the
# GPU runs asynchronously, so every timed call must end with a synchronisation;
# the first calls include compiling the kernels for the device).

# %%
from numba import config as numba_config, cuda

# tinyar.cuda_available() is also true in Numba's CUDA simulator, which is no GPU
on_gpu = tinyar.cuda_available() and not numba_config.ENABLE_CUDASIM
if on_gpu:
    name = cuda.get_current_device().name
    print(f"a CUDA GPU is present ({name.decode() if isinstance(name, bytes) else name}): GPU "
          "benchmarks are future work, so none are run here")
else:
    print("no CUDA GPU here (or only Numba's simulator): nothing to time on a GPU")

# %% [markdown]
# ## What to take away
#
# * Warm up, take the median of many calls, alternate the contenders in rounds,
#   and compare ratios measured in one process, not absolute times from
#   different days.
# * Report the machine and the thread counts; compare at equal thread counts; on
#   a shared machine, one BLAS thread (`set_blas_threads(1)`,
#   `TINYAR_BLAS_THREADS=1`) can be many times faster than many.
# * Profile before optimising: `cProfile` shows which kernels a step spends its
#   time in.
#
# `python benchmarks/bench_mlp.py`, `bench_lenet.py`, `bench_char_lm.py`,
# `bench_word_lm.py` and `bench_lstm.py` run the full versions.
