"""clip_grad_norm_ and clip_grad_value_ against torch.nn.utils."""
import math

import numpy as np
import pytest

from tinyar.backend.cpu import optim as cpu_optim
from tinyar.errors import NumericalError
from tinyar.optim.clip import clip_grad_norm_, clip_grad_value_
from tinyar.optim.optimizer import OptimizerError

from ..helpers import torch_or_skip
from .twins import TOL, make_model, torch_params


def _model_with_grads(dtype, scale=1.0, seed=5):
    model = make_model(dtype)
    rng = np.random.default_rng(seed)
    for p in model.parameters():
        p.grad[...] = scale * rng.standard_normal(p.shape)
    return model


def _torch_twin_grads(torch, model):
    tparams = torch_params(torch, model)
    for t, p in zip(tparams, model.parameters()):
        t.grad = torch.from_numpy(np.array(p.grad))
    return tparams


@pytest.mark.torch
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.0, math.inf])
@pytest.mark.parametrize("max_norm", [0.5, 1e6])  # clipped, untouched
def test_clip_grad_norm_matches_torch(dtype, norm_type, max_norm):
    torch = torch_or_skip()
    model = _model_with_grads(dtype)
    tparams = _torch_twin_grads(torch, model)
    before = [p.grad.copy() for p in model.parameters()]
    total = clip_grad_norm_(model.parameters(), max_norm, norm_type=norm_type)
    expected = torch.nn.utils.clip_grad_norm_(tparams, max_norm, norm_type=norm_type)
    assert isinstance(total, float)
    np.testing.assert_allclose(total, expected.item(), **TOL[dtype])
    for p, t, b in zip(model.parameters(), tparams, before):
        np.testing.assert_allclose(p.grad, t.grad.numpy(), **TOL[dtype])
        if max_norm > total:
            np.testing.assert_array_equal(p.grad, b)
    if max_norm < total:
        assert not np.allclose(model.parameters()[0].grad, before[0])


@pytest.mark.torch
def test_clip_grad_norm_on_threads_and_on_a_module(monkeypatch):
    torch = torch_or_skip()
    monkeypatch.setattr(cpu_optim, "PARALLEL_MIN_SIZE_ONE_ARRAY", 0)
    model = _model_with_grads(np.float32, scale=3.0)
    tparams = _torch_twin_grads(torch, model)
    total = clip_grad_norm_(model, 2.0)
    expected = torch.nn.utils.clip_grad_norm_(tparams, 2.0)
    np.testing.assert_allclose(total, expected.item(), rtol=1e-5)
    for p, t in zip(model.parameters(), tparams):
        np.testing.assert_allclose(p.grad, t.grad.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(math.sqrt(cpu_optim.sum_of_squares(model.flat_parameters().grad)),
                               2.0, rtol=1e-5)


def test_clip_grad_norm_of_parameters_not_in_buffer_order_does_not_repack():
    model = _model_with_grads(np.float64)
    flat = model.flat_parameters()
    w0, b0, w1, b1 = model.parameters()
    norm = math.sqrt(sum(float(np.sum(p.grad ** 2)) for p in (w1, w0)))
    before = b0.grad.copy()
    total = clip_grad_norm_([w1, w0], 1.0)
    assert model.flat_parameters() is flat and w0.flat is flat
    assert total == pytest.approx(norm, rel=1e-12)
    assert math.sqrt(float(np.sum(w0.grad ** 2) + np.sum(w1.grad ** 2))) == \
        pytest.approx(1.0, rel=1e-6)
    np.testing.assert_array_equal(b0.grad, before)  # not among the clipped ones


@pytest.mark.torch
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_clip_grad_value_matches_torch(dtype):
    torch = torch_or_skip()
    model = _model_with_grads(dtype)
    tparams = _torch_twin_grads(torch, model)
    clip_grad_value_(model, 0.7)
    torch.nn.utils.clip_grad_value_(tparams, 0.7)
    for p, t in zip(model.parameters(), tparams):
        np.testing.assert_array_equal(p.grad, t.grad.numpy())
    assert max(np.abs(p.grad).max() for p in model.parameters()) == pytest.approx(0.7)


def test_nonfinite_norm():
    model = _model_with_grads(np.float32)
    model.parameters()[1].grad[0] = np.inf
    with pytest.raises(NumericalError, match="clip_grad_norm_: the total 2.0-norm .* inf"):
        clip_grad_norm_(model, 1.0, error_if_nonfinite=True)
    assert clip_grad_norm_(model, 1.0) == math.inf


def test_empty_parameter_list_has_norm_zero():
    assert clip_grad_norm_([], 1.0) == 0.0


@pytest.mark.parametrize("call, message", [
    (lambda m: clip_grad_norm_(m, -1.0), r"clip_grad_norm_: expected max_norm in \[0, inf\)"),
    (lambda m: clip_grad_norm_(m, 1.0, norm_type=0), "expected norm_type > 0"),
    (lambda m: clip_grad_norm_([np.zeros(3)], 1.0), r"parameters\[0\] is a ndarray"),
    (lambda m: clip_grad_value_(m, -0.1), "clip_grad_value_: expected clip_value in"),
])
def test_bad_arguments_are_clear_errors(call, message):
    with pytest.raises(OptimizerError, match=message):
        call(_model_with_grads(np.float32))
