import os

import numba
import numpy as np

import tinyar
from tinyar.backend.cpu import threads
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


def _train_a_little():
    """A few threaded things: an MKL-sized product, the recurrent loop on row blocks,
    zero_grad and Adam over a buffer big enough for the optimizer's threads."""
    from tinyar.nn import LSTM
    from tinyar.optim import Adam
    tinyar.manual_seed(0)
    layer = LSTM(64, 64)
    big = tinyar.nn.Linear(1024, 1100)  # 1.1 M parameters: the optimizers' threaded sweep
    optimizer = Adam(list(layer.parameters()) + list(big.parameters()))
    x = np.ones((32, 40, 64), np.float32)
    out, _ = layer(x)
    optimizer.zero_grad()
    layer.backward(np.ones_like(out))
    optimizer.step()
    a, product = np.ones((512, 512), np.float32), np.zeros((512, 512), np.float32)
    done = blas.gemm(a, a, product)  # False (nothing done) where no BLAS is loaded
    return (float(out.sum()), threads.THREADS_USABLE, threads.PARALLEL_KERNELS,
            not done or bool(np.all(product == 512)))


def test_a_forked_child_trains_instead_of_hanging():
    """GNU OpenMP (MKL's, and Numba's omp layer) is not fork-safe: a forked child runs
    serially (threads.py); on the workqueue layer beside OpenBLAS it keeps its threads."""
    import multiprocessing
    parent = _train_a_little()  # the parent's threads have run
    with multiprocessing.get_context("fork").Pool(1) as pool:
        child = pool.apply_async(_train_a_little).get(timeout=120)
    assert child[0] == parent[0] and child[3]
    openmp = blas.mkl_threading() == "gnu" or threads.THREADING_LAYER == "omp"
    assert child[1] is not openmp and child[2] is False
    assert threads.THREADS_USABLE  # the parent is untouched


def test_a_bad_blas_thread_count_is_one_clear_error():
    import subprocess
    import sys
    for value in ("x", "0", "-2", "1.5"):
        result = subprocess.run([sys.executable, "-c", "import tinyar.backend.cpu"],
                                capture_output=True, text=True,
                                env=dict(__import__("os").environ, TINYAR_BLAS_THREADS=value))
        assert result.returncode != 0
        assert f"TINYAR_BLAS_THREADS={value!r}: expected a whole number of threads >= 1" in \
            result.stderr
