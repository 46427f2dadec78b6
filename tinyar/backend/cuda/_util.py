"""Launch helpers shared by the CUDA kernel files: grid sizes, launches, arrays.

How a kernel runs. A launch ``kernel[blocks, threads](*args)`` starts
``blocks`` blocks of ``threads`` threads each; every thread runs the kernel
body once. Our elementwise kernels use *grid-stride loops*::

    for i in range(cuda.grid(1), n, cuda.gridsize(1)):   # this thread's elements
        out[i] = f(x[i])

so any grid covers any ``n``: thread ``t`` of the whole grid takes elements
t, t + gridsize, t + 2 gridsize, ... (neighbouring threads read neighbouring
addresses: the GPU merges those reads into one memory transaction).

Row kernels (softmax, losses, norms) give each row one block; the block's
threads split the row and combine their partial results with
``block_sum``/``block_max``: a tree reduction in shared memory, log2(threads)
steps separated by ``syncthreads`` barriers. (Warp shuffles would be faster
on a GPU but do not run in numba's CUDA simulator, which our tests use.)

Sizes. On a GPU: 256 threads a block. Under the simulator
(``NUMBA_ENABLE_CUDASIM=1``) every simulated thread is a Python thread
(~0.2 ms each) and every barrier costs a thread switch, so blocks are small
(32 threads, 8 for row reductions) and grids are capped at 2 blocks: the
grid-stride and row loops still run more than once, so the code paths a GPU
takes are exercised on tiny inputs.

Kernels avoid the builtins ``min``/``max``: numba 0.68's CUDA target fails to
compile them ("Signature mismatch": their new varargs overload), which the
simulator does not notice; ``compile_check.py`` compiles every kernel to
PTX to catch such things.

Launch cost on a GPU is ~30 us (docs/performance.md): kernels take numba
device arrays only (a host array argument would be copied both ways on every
launch), and elementwise chains are fused into one kernel.
"""
import math
import os
import sys
import warnings
from contextlib import contextmanager
from functools import lru_cache

import numpy as np

# numba-cuda 0.30 calls np.row_stack, which NumPy 2.5 removed: every compile
# failed with AttributeError until this alias was back (docs/performance.md).
if not hasattr(np, "row_stack"):
    np.row_stack = np.vstack

from numba import cuda  # noqa: E402  (after the shim)
from numba.core.errors import NumbaPerformanceWarning  # noqa: E402

from ...errors import DeviceError  # noqa: E402
from ..scalar import compiler  # noqa: E402


@cuda.jit(device=True)
def _tanh(x):
    return math.tanh(x)


@cuda.jit(device=True)
def _sigmoid(x, one):
    return one / (one + math.exp(-x))


#: ``scalar_function(f)``: a function of ``backend/scalar`` compiled as a CUDA device
#: function (the CPU compiles the same source with ``njit``), with the GPU's tanh and exp.
@cuda.jit(device=True)
def _exp(x):
    return math.exp(x)


@cuda.jit(device=True)
def _erf(x):
    return math.erf(x)


scalar_function = compiler(cuda.jit(device=True), {"tanh": _tanh, "sigmoid": _sigmoid,
                                                   "exp": _exp, "erf": _erf})


def _simulated():
    try:
        from numba.core import config
        return bool(config.ENABLE_CUDASIM)
    except (ImportError, AttributeError):
        return os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0")


SIMULATOR = _simulated()

if SIMULATOR:
    THREADS = 32          # threads per block of the elementwise kernels
    ROW_THREADS = 8       # threads per block of the row reductions (a power of two)
    MAX_BLOCKS = 2        # grid-stride loops cover the rest
else:
    THREADS = 256
    ROW_THREADS = 256
    MAX_BLOCKS = 8192

# numba warns about every launch of fewer than 128 blocks. A small model's
# kernels are small: the warning would fire on most steps and say nothing new.
warnings.filterwarnings("ignore", message=r"(?s).*Grid size \d+ will likely result in GPU "
                        r"under-utilization", category=NumbaPerformanceWarning)

NO_GPU_MESSAGE = ("no CUDA GPU found (numba.cuda.is_available() is False); use --device cpu, "
                  "or set NUMBA_ENABLE_CUDASIM=1 to run the CUDA kernels in the simulator")


# --- is there a device? ---------------------------------------------------------
def is_available():
    """True on a machine with a usable CUDA GPU, and under the simulator."""
    try:
        return bool(cuda.is_available())
    except Exception:  # a broken driver install counts as no GPU
        return False


def require_gpu():
    """Raise ``DeviceError`` (before any allocation) when CUDA cannot run here."""
    if not is_available():
        raise DeviceError(NO_GPU_MESSAGE)


# --- arrays ---------------------------------------------------------------------
def is_device_array(x):
    return hasattr(x, "__cuda_array_interface__") and not isinstance(x, np.ndarray)


def _wrap(array):
    """Under the simulator, a device array with only the real device-array API."""
    if SIMULATOR:
        from ._sim import SimDeviceArray
        return SimDeviceArray.of(array)
    return array


def device_empty(shape, dtype):
    require_gpu()
    return _wrap(cuda.device_array(shape, dtype=np.dtype(dtype)))


def host_to_device(host):
    """A device copy of a host array (any layout; the copy is C-contiguous)."""
    require_gpu()
    host = np.asarray(host)
    if not host.flags.c_contiguous:
        host = host.copy(order="C")
    return _wrap(cuda.to_device(host))


def device(x, dtype=None):
    """``x`` as a device array: device arrays pass through, host data is copied over.

    Ops accept host index arrays (targets, embedding indices) this way, since
    data loaders produce them on the host.
    """
    if is_device_array(x):
        if dtype is not None and x.dtype != np.dtype(dtype):
            raise TypeError(f"expected a device array of dtype {np.dtype(dtype).name}, "
                            f"got {x.dtype.name}")
        return x
    return host_to_device(np.asarray(x, dtype=dtype))


def contiguous(x):
    """x itself when C-contiguous, else a C-contiguous device copy (kernels index flat)."""
    x = device(x)
    if x.is_c_contiguous():
        return x
    copy = device_empty(x.shape, x.dtype)
    copy[(slice(None),) * x.ndim] = x  # numba's strided copy kernel (it takes no "...")
    return copy


def flat(x):
    """A 1-D view of a contiguous device array."""
    return x.reshape(x.size)


def out_like(out, x, dtype=None, shape=None):
    """The output of an op: ``out`` when given (checked), else a new device array."""
    shape = tuple(x.shape) if shape is None else tuple(shape)
    dtype = np.dtype(dtype or x.dtype)
    if out is None:
        return device_empty(shape, dtype)
    if not is_device_array(out):
        raise TypeError(f"out must be a device array, got {type(out).__name__}")
    if tuple(out.shape) != shape or out.dtype != dtype or not out.is_c_contiguous():
        raise ValueError(f"out must be a C-contiguous {dtype.name} device array of shape "
                         f"{shape}, got {out.dtype.name} {tuple(out.shape)}")
    return out


def updated_in_place(name, x):
    """Arrays an op updates must be contiguous device arrays (a copy would be updated)."""
    if not is_device_array(x):
        raise TypeError(f"{name} is updated in place and must be a device array, got "
                        f"{type(x).__name__}")
    if not x.is_c_contiguous():
        raise ValueError(f"{name} is updated in place and must be C-contiguous")
    return x


def as_float(value, like):
    """A Python scalar as the dtype of ``like`` (keeps float32 kernels float32)."""
    return like.dtype.type(value)


@lru_cache(maxsize=None)
def _constant(n, dtype, value):
    array = device_empty(n, dtype)
    fill(array, value)
    return array


def ones(n, dtype):
    """A cached device array of ``n`` ones (a missing class weight); never write to it."""
    return _constant(int(n), np.dtype(dtype), 1)


def zeros(n, dtype):
    """A cached device array of ``n`` zeros (a missing bias); never write to it."""
    return _constant(int(n), np.dtype(dtype), 0)


def scratch(dtype):
    """An empty device array standing for state a kernel does not read (None on the CPU)."""
    return _constant(0, np.dtype(dtype), 0)


def clear_constants():
    _constant.cache_clear()


# --- launching ------------------------------------------------------------------
def blocks_for(n, threads=THREADS):
    """Blocks for a grid-stride loop over ``n`` items (at least 1, at most MAX_BLOCKS)."""
    return max(1, min(math.ceil(n / threads), MAX_BLOCKS))


@contextmanager
def _fast_thread_switching():
    # The simulator runs each CUDA thread as a Python thread; at a barrier they
    # hand the GIL to each other, which with Python's default 5 ms switch
    # interval made a 32-thread reduction take ~120 ms instead of ~10 ms.
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    try:
        yield
    finally:
        sys.setswitchinterval(previous)


class LaunchCounter:
    """How many kernels were launched while it was active (``count_launches``)."""

    def __init__(self):
        self.count = 0
        self.by_kernel = {}

    def add(self, kernel):
        self.count += 1
        fn = kernel.fn if hasattr(kernel, "fn") else kernel.py_func  # simulator / GPU
        name = fn.__name__
        self.by_kernel[name] = self.by_kernel.get(name, 0) + 1


_ACTIVE_COUNTERS = []


@contextmanager
def count_launches():
    """Count the kernel launches of the ops run inside the block::

        with count_launches() as launches:
            train_step()
        print(launches.count, launches.by_kernel)

    Launch overhead (~30 us each on an H100) is what a small model's GPU step
    mostly costs, so the benchmarks report this number beside the time.
    Launches numba makes on its own (strided copies) are not counted.
    """
    counter = LaunchCounter()
    _ACTIVE_COUNTERS.append(counter)
    try:
        yield counter
    finally:
        _ACTIVE_COUNTERS.remove(counter)


def launch(kernel, blocks, threads, *args):
    """kernel[blocks, threads](*args)."""
    for counter in _ACTIVE_COUNTERS:
        counter.add(kernel)
    if SIMULATOR:
        from ._sim import kernel_modules_follow_the_launch
        with _fast_thread_switching(), kernel_modules_follow_the_launch():
            kernel[blocks, threads](*args)
    else:
        kernel[blocks, threads](*args)


def launch_flat(kernel, n, *args):
    """A grid-stride kernel over ``n`` elements (nothing to do when n == 0)."""
    if n:
        launch(kernel, blocks_for(n), THREADS, *args)


def launch_rows(kernel, rows, *args):
    """A kernel with one block of ROW_THREADS threads per row (grid-stride over rows)."""
    if rows:
        launch(kernel, min(rows, MAX_BLOCKS if SIMULATOR else 65535), ROW_THREADS, *args)


# --- kernels every file uses --------------------------------------------------------
@cuda.jit
def _fill(x, value):
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        x[i] = value


def fill(x, value):
    """Set every element of a contiguous device array to ``value``."""
    if x.size:
        launch_flat(_fill, x.size, flat(x), x.dtype.type(value))
    return x


@cuda.jit(device=True)
def block_sum(buf, value):
    """The sum of ``value`` over the threads of the block; every thread gets it.

    ``buf``: a shared array of blockDim.x elements (a power of two). Every
    thread of the block must call this (it contains barriers).
    """
    t = cuda.threadIdx.x
    buf[t] = value
    cuda.syncthreads()
    step = cuda.blockDim.x // 2
    while step > 0:  # pairwise: log2(threads) rounds
        if t < step:
            buf[t] += buf[t + step]
        cuda.syncthreads()
        step //= 2
    total = buf[0]
    cuda.syncthreads()  # everyone has read buf[0] before anyone writes buf again
    return total


@cuda.jit(device=True)
def block_max(buf, value):
    """The max of ``value`` over the threads of the block (as ``block_sum``)."""
    t = cuda.threadIdx.x
    buf[t] = value
    cuda.syncthreads()
    step = cuda.blockDim.x // 2
    while step > 0:
        if t < step and buf[t + step] > buf[t]:
            buf[t] = buf[t + step]
        cuda.syncthreads()
        step //= 2
    total = buf[0]
    cuda.syncthreads()
    return total
