"""``--device cuda`` on a machine without a GPU: every command fails at once, clearly."""
import pytest

from tinyar.cli import main
from tinyar.train import classify, lm


@pytest.fixture
def no_gpu(monkeypatch):
    from numba import cuda
    monkeypatch.setattr(cuda, "is_available", lambda: False)


def _fail_before_loading(monkeypatch, module, loader):
    def must_not_load(*args, **kwargs):
        raise AssertionError("data was loaded before the device was checked")
    monkeypatch.setattr(module, loader, must_not_load)


@pytest.mark.parametrize("argv", [
    ["train", "--device", "cuda", "--steps", "1"],
    ["classify", "--device", "cuda", "--epochs", "1"],
    ["sample", "no-such-run", "--device", "cuda"],
    ["eval", "no-such-run", "--device", "cuda"],
    ["classify", "--eval", "no-such-run", "--device", "cuda"],
])
def test_cuda_without_a_gpu_fails_at_once(argv, no_gpu, monkeypatch, capsys):
    _fail_before_loading(monkeypatch, lm, "load_corpus")
    _fail_before_loading(monkeypatch, classify, "load_dataset")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"tinyar {argv[0]}: error: no CUDA GPU found")
    assert "use --device cpu" in err and "NUMBA_ENABLE_CUDASIM=1" in err


def test_unknown_device_in_a_config_is_an_error():
    from tinyar.errors import DeviceError
    from tinyar.train.placement import check_device
    with pytest.raises(DeviceError, match="unknown device 'tpu'"):
        check_device("tpu")
    assert check_device("cpu") == "cpu"
