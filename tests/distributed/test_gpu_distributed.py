"""``mpiexec -n 2 tinyar train --device cuda``: each rank takes GPU ``local rank mod GPUs``,
the gradients go through host memory (the MPI of the ``mpich`` wheel is not CUDA-aware), and
two ranks at --batch 1 train what one process trains at --batch 2 on the GPU.

Run where CUDA kernels run: on a GPU, or in numba's simulator (``NUMBA_ENABLE_CUDASIM=1``,
which the ranks inherit; it has one simulated GPU, so both ranks share GPU 0)."""
import pytest

from tests.backend.test_cuda import needs_cuda
from tests.distributed.launch import (TINYAR, assert_same_weights, check_finished,
                                      mpi_run, requires_mpi, single)

# a model the simulator trains in seconds (as tests/train/test_device_cli.py's)
TINY = ["--device", "cuda", "--embed", "4", "--hidden", "6", "--layers", "1", "--bptt", "4",
        "--steps", "3", "--warmup", "1", "--eval-every", "3", "--eval-tokens", "24",
        "--sample-every", "3", "--sample-tokens", "3", "--record-every", "0", "--seed", "3"]


@needs_cuda
@requires_mpi
@pytest.mark.gpu
def test_two_ranks_on_gpus_train_what_one_process_trains_at_twice_the_batch(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("def add(a, b):\n    return a + b\n\n" * 20)
    one = single(["train", "--data", corpus, *TINY, "--batch", "2", "--out", tmp_path / "one"])
    two = check_finished(mpi_run([*TINYAR, "train", "--data", corpus, *TINY, "--batch", "1",
                                  "--out", tmp_path / "two"], timeout=300))
    assert_same_weights(tmp_path / "one", tmp_path / "two")
    assert "GPU = local rank mod " in two.stdout
    assert "gradients through host memory" in two.stdout
    assert "GPU = " not in one.stdout  # one process: no ranks to place
    # rank 0 alone prints, the simulator's note included
    assert (two.stdout + two.stderr).count("tinyar train: ") == 1
    if "simulator" in one.stderr:
        assert two.stderr.count("simulator") == 1
