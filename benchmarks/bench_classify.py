"""The multi-level classifier on the glyph set: accuracy per level.

    python benchmarks/bench_classify.py heads [--epochs 3]
    python benchmarks/bench_classify.py pretrain [--epochs 3] [--pretrain-steps 300]

``heads``: the LeNet-like CNN with a flat head and with the multi-level head,
same data (20,000 rendered glyphs, 62 labels under digit/upper/lower; 4,000
test glyphs), same epochs: test accuracy per level, consistency, mistake
severity, and training time.

``pretrain``: the row-by-row LSTM classifier (hidden 128) with the
multi-level head, trained on 1 %, 10 % and 100 % of the training labels,
without and with autoregressive pre-training of its backbone on all the
training images (predict row t+1 from rows <= t, no labels).
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import machine  # noqa: E402

from tinyar.train.classify import ClassifyConfig, train_classifier  # noqa: E402


def row(label, report):
    return (f"| {label} | {report['coarse']['accuracy']:.3f} | {report['fine']['accuracy']:.3f} "
            f"| {report['consistency']:.3f} | {report['mistakes']['mean_height'] or 0:.2f} "
            f"| {report['train_seconds']:.0f} |")


HEADER = ("| run | coarse accuracy | fine accuracy | consistency | mean mistake height "
          "| training s |\n|---|---:|---:|---:|---:|---:|")


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["heads", "pretrain"])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--pretrain-steps", type=int, default=300)
    parser.add_argument("--out", default=os.path.join("runs", "bench-classify"))
    args = parser.parse_args()
    print(f"machine: {machine()}\n\n{HEADER}")
    if args.what == "heads":
        for head in ("flat", "multilevel"):
            config = ClassifyConfig(model="cnn", arch="lenet", head=head, epochs=args.epochs,
                                    out=os.path.join(args.out, f"cnn-{head}"))
            _, report = train_classifier(config, quiet=True)
            print(row(f"LeNet, {head} head, {args.epochs} epochs", report), flush=True)
    else:
        for fraction in (0.01, 0.1, 1.0):
            for steps in (0, args.pretrain_steps):
                config = ClassifyConfig(model="rnn", head="multilevel", hidden=128,
                                        label_fraction=fraction, pretrain_steps=steps,
                                        epochs=args.epochs if fraction == 1.0 else
                                        max(args.epochs, int(args.epochs / fraction / 4)),
                                        out=os.path.join(args.out, f"rnn-{fraction}-{steps}"))
                _, report = train_classifier(config, quiet=True)
                print(row(f"row LSTM, {fraction:.0%} labels, "
                          f"{'pre-trained ' + str(steps) + ' steps' if steps else 'no pre-training'}"
                          f", {config.epochs} epochs", report), flush=True)


if __name__ == "__main__":
    main()
