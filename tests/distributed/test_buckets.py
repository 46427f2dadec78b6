"""When the bucketed GradientAverager starts each reduction, without MPI.

A stand-in communicator plays rank 0 of two ranks that hold the same gradients: each
reduction doubles its slice (the sum over two equal copies), so the average must give back
the gradients exactly; it also records the order in which the reductions start, among the
backward hooks' reports of which module has finished. A non-blocking reduction reads its
slice when it starts and writes the sum when it is waited for, as MPI may: a bucket started
before backward was done with its gradients would come back with stale numbers.
"""
import importlib

import numpy as np
import pytest

from tinyar.distributed import GradientAverager, World
from tinyar.distributed.gradients import plan_buckets
from tinyar.errors import ConfigError
from tinyar.models import AutoregressiveLM
from tinyar.nn import ClassHierarchy, Linear, Module, ReLU, Sequential
from tinyar.nn import module as module_hooks

gradients = importlib.import_module("tinyar.distributed.gradients")


class FakeMPI:
    IN_PLACE, SUM = object(), object()

    class Request:
        @staticmethod
        def Waitall(requests):
            for request in requests:
                request.buffer[...] = 2 * request.sent
                request.waited = True

        @staticmethod
        def Testall(requests):
            return True


class FakeRequest:
    """A reduction in flight: the slice it reduces and what it held when it started."""

    def __init__(self, buffer):
        self.buffer, self.sent, self.waited = buffer, buffer.copy(), False


class TwoEqualRanks:
    """A communicator whose other rank holds this rank's gradients."""

    def __init__(self, flat_grad, events):
        self.base, self.events, self.requests = flat_grad, events, []

    def _range(self, buffer):
        start = (buffer.__array_interface__["data"][0] - self.base.__array_interface__[
            "data"][0]) // buffer.itemsize
        return int(start), int(start + buffer.size)

    def Iallreduce(self, inplace, buffer, op):
        assert inplace is FakeMPI.IN_PLACE and op is FakeMPI.SUM
        self.events.append(("start",) + self._range(buffer))
        self.requests.append(FakeRequest(buffer))
        return self.requests[-1]

    def Allreduce(self, inplace, buffer, op):
        self.events.append(("allreduce",) + self._range(buffer))
        buffer *= 2


@pytest.fixture
def fake_mpi(monkeypatch):
    monkeypatch.setattr(gradients, "import_mpi", lambda: FakeMPI)
    events = []
    previous = module_hooks.set_backward_hook(lambda m: events.append(("done", type(m).__name__)))
    yield events
    module_hooks.set_backward_hook(previous)


def lm(**options):
    kw = dict(embed_dim=6, hidden_size=8, num_layers=1, head="flat", dtype=np.float64)
    kw.update(options)
    return AutoregressiveLM(11, **kw)


def one_step(model, events, mode="bucketed", bucket_bytes=256):
    """begin, backward, finish on rank 0 of two equal ranks; the gradients of backward
    alone, and the averager."""
    world = World(rank=0, size=2, local_rank=0, local_size=2,
                  comm=TwoEqualRanks(model.flat_parameters().grad, events))
    averager = GradientAverager(model, world, mode=mode, bucket_bytes=bucket_bytes,
                                broadcast_buffers=False)
    ids = np.random.default_rng(3).integers(0, 11, (4, 5))
    model.zero_grad()
    model.loss(ids, ids)
    averager.begin()
    model.backward()
    own = model.flat_parameters().grad.copy()
    started = averager.buckets_started
    averager.finish()
    np.testing.assert_array_equal(model.flat_parameters().grad, own)  # (g + g) / 2 == g
    assert all(r.waited for r in world.comm.requests)
    return averager, started


def position(events, event):
    return events.index(event)


def names_in(model, start, end):
    names, offset = [], 0
    for name, p in model.named_parameters():
        if start <= offset < end:
            names.append(name)
        offset += p.size
    return names


def test_buckets_are_whole_parameters_from_the_end_of_the_buffer():
    model = lm()
    buckets, members = plan_buckets(model.flat_parameters(), 256)
    sizes = [p.size for p in model.parameters()]
    bounds = set(np.cumsum([0] + sizes).tolist())
    assert buckets[0][1] == sum(sizes) and buckets[-1][0] == 0
    for (start, end), params in zip(buckets, members):
        assert start in bounds and end in bounds
        assert sum(p.size for p in params) == end - start
    # each bucket but the last holds 256 bytes or more, and would hold less without its
    # last parameter
    for (start, end), params in zip(buckets[:-1], members[:-1]):
        assert (end - start) * 8 >= 256 > (end - start - params[-1].size) * 8


def test_the_first_bucket_holds_the_head_and_starts_before_the_backbone_is_done(fake_mpi):
    model = lm()
    averager, started = one_step(model, fake_mpi)
    starts = [e for e in fake_mpi if e[0] == "start"]
    assert [list(e[1:]) for e in starts] == [list(b) for b in averager.buckets]
    assert started == len(averager.buckets)  # all from hooks, during backward
    assert all(n.startswith("head.") for n in names_in(model, *averager.buckets[0]))
    assert position(fake_mpi, starts[0]) < position(fake_mpi, ("done", "LSTM"))
    assert position(fake_mpi, starts[-1]) > position(fake_mpi, ("done", "Embedding"))


def test_a_fused_heads_layers_are_done_when_the_head_is(fake_mpi):
    # the multi-level head computes its two Linear layers' gradients itself: their backward
    # never runs, so the head's own completion releases their bucket
    model = lm(head="multilevel", hierarchy=ClassHierarchy(np.arange(11) % 3))
    averager, started = one_step(model, fake_mpi)
    starts = [e for e in fake_mpi if e[0] == "start"]
    assert started == len(averager.buckets)
    assert position(fake_mpi, ("done", "MultiLevelSoftmax")) < position(fake_mpi, starts[0])
    assert position(fake_mpi, starts[0]) < position(fake_mpi, ("done", "LSTM"))


def test_a_tied_weight_waits_for_both_of_its_owners(fake_mpi):
    model = lm(embed_dim=8, tie_weights=True)
    # a bucket per parameter: the head's bias goes alone, before the LSTM is done
    averager, _ = one_step(model, fake_mpi, bucket_bytes=8)
    tied = next(b for b in averager.buckets if b[0] == 0)  # embedding.weight starts the buffer
    assert "embedding.weight" in names_in(model, *tied)
    assert position(fake_mpi, ("start",) + tied) > position(fake_mpi, ("done", "Embedding"))
    head_done = position(fake_mpi, ("done", "FlatSoftmaxHead"))
    assert any(position(fake_mpi, e) < position(fake_mpi, ("done", "LSTM"))
               for e in fake_mpi if e[0] == "start") and head_done < len(fake_mpi)


def test_blocking_mode_is_one_allreduce_after_backward(fake_mpi):
    model = lm()
    averager, started = one_step(model, fake_mpi, mode="blocking")
    assert started == 0
    assert [e for e in fake_mpi if e[0] != "done"] == [("allreduce", 0, model.num_parameters())]
    assert position(fake_mpi, ("done", "Embedding")) < len(fake_mpi) - 1


class Twice(Module):
    """The same Linear applied twice: its backward runs twice in one step."""

    def __init__(self):
        super().__init__()
        self.inner = Linear(3, 3, dtype=np.float64)
        self.act = ReLU()

    def forward(self, x):
        return self.inner(self.act(self.inner(x)))

    def backward(self, grad):
        return self.inner.backward(self.act.backward(self.inner.backward(grad)))


def test_a_layer_whose_backward_runs_again_after_its_bucket_left_is_an_error(fake_mpi):
    model = Twice()
    world = World(rank=0, size=2, local_rank=0, local_size=2,
                  comm=TwoEqualRanks(model.flat_parameters().grad, fake_mpi))
    averager = GradientAverager(model, world, mode="bucketed", broadcast_buffers=False)
    out = model(np.ones((2, 3)))
    averager.begin()
    with pytest.raises(ConfigError, match=r"Linear\(.*\) ran its backward again .* use "
                                          r"mode='blocking'"):
        model.backward(np.ones_like(out))
    assert module_hooks._backward_hook is not averager._backward_done  # disarmed
    # the blocking mode has no such limit
    blocking = GradientAverager(model, world, mode="blocking", broadcast_buffers=False)
    out = model(np.ones((2, 3)))
    blocking.begin()
    model.backward(np.ones_like(out))
    blocking.finish()


def test_steps_must_be_bracketed_and_the_model_not_repacked():
    model = Sequential(Linear(2, 2), ReLU())
    world = World(rank=0, size=2, local_rank=0, local_size=2, comm=object())
    averager = GradientAverager(model, world, mode="blocking")
    with pytest.raises(ConfigError, match="finish\\(\\) without begin\\(\\)"):
        averager.finish()
    averager.begin()
    with pytest.raises(ConfigError, match="begin\\(\\) called again before finish\\(\\)"):
        averager.begin()
    model.double()
    with pytest.raises(ConfigError, match="repacked"):
        GradientAverager(Sequential(Linear(2, 2)), world).begin() if False else \
            GradientAverager.begin(_fresh(averager))


def _fresh(averager):
    """The same averager, out of its step (so begin checks the buffer again)."""
    averager._active = False
    return averager


@pytest.mark.parametrize("options,message", [
    (dict(mode="sometimes"), "expected mode 'blocking' or 'bucketed', got 'sometimes'"),
    (dict(bucket_bytes=0), "expected bucket_bytes as an integer >= 1, got 0"),
    (dict(bucket_bytes=1.5), "expected bucket_bytes as an integer >= 1, got 1.5")])
def test_bad_options_are_one_line_errors(options, message):
    with pytest.raises(ConfigError, match=message):
        GradientAverager(Linear(2, 2), World(), **options)
