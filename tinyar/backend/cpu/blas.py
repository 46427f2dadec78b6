"""Direct access to the BLAS ``gemm`` that NumPy links, for ``C += A @ B``.

Backward passes *add* weight gradients into the flat gradient buffer
(dW += g^T x). ``numpy.matmul`` can only overwrite its output, which would
cost a temporary and a second pass over dW; BLAS ``gemm`` computes
C = alpha A B + beta C in one pass, so with beta = 1 the gradient
accumulates in place. We look the routine up in the OpenBLAS that NumPy's
wheels ship (``numpy.libs/libscipy_openblas64_*.so``, 64-bit integers). Where
it is not found (another NumPy build), ``gemm_accumulate`` is ``None`` and
callers fall back to ``out += a @ b``.
"""
import ctypes
import glob
import os

import numpy as np

_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112


def _find_cblas():
    libs_dir = os.path.join(os.path.dirname(os.path.dirname(np.__file__)), "numpy.libs")
    for path in sorted(glob.glob(os.path.join(libs_dir, "*openblas*.so*"))):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix in ("scipy_cblas_", "cblas_"):
            try:
                sgemm, dgemm = getattr(lib, prefix + "sgemm64_"), getattr(lib, prefix + "dgemm64_")
            except AttributeError:
                continue
            global _LIB
            _LIB = lib
            return _declare(sgemm, ctypes.c_float), _declare(dgemm, ctypes.c_double)
    return None


def _declare(fn, real):
    i64, ptr = ctypes.c_int64, ctypes.c_void_p
    fn.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int, i64, i64, i64, real, ptr, i64,
                   ptr, i64, real, ptr, i64]
    fn.restype = None
    return fn


_LIB = None
_GEMM = None if os.environ.get("TINYAR_NO_CBLAS") else _find_cblas()


def _operand(x):
    """(row-major array to hand BLAS, whether BLAS must transpose it)."""
    if x.flags.c_contiguous:
        return x, False
    if x.flags.f_contiguous:  # a transposed view of a contiguous array
        return x.T, True
    return np.ascontiguousarray(x), False


def gemm_routine(dtype):
    """The ctypes BLAS ``gemm`` for float32 or float64, or None (no BLAS found)."""
    if _GEMM is None or dtype not in (np.float32, np.float64):
        return None
    return _GEMM[0] if dtype == np.float32 else _GEMM[1]


def gemm_accumulate(a, b, out):
    """out += a @ b for 2-D arrays of one float dtype; False where BLAS is not usable."""
    if _GEMM is None or out.dtype not in (np.float32, np.float64) or not out.flags.c_contiguous \
            or a.dtype != out.dtype or b.dtype != out.dtype:
        return False
    m, k = a.shape
    n = b.shape[1]
    if m == 0 or n == 0 or k == 0:
        return True
    a_mem, trans_a = _operand(a)
    b_mem, trans_b = _operand(b)
    gemm = gemm_routine(out.dtype)
    gemm(_ROW_MAJOR, _TRANS if trans_a else _NO_TRANS, _TRANS if trans_b else _NO_TRANS,
         m, n, k, 1.0, a_mem.ctypes.data, a_mem.shape[1], b_mem.ctypes.data, b_mem.shape[1],
         1.0, out.ctypes.data, n)
    return True


available = _GEMM is not None


def _threads_function(name):
    for symbol in (f"scipy_openblas_{name}64_", f"openblas_{name}64_", f"openblas_{name}"):
        fn = getattr(_LIB, symbol, None) if _LIB is not None else None
        if fn is not None:
            return fn
    return None


def set_threads(n):
    """Limit the threads of NumPy's OpenBLAS; False where that is not possible."""
    fn = _threads_function("set_num_threads")
    if fn is None:
        return False
    fn.argtypes, fn.restype = [ctypes.c_int], None
    fn(int(n))
    return True


def get_threads():
    """NumPy's OpenBLAS thread count, or None when unknown."""
    fn = _threads_function("get_num_threads")
    if fn is None:
        return None
    fn.restype = ctypes.c_int
    return int(fn())
