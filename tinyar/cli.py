"""The ``tinyar`` command line."""
import argparse
import sys

from .errors import TinyarError


def _demo(args):
    from .demo import run_demo
    run_demo(out=args.out, steps=args.steps, hidden=args.hidden, lr=args.lr, seed=args.seed)


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
        args.func(args)
    except TinyarError as exc:
        print(f"tinyar {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\ntinyar {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
