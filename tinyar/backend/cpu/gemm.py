"""Matrix products called from compiled code (the time loops of ``rnn.py``, the
class loop of ``multilevel.py``).

Numba cannot call NumPy's ``@`` inside ``@njit`` without SciPy, but it can
call the BLAS ``gemm`` of ``blas.py`` directly, given as a ctypes function
pointer *argument* (an argument, not a global, so the calling kernel stays
cacheable: the pointer is looked up at run time). All arrays C-contiguous, 2-D.
"""
from numba import njit

from ._util import ERROR_MODEL, FASTMATH

_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112  # CBLAS's enum values
_KERNEL = dict(cache=True, fastmath=FASTMATH, error_model=ERROR_MODEL)


@njit(**_KERNEL)
def gemm_nn(gemm, a, b, c, beta):
    """c = a @ b + beta c."""
    m, k = a.shape
    n = b.shape[1]
    gemm(_ROW_MAJOR, _NO_TRANS, _NO_TRANS, m, n, k, c.dtype.type(1), a.ctypes.data, k,
         b.ctypes.data, n, c.dtype.type(beta), c.ctypes.data, n)


@njit(**_KERNEL)
def gemm_nt(gemm, a, b, c, beta):
    """c = a @ b^T + beta c."""
    m, k = a.shape
    n = b.shape[0]
    gemm(_ROW_MAJOR, _NO_TRANS, _TRANS, m, n, k, c.dtype.type(1), a.ctypes.data, k,
         b.ctypes.data, k, c.dtype.type(beta), c.ctypes.data, n)


@njit(**_KERNEL)
def gemm_tn(gemm, a, b, c, beta):
    """c = a^T @ b + beta c."""
    k, m = a.shape
    n = b.shape[1]
    gemm(_ROW_MAJOR, _TRANS, _NO_TRANS, m, n, k, c.dtype.type(1), a.ctypes.data, m,
         b.ctypes.data, n, c.dtype.type(beta), c.ctypes.data, n)


@njit(**_KERNEL)
def gemm_weight_t(gemm, x, w, w_is_t, c, beta):
    """c = x @ W^T + beta c for a layer's weight W (out, in), given either as W
    itself (read transposed by BLAS) or, when ``w_is_t``, as a contiguous copy
    of W^T (in, out), which BLAS multiplies by faster (``rnn.py``)."""
    if w_is_t:
        gemm_nn(gemm, x, w, c, beta)
    else:
        gemm_nt(gemm, x, w, c, beta)
