"""Quality on Tiny Shakespeare: what the models learn, and at what cost.

    python benchmarks/bench_quality.py char [--seconds 300]
    python benchmarks/bench_quality.py word [--epochs 2] [--classes 100] [--shortlist 0 100]
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
``--shortlist 0 100 1000`` runs each number of classes with a root short-list
of that many words too (the most frequent words each a class of their own,
Grave et al. 2017), against the plain frequency classes (0).

``gpt``: validation nats/char after the same wall time for tinyar's GPT in
nanoGPT's CPU configuration (4 layers, 4 heads, width 128, context 64, batch
12, AdamW 1e-3, weight decay 0.1, clip 1, tied head), for
tinyar's default LSTM (the ``char`` run) and for the same GPT in PyTorch, fed
the same batches in the same order (tinyar's stream batcher) and evaluated on
the same windows: the last 10 % of the characters, as nanoGPT splits them.
nanoGPT's README reports 1.88 after 2,000 steps of this configuration.
Each GPT's learning rate follows nanoGPT's schedule (100 warm-up steps, then a
cosine) fitted to the number of steps that framework runs in the budget,
measured by a short probe first: at a constant rate the last iterate's loss
wanders by a few hundredths from one evaluation to the next (1.741, 1.738,
1.751 at steps 4,000-6,000 of one run), more than the frameworks differ, so
equal time would measure noise; with the decay each run ends settled and the
faster framework's extra steps show.

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


GPT = dict(layers=4, heads=4, hidden=128, context=64, batch=12, lr=1e-3, warmup=100)
PROBE_SECONDS = 15


def gpt_config(out, seconds, steps, name="gpt"):
    """tinyar's GPT run: ``steps`` steps on a warm-up + cosine schedule, stopped at
    ``seconds`` whatever the step; evaluated at the end only (as the PyTorch loop)."""
    config = LMConfig(data=data_source(), max_chars=2_000_000, level="char",
                      backbone="transformer", heads=GPT["heads"], context=GPT["context"],
                      layers=GPT["layers"], hidden=GPT["hidden"], head="flat", tie=True,
                      batch=GPT["batch"], optimizer="adamw", weight_decay=0.1, lr=GPT["lr"],
                      clip=1.0, eval_every=10**9, eval_tokens=60_000, sample_every=10**9,
                      checkpoint_every=10**9, record_every=0, out=os.path.join(out, name))
    config.steps, config.max_seconds = steps, seconds
    config.schedule, config.warmup = "cosine", GPT["warmup"]
    return config


def steps_in(seconds, step_times):
    """How many steps fit in ``seconds`` at the median of the probe's step times."""
    step_times = sorted(step_times[len(step_times) // 4:])  # after warm-up and compiles
    return max(GPT["warmup"] + 1, int(seconds / step_times[len(step_times) // 2]))


def tinyar_steps_in(seconds, out):
    config = gpt_config(out, PROBE_SECONDS, 10**6, name="gpt-probe")
    train_lm(config, quiet=True)
    stamps = [r["seconds"] for r in history(config.out)]
    return steps_in(seconds, [b - a for a, b in zip(stamps, stamps[1:])])


def warmup_cosine(steps):
    """tinyar's CosineAnnealingLR(T_max=steps, warmup_steps=W) as a factor of the base lr."""
    import math
    w = GPT["warmup"]
    return lambda e: e / w if e < w else (1 + math.cos(math.pi * (e - w) / (steps - w))) / 2


def torch_gpt_run(seconds, eval_tokens=60_000, probe=False):
    """The PyTorch GPT, trained for ``seconds`` on the batches tinyar's run sees; its
    validation nats/char on the same windows ``AutoregressiveLM.evaluate`` reads. With
    ``probe``: the step times of a short run at a constant rate instead."""
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
    steps = 10**9 if probe else steps_in(seconds, torch_gpt_run(PROBE_SECONDS, probe=True))
    scheduler = None if probe else torch.optim.lr_scheduler.LambdaLR(optimizer,
                                                                     warmup_cosine(steps))
    batcher = StreamBatcher(train_ids, GPT["batch"], GPT["context"], drop_last=True)
    start, step, stamps = time.perf_counter(), 0, []
    while time.perf_counter() - start < seconds and step < steps:
        for x, y in batcher:
            optimizer.zero_grad(set_to_none=True)
            loss = model(torch.from_numpy(x), torch.from_numpy(y))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            step += 1
            stamps.append(time.perf_counter())
            if time.perf_counter() - start >= seconds or step >= steps:
                break
    if probe:
        return [b - a for a, b in zip(stamps, stamps[1:])]
    model.eval()
    total = count = 0
    with torch.no_grad():
        for x, y in StreamBatcher(val_ids, GPT["batch"], GPT["context"]):
            total += float(model(torch.from_numpy(x), torch.from_numpy(y))) * y.size
            count += y.size
    return total / count, step


def gpt_quality(seconds, out):
    config = gpt_config(out, seconds, tinyar_steps_in(seconds, out))
    train_lm(config, quiet=True)
    ours = [r for r in history(config.out) if "val_loss" in r][-1]
    lstm_out = os.path.join(out, "char")
    char_quality(seconds, out)
    lstm = [r for r in history(lstm_out) if "val_loss" in r][-1]
    theirs, torch_steps = torch_gpt_run(seconds)
    print(f"\n### Tiny Shakespeare, characters: validation nats/char after {seconds:.0f} s of "
          f"training\n\nmachine: {machine()}\n")
    print("| model | steps | validation nats/char |\n|---|---:|---:|")
    print(f"| tinyar GPT 4x128, 4 heads, context 64, batch 12, cosine | {ours['step']} | "
          f"{ours['val_loss']:.3f} |")
    print(f"| PyTorch, the same GPT and batches, cosine | {torch_steps} | {theirs:.3f} |")
    print(f"| tinyar LSTM 2x256 (the default char model), batch 32, BPTT 128, constant lr | "
          f"{lstm['step']} | {lstm['val_loss']:.3f} |")


def word_quality(epochs, classes_list, out, shortlists=(0,)):
    print(f"### Tiny Shakespeare, words (V = 10,000): classes against validation perplexity "
          f"and time per epoch ({epochs} epochs each)\n\nmachine: {machine()}\n")
    print("| head | classes | short-list | validation perplexity | seconds per epoch |\n"
          "|---|---:|---:|---:|---:|")
    runs = [(classes, shortlist) for shortlist in shortlists for classes in classes_list]
    for classes, shortlist in runs + [("flat", 0)]:
        name = "flat" if classes == "flat" else f"{classes}" + (f"-short{shortlist}"
                                                                 if shortlist else "")
        config = LMConfig(data=data_source(), level="word", vocab=10_000, embed=256, hidden=256,
                          layers=1, head="flat" if classes == "flat" else "multilevel",
                          classes=0 if classes == "flat" else int(classes),
                          shortlist=shortlist, epochs=epochs,
                          batch=32, bptt=35, lr=3e-3, clip=1.0, warmup=50, eval_every=10**9,
                          eval_tokens=100_000, sample_every=10**9, checkpoint_every=10**9,
                          record_every=0, out=os.path.join(out, f"word-{name}"))
        train_lm(config, quiet=True)
        h = history(config.out)
        seconds_per_epoch = h[-1]["seconds"] / epochs
        print(f"| {'flat softmax' if classes == 'flat' else 'multi-level'} | "
              f"{'-' if classes == 'flat' else classes} | {shortlist or '-'} | "
              f"{h[-1]['val_ppl']:.1f} | {seconds_per_epoch:.1f} |", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["char", "word", "gpt"])
    parser.add_argument("--seconds", type=float, default=300)
    parser.add_argument("--epochs", type=float, default=2)
    parser.add_argument("--classes", type=int, nargs="+", default=[30, 100, 300, 1000])
    parser.add_argument("--shortlist", type=int, nargs="+", default=[0],
                        help="word: short-list sizes (0: plain frequency classes), each run "
                             "with every --classes")
    parser.add_argument("--out", default=os.path.join("runs", "bench-quality"))
    args = parser.parse_args()
    if args.what == "char":
        char_quality(args.seconds, args.out)
    elif args.what == "gpt":
        gpt_quality(args.seconds, args.out)
    else:
        word_quality(args.epochs, args.classes, args.out, args.shortlist)


if __name__ == "__main__":
    main()
