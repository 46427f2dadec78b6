"""Word-level LM training step: V = 10,000, embedding 256, 1-layer LSTM 256,
batch 32, 35 time steps, Adam. tinyar's multi-level softmax against PyTorch's
full softmax and ``AdaptiveLogSoftmaxWithLoss``; tinyar's flat softmax against
PyTorch's flat softmax.

    python benchmarks/bench_word_lm.py [--repeats 30]

Tokens are drawn with Zipf frequencies (like words); the multi-level head's
classes come from sqrt-frequency binning of those counts (C = 100 by default).
The adaptive softmax uses cutoffs [1000, 5000] (head of 1,000 words plus two
tail clusters, div_value 4), a common setting for a 10k vocabulary.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import median_ms, table, torch_or_none  # noqa: E402
from lm_twins import batch, tinyar_lm, torch_lm  # noqa: E402

V, EMBED, HIDDEN, LAYERS, BATCH, STEPS = 10_000, 256, 256, 1, 32, 35


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--classes", type=int, default=100)
    args = parser.parse_args()
    x, y = batch(V, BATCH, STEPS)
    rows = []
    _, ml_step = tinyar_lm(V, EMBED, HIDDEN, LAYERS, "multilevel", x, y, classes=args.classes)
    rows.append(("tinyar multi-level softmax", median_ms(ml_step, args.warmup, args.repeats)))
    flat_model, flat_step = tinyar_lm(V, EMBED, HIDDEN, LAYERS, "flat", x, y)
    rows.append(("tinyar flat softmax", median_ms(flat_step, args.warmup, args.repeats)))
    torch = torch_or_none()
    if torch is not None:
        _, t_flat = torch_lm(torch, V, EMBED, HIDDEN, LAYERS, "flat", x, y,
                             state=flat_model.state_dict())
        rows.append(("torch full softmax", median_ms(t_flat, args.warmup, args.repeats)))
        _, t_adaptive = torch_lm(torch, V, EMBED, HIDDEN, LAYERS, "adaptive", x, y,
                                 cutoffs=[1000, 5000])
        rows.append(("torch AdaptiveLogSoftmaxWithLoss", median_ms(t_adaptive, args.warmup,
                                                                   args.repeats)))
    print(table(f"word LM training step: V={V}, embedding {EMBED}, LSTM {HIDDEN}x{LAYERS}, "
                f"batch {BATCH}, {STEPS} steps, Adam", rows,
                reference="tinyar multi-level softmax"))
    if torch is not None:
        d = dict(rows)
        print(f"\ntinyar flat / torch full softmax: "
              f"{d['tinyar flat softmax'] / d['torch full softmax']:.2f}")


if __name__ == "__main__":
    main()
