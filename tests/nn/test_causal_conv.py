import numpy as np
import pytest

from tinyar.errors import ShapeError
from tinyar.nn.causal_conv import CausalConvStack, GatedActivation
from tests.helpers import assert_gradcheck


class OutputOnly(CausalConvStack):
    """gradcheck sees one output: drop the (None) state."""

    def forward(self, x):
        return super().forward(x)[0]

    def backward(self, grad_output):
        return super().backward(grad_output)[0]


def test_gradcheck_stack():
    x = np.random.default_rng(0).standard_normal((2, 7, 3))
    assert_gradcheck(OutputOnly(3, 4, num_layers=3, kernel_size=2), x)


def test_gradcheck_gate():
    assert_gradcheck(GatedActivation(), np.random.default_rng(1).standard_normal((2, 6, 5)))


def test_output_is_causal_and_receptive_field_is_as_documented():
    stack = CausalConvStack(2, 4, num_layers=3, kernel_size=2).double()
    assert stack.receptive_field == 1 + 1 + 2 + 4
    x = np.random.default_rng(2).standard_normal((1, 20, 2))
    y, state = stack(x)
    assert y.shape == (1, 20, 4) and state is None
    x2 = x.copy()
    x2[:, 12:] += 5.0  # change the future from t = 12 on
    y2, _ = stack(x2)
    np.testing.assert_array_equal(y2[:, :12], y[:, :12])
    assert np.abs(y2[:, 12:] - y[:, 12:]).max() > 1e-3
    x3 = x.copy()
    x3[:, 3] += 5.0  # a change at t = 3 reaches t = 3 .. 3 + 7 and no further
    y3, _ = stack(x3)
    changed = np.flatnonzero(np.abs(y3 - y).max(axis=(0, 2)) > 0)
    assert changed.min() == 3 and changed.max() == 3 + stack.receptive_field - 1


def test_bad_input():
    with pytest.raises(ShapeError, match=r"CausalConvStack.*expected input \(N, T, 3\)"):
        CausalConvStack(3, 4)(np.zeros((2, 5, 4), np.float32))
    with pytest.raises(ValueError, match="2 dilations for 3 layers"):
        CausalConvStack(3, 4, num_layers=3, dilations=[1, 2])
