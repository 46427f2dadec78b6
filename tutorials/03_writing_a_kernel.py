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
# # 03 · Writing a kernel
#
# Under every tinyar layer sit *kernels*: small functions that loop over the
# numbers of an array and do the arithmetic. This chapter writes one kernel three
# ways and measures them:
#
# 1. **NumPy**: a few lines of whole-array expressions. Correct, readable, and our
#    reference.
# 2. **Numba on the CPU**: an explicit loop compiled to machine code with
#    `@njit(cache=True)`, the way tinyar's CPU backend is written.
# 3. **numba.cuda**: the same loop as a GPU kernel, one thread per element. It
#    runs on a real GPU when there is one and otherwise in Numba's CUDA
#    *simulator*, which runs each GPU thread in Python on the CPU.
#
# We check that all three agree, time NumPy against Numba across array sizes,
# and end with how tinyar organises its kernels: the backend contract, the op
# list with a NumPy reference for every op, and the test that holds them together.
#
# The first cell has to choose between the GPU and the simulator *before* Numba is
# imported, because Numba reads `NUMBA_ENABLE_CUDASIM` once, at import. In a
# notebook, restart the kernel if you change it.

# %%
import ctypes
import os


def cuda_gpu_present():
    """Whether a CUDA driver and at least one GPU are there; asked without importing Numba."""
    for library in ("libcuda.so.1", "libcuda.so", "nvcuda.dll"):
        try:
            driver = ctypes.CDLL(library)
        except OSError:
            continue
        count = ctypes.c_int(0)
        return (driver.cuInit(0) == 0 and driver.cuDeviceGetCount(ctypes.byref(count)) == 0
                and count.value > 0)
    return False


if "NUMBA_ENABLE_CUDASIM" not in os.environ and not cuda_gpu_present():
    os.environ["NUMBA_ENABLE_CUDASIM"] = "1"     # no GPU: simulate one (slowly) on the CPU
SIMULATOR = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"
print("CUDA kernels will run", "in the simulator" if SIMULATOR else "on the GPU")

# %%
from _common import median_time, new_figure, pick, savefig

import math

import numpy as np
from numba import cuda, float32, njit

from tinyar.backend import backend_of
from tinyar.backend.cpu._util import FASTMATH
from tinyar.backend.cpu.fastmath import fast_sigmoid, fast_tanh
from tinyar.backend.ops import REGISTRY

if not hasattr(np, "row_stack"):   # numba-cuda 0.30 still calls it; NumPy 2.5 removed it
    np.row_stack = np.vstack

# the figures this chapter saves (tests/tutorials checks that it does)
FIGURES = ["03_timings.png"]

# %% [markdown]
# ## The operation: one step of an LSTM cell
#
# An LSTM layer (chapter 06 trains one) does two kinds of work at every time step.
# Matrix products turn the input and the previous hidden state into four blocks of
# *preactivations* per row, a = [a_i, a_f, a_g, a_o] (N × 4H). Those products go to
# BLAS. Everything after them is *elementwise*, for each row n and hidden unit j:
#
# ```
# i = σ(a_i)    f = σ(a_f)    g = tanh(a_g)    o = σ(a_o)      σ(x) = 1 / (1 + e^(−x))
# c = f ⊙ c_prev + i ⊙ g        the new cell state        (N, H)
# h = o ⊙ tanh(c)               the new hidden state      (N, H)
# ```
#
# Five transcendental functions and a few multiply-adds per element, on arrays of
# a few thousand to a few million numbers. Work like this is where a hand-written
# kernel pays, because of how NumPy evaluates it.
#
# ## Way 1: NumPy

# %%
def lstm_cell_numpy(gates, c_prev):
    """(h, c) of one LSTM step; gates (N, 4H) = [a_i, a_f, a_g, a_o], c_prev (N, H)."""
    H = c_prev.shape[1]
    i = 1 / (1 + np.exp(-gates[:, 0 * H:1 * H]))
    f = 1 / (1 + np.exp(-gates[:, 1 * H:2 * H]))
    g = np.tanh(gates[:, 2 * H:3 * H])
    o = 1 / (1 + np.exp(-gates[:, 3 * H:4 * H]))
    c = f * c_prev + i * g
    h = o * np.tanh(c)
    return h, c


# %% [markdown]
# Readable, and each line runs compiled C with SIMD instructions. But each
# operator makes a full pass over memory and writes a new temporary array:
# `np.exp(-x)` is two passes (negate, exp), `1 + ...` a third, `1 / ...` a fourth,
# and so on, about 20 passes for the cell. Once the arrays outgrow the CPU caches,
# memory traffic, not arithmetic, sets the speed. A **fused** kernel reads each
# input once, keeps every intermediate in registers, and writes each output once.
#
# ## Way 2: a Numba CPU kernel
#
# Numba compiles a Python function of loops and scalar arithmetic to machine code
# (through LLVM) the first time it is called with a given set of argument types.
# Here is the cell as one loop, written the way tinyar's CPU kernels are:

# %%
@njit(cache=True, fastmath=FASTMATH, error_model="numpy")
def lstm_cell_libm(gates, c_prev, h, c):
    """The LSTM step as one fused loop, with the math module's exp and tanh."""
    N, H = c.shape
    one = c.dtype.type(1)           # a bare 1.0 is float64 and would promote float32 math
    for n in range(N):
        a_i, a_f, a_g, a_o = gates[n, :H], gates[n, H:2 * H], gates[n, 2 * H:3 * H], \
            gates[n, 3 * H:]        # 1-D views of the four gate blocks of row n
        for j in range(H):
            i = one / (one + math.exp(-a_i[j]))
            f = one / (one + math.exp(-a_f[j]))
            g = math.tanh(a_g[j])
            o = one / (one + math.exp(-a_o[j]))
            c_new = f * c_prev[n, j] + i * g
            c[n, j] = c_new
            h[n, j] = o * math.tanh(c_new)


# %% [markdown]
# What each choice means:
#
# * **Outputs are arguments.** The kernel writes into `h` and `c`, allocated by
#   the caller. In tinyar a thin Python wrapper allocates them (or reuses
#   preallocated buffers, as the LSTM layer does for every time step).
# * **`cache=True`** saves the compiled machine code on disk, so the next Python
#   process loads it in milliseconds instead of compiling again for a fraction of
#   a second. (Numba's default place is `__pycache__` next to the source; tinyar
#   points it at `~/.cache/tinyar/numba/`, in a folder named by a hash of all its
#   kernel sources, so that editing any kernel file starts a fresh cache: see
#   `tinyar/backend/cpu/cache.py`.)
# * **A serial loop.** Numba can run a loop on several threads (`parallel=True`,
#   `prange`), but this kernel is serial, and so are most of tinyar's, on
#   purpose: the matrix products around them already use every core through
#   BLAS, and two pools of threads on the same cores fight (a kernel next to an
#   OpenBLAS product ran 16x slower). Only where the BLAS and Numba share one
#   pool (MKL on GNU OpenMP, the `mkl` extra) do the big sweeps get a threaded
#   twin: the same loop over a range of rows, called once per thread from a
#   `prange`. The recurrent layers split the batch that way, each thread
#   running the whole time loop of its rows (`tinyar/backend/cpu/threads.py` has the
#   policy and the measurements, `tinyar/backend/cpu/rnn.py` the split).
# * **`fastmath=FASTMATH`** lets LLVM reorder additions, fuse multiply-adds and
#   use SIMD instructions. tinyar's set (`tinyar/backend/cpu/_util.py`) leaves out
#   the flags that assume no NaN or infinity can occur: a NaN loss must stay NaN
#   so that training can stop and say so.
# * **`error_model="numpy"`**: by default Numba checks every division for a zero
#   divisor, to raise `ZeroDivisionError` as Python would. That branch keeps LLVM
#   from vectorising the loop. With NumPy's error model, 1/0 is inf, as in NumPy.
# * **`one = c.dtype.type(1)`** keeps float32 arithmetic in float32.
#
# And one thing that does *not* work as hoped: `math.exp` and `math.tanh`. The
# pip builds of Numba's LLVM come without Intel's SVML, the library of vector
# versions of these functions, so each call is a scalar call into the C library
# and the loop around it cannot use SIMD. NumPy ships its own vectorised `exp`
# and `tanh`. tinyar works around it in `tinyar/backend/cpu/fastmath.py`: for
# float32, `fast_tanh` is a rational polynomial (the one Eigen uses, error ~2e-7)
# and `fast_sigmoid(x) = (1 + tanh(x/2))/2`. Polynomials are multiply-adds, which
# LLVM vectorises. float64, which the gradient checks use, keeps the exact
# functions: the same kernel source compiles to either, by the argument type.

# %%
@njit(cache=True, fastmath=FASTMATH, error_model="numpy")
def lstm_cell_fast(gates, c_prev, h, c):
    """The same loop with tinyar's vectorisable fast_sigmoid / fast_tanh."""
    N, H = c.shape
    for n in range(N):
        a_i, a_f, a_g, a_o = gates[n, :H], gates[n, H:2 * H], gates[n, 2 * H:3 * H], \
            gates[n, 3 * H:]
        for j in range(H):
            i = fast_sigmoid(a_i[j])
            f = fast_sigmoid(a_f[j])
            g = fast_tanh(a_g[j])
            o = fast_sigmoid(a_o[j])
            c_new = f * c_prev[n, j] + i * g
            c[n, j] = c_new
            h[n, j] = o * fast_tanh(c_new)


def run_cpu_kernel(kernel, gates, c_prev):
    """The thin wrapper: contiguous inputs, new outputs, one kernel call."""
    gates, c_prev = np.ascontiguousarray(gates), np.ascontiguousarray(c_prev)
    h, c = np.empty_like(c_prev), np.empty_like(c_prev)
    kernel(gates, c_prev, h, c)
    return h, c


# %% [markdown]
# ## Way 3: a CUDA kernel
#
# A GPU runs thousands of threads at once. A CUDA kernel is the body of the loop,
# run by every thread for *its own* element. Threads come in blocks (here 128
# threads each, a multiple of the 32-thread warp), and the blocks form a grid.
# `cuda.grid(1)` is a thread's global index, blockIdx.x × blockDim.x + threadIdx.x.
# We launch ⌈N·H / 128⌉ blocks, so the last block may have threads past the end of
# the data: the bounds check `if k < N * H` sends them home. Thread k handles row
# n = k // H, unit j = k mod H; consecutive threads read consecutive addresses,
# so a warp's 32 loads combine into a few memory transactions (*coalescing*).

# %%
@cuda.jit
def lstm_cell_cuda(gates, c_prev, h, c):
    """One thread per (n, j): the LSTM step for float32 arrays on the GPU."""
    k = cuda.grid(1)
    N, H = c.shape
    if k < N * H:
        n = k // H
        j = k - n * H
        one = float32(1.0)          # float32 constants: float64 math is slow on most GPUs
        i = one / (one + math.exp(-gates[n, j]))
        f = one / (one + math.exp(-gates[n, H + j]))
        g = math.tanh(gates[n, 2 * H + j])
        o = one / (one + math.exp(-gates[n, 3 * H + j]))
        c_new = f * c_prev[n, j] + i * g
        c[n, j] = c_new
        h[n, j] = o * math.tanh(c_new)


THREADS_PER_BLOCK = 128


def run_cuda_kernel(gates, c_prev):
    """Copy to the device, launch, copy back. (In a model the arrays would stay on the GPU.)"""
    d_gates, d_c_prev = cuda.to_device(gates), cuda.to_device(c_prev)
    d_h = cuda.device_array(c_prev.shape, np.float32)
    d_c = cuda.device_array(c_prev.shape, np.float32)
    blocks = (c_prev.size + THREADS_PER_BLOCK - 1) // THREADS_PER_BLOCK
    lstm_cell_cuda[blocks, THREADS_PER_BLOCK](d_gates, d_c_prev, d_h, d_c)
    return d_h.copy_to_host(), d_c.copy_to_host()


# %% [markdown]
# ## Do all three agree?
#
# The simulator runs every thread as Python, about 0.2 ms each, so the test
# arrays are small: 8 rows × 64 units, 512 threads in 4 blocks. The reference is
# NumPy in float64; everything else runs in float32, whose rounding is about 6e-8
# relative. We also call tinyar's own kernel for this op, `B.lstm_cell_forward`,
# through the backend of the array (more on that below).

# %%
rng = np.random.default_rng(0)
N, H = 8, 64
gates = (rng.standard_normal((N, 4 * H)) * 2).astype(np.float32)
c_prev = rng.standard_normal((N, H)).astype(np.float32)

h_ref, c_ref = lstm_cell_numpy(gates.astype(np.float64), c_prev.astype(np.float64))
B = backend_of(gates)                                   # the CPU backend, for a NumPy array
h_tinyar, c_tinyar, _ = B.lstm_cell_forward(gates, c_prev)
results = {
    "NumPy, float32": lstm_cell_numpy(gates, c_prev),
    "Numba, math.exp/tanh": run_cpu_kernel(lstm_cell_libm, gates, c_prev),
    "Numba, fast_sigmoid/tanh": run_cpu_kernel(lstm_cell_fast, gates, c_prev),
    "tinyar B.lstm_cell_forward": (h_tinyar, c_tinyar),
}
try:
    results["CUDA (simulator)" if SIMULATOR else "CUDA (GPU)"] = run_cuda_kernel(gates, c_prev)
except Exception as error:   # a GPU without the CUDA toolkit Numba needs to compile
    print(f"the CUDA kernel could not run here ({type(error).__name__}: {error}); run with "
          f"NUMBA_ENABLE_CUDASIM=1 to use the simulator")

print(f"{'implementation':<28}{'max |h - ref|':>15}{'max |c - ref|':>15}")
for name, (h, c) in results.items():
    h_err, c_err = np.abs(h - h_ref).max(), np.abs(c - c_ref).max()
    print(f"{name:<28}{h_err:>15.2e}{c_err:>15.2e}")
    assert h.dtype == np.float32 and h_err < 1e-5 and c_err < 1e-5, name

# %% [markdown]
# All agree to a few 1e-7: float32 rounding, plus the ~2e-7 error of the
# polynomial tanh. (A wrong index, say `gates[n, H + j]` where `2 * H + j` was
# meant, gives errors of order 1.)
#
# ## Timing NumPy against Numba
#
# How to time a kernel honestly:
#
# * **Warm up first.** The first call of a Numba function compiles it (or loads
#   it from the cache); that is a one-time cost, not the kernel's speed.
# * **Repeat and take the median**, which ignores the odd call slowed down by
#   something else on the machine.
# * **Vary the size.** Small arrays measure call overhead; mid-sized ones, which
#   fit in the caches, arithmetic; large ones, memory bandwidth.
#
# We report nanoseconds per element (N·H elements, one per hidden unit and row).

# %%
hidden_sizes = pick([32, 128, 512, 2048, 8192, 32768], fast=[32, 512])
repeats = pick(9, fast=2)
rows = 32
contenders = {
    "NumPy": lambda g, cp: lstm_cell_numpy(g, cp),
    "Numba, math.exp/tanh": lambda g, cp: run_cpu_kernel(lstm_cell_libm, g, cp),
    "Numba, fast_sigmoid/tanh": lambda g, cp: run_cpu_kernel(lstm_cell_fast, g, cp),
    "tinyar B.lstm_cell_forward": lambda g, cp: B.lstm_cell_forward(g, cp),
}
timings = {name: [] for name in contenders}
sizes = []
for hidden in hidden_sizes:
    g = rng.standard_normal((rows, 4 * hidden)).astype(np.float32)
    cp = rng.standard_normal((rows, hidden)).astype(np.float32)
    sizes.append(rows * hidden)
    line = []
    for name, fn in contenders.items():
        seconds = median_time(lambda: fn(g, cp), repeats=repeats, warmup=1)
        timings[name].append(seconds / (rows * hidden) * 1e9)
        line.append(f"{name} {timings[name][-1]:6.2f}")
    print(f"{rows}×{hidden:<6} ({rows * hidden:>9,} elements)  ns/element: " + ",  ".join(line))

# %%
fig = new_figure(11, 4.2)
ax_time, ax_speedup = fig.subplots(1, 2)
for name, ns in timings.items():
    ax_time.loglog(sizes, ns, "o-", label=name)
    ax_speedup.semilogx(sizes, np.array(timings["NumPy"]) / np.array(ns), "o-", label=name)
ax_time.set_xlabel("elements (N × H)")
ax_time.set_ylabel("ns per element (median)")
ax_time.set_title("one LSTM step, float32, one core")
ax_speedup.axhline(1.0, color="0.5", lw=0.8)
ax_speedup.set_xlabel("elements (N × H)")
ax_speedup.set_ylabel("speed-up over NumPy")
ax_speedup.set_title("higher is faster")
for ax in (ax_time, ax_speedup):
    ax.grid(alpha=0.3, which="both")
ax_time.legend(fontsize=8)
savefig(fig, "03_timings.png")

# %% [markdown]
# What the measurements say (on the 2-core development machine; yours will differ
# in the numbers, rarely in the order):
#
# * **The loop with `math.exp` is the slowest of all**, several times slower than
#   NumPy, fused or not: five scalar library calls per element, no SIMD. Compiling
#   a loop is not automatically fast.
# * **The loop with `fast_sigmoid`/`fast_tanh` is the fastest**, a few times faster
#   than NumPy, and its lead grows once the arrays leave the caches: NumPy's ~20
#   passes over memory cost more than its arithmetic.
# * **tinyar's `lstm_cell_forward`** is the same fused loop but does a little more
#   work: it also returns the four gate activations [i, f, g, o], which the
#   backward pass needs, in a copy of `gates` (in the LSTM layer it overwrites its
#   preactivation buffer instead, so no copy is made).
# * For small arrays the cost per element rises for everyone: the fixed cost of a
#   call (the Python call, the wrapper, allocating the outputs) is shared by fewer
#   elements. NumPy pays it about 20 times, once per operator, so fusing pays at
#   both ends of the scale: small arrays (fewer calls) and large ones (fewer
#   passes over memory).
#
# The CUDA kernel is not timed here. In the simulator it measures Python, not a
# GPU. On a real GPU, time it with device arrays already on the GPU and
# `cuda.synchronize()` after the launch: a kernel launch returns before the
# kernel has finished, and copying host arrays in and out costs far more than the
# kernel itself.

# %% [markdown]
# ## How tinyar organises kernels
#
# A layer never imports a kernel file. It asks for the backend of its input and
# calls a named op:
#
# ```python
# B = backend_of(x)            # tinyar.backend.cpu for a NumPy array
# h, c, acts = B.lstm_cell_forward(gates, c_prev)
# ```
#
# Every op is listed once in `tinyar/backend/ops/<topic>.py` with its shapes and a
# **NumPy reference**, the plain expression it must compute, plus an `example`
# that builds small random arguments:

# %%
spec = REGISTRY["lstm_cell_forward"]
print("op:        ", spec.name)
print("shapes:    ", spec.shapes)
print("reference: ", f"{spec.reference.__module__}.{spec.reference.__name__}")
print("tolerance: ", f"float32 rtol={spec.rtol32}, atol={spec.atol32}")
print(f"{len(REGISTRY)} ops are listed, e.g.", ", ".join(sorted(REGISTRY)[:6]), "...")

# %% [markdown]
# `tests/backend/test_ops.py` calls every op of every backend on the example
# arguments, in float32 and float64, with contiguous and strided inputs, and
# compares the result with the reference. Here is that test, by hand, for our own
# fast kernel against tinyar's reference (the reference also returns the
# activations, which our kernel does not compute):

# %%
for dtype in (np.float32, np.float64):
    args = spec.example(np.random.default_rng(7), dtype)
    h_expected, c_expected, _ = spec.reference(**args)
    h_got, c_got = run_cpu_kernel(lstm_cell_fast, args["gates"], args["c_prev"])
    tolerance = dict(rtol=spec.rtol32, atol=spec.atol32) if dtype == np.float32 else \
        dict(rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(h_got, h_expected, **tolerance)
    np.testing.assert_allclose(c_got, c_expected, **tolerance)
    print(f"{np.dtype(dtype).name}: our kernel matches the reference "
          f"(largest difference {max(np.abs(h_got - h_expected).max(), np.abs(c_got - c_expected).max()):.1e})")

# %% [markdown]
# float64 matches to 1e-10: there the fast functions compile to the exact `math`
# ones. To make a kernel of your own part of tinyar:
#
# 1. add the NumPy reference to `tinyar/backend/ops/<topic>.py` with the `@op(...)`
#    decorator (shapes, an `example`, and `inplace=`/`contiguous=` when it updates
#    or needs contiguous arguments);
# 2. write the `@njit(cache=True, fastmath=FASTMATH, error_model="numpy")` kernel
#    and its thin wrapper, *with the same name and signature*, in
#    `tinyar/backend/cpu/<topic>.py`, and list the wrapper in the file's `__all__`;
#    the backend picks it up from there;
# 3. (later) the numba.cuda version in `tinyar/backend/cuda/<topic>.py`, the same
#    name again;
# 4. call it from the layer as `B.<name>(...)`; `tests/backend/test_ops.py` tests it
#    without any new test code.
#
# The layer stays readable math, the kernel stays a small loop you can test alone,
# and the same layer code runs on either backend.
#
# Next: chapter 06 trains a whole LSTM language model, where this kernel runs
# once per time step and layer.
