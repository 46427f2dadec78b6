"""Training and evaluating the multi-level classifier (``tinyar classify``).

    images -> (optional) autoregressive pre-training of the row RNN, no labels
           -> a labelled fraction of the training images, of which ``val_fraction`` is
              held out (stratified, seeded) as a validation set
           -> supervised training with a flat or multi-level head; after each epoch the
              validation loss (it picks the best epoch) and the test accuracy (reported
              only, never used to choose)
           -> per-level metrics of the best model, confusion matrices, checkpoints

Data: ``glyphs`` (rendered by tinyar, offline), ``mnist``, ``fashion-mnist``,
``cifar10``, ``cifar100`` (downloaded once, or placed by hand under
``$TINYAR_DATA``), a folder of IDX or CIFAR files, or a ``.npz`` file with
``x_train, y_train, x_test, y_test`` (images (N, C, H, W) or (N, H, W), integer
labels) plus ``--hierarchy FILE.json``.

The run folder (``train/run.py``): model.npz (the last checkpoint, with the epoch, the
position in the epoch's shuffled order, the random state, the schedule, the BatchNorm
statistics and the history), best.npz (the epoch of the best validation loss),
log.json, metrics.json (the test report of the best model), confusion_coarse.png,
confusion_fine.png, loss_curve.png. ``train_classifier(config, resume=RUN)``
continues an interrupted run exactly; it may change ``RESUMABLE`` (``epochs``,
``early_stop``, ``device``, ``decode``, ``allreduce``, ``threads``), nothing else.

Under ``mpiexec -n N`` (``tinyar.distributed``) the N ranks train one model: every rank
makes the same shuffled order of each epoch (``epoch_order``, from the seed) and cuts it
into global batches of N x ``batch`` images; rank r takes images r, r + N, ... of each
(``rank_part``, which also weighs the last, smaller batch of an epoch so that the averaged
gradient is that batch's mean), and the gradients are averaged before they are clipped.
Augmentation draws from each rank's own seed (``rank_seed``). Validation and test images
are split over the ranks and their sums or predictions added (``allreduce_sum``). BatchNorm
normalises each rank's images alone; its running statistics are rank 0's. Rank 0 alone
prints and writes. Pre-training is data-parallel the same way.
"""
import hashlib
import sys
import time
from dataclasses import asdict

import numpy as np

from .. import checkpoint
from ..data import Augment, datasets, flip_allowed
from ..distributed import (GradientAverager, allreduce_sum, broadcast_model, rank_part,
                           rank_rows, rank_seed, rank_share)
from ..distributed import world as current_world
from ..data.augment import FLIP_ALLOWED
from ..nn.hierarchy import ClassHierarchy
from ..errors import CheckpointError, ConfigError, NumericalError, ShapeError, TinyarError
from ..inspect.confusion import plot_level_confusions
from ..models.classifiers import CNNClassifier, RowRNNClassifier
from ..nn.multilevel import LevelWeightSchedule
from ..optim import SGD, Adam, AdamW, clip_grad_norm_
from ..optim.lr_scheduler import CosineAnnealingLR
from ..progress import ProgressBar
from ..random import generator, manual_seed
from .config import ClassifyConfig
from .metrics import format_report, hierarchical_report
from .placement import check_device, place
from .run import (BEST, LAST, LOG, Best, Interrupts, RunFolder, TrainingRun, agreed,
                  apply_overrides, buffer_copies, check_kind, config_from_meta, default_folder,
                  figure_of, is_finite, meta_field, note, rank_batch, rebuilt, rng_state,
                  root_first, set_rng_state, sync_log, together, validate)

OPTIMIZERS = {"adam": Adam, "adamw": AdamW, "sgd": SGD}
RESUMABLE = frozenset({"epochs", "early_stop", "device", "decode", "allreduce", "threads"})
#: A checkpoint inside an epoch after this much training time since the last one.
AUTOSAVE_SECONDS = 120.0


def load_dataset(config, test_size=None):
    """(x_train, y_train, x_test, y_test, hierarchy, name) of ``config.data``."""
    return datasets.load_dataset(config.data, config.hierarchy, config.train_size,
                                 test_size or config.test_size, config.seed)


def parse_schedule(text):
    """The ``--weight-schedule`` text as a ``LevelWeightSchedule`` (None when empty)."""
    if not text:
        return None
    from .config import parse_weight_schedule
    return LevelWeightSchedule(parse_weight_schedule(text))


def build_model(config, hierarchy, image_shape):
    schedule = parse_schedule(config.weight_schedule)
    if config.model == "cnn":
        return CNNClassifier(hierarchy, image_shape, config.arch, config.head,
                             tuple(config.level_weights), schedule)
    if config.model == "rnn":
        return RowRNNClassifier(hierarchy, image_shape, config.hidden, 1, config.cell, config.head,
                                tuple(config.level_weights), schedule)
    raise ConfigError(f"--model: expected 'cnn' or 'rnn', got {config.model!r}")


def build_optimizer(config, model):
    if config.optimizer not in OPTIMIZERS:
        raise ConfigError(f"--optimizer: expected one of {sorted(OPTIMIZERS)}, got "
                          f"{config.optimizer!r}")
    kwargs = {"lr": config.lr, "momentum": 0.9} if config.optimizer == "sgd" else \
        {"lr": config.lr}
    # every parameter (the row decoder of pre-training gets zero gradients, so Adam
    # leaves it as it is), so the optimizer works on the model's whole flat buffer
    return OPTIMIZERS[config.optimizer](model.parameters(), **kwargs)


def build_augment(config, name, image_shape):
    """The augmentation ``--augment`` asks for, for these images (None without the flag).

    A named set gets its usual one (``Augment.for_dataset``); other images (a .npz
    file, a folder) random shifts of about 1/14 of the side and rotations up to 10
    degrees, never a mirror (whether a mirrored image keeps its class is not known).
    """
    if not config.augment:
        return None
    c, h, w = image_shape
    if min(h, w) < 4:
        raise ConfigError(f"--augment: expected images of at least 4x4 pixels to shift and "
                          f"rotate, got {h}x{w}")
    key = str(name).lower()
    if key in FLIP_ALLOWED or key.startswith("emnist"):
        augment = Augment.for_dataset(name)
        if augment.hflip and not flip_allowed(name):
            augment.hflip = False
        return augment
    return Augment(padding=max(1, min(h, w) // 14), max_degrees=10.0, hflip=False)


def labelled_subset(y, fraction, rng):
    """Indices of a class-stratified ``fraction`` of the training set (at least one per class)."""
    if not 0 < fraction <= 1:
        raise ConfigError(f"--label-fraction: expected a number in (0, 1], got {fraction}")
    if fraction == 1:
        return np.arange(y.size)
    keep = []
    for label in np.unique(y):
        members = np.flatnonzero(y == label)
        k = max(1, int(round(fraction * members.size)))
        keep.append(rng.choice(members, size=k, replace=False))
    return np.sort(np.concatenate(keep))


def split_validation(y, fraction, rng):
    """(train, validation) index arrays: ``fraction`` of the images of each class held out.

    Stratified by largest remainder: class c of n_c images gives floor(f n_c) images,
    and the rest of the total round(f N) (at least 1) go to the classes with the largest
    fractional parts (ties broken by ``rng``), one each: a class holds out f n_c rounded
    down or up. Every class keeps at least one training image. ``fraction`` 0: no validation set.
    """
    if fraction <= 0:
        return np.arange(y.size), np.zeros(0, np.int64)
    labels, counts = np.unique(y, return_counts=True)
    quota = fraction * counts
    take = np.floor(quota).astype(np.int64)
    total = max(1, int(round(fraction * y.size)))
    order = np.lexsort((rng.random(labels.size), -(quota - take)))
    room = counts - 1 - take
    for i in order:
        if take.sum() >= total:
            break
        if room[i] > 0 and quota[i] > take[i]:  # at most its quota rounded up
            take[i] += 1
            room[i] -= 1
    take = np.minimum(take, counts - 1)
    val = [rng.choice(np.flatnonzero(y == label), size=k, replace=False)
           for label, k in zip(labels, take) if k > 0]
    val = np.sort(np.concatenate(val)) if val else np.zeros(0, np.int64)
    train = np.setdiff1d(np.arange(y.size), val)
    return train, val


def epoch_order(seed, epoch, n):
    """The shuffled order of epoch ``epoch``: from its own seeded generator, so a resumed
    run makes the same order without saving it."""
    return np.random.default_rng([int(seed), 2, int(epoch)]).permutation(n)


def batch_bounds(n, size):
    """The (start, end) of each batch of an epoch of ``n`` images (positions in its shuffled
    order) in batches of ``size`` (the global batch): the full batches, then the rest as a
    batch of its own when it holds at least half a batch, else added to the last full one.
    So every batch holds between half a batch and one and a half, and each of N ranks at
    least half its ``--batch``: BatchNorm cannot normalise a batch of one image's features
    (13 images in batches of 6 are 6 + 7, not 6 + 6 + 1, on which the row RNN's BatchNorm1d
    would fail). No image is left out, and the batches do not depend on the number of
    ranks, so a run resumed on another number trains the same batches."""
    full, rest = divmod(int(n), int(size))
    bounds = [(i * size, (i + 1) * size) for i in range(full)]
    if rest and (2 * rest >= size or not bounds):
        bounds.append((full * size, n))
    elif rest:
        bounds[-1] = (bounds[-1][0], n)
    return bounds


def pretrain(model, x, steps, batch, lr, quiet=False, world=None, step_figures=None):
    """Autoregressive pre-training of the row RNN on unlabelled images.

    Under mpiexec (``world`` of N ranks) each step draws the same N x ``batch`` images on
    every rank (the same seeded generator), each rank takes its ``rank_rows``, and the
    gradients are averaged (``GradientAverager``); ``step_figures(loss)`` (the run's) gives
    the whole batch's loss and stops every rank at the same step when one was interrupted.
    """
    if not isinstance(model, RowRNNClassifier):
        raise ConfigError("--pretrain-steps: needs --model rnn (the row-by-row classifier)")
    world = world or current_world()
    params = model.rnn.parameters() + model.row_decoder.parameters()
    optimizer = Adam(params, lr=lr)
    averager = GradientAverager(model, world)
    rng, losses = generator(), []
    with ProgressBar(steps, "pretrain", unit="step", disable=quiet) as bar:
        for _ in range(steps):
            idx = rank_rows(rng.integers(0, x.shape[0], batch * world.size), world)
            loss = model.pretrain_loss(x[idx])
            if step_figures is not None:
                loss, _ = step_figures(loss)
            if not is_finite(loss):  # the whole batch's: every rank stops here
                raise agreed(NumericalError(f"pre-training: the loss is {loss} (diverged); "
                                            f"lower --pretrain-lr (now {lr:g})"), world)
            model.zero_grad()
            averager.begin()
            model.pretrain_backward()
            averager.finish()
            clip_grad_norm_(params, 5.0)
            optimizer.step()
            losses.append(loss)
            bar.update(1, loss=loss)
    return losses


def evaluate(model, x, y, hierarchy, decode, world=None):
    """The test report (``hierarchical_report``) of ``model`` on images ``x``, labels ``y``;
    with a ``world`` of several ranks each predicts its share and all get every prediction."""
    coarse, fine = shared_predictions(model, x, decode, world)
    # a flat head's coarse level is read off its fine distribution: the report then
    # takes each fine prediction's class (``predicts_coarse``)
    return hierarchical_report(hierarchy, y, fine, coarse if model.head.predicts_coarse
                               else None)


def shared_predictions(model, x, decode, world=None):
    """(coarse, fine) predictions of every image of ``x``. With several ranks, rank r
    predicts images r, r + N, ... (``rank_share``) into arrays that are zero elsewhere, and
    one sum over the ranks gives every rank all of them (exact: whole numbers in float64)."""
    if world is None or world.size == 1:
        return model.predict_levels(x, decode)
    share = rank_share(x.shape[0], world)
    both = np.zeros((2, x.shape[0]))
    if share.size:
        both[0, share], both[1, share] = model.predict_levels(x[share], decode)
    both = allreduce_sum(both, world)
    return both[0].astype(np.int64), both[1].astype(np.int64)


def validation_loss(model, x, y, world=None):
    """(mean -log P(fine label | x), accuracy of argmax_y P(y | x)) on a held-out set: the
    same measure for either head and every epoch's level weights. With several ranks each
    adds up its share (``rank_share``) and the sums are added over the ranks."""
    share = np.arange(y.size) if world is None or world.size == 1 else \
        rank_share(y.size, world)
    nats = correct = 0.0
    if share.size:
        _, p_fine = model.level_probabilities(x[share])
        p = p_fine[np.arange(share.size), y[share]]
        nats = float(-np.sum(np.log(np.maximum(p, 1e-300))))
        correct = float(np.sum(p_fine.argmax(1) == y[share]))
    if world is not None and world.size > 1:
        nats, correct = allreduce_sum([nats, correct], world)
    return float(nats / y.size), float(correct / y.size)


def _fingerprint(*arrays):
    digest = hashlib.sha256()
    for a in arrays:
        digest.update(np.ascontiguousarray(a).tobytes())
    return digest.hexdigest()


# --- reading a run ----------------------------------------------------------------------------
def _classifier_of(path, meta, config, image_shape, hierarchy):
    def builder(_meta=None):
        return build_model(config, hierarchy, image_shape)
    return checkpoint.build(path, builder, follow_symlinks=False)


def _hierarchy_of(meta, path):
    return rebuilt(path, "hierarchy",
                   lambda: ClassHierarchy.from_dict(meta_field(meta, "hierarchy", dict, path)))


def _image_shape_of(meta, path, fallback):
    shape = meta.get("image_shape", fallback)
    if not (isinstance(shape, (list, tuple)) and len(shape) == 3 and
            all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in shape)):
        raise CheckpointError(f"{path}: its image_shape {shape!r} is not 3 positive integers")
    return tuple(shape)


def evaluate_run(folder, data=None, decode=None, device="cpu", which="best", quiet=False,
                 test_size=None):
    """The test report of a run's model (``which``: "best" or "last") on ``data``'s test
    split (default: the run's own data)."""
    check_device(device)
    run = RunFolder(folder)
    name = run.checkpoint_name(which)
    path = run.path(name)
    meta = run.read_meta(name)
    check_kind(meta, "classifier", path)
    config = config_from_meta(ClassifyConfig, meta, path)
    if data:
        config.data = data
    hierarchy = _hierarchy_of(meta, path)
    _, _, x_test, y_test, data_hierarchy, _ = load_dataset(config, test_size)
    if data_hierarchy.num_labels != hierarchy.num_labels:
        raise ShapeError(f"classify --eval: the run was trained on {hierarchy.num_labels} labels, "
                         f"the data {config.data!r} has {data_hierarchy.num_labels}")
    image_shape = _image_shape_of(meta, path, list(x_test.shape[1:]))
    if tuple(x_test.shape[1:]) != image_shape:
        raise ShapeError(f"classify --eval: the run was trained on images {image_shape} "
                         f"(C, H, W), the data {config.data!r} has {tuple(x_test.shape[1:])}")
    model = _classifier_of(path, meta, config, image_shape, hierarchy)  # built and loaded
    place(model, device)
    report = evaluate(model, x_test, y_test, hierarchy, decode or config.decode)
    if not quiet:
        print(format_report(report))
    return report


# --- training ---------------------------------------------------------------------------------
def train_classifier(config: ClassifyConfig, resume=None, overrides=None, quiet=False,
                     world=None):
    """Train, evaluate and save; returns (run folder, the test report of the best model).

    ``resume``: a run folder to continue from its last checkpoint; ``overrides``: the
    options given with it (``RESUMABLE``; others are refused). ``world``: the ranks that
    train together (default ``tinyar.distributed.world()``: one process unless started by
    mpiexec).
    """
    training = ClassifierTraining(quiet, world or current_world())
    with Interrupts(training.world) as interrupts:
        training.interrupts = interrupts
        if resume:
            training.open_resumed(resume, dict(overrides or {}))
        else:
            training.open_fresh(config, dict(overrides or {}))
        try:
            return training.train()
        finally:
            training.run.close()


class ClassifierTraining(TrainingRun):
    """One classifier training run (see ``LMTraining`` in lm.py for the scheme: a step
    computes, then updates under ``Interrupts.critical``; the epoch's report is recorded
    as pending before it runs)."""

    COMMAND, RESCUE_PREFIX = "classify", "classify"

    def _position(self):
        return f"step {self.progress['step']} (epoch {self.progress['epoch'] + 1})"

    def __init__(self, quiet, world=None):
        self.world = world or current_world()
        self.quiet = quiet or not self.world.is_root  # rank 0 alone prints
        self.threads = self.rank_gpu = None  # _use_resources sets them
        self.phase = "setup"
        self.saved_step = None
        self.best_weights = None
        self.buffers = {}
        self.last_save = time.perf_counter()

    # --- opening ---------------------------------------------------------------------------
    def open_fresh(self, config, overrides):
        for key, value in overrides.items():
            if hasattr(config, key) and value is not None:
                setattr(config, key, value)
        validate(config)
        check_device(config.device)
        self.config, world = config, self.world
        self._use_resources()

        def open_folder():  # rank 0's alone
            self.run = RunFolder(config.out or default_folder("classify"))
            self.run.open_for_writing(fresh=True)
            return self.run.folder
        config.out = root_first(world, open_folder)
        if not world.is_root:
            self.run = RunFolder(config.out)
        try:
            together(world, self._build_fresh)
            broadcast_model(self.model, world)
            self.pre_losses = pretrain(self.model, self.x_train, config.pretrain_steps,
                                       config.batch, config.pretrain_lr, self.quiet, world,
                                       self.step_figures) if config.pretrain_steps else []
            self._build_training_pieces()
            if not world.is_root:
                manual_seed(rank_seed(config.seed, world))  # this rank's own augmentation
            self.history, self.best = [], Best()
            self.progress = {"step": 0, "epoch": 0, "batch": 0, "seconds": 0.0,
                             "rng": rng_state(), "report": None}
            self.phase = "idle"
            self.save()  # step 0: a run killed before its first checkpoint can resume
        except BaseException as exc:
            if isinstance(exc, KeyboardInterrupt) and self.saved_step is None and \
                    world.is_root:
                print("\ninterrupted before the first checkpoint: nothing to resume",
                      file=sys.stderr)
            self.run.close(abandon=self.saved_step is None)
            raise

    def _build_fresh(self):
        config = self.config
        manual_seed(config.seed)
        self._load_data()
        self.model = place(build_model(config, self.hierarchy, self.image_shape),
                           config.device)

    def _resume_from(self, path, overrides):
        run = self.run
        meta = run.read_meta(LAST)
        check_kind(meta, "classifier", path)
        config = config_from_meta(ClassifyConfig, meta, path)
        config.batch = rank_batch(meta, config, self.world, path, "images")
        config = apply_overrides(config, overrides, RESUMABLE)
        config.out = run.folder
        validate(config)
        check_device(config.device)
        self.config = config
        self._use_resources()
        manual_seed(config.seed)
        self._load_data()
        if meta.get("data") != self.data_info:
            raise ConfigError(f"--data {config.data!r}: the images are not the ones the run was "
                              f"trained on; a resumed run needs the same data")
        self.model = place(_classifier_of(path, meta, config, self.image_shape, self.hierarchy),
                           config.device)
        self._build_training_pieces()
        checkpoint.load(self.model, path, optimizer=self.optimizer, follow_symlinks=False)
        self.progress = _progress_of(meta, path, self.steps_per_epoch)
        if self.progress["epoch"] > config.epochs:
            raise ConfigError(f"--epochs: the run has done {self.progress['epoch']} epochs "
                              f"already; expected more than that, got {config.epochs}")
        self._restore_scheduler(meta.get("scheduler"), path)
        self.history = _history_of(meta, self.progress["step"], path)
        self.pre_losses = meta.get("pretrain_losses") or []
        self.best = Best(meta.get("best"))
        set_rng_state(self.progress["rng"], path)
        self._check_best_file()
        self.phase = "idle"
        sync_log(run, self.log(), self.progress["step"])
        self.saved_step = self.progress["step"]
        if self.world.size == 1:
            return None
        return {"meta": meta, "config": asdict(config)}

    def _follow_resume(self, shared):
        """A rank other than 0: the run rank 0 read (``shared``: its checkpoint's meta and
        the resumed config), rebuilt without reading the run folder; the weights and the
        optimizer state follow in ``_share_resumed``."""
        meta, path = shared["meta"], self.run.path(LAST)
        self.config = config = ClassifyConfig(**shared["config"])
        self._use_resources()
        manual_seed(config.seed)
        self._load_data()
        if meta.get("data") != self.data_info:
            raise ConfigError(f"--data {config.data!r}: the images this rank reads are not "
                              f"the ones rank 0 reads; every rank needs the same data")
        self.model = place(build_model(config, self.hierarchy, self.image_shape),
                           config.device)
        self._build_training_pieces()
        self.progress = _progress_of(meta, path, self.steps_per_epoch)
        self._restore_scheduler(meta.get("scheduler"), path)
        self.history = meta.get("history") or []
        self.pre_losses = meta.get("pretrain_losses") or []
        self.best = Best(meta.get("best"))
        self.phase = "idle"
        self.saved_step = self.progress["step"]

    def _load_data(self):
        config = self.config
        x_train, y_train, x_test, y_test, hierarchy, name = load_dataset(config)
        self.hierarchy, self.name = hierarchy, name
        self.x_train, self.x_test, self.y_test = x_train, x_test, y_test
        self.image_shape = tuple(int(s) for s in x_train.shape[1:])
        self.data_info = {"name": str(name), "train": int(x_train.shape[0]),
                          "test": int(x_test.shape[0]),
                          "sha256": _fingerprint(x_train, y_train, x_test, y_test)}
        split_rng = np.random.default_rng([int(config.seed), 1])
        labelled = labelled_subset(y_train, config.label_fraction, split_rng)
        train, val = split_validation(y_train[labelled], config.val_fraction, split_rng)
        self.xs, self.ys = x_train[labelled[train]], y_train[labelled[train]]
        self.xv, self.yv = x_train[labelled[val]], y_train[labelled[val]]
        if config.early_stop and self.yv.size == 0:
            raise ConfigError(f"--early-stop: needs a validation set, got --val-fraction "
                              f"{config.val_fraction}")
        self.augment = build_augment(config, name, self.image_shape)
        # batches of the whole job: N ranks x --batch images
        self.batches = batch_bounds(self.xs.shape[0], config.batch * self.world.size)
        self.steps_per_epoch = len(self.batches)

    def _build_training_pieces(self):
        config = self.config
        self.optimizer = build_optimizer(config, self.model)
        self.averager = GradientAverager(self.model, self.world, mode=config.allreduce)
        self.total = self.steps_per_epoch * config.epochs
        self.scheduler = CosineAnnealingLR(self.optimizer, T_max=max(self.total, 2),
                                           warmup_steps=min(100, self.total // 10))

    def _restore_scheduler(self, saved, path):
        if not isinstance(saved, dict):
            raise CheckpointError(f"{path}: its scheduler state is missing or not a dict")
        t_max = self.scheduler.T_max  # of the run's (possibly new) length: stretched to it
        self.scheduler.load_state_dict(saved)
        self.scheduler.T_max = max(t_max, self.scheduler.warmup_steps + 1)

    # --- the loop --------------------------------------------------------------------------
    def train(self):
        config, world = self.config, self.world
        where, gpus = self._placement()
        if not self.quiet:
            batch = f"{world.size}x{config.batch}" if world.size > 1 else f"{config.batch}"
            print(f"tinyar classify: {self.name}, {self.xs.shape[0]:,} labelled training images "
                  f"({config.label_fraction:.0%}, {self.yv.size:,} more held out for "
                  f"validation), {self.x_test.shape[0]:,} test images, {self.hierarchy}, model "
                  f"{self.model} with {self.model.num_parameters():,} parameters, batches of "
                  f"{batch}{' on ' + where + gpus if where else ''} -> {self.run.folder}")
            if self.progress["step"]:
                print(f"  resuming at epoch {self.progress['epoch'] + 1}, step "
                      f"{self.progress['step']}")
        self.bar = ProgressBar(self.total, f"classify [{where}]" if world.size > 1 else
                               "classify", unit="step", rate_unit="img",
                               rate_scale=self.global_batch, disable=self.quiet,
                               initial=self.progress["step"])
        self.started = time.perf_counter() - self.progress["seconds"]
        try:
            if self.progress.get("report"):
                self.report()
            while not self.finished():
                loss = self.train_step()
                self.bar.update(1, loss=loss)
                self.report()
                if time.perf_counter() - self.last_save > AUTOSAVE_SECONDS and \
                        self.saved_step != self.progress["step"]:
                    self.save()
        except KeyboardInterrupt:
            self.bar.close()
            self.interrupted()
            raise
        self.bar.close()
        return self.finish()

    def finished(self):
        if self.progress["epoch"] >= self.config.epochs:
            return True
        return 0 < self.config.early_stop <= self.best.since

    def train_step(self):
        config, model, progress = self.config, self.model, self.progress
        epoch, batch = progress["epoch"], progress["batch"]
        model.set_epoch(epoch)
        start, end = self.batches[batch]
        order = epoch_order(config.seed, epoch, self.xs.shape[0])
        # this rank's images of the global batch, and the weight of their mean loss in the
        # batch's (1 but in an epoch's last, larger batch): rank_part
        idx, weight = rank_part(order[start:end], self.world)
        self.phase = "compute"
        self.buffers = buffer_copies(model)
        loss = 0.0  # a rank without images in the batch adds nothing
        if idx.size:
            xb = self.xs[idx] if self.augment is None else \
                self.augment(self.xs[idx]).astype(np.float32)
            loss = model.loss(xb, self.ys[idx]) * weight
        loss, _ = self.step_figures(loss)  # the whole batch's, the mean over the ranks
        if not is_finite(loss):
            self.diverged("training loss", loss)
        model.zero_grad()
        self.averager.begin()
        if idx.size:
            model.backward(weight)
        self.averager.finish()  # the gradient of the whole batch, before it is clipped
        if config.clip > 0:
            norm = clip_grad_norm_(model.parameters(), config.clip)
            if not is_finite(norm):
                self.diverged("gradient norm", norm)
        with self.interrupts.critical():
            self.phase = "update"
            self.optimizer.step()
            self.scheduler.step()
            step, batch = progress["step"] + 1, batch + 1
            self.history.append({"step": step, "epoch": epoch, "loss": loss,
                                 "lr": self.optimizer.param_groups[0]["lr"]})
            progress.update(step=step, batch=batch, rng=rng_state(),
                            seconds=time.perf_counter() - self.started,
                            report={"epoch": epoch} if batch == self.steps_per_epoch else None)
            self.phase = "idle"
        return loss

    def report(self):
        """After an epoch: the validation loss (picks the best) and the test accuracy."""
        if not self.progress.get("report"):
            return
        model, epoch, step = self.model, self.progress["epoch"], self.progress["step"]
        self.phase = "report"
        fields = {}
        if self.yv.size:
            fields["val_loss"], fields["val_accuracy"] = validation_loss(model, self.xv, self.yv,
                                                                         self.world)
        test = evaluate(model, self.x_test, self.y_test, self.hierarchy, self.config.decode,
                        self.world)
        fields.update(test_coarse_accuracy=test["coarse"]["accuracy"],
                      test_fine_accuracy=test["fine"]["accuracy"])
        with self.interrupts.critical():
            self.phase = "update"
            self.history[-1].update(fields)
            improved = "val_loss" in fields and self.best.update(step, fields["val_loss"])
            if improved:
                self.best_weights = model.state_dict()
            self.progress.update(epoch=epoch + 1, batch=0, report=None, rng=rng_state())
            self.phase = "idle"
        val = (f"validation loss {fields['val_loss']:.4f}, accuracy {fields['val_accuracy']:.3f}"
               f"{' best' if improved else ''}; ") if "val_loss" in fields else ""
        self.bar.write(f"epoch {epoch + 1}: {val}test accuracy coarse "
                       f"{fields['test_coarse_accuracy']:.3f}, fine "
                       f"{fields['test_fine_accuracy']:.3f}")
        self.save()

    # --- saving ----------------------------------------------------------------------------
    def meta(self):
        return {"kind": "classifier", "config": asdict(self.config),
                "hierarchy": self.hierarchy.to_dict(), "image_shape": list(self.image_shape),
                "data": self.data_info, "progress": dict(self.progress),
                "history": self.history, "best": self.best.to_dict(),
                "scheduler": self.scheduler.state_dict(), "pretrain_losses": self.pre_losses,
                "world": {"size": self.world.size, "global_batch": self.global_batch}}

    def log(self):
        progress = {k: v for k, v in self.progress.items() if k != "rng"}
        best = self.best.to_dict()
        best["epoch"] = next((r["epoch"] for r in self.history if r["step"] == self.best.step),
                             None)
        return {"config": asdict(self.config), "history": self.history, "progress": progress,
                "best": best, "best_step": self.best.step, "pretrain_losses": self.pre_losses}

    def write(self, run, with_best):
        run.save_checkpoint(LAST, self.model, self.meta(), optimizer=self.optimizer)
        if with_best:
            self._save_best(run)
        run.write_json(LOG, self.log())

    def finish(self):
        step = self.progress["step"]
        folder = self.run.folder if self.saved_step == step else self.save(final=True)
        which = self._use_best()
        report = evaluate(self.model, self.x_test, self.y_test, self.hierarchy,
                          self.config.decode, self.world)
        best_record = next((r for r in self.history if r["step"] == self.best.step), None)
        report.update(train_seconds=self.progress["seconds"], model=which,
                      best_step=self.best.step,
                      best_epoch=best_record["epoch"] + 1 if best_record else None,
                      val_loss=best_record.get("val_loss") if best_record else None)
        if not self.world.is_root:
            return folder, report
        run = self.run if folder == self.run.folder else RunFolder(folder)
        try:
            self.write_results(run, report)
        except OSError as exc:
            print(f"tinyar classify: warning: metrics.json and the figures not written ({exc})",
                  file=sys.stderr)
        if not self.quiet:
            print(format_report(report))
            if 0 < self.config.early_stop <= self.best.since:
                print(f"early stop: no better validation loss in {self.best.since} epochs")
            what = f"the best epoch ({report['best_epoch']}, step {self.best.step}, best.npz)" \
                if which == "best" else "the last epoch (model.npz)"
            print(f"test report of {what}; saved model.npz, best.npz, metrics.json, log.json, "
                  f"confusion_*.png, loss_curve.png in {folder}")
        return folder, report

    def _use_best(self):
        """Put the best epoch's weights in the model for the final report: "best", or
        "last" when there is no validation set (or its copy is gone)."""
        if self.best.step is None:
            return "last"
        if self.best.step == self.progress["step"]:
            return "best"
        if self.best_weights is not None:  # every rank's copy: each took the same decisions
            self.model.load_state_dict(self.best_weights)
            return "best"
        which = root_first(self.world, self._load_best_file)  # a resumed run: rank 0 reads it
        if which == "best":
            broadcast_model(self.model, self.world)
        return which

    def _load_best_file(self):
        try:
            checkpoint.load(self.model, self.run.path(BEST), follow_symlinks=False)
            return "best"
        except (TinyarError, OSError) as exc:
            note(f"the best model cannot be read back ({exc}); the report is of the last one")
            return "last"

    def write_results(self, run, report):
        from ..inspect.plots import plot_curves
        run.write_json("metrics.json", report, indent=1)
        coarse, fine = plot_level_confusions(None, report, self.hierarchy)
        run.write_figure("confusion_coarse.png", coarse)
        run.write_figure("confusion_fine.png", fine)
        if self.history:
            steps = [r["step"] for r in self.history]
            curves = {"train": (steps, [r["loss"] for r in self.history])}
            val = [(r["step"], r["val_loss"]) for r in self.history
                   if r.get("val_loss") is not None]
            if val:
                curves["validation (-log P(label))"] = tuple(zip(*val))
            run.write_figure("loss_curve.png", figure_of(
                plot_curves, curves, title="classifier loss",
                smoothing=max(1, len(steps) // 50)))


def _progress_of(meta, path, steps_per_epoch):
    progress = meta_field(meta, "progress", dict, path)
    for key, kind in (("step", int), ("epoch", int), ("batch", int), ("seconds", (int, float)),
                      ("rng", dict)):
        value = progress.get(key)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise CheckpointError(f"{path}: its progress {key!r} is missing or of the wrong "
                                  f"type ({type(value).__name__})")
    if min(progress["step"], progress["epoch"], progress["batch"]) < 0 or \
            progress["batch"] > steps_per_epoch:
        raise CheckpointError(f"{path}: its progress (epoch {progress['epoch']}, batch "
                              f"{progress['batch']}) does not fit epochs of {steps_per_epoch} "
                              f"batches")
    report = progress.get("report")
    progress["report"] = report if isinstance(report, dict) else None
    progress["seconds"] = float(progress["seconds"])
    return progress


def _history_of(meta, step, path):
    history = meta.get("history")
    if not isinstance(history, list) or not all(isinstance(r, dict) for r in history):
        raise CheckpointError(f"{path}: its history is missing or not a list of records")
    if history and history[-1].get("step") != step:
        raise CheckpointError(f"{path}: its history ends at step {history[-1].get('step')}, "
                              f"its progress at step {step}")
    return history
