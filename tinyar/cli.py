"""The ``tinyar`` command line.

    tinyar demo | train | sample | eval | classify | gradcheck | inspect   (--help on each)

The options of ``train`` and ``classify`` are the fields of ``LMConfig`` and
``ClassifyConfig`` (``tinyar/train/config.py``), where each is declared once with its
type, range and help; those of ``sample``, ``eval``, ``demo`` and ``gradcheck`` come from
their option classes there too. Every value is checked before any work starts.

Errors: tinyar's own (``TinyarError``), a ``ValueError`` or an ``OSError`` (a file that
cannot be read or written) end the command with one line, ``tinyar CMD: error: MESSAGE``,
and exit status 2; Ctrl-C ends it with status 130. Any other exception is a bug in tinyar
and keeps its traceback, so that it can be reported.

Under ``mpiexec -n N tinyar train ...`` (or ``classify``) the N processes train one model
together (data parallelism, ``tinyar.distributed``; ``--batch`` is each rank's,
``--allreduce`` how gradients are averaged, ``--threads`` each rank's CPU threads, by
default the cores of the machine shared among its ranks; with ``--device cuda`` rank r takes GPU ``local rank
mod GPUs``, and the gradients travel through host memory unless the MPI is CUDA-aware).
Rank 0 alone prints. A bad option fails on every rank alike, before they talk: one line
from rank 0, status 2. Rank 0's setup failures (its run folder, its checkpoint) reach
every rank the same way; any other exception on a rank ends the whole job with that
rank's message (``MPI_Abort``), never a hang.
"""
import argparse
import os
import sys

from .errors import ConfigError, TinyarError
from .train.config import (EVAL, LAST, RESUME, RUN, ClassifyConfig, DemoOptions, EvalOptions,
                           LMConfig, SampleOptions, add_argument, add_arguments, flag_of,
                           given_options, read_argument)

#: Longest error line printed (a message quoting a huge value is cut).
MAX_MESSAGE = 2000


class UsageError(ConfigError):
    """A command line argparse cannot read (an unknown option, a missing value)."""

    def __init__(self, prog, message):
        super().__init__(message)
        self.prog = prog


class Parser(argparse.ArgumentParser):
    """argparse, with its errors as one line (no usage block) and no abbreviated options
    (``--eval`` must not silently mean ``--eval-every``)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message):
        if message.startswith("argument "):  # "argument --steps: expected one argument"
            message = message[len("argument "):]
        raise UsageError(self.prog, f"{message} (see {self.prog} --help)")


def _options(args, cls):
    """The checked options of ``cls`` for this command: defaults, then what was given."""
    given = given_options(args, cls)
    return cls(**given).validate(given)


def _which(last):
    """Keyword for the load functions: only when --last asks for something other than the
    default (the best checkpoint)."""
    return {"which": "last"} if last else {}


def _check_backend():
    """Load the CPU backend now, so that a wrong TINYAR_BLAS is reported before any work."""
    from .backend import get_backend
    get_backend("cpu")


# --- the commands -------------------------------------------------------------------------------
def _demo(args):
    from .demo import run_demo
    o = _options(args, DemoOptions)
    _check_backend()
    run_demo(out=o.out, steps=o.steps, hidden=o.hidden, lr=o.lr, seed=o.seed)


def _train(args):
    from .train import lm
    given = given_options(args, LMConfig)
    _start_training(lm.train_lm, LMConfig, given, read_argument(args, "resume", RESUME))


def _sample(args):
    from .random import manual_seed
    from .train import lm
    run = read_argument(args, "run", RUN)
    o = _options(args, SampleOptions)
    _check_backend()
    manual_seed(o.seed)
    model, tokenizer, _ = lm.load_run(run, device=o.device, **_which(o.last))
    print(lm.sample_text(model, tokenizer, o.prompt, o.tokens, temperature=o.temperature,
                         top_k=o.top_k))


def _eval(args):
    from .train import lm
    run = read_argument(args, "run", RUN)
    o = _options(args, EvalOptions)
    _check_backend()
    result = lm.evaluate_run(run, data=o.data, split_name=o.split, device=o.device,
                             **_which(o.last))
    for key, value in result.items():
        print(f"{key:>15}: {value:,.4f}" if isinstance(value, float) else f"{key:>15}: {value:,}")


#: What ``classify --eval RUN`` uses besides the run: the rest belongs to training.
EVAL_SETTINGS = ("data", "decode", "device", "test_size")


def _classify(args):
    from .train import classify
    given = given_options(args, ClassifyConfig)
    run = read_argument(args, "eval", EVAL)
    resume = read_argument(args, "resume", RESUME)
    last = read_argument(args, "last", LAST)
    if run is not None:
        if resume is not None:
            raise ConfigError(f"--resume: trains; --eval evaluates; give one of them, got "
                              f"--resume {resume!r} and --eval {run!r}")
        _evaluate_classifier(classify, run, given, last)
        return
    if last:
        raise ConfigError("--last: needs --eval RUN (it picks the checkpoint to evaluate)")
    _start_training(classify.train_classifier, ClassifyConfig, given, resume)


def _start_training(train, config_class, given, resume):
    """Continue run ``resume`` (the options given are its overrides, which the training
    checks), or start a run from the given options, validated before any work.

    Under mpiexec every rank validates the same options the same way, before any
    collective, so a bad option is one error on each rank (printed by rank 0) and no rank
    waits; training then runs inside ``abort_on_exception``: an exception on one rank ends
    every rank, with that rank's message, instead of leaving the others in a collective.
    """
    if resume is None:
        config = config_class(**given).validate(given)
    _check_backend()
    from .distributed import abort_on_exception, launched_by_mpi, world
    guard = abort_on_exception(world()) if launched_by_mpi() else _no_guard()
    agreed = None
    with guard:
        try:
            if resume is not None:
                train(config_class(), resume=resume, overrides=given)
            else:
                train(config)
        except _agreed_failure() as exc:
            agreed = exc
    if agreed is not None:
        # every rank knows (train/run.py: root_first, together), so no rank waits: end
        # here, outside abort_on_exception, quietly on all but the rank that prints it
        raise agreed.original if agreed.loud else _Quiet() from None


class _Quiet(TinyarError):
    """This rank ends with status 2 and prints nothing: another rank reports why."""


def _agreed_failure():
    from .train.run import AgreedFailure
    return AgreedFailure


def _no_guard():
    import contextlib
    return contextlib.nullcontext()


def _evaluate_classifier(classify, run, given, last):
    unused = [name for name in given if name not in EVAL_SETTINGS]
    if unused:
        flags = ", ".join(flag_of(n) for n in EVAL_SETTINGS)
        raise ConfigError(f"{flag_of(unused[0])}: not used with --eval (which takes {flags} "
                          f"and --last), got {flag_of(unused[0])}")
    _check_backend()
    classify.evaluate_run(run, data=given.get("data"), decode=given.get("decode"),
                          device=given.get("device", "cpu"), test_size=given.get("test_size"),
                          quiet=not _is_root(), **_which(last))


# --- the parser ---------------------------------------------------------------------------------
def _add_train(sub):
    p = sub.add_parser("train", help="train an autoregressive language model",
                       description="Train an LSTM/GRU/RNN language model (multi-level softmax "
                                   "head by default) on the embedded corpus (the Python "
                                   "standard library's source), Tiny Shakespeare or any text "
                                   "file/folder.")
    add_arguments(p, LMConfig)
    add_argument(p, "resume", RESUME)
    p.set_defaults(func=_train)

    s = sub.add_parser("sample", help="generate text from a trained run",
                       description="Generate text from the language model of a run folder.")
    add_argument(s, "run", RUN)
    add_arguments(s, SampleOptions)
    s.set_defaults(func=_sample)

    e = sub.add_parser("eval", help="nats/token, perplexity and bits/char of a trained run",
                       description="Evaluate the language model of a run folder on a text.")
    add_argument(e, "run", RUN)
    add_arguments(e, EvalOptions)
    e.set_defaults(func=_eval)


def _add_classify(sub):
    p = sub.add_parser("classify", help="train and evaluate a (multi-level) image classifier",
                       description="Train a CNN or a row-by-row RNN classifier with a flat or "
                                   "multi-level head (P(coarse) P(fine | coarse)); writes the "
                                   "checkpoint, metrics.json and confusion matrices to a run "
                                   "folder. With --eval RUN, evaluate a trained run instead.")
    add_arguments(p, ClassifyConfig)
    add_argument(p, "resume", RESUME)
    add_argument(p, "eval", EVAL)
    add_argument(p, "last", LAST, False)
    p.set_defaults(func=_classify)


def _add_demo(sub):
    demo = sub.add_parser("demo", help="train a small MLP on a spiral; save plots",
                          description="Train a small MLP on a 2-D spiral and save its "
                                      "checkpoint, loss curve and decision boundary.")
    add_arguments(demo, DemoOptions)
    demo.set_defaults(func=_demo)


def build_parser():
    parser = Parser(prog="tinyar", description="tinyar's command line: train, sample, evaluate "
                                                "and inspect models (COMMAND --help for each)")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_demo(sub)
    _add_train(sub)
    _add_classify(sub)
    from .inspect.commands import add_commands
    add_commands(sub)
    return parser


# --- running ------------------------------------------------------------------------------------
def one_line(exc):
    """An exception as one line: its message (or its type), the file an OSError names, no
    line breaks, at most ``MAX_MESSAGE`` characters."""
    if isinstance(exc, OSError) and not isinstance(exc, TinyarError) and exc.strerror:
        names = [repr(n) for n in (exc.filename, exc.filename2) if n is not None]
        text = f"{' -> '.join(names)}: {exc.strerror}" if names else exc.strerror
    else:
        text = str(exc) or type(exc).__name__
    text = " ".join(text.split())
    return text if len(text) <= MAX_MESSAGE else text[:MAX_MESSAGE] + " ..."


def _error(command, message):
    """Print the error (under mpiexec, rank 0's only: every rank meets an error that gets
    here, the same one; a rank's own failure ends the job through abort_on_exception)."""
    if _is_root():
        print(f"tinyar {command}: error: {message}", file=sys.stderr)
    return 2


def _is_root():
    """Whether this process prints: rank 0, or a single process (no mpi4py import then)."""
    from .distributed import launched_by_mpi, world
    return not launched_by_mpi() or world().is_root


def main(argv=None):
    """Run one command; returns its exit status (0 done, 1 a failed check, 2 an error,
    130 interrupted)."""
    parser = build_parser()
    try:
        args, unknown = parser.parse_known_args(argv)
        if unknown:  # named by the command they were given to, not by "tinyar"
            prog = f"tinyar {args.command}" if getattr(args, "command", None) else "tinyar"
            raise UsageError(prog, f"unrecognized arguments: {' '.join(unknown)} (see {prog} "
                                   f"--help)")
    except UsageError as exc:
        if _is_root():
            print(f"{exc.prog}: error: {one_line(exc)}", file=sys.stderr)
        return 2
    except SystemExit as exc:  # --help
        return exc.code if isinstance(exc.code, int) else 0
    if args.version:
        from . import __version__
        print(f"tinyar {__version__}")
        return 0
    if args.command is None:
        parser.print_help()
        return 0
    command = args.command
    try:
        code = args.func(args)
    except SystemExit as exc:  # a command's own verdict (gradcheck: 1 when a check fails)
        return exc.code if isinstance(exc.code, int) else 2
    except _Quiet:
        return 2
    except KeyboardInterrupt:
        if _is_root():
            print(f"\ntinyar {command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `tinyar sample RUN | head`: the reader left; nothing to say
        _silence_stdout()
        return 1
    except MemoryError:
        return _error(command, "out of memory (try smaller sizes, batches or data)")
    except (TinyarError, ValueError, OSError) as exc:
        return _error(command, one_line(exc))
    return code or 0


def _silence_stdout():
    """After a broken pipe, later writes to stdout (Python's own flush at exit) go nowhere."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


if __name__ == "__main__":
    sys.exit(main())
