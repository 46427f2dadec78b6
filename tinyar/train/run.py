"""The run folder that ``tinyar train`` and ``tinyar classify`` share, and what makes a run
safe to interrupt, resume and share.

A run folder holds one training run::

    .lock            the writer's lock (an flock; the kernel drops it when the process ends)
    model.npz        the last checkpoint: ONE consistent snapshot of weights, optimizer,
                     learning-rate schedule, random-generator state, data position, the
                     carried recurrent state and the history that goes with them
    best.npz         the model with the best validation loss so far (no optimizer state)
    log.json         the history, written from the checkpoint after each checkpoint
    ...              figures and text derived from the history (loss_curve.png, ...)

Rules the training loops follow (and this module implements):

* every file is written through ``tinyar.fileio`` (a fresh temporary name, then a
  rename: a symlink planted at a name is replaced, never written through), and every
  file of the folder is read with ``follow_symlinks=False``;
* the folder is locked (``fileio.RunLock``) before anything is written, and temporary
  files an earlier crash left behind are removed under the lock;
* the checkpoint is the source of truth: it is written first, the derived files after
  it, and a reader that finds ``log.json`` out of step with it rewrites it;
* a Ctrl-C that arrives while a step updates the weights is held until the update is
  complete (``Interrupts``), so a checkpoint never holds half an update;
* a save that fails at the end (a full disk, a removed folder) goes to a fresh folder
  under the system's temporary directory (or the current one), and says where.

Under ``mpiexec -n N`` (data parallelism, ``tinyar.distributed``) every rank runs the same
loop on its share of each batch, and the run folder is rank 0's alone: only rank 0 opens
(and locks) it, reads the checkpoint of a resumed run and writes; the other ranks receive
what they need from it (``root_first``, then broadcasts) and print nothing. Whatever could
make the ranks part ways is decided together:

* a failure of rank 0's setup (a folder already holding a run, an unreadable checkpoint, an
  option a resumed run cannot change) is sent to every rank before any other collective,
  and every rank stops with it (``AgreedFailure``): one message, no ``MPI_Abort``;
* the loss of a step is the mean over the ranks of theirs, so a diverging step is seen by
  all of them at once;
* Ctrl-C or SIGTERM on any rank (``mpiexec`` passes them on) only raises a flag, carried in
  that same per-step all-reduce of the loss; when any rank has raised it, every rank stops
  before the step's update, and rank 0 writes one checkpoint;
* any other exception on one rank ends the job (``abort_on_exception`` in ``cli.py``).
"""
import contextlib
import os
import signal
import sys
import tempfile
import threading
import time

import numpy as np

from .. import checkpoint, fileio
from ..distributed import (allreduce_mean, allreduce_sum, broadcast_json, broadcast_model,
                           broadcast_optimizer, configure_threads, cuda_aware, device_for_rank,
                           rank_seed)
from ..errors import (CheckpointError, ConfigError, DeviceError, FileError, NumericalError,
                      TinyarError)
from ..random import manual_seed

LAST, BEST = "model.npz", "best.npz"
LOG = "log.json"
PROBE = ".write-probe"
WHICH = {"last": LAST, "best": BEST}


def note(message):
    """A one-line note for the user, on stderr (so that stdout stays the result)."""
    print(f"note: {message}", file=sys.stderr)


# --- the folder -------------------------------------------------------------------------------
class RunFolder:
    """A run folder: its paths, its lock, safe reads and writes.

        run = RunFolder("runs/lm-1")
        run.open_for_writing()          # create, lock, clean, check it can be written
        run.write_json("log.json", log)
        run.close()
    """

    def __init__(self, folder):
        self.folder = os.fspath(folder)
        self.lock = None
        self._created = []  # the folders this run created (removed again if it fails early)

    def __repr__(self):
        return f"RunFolder({self.folder!r})"

    def path(self, name):
        return os.path.join(self.folder, name)

    def has(self, name):
        """Whether anything (a file, a link, a folder) is at ``name``."""
        return os.path.lexists(self.path(name))

    # --- opening and closing ---------------------------------------------------------------
    def open_for_writing(self, fresh):
        """Create the folder if needed, lock it, remove leftover temporary files and try a
        write, so that a folder that cannot hold the run fails now, not after training.

        ``fresh``: a new run, which must not replace a run already in the folder.
        Returns the names of the leftovers removed.
        """
        if os.path.lexists(self.folder) and not os.path.isdir(self.folder):
            raise ConfigError(f"--out: expected a folder for the run, got {self.folder!r}, "
                              f"which is a file")
        self._make_folders()
        self.lock = fileio.RunLock(self.folder).acquire()
        try:
            if fresh and self.has(LAST):
                raise ConfigError(f"--out: {self.folder!r} already holds a training run "
                                  f"({LAST}); continue it with --resume {self.folder}, or choose "
                                  f"another --out")
            removed = fileio.remove_leftovers(self.folder)
            fileio.write_text(self.path(PROBE), "tinyar checks that it can write here\n")
            os.unlink(self.path(PROBE))
        except BaseException:
            self.close(abandon=True)
            raise
        return removed

    def _make_folders(self):
        missing, folder = [], os.path.abspath(self.folder)
        while not os.path.lexists(folder):
            missing.append(folder)
            folder = os.path.dirname(folder)
        try:
            os.makedirs(self.folder, exist_ok=True)
        except OSError as exc:
            raise FileError(f"--out: cannot create the run folder {self.folder!r}: "
                            f"{exc.strerror or exc}") from None
        self._created = missing

    def close(self, abandon=False):
        """Release the lock. ``abandon``: the run failed before writing anything, so the
        folders it created (holding nothing but the lock file) are removed again."""
        if self.lock is not None:
            self.lock.release()
            self.lock = None
        if abandon:
            for folder in self._created:  # deepest first
                with contextlib.suppress(OSError):
                    if os.listdir(folder) in ([], [fileio.LOCK_NAME]):
                        with contextlib.suppress(FileNotFoundError):
                            os.unlink(os.path.join(folder, fileio.LOCK_NAME))
                        os.rmdir(folder)
        self._created = []

    # --- writing ---------------------------------------------------------------------------
    def write_json(self, name, obj, indent=None):
        return fileio.write_json(self.path(name), obj, indent)

    def write_text(self, name, text):
        return fileio.write_text(self.path(name), text)

    def write_figure(self, name, figure):
        """A matplotlib ``Figure`` as PNG, through a temporary file and a rename."""
        with fileio.atomic_write(self.path(name), "wb") as f:
            figure.savefig(f, format="png")
        return self.path(name)

    def save_checkpoint(self, name, model, meta, optimizer=None, extra=None):
        return checkpoint.save(model, self.path(name), meta=meta, optimizer=optimizer,
                               extra=extra)

    # --- reading ---------------------------------------------------------------------------
    def read_json(self, name, max_bytes=fileio.MAX_JSON_BYTES):
        return fileio.read_json(self.path(name), max_bytes, follow_symlinks=False,
                                what=name)

    def read_meta(self, name=LAST):
        return checkpoint.read_meta(self.path(name), follow_symlinks=False)

    def load_meta(self, which="last"):
        """The ``meta`` saved in the checkpoint ``which`` ("last" or "best")."""
        return self.read_meta(self.checkpoint_name(which))

    def read_extra(self, name=LAST):
        return checkpoint.read_extra(self.path(name), follow_symlinks=False)

    def checkpoint_name(self, which="best", quiet=False):
        """``best.npz`` or ``model.npz``; an older run folder without ``best.npz`` falls
        back to ``model.npz`` with a note."""
        if which not in WHICH:
            raise ConfigError(f"which: expected 'best' or 'last', got {which!r}")
        if not os.path.isdir(self.folder):
            raise CheckpointError(f"{self.folder!r} is not a tinyar run folder: there is no "
                                  f"such folder")
        if not self.has(LAST) and not self.has(BEST):
            raise CheckpointError(f"{self.folder!r} is not a tinyar run folder: it has no "
                                  f"{LAST}")
        if which == "best" and not self.has(BEST):
            if not quiet:
                note(f"{self.folder} has no {BEST} (a run from an older tinyar, or one that "
                     f"never evaluated): using {LAST}, the last checkpoint")
            return LAST
        if which == "last" and not self.has(LAST):
            raise CheckpointError(f"{self.folder!r} has no {LAST}")
        return WHICH[which]


def default_folder(prefix):
    """``runs/PREFIX-DATE-TIME``, with a counter when that name is taken."""
    base = os.path.join("runs", time.strftime(f"{prefix}-%Y%m%d-%H%M%S"))
    folder, n = base, 1
    while os.path.lexists(folder):
        n += 1
        folder = f"{base}-{n}"
    return folder


def rescue_folder(prefix):
    """A fresh folder for a run that could not be saved where it belonged: under the
    system's temporary directory, or else the current directory."""
    for parent in (None, os.getcwd()):
        with contextlib.suppress(OSError):
            return tempfile.mkdtemp(prefix=f"tinyar-{prefix}-rescued-", dir=parent)
    raise FileError("cannot create a folder to rescue the run in, neither under the "
                    "temporary directory nor in the current directory")


def save_or_rescue(run, prefix, write):
    """``write(folder)`` into ``run``; when that fails with a file error (a full disk, a
    removed or read-only folder), into a fresh rescue folder, saying where on stderr.
    Returns the folder the files are in."""
    try:
        write(run)
        return run.folder
    except (FileError, OSError) as exc:
        first = exc
    rescue = RunFolder(rescue_folder(prefix))
    try:
        write(rescue)
    except (FileError, OSError) as exc:
        raise FileError(f"could not save the run in {run.folder!r} ({first}) nor in "
                        f"{rescue.folder!r} ({exc})") from None
    print(f"tinyar: error: could not save the run in {run.folder!r} ({first}); saved it in "
          f"{rescue.folder!r} instead", file=sys.stderr)
    return rescue.folder


# --- options on resume ------------------------------------------------------------------------
def flag(name):
    return "--" + name.replace("_", "-")


def apply_overrides(config, overrides, allowed):
    """Set the options a user gave with ``--resume`` on the run's saved ``config``.

    An option in ``allowed`` is applied; any other one that differs from the saved value
    is refused with a ``ConfigError`` naming every such option (a resumed run keeps its
    model, data and optimizer settings, which the checkpoint was made with).
    """
    overrides = {k: v for k, v in (overrides or {}).items() if k != "resume" and v is not None}
    refused = [k for k, v in overrides.items()
               if k not in allowed and (not hasattr(config, k) or getattr(config, k) != v)]
    if refused:
        saved = ", ".join(f"{flag(k)} {getattr(config, k)!r}" for k in refused
                          if hasattr(config, k))
        raise ConfigError(f"--resume: {', '.join(flag(k) for k in refused)} cannot change when "
                          f"a run is resumed (the run was made with {saved or 'other options'}); "
                          f"allowed: {', '.join(flag(k) for k in sorted(allowed))}")
    for key, value in overrides.items():
        if key in allowed:
            setattr(config, key, value)
    return config


def config_from_meta(cls, meta, path):
    """The saved settings of a run as a ``cls`` dataclass, with clear errors."""
    saved = meta_field(meta, "config", dict, path)
    names = {f for f in cls.__dataclass_fields__}
    unknown = sorted(set(saved) - names)
    if unknown:
        raise CheckpointError(f"{path}: its config has unknown settings {unknown} (a run of "
                              f"another tinyar version or another kind of model?)")
    try:
        return cls(**saved)
    except TypeError as exc:
        raise CheckpointError(f"{path}: its config cannot be used ({exc})") from None


def validate(config):
    """``config.validate()`` when the config class has it (the option checks)."""
    check = getattr(config, "validate", None)
    if check is not None:
        check()


def rebuilt(path, what, build):
    """``build()`` (a tokenizer, a hierarchy from a checkpoint's meta), with any tinyar error
    it raises turned into one ``CheckpointError`` naming the file and ``what`` could not be
    used (a CheckpointError already names the file and passes as it is)."""
    try:
        return build()
    except CheckpointError:
        raise
    except TinyarError as exc:
        raise CheckpointError(f"{path}: its {what} cannot be used ({exc})") from None


def meta_field(meta, key, kind, path):
    """``meta[key]``, checked to be of type ``kind``: a malformed checkpoint gives one line."""
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: its metadata is a {type(meta).__name__}, not a dict "
                              f"(not a checkpoint of tinyar train or classify)")
    if key not in meta:
        raise CheckpointError(f"{path}: its metadata has no {key!r} (not a checkpoint of "
                              f"tinyar train or classify, or a damaged one)")
    value = meta[key]
    if not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise CheckpointError(f"{path}: its metadata {key!r} is a {type(value).__name__}, "
                              f"expected a {names}")
    return value


def check_kind(meta, expected, path):
    """Refuse a checkpoint of the other kind of run (a classifier given to ``sample``)."""
    kind = meta.get("kind") if isinstance(meta, dict) else None
    if kind is None and isinstance(meta, dict) and "tokenizer" in meta:
        kind = "language_model"  # older language-model runs have no "kind"
    if kind != expected:
        what = {"language_model": "a language-model run of tinyar train",
                "classifier": "a classifier run of tinyar classify"}
        known = what.get(kind) if isinstance(kind, str) else None
        raise CheckpointError(f"{path} is {known or 'not a run of tinyar train or classify'}"
                              f"; expected {what[expected]}")


# --- Ctrl-C between steps ---------------------------------------------------------------------
class Interrupts:
    """Hold Ctrl-C (SIGINT) while a step updates the weights, and deliver it right after.

        with Interrupts() as interrupts:
            ...                                 # Ctrl-C here raises KeyboardInterrupt at once
            with interrupts.critical():
                optimizer.step(); scheduler.step(); ...   # Ctrl-C here waits for the end

    Without this, a Ctrl-C could land between two parameter updates, and the saved
    checkpoint would hold weights of one step with optimizer moments of the next.
    Works only in the main thread (Python delivers signals there); elsewhere it does
    nothing.

    ``Interrupts(world)`` with more than one rank: SIGINT and SIGTERM never raise; they set
    ``requested``, which the training loop sends with the step's loss
    (``TrainingRun.step_figures``), so that all ranks stop at the same step: a rank that
    raised on its own would leave the others waiting in a collective.
    """

    def __init__(self, world=None):
        self.depth, self.pending, self.requested = 0, False, False
        self.shared = world is not None and world.size > 1
        self._previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            names = (signal.SIGINT, signal.SIGTERM) if self.shared else (signal.SIGINT,)
            for signum in names:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc):
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous = {}

    def _handle(self, signum, frame):
        if self.shared:
            self.requested = True
        elif self.depth:
            self.pending = True
        else:
            raise KeyboardInterrupt

    @contextlib.contextmanager
    def critical(self, deliver=True):
        self.depth += 1
        try:
            yield
        finally:
            self.depth -= 1
        if deliver and self.depth == 0 and self.pending:
            self.pending = False
            raise KeyboardInterrupt


# --- several ranks (mpiexec) ------------------------------------------------------------------
class AgreedFailure(TinyarError):
    """A failure every rank knows of (``root_first``, ``together``): the command ends on
    every rank without ``MPI_Abort``, each with exit status 2. ``original``: the exception
    of the rank that prints it (``loud``); the other ranks print nothing."""

    def __init__(self, message, original=None):
        super().__init__(message)
        self.original = original
        self.loud = original is not None


def agreed(error, world):
    """``error`` as every rank raises it when all met it together (a diverged loss: each saw
    the same averaged figure): an ``AgreedFailure`` that rank 0 alone prints, so the job
    ends with one message and without ``MPI_Abort``. ``error`` itself in one process."""
    if world.size == 1:
        return error
    return AgreedFailure(str(error), error if world.is_root else None)


def root_first(world, work):
    """``work()`` on rank 0 alone; its value (JSON-able) is then sent to every rank, or,
    when it raised a tinyar error, a ValueError or an OSError, every rank raises
    ``AgreedFailure`` (rank 0's is loud). For what only rank 0 does (its run folder, its
    checkpoint), before any other collective, so that a failure there ends the job with
    one message. Any other exception is a bug: it propagates on rank 0, where
    ``abort_on_exception`` ends the job. A single process just returns ``work()``."""
    if world.size == 1:
        return work()
    answer = None
    if world.is_root:
        try:
            answer = {"value": work()}
        except (TinyarError, ValueError, OSError) as exc:
            failure = exc
            answer = {"error": str(exc) or type(exc).__name__}
    answer = broadcast_json(answer, world)
    if "error" in answer:
        raise AgreedFailure(answer["error"], failure if world.is_root else None)
    return answer["value"]


def together(world, work):
    """``work()`` on every rank, then every rank learns whether any failed (one all-reduce):
    if so, every rank raises ``AgreedFailure``, and only one of the failed ranks prints its
    message (rank 0 when it is one of them). For setup every rank does alike (reading the
    data, building the model), where they would all fail the same way. Returns the value of
    ``work()``."""
    if world.size == 1:
        return work()
    failure, value = None, None
    try:
        value = work()
    except (TinyarError, ValueError, OSError) as exc:
        failure = exc
    mine = 0.0 if failure is None else 1.0
    root_failed, failed = allreduce_sum([mine if world.is_root else 0.0, mine], world)
    if failed:
        if failure is None:
            raise AgreedFailure("another rank failed (see its message)")
        loud = world.is_root or not root_failed
        raise AgreedFailure(str(failure), failure if loud else None) from failure
    return value


def use_threads(world, threads):
    """Give each process its CPU threads: ``threads`` (the ``--threads`` option), or with 0
    the share of this machine's cores of each rank under mpiexec. Returns the count, or None
    for a single process left with all its cores (as without the option)."""
    if threads or world.size > 1:
        return configure_threads(world, threads or None)
    return None


def use_rank_gpu(world, device):
    """Under mpiexec with ``--device cuda``: this rank's GPU, ``local_rank % GPUs`` (chosen
    before the first CUDA call of the process). Returns (its number, the GPUs of this
    machine), or None."""
    if device != "cuda" or world.size == 1:
        return None
    from numba import cuda
    try:
        count = len(cuda.gpus)
    except Exception as exc:  # the simulator, a broken driver: the default device
        raise DeviceError(f"--device cuda: cannot count the GPUs of this machine ({exc})") \
            from None
    index = device_for_rank(world, count)
    cuda.select_device(index)
    return index, count


def describe_world(world, threads):
    """``2 ranks x 1 thread``, ``4 threads``, or '' for a plain single process."""
    threads_text = f"{threads} thread{'s' if threads != 1 else ''}" if threads else ""
    if world.size == 1:
        return threads_text
    return f"{world.size} ranks" + (f" x {threads_text}" if threads_text else "")


def rank_batch(meta, config, world, path, unit):
    """Each rank's batch when a run is resumed on ``world``: the run's global batch (saved
    with its checkpoint; ``--batch`` for a run of one process) over the ranks. ``unit``:
    what a batch holds ("sequences", "images"), for the message."""
    saved = meta.get("world")
    total = saved.get("global_batch") if isinstance(saved, dict) else config.batch
    if isinstance(total, bool) or not isinstance(total, int) or total < 1:
        raise CheckpointError(f"{path}: its global batch {total!r} is not an integer >= 1")
    if total % world.size:
        raise ConfigError(f"--resume: the run's batch of {total} {unit} cannot be split "
                          f"evenly over {world.size} ranks; resume it with a number of ranks "
                          f"that divides {total}")
    return total // world.size


# --- pieces of a snapshot ---------------------------------------------------------------------
def rng_state():
    from ..random import generator
    return generator().bit_generator.state


def set_rng_state(state, path):
    from ..random import generator
    try:
        generator().bit_generator.state = state
    except (TypeError, ValueError, KeyError) as exc:
        raise CheckpointError(f"{path}: its random-generator state cannot be restored "
                              f"({exc})") from None


def buffer_copies(model):
    """Host copies of the model's buffers (BatchNorm statistics), which a forward changes:
    restored when a step is abandoned half-way, so the checkpoint keeps the step's start."""
    from ..device import to_host
    return {name: np.array(to_host(getattr(module, attr)))
            for name, module, attr in model.named_buffers()}


def restore_buffers(model, copies):
    if copies:
        model.load_state_dict(copies, strict=False)


def weights_finite(model):
    from ..device import to_host
    return bool(np.isfinite(to_host(model.flat_parameters().data)).all())


def is_finite(value):
    return value is not None and bool(np.isfinite(value))


class Best:
    """The best validation loss so far, its step, and how many evaluations since.

    ``update(step, loss)`` -> True when ``loss`` is a new best. Non-finite losses never
    are. The state is plain numbers, saved in the checkpoint's meta.
    """

    def __init__(self, state=None):
        state = state if isinstance(state, dict) else {}
        self.step, self.loss = state.get("step"), state.get("val_loss")
        self.since = int(state.get("evals_since", 0) or 0)
        if not isinstance(self.loss, (int, float)) or not np.isfinite(self.loss):
            self.step, self.loss = None, None

    def update(self, step, loss):
        if is_finite(loss) and (self.loss is None or loss < self.loss):
            self.step, self.loss, self.since = int(step), float(loss), 0
            return True
        self.since += 1
        return False

    def to_dict(self):
        return {"step": self.step, "val_loss": self.loss, "evals_since": self.since}


def sync_log(run, log, step):
    """Rewrite ``log.json`` from the checkpoint when it is missing, unreadable or holds
    another step than the checkpoint (a crash between the two writes)."""
    try:
        saved = run.read_json(LOG)
        saved_step = saved["progress"]["step"] if isinstance(saved, dict) else None
    except (FileError, KeyError, TypeError):
        saved_step = "unreadable"
    if saved_step != step:
        where = "missing or unreadable" if saved_step == "unreadable" else f"at step {saved_step}"
        note(f"{run.path(LOG)} was {where}, the checkpoint at step {step}: rewritten from the "
             f"checkpoint")
        run.write_json(LOG, log)


def figure_of(draw, *args, **kwargs):
    """The matplotlib Figure that a ``plot_*(path, ...)`` function returns for path=None."""
    return draw(None, *args, **kwargs)


# --- the recorder of gradient statistics, continued over a resume ------------------------------
def recorder_prefix(run, upto_step):
    """What ``recorder.json`` holds for steps <= ``upto_step`` (the checkpoint's), so that a
    resumed run's recorder continues it; None when there is nothing usable."""
    if not run.has("recorder.json"):
        return None
    try:
        saved = run.read_json("recorder.json")
        keep = [i for i, s in enumerate(saved["steps"]) if int(s) <= upto_step]
        cut = lambda series: [series[i] for i in keep]  # noqa: E731
        return {"steps": cut(saved["steps"]),
                "parameters": {name: {k: cut(v) for k, v in s.items()}
                               for name, s in saved["parameters"].items()},
                "activations": {name: {k: (cut(v) if isinstance(v, list) else v)
                                       for k, v in s.items()}
                                for name, s in saved["activations"].items()},
                "histograms": [h for h in saved["histograms"] if int(h["step"]) <= upto_step]}
    except (FileError, KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
        note(f"{run.path('recorder.json')} cannot be continued ({exc}); the recorder starts "
             f"afresh at step {upto_step + 1}")
        return None


def merge_records(prefix, current):
    """``prefix`` (steps before the resume) followed by ``current`` (the recorder's dict)."""
    if prefix is None:
        return current
    merged = dict(current)
    merged["steps"] = prefix["steps"] + current["steps"]
    n_old = len(prefix["steps"])

    def join(old, new, n_new):
        out = {}
        for key in set(old) | set(new):
            a, b = old.get(key), new.get(key)
            if isinstance(a, list) or isinstance(b, list):
                a = a if isinstance(a, list) else [None] * n_old
                b = b if isinstance(b, list) else [None] * n_new
                out[key] = a + b
            else:
                out[key] = b if b is not None else a
        return out

    n_new = len(current["steps"])
    merged["parameters"] = {name: join(prefix["parameters"].get(name, {}), s, n_new)
                            for name, s in current["parameters"].items()}
    merged["activations"] = {name: join(prefix["activations"].get(name, {}), s, n_new)
                             for name, s in current["activations"].items()}
    merged["histograms"] = prefix["histograms"] + current["histograms"]
    return merged


def start_recorder_at(recorder, step):
    """A new ``Recorder`` counts steps from 1; a resumed run's continues at ``step``."""
    if hasattr(recorder, "_step") and hasattr(recorder, "_snapshot"):
        recorder._step = int(step)
        recorder._snapshot()


# --- what both training loops do the same way --------------------------------------------
class TrainingRun:
    """The parts of a training run that ``LMTraining`` (``lm.py``) and ``ClassifierTraining``
    (``classify.py``) share: resuming, saving (with a rescue folder), keeping ``best.npz``,
    and what happens on Ctrl-C or a diverging loss. A subclass sets ``COMMAND`` (the
    ``tinyar`` subcommand, for messages) and provides ``meta()``, ``write(run, with_best)``
    and ``_resume_from(path, overrides)``."""

    COMMAND = None

    def open_resumed(self, folder, overrides):
        """Continue the run in ``folder``. Rank 0 opens it and reads its checkpoint
        (``_resume_from``, which returns what the other ranks need: JSON); under mpiexec
        the other ranks then rebuild the run from that (``_follow_resume``) and every rank
        takes rank 0's weights and optimizer state (``_share_resumed``)."""
        world = self.world
        self.run = run = RunFolder(folder)

        def read():
            path = run.path(run.checkpoint_name("last"))
            run.open_for_writing(fresh=False)
            try:
                return self._resume_from(path, overrides)
            except BaseException:
                run.close()
                raise
        shared = root_first(world, read)
        if world.size == 1:
            return
        try:
            together(world, lambda: None if world.is_root else self._follow_resume(shared))
            self._share_resumed()
        except BaseException:
            run.close()
            raise

    def _use_resources(self):
        """This rank's GPU (under mpiexec) and CPU threads; the global batch."""
        self.rank_gpu = use_rank_gpu(self.world, self.config.device)
        self.threads = use_threads(self.world, self.config.threads)
        self.global_batch = self.config.batch * self.world.size

    def _placement(self):
        """(where, gpus): the ranks and threads in use with the all-reduce mode (``2 ranks x
        1 thread, bucketed all-reduce``; for the progress bar and the start line), and under
        mpiexec with ``--device cuda`` which GPU each rank took and how its gradients travel
        (``, GPU = local rank mod 2, gradients through host memory``; the start line's)."""
        where = describe_world(self.world, self.threads)
        if self.world.size > 1:
            where += f", {self.config.allreduce} all-reduce"
        gpus = ""
        if self.rank_gpu is not None:
            path = "a CUDA-aware MPI" if cuda_aware() else "host memory"
            gpus = f", GPU = local rank mod {self.rank_gpu[1]}, gradients through {path}"
        return where, gpus

    def _share_resumed(self):
        """Every rank: rank 0's weights and optimizer state; every rank but 0 its own random
        stream (rank 0 goes on with the checkpoint's)."""
        world = self.world
        broadcast_model(self.model, world)
        broadcast_optimizer(self.optimizer, world)
        if not world.is_root:
            manual_seed(rank_seed(self.config.seed, world) ^ self.progress["step"])

    def _check_best_file(self):
        """``best.npz`` must be the checkpoint of ``best.step`` (a crash can fall between the
        two writes); rewritten when the loaded weights are that step's, else tracked afresh."""
        step = self.progress["step"]
        if self.best.step is None:
            return
        try:
            saved = self.run.read_meta(BEST)["progress"]["step"]
        except (TinyarError, OSError, KeyError, TypeError):
            saved = None
        if saved == self.best.step:
            return
        if self.best.step == step:
            self._save_best(self.run)
            return
        note(f"{self.run.path(BEST)} is not the checkpoint of the best step {self.best.step}: "
             f"removed; the best model is tracked afresh from step {step + 1}")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.run.path(BEST))  # not the run's best: never loaded as if it were
        self.best = Best()

    def _best_meta(self):
        meta = self.meta()
        meta.update(progress={"step": self.best.step}, history=None, scheduler=None,
                    which="best")
        return meta

    def _save_best(self, run):
        """``best.npz``: the current weights when they are the best, else the kept copy."""
        if self.best.step == self.progress["step"]:
            run.save_checkpoint(BEST, self.model, self._best_meta())
        elif self.best_weights is not None:
            current = self.model.state_dict()
            self.model.load_state_dict(self.best_weights)
            try:
                run.save_checkpoint(BEST, self.model, self._best_meta())
            finally:
                self.model.load_state_dict(current)

    def step_figures(self, loss, parts=None):
        """(loss, parts) of a step as the whole batch has them: under mpiexec the mean over
        the ranks of each rank's ``loss`` and ``parts`` (a dict of named losses), in one
        all-reduce that also carries this rank's stop request (``Interrupts``). When any rank
        asked to stop, every rank raises KeyboardInterrupt here, at the same step."""
        parts = dict(parts or {})
        if self.world.size == 1:
            return loss, parts
        names = list(parts)
        values = allreduce_mean([loss, *(parts[k] for k in names),
                                 1.0 if self.interrupts.requested else 0.0], self.world)
        if values[-1] > 0:
            raise KeyboardInterrupt
        return float(values[0]), {k: float(v) for k, v in zip(names, values[1:-1])}

    def gather_for_save(self):
        """Collect on rank 0 what the checkpoint needs from every rank (a collective, made
        by every rank before each save); nothing by default."""

    def save(self, final=False):
        """A checkpoint now (``final``: into a rescue folder if the run folder fails). Under
        mpiexec every rank calls it, and rank 0 alone writes."""
        step = self.progress["step"]
        with_best = self.best.step == step
        self.gather_for_save()
        if not self.world.is_root:
            self.saved_step, self.last_save = step, time.perf_counter()
            return self.run.folder
        with self.interrupts.critical(deliver=False):
            if final:
                folder = save_or_rescue(self.run, self.RESCUE_PREFIX,
                                        lambda run: self.write(run, with_best or
                                                               run is not self.run))
            else:
                try:
                    self.write(self.run, with_best)
                    folder = self.run.folder
                except (OSError, FileError) as exc:  # keep training: the last save rescues
                    print(f"tinyar {self.COMMAND}: warning: checkpoint at step {step} not "
                          f"saved ({exc})", file=sys.stderr)
                    return None
        self.saved_step, self.last_save = step, time.perf_counter()
        if self.interrupts.pending and not final:
            self.interrupts.pending = False
            raise KeyboardInterrupt
        return folder

    def _position(self):
        """Where training stands, for the interruption message."""
        return f"step {self.progress['step']}"

    def interrupted(self):
        resume = f"tinyar {self.COMMAND} --resume"
        if self.phase == "update":
            if not self.world.is_root:
                return
            print(f"\ninterrupted in the middle of an update: the checkpoint of step "
                  f"{self.saved_step} in {self.run.folder} is kept; continue with: "
                  f"{resume} {self.run.folder}")
            return
        if self.phase == "compute":
            restore_buffers(self.model, self.buffers)
        self.phase = "idle"
        folder = self.save(final=True)
        if self.world.is_root:
            print(f"\ninterrupted at {self._position()}: checkpoint saved in {folder}; "
                  f"continue with: {resume} {folder}")

    def diverged(self, what, value):
        step = self.progress["step"] + 1
        self.bar.close()
        restore_buffers(self.model, self.buffers)
        self.phase = "idle"
        if weights_finite(self.model):
            folder = self.save(final=True)
            kept = f"the state after step {step - 1} is saved in {folder}"
        else:
            kept = f"the checkpoint of step {self.saved_step} in {self.run.folder} is kept"
        raise agreed(NumericalError(
            f"step {step}: the {what} is {value} (training diverged); {kept}; start again "
            f"with a lower --lr (now {self.config.lr:g}) or a --clip"), self.world)
