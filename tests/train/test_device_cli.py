"""``--device cuda`` on a machine without a GPU: every command fails at once, clearly."""
import numpy as np
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


# --- on a GPU, or in the simulator ----------------------------------------------------
from tests.backend.test_cuda import needs_cuda  # noqa: E402


def _tiny_lm_config(data, out, device):
    from tinyar.train.lm import LMConfig
    return LMConfig(data=data, out=out, device=device, embed=4, hidden=6, layers=1, batch=2,
                    bptt=4, steps=3, warmup=1, eval_every=3, eval_tokens=24, sample_every=3,
                    sample_tokens=3, checkpoint_every=3, record_every=1, seed=3)


@needs_cuda
def test_train_lm_on_cuda_matches_the_cpu_run_and_its_checkpoint_loads_on_the_cpu(tmp_path):
    """Issue 5: the same seed on both devices gives the same training run within float32
    tolerance, and a checkpoint saved from the GPU evaluates the same on the CPU."""
    import json
    import os
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("def add(a, b):\n    return a + b\n\n" * 20)
    runs = {}
    for device in ("cpu", "cuda"):
        folder = lm.train_lm(_tiny_lm_config(str(corpus), str(tmp_path / device), device),
                             quiet=True)
        runs[device] = json.load(open(os.path.join(folder, "log.json")))["history"]
    cpu, gpu = runs["cpu"], runs["cuda"]
    assert len(cpu) == len(gpu) == 3
    for a, b in zip(cpu, gpu):
        assert abs(a["loss"] - b["loss"]) <= 1e-4 * max(1.0, abs(a["loss"]))
    assert abs(cpu[-1]["val_loss"] - gpu[-1]["val_loss"]) <= 1e-4 * abs(cpu[-1]["val_loss"])
    on_cpu = lm.evaluate_run(str(tmp_path / "cuda"), max_chars=200, bptt=4)
    on_gpu = lm.evaluate_run(str(tmp_path / "cuda"), max_chars=200, bptt=4, device="cuda")
    assert abs(on_cpu["nats_per_token"] - on_gpu["nats_per_token"]) <= 1e-5 * \
        on_cpu["nats_per_token"]


@needs_cuda
@pytest.mark.parametrize("model", ["cnn", "rnn"])
def test_classify_on_cuda_matches_the_cpu_run(tmp_path, model, monkeypatch):
    """Tiny 3-channel 10x10 images (LeNet's smallest input; the row RNN's rows are
    3 channels wide, so the device permute runs): CPU and CUDA runs from the same
    seed give the same losses and the same test report. LeNet is narrowed to 4, 8 and 16
    channels and features: the simulator runs each multiply-add in Python, and at its
    full widths this test took 150 s."""
    import json
    from tinyar.models import classifiers
    monkeypatch.setattr(classifiers, "LENET_WIDTHS", (4, 8, 16))
    rng = np.random.default_rng(0)
    data = tmp_path / "tiny.npz"
    np.savez(data, x_train=rng.random((8, 3, 10, 10)).astype(np.float32),
             y_train=np.arange(8) % 4, x_test=rng.random((4, 3, 10, 10)).astype(np.float32),
             y_test=np.arange(4))
    mapping = tmp_path / "groups.json"
    mapping.write_text(json.dumps({"low": [0, 1], "high": [2, 3]}))
    reports, losses = {}, {}
    for device in ("cpu", "cuda"):
        sizes = {"hidden": 5} if model == "rnn" else {}  # --hidden is the row RNN's
        config = classify.ClassifyConfig(data=str(data), hierarchy=str(mapping), model=model,
                                         epochs=1, batch=4, device=device,
                                         out=str(tmp_path / f"{model}-{device}"), **sizes)
        folder, reports[device] = classify.train_classifier(config, quiet=True)
        losses[device] = [r["loss"] for r in json.load(open(f"{folder}/log.json"))["history"]]
    np.testing.assert_allclose(losses["cuda"], losses["cpu"], rtol=1e-4)
    assert reports["cuda"]["fine"]["accuracy"] == reports["cpu"]["fine"]["accuracy"]


def test_the_simulator_is_announced(monkeypatch, capsys):
    from tinyar.train import placement
    monkeypatch.setattr(placement, "cuda_available", lambda: True)
    monkeypatch.setattr(placement, "_simulated", lambda: True)
    monkeypatch.setattr(placement, "_announced", [])
    assert placement.check_device("cuda") == "cuda"
    assert "numba's simulator" in capsys.readouterr().err
    placement.check_device("cuda")
    assert capsys.readouterr().err == ""  # once a process
