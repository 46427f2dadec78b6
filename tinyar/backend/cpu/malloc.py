"""Keep freed memory for the next step: how the CPU backend tunes glibc's malloc.

A training step allocates the same large arrays every time: LeNet's step makes
an 8.9 MB matrix of im2col columns, its gradient, and a 5.5 MB output, among
others. glibc serves an allocation of over 128 kB (a threshold that grows to
at most 32 MB as large blocks are freed) with a fresh ``mmap`` and returns
freed memory at the heap's top to the system, so each step's arrays are new
pages, and the first write to each 4 kB page is a page fault. Measured on the
2-core development machine (``benchmarks/bench_lenet.py``, MKL): the LeNet
step took 15.0 ms, 11.2 ms with the settings below; the product that first
wrote the column gradient took 3.5 ms in the step against 1.0 ms alone.

The policy, applied once when the CPU backend is imported (``startup.py``; Linux with
glibc):
blocks of up to 32 MB (glibc's largest allowed threshold) come from the heap,
and up to 512 MB of free memory stays there for reuse. Memory is not leaked:
freed blocks are reused by the next allocations. ``TINYAR_MALLOC=system``
leaves malloc as it is, and so does a process that has set glibc's own
``MALLOC_*_`` variables or ``GLIBC_TUNABLES``.
"""
import ctypes
import ctypes.util
import os
import sys

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # from glibc's malloc.h
MMAP_THRESHOLD = 32 * 1024 * 1024
TRIM_THRESHOLD = 512 * 1024 * 1024


def _user_tuned():
    return os.environ.get("TINYAR_MALLOC", "").lower() == "system" or \
        "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", "") or \
        any(name.startswith("MALLOC_") and name.endswith("_") for name in os.environ)


def configure():
    """Apply the policy; True when it was applied."""
    if not sys.platform.startswith("linux") or _user_tuned():
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version  # glibc only: musl has no mallopt
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and \
        bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))

