import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import tinyar
from tinyar.data.batching import RandomWindowBatcher, StreamBatcher
from tinyar.errors import DTypeError, ShapeError


# ----------------------------------------------------------------- streams
def test_stream_shapes_and_shift():
    ids = np.arange(1000)
    b = StreamBatcher(ids, batch_size=4, bptt=10)
    assert len(b) == 25                             # rows of 250: 249 steps -> 24 full + 1 short
    batches = list(b)
    assert len(batches) == 25
    for x, y in batches[:-1]:
        assert x.shape == y.shape == (4, 10) and x.dtype == y.dtype == np.int64
        assert np.array_equal(y, x + 1)             # targets are the next tokens
    x, y = batches[-1]
    assert x.shape == (4, 9) and np.array_equal(y, x + 1)
    assert np.array_equal(batches[0][0][:, 0], [0, 250, 500, 750])   # row b starts at b*250


def test_streams_continue_across_batches():
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 50, size=533)
    b = StreamBatcher(ids, batch_size=3, bptt=7)
    xs, ys = zip(*b)
    rows = ids[:531].reshape(3, 177)
    # gluing the batches along time gives back each row: batch k+1 continues batch k
    assert np.array_equal(np.concatenate(xs, axis=1), rows[:, :-1])
    assert np.array_equal(np.concatenate(ys, axis=1), rows[:, 1:])


def test_stream_drop_last():
    b = StreamBatcher(np.arange(1000), batch_size=4, bptt=10, drop_last=True)
    assert len(b) == 24 and all(x.shape == (4, 10) for x, _ in b)


@settings(max_examples=20, deadline=None)
@given(n=st.integers(2, 300), batch=st.integers(1, 8), bptt=st.integers(1, 40))
def test_stream_covers_every_step_once(n, batch, bptt):
    if n // batch < 2:
        return
    b = StreamBatcher(np.arange(n), batch, bptt)
    xs = [x for x, _ in b]
    assert len(xs) == len(b)
    assert sum(x.shape[1] for x in xs) == n // batch - 1


def test_stream_epochs_resume_and_reset():
    b = StreamBatcher(np.arange(100), batch_size=2, bptt=5)
    first = [x.copy() for x, _ in b]
    assert b.position == 0
    assert all(np.array_equal(p, q) for p, q in zip(first, [x for x, _ in b]))  # 2nd epoch same
    it = iter(b)
    next(it), next(it)
    del it
    assert b.position == 2
    x, _ = next(iter(b))                      # resumes at batch 2
    assert np.array_equal(x, first[2])
    b.reset()
    x, _ = next(iter(b))
    assert np.array_equal(x, first[0])
    assert np.array_equal(b.batch(len(b) - 1)[0], first[-1])
    with pytest.raises(IndexError):
        b.batch(len(b))


def test_stream_batches_are_copies():
    ids = np.arange(40)
    x, y = StreamBatcher(ids, 2, 4).batch(0)
    x[:] = -1
    assert ids.min() == 0


def test_stream_errors():
    with pytest.raises(ShapeError, match=r"StreamBatcher\(batch_size=8, bptt=4\).*7 tokens.*"
                                         r"at least 16 tokens"):
        StreamBatcher(np.arange(7), batch_size=8, bptt=4)
    with pytest.raises(ShapeError, match="no full window"):
        StreamBatcher(np.arange(20), batch_size=2, bptt=10, drop_last=True)
    with pytest.raises(DTypeError, match="integer"):
        StreamBatcher(np.zeros(100), batch_size=2, bptt=4)
    with pytest.raises(ShapeError, match="1-D"):
        StreamBatcher(np.zeros((10, 10), dtype=np.int64), batch_size=2, bptt=4)
    with pytest.raises(ValueError, match="bptt must be a positive integer"):
        StreamBatcher(np.arange(100), batch_size=2, bptt=0)
    with pytest.raises(ValueError, match="batch_size"):
        StreamBatcher(np.arange(100), batch_size=2.5, bptt=3)


# ----------------------------------------------------------------- random windows
def test_random_windows_shapes_and_shift():
    ids = np.arange(500) * 3
    b = RandomWindowBatcher(ids, batch_size=16, seq_len=12)
    x, y = b.sample()
    assert x.shape == y.shape == (16, 12) and x.dtype == np.int64
    assert np.array_equal(y, x + 3)                          # next token
    assert np.array_equal(np.diff(x, axis=1), np.full((16, 11), 3))   # contiguous windows
    x, y = next(iter(b))
    assert x.shape == (16, 12)


def test_random_windows_reach_both_ends():
    ids = np.arange(6)
    x, y = RandomWindowBatcher(ids, batch_size=2000, seq_len=3, rng=0).sample()
    assert set(x[:, 0].tolist()) == {0, 1, 2}                # the last window is [2, 3, 4] -> 5
    assert y.max() == 5


def test_random_windows_follow_manual_seed():
    ids = np.arange(10_000)
    b = RandomWindowBatcher(ids, batch_size=8, seq_len=16)   # built before seeding
    tinyar.manual_seed(42)
    first = [b.sample()[0] for _ in range(3)]
    tinyar.manual_seed(42)
    again = [next(b)[0] for _ in range(3)]
    assert all(np.array_equal(p, q) for p, q in zip(first, again))
    tinyar.manual_seed(43)
    assert not np.array_equal(b.sample()[0], first[0])
    own = RandomWindowBatcher(ids, 8, 16, rng=np.random.default_rng(7))
    assert np.array_equal(own.sample()[0],
                          RandomWindowBatcher(ids, 8, 16, rng=7).sample()[0])


def test_random_windows_errors():
    with pytest.raises(ShapeError, match=r"RandomWindowBatcher\(batch_size=4, seq_len=10\).*"
                                         r"10 tokens are fewer than one window.*11 tokens"):
        RandomWindowBatcher(np.arange(10), batch_size=4, seq_len=10)
    RandomWindowBatcher(np.arange(11), batch_size=4, seq_len=10).sample()   # exactly one window
    with pytest.raises(DTypeError):
        RandomWindowBatcher(np.linspace(0, 1, 50), 2, 4)
    with pytest.raises(ValueError, match="seq_len"):
        RandomWindowBatcher(np.arange(50), 2, -1)
