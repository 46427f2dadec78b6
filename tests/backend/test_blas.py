"""The BLAS layer (``tinyar/backend/cpu/blas.py``): every operand layout a layer hands
it, both libraries, the choice between them, and the malloc policy beside it."""
import itertools
import os
import platform
import subprocess
import sys

import numpy as np
import pytest

from tinyar.backend.cpu import blas, linalg, malloc

RNG = np.random.default_rng(0)
MKL_FOUND = any(os.path.exists(p) for p in blas.mkl_candidates())
needs_mkl = pytest.mark.skipif(not MKL_FOUND, reason='MKL is not installed (pip install '
                                                     '"tinyar[mkl]") : nothing to test it on')


def layouts(shape, dtype):
    """The same matrix as: row-major, a transposed view, a block of a larger matrix,
    and a column-strided view (which BLAS cannot read in place: copied)."""
    base = RNG.standard_normal(shape).astype(dtype)
    yield base
    yield np.ascontiguousarray(base.T).T
    big = np.zeros((shape[0] + 3, shape[1] + 5), dtype)
    big[1:1 + shape[0], 2:2 + shape[1]] = base
    yield big[1:1 + shape[0], 2:2 + shape[1]]
    wide = np.zeros((shape[0], 2 * shape[1]), dtype)
    wide[:, ::2] = base
    yield wide[:, ::2]


SHAPES = [(5, 7, 3), (1, 4, 6), (6, 1, 2), (3, 5, 1), (1, 1, 1), (4, 0, 3), (0, 3, 2)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("m,k,n", SHAPES)
def test_matmul_reads_every_layout_and_writes_into_blocks(dtype, m, k, n):
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-10)
    for a, b in itertools.product(list(layouts((m, k), dtype)), list(layouts((k, n), dtype))):
        expected = a.astype(np.float64) @ b.astype(np.float64)
        np.testing.assert_allclose(linalg.matmul(a, b), expected, **tol)
        out = RNG.standard_normal((m, n)).astype(dtype)
        before = out.copy()
        linalg.matmul(a, b, out=out, accumulate=True)
        np.testing.assert_allclose(out, before + expected, **tol)
        frame = np.full((m + 2, n + 4), 7, dtype)
        linalg.matmul(a, b, out=frame[1:1 + m, 1:1 + n])
        np.testing.assert_allclose(frame[1:1 + m, 1:1 + n], expected, **tol)
        inner = np.zeros_like(frame, dtype=bool)
        inner[1:1 + m, 1:1 + n] = True
        assert (frame[~inner] == 7).all(), "the product wrote outside its block"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_batched_products_as_the_convolutions_make_them(dtype):
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-10)
    n, out_ch, rows, spatial = 4, 6, 9, 10
    weight = RNG.standard_normal((out_ch, rows)).astype(dtype)
    cols = RNG.standard_normal((rows, n * spatial)).astype(dtype)
    stacked = cols.reshape(rows, n, spatial).transpose(1, 0, 2)  # (n, K, P), interleaved
    y = np.full((n, out_ch + 2, spatial), 7, dtype)
    linalg.matmul(weight, stacked, out=y[:, 1:1 + out_ch])  # a channel block of y
    np.testing.assert_allclose(y[:, 1:1 + out_ch], np.matmul(weight, stacked), **tol)
    assert (y[:, 0] == 7).all() and (y[:, -1] == 7).all()
    grad = RNG.standard_normal((n, out_ch, spatial)).astype(dtype)
    np.testing.assert_allclose(linalg.matmul(grad, stacked.transpose(0, 2, 1)),
                               np.matmul(grad, stacked.transpose(0, 2, 1)), **tol)
    dcols = np.empty((rows, n * spatial), dtype)
    dstacked = dcols.reshape(rows, n, spatial).transpose(1, 0, 2)  # an interleaved output
    linalg.matmul(weight, grad, out=dstacked, trans_a=True)
    np.testing.assert_allclose(dstacked, np.matmul(weight.T, grad), **tol)
    a3 = RNG.standard_normal((3, 2, 5)).astype(dtype)
    b3 = RNG.standard_normal((3, 5, 4)).astype(dtype)
    np.testing.assert_allclose(linalg.matmul(a3, b3), a3 @ b3, **tol)
    np.testing.assert_allclose(linalg.matmul(a3, b3[0]), a3 @ b3[0], **tol)


def test_a_product_whose_output_overlaps_an_input_is_still_right():
    x = RNG.standard_normal((4, 4)).astype(np.float32)
    expected = x @ x
    linalg.matmul(x, x, out=x)  # BLAS cannot do this in place: NumPy does it
    np.testing.assert_allclose(x, expected, rtol=1e-5)


def test_mismatched_shapes_are_refused_before_blas():
    a, b = np.ones((3, 4), np.float32), np.ones((5, 2), np.float32)
    with pytest.raises(ValueError):
        linalg.matmul(a, b)
    with pytest.raises(ValueError, match="cannot multiply"):
        blas.gemm(a, np.ones((4, 2), np.float32), np.empty((3, 3), np.float32))


def test_describe_names_the_library_in_use():
    assert blas.LIBRARY in ("mkl", "openblas", None)
    assert (blas.LIBRARY or "NumPy") in blas.describe()


def _in_subprocess(env_updates, code):
    env = dict(os.environ, **env_updates)
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=300)


CHECK = ("import numpy as np; from tinyar.backend.cpu import blas, linalg; "
         "a = np.arange(12, dtype=np.float32).reshape(3, 4); "
         "assert np.allclose(linalg.matmul(a, a.T), a @ a.T); print(blas.LIBRARY)")


def test_openblas_can_be_chosen():
    result = _in_subprocess({"TINYAR_BLAS": "openblas"}, CHECK)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() in ("openblas", "None")  # None: a NumPy without OpenBLAS


@needs_mkl
def test_mkl_is_chosen_by_default_when_installed_and_can_be_forced():
    for setting in ("auto", "mkl"):
        result = _in_subprocess({"TINYAR_BLAS": setting}, CHECK)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "mkl"


def test_asking_for_mkl_where_there_is_none_says_how_to_install_it(monkeypatch):
    monkeypatch.setattr(blas, "mkl_candidates", lambda: [])
    monkeypatch.setenv("TINYAR_BLAS", "mkl")
    with pytest.raises(RuntimeError, match=r'pip install "tinyar\[mkl\]"'):
        blas._choose()


def test_an_unknown_blas_setting_is_refused(monkeypatch):
    monkeypatch.setenv("TINYAR_BLAS", "atlas")
    with pytest.raises(ValueError, match="TINYAR_BLAS='atlas'"):
        blas._choose()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the malloc policy is glibc's")
def test_malloc_policy_is_applied_unless_the_user_tuned_malloc(monkeypatch):
    for name in [n for n in os.environ if n.startswith("MALLOC_")] + ["GLIBC_TUNABLES"]:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TINYAR_MALLOC", "system")
    assert malloc.configure() is False
    monkeypatch.delenv("TINYAR_MALLOC")
    monkeypatch.setenv("MALLOC_ARENA_MAX_", "2")
    assert malloc.configure() is False
    monkeypatch.delenv("MALLOC_ARENA_MAX_")
    assert malloc.configure() is (platform.libc_ver()[0] == "glibc")  # musl has no mallopt


def test_without_mkl_the_openmp_settings_are_left_alone(monkeypatch):
    monkeypatch.setattr(blas, "mkl_candidates", lambda: [])
    monkeypatch.delenv("MKL_THREADING_LAYER", raising=False)
    monkeypatch.delenv("KMP_BLOCKTIME", raising=False)
    assert blas._load_mkl() is None
    assert "MKL_THREADING_LAYER" not in os.environ and "KMP_BLOCKTIME" not in os.environ
