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


@pytest.fixture(params=["cpu"])
def backend(request):
    """The backend under test; the CUDA backend joins this list when it exists."""
    return tinyar.backend.get_backend(request.param)


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: takes more than a few seconds")
    config.addinivalue_line("markers", "torch: compares with PyTorch (needs the 'compare' extra)")
    config.addinivalue_line("markers", "gpu: needs a CUDA GPU")
