"""Under ``mpiexec -n 2``: two ranks at batch b train exactly what one process does at 2b.

    python equivalence.py OUT_DIR CASE [CASE ...]

CASE is ``<model>-<bits>``: lstm (LSTM LM, multi-level head), conv (causal-conv LM), tied
(GRU LM whose flat head is tied to the embedding), cnn (VGG-style CNN with BatchNorm);
64 or 32 bits. For each case both ranks, seeded differently, build the model, take rank 0's
weights (``broadcast_model``) and train STEPS steps of SGD with momentum on their rows of
the same global batches, once with the blocking all-reduce and once bucketed. Rank 0 then
trains the reference in this same process, at the whole batch: one forward and backward
of 2b rows, or for BatchNorm (whose statistics are per rank) each half on its own with its
own statistics, the gradients averaged and rank 0's half's running statistics kept.

Writes ``OUT_DIR/<case>-<mode>-rank<r>.npz`` (the final state_dict, "losses" per step)
and ``OUT_DIR/<case>-<mode>-rank<r>.json`` (buckets, how many started during backward);
rank 0 writes ``OUT_DIR/<case>-reference.npz``.
"""
import json
import sys
from pathlib import Path

import numpy as np

import tinyar
from tinyar.distributed import (GradientAverager, abort_on_exception, allreduce_mean,
                                broadcast_model, configure_threads, rank_rows, world)
from tinyar.models import AutoregressiveLM, CNNClassifier
from tinyar.nn import ClassHierarchy
from tinyar.optim import SGD

STEPS = 3
ROWS_PER_RANK = 3
VOCAB = 11
STEPS_IN_TIME = 5
LABELS = ClassHierarchy(np.array([0, 0, 1, 1, 1]))
BUCKET_BYTES = 512  # small, so that even these tiny models have several buckets


def make_model(case):
    kind, bits = case.split("-")
    dtype = np.float64 if bits == "64" else np.float32
    if kind == "lstm":
        return AutoregressiveLM(VOCAB, embed_dim=6, hidden_size=8, num_layers=2, cell="lstm",
                                head="multilevel", hierarchy=ClassHierarchy(np.arange(VOCAB) % 3),
                                dtype=dtype)
    if kind == "conv":
        return AutoregressiveLM(VOCAB, embed_dim=6, hidden_size=8, num_layers=2,
                                backbone="conv", kernel_size=2, head="flat", dtype=dtype)
    if kind == "tied":
        return AutoregressiveLM(VOCAB, embed_dim=8, hidden_size=8, num_layers=1, cell="gru",
                                head="flat", tie_weights=True, dtype=dtype)
    if kind == "cnn":
        model = CNNClassifier(LABELS, (1, 8, 8), arch="vgg", head="flat")
        return model.to(dtype)
    raise SystemExit(f"equivalence.py: unknown case {case!r}")


def global_batches(case, dtype):
    """The same STEPS global batches (2 * ROWS_PER_RANK rows) on every rank."""
    rng = np.random.default_rng(7)
    rows = 2 * ROWS_PER_RANK
    for _ in range(STEPS):
        if case.startswith("cnn"):
            yield (rng.standard_normal((rows, 1, 8, 8)).astype(dtype),
                   rng.integers(0, LABELS.num_labels, rows))
        else:
            stream = rng.integers(0, VOCAB, (rows, STEPS_IN_TIME + 1))
            yield stream[:, :-1], stream[:, 1:]


def forward(model, x, y, state):
    """The mean loss of (x, y), and the recurrent state to carry (LMs only)."""
    if isinstance(model, AutoregressiveLM):
        return model.loss(x, y, state)
    return model.loss(x, y), None


def train_distributed(case, mode, W):
    tinyar.manual_seed(100 + W.rank)  # different weights on each rank until the broadcast
    model = make_model(case)
    broadcast_model(model, W)
    initial = model.state_dict()
    optimizer = SGD(model, lr=0.1, momentum=0.9)
    averager = GradientAverager(model, W, mode=mode, bucket_bytes=BUCKET_BYTES)
    state, losses, started = None, [], []
    for x, y in global_batches(case, model.dtype):
        optimizer.zero_grad()
        loss, state = forward(model, rank_rows(x, W), rank_rows(y, W), state)
        averager.begin()
        model.backward()
        started.append(averager.buckets_started)
        averager.finish()
        optimizer.step()
        losses.append(float(allreduce_mean([loss], W)[0]))
    return model, initial, losses, {"buckets": averager.buckets, "started": started}


def buffers(model):
    return {name: np.copy(getattr(module, attr)) for name, module, attr in model.named_buffers()}


def set_buffers(model, values):
    for name, module, attr in model.named_buffers():
        getattr(module, attr)[...] = values[name]


def train_reference(case, initial):
    model = make_model(case)
    model.load_state_dict(initial)
    optimizer = SGD(model, lr=0.1, momentum=0.9)
    state, losses = None, []
    for x, y in global_batches(case, model.dtype):
        optimizer.zero_grad()
        if case.startswith("cnn"):  # per-rank batch statistics: each half on its own
            before, halves = buffers(model), []
            for r in range(2):
                set_buffers(model, before)
                halves.append(forward(model, x[r::2], y[r::2], None)[0])
                model.backward()  # adds into the gradients: their sum over the halves
                if r == 0:
                    kept = buffers(model)
            model.flat_parameters().grad[...] *= 0.5
            set_buffers(model, kept)
            loss = sum(halves) / 2
        else:
            loss, state = forward(model, x, y, state)
            model.backward()
        optimizer.step()
        losses.append(float(loss))
    return model, losses


def main():
    out, cases = Path(sys.argv[1]), sys.argv[2:]
    W = world()
    with abort_on_exception(W):
        configure_threads(W)
        for case in cases:
            for mode in ("blocking", "bucketed"):
                model, initial, losses, info = train_distributed(case, mode, W)
                stem = out / f"{case}-{mode}-rank{W.rank}"
                np.savez(f"{stem}.npz", losses=np.array(losses), **model.state_dict())
                Path(f"{stem}.json").write_text(json.dumps(info))
            if W.is_root:
                reference, losses = train_reference(case, initial)
                np.savez(out / f"{case}-reference.npz", losses=np.array(losses),
                         **reference.state_dict())
        W.barrier()


if __name__ == "__main__":
    main()
