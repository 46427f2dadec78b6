"""Attention, transformer blocks and the GPT stack on CUDA: the same numbers as on the CPU.

Each test builds a module on the CPU, moves a copy with the same weights to the GPU
(``.to("cuda")``) and runs both on the same inputs: outputs, every gradient and, for
generation, each step's output through the key/value cache must agree. Without a GPU these
run in numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``), hence the tiny shapes.
Dropout's masks come from a counter-based generator, so the same seed drops the same
attention weights and units on both devices.
"""
import numpy as np
import pytest

import tinyar
from tinyar.device import device_of
from tinyar.nn.attention import CausalSelfAttention, KVCache
from tinyar.nn.transformer import TransformerBlock, TransformerStack
from tests.backend.test_cuda import needs_cuda

TOL = {np.float32: dict(rtol=1e-5, atol=2e-6), np.float64: dict(rtol=1e-10, atol=1e-12)}


def _twins(make, dtype, seed=3):
    """A module with random weights on the CPU, and one with the same weights on the GPU."""
    cpu = make(dtype)
    rng = np.random.default_rng(seed)
    for p in cpu.parameters():
        p.data[...] = rng.standard_normal(p.shape) * 0.5
    gpu = make(dtype).to("cuda")
    gpu.load_state_dict(cpu.state_dict())
    cpu.zero_grad()
    gpu.zero_grad()
    return cpu, gpu


def _same(name, gpu, cpu, dtype):
    assert device_of(gpu) == "cuda", f"{name} is not on the GPU"
    np.testing.assert_allclose(tinyar.to_host(gpu), cpu, err_msg=name, **TOL[dtype])


def _forward_backward(cpu, gpu, x, dtype, unpack=lambda out: out, seed=0):
    tinyar.manual_seed(seed)
    y_cpu = unpack(cpu(x))
    tinyar.manual_seed(seed)
    y_gpu = unpack(gpu(tinyar.to_device(x, "cuda")))
    _same("output", y_gpu, y_cpu, dtype)
    g = np.random.default_rng(1).standard_normal(y_cpu.shape).astype(dtype)
    dx_cpu = unpack(cpu.backward(g))
    dx_gpu = unpack(gpu.backward(tinyar.to_device(g, "cuda")))
    _same("input gradient", dx_gpu, dx_cpu, dtype)
    for (name, p_cpu), (_, p_gpu) in zip(cpu.named_parameters(), gpu.named_parameters()):
        _same(f"{name}.grad", p_gpu.grad, p_cpu.grad, dtype)


def _x(dtype, *shape, seed=2):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


@needs_cuda
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("variant", ["plain", "flash", "no_bias", "dropout"])
def test_attention(variant, dtype):
    kwargs = {"plain": {}, "flash": dict(flash_above=0), "no_bias": dict(bias=False),
              "dropout": dict(dropout=0.4)}[variant]
    cpu, gpu = _twins(lambda dt: CausalSelfAttention(4, 2, dtype=dt, **kwargs), dtype)
    _forward_backward(cpu, gpu, _x(dtype, 2, 3, 4), dtype)
    assert gpu._flash == (variant == "flash")


@needs_cuda
def test_attention_cache_and_heat_map():
    dtype = np.float32
    cpu, gpu = _twins(lambda dt: CausalSelfAttention(4, 2, dtype=dt), dtype)
    cpu.eval(), gpu.eval()
    x = _x(dtype, 1, 3, 4)
    cache_cpu, cache_gpu = KVCache(), KVCache()
    for t in range(3):
        y_cpu, cache_cpu = cpu(x[:, t:t + 1], cache_cpu)
        y_gpu, cache_gpu = gpu(tinyar.to_device(x[:, t:t + 1], "cuda"), cache_gpu)
        _same(f"step {t}", y_gpu, y_cpu, dtype)
    _same("cached keys", cache_gpu.k, cache_cpu.k, dtype)
    gpu.keep_attention = cpu.keep_attention = True
    cpu(x), gpu(tinyar.to_device(x, "cuda"))
    assert isinstance(gpu.last_attention, np.ndarray)
    np.testing.assert_allclose(gpu.last_attention, cpu.last_attention, **TOL[dtype])


@needs_cuda
@pytest.mark.parametrize("activation", ["gelu", "gelu_tanh"])
@pytest.mark.parametrize("bias, dropout", [(True, 0.0), (False, 0.0), (True, 0.3)])
def test_block(activation, bias, dropout):
    dtype = np.float32
    cpu, gpu = _twins(lambda dt: TransformerBlock(4, 2, mlp_ratio=2, dropout=dropout,
                                                  activation=activation, bias=bias, dtype=dt),
                      dtype)
    _forward_backward(cpu, gpu, _x(dtype, 1, 3, 4), dtype)


@needs_cuda
@pytest.mark.parametrize("train", [True, False])
def test_stack(train):
    dtype = np.float32
    cpu, gpu = _twins(lambda dt: TransformerStack(4, 2, 2, context=4, mlp_ratio=1, dtype=dt),
                      dtype)
    cpu.train(train), gpu.train(train)
    _forward_backward(cpu, gpu, _x(dtype, 2, 3, 4), dtype, unpack=lambda out: out[0])


@needs_cuda
def test_stack_generation_through_the_cache_and_past_the_context():
    """A prompt, then one token at a time past context = 3 (the window slides)."""
    dtype = np.float32
    cpu, gpu = _twins(lambda dt: TransformerStack(4, 1, 2, context=3, mlp_ratio=1, dtype=dt),
                      dtype)
    cpu.eval(), gpu.eval()
    x = _x(dtype, 1, 5, 4)
    out_cpu, state_cpu = cpu(x[:, :2])
    out_gpu, state_gpu = gpu(tinyar.to_device(x[:, :2], "cuda"))
    _same("prompt", out_gpu, out_cpu, dtype)
    for t in range(2, 5):
        out_cpu, state_cpu = cpu(x[:, t:t + 1], state_cpu)
        out_gpu, state_gpu = gpu(tinyar.to_device(x[:, t:t + 1], "cuda"), state_gpu)
        _same(f"step {t}", out_gpu, out_cpu, dtype)
    assert state_gpu.length == 3


# --- launches -------------------------------------------------------------------------------
@needs_cuda
@pytest.mark.parametrize("flash", [False, True])
def test_gpt_step_launches_do_not_grow_with_the_context_or_the_batch(flash):
    """A GPT training step (forward, backward, AdamW) launches the same kernels at any
    sequence length and batch: attention's products run the (batch x heads) stack on the
    grid, and the flash path is one kernel per direction. ``benchmarks/bench_gpu.py gpt
    --launches-only`` counts nanoGPT's CPU configuration (benchmarks/RESULTS.md)."""
    from tinyar.backend.cuda import count_launches
    from tinyar.models import AutoregressiveLM
    from tinyar.optim import AdamW
    tinyar.manual_seed(0)
    model = AutoregressiveLM(7, 4, 4, 1, head="flat", tie_weights=True, backbone="transformer",
                             num_heads=2, context=4)
    for module in model.modules():
        if isinstance(module, CausalSelfAttention):
            module.flash_above = 0 if flash else None
    model.to("cuda")
    optimizer = AdamW(model.parameters(), lr=1e-3)
    counts = []
    for n, t in ((1, 2), (1, 2), (2, 4)):  # the first step may set buffers up
        ids = np.arange(n * (t + 1)).reshape(n, t + 1) % 7
        with count_launches() as launches:
            model.loss(ids[:, :-1], ids[:, 1:])
            model.zero_grad()
            model.backward()
            optimizer.step()
        counts.append((launches.count, dict(launches.by_kernel)))
    assert counts[1] == counts[2]
    kernels = counts[1][1]
    if flash:
        assert kernels["_forward"] == kernels["_backward"] == 1 and "_bmm" not in kernels
    else:
        assert kernels["_bmm"] == 6  # scores, values; and two products back through each
