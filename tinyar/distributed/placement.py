"""Where each rank runs: how many CPU threads it takes, which GPU, and how gradients travel.

Threads. N ranks on one machine share its cores. Left alone, each rank's BLAS and Numba
would start a thread per core, N times too many: threads that wait on each other's cores
(on a 2-core machine, an OpenBLAS that spins against another process made a language-model
step up to 75x slower). So each rank takes its share,

    threads_per_rank = max(1, cores // ranks on this machine)

(``TINYAR_THREADS_PER_RANK=n`` overrides it), and ``configure_threads`` gives that many to
the BLAS (``backend.cpu.threads.set_blas_threads``) and to Numba (``numba.set_num_threads``).

GPUs. Rank r of a machine takes GPU ``local_rank % device_count`` (``device_for_rank``):
with as many ranks as GPUs, one each; with more ranks, they share round-robin.

CUDA-aware MPI. An MPI built with CUDA support reads and writes device memory itself; any
other needs host memory, so the gradients of a model on a GPU go device -> host -> reduce ->
device (``GradientAverager`` keeps one page-locked host copy for that). ``cuda_aware()``
decides which, in this order:

1. ``TINYAR_CUDA_AWARE_MPI=1`` or ``=0``: the user's word.
2. ``MPIR_CVAR_ENABLE_GPU=0``: MPICH told to ignore GPUs, so not aware.
3. ``mpi4py.MPI.Query_cuda_support()`` where mpi4py has it, else the MPI library's own
   ``MPIX_Query_cuda_support()`` (Open MPI's extension, also in MPICH 4), found in the
   loaded libmpi: the library's answer.
4. Otherwise not aware (the ``mpich`` wheel of the ``distributed`` extra is built without
   CUDA): the host path, which is always correct, only slower.
"""
import ctypes
import numbers
import os

from ..errors import ConfigError, DeviceError

THREADS_VARIABLE = "TINYAR_THREADS_PER_RANK"
CUDA_AWARE_VARIABLE = "TINYAR_CUDA_AWARE_MPI"

_cuda_aware = None  # decided once, by cuda_aware()


def threads_per_rank(world) -> int:
    """Threads for each rank on this machine: ``max(1, os.cpu_count() // world.local_size)``,
    or ``TINYAR_THREADS_PER_RANK`` where it is set (a whole number >= 1)."""
    text = os.environ.get(THREADS_VARIABLE)
    if text is not None:
        if not text.strip().isdigit() or int(text) < 1:
            raise ConfigError(f"{THREADS_VARIABLE}={text!r}: expected a whole number of "
                              f"threads >= 1")
        return int(text)
    return max(1, (os.cpu_count() or 1) // world.local_size)


def configure_threads(world, threads=None) -> int:
    """Give the BLAS and Numba ``threads`` threads each (default ``threads_per_rank``);
    returns the count. Numba cannot start more threads than it was started with (the
    number of cores, or ``NUMBA_NUM_THREADS``): a larger count is cut to that for Numba."""
    if threads is None:
        threads = threads_per_rank(world)
    elif isinstance(threads, bool) or not isinstance(threads, numbers.Integral) or threads < 1:
        raise ConfigError(f"configure_threads: expected threads as an integer >= 1, got "
                          f"{threads!r}")
    threads = int(threads)
    import numba
    from ..backend.cpu.threads import set_blas_threads
    set_blas_threads(threads)
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    return threads


def device_for_rank(world, device_count) -> int:
    """The GPU this rank uses: ``world.local_rank % device_count``."""
    if isinstance(device_count, bool) or not isinstance(device_count, numbers.Integral) \
            or device_count < 1:
        raise DeviceError(f"device_for_rank: expected device_count as an integer >= 1 (the "
                          f"GPUs of this machine), got {device_count!r}")
    return world.local_rank % int(device_count)


def cuda_aware() -> bool:
    """Whether the MPI can reduce device arrays itself (see the module docstring); decided
    once per process."""
    global _cuda_aware
    if _cuda_aware is None:
        _cuda_aware = _detect_cuda_aware()
    return _cuda_aware


def _detect_cuda_aware():
    told = os.environ.get(CUDA_AWARE_VARIABLE)
    if told is not None:
        if told.strip() not in ("0", "1"):
            raise ConfigError(f"{CUDA_AWARE_VARIABLE}={told!r}: expected 0 or 1")
        return told.strip() == "1"
    if os.environ.get("MPIR_CVAR_ENABLE_GPU", "").strip() == "0":
        return False
    try:
        from mpi4py import MPI
    except ImportError:
        return False
    query = getattr(MPI, "Query_cuda_support", None)
    if query is not None:
        return bool(query())
    for library in _loaded_mpi_libraries():
        try:
            function = getattr(ctypes.CDLL(library), "MPIX_Query_cuda_support", None)
        except OSError:
            continue
        if function is not None:
            function.restype = ctypes.c_int
            return bool(function())
    return False


def _loaded_mpi_libraries():
    """The paths of the libmpi shared libraries this process has loaded (Linux's
    /proc/self/maps; elsewhere none, and the answer is "not aware")."""
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            paths = {line.split()[-1] for line in maps if "/libmpi" in line}
    except OSError:
        return []
    return sorted(p for p in paths if os.path.basename(p).startswith("libmpi"))
