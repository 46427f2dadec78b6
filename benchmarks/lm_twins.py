"""The language models that the LM benchmarks time: tinyar's and PyTorch's twins,
built with the same sizes and weights, each exposing ``step()`` (one training
step on a fixed batch) for ``common.median_ms``."""
import numpy as np

import tinyar
from tinyar.data.hierarchy import ClassHierarchy
from tinyar.models import AutoregressiveLM
from tinyar.optim import Adam


def zipf_tokens(vocab, n, seed=0):
    """Token ids with Zipf-like frequencies (rank r has probability ~ 1/r), like words."""
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, vocab + 1)
    return rng.choice(vocab, size=n, p=p / p.sum()).astype(np.int64)


def batch(vocab, batch_size, steps, seed=0):
    ids = zipf_tokens(vocab, batch_size * (steps + 1), seed).reshape(batch_size, steps + 1)
    return ids[:, :-1].copy(), ids[:, 1:].copy()


def tinyar_lm(vocab, embed, hidden, layers, head, x, y, classes=None, lr=1e-3):
    """(model, step) with a fresh stateless step on the batch (x, y)."""
    tinyar.manual_seed(0)
    hierarchy = None
    if head == "multilevel":
        counts = np.bincount(zipf_tokens(vocab, 200_000, seed=1), minlength=vocab) + 1
        hierarchy = ClassHierarchy.from_counts(counts, classes)
    model = AutoregressiveLM(vocab, embed, hidden, layers, "lstm", head=head, hierarchy=hierarchy)
    optimizer = Adam(model.parameters(), lr=lr)

    def step():
        loss, _ = model.loss(x, y)
        model.zero_grad()
        model.backward()
        optimizer.step()
        return loss
    return model, step


def torch_lm(torch, vocab, embed, hidden, layers, head, x, y, state=None, cutoffs=None, lr=1e-3):
    """The PyTorch twin: Embedding -> LSTM -> (Linear + CrossEntropy | AdaptiveLogSoftmax)."""
    nn = torch.nn

    class LM(nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = nn.Embedding(vocab, embed)
            self.rnn = nn.LSTM(embed, hidden, layers, batch_first=True)
            if head == "flat":
                self.decoder = nn.Linear(hidden, vocab)
            else:
                self.adaptive = nn.AdaptiveLogSoftmaxWithLoss(hidden, vocab, cutoffs)

        def forward(self, ids, targets):
            out, _ = self.rnn(self.embedding(ids))
            out = out.reshape(-1, out.shape[-1])
            if head == "flat":
                return nn.functional.cross_entropy(self.decoder(out), targets.reshape(-1))
            return self.adaptive(out, targets.reshape(-1)).loss

    model = LM()
    if state is not None:  # same weights as tinyar's (flat head only: same names)
        own = model.state_dict()
        model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items() if k in own},
                              strict=False)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)

    def step():
        optimizer.zero_grad()
        loss = model(tx, ty)
        loss.backward()
        optimizer.step()
        return loss
    return model, step
