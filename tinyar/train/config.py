"""The settings of a training run (``LMConfig`` for ``tinyar train``, ``ClassifyConfig`` for
``tinyar classify``, each saved with its run's checkpoint) and the options of the other
commands (``SampleOptions``, ``EvalOptions``, ``DemoOptions``, ``GradcheckOptions``).

Every setting is declared once, as a dataclass field made by ``option(default, help, ...)``.
The field's metadata holds an ``Option``: its flag, type, help text, choices and bounds,
and which other setting it depends on. From that one declaration

    the command line    gets its flags (``add_arguments``: ``--help`` shows the real
                        default and the accepted range) and converts what the user typed
                        (``given_options``: only the options given explicitly, so that
                        ``--resume`` knows which ones to apply);
    ``validate()``      checks a config built in Python by the same rules, before any
                        work: every value in its range, every option that would have no
                        effect (``--tie`` with the multi-level head) refused.

A broken rule is a ``ConfigError``, one line naming the option, what it expects and what it
got::

    --steps: expected an integer >= 1, got 0
"""
import argparse
import math
import numbers
from dataclasses import MISSING, dataclass, field, fields, replace

import numpy as np

from ..errors import ConfigError


# --- declaring an option ----------------------------------------------------------------------
@dataclass(frozen=True)
class Option:
    """How one setting looks on the command line and which values it accepts.

    ``kind``: int, float, str or bool (a flag without a value). ``count`` > 0: a list of that
    many ``kind`` values (``--level-weights COARSE FINE``). ``low``/``high``: inclusive bounds,
    exclusive where ``low_open``/``high_open``; every float must be finite. ``choices``: the
    accepted strings. ``nonempty``: an empty string is refused (for str options given on the
    command line it always is, unless ``allow_empty``). ``optional``: None is accepted (and
    is the "not set" default). ``needs``: ``((other, (values, ...)), ...)``: the option acts
    only when setting ``other`` has one of the values, and is refused otherwise.
    """
    help: str
    kind: type = None
    flag: str = ""
    choices: tuple = ()
    low: float = None
    high: float = None
    low_open: bool = False
    high_open: bool = False
    count: int = 0
    nonempty: bool = False
    allow_empty: bool = False
    optional: bool = False
    needs: tuple = ()
    metavar: object = None


def option(default, help, **spec):
    """A dataclass field with its ``Option`` (see ``Option`` for ``spec``); a list default
    becomes a default factory."""
    kind = spec.pop("kind", None) or _kind_of(default)
    metadata = {"option": Option(help=help, kind=kind, **spec)}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def _kind_of(default):
    if isinstance(default, bool):
        return bool
    if isinstance(default, list):
        return float
    if isinstance(default, (int, float, str)):
        return type(default)
    raise TypeError(f"option: give kind= for a default of {default!r}")


def flag_of(name, opt=None):
    """The command-line flag of setting ``name``: ``max_chars`` -> ``--max-chars``."""
    return (opt.flag if opt is not None and opt.flag else "--" + name.replace("_", "-"))


def settings(cls):
    """(name, Option, default) of every declared setting of dataclass ``cls``, in order."""
    out = []
    for f in fields(cls):
        opt = f.metadata.get("option")
        if opt is None:
            continue
        default = f.default if f.default is not MISSING else f.default_factory()
        out.append((f.name, opt, default))
    return out


def declared(opt, default):
    """A dataclass field for an ``Option`` declared elsewhere (shared by several commands)."""
    return field(default=default, metadata={"option": opt})


# shared declarations: one flag, one meaning, wherever it appears
DEVICE = Option(help="where to compute: cpu, or cuda (an NVIDIA GPU)", kind=str,
                choices=("cpu", "cuda"))
LAST = Option(help="use the last checkpoint (model.npz) instead of the best one (best.npz)",
              kind=bool)
#: Options that are not settings of a config: the run folder a command continues or reads.
RUN = Option(help="run folder of tinyar train", kind=str, flag="run", metavar="RUN")
RESUME = Option(help="continue the run in this folder (its settings; options given with it "
                     "must be ones a resumed run can change)", kind=str, metavar="RUN")
EVAL = Option(help="evaluate the trained run in this folder on --data's test split instead "
                   "of training", kind=str, metavar="RUN")

_SEED_BOUNDS = dict(low=0, high=2**32 - 1)
_LR_BOUNDS = dict(low=0, low_open=True, high=100)
_SIZE = dict(low=1, high=1 << 16)          # embedding / hidden sizes
_COUNT = dict(low=1, high=10**9)           # steps and intervals
_OFF_OR_COUNT = dict(low=0, high=10**9)    # 0 switches the thing off


def device_option(default="cpu"):
    return declared(DEVICE, default)


def seed_option(default=0, help="random seed (data order, initial weights, dropout, sampling)"):
    return option(default, help, **_SEED_BOUNDS)


def last_option():
    return declared(LAST, False)


#: Data-parallel training (``mpiexec -n N tinyar train|classify``): how the gradients are
#: averaged over the ranks, and how many CPU threads each rank takes.
ALLREDUCE = Option(help="under mpiexec: average the gradients with one blocking all-reduce "
                        "after backward, or in buckets whose all-reduce starts while backward "
                        "goes on (ignored in a single process)", kind=str,
                   choices=("bucketed", "blocking"))
THREADS = Option(help="CPU threads (BLAS and Numba) of each process; 0: all cores in a "
                      "single process, cores / ranks on this machine under mpiexec",
                 kind=int, low=0, high=1 << 12)


def allreduce_option():
    return declared(ALLREDUCE, "bucketed")


def threads_option():
    return declared(THREADS, 0)


# --- checking values ----------------------------------------------------------------------------
def _num(x):
    """A bound as people write it: 1, 0.5, 1e-06, 4,294,967,295."""
    if isinstance(x, int) or float(x).is_integer() and abs(x) < 1e15:
        return f"{int(x):,}" if abs(x) >= 10_000 else str(int(x))
    return f"{x:g}"


#: Upper bounds from here on are sanity caps (no run has 10^9 steps): shown only when crossed.
SANITY_CAP = 10**6


def _bounds(opt):
    """The accepted range in symbols: '>= 1', 'in (0, 1]', '' (no bounds)."""
    low, high = opt.low, opt.high
    if low is not None and high is not None and high >= SANITY_CAP:
        high = None
    if low is not None and high is not None and high <= 1000:
        left, right = "(" if opt.low_open else "[", ")" if opt.high_open else "]"
        return f"in {left}{_num(low)}, {_num(high)}{right}"
    parts = []
    if low is not None:
        parts.append(f"{'>' if opt.low_open else '>='} {_num(low)}")
    if high is not None:
        parts.append(f"{'<' if opt.high_open else '<='} {_num(high)}")
    return " and ".join(parts)


def expected(opt):
    """What ``opt`` accepts, in words: 'an integer >= 1', 'a finite number in (0, 1]'."""
    if opt.kind is bool:
        return "no value (a flag)"
    if opt.choices:
        return "one of " + ", ".join(opt.choices)
    if opt.kind is str:
        return "a text" if opt.allow_empty and not opt.nonempty else "a non-empty text"
    if opt.count:
        noun = f"{opt.count} {'integers' if opt.kind is int else 'finite numbers'}"
    else:
        noun = "an integer" if opt.kind is int else "a finite number"
    bounds = _bounds(opt)
    return f"{noun} {bounds}" if bounds else noun


def show(value, limit=60):
    """A value as an error message quotes it (long texts shortened)."""
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else str(value)
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "...'"


def _refuse(flag, opt, value, typed=None):
    """The ConfigError for ``value`` (``typed``: the text the user typed for it). A number
    outside a wide range names the bound it crossed ('>= 1'); anything else gets the whole
    of what is accepted."""
    got = typed if typed is not None else show(value)
    what = expected(opt)
    number = isinstance(value, (int, float)) and not isinstance(value, bool) and \
        math.isfinite(value) and opt.kind in (int, float)
    if number and not _bounds(opt).startswith("in "):
        crossed_low = not _in_bounds(replace(opt, high=None), value)
        what = expected(replace(opt, high=None) if crossed_low else replace(opt, low=None))
    return ConfigError(f"{flag}: expected {what}, got {got}")


def _in_bounds(opt, x):
    if opt.low is not None and (x < opt.low or (opt.low_open and x == opt.low)):
        return False
    if opt.high is not None and (x > opt.high or (opt.high_open and x == opt.high)):
        return False
    return True


def _check_scalar(flag, opt, value, typed=None):
    """``value`` (a Python value) if ``opt`` accepts it, else ConfigError."""
    if value is None and opt.optional:
        return None
    if opt.kind is bool:
        if not isinstance(value, (bool, np.bool_)):
            raise ConfigError(f"{flag}: expected True or False, got {show(value)}")
        return bool(value)
    if opt.kind is str:
        if not isinstance(value, str):
            raise ConfigError(f"{flag}: expected a text, got {show(value)}")
        if "\x00" in value:
            raise ConfigError(f"{flag}: expected a text without NUL characters, got "
                              f"{show(value)}")
        if opt.choices and value not in opt.choices:
            raise _refuse(flag, opt, value)
        if opt.nonempty and not value.strip():
            raise _refuse(flag, opt, value)
        return value
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise _refuse(flag, opt, value, typed)
    if opt.kind is int:
        if not isinstance(value, numbers.Integral):
            raise _refuse(flag, opt, value, typed)
        value = int(value)
    else:
        try:
            value = float(value)
        except OverflowError:  # an integer too large for a float
            raise _refuse(flag, opt, value, typed) from None
        if not math.isfinite(value):
            raise _refuse(flag, opt, value, typed)
    if not _in_bounds(opt, value):
        raise _refuse(flag, opt, value, typed)
    return value


def check_value(name, opt, value):
    """``value`` of setting ``name`` as ``opt`` accepts it, or a ConfigError naming its flag."""
    flag = flag_of(name, opt)
    if opt.count:
        if not isinstance(value, (list, tuple)) or len(value) != opt.count:
            raise ConfigError(f"{flag}: expected {expected(opt)}, got {show(value)}")
        return [_check_scalar(flag, opt, v) for v in value]
    return _check_scalar(flag, opt, value)


def parse_text(name, opt, text):
    """The value of ``--flag TEXT`` typed on the command line (a string), checked."""
    flag = flag_of(name, opt)
    if opt.kind is str:
        if not text.strip() and not opt.allow_empty:
            raise _refuse(flag, opt, text)
        return check_value(name, opt, text)
    if "_" in text:  # Python reads "1_000" as 1000; a user means something else
        raise _refuse(flag, opt, text)
    try:
        value = int(text) if opt.kind is int else float(text)
    except ValueError:
        raise _refuse(flag, opt, text) from None
    return _check_scalar(flag, opt, value, typed=text.strip())


# --- the command line -----------------------------------------------------------------------
def _help(opt, default):
    text = opt.help
    if opt.kind is not bool:
        bounds = _bounds(opt) if opt.kind in (int, float) else ""
        if bounds:
            text += f"; {bounds}"
        if default is not None and default != "" and default != []:
            shown = " ".join(_num(v) for v in default) if isinstance(default, list) else \
                (_num(default) if isinstance(default, (int, float)) else default)
            text += f" (default: {shown})"
    return text.replace("%", "%%")  # argparse formats help with %


def _metavar(name, opt):
    if opt.metavar is not None:
        return opt.metavar
    if opt.choices:
        return "{" + ",".join(opt.choices) + "}"
    return {int: "N", float: "X", str: name.upper()}.get(opt.kind, None)


def add_argument(parser, name, opt, default=None):
    """Add setting ``name`` to an ``argparse`` parser. Values stay text (``given_options``
    converts and checks them), and an option not given is absent from the namespace."""
    flag = flag_of(name, opt)
    if not flag.startswith("-"):  # a positional argument, always given
        parser.add_argument(name, help=_help(opt, default), metavar=_metavar(name, opt))
        return
    if opt.kind is bool:
        parser.add_argument(flag, dest=name, action="store_true", default=argparse.SUPPRESS,
                            help=_help(opt, default))
        return
    parser.add_argument(flag, dest=name, default=argparse.SUPPRESS, help=_help(opt, default),
                        nargs=opt.count or None, metavar=_metavar(name, opt))


def add_arguments(parser, cls):
    """Add every declared setting of dataclass ``cls`` to ``parser``."""
    for name, opt, default in settings(cls):
        add_argument(parser, name, opt, default)
    return parser


def read_argument(args, name, opt):
    """The checked value of one option in an argparse namespace (None when not given)."""
    if not hasattr(args, name):
        return None
    raw = getattr(args, name)
    if opt.kind is bool:
        return bool(raw)
    if opt.count:
        return [parse_text(name, opt, text) for text in raw]
    return parse_text(name, opt, raw)


def given_options(args, cls):
    """{name: checked value} of the settings of ``cls`` given explicitly on the command line."""
    return {name: read_argument(args, name, opt) for name, opt, _ in settings(cls)
            if hasattr(args, name)}


# --- validation ---------------------------------------------------------------------------------
class Validated:
    """``validate()`` for a dataclass of declared settings."""

    def set_names(self, given=None):
        """The settings treated as chosen: ``given`` (names from the command line), else
        those that differ from their defaults."""
        if given is not None:
            return set(given)
        return {name for name, _, default in settings(type(self))
                if not _same(getattr(self, name), default)}

    def validate(self, given=None):
        """Raise ``ConfigError`` for the first value out of range or option without effect;
        return ``self``. ``given``: the names the user set explicitly (the command line);
        by default every setting that differs from its default counts as set."""
        declared = settings(type(self))
        for name, opt, _ in declared:
            setattr(self, name, check_value(name, opt, getattr(self, name)))
        chosen = self.set_names(given)
        for name, opt, _ in declared:
            if name not in chosen:
                continue
            for other, values in opt.needs:
                have = getattr(self, other)
                if have not in values:
                    other_flag = flag_of(other, _option(type(self), other))
                    raise ConfigError(f"{flag_of(name, opt)}: needs {other_flag} "
                                      f"{' or '.join(values)}, got {other_flag} {have}")
        self._check_combinations(chosen)
        return self

    def _check_combinations(self, chosen):
        """Rules between settings that ``needs`` cannot say (subclasses)."""


def _same(a, b):
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    try:
        return bool(a == b)
    except (TypeError, ValueError):
        return False


def _option(cls, name):
    for n, opt, _ in settings(cls):
        if n == name:
            return opt
    return None


def _flag(cls, name):
    return flag_of(name, _option(cls, name))


# --- the configs --------------------------------------------------------------------------------
@dataclass
class LMConfig(Validated):
    """Every setting of a language-model training run (saved with the checkpoint)."""
    data: str = option("stdlib", "stdlib | shakespeare | PATH (a text file or folder)",
                       nonempty=True, metavar="DATA")
    max_chars: int = option(2_000_000, "corpus size cap, in characters", low=2, high=10**12)
    level: str = option("char", "tokens: characters or words", choices=("char", "word"))
    vocab: int = option(10_000, "word level: keep the most frequent words", low=2, high=10**7,
                        needs=(("level", ("word",)),))
    backbone: str = option("rnn", "recurrent layers, causal dilated convolutions "
                                  "(WaveNet-like; use --layers 6..8 for a useful receptive "
                                  "field), or a GPT (causal self-attention)",
                           choices=("rnn", "conv", "transformer"))
    heads: int = option(4, "attention heads of the transformer (they divide --hidden)",
                        low=1, high=1 << 12, needs=(("backbone", ("transformer",)),))
    context: int = option(64, "transformer context: the longest window it sees; its training "
                              "windows (--bptt) default to it", low=1, high=1 << 16,
                          needs=(("backbone", ("transformer",)),))
    activation: str = option("gelu", "the transformer MLP's GELU: exact (erf) or tanh form",
                             choices=("gelu", "gelu_tanh"),
                             needs=(("backbone", ("transformer",)),))
    cell: str = option("lstm", "recurrent cell", choices=("lstm", "gru", "rnn"),
                       needs=(("backbone", ("rnn",)),))
    embed: int = option(64, "embedding size", **_SIZE)
    hidden: int = option(256, "hidden size", **_SIZE)
    layers: int = option(2, "recurrent (or convolution) layers", low=1, high=1024)
    dropout: float = option(0.0, "dropout probability", low=0, high=1, high_open=True)
    head: str = option("multilevel", "output layer: multi-level softmax (class, then token) "
                                     "or one flat softmax", choices=("multilevel", "flat"))
    classes: int = option(0, "classes of the multi-level head (0: about sqrt(vocabulary))",
                          low=0, high=10**7, needs=(("head", ("multilevel",)),))
    shortlist: int = option(0, "multi-level head: the N most frequent tokens each a class of "
                               "their own, predicted by the first level alone (Grave et al. "
                               "2017); the rest binned into --classes (0: none)",
                            low=0, high=10**7, needs=(("head", ("multilevel",)),))
    tie: bool = option(False, "tie the flat head's weights to the embedding (needs --head "
                              "flat and --embed equal to --hidden)",
                       needs=(("head", ("flat",)),))
    steps: int = option(600, "training steps", **_COUNT)
    epochs: float = option(0.0, "epochs over the training text, instead of --steps (0: use "
                                "--steps)", low=0, high=10**6)
    batch: int = option(32, "sequences per batch (of each rank under mpiexec: the batch is "
                            "ranks x --batch)", low=1, high=1 << 20)
    bptt: int = option(64, "truncated-BPTT length (tokens per sequence and step)", low=1,
                       high=1 << 20)
    lr: float = option(3e-3, "learning rate", **_LR_BOUNDS)
    optimizer: str = option("adam", "optimizer",
                            choices=("adam", "adamw", "sgd", "rmsprop", "adagrad"))
    weight_decay: float = option(0.0, "weight decay", low=0, high=100)
    clip: float = option(1.0, "gradient-norm clip (0: none)", low=0, high=1e6)
    warmup: int = option(50, "warm-up steps of the cosine schedule", low=0, high=10**9,
                         needs=(("schedule", ("cosine",)),))
    schedule: str = option("cosine", "learning-rate schedule", choices=("cosine", "constant"))
    eval_every: int = option(100, "validate every N steps", **_COUNT)
    eval_tokens: int = option(50_000, "validation tokens", low=1, high=10**12)
    sample_every: int = option(200, "generate a sample every N steps", **_COUNT)
    sample_tokens: int = option(200, "tokens per sample", low=1, high=10**6)
    checkpoint_every: int = option(200, "save a checkpoint every N steps", **_COUNT)
    early_stop: int = option(0, "stop after N validations without a better validation loss "
                                "(0: never)", **_OFF_OR_COUNT)
    record_every: int = option(25, "record gradient and activation statistics every N steps "
                                   "(0: off)", **_OFF_OR_COUNT)
    max_seconds: float = option(0.0, "stop after this much training time (0: no limit)",
                                low=0, high=1e8)
    device: str = device_option()
    allreduce: str = allreduce_option()
    threads: int = threads_option()
    seed: int = seed_option()
    out: str = option("", "run folder (default: runs/lm-DATE-TIME)", metavar="FOLDER")
    prompt: str = option("", "prompt of the samples shown during training",
                         allow_empty=True, metavar="TEXT")
    extra: dict = field(default_factory=dict)

    def _check_combinations(self, chosen):
        if self.backbone == "transformer":
            self._check_transformer(chosen)
        if self.tie and self.embed != self.hidden:
            raise ConfigError(f"--tie: needs --embed equal to --hidden, got --embed "
                              f"{self.embed} and --hidden {self.hidden}")
        if self.epochs > 0 and "steps" in chosen:
            raise ConfigError(f"--epochs: replaces --steps, give one of them; got --steps "
                              f"{self.steps} and --epochs {show(self.epochs)}")

    def _check_transformer(self, chosen):
        """A transformer's width is --hidden (its embedding too), split over --heads, and it
        trains on windows of --context tokens unless --bptt asks for shorter ones."""
        if "embed" in chosen and self.embed != self.hidden:
            raise ConfigError(f"--embed: a transformer's embedding is its width --hidden "
                              f"{self.hidden}, got --embed {self.embed}")
        self.embed = self.hidden
        if self.hidden % self.heads:
            raise ConfigError(f"--heads: must divide --hidden {self.hidden}, got {self.heads}")
        if "bptt" not in chosen:
            self.bptt = self.context
        elif self.bptt > self.context:
            raise ConfigError(f"--bptt: a transformer sees at most --context {self.context} "
                              f"tokens, got --bptt {self.bptt}")


#: Data sets tinyar knows by name (their hierarchy is built in).
BUILTIN_DATA = ("glyphs", "mnist", "fashion-mnist", "cifar10", "cifar100", "emnist")


@dataclass
class ClassifyConfig(Validated):
    """Every setting of a classifier training run (saved with the checkpoint)."""
    data: str = option("glyphs", "glyphs | mnist | fashion-mnist | cifar10 | cifar100 | "
                                 "FILE.npz | DIR (your own IDX or CIFAR files)", nonempty=True,
                       metavar="DATA")
    hierarchy: str = option("", "a built-in hierarchy's name, or a JSON file {coarse: [label "
                                "ids]}, for data given as a file or folder", metavar="FILE")
    train_size: int = option(20_000, "glyphs to render for training", low=1, high=10**7,
                             needs=(("data", ("glyphs",)),))
    test_size: int = option(4_000, "glyphs to render for the test set", low=1, high=10**7,
                            needs=(("data", ("glyphs",)),))
    label_fraction: float = option(1.0, "use only this fraction of the training labels",
                                   low=0, low_open=True, high=1)
    val_fraction: float = option(0.1, "fraction of the labelled training images held out to "
                                      "pick the best epoch", low=0, high=1, high_open=True)
    model: str = option("cnn", "convolutional network, or an RNN reading the image row by row",
                        choices=("cnn", "rnn"))
    arch: str = option("lenet", "CNN architecture", choices=("lenet", "vgg"),
                       needs=(("model", ("cnn",)),))
    cell: str = option("lstm", "row-RNN cell", choices=("lstm", "gru", "rnn"),
                       needs=(("model", ("rnn",)),))
    hidden: int = option(128, "row-RNN hidden size", **_SIZE, needs=(("model", ("rnn",)),))
    head: str = option("multilevel", "output layer: P(coarse) P(fine | coarse), or flat",
                       choices=("multilevel", "flat"))
    decode: str = option("joint", "multi-level prediction: the best (coarse, fine) pair, or "
                                  "the best coarse class first", choices=("joint", "greedy"),
                         needs=(("head", ("multilevel",)),))
    level_weights: list = option([1.0, 1.0], "loss weight of each level", count=2, low=0,
                                 high=1000, metavar=("COARSE", "FINE"),
                                 needs=(("head", ("multilevel",)),))
    weight_schedule: str = option("", "per-epoch level weights, e.g. "
                                      "'0:0.9,0.1;2:0.5,0.5;4:0.1,0.9'", metavar="SCHEDULE",
                                  needs=(("head", ("multilevel",)),))
    epochs: int = option(3, "training epochs", low=1, high=10**6)
    batch: int = option(64, "images per batch (of each rank under mpiexec: the batch is "
                            "ranks x --batch)", low=1, high=1 << 20)
    lr: float = option(2e-3, "learning rate", **_LR_BOUNDS)
    optimizer: str = option("adam", "optimizer", choices=("adam", "adamw", "sgd"))
    clip: float = option(5.0, "gradient-norm clip (0: none)", low=0, high=1e6)
    augment: bool = option(False, "random shifts and rotations of the training images")
    pretrain_steps: int = option(0, "autoregressive pre-training steps of the row RNN "
                                    "(--model rnn)", **_OFF_OR_COUNT,
                                 needs=(("model", ("rnn",)),))
    pretrain_lr: float = option(2e-3, "learning rate of the pre-training", **_LR_BOUNDS)
    early_stop: int = option(0, "stop after N epochs without a better validation loss "
                                "(0: never)", low=0, high=10**6)
    device: str = device_option()
    allreduce: str = allreduce_option()
    threads: int = threads_option()
    seed: int = seed_option()
    out: str = option("", "run folder (default: runs/classify-DATE-TIME)", metavar="FOLDER")

    def _check_combinations(self, chosen):
        if "hierarchy" in chosen and self.hierarchy and self.data in BUILTIN_DATA:
            raise ConfigError(f"--hierarchy: applies to data given as a file; --data "
                              f"{self.data} has its own hierarchy")
        if "pretrain_lr" in chosen and self.pretrain_steps == 0:
            raise ConfigError("--pretrain-lr: needs --pretrain-steps >= 1, got --pretrain-steps 0")
        wc, wf = self.level_weights
        if wc + wf == 0:
            raise ConfigError("--level-weights: expected two weights >= 0, not both 0, got 0 0")
        if self.weight_schedule:
            parse_weight_schedule(self.weight_schedule)
            if "level_weights" in chosen:
                raise ConfigError("--level-weights: --weight-schedule sets the weights of every "
                                  "epoch; give one of them, got both")


def parse_weight_schedule(text):
    """``"0:0.9,0.1;2:0.5,0.5"`` -> ``[(0, (0.9, 0.1)), (2, (0.5, 0.5))]``: from each epoch on,
    the (coarse, fine) loss weights. The first epoch is 0, epochs increase, weights are
    finite, >= 0 and not both 0; anything else is a ConfigError quoting the part."""
    form = "'EPOCH:COARSE,FINE;...' starting at epoch 0"
    milestones = []
    for part in text.split(";"):
        try:
            start, weights = part.split(":")
            wc, wf = (float(w) for w in weights.split(","))
            epoch = int(start.strip())
        except ValueError:
            raise ConfigError(f"--weight-schedule: expected {form}, got {show(part)} in "
                              f"{show(text)}") from None
        if not (math.isfinite(wc) and math.isfinite(wf)) or min(wc, wf) < 0 or wc + wf == 0 \
                or max(wc, wf) > 1000:
            raise ConfigError(f"--weight-schedule: expected weights in [0, 1000], not both 0, "
                              f"got {show(part)}")
        if milestones and epoch <= milestones[-1][0] or not milestones and epoch != 0:
            raise ConfigError(f"--weight-schedule: expected {form} with increasing epochs, got "
                              f"{show(text)}")
        milestones.append((epoch, (wc, wf)))
    return milestones


# --- the other commands -------------------------------------------------------------------------
@dataclass
class SampleOptions(Validated):
    """``tinyar sample RUN``: generate text from a trained language model."""
    prompt: str = option("", "text to continue (default: start from the most frequent token)",
                         allow_empty=True, metavar="TEXT")
    tokens: int = option(300, "tokens to generate", low=1, high=10**6)
    temperature: float = option(0.8, "softmax temperature: below 1 sharper, above 1 flatter, "
                                     "0 always the most likely token", low=0, high=100)
    top_k: int = option(None, "sample only among the k most likely tokens (default: among "
                              "all)", kind=int,
                        optional=True, low=1, high=10**7)
    seed: int = seed_option(help="random seed of the sampling")
    device: str = device_option()
    last: bool = last_option()

    def _check_combinations(self, chosen):
        if self.top_k is not None and self.temperature == 0:
            raise ConfigError(f"--top-k: has no effect with --temperature 0 (always the most "
                              f"likely token), got --top-k {self.top_k}")


@dataclass
class EvalOptions(Validated):
    """``tinyar eval RUN``: nats/token, perplexity and bits/char of a trained language model."""
    data: str = option(None, "stdlib | shakespeare | PATH (default: the run's own data)",
                       kind=str, optional=True, nonempty=True, metavar="DATA")
    split: str = option("val", "the validation split (the last 10%) or all of the text",
                        choices=("val", "all"))
    device: str = device_option()
    last: bool = last_option()


@dataclass
class DemoOptions(Validated):
    """``tinyar demo``: a small MLP learns the spiral."""
    out: str = option("runs/demo", "folder for the checkpoint, plots and log", nonempty=True,
                      metavar="FOLDER")
    steps: int = option(1500, "training steps", low=1, high=10**7)
    hidden: int = option(64, "hidden units per layer", low=1, high=4096)
    lr: float = option(0.01, "learning rate", **_LR_BOUNDS)
    seed: int = seed_option()


@dataclass
class GradcheckOptions(Validated):
    """``tinyar gradcheck``: backward against central differences."""
    tol: float = option(1e-6, "largest relative error accepted", low=0, low_open=True, high=1)
    seed: int = seed_option(help="random seed of the inputs and weights")
