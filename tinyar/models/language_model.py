"""``AutoregressiveLM``: a recurrent language model with a flat or multi-level head.

    ids (N, T) -> Embedding -> RNN/LSTM/GRU stack -> Dropout -> head -> P(x_{t+1} | x_<=t)

(or, with ``backbone="conv"``, a stack of causal dilated convolutions in place
of the recurrent layers: ``nn/causal_conv.py``)

The head is either

* ``flat``: a Linear layer to V logits and a softmax, O(H V) per token
  (optionally weight-tied to the embedding, Press & Wolf 2017, which needs
  embed_dim == hidden_size), or
* ``multilevel``: ``MultiLevelSoftmax``, P(w | h) = P(c(w) | h) P(w | c(w), h),
  O(H (C + |c(w)|)) per token in training.

Training is stateful truncated BPTT: ``loss(x, y, state)`` returns the final
recurrent state, which the caller passes into the next batch; the gradient
stops at the batch boundary.

Backward, for one batch: the head gives dL/dh for every position; Dropout,
the recurrent stack (BPTT) and the Embedding (scatter-add into its rows)
each apply their own backward in reverse order.
"""
import math

import numpy as np

from ..backend import backend_of
from ..data.hierarchy import ClassHierarchy
from ..errors import ShapeError
from ..nn import Dropout, Embedding, Linear, Module
from ..nn.checks import describe
from ..nn.loss import CrossEntropyLoss
from ..nn.causal_conv import CausalConvStack
from ..nn.multilevel import MultiLevelSoftmax
from ..nn.recurrent import GRU, LSTM, RNN
from ..nn.sampling import sample_from_log_probs

CELLS = {"lstm": LSTM, "gru": GRU, "rnn": RNN}
HEADS = ("flat", "multilevel")


class AutoregressiveLM(Module):
    """Shapes: ids and targets (N, T) integers; hidden states (num_layers, N, H).

    ``loss(ids, targets, state=None) -> (loss, state)``: mean nats per token;
    ``backward()``: gradients of that loss into every parameter;
    ``next_log_probs(ids, state) -> (log P(next | ids) for the last position, state)``;
    ``generate(prompt_ids, max_new_tokens, temperature, top_k)``.
    """

    def __init__(self, vocab_size, embed_dim=64, hidden_size=256, num_layers=2, cell="lstm",
                 dropout=0.0, head="multilevel", hierarchy=None, tie_weights=False,
                 backbone="rnn", kernel_size=2, dtype=np.float32):
        super().__init__()
        if backbone not in ("rnn", "conv"):
            raise ValueError(f"AutoregressiveLM: backbone must be 'rnn' or 'conv', got {backbone!r}")
        if cell not in CELLS:
            raise ValueError(f"AutoregressiveLM: cell must be one of {sorted(CELLS)}, got {cell!r}")
        if head not in HEADS:
            raise ValueError(f"AutoregressiveLM: head must be one of {HEADS}, got {head!r}")
        self.vocab_size, self.embed_dim, self.hidden_size = int(vocab_size), int(embed_dim), \
            int(hidden_size)
        self.num_layers, self.cell, self.head_kind = int(num_layers), cell, head
        self.backbone, self.kernel_size = backbone, int(kernel_size)
        self.embedding = Embedding(self.vocab_size, self.embed_dim, dtype=dtype)
        if backbone == "rnn":
            self.rnn = CELLS[cell](self.embed_dim, self.hidden_size, self.num_layers,
                                   dropout=dropout if self.num_layers > 1 else 0.0, dtype=dtype)
        else:  # causal dilated convolutions (WaveNet-like): no state between batches
            self.rnn = CausalConvStack(self.embed_dim, self.hidden_size, self.num_layers,
                                       self.kernel_size, dtype=dtype)
        self.drop = Dropout(dropout)
        if head == "flat":
            self.decoder = Linear(self.hidden_size, self.vocab_size, dtype=dtype)
            if tie_weights:
                if self.embed_dim != self.hidden_size:
                    raise ValueError(f"AutoregressiveLM: tie_weights needs embed_dim == "
                                     f"hidden_size, got {self.embed_dim} and {self.hidden_size}")
                self.decoder.weight = self.embedding.weight
            self.criterion = CrossEntropyLoss()
        else:
            if hierarchy is None:
                raise ValueError("AutoregressiveLM: head='multilevel' needs a ClassHierarchy "
                                 "(e.g. ClassHierarchy.from_counts(tokenizer.counts))")
            if hierarchy.num_labels != self.vocab_size:
                raise ValueError(f"AutoregressiveLM: the hierarchy has {hierarchy.num_labels} "
                                 f"labels but the vocabulary {self.vocab_size} tokens")
            self.head = MultiLevelSoftmax(self.hidden_size, hierarchy, dtype=dtype)
        self.tie_weights = bool(tie_weights)

    def extra_repr(self):
        kind = f"cell={self.cell!r}" if self.backbone == "rnn" else "backbone='conv'"
        return (f"vocab_size={self.vocab_size}, {kind}, hidden_size={self.hidden_size}, "
                f"num_layers={self.num_layers}, head={self.head_kind!r}")

    @property
    def hierarchy(self):
        return self.head.hierarchy if self.head_kind == "multilevel" else None

    def config(self):
        """What ``from_config`` needs to rebuild this model (saved in checkpoints)."""
        return {"vocab_size": self.vocab_size, "embed_dim": self.embed_dim,
                "hidden_size": self.hidden_size, "num_layers": self.num_layers, "cell": self.cell,
                "dropout": self.drop.p, "head": self.head_kind, "tie_weights": self.tie_weights,
                "backbone": self.backbone, "kernel_size": self.kernel_size}

    @classmethod
    def from_config(cls, config, hierarchy=None):
        return cls(hierarchy=hierarchy, **config)

    # --- training -------------------------------------------------------------
    def _check_ids(self, ids, what="ids"):
        if getattr(ids, "ndim", None) != 2:
            raise ShapeError(f"{describe(self)}: expected {what} (N, T), got "
                             f"{tuple(np.shape(ids))}")

    def features(self, ids, state=None):
        """Top-layer hidden states (N, T, H) and the final recurrent state."""
        self._check_ids(ids)
        embedded = self.embedding(ids)
        output, state = self.rnn(embedded, state)
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
        flat = features.reshape(-1, self.hidden_size)
        if self.head_kind == "flat":
            value = self.criterion(self.decoder(flat), targets.reshape(-1))
        else:
            value = self.head(flat, targets.reshape(-1))
        return value, state

    forward = loss

    def backward(self, grad=1.0):
        if self.head_kind == "flat":
            grad_features = self.decoder.backward(self.criterion.backward(grad))
        else:
            grad_features = self.head.backward(grad)
        grad_output = self.drop.backward(grad_features.reshape(self._shape))
        grad_embedded, _ = self.rnn.backward(grad_output)  # truncation: no grad into the state
        self.embedding.backward(grad_embedded)

    # --- inference ------------------------------------------------------------
    def next_log_probs(self, ids, state=None):
        """log P(next token | ids) after the last position of each row: (N, V), and the state."""
        features, state = self.features(ids, state)
        last = _last_step(features)
        if self.head_kind == "flat":
            return backend_of(last).log_softmax_forward(self.decoder(last)), state
        return self.head.log_prob(last), state

    def generate(self, prompt_ids, max_new_tokens, temperature=1.0, top_k=None, rng=None):
        """Continue ``prompt_ids`` (1-D) by sampling; returns prompt + new ids (1-D int64).

        The multi-level head samples a class, then a token within it, so a
        step costs O(H (C + |class|)) rather than O(H V).
        """
        prompt_ids = np.asarray(prompt_ids, dtype=np.int64).reshape(1, -1)
        if prompt_ids.size == 0:
            raise ShapeError(f"{describe(self)}: generate needs a prompt of at least one token")
        was_training = self.training
        self.eval()
        try:
            out = list(prompt_ids[0])
            features, state = self.features(prompt_ids)
            for _ in range(int(max_new_tokens)):
                last = _last_step(features)
                if self.head_kind == "flat":
                    token = sample_from_log_probs(self.decoder(last), temperature, top_k, rng)[0]
                else:
                    token = self.head.sample(last, temperature, top_k, rng)[0]
                out.append(int(token))
                features, state = self.features(np.array([[token]], np.int64), state)
        finally:
            self.train(was_training)
        return np.array(out, np.int64)

    def evaluate(self, ids, batch_size=16, bptt=128):
        """Mean nats per token over a 1-D stream, carrying the state across windows."""
        from ..data.batching import StreamBatcher
        was_training = self.training
        self.eval()
        total, count, state = 0.0, 0, None
        try:
            batch_size = max(1, min(batch_size, (len(ids) - 1) // 2))
            for x, y in StreamBatcher(ids, batch_size, bptt):
                value, state = self.loss(x, y, state)
                total += value * y.size
                count += y.size
        finally:
            self.train(was_training)
        return total / max(count, 1)


def _last_step(features):
    """features[:, -1, :] as a C-contiguous (N, H) array on the device of ``features``."""
    return backend_of(features).contiguous(features[:, -1, :])


def perplexity(nats_per_token):
    return math.exp(nats_per_token)


def bits_per_token(nats_per_token):
    return nats_per_token / math.log(2)
