# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 07 · The multi-level softmax
#
# A language model ends in a softmax over its vocabulary: for every position, the
# hidden state h (H numbers) is multiplied by an output matrix of V rows, one per
# word, and the V scores are normalised,
#
# ```
# P(w | h) = exp(z_w) / Σ_{v=1..V} exp(z_v),      z = W h + b,   W: (V, H)
# ```
#
# That costs O(H·V) per token, forward and again backward. With ~100 characters
# (chapter 06) it is nothing; with V = 10,000 words and H = 256 it is 2.6 million
# multiply-adds per token, more than the whole LSTM below it. The **multi-level
# (class-factored) softmax** (Goodman 2001; Mikolov et al. 2011) assigns every
# word w one class c(w) and factorises
#
# ```
# P(w | h) = P(c(w) | h) · P(w | c(w), h)
# ```
#
# a softmax over the C classes, times a softmax over the words *of that class
# only*. Training a token then costs O(H·(C + |c(w)|)) instead of O(H·V); with C ≈
# √V classes of ≈ √V words, that is O(H·√V).
#
# It is **exact**, not an approximation: the factored P is a proper distribution,
# since
#
# ```
# Σ_w P(w | h) = Σ_c P(c | h) Σ_{w ∈ c} P(w | c, h) = Σ_c P(c | h) · 1 = 1.
# ```
#
# It is a different *model* (a different parametrisation of the distribution),
# not a cheaper estimate of the flat one. This chapter builds the classes from word
# frequencies, counts the cost, times a training step flat against factored,
# checks that the probabilities sum to 1, and trains a small word-level model both
# ways for the same time.

# %%
from _common import median_time, new_figure, pick, savefig

import time

import numpy as np

import tinyar
from tinyar import nn
from tinyar.data import ClassHierarchy, StreamBatcher, WordTokenizer, load_corpus, split
from tinyar.models import AutoregressiveLM, perplexity
from tinyar.nn.loss import CrossEntropyLoss
from tinyar.nn.multilevel import MultiLevelSoftmax
from tinyar.optim import Adam, clip_grad_norm_

tinyar.manual_seed(0)                 # the same weights on every run
# the figures this chapter saves (tests/tutorials checks that it does)
FIGURES = ["07_class_sizes.png", "07_step_time.png", "07_perplexity.png"]

# %% [markdown]
# ## A word-level corpus
#
# The standard library again, now split into words: `WordTokenizer` makes a token
# of every word (identifiers included), every punctuation mark and every newline.
# We keep the 10,000 most frequent tokens; the rest become `<unk>`. Ids follow
# frequency rank: id 0 is the most frequent token.

# %%
text = load_corpus("stdlib", max_chars=pick(3_000_000, fast=300_000))
tokenizer = WordTokenizer(max_vocab=10_000).fit(text)
ids = tokenizer.encode(text, errors="replace")
V = tokenizer.vocab_size
counts = np.maximum(tokenizer.counts, 1)     # a count of 0 (an unused <unk>) would be log 0
train_ids, val_ids = split(ids, 0.9)
print(f"{len(ids):,} tokens, vocabulary {V:,}; <unk> is {np.mean(ids == tokenizer.unk_id):.2%} "
      f"of the tokens")
print("the 20 most frequent:", [tokenizer.itos[i] for i in range(20)])
print(f"ranks {V // 2}-{V // 2 + 9}:    ", [tokenizer.itos[i] for i in range(V // 2, V // 2 + 10)])

# %% [markdown]
# ## Classes by √frequency binning
#
# Which words share a class matters for speed, not for correctness. Mikolov et
# al. (2011) sort the words by frequency and cut the list into C consecutive bins
# holding equal shares of the total **√count**. The frequent words, with large √count
# each, fill a bin in a few words; the rare ones share large bins. Why √? A token
# of word w costs C + |c(w)|, so we want the frequent words, which are most of the
# tokens, in small classes. Binning on the counts themselves overdoes it: every
# class then has the same probability 1/C, so the expected class size is
# Σ_c (1/C)·|c| = V/C, no better than equal-size classes. The top classes get a
# word or two each, but the last one holds most of the vocabulary and is drawn
# 1/C of the time. The square root sits in between. `ClassHierarchy.from_counts(counts, C)`
# does √-binning, with C = round(√V) by default.
#
# The expected cost per training token, in rows of the output matrix touched, is
#
# ```
# E[cost] = C + Σ_w p(w) · |c(w)|          (p: the unigram frequencies)
# ```
#
# against V for the flat softmax. We compare three ways of making C classes:
# equal-size classes in frequency order, binning on counts, and binning on √counts.
# (Passing counts² to `from_counts` bins on the counts: its √ undoes the square.)

# %%
p_word = counts / counts.sum()
hierarchy = ClassHierarchy.from_counts(counts)
C = hierarchy.num_classes
print(hierarchy)
for c in (0, 1, 2, C // 2, C - 1):
    words = [tokenizer.itos[w] for w in hierarchy.labels_of(c)[:8]]
    print(f"class {c:3d}: {hierarchy.class_size(c):4d} words, "
          f"{p_word[hierarchy.labels_of(c)].sum():6.2%} of the tokens, e.g. {words}")


def expected_cost(h):
    sizes = h.sizes()[h.parent]                # |c(w)| for every word w
    return h.num_classes + float(np.sum(p_word * sizes))


def equal_size(num_classes):
    return ClassHierarchy.from_parents(np.arange(V) * num_classes // V)  # ids are in rank order


schemes = {
    "equal-size classes": equal_size,
    "binning on counts": lambda k: ClassHierarchy.from_counts(counts.astype(np.float64) ** 2, k),
    "binning on √counts": lambda k: ClassHierarchy.from_counts(counts, k),
}
class_counts = [10, 20, 50, 100, 200, 500, 1000]
costs = {name: [expected_cost(make(k)) for k in class_counts] for name, make in schemes.items()}
print(f"\nexpected rows per token (flat softmax: {V:,}):")
print(f"{'classes asked for':>20}" + "".join(f"{k:>7}" for k in class_counts))
for name, row in costs.items():
    print(f"{name:>20}" + "".join(f"{v:7.0f}" for v in row))
print(f"\nour hierarchy: C = {C}, expected cost {expected_cost(hierarchy):.0f} rows per token, "
      f"{V / expected_cost(hierarchy):.0f}× fewer than the flat softmax")

# %%
fig = new_figure(12, 4.2)
ax_sizes, ax_cost = fig.subplots(1, 2)
sizes = hierarchy.sizes()
share = np.array([p_word[hierarchy.labels_of(c)].sum() for c in range(C)])
ax_sizes.bar(np.arange(C), sizes, color="C0", label="words in the class")
ax_sizes.set_yscale("log")
ax_sizes.set_xlabel("class (most frequent words first)")
ax_sizes.set_ylabel("words in the class")
ax_sizes.set_title(f"√-frequency binning: V = {V:,} words, C = {C} classes")
twin = ax_sizes.twinx()
twin.plot(np.arange(C), share * 100, color="C3", lw=1.5)
twin.set_ylabel("share of all tokens (%)", color="C3")
for name, row in costs.items():
    ax_cost.loglog(class_counts, row, "o-", label=name)
ax_cost.axhline(V, color="k", ls="--", lw=1, label=f"flat softmax (V = {V:,})")
ax_cost.set_xlabel("number of classes asked for")
ax_cost.set_ylabel("expected rows per token, C + E|c(w)|")
ax_cost.set_title("cost of one training token")
ax_cost.legend(fontsize=8)
for ax in (ax_sizes, ax_cost):
    ax.grid(alpha=0.3, which="both")
savefig(fig, "07_class_sizes.png")

# %% [markdown]
# Left: the first classes hold a handful of words each (`\n`, `.`, `(`, `,`, ...)
# yet a large share of all tokens (red); the last ones hold hundreds of rare words
# that together are a small share. Right: √-binning is the cheapest of the three.
# The other two curves lie on top of each other, C + V/C, as worked out above.
# The minimum of the √-binning curve lies at a few dozen classes, somewhat below
# `from_counts`' default C = √V. The default is a rule of thumb, and the count of
# rows is not the whole cost (each class present in a batch is one more, smaller
# matrix product). (With many classes the binning can leave some empty, so
# `from_counts` may return fewer classes than asked for.)
#
# ## Timing one training step
#
# The count above is the arithmetic. What a step *costs* is another matter: the
# factored head does one small matrix product per class present in the batch,
# plus Python work to group the rows by class, where the flat head does one big,
# efficient product. So we measure: the forward and backward of the output layer
# alone, for a batch of M = 1,024 positions (32 sequences × 32 tokens) and H = 256,
# flat (`Linear` + `CrossEntropyLoss`) against factored (`MultiLevelSoftmax`).
# For V other than our corpus's we draw Zipf-distributed tokens, p(w) ∝ 1/rank,
# which is roughly how word frequencies fall off. Medians of a few repeats after a
# warm-up.

# %%
M, H = 1024, 256
rng = np.random.default_rng(0)
h_batch = rng.standard_normal((M, H)).astype(np.float32)


def time_heads(counts_v, targets):
    flat_head, criterion = nn.Linear(H, len(counts_v)), CrossEntropyLoss()
    factored = MultiLevelSoftmax(H, ClassHierarchy.from_counts(counts_v))

    def flat_step():
        criterion(flat_head(h_batch), targets)
        flat_head.zero_grad()
        flat_head.backward(criterion.backward())

    def factored_step():
        factored(h_batch, targets)
        factored.zero_grad()
        factored.backward()

    repeats = pick(7, fast=1)
    return median_time(flat_step, repeats), median_time(factored_step, repeats)


vocab_sizes = pick([1_000, 3_000, 10_000, 30_000], fast=[1_000, 3_000])
step_times = {"flat": [], "multi-level": []}
for vocab in vocab_sizes:
    zipf = 1.0 / np.arange(1, vocab + 1)
    zipf /= zipf.sum()
    targets = rng.choice(vocab, size=M, p=zipf)
    flat_s, factored_s = time_heads(np.round(zipf * 1e7) + 1, targets)
    step_times["flat"].append(flat_s)
    step_times["multi-level"].append(factored_s)
    print(f"Zipf V = {vocab:6,}: flat {flat_s * 1e3:7.1f} ms   multi-level {factored_s * 1e3:6.1f} ms"
          f"   speed-up ×{flat_s / factored_s:.1f}")

_, corpus_batch = StreamBatcher(train_ids, 32, 32).batch(0)   # a real batch: 32 rows × 32
corpus_targets = corpus_batch.reshape(-1)
flat_s, factored_s = time_heads(counts, corpus_targets)
print(f"our corpus, V = {V:,}: flat {flat_s * 1e3:7.1f} ms   multi-level {factored_s * 1e3:6.1f} ms"
      f"   speed-up ×{flat_s / factored_s:.1f}   ({len(np.unique(hierarchy.parent[corpus_targets]))}"
      f" of {C} classes present in the batch)")

# %%
fig = new_figure(6.5, 4.2)
ax = fig.add_subplot()
for name, seconds in step_times.items():
    ax.loglog(vocab_sizes, np.array(seconds) * 1e3, "o-", label=name)
ax.loglog([V], [flat_s * 1e3], "x", color="C0", ms=9, label="flat, our corpus")
ax.loglog([V], [factored_s * 1e3], "x", color="C1", ms=9, label="multi-level, our corpus")
ax.set_xlabel("vocabulary size V")
ax.set_ylabel("output layer, forward + backward (ms)")
ax.set_title(f"one training step of the head: {M} positions, H = {H}")
ax.grid(alpha=0.3, which="both")
ax.legend(fontsize=8)
savefig(fig, "07_step_time.png")

# %% [markdown]
# The flat head's time grows in proportion to V: three times the words, three
# times the time. The factored head's grows much more slowly, roughly like √V,
# so its advantage widens with the vocabulary. The speed-up is well short of the
# ratio of rows touched printed earlier, though. A product with a block of a
# few dozen rows of weights runs far below the machine's peak, and every class
# present in the batch (most of them, in a batch of 1,024 positions) costs a few
# Python-level calls. Timings on a busy machine scatter a lot; run the cell again
# if a point looks odd.
#
# ## Exactness: the probabilities sum to one
#
# `MultiLevelSoftmax.log_prob(h)` computes log P(w | h) = log P(c(w) | h) +
# log P(w | c(w), h) for *every* word, an (M, V) array. That costs O(H·V) like
# the flat softmax, so it is for evaluation and inspection, not for training. We
# check that each row is a distribution, and that the training loss from
# `forward` is the mean of −log P(target).

# %%
head = MultiLevelSoftmax(H, hierarchy).double()
h = rng.standard_normal((64, H))
log_p = head.log_prob(h)                                   # (64, V), float64
row_sums = np.exp(log_p).sum(axis=1)
loss = head(h, corpus_targets[:64])
direct = -log_p[np.arange(64), corpus_targets[:64]].mean()
print(f"Σ_w P(w | h) over {V:,} words, 64 rows: min {row_sums.min():.15f}, "
      f"max {row_sums.max():.15f}")
print(f"training loss {loss:.12f}  vs  mean -log P(target) from log_prob {direct:.12f}")
assert np.allclose(row_sums, 1.0, atol=1e-12) and abs(loss - direct) < 1e-10

# %% [markdown]
# Both to float64 precision. This is also what makes perplexities of the two heads
# comparable: both are the exponential of an honest cross-entropy over the whole
# vocabulary.
#
# ## Same time, two models
#
# Finally a whole word-level LSTM language model (`AutoregressiveLM`: embedding 64,
# one LSTM layer of 256 units), trained twice for the **same wall-clock time**:
# once with the flat head, once with the multi-level head. Both start from the same
# initial embedding and LSTM weights, see the same batches in the same order (32 ×
# 32 tokens, truncated BPTT as in chapter 06), and use Adam at a constant learning
# rate of 3e-3. We record the validation perplexity every few seconds of training
# (the time spent evaluating is not counted).

# %%
budget = pick(45.0, fast=2.0)                    # seconds of training for each model
checkpoints = pick(5, fast=1)                    # validation points along the way
val_eval = val_ids[:pick(10_000, fast=1_000)]
batcher = StreamBatcher(train_ids, 32, 32, drop_last=True)
runs = {}
for head_kind in ("flat", "multilevel"):
    tinyar.manual_seed(0)                        # the same embedding and LSTM weights
    model = AutoregressiveLM(V, embed_dim=64, hidden_size=256, num_layers=1, head=head_kind,
                             hierarchy=hierarchy if head_kind == "multilevel" else None)
    optimizer = Adam(model.parameters(), lr=3e-3)
    seconds, steps, state, position = 0.0, 0, None, 0
    curve = [(0.0, 0, perplexity(model.evaluate(val_eval, batch_size=16, bptt=64)))]
    while seconds < budget:
        started = time.perf_counter()
        if position == len(batcher):
            position, state = 0, None
        x, y = batcher.batch(position)
        position += 1
        loss, state = model.loss(x, y, state)
        model.zero_grad()
        model.backward()
        clip_grad_norm_(model, 1.0)
        optimizer.step()
        steps += 1
        seconds += time.perf_counter() - started
        if seconds >= budget * len(curve) / checkpoints or seconds >= budget:
            curve.append((seconds, steps,
                          perplexity(model.evaluate(val_eval, batch_size=16, bptt=64))))
    runs[head_kind] = (curve, steps, seconds)
    best = min(curve, key=lambda point: point[2])
    print(f"{head_kind:>10} head: {steps:4d} steps in {seconds:.0f} s "
          f"({seconds / steps * 1e3:.0f} ms per step); validation perplexity: at the start "
          f"{curve[0][2]:.0f}, at the end {curve[-1][2]:.1f}, lowest {best[2]:.1f} (step {best[1]})")

# %%
fig = new_figure(11, 4.2)
ax_time, ax_steps = fig.subplots(1, 2, sharey=True)
for head_kind, (curve, steps, seconds) in runs.items():
    xs, step_counts, ppl = zip(*curve)
    ax_time.semilogy(xs, ppl, "o-", label=f"{head_kind} head ({steps} steps)")
    ax_steps.semilogy(step_counts, ppl, "o-", label=f"{head_kind} head")
ax_time.set_xlabel("training time (s)")
ax_time.set_ylabel("validation perplexity")
ax_time.set_title(f"word-level LSTM, V = {V:,}: the same time")
ax_steps.set_xlabel("training steps")
ax_steps.set_title("the same curves against steps")
for ax in (ax_time, ax_steps):
    ax.grid(alpha=0.3, which="both")
    ax.legend()
savefig(fig, "07_perplexity.png")

# %% [markdown]
# What the two panels show:
#
# * **Against time** (left), the multi-level model is far ahead. It takes many
#   more steps in the same seconds: its output layer is no longer the bottleneck.
#   (Perplexity e^loss: the model is as unsure as if it chose among that many
#   equally likely words. Uniform guessing over 10,000 words is 10,000.)
# * **Against steps** (right) the two are much closer: over the steps the flat
#   model managed, the two curves are near each other. The factored model is not
#   a much better learner per update; it is a much cheaper update, and a fixed
#   budget of compute rewards exactly that.
# * **At step 0** the factored model already has a perplexity of several hundred
#   instead of 10,000. With random weights both levels are roughly uniform, so a
#   word w gets probability about (1/C)·(1/|c(w)|). The frequent words sit in tiny
#   classes and so get much more than 1/V: the class structure built from the
#   counts is itself a (unigram-like) prior.
#
# Two more things the factorisation buys, both in `MultiLevelSoftmax`:
#
# * **Sampling** in O(H·(C + |c|)): draw a class from P(c | h), then a word from
#   P(w | c, h) (`AutoregressiveLM.generate` does this).
# * **Greedy decoding** `predict(h, decode="greedy")`: the most likely class, then
#   the most likely word in it. Cheap, but not always the most likely word overall
#   (`decode="joint"` finds that, at O(H·V)).
#
# ## What to take away
#
# * P(w | h) = P(c(w) | h) · P(w | c(w), h) is exact, and costs O(H·(C + |c(w)|))
#   per training token instead of O(H·V).
# * √-frequency binning puts frequent words in small classes and keeps the expected
#   cost near its minimum, at C ≈ √V.
# * Measure: the arithmetic saving is larger than the time saving, because small
#   products and per-class overhead are less efficient than one big product.
#   The saving grows with V.
