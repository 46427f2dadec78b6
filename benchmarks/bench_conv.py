"""Conv2d forward + backward at three sizes: tinyar vs PyTorch CPU.

    python benchmarks/bench_conv.py [--repeats 100] [--threads N]

Sizes (3x3 kernels, no padding): batch 64, 1 -> 32 channels, 28x28 (a first
layer: tinyar multiplies per sample); batch 64, 32 -> 64, 13x13 and batch 8,
32 -> 64, 32x32 (one product for the whole batch). One call = forward and
backward with a fixed upstream gradient, including dL/dx (the input requires
grad in torch too, so both do the same work), timed as the median over many
calls after warm-up, both frameworks in this process with the same weights.
The ratio column is tinyar's time over the other's: below 1.0 means tinyar
is faster. ``--threads N`` limits BLAS and torch to N threads.
"""
import argparse
import os
import sys

if "--threads" in sys.argv:  # must be set before NumPy loads OpenBLAS
    _n = sys.argv[sys.argv.index("--threads") + 1]
    os.environ["OPENBLAS_NUM_THREADS"] = os.environ["OMP_NUM_THREADS"] = _n

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import median_ms, table, torch_or_none  # noqa: E402

import tinyar  # noqa: E402
from tinyar.nn.conv import Conv2d  # noqa: E402

SIZES = [(64, 1, 32, 28), (64, 32, 64, 13), (8, 32, 64, 32)]  # batch, C_in, C_out, H = W


def tinyar_call(layer, x, g):
    def call():
        layer(x)
        return layer.backward(g)
    return call


def torch_call(torch, state, x, g):
    layer = torch.nn.Conv2d(state["weight"].shape[1], state["weight"].shape[0], 3)
    layer.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    tx = torch.from_numpy(x).requires_grad_(True)
    tg = torch.from_numpy(g)

    def call():
        layer.zero_grad(set_to_none=True)
        tx.grad = None
        layer(tx).backward(tg)
        return tx.grad
    return call


def best_of_rounds(calls, args):
    """[(name, ms)]: each call's best median over ``args.rounds`` alternating rounds."""
    best = {name: float("inf") for name, _ in calls}
    for _ in range(args.rounds):
        for name, call in calls:
            best[name] = min(best[name], median_ms(call, args.warmup, args.repeats))
    return [(name, best[name]) for name, _ in calls]


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=3,
                        help="alternate the frameworks this many times and keep each one's "
                             "best median (steadier on a shared machine)")
    args = parser.parse_args()
    torch = torch_or_none()
    if torch is not None and args.threads:
        torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    for batch, c_in, c_out, size in SIZES:
        tinyar.manual_seed(0)
        layer = Conv2d(c_in, c_out, 3)
        x = rng.standard_normal((batch, c_in, size, size)).astype(np.float32)
        g = rng.standard_normal((batch, c_out, size - 2, size - 2)).astype(np.float32)
        calls = [("tinyar", tinyar_call(layer, x, g))]
        if torch is not None:
            calls.append(("torch", torch_call(torch, layer.state_dict(), x, g)))
        rows = best_of_rounds(calls, args)
        path = "per-sample products" if layer._per_sample() else "one product for the batch"
        print(table(f"Conv2d {c_in} -> {c_out}, 3x3, batch {batch}, {size}x{size}, forward + "
                    f"backward ({path})", rows))
        print()


if __name__ == "__main__":
    main()
