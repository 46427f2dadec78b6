import numpy as np

from tinyar import nn
from tinyar.inspect import gradcheck


class WrongTanh(nn.Tanh):
    """A deliberately wrong backward (forgets the square): gradcheck must catch it."""

    def backward(self, grad_out):
        return grad_out * (1 - self._y)


class WrongLinear(nn.Linear):
    """Right input gradient, weight gradient off by a factor of two."""

    def backward(self, grad_out):
        dx = super().backward(grad_out)
        self.weight.grad *= 2
        return dx


def test_gradcheck_passes_a_correct_layer_and_prints_a_table():
    report = gradcheck(nn.Linear(3, 2), np.random.default_rng(0).standard_normal((4, 3)))
    assert report.ok()
    assert [r.name for r in report.rows] == ["input[0]", "weight", "bias"]
    text = str(report)
    assert "max abs err" in text and "weight" in text and "yes" in text
    assert report.max_rel_error < 1e-6


def test_gradcheck_catches_a_wrong_input_gradient():
    report = gradcheck(WrongTanh(), np.random.default_rng(0).standard_normal((3, 3)))
    assert not report.ok()
    assert report["input[0]"].rel_error > 1e-2
    assert "NO" in str(report)


def test_gradcheck_catches_a_wrong_parameter_gradient():
    report = gradcheck(WrongLinear(3, 2), np.random.default_rng(0).standard_normal((4, 3)))
    assert report["input[0]"].ok(1e-6)
    assert not report["weight"].ok(1e-6)
    assert report["bias"].ok(1e-6)


def test_gradcheck_leaves_the_module_untouched():
    layer = nn.Linear(3, 2)
    before = layer.state_dict()
    gradcheck(layer, np.ones((2, 3)))
    assert layer.dtype == np.float32
    for k, v in layer.state_dict().items():
        np.testing.assert_array_equal(v, before[k])
