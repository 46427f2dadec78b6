"""Training step of a stacked LSTM: tinyar vs torch.nn.LSTM (CPU, same process).

The workload is the char-level language model's recurrent core: 2 layers of
256 units over batch 32 x 128 time steps, input size 64 (an embedding). A
step is forward + backward with a fixed random upstream gradient dL/d(output)
(the head and the loss are left out: they are not recurrent), with dL/dx
computed too, as below an embedding it would be::

    python benchmarks/bench_lstm.py [--cell lstm|gru|rnn --batch 32 --steps 128 ...]

Prints the median of ``--repeats`` timed steps after ``--warmup`` untimed
ones, taken in ``--rounds`` alternating blocks per library.

What bounds it: per layer and step one (N, H) x (H, 4H) product forward and
one (N, 4H) x (4H, H) backward, 2 * 2 * 128 = 512 thin BLAS calls, ~45 % of
the time; the big input and weight-gradient products over all T*N rows
another ~40 %; the fused gate kernels most of the rest. See
``tinyar/backend/cpu/rnn.py`` for the design. The machine's other load
shifts both libraries' times; compare figures from one run.
"""
import argparse
import os
import platform
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from tinyar.nn.recurrent import GRU, LSTM, RNN  # noqa: E402

CELLS = {"lstm": LSTM, "gru": GRU, "rnn": RNN}


def timed(steps, warmup, repeats, rounds):
    """Median (forward, backward, step) seconds of each ``steps[name]()`` (which returns its
    (forward, backward) seconds). The timed steps are split into ``rounds`` blocks taken in
    turn, so that a change in the machine's load affects every contestant alike. Each block
    starts after a pause and an untimed step: the BLAS threads of one library spin for a
    while after their last call and would slow the other down."""
    for step in steps.values():
        for _ in range(warmup):
            step()
    times = {name: [] for name in steps}
    per_round = -(-repeats // rounds)
    for _ in range(rounds):
        for name, step in steps.items():
            time.sleep(0.5)
            step()
            times[name] += [step() for _ in range(per_round)]
    result = {}
    for name, t in times.items():
        t = np.array(t)
        result[name] = (np.median(t[:, 0]), np.median(t[:, 1]), np.median(t.sum(axis=1)))
    return result


def tinyar_step(args, x, grad):
    lstm = CELLS[args.cell](args.input, args.hidden, num_layers=args.layers)

    def step():
        lstm.zero_grad()
        t0 = time.perf_counter()
        lstm(x)
        t1 = time.perf_counter()
        lstm.backward(grad)
        return t1 - t0, time.perf_counter() - t1
    return step


def torch_step(args, x, grad):
    import torch
    cls = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}[args.cell]
    lstm = cls(args.input, args.hidden, num_layers=args.layers, batch_first=True)
    tx = torch.from_numpy(x).requires_grad_(True)
    tg = torch.from_numpy(grad)

    def step():
        lstm.zero_grad(set_to_none=True)
        tx.grad = None
        t0 = time.perf_counter()
        out, _ = lstm(tx)
        t1 = time.perf_counter()
        out.backward(tg)
        return t1 - t0, time.perf_counter() - t1
    return step


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cell", choices=sorted(CELLS), default="lstm")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=128, help="time steps T")
    parser.add_argument("--input", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=30, help="timed training steps")
    parser.add_argument("--rounds", type=int, default=3,
                        help="alternate the contestants in this many blocks")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--no-torch", action="store_true")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.batch, args.steps, args.input)).astype(np.float32)
    grad = rng.standard_normal((args.batch, args.steps, args.hidden)).astype(np.float32)

    steps = {"tinyar": tinyar_step(args, x, grad)}
    if not args.no_torch:
        try:
            import torch
        except ImportError:
            print("torch is not installed: tinyar only")
        else:
            name = f"torch {torch.__version__} ({torch.get_num_threads()} threads)"
            steps[name] = torch_step(args, x, grad)
    rows = list(timed(steps, args.warmup, args.repeats, args.rounds).items())

    print(f"{args.cell.upper()} training step: {args.layers} x {args.hidden} units, "
          f"input {args.input}, "
          f"batch {args.batch}, T {args.steps}, float32; median of {args.repeats} steps "
          f"({platform.processor() or platform.machine()}, {os.cpu_count()} CPUs)")
    print(f"{'':<34}{'forward ms':>12}{'backward ms':>13}{'step ms':>10}{'ratio':>8}")
    base = rows[-1][1][2]
    for name, (fwd, bwd, total) in rows:
        print(f"{name:<34}{fwd * 1e3:>12.1f}{bwd * 1e3:>13.1f}{total * 1e3:>10.1f}"
              f"{total / base:>8.2f}")


if __name__ == "__main__":
    main()
