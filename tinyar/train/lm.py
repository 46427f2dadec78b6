"""Training, sampling and evaluating the autoregressive language model.

``train_lm(config)`` is the whole loop, readable top to bottom:

    text -> tokenizer -> ids -> 90/10 split -> (x, y) stream batches
    for each step: loss, state = model.loss(x, y, state)     # truncated BPTT
                   model.backward(); clip; optimizer.step(); scheduler.step()
                   every few steps: validation loss, a generated sample
    saves into the run folder: model.npz (model + optimizer + where training
    stopped), vocab.json, hierarchy.json, log.json, loss_curve.png, samples.txt

Ctrl-C saves a checkpoint; ``--resume RUN`` continues from it.
"""
import json
import math
import os
import time
from dataclasses import asdict

import numpy as np

from .. import checkpoint
from ..data import CharTokenizer, StreamBatcher, Tokenizer, WordTokenizer, load_corpus, split
from ..data.hierarchy import ClassHierarchy, HierarchyError
from ..errors import CheckpointError
from ..models import AutoregressiveLM, bits_per_token, perplexity
from ..optim import SGD, Adagrad, Adam, AdamW, RMSprop, clip_grad_norm_
from ..optim.lr_scheduler import CosineAnnealingLR
from ..progress import ProgressBar
from ..random import generator, manual_seed
from .config import LMConfig
from .placement import check_device, place

OPTIMIZERS = {"adam": Adam, "adamw": AdamW, "sgd": SGD, "rmsprop": RMSprop, "adagrad": Adagrad}


def run_folder(config):
    if config.out:
        return config.out
    return os.path.join("runs", time.strftime("lm-%Y%m%d-%H%M%S"))


def build_tokenizer(config, text):
    if config.level == "char":
        return CharTokenizer().fit(text)
    if config.level == "word":
        return WordTokenizer(max_vocab=config.vocab).fit(text)
    raise ValueError(f"--level must be 'char' or 'word', got {config.level!r}")


def build_hierarchy(config, tokenizer):
    if config.head != "multilevel":
        return None
    classes = config.classes or None
    if classes is not None and classes > tokenizer.vocab_size:
        raise HierarchyError(f"--classes {classes} is larger than the vocabulary "
                             f"({tokenizer.vocab_size} tokens); use at most {tokenizer.vocab_size}")
    return ClassHierarchy.from_counts(np.maximum(tokenizer.counts, 1), classes)


def build_model(config, tokenizer, hierarchy):
    return AutoregressiveLM(tokenizer.vocab_size, config.embed, config.hidden, config.layers,
                            config.cell, config.dropout, config.head, hierarchy, config.tie,
                            backbone=config.backbone)


def build_optimizer(config, model):
    if config.optimizer not in OPTIMIZERS:
        raise ValueError(f"--optimizer must be one of {sorted(OPTIMIZERS)}, got {config.optimizer!r}")
    kwargs = {"lr": config.lr}
    if config.weight_decay:
        kwargs["weight_decay"] = config.weight_decay
    return OPTIMIZERS[config.optimizer](model.parameters(), **kwargs)


def sample_text(model, tokenizer, prompt, tokens, temperature=0.8, top_k=None, rng=None):
    """Generate ``tokens`` new tokens after ``prompt`` (a string); returns the whole text."""
    prompt_ids = tokenizer.encode(prompt, errors="strict") if prompt else \
        np.array([int(np.argmax(tokenizer.counts))], np.int64)
    ids = model.generate(prompt_ids, tokens, temperature=temperature, top_k=top_k, rng=rng)
    return tokenizer.decode(ids)


class Run:
    """A run folder: where a training run keeps its files."""

    def __init__(self, folder):
        self.folder = folder

    def path(self, name):
        return os.path.join(self.folder, name)

    def save(self, model, optimizer, tokenizer, hierarchy, config, progress, history):
        os.makedirs(self.folder, exist_ok=True)
        meta = {"config": asdict(config), "model": model.config(), "tokenizer": tokenizer.to_dict(),
                "hierarchy": hierarchy.to_dict() if hierarchy is not None else None,
                "progress": progress}
        checkpoint.save(model, self.path("model.npz"), meta=meta, optimizer=optimizer)
        tokenizer.save(self.path("vocab.json"))
        if hierarchy is not None:
            hierarchy.save(self.path("hierarchy.json"))
        _write_json(self.path("log.json"), {"config": asdict(config), "history": history,
                                            "progress": progress})

    def load_meta(self):
        _, header = checkpoint.read(self.path("model.npz"))
        return header["meta"]


def _write_json(path, data):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1)
    os.replace(tmp, path)


def load_run(folder, device="cpu"):
    """(model, tokenizer, meta) of a run folder's checkpoint, the model on ``device``."""
    check_device(device)
    path = os.path.join(folder, "model.npz")
    if not os.path.exists(path):
        raise CheckpointError(f"{folder!r} is not a tinyar run folder: it has no model.npz")
    meta = Run(folder).load_meta()
    tokenizer = Tokenizer.from_dict(meta["tokenizer"])
    hierarchy = ClassHierarchy.from_dict(meta["hierarchy"]) if meta.get("hierarchy") else None
    model = AutoregressiveLM.from_config(meta["model"], hierarchy)
    checkpoint.load(model, path)
    return place(model, device), tokenizer, meta


def train_lm(config: LMConfig, resume=None, steps=None, quiet=False):
    """Train a language model; returns the run folder.

    ``resume``: a run folder to continue (its saved settings are used;
    ``steps`` may extend the run).
    """
    history, progress = [], {"step": 0, "tokens": 0, "seconds": 0.0, "position": 0}
    if resume:
        meta = Run(resume).load_meta()
        config, progress = LMConfig(**meta["config"]), meta["progress"]
        config.out = resume
        history = json.load(open(os.path.join(resume, "log.json")))["history"]
    check_device(config.device)
    manual_seed(config.seed)
    text = load_corpus(config.data, max_chars=config.max_chars)
    tokenizer = build_tokenizer(config, text) if not resume else \
        Tokenizer.from_dict(meta["tokenizer"])
    ids = tokenizer.encode(text, errors="replace")
    train_ids, val_ids = split(ids, 0.9)
    val_ids = val_ids[:config.eval_tokens]
    hierarchy = build_hierarchy(config, tokenizer) if not resume else \
        (ClassHierarchy.from_dict(meta["hierarchy"]) if meta["hierarchy"] else None)
    model = place(build_model(config, tokenizer, hierarchy), config.device)
    optimizer = build_optimizer(config, model)
    batcher = StreamBatcher(train_ids, config.batch, config.bptt, drop_last=True)
    if steps is not None:
        config.steps, config.epochs = int(steps), 0.0
    steps = int(math.ceil(config.epochs * len(batcher))) if config.epochs > 0 else config.steps
    scheduler = CosineAnnealingLR(optimizer, T_max=max(steps, config.warmup + 1),
                                  warmup_steps=config.warmup) if config.schedule == "cosine" \
        else None
    run = Run(run_folder(config))
    config.out = run.folder
    if resume:
        checkpoint.load(model, run.path("model.npz"), optimizer=optimizer)
        if scheduler is not None:
            for _ in range(progress["step"]):
                scheduler.step()
        generator().bit_generator.state = progress["rng"]

    if not quiet:
        print(f"tinyar train: {len(ids):,} {config.level} tokens from {config.data!r} "
              f"(vocabulary {tokenizer.vocab_size}), {model.num_parameters():,} parameters, "
              f"{steps} steps of {config.batch}x{config.bptt} tokens -> {run.folder}")
        if hierarchy is not None:
            print(f"  head: {hierarchy}")

    recorder = None
    if config.record_every > 0:
        from ..inspect.recorder import Recorder
        recorder = Recorder(model, every=config.record_every,
                            histogram_steps=(1, max(1, steps // 2), steps))

    def snapshot():
        progress["rng"] = generator().bit_generator.state
        run.save(model, optimizer, tokenizer, hierarchy, config, progress, history)
        if recorder is not None:
            recorder.save(run.path("recorder.json"))

    tokens_per_step = config.batch * config.bptt
    state, position = None, progress["position"]
    bar = ProgressBar(steps, "train", unit="step", rate_unit="tok", rate_scale=tokens_per_step,
                      disable=quiet, initial=progress["step"])
    started = time.perf_counter() - progress["seconds"]
    try:
        for step in range(progress["step"], steps):
            if position >= len(batcher):
                position, state = 0, None  # a new epoch starts from a zero state
            x, y = batcher.batch(position)
            position += 1
            loss, state = model.loss(x, y, state)
            model.zero_grad()
            model.backward()
            grad_norm = clip_grad_norm_(model, config.clip) if config.clip > 0 else float("nan")
            optimizer.step()
            if recorder is not None:
                recorder.step()
            if scheduler is not None:
                scheduler.step()
            progress.update(step=step + 1, tokens=progress["tokens"] + tokens_per_step,
                            position=position, seconds=time.perf_counter() - started)
            record = {"step": step + 1, "loss": loss, "lr": optimizer.param_groups[0]["lr"],
                      "grad_norm": float(grad_norm), "seconds": progress["seconds"]}
            if model.head_kind == "multilevel":
                record["class_loss"], record["word_loss"] = model.head.last_losses
            out_of_time = 0 < config.max_seconds <= progress["seconds"]
            last = step + 1 == steps or out_of_time
            if (step + 1) % config.eval_every == 0 or last:
                with _paused(recorder):
                    val = model.evaluate(val_ids, batch_size=min(16, config.batch),
                                         bptt=config.bptt)
                record.update(val_loss=val, val_ppl=perplexity(val), val_bits=bits_per_token(val))
                bar.write(f"step {step + 1}: train loss {loss:.3f}, validation {val:.3f} nats/token "
                          f"(perplexity {perplexity(val):.2f}, {bits_per_token(val):.3f} bits/token)")
            if (step + 1) % config.sample_every == 0 or last:
                with _paused(recorder):
                    sample = sample_text(model, tokenizer, config.prompt, config.sample_tokens)
                record["sample"] = sample
                bar.write(f"--- sample at step {step + 1} ---\n{sample}\n---")
            history.append(record)
            bar.update(1, loss=loss, lr=record["lr"])
            if (step + 1) % config.checkpoint_every == 0:
                snapshot()
            if out_of_time:
                break
    except KeyboardInterrupt:
        bar.close()
        snapshot()
        print(f"\ninterrupted at step {progress['step']}: checkpoint saved in {run.folder}; "
              f"continue with: tinyar train --resume {run.folder}")
        raise
    bar.close()
    snapshot()
    _plots(run, history)
    if not quiet:
        final = history[-1]
        print(f"done: validation {final.get('val_loss', float('nan')):.3f} nats/token, "
              f"perplexity {final.get('val_ppl', float('nan')):.2f}, in "
              f"{progress['seconds']:.0f} s; saved model.npz, vocab.json, log.json, "
              f"loss_curve.png in {run.folder}")
    return run.folder


def _paused(recorder):
    """Evaluation and sampling forwards are not training steps: keep them out of the record."""
    import contextlib
    return recorder.paused() if recorder is not None else contextlib.nullcontext()


def _plots(run, history):
    from ..inspect.plots import plot_curves
    steps = [r["step"] for r in history]
    curves = {"train": (steps, [r["loss"] for r in history])}
    val = [(r["step"], r["val_loss"]) for r in history if "val_loss" in r]
    if val:
        curves["validation"] = tuple(zip(*val))
    plot_curves(run.path("loss_curve.png"), curves, ylabel="nats / token",
                title="language model loss", smoothing=max(1, len(steps) // 50))
    with open(run.path("samples.txt"), "w") as f:
        for r in history:
            if "sample" in r:
                f.write(f"=== step {r['step']} ===\n{r['sample']}\n\n")


def evaluate_run(folder, data=None, split_name="val", max_chars=None, batch=16, bptt=128,
                 device="cpu"):
    """nats/token, perplexity and bits/token of a run's model on some text."""
    model, tokenizer, meta = load_run(folder, device)
    config = meta["config"]
    text = load_corpus(data or config["data"], max_chars=max_chars or config["max_chars"])
    ids = tokenizer.encode(text, errors="replace")
    if split_name == "val":
        _, ids = split(ids, 0.9)
    nats = model.evaluate(ids, batch_size=batch, bptt=bptt)
    result = {"tokens": int(len(ids)), "nats_per_token": nats, "perplexity": perplexity(nats),
              "bits_per_token": bits_per_token(nats)}
    if meta["config"]["level"] == "char":
        result["bits_per_char"] = result["bits_per_token"]
    return result
