"""What importing the CPU backend does to the process: every side effect in one place,
in the order it must happen, run once by ``cpu/__init__.py``.

1. ``blas.choose()``: load the BLAS every matrix product goes through, Intel MKL where
   it is installed (the ``mkl`` extra) or NumPy's OpenBLAS (``TINYAR_BLAS`` chooses);
   with MKL, set its OpenMP layer (``MKL_THREADING_LAYER=GNU``) before it starts.
2. ``threads.configure()``: Numba's threading layer and which kernels may use every
   core, which depend on that BLAS (one pool of threads with MKL; serial kernels beside
   OpenBLAS), and ``TINYAR_BLAS_THREADS``. Must run before any kernel runs.
3. ``malloc.configure()``: glibc keeps freed blocks of up to 32 MB for the next step
   instead of handing them back (``TINYAR_MALLOC=system`` leaves malloc alone).
4. ``cache.configure()``: Numba's on-disk kernel cache goes to a folder named by a hash
   of the kernel sources. Must run before the kernel files are imported.

``docs/performance.md`` has the measurements behind each of these choices.
"""
from . import blas, cache, malloc, threads

_done = False
#: Whether glibc's malloc was tuned (step 3).
malloc_tuned = False


def configure():
    """Apply 1-4 once; later calls do nothing."""
    global _done, malloc_tuned
    if _done:
        return
    blas.choose()
    threads.configure()
    malloc_tuned = malloc.configure()
    cache.configure()
    _done = True
