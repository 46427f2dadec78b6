"""``AutoregressiveLM``: a language model with a flat or multi-level head.

    ids (N, T) -> Embedding -> backbone -> Dropout -> head -> P(x_{t+1} | x_<=t)

The backbone is one of

* ``backbone="rnn"``: an RNN/LSTM/GRU stack (``nn/recurrent.py``),
* ``backbone="conv"``: causal dilated convolutions (``nn/causal_conv.py``),
* ``backbone="transformer"``: a GPT, learned positions and pre-LayerNorm
  causal self-attention blocks (``nn/transformer.py``), over windows of at
  most ``context`` tokens; its width is the embedding size, so
  ``embed_dim == hidden_size``. Its weights start as GPT-2's (normal, std
  0.02; the projections into the residual stream 0.02 / sqrt(2 layers)).

The model holds ``self.backbone`` (the recurrent or convolutional stack:
(N, T, E) -> (N, T, H) and a state) and ``self.head``, and never asks which
either is: every head has the same interface (``nn/heads.py``). The head is

* ``flat``: ``FlatSoftmaxHead``, a Linear layer to V logits and a softmax,
  O(H V) per token (optionally weight-tied to the embedding, Press & Wolf 2017,
  which needs embed_dim == hidden_size), or
* ``multilevel``: ``MultiLevelSoftmax``, P(w | h) = P(c(w) | h) P(w | c(w), h),
  O(H (C + |c(w)|)) per token in training.

Training is stateful truncated BPTT: ``loss(x, y, state)`` returns the final
recurrent state, which the caller passes into the next batch; the gradient
stops at the batch boundary. (A backbone with ``carries_state = False``, the
transformer, returns no state in training; each window stands alone.)

Backward, for one batch: the head gives dL/dh for every position; Dropout,
the recurrent stack (BPTT) and the Embedding (scatter-add into its rows)
each apply their own backward in reverse order.
"""
import math

import numpy as np

from ..backend import backend_of
from ..nn.hierarchy import ClassHierarchy
from ..errors import ConfigError, ShapeError, TargetError
from ..nn import Dropout, Embedding, Module
from ..nn.checks import check_dtype, check_int, check_real, describe
from ..nn.causal_conv import CausalConvStack
from ..nn.heads import FlatSoftmaxHead
from ..nn.multilevel import MultiLevelSoftmax
from ..nn.recurrent import GRU, LSTM, RNN
from ..nn.transformer import TransformerStack
from ..nn import init
from . import config_checks as cc

CELLS = {"lstm": LSTM, "gru": GRU, "rnn": RNN}
HEADS = ("flat", "multilevel")

#: Every key of ``AutoregressiveLM.config()`` and how it is checked (constructor and file).
CONFIG_SPEC = {"vocab_size": cc.size(), "embed_dim": cc.size(), "hidden_size": cc.size(),
               "num_layers": cc.size(), "cell": cc.choice(*CELLS), "dropout": cc.fraction(),
               "head": cc.choice(*HEADS), "tie_weights": cc.flag(),
               "backbone": cc.choice("rnn", "conv", "transformer"), "kernel_size": cc.size(),
               "num_heads": cc.size(), "context": cc.size(),
               "activation": cc.choice("gelu", "gelu_tanh")}

#: Keys added with the transformer backbone, and the values older checkpoints mean.
ADDED_KEYS = {"num_heads": 4, "context": 64, "activation": "gelu"}


class AutoregressiveLM(Module):
    """Parameters: ``embedding.weight`` (V, E), ``backbone.*`` (``nn.LSTM``'s names for a
    recurrent backbone), ``head.*`` (the head's). Shapes: ids and targets (N, T)
    integers; hidden states (num_layers, N, H).

    ``loss(ids, targets, state=None) -> (loss, state)``: mean nats per token;
    ``backward()``: gradients of that loss into every parameter;
    ``next_log_probs(ids, state) -> (log P(next | ids) for the last position, state)``;
    ``generate(prompt_ids, max_new_tokens, temperature, top_k)``.
    """

    def __init__(self, vocab_size, embed_dim=64, hidden_size=256, num_layers=2, cell="lstm",
                 dropout=0.0, head="multilevel", hierarchy=None, tie_weights=False,
                 backbone="rnn", kernel_size=2, num_heads=4, context=64, activation="gelu",
                 dtype=np.float32):
        super().__init__()
        args = cc.check_arguments("AutoregressiveLM", dict(
            vocab_size=vocab_size, embed_dim=embed_dim, hidden_size=hidden_size,
            num_layers=num_layers, cell=cell, dropout=dropout, head=head,
            tie_weights=tie_weights, backbone=backbone, kernel_size=kernel_size,
            num_heads=num_heads, context=context, activation=activation), CONFIG_SPEC)
        dtype = check_dtype("AutoregressiveLM", dtype)
        _check_head(args, hierarchy)
        self.vocab_size, self.embed_dim = args["vocab_size"], args["embed_dim"]
        self.hidden_size, self.num_layers = args["hidden_size"], args["num_layers"]
        self.cell, self.head_kind = args["cell"], args["head"]
        self.backbone_kind, self.kernel_size = args["backbone"], args["kernel_size"]
        self.num_heads, self.context = args["num_heads"], args["context"]
        self.activation = args["activation"]
        dropout, tie_weights = args["dropout"], args["tie_weights"]
        _check_transformer(args)
        self.embedding = Embedding(self.vocab_size, self.embed_dim, dtype=dtype)
        if backbone == "rnn":
            self.backbone = CELLS[cell](self.embed_dim, self.hidden_size, self.num_layers,
                                        dropout=dropout if self.num_layers > 1 else 0.0,
                                        dtype=dtype)
        elif backbone == "conv":  # causal dilated convolutions: no state between batches
            self.backbone = CausalConvStack(self.embed_dim, self.hidden_size, self.num_layers,
                                            self.kernel_size, dtype=dtype)
        else:  # a GPT: windows of at most `context` tokens, a key/value cache to generate
            self.backbone = TransformerStack(self.embed_dim, self.num_layers, self.num_heads,
                                             self.context, dropout=dropout,
                                             activation=self.activation, dtype=dtype)
        self.drop = Dropout(dropout)
        if head == "flat":
            self.head = FlatSoftmaxHead(self.hidden_size, self.vocab_size, dtype=dtype,
                                        tied_weight=self.embedding.weight if tie_weights
                                        else None)
        else:
            self.head = MultiLevelSoftmax(self.hidden_size, hierarchy, dtype=dtype)
        self.tie_weights = bool(tie_weights)
        if backbone == "transformer":
            self._gpt_init()

    def _gpt_init(self):
        """GPT-2's initialisation (Radford et al. 2019, as nanoGPT): every matrix and the
        embeddings N(0, 0.02^2), biases 0, LayerNorms 1 and 0, and the two projections that
        add into the residual stream (attention's out_proj, the MLP's linear2) N(0, (0.02 /
        sqrt(2 L))^2), so the stream's variance does not grow with depth."""
        std, residual_std = 0.02, 0.02 / math.sqrt(2 * self.num_layers)
        for name, p in self.named_parameters():
            if name.endswith("bias") and "norm" not in name:
                p.data[...] = 0
            elif "norm" in name:
                continue
            else:
                scale = residual_std if name.endswith(("out_proj.weight", "linear2.weight")) \
                    else std
                p.data[...] = init.normal(p.data.shape, scale, p.data.dtype)

    #: Before heads had one interface: the recurrent stack was ``rnn``, the flat head a
    #: Linear called ``decoder``.
    RENAMED = {"rnn": "backbone", "decoder": "head"}

    def extra_repr(self):
        kind = f"cell={self.cell!r}" if self.backbone_kind == "rnn" else \
            f"backbone={self.backbone_kind!r}"
        return (f"vocab_size={self.vocab_size}, {kind}, hidden_size={self.hidden_size}, "
                f"num_layers={self.num_layers}, head={self.head_kind!r}")

    @property
    def hierarchy(self):
        return self.head.hierarchy

    def config(self):
        """What ``from_config`` needs to rebuild this model (saved in checkpoints)."""
        return {"vocab_size": self.vocab_size, "embed_dim": self.embed_dim,
                "hidden_size": self.hidden_size, "num_layers": self.num_layers, "cell": self.cell,
                "dropout": self.drop.p, "head": self.head_kind, "tie_weights": self.tie_weights,
                "backbone": self.backbone_kind, "kernel_size": self.kernel_size,
                "num_heads": self.num_heads, "context": self.context,
                "activation": self.activation}

    @classmethod
    def from_config(cls, config, hierarchy=None):
        """The model ``config()`` describes (untrained: load the weights next). A config read
        from a file is checked key by key first (``CONFIG_SPEC``): a missing or unknown key,
        or a value of the wrong type or range, is a ``CheckpointError`` naming it."""
        if isinstance(config, dict):  # a checkpoint from before the transformer backbone
            config = {**ADDED_KEYS, **config}
        values = cc.check_config("AutoregressiveLM", config, CONFIG_SPEC)
        return cc.construct("AutoregressiveLM", cls, dict(values, hierarchy=hierarchy))

    # --- training -------------------------------------------------------------
    def _check_ids(self, ids, what="ids"):
        if getattr(ids, "ndim", None) != 2:
            raise ShapeError(f"{describe(self)}: expected {what} (N, T), got "
                             f"{tuple(np.shape(ids))}")

    def features(self, ids, state=None):
        """Top-layer hidden states (N, T, H) and the final recurrent state."""
        self._check_ids(ids)
        embedded = self.embedding(ids)
        output, state = self.backbone(embedded, state)
        return self.drop(output), state

    def loss(self, ids, targets, state=None):
        """Mean negative log-likelihood (nats per token) of ``targets`` given ``ids``."""
        self._check_ids(ids)
        self._check_ids(targets, "targets")
        if targets.shape != ids.shape:
            raise ShapeError(f"{describe(self)}: expected targets of the shape of ids "
                             f"{tuple(ids.shape)}, got {tuple(targets.shape)}")
        features, state = self.features(ids, state)
        self._shape = features.shape
        return self.head(features.reshape(-1, self.hidden_size), targets.reshape(-1)), state

    forward = loss

    def backward(self, grad=1.0):
        grad_features = self.head.backward(grad)
        grad_output = self.drop.backward(grad_features.reshape(self._shape))
        # truncated BPTT: no gradient into the carried state
        grad_embedded, _ = self.backbone.backward(grad_output)
        self.embedding.backward(grad_embedded)

    # --- inference ------------------------------------------------------------
    def next_log_probs(self, ids, state=None):
        """log P(next token | ids) after the last position of each row: (N, V), and the state."""
        features, state = self.features(self._window(ids) if state is None else ids, state)
        return self.head.log_prob(_last_step(features)), state

    def _window(self, ids):
        """The last ``context`` positions of ids (N, T) for a transformer, which sees no
        further back; ids unchanged for the other backbones."""
        if getattr(self.backbone, "carries_state", True) or ids.shape[1] <= self.context:
            return ids
        return np.ascontiguousarray(ids[:, -self.context:])

    def generate(self, prompt_ids, max_new_tokens, temperature=1.0, top_k=None, rng=None):
        """Continue ``prompt_ids`` (1-D) by sampling; returns prompt + new ids (1-D int64).

        ``temperature``: a finite number >= 0 (0: always the most likely token);
        ``top_k``: None or an integer in [1, vocab_size]; every prompt id must be in the
        vocabulary. Anything else is a ``ValueError`` (``ConfigError``, ``TargetError``,
        ``ShapeError``) before the first step.

        The multi-level head samples a class, then a token within it, so a
        step costs O(H (C + |class|)) rather than O(H V). A transformer keeps
        every layer's keys and values (its state here is a key/value cache), so
        a new token costs O(T d) and not the O(T^2 d) of running the window again.
        """
        prompt_ids = self._check_generate(prompt_ids, max_new_tokens, temperature, top_k)
        was_training = self.training
        self.eval()
        try:
            out = list(prompt_ids[0])
            features, state = self.features(self._window(prompt_ids))
            for _ in range(max_new_tokens):
                token = self.head.sample(_last_step(features), temperature, top_k, rng)[0]
                out.append(int(token))
                features, state = self.features(np.array([[token]], np.int64), state)
        finally:
            self.train(was_training)
        return np.array(out, np.int64)

    def _check_generate(self, prompt_ids, max_new_tokens, temperature, top_k):
        """The prompt as a (1, T) int64 array, after checking every argument of ``generate``:
        a negative or non-finite temperature, or a top_k outside [1, vocab_size], would
        sample from NaNs or from nothing. Temperature 0 is greedy decoding (the argmax)."""
        name = describe(self)
        prompt = np.asarray(prompt_ids)
        if prompt.dtype.kind not in "iu" and prompt.size:
            raise TargetError(f"{name}: generate expects the prompt as integer token ids, got "
                              f"dtype {prompt.dtype}")
        if prompt.ndim != 1 or prompt.size == 0:
            raise ShapeError(f"{name}: generate needs a 1-D prompt of at least one token, got "
                             f"shape {prompt.shape}")
        low, high = int(prompt.min()), int(prompt.max())
        if low < 0 or high >= self.vocab_size:
            raise TargetError(f"{name}: prompt token id {low if low < 0 else high} is outside "
                              f"the vocabulary [0, {self.vocab_size})")
        check_int(name, "max_new_tokens", max_new_tokens, low=0)
        check_real(name, "temperature", temperature, low=0.0)
        if top_k is not None:
            check_int(name, "top_k", top_k, low=1, high=self.vocab_size)
        return prompt.astype(np.int64).reshape(1, -1)

    def evaluate(self, ids, batch_size=16, bptt=128):
        """Mean nats per token over a 1-D stream, carrying the state across windows (a
        recurrent backbone's; a transformer sees each window of at most ``context`` tokens
        on its own, as nanoGPT evaluates)."""
        carries = getattr(self.backbone, "carries_state", True)
        if not carries:
            bptt = min(bptt, self.context)
        from ..data.batching import StreamBatcher
        was_training = self.training
        self.eval()
        total, count, state = 0.0, 0, None
        try:
            batch_size = max(1, min(batch_size, (len(ids) - 1) // 2))
            for x, y in StreamBatcher(ids, batch_size, bptt):
                value, state = self.loss(x, y, state if carries else None)
                total += value * y.size
                count += y.size
        finally:
            self.train(was_training)
        return total / max(count, 1)


def _check_head(args, hierarchy):
    """The head's arguments fit together: tied weights need the flat head and equal sizes,
    the multi-level head a hierarchy over exactly the vocabulary."""
    if args["tie_weights"]:
        if args["head"] != "flat":
            raise ConfigError("AutoregressiveLM: tie_weights needs head='flat' (the multi-level "
                              "head has no decoder matrix to tie), got head='multilevel'")
        if args["embed_dim"] != args["hidden_size"]:
            raise ConfigError(f"AutoregressiveLM: tie_weights needs embed_dim == hidden_size, "
                              f"got {args['embed_dim']} and {args['hidden_size']}")
    if hierarchy is not None and not isinstance(hierarchy, ClassHierarchy):
        raise TypeError(f"AutoregressiveLM: hierarchy must be a ClassHierarchy, got "
                        f"{type(hierarchy).__name__}")
    if args["head"] == "multilevel":
        if hierarchy is None:
            raise ConfigError("AutoregressiveLM: head='multilevel' needs a ClassHierarchy "
                              "(e.g. ClassHierarchy.from_counts(tokenizer.counts))")
        if hierarchy.num_labels != args["vocab_size"]:
            raise ConfigError(f"AutoregressiveLM: the hierarchy has {hierarchy.num_labels} "
                              f"labels but the vocabulary {args['vocab_size']} tokens")


def _check_transformer(args):
    """A transformer's width is its embedding size, split evenly over its heads."""
    if args["backbone"] != "transformer":
        return
    if args["embed_dim"] != args["hidden_size"]:
        raise ConfigError(f"AutoregressiveLM: backbone='transformer' needs embed_dim == "
                          f"hidden_size (its width), got {args['embed_dim']} and "
                          f"{args['hidden_size']}")
    if args["hidden_size"] % args["num_heads"]:
        raise ConfigError(f"AutoregressiveLM: num_heads must divide hidden_size "
                          f"{args['hidden_size']}, got {args['num_heads']}")


def _last_step(features):
    """features[:, -1, :] as a C-contiguous (N, H) array on the device of ``features``."""
    return backend_of(features).contiguous(features[:, -1, :])


def perplexity(nats_per_token):
    return math.exp(nats_per_token)


def bits_per_token(nats_per_token):
    return nats_per_token / math.log(2)
