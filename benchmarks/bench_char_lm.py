"""Character-level LM training step: vocabulary 65, embedding 64, 2-layer LSTM
256, batch 32, 128 time steps, Adam; tinyar against PyTorch CPU (same weights).

    python benchmarks/bench_char_lm.py [--repeats 20] [--batch 32]

Both sides use a flat softmax head (a Linear to 65 logits and cross-entropy),
so the comparison is the same model; tinyar's multi-level head is timed too.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import median_ms, table, torch_or_none  # noqa: E402
from lm_twins import batch, tinyar_lm, torch_lm  # noqa: E402

V, EMBED, HIDDEN, LAYERS, STEPS = 65, 64, 256, 2, 128


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    x, y = batch(V, args.batch, STEPS)
    flat_model, flat_step = tinyar_lm(V, EMBED, HIDDEN, LAYERS, "flat", x, y)
    rows = [("tinyar", median_ms(flat_step, args.warmup, args.repeats))]
    _, ml_step = tinyar_lm(V, EMBED, HIDDEN, LAYERS, "multilevel", x, y)
    rows.append(("tinyar, multi-level head", median_ms(ml_step, args.warmup, args.repeats)))
    torch = torch_or_none()
    if torch is not None:
        _, t_step = torch_lm(torch, V, EMBED, HIDDEN, LAYERS, "flat", x, y,
                             state=flat_model.state_dict())
        rows.append(("torch", median_ms(t_step, args.warmup, args.repeats)))
    print(table(f"char LM training step: V={V}, embedding {EMBED}, LSTM {HIDDEN}x{LAYERS}, "
                f"batch {args.batch}, {STEPS} steps, Adam", rows))


if __name__ == "__main__":
    main()
