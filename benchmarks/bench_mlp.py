"""MLP training step, 784-512-512-10, batch 128, Adam: tinyar vs PyTorch CPU.

    python benchmarks/bench_mlp.py [--repeats 200]

One step = forward, cross-entropy, backward, optimizer step, timed as the
median over many steps after warm-up, both frameworks in this process with
the same weights and data. The ratio column is tinyar's time over the
other's: below 1.0 means tinyar is faster.
"""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import median_ms, table, torch_or_none  # noqa: E402

import tinyar  # noqa: E402
from tinyar import nn  # noqa: E402
from tinyar.nn.loss import CrossEntropyLoss  # noqa: E402
from tinyar.optim import Adam  # noqa: E402

SIZES = (784, 512, 512, 10)
BATCH = 128


def tinyar_step(x, y):
    tinyar.manual_seed(0)
    model = nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(),
                          nn.Linear(512, 10))
    criterion = CrossEntropyLoss()
    optimizer = Adam(model.parameters(), lr=1e-3)

    def step():
        loss = criterion(model(x), y)
        model.zero_grad()
        model.backward(criterion.backward(), input_grad=False)
        optimizer.step()
        return loss
    return model, step


def torch_step(torch, state, x, y, **adam_kwargs):
    model = torch.nn.Sequential(torch.nn.Linear(784, 512), torch.nn.ReLU(),
                                torch.nn.Linear(512, 512), torch.nn.ReLU(),
                                torch.nn.Linear(512, 10))
    model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    criterion = torch.nn.CrossEntropyLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, **adam_kwargs)
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)

    def step():
        optimizer.zero_grad()
        loss = criterion(model(tx), ty)
        loss.backward()
        optimizer.step()
        return loss
    return step


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((BATCH, 784)).astype(np.float32)
    y = rng.integers(0, 10, BATCH).astype(np.int64)

    model, step = tinyar_step(x, y)
    state = model.state_dict()
    rows = [("tinyar", median_ms(step, args.warmup, args.repeats))]
    torch = torch_or_none()
    if torch is not None:
        rows.append(("torch (Adam default)", median_ms(torch_step(torch, state, x, y),
                                                       args.warmup, args.repeats)))
        rows.append(("torch (Adam fused=True)", median_ms(
            torch_step(torch, state, x, y, fused=True), args.warmup, args.repeats)))
    print(table(f"MLP 784-512-512-10 training step, batch {BATCH}, Adam", rows))


if __name__ == "__main__":
    main()
