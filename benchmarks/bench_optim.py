"""Adam.step alone on the 784-512-512-10 MLP's parameters: tinyar vs torch.optim.Adam.

    python benchmarks/bench_optim.py [--repeats 200] [--torch-threads N]

669,706 float32 parameters, fixed random gradients. tinyar's step is one
kernel call over the flat parameter buffer (one thread below
``PARALLEL_MIN_SIZE`` elements, which this buffer is; the "threads" row
forces the threaded kernel). torch runs its default implementation (on the
CPU: a Python loop over the 6 tensors, ``foreach=None``), the multi-tensor
one (``foreach=True``) and the fused C++ kernel (``fused=True``), in this
same process. The ratio column is tinyar's time over the other's: below 1.0
means tinyar is faster.
"""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import median_ms, table, torch_or_none  # noqa: E402

import tinyar  # noqa: E402
from tinyar import nn  # noqa: E402
from tinyar.backend.cpu import optim as cpu_optim  # noqa: E402
from tinyar.optim import Adam  # noqa: E402

SIZES = (784, 512, 512, 10)


def tinyar_adam(rng):
    tinyar.manual_seed(0)
    layers = [nn.Linear(a, b) for a, b in zip(SIZES[:-1], SIZES[1:])]
    model = nn.Sequential(*layers)
    for p in model.parameters():
        p.grad[...] = rng.standard_normal(p.shape).astype(np.float32)
    return model, Adam(model.parameters(), lr=1e-3)


def torch_adam(torch, model, **kwargs):
    params = []
    for p in model.parameters():
        t = torch.nn.Parameter(torch.from_numpy(np.array(p.data)))
        t.grad = torch.from_numpy(np.array(p.grad))
        params.append(t)
    return torch.optim.Adam(params, lr=1e-3, **kwargs)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--torch-threads", type=int, default=None,
                        help="torch.set_num_threads(N) first (default: torch's own choice)")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    model, optimizer = tinyar_adam(rng)
    n = model.num_parameters()
    time = dict(warmup=20, repeats=args.repeats)

    rows = [("tinyar", median_ms(optimizer.step, **time))]
    threshold = cpu_optim.PARALLEL_MIN_SIZE
    cpu_optim.PARALLEL_MIN_SIZE = 0
    rows.append(("tinyar (threaded kernel)", median_ms(optimizer.step, **time)))
    cpu_optim.PARALLEL_MIN_SIZE = threshold

    torch = torch_or_none()
    if torch is not None:
        if args.torch_threads:
            torch.set_num_threads(args.torch_threads)
        for name, kwargs in [("torch Adam (default, foreach=None)", {}),
                             ("torch Adam (foreach=True)", dict(foreach=True)),
                             ("torch Adam (fused=True)", dict(fused=True))]:
            theirs = torch_adam(torch, model, **kwargs)
            rows.append((name, median_ms(theirs.step, **time)))
    print(table(f"Adam.step over {n:,} float32 parameters (784-512-512-10 MLP), "
                f"median of {args.repeats} steps", rows))


if __name__ == "__main__":
    main()
