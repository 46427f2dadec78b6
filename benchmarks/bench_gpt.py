"""GPT training step and generation: tinyar against PyTorch CPU, same weights.

    python benchmarks/bench_gpt.py                 # nanoGPT's CPU configuration
    python benchmarks/bench_gpt.py --size baby     # nanoGPT's "baby GPT"
    python benchmarks/bench_gpt.py --generate      # tokens/s, with and without a cache

Sizes (nanoGPT's ``config/train_shakespeare_char.py`` and its README's CPU run):

* ``cpu``:  4 layers, 4 heads, width 128, context 64, batch 12, vocabulary 65;
* ``baby``: 6 layers, 6 heads, width 384, context 256, batch 64, vocabulary 65.

A step is forward, backward, gradient clipping at 1.0 and AdamW (weight decay
0.1) on a fixed batch; both sides have a flat head tied to the embedding.
The frameworks alternate in ``--rounds`` rounds and each keeps its best median
of ``--repeats`` steps after ``--warmup``.

``--size vocab50k`` is the large-vocabulary case: V = 50,000 Zipf-distributed
ids, 4 layers, 4 heads, width 256, context 128, batch 8. tinyar's multi-level
head (about sqrt(V) frequency classes) against PyTorch's full softmax and its
``AdaptiveLogSoftmaxWithLoss`` at cutoffs [2000, 10000] and [1000, 5000];
``--head-only`` times the output layer alone on the 1,024 feature rows.
``--shortlist K`` adds tinyar's multi-level head whose first level also holds
the K most frequent words, each a class of its own (Grave et al. 2017).

``--generate`` times sampling ``--new`` tokens after a one-token prompt with
the ``cpu`` model: tinyar's key/value cache, PyTorch's nanoGPT loop (the whole
window again for every token, no cache) and a PyTorch loop with a cache
written out the same way as tinyar's (keys and values appended per layer).
The default lengths are 63 tokens (all inside the 64-position context: what a
cache is for) and 200 (past it: with learned absolute positions a cached key
belongs to its position, so once the window is full every side runs the
whole window again for each token, cache or not).
"""
import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_conv import best_of_rounds  # noqa: E402
from common import table, torch_or_none  # noqa: E402
from gpt_twins import tinyar_gpt, tinyar_step, torch_gpt, torch_step  # noqa: E402
from lm_twins import zipf_tokens  # noqa: E402

SIZES = {"cpu": dict(layers=4, heads=4, width=128, context=64, batch=12),
         "baby": dict(layers=6, heads=6, width=384, context=256, batch=64),
         "vocab50k": dict(layers=4, heads=4, width=256, context=128, batch=8, vocab=50_000)}
CUTOFFS = ([2000, 10000], [1000, 5000])
VOCAB = 65


def zipf_hierarchy(vocab, shortlist=0):
    from tinyar.data.hierarchy import ClassHierarchy
    counts = np.bincount(zipf_tokens(vocab, 2_000_000, seed=1), minlength=vocab) + 1
    return ClassHierarchy.from_counts(counts, shortlist=shortlist)


def large_vocabulary(args, torch):
    size = SIZES["vocab50k"]
    vocab, width = size["vocab"], size["width"]
    ids = zipf_tokens(vocab, size["batch"] * (size["context"] + 1)).reshape(size["batch"], -1)
    x, y = ids[:, :-1].copy(), ids[:, 1:].copy()
    hierarchy = zipf_hierarchy(vocab)
    shape = (width, size["layers"], size["heads"], size["context"])
    ml = tinyar_gpt(vocab, *shape, head="multilevel", hierarchy=hierarchy)
    flat = tinyar_gpt(vocab, *shape)
    short = None
    if args.shortlist:
        short = (f"tinyar multi-level, short-list {args.shortlist}", tinyar_gpt(
            vocab, *shape, head="multilevel", hierarchy=zipf_hierarchy(vocab, args.shortlist)))
    calls = []
    if args.head_only:
        calls += head_only_calls(ml, flat, x, y, torch, vocab, width, short)
    else:
        calls += [("tinyar multi-level", tinyar_step(ml, x, y))]
        if short is not None:
            calls.append((short[0], tinyar_step(short[1], x, y)))
        calls.append(("tinyar flat softmax", tinyar_step(flat, x, y)))
        if torch is not None:
            twin = torch_gpt(torch, vocab, *shape, state=flat.state_dict())
            calls.append(("torch full softmax", torch_step(torch, twin, x, y)))
            for cutoffs in CUTOFFS:
                adaptive = torch.nn.AdaptiveLogSoftmaxWithLoss(width, vocab, cutoffs)
                twin = torch_gpt(torch, vocab, *shape, state=flat.state_dict(), head=_Loss(
                    torch, adaptive))
                calls.append((f"torch adaptive {cutoffs}", torch_step(torch, twin, x, y)))
    rows = best_of_rounds(calls, args)
    what = "output layer alone, forward + backward" if args.head_only else "training step"
    print(table(f"GPT {what}, V={vocab} (Zipf), {size['layers']}x{width}, context "
                f"{size['context']}, batch {size['batch']}, {hierarchy.num_classes} classes",
                rows, reference="tinyar multi-level"))


def _Loss(torch, adaptive):
    class AdaptiveHead(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.adaptive = adaptive

        def forward(self, h, targets):
            return self.adaptive(h, targets).loss
    return AdaptiveHead()


def head_only_calls(ml, flat, x, y, torch, vocab, width, short=None):
    rng = np.random.default_rng(0)
    h = rng.standard_normal((y.size, width)).astype(np.float32)
    t = y.reshape(-1)

    def step(head):
        def call():
            head.zero_grad()
            head(h, t)
            head.backward()
        return call
    calls = [("tinyar multi-level", step(ml.head))]
    if short is not None:
        calls.append((short[0], step(short[1].head)))
    calls.append(("tinyar flat softmax", step(flat.head)))
    if torch is not None:
        th, tt = torch.from_numpy(h).requires_grad_(True), torch.from_numpy(t)
        heads = [("torch full softmax", torch.nn.Linear(width, vocab), None)]
        heads += [(f"torch adaptive {c}", torch.nn.AdaptiveLogSoftmaxWithLoss(width, vocab, c),
                   True) for c in CUTOFFS]
        for name, module, adaptive in heads:
            def call(module=module, adaptive=adaptive):
                module.zero_grad()
                th.grad = None
                loss = module(th, tt).loss if adaptive else \
                    torch.nn.functional.cross_entropy(module(th), tt)
                loss.backward()
            calls.append((name, call))
    return calls


def training(args, torch):
    if args.size == "vocab50k":
        return large_vocabulary(args, torch)
    size = SIZES[args.size]
    ids = zipf_tokens(VOCAB, size["batch"] * (size["context"] + 1)).reshape(size["batch"], -1)
    x, y = ids[:, :-1].copy(), ids[:, 1:].copy()
    model = tinyar_gpt(VOCAB, size["width"], size["layers"], size["heads"], size["context"])
    calls = [("tinyar", tinyar_step(model, x, y))]
    if torch is not None:
        twin = torch_gpt(torch, VOCAB, size["width"], size["layers"], size["heads"],
                         size["context"], state=model.state_dict())
        calls.append(("torch", torch_step(torch, twin, x, y)))
    rows = best_of_rounds(calls, args)
    print(table(f"GPT training step ({args.size}): {size['layers']} layers, {size['heads']} "
                f"heads, width {size['width']}, context {size['context']}, batch "
                f"{size['batch']}, V={VOCAB}, AdamW", rows))


def generation(args, torch):
    for new in args.new:
        generation_of(args, torch, new)
        print()


def generation_of(args, torch, new):
    size = SIZES["cpu"]
    model = tinyar_gpt(VOCAB, size["width"], size["layers"], size["heads"], size["context"])
    rng = np.random.default_rng(0)
    prompt = np.array([1], np.int64)

    def tinyar_cached():
        model.generate(prompt, new, temperature=1.0, rng=rng)

    calls = [("tinyar, cache", tinyar_cached)]
    if torch is not None:
        twin = torch_gpt(torch, VOCAB, size["width"], size["layers"], size["heads"],
                         size["context"], state=model.state_dict()).eval()
        calls += [("torch, no cache (nanoGPT)", lambda: torch_uncached(torch, twin, size, new)),
                  ("torch, cache", lambda: torch_cached(torch, twin, size, new))]
    rows = []
    for name, call in calls:
        call()  # warm-up: compiles, allocates
        best = float("inf")
        for _ in range(args.rounds):
            start = time.perf_counter()
            call()
            best = min(best, time.perf_counter() - start)
        rows.append((name, best * 1e3 / new))
    lines = [table(f"generation, ms per token ({new} tokens after a 1-token prompt, the "
                   f"cpu model, context {size['context']})", rows, reference="tinyar, cache"),
             "", "| implementation | tokens/s |", "|---|---:|"]
    lines += [f"| {name} | {1e3 / ms:.0f} |" for name, ms in rows]
    print("\n".join(lines))


def torch_uncached(torch, twin, size, new):
    """nanoGPT's ``generate``: crop to the context, run the whole window, sample the last."""
    ids = torch.ones((1, 1), dtype=torch.long)
    with torch.no_grad():
        for _ in range(new):
            window = ids[:, -size["context"]:]
            logits = twin.logits(window)[:, -1, :]
            probs = torch.softmax(logits, dim=-1)
            ids = torch.cat([ids, torch.multinomial(probs, 1)], dim=1)
    return ids


def torch_cached(torch, twin, size, new):
    """The same loop with a key/value cache: each block's attention over the cached keys, by
    hand (PyTorch's encoder layer has no cache), the window restarted when it is full."""
    F = torch.nn.functional
    heads, width = size["heads"], size["width"]
    ids, caches = [1], None
    with torch.no_grad():
        for _ in range(new):
            if caches is None or caches[0][0].shape[2] >= size["context"]:
                window = ids[-(size["context"] - 1):] if caches is not None else ids
                caches = [None] * size["layers"]
                tokens = torch.tensor([window])
                start = 0
            else:
                tokens = torch.tensor([[ids[-1]]])
                start = caches[0][0].shape[2]
            h = twin.embedding(tokens) + twin.backbone.pos_embedding.weight[
                start:start + tokens.shape[1]]
            for i in range(size["layers"]):
                block = getattr(twin.backbone, f"block{i}")
                attn = block.self_attn
                q, k, v = F.linear(block.norm1(h), attn.in_proj_weight,
                                   attn.in_proj_bias).split(width, dim=-1)
                q, k, v = (t.view(1, -1, heads, width // heads).transpose(1, 2)
                           for t in (q, k, v))
                if caches[i] is not None:
                    k, v = torch.cat([caches[i][0], k], 2), torch.cat([caches[i][1], v], 2)
                caches[i] = (k, v)
                causal = caches[i][0].shape[2] == q.shape[2] and q.shape[2] > 1
                o = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
                h = h + attn.out_proj(o.transpose(1, 2).reshape(1, -1, width))
                h = h + block.linear2(F.gelu(block.linear1(block.norm2(h))))
            logits = twin.head.linear(twin.backbone.norm(h[:, -1]))
            ids.append(int(torch.multinomial(torch.softmax(logits, -1), 1)))
    return ids


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(SIZES), default="cpu")
    parser.add_argument("--generate", action="store_true")
    parser.add_argument("--head-only", action="store_true",
                        help="with --size vocab50k: the output layer alone")
    parser.add_argument("--shortlist", type=int, default=0,
                        help="with --size vocab50k: also a head with this root short-list")
    parser.add_argument("--new", type=int, nargs="+", default=[63, 200],
                        help="tokens to generate (one table for each)")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch = torch_or_none()
    (generation if args.generate else training)(args, torch)


if __name__ == "__main__":
    main()
