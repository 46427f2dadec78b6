"""RNN / LSTM / GRU layers and cells on CUDA: the same numbers as on the CPU, and a launch
count that does not grow with the sequence length.

Each test builds a module on the CPU, moves a copy with the same weights to the GPU
(``.to("cuda")``) and runs both on the same inputs (``tinyar.to_device``): outputs,
final states and every gradient must agree. Without a GPU these run in numba's CUDA
simulator (``NUMBA_ENABLE_CUDASIM=1``), hence the tiny shapes.
"""
import numpy as np
import pytest

import tinyar
from tinyar.backend import get_backend
from tinyar.backend.ops import REGISTRY
from tinyar.device import device_of
from tinyar.nn.recurrent import GRU, LSTM, RNN, detach_state
from tinyar.nn.rnn_cells import GRUCell, LSTMCell, RNNCell
from tests.backend.test_cuda import needs_cuda

LAYERS = {"rnn_tanh": (RNN, {}), "rnn_relu": (RNN, {"nonlinearity": "relu"}),
          "lstm": (LSTM, {}), "gru": (GRU, {})}
CELLS = {"rnn_tanh": (RNNCell, {}), "rnn_relu": (RNNCell, {"nonlinearity": "relu"}),
         "lstm": (LSTMCell, {}), "gru": (GRUCell, {})}
# float32: the CPU's kernels use polynomial tanh/sigmoid (error < 3e-7), the GPU's exact ones
TOL = {np.float32: dict(rtol=1e-5, atol=2e-6), np.float64: dict(rtol=1e-10, atol=1e-12)}


def _twins(cls, dtype, *args, **kwargs):
    """A module on the CPU and one with the same weights on the GPU."""
    cpu = cls(*args, dtype=dtype, **kwargs)
    gpu = cls(*args, dtype=dtype, **kwargs).to("cuda")
    gpu.load_state_dict(cpu.state_dict())
    cpu.zero_grad()
    gpu.zero_grad()
    return cpu, gpu


def _rand(rng, dtype, *shape):
    return rng.standard_normal(shape).astype(dtype)


def _on_gpu(arrays):
    """The same nesting of arrays (None, array, tuple of them), on the GPU."""
    if arrays is None:
        return None
    if isinstance(arrays, tuple):
        return tuple(_on_gpu(a) for a in arrays)
    return tinyar.to_device(arrays, "cuda")


def _assert_same(name, gpu, cpu, dtype):
    """Nested results of the GPU module (device arrays) against the CPU module's."""
    if isinstance(cpu, tuple):
        assert isinstance(gpu, tuple) and len(gpu) == len(cpu), name
        for i, (g, c) in enumerate(zip(gpu, cpu)):
            _assert_same(f"{name}[{i}]", g, c, dtype)
        return
    assert device_of(gpu) == "cuda", f"{name} is not on the GPU"
    got = tinyar.to_host(gpu)
    assert got.shape == cpu.shape and got.dtype == cpu.dtype, name
    np.testing.assert_allclose(got, cpu, err_msg=name, **TOL[dtype])


def _assert_same_grads(gpu_module, cpu_module, dtype):
    gpu_params = dict(gpu_module.named_parameters())
    for name, p in cpu_module.named_parameters():
        assert np.any(p.grad != 0), f"{name}: no gradient reached it (the test is too weak)"
        _assert_same(f"{name}.grad", gpu_params[name].grad, p.grad, dtype)


# --- layers -------------------------------------------------------------------------------
@needs_cuda
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind", sorted(LAYERS))
@pytest.mark.parametrize("n, t, i, h, batch_first", [(3, 4, 2, 5, True), (2, 3, 4, 3, False)])
def test_layer_on_cuda_matches_cpu(kind, dtype, n, t, i, h, batch_first):
    cls, kw = LAYERS[kind]
    layers = 2
    cpu, gpu = _twins(cls, dtype, i, h, num_layers=layers, batch_first=batch_first, **kw)
    rng = np.random.default_rng(11)
    x = _rand(rng, dtype, *((n, t, i) if batch_first else (t, n, i)))
    state = _rand(rng, dtype, layers, n, h)
    grad_out = _rand(rng, dtype, *((n, t, h) if batch_first else (t, n, h)))
    grad_state = _rand(rng, dtype, layers, n, h)
    if kind == "lstm":  # (h0, c0) in, (dh_n, dc_n) back
        state = (state, _rand(rng, dtype, layers, n, h))
        grad_state = (grad_state, _rand(rng, dtype, layers, n, h))

    cpu_out, cpu_final = cpu(x, state)
    gpu_out, gpu_final = gpu(_on_gpu(x), _on_gpu(state))
    _assert_same("output", gpu_out, cpu_out, dtype)
    _assert_same("final state", gpu_final, cpu_final, dtype)

    cpu_dx, cpu_dstate = cpu.backward(grad_out, grad_state)
    gpu_dx, gpu_dstate = gpu.backward(_on_gpu(grad_out), _on_gpu(grad_state))
    _assert_same("dx", gpu_dx, cpu_dx, dtype)
    _assert_same("d initial state", gpu_dstate, cpu_dstate, dtype)
    _assert_same_grads(gpu, cpu, dtype)


@needs_cuda
@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_unbatched_layer_without_state_on_cuda(kind):
    """(T, I) input, zero initial state, no upstream state gradient; then a second
    forward from the detached final state (truncated BPTT) on the same workspace."""
    cls, kw = LAYERS[kind]
    cpu, gpu = _twins(cls, np.float64, 3, 4, num_layers=2, **kw)
    rng = np.random.default_rng(5)
    x, grad_out = _rand(rng, np.float64, 3, 3), _rand(rng, np.float64, 3, 4)
    cpu_out, cpu_state = cpu(x)
    gpu_out, gpu_state = gpu(_on_gpu(x))
    _assert_same("output", gpu_out, cpu_out, np.float64)
    _assert_same("dx", gpu.backward(_on_gpu(grad_out))[0], cpu.backward(grad_out)[0],
                 np.float64)
    cpu_out, _ = cpu(x, detach_state(cpu_state))
    gpu_out, _ = gpu(_on_gpu(x), detach_state(gpu_state))
    _assert_same("output from the carried state", gpu_out, cpu_out, np.float64)
    _assert_same_grads(gpu, cpu, np.float64)


# --- cells ------------------------------------------------------------------------------------
@needs_cuda
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind", sorted(CELLS))
def test_cell_on_cuda_matches_cpu(kind, dtype):
    cls, kw = CELLS[kind]
    n, i, h = 3, 4, 5
    cpu, gpu = _twins(cls, dtype, i, h, **kw)
    rng = np.random.default_rng(12)
    x, state, grad = _rand(rng, dtype, n, i), _rand(rng, dtype, n, h), _rand(rng, dtype, n, h)
    if kind == "lstm":
        state = (state, _rand(rng, dtype, n, h))
        grads = (grad, _rand(rng, dtype, n, h))
    else:
        grads = (grad,)
    _assert_same("forward", gpu(_on_gpu(x), _on_gpu(state)), cpu(x, state), dtype)
    _assert_same("backward", gpu.backward(*_on_gpu(grads)), cpu.backward(*grads), dtype)
    _assert_same_grads(gpu, cpu, dtype)


# --- the sequence ops beyond the op examples ---------------------------------------------------
@needs_cuda
@pytest.mark.parametrize("rows, hidden", [(5, 3), (1, 40)], ids=["tiles-loop", "wide"])
@pytest.mark.parametrize("name", ["rnn_sequence_forward", "rnn_sequence_backward",
                                  "lstm_sequence_forward", "lstm_sequence_backward",
                                  "gru_sequence_forward", "gru_sequence_backward"])
def test_sequence_op_shapes_the_examples_miss(name, rows, hidden, monkeypatch):
    """More row tiles than blocks (each block loops over tiles), and more hidden units
    than threads in a block (each thread loops over units), against the reference."""
    from tinyar.backend.ops import rnn as ops_rnn
    monkeypatch.setattr(ops_rnn, "_N", rows)
    monkeypatch.setattr(ops_rnn, "_H", hidden)
    monkeypatch.setattr(ops_rnn, "_T", 2)
    C = get_backend("cuda")
    spec = REGISTRY[name]
    args = spec.example(np.random.default_rng(3), np.float64)
    expected = spec.reference(**{k: (v.copy() if isinstance(v, np.ndarray) else v)
                                 for k, v in args.items()})
    expected = expected if isinstance(expected, tuple) else (expected,)
    device_args = {k: (C.asarray(v) if isinstance(v, np.ndarray) else v)
                   for k, v in args.items()}
    getattr(C, name)(**device_args)
    for key, want in zip(spec.inplace, expected):
        np.testing.assert_allclose(C.to_host(device_args[key]), want, rtol=1e-10, atol=1e-12,
                                   err_msg=key)


# --- launches -------------------------------------------------------------------------------
@needs_cuda
def test_lstm_launches_do_not_grow_with_the_sequence_length():
    """The time loop is one persistent kernel per layer: T = 2 and T = 5 launch the same
    kernels, forward and backward."""
    from tinyar.backend.cuda import count_launches
    layers, n, h = 2, 2, 3
    lstm = LSTM(2, h, num_layers=layers).to("cuda")
    counts = []
    for t in (2, 5):
        x = tinyar.to_device(np.ones((n, t, 2), np.float32), "cuda")
        grad = tinyar.to_device(np.ones((n, t, h), np.float32), "cuda")
        with count_launches() as forward:
            lstm(x)
        with count_launches() as backward:
            lstm.backward(grad)
        counts.append((forward.count, backward.count, forward.by_kernel, backward.by_kernel))
    assert counts[0] == counts[1]
    forward_kernels, backward_kernels = counts[0][2], counts[0][3]
    assert forward_kernels["_lstm_sequence_forward"] == layers
    assert backward_kernels["_lstm_sequence_backward"] == layers


@needs_cuda
def test_dropout_between_layers_on_cuda():
    """The masks come from tinyar's (host) generator: the same seed draws the same masks
    for the CPU and the GPU module."""
    cpu, gpu = _twins(LSTM, np.float64, 2, 3, num_layers=2, dropout=0.5)
    rng = np.random.default_rng(8)
    x, grad_out = _rand(rng, np.float64, 2, 3, 2), _rand(rng, np.float64, 2, 3, 3)
    tinyar.manual_seed(4)
    cpu_out, _ = cpu(x)
    tinyar.manual_seed(4)
    gpu_out, _ = gpu(_on_gpu(x))
    assert gpu._ws.dropped[0] is not None, "dropout did not run"
    _assert_same("output", gpu_out, cpu_out, np.float64)
    _assert_same("dx", gpu.backward(_on_gpu(grad_out))[0], cpu.backward(grad_out)[0],
                 np.float64)
    _assert_same_grads(gpu, cpu, np.float64)
