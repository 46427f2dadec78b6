"""Batches of (input, target) token windows for a language model.

A language model learns to predict token t+1 from tokens up to t, so every
batch is a pair ``(x, y)`` of int64 arrays of shape (batch, T) with
``y[:, t] == x[:, t + 1]`` inside a window: y is x shifted by one token.

Two ways to cut a token stream into such windows:

* ``StreamBatcher``: the classic truncated-BPTT setup (Zaremba et al.'s
  Penn Treebank LM). The stream is cut into ``batch_size`` equal parallel
  streams, one per batch row::

      ids: a b c d e f g h i j k l m n o p q r s t u v w x   (24 tokens, batch_size 2)
      row 0: a b c d e f g h i j k l        row 1: m n o p q r s t u v w x

  and consecutive batches walk along each row (``bptt`` tokens at a time),
  so batch k+1 continues exactly where batch k stopped: the hidden state at
  the end of one batch is the right initial state for the next.
* ``RandomWindowBatcher``: each row is a window at a random offset (nanoGPT
  style); the hidden state starts from zero every batch.

Everything is vectorised: a batch is one slice or one fancy-index gather.
"""
import numpy as np

from ..errors import DTypeError, ShapeError
from ..random import generator

__all__ = ["StreamBatcher", "RandomWindowBatcher"]


def _as_ids(owner, ids):
    """A 1-D int64 array (no copy when it already is one)."""
    arr = np.asarray(ids)
    if not np.issubdtype(arr.dtype, np.integer):
        raise DTypeError(f"{owner}: expected integer token ids, got dtype {arr.dtype.name}")
    if arr.ndim != 1:
        raise ShapeError(f"{owner}: expected a 1-D array of token ids, got shape "
                         f"{tuple(arr.shape)}")
    return np.ascontiguousarray(arr, dtype=np.int64)


def _positive(owner, name, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{type(owner).__name__}: {name} must be a positive integer, "
                         f"got {value!r}")
    return int(value)


class StreamBatcher:
    """Contiguous (x, y) batches of shape (batch_size, bptt) for stateful truncated BPTT.

    The stream of N tokens is cut into ``batch_size`` rows of
    ``L = N // batch_size`` tokens (the leftover tail is dropped). Batch k is

        x = rows[:, k*bptt     : k*bptt + bptt]
        y = rows[:, k*bptt + 1 : k*bptt + bptt + 1]

    The last batch of an epoch is shorter when ``bptt`` does not divide
    ``L - 1``, unless ``drop_last=True``. ``len(batcher)`` is the number of
    batches per epoch.

    Iterating goes from the current position to the end of the epoch and then
    rewinds, so ``for x, y in batcher`` is one epoch; a loop left early
    resumes where it stopped next time, unless ``reset()`` is called. Reset
    the model's hidden state at the start of each epoch (``position == 0``).
    """

    def __init__(self, ids, batch_size, bptt, drop_last=False):
        self.batch_size = _positive(self, "batch_size", batch_size)
        self.bptt = _positive(self, "bptt", bptt)
        self.drop_last = bool(drop_last)
        ids = _as_ids(self, ids)
        length = ids.size // self.batch_size
        if length < 2:
            raise ShapeError(f"{self}: {ids.size} tokens make {self.batch_size} streams of "
                             f"{length} token(s); each needs at least 2 (an input and its "
                             f"target), so at least {2 * self.batch_size} tokens")
        if self.drop_last and length - 1 < self.bptt:
            raise ShapeError(f"{self}: streams of {length} tokens hold no full window of "
                             f"{self.bptt} inputs + 1 target; lower bptt or batch_size, or use "
                             f"drop_last=False")
        # Row b is the b-th contiguous slice of the stream.
        self.rows = ids[:length * self.batch_size].reshape(self.batch_size, length)
        steps = length - 1                   # the last token of a row is only a target
        self.num_batches = steps // self.bptt if self.drop_last else -(-steps // self.bptt)
        self.position = 0

    def __repr__(self):
        return f"StreamBatcher(batch_size={self.batch_size}, bptt={self.bptt})"

    def __len__(self):
        return self.num_batches

    def batch(self, k):
        """Batch number ``k`` of the epoch: (x, y), both (batch_size, T) int64, T <= bptt."""
        if not 0 <= k < self.num_batches:
            raise IndexError(f"{self}: batch {k} of an epoch of {self.num_batches}")
        start = k * self.bptt
        stop = min(start + self.bptt, self.rows.shape[1] - 1)
        # Copies, so a caller writing into x or y cannot change the data.
        return self.rows[:, start:stop].copy(), self.rows[:, start + 1:stop + 1].copy()

    def reset(self):
        """Go back to the first batch of the epoch."""
        self.position = 0

    def __iter__(self):
        while self.position < self.num_batches:
            k = self.position
            self.position += 1
            yield self.batch(k)
        self.position = 0


class RandomWindowBatcher:
    """(x, y) batches of ``batch_size`` windows of ``seq_len`` tokens at random offsets.

    Row i is ``x[i] = ids[s_i : s_i + seq_len]`` and ``y[i] = ids[s_i + 1 : s_i + seq_len + 1]``
    with ``s_i`` uniform in ``[0, N - seq_len - 1]``. The offsets come from
    ``rng``, or when it is None from ``tinyar.random.generator()`` at each
    draw, so ``tinyar.manual_seed(n)`` repeats the batches. An infinite
    iterator: ``next(batcher)`` or ``batcher.sample()``.
    """

    def __init__(self, ids, batch_size, seq_len, rng=None):
        self.batch_size = _positive(self, "batch_size", batch_size)
        self.seq_len = _positive(self, "seq_len", seq_len)
        self.ids = _as_ids(self, ids)
        if self.ids.size < self.seq_len + 1:
            raise ShapeError(f"{self}: {self.ids.size} tokens are fewer than one window of "
                             f"{self.seq_len} inputs + 1 target ({self.seq_len + 1} tokens); "
                             f"lower seq_len or use a longer corpus")
        self.rng = np.random.default_rng(rng) if isinstance(rng, (int, np.integer)) else rng
        self._offsets = np.arange(self.seq_len)

    def __repr__(self):
        return f"RandomWindowBatcher(batch_size={self.batch_size}, seq_len={self.seq_len})"

    def sample(self):
        """One batch: (x, y), both (batch_size, seq_len) int64."""
        rng = self.rng if self.rng is not None else generator()
        starts = rng.integers(0, self.ids.size - self.seq_len, size=self.batch_size)
        index = starts[:, None] + self._offsets              # (batch, seq_len)
        return self.ids[index], self.ids[index + 1]

    def __iter__(self):
        return self

    def __next__(self):
        return self.sample()
