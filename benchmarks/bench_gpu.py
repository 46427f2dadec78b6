"""GPU benchmarks (issue 5): tinyar's CUDA backend against PyTorch CUDA, same process.

    python benchmarks/bench_gpu.py [sgemm|char|word|lenet|gpt|all] [--repeats 30]
    NUMBA_ENABLE_CUDASIM=1 python benchmarks/bench_gpu.py all --launches-only --scale 0.03

Workloads (issue 5, item 6):

* ``sgemm``: C = A B, 4096 x 4096 x 4096 float32; cuBLAS with TF32 off.
* ``char``: the char LM of ``bench_char_lm.py`` (V 65, embedding 64, 2-layer
  LSTM 256, 128 steps, Adam) at batch 256; PyTorch with cuDNN's LSTM.
* ``word``: the word LM of ``bench_word_lm.py`` (V 10,000, embedding 256, LSTM
  256, 35 steps, Adam) at batch 256, tinyar's multi-level softmax against
  PyTorch's full softmax.
* ``lenet``: the LeNet-like step of ``bench_lenet.py`` at batch 512.
* ``gpt``: the GPT step of ``bench_gpt.py`` in nanoGPT's CPU configuration (4
  layers, 4 heads, width 128, context 64, batch 12, V 65, tied head, AdamW,
  clipping at 1.0), and the same GPT with every attention on the flash path
  (``flash_above=0``: one kernel per direction instead of the score product,
  causal softmax and value product); PyTorch's twin of ``gpt_twins.py``.

Every training workload also reports the **kernel launches per step** of
tinyar's CUDA backend (``tinyar.backend.cuda.count_launches``): at ~30 us a
launch on an H100, launches are what a small model's GPU step mostly costs.
Launch counts do not depend on the GPU, so ``--launches-only`` counts them
without timing, also under numba's simulator (where ``--scale`` shrinks the
batch and widths to make the simulated step bearable; counts that do not
depend on sizes are the same at any scale, and the output says which
sizes were used).

Times: median of ``--repeats`` steps after warm-up, each step ended by a
device synchronisation (a step's loss comes back to the host anyway).
"""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import median_ms, table, torch_or_none  # noqa: E402

import tinyar  # noqa: E402
from tinyar.backend import get_backend  # noqa: E402


def _scaled(value, scale, minimum=1):
    return max(minimum, int(round(value * scale)))


def _sync():
    from numba import cuda
    cuda.synchronize()


def _torch_cuda(torch):
    return torch is not None and torch.cuda.is_available()


def count_per_step(step, steps=2):
    """Kernel launches of one step (the last of ``steps``: the first may set up buffers)."""
    C = get_backend("cuda")
    counts = []
    for _ in range(steps):
        with C.count_launches() as launches:
            step()
        counts.append((launches.count, dict(launches.by_kernel)))
    return counts[-1]


# --- the workloads ------------------------------------------------------------------
def sgemm(args, torch):
    n = _scaled(4096, args.scale, 8)
    C = get_backend("cuda")
    rng = np.random.default_rng(0)
    a = C.asarray(rng.standard_normal((n, n)).astype(np.float32))
    b = C.asarray(rng.standard_normal((n, n)).astype(np.float32))
    out = C.empty((n, n), np.float32)

    def ours():
        C.matmul(a, b, out=out)
        _sync()
    if args.launches_only:
        return [], {"sgemm": count_per_step(ours)}
    rows = [("tinyar", median_ms(ours, args.warmup, args.repeats))]
    if _torch_cuda(torch):
        torch.backends.cuda.matmul.allow_tf32 = False
        ta, tb = torch.randn(n, n, device="cuda"), torch.randn(n, n, device="cuda")
        tout = torch.empty(n, n, device="cuda")

        def theirs():
            torch.mm(ta, tb, out=tout)
            torch.cuda.synchronize()
        rows.append(("torch (cuBLAS, TF32 off)", median_ms(theirs, args.warmup, args.repeats)))
    flops = 2 * n ** 3
    print("\n".join(f"{name}: {flops / ms / 1e9:.1f} TFLOP/s" for name, ms in rows))
    return [(f"SGEMM {n}^3 float32", rows)], {}


def _lm(args, torch, vocab, embed, hidden, layers, steps, head, classes=None):
    from lm_twins import batch, tinyar_lm, torch_lm
    size = _scaled(256, args.scale)
    hidden, embed = _scaled(hidden, args.scale, 4), _scaled(embed, args.scale, 4)
    steps = _scaled(steps, args.scale, 2) if args.scale < 1 else steps
    x, y = batch(vocab, size, steps)
    model, step = tinyar_lm(vocab, embed, hidden, layers, head, x, y,
                            classes=classes and _scaled(classes, args.scale, 2))
    model.to("cuda")
    from tinyar.optim import Adam
    optimizer = Adam(model.parameters(), lr=1e-3)

    def ours():
        loss, _ = model.loss(x, y)
        model.zero_grad()
        model.backward()
        optimizer.step()
        _sync()
    del step
    sizes = f"batch {size}, embedding {embed}, LSTM {hidden}x{layers}, {steps} steps"
    if args.launches_only:
        return sizes, count_per_step(ours)
    rows = [("tinyar", median_ms(ours, args.warmup, args.repeats))]
    if _torch_cuda(torch):
        torch_head = "flat"
        t_model, t_step = torch_lm(torch, vocab, embed, hidden, layers, torch_head, x, y)
        t_model.cuda()
        tx, ty = torch.from_numpy(x).cuda(), torch.from_numpy(y).cuda()
        t_optimizer = torch.optim.Adam(t_model.parameters(), lr=1e-3)

        def theirs():
            t_optimizer.zero_grad()
            t_model(tx, ty).backward()
            t_optimizer.step()
            torch.cuda.synchronize()
        rows.append(("torch (cuDNN LSTM, full softmax)", median_ms(theirs, args.warmup,
                                                                    args.repeats)))
    return sizes, rows


def char(args, torch):
    sizes, result = _lm(args, torch, 65, 64, 256, 2, 128, "flat")
    if args.launches_only:
        return [], {f"char LM ({sizes})": result}
    return [(f"char LM training step, V=65, {sizes}, Adam", result)], {}


def word(args, torch):
    sizes, result = _lm(args, torch, 10_000, 256, 256, 1, 35, "multilevel", classes=100)
    if args.launches_only:
        return [], {f"word LM, multi-level head ({sizes})": result}
    return [(f"word LM training step, V=10000, {sizes}, Adam; tinyar multi-level softmax",
             result)], {}


def lenet(args, torch):
    from bench_lenet import tinyar_model, tinyar_step, torch_step
    size = _scaled(512, args.scale)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((size, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, size).astype(np.int64)
    tinyar.manual_seed(0)
    model = tinyar_model()
    state = model.state_dict()
    model.to("cuda")
    inner = tinyar_step(model, tinyar.to_device(x, "cuda"), y)

    def ours():
        inner()
        _sync()
    if args.launches_only:
        return [], {f"LeNet (batch {size})": count_per_step(ours)}
    rows = [("tinyar", median_ms(ours, args.warmup, args.repeats))]
    if _torch_cuda(torch):
        t_step = torch_step(torch, state, x, y, device="cuda")

        def theirs():
            t_step()
            torch.cuda.synchronize()
        rows.append(("torch (cuDNN)", median_ms(theirs, args.warmup, args.repeats)))
    return [(f"LeNet-like training step, batch {size}, SGD momentum", rows)], {}


def gpt(args, torch):
    from gpt_twins import tinyar_gpt, tinyar_step, torch_gpt, torch_step
    from tinyar.nn import CausalSelfAttention
    heads, layers, vocab = 4, 4, 65
    size, context = _scaled(12, args.scale), _scaled(64, args.scale, 2)
    width = heads * _scaled(32, args.scale, 1)
    rng = np.random.default_rng(0)
    ids = rng.integers(0, vocab, (size, context + 1))
    x, y = ids[:, :-1].copy(), ids[:, 1:].copy()
    sizes = f"batch {size}, width {width}, context {context}, {layers} layers, {heads} heads"
    tables, launches = [], {}
    for flash in (False, True):
        model = tinyar_gpt(vocab, width, layers, heads, context)
        state = model.state_dict()
        for module in model.modules():
            if flash and isinstance(module, CausalSelfAttention):
                module.flash_above = 0
        model.to("cuda")
        inner = tinyar_step(model, x, y)

        def ours():
            inner()
            _sync()
        title = f"GPT ({sizes}{', flash attention' if flash else ''})"
        if args.launches_only:
            launches[title] = count_per_step(ours)
            continue
        rows = [("tinyar", median_ms(ours, args.warmup, args.repeats))]
        if _torch_cuda(torch) and not flash:
            twin = torch_gpt(torch, vocab, width, layers, heads, context, state).cuda()
            t_inner = torch_step(torch, twin, x, y, device="cuda")

            def theirs():
                t_inner()
                torch.cuda.synchronize()
            rows.append(("torch (scaled_dot_product_attention)",
                         median_ms(theirs, args.warmup, args.repeats)))
        tables.append((f"{title} training step, AdamW", rows))
    return tables, launches


WORKLOADS = {"sgemm": sgemm, "char": char, "word": word, "lenet": lenet, "gpt": gpt}


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workload", nargs="?", default="all", choices=[*WORKLOADS, "all"])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--launches-only", action="store_true",
                        help="count kernel launches per step, no timing (works simulated)")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="shrink batch and widths by this factor (for the simulator)")
    args = parser.parse_args()
    C = get_backend("cuda")
    if not C.is_available():
        sys.exit("bench_gpu: no CUDA GPU here (set NUMBA_ENABLE_CUDASIM=1 with "
                 "--launches-only to count launches in the simulator)")
    if C.SIMULATOR and not args.launches_only:
        sys.exit("bench_gpu: times under the simulator mean nothing; use --launches-only")
    torch = None if args.launches_only else torch_or_none()
    names = list(WORKLOADS) if args.workload == "all" else [args.workload]
    for name in names:
        tables, launches = WORKLOADS[name](args, torch)
        for title, rows in tables:
            print(table(title, rows) + "\n")
        for title, (count, by_kernel) in launches.items():
            top = ", ".join(f"{k} {v}" for k, v in sorted(by_kernel.items(),
                                                           key=lambda kv: -kv[1])[:8])
            print(f"launches per step, {title}: {count}  ({top})")


if __name__ == "__main__":
    main()
