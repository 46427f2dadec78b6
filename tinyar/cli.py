"""The ``tinyar`` command line."""
import argparse
import sys

from .errors import TinyarError


def _demo(args):
    from .demo import run_demo
    run_demo(out=args.out, steps=args.steps, hidden=args.hidden, lr=args.lr, seed=args.seed)


def _train(args):
    from dataclasses import fields
    from .train.lm import LMConfig, train_lm
    given = {f.name: getattr(args, f.name) for f in fields(LMConfig)
             if getattr(args, f.name, None) is not None}
    if args.resume:
        train_lm(LMConfig(), resume=args.resume, steps=args.steps)
    else:
        train_lm(LMConfig(**given))


def _sample(args):
    from .train.lm import load_run, sample_text
    from .random import manual_seed
    manual_seed(args.seed)
    model, tokenizer, _ = load_run(args.run, device=args.device)
    print(sample_text(model, tokenizer, args.prompt, args.tokens, temperature=args.temperature,
                      top_k=args.top_k))


def _eval(args):
    from .train.lm import evaluate_run
    result = evaluate_run(args.run, data=args.data, split_name=args.split, device=args.device)
    for key, value in result.items():
        print(f"{key:>15}: {value:,.4f}" if isinstance(value, float) else f"{key:>15}: {value:,}")


def _add_train(sub):
    from .train.lm import LMConfig
    d = LMConfig()
    p = sub.add_parser("train", help="train an autoregressive language model",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                       description="Train an LSTM/GRU/RNN language model (multi-level softmax head "
                                   "by default) on the embedded corpus (the Python standard "
                                   "library's source), Tiny Shakespeare or any text file/folder.")
    p.add_argument("--data", help="stdlib | shakespeare | PATH (file or folder)", default=None)
    p.add_argument("--max-chars", dest="max_chars", type=int, help=f"corpus size cap ({d.max_chars:,})")
    p.add_argument("--level", choices=["char", "word"])
    p.add_argument("--vocab", type=int, help=f"word level: vocabulary size ({d.vocab})")
    p.add_argument("--backbone", choices=["rnn", "conv"],
                   help="recurrent layers, or causal dilated convolutions (WaveNet-like; use "
                        "--layers 6..8 for a useful receptive field)")
    p.add_argument("--cell", choices=["lstm", "gru", "rnn"])
    p.add_argument("--embed", type=int, help=f"embedding size ({d.embed})")
    p.add_argument("--hidden", type=int, help=f"hidden size ({d.hidden})")
    p.add_argument("--layers", type=int, help=f"recurrent layers ({d.layers})")
    p.add_argument("--dropout", type=float, help=f"dropout ({d.dropout})")
    p.add_argument("--head", choices=["multilevel", "flat"])
    p.add_argument("--classes", type=int, help="classes of the multi-level head (sqrt(V))")
    p.add_argument("--tie", action="store_const", const=True, help="tie flat-head and embedding")
    p.add_argument("--steps", type=int, help=f"training steps ({d.steps})")
    p.add_argument("--epochs", type=float, help="epochs (overrides --steps)")
    p.add_argument("--max-seconds", dest="max_seconds", type=float,
                   help="stop after this much training time")
    p.add_argument("--batch", type=int, help=f"batch size ({d.batch})")
    p.add_argument("--bptt", type=int, help=f"truncated-BPTT length ({d.bptt})")
    p.add_argument("--lr", type=float, help=f"learning rate ({d.lr})")
    p.add_argument("--optimizer", choices=["adam", "adamw", "sgd", "rmsprop", "adagrad"])
    p.add_argument("--weight-decay", dest="weight_decay", type=float)
    p.add_argument("--clip", type=float, help=f"gradient-norm clip, 0 for none ({d.clip})")
    p.add_argument("--warmup", type=int, help=f"warm-up steps ({d.warmup})")
    p.add_argument("--schedule", choices=["cosine", "constant"])
    p.add_argument("--eval-every", dest="eval_every", type=int)
    p.add_argument("--sample-every", dest="sample_every", type=int)
    p.add_argument("--checkpoint-every", dest="checkpoint_every", type=int)
    p.add_argument("--prompt", help="prompt for the samples shown during training")
    p.add_argument("--device", choices=["cpu", "cuda"])
    p.add_argument("--seed", type=int)
    p.add_argument("--out", help="run folder (default runs/lm-DATE-TIME)")
    p.add_argument("--resume", metavar="RUN", help="continue the run in this folder")
    p.set_defaults(func=_train)

    s = sub.add_parser("sample", help="generate text from a trained run",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    s.add_argument("run", help="run folder of tinyar train")
    s.add_argument("--prompt", default="")
    s.add_argument("--tokens", type=int, default=300)
    s.add_argument("--temperature", type=float, default=0.8)
    s.add_argument("--top-k", dest="top_k", type=int, default=None)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    s.set_defaults(func=_sample)

    e = sub.add_parser("eval", help="nats/token, perplexity and bits/char of a trained run",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    e.add_argument("run", help="run folder of tinyar train")
    e.add_argument("--data", default=None, help="stdlib | shakespeare | PATH (default: the run's)")
    e.add_argument("--split", choices=["val", "all"], default="val")
    e.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    e.set_defaults(func=_eval)


def _classify(args):
    from dataclasses import fields
    from .train.classify import ClassifyConfig, evaluate_run, train_classifier
    if args.eval:
        evaluate_run(args.eval, data=args.data, decode=args.decode, device=args.device or "cpu")
        return
    given = {f.name: getattr(args, f.name) for f in fields(ClassifyConfig)
             if getattr(args, f.name, None) is not None}
    train_classifier(ClassifyConfig(**given))


def _add_classify(sub):
    from .train.classify import ClassifyConfig
    d = ClassifyConfig()
    p = sub.add_parser("classify", help="train and evaluate a (multi-level) image classifier",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                       description="Train a CNN or a row-by-row RNN classifier with a flat or "
                                   "multi-level head (P(coarse) P(fine | coarse)); writes the "
                                   "checkpoint, metrics.json and confusion matrices to a run folder.")
    p.add_argument("--data", help=f"glyphs | mnist | fashion-mnist | cifar10 | cifar100 | FILE.npz "
                                   f"({d.data})")
    p.add_argument("--hierarchy", help="JSON {coarse: [fine labels]} for data given as a file")
    p.add_argument("--train-size", dest="train_size", type=int, help=f"glyphs to render ({d.train_size})")
    p.add_argument("--test-size", dest="test_size", type=int, help=f"glyph test set ({d.test_size})")
    p.add_argument("--label-fraction", dest="label_fraction", type=float,
                   help="use only this fraction of the training labels (1.0)")
    p.add_argument("--model", choices=["cnn", "rnn"])
    p.add_argument("--arch", choices=["lenet", "vgg"], help=f"CNN architecture ({d.arch})")
    p.add_argument("--cell", choices=["lstm", "gru", "rnn"], help="row-RNN cell (lstm)")
    p.add_argument("--hidden", type=int, help=f"row-RNN hidden size ({d.hidden})")
    p.add_argument("--head", choices=["multilevel", "flat"])
    p.add_argument("--decode", choices=["joint", "greedy"])
    p.add_argument("--level-weights", dest="level_weights", type=float, nargs=2,
                   metavar=("COARSE", "FINE"), help="loss weight of each level (1 1)")
    p.add_argument("--weight-schedule", dest="weight_schedule",
                   help="per-epoch level weights, e.g. '0:0.9,0.1;2:0.5,0.5;4:0.1,0.9'")
    p.add_argument("--epochs", type=int, help=f"({d.epochs})")
    p.add_argument("--batch", type=int, help=f"({d.batch})")
    p.add_argument("--lr", type=float, help=f"({d.lr})")
    p.add_argument("--optimizer", choices=["adam", "adamw", "sgd"])
    p.add_argument("--clip", type=float)
    p.add_argument("--augment", action="store_const", const=True, help="random shifts/rotations")
    p.add_argument("--pretrain-steps", dest="pretrain_steps", type=int,
                   help="autoregressive pre-training steps of the row RNN (--model rnn)")
    p.add_argument("--device", choices=["cpu", "cuda"])
    p.add_argument("--seed", type=int)
    p.add_argument("--out", help="run folder (default runs/classify-DATE-TIME)")
    p.add_argument("--eval", metavar="RUN", help="evaluate a trained run on --data's test split")
    p.set_defaults(func=_classify)


def build_parser():
    parser = argparse.ArgumentParser(prog="tinyar", description=__doc__)
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command")

    demo = sub.add_parser("demo", help="train a small MLP on a spiral; save plots",
                          formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    demo.add_argument("--out", default="runs/demo", help="folder for the checkpoint and plots")
    demo.add_argument("--steps", type=int, default=1500)
    demo.add_argument("--hidden", type=int, default=64)
    demo.add_argument("--lr", type=float, default=0.01)
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=_demo)
    _add_train(sub)
    _add_classify(sub)
    from .inspect.commands import add_commands
    add_commands(sub)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from . import __version__
        print(f"tinyar {__version__}")
        return 0
    if args.command is None:
        parser.print_help()
        return 0
    try:
        code = args.func(args)
    except (TinyarError, ValueError, FileNotFoundError) as exc:
        print(f"tinyar {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\ntinyar {args.command}: interrupted", file=sys.stderr)
        return 130
    return code or 0


if __name__ == "__main__":
    sys.exit(main())
