"""The CUDA backend: device arrays, moving models, and kernels beyond the op examples.

Every op is also checked against its NumPy reference by ``test_ops.py`` (the
``backend`` fixture includes "cuda"). Tests that run CUDA kernels are marked
``gpu``; without a GPU they run in numba's simulator (``NUMBA_ENABLE_CUDASIM=1``
before numba is imported), where each GPU thread is a Python thread, so
inputs stay tiny, and the few that need a real GPU (large shapes, timings)
are skipped.
"""
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

import tinyar
from tinyar.backend import backend_of, get_backend
from tinyar.device import cuda_available, device_of, to_device, to_host
from tinyar.errors import DeviceError

_SKIP_NO_CUDA = pytest.mark.skipif(not cuda_available(), reason=(
    "no CUDA GPU: set NUMBA_ENABLE_CUDASIM=1 to run the CUDA kernels in numba's simulator"))


def needs_cuda(test):
    """Runs CUDA kernels: marked ``gpu``, skipped without a GPU or the simulator."""
    return pytest.mark.gpu(_SKIP_NO_CUDA(test))


def _simulated():
    from tinyar.backend.cuda import SIMULATOR
    return SIMULATOR


def real_gpu_only(test):
    return needs_cuda(pytest.mark.skipif(
        cuda_available() and _simulated(), reason="needs a real GPU (too slow simulated)")(test))


@pytest.fixture
def C():
    """The CUDA backend (tests that take it are marked ``@needs_cuda``)."""
    return get_backend("cuda")


# --- no GPU ---------------------------------------------------------------------------
NO_GPU = ("no CUDA GPU found (numba.cuda.is_available() is False); use --device cpu, or set "
          "NUMBA_ENABLE_CUDASIM=1 to run the CUDA kernels in the simulator")


def test_asking_for_cuda_without_a_gpu_is_a_clear_error(monkeypatch):
    from numba import cuda
    from tinyar.nn.linear import Linear
    monkeypatch.setattr(cuda, "is_available", lambda: False)
    assert not cuda_available()
    with pytest.raises(DeviceError) as info:
        to_device(np.ones(3, np.float32), "cuda")
    assert str(info.value) == NO_GPU
    with pytest.raises(DeviceError, match="use --device cpu"):
        get_backend("cuda").zeros(3)
    with pytest.raises(DeviceError, match="NUMBA_ENABLE_CUDASIM=1"):
        Linear(3, 2).to("cuda")


def test_unknown_device_is_an_error():
    with pytest.raises(DeviceError, match="unknown device 'tpu'"):
        to_device(np.ones(2), "tpu")


# --- moving arrays --------------------------------------------------------------------
@needs_cuda
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64, np.bool_])
def test_round_trip_keeps_values_shape_and_dtype(C, dtype):
    x = (np.arange(12).reshape(3, 4) % 3).astype(dtype)
    d = to_device(x, "cuda")
    assert C.is_array(d) and not isinstance(d, np.ndarray)
    assert backend_of(d) is C and device_of(d) == "cuda"
    assert d.shape == (3, 4) and d.dtype == dtype
    back = to_host(d)
    assert isinstance(back, np.ndarray) and back.dtype == dtype
    np.testing.assert_array_equal(back, x)
    back[0, 0] = 7  # a copy, not a view of device memory
    np.testing.assert_array_equal(to_host(d), x)


@needs_cuda
def test_round_trip_of_strided_and_scalar_host_data(C):
    x = np.arange(20, dtype=np.float32).reshape(4, 5)[:, ::2]
    np.testing.assert_array_equal(to_host(to_device(x, "cuda")), x)
    np.testing.assert_array_equal(to_host(to_device(2.5, "cuda")), np.array(2.5))
    np.testing.assert_array_equal(to_host(to_device([1, 2], "cuda")), [1, 2])


@needs_cuda
def test_to_device_is_a_no_op_where_the_array_already_is(C):
    x = np.ones(3, np.float32)
    assert to_device(x, "cpu") is x
    d = to_device(x, "cuda")
    assert to_device(d, "cuda") is d
    h = to_device(d, "cpu")
    assert isinstance(h, np.ndarray) and device_of(h) == "cpu"
    np.testing.assert_array_equal(h, x)


@needs_cuda
def test_memory_functions(C):
    z = C.zeros((2, 3), np.float64)
    assert z.shape == (2, 3) and z.dtype == np.float64
    np.testing.assert_array_equal(C.to_host(z), np.zeros((2, 3)))
    e = C.empty(4, np.float32)
    assert e.shape == (4,) and e.dtype == np.float32
    a = C.asarray(np.arange(3), dtype=np.float32)
    assert a.dtype == np.float32
    assert C.asarray(a) is a
    np.testing.assert_array_equal(C.to_host(C.asarray(a, dtype=np.float64)), [0, 1, 2])
    assert not C.is_array(np.zeros(2))


@needs_cuda
def test_flat_buffer_views_write_through(C):
    # what FlatBuffer.pack relies on: a reshaped slice of a device buffer is a view
    data = C.zeros(10, np.float32)
    view = data[2:8].reshape((2, 3))
    view[:, :] = C.asarray(np.arange(6, dtype=np.float32).reshape(2, 3))
    np.testing.assert_array_equal(C.to_host(data), [0, 0, 0, 1, 2, 3, 4, 5, 0, 0])
    view[:] = np.ones((2, 3), np.float32)  # from the host too
    assert C.to_host(data).sum() == 6


@needs_cuda
def test_simulated_device_arrays_refuse_what_gpu_arrays_cannot_do():
    if not _simulated():
        pytest.skip("checks the simulator's stand-in for GPU arrays")
    d = to_device(np.ones((2, 3), np.float32), "cuda")
    with pytest.raises(AttributeError, match="no attribute 'fill'"):
        d.fill(0)
    with pytest.raises(TypeError, match="assumes a NumPy array"):
        d + 1
    with pytest.raises(TypeError, match="assumes a NumPy array"):
        d != 1
    with pytest.raises(NotImplementedError, match="requires copying"):
        to_device(np.ones((3, 4)), "cuda")[:, ::2].reshape(-1)
    assert np.asarray(d).sum() == 6  # a host copy, as DeviceNDArray.__array__ makes


# --- kernels beyond the op examples -----------------------------------------------------
@needs_cuda
@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
@pytest.mark.parametrize("accumulate", [False, True])
def test_matmul_spanning_several_tiles(C, trans_a, trans_b, accumulate):
    # 9 x 11 x 7 crosses tile edges in every dimension under the simulator's 4 x 4 x 4 tiles
    rng = np.random.default_rng(0)
    m, k, n = 9, 11, 7
    a = rng.standard_normal((k, m) if trans_a else (m, k))
    b = rng.standard_normal((n, k) if trans_b else (k, n))
    out = rng.standard_normal((m, n))
    expected = (a.T if trans_a else a) @ (b.T if trans_b else b) + (out if accumulate else 0)
    d_out = C.asarray(out)
    got = C.matmul(C.asarray(a), C.asarray(b), out=d_out if accumulate else None,
                   trans_a=trans_a, trans_b=trans_b, accumulate=accumulate)
    if accumulate:
        assert got is d_out
    np.testing.assert_allclose(C.to_host(got), expected, rtol=1e-12, atol=1e-12)


@needs_cuda
def test_matmul_reads_strided_operands_in_place(C):
    rng = np.random.default_rng(1)
    wide = rng.standard_normal((6, 10)).astype(np.float32)
    b = rng.standard_normal((5, 3)).astype(np.float32)
    a = C.asarray(wide)[:, ::2]  # (6, 5), not contiguous
    np.testing.assert_allclose(C.to_host(C.matmul(a, C.asarray(b))), wide[:, ::2] @ b,
                               rtol=1e-5, atol=1e-6)


@needs_cuda
def test_matmul_rejects_mismatched_shapes(C):
    with pytest.raises(ValueError, match="matmul"):
        C.matmul(C.zeros((2, 3)), C.zeros((4, 2)))


@needs_cuda
def test_row_kernels_with_more_classes_than_threads(C):
    # 19 classes: several per thread (8 threads a row under the simulator), a ragged last turn
    rng = np.random.default_rng(2)
    cpu = get_backend("cpu")
    logits = (rng.standard_normal((3, 19)) * 4).astype(np.float64)
    targets = np.array([4, -100, 18])
    d = C.asarray(logits)
    np.testing.assert_allclose(C.to_host(C.softmax_forward(d)), cpu.softmax_forward(logits),
                               rtol=1e-12)
    ours = C.cross_entropy_forward(d, targets, label_smoothing=0.2)  # host targets are fine
    theirs = cpu.cross_entropy_forward(logits, targets, label_smoothing=0.2)
    for g, e in zip(ours, theirs):
        np.testing.assert_allclose(C.to_host(g), e, rtol=1e-12)
    x = rng.standard_normal((2, 19)) * 3 + 5
    for g, e in zip(C.layer_norm_forward(C.asarray(x), None, None, 1e-5),
                    cpu.layer_norm_forward(x, None, None, 1e-5)):
        np.testing.assert_allclose(C.to_host(g), e, rtol=1e-10)


@needs_cuda
def test_embedding_checks_host_indices_and_adds_repeated_rows(C):
    grad_weight = C.zeros((4, 2), np.float32)
    with pytest.raises(IndexError, match="out of range"):
        C.embedding_backward(C.asarray(np.ones((1, 2), np.float32)), np.array([4]), None,
                             grad_weight)
    grad = np.arange(8, dtype=np.float32).reshape(4, 2)
    C.embedding_backward(C.asarray(grad), C.asarray(np.array([1, 1, 1, 3])), None, grad_weight)
    np.testing.assert_array_equal(C.to_host(grad_weight),
                                  [[0, 0], [6, 9], [0, 0], [6, 7]])


@needs_cuda
def test_sum_of_squares_is_a_host_scalar(C):
    x = np.arange(100, dtype=np.float32)
    total = C.sum_of_squares(C.asarray(x))
    assert isinstance(total, np.float32) and total == np.float32((x.astype(np.float64) ** 2).sum())


@needs_cuda
def test_optimizer_ops_refuse_host_buffers(C):
    with pytest.raises(tinyar.DTypeError, match="CUDA device array"):
        C.scale_(np.ones(3, np.float32), 0.5)


# --- models on the device ------------------------------------------------------------
def _mlp(dtype=np.float32):
    from tinyar.nn.activation import ReLU
    from tinyar.nn.container import Sequential
    from tinyar.nn.linear import Linear
    tinyar.manual_seed(3)
    model = Sequential(Linear(6, 10), ReLU(), Linear(10, 4))
    return model.to(np.dtype(dtype)) if dtype != np.float32 else model


def _train(model, x, t, steps=3, device="cpu"):
    """Adam steps on an MLP; returns the losses and the final state."""
    from tinyar.nn.loss import CrossEntropyLoss
    from tinyar.optim.adam import Adam
    loss_fn = CrossEntropyLoss()
    opt = Adam(model, lr=1e-2, weight_decay=1e-3)
    x = to_device(x, device)
    losses = []
    for _ in range(steps):
        # not model.zero_grad(): it calls ndarray.fill, which GPU arrays lack
        # (see test_zero_grad_on_cuda); this assignment works on both
        model.flat_parameters().grad[:] = 0
        losses.append(loss_fn(model(x), t))  # host targets
        model.backward(loss_fn.backward())
        opt.step()
    return losses, model.state_dict(), opt


@pytest.fixture(scope="module")
def mlp_data():
    rng = np.random.default_rng(4)
    return rng.standard_normal((8, 6)).astype(np.float32), rng.integers(0, 4, 8)


@needs_cuda
def test_mlp_trains_on_cuda_like_on_cpu(C, mlp_data):
    x, t = mlp_data
    cpu_losses, cpu_state, _ = _train(_mlp(), x, t)
    model = _mlp().to("cuda")
    assert all(backend_of(p.data) is C and backend_of(p.grad) is C for p in model.parameters())
    cuda_losses, cuda_state, _ = _train(model, x, t, device="cuda")
    np.testing.assert_allclose(cuda_losses, cpu_losses, rtol=1e-5)
    assert cuda_losses[-1] < cuda_losses[0]
    for name in cpu_state:
        np.testing.assert_allclose(cuda_state[name], cpu_state[name], rtol=1e-5, atol=1e-6,
                                   err_msg=name)


@needs_cuda
def test_model_moves_between_devices_and_dtypes(C):
    model = _mlp()
    before = model.state_dict()
    model.to("cuda").double()
    assert model.dtype == np.float64 and backend_of(model[0].weight.data) is C
    model.to("cpu").float()
    assert isinstance(model[0].weight.data, np.ndarray) and model.dtype == np.float32
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[name], err_msg=name)


@pytest.fixture(scope="module")
def trained_on_cuda(mlp_data):
    """(model, its state after 2 Adam steps, the optimizer), trained on the device."""
    if not cuda_available():
        pytest.skip("no CUDA GPU")
    x, t = mlp_data
    model = _mlp().to("cuda")
    _, state, opt = _train(model, x, t, steps=2, device="cuda")
    return model, state, opt


@needs_cuda
def test_checkpoint_saved_on_cuda_loads_on_cpu(C, tmp_path, trained_on_cuda):
    from tinyar.optim.adam import Adam
    model, trained, opt = trained_on_cuda
    path = tinyar.save(model, tmp_path / "cuda_model", meta={"device": "cuda"}, optimizer=opt)
    on_cpu = _mlp()
    cpu_opt = Adam(on_cpu, lr=1e-2)
    assert tinyar.load(on_cpu, path, optimizer=cpu_opt) == {"device": "cuda"}
    for name, value in on_cpu.state_dict().items():
        np.testing.assert_array_equal(value, trained[name], err_msg=name)
    assert cpu_opt.state["step"] == 2
    np.testing.assert_array_equal(cpu_opt.state["exp_avg"], C.to_host(opt.state["exp_avg"]))


@needs_cuda
def test_checkpoint_saved_on_cpu_loads_on_cuda(C, tmp_path, trained_on_cuda):
    _, trained, _ = trained_on_cuda
    on_cpu = _mlp()
    on_cpu.load_state_dict(trained)
    path = tinyar.save(on_cpu, tmp_path / "cpu_model")
    back = _mlp().to("cuda")
    tinyar.load(back, path)
    assert backend_of(back[0].weight.data) is C  # loading keeps the model on its device
    for name, value in back.state_dict().items():
        np.testing.assert_array_equal(value, trained[name], err_msg=name)


@needs_cuda
def test_zero_grad_on_cuda(C):
    from tinyar.optim.adam import Adam
    model = _mlp().to("cuda")
    model.flat_parameters().grad[:] = 1
    model.zero_grad()
    Adam(model).zero_grad()
    assert C.to_host(model.flat_parameters().grad).sum() == 0


# --- the kernels compile for a real GPU ------------------------------------------------------
@needs_cuda
def test_every_kernel_compiles_for_a_gpu(tmp_path):
    """The simulator runs kernels as Python and checks no types: compile each kernel,
    with the argument types the op examples launch it with, to PTX (needs libNVVM
    from a CUDA toolkit, no GPU)."""
    from tinyar.backend.cuda.compile_check import record
    from tinyar.backend.ops import REGISTRY
    from tests.backend.test_ops import _on_backend
    C = get_backend("cuda")
    launches = []
    with record(launches, run=False):
        for name, spec in sorted(REGISTRY.items()):
            for dtype in (np.float32, np.float64):
                args = spec.example(np.random.default_rng(7), dtype)
                getattr(C, name)(**{k: _on_backend(C, v) for k, v in args.items()})
    assert len({(m, n) for m, n, _ in launches}) >= 40
    path = tmp_path / "launches.json"
    path.write_text(json.dumps(launches))
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    result = subprocess.run([sys.executable, "-m", "tinyar.backend.cuda.compile_check",
                             str(path)], capture_output=True, text=True, env=env, timeout=300)
    if result.returncode == 2:
        pytest.skip(result.stdout.strip())
    assert result.returncode == 0, result.stdout + result.stderr


# --- real GPU only -------------------------------------------------------------------------
@real_gpu_only
def test_large_matmul_matches_numpy():
    C = get_backend("cuda")
    rng = np.random.default_rng(5)
    a = rng.standard_normal((1000, 700)).astype(np.float32)
    b = rng.standard_normal((900, 700)).astype(np.float32)
    got = C.to_host(C.matmul(C.asarray(a), C.asarray(b), trans_b=True))
    np.testing.assert_allclose(got, a @ b.T, rtol=1e-3, atol=1e-3)


@real_gpu_only
def test_adam_step_over_a_large_buffer_is_fast():
    C = get_backend("cuda")
    n = 1 << 24
    arrays = [C.zeros(n, np.float32) for _ in range(4)]
    C.adam_step(*arrays, 1e-3, 0.9, 0.999, 1e-8, 0.0, 1)  # compile
    from numba import cuda
    cuda.synchronize()
    start = time.perf_counter()
    for step in range(2, 12):
        C.adam_step(*arrays, 1e-3, 0.9, 0.999, 1e-8, 0.0, step)
    cuda.synchronize()
    per_step = (time.perf_counter() - start) / 10
    # 16M floats x 6 accesses x 4 bytes = 400 MB a step: < 2 ms even at 200 GB/s
    assert per_step < 2e-3, f"adam_step took {per_step * 1e3:.2f} ms"


def test_numpy_without_row_stack_gets_the_shim_before_numba_cuda_loads():
    """numba-cuda 0.30 calls np.row_stack, which NumPy 2.5 removed (docs/performance.md): in a
    fresh process whose NumPy lacks it, importing the CUDA backend puts it back before
    numba.cuda is imported."""
    code = ("import numpy as np\n"
            "del np.row_stack\n"
            "import sys\n"
            "assert 'numba.cuda' not in sys.modules\n"
            "import tinyar.backend.cuda\n"
            "assert np.row_stack is np.vstack\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
