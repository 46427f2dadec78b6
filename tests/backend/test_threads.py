import os

import numba
import numpy as np

import tinyar
from tinyar.backend import threads
from tinyar.backend.cpu import blas


def test_numba_uses_the_layer_the_policy_chose():
    tinyar.backend.get_backend("cpu")
    assert numba.config.THREADING_LAYER == threads.THREADING_LAYER
    from tinyar.backend.cpu import blas
    if "NUMBA_THREADING_LAYER" not in os.environ:
        # one pool (omp) only where MKL runs on GNU OpenMP; workqueue beside OpenBLAS
        one_pool = blas.LIBRARY == "mkl" and blas.mkl_threading() == "gnu"
        assert threads.THREADING_LAYER == ("omp" if one_pool else "workqueue")
        assert threads.PARALLEL_KERNELS == one_pool


def test_blas_thread_count_can_be_limited_and_restored():
    before = blas.get_threads()
    if before is None:
        assert not threads.set_blas_threads(1)
        return
    assert threads.set_blas_threads(1) and threads.get_blas_threads() == 1
    threads.set_blas_threads(before)
    assert blas.get_threads() == before


def test_gemm_accumulate_adds_in_place():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((5, 7)).astype(np.float32), rng.standard_normal((7, 3)).astype(
        np.float32)
    out = rng.standard_normal((5, 3)).astype(np.float32)
    expected = out + a @ b
    if blas.gemm_accumulate(a.T.copy().T, b, out):  # a as a transposed (F-ordered) view
        np.testing.assert_allclose(out, expected, rtol=1e-5)
