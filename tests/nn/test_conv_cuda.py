"""Convolution, pooling and 2-d normalisation layers on CUDA give the CPU's results.

Each test builds a layer twice from the same seed (the same weights), moves one
to the device, runs forward and backward on both with the same input and
upstream gradient, and compares the outputs, the input gradients and every
parameter gradient. Under the simulator (``NUMBA_ENABLE_CUDASIM=1``) each GPU
thread is a Python thread, so the shapes are tiny; they still span several
blocks (the simulator's grids are capped at 2 blocks of 32 threads).
"""
import numpy as np
import pytest

import tinyar
from tinyar.backend import get_backend
from tinyar.nn.causal_conv import CausalConvStack
from tinyar.nn.conv import Conv1d, Conv2d
from tinyar.nn.normalization2d import BatchNorm2d, Dropout2d
from tinyar.nn.pooling import AdaptiveAvgPool2d, AvgPool2d, MaxPool1d, MaxPool2d
from tests.backend.test_cuda import needs_cuda

DTYPES = [np.float32, np.float64]


def _tolerance(dtype):
    return dict(rtol=1e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-12)


def _build(make, dtype, device):
    tinyar.manual_seed(5)  # the same weights on both devices
    module = make().to(np.dtype(dtype))
    return module.to(device) if device != "cpu" else module


def _zero_grads(module):
    if module.parameters():
        module.flat_parameters().grad[:] = 0  # works on host and device buffers alike


def _step(module, x, grad, device):
    """(output, dL/dx, {name: dL/dparam}) as host arrays, after one forward and backward."""
    _zero_grads(module)
    y = module(tinyar.to_device(x, device))
    assert tinyar.device.device_of(y) == device  # no silent trip through the host
    dx = module.backward(tinyar.to_device(grad(y.shape), device))
    grads = {name: tinyar.to_host(p.grad) for name, p in module.named_parameters()}
    return tinyar.to_host(y), tinyar.to_host(dx), grads


def assert_same_on_cuda(make, x_shape, dtype, train=True, seed=0):
    """The layer ``make()`` gives the same output and gradients on the CPU and on CUDA."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape).astype(dtype)
    upstream = {}

    def grad(shape):  # one upstream gradient, made once, used on both devices
        if "g" not in upstream:
            upstream["g"] = rng.standard_normal(shape).astype(dtype)
        return upstream["g"]

    results = []
    for device in ("cpu", "cuda"):
        module = _build(make, dtype, device)
        module.train(train)
        results.append(_step(module, x, grad, device))
    (y_cpu, dx_cpu, g_cpu), (y_gpu, dx_gpu, g_gpu) = results
    tol = _tolerance(dtype)
    assert y_gpu.dtype == dtype and y_gpu.shape == y_cpu.shape
    np.testing.assert_allclose(y_gpu, y_cpu, err_msg="output", **tol)
    np.testing.assert_allclose(dx_gpu, dx_cpu, err_msg="input gradient", **tol)
    assert g_gpu.keys() == g_cpu.keys()
    for name in g_cpu:
        np.testing.assert_allclose(g_gpu[name], g_cpu[name], err_msg=name, **tol)
    return results


# --- convolutions ----------------------------------------------------------------------
@needs_cuda
@pytest.mark.parametrize("dtype", DTYPES)
def test_conv1d_causal_dilated(dtype):
    assert_same_on_cuda(lambda: Conv1d(3, 4, 3, padding="causal", dilation=2), (2, 3, 7), dtype)


@needs_cuda
@pytest.mark.parametrize("dtype", DTYPES)
def test_conv1d_strided_grouped_without_bias(dtype):
    assert_same_on_cuda(lambda: Conv1d(4, 2, 2, stride=2, padding=1, groups=2, bias=False),
                        (2, 4, 7), dtype)


@needs_cuda
@pytest.mark.parametrize("dtype", DTYPES)
def test_conv2d_stride_padding_dilation_groups(dtype):
    assert_same_on_cuda(lambda: Conv2d(4, 6, (3, 2), stride=(2, 1), padding=(1, 2),
                                       dilation=(1, 2), groups=2), (2, 4, 6, 5), dtype)


@needs_cuda
@pytest.mark.parametrize("dtype", DTYPES)
def test_conv2d_same_padding(dtype):
    assert_same_on_cuda(lambda: Conv2d(2, 3, 3, padding="same", dilation=2), (2, 2, 5, 5), dtype)


@needs_cuda
@pytest.mark.parametrize("make, shape", [
    (lambda: Conv2d(3, 4, 3, padding=1, activation="relu"), (2, 3, 5, 4)),
    (lambda: Conv2d(1, 6, 2, bias=False, activation="relu"), (2, 1, 4, 5)),
])
def test_conv2d_fused_relu(make, shape):
    assert_same_on_cuda(make, shape, np.float32)


@needs_cuda
def test_conv2d_with_more_outputs_than_column_rows():
    """The CPU multiplies per sample here (5 output channels > 1*2*2 column rows); the
    GPU takes one product for the batch: the same numbers either way."""
    layer = Conv2d(1, 5, 2)
    assert layer._per_sample()
    assert_same_on_cuda(lambda: Conv2d(1, 5, 2), (3, 1, 4, 5), np.float32)


@needs_cuda
def test_conv_backward_adds_into_parameter_gradients_on_cuda():
    """Two backward passes add up (shared weights), as on the CPU."""
    make = lambda: Conv2d(2, 3, 2, padding=1)  # noqa: E731
    x = np.random.default_rng(3).standard_normal((2, 2, 4, 4)).astype(np.float32)
    grads = []
    for device in ("cpu", "cuda"):
        layer = _build(make, np.float32, device)
        _zero_grads(layer)
        for _ in range(2):
            y = layer(tinyar.to_device(x, device))
            layer.backward(tinyar.to_device(np.ones(y.shape, np.float32), device))
        grads.append(tinyar.to_host(layer.weight.grad))
    np.testing.assert_allclose(grads[1], grads[0], rtol=1e-5, atol=1e-6)


@needs_cuda
@pytest.mark.parametrize("dtype", DTYPES)
def test_causal_conv_stack(dtype):
    assert_same_on_cuda(lambda: _StackOutput(3, 4, num_layers=3, kernel_size=2), (2, 5, 3),
                        dtype)


class _StackOutput(CausalConvStack):
    """The stack's output alone (its state is always None)."""

    def forward(self, x):
        return super().forward(x)[0]

    def backward(self, grad_output):
        return super().backward(grad_output)[0]


# --- pooling ----------------------------------------------------------------------------
@needs_cuda
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("make", [
    lambda: MaxPool2d(2),
    lambda: MaxPool2d((3, 2), stride=(2, 1), padding=1),  # overlapping windows
    lambda: AvgPool2d(3, stride=2, padding=1),
    lambda: AvgPool2d((2, 3), stride=1),
    lambda: AdaptiveAvgPool2d((3, 2)),
    lambda: AdaptiveAvgPool2d(1),
    lambda: AdaptiveAvgPool2d((4, 7)),  # more outputs than inputs along W: bins overlap
], ids=["max2", "max-overlap", "avg-pad", "avg-overlap", "adaptive", "global", "adaptive-up"])
def test_pool2d(make, dtype):
    assert_same_on_cuda(make, (2, 3, 7, 5), dtype)


@needs_cuda
@pytest.mark.parametrize("dtype", DTYPES)
def test_max_pool1d(dtype):
    assert_same_on_cuda(lambda: MaxPool1d(3, stride=2, padding=1), (2, 3, 9), dtype)


@needs_cuda
def test_max_pool_ties_route_the_gradient_to_the_same_input():
    """Ties go to the first maximum on both devices; overlapping windows that pick the
    same input add their gradients there (atomically on the GPU)."""
    x = np.zeros((1, 2, 4, 4), np.float32)
    x[0, 0, 1, 1] = 3.0
    results = [_step(MaxPool2d(2, stride=1), x, lambda s: np.ones(s, np.float32), device)
               for device in ("cpu", "cuda")]
    np.testing.assert_array_equal(results[1][0], results[0][0])
    np.testing.assert_array_equal(results[1][1], results[0][1])
    assert results[1][1][0, 0, 1, 1] == 4.0  # the four windows around it all chose it


# --- per-channel layers -------------------------------------------------------------------
@needs_cuda
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_batch_norm2d(dtype, train):
    assert_same_on_cuda(lambda: BatchNorm2d(3), (2, 3, 4, 5), dtype, train=train)


@needs_cuda
def test_batch_norm2d_running_statistics_on_cuda():
    x = np.random.default_rng(4).standard_normal((3, 2, 3, 4)).astype(np.float32) * 2 + 1
    states = []
    for device in ("cpu", "cuda"):
        layer = _build(lambda: BatchNorm2d(2, momentum=0.3), np.float32, device)
        for _ in range(2):
            layer(tinyar.to_device(x, device))
        states.append(layer.state_dict())
    for name in states[0]:
        np.testing.assert_allclose(states[1][name], states[0][name], rtol=1e-5, atol=1e-6,
                                   err_msg=name)


@needs_cuda
@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (2, 3, 6)])
def test_dropout2d_in_eval_mode_is_the_identity_on_cuda(shape):
    x = np.random.default_rng(5).standard_normal(shape).astype(np.float32)
    y_cpu, dx_cpu, _ = _step(Dropout2d(0.5).eval(), x, lambda s: x, "cpu")
    y_gpu, dx_gpu, _ = _step(Dropout2d(0.5).eval(), x, lambda s: x, "cuda")
    np.testing.assert_array_equal(y_gpu, x)
    np.testing.assert_array_equal(dx_gpu, dx_cpu)


@needs_cuda
def test_dropout2d_in_training_drops_the_same_channels_on_cuda():
    """The channel mask is drawn on the host from tinyar's generator: same seed, same mask."""
    x = np.random.default_rng(6).standard_normal((3, 4, 2, 3)).astype(np.float32)
    results = []
    for device in ("cpu", "cuda"):
        tinyar.manual_seed(9)
        results.append(_step(Dropout2d(0.5), x, lambda s: x, device))
    np.testing.assert_array_equal(results[1][0], results[0][0])
    np.testing.assert_array_equal(results[1][1], results[0][1])
    dropped = (results[0][0] == 0).all(axis=(2, 3))
    assert dropped.any() and not dropped.all()


# --- the fused ReLU arguments of the reordering ops -----------------------------------------
@needs_cuda
@pytest.mark.parametrize("dtype", DTYPES)
def test_reorderings_with_a_fused_relu_match_the_cpu(dtype):
    cpu, gpu = get_backend("cpu"), get_backend("cuda")
    rng = np.random.default_rng(6)
    y = rng.standard_normal((4, 3 * 5)).astype(dtype)
    bias = rng.standard_normal(4).astype(dtype)
    expected = cpu.to_batch_major(y, 3, bias, relu=True)
    assert (expected == 0).any() and (expected > 0).any()
    got = gpu.to_batch_major(gpu.asarray(y), 3, gpu.asarray(bias), relu=True)
    np.testing.assert_allclose(gpu.to_host(got), expected, **_tolerance(dtype))

    x, relu_out = rng.standard_normal((3, 4, 5)).astype(dtype), expected
    grad_bias = rng.standard_normal(4).astype(dtype)
    grad_bias_gpu = gpu.asarray(grad_bias)
    moved = cpu.to_channel_major(x, grad_bias, relu_output=relu_out)
    moved_gpu = gpu.to_channel_major(gpu.asarray(x), grad_bias_gpu,
                                     relu_output=gpu.asarray(relu_out))
    np.testing.assert_allclose(gpu.to_host(moved_gpu), moved, **_tolerance(dtype))
    np.testing.assert_allclose(gpu.to_host(grad_bias_gpu), grad_bias, **_tolerance(dtype))

    y3 = rng.standard_normal((3, 4, 5)).astype(dtype)
    y3_gpu = gpu.asarray(y3)
    gpu.add_channel_bias(y3_gpu, gpu.asarray(bias), relu=True)
    expected = cpu.add_channel_bias(y3.copy(), bias, relu=True)
    np.testing.assert_allclose(gpu.to_host(y3_gpu), expected, **_tolerance(dtype))


# --- launch counts --------------------------------------------------------------------------
@needs_cuda
def test_conv2d_step_launches_a_fixed_number_of_kernels():
    """Forward + backward of a convolution: im2col, product, reorder (forward);
    reorder, two products, col2im (backward): the same count for any batch size."""
    from tinyar.backend.cuda import count_launches
    counts = []
    for batch in (1, 3):
        layer = Conv2d(2, 3, 2).to("cuda")
        x = tinyar.to_device(np.ones((batch, 2, 4, 4), np.float32), "cuda")
        with count_launches() as launches:
            y = layer(x)
            layer.backward(y)
        counts.append(launches.by_kernel)
    assert counts[0] == counts[1]
    assert counts[0]["_im2col"] == 1 and counts[0]["_col2im"] == 1
    assert counts[0]["_gemm"] == 3
