import numpy as np
import pytest

import tinyar
from tinyar import nn
from tinyar.errors import CheckpointError


def mlp():
    return nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))


def test_parameters_are_views_of_one_flat_buffer():
    model = mlp()
    flat = model.flat_parameters()
    assert flat.data.size == model.num_parameters() == 3 * 4 + 4 + 4 * 2 + 2
    for p in model.parameters():
        assert p.data.base is flat.data and p.grad.base is flat.grad
    flat.data[:] = 7.0
    assert (model[0].weight.data == 7.0).all() and (model[2].bias.data == 7.0).all()


def test_modules_built_separately_are_repacked_by_their_parent():
    a, b = nn.Linear(2, 2), nn.Linear(2, 2)
    before = a.weight.data.copy()
    model = nn.Sequential(a, b)
    assert a.weight.data.base is model.flat_parameters().data
    np.testing.assert_array_equal(a.weight.data, before)


def test_named_parameters_use_pytorch_names_and_order():
    assert [n for n, _ in mlp().named_parameters()] == ["0.weight", "0.bias", "2.weight", "2.bias"]


def test_shared_parameter_is_listed_once_and_gets_both_gradients():
    """Weight tying: two layers hold the same Parameter; backward adds both uses."""
    first, second = nn.Linear(3, 3, bias=False), nn.Linear(3, 3, bias=False)
    second.weight = first.weight
    model = nn.Sequential(first, nn.Tanh(), second)
    assert len(model.parameters()) == 1
    assert model.num_parameters() == 9
    from tests.helpers import assert_gradcheck
    assert_gradcheck(model, np.random.default_rng(0).standard_normal((2, 3)))


def test_zero_grad_clears_every_gradient():
    model = mlp()
    model(np.ones((5, 3), np.float32))
    model.backward(np.ones((5, 2), np.float32))
    assert np.abs(model.flat_parameters().grad).sum() > 0
    model.zero_grad()
    assert not model.flat_parameters().grad.any()


def test_backward_adds_into_gradients():
    model = mlp()
    x = np.ones((5, 3), np.float32)
    g = np.ones((5, 2), np.float32)
    model(x)
    model.backward(g)
    once = model.flat_parameters().grad.copy()
    model(x)
    model.backward(g)
    np.testing.assert_allclose(model.flat_parameters().grad, 2 * once, rtol=1e-6)


def test_state_dict_round_trip_and_errors():
    a, b = mlp(), mlp()
    state = a.state_dict()
    assert list(state) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    b.load_state_dict(state)
    for (_, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        np.testing.assert_array_equal(p.data, q.data)
    state["2.bias"] = np.zeros(5, np.float32)
    with pytest.raises(CheckpointError, match=r"'2.bias' has shape \(5,\).*\(2,\)"):
        b.load_state_dict(state)
    del state["2.bias"]
    with pytest.raises(CheckpointError, match="missing keys.*2.bias"):
        b.load_state_dict(state)


def test_state_dict_is_a_copy():
    model = mlp()
    state = model.state_dict()
    state["0.weight"][:] = 123
    assert not (model[0].weight.data == 123).any()


def test_to_dtype_repacks_and_keeps_values():
    model = mlp()
    before = model.state_dict()
    model.to(np.float64)
    assert model.dtype == np.float64
    assert model.flat_parameters().data.dtype == np.float64
    for name, value in model.state_dict().items():
        np.testing.assert_allclose(value, before[name])
    assert model.float() is model and model.dtype == np.float32


def test_unknown_device_is_a_clear_error():
    with pytest.raises(tinyar.DeviceError, match="unknown device"):
        mlp().to("tpu")


def test_train_eval_propagate():
    model = mlp()
    model.eval()
    assert not any(m.training for m in model.modules())
    model.train()
    assert all(m.training for m in model.modules())


def test_repr_lists_children():
    text = repr(mlp())
    assert "(0): Linear(in_features=3, out_features=4, bias=True)" in text and "(1): ReLU()" in text


def test_sequential_rejects_non_modules():
    with pytest.raises(TypeError, match="item 1 is a int"):
        nn.Sequential(nn.ReLU(), 3)


def test_forgetting_super_init_is_explained():
    class Broken(nn.Module):
        def __init__(self):
            self.w = 1

    with pytest.raises(AttributeError, match="must call super"):
        Broken()


def test_backward_can_skip_the_gradient_of_the_data():
    model = mlp()
    x = np.random.default_rng(0).standard_normal((5, 3)).astype(np.float32)
    g = np.ones((5, 2), np.float32)
    model(x)
    full = model.backward(g)
    grads = model.flat_parameters().grad.copy()
    model.zero_grad()
    model(x)
    assert model.backward(g, input_grad=False) is None
    np.testing.assert_array_equal(model.flat_parameters().grad, grads)
    assert full.shape == x.shape
    # a first layer that cannot skip still runs (and its result is dropped)
    relu_first = nn.Sequential(nn.ReLU(), nn.Linear(3, 2))
    relu_first(x)
    assert relu_first.backward(g, input_grad=False) is None
