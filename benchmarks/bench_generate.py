"""Generation speed at V = 10,000: tokens per second, multi-level vs flat head.

    python benchmarks/bench_generate.py [--tokens 300]

One token at a time (batch 1), LSTM 256 (1 layer), embedding 256: the
multi-level head samples a class, then a word inside it, O(H (C + |class|))
per token; the flat head computes all V logits, O(H V). PyTorch's flat
twin (same weights) samples with ``torch.multinomial``.
"""
import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import machine, torch_or_none  # noqa: E402
from lm_twins import batch, tinyar_lm  # noqa: E402

V, EMBED, HIDDEN = 10_000, 256, 256


def tokens_per_second(generate, tokens, repeats=3):
    generate(5)  # warm-up: compile, caches
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        generate(tokens)
        rates.append(tokens / (time.perf_counter() - start))
    return float(np.median(rates))


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tokens", type=int, default=300)
    args = parser.parse_args()
    x, y = batch(V, 2, 8)
    rows = []
    for head in ("multilevel", "flat"):
        model, _ = tinyar_lm(V, EMBED, HIDDEN, 1, head, x, y, classes=100)
        rng = np.random.default_rng(0)
        rate = tokens_per_second(lambda n: model.generate([1, 2, 3], n, rng=rng), args.tokens)
        rows.append((f"tinyar {head} head", rate))
        if head == "flat":
            flat_state = model.state_dict()
    torch = torch_or_none()
    if torch is not None:
        nn = torch.nn
        emb, rnn, dec = nn.Embedding(V, EMBED), nn.LSTM(EMBED, HIDDEN, batch_first=True), \
            nn.Linear(HIDDEN, V)
        emb.weight.data = torch.from_numpy(flat_state["embedding.weight"])
        dec.weight.data = torch.from_numpy(flat_state["decoder.weight"])
        dec.bias.data = torch.from_numpy(flat_state["decoder.bias"])

        @torch.no_grad()
        def torch_generate(n):
            token, state = torch.tensor([[1]]), None
            for _ in range(n):
                out, state = rnn(emb(token), state)
                p = torch.softmax(dec(out[:, -1]), dim=-1)
                token = torch.multinomial(p, 1)
        rows.append(("torch flat head", tokens_per_second(torch_generate, args.tokens)))
    base = dict(rows)["tinyar multilevel head"]
    print(f"### generation, V={V}, LSTM {HIDDEN}, batch 1\n\nmachine: {machine()}\n")
    print("| implementation | tokens / s | multi-level speed-up |\n|---|---:|---:|")
    for name, rate in rows:
        print(f"| {name} | {rate:,.0f} | {base / rate:.2f} |")


if __name__ == "__main__":
    main()
