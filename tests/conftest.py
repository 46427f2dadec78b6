import os

# Under pytest-xdist (``-n 2``, the README's test command) each worker is a process of its
# own on the same cores. As tinyar's ranks under mpiexec do (``distributed/placement.py``),
# each takes its share of the cores for the BLAS, so that two workers' OpenBLAS threads do
# not spin against each other (``backend/cpu/threads.py``). Set before tinyar's import,
# which reads it; a count set by hand is kept.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1 and "TINYAR_BLAS_THREADS" not in os.environ:
    os.environ["TINYAR_BLAS_THREADS"] = str(max(1, (os.cpu_count() or 1) // _WORKERS))

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import tinyar  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    tinyar.manual_seed(0)
    yield


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def _cuda_available():
    """A CUDA GPU, or numba's simulator (NUMBA_ENABLE_CUDASIM=1 set before numba's import)."""
    try:
        from numba import cuda
        return bool(cuda.is_available())
    except Exception:
        return False


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=[
    pytest.mark.gpu, pytest.mark.skipif(not _cuda_available(), reason=(
        "no CUDA GPU: set NUMBA_ENABLE_CUDASIM=1 to test the CUDA kernels in numba's "
        "simulator"))])])
def backend(request):
    """The backend under test: the CPU, and CUDA on a GPU or under the simulator."""
    return tinyar.backend.get_backend(request.param)


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: takes more than a few seconds")
    config.addinivalue_line("markers", "torch: compares with PyTorch (needs the 'compare' extra)")
    config.addinivalue_line("markers", "gpu: runs CUDA kernels (a GPU, or the simulator with "
                                       "NUMBA_ENABLE_CUDASIM=1)")
