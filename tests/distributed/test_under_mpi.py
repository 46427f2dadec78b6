"""tinyar.distributed under ``mpiexec -n 2``: each test reads what a script wrote.

One job trains every case (``scripts/equivalence.py``), one checks the broadcasts and sums
(``scripts/sync_checks.py``), and each abort test runs a job that must end by itself.
"""
import json
import os

import numpy as np
import pytest

from .launch import check_finished, requires_mpi, run_script

pytestmark = requires_mpi

CASES = ("lstm-64", "conv-64", "tied-64", "cnn-64", "lstm-32")
MODES = ("blocking", "bucketed")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("equivalence")
    check_finished(run_script("equivalence.py", out, *CASES, timeout=300))
    return out


def load(path):
    with np.load(path, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


def assert_close(actual, expected, relative, what):
    """Every entry of two state dicts agrees within ``relative`` of the entry's largest
    magnitude (so parameters that start at zero are held to the same standard)."""
    assert actual.keys() == expected.keys(), what
    for key in expected:
        scale = max(float(np.max(np.abs(expected[key]))), 1e-30) if expected[key].size else 1
        error = float(np.max(np.abs(actual[key] - expected[key]))) if expected[key].size else 0
        assert error <= relative * scale, f"{what}: {key} differs by {error:.3g} (of {scale:.3g})"


@pytest.mark.parametrize("case", CASES)
def test_two_ranks_train_what_one_process_trains_at_twice_the_batch(trained, case):
    reference = load(trained / f"{case}-reference.npz")
    relative = 1e-12 if case.endswith("64") else 1e-5
    for mode in MODES:
        for rank in (0, 1):
            result = load(trained / f"{case}-{mode}-rank{rank}.npz")
            assert_close(result, reference, relative, f"{case} {mode} rank {rank}")


@pytest.mark.parametrize("case", CASES)
def test_the_ranks_stay_identical_and_the_modes_agree_bit_for_bit(trained, case):
    first = load(trained / f"{case}-blocking-rank0.npz")
    for mode in MODES:
        for rank in (0, 1):
            result = load(trained / f"{case}-{mode}-rank{rank}.npz")
            for key in first:
                np.testing.assert_array_equal(result[key], first[key],
                                              err_msg=f"{case} {mode} rank {rank}: {key}")


def test_batchnorm_running_statistics_are_rank_0s_on_every_rank(trained):
    # the reference kept the statistics of rank 0's half only; rank 1 computed its own from
    # other rows, so holding the reference's proves the broadcast after each step
    reference = load(trained / "cnn-64-reference.npz")
    names = [k for k in reference if "running_" in k]
    assert names
    for rank in (0, 1):
        result = load(trained / f"cnn-64-bucketed-rank{rank}.npz")
        for name in names:
            np.testing.assert_array_equal(result[name], load(
                trained / "cnn-64-blocking-rank0.npz")[name])
            np.testing.assert_allclose(result[name], reference[name], rtol=1e-12, atol=1e-14)


def test_buckets_start_during_backward_head_first(trained):
    for case in ("lstm-64", "tied-64", "cnn-64"):
        info = json.loads((trained / f"{case}-bucketed-rank0.json").read_text())
        buckets = info["buckets"]
        assert len(buckets) > 2, case
        # from the end of the flat buffer (the head) to its start, without gaps
        total = buckets[0][1]
        assert buckets[-1][0] == 0, case
        assert [b[1] for b in buckets[1:]] == [b[0] for b in buckets[:-1]], case
        assert all(start < end for start, end in buckets), case
        # every bucket started from a backward hook, none had to wait for finish()
        assert info["started"] == [len(buckets)] * len(info["started"]), case
        blocking = json.loads((trained / f"{case}-blocking-rank0.json").read_text())
        assert blocking["buckets"] == [[0, total]] and blocking["started"] == [0, 0, 0]


@pytest.fixture(scope="module")
def synced(tmp_path_factory):
    out = tmp_path_factory.mktemp("sync")
    check_finished(run_script("sync_checks.py", out, timeout=180))
    reports = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    arrays = [load(out / f"rank{r}.npz") for r in (0, 1)]
    return reports, arrays


def test_world_of_two_ranks(synced):
    reports, _ = synced
    for rank, report in enumerate(reports):
        assert report["launched_by_mpi"] is True
        assert (report["rank"], report["size"], report["is_root"]) == (rank, 2, rank == 0)
        assert (report["local_rank"], report["local_size"]) == (rank, 2)
        assert report["repr"] == f"World(rank={rank}, size=2, local={rank}/2)"


def test_broadcast_model_makes_differently_seeded_ranks_equal(synced):
    _, (zero, one) = synced
    assert not np.array_equal(zero["params_before"], one["params_before"])
    np.testing.assert_array_equal(one["params_after"], zero["params_before"])
    np.testing.assert_array_equal(zero["params_after"], zero["params_before"])
    # rank 0's buffers (running mean 1.0, 5 batches) reached rank 1, which held 2.0 and 6
    for arrays in (zero, one):
        np.testing.assert_array_equal(arrays["running_mean_after"], 1.0)
        assert int(arrays["num_batches_tracked_after"]) == 5


def test_broadcast_optimizer_gives_every_rank_rank_0s_adam_state(synced):
    reports, (zero, one) = synced
    assert not np.array_equal(zero["exp_avg_before"], one["exp_avg_before"])
    np.testing.assert_array_equal(one["exp_avg_after"], zero["exp_avg_before"])
    np.testing.assert_array_equal(one["exp_avg_sq_after"], zero["exp_avg_sq_after"])
    assert [r["adam_step_after"] for r in reports] == [1, 1]  # rank 0 took one step
    assert [r["adam_lr_after"] for r in reports] == [0.01, 0.01]


def test_json_and_sums(synced):
    reports, _ = synced
    for rank, report in enumerate(reports):
        assert report["json"] == {"vocab": ["a", "b", "é"], "rank": 0,
                                  "nested": {"x": [1.5, None, True]}}
        assert report["sum"] == [3.0, 2.0 ** -39]
        assert report["mean"] == [[1.5]]
        assert report["share"] == [[0, 2, 4, 6], [1, 3, 5]][rank]
    assert reports[0]["seed"] == 1234 and reports[1]["seed"] != 1234


def test_a_mismatched_model_is_an_error_on_every_rank(synced):
    reports, _ = synced
    assert "rank 1 holds a Linear of 20" in reports[1]["mismatch"]
    assert "another rank's model" in reports[0]["mismatch"]


def test_each_rank_takes_its_share_of_the_cores(synced):
    reports, _ = synced
    for report in reports:
        expected = max(1, os.cpu_count() // 2)
        assert report["threads"] == report["threads_per_rank"] == expected
        assert report["numba_threads"] == expected
        assert report["blas_threads"] in (None, expected)


@pytest.mark.parametrize("kind,message", [
    ("tinyar", "tinyar (rank 1 of 2): --steps: expected an integer >= 1, got 0"),
    ("python", "tinyar (rank 1 of 2): ZeroDivisionError: division by zero")])
def test_an_exception_on_one_rank_ends_the_whole_job(kind, message):
    # rank 0 waits in an all-reduce that rank 1 never joins: only MPI_Abort ends the job, and
    # run_script's timeout (far above the second or two an abort takes) fails a hang
    result = run_script("abort.py", kind, timeout=60)
    assert result.returncode != 0
    assert message in result.stderr
    assert "not reached" not in result.stdout
    assert ("Traceback" in result.stderr) == (kind == "python")
