"""MaxPool1d/2d, AvgPool2d, AdaptiveAvgPool2d: gradient checks, PyTorch twins, kernels, errors."""
import numpy as np
import pytest
from hypothesis import assume, given, settings, strategies as st

from tinyar.backend import get_backend
from tinyar.backend.ops.pool import max_pool2d_forward as max_pool_reference
from tinyar.errors import DTypeError, ShapeError
from tinyar.nn.pooling import AdaptiveAvgPool2d, AvgPool2d, MaxPool1d, MaxPool2d
from tests.helpers import assert_gradcheck, compare_with_torch, torch_or_skip

SETTINGS = settings(max_examples=10, deadline=None)
DTYPES = [np.float64, np.float32]


def _distinct(rng, shape):
    """Values at least 1e-3 apart, so that no central difference straddles a tie."""
    values = rng.permutation(np.prod(shape)).reshape(shape) * 1e-3
    return values + rng.standard_normal(shape) * 1e-5


# --- gradient checks ------------------------------------------------------------
windows = st.tuples(st.integers(1, 3), st.integers(1, 3))


@SETTINGS
@given(n=st.integers(1, 2), c=st.integers(1, 3), hw=st.tuples(st.integers(3, 6), st.integers(3, 6)),
       kernel=windows, stride=st.one_of(st.none(), windows), pad=st.integers(0, 1),
       kind=st.sampled_from(["max", "avg"]), seed=st.integers(0, 99))
def test_pool2d_gradcheck(n, c, hw, kernel, stride, pad, kind, seed):
    assume(all(2 * pad <= k for k in kernel))
    assume(all(s + 2 * pad >= k for s, k in zip(hw, kernel)))
    layer = (MaxPool2d if kind == "max" else AvgPool2d)(kernel, stride, pad)
    assert_gradcheck(layer, _distinct(np.random.default_rng(seed), (n, c) + hw))


@SETTINGS
@given(n=st.integers(1, 2), c=st.integers(1, 3), length=st.integers(2, 7),
       kernel=st.integers(1, 3), stride=st.one_of(st.none(), st.integers(1, 3)),
       pad=st.integers(0, 1), seed=st.integers(0, 99))
def test_max_pool1d_gradcheck(n, c, length, kernel, stride, pad, seed):
    assume(2 * pad <= kernel and length + 2 * pad >= kernel)
    assert_gradcheck(MaxPool1d(kernel, stride, pad),
                     _distinct(np.random.default_rng(seed), (n, c, length)))


@SETTINGS
@given(hw=st.tuples(st.integers(1, 6), st.integers(1, 6)),
       out=st.tuples(st.integers(1, 4), st.integers(1, 4)), seed=st.integers(0, 99))
def test_adaptive_avg_pool_gradcheck(hw, out, seed):
    x = np.random.default_rng(seed).standard_normal((2, 2) + hw)
    assert_gradcheck(AdaptiveAvgPool2d(out), x)


# --- PyTorch twins --------------------------------------------------------------
POOL_CASES = [(2, None, 0), (3, 2, 1), ((3, 2), (1, 2), (1, 0)), (2, 1, 1), (3, 3, 0)]


@pytest.mark.torch
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kernel, stride, padding", POOL_CASES)
def test_pool2d_matches_torch(kernel, stride, padding, dtype, rng):
    torch = torch_or_skip()
    x = rng.standard_normal((2, 3, 8, 7))
    compare_with_torch(MaxPool2d(kernel, stride, padding),
                       torch.nn.MaxPool2d(kernel, stride, padding), x, dtype=dtype)
    compare_with_torch(AvgPool2d(kernel, stride, padding),
                       torch.nn.AvgPool2d(kernel, stride, padding), x, dtype=dtype)


@pytest.mark.torch
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kernel, stride, padding", [(2, None, 0), (3, 2, 1), (3, 1, 0)])
def test_max_pool1d_matches_torch(kernel, stride, padding, dtype, rng):
    torch = torch_or_skip()
    compare_with_torch(MaxPool1d(kernel, stride, padding),
                       torch.nn.MaxPool1d(kernel, stride, padding),
                       rng.standard_normal((2, 3, 11)), dtype=dtype)


@pytest.mark.torch
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("output_size", [1, 3, (2, 5), (None, 3), (9, 10)])
def test_adaptive_avg_pool_matches_torch(output_size, dtype, rng):
    torch = torch_or_skip()
    compare_with_torch(AdaptiveAvgPool2d(output_size), torch.nn.AdaptiveAvgPool2d(output_size),
                       rng.standard_normal((2, 3, 7, 8)), dtype=dtype)


@pytest.mark.torch
def test_max_pool_nan_and_ties_as_torch():
    torch = torch_or_skip()
    x = np.zeros((1, 1, 4, 6))  # all ties: the first maximum of each window wins
    x[0, 0, 0, 1] = x[0, 0, 1, 0] = np.nan  # two NaN in one window
    x[0, 0, 2, 2] = np.nan
    y = MaxPool2d(2)(x)
    ty, indices = torch.nn.functional.max_pool2d(torch.from_numpy(x), 2, return_indices=True)
    np.testing.assert_array_equal(y, ty.numpy())
    layer = MaxPool2d(2)
    layer(x)
    np.testing.assert_array_equal(layer._indices, indices.numpy())


# --- the kernels ----------------------------------------------------------------
@pytest.mark.parametrize("shape", [(2, 3, 6, 6), (2, 2, 7, 5), (1, 1, 2, 3), (3, 2, 11, 11)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_max_pool_2x2_kernel_matches_reference(shape, dtype, rng):
    """The 2x2 stride-2 fast path (not reached by the op test's example)."""
    B = get_backend("cpu")
    x = rng.standard_normal(shape).astype(dtype)
    x[0, 0, :2, :2] = 0.5  # a tie
    y, indices = B.max_pool2d_forward(x, (2, 2), (2, 2), (0, 0))
    ref_y, ref_indices = max_pool_reference(x, (2, 2), (2, 2), (0, 0))
    np.testing.assert_array_equal(y, ref_y)
    np.testing.assert_array_equal(indices, ref_indices)
    x[0, 0, 1, 1] = np.nan
    fast = B.max_pool2d_forward(x, (2, 2), (2, 2), (0, 0))
    general = _general_max_pool(x)  # with a NaN: compare with the general loop
    np.testing.assert_array_equal(fast[0], general[0])
    np.testing.assert_array_equal(fast[1], general[1])
    assert np.isnan(fast[0][0, 0, 0, 0])


def _general_max_pool(x):
    """The general max-pool loop (which the fast path bypasses) on 2x2 windows, stride 2."""
    from tinyar.backend.cpu import pool
    n, c, h, w = x.shape
    y = np.empty((n, c, h // 2, w // 2), x.dtype)
    indices = np.empty(y.shape, np.int32)
    pool._max_pool(x.reshape(n * c, h, w), 2, 2, 2, 2, 0, 0, y.reshape(n * c, h // 2, w // 2),
                   indices.reshape(n * c, h // 2, w // 2))
    return y, indices


def test_max_pool_backward_sums_shared_winners():
    """Overlapping windows (stride 1) that pick the same input add their gradients."""
    x = np.zeros((1, 1, 3, 3))
    x[0, 0, 1, 1] = 5.0
    layer = MaxPool2d(2, stride=1)
    y = layer(x)
    assert np.all(y == 5.0)
    dx = layer.backward(np.ones_like(y))
    expected = np.zeros_like(x)
    expected[0, 0, 1, 1] = 4.0
    np.testing.assert_array_equal(dx, expected)


def test_global_average_pool(rng):
    x = rng.standard_normal((2, 3, 5, 4))
    y = AdaptiveAvgPool2d(1)(x)
    np.testing.assert_allclose(y[:, :, 0, 0], x.mean(axis=(2, 3)), rtol=1e-12)


def test_avg_pool_counts_padding(rng):
    x = np.ones((1, 1, 2, 2))
    y = AvgPool2d(2, stride=1, padding=1)(x)
    np.testing.assert_allclose(y[0, 0], [[0.25, 0.5, 0.25], [0.5, 1.0, 0.5], [0.25, 0.5, 0.25]])


def test_shapes_and_float32(rng):
    x = rng.standard_normal((2, 3, 9, 8)).astype(np.float32)
    assert MaxPool2d(2)(x).shape == (2, 3, 4, 4) and MaxPool2d(2)(x).dtype == np.float32
    assert AvgPool2d(3, 2, 1)(x).shape == (2, 3, 5, 4)
    assert MaxPool1d(3)(x[:, :, 0]).shape == (2, 3, 2)
    assert AdaptiveAvgPool2d((None, 2))(x).shape == (2, 3, 9, 2)


# --- errors ---------------------------------------------------------------------
@pytest.mark.parametrize("layer", [MaxPool2d(2), AvgPool2d(2), AdaptiveAvgPool2d(2)],
                         ids=lambda layer: type(layer).__name__)
def test_pool2d_rejects_wrong_rank_and_dtype(layer):
    name = type(layer).__name__
    with pytest.raises(ShapeError,
                       match=rf"{name}.*expected input \(N, C, H, W\), got \(3, 4, 4\)"):
        layer(np.zeros((3, 4, 4), np.float32))
    with pytest.raises(DTypeError, match=name):
        layer(np.zeros((1, 3, 4, 4), np.int32))


def test_max_pool1d_rejects_wrong_rank():
    with pytest.raises(ShapeError, match=r"MaxPool1d.*expected input \(N, C, L\)"):
        MaxPool1d(2)(np.zeros((1, 2, 3, 4), np.float32))


def test_rejects_input_smaller_than_window():
    with pytest.raises(ShapeError, match=r"MaxPool2d.*too small for the window: padded size "
                                         r"\(2, 5\) < kernel_size \(3, 3\)"):
        MaxPool2d(3)(np.zeros((1, 1, 2, 5), np.float32))
    with pytest.raises(ShapeError, match=r"MaxPool1d.*too small for the window: padded size "
                                         r"\(3,\) < kernel_size \(4,\)"):
        MaxPool1d(4)(np.zeros((1, 1, 3), np.float32))


def test_rejects_bad_arguments():
    with pytest.raises(ValueError, match="at most half"):
        MaxPool2d(2, padding=2)
    with pytest.raises(ValueError, match="AvgPool2d: kernel_size must be positive"):
        AvgPool2d(0)
    with pytest.raises(ValueError, match="AdaptiveAvgPool2d: output_size"):
        AdaptiveAvgPool2d(0)


def test_rejects_wrong_grad_shape():
    layer = MaxPool2d(2)
    layer(np.zeros((1, 1, 4, 4), np.float32))
    with pytest.raises(ShapeError, match=r"MaxPool2d.*gradient of the output's shape "
                                         r"\(1, 1, 2, 2\)"):
        layer.backward(np.zeros((1, 1, 4, 4), np.float32))


# --- the threaded 2x2 max-pool (where kernels share BLAS's threads) ---------------
@pytest.mark.parametrize("dtype", DTYPES)
def test_threaded_max_pool_matches_the_serial_one(dtype, monkeypatch):
    from tinyar.backend.cpu import threads
    from tinyar.backend.cpu import _util, pool
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 5, 8, 6)).astype(dtype)
    x[0, 0, 0, 0] = np.nan  # a NaN wins its window on every path
    grad = rng.standard_normal((3, 5, 4, 3)).astype(dtype)
    y1, i1 = pool.max_pool2d_forward(x, (2, 2), (2, 2), (0, 0))
    dx1 = pool.max_pool2d_backward(grad, i1, (8, 6))
    monkeypatch.setattr(threads, "PARALLEL_KERNELS", True)
    monkeypatch.setattr(_util, "PARALLEL_MIN_ELEMENTS", 0)
    monkeypatch.setattr(_util, "get_num_threads", lambda: 4)  # more pieces than planes split evenly
    assert _util.thread_chunks(x.size, 15) == 4 and _util.thread_chunks(x.size, 3) == 3
    y4, i4 = pool.max_pool2d_forward(x, (2, 2), (2, 2), (0, 0))
    dx4 = pool.max_pool2d_backward(grad, i4, (8, 6))
    np.testing.assert_array_equal(y4, y1)
    np.testing.assert_array_equal(i4, i1)
    np.testing.assert_array_equal(dx4, dx1)
    reference, _ = max_pool_reference(x, (2, 2), (2, 2), (0, 0))
    np.testing.assert_array_equal(y4, reference)
