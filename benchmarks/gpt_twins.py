"""The GPTs that ``bench_gpt.py`` and ``bench_quality.py`` time: tinyar's
``AutoregressiveLM(backbone="transformer")`` and a PyTorch twin built from
``nn.TransformerEncoderLayer(norm_first=True, batch_first=True)`` blocks under
the same names, so one ``state_dict`` loads into both.

The twin is nanoGPT's model in PyTorch's own layers: token and learned
position embeddings, pre-LayerNorm blocks whose attention is
``scaled_dot_product_attention`` with the causal mask (PyTorch's
MultiheadAttention calls it when no weights are returned), a final LayerNorm
and a flat head tied to the token embedding (Press & Wolf 2017). Both sides
keep biases (nanoGPT's ``bias=False`` drops them; a few percent of the work).
"""
import numpy as np

import tinyar
from tinyar.models import AutoregressiveLM
from tinyar.optim import AdamW, clip_grad_norm_


def tinyar_gpt(vocab, width, layers, heads, context, head="flat", hierarchy=None,
               dropout=0.0, dtype=np.float32):
    tinyar.manual_seed(0)
    return AutoregressiveLM(vocab, width, width, layers, head=head, hierarchy=hierarchy,
                            tie_weights=head == "flat", backbone="transformer",
                            num_heads=heads, context=context, dropout=dropout, dtype=dtype)


def tinyar_step(model, x, y, lr=1e-3, clip=1.0):
    """One AdamW step on (x, y), gradient clipped as nanoGPT does."""
    optimizer = AdamW(model.parameters(), lr=lr, weight_decay=0.1)

    def step():
        loss, _ = model.loss(x, y)
        model.zero_grad()
        model.backward()
        if clip:
            clip_grad_norm_(model, clip)
        optimizer.step()
        return loss
    return step


def torch_gpt(torch, vocab, width, layers, heads, context, state=None, dropout=0.0, head=None):
    """The PyTorch twin; ``state`` (tinyar's ``state_dict``) sets its weights by name.
    ``head``: a module mapping (M, width) features and (M,) targets to the loss, in place of
    the tied flat softmax (PyTorch's AdaptiveLogSoftmaxWithLoss, say)."""
    nn = torch.nn

    class Backbone(nn.Module):
        def __init__(self):
            super().__init__()
            self.pos_embedding = nn.Embedding(context, width)
            for i in range(layers):
                setattr(self, f"block{i}", nn.TransformerEncoderLayer(
                    width, heads, 4 * width, dropout, activation="gelu", batch_first=True,
                    norm_first=True))
            self.norm = nn.LayerNorm(width)
            self.register_buffer("mask", nn.Transformer.generate_square_subsequent_mask(context),
                                 persistent=False)

        def forward(self, x):
            t = x.shape[1]
            h = x + self.pos_embedding.weight[:t]
            mask = self.mask[:t, :t]
            for i in range(layers):
                h = getattr(self, f"block{i}")(h, src_mask=mask, is_causal=True)
            return self.norm(h)

    class FlatHead(nn.Module):
        def __init__(self, tied):
            super().__init__()
            self.linear = nn.Linear(width, vocab)
            self.linear.weight = tied

        def forward(self, h, targets):
            return nn.functional.cross_entropy(self.linear(h), targets)

    class GPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = nn.Embedding(vocab, width)
            self.backbone = Backbone()
            self.head = head if head is not None else FlatHead(self.embedding.weight)

        def forward(self, ids, targets):
            h = self.backbone(self.embedding(ids))
            return self.head(h.reshape(-1, width), targets.reshape(-1))

        def logits(self, ids):
            return self.head.linear(self.backbone(self.embedding(ids)))

    model = GPT()
    if state is not None:
        if np.asarray(state["embedding.weight"]).dtype == np.float64:
            model = model.double()  # before loading: a float32 copy would round the weights
        own = model.state_dict()
        # the tied head's weight is the embedding's: tinyar's state_dict lists it once
        missing = [k for k in own if k not in state and k != "head.linear.weight"]
        if head is None and missing:
            raise KeyError(f"tinyar's state_dict lacks {missing[:4]}")
        model.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in state.items()
                               if k in own}, strict=False)
    return model


def torch_step(torch, model, x, y, lr=1e-3, clip=1.0, device="cpu"):
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.1)
    tx, ty = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = model(tx, ty)
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()
        return loss
    return step
