"""Training, sampling and evaluating the autoregressive language model.

``train_lm(config)`` is the whole loop:

    text -> tokenizer -> ids -> 90/10 split -> (x, y) stream batches
    for each step: loss, state = model.loss(x, y, state)     # truncated BPTT
                   model.backward(); clip; optimizer.step(); scheduler.step()
                   every few steps: validation loss, a generated sample
    saves into the run folder (``train/run.py``): model.npz (the last checkpoint: weights,
    optimizer, schedule, random state, data position, the carried recurrent state and
    the history), best.npz (the best validation loss so far), vocab.json, hierarchy.json,
    log.json, recorder.json, loss_curve.png, samples.txt

Everything is checked before the first step: the options (``config.validate()``), the
run folder (created, locked, written once), the data and what depends on it (the
prompt must encode in the vocabulary, ``--classes`` must fit it, one batch must fit the
training text). Ctrl-C saves a checkpoint; ``train_lm(config, resume=RUN)`` continues
it and gives the same losses, bit for bit on the CPU, as a run that was never stopped.

Options a resumed run may change (``RESUMABLE``): how long it trains (``steps``,
``epochs``, ``max_seconds``, ``early_stop``), where (``device``), and how often it
reports (``eval_every``, ``sample_every``, ``checkpoint_every``, ``sample_tokens``,
``prompt``). The others (model, data, optimizer, seed, ``out``) made the checkpoint
and are refused. ``max_seconds`` counts the run's whole training time, earlier parts
included. New ``steps`` stretch the cosine schedule to the new length.

Under ``mpiexec -n N`` the run is data-parallel (``tinyar.distributed``): ``--batch`` is
each rank's, the stream batcher is built for the global batch of N x ``--batch`` rows and
rank r takes rows r, r + N, ... of every batch (each row a stream whose recurrent state
stays on its rank), gradients are averaged over the ranks before clipping, the loss and
the validation loss are the whole batch's and the whole validation text's, so N ranks
compute what one process computes at N times the batch (to float rounding). Rank 0 alone
prints, samples and writes; the checkpoint holds the carried state of every row (the
global batch) and the number of ranks, and a run may be resumed with another number of
ranks that divides its global batch. ``--allreduce`` and ``--threads`` may change then too.
"""
import hashlib
import math
import sys
import time
from dataclasses import asdict

import numpy as np

from .. import checkpoint
from ..data import CharTokenizer, StreamBatcher, Tokenizer, WordTokenizer, load_corpus, split
from ..nn.hierarchy import ClassHierarchy
from ..device import device_of, to_device, to_host
from ..distributed import (GradientAverager, allreduce_sum, broadcast_json, broadcast_model,
                           rank_rows, rank_seed, rank_share)
from ..distributed import world as current_world
from ..errors import CheckpointError, ConfigError, ShapeError, TinyarError
from ..models import AutoregressiveLM, bits_per_token, perplexity
from ..optim import SGD, Adagrad, Adam, AdamW, RMSprop, clip_grad_norm_
from ..optim.lr_scheduler import CosineAnnealingLR
from ..progress import ProgressBar
from ..random import manual_seed
from .config import LMConfig
from .placement import check_device, place
from .run import (LAST, LOG, Best, Interrupts, RunFolder, TrainingRun, apply_overrides,
                  buffer_copies, check_kind, config_from_meta, default_folder, figure_of,
                  is_finite, merge_records, meta_field, rank_batch, rebuilt, recorder_prefix,
                  rng_state, root_first, set_rng_state, start_recorder_at, sync_log, together,
                  validate)

OPTIMIZERS = {"adam": Adam, "adamw": AdamW, "sgd": SGD, "rmsprop": RMSprop, "adagrad": Adagrad}
RESUMABLE = frozenset({"steps", "epochs", "max_seconds", "device", "early_stop", "eval_every",
                       "sample_every", "checkpoint_every", "sample_tokens", "prompt",
                       "allreduce", "threads"})

#: A run folder, as tests and older code name it.
Run = RunFolder


def run_folder(config):
    return config.out or default_folder("lm")


# --- building the pieces ----------------------------------------------------------------------
def build_tokenizer(config, text):
    if config.level == "char":
        return CharTokenizer().fit(text)
    if config.level == "word":
        return WordTokenizer(max_vocab=config.vocab).fit(text)
    raise ConfigError(f"--level: expected 'char' or 'word', got {config.level!r}")


def build_hierarchy(config, tokenizer):
    if config.head != "multilevel":
        return None
    classes = config.classes or None
    if classes is not None and classes > tokenizer.vocab_size:
        raise ConfigError(f"--classes {classes} is larger than the vocabulary "
                          f"({tokenizer.vocab_size} tokens); use at most {tokenizer.vocab_size}")
    if config.shortlist >= tokenizer.vocab_size:
        raise ConfigError(f"--shortlist: expected fewer tokens than the vocabulary "
                          f"({tokenizer.vocab_size}), got {config.shortlist}")
    if classes is not None and config.shortlist + classes > tokenizer.vocab_size:
        raise ConfigError(f"--classes {classes}: with --shortlist {config.shortlist} at most "
                          f"{tokenizer.vocab_size - config.shortlist} classes remain for the "
                          f"other tokens, got {classes}")
    return ClassHierarchy.from_counts(np.maximum(tokenizer.counts, 1), classes,
                                      shortlist=config.shortlist)


def build_model(config, tokenizer, hierarchy):
    return AutoregressiveLM(tokenizer.vocab_size, config.embed, config.hidden, config.layers,
                            config.cell, config.dropout, config.head, hierarchy, config.tie,
                            backbone=config.backbone, num_heads=config.heads,
                            context=config.context, activation=config.activation)


def build_optimizer(config, model):
    if config.optimizer not in OPTIMIZERS:
        raise ConfigError(f"--optimizer: expected one of {sorted(OPTIMIZERS)}, got "
                          f"{config.optimizer!r}")
    kwargs = {"lr": config.lr}
    if config.weight_decay:
        kwargs["weight_decay"] = config.weight_decay
    return OPTIMIZERS[config.optimizer](model.parameters(), **kwargs)


def build_scheduler(config, optimizer, total):
    if config.schedule != "cosine":
        return None
    return CosineAnnealingLR(optimizer, T_max=max(total, config.warmup + 1),
                             warmup_steps=config.warmup)


def sample_text(model, tokenizer, prompt, tokens, temperature=0.8, top_k=None, rng=None):
    """Generate ``tokens`` new tokens after ``prompt`` (a string); returns the whole text."""
    prompt_ids = tokenizer.encode(prompt, errors="strict") if prompt else \
        np.array([int(np.argmax(tokenizer.counts))], np.int64)
    ids = model.generate(prompt_ids, tokens, temperature=temperature, top_k=top_k, rng=rng)
    return tokenizer.decode(ids)


def check_prompt(tokenizer, prompt):
    """The samples shown during training start from ``prompt``: it must encode."""
    if not prompt:
        return
    try:
        tokenizer.encode(prompt, errors="strict")
    except TinyarError as exc:
        reason = str(exc).split("; ")[0]
        raise ConfigError(f"--prompt {prompt!r}: expected text of the training vocabulary, "
                          f"got {reason.split(': ', 1)[-1]}") from None


def _perplexity(nats):
    return float("inf") if nats > 700 else perplexity(nats)  # exp overflows past ~709


def evaluate_shared(model, ids, world, batch_size=16, bptt=128):
    """``model.evaluate(ids, batch_size, bptt)`` (mean nats per token of the stream ``ids``)
    computed by the ranks of ``world`` together: the stream is cut into the same
    ``batch_size`` rows everywhere, rank r runs rows r, r + N, ... (``rank_share``; each row
    carries its own state, so a row's losses do not depend on the others), and the sums
    of nats and of tokens are added over the ranks (``allreduce_sum``):

        mean = (sum_r nats_r) / (sum_r tokens_r)

    the one-process figure. A single process calls ``model.evaluate`` itself."""
    if world.size == 1:
        return model.evaluate(ids, batch_size=batch_size, bptt=bptt)
    carries = getattr(model.backbone, "carries_state", True)
    if not carries:
        bptt = min(bptt, model.context)
    batch_size = max(1, min(batch_size, (len(ids) - 1) // 2))
    rows = rank_share(batch_size, world)
    total, count, state = 0.0, 0, None
    if rows.size:
        was_training = model.training
        model.eval()
        try:
            for x, y in StreamBatcher(ids, batch_size, bptt):
                x, y = np.ascontiguousarray(x[rows]), np.ascontiguousarray(y[rows])
                value, state = model.loss(x, y, state if carries else None)
                total += value * y.size
                count += y.size
        finally:
            model.train(was_training)
    total, count = allreduce_sum([total, count], world)
    return float(total / max(count, 1))


# --- reading a run ----------------------------------------------------------------------------
def _hierarchy_of(meta, tokenizer, path):
    saved = meta.get("hierarchy")
    if saved is None:
        return None
    return rebuilt(path, "hierarchy",
                   lambda: ClassHierarchy.from_dict(saved, num_labels=tokenizer.vocab_size))


def _tokenizer_of(meta, path):
    return rebuilt(path, "vocabulary",
                   lambda: Tokenizer.from_dict(meta_field(meta, "tokenizer", dict, path)))


def _build_from(path, meta, hierarchy):
    """The model described by a checkpoint's meta, built under the file's allocation limit
    and loaded with its weights (``checkpoint.build``)."""
    saved = meta_field(meta, "model", dict, path)

    def builder(_meta=None):
        try:
            return AutoregressiveLM.from_config(saved, hierarchy)
        except TypeError as exc:
            raise CheckpointError(f"{path}: its model config cannot be used ({exc})") from None
    return checkpoint.build(path, builder, follow_symlinks=False)


def load_run(folder, device="cpu", which="best"):
    """(model, tokenizer, meta) of a run folder's checkpoint, the model on ``device``.

    ``which``: "best" (``best.npz``, the best validation loss; an older run folder
    without it falls back to ``model.npz`` with a note) or "last" (``model.npz``).
    """
    check_device(device)
    run = RunFolder(folder)
    name = run.checkpoint_name(which)
    path = run.path(name)
    meta = run.read_meta(name)
    check_kind(meta, "language_model", path)
    tokenizer = _tokenizer_of(meta, path)
    hierarchy = _hierarchy_of(meta, tokenizer, path)
    model = _build_from(path, meta, hierarchy)  # built under the file's limit, and loaded
    return place(model, device), tokenizer, meta


def evaluate_run(folder, data=None, split_name="val", device="cpu", which="best",
                 max_chars=None, batch=16, bptt=128):
    """nats/token, perplexity and bits/token of a run's model (``which``: best or last) on
    some text (default: the run's own validation split)."""
    if split_name not in ("val", "all"):
        raise ConfigError(f"--split: expected 'val' or 'all', got {split_name!r}")
    model, tokenizer, meta = load_run(folder, device, which)
    config = meta_field(meta, "config", dict, folder)
    text = load_corpus(data or config.get("data", "stdlib"),
                       max_chars=max_chars or config.get("max_chars"))
    ids = tokenizer.encode(text, errors="replace")
    if split_name == "val":
        _, ids = split(ids, 0.9)
    nats = model.evaluate(ids, batch_size=batch, bptt=bptt)
    result = {"tokens": int(len(ids)), "nats_per_token": nats, "perplexity": _perplexity(nats),
              "bits_per_token": bits_per_token(nats)}
    if config.get("level") == "char":
        result["bits_per_char"] = result["bits_per_token"]
    return result


# --- training ---------------------------------------------------------------------------------
def train_lm(config: LMConfig, resume=None, overrides=None, quiet=False, steps=None,
             world=None):
    """Train a language model; returns the run folder.

    ``resume``: a run folder to continue from its last checkpoint, with its saved
    settings; ``overrides``: options given with it (see ``RESUMABLE``; the others are
    refused). ``steps``: the number of steps (also when resuming; the same as
    ``overrides={"steps": N}``). ``world``: the ranks that train together (default
    ``tinyar.distributed.world()``: one process unless started by mpiexec).
    """
    overrides = dict(overrides or {})
    if steps is not None:
        overrides["steps"] = int(steps)
    training = LMTraining(quiet, world or current_world())
    with Interrupts(training.world) as interrupts:
        training.interrupts = interrupts
        if resume:
            training.open_resumed(resume, overrides)
        else:
            training.open_fresh(config, overrides)
        try:
            return training.train()
        finally:
            training.run.close()


class LMTraining(TrainingRun):
    """One language-model training run: its state, and the steps that change it.

    The state a checkpoint holds is ``progress`` (step, tokens, seconds, data position,
    random-generator state, a pending report), ``history`` (one record per step),
    ``best``, the carried recurrent ``state``, and the model, optimizer and scheduler.
    A step changes them in two parts: ``compute`` (forward, backward, clip: nothing
    kept is changed, so an interrupt there saves the state as the last step left it)
    and ``update`` (optimizer, scheduler and the bookkeeping, under
    ``Interrupts.critical``). A report (validation, sample) that is due after a step
    is recorded as pending before it runs, so an interrupt during it resumes by
    running it again from the same state.
    """

    COMMAND, RESCUE_PREFIX = "train", "lm"

    def __init__(self, quiet, world=None):
        self.world = world or current_world()
        self.quiet = quiet or not self.world.is_root  # rank 0 alone prints
        self.phase = "setup"
        self.saved_step = None
        self.best_weights = None
        self.recorder = self.recorder_saved = None
        self.buffers = {}
        self.state = self.saved_state = None
        self.threads = self.rank_gpu = None  # _use_resources sets them

    # --- opening ---------------------------------------------------------------------------
    def open_fresh(self, config, overrides):
        for key, value in overrides.items():
            if hasattr(config, key) and value is not None:
                setattr(config, key, value)
        if "steps" in overrides:
            config.epochs = 0.0
        validate(config)
        check_device(config.device)
        self.config, world = config, self.world
        self._use_resources()

        def open_folder():  # rank 0's alone
            self.run = RunFolder(run_folder(config))
            self.run.open_for_writing(fresh=True)
            return self.run.folder
        config.out = root_first(world, open_folder)
        if not world.is_root:
            self.run = RunFolder(config.out)
        try:
            together(world, self._build_fresh)
            if world.size > 1:
                broadcast_model(self.model, world)
                manual_seed(rank_seed(config.seed, world))  # this rank's own dropout masks
            self.averager = GradientAverager(self.model, world, mode=config.allreduce)
            self.phase = "idle"
            self.save()  # step 0: a run killed before its first checkpoint can resume
        except BaseException:
            self.run.close(abandon=self.saved_step is None)
            raise

    def _build_fresh(self):
        config = self.config
        manual_seed(config.seed)
        self._load_data(tokenizer=None)
        self.hierarchy = build_hierarchy(config, self.tokenizer)
        self.model = place(build_model(config, self.tokenizer, self.hierarchy), config.device)
        self._build_training_pieces()
        self.history, self.best, self.state = [], Best(), None
        self.progress = {"step": 0, "tokens": 0, "seconds": 0.0, "position": 0,
                         "rng": rng_state(), "report": None}
        self._start_recorder(prefix=None)

    def _resume_from(self, path, overrides):
        run = self.run
        meta = run.read_meta(LAST)
        check_kind(meta, "language_model", path)
        config = config_from_meta(LMConfig, meta, path)
        config.batch = rank_batch(meta, config, self.world, path, "sequences")
        if "steps" in overrides and "epochs" not in overrides:
            config.epochs = 0.0
        elif "epochs" in overrides and "steps" not in overrides:
            config.steps = LMConfig().steps
        config = apply_overrides(config, overrides, RESUMABLE)
        config.out = run.folder
        validate(config)
        check_device(config.device)
        self.config = config
        self._use_resources()
        manual_seed(config.seed)
        self.tokenizer = _tokenizer_of(meta, path)
        self._load_data(tokenizer=self.tokenizer)
        saved_data = meta.get("data")
        if isinstance(saved_data, dict) and saved_data != self.data_info:
            raise ConfigError(f"--data {config.data!r}: the text is not the one the run was "
                              f"trained on ({saved_data.get('tokens')} tokens then, "
                              f"{self.data_info['tokens']} now); a resumed run needs the same "
                              f"data")
        self.hierarchy = _hierarchy_of(meta, self.tokenizer, path)
        self.model = place(_build_from(path, meta, self.hierarchy), config.device)
        self._build_training_pieces()
        checkpoint.load(self.model, path, optimizer=self.optimizer, follow_symlinks=False)
        self.progress = _progress_of(meta, path)
        step = self.progress["step"]
        if step > self.total:
            raise ConfigError(f"--steps: the run is at step {step} already; expected more "
                              f"steps than that, got {self.total}")
        self._restore_scheduler(meta.get("scheduler"), step, path)
        self.history = _history_of(meta, run, step, path)
        self.best = Best(meta.get("best"))
        self.saved_state = self._saved_state(run.read_extra(LAST), path)
        self.state = self._rank_state(self.saved_state)
        set_rng_state(self.progress["rng"], path)
        self._check_best_file()
        self.phase = "idle"
        sync_log(run, self.log(), step)
        self._start_recorder(prefix=recorder_prefix(run, step))
        self.saved_step = step
        self.averager = GradientAverager(self.model, self.world, mode=config.allreduce)
        if self.world.size == 1:
            return None
        return {"meta": meta, "config": asdict(config)}

    def _follow_resume(self, shared):
        """A rank other than 0: the run rank 0 read (``shared``: its checkpoint's meta and
        the resumed config), rebuilt without reading the run folder; the weights, optimizer
        state and carried state follow in ``_share_resumed``."""
        meta, path = shared["meta"], self.run.path(LAST)
        self.config = config = LMConfig(**shared["config"])
        self._use_resources()
        manual_seed(config.seed)
        self.tokenizer = _tokenizer_of(meta, path)
        self._load_data(tokenizer=self.tokenizer)
        if meta.get("data") != self.data_info:
            raise ConfigError(f"--data {config.data!r}: the text this rank reads is not the "
                              f"one rank 0 reads; every rank needs the same data")
        self.hierarchy = _hierarchy_of(meta, self.tokenizer, path)
        self.model = place(AutoregressiveLM.from_config(meta["model"], self.hierarchy),
                           config.device)
        self._build_training_pieces()
        self.progress = _progress_of(meta, path)
        step = self.progress["step"]
        self._restore_scheduler(meta.get("scheduler"), step, path)
        self.history = meta.get("history") or []
        self.best = Best(meta.get("best"))
        self.phase = "idle"
        self.saved_step = step
        self.averager = GradientAverager(self.model, self.world, mode=config.allreduce)

    def _share_resumed(self):
        """Every rank: rank 0's weights and optimizer state (``TrainingRun``), its carried
        recurrent state (of the whole global batch; each rank keeps its rows)."""
        super()._share_resumed()
        world = self.world
        saved = self.saved_state if world.is_root else None
        count = broadcast_json(0 if saved is None else len(_parts(saved)), world)
        if count:
            shape = (self.config.layers, self.global_batch, self.config.hidden)
            parts = _parts(saved) if world.is_root else [np.zeros(shape)] * count
            # rank 0 adds its arrays, the others zeros: a broadcast, exact in float64
            full = [allreduce_sum(p, world) for p in parts]
            self.saved_state = tuple(full) if count == 2 else full[0]
            self.state = self._rank_state(self.saved_state)

    def _load_data(self, tokenizer):
        config = self.config
        text = load_corpus(config.data, max_chars=config.max_chars)
        self.tokenizer = tokenizer or build_tokenizer(config, text)
        ids = self.tokenizer.encode(text, errors="replace")
        self.data_info = {"tokens": int(len(ids)),
                          "sha256": hashlib.sha256(ids.tobytes()).hexdigest()}
        train_ids, val_ids = split(ids, 0.9)
        self.val_ids = val_ids[:config.eval_tokens]
        if len(self.val_ids) < 2:
            raise ConfigError(f"--eval-tokens: expected at least 2 validation tokens, got "
                              f"{len(self.val_ids)}")
        check_prompt(self.tokenizer, config.prompt)
        streams = config.batch * self.world.size  # the global batch: rank r takes rows r::N
        try:
            self.batcher = StreamBatcher(train_ids, streams, config.bptt, drop_last=True)
        except ShapeError:
            rows = len(train_ids) // streams
            ranks = f" x {self.world.size} ranks" if self.world.size > 1 else ""
            raise ConfigError(f"--batch {config.batch}{ranks} --bptt {config.bptt}: the training "
                              f"text ({len(train_ids):,} tokens) makes {streams} streams of "
                              f"{rows} tokens, expected at least {config.bptt + 1} each; lower "
                              f"--batch or --bptt, or use more text") from None
        self.ids_count = len(ids)

    def _build_training_pieces(self):
        config = self.config
        self.optimizer = build_optimizer(config, self.model)
        self.total = int(math.ceil(config.epochs * len(self.batcher))) if config.epochs > 0 \
            else config.steps
        self.scheduler = build_scheduler(config, self.optimizer, self.total)

    def _restore_scheduler(self, saved, step, path):
        if self.scheduler is None:
            return
        if saved is None:  # a checkpoint of an older tinyar: replay the schedule from epoch 0
            self.optimizer.param_groups[0]["lr"] = self.scheduler.get_last_lr()[0]
            for _ in range(step):
                self.scheduler.step()
            return
        if not isinstance(saved, dict):
            raise CheckpointError(f"{path}: its scheduler state is a {type(saved).__name__}, "
                                  f"expected a dict")
        t_max = self.scheduler.T_max  # of the run's (possibly new) length: stretched to it
        self.scheduler.load_state_dict(saved)
        self.scheduler.T_max = t_max

    def _saved_state(self, extra, path):
        """The carried recurrent state of the checkpoint, for every row of the global batch
        (host arrays), or None."""
        saved = extra.get("state") if isinstance(extra, dict) else None
        if saved is None or self.model.backbone_kind != "rnn":
            return None
        parts = _parts(saved)
        expected = (self.config.layers, self.global_batch, self.config.hidden)
        count = 2 if self.config.cell == "lstm" else 1
        if len(parts) != count or any(np.shape(p) != expected for p in parts):
            raise CheckpointError(f"{path}: its carried recurrent state has the wrong form: "
                                  f"expected {count} array(s) of shape {expected}, got "
                                  f"{[np.shape(p) for p in parts]}")
        return tuple(parts) if count == 2 else parts[0]

    def _rank_state(self, full):
        """This rank's rows (r, r + N, ...) of the carried state ``full``, on the model's
        device and in its dtype; None for None."""
        if full is None:
            return None
        device = device_of(self.model.flat_parameters().data)
        parts = [to_device(np.ascontiguousarray(
            rank_rows(np.asarray(p, self.model.dtype).swapaxes(0, 1), self.world).swapaxes(0, 1)),
            device) for p in _parts(full)]
        return tuple(parts) if isinstance(full, tuple) else parts[0]

    def gather_for_save(self):
        """The carried state of every row of the global batch, for rank 0's checkpoint: each
        rank puts its rows into zeros of the global shape and the ranks add them up."""
        state, world = self.state, self.world
        if world.size == 1 or state is None:
            self.saved_state = state
            return
        if self.model.backbone_kind != "rnn":
            self.saved_state = None  # only a recurrent state carries over a checkpoint
            return
        full = []
        for part in _parts(state):
            host = to_host(part)
            whole = np.zeros((host.shape[0], self.global_batch) + host.shape[2:], np.float64)
            whole[:, world.rank::world.size] = host
            full.append(allreduce_sum(whole, world).astype(host.dtype))
        self.saved_state = tuple(full) if isinstance(state, tuple) else full[0]

    def _start_recorder(self, prefix):
        config = self.config
        self.recorder, self.recorder_saved = None, prefix
        if config.record_every > 0 and self.world.is_root:  # rank 0's statistics alone
            from ..inspect.recorder import Recorder
            self.recorder = Recorder(self.model, every=config.record_every,
                                     histogram_steps=(1, max(1, self.total // 2), self.total))
            start_recorder_at(self.recorder, self.progress["step"] + 1)

    # --- the loop --------------------------------------------------------------------------
    def train(self):
        config = self.config
        where, gpus = self._placement()
        if not self.quiet:
            batch = f"{self.world.size}x{config.batch}" if self.world.size > 1 else \
                f"{config.batch}"
            print(f"tinyar train: {self.ids_count:,} {config.level} tokens from {config.data!r} "
                  f"(vocabulary {self.tokenizer.vocab_size}), {self.model.num_parameters():,} "
                  f"parameters, {self.total} steps of {batch}x{config.bptt} tokens"
                  f"{' on ' + where + gpus if where else ''} -> {self.run.folder}")
            if self.hierarchy is not None:
                print(f"  head: {self.hierarchy}")
            if self.progress["step"]:
                print(f"  resuming at step {self.progress['step']}")
        self.bar = ProgressBar(self.total, f"train [{where}]" if self.world.size > 1 else
                               "train", unit="step", rate_unit="tok",
                               rate_scale=self.global_batch * config.bptt, disable=self.quiet,
                               initial=self.progress["step"])
        self.started = time.perf_counter() - self.progress["seconds"]
        try:
            if self.progress.get("report"):
                self.report()  # the report a resumed run's checkpoint left pending
            while not self.finished():
                loss, record = self.train_step()
                self.report()
                self.bar.update(1, loss=loss, lr=record["lr"])
                step = self.progress["step"]
                if step % config.checkpoint_every == 0 and self.saved_step != step:
                    self.save()
        except KeyboardInterrupt:
            self.bar.close()
            self.interrupted()
            raise
        self.bar.close()
        return self.finish()

    def finished(self):
        config, step = self.config, self.progress["step"]
        if step >= self.total:
            return True
        if 0 < config.max_seconds <= self.progress["seconds"]:
            return True
        return 0 < config.early_stop <= self.best.since

    def train_step(self):
        config, model = self.config, self.model
        position, state = self.progress["position"], self.state
        if position >= len(self.batcher):
            position, state = 0, None  # a new epoch starts from a zero state
        x, y = self.batcher.batch(position)  # the global batch; this rank's rows of it:
        x, y = rank_rows(x, self.world), rank_rows(y, self.world)
        self.phase = "compute"
        self.buffers = buffer_copies(model)
        loss, new_state = model.loss(x, y, state)
        # the whole batch's loss (the mean over the ranks), which every rank then sees
        loss, parts = self.step_figures(loss, model.head.loss_parts())
        if not is_finite(loss):
            self.diverged("training loss", loss)
        model.zero_grad()
        self.averager.begin()
        model.backward()
        self.averager.finish()  # the gradient of the whole batch, before it is clipped
        grad_norm = clip_grad_norm_(model, config.clip) if config.clip > 0 else float("nan")
        if config.clip > 0 and not is_finite(grad_norm):
            self.diverged("gradient norm", grad_norm)
        with self.interrupts.critical():
            self.phase = "update"
            self.optimizer.step()
            if self.recorder is not None:
                self.recorder.step()
            if self.scheduler is not None:
                self.scheduler.step()
            record = self._commit_step(loss, parts, grad_norm, new_state, position + 1)
            self.phase = "idle"
        return loss, record

    def _commit_step(self, loss, parts, grad_norm, state, position):
        config, progress = self.config, self.progress
        step = progress["step"] + 1
        seconds = time.perf_counter() - self.started
        record = {"step": step, "loss": loss, "lr": self.optimizer.param_groups[0]["lr"],
                  "grad_norm": float(grad_norm), "seconds": seconds}
        record.update(parts)  # the multi-level head: its levels
        self.history.append(record)
        last = step == self.total or 0 < config.max_seconds <= seconds
        due = {"eval": step % config.eval_every == 0 or last,
               "sample": step % config.sample_every == 0 or last}
        self.state = state
        progress.update(step=step, tokens=progress["tokens"] + self.global_batch * config.bptt,
                        position=position, seconds=seconds, rng=rng_state(),
                        report=due if any(due.values()) else None)
        return record

    def report(self):
        """The validation loss and the sample due after this step (if any)."""
        due = self.progress.get("report")
        if not due:
            return
        config, model, step = self.config, self.model, self.progress["step"]
        self.phase = "report"
        fields = {}
        if due.get("eval"):
            with _paused(self.recorder):
                val = evaluate_shared(model, self.val_ids, self.world,
                                      batch_size=min(16, self.global_batch), bptt=config.bptt)
            fields.update(val_loss=val, val_ppl=_perplexity(val), val_bits=bits_per_token(val))
        if due.get("sample") and self.world.is_root:  # rank 0's alone: it alone shows them
            with _paused(self.recorder):
                fields["sample"] = sample_text(model, self.tokenizer, config.prompt,
                                               config.sample_tokens)
        with self.interrupts.critical():
            self.phase = "update"
            self.history[-1].update(fields)
            improved = "val_loss" in fields and self.best.update(step, fields["val_loss"])
            if improved:
                self.best_weights = model.state_dict()
            self.progress.update(report=None, rng=rng_state())
            self.phase = "idle"
        if "val_loss" in fields:
            val = fields["val_loss"]
            self.bar.write(f"step {step}: train loss {self.history[-1]['loss']:.3f}, validation "
                           f"{val:.3f} nats/token (perplexity {fields['val_ppl']:.2f}, "
                           f"{fields['val_bits']:.3f} bits/token)" + (" best" if improved else ""))
        if "sample" in fields:
            self.bar.write(f"--- sample at step {step} ---\n{fields['sample']}\n---")
        if improved:
            self.save()

    # --- saving ----------------------------------------------------------------------------
    def meta(self):
        config = self.config
        return {"kind": "language_model", "config": asdict(config),
                "model": self.model.config(), "tokenizer": self.tokenizer.to_dict(),
                "hierarchy": self.hierarchy.to_dict() if self.hierarchy is not None else None,
                "progress": dict(self.progress), "history": self.history,
                "best": self.best.to_dict(), "data": self.data_info,
                "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
                "world": {"size": self.world.size, "global_batch": self.global_batch}}

    def log(self):
        progress = {k: v for k, v in self.progress.items() if k != "rng"}
        return {"config": asdict(self.config), "history": self.history, "progress": progress,
                "best": self.best.to_dict(), "best_step": self.best.step}

    def write(self, run, with_best):
        """The checkpoint first, then what derives from it; ``best.npz`` right after the
        checkpoint that first records its step."""
        extra = {"state": self.saved_state}  # every row's, gathered by gather_for_save
        run.save_checkpoint(LAST, self.model, self.meta(), optimizer=self.optimizer,
                            extra=extra)
        if with_best:
            self._save_best(run)
        run.write_json("vocab.json", self.tokenizer.to_dict(), indent=1)
        if self.hierarchy is not None:
            run.write_json("hierarchy.json", self.hierarchy.to_dict())
        run.write_json(LOG, self.log())
        if self.recorder is not None:
            run.write_json("recorder.json", merge_records(self.recorder_saved,
                                                          self.recorder.to_dict()))

    def finish(self):
        step = self.progress["step"]
        folder = self.run.folder if self.saved_step == step else self.save(final=True)
        if not self.world.is_root:
            return folder
        run = self.run if folder == self.run.folder else RunFolder(folder)
        try:
            self.write_plots(run)
        except OSError as exc:
            print(f"tinyar train: warning: loss_curve.png and samples.txt not written ({exc})",
                  file=sys.stderr)
        if not self.quiet:
            final = self.history[-1] if self.history else {}
            if 0 < self.config.early_stop <= self.best.since:
                print(f"early stop: no better validation loss in {self.best.since} evaluations")
            best = f"best validation {self.best.loss:.3f} nats/token at step {self.best.step} " \
                   f"(best.npz)" if self.best.step is not None else "no finite validation loss"
            print(f"done: step {step}, validation {final.get('val_loss', float('nan')):.3f} "
                  f"nats/token, perplexity {final.get('val_ppl', float('nan')):.2f}, in "
                  f"{self.progress['seconds']:.0f} s; {best}; saved model.npz, best.npz, "
                  f"vocab.json, log.json, loss_curve.png in {folder}")
        return folder

    def write_plots(self, run):
        from ..inspect.plots import plot_curves
        history = self.history
        if not history:
            return
        steps = [r["step"] for r in history]
        curves = {"train": (steps, [r["loss"] for r in history])}
        val = [(r["step"], r["val_loss"]) for r in history if r.get("val_loss") is not None]
        if val:
            curves["validation"] = tuple(zip(*val))
        run.write_figure("loss_curve.png", figure_of(
            plot_curves, curves, ylabel="nats / token", title="language model loss",
            smoothing=max(1, len(steps) // 50)))
        run.write_text("samples.txt", "".join(f"=== step {r['step']} ===\n{r['sample']}\n\n"
                                              for r in history if "sample" in r))


def _parts(state):
    """The arrays of a carried state: an LSTM's (h, c), or the one array of a GRU or RNN."""
    return list(state) if isinstance(state, (list, tuple)) else [state]


def _paused(recorder):
    """Evaluation and sampling forwards are not training steps: keep them out of the record."""
    import contextlib
    return recorder.paused() if recorder is not None else contextlib.nullcontext()


def _progress_of(meta, path):
    progress = meta_field(meta, "progress", dict, path)
    for key, kind in (("step", int), ("tokens", int), ("position", int),
                      ("seconds", (int, float)), ("rng", dict)):
        if not isinstance(progress.get(key), kind) or isinstance(progress.get(key), bool):
            raise CheckpointError(f"{path}: its progress {key!r} is missing or of the wrong "
                                  f"type ({type(progress.get(key)).__name__})")
    if progress["step"] < 0 or progress["position"] < 0:
        raise CheckpointError(f"{path}: its progress holds a negative step or position")
    report = progress.get("report")
    progress["report"] = report if isinstance(report, dict) else None
    progress["seconds"] = float(progress["seconds"])
    return progress


def _history_of(meta, run, step, path):
    """The history up to ``step``: from the checkpoint; from log.json for the checkpoints
    of an older tinyar, which kept it only there."""
    history = meta.get("history")
    if history is None:
        try:
            history = run.read_json(LOG)["history"]
        except (TinyarError, OSError, KeyError, TypeError):
            history = []
        history = [r for r in history if isinstance(r, dict) and r.get("step", 0) <= step]
    if not isinstance(history, list) or not all(isinstance(r, dict) for r in history):
        raise CheckpointError(f"{path}: its history is not a list of records")
    if history and history[-1].get("step") != step:
        raise CheckpointError(f"{path}: its history ends at step {history[-1].get('step')}, "
                              f"its progress at step {step}")
    return history
