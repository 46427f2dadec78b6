"""Quality on Tiny Shakespeare: what the models learn, and at what cost.

    python benchmarks/bench_quality.py char [--seconds 300]
    python benchmarks/bench_quality.py word [--epochs 2]
    python benchmarks/bench_quality.py gpt [--seconds 300]

``char``: a 2-layer LSTM 256 character model (embedding 64, batch 32, BPTT 128,
Adam 3e-3 with cosine decay, clip 1) trained for a wall-time budget; prints
the validation loss (nats and bits per character) against wall time.

``word``: word-level models (vocabulary: the 10,000 most frequent words, the
rest <unk>; embedding 256, 1-layer LSTM 256, batch 32, BPTT 35, Adam 3e-3)
with the multi-level softmax for several numbers of classes and the flat
softmax last, each trained for the same number of epochs: validation
perplexity and time per epoch, in the manner of Mikolov et al. (2011),
"Extensions of recurrent neural network language model", Table 3.

``gpt``: validation nats/char after the same wall time for tinyar's GPT in
nanoGPT's CPU configuration (4 layers, 4 heads, width 128, context 64, batch
12, AdamW 1e-3, weight decay 0.1, clip 1, tied head), for
tinyar's default LSTM (the ``char`` run) and for the same GPT in PyTorch, fed
the same batches in the same order (tinyar's stream batcher) and evaluated on
the same windows: the last 10 % of the characters, as nanoGPT splits them.
nanoGPT's README reports 1.88 after 2,000 steps of this configuration.

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


GPT = dict(layers=4, heads=4, hidden=128, context=64, batch=12, lr=1e-3)


def gpt_config(out, seconds):
    config = LMConfig(data=data_source(), max_chars=2_000_000, level="char",
                      backbone="transformer", heads=GPT["heads"], context=GPT["context"],
                      layers=GPT["layers"], hidden=GPT["hidden"], head="flat", tie=True,
                      batch=GPT["batch"], optimizer="adamw", weight_decay=0.1, lr=GPT["lr"],
                      clip=1.0, eval_every=1000, eval_tokens=60_000, sample_every=10**9,
                      checkpoint_every=10**9, record_every=0, out=os.path.join(out, "gpt"))
    config.steps, config.max_seconds, config.schedule = 10**6, seconds, "constant"
    return config


def torch_gpt_run(seconds, eval_tokens=60_000):
    """The PyTorch GPT, trained for ``seconds`` on the batches tinyar's run sees; its
    validation nats/char on the same windows ``AutoregressiveLM.evaluate`` reads."""
    import time
    import torch
    from gpt_twins import tinyar_gpt, torch_gpt
    from tinyar.data import CharTokenizer, StreamBatcher, load_corpus, split
    text = load_corpus(data_source(), max_chars=2_000_000, progress=False)
    tokenizer = CharTokenizer().fit(text)
    train_ids, val_ids = split(tokenizer.encode(text), 0.9)
    val_ids = val_ids[:eval_tokens]
    torch.manual_seed(0)
    shape = (tokenizer.vocab_size, GPT["hidden"], GPT["layers"], GPT["heads"], GPT["context"])
    # tinyar's GPT-2 initialisation (N(0, 0.02^2), scaled residual projections) for both
    model = torch_gpt(torch, *shape, state=tinyar_gpt(*shape).state_dict())
    optimizer = torch.optim.AdamW(model.parameters(), lr=GPT["lr"],
                                  weight_decay=0.1)
    batcher = StreamBatcher(train_ids, GPT["batch"], GPT["context"], drop_last=True)
    start, step = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        for x, y in batcher:
            optimizer.zero_grad(set_to_none=True)
            loss = model(torch.from_numpy(x), torch.from_numpy(y))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            step += 1
            if time.perf_counter() - start >= seconds:
                break
    model.eval()
    total = count = 0
    with torch.no_grad():
        for x, y in StreamBatcher(val_ids, GPT["batch"], GPT["context"]):
            total += float(model(torch.from_numpy(x), torch.from_numpy(y))) * y.size
            count += y.size
    return total / count, step


def gpt_quality(seconds, out):
    config = gpt_config(out, seconds)
    train_lm(config, quiet=True)
    ours = [r for r in history(config.out) if "val_loss" in r][-1]
    lstm_out = os.path.join(out, "char")
    char_quality(seconds, out)
    lstm = [r for r in history(lstm_out) if "val_loss" in r][-1]
    theirs, torch_steps = torch_gpt_run(seconds)
    print(f"\n### Tiny Shakespeare, characters: validation nats/char after {seconds:.0f} s of "
          f"training\n\nmachine: {machine()}\n")
    print("| model | steps | validation nats/char |\n|---|---:|---:|")
    print(f"| tinyar GPT 4x128, 4 heads, context 64, batch 12 | {ours['step']} | "
          f"{ours['val_loss']:.3f} |")
    print(f"| PyTorch, the same GPT and batches | {torch_steps} | {theirs:.3f} |")
    print(f"| tinyar LSTM 2x256 (the default char model), batch 32, BPTT 128 | "
          f"{lstm['step']} | {lstm['val_loss']:.3f} |")


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
    parser.add_argument("what", choices=["char", "word", "gpt"])
    parser.add_argument("--seconds", type=float, default=300)
    parser.add_argument("--epochs", type=float, default=2)
    parser.add_argument("--classes", type=int, nargs="+", default=[30, 100, 300, 1000])
    parser.add_argument("--out", default=os.path.join("runs", "bench-quality"))
    args = parser.parse_args()
    if args.what == "char":
        char_quality(args.seconds, args.out)
    elif args.what == "gpt":
        gpt_quality(args.seconds, args.out)
    else:
        word_quality(args.epochs, args.classes, args.out)


if __name__ == "__main__":
    main()
