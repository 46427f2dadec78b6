"""LeNet-like training step, batch 64, 1x28x28 inputs, SGD with momentum: tinyar vs PyTorch CPU.

    python benchmarks/bench_lenet.py [--repeats 100] [--profile] [--threads N]

The network: Conv2d(1, 32, 3), ReLU, MaxPool2d(2), Conv2d(32, 64, 3), ReLU,
MaxPool2d(2), Flatten, Linear(1600, 128), ReLU, Linear(128, 10) (and the same
with each convolution's ReLU fused into it, ``activation="relu"``); loss
cross-entropy; SGD(lr=0.01, momentum=0.9). One step = forward, loss,
backward (neither framework computes the gradient of the images), optimizer step, timed as the median over many steps after
warm-up, both frameworks in this process with the same weights and data.
The ratio column is tinyar's time over the other's: below 1.0 means tinyar
is faster. ``--profile`` adds the time of each tinyar layer's forward and
backward (summed over the steps), to see where a step goes. ``--threads N``
limits BLAS and torch to N threads (a steadier comparison on a busy machine).
"""
import argparse
import os
import sys
import time
from collections import defaultdict

if "--threads" in sys.argv:  # must be set before NumPy loads OpenBLAS
    _n = sys.argv[sys.argv.index("--threads") + 1]
    os.environ["OPENBLAS_NUM_THREADS"] = os.environ["OMP_NUM_THREADS"] = _n

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_conv import best_of_rounds  # noqa: E402
from common import table, torch_or_none  # noqa: E402

import tinyar  # noqa: E402
from tinyar import nn  # noqa: E402
from tinyar.nn.conv import Conv2d  # noqa: E402
from tinyar.nn.loss import CrossEntropyLoss  # noqa: E402
from tinyar.nn.pooling import MaxPool2d  # noqa: E402
from tinyar.optim import SGD  # noqa: E402

BATCH = 64


def tinyar_model(fused=False):
    """The network; ``fused``: each convolution's ReLU fused into it (``activation="relu"``:
    the same function and parameters, one pass less each way)."""
    if fused:
        return nn.Sequential(Conv2d(1, 32, 3, activation="relu"), MaxPool2d(2),
                             Conv2d(32, 64, 3, activation="relu"), MaxPool2d(2), nn.Flatten(),
                             nn.Linear(1600, 128), nn.ReLU(), nn.Linear(128, 10))
    return nn.Sequential(Conv2d(1, 32, 3), nn.ReLU(), MaxPool2d(2), Conv2d(32, 64, 3), nn.ReLU(),
                         MaxPool2d(2), nn.Flatten(), nn.Linear(1600, 128), nn.ReLU(),
                         nn.Linear(128, 10))


def tinyar_step(model, x, y):
    criterion = CrossEntropyLoss()
    optimizer = SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step():
        loss = criterion(model(x), y)
        model.zero_grad()
        model.backward(criterion.backward(), input_grad=False)  # x is data: no dL/dx
        optimizer.step()
        return loss
    return step


def torch_step(torch, state, x, y, device="cpu"):
    t = torch.nn
    model = t.Sequential(t.Conv2d(1, 32, 3), t.ReLU(), t.MaxPool2d(2), t.Conv2d(32, 64, 3),
                         t.ReLU(), t.MaxPool2d(2), t.Flatten(), t.Linear(1600, 128), t.ReLU(),
                         t.Linear(128, 10))
    model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    model.to(device)
    criterion = t.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    tx, ty = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)

    def step():
        optimizer.zero_grad()
        loss = criterion(model(tx), ty)
        loss.backward()
        optimizer.step()
        return loss
    return step


def profile(model, step, steps):
    """Wrap every layer's forward and backward with a timer; run ``steps`` steps."""
    totals = defaultdict(float)
    for i, layer in enumerate(model):
        for method in ("forward", "backward"):
            inner = getattr(layer, method)

            def timed(*args, _inner=inner, _key=f"{i} {type(layer).__name__}.{method}",
                      **kwargs):
                start = time.perf_counter()
                result = _inner(*args, **kwargs)
                totals[_key] += time.perf_counter() - start
                return result
            object.__setattr__(layer, method, timed)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    total = time.perf_counter() - start
    for i, layer in enumerate(model):
        for method in ("forward", "backward"):
            object.__delattr__(layer, method)
    print(f"\nper step ({steps} steps): {total / steps * 1e3:.2f} ms")
    for key, seconds in sorted(totals.items(), key=lambda kv: -kv[1]):
        print(f"  {key:<28} {seconds / steps * 1e3:7.3f} ms")
    rest = total - sum(totals.values())
    print(f"  {'loss, optimizer, glue':<28} {rest / steps * 1e3:7.3f} ms")


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=3,
                        help="alternate the frameworks this many times and keep each one's "
                             "best median (steadier on a shared machine)")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((BATCH, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, BATCH).astype(np.int64)

    tinyar.manual_seed(0)
    model = tinyar_model()
    state = model.state_dict()
    step = tinyar_step(model, x, y)
    fused = tinyar_model(fused=True)
    for p, q in zip(fused.parameters(), model.parameters()):  # the same weights
        p.data[:] = q.data
    calls = [("tinyar", step), ("tinyar, conv + ReLU fused", tinyar_step(fused, x, y))]
    torch = torch_or_none()
    if torch is not None:
        if args.threads:
            torch.set_num_threads(args.threads)
        calls.append(("torch", torch_step(torch, state, x, y)))
    rows = best_of_rounds(calls, args)
    print(table(f"LeNet-like training step, batch {BATCH}, 1x28x28, SGD momentum 0.9", rows))
    if args.profile:
        profile(model, step, args.repeats)
        profile(fused, dict(calls)["tinyar, conv + ReLU fused"], args.repeats)


if __name__ == "__main__":
    main()
