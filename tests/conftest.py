import numpy as np
import pytest

import tinyar


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
