"""How ``tinyar classify`` cuts an epoch into batches (``classify.batch_bounds``)."""
import pytest
from hypothesis import given, strategies as st

from tinyar.train.classify import batch_bounds


def test_a_rest_of_less_than_half_a_batch_joins_the_last_full_batch():
    assert batch_bounds(13, 6) == [(0, 6), (6, 13)]          # not 6 + 6 + 1
    assert batch_bounds(15, 6) == [(0, 6), (6, 12), (12, 15)]  # 3: half a batch, its own
    assert batch_bounds(12, 6) == [(0, 6), (6, 12)]
    assert batch_bounds(4, 6) == [(0, 4)]                      # fewer images than a batch
    assert batch_bounds(1, 1) == [(0, 1)]


@given(n=st.integers(1, 5000), size=st.integers(1, 700))
def test_batches_cover_the_epoch_once_and_hold_half_to_one_and_a_half_batches(n, size):
    bounds = batch_bounds(n, size)
    assert bounds[0][0] == 0 and bounds[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))  # in order, no gaps
    sizes = [end - start for start, end in bounds]
    if n >= size:
        assert all(2 * s >= size and 2 * s < 3 * size for s in sizes), sizes
    else:
        assert sizes == [n]


@pytest.mark.parametrize("ranks", [2, 3, 4])
def test_each_rank_gets_at_least_half_its_batch_of_every_batch(ranks):
    per_rank = 4
    for n in range(per_rank * ranks, 200):
        for start, end in batch_bounds(n, per_rank * ranks):
            shares = [len(range(start + r, end, ranks)) for r in range(ranks)]
            assert min(shares) >= per_rank // 2, (n, start, end, shares)
