"""The multi-level softmax on CUDA gives the CPU's losses, gradients and distributions.

Tiny shapes (the simulator runs each GPU thread as a Python thread), with more
rows than the simulator's 2 blocks, classes of different sizes, and a class
with more labels than a row block has threads (8 under the simulator).
"""
import numpy as np
import pytest

import tinyar
from tinyar.data.hierarchy import ClassHierarchy
from tinyar.device import device_of
from tinyar.nn import MultiLevelSoftmax
from tests.backend.test_cuda import needs_cuda

DTYPES = [np.float32, np.float64]
HIDDEN = 5


def _tolerance(dtype):
    return dict(rtol=1e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-12)


def _hierarchy():
    # 4 classes of 2, 11, 3 and 5 labels, the labels of a class not contiguous in id order
    parent = np.array([1, 0, 1, 2, 1, 3, 1, 1, 3, 0, 1, 2, 1, 3, 1, 1, 2, 3, 1, 3, 1])
    return ClassHierarchy.from_parents(parent)


def _head(dtype, device, level_weights=(1.0, 1.0)):
    tinyar.manual_seed(11)
    head = MultiLevelSoftmax(HIDDEN, _hierarchy(), level_weights=level_weights).to(
        np.dtype(dtype))
    if device != "cpu":
        head.to(device)
    head.flat_parameters().grad[:] = 0
    return head


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(2)
    h = rng.standard_normal((13, HIDDEN)) * 2
    targets = rng.integers(0, 21, 13)
    targets[:4] = [7, 7, 1, 20]  # repeated labels, and rows of the same class
    return h, targets


def _train_step(dtype, device, data, level_weights=(1.0, 1.0), device_targets=False):
    h, targets = data
    head = _head(dtype, device, level_weights)
    h_in = tinyar.to_device(h.astype(dtype), device)
    t_in = tinyar.to_device(targets, device) if device_targets else targets
    loss = head(h_in, t_in)
    dh = head.backward(0.5)
    assert device_of(dh) == device
    grads = {name: tinyar.to_host(p.grad) for name, p in head.named_parameters()}
    return loss, head.last_losses, tinyar.to_host(dh), grads


@needs_cuda
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("level_weights", [(1.0, 1.0), (0.3, 2.0)])
def test_loss_and_gradients_match_the_cpu(dtype, level_weights, data):
    cpu = _train_step(dtype, "cpu", data, level_weights)
    gpu = _train_step(dtype, "cuda", data, level_weights)
    tol = _tolerance(dtype)
    assert gpu[0] == pytest.approx(cpu[0], rel=tol["rtol"])
    np.testing.assert_allclose(gpu[1], cpu[1], **tol)
    np.testing.assert_allclose(gpu[2], cpu[2], err_msg="dL/dh", **tol)
    assert gpu[3].keys() == cpu[3].keys()
    for name in cpu[3]:
        np.testing.assert_allclose(gpu[3][name], cpu[3][name], err_msg=name, **tol)
    assert np.abs(cpu[3]["fine.weight"]).sum() > 0


@needs_cuda
def test_targets_may_be_a_device_array(data):
    host = _train_step(np.float32, "cuda", data)
    on_device = _train_step(np.float32, "cuda", data, device_targets=True)
    assert on_device[0] == pytest.approx(host[0], rel=1e-6)
    np.testing.assert_allclose(on_device[2], host[2], rtol=1e-5, atol=1e-6)


@needs_cuda
@pytest.mark.parametrize("dtype", DTYPES)
def test_full_log_probabilities_match_the_cpu(dtype, data):
    h = data[0].astype(dtype)
    expected = _head(dtype, "cpu").log_prob(h)
    got = _head(dtype, "cuda").log_prob(tinyar.to_device(h, "cuda"))
    assert device_of(got) == "cuda"
    got = tinyar.to_host(got)
    assert got.shape == (13, 21) and got.dtype == dtype
    np.testing.assert_allclose(got, expected, **_tolerance(dtype))
    np.testing.assert_allclose(np.exp(got.astype(np.float64)).sum(axis=1), 1.0, atol=1e-5)


@needs_cuda
@pytest.mark.parametrize("decode", ["joint", "greedy"])
def test_predictions_match_the_cpu(decode, data):
    h = data[0]
    expected = _head(np.float64, "cpu").predict(h, decode=decode)
    got = _head(np.float64, "cuda").predict(tinyar.to_device(h, "cuda"), decode=decode)
    np.testing.assert_array_equal(got, expected)


@needs_cuda
def test_sampling_on_cuda(data):
    h = data[0].astype(np.float32)
    head = _head(np.float32, "cuda")
    drawn = head.sample(tinyar.to_device(h, "cuda"), rng=np.random.default_rng(0))
    assert isinstance(drawn, np.ndarray) and drawn.shape == (13,)
    assert drawn.min() >= 0 and drawn.max() < 21
    same_seed = _head(np.float32, "cpu").sample(h, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(drawn, same_seed)  # same draws, same distributions
    greedy = head.sample(tinyar.to_device(h, "cuda"), temperature=0)
    np.testing.assert_array_equal(greedy, head.predict(tinyar.to_device(h, "cuda"), "greedy"))


@needs_cuda
def test_a_training_step_launches_a_fixed_number_of_kernels():
    """The fine level is one kernel forward and one backward whatever the number of
    classes in the batch."""
    from tinyar.backend.cuda import count_launches
    rng = np.random.default_rng(3)
    counts = []
    for targets in ([7, 7, 7], [1, 20, 3, 5, 8, 0]):  # one class; all four classes
        head = _head(np.float32, "cuda")
        h = tinyar.to_device(rng.standard_normal((len(targets), HIDDEN)).astype(np.float32),
                             "cuda")
        head(h, np.array(targets))  # a first step makes the cached constants it needs
        head.backward()
        with count_launches() as launches:
            head(h, np.array(targets))
            head.backward()
        counts.append(launches.by_kernel)
    assert counts[0] == counts[1]
    assert counts[0]["_fine_forward"] == 1 and counts[0]["_fine_backward"] == 1
