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
# # 11 · Running on a GPU
#
# The same layers run on an NVIDIA GPU, on kernels written with `numba.cuda`
# (`tinyar/backend/cuda/`, one file per topic, the same op names as the CPU's).
# This chapter shows what changes and what does not:
#
# 1. where arrays live: `to_device`, `to_host`, `model.to("cuda")`, and how a
#    layer finds its kernels (`backend_of`);
# 2. why a GPU step is counted in **kernel launches**, and how tinyar's
#    recurrent layers run a whole sequence in one launch;
# 3. the same training run on both devices, number for number, dropout included.
#
# No GPU? The chapter then runs the CUDA kernels in numba's **simulator**
# (`NUMBA_ENABLE_CUDASIM=1`): every GPU thread becomes a Python thread, so the
# results are exact and the speed is thousands of times slower. That is how
# tinyar's CUDA tests run on machines without a GPU, and why the models below
# are tiny.

# %%
import os
import shutil

# The simulator must be chosen before numba is imported: without an NVIDIA
# driver (no nvidia-smi), use it.
if shutil.which("nvidia-smi") is None:
    os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")

from _common import new_figure, pick, savefig  # noqa: E402

import numpy as np  # noqa: E402

import tinyar  # noqa: E402
from tinyar.backend import backend_of  # noqa: E402
from tinyar.backend.cuda import SIMULATOR, count_launches  # noqa: E402
from tinyar.nn import LSTM, Dropout, Linear, ReLU, Sequential  # noqa: E402
from tinyar.nn.loss import CrossEntropyLoss  # noqa: E402
from tinyar.optim import Adam  # noqa: E402

FIGURES = ["11_launches_per_step.png"]
print("CUDA kernels run", "in numba's simulator" if SIMULATOR else "on the GPU")

# %% [markdown]
# ## 1 · Where arrays live
#
# There is no tensor class: on the CPU an array is a NumPy array, on the GPU a
# numba device array. `to_device` copies host data over, `to_host` copies it
# back. A layer never asks where it runs: it calls `B = backend_of(x)` and then
# named ops, `B.relu_forward(x)`, which are NumPy-and-Numba functions for a NumPy
# array and `numba.cuda` kernels for a device array.

# %%
x = np.array([[-1.0, 2.0, -3.0, 4.0]], np.float32)
x_gpu = tinyar.to_device(x, "cuda")
print(type(x).__name__, "->", type(x_gpu).__name__)
print("backend of x:", backend_of(x).name, "| backend of x_gpu:", backend_of(x_gpu).name)
y_gpu = backend_of(x_gpu).relu_forward(x_gpu)       # a numba.cuda kernel
print("relu on the GPU, copied back:", tinyar.to_host(y_gpu))

# %% [markdown]
# A model moves with `model.to("cuda")`: its parameters live in one flat buffer
# per device (so an optimizer step stays one kernel), and every layer's forward
# and backward then run on device arrays. The batch going in is moved with
# `to_device` (a layer given a NumPy array while its parameters are on the GPU
# says so, rather than failing inside a kernel); integer inputs (token ids,
# class labels) may stay NumPy arrays, which the embedding and the losses copy
# over themselves, and the classifiers and language models move their batches
# for you.

# %%
tinyar.manual_seed(0)
mlp = Sequential(Linear(4, 8), ReLU(), Linear(8, 3)).to("cuda")
print("parameters on:", backend_of(mlp.parameters()[0].data).name)
logits = mlp(x_gpu)
print("logits:", tinyar.to_host(logits).round(3))
try:
    mlp(x)  # a NumPy batch for a GPU model
except tinyar.errors.DeviceError as error:
    print("DeviceError:", error)

# %% [markdown]
# ## 2 · Launches are the enemy
#
# Starting a kernel from Python costs about 30 µs on an H100, and a small
# model's kernels often *run* for less than that. So a GPU step is counted in
# launches: `count_launches()` counts the kernels the ops inside the block
# start.
#
# A recurrent layer is where this bites. The CPU's loop does, per time step, one
# matrix product with W_hh and one fused gate kernel: on a GPU that would be 2
# launches per step, 256 for a 128-step sequence, per layer and direction.
# tinyar's CUDA LSTM instead runs the **whole time loop in one kernel**: each
# block of threads takes some rows of the batch (rows never interact in the
# recurrence) and walks all T steps itself, with a barrier between steps
# (`tinyar/backend/cuda/rnn.py` explains it, and how it relates to Diamos et
# al.'s "Persistent RNNs", 2016). So the count does not grow with T:

# %%
lstm = LSTM(3, 5).to("cuda")
for steps in (2, 8):
    sequence = tinyar.to_device(np.ones((2, steps, 3), np.float32), "cuda")
    lstm(sequence)  # a first call allocates the layer's workspace
    with count_launches() as launches:
        output, _ = lstm(sequence)
        lstm.backward(output)
    print(f"T = {steps}: {launches.count} launches for forward + backward "
          f"({launches.by_kernel})")

# %% [markdown]
# ## 3 · One training run, two devices
#
# The CPU and CUDA backends compute the same formulas, so the same seed gives
# the same run on both, up to float32 rounding (sums are added in another
# order). Dropout too: its masks come from a **counter-based** generator
# (Philox, the one cuRAND uses), where element i's random number is a pure
# function of (seed, i), so the GPU's threads and the CPU's loop draw the same
# bits.

# %%
rng = np.random.default_rng(1)
data = rng.standard_normal((16, 4)).astype(np.float32)
labels = rng.integers(0, 3, 16)
steps = pick(8, 3)


def train(device):
    tinyar.manual_seed(0)
    model = Sequential(Linear(4, 16), ReLU(), Dropout(0.25), Linear(16, 3))
    if device == "cuda":
        model.to("cuda")
    optimizer, criterion = Adam(model.parameters(), lr=0.05), CrossEntropyLoss()
    inputs = tinyar.to_device(data, device)  # the batch going in (labels may stay on the host)
    losses, launches_per_step = [], None
    for _ in range(steps):
        with count_launches() as launches:
            loss = criterion(model(inputs), labels)
            model.zero_grad()
            model.backward(criterion.backward(), input_grad=False)
            optimizer.step()
        losses.append(loss)
        launches_per_step = launches
    return losses, launches_per_step


cpu_losses, _ = train("cpu")
gpu_losses, launches = train("cuda")
print("step   CPU loss    CUDA loss")
for i, (a, b) in enumerate(zip(cpu_losses, gpu_losses)):
    print(f"{i + 1:>4}   {a:.6f}    {b:.6f}")
print("largest difference:", max(abs(a - b) for a, b in zip(cpu_losses, gpu_losses)))

# %% [markdown]
# Where does a step's kernel count come from? Each layer launches a few kernels
# forward and backward; the optimizer is one fused kernel over the flat buffer
# of all parameters, whatever their number.

# %%
names = sorted(launches.by_kernel, key=launches.by_kernel.get)
fig = new_figure(7, 4)
ax = fig.add_subplot()
ax.barh(names, [launches.by_kernel[n] for n in names], color="tab:green")
ax.set_xlabel("launches in one training step")
ax.set_title(f"MLP training step on CUDA: {launches.count} kernel launches")
ax.grid(axis="x", alpha=0.3)
savefig(fig, "11_launches_per_step.png")

# %% [markdown]
# ## What to take away
#
# * The same layer code runs on both devices: a layer asks its input for the
#   backend and calls named ops.
# * On a GPU, count launches before anything else; fuse elementwise chains, and
#   give a recurrence one kernel for the whole sequence.
# * Counter-based random numbers make dropout reproducible across devices.
# * On a real GPU, `python benchmarks/bench_gpu.py` times tinyar against PyTorch
#   CUDA and prints the launches per step; `tinyar train --device cuda` trains
#   the language model there.
