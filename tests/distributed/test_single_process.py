"""tinyar.distributed in one process: no mpiexec and no mpi4py needed (these run everywhere).

Under ``mpiexec`` the same functions are tested by ``test_under_mpi.py``; here a world of
one process is the identity, and hand-built ``World`` objects stand for a rank of a larger
job where a function needs no communication (rows, seeds, threads, GPUs).
"""
import importlib
import subprocess
import sys

import numba
import numpy as np
import pytest

import tinyar
from tinyar.backend.cpu.threads import get_blas_threads, set_blas_threads
from tinyar.distributed import (GradientAverager, World, abort_on_exception, allreduce_mean,
                                allreduce_sum, broadcast_json, broadcast_model,
                                broadcast_optimizer, configure_threads, cuda_aware,
                                device_for_rank, launched_by_mpi, rank_part, rank_rows, rank_seed,
                                rank_share, threads_per_rank, world)
from tinyar.errors import ConfigError, DeviceError, ShapeError
from tinyar.models import AutoregressiveLM
from tinyar.optim import Adam

# ``tinyar.distributed.world`` is the function; the module is reached through importlib
world_module = importlib.import_module("tinyar.distributed.world")
placement = importlib.import_module("tinyar.distributed.placement")

LAUNCHER_VARIABLES = ("PMI_SIZE", "PMI_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK",
                      "MPI_LOCALNRANKS", "MPI_LOCALRANKID")


@pytest.fixture
def fresh_world(monkeypatch):
    """No launcher in the environment, no world made yet, and mpi4py impossible to import."""
    for name in LAUNCHER_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(world_module, "_the_world", None)
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # `import mpi4py` now raises ImportError
    return monkeypatch


def small_lm():
    return AutoregressiveLM(7, embed_dim=4, hidden_size=5, num_layers=1, head="flat",
                            dtype=np.float64)


# --- the world --------------------------------------------------------------------------------
def test_without_mpiexec_the_world_is_one_process_and_needs_no_mpi4py(fresh_world):
    W = world()
    assert (W.rank, W.size, W.local_rank, W.local_size, W.comm, W.is_root) == \
        (0, 1, 0, 1, None, True)
    assert repr(W) == "World(rank=0, size=1, local=0/1)"
    assert world() is W
    W.barrier()


@pytest.mark.parametrize("variables,expected", [
    ({}, False), ({"PMI_SIZE": "2", "PMI_RANK": "1"}, True), ({"PMI_SIZE": "1"}, False),
    ({"OMPI_COMM_WORLD_SIZE": "4"}, True), ({"PMI_SIZE": "many"}, False)])
def test_launched_by_mpi_reads_the_launchers_variables(fresh_world, variables, expected):
    for name, value in variables.items():
        fresh_world.setenv(name, value)
    assert launched_by_mpi() is expected


def test_under_mpiexec_without_mpi4py_the_error_says_how_to_install_it(fresh_world):
    fresh_world.setenv("PMI_SIZE", "2")
    fresh_world.setenv("PMI_RANK", "0")
    with pytest.raises(ConfigError) as error:
        world()
    assert str(error.value) == ("tinyar.distributed: mpi4py is not installed; pip install "
                                "'tinyar[distributed]' (mpi4py and an MPI, mpich)")


def test_importing_the_package_does_not_import_mpi4py():
    code = "import sys, tinyar.distributed; print('mpi4py' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120, check=True)
    assert result.stdout.strip() == "False"


def test_a_world_checks_its_numbers():
    with pytest.raises(ConfigError, match="rank=2, size=2"):
        World(rank=2, size=2)
    with pytest.raises(ConfigError, match="local_rank=1, local_size=1"):
        World(rank=1, size=2, local_rank=1, local_size=1)


def test_abort_in_one_process_exits_with_the_code_and_the_message(capsys):
    with pytest.raises(SystemExit) as exit_:
        World().abort("the data folder is empty", code=3)
    assert exit_.value.code == 3
    assert "tinyar (rank 0 of 1): the data folder is empty" in capsys.readouterr().err


def test_abort_on_exception_lets_a_single_process_handle_its_own_errors():
    with pytest.raises(ConfigError, match="--lr"):
        with abort_on_exception(World()):
            raise ConfigError("--lr: expected a number > 0, got -1")


class RecordingWorld(World):
    """Rank 1 of 2, whose abort records its message instead of ending the process."""

    def __init__(self):
        super().__init__(rank=1, size=2, local_rank=1, local_size=2)
        self.aborted = []

    def abort(self, message, code=1):
        self.aborted.append((message, code))


def test_abort_on_exception_aborts_with_the_one_line_message_of_a_tinyar_error(capsys):
    W = RecordingWorld()
    with pytest.raises(ConfigError):
        with abort_on_exception(W):
            raise ConfigError("--steps: expected an integer >= 1, got 0")
    assert W.aborted == [("--steps: expected an integer >= 1, got 0", 1)]
    assert "Traceback" not in capsys.readouterr().err


def test_abort_on_exception_prints_the_traceback_of_any_other_error(capsys):
    W = RecordingWorld()

    @abort_on_exception(W)
    def broken():
        return {}["missing"]

    with pytest.raises(KeyError):
        broken()
    assert W.aborted == [("KeyError: 'missing'", 1)]
    err = capsys.readouterr().err
    assert "Traceback" in err and "broken" in err


@pytest.mark.parametrize("exception", [KeyboardInterrupt, SystemExit])
def test_abort_on_exception_lets_interrupts_and_exits_through(exception):
    W = RecordingWorld()
    with pytest.raises(exception):
        with abort_on_exception(W):
            raise exception()
    assert W.aborted == []


# --- the collectives of one process ---------------------------------------------------------
def test_broadcasts_in_one_process_change_nothing():
    W = World()
    model = small_lm()
    before = model.flat_parameters().data.copy()
    assert broadcast_model(model, W) is model
    np.testing.assert_array_equal(model.flat_parameters().data, before)
    optimizer = Adam(model)
    assert broadcast_optimizer(optimizer, W) is optimizer
    assert broadcast_json({"a": (1, 2.5), "b": None}, W) == {"a": [1, 2.5], "b": None}


def test_broadcast_json_refuses_what_json_cannot_carry():
    with pytest.raises(ConfigError, match="broadcast_json: expected a JSON-able object, got "
                                          "ndarray"):
        broadcast_json(np.zeros(2), World())


def test_sums_in_one_process_are_float64_copies():
    values = [1, 2.5]
    total = allreduce_sum(values, World())
    assert total.dtype == np.float64 and total.tolist() == [1.0, 2.5]
    array = np.ones((2, 2), np.float32)
    mean = allreduce_mean(array, World())
    assert mean.shape == (2, 2) and mean.dtype == np.float64
    mean[0, 0] = 7
    assert array[0, 0] == 1  # the caller's array is not the result


def test_the_averager_of_one_process_leaves_the_gradients_alone():
    model = small_lm()
    ids = np.array([[1, 2, 3], [4, 5, 6]])
    for mode in ("blocking", "bucketed"):
        averager = GradientAverager(model, World(), mode=mode, bucket_bytes=64)
        model.zero_grad()
        model.loss(ids, ids)
        averager.begin()
        model.backward()
        expected = model.flat_parameters().grad.copy()
        averager.finish()
        np.testing.assert_array_equal(model.flat_parameters().grad, expected)
        assert averager.buckets_started == 0
        assert averager.buckets[0][1] == model.num_parameters()


# --- rows, shares and seeds -----------------------------------------------------------------
def test_rank_rows_takes_every_size_th_row_from_the_ranks_own():
    batch = np.arange(14).reshape(7, 2)
    assert rank_rows(batch, World()) is batch
    rows = rank_rows(batch, World(rank=1, size=3))
    np.testing.assert_array_equal(rows, batch[[1, 4]])
    assert rows.flags.c_contiguous
    shares = [rank_rows(batch, World(rank=r, size=3)) for r in range(3)]
    assert sorted(np.concatenate(shares)[:, 0].tolist()) == batch[:, 0].tolist()


def test_rank_rows_needs_a_row_for_every_rank():
    with pytest.raises(ShapeError, match="at least 4 rows"):
        rank_rows(np.zeros((3, 2)), World(rank=0, size=4))


def test_rank_part_weighs_uneven_shares_so_that_their_mean_is_the_batchs():
    batch = np.arange(7)
    assert rank_part(batch, World()) == (batch, 1.0)
    parts = [rank_part(batch, World(rank=r, size=3)) for r in range(3)]
    assert [p[0].tolist() for p in parts] == [[0, 3, 6], [1, 4], [2, 5]]
    losses = np.random.default_rng(0).random(7)  # each row's loss
    mean_of_weighted = np.mean([losses[rows].mean() * w for rows, w in parts])
    assert mean_of_weighted == pytest.approx(losses.mean(), rel=1e-12)
    rows, weight = rank_part(np.arange(2), World(rank=2, size=3))  # fewer rows than ranks
    assert rows.size == 0 and weight == 0.0
    with pytest.raises(ShapeError, match="at least one row"):
        rank_part(np.arange(0), World(rank=0, size=2))


def test_rank_share_splits_items_by_rank():
    assert rank_share(7, World()).tolist() == list(range(7))
    assert rank_share(7, World(rank=1, size=3)).tolist() == [1, 4]
    assert rank_share(0, World(rank=1, size=3)).tolist() == []
    with pytest.raises(ConfigError, match="expected n as an integer >= 0, got -1"):
        rank_share(-1, World())


def test_rank_seed_is_the_seed_on_rank_0_and_differs_between_ranks():
    assert rank_seed(42, World()) == 42
    seeds = [rank_seed(42, World(rank=r, size=64)) for r in range(64)]
    assert seeds[0] == 42 and len(set(seeds)) == 64
    assert all(0 <= s < 2 ** 64 for s in seeds)
    tinyar.manual_seed(seeds[-1])  # usable as a seed
    with pytest.raises(ConfigError, match="expected seed as an integer >= 0, got 1.5"):
        rank_seed(1.5, World())


# --- threads, GPUs ----------------------------------------------------------------------------
@pytest.mark.parametrize("local_size", [1, 2, 3, 64])
def test_threads_per_rank_shares_the_cores(monkeypatch, local_size):
    monkeypatch.delenv("TINYAR_THREADS_PER_RANK", raising=False)
    monkeypatch.setattr("os.cpu_count", lambda: 8)
    W = World(rank=0, size=local_size, local_rank=0, local_size=local_size)
    assert threads_per_rank(W) == max(1, 8 // local_size)


def test_threads_per_rank_takes_the_override(monkeypatch):
    monkeypatch.setenv("TINYAR_THREADS_PER_RANK", "3")
    assert threads_per_rank(World(rank=0, size=4, local_rank=0, local_size=4)) == 3
    for bad in ("0", "two", "-1", ""):
        monkeypatch.setenv("TINYAR_THREADS_PER_RANK", bad)
        with pytest.raises(ConfigError, match=f"TINYAR_THREADS_PER_RANK={bad!r}: expected a "
                                              f"whole number of threads >= 1"):
            threads_per_rank(World())


@pytest.fixture
def restore_threads():
    numba_before, blas_before = numba.get_num_threads(), get_blas_threads()
    yield
    numba.set_num_threads(numba_before)
    if blas_before is not None:
        set_blas_threads(blas_before)


def test_configure_threads_applies_the_share_to_numba_and_the_blas(monkeypatch,
                                                                   restore_threads):
    monkeypatch.delenv("TINYAR_THREADS_PER_RANK", raising=False)
    cores = numba.config.NUMBA_NUM_THREADS
    monkeypatch.setattr("os.cpu_count", lambda: cores)
    many = World(rank=0, size=cores, local_rank=0, local_size=cores)
    assert configure_threads(many) == 1
    assert numba.get_num_threads() == 1
    assert get_blas_threads() in (None, 1)
    assert configure_threads(World()) == cores
    assert numba.get_num_threads() == cores
    assert get_blas_threads() in (None, cores)
    with pytest.raises(ConfigError, match="expected threads as an integer >= 1, got 0"):
        configure_threads(World(), threads=0)


def test_device_for_rank_goes_round_robin_over_the_gpus():
    ranks = [World(rank=r, size=5, local_rank=r, local_size=5) for r in range(5)]
    assert [device_for_rank(W, 2) for W in ranks] == [0, 1, 0, 1, 0]
    assert device_for_rank(ranks[3], 8) == 3
    with pytest.raises(DeviceError, match="expected device_count as an integer >= 1"):
        device_for_rank(ranks[0], 0)


@pytest.mark.parametrize("told,expected", [("1", True), ("0", False)])
def test_cuda_aware_follows_the_users_word(monkeypatch, told, expected):
    monkeypatch.setattr(placement, "_cuda_aware", None)
    monkeypatch.setenv("TINYAR_CUDA_AWARE_MPI", told)
    assert cuda_aware() is expected


def test_cuda_aware_without_mpi4py_or_a_word_is_false(fresh_world):
    fresh_world.setattr(placement, "_cuda_aware", None)
    fresh_world.delenv("TINYAR_CUDA_AWARE_MPI", raising=False)
    assert cuda_aware() is False
    fresh_world.setattr(placement, "_cuda_aware", None)
    fresh_world.setenv("TINYAR_CUDA_AWARE_MPI", "yes")
    with pytest.raises(ConfigError, match="TINYAR_CUDA_AWARE_MPI='yes': expected 0 or 1"):
        cuda_aware()
