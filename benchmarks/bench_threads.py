"""Serial against threaded kernels, in one process: what sharing the cores with the
BLAS buys each part of the word LM training step.

    python benchmarks/bench_threads.py [--rounds 8] [--repeats 20]

Where MKL runs on GNU OpenMP (``pip install -e ".[mkl]"``), tinyar's kernels may
use every core between two matrix products (``tinyar/backend/cpu/threads.py``):
``threads.PARALLEL_KERNELS`` is then True. This script switches that flag off
and on, alternating for ``--rounds`` rounds so that the machine's drift hits
both alike, and prints the median of the per-round medians of each part of the
word LM step (V = 10,000, embedding 256, LSTM 256, batch 32, 35 steps; the
sizes of ``bench_word_lm.py``):

* the embedding + LSTM forward and backward (the recurrent time loop: one
  block of batch rows per thread, ``cpu/rnn.py``);
* the multi-level head, forward + backward (runs of class blocks per thread,
  ``cpu/multilevel.py``);
* ``zero_grad`` of all 5.7 M gradients after a sweep that evicts them from
  cache, as in a step (``zero_``, ``cpu/optim.py``);
* the whole multi-level training step, Adam included.

Beside NumPy's OpenBLAS the policy keeps kernels serial; forcing the flag on
there shows why (Numba's workqueue threads wake too slowly to pay).
"""
import argparse
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import machine  # noqa: E402
from lm_twins import batch, tinyar_lm, zipf_tokens  # noqa: E402

V, EMBED, HIDDEN, BATCH, STEPS, CLASSES = 10_000, 256, 256, 32, 35, 100


def parts():
    """{name: (step, times_itself)} for each timed part: a step that times itself
    returns its own time in seconds (so that its set-up is not counted)."""
    from tinyar.backend import cpu as B
    from tinyar.data.hierarchy import ClassHierarchy
    from tinyar.nn import LSTM, Embedding, MultiLevelSoftmax
    x, y = batch(V, BATCH, STEPS)
    rng = np.random.default_rng(0)
    embedding, lstm = Embedding(V, EMBED), LSTM(EMBED, HIDDEN, 1)
    grad_out = rng.standard_normal((BATCH, STEPS, HIDDEN)).astype(np.float32)

    def lstm_step():
        out, _ = lstm(embedding(x))
        lstm.zero_grad()
        embedding.zero_grad()
        embedding.backward(lstm.backward(grad_out)[0])

    h = rng.standard_normal((BATCH * STEPS, HIDDEN)).astype(np.float32)
    counts = np.bincount(zipf_tokens(V, 200_000, seed=1), minlength=V) + 1
    head = MultiLevelSoftmax(HIDDEN, ClassHierarchy.from_counts(counts, CLASSES))
    targets = y.reshape(-1)

    def head_step():
        head(h, targets)
        head.zero_grad()
        head.backward()

    model, whole_step = tinyar_lm(V, EMBED, HIDDEN, 1, "multilevel", x, y, classes=CLASSES)
    grad = model.flat_parameters().grad
    evict = np.ones(16_000_000, np.float32)  # 64 MB, more than the caches hold

    def zero_grad():
        evict[:] = 1.0
        start = time.perf_counter()
        B.zero_(grad)
        return time.perf_counter() - start

    return {"embedding + LSTM, fwd + bwd": (lstm_step, False),
            "multi-level head, fwd + bwd": (head_step, False),
            f"zero_grad of {grad.size:,} gradients (out of cache)": (zero_grad, True),
            "whole multi-level step": (whole_step, False)}


def timed(step, times_itself, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        inner = step()
        times.append(inner if times_itself else time.perf_counter() - start)
    return statistics.median(times) * 1e3


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    steps = parts()  # imports the CPU backend, which applies the thread policy
    from tinyar.backend.cpu import threads
    policy = threads.PARALLEL_KERNELS
    results = {name: {False: [], True: []} for name in steps}
    try:
        for flag in (False, True):  # compile both paths before timing
            threads.PARALLEL_KERNELS = flag
            for step, times_itself in steps.values():
                timed(step, times_itself, 3)
        for _ in range(args.rounds):
            for flag in (False, True):
                threads.PARALLEL_KERNELS = flag
                for name, (step, times_itself) in steps.items():
                    results[name][flag].append(timed(step, times_itself, args.repeats))
    finally:
        threads.PARALLEL_KERNELS = policy
    print(f"### serial against threaded kernels (word LM parts), {args.rounds} alternating "
          f"rounds\n\nmachine: {machine()}; the policy here: kernels "
          f"{'threaded' if policy else 'serial'} ({threads.THREADING_LAYER} layer)\n")
    print("| part | serial (ms) | threaded (ms) | threaded / serial |\n|---|---:|---:|---:|")
    for name, by_flag in results.items():
        serial, threaded = (statistics.median(by_flag[f]) for f in (False, True))
        print(f"| {name} | {serial:.3f} | {threaded:.3f} | {threaded / serial:.2f} |")


if __name__ == "__main__":
    main()
