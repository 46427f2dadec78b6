"""``mpiexec -n 2 tinyar train``: two ranks at --batch 4 train what one process trains at
--batch 8, rank 0 alone prints and writes, a run resumes with another number of ranks, and
a bad option is one line from rank 0."""
import re
import signal

import pytest

from tests.distributed.launch import (TINYAR, assert_same_weights, check_finished,
                                     interrupt_job, mpi_run, requires_mpi, single)

TINY = ["--data", "stdlib", "--max-chars", "20000", "--hidden", "16", "--embed", "16",
        "--layers", "1", "--bptt", "16", "--eval-every", "2", "--sample-every", "4",
        "--sample-tokens", "10", "--eval-tokens", "500", "--record-every", "0"]
@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    out = {"root": root}
    out["one"] = single(["train", *TINY, "--steps", "4", "--batch", "8", "--out", root / "one"])
    for mode, threads in (("bucketed", []), ("blocking", ["--threads", "1"])):
        out[mode] = check_finished(mpi_run([*TINYAR, "train", *TINY, "--steps", "4", "--batch",
                                            "4", "--allreduce", mode, *threads,
                                            "--out", root / mode]))
    # 2 ranks for 2 steps, then one process (at --batch 8) for the last 2
    check_finished(mpi_run([*TINYAR, "train", *TINY, "--steps", "2", "--batch", "4",
                            "--out", root / "resumed"]))
    out["resume"] = single(["train", "--resume", root / "resumed", "--steps", "4"])
    return out


@requires_mpi
def test_two_ranks_train_what_one_process_trains_at_twice_the_batch(runs):
    root = runs["root"]
    assert_same_weights(root / "one", root / "bucketed")
    assert_same_weights(root / "bucketed", root / "blocking")


@requires_mpi
def test_rank_0_alone_prints_and_the_run_records_its_ranks(runs):
    import json
    from tinyar.checkpoint import read_meta
    text = runs["bucketed"].stdout + runs["bucketed"].stderr
    assert text.count("done: step 4") == 1
    assert text.count("tinyar train: ") == 1 and "2 ranks x " in text
    assert "2 ranks x 1 thread, blocking all-reduce" in runs["blocking"].stdout
    meta = read_meta(str(runs["root"] / "bucketed" / "model.npz"))
    assert meta["world"] == {"size": 2, "global_batch": 8}
    log = json.loads((runs["root"] / "bucketed" / "log.json").read_text())
    one = json.loads((runs["root"] / "one" / "log.json").read_text())
    for mine, theirs in zip(log["history"], one["history"]):  # the whole batch's losses
        assert mine["loss"] == pytest.approx(theirs["loss"], rel=1e-4)
        if "val_loss" in theirs:
            assert mine["val_loss"] == pytest.approx(theirs["val_loss"], rel=1e-4)


@requires_mpi
def test_a_run_of_two_ranks_resumes_in_one_process(runs):
    root = runs["root"]
    assert "resuming at step 2" in runs["resume"].stdout
    assert_same_weights(root / "one", root / "resumed")


@requires_mpi
@pytest.mark.parametrize("why", ["the run folder", "the data"])
def test_a_setup_failure_is_one_line_from_rank_0(runs, why):
    args = ["--out", runs["root"] / "one"] if why == "the run folder" else \
        ["--data", runs["root"] / "no-such-text.txt", "--out", runs["root"] / "none"]
    result = mpi_run([*TINYAR, "train", "--steps", "3", *args])
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("tinyar train: error: "), lines


@requires_mpi
def test_a_bad_option_is_one_line_from_rank_0(tmp_path):
    result = mpi_run([*TINYAR, "train", "--steps", "0", "--out", tmp_path / "bad"])
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == ["tinyar train: error: --steps: expected an integer >= 1, got 0"], lines
    assert not (tmp_path / "bad").exists()


@requires_mpi
def test_sigterm_to_mpiexec_stops_both_ranks_with_one_checkpoint_that_resumes(tmp_path):
    from tinyar.checkpoint import read_meta
    run = tmp_path / "stopped"
    returncode, stdout, stderr = interrupt_job(
        [*TINYAR, "train", *TINY, "--steps", "100000", "--batch", "4", "--out", run], run,
        signal.SIGTERM, to_group=False, settle=0.5)  # mpiexec passes it on to both ranks
    assert returncode == 130, stderr
    stopped = re.findall(r"interrupted at step (\d+)", stdout)
    assert len(stopped) == 1, stdout  # rank 0's message alone
    step = int(stopped[0])
    assert read_meta(str(run / "model.npz"))["progress"]["step"] == step
    resumed = single(["train", "--resume", run, "--steps", step + 2])
    assert f"resuming at step {step}" in resumed.stdout
    assert read_meta(str(run / "model.npz"))["progress"]["step"] == step + 2
