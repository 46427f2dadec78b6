"""Learning-rate schedulers: the lr sequences of torch.optim.lr_scheduler, exactly."""
import math
import warnings

import numpy as np
import pytest

from tinyar.nn.linear import Linear
from tinyar.optim.adam import Adam
from tinyar.optim.lr_scheduler import (CosineAnnealingLR, ExponentialLR, ReduceLROnPlateau,
                                       StepLR)
from tinyar.optim.optimizer import OptimizerError
from tinyar.optim.sgd import SGD

from ..helpers import torch_or_skip

EPOCHS = 50


def _pair(torch, base_lr=0.1):
    ours = SGD(Linear(2, 2), lr=base_lr)
    theirs = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=base_lr)
    return ours, theirs


def _lr_sequences(torch, ours_sched, theirs_sched, theirs_opt, metrics=None):
    ours_lrs, theirs_lrs = [ours_sched.get_last_lr()], [theirs_sched.get_last_lr()]
    for epoch in range(EPOCHS):
        theirs_opt.step()  # torch wants optimizer.step() before scheduler.step()
        if metrics is None:
            ours_sched.step()
            theirs_sched.step()
        else:
            ours_sched.step(metrics[epoch])
            theirs_sched.step(metrics[epoch])
        ours_lrs.append(ours_sched.get_last_lr())
        theirs_lrs.append(theirs_sched.get_last_lr())
        assert ours_sched.optimizer.lr == theirs_opt.param_groups[0]["lr"], f"epoch {epoch}"
    return ours_lrs, theirs_lrs


SCHEDULES = [
    ("StepLR", dict(step_size=7, gamma=0.5)),
    ("StepLR", dict(step_size=1)),
    ("ExponentialLR", dict(gamma=0.93)),
    ("CosineAnnealingLR", dict(T_max=50)),
    ("CosineAnnealingLR", dict(T_max=12, eta_min=0.01)),  # past T_max: back up, periodically
    ("CosineAnnealingLR", dict(T_max=1)),
]


@pytest.mark.torch
@pytest.mark.parametrize("name, kwargs", SCHEDULES, ids=[f"{n}-{i}" for i, (n, _) in
                                                         enumerate(SCHEDULES)])
def test_lr_sequence_equals_torch(name, kwargs):
    torch = torch_or_skip()
    import tinyar.optim.lr_scheduler as ours_module
    ours_opt, theirs_opt = _pair(torch)
    ours = getattr(ours_module, name)(ours_opt, **kwargs)
    theirs = getattr(torch.optim.lr_scheduler, name)(theirs_opt, **kwargs)
    ours_lrs, theirs_lrs = _lr_sequences(torch, ours, theirs, theirs_opt)
    assert ours_lrs == theirs_lrs  # exactly: the same float operations
    assert ours_opt.param_groups[0]["initial_lr"] == 0.1


PLATEAUS = [
    dict(),
    dict(patience=2, factor=0.5),
    dict(patience=1, cooldown=3, factor=0.3, min_lr=0.004),
    dict(mode="max", patience=2, threshold=0.05, threshold_mode="abs"),
    dict(mode="max", patience=0, threshold=0.01),
    dict(patience=1, threshold=0.2, threshold_mode="abs", eps=0.02),
]


@pytest.mark.torch
@pytest.mark.parametrize("kwargs", PLATEAUS)
def test_reduce_lr_on_plateau_equals_torch(kwargs):
    torch = torch_or_skip()
    rng = np.random.default_rng(3)
    # improving, then a noisy plateau, then improving again, then flat
    metrics = np.concatenate([np.linspace(2.0, 1.0, 10), 1.0 + 0.02 * rng.standard_normal(15),
                              np.linspace(1.0, 0.5, 10), np.full(15, 0.5)])
    if kwargs.get("mode") == "max":
        metrics = -metrics
    ours_opt, theirs_opt = _pair(torch)
    ours = ReduceLROnPlateau(ours_opt, **kwargs)
    theirs = torch.optim.lr_scheduler.ReduceLROnPlateau(theirs_opt, **kwargs)
    ours_lrs, theirs_lrs = _lr_sequences(torch, ours, theirs, theirs_opt,
                                         metrics=[float(m) for m in metrics])
    assert ours_lrs == theirs_lrs
    assert len(set(lr for (lr,) in ours_lrs)) > 1, "the test should see the lr change"


def test_reduce_lr_on_plateau_takes_a_0d_array():
    sched = ReduceLROnPlateau(SGD(Linear(2, 2), lr=1.0), patience=0)
    sched.step(np.array(1.0))
    sched.step(np.float32(2.0))
    assert sched.get_last_lr() == [0.1]


def test_cosine_with_warmup():
    opt = Adam(Linear(2, 2), lr=1.0)
    sched = CosineAnnealingLR(opt, T_max=12, eta_min=0.0, warmup_steps=4)
    lrs = [sched.get_last_lr()[0]]
    for _ in range(12):
        opt.step()
        sched.step()
        lrs.append(opt.lr)
    # linear from 0 to the base lr over 4 steps, then half a cosine over the other 8
    np.testing.assert_allclose(lrs[:5], [0.0, 0.25, 0.5, 0.75, 1.0], atol=1e-15)
    np.testing.assert_allclose(lrs[8], 0.5, atol=1e-15)
    np.testing.assert_allclose(lrs[6], 0.5 + 0.5 * math.cos(math.pi / 4), atol=1e-15)
    np.testing.assert_allclose(lrs[12], 0.0, atol=1e-15)
    assert all(a > b for a, b in zip(lrs[4:12], lrs[5:]))


def test_cosine_with_warmup_and_eta_min():
    opt = SGD(Linear(2, 2), lr=0.5)
    sched = CosineAnnealingLR(opt, T_max=10, eta_min=0.1, warmup_steps=2)
    for _ in range(10):
        sched.step()
    assert opt.lr == pytest.approx(0.1, abs=1e-15)


@pytest.mark.parametrize("make", [
    lambda o: StepLR(o, step_size=3, gamma=0.5),
    lambda o: ExponentialLR(o, gamma=0.9),
    lambda o: CosineAnnealingLR(o, T_max=8, eta_min=0.01),
    lambda o: CosineAnnealingLR(o, T_max=20, warmup_steps=5),
], ids=["StepLR", "ExponentialLR", "CosineAnnealingLR", "warmup"])
def test_state_dict_resumes_the_schedule(make):
    opt = SGD(Linear(2, 2), lr=0.1)
    sched = make(opt)
    for _ in range(7):
        sched.step()
    saved_opt, saved_sched = opt.state_dict(), sched.state_dict()
    rest = []
    for _ in range(10):
        sched.step()
        rest.append(opt.lr)

    opt2 = SGD(Linear(2, 2), lr=0.1)
    sched2 = make(opt2)
    opt2.load_state_dict(saved_opt)
    sched2.load_state_dict(saved_sched)
    rest2 = []
    for _ in range(10):
        sched2.step()
        rest2.append(opt2.lr)
    assert rest == rest2
    assert "optimizer" not in saved_sched


def test_reduce_lr_on_plateau_state_dict():
    opt = SGD(Linear(2, 2), lr=1.0)
    sched = ReduceLROnPlateau(opt, patience=1, cooldown=1)
    for m in [3.0, 2.0, 2.5, 2.5]:
        sched.step(m)
    state = sched.state_dict()
    sched2 = ReduceLROnPlateau(SGD(Linear(2, 2), lr=opt.lr), patience=1, cooldown=1)
    sched2.load_state_dict(state)
    for m in [2.5, 2.5, 2.5]:
        sched.step(m)
        sched2.step(m)
        assert sched.get_last_lr() == sched2.get_last_lr()


@pytest.mark.parametrize("make, message", [
    (lambda o: StepLR(o, step_size=0), "StepLR: expected step_size as an integer >= 1, got 0"),
    (lambda o: StepLR(o, step_size=2.5), "StepLR: expected step_size as an integer"),
    (lambda o: ExponentialLR(o, gamma=-0.5), "ExponentialLR: expected gamma in"),
    (lambda o: CosineAnnealingLR(o, T_max=0), "CosineAnnealingLR: expected T_max"),
    (lambda o: CosineAnnealingLR(o, T_max=10, eta_min=-1), "expected eta_min in"),
    (lambda o: CosineAnnealingLR(o, T_max=5, warmup_steps=5), "expected warmup_steps < T_max"),
    (lambda o: CosineAnnealingLR(o, T_max=5, warmup_steps=-1), "expected warmup_steps as an"),
    (lambda o: ReduceLROnPlateau(o, factor=1.0), r"expected factor in \[0, 1\)"),
    (lambda o: ReduceLROnPlateau(o, mode="lowest"), "expected mode 'min' or 'max'"),
    (lambda o: ReduceLROnPlateau(o, threshold_mode="pct"), "expected threshold_mode"),
    (lambda o: ReduceLROnPlateau(o, patience=-1), "expected patience as an integer >= 0"),
    (lambda o: ReduceLROnPlateau(o).step("low"), "expected the metric as a number"),
    (lambda o: StepLR("not an optimizer", 3), "StepLR: expected a tinyar Optimizer, got str"),
])
def test_bad_arguments_are_clear_errors(make, message):
    with pytest.raises(OptimizerError, match=message):
        make(SGD(Linear(2, 2), lr=0.1))


def test_no_warnings_in_the_usual_loop():
    opt = SGD(Linear(2, 2), lr=0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sched = StepLR(opt, 2)
        for _ in range(3):
            opt.step()
            sched.step()
