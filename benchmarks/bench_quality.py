"""Quality on Tiny Shakespeare: what the models learn, and at what cost.

    python benchmarks/bench_quality.py char [--seconds 300]
    python benchmarks/bench_quality.py word [--epochs 2]

``char``: a 2-layer LSTM 256 character model (embedding 64, batch 32, BPTT 128,
Adam 3e-3 with cosine decay, clip 1) trained for a wall-time budget; prints
the validation loss (nats and bits per character) against wall time.

``word``: word-level models (vocabulary: the 10,000 most frequent words, the
rest <unk>; embedding 256, 1-layer LSTM 256, batch 32, BPTT 35, Adam 3e-3)
with the multi-level softmax for several numbers of classes and the flat
softmax last, each trained for the same number of epochs: validation
perplexity and time per epoch, in the manner of Mikolov et al. (2011),
"Extensions of recurrent neural network language model", Table 3.

The data is ``../shared/data/tinyshakespeare.txt`` when present (the copy
beside the repository), else ``tinyar.data.load_corpus("shakespeare")``,
which downloads and verifies it once.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import machine  # noqa: E402

from tinyar.train.lm import LMConfig, train_lm  # noqa: E402

SHARED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data",
                      "tinyshakespeare.txt")


def data_source():
    return os.path.abspath(SHARED) if os.path.exists(SHARED) else "shakespeare"


def history(run):
    import json
    with open(os.path.join(run, "log.json")) as f:
        return json.load(f)["history"]


def char_quality(seconds, out):
    # a wall-time budget with a constant learning rate after warm-up
    config = LMConfig(data=data_source(), max_chars=2_000_000, level="char", embed=64,
                      hidden=256, layers=2, head="flat", batch=32, bptt=128, lr=3e-3,
                      clip=1.0, warmup=50, eval_every=50, eval_tokens=60_000,
                      sample_every=10**9, checkpoint_every=10**9, record_every=0,
                      out=os.path.join(out, "char"))
    config.steps, config.max_seconds, config.schedule = 10**6, seconds, "constant"
    train_lm(config, quiet=True)
    rows = [(r["seconds"], r["step"], r["val_loss"], r["val_bits"]) for r in history(config.out)
            if "val_loss" in r]
    print(f"### Tiny Shakespeare, characters: 2-layer LSTM 256, validation loss against wall "
          f"time\n\nmachine: {machine()}\n")
    print("| wall time (s) | step | validation nats/char | bits/char |\n|---:|---:|---:|---:|")
    for seconds_, step, nats, bits in rows:
        print(f"| {seconds_:.0f} | {step} | {nats:.3f} | {bits:.3f} |")


def word_quality(epochs, classes_list, out):
    print(f"### Tiny Shakespeare, words (V = 10,000): classes against validation perplexity "
          f"and time per epoch ({epochs} epochs each)\n\nmachine: {machine()}\n")
    print("| head | classes | validation perplexity | seconds per epoch |\n|---|---:|---:|---:|")
    for classes in list(classes_list) + ["flat"]:
        config = LMConfig(data=data_source(), level="word", vocab=10_000, embed=256, hidden=256,
                          layers=1, head="flat" if classes == "flat" else "multilevel",
                          classes=0 if classes == "flat" else int(classes), epochs=epochs,
                          batch=32, bptt=35, lr=3e-3, clip=1.0, warmup=50, eval_every=10**9,
                          eval_tokens=100_000, sample_every=10**9, checkpoint_every=10**9,
                          record_every=0, out=os.path.join(out, f"word-{classes}"))
        train_lm(config, quiet=True)
        h = history(config.out)
        seconds_per_epoch = h[-1]["seconds"] / epochs
        print(f"| {'flat softmax' if classes == 'flat' else 'multi-level'} | "
              f"{'-' if classes == 'flat' else classes} | {h[-1]['val_ppl']:.1f} | "
              f"{seconds_per_epoch:.1f} |", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["char", "word"])
    parser.add_argument("--seconds", type=float, default=300)
    parser.add_argument("--epochs", type=float, default=2)
    parser.add_argument("--classes", type=int, nargs="+", default=[30, 100, 300, 1000])
    parser.add_argument("--out", default=os.path.join("runs", "bench-quality"))
    args = parser.parse_args()
    if args.what == "char":
        char_quality(args.seconds, args.out)
    else:
        word_quality(args.epochs, args.classes, args.out)


if __name__ == "__main__":
    main()
