"""Which rows each rank works on, and each rank's own randomness.

Every rank reads the same global batch (the same data, the same shuffle: the same seed)
and keeps its share, rows r, r + N, r + 2N, ... for rank r of N (``rank_rows``). With a
global batch of N b rows, each rank holds b, and the N ranks together hold the batch one
process would train on: the averaged gradient (``gradients.py``) is that process's. Taking
every N-th row rather than a block keeps each rank's share spread over the batch (a
batch of sequences laid side by side, as truncated BPTT's, keeps each of its columns on
one rank from batch to batch, so the carried recurrent state stays valid).

A batch that the ranks cannot share evenly (the last one of an epoch of images) goes out
with ``rank_part``: rank r still takes rows r, r + N, ..., possibly none, and weighs its
mean loss by N b_r / B (b_r of the batch's B rows), so that the mean over the ranks of the
weighted means, and of their gradients, is the whole batch's mean:

    (1/N) sum_r (N b_r / B) L_r = (1/B) sum_r b_r L_r = L.

Evaluation splits items the same way (``rank_share``: items i with i = r mod N); the
per-rank sums are then added with ``sync.allreduce_sum``.

What must differ between ranks, the randomness that is not the data's order (data
augmentation, dropout masks), takes ``rank_seed(seed, world)``: rank 0 keeps ``seed``, so
a single process is unchanged, and every other rank gets a different one.
"""
import numbers

import numpy as np

from ..backend import backend_of
from ..errors import ConfigError, ShapeError

#: An odd 64-bit constant (2^64 / golden ratio): r -> r * C mod 2^64 is one-to-one, so the
#: seeds of different ranks differ.
_SEED_STRIDE = 0x9E3779B97F4A7C15


def rank_rows(batch, world):
    """Rows ``world.rank, world.rank + world.size, ...`` of ``batch`` (an array: the
    global batch's inputs or targets, (N*b, ...) -> (b, ...)), contiguous, on the device of
    ``batch``. A world of one process gets ``batch`` itself. Each rank must get at least one
    row; with a batch that is not a multiple of the ranks, some get one row more."""
    if world.size == 1:
        return batch
    rows = np.shape(batch)[0] if np.ndim(batch) else 0
    if rows < world.size:
        raise ShapeError(f"rank_rows: expected a batch of at least {world.size} rows (one "
                         f"per rank), got shape {tuple(np.shape(batch))}")
    share = batch[world.rank::world.size]
    return backend_of(batch).contiguous(share) if not isinstance(batch, np.ndarray) else \
        np.ascontiguousarray(share)


def rank_part(batch, world):
    """(rows, weight): this rank's rows of ``batch`` (a NumPy array: rows r, r + N, ... as
    ``rank_rows`` takes them, but possibly none when the batch holds fewer rows than there
    are ranks) and the weight N b_r / B of their mean loss (b_r of the batch's B rows; see
    the module docstring). A world of one process gets ``(batch, 1.0)``."""
    if world.size == 1:
        return batch, 1.0
    if np.ndim(batch) == 0 or len(batch) == 0:
        raise ShapeError(f"rank_part: expected a batch of at least one row, got shape "
                         f"{tuple(np.shape(batch))}")
    rows = np.ascontiguousarray(batch[world.rank::world.size])
    return rows, world.size * len(rows) / len(batch)


def rank_share(n, world):
    """The indices (int64) of the items of 0..n-1 that this rank evaluates: i = rank mod
    size (``np.arange(rank, n, size)``)."""
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 0:
        raise ConfigError(f"rank_share: expected n as an integer >= 0, got {n!r}")
    return np.arange(world.rank, int(n), world.size, dtype=np.int64)


def rank_seed(seed, world):
    """A seed for this rank's own randomness: ``seed`` on rank 0, and for rank r > 0
    ``(seed + r * C) mod 2^64`` (C odd), different for every rank of the job."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ConfigError(f"rank_seed: expected seed as an integer >= 0, got {seed!r}")
    if world.rank == 0:
        return int(seed)
    return (int(seed) + world.rank * _SEED_STRIDE) % (1 << 64)
