"""The BLAS ``gemm`` every CPU matrix product goes through: Intel MKL when it is
installed (``pip install "tinyar[mkl]"``), else the OpenBLAS that NumPy ships.

Why call ``gemm`` ourselves rather than ``numpy.matmul``:

* Backward passes *add* weight gradients into the flat gradient buffer
  (dW += g^T x). ``numpy.matmul`` can only overwrite its output, which would
  cost a temporary and a second pass over dW; ``gemm`` computes
  C = alpha A B + beta C in one pass, so with beta = 1 the gradient
  accumulates in place.
* Compiled code (the recurrent layers' time loops) calls the same routine,
  handed over as a ctypes function pointer (``gemm.py``).
* The library is then ours to choose. The products a recurrent layer makes at
  every time step are thin (32 x 256 by 256 x 1024 in the word LM benchmark):
  there MKL takes 57-65 us and NumPy's OpenBLAS 95-110 us on the 2-core
  AVX-512 development machine, and on LeNet's small per-sample convolution
  products (64 x 288 by 288 x 64) 11 us against 27 us; large products differ
  by 10-15 % (``benchmarks/RESULTS.md``). MKL is what PyTorch's CPU build
  uses, so with it a benchmark compares our code, not two BLAS libraries.

Choosing: ``TINYAR_BLAS=mkl`` or ``openblas`` forces one, ``auto`` (the
default) takes MKL where it is found. MKL is looked for as the ``mkl`` wheel
installs it (``<prefix>/lib/libmkl_rt.so.*``) or at ``TINYAR_MKL_PATH``. Both
are called through their 64-bit-integer (ILP64) CBLAS entry points.

MKL runs its threads on GNU OpenMP where Numba can too (``MKL_THREADING_LAYER=GNU``,
unless the user chose a layer): Numba's ``prange`` kernels then share MKL's pool
of threads instead of fighting it (``backend/cpu/threads.py``). Where it runs on
Intel's OpenMP, whose threads spin for 200 ms after each call by default and
steal the cores from whatever runs next (PyTorch in a side-by-side benchmark),
we set ``KMP_BLOCKTIME=1`` (1 ms) unless the user set it: the products of one
training step come microseconds apart, so the threads stay awake through a step
and sleep between steps.
"""
import ctypes
import glob
import os
import sys

import numpy as np

from ...errors import ConfigError

_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112


class _Library:
    """A loaded BLAS: its name, its ctypes ``(sgemm, dgemm)`` and its thread controls."""

    def __init__(self, name, path, lib, sgemm, dgemm, set_threads, get_threads,
                 batched=(None, None)):
        self.name, self.path, self.lib = name, path, lib
        self.gemm = {np.dtype(np.float32): _declare(sgemm, ctypes.c_float),
                     np.dtype(np.float64): _declare(dgemm, ctypes.c_double)}
        self.batched = {np.dtype(np.float32): _declare_batched(batched[0], ctypes.c_float),
                        np.dtype(np.float64): _declare_batched(batched[1], ctypes.c_double)}
        self._set_threads, self._get_threads = set_threads, get_threads
        if set_threads is not None:
            set_threads.argtypes, set_threads.restype = [ctypes.c_int], None
        if get_threads is not None:
            get_threads.argtypes, get_threads.restype = [], ctypes.c_int


def _declare(fn, real):
    i64, ptr = ctypes.c_int64, ctypes.c_void_p
    fn.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int, i64, i64, i64, real, ptr, i64,
                   ptr, i64, real, ptr, i64]
    fn.restype = None
    return fn


def _declare_batched(fn, real):
    """cblas_?gemm_batch_strided: gemm's arguments, each matrix followed by the step
    (in elements) from one to the next, then the count."""
    if fn is None:
        return None
    i64, ptr = ctypes.c_int64, ctypes.c_void_p
    fn.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int, i64, i64, i64, real, ptr, i64, i64,
                   ptr, i64, i64, real, ptr, i64, i64, i64]
    fn.restype = None
    return fn


def _first_symbol(lib, names):
    for name in names:
        fn = getattr(lib, name, None)
        if fn is not None:
            return fn
    return None


def _load_openblas():
    """The OpenBLAS in NumPy's wheel (``numpy.libs/libscipy_openblas64_*.so``)."""
    libs_dir = os.path.join(os.path.dirname(os.path.dirname(np.__file__)), "numpy.libs")
    for path in sorted(glob.glob(os.path.join(libs_dir, "*openblas*.so*"))):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix in ("scipy_cblas_", "cblas_"):
            sgemm = getattr(lib, prefix + "sgemm64_", None)
            dgemm = getattr(lib, prefix + "dgemm64_", None)
            if sgemm is None or dgemm is None:
                continue
            threads = [_first_symbol(lib, (f"scipy_openblas_{verb}64_", f"openblas_{verb}64_",
                                           f"openblas_{verb}"))
                       for verb in ("set_num_threads", "get_num_threads")]
            return _Library("openblas", path, lib, sgemm, dgemm, *threads)
    return None


def mkl_candidates():
    """Where MKL's runtime library may be, most specific first."""
    paths = []
    given = os.environ.get("TINYAR_MKL_PATH")
    if given:
        paths += [given] if os.path.isfile(given) else \
            sorted(glob.glob(os.path.join(given, "libmkl_rt.*")))
    for prefix in dict.fromkeys((sys.prefix, sys.exec_prefix)):  # this environment's own
        for pattern in ("lib/libmkl_rt.so*", "lib/libmkl_rt.*dylib", "Library/bin/mkl_rt*.dll"):
            paths += sorted(glob.glob(os.path.join(prefix, pattern)), reverse=True)
    return list(dict.fromkeys(paths))


def _numba_can_share_gnu_openmp():
    """Whether libgomp and Numba's OpenMP layer (built on it) both load here."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        ctypes.CDLL("libgomp.so.1")
        from numba.np.ufunc import omppool  # noqa: F401
    except (OSError, ImportError):
        return False
    return True


def mkl_threading():
    """MKL's threading layer ("gnu", "intel", ...), or None when MKL is not in use."""
    if LIBRARY != "mkl":
        return None
    return os.environ.get("MKL_THREADING_LAYER", "intel").lower()


def _load_mkl():
    candidates = mkl_candidates()
    if not candidates:  # no MKL: leave OpenMP's settings and libgomp alone
        return None
    # both read when MKL's OpenMP starts, at its first call
    if "MKL_THREADING_LAYER" not in os.environ and _numba_can_share_gnu_openmp():
        os.environ["MKL_THREADING_LAYER"] = "GNU"
    os.environ.setdefault("KMP_BLOCKTIME", "1")
    for path in candidates:
        try:
            # RTLD_GLOBAL: MKL loads its threading and kernel libraries itself, next to it
            lib = ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
        except OSError:
            continue
        sgemm = getattr(lib, "cblas_sgemm_64", None)
        dgemm = getattr(lib, "cblas_dgemm_64", None)
        if sgemm is None or dgemm is None:  # MKL before 2023 has no ILP64 CBLAS names
            continue
        return _Library("mkl", path, lib, sgemm, dgemm,
                        _first_symbol(lib, ("MKL_Set_Num_Threads",)),
                        _first_symbol(lib, ("mkl_get_max_threads",)),
                        (getattr(lib, "cblas_sgemm_batch_strided_64", None),
                         getattr(lib, "cblas_dgemm_batch_strided_64", None)))
    return None


class BlasError(ConfigError, RuntimeError):
    """TINYAR_BLAS names a library that is not there (or nothing tinyar knows). A
    ``ConfigError`` (so a ``TinyarError`` and a ``ValueError``, which the command line turns
    into one line), and a ``RuntimeError`` as it was before there was a ``ConfigError``."""


def _choose():
    """The library TINYAR_BLAS asks for. A wrong value, or MKL asked for but missing, is a
    ``BlasError`` (one line saying what to install or set), raised where the CPU backend is
    first imported."""
    wanted = os.environ.get("TINYAR_BLAS", "auto").strip().lower()
    if wanted not in ("auto", "mkl", "openblas", "none"):
        raise BlasError(f"TINYAR_BLAS={os.environ.get('TINYAR_BLAS')!r}: expected auto, mkl, "
                        f"openblas or none")
    if wanted == "none" or os.environ.get("TINYAR_NO_CBLAS"):
        return None
    if wanted in ("auto", "mkl"):
        mkl = _load_mkl()
        if mkl is not None:
            return mkl
        if wanted == "mkl":
            raise BlasError(
                "TINYAR_BLAS=mkl: no MKL runtime (libmkl_rt with the ILP64 CBLAS names, MKL "
                "2023 or later) was found in " + os.path.join(sys.prefix, "lib") +
                '; pip install "tinyar[mkl]", point TINYAR_MKL_PATH at libmkl_rt, or set '
                "TINYAR_BLAS=auto")
    return _load_openblas()


_LIBRARY = None
available = False
LIBRARY = None  # "mkl", "openblas" or None: set by choose()


def choose():
    """Load the BLAS that TINYAR_BLAS asks for (MKL where found, else NumPy's OpenBLAS);
    called once, first, by ``startup.configure()``: the threading policy depends on it."""
    global _LIBRARY, available, LIBRARY
    _LIBRARY = _choose()
    available = _LIBRARY is not None
    LIBRARY = _LIBRARY.name if available else None
    return LIBRARY


def describe():
    """A line for benchmark reports: which BLAS, and where from."""
    if _LIBRARY is None:
        return "BLAS: NumPy's matmul (no CBLAS gemm found)"
    threading = mkl_threading()
    shared = ", on GNU OpenMP" if threading == "gnu" else \
        f", threading {threading}" if threading else ""
    return f"BLAS: {_LIBRARY.name} ({os.path.basename(_LIBRARY.path)}{shared})"


def gemm_routine(dtype):
    """The ctypes BLAS ``gemm`` for float32 or float64, or None (no BLAS found)."""
    if _LIBRARY is None:
        return None
    return _LIBRARY.gemm.get(np.dtype(dtype))


def _layout(x):
    """How BLAS can read the matrix x (the last two axes) in place: (transposed,
    leading dimension), or None. Row-major rows, transposed views, and row or column
    blocks of a larger matrix all can; x is read from its first element."""
    item = x.itemsize
    rows, cols = x.shape[-2:]
    row_step, col_step = x.strides[-2:]
    if rows <= 1:  # the stride of a length-1 axis means nothing: take the tightest
        row_step = max(cols, 1) * item
    if cols <= 1:
        col_step = item
    if col_step == item and row_step % item == 0 and row_step >= max(cols, 1) * item:
        return False, row_step // item
    if row_step == item and col_step % item == 0 and col_step >= max(rows, 1) * item:
        return True, col_step // item
    return None


def _operand(x):
    """(matrix to hand BLAS, whether BLAS must transpose it, its leading dimension)."""
    layout = _layout(x)
    if layout is None:
        x = np.ascontiguousarray(x)
        layout = _layout(x)
    return x, layout[0], layout[1]


def gemm(a, b, out, beta=0.0):
    """out = a @ b + beta out, for 2-D arrays of one float dtype; False where BLAS is
    not usable (other dtype, no BLAS, ``out`` not row-major) and nothing was done."""
    routine = gemm_routine(out.dtype) if out.ndim == 2 else None
    if routine is None or a.dtype != out.dtype or b.dtype != out.dtype or a.ndim != 2 \
            or b.ndim != 2:
        return False
    m, k = a.shape
    n = b.shape[1]
    if b.shape[0] != k or out.shape != (m, n):
        raise ValueError(f"gemm: cannot multiply {a.shape} by {b.shape} into {out.shape}")
    if m == 0 or n == 0:
        return True
    out_layout = _layout(out)
    if out_layout is None or out_layout[0] or np.may_share_memory(out, a) \
            or np.may_share_memory(out, b):  # BLAS writes C row-major, in place, unaliased
        return False
    ldc = out_layout[1]
    if k == 0:
        out[...] = 0 if beta == 0 else out * beta
        return True
    if m == 1 and _LIBRARY.name == "openblas":
        # One row (a token of cached generation): NumPy's matmul hands it to this same
        # OpenBLAS's gemv, 4 us for 1 x 128 @ 128 x 384 where gemm through ctypes takes 30
        # (its packing of b, and ctypes' conversion of 14 arguments, per call)
        if beta == 0:
            np.matmul(a, b, out=out)
        else:
            out += a @ b
        return True
    a_mem, trans_a, lda = _operand(a)
    b_mem, trans_b, ldb = _operand(b)
    routine(_ROW_MAJOR, _TRANS if trans_a else _NO_TRANS, _TRANS if trans_b else _NO_TRANS,
            m, n, k, 1.0, a_mem.ctypes.data, lda, b_mem.ctypes.data, ldb, beta,
            out.ctypes.data, ldc)
    return True


def gemm_batched(a, b, out):
    """out[i] = a[i] @ b[i] for stacks of matrices (a 2-D operand serves every i) in
    one call of MKL's ``gemm_batch_strided``, which spreads the stack over its threads;
    False (do nothing) where that is not available: OpenBLAS has no batched gemm, and
    ``numpy.matmul``'s own loop over OpenBLAS is then the faster (297-320 us against
    354 us for our loop calling gemm, LeNet's first convolution), so we leave it that.

    With MKL chosen, NumPy's matmul would also wake OpenBLAS's threads, a second pool
    spinning on the same cores; and MKL's batch call beats a loop of its own small
    threaded products 4x (177 against 666 us)."""
    routine = None
    if _LIBRARY is not None and out.ndim == 3:
        routine = _LIBRARY.batched.get(out.dtype)
    if routine is None or a.dtype != out.dtype or b.dtype != out.dtype or a.ndim not in (2, 3) \
            or b.ndim not in (2, 3) or np.may_share_memory(out, a) \
            or np.may_share_memory(out, b):
        return False
    count, m, n = out.shape
    k = a.shape[-1]
    if a.shape[-2] != m or b.shape[-2:] != (k, n) or \
            any(x.ndim == 3 and x.shape[0] != count for x in (a, b)):
        raise ValueError(f"gemm: cannot multiply {a.shape} by {b.shape} into {out.shape}")
    if count == 0 or m == 0 or n == 0:
        return True
    if k == 0:
        out[...] = 0
        return True
    layouts = [_layout(x) for x in (a, b, out)]
    if None in layouts or layouts[2][0] or \
            any(x.ndim == 3 and x.strides[0] % x.itemsize for x in (a, b, out)):
        return False
    (trans_a, lda), (trans_b, ldb), (_, ldc) = layouts
    step_a, step_b, step_c = [x.strides[0] // x.itemsize if x.ndim == 3 else 0
                              for x in (a, b, out)]
    if step_a < 0 or step_b < 0:
        return False
    if count == 1:
        step_c = ldc * m
    elif step_c < ldc * m:  # MKL refuses interleaved outputs: write, then place
        result = np.empty(out.shape, out.dtype)
        gemm_batched(a, b, result)
        out[...] = result
        return True
    routine(_ROW_MAJOR, _TRANS if trans_a else _NO_TRANS, _TRANS if trans_b else _NO_TRANS,
            m, n, k, 1.0, a.ctypes.data, lda, step_a, b.ctypes.data, ldb, step_b, 0.0,
            out.ctypes.data, ldc, step_c, count)
    return True


def gemm_accumulate(a, b, out):
    """out += a @ b for 2-D arrays of one float dtype; False where BLAS is not usable."""
    return gemm(a, b, out, beta=1.0)


def set_threads(n):
    """Limit the BLAS's threads; False where that is not possible."""
    if _LIBRARY is None or _LIBRARY._set_threads is None:
        return False
    _LIBRARY._set_threads(int(n))
    return True


def get_threads():
    """The BLAS's thread count, or None when unknown."""
    if _LIBRARY is None or _LIBRARY._get_threads is None:
        return None
    return int(_LIBRARY._get_threads())
