"""Conv1d and Conv2d: gradient checks, PyTorch twins, causality, both product paths, errors."""
import math

import numpy as np
import pytest
from hypothesis import assume, given, settings, strategies as st

from tinyar.backend import get_backend
from tinyar.errors import DTypeError, ShapeError
from tinyar.nn.conv import Conv1d, Conv2d
from tests.helpers import assert_gradcheck, compare_with_torch, torch_or_skip

SETTINGS = settings(max_examples=10, deadline=None)
DTYPES = [np.float64, np.float32]


def _x(rng, shape, scale=1.0):
    return rng.standard_normal(shape) * scale


def _out_size(size, k, s, p_total, d):
    return (size + p_total - d * (k - 1) - 1) // s + 1


# --- gradient checks ------------------------------------------------------------
@SETTINGS
@given(n=st.integers(1, 2), groups=st.integers(1, 2), cin_per=st.integers(1, 2),
       cout_per=st.integers(1, 3), k=st.integers(1, 3), stride=st.integers(1, 2),
       padding=st.sampled_from([0, 1, "same"]), dilation=st.integers(1, 2),
       hw=st.tuples(st.integers(2, 6), st.integers(2, 6)), bias=st.booleans(),
       seed=st.integers(0, 99))
def test_conv2d_gradcheck(n, groups, cin_per, cout_per, k, stride, padding, dilation, hw, bias,
                          seed):
    if padding == "same":
        stride = 1
    pad = dilation * (k - 1) if padding == "same" else 2 * padding
    assume(all(_out_size(s, k, stride, pad, dilation) >= 1 for s in hw))
    layer = Conv2d(cin_per * groups, cout_per * groups, k, stride=stride, padding=padding,
                   dilation=dilation, groups=groups, bias=bias)
    x = _x(np.random.default_rng(seed), (n, cin_per * groups) + hw)
    assert_gradcheck(layer, x)


@SETTINGS
@given(n=st.integers(1, 2), cin=st.integers(1, 3), cout=st.integers(1, 3), k=st.integers(1, 3),
       stride=st.integers(1, 2), padding=st.sampled_from([0, 1, "causal", "same"]),
       dilation=st.integers(1, 2), length=st.integers(3, 6), seed=st.integers(0, 99))
def test_conv1d_gradcheck(n, cin, cout, k, stride, padding, dilation, length, seed):
    if padding == "same":
        stride = 1
    layer = Conv1d(cin, cout, k, stride=stride, padding=padding, dilation=dilation)
    assume(length + sum(layer._padding) >= dilation * (k - 1) + 1)
    assert_gradcheck(layer, _x(np.random.default_rng(seed), (n, cin, length)))


def test_conv2d_gradcheck_grouped_per_sample_path():
    """More output channels than column rows: the per-sample product path."""
    layer = Conv2d(2, 8, 1, groups=2)
    assert layer._per_sample()
    assert_gradcheck(layer, _x(np.random.default_rng(3), (2, 2, 3, 4)))


# --- the fused ReLU ---------------------------------------------------------------
FUSED_CASES = [
    (lambda **kw: Conv2d(3, 4, 3, padding=1, **kw), (2, 3, 5, 4)),           # one product
    (lambda **kw: Conv2d(1, 6, 2, **kw), (2, 1, 4, 5)),                      # per sample
    (lambda **kw: Conv2d(1, 6, 2, bias=False, **kw), (2, 1, 4, 5)),          # no bias
    (lambda **kw: Conv1d(2, 3, 2, padding="causal", dilation=2, **kw), (2, 2, 6)),
]


@pytest.mark.parametrize("make, shape", FUSED_CASES)
def test_fused_relu_equals_conv_then_relu(make, shape, rng):
    from tinyar.nn import ReLU
    fused, plain, relu = make(activation="relu"), make(), ReLU()
    plain.load_state_dict(fused.state_dict())
    x = _x(rng, shape).astype(np.float32)
    y = fused(x)
    np.testing.assert_array_equal(y, relu(plain(x)))
    assert (y == 0).any() and (y > 0).any()  # both sides of the kink are exercised
    grad = _x(rng, y.shape).astype(np.float32)
    dx = fused.backward(grad)
    np.testing.assert_allclose(dx, plain.backward(relu.backward(grad)), rtol=1e-6, atol=1e-6)
    for name, p in fused.named_parameters():
        np.testing.assert_allclose(p.grad, dict(plain.named_parameters())[name].grad,
                                   rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("make, shape", FUSED_CASES)
def test_fused_relu_gradcheck(make, shape):
    # inputs away from the kink at 0, where the central difference is meaningless
    layer = make(activation="relu", dtype=np.float64)
    x = _x(np.random.default_rng(5), shape)
    assert_gradcheck(layer, x)


@pytest.mark.torch
def test_fused_relu_matches_torch_conv_then_relu(rng):
    torch = torch_or_skip()
    ours = Conv2d(3, 4, 3, stride=2, padding=1, activation="relu")
    theirs = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, stride=2, padding=1),
                                 torch.nn.ReLU())
    with torch.no_grad():
        theirs[0].weight.copy_(torch.from_numpy(ours.weight.data))
        theirs[0].bias.copy_(torch.from_numpy(ours.bias.data))
    x = _x(rng, (2, 3, 7, 6)).astype(np.float32)
    tx = torch.from_numpy(x).requires_grad_(True)
    y, ty = ours(x), theirs(tx)
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-5, atol=1e-6)
    grad = _x(rng, y.shape).astype(np.float32)
    ty.backward(torch.from_numpy(grad))
    np.testing.assert_allclose(ours.backward(grad), tx.grad.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ours.weight.grad, theirs[0].weight.grad.numpy(), rtol=1e-4,
                               atol=1e-5)
    np.testing.assert_allclose(ours.bias.grad, theirs[0].bias.grad.numpy(), rtol=1e-4,
                               atol=1e-5)


def test_unknown_activation_is_an_error():
    with pytest.raises(ValueError, match="Conv2d: activation must be one of"):
        Conv2d(1, 2, 3, activation="tanh")
    assert "activation='relu'" in repr(Conv1d(1, 2, 3, activation="relu"))


def test_conv2d_gradcheck_in_chunks(monkeypatch):
    """A batch whose columns exceed the backend's workspace_bytes(): processed in pieces,
    columns rebuilt."""
    from tinyar.backend import cpu
    monkeypatch.setattr(cpu, "workspace_bytes", lambda: 1)
    layer = Conv2d(2, 3, 2, padding=1)
    x = _x(np.random.default_rng(4), (3, 2, 3, 3))
    layer(x.astype(np.float32))
    assert len(layer._chunks(get_backend("cpu"), 3, 8)) == 3 and layer._cols is None  # one sample at a time
    assert_gradcheck(layer, x)


# --- PyTorch twins --------------------------------------------------------------
CONV2D_CASES = [
    (3, 4, 3, {}),
    (3, 4, 3, dict(stride=2, padding=1)),
    (2, 6, (2, 3), dict(stride=(1, 2), padding=(1, 0), dilation=(2, 1))),
    (4, 6, 3, dict(groups=2, padding="same", dilation=2)),
    (6, 6, 3, dict(groups=6, padding=1)),  # depthwise
    (1, 8, 3, dict(bias=False)),  # per-sample path
    (4, 8, 1, dict(groups=2)),  # per-sample path, grouped
    (3, 5, 4, dict(padding="same")),  # even kernel: the extra padding goes after
]


@pytest.mark.torch
@pytest.mark.filterwarnings("ignore:Using padding='same'")
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cin, cout, k, kwargs", CONV2D_CASES)
def test_conv2d_matches_torch(cin, cout, k, kwargs, dtype, rng):
    torch = torch_or_skip()
    x = _x(rng, (2, cin, 7, 6), scale=0.5)
    compare_with_torch(Conv2d(cin, cout, k, **kwargs), torch.nn.Conv2d(cin, cout, k, **kwargs),
                       x, dtype=dtype)


CONV1D_CASES = [
    (3, 4, 3, {}),
    (2, 5, 3, dict(stride=2, padding=2, dilation=2)),
    (4, 6, 2, dict(groups=2, padding="same")),
    (1, 4, 3, dict(padding=1)),  # per-sample path
]


@pytest.mark.torch
@pytest.mark.filterwarnings("ignore:Using padding='same'")
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cin, cout, k, kwargs", CONV1D_CASES)
def test_conv1d_matches_torch(cin, cout, k, kwargs, dtype, rng):
    torch = torch_or_skip()
    x = _x(rng, (2, cin, 9), scale=0.5)
    compare_with_torch(Conv1d(cin, cout, k, **kwargs), torch.nn.Conv1d(cin, cout, k, **kwargs),
                       x, dtype=dtype)


class _LeftPadded:
    """torch.nn.Conv1d applied to x with `left` zeros prepended: a causal convolution."""

    def __new__(cls, torch, left, *args, **kwargs):
        class Twin(torch.nn.Conv1d):
            def forward(self, x):
                return super().forward(torch.nn.functional.pad(x, (left, 0)))
        return Twin(*args, **kwargs)


@pytest.mark.torch
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k, dilation, stride, groups", [(3, 1, 1, 1), (2, 3, 1, 1),
                                                         (3, 2, 2, 1), (3, 1, 1, 3)])
def test_causal_conv1d_matches_torch_on_left_padded_input(k, dilation, stride, groups, dtype,
                                                           rng):
    torch = torch_or_skip()
    ours = Conv1d(3, 6, k, stride=stride, padding="causal", dilation=dilation, groups=groups)
    theirs = _LeftPadded(torch, dilation * (k - 1), 3, 6, k, stride=stride, dilation=dilation,
                         groups=groups)
    x = _x(rng, (2, 3, 8), scale=0.5)
    y, _ = compare_with_torch(ours, theirs, x, dtype=dtype)
    if stride == 1:
        assert y.shape == x.shape[:1] + (6, 8)  # same length as the input


# --- causality ------------------------------------------------------------------
@pytest.mark.parametrize("k, dilation", [(3, 1), (2, 2), (4, 3)])
def test_causal_conv1d_output_ignores_the_future(k, dilation, rng):
    layer = Conv1d(2, 3, k, padding="causal", dilation=dilation, dtype=np.float64)
    length = 10
    x = _x(rng, (2, 2, length))
    y = layer(x)
    assert y.shape == (2, 3, length)
    for t in range(length - 1):
        changed = x.copy()
        changed[:, :, t + 1:] = _x(rng, changed[:, :, t + 1:].shape)
        np.testing.assert_array_equal(layer(changed)[:, :, :t + 1], y[:, :, :t + 1])
        # and the change reaches the future: the test can fail
        assert not np.allclose(layer(changed)[:, :, t + 1:], y[:, :, t + 1:])
    # backward agrees: dL/dy at t only reaches x at <= t
    layer(x)
    grad = np.zeros_like(y)
    grad[:, :, 4] = 1.0
    dx = layer.backward(grad)
    assert np.all(dx[:, :, 5:] == 0) and np.any(dx[:, :, :5] != 0)


# --- behaviour ------------------------------------------------------------------
def test_parameters_layout_and_init():
    layer = Conv2d(6, 8, (3, 2), groups=2)
    assert layer.weight.shape == (8, 3, 3, 2) and layer.bias.shape == (8,)
    bound = 1 / math.sqrt(3 * 3 * 2)
    assert np.abs(layer.weight.data).max() <= bound and np.abs(layer.bias.data).max() <= bound
    assert np.abs(layer.weight.data).max() > 0.5 * bound  # uniform over the whole range
    assert list(layer.state_dict()) == ["weight", "bias"]
    one = Conv1d(4, 2, 5, bias=False)
    assert one.weight.shape == (2, 4, 5) and one.bias is None
    assert layer.weight.dtype == np.float32


def test_output_shapes_and_dtypes():
    x = np.zeros((2, 3, 9, 8), np.float32)
    assert Conv2d(3, 5, 3, stride=2, padding=1)(x).shape == (2, 5, 5, 4)
    assert Conv2d(3, 5, 3, padding="same", dilation=2)(x).shape == (2, 5, 9, 8)
    assert Conv2d(3, 5, (1, 4), padding="valid")(x).shape == (2, 5, 9, 5)
    y = Conv1d(3, 4, 3, padding="same").double()(np.zeros((1, 3, 7)))
    assert y.shape == (1, 4, 7) and y.dtype == np.float64


def test_backward_accumulates_into_param_grads(rng):
    for layer in (Conv2d(2, 3, 2, dtype=np.float64), Conv2d(1, 4, 2, dtype=np.float64)):
        x = _x(rng, (2, layer.in_channels, 4, 4))
        g = _x(rng, layer(x).shape)
        layer.zero_grad()
        layer(x)
        layer.backward(g)
        once = [p.grad.copy() for p in layer.parameters()]
        layer(x)
        layer.backward(g)
        for p, first in zip(layer.parameters(), once):
            np.testing.assert_allclose(p.grad, 2 * first)


@pytest.mark.parametrize("make", [lambda: Conv2d(2, 3, 2, dtype=np.float64),
                                  lambda: Conv2d(1, 4, 2, dtype=np.float64),  # per-sample path
                                  lambda: Conv1d(2, 3, 3, padding="causal", dtype=np.float64)])
def test_backward_can_skip_the_input_gradient(make, rng):
    """x is the data (Sequential.backward(..., input_grad=False)): same parameter
    gradients, no dL/dx."""
    layer = make()
    shape = (2, layer.in_channels) + ((5,) if isinstance(layer, Conv1d) else (4, 4))
    x = _x(rng, shape)
    g = _x(rng, layer(x).shape)
    layer.zero_grad()
    assert layer.backward(g).shape == x.shape
    full = [p.grad.copy() for p in layer.parameters()]
    layer.zero_grad()
    layer(x)
    assert layer.skips_input_grad and layer.backward(g, input_grad=False) is None
    for p, expected in zip(layer.parameters(), full):
        np.testing.assert_array_equal(p.grad, expected)


def test_strided_input(rng):
    x = _x(rng, (2, 3, 6, 10))[:, :, :, ::2]  # not contiguous
    layer = Conv2d(3, 2, 3, padding=1, dtype=np.float64)
    np.testing.assert_allclose(layer(x), layer(np.ascontiguousarray(x)), rtol=1e-12)


# --- errors ---------------------------------------------------------------------
def test_rejects_wrong_channel_count():
    with pytest.raises(ShapeError, match=r"Conv2d\(3, 4.*expected input \(N, 3, H, W\), "
                                         r"got \(2, 5, 6, 6\)"):
        Conv2d(3, 4, 3)(np.zeros((2, 5, 6, 6), np.float32))
    with pytest.raises(ShapeError, match=r"Conv1d\(3, 4.*expected input \(N, 3, L\)"):
        Conv1d(3, 4, 3)(np.zeros((2, 2, 6), np.float32))


def test_rejects_input_smaller_than_kernel():
    with pytest.raises(ShapeError, match=r"Conv2d.*too small for the kernel: padded size "
                                         r"\(2, 8\) < dilated kernel size \(3, 3\)"):
        Conv2d(1, 1, 3)(np.zeros((1, 1, 2, 8), np.float32))
    with pytest.raises(ShapeError, match=r"Conv1d.*too small.*\(5,\) < dilated kernel size "
                                         r"\(7,\)"):
        Conv1d(1, 1, 4, dilation=2, padding=1)(np.zeros((1, 1, 3), np.float32))


@pytest.mark.parametrize("shape", [(3, 6, 6), (1, 1, 3, 6, 6), (6,)])
def test_conv2d_rejects_wrong_rank(shape):
    with pytest.raises(ShapeError, match=r"Conv2d.*expected input \(N, 3, H, W\)"):
        Conv2d(3, 2, 3)(np.zeros(shape, np.float32))


def test_conv1d_rejects_wrong_rank():
    with pytest.raises(ShapeError, match=r"Conv1d.*expected input \(N, 3, L\)"):
        Conv1d(3, 2, 3)(np.zeros((2, 3, 4, 4), np.float32))


def test_rejects_wrong_dtype():
    with pytest.raises(DTypeError, match=r"Conv2d.*float32.*got float64"):
        Conv2d(1, 2, 3)(np.zeros((1, 1, 5, 5), np.float64))
    with pytest.raises(DTypeError, match=r"Conv1d.*floating-point"):
        Conv1d(1, 2, 3)(np.zeros((1, 1, 5), np.int64))


def test_rejects_wrong_grad_shape():
    layer = Conv2d(1, 2, 3)
    layer(np.zeros((1, 1, 5, 5), np.float32))
    with pytest.raises(ShapeError, match=r"Conv2d.*gradient of the output's shape "
                                         r"\(1, 2, 3, 3\)"):
        layer.backward(np.zeros((1, 2, 5, 5), np.float32))


@pytest.mark.parametrize("make, message", [
    (lambda: Conv2d(3, 4, 3, groups=2), "divisible by groups"),
    (lambda: Conv2d(2, 4, 3, stride=2, padding="same"), "'same' needs stride 1"),
    (lambda: Conv2d(2, 4, 0), "kernel_size must be positive"),
    (lambda: Conv2d(2, 4, 3, padding=-1), "padding must be non-negative"),
    (lambda: Conv2d(2, 4, 3, padding="full"), "padding must be"),
    (lambda: Conv1d(2, 4, 3, padding="left"), "padding must be"),
    (lambda: Conv1d(2, 4, (3, 3)), "kernel_size must be an int"),
    (lambda: Conv1d(2, 4, 3, stride=2, padding="same"), "'same' needs stride 1"),
])
def test_rejects_bad_arguments(make, message):
    with pytest.raises(ValueError, match=message):
        make()


# --- the threaded copy kernels (where kernels share BLAS's threads) ---------------
@pytest.mark.parametrize("stride,padding,dilation", [((1, 1), (0, 0, 0, 0), (1, 1)),
                                                     ((2, 1), (1, 2, 0, 1), (1, 2))])
def test_threaded_conv_kernels_match_the_serial_ones(stride, padding, dilation, monkeypatch):
    from tinyar.backend.cpu import threads
    from tinyar.backend.cpu import _util, conv as kernels
    rng = np.random.default_rng(5)
    x = rng.standard_normal((5, 3, 9, 8))
    bias = rng.standard_normal(4)

    def run():
        cols = kernels.im2col(x, (3, 2), stride, padding, dilation)
        dx = kernels.col2im(cols, x.shape, (3, 2), stride, padding, dilation)
        product = rng_product[:, :cols.shape[1]]
        batch_major = kernels.to_batch_major(product, 5, bias, relu=True)
        grad_bias = np.zeros(4)
        channel_major = kernels.to_channel_major(batch_major - 0.1, grad_bias,
                                                 relu_output=batch_major)
        biased = kernels.add_channel_bias(batch_major.copy(), bias, relu=True)
        return cols, dx, batch_major, channel_major, grad_bias, biased

    rng_product = rng.standard_normal((4, 5 * 9 * 8))
    serial = run()
    monkeypatch.setattr(threads, "PARALLEL_KERNELS", True)
    monkeypatch.setattr(_util, "PARALLEL_MIN_ELEMENTS", 0)
    monkeypatch.setattr(_util, "get_num_threads", lambda: 3)  # uneven pieces of 5 samples
    for got, expected in zip(run(), serial):
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
