"""Training and evaluating the multi-level classifier (``tinyar classify``).

    images -> (optional) autoregressive pre-training of the row RNN, no labels
           -> supervised training with a flat or multi-level head on a fraction of the labels
           -> per-level metrics, confusion matrices, checkpoint, in a run folder

Data: ``glyphs`` (rendered by tinyar, offline), ``mnist``, ``fashion-mnist``,
``cifar10``, ``cifar100`` (downloaded once, or placed by hand under
``$TINYAR_DATA``), or a ``.npz`` file with ``x_train, y_train, x_test, y_test``
(images (N, C, H, W) or (N, H, W), integer labels) plus ``--hierarchy FILE.json``.
"""
import json
import os
import time
from dataclasses import asdict

import numpy as np

from .. import checkpoint
from ..data import Augment, datasets, flip_allowed
from ..data.datasets import check_labels
from ..data.hierarchy import ClassHierarchy
from ..errors import CheckpointError, ShapeError
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

OPTIMIZERS = {"adam": Adam, "adamw": AdamW, "sgd": SGD}


def load_dataset(config):
    """(x_train, y_train, x_test, y_test, hierarchy, name) of ``config.data``."""
    return datasets.load_dataset(config.data, config.hierarchy, config.train_size,
                                 config.test_size, config.seed)


def parse_schedule(text):
    if not text:
        return None
    milestones = []
    for part in text.split(";"):
        start, weights = part.split(":")
        wc, wf = weights.split(",")
        milestones.append((int(start), (float(wc), float(wf))))
    return LevelWeightSchedule(milestones)


def build_model(config, hierarchy, image_shape):
    schedule = parse_schedule(config.weight_schedule)
    if config.model == "cnn":
        return CNNClassifier(hierarchy, image_shape, config.arch, config.head,
                             tuple(config.level_weights), schedule)
    if config.model == "rnn":
        return RowRNNClassifier(hierarchy, image_shape, config.hidden, 1, config.cell, config.head,
                                tuple(config.level_weights), schedule)
    raise ValueError(f"classify: --model must be 'cnn' or 'rnn', got {config.model!r}")


def labelled_subset(y, fraction, rng):
    """Indices of a class-stratified ``fraction`` of the training set (at least one per class)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"classify: --label-fraction must be in (0, 1], got {fraction}")
    if fraction == 1:
        return np.arange(y.size)
    keep = []
    for label in np.unique(y):
        members = np.flatnonzero(y == label)
        k = max(1, int(round(fraction * members.size)))
        keep.append(rng.choice(members, size=k, replace=False))
    return np.sort(np.concatenate(keep))


def pretrain(model, x, steps, batch, lr, quiet=False):
    """Autoregressive pre-training of the row RNN on unlabelled images."""
    if not isinstance(model, RowRNNClassifier):
        raise ValueError("classify: --pretrain-steps needs --model rnn (the row-by-row classifier)")
    params = model.rnn.parameters() + model.row_decoder.parameters()
    optimizer = Adam(params, lr=lr)
    rng, losses = generator(), []
    with ProgressBar(steps, "pretrain", unit="step", disable=quiet) as bar:
        for _ in range(steps):
            idx = rng.integers(0, x.shape[0], batch)
            loss = model.pretrain_loss(x[idx])
            model.zero_grad()
            model.pretrain_backward()
            clip_grad_norm_(params, 5.0)
            optimizer.step()
            losses.append(loss)
            bar.update(1, loss=loss)
    return losses


def evaluate(model, x, y, hierarchy, decode):
    coarse, fine = model.predict_levels(x, decode)
    return hierarchical_report(hierarchy, y, fine, coarse if model.head_kind == "multilevel"
                               else None)


def train_classifier(config: ClassifyConfig, quiet=False):
    """Train, evaluate and save; returns (run folder, final report)."""
    check_device(config.device)
    manual_seed(config.seed)
    x_train, y_train, x_test, y_test, hierarchy, name = load_dataset(config)
    check_labels(hierarchy, y_train, "training")
    check_labels(hierarchy, y_test, "test")
    folder = config.out or os.path.join("runs", time.strftime("classify-%Y%m%d-%H%M%S"))
    config.out = folder
    os.makedirs(folder, exist_ok=True)
    model = place(build_model(config, hierarchy, x_train.shape[1:]), config.device)
    rng = generator()
    history, pre_losses = [], []
    if config.pretrain_steps:
        pre_losses = pretrain(model, x_train, config.pretrain_steps, config.batch,
                              config.pretrain_lr, quiet)
    labelled = labelled_subset(y_train, config.label_fraction, rng)
    xs, ys = x_train[labelled], y_train[labelled]
    augment = Augment.for_dataset(name) if config.augment and name in ("glyphs", "mnist",
                                                                         "fashion-mnist",
                                                                         "cifar10", "cifar100") \
        else None
    if augment is not None and augment.hflip and not flip_allowed(name):
        augment = None
    steps_per_epoch = max(1, int(np.ceil(xs.shape[0] / config.batch)))
    total = steps_per_epoch * config.epochs
    # every parameter (the row decoder of pre-training gets zero gradients, so Adam
    # leaves it as it is), so the optimizer works on the model's whole flat buffer
    params = model.parameters()
    if config.optimizer not in OPTIMIZERS:
        raise ValueError(f"classify: --optimizer must be one of {sorted(OPTIMIZERS)}")
    opt_kwargs = {"lr": config.lr, "momentum": 0.9} if config.optimizer == "sgd" else \
        {"lr": config.lr}
    optimizer = OPTIMIZERS[config.optimizer](params, **opt_kwargs)
    scheduler = CosineAnnealingLR(optimizer, T_max=max(total, 2), warmup_steps=min(100, total // 10))
    if not quiet:
        print(f"tinyar classify: {name}, {xs.shape[0]:,} labelled training images "
              f"({config.label_fraction:.0%}), {x_test.shape[0]:,} test images, "
              f"{hierarchy}, model {model} with {model.num_parameters():,} parameters -> {folder}")
    started, step = time.perf_counter(), 0
    bar = ProgressBar(total, "classify", unit="step", rate_unit="img", rate_scale=config.batch,
                      disable=quiet)
    try:
        for epoch in range(config.epochs):
            model.set_epoch(epoch)
            order = rng.permutation(xs.shape[0])
            for start in range(0, xs.shape[0], config.batch):
                idx = order[start:start + config.batch]
                xb = xs[idx] if augment is None else augment(xs[idx]).astype(np.float32)
                loss = model.loss(xb, ys[idx])
                model.zero_grad()
                model.backward()
                if config.clip > 0:
                    clip_grad_norm_(params, config.clip)
                optimizer.step()
                scheduler.step()
                step += 1
                history.append({"step": step, "epoch": epoch, "loss": loss,
                                "lr": optimizer.param_groups[0]["lr"]})
                bar.update(1, loss=loss)
            report = evaluate(model, x_test, y_test, hierarchy, config.decode)
            history[-1].update(test_coarse_accuracy=report["coarse"]["accuracy"],
                               test_fine_accuracy=report["fine"]["accuracy"])
            bar.write(f"epoch {epoch + 1}: test accuracy coarse {report['coarse']['accuracy']:.3f}, "
                      f"fine {report['fine']['accuracy']:.3f}")
    except KeyboardInterrupt:
        bar.close()
        save_run(folder, model, config, hierarchy, history, None, pre_losses)
        print(f"\ninterrupted: checkpoint saved in {folder}")
        raise
    bar.close()
    report = evaluate(model, x_test, y_test, hierarchy, config.decode)
    report["train_seconds"] = time.perf_counter() - started
    save_run(folder, model, config, hierarchy, history, report, pre_losses)
    if not quiet:
        print(format_report(report))
        print(f"saved model.npz, metrics.json, log.json, confusion_*.png, loss_curve.png in {folder}")
    return folder, report


def save_run(folder, model, config, hierarchy, history, report, pre_losses):
    from ..inspect.plots import plot_curves
    meta = {"config": asdict(config), "hierarchy": hierarchy.to_dict(), "kind": "classifier"}
    checkpoint.save(model, os.path.join(folder, "model.npz"), meta=meta)
    with open(os.path.join(folder, "log.json"), "w") as f:
        json.dump({"config": asdict(config), "history": history, "pretrain_losses": pre_losses}, f)
    if report is not None:
        with open(os.path.join(folder, "metrics.json"), "w") as f:
            json.dump(report, f, indent=1)
        plot_level_confusions(folder, report, hierarchy)
    if history:
        steps = [r["step"] for r in history]
        plot_curves(os.path.join(folder, "loss_curve.png"),
                    {"train": (steps, [r["loss"] for r in history])},
                    title="classifier loss", smoothing=max(1, len(steps) // 50))


def evaluate_run(folder, data=None, decode=None, quiet=False, device="cpu"):
    check_device(device)
    path = os.path.join(folder, "model.npz")
    if not os.path.exists(path):
        raise CheckpointError(f"{folder!r} is not a tinyar classify run folder: no model.npz")
    _, header = checkpoint.read(path)
    meta = header["meta"]
    config = ClassifyConfig(**meta["config"])
    if data:
        config.data = data
    hierarchy = ClassHierarchy.from_dict(meta["hierarchy"])
    _, _, x_test, y_test, data_hierarchy, _ = load_dataset(config)
    if data_hierarchy.num_labels != hierarchy.num_labels:
        raise ShapeError(f"classify --eval: the run was trained on {hierarchy.num_labels} labels, "
                         f"the data {config.data!r} has {data_hierarchy.num_labels}")
    model = build_model(config, hierarchy, x_test.shape[1:])
    checkpoint.load(model, path)
    place(model, device)
    report = evaluate(model, x_test, y_test, hierarchy, decode or config.decode)
    if not quiet:
        print(format_report(report))
    return report
