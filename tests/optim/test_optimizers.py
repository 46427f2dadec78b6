"""Optimizers: trajectories against torch.optim, state round trips, the flat-buffer contract."""
import json

import numpy as np
import pytest

import tinyar.backend.cpu as cpu_backend
from tinyar.backend.cpu import optim as cpu_optim
from tinyar.errors import CheckpointError, TinyarError
from tinyar.nn.container import Sequential
from tinyar.nn.linear import Linear
from tinyar.nn.parameter import Parameter
from tinyar.optim.adagrad import Adagrad
from tinyar.optim.adam import Adam, AdamW
from tinyar.optim.optimizer import OptimizerError
from tinyar.optim.rmsprop import RMSprop
from tinyar.optim.sgd import SGD

from ..helpers import torch_or_skip
from .twins import (QuadraticLoss, assert_same_params, make_model, set_grads, set_torch_grads,
                    torch_params)

STEPS = 25

CASES = [
    (SGD, dict(lr=0.1)),
    (SGD, dict(lr=0.05, momentum=0.9)),
    (SGD, dict(lr=0.05, momentum=0.9, dampening=0.2, weight_decay=0.01)),
    (SGD, dict(lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.05)),
    (Adagrad, dict(lr=0.1)),
    (Adagrad, dict(lr=0.2, lr_decay=0.05, weight_decay=0.02, initial_accumulator_value=0.3,
                   eps=1e-6)),
    (RMSprop, dict(lr=0.01)),
    (RMSprop, dict(lr=0.01, momentum=0.9, weight_decay=0.01)),
    (RMSprop, dict(lr=0.01, centered=True, alpha=0.9)),
    (RMSprop, dict(lr=0.005, centered=True, momentum=0.5, alpha=0.9, eps=1e-4)),
    # 1 - alpha > 0.5: torch's other lerp formula. float64 only: with so short a memory
    # v - m^2 cancels to a few float32 digits, and both libraries round it differently
    (RMSprop, dict(lr=0.005, centered=True, momentum=0.5, alpha=0.3, eps=1e-4), "float64"),
    (Adam, dict(lr=0.05)),
    (Adam, dict(lr=0.05, weight_decay=0.1)),
    (Adam, dict(lr=0.05, amsgrad=True)),
    (Adam, dict(lr=0.05, betas=(0.3, 0.8), eps=1e-3)),  # 1 - beta1 > 0.5: torch's other lerp
    (AdamW, dict(lr=0.05)),
    (AdamW, dict(lr=0.05, weight_decay=0.3, amsgrad=True)),
]


def _torch_twin(torch, cls, tparams, kwargs):
    return getattr(torch.optim, cls.__name__)(tparams, **kwargs)


def _run_side_by_side(cls, kwargs, dtype, steps=STEPS):
    torch = torch_or_skip()
    model = make_model(dtype)
    loss = QuadraticLoss(model)
    tparams = torch_params(torch, model)
    ours, theirs = cls(model, **kwargs), _torch_twin(torch, cls, tparams, kwargs)
    for step in range(steps):
        ours.zero_grad()
        set_grads(model, loss, step)
        set_torch_grads(torch, tparams, loss, step)
        ours.step()
        theirs.step()
        assert_same_params(model, tparams, dtype, step)
    return model, tparams


TRAJECTORIES = [pytest.param(case[0], case[1], dtype, id=f"{case[0].__name__}-{i}-{dtype.__name__}")
                for i, case in enumerate(CASES) for dtype in (np.float64, np.float32)
                if len(case) == 2 or dtype.__name__ in case[2:]]
# the last case of each optimizer that runs in both dtypes
SOME = {case[0]: case for case in CASES if len(case) == 2}


@pytest.mark.torch
@pytest.mark.parametrize("cls, kwargs, dtype", TRAJECTORIES)
def test_trajectory_matches_torch(cls, kwargs, dtype):
    _run_side_by_side(cls, kwargs, dtype)


@pytest.mark.torch
@pytest.mark.parametrize("cls, kwargs", SOME.values(), ids=[c.__name__ for c in SOME])
def test_trajectory_matches_torch_on_threads(cls, kwargs, monkeypatch):
    """The threaded kernels (big buffers) follow the same trajectory."""
    monkeypatch.setattr(cpu_optim, "PARALLEL_MIN_SIZE", 0)
    _run_side_by_side(cls, kwargs, np.float32, steps=8)


@pytest.mark.torch
def test_scheduler_changes_the_lr_used_by_step():
    """A change of param_groups[0]['lr'] (what a scheduler does) reaches the kernel."""
    torch = torch_or_skip()
    model = make_model(np.float64)
    loss = QuadraticLoss(model)
    tparams = torch_params(torch, model)
    ours, theirs = Adam(model, lr=0.1), torch.optim.Adam(tparams, lr=0.1)
    for step in range(10):
        set_grads(model, loss, step)
        set_torch_grads(torch, tparams, loss, step)
        ours.step()
        theirs.step()
        ours.param_groups[0]["lr"] *= 0.7
        theirs.param_groups[0]["lr"] *= 0.7
    assert_same_params(model, tparams, np.float64, 10)
    assert ours.lr == theirs.param_groups[0]["lr"]


@pytest.mark.parametrize("cls, kwargs", SOME.values(), ids=[c.__name__ for c in SOME])
def test_state_dict_round_trip_resumes_the_same_trajectory(cls, kwargs, tmp_path):
    """10 steps, save (JSON + npz, no pickle), load into a fresh optimizer, 10 more steps."""
    model = make_model(np.float32)
    loss = QuadraticLoss(model)
    opt = cls(model, **kwargs)
    for step in range(10):
        set_grads(model, loss, step)
        opt.step()

    state = opt.state_dict()
    arrays = {k: v for k, v in state["state"].items() if isinstance(v, np.ndarray)}
    numbers = {k: v for k, v in state["state"].items() if k not in arrays}
    np.savez(tmp_path / "opt.npz", **arrays)
    (tmp_path / "opt.json").write_text(json.dumps({"state": numbers,
                                                   "param_groups": state["param_groups"]}))
    weights = model.state_dict()

    resumed_model = make_model(np.float32, seed=99)
    resumed_model.load_state_dict(weights)
    resumed = cls(resumed_model, **kwargs)
    saved = json.loads((tmp_path / "opt.json").read_text())
    with np.load(tmp_path / "opt.npz", allow_pickle=False) as npz:
        saved["state"].update({k: npz[k] for k in npz.files})
    resumed.load_state_dict(saved)
    assert resumed.state["step"] == 10

    for step in range(10, 20):
        set_grads(model, loss, step)
        set_grads(resumed_model, loss, step)
        opt.step()
        resumed.step()
    for (name, a), b in zip(model.named_parameters(), resumed_model.parameters()):
        np.testing.assert_array_equal(a.data, b.data, err_msg=name)


def test_state_dict_is_a_copy_and_load_restores_hyperparameters():
    model = make_model(np.float32)
    opt = Adam(model, lr=0.01, betas=(0.8, 0.9))
    for p in model.parameters():
        p.grad[...] = 1
    opt.step()
    state = opt.state_dict()
    state["state"]["exp_avg"][:] = 123  # must not reach the optimizer
    assert not np.any(opt.state["exp_avg"] == 123)
    assert state["param_groups"][0]["betas"] == [0.8, 0.9]
    other = Adam(make_model(np.float32), lr=0.5)
    other.load_state_dict(opt.state_dict())
    assert other.lr == 0.01 and other.param_groups[0]["betas"] == (0.8, 0.9)
    np.testing.assert_array_equal(other.state["exp_avg_sq"], opt.state["exp_avg_sq"])
    assert other.state["exp_avg"] is not opt.state["exp_avg"]


def test_load_state_dict_of_another_size_is_an_error():
    opt = Adam(make_model(np.float32))
    small = Adam(Linear(2, 2))
    with pytest.raises(CheckpointError, match="Adam.load_state_dict.*53"):
        opt.load_state_dict(small.state_dict())
    with pytest.raises(CheckpointError, match="'state' and 'param_groups'"):
        opt.load_state_dict({"exp_avg": np.zeros(53)})


def test_step_is_one_kernel_call_over_the_flat_buffer(monkeypatch):
    model = Sequential(Linear(7, 5), Linear(5, 4), Linear(4, 2))
    opt = Adam(model.parameters(), lr=0.1)
    flat = model.flat_parameters()
    n = model.num_parameters()
    assert sum(a.size for a in opt.state.values() if isinstance(a, np.ndarray)) == 2 * n

    calls = []
    real = cpu_backend.adam_step

    def counting(param, grad, *args, **kwargs):
        calls.append((param, grad))
        return real(param, grad, *args, **kwargs)

    monkeypatch.setattr(cpu_backend, "adam_step", counting)
    for p in model.parameters():
        p.grad[...] = 1.0
    before = [p.data.copy() for p in model.parameters()]
    opt.step()
    assert len(calls) == 1
    param, grad = calls[0]
    assert param.size == n and np.shares_memory(param, flat.data)
    assert np.shares_memory(grad, flat.grad)
    # every parameter (a view of the buffer) moved by lr * sign(g) on the first Adam step
    for p, b in zip(model.parameters(), before):
        np.testing.assert_allclose(b - p.data, 0.1, rtol=1e-5)


def test_moments_of_a_model_have_the_number_of_parameters():
    model = make_model(np.float64)
    for cls, kwargs, names in [(SGD, dict(momentum=0.9), ["momentum_buffer"]),
                               (Adagrad, {}, ["sum"]),
                               (RMSprop, dict(momentum=0.9, centered=True),
                                ["square_avg", "grad_avg", "momentum_buffer"]),
                               (Adam, dict(amsgrad=True), ["exp_avg", "exp_avg_sq",
                                                           "max_exp_avg_sq"])]:
        opt = cls(model, **kwargs)
        opt.step()
        for name in names:
            assert opt.state[name].shape == (53,), (cls.__name__, name)
            assert opt.state[name].dtype == np.float64


def test_one_layer_of_a_model_is_updated_through_a_slice_of_the_model_buffer():
    """Fine-tuning a part: no repacking, and the rest of the model keeps its buffer."""
    model = make_model(np.float32)
    flat = model.flat_parameters()
    opt = SGD(model[1], lr=1.0)
    assert opt.state == {"step": 0}
    model.zero_grad()
    for p in model.parameters():
        p.grad[...] = 1.0
    first = model[0].weight.data.copy()
    second = model[1].weight.data.copy()
    opt.step()
    assert model.flat_parameters() is flat
    np.testing.assert_array_equal(model[0].weight.data, first)
    np.testing.assert_allclose(model[1].weight.data, second - 1.0)
    opt.zero_grad()
    assert np.all(model[0].weight.grad == 1.0) and np.all(model[1].weight.grad == 0)


def test_loose_parameters_are_packed_into_their_own_buffer():
    a = Parameter(np.ones((2, 3), np.float32))
    b = Parameter(np.full(4, 2.0, np.float32))
    opt = SGD([a, b], lr=0.5)
    a.grad[...] = 1.0
    b.grad[...] = -1.0
    opt.step()
    np.testing.assert_allclose(a.data, 0.5)
    np.testing.assert_allclose(b.data, 2.5)
    assert a.flat is b.flat and a.flat.data.size == 10


def test_step_after_the_model_was_repacked_is_a_clear_error():
    model = make_model(np.float32)
    opt = Adam(model)
    model.double()
    with pytest.raises(OptimizerError, match="no longer in the flat buffer.*model.to"):
        opt.step()


def test_rebinding_a_grad_is_a_clear_error():
    model = make_model(np.float32)
    opt = SGD(model, lr=0.1)
    model[0].bias.grad = np.ones(5, np.float32)  # not a view of the flat buffer any more
    with pytest.raises(OptimizerError, match=r"p.grad\[...\]"):
        opt.step()


def test_closure_is_called_and_its_loss_returned():
    model = make_model(np.float32)
    opt = SGD(model, lr=0.1)
    assert opt.step(lambda: 4.5) == 4.5
    assert opt.step() is None


@pytest.mark.parametrize("make, message", [
    (lambda m: SGD(m, lr=-0.1), r"SGD: expected lr in \[0, inf\), got -0.1"),
    (lambda m: SGD(m, lr=float("nan")), "SGD: expected lr as a finite real number"),
    (lambda m: SGD(m, lr="0.1"), "SGD: expected lr as a finite real number"),
    (lambda m: SGD(m, momentum=-0.5), "SGD: expected momentum in"),
    (lambda m: SGD(m, weight_decay=-1), "SGD: expected weight_decay in"),
    (lambda m: SGD(m, nesterov=True), "nesterov=True needs momentum > 0"),
    (lambda m: SGD(m, momentum=0.9, dampening=0.1, nesterov=True), "and dampening = 0"),
    (lambda m: Adagrad(m, lr_decay=-1), "Adagrad: expected lr_decay in"),
    (lambda m: Adagrad(m, initial_accumulator_value=-1), "initial_accumulator_value"),
    (lambda m: Adagrad(m, eps=-1e-10), "Adagrad: expected eps in"),
    (lambda m: RMSprop(m, alpha=-0.1), "RMSprop: expected alpha in"),
    (lambda m: RMSprop(m, alpha=1.5), "RMSprop: expected alpha in"),
    (lambda m: RMSprop(m, momentum=-0.1), "RMSprop: expected momentum in"),
    (lambda m: Adam(m, lr=-1e-3), "Adam: expected lr in"),
    (lambda m: Adam(m, betas=(1.0, 0.999)), r"Adam: expected betas\[0\] in \[0, 1\), got 1.0"),
    (lambda m: Adam(m, betas=(0.9, -0.1)), r"Adam: expected betas\[1\] in \[0, 1\)"),
    (lambda m: Adam(m, betas=0.9), "Adam: expected betas as a pair"),
    (lambda m: Adam(m, eps=-1.0), "Adam: expected eps in"),
    (lambda m: AdamW(m, weight_decay=-0.01), "AdamW: expected weight_decay in"),
], ids=lambda v: v if isinstance(v, str) else "")
def test_bad_hyperparameters_are_clear_errors(make, message):
    with pytest.raises(OptimizerError, match=message):
        make(make_model(np.float32))


@pytest.mark.parametrize("params, message", [
    ([], "empty parameter list"),
    ([np.zeros(3)], r"params\[0\] is a ndarray, not a Parameter"),
    ([{"params": []}], "parameter group dict"),
    ({"params": []}, "parameter group dict"),
    (3, "expected a Module or an iterable of Parameters, got a int"),
])
def test_bad_params_are_clear_errors(params, message):
    with pytest.raises(OptimizerError, match=message):
        Adam(params)


def test_duplicate_parameters_are_an_error():
    model = make_model(np.float32)
    with pytest.raises(OptimizerError, match="more than once"):
        SGD(model.parameters() + model.parameters()[:1])


def test_optimizer_errors_are_tinyar_value_errors():
    assert issubclass(OptimizerError, TinyarError) and issubclass(OptimizerError, ValueError)
