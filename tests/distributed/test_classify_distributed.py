"""``mpiexec -n 2 tinyar classify``: two ranks at --batch 3 train what one process trains at
--batch 6, including an epoch's last batch shared unevenly (4 images on rank 0, 3 on rank
1, each rank's mean loss weighted by its share), the row RNN's pre-training, a run resumed
in one process, and a Ctrl-C that stops both ranks with one checkpoint.

The data: 16 images of 1 x 10 x 10 pixels, 4 labels in 2 groups; --val-fraction 0.2 holds
out 3 (stratified), so an epoch is 13 images: global batches of 6 and 7 (the last image
joins the last batch, ``classify.batch_bounds``). LeNet has no BatchNorm, so the two runs
are the same computation up to float32 rounding; the row RNN's BatchNorm1d normalises each
rank's rows alone, so its runs are compared on their pre-training (its losses, each of
which depends on the weights the steps before it left).
"""
import json
import re
import signal

import numpy as np
import pytest

from tests.distributed.launch import (TINYAR, assert_same_weights, check_finished,
                                     interrupt_job, mpi_run, requires_mpi, single)

pytestmark = requires_mpi


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(5)
    labels = np.arange(16) % 4
    images = 0.5 * rng.random((16, 1, 10, 10)).astype(np.float32)
    images[np.arange(16), 0, labels + 2, 3] = 1.0  # each label marks a row: learnable
    np.savez(root / "tiny.npz", x_train=images, y_train=labels,
             x_test=images[:8], y_test=labels[:8])
    (root / "groups.json").write_text(json.dumps({"low": [0, 1], "high": [2, 3]}))
    return ["--data", root / "tiny.npz", "--hierarchy", root / "groups.json",
            "--val-fraction", "0.2", "--lr", "0.01"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, data):
    root = tmp_path_factory.mktemp("classify")
    out = {"root": root}
    # SGD: Adam's g / sqrt(v) would magnify the float32 rounding of near-zero gradients
    sgd = ["--optimizer", "sgd"]
    out["one"] = single(["classify", *data, *sgd, "--epochs", "2", "--batch", "6", "--out",
                         root / "one"])
    out["two"] = check_finished(mpi_run([*TINYAR, "classify", *data, *sgd, "--epochs", "2",
                                         "--batch", "3", "--allreduce", "blocking",
                                         "--out", root / "two"]))
    # 2 ranks for the first epoch, then one process (at --batch 6) for the second; against
    # one process for both (a run of 1 epoch has a learning-rate schedule of its own, which
    # a longer resumed run stretches)
    for first, ranks in (("resumed", 2), ("resumed-alone", 1)):
        check_finished(mpi_run([*TINYAR, "classify", *data, *sgd, "--epochs", "1", "--batch",
                                6 // ranks, "--out", root / first], n=ranks))
        out[first] = single(["classify", "--resume", root / first, "--epochs", "2"])
    rnn = ["--model", "rnn", "--hidden", "8", "--pretrain-steps", "3", "--epochs", "1"]
    out["rnn-one"] = single(["classify", *data, *rnn, "--batch", "6", "--out",
                             root / "rnn-one"])
    out["rnn-two"] = check_finished(mpi_run([*TINYAR, "classify", *data, *rnn, "--batch", "3",
                                             "--allreduce", "bucketed", "--out",
                                             root / "rnn-two"]))
    return out


def _history(folder):
    return json.loads((folder / "log.json").read_text())["history"]


def test_two_ranks_train_what_one_process_trains_at_twice_the_batch(runs):
    root = runs["root"]
    assert_same_weights(root / "one", root / "two")
    one, two = _history(root / "one"), _history(root / "two")
    assert len(one) == len(two) == 4  # 2 epochs of 2 batches: 6 and 7 images
    for a, b in zip(one, two):  # the whole batch's figures, on both sides
        for key in ("loss", "val_loss", "val_accuracy", "test_fine_accuracy"):
            if key in a:
                assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-6), (key, a, b)
    report_one = json.loads((root / "one" / "metrics.json").read_text())
    report_two = json.loads((root / "two" / "metrics.json").read_text())
    assert report_two["fine"]["confusion_matrix"] == report_one["fine"]["confusion_matrix"]
    assert report_two["coarse"]["accuracy"] == report_one["coarse"]["accuracy"]


def test_rank_0_alone_prints_and_the_run_records_its_ranks(runs):
    from tinyar.checkpoint import read_meta
    text = runs["two"].stdout + runs["two"].stderr
    assert text.count("tinyar classify: ") == 1
    assert "batches of 2x3 on 2 ranks x 1 thread, blocking all-reduce" in text
    assert text.count("epoch 2: validation loss") == 1
    meta = read_meta(str(runs["root"] / "two" / "model.npz"))
    assert meta["world"] == {"size": 2, "global_batch": 6}


def test_a_run_of_two_ranks_resumes_in_one_process(runs):
    root = runs["root"]
    assert "resuming at epoch 2, step 2" in runs["resumed"].stdout
    assert_same_weights(root / "resumed-alone", root / "resumed")


def test_the_row_rnns_pretraining_is_data_parallel(runs):
    root = runs["root"]
    log_one = json.loads((root / "rnn-one" / "log.json").read_text())
    log_two = json.loads((root / "rnn-two" / "log.json").read_text())
    assert len(log_one["pretrain_losses"]) == 3
    np.testing.assert_allclose(log_two["pretrain_losses"], log_one["pretrain_losses"],
                               rtol=1e-5)
    assert len(log_two["history"]) == 2  # then trained its epoch, on both ranks


def test_a_bad_option_is_one_line_from_rank_0(tmp_path):
    result = mpi_run([*TINYAR, "classify", "--epochs", "0", "--out", tmp_path / "bad"])
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == ["tinyar classify: error: --epochs: expected an integer >= 1, got 0"], lines
    assert not (tmp_path / "bad").exists()


def test_ctrl_c_stops_both_ranks_with_one_checkpoint_that_resumes(tmp_path, data):
    """Ctrl-C in a terminal sends SIGINT to the whole foreground process group: mpiexec and
    both ranks (mpiexec forwards its own copy too). Here: SIGINT to the job's group."""
    from tinyar.checkpoint import read_meta
    run = tmp_path / "stopped"
    returncode, stdout, stderr = interrupt_job(
        [*TINYAR, "classify", *data, "--epochs", "100000", "--batch", "3", "--augment",
         "--out", run], run, signal.SIGINT, to_group=True)
    assert returncode == 130, stderr
    stopped = re.findall(r"interrupted at step (\d+) \(epoch (\d+)\)", stdout)
    assert len(stopped) == 1, stdout  # rank 0's message alone
    step = int(stopped[0][0])
    assert read_meta(str(run / "model.npz"))["progress"]["step"] == step
    epoch = read_meta(str(run / "model.npz"))["progress"]["epoch"]
    resumed = single(["classify", "--resume", run, "--epochs", epoch + 2])
    assert f"resuming at epoch {epoch + 1}, step {step}" in resumed.stdout
