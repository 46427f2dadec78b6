"""How Numba's threads and the BLAS threads share the cores: decided once, here.

Measured on the 2-core development machines (``docs/performance.md`` keeps the
figures; ``benchmarks/bench_threads.py`` times the kernels serial against threaded):
with Numba's default OpenMP threading layer, a ``prange`` kernel called
between two OpenBLAS matrix products made the pair about 16x slower (7.7 ms
instead of 0.48 ms), because the OpenMP workers spin after the kernel and
steal the cores the BLAS threads need. Two pools of threads on the same cores
fight; one pool does not. So the policy depends on the BLAS (``blas.py``):

With MKL (the ``mkl`` extra), one pool: MKL is told to run on GNU OpenMP
(``MKL_THREADING_LAYER=GNU``) and Numba on its ``omp`` layer, the same
libgomp, so a matrix product and a ``prange`` kernel use the same threads one
after the other. Then the kernels that sweep megabytes between two products
run on every core too (``PARALLEL_KERNELS``: the max-pool, the copies around
the convolution products, the recurrent time loops, the multi-level softmax's
class loop, ``zero_grad``), as PyTorch's do: LeNet's step went from 11.2 to
9.8 ms and the word LM's from 25.4 to 21.8 ms; with the workqueue layer the
same kernels gained nothing or lost.

GNU OpenMP is not fork-safe: in a child forked (``multiprocessing``'s
``fork`` start method, the default on Linux before Python 3.14) after the
parent used its threads, MKL's next threaded product hangs and Numba's next
``prange`` kernel kills the process ("fork() called from a process already
using GNU OpenMP"). So such a child runs serially: a fork handler sets
``THREADS_USABLE`` and ``PARALLEL_KERNELS`` to False there and MKL to one
thread (``tests/backend/test_threads.py`` forks a child that trains a step).
The ``spawn`` and ``forkserver`` start methods start fresh processes and keep
every core.

With NumPy's OpenBLAS (the default install), OpenBLAS keeps its own pthreads:

1. Numba uses the ``workqueue`` threading layer: plain pthreads that sleep
   when idle, so they never spin against OpenBLAS and leave torch's OpenMP
   settings alone. (A user who sets ``NUMBA_THREADING_LAYER`` keeps theirs.)
2. Kernels are serial, and vectorised (``error_model="numpy"``, see
   ``cpu/_util.py``). A workqueue ``prange`` launch costs 20-60 us and the
   second worker wakes late: Adam over 670k floats ran 0.37 ms serial and
   0.41 ms on two workqueue threads (0.19 ms with OpenMP, which we cannot
   use next to OpenBLAS). Only the optimizer kernels keep a ``prange``
   variant, used for buffers of over a million elements (``cpu/optim.py``),
   where the launch cost is amortised.
3. BLAS keeps its own threads (all cores) for matrix products. On a machine
   where other processes keep the cores busy, OpenBLAS's spinning threads can
   collapse (an LSTM language-model step measured 3.1 s instead of 41 ms
   while another process used a core): set ``TINYAR_BLAS_THREADS=1`` there,
   or call ``tinyar.backend.cpu.threads.set_blas_threads(1)``.
"""
import os

import numba

THREADING_LAYER = "workqueue"  # decided by configure()
PARALLEL_KERNELS = False  # whether kernels between products may use every core
# whether any kernel may start Numba's threads (the optimizers' sweeps over large
# buffers do on either layer); False in a child forked from an OpenMP process
THREADS_USABLE = True


def configure() -> None:
    """Apply the policy; called once when the CPU backend is imported."""
    global THREADING_LAYER, PARALLEL_KERNELS
    from . import blas
    one_pool = blas.LIBRARY == "mkl" and blas.mkl_threading() == "gnu"
    THREADING_LAYER = os.environ.get("NUMBA_THREADING_LAYER") or \
        ("omp" if one_pool else "workqueue")
    PARALLEL_KERNELS = one_pool and THREADING_LAYER == "omp"
    if numba.config.THREADING_LAYER in ("default", ""):
        numba.config.THREADING_LAYER = THREADING_LAYER
    if os.environ.get("TINYAR_BLAS_THREADS"):
        set_blas_threads(_thread_count("TINYAR_BLAS_THREADS"))
    if one_pool or THREADING_LAYER == "omp":
        os.register_at_fork(after_in_child=_serial_after_fork)


def _thread_count(variable):
    """The positive integer an environment variable holds, or a one-line ConfigError."""
    from ...errors import ConfigError
    text = os.environ[variable]
    if not text.strip().isdigit() or int(text) < 1:
        raise ConfigError(f"{variable}={text!r}: expected a whole number of threads >= 1")
    return int(text)


def _serial_after_fork():
    """In a forked child of a process that may have started GNU OpenMP's threads:
    serial kernels and a single-threaded BLAS (see the module docstring)."""
    global PARALLEL_KERNELS, THREADS_USABLE
    PARALLEL_KERNELS = False
    THREADS_USABLE = False
    set_blas_threads(1)


def get_blas_threads():
    """The BLAS's thread count, MKL's or NumPy's OpenBLAS's (None where it cannot be read)."""
    from .blas import get_threads
    return get_threads()


def set_blas_threads(n):
    """How many threads the BLAS (``blas.py``) may use for matrix products; False if
    it cannot be told."""
    from .blas import set_threads
    return set_threads(n)

