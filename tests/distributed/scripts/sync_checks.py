"""Under ``mpiexec -n 2``: the world, the broadcasts, the sums and the threads of each rank.

    python sync_checks.py OUT_DIR

Each rank writes ``OUT_DIR/rank<r>.npz`` (model parameters and Adam state before and after
the broadcasts) and ``OUT_DIR/rank<r>.json`` (what the world, broadcast_json, the
all-reduces, the thread settings and a mismatched broadcast gave on that rank).
"""
import json
import sys
from pathlib import Path

import numba
import numpy as np

import tinyar
from tinyar.backend.cpu.threads import get_blas_threads
from tinyar.distributed import (abort_on_exception, allreduce_mean, allreduce_sum,
                                broadcast_json, broadcast_model, broadcast_optimizer,
                                configure_threads, launched_by_mpi, rank_seed, rank_share,
                                threads_per_rank, world)
from tinyar.errors import ConfigError
from tinyar.models import CNNClassifier
from tinyar.nn import ClassHierarchy, Linear
from tinyar.optim import Adam

LABELS = ClassHierarchy(np.array([0, 0, 1, 1, 1]))


def adam_after_own_steps(model, rank):
    """An Adam that has taken rank + 1 steps on gradients of this rank's own."""
    optimizer = Adam(model, lr=0.01)
    rng = np.random.default_rng(50 + rank)
    grad = model.flat_parameters().grad
    for _ in range(rank + 1):
        grad[...] = rng.standard_normal(grad.size)
        optimizer.step()
    return optimizer


def main():
    out = Path(sys.argv[1])
    W = world()
    report = {"launched_by_mpi": launched_by_mpi(), "rank": W.rank, "size": W.size,
              "local_rank": W.local_rank, "local_size": W.local_size, "is_root": W.is_root,
              "repr": repr(W)}
    arrays = {}
    with abort_on_exception(W):
        threads = configure_threads(W)
        report.update(threads=threads, threads_per_rank=threads_per_rank(W),
                      numba_threads=numba.get_num_threads(), blas_threads=get_blas_threads())

        tinyar.manual_seed(10 + W.rank)  # a different model on each rank
        model = CNNClassifier(LABELS, (1, 8, 8), arch="vgg", head="flat").double()
        bn = model.backbone[1]  # give rank 1 other running statistics, rank 0 its own
        bn.running_mean[...] = W.rank + 1.0
        bn.num_batches_tracked[...] = 5 + W.rank
        optimizer = adam_after_own_steps(model, W.rank)  # (its steps move the parameters)
        arrays["params_before"] = model.flat_parameters().data.copy()
        arrays["exp_avg_before"] = optimizer.state["exp_avg"].copy()

        broadcast_model(model, W)
        arrays["params_after"] = model.flat_parameters().data.copy()
        arrays["running_mean_after"] = bn.running_mean.copy()
        arrays["num_batches_tracked_after"] = np.array(bn.num_batches_tracked)
        optimizer.lr = 0.01 * (W.rank + 1)
        broadcast_optimizer(optimizer, W)
        arrays["exp_avg_after"] = optimizer.state["exp_avg"].copy()
        arrays["exp_avg_sq_after"] = optimizer.state["exp_avg_sq"].copy()
        report["adam_step_after"] = optimizer.state["step"]
        report["adam_lr_after"] = optimizer.lr

        sent = {"vocab": ["a", "b", "é"], "rank": W.rank, "nested": {"x": [1.5, None, True]}}
        report["json"] = broadcast_json(sent if W.is_root else None, W)
        report["sum"] = allreduce_sum([W.rank + 1.0, 2.0 ** -40], W).tolist()
        report["mean"] = allreduce_mean(np.array([[W.rank * 3.0]]), W).tolist()
        report["share"] = rank_share(7, W).tolist()
        report["seed"] = rank_seed(1234, W)

        # a model of another size on rank 1: both ranks must raise, neither may hang
        mismatched = Linear(3, 4 if W.rank == 0 else 5)
        try:
            broadcast_model(mismatched, W)
            report["mismatch"] = None
        except ConfigError as exc:
            report["mismatch"] = str(exc)
        W.barrier()
    np.savez(out / f"rank{W.rank}.npz", **arrays)
    (out / f"rank{W.rank}.json").write_text(json.dumps(report))


if __name__ == "__main__":
    main()
