"""The vectorisable float32 functions of ``backend/cpu/fastmath.py`` against libm, to
the error bounds its docstring states; float64 must be libm's own."""
import math

import numpy as np
import pytest
from numba import njit

from tinyar.backend.cpu.fastmath import fast_erf, fast_exp, fast_tanh


@njit(fastmath=True)
def _erf(x, out):
    for i in range(x.size):
        out[i] = fast_erf(x[i])


@njit(fastmath=True)
def _tanh(x, out):
    for i in range(x.size):
        out[i] = fast_tanh(x[i])


@njit(fastmath={"contract"})
def _exp(x, out):
    for i in range(x.size):
        out[i] = fast_exp(x[i])


KERNELS = {"erf": (_erf, math.erf), "tanh": (_tanh, math.tanh), "exp": (_exp, math.exp)}


def apply(name, x):
    kernel, _ = KERNELS[name]
    out = np.empty_like(x)
    kernel(x, out)
    return out


def libm(name, x):
    return np.array([KERNELS[name][1](float(v)) for v in x])


@pytest.mark.parametrize("name, bound", [("erf", 3.5e-7), ("tanh", 3e-7)])
def test_float32_absolute_error_is_bounded(name, bound):
    x = np.linspace(-9, 9, 200_001).astype(np.float32)
    assert np.abs(apply(name, x) - libm(name, x)).max() < bound


def test_float32_exp_is_within_a_few_ulp():
    x = np.linspace(-87, 88, 200_001).astype(np.float32)
    got, want = apply("exp", x), libm("exp", x)
    assert (np.abs(got - want) / want).max() < 4 * np.finfo(np.float32).eps


def test_float32_erf_is_odd_and_saturates():
    x = np.array([0.0, 1e-20, 4.0, 10.0, np.inf], np.float32)
    got = apply("erf", np.concatenate([x, -x]))
    np.testing.assert_array_equal(got[:5], -got[5:])
    np.testing.assert_array_equal(got[[0, 2, 3, 4]], [0, 1, 1, 1])


@pytest.mark.parametrize("name", sorted(KERNELS))
def test_float64_is_libm(name):
    x = np.linspace(-5, 5, 1001)
    np.testing.assert_array_equal(apply(name, x), libm(name, x))
