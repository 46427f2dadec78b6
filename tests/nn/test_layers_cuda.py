"""Every layer, loss and optimizer gives on CUDA what it gives on the CPU.

Each test builds the same module twice from one seed, moves one copy to
CUDA (``module.to("cuda")``, inputs through ``tinyar.to_device``), runs both
forward and backward, and compares outputs, input gradients and parameter
gradients (float32: rtol 1e-5, atol 1e-6). Tests that run CUDA kernels are
marked ``gpu`` and skipped without a GPU or numba's simulator
(``NUMBA_ENABLE_CUDASIM=1``), where every GPU thread is a Python thread:
shapes stay tiny.

Dropout's masks come from a counter-based generator (Philox2x32-10), so the
same seed drops the same units on both devices: checked bit for bit.
"""
import numpy as np
import pytest

import tinyar
from tinyar import nn
from tinyar.backend import backend_of, get_backend
from tinyar.backend.ops.elementwise import philox2x32
from tinyar.device import cuda_available, to_device, to_host
from tinyar.nn.loss import BCEWithLogitsLoss, CrossEntropyLoss, MSELoss, NLLLoss
from tinyar.optim import SGD, Adagrad, Adam, AdamW, RMSprop, clip_grad_norm_, clip_grad_value_

TOL = dict(rtol=1e-5, atol=1e-6)

_SKIP_NO_CUDA = pytest.mark.skipif(not cuda_available(), reason=(
    "no CUDA GPU: set NUMBA_ENABLE_CUDASIM=1 to run the CUDA kernels in numba's simulator"))


def needs_cuda(test):
    """Runs CUDA kernels: marked ``gpu``, skipped without a GPU or the simulator."""
    return pytest.mark.gpu(_SKIP_NO_CUDA(test))


@pytest.fixture
def C():
    return get_backend("cuda")


def _twins(make, seed=5):
    """The same module (same initial weights) on the CPU and on CUDA."""
    tinyar.manual_seed(seed)
    cpu = make()
    tinyar.manual_seed(seed)
    return cpu, make().to("cuda")


def _close(got, expected, what, **tol):
    np.testing.assert_allclose(to_host(got), to_host(expected), err_msg=what, **(tol or TOL))


def check_layer(make, x, train=True, seed=5):
    """Forward and backward of ``make()`` on both devices agree; returns the twins."""
    cpu, gpu = _twins(make, seed)
    cpu.train(train)
    gpu.train(train)
    y_cpu = cpu(x)
    y_gpu = gpu(to_device(x, "cuda"))
    assert backend_of(y_gpu).name == "cuda"
    _close(y_gpu, y_cpu, "output")
    g = np.random.default_rng(seed).standard_normal(np.shape(y_cpu)).astype(y_cpu.dtype)
    dx_cpu = cpu.backward(g)
    dx_gpu = gpu.backward(to_device(g, "cuda"))
    if dx_cpu is not None:
        _close(dx_gpu, dx_cpu, "input gradient")
    for (name, p_cpu), (_, p_gpu) in zip(cpu.named_parameters(), gpu.named_parameters()):
        _close(p_gpu.grad, p_cpu.grad, f"{name}.grad")
    return cpu, gpu


@pytest.fixture
def x3():
    return np.random.default_rng(0).standard_normal((2, 3, 4)).astype(np.float32)


# --- layers ------------------------------------------------------------------------------
@needs_cuda
@pytest.mark.parametrize("bias", [True, False])
def test_linear(bias, x3):
    check_layer(lambda: nn.Linear(4, 3, bias=bias), x3)


@needs_cuda
@pytest.mark.parametrize("make", [nn.ReLU, lambda: nn.LeakyReLU(0.1), nn.Tanh, nn.Sigmoid,
                                  nn.GELU], ids=["relu", "leaky_relu", "tanh", "sigmoid",
                                                 "gelu"])
def test_activations(make, x3):
    check_layer(make, x3 * 3)


@needs_cuda
@pytest.mark.parametrize("dims", [(1, -1), (0, 1)])
def test_flatten(dims):
    x = np.random.default_rng(1).standard_normal((2, 3, 2, 2)).astype(np.float32)
    check_layer(lambda: nn.Flatten(*dims), x)


@needs_cuda
def test_sequential_mlp(x3):
    check_layer(lambda: nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 2)), x3)


@needs_cuda
@pytest.mark.parametrize("shape, affine", [((4,), True), ((3, 4), True), ((4,), False)])
def test_layer_norm(shape, affine, x3):
    check_layer(lambda: nn.LayerNorm(shape, elementwise_affine=affine), x3 + 2)


def _assert_same_buffers(cpu, gpu):
    for name, value in cpu.state_dict().items():
        _close(gpu.state_dict()[name], value, name)


@needs_cuda
@pytest.mark.parametrize("momentum", [0.1, None])
@pytest.mark.parametrize("shape", [(5, 3), (2, 3, 4)])
def test_batch_norm_train_then_eval(shape, momentum):
    rng = np.random.default_rng(2)
    cpu, gpu = _twins(lambda: nn.BatchNorm1d(3, momentum=momentum))
    for step in range(3):  # running statistics follow the batches alike
        x = (rng.standard_normal(shape) * (step + 1) + step).astype(np.float32)
        _close(gpu(to_device(x, "cuda")), cpu(x), f"train output {step}")
    state = gpu.state_dict()
    assert state["num_batches_tracked"].dtype == np.int64 and state["num_batches_tracked"] == 3
    _assert_same_buffers(cpu, gpu)
    x = rng.standard_normal(shape).astype(np.float32)
    check_layer(lambda: nn.BatchNorm1d(3, momentum=momentum), x, train=True)
    _, in_eval = check_layer(lambda: nn.BatchNorm1d(3), x, train=False)
    assert int(to_host(in_eval.num_batches_tracked)) == 0  # evaluation counts nothing


@needs_cuda
@pytest.mark.parametrize("indices_on", ["cpu", "cuda"])
def test_embedding_with_padding_idx(indices_on):
    indices = np.array([[1, 2, 1], [0, 3, 3]])
    cpu, gpu = _twins(lambda: nn.Embedding(5, 3, padding_idx=3))
    y_cpu, y_gpu = cpu(indices), gpu(to_device(indices, indices_on))
    _close(y_gpu, y_cpu, "output")
    g = np.random.default_rng(3).standard_normal(y_cpu.shape).astype(np.float32)
    assert cpu.backward(g) is None and gpu.backward(to_device(g, "cuda")) is None
    _close(gpu.weight.grad, cpu.weight.grad, "weight.grad")
    assert not to_host(gpu.weight.grad)[3].any()  # the padding row learns nothing
    with pytest.raises(tinyar.errors.TargetError, match="index 5 is outside"):
        gpu(to_device(np.array([0, 5]), indices_on))


@needs_cuda
@pytest.mark.parametrize("make", [nn.Softmax, nn.LogSoftmax], ids=["softmax", "log_softmax"])
@pytest.mark.parametrize("dim", [0, 1, -1])
def test_softmax_along_any_axis(make, dim, x3):
    check_layer(lambda: make(dim), x3 * 2)


@needs_cuda
def test_softmax_along_the_first_axis_of_a_matrix(x3):
    check_layer(lambda: nn.Softmax(0), x3[0])


# --- dropout ---------------------------------------------------------------------------
@needs_cuda
@pytest.mark.parametrize("p", [0.3, 0.8])
def test_dropout_drops_the_same_units_as_the_cpu(p, x3):
    cpu, gpu = nn.Dropout(p), nn.Dropout(p)
    for seed in (11, 12):
        tinyar.manual_seed(seed)
        y_cpu = cpu(x3)
        tinyar.manual_seed(seed)
        y_gpu = gpu(to_device(x3, "cuda"))
        np.testing.assert_array_equal(to_host(gpu._keep), cpu._keep)
        np.testing.assert_array_equal(to_host(y_gpu), y_cpu)
        g = np.ones_like(x3)
        np.testing.assert_array_equal(to_host(gpu.backward(to_device(g, "cuda"))),
                                      cpu.backward(g))
    assert 0 < cpu._keep.sum() < cpu._keep.size


@needs_cuda
def test_dropout_draws_a_new_mask_every_forward_and_repeats_from_a_seed(C):
    x = to_device(np.ones((4, 16), np.float32), "cuda")
    layer = nn.Dropout(0.5)
    tinyar.manual_seed(3)
    first, second = to_host(layer(x)), to_host(layer(x))
    assert (first != second).any()
    tinyar.manual_seed(3)
    np.testing.assert_array_equal(to_host(layer(x)), first)


@needs_cuda
def test_dropout_eval_and_p_zero_are_the_identity(C, x3):
    x = to_device(x3, "cuda")
    assert nn.Dropout(0.5).eval()(x) is x
    layer = nn.Dropout(0.0)
    assert layer(x) is x and layer.backward(x) is x
    drop_all = nn.Dropout(1.0)
    assert not to_host(drop_all(x)).any() and not to_host(drop_all.backward(x)).any()


def test_philox_matches_random123_known_answers():
    # Random123's kat_vectors for philox2x32 with 10 rounds: (counter words, key) -> output
    cases = [((0x00000000, 0x00000000), 0x00000000, (0xFF1DAE59, 0x6CD10DF2)),
             ((0xFFFFFFFF, 0xFFFFFFFF), 0xFFFFFFFF, (0x2C3F628B, 0xAB4FD7AD)),
             ((0x243F6A88, 0x85A308D3), 0x13198A2E, (0xDD7CE038, 0xF62A4C12))]
    for (low, high), key, expected in cases:
        x0, x1 = philox2x32([low | high << 32], key)
        assert (int(x0[0]), int(x1[0])) == expected


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=[
    pytest.mark.gpu, _SKIP_NO_CUDA])])
def test_mask_kernels_compute_philox_bit_for_bit(device):
    # A one-element mask says whether the random word r >= floor(p 2^32): it flips
    # between p = r / 2^32 and p = (r + 1) / 2^32 exactly when the kernel computed r.
    B = get_backend(device)
    counter, key, word = 0x85A308D3243F6A88, 0x13198A2E, 0xDD7CE038
    assert to_host(B.dropout_mask((1,), word / 2 ** 32, key, counter))[0]
    assert not to_host(B.dropout_mask((1,), (word + 1) / 2 ** 32, key, counter))[0]


@needs_cuda
def test_mask_is_the_same_on_both_backends_for_many_counters(C):
    cpu = get_backend("cpu")
    for p, seed, offset in [(0.5, 0, 0), (0.1, 2 ** 32 - 1, 2 ** 64 - 700), (0.9, 77, 3 << 32)]:
        expected = cpu.dropout_mask((7, 100), p, seed, offset)
        np.testing.assert_array_equal(to_host(C.dropout_mask((7, 100), p, seed, offset)),
                                      expected)
        assert abs(expected.mean() - (1 - p)) < 5 * np.sqrt(p * (1 - p) / expected.size)


def test_mask_arguments_are_checked():
    cpu = get_backend("cpu")
    with pytest.raises(ValueError, match="32-bit key"):
        cpu.dropout_mask((2,), 0.5, 2 ** 32, 0)
    with pytest.raises(ValueError, match="fit in 64 bits"):
        cpu.dropout_mask((2,), 0.5, 0, 2 ** 64 - 1)
    with pytest.raises(ValueError, match=r"p must lie in \[0, 1\]"):
        cpu.dropout_mask((2,), 1.5, 0, 0)


# --- losses ----------------------------------------------------------------------------
def check_loss(make, input, target, target_on="cpu", grad=None):
    """Loss value (or 'none' losses) and dL/dinput agree on both devices."""
    cpu, gpu = _twins(make)
    loss_cpu = cpu(input, target)
    loss_gpu = gpu(to_device(input, "cuda"), to_device(target, target_on))
    if np.ndim(loss_cpu):
        assert backend_of(loss_gpu).name == "cuda"
    _close(loss_gpu, loss_cpu, "loss")
    if cpu.reduction == "none":
        grad = np.random.default_rng(4).standard_normal(np.shape(loss_cpu)).astype(input.dtype)
        d_cpu, d_gpu = cpu.backward(grad), gpu.backward(to_device(grad, "cuda"))
    else:
        d_cpu, d_gpu = cpu.backward(0.5), gpu.backward(0.5)
    assert backend_of(d_gpu).name == "cuda"
    _close(d_gpu, d_cpu, "input gradient")


def _class_data(shape, classes=5, seed=6):
    """Logits (N, C, *rest) and targets (N, *rest) with some ignored (-100)."""
    rng = np.random.default_rng(seed)
    n, rest = shape[0], shape[1:]
    logits = (rng.standard_normal((n, classes) + rest) * 2).astype(np.float32)
    targets = rng.integers(0, classes, (n,) + rest)
    targets.reshape(-1)[1] = -100
    return logits, targets


WEIGHT = np.array([0.5, 1.0, 2.0, 1.5, 0.8], np.float32)


@needs_cuda
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("shape", [(4,), (2, 3), (2, 2, 3)], ids=["NC", "NCd", "NCdd"])
@pytest.mark.parametrize("weighted", [False, True])
def test_cross_entropy(weighted, shape, reduction):
    logits, targets = _class_data(shape)
    check_loss(lambda: CrossEntropyLoss(weight=WEIGHT if weighted else None,
                                        reduction=reduction, label_smoothing=0.1),
               logits, targets)


@needs_cuda
def test_cross_entropy_takes_device_targets_and_one_sample():
    logits, targets = _class_data((2, 3))
    check_loss(lambda: CrossEntropyLoss(weight=WEIGHT), logits, targets, target_on="cuda")
    check_loss(CrossEntropyLoss, logits[0, :, 0].copy(), np.array(3))


@needs_cuda
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("shape", [(4,), (2, 3)], ids=["NC", "NCd"])
def test_nll(shape, reduction):
    logits, targets = _class_data(shape)
    logprobs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    check_loss(lambda: NLLLoss(weight=WEIGHT, reduction=reduction), logprobs, targets)
    check_loss(lambda: NLLLoss(reduction=reduction), logprobs, targets, target_on="cuda")


@needs_cuda
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_mse(reduction, x3):
    target = np.random.default_rng(7).standard_normal(x3.shape).astype(np.float32)
    check_loss(lambda: MSELoss(reduction=reduction), x3, target, target_on="cuda")


@needs_cuda
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("pos_weight", [None, np.float32([2.0]), np.float32([0.5, 1, 2, 3])],
                         ids=["none", "one", "per_class"])
def test_bce_with_logits(pos_weight, reduction, x3):
    target = np.random.default_rng(8).uniform(0, 1, x3.shape).astype(np.float32)
    check_loss(lambda: BCEWithLogitsLoss(reduction=reduction, pos_weight=pos_weight), x3 * 3,
               target, target_on="cuda")


# --- optimizers, clipping, checkpoints ---------------------------------------------------
def _mlp():
    return nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))


def _train(model, optimizer, device, steps=3, clip=None):
    """Cross-entropy steps on fixed data; returns the losses."""
    rng = np.random.default_rng(9)
    x = to_device(rng.standard_normal((5, 4)).astype(np.float32), device)
    t = rng.integers(0, 3, 5)
    loss_fn = CrossEntropyLoss()
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        losses.append(loss_fn(model(x), t))
        model.backward(loss_fn.backward(), input_grad=False)
        if clip is not None:
            clip(model)
        optimizer.step()
    return losses


OPTIMIZERS = {
    "sgd_momentum": lambda m: SGD(m, lr=0.1, momentum=0.9, dampening=0.1, weight_decay=1e-2),
    "sgd_nesterov": lambda m: SGD(m, lr=0.1, momentum=0.9, nesterov=True),
    "adam": lambda m: Adam(m, lr=1e-2, weight_decay=1e-2),
    "adam_amsgrad": lambda m: Adam(m, lr=1e-2, amsgrad=True),
    "adamw": lambda m: AdamW(m, lr=1e-2),
    "rmsprop_centered_momentum": lambda m: RMSprop(m, lr=1e-2, momentum=0.5, centered=True,
                                                   weight_decay=1e-2),
    "rmsprop": lambda m: RMSprop(m, lr=1e-2),
    "adagrad": lambda m: Adagrad(m, lr=0.1, lr_decay=0.01, initial_accumulator_value=0.1),
}

CLIPS = {
    "norm": lambda m: clip_grad_norm_(m, 0.05),
    "inf_norm": lambda m: clip_grad_norm_(m, 0.02, norm_type=float("inf")),
    "value": lambda m: clip_grad_value_(m, 0.01),
}


def _assert_same_training(make_optimizer, clip=None):
    cpu, gpu = _twins(_mlp)
    opt_cpu, opt_gpu = make_optimizer(cpu), make_optimizer(gpu)
    losses_cpu = _train(cpu, opt_cpu, "cpu", clip=clip)
    losses_gpu = _train(gpu, opt_gpu, "cuda", clip=clip)
    np.testing.assert_allclose(losses_gpu, losses_cpu, **TOL)
    _assert_same_buffers(cpu, gpu)
    for name, state in opt_cpu.state_dict()["state"].items():
        _close(opt_gpu.state_dict()["state"][name], state, f"optimizer state {name}")
    return losses_cpu


@needs_cuda
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_optimizer_steps_match_the_cpu(name):
    losses = _assert_same_training(OPTIMIZERS[name])
    assert losses[-1] < losses[0]


@needs_cuda
@pytest.mark.parametrize("name", sorted(CLIPS))
def test_clipping_matches_the_cpu(name):
    _assert_same_training(OPTIMIZERS["sgd_momentum"], clip=CLIPS[name])


@needs_cuda
def test_clip_grad_norm_returns_the_same_norm(C):
    cpu, gpu = _twins(_mlp)
    for model in (cpu, gpu):
        model.flat_parameters().grad[:] = 0.25
    total_cpu, total_gpu = clip_grad_norm_(cpu, 1.0), clip_grad_norm_(gpu, 1.0)
    assert isinstance(total_gpu, float)
    np.testing.assert_allclose(total_gpu, total_cpu, rtol=1e-6)
    _close(gpu.flat_parameters().grad, cpu.flat_parameters().grad, "clipped gradients")
    # parameters out of buffer order are swept one gradient array at a time
    totals = [clip_grad_norm_(model.parameters()[::-1], 0.1) for model in (cpu, gpu)]
    np.testing.assert_allclose(totals[1], totals[0], rtol=1e-6)
    _close(gpu.flat_parameters().grad, cpu.flat_parameters().grad, "clipped gradients")


def _bn_model():
    return nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 3))


@needs_cuda
@pytest.mark.parametrize("saved_on, loaded_on", [("cuda", "cpu"), ("cpu", "cuda")])
def test_checkpoint_crosses_devices(saved_on, loaded_on, tmp_path):
    tinyar.manual_seed(1)
    source = _bn_model().to(saved_on)
    opt = SGD(source, lr=0.1, momentum=0.9)
    _train(source, opt, saved_on, steps=2)
    path = tinyar.save(source, tmp_path / "model", meta={"from": saved_on}, optimizer=opt)
    tinyar.manual_seed(2)  # other initial weights: the load must overwrite them all
    target = _bn_model().to(loaded_on)
    target_opt = SGD(target, lr=0.1, momentum=0.9)
    assert tinyar.load(target, path, optimizer=target_opt) == {"from": saved_on}
    assert backend_of(target[0].weight.data).name == loaded_on  # stays on its device
    assert backend_of(target[1].running_mean).name == loaded_on
    for name, value in source.state_dict().items():
        np.testing.assert_array_equal(target.state_dict()[name], value, err_msg=name)
    assert int(to_host(target[1].num_batches_tracked)) == 2
    np.testing.assert_array_equal(to_host(target_opt.state["momentum_buffer"]),
                                  to_host(opt.state["momentum_buffer"]))
    # and training carries on alike from there
    np.testing.assert_allclose(_train(target, target_opt, loaded_on, steps=2),
                               _train(source, opt, saved_on, steps=2), **TOL)


# --- kernel launches -----------------------------------------------------------------------
@needs_cuda
def test_a_training_step_launches_the_same_kernels_every_step(C):
    from tinyar.backend.cuda import count_launches
    tinyar.manual_seed(4)
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Dropout(0.2), nn.LayerNorm(6),
                          nn.Linear(6, 3)).to("cuda")
    opt = Adam(model, lr=1e-2)
    rng = np.random.default_rng(10)
    x = to_device(rng.standard_normal((5, 4)).astype(np.float32), "cuda")
    t = rng.integers(0, 3, 5)
    loss_fn = CrossEntropyLoss()
    counts = []
    for _ in range(4):
        with count_launches() as launches:
            loss_fn(model(x), t)
            model.backward(loss_fn.backward(), input_grad=False)
            clip_grad_norm_(model, 1.0)
            opt.step()
        counts.append(dict(launches.by_kernel))
    # the first step may fill constants that later steps reuse (the class weights of
    # 1 that CrossEntropyLoss without weights reads): from then on, nothing changes
    assert counts[1] == counts[2] == counts[3]
    assert sum(counts[0].values()) - sum(counts[1].values()) <= 1, counts[:2]
    per_step = counts[1]
    assert per_step["_dropout_mask"] == 1  # the mask is made on the device, once
    assert per_step["_dropout"] == 2       # applied forward and backward
    assert per_step["_adam"] == 1          # one update of the flat buffer
    assert sum(per_step.values()) < 30, per_step


@needs_cuda
def test_a_host_input_for_a_gpu_layer_is_a_clear_error():
    from tinyar.errors import DeviceError
    layer = nn.Linear(4, 2).to("cuda")
    with pytest.raises(DeviceError, match=r"Linear\(in_features=4.*the input is on cpu and "
                                          r"the layer's parameters on cuda"):
        layer(np.ones((1, 4), np.float32))
    cpu_layer = nn.Linear(4, 2)
    with pytest.raises(DeviceError, match="the input is on cuda and the layer's parameters on cpu"):
        cpu_layer(tinyar.to_device(np.ones((1, 4), np.float32), "cuda"))
