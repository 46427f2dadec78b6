"""The optimizer ops against their NumPy references, over every setting and both code paths.

tests/backend/test_ops.py checks each op on one example; here every
combination of the flags that change the kernel's branches is checked, on a
buffer large enough for the vectorised loop and its remainder, on one thread
and (with the size threshold lowered to 0) on all of them.
"""
import itertools

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from tinyar.backend.cpu import optim as cpu_optim
from tinyar.backend.ops import REGISTRY
from tinyar.errors import DTypeError, ShapeError

N = 1031
TOL = {np.float64: dict(rtol=1e-10, atol=1e-12), np.float32: dict(rtol=1e-5, atol=1e-6)}


@pytest.fixture(params=["one thread", "threads"])
def threads(request, monkeypatch):
    if request.param == "threads":
        monkeypatch.setattr(cpu_optim, "PARALLEL_MIN_SIZE", 0)
        monkeypatch.setattr(cpu_optim, "PARALLEL_MIN_SIZE_ONE_ARRAY", 0)
    return request.param


def _buffers(dtype, names, seed=3):
    rng = np.random.default_rng(seed)
    out = {}
    for name in names:
        x = rng.standard_normal(N)
        if name in ("state_sum", "square_avg", "exp_avg_sq", "max_exp_avg_sq"):
            x = np.abs(x) + 0.5  # second moments are positive
        if name == "grad_avg":
            x = 0.3 * x  # a mean whose square stays below square_avg
        out[name] = x.astype(dtype)
    if "grad_avg" in out:  # a mean square is at least the squared mean
        out["square_avg"] += out["grad_avg"] ** 2
    return out


def _check(name, dtype, arrays, scalars):
    spec = REGISTRY[name]
    expected = spec.reference(**{k: (v.copy() if v is not None else None)
                                 for k, v in arrays.items()}, **scalars)
    got = {k: (v.copy() if v is not None else None) for k, v in arrays.items()}
    getattr(cpu_optim, name)(**got, **scalars)
    for key, want in zip(spec.inplace, expected):
        if want is None:
            continue
        assert got[key].dtype == dtype and np.isfinite(want).all()
        np.testing.assert_allclose(got[key], want, err_msg=f"{name}: {key} {scalars}",
                                   **TOL[dtype])


DTYPES = [np.float32, np.float64]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("momentum, dampening, nesterov, weight_decay, first_step", [
    (0.0, 0.0, False, 0.0, False), (0.0, 0.0, False, 0.1, False), (0.9, 0.0, False, 0.0, True),
    (0.9, 0.3, False, 0.1, False), (0.9, 0.0, True, 0.1, False), (0.9, 0.0, True, 0.0, True)])
def test_sgd_step(threads, dtype, momentum, dampening, nesterov, weight_decay, first_step):
    arrays = _buffers(dtype, ["param", "grad", "momentum_buf"])
    if momentum == 0:
        arrays["momentum_buf"] = None
    _check("sgd_step", dtype, arrays, dict(lr=0.1, momentum=momentum, dampening=dampening,
                                           weight_decay=weight_decay, nesterov=nesterov,
                                           first_step=first_step))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("lr_decay, weight_decay, step", [(0.0, 0.0, 1), (0.1, 0.05, 7)])
def test_adagrad_step(threads, dtype, lr_decay, weight_decay, step):
    _check("adagrad_step", dtype, _buffers(dtype, ["param", "grad", "state_sum"]),
           dict(lr=0.1, lr_decay=lr_decay, weight_decay=weight_decay, eps=1e-10, step=step))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("centered, momentum, weight_decay, alpha",
                         [(c, m, w, a) for c, m, w, a in itertools.product(
                             [False, True], [0.0, 0.9], [0.0, 0.01], [0.99, 0.2])])
def test_rmsprop_step(threads, dtype, centered, momentum, weight_decay, alpha):
    arrays = _buffers(dtype, ["param", "grad", "square_avg", "grad_avg", "momentum_buf"])
    arrays["grad_avg"] = arrays["grad_avg"] if centered else None
    arrays["momentum_buf"] = arrays["momentum_buf"] if momentum > 0 else None
    _check("rmsprop_step", dtype, arrays, dict(lr=0.01, alpha=alpha, eps=1e-8,
                                               weight_decay=weight_decay, momentum=momentum,
                                               centered=centered))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("amsgrad, decoupled, weight_decay, betas, step",
                         [(a, d, w, b, s) for a, d, w, b, s in itertools.product(
                             [False, True], [False, True], [0.0, 0.1], [(0.9, 0.999), (0.2, 0.5)],
                             [1, 9])])
def test_adam_step(threads, dtype, amsgrad, decoupled, weight_decay, betas, step):
    arrays = _buffers(dtype, ["param", "grad", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"])
    if not amsgrad:
        arrays["max_exp_avg_sq"] = None
    _check("adam_step", dtype, arrays, dict(lr=0.01, beta1=betas[0], beta2=betas[1], eps=1e-8,
                                            weight_decay=weight_decay, step=step,
                                            decoupled_weight_decay=decoupled))


@pytest.mark.parametrize("dtype", DTYPES)
def test_norm_scale_and_clamp(threads, dtype):
    x = _buffers(dtype, ["x"])["x"]
    total = cpu_optim.sum_of_squares(x)
    assert total.dtype == dtype
    np.testing.assert_allclose(total, np.sum(x.astype(np.float64) ** 2), rtol=1e-7)
    y = x.copy()
    cpu_optim.scale_(y, 0.25)
    np.testing.assert_allclose(y, x * dtype(0.25), **TOL[dtype])
    cpu_optim.clamp_(y, -0.1, 0.2)
    np.testing.assert_allclose(y, np.clip(x * dtype(0.25), -0.1, 0.2), **TOL[dtype])


def test_nan_propagates_through_amsgrad_and_clamp():
    arrays = _buffers(np.float32, ["param", "grad", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"])
    arrays["grad"][5] = np.nan
    cpu_optim.adam_step(**arrays, lr=0.01, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0,
                        step=1)
    assert np.isnan(arrays["param"][5]) and np.isnan(arrays["max_exp_avg_sq"][5])
    assert np.isfinite(np.delete(arrays["param"], 5)).all()
    x = np.array([np.nan, 5.0, -5.0, 0.5], np.float32)
    cpu_optim.clamp_(x, -1.0, 1.0)
    np.testing.assert_array_equal(x, [np.nan, 1.0, -1.0, 0.5])


def test_empty_buffers_are_fine():
    e = np.zeros(0, np.float32)
    cpu_optim.adam_step(e, e.copy(), e.copy(), e.copy(), 1e-3, 0.9, 0.999, 1e-8, 0.0, 1)
    assert cpu_optim.sum_of_squares(e) == 0


def test_bad_buffers_are_clear_errors():
    a = _buffers(np.float32, ["param", "grad", "exp_avg", "exp_avg_sq"])
    scalars = dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, step=1)
    with pytest.raises(ShapeError, match="adam_step: expected exp_avg with 1031 elements"):
        cpu_optim.adam_step(**dict(a, exp_avg=a["exp_avg"][:10]), **scalars)
    with pytest.raises(DTypeError, match="adam_step: expected grad of dtype float32"):
        cpu_optim.adam_step(**dict(a, grad=a["grad"].astype(np.float64)), **scalars)
    strided = np.zeros(2 * N, np.float32)[::2]
    with pytest.raises(ShapeError, match="exp_avg_sq is updated in place and must be"):
        cpu_optim.adam_step(**dict(a, exp_avg_sq=strided), **scalars)
    with pytest.raises(ValueError, match="sgd_step: momentum_buf .* is needed"):
        cpu_optim.sgd_step(a["param"], a["grad"], None, 0.1, 0.9, 0.0, 0.0, False, False)
    with pytest.raises(ValueError, match="rmsprop_step: grad_avg"):
        cpu_optim.rmsprop_step(a["param"], a["grad"], np.abs(a["exp_avg"]), None, None, 0.01,
                               0.99, 1e-8, 0.0, 0.0, True)


def test_strided_grad_is_read_through_a_copy():
    a = _buffers(np.float64, ["param", "grad", "exp_avg", "exp_avg_sq"])
    wide = np.zeros(2 * N)
    wide[::2] = a["grad"]
    b = {k: v.copy() for k, v in a.items()}
    scalars = dict(lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, step=3)
    cpu_optim.adam_step(**a, **scalars)
    cpu_optim.adam_step(**dict(b, grad=wide[::2]), **scalars)
    np.testing.assert_array_equal(a["param"], b["param"])


@settings(max_examples=15, deadline=None)
@given(n=st.integers(0, 70), on_threads=st.booleans(), seed=st.integers(0, 2 ** 16))
def test_any_buffer_size(n, on_threads, seed):
    """Sizes around the vector width and chunks that come out empty (n < threads)."""
    rng = np.random.default_rng(seed)
    old = cpu_optim.PARALLEL_MIN_SIZE
    cpu_optim.PARALLEL_MIN_SIZE = 0 if on_threads else old
    try:
        arrays = {k: rng.standard_normal(n).astype(np.float32) for k in ("param", "grad",
                                                                          "exp_avg")}
        arrays["exp_avg_sq"] = np.abs(rng.standard_normal(n)).astype(np.float32)
        arrays["max_exp_avg_sq"] = np.abs(rng.standard_normal(n)).astype(np.float32)
        _check("adam_step", np.float32, arrays, dict(lr=0.01, beta1=0.9, beta2=0.999, eps=1e-8,
                                                     weight_decay=0.1, step=2,
                                                     decoupled_weight_decay=True))
    finally:
        cpu_optim.PARALLEL_MIN_SIZE = old


@pytest.mark.parametrize("n", [0, 1, 5, 1031])
@pytest.mark.parametrize("on_threads", [False, True])
def test_zero_clears_every_element(n, on_threads, monkeypatch):
    """zero_ (``zero_grad``): every element, on one thread and, where kernels may share
    the BLAS's threads, on several (chunks that come out empty included)."""
    from tinyar.backend.cpu import threads
    from tinyar.backend.cpu import _util
    if on_threads:
        monkeypatch.setattr(threads, "PARALLEL_KERNELS", True)
        monkeypatch.setattr(_util, "PARALLEL_MIN_ELEMENTS", 0)
        monkeypatch.setattr(_util, "get_num_threads", lambda: 3)
    for dtype in DTYPES:
        x = np.full(n, np.nan, dtype)
        cpu_optim.zero_(x)
        np.testing.assert_array_equal(x, np.zeros(n, dtype))
    with pytest.raises(ValueError, match="zero_"):
        cpu_optim.zero_(np.zeros(10)[::2])
