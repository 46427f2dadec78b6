"""``tinyar train --backbone transformer --device cuda``, end to end (a GPU or the simulator).

Two steps of a tiny GPT on the device against the same run on the CPU (same seed, same
losses), then ``sample``, ``eval`` and ``--resume`` of the device run. The shapes are tiny
because the simulator runs each CUDA thread as a Python thread.
"""
import json
import os

import numpy as np
import pytest

from tests.backend.test_cuda import needs_cuda
from tinyar.cli import main

CORPUS = "to be, or not to be, that is the question:\n" * 12
TINY = ["--backbone", "transformer", "--heads", "2", "--context", "4", "--layers", "1",
        "--hidden", "4", "--batch", "2", "--head", "flat", "--tie", "--optimizer", "adamw",
        "--weight-decay", "0.1", "--eval-every", "2", "--eval-tokens", "16",
        "--sample-every", "2", "--sample-tokens", "3", "--checkpoint-every", "2",
        "--record-every", "1", "--seed", "5"]
#: float32 on two devices: the same operations, summed in another order
TOL = dict(rtol=1e-4, atol=1e-5)


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(CORPUS)
    return str(path)


def _history(run):
    with open(os.path.join(run, "log.json")) as f:
        return json.load(f)["history"]


def _evaluated(capsys, argv):
    """The numbers ``tinyar eval`` prints, by name."""
    capsys.readouterr()
    assert main(argv) == 0
    lines = [line.split(":") for line in capsys.readouterr().out.splitlines() if ":" in line]
    return {key.strip(): float(value.replace(",", "")) for key, value in lines}


@needs_cuda
def test_gpt_trains_samples_evaluates_and_resumes_on_cuda(tmp_path, corpus, capsys):
    from tinyar.backend.cuda import count_launches
    runs = {device: str(tmp_path / device) for device in ("cpu", "cuda")}
    for device, run in runs.items():
        assert main(["train", "--data", corpus, "--steps", "2", "--out", run,
                     "--device", device, *TINY]) == 0
    cpu, gpu = _history(runs["cpu"]), _history(runs["cuda"])
    assert [r["step"] for r in gpu] == [1, 2]
    np.testing.assert_allclose([r["loss"] for r in gpu], [r["loss"] for r in cpu], **TOL)
    np.testing.assert_allclose(gpu[-1]["val_loss"], cpu[-1]["val_loss"], **TOL)

    capsys.readouterr()
    assert main(["sample", runs["cuda"], "--prompt", "to", "--tokens", "3",
                 "--device", "cuda"]) == 0
    assert capsys.readouterr().out.startswith("to")
    on_gpu = _evaluated(capsys, ["eval", runs["cuda"], "--device", "cuda"])
    on_cpu = _evaluated(capsys, ["eval", runs["cuda"]])
    assert on_gpu["nats_per_token"] == pytest.approx(on_cpu["nats_per_token"], abs=2e-4)

    # a third step, resumed on the device, is the third step of the CPU run resumed alike
    with count_launches() as launches:
        assert main(["train", "--resume", runs["cuda"], "--steps", "3"]) == 0
    assert launches.count > 0  # the resumed run kept to its device
    assert main(["train", "--resume", runs["cpu"], "--steps", "3"]) == 0
    cpu, gpu = _history(runs["cpu"]), _history(runs["cuda"])
    assert [r["step"] for r in gpu] == [1, 2, 3]
    np.testing.assert_allclose([r["loss"] for r in gpu], [r["loss"] for r in cpu], **TOL)
