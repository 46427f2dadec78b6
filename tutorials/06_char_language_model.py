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
# # 06 · A character-level language model
#
# An *autoregressive* language model assigns a probability to a text one token at
# a time, each given all the tokens before it:
#
# ```
# P(x_1, ..., x_T) = P(x_1) · P(x_2 | x_1) · P(x_3 | x_1, x_2) · ... · P(x_T | x_<T)
# ```
#
# Learn the conditional P(next | past) well and you can both *score* text (how
# surprised is the model?) and *write* it: sample a token, append it, repeat. Here
# the tokens are single characters and the text is Python's own standard library,
# which every Python install has, so nothing is downloaded. The model is an LSTM
# (chapter 03 wrote its cell kernel) from `tinyar.models.AutoregressiveLM`.
#
# In this chapter:
#
# 1. text → characters → integer ids (`CharTokenizer`);
# 2. cutting a long stream into batches for **truncated backpropagation through
#    time** (`StreamBatcher`);
# 3. training for 90 seconds, and measuring the validation loss
#    in **nats** and **bits per character**;
# 4. sampling: what **temperature** and **top-k** do to the text.
#
# `tinyar train --level char --head flat` runs the same loop from the command
# line (`tinyar/train/lm.py`); here it is written out so you can see every step.

# %%
from _common import new_figure, pick, savefig

import math
import time

import numpy as np

import tinyar
from tinyar.data import CharTokenizer, StreamBatcher, load_corpus, split
from tinyar.inspect.plots import smooth
from tinyar.models import AutoregressiveLM, bits_per_token, perplexity
from tinyar.optim import Adam, clip_grad_norm_

tinyar.manual_seed(0)                 # the same weights on every run
# the figures this chapter saves (tests/tutorials checks that it does)
FIGURES = ["06_loss_curve.png", "06_temperature.png"]

# %% [markdown]
# ## The corpus and the tokenizer
#
# `load_corpus("stdlib")` concatenates the `.py` files of the running Python's
# standard library (tests, codecs and installed packages left out) in a fixed
# order. We take the first two million characters. `CharTokenizer` gives every
# distinct character an id, in code-point order, and keeps how often each occurred.
# The last 10% of the ids are held out for validation: text the model never
# trains on, from *later* in the corpus, so no training window overlaps it.

# %%
text = load_corpus("stdlib", max_chars=pick(2_000_000, fast=80_000))
tokenizer = CharTokenizer.from_text(text)
ids = tokenizer.encode(text)
train_ids, val_ids = split(ids, 0.9)
V = tokenizer.vocab_size
print(f"{len(text):,} characters, vocabulary of {V} characters")
print(f"training {len(train_ids):,} ids, validation {len(val_ids):,} ids")
print("a piece of the text:\n" + text[9000:9300])
print("its first ids:", ids[9000:9020])

# %% [markdown]
# Two numbers to beat, before any learning:
#
# * **Uniform guessing** over V characters costs log V nats per character.
# * **Unigram**: always predicting the training-set character frequencies p(c),
#   ignoring all context, costs the cross-entropy −Σ q(c) log p(c) on the
#   validation text (q the validation frequencies).
#
# A nat is the unit of information with natural logarithms; divide by ln 2 for
# bits. Bits per character (bpc) is the usual measure for character models: an
# ideal compressor driven by the model would need that many bits per character.

# %%
p_unigram = (np.bincount(train_ids, minlength=V) + 1) / (len(train_ids) + V)  # +1: no zeros
unigram_nats = -np.mean(np.log(p_unigram[val_ids]))
print(f"uniform: {math.log(V):.3f} nats = {math.log2(V):.3f} bits per character")
print(f"unigram: {unigram_nats:.3f} nats = {bits_per_token(unigram_nats):.3f} bits per character")

# %% [markdown]
# ## Batches for truncated backpropagation through time
#
# An LSTM reads the text one character at a time and carries a state (h, c)
# forward. Backpropagating through a million steps is impossible, so we use
# **truncated BPTT**: cut the stream into windows of T = 64 characters, run the
# forward pass over one window, backpropagate only within it, but *carry the
# state* into the next window. The model still sees arbitrarily long context in
# the forward pass; the gradient only looks back at most T steps.
#
# To make batches, `StreamBatcher` cuts the stream into `batch_size` long rows
# (row b is the b-th contiguous slice), and batch k is the k-th window of every
# row. So row b of batch k+1 continues exactly where row b of batch k stopped, and
# the final state of one batch is the right initial state for the next. The
# targets y are the inputs shifted by one character: at every position the model
# predicts the next character.

# %%
batch_size, bptt = 32, 64
batcher = StreamBatcher(train_ids, batch_size, bptt, drop_last=True)
x0, y0 = batcher.batch(0)
x1, _ = batcher.batch(1)
print(f"{len(batcher)} batches per epoch of {batch_size} rows × {bptt} characters")
print("batch 0, row 1, input :", repr(tokenizer.decode(x0[1])))
print("batch 0, row 1, target:", repr(tokenizer.decode(y0[1])))
print("batch 1, row 1, input :", repr(tokenizer.decode(x1[1])), " <- continues row 1")

# %% [markdown]
# ## The model
#
# ```
# ids (N, T) → Embedding (V → 64) → LSTM (64 → 256) → Linear (256 → V) → softmax
# ```
#
# The loss at each position is the cross-entropy −log P(x_{t+1} | x_≤t), averaged
# over the N·T positions of the batch: exactly the number of nats per character
# we want to lower. `model.loss(x, y, state)` returns that mean and the final
# state; `model.backward()` runs the chain rule back through the head, the LSTM
# (BPTT over the window) and the embedding.
#
# The output layer here is a plain ("flat") softmax over the V characters, which is
# cheap for V ≈ 100. For word vocabularies it is the most expensive part;
# chapter 07 replaces it with a two-level softmax.

# %%
model = AutoregressiveLM(V, embed_dim=64, hidden_size=256, num_layers=1, cell="lstm",
                         head="flat")
print(model)
print(f"{model.num_parameters():,} parameters")

# %% [markdown]
# ## Training
#
# The loop is the one from chapter 01 with four additions:
#
# * the **state** is passed from one batch to the next (and reset to `None`, zeros,
#   when an epoch starts over);
# * **gradient clipping** rescales the whole gradient when its norm exceeds 1,
#   which guards a recurrent network against the occasional exploding gradient;
# * **Adam** with a learning rate that warms up over the first 50 steps and then
#   follows a cosine down to zero (chapter 02);
# * every so often, the loss on two fixed pieces of text, 20,000 characters of
#   the validation text and 20,000 of the training text, computed by
#   `model.evaluate`, which runs the model over a stream with the state carried
#   along and no gradients. The batch loss is too noisy to compare with: every
#   batch is different code.
#
# Computers differ in speed by a factor of ten, so instead of a number of steps we
# give training a **time budget** (90 seconds) and let the cosine run over the
# budget: at each step we set the learning rate from the fraction of the time
# used. That is all a scheduler does (it sets `optimizer.lr`); chapter 02's
# `CosineAnnealingLR` does the same over a known number of steps. A faster machine
# takes more steps in the budget and ends lower; the printout says how many.

# %%
train_budget = pick(90.0, fast=4.0)              # seconds of training (evaluation not counted)
peak_lr, warmup_steps = 3e-3, 50
evaluations = 8                                  # evaluation points along the way
val_piece = val_ids[:pick(20_000, fast=3_000)]   # fixed pieces: quick, and comparable
train_piece = train_ids[-pick(20_000, fast=3_000):]

optimizer = Adam(model.parameters(), lr=peak_lr)
history = {"step": [], "loss": [], "eval_step": [], "val": [], "train": []}
state, position, step, train_seconds = None, 0, 0, 0.0
history["eval_step"].append(0)                   # where the untrained model starts
history["val"].append(model.evaluate(val_piece, batch_size=16, bptt=128))
history["train"].append(model.evaluate(train_piece, batch_size=16, bptt=128))
while train_seconds < train_budget:
    started = time.perf_counter()
    progress = train_seconds / train_budget
    warm = min(1.0, (step + 1) / warmup_steps)
    optimizer.lr = peak_lr * warm * 0.5 * (1 + math.cos(math.pi * progress))
    if position == len(batcher):                 # a new epoch: start from a zero state
        position, state = 0, None
    x, y = batcher.batch(position)
    position += 1
    loss, state = model.loss(x, y, state)        # forward over the window, carrying state
    model.zero_grad()
    model.backward()                             # BPTT within the window only
    clip_grad_norm_(model, 1.0)
    optimizer.step()
    step += 1
    train_seconds += time.perf_counter() - started
    history["step"].append(step)
    history["loss"].append(loss)
    if train_seconds >= train_budget * len(history["eval_step"]) / evaluations:
        history["eval_step"].append(step)
        history["val"].append(model.evaluate(val_piece, batch_size=16, bptt=128))
        history["train"].append(model.evaluate(train_piece, batch_size=16, bptt=128))
        print(f"step {step:5d}  lr {optimizer.lr:.2e}  batch {loss:.3f}  training text "
              f"{history['train'][-1]:.3f}  validation {history['val'][-1]:.3f} nats/char "
              f"({train_seconds:.0f} s)")
print(f"trained {step} steps in {train_seconds:.0f} s ({step * batch_size * bptt:,} characters, "
      f"{step * batch_size * bptt / train_seconds:,.0f} per second; "
      f"{step / len(batcher):.1f} passes over the training text)")

# %%
final_val = model.evaluate(val_ids, batch_size=16, bptt=128)
print(f"validation, all {len(val_ids):,} held-out characters: {final_val:.3f} nats/char = "
      f"{bits_per_token(final_val):.3f} bits/char, perplexity {perplexity(final_val):.2f}")
print(f"(uniform {math.log2(V):.2f} bits, unigram {bits_per_token(unigram_nats):.2f} bits)")

fig = new_figure(6.5, 4.2)
ax = fig.add_subplot()
window = max(1, len(history["loss"]) // 40)
smoothed = smooth(history["loss"], window)
ax.plot(history["step"][len(history["step"]) - len(smoothed):], smoothed, color="0.7",
        label=f"batch loss (moving average of {window})")
ax.plot(history["eval_step"], history["train"], "o-", label="training text (fixed piece)")
ax.plot(history["eval_step"], history["val"], "o-", label="validation text (fixed piece)")
ax.axhline(unigram_nats, color="k", ls=":", lw=1, label="unigram baseline")
ax.set_xlabel("step")
ax.set_ylabel("nats per character")
ax.set_ylim(0, min(4.8, max(history["loss"]) + 0.2))
ax.set_title("character LSTM on the standard library")
ax.grid(alpha=0.3)
ax.legend()
savefig(fig, "06_loss_curve.png")

# %% [markdown]
# Reading the numbers (they differ from machine to machine, since a faster one
# takes more steps in the budget):
#
# * The untrained model starts near log V ≈ 4.6 nats: random weights predict a
#   nearly uniform distribution. Within a few dozen steps it is below the unigram
#   baseline (it has learned which characters are common), and then it falls
#   slowly as it learns context: indentation, keywords, `self.`, closing brackets,
#   names that recur.
# * **Perplexity** e^loss is the effective number of equally likely choices per
#   character: about 5 here, against 96 for uniform guessing.
# * The model does better on training text than on validation text. Part of that
#   gap is that it has seen the training text (two or three passes); part is that
#   the last tenth of the corpus is other modules, with other names and styles,
#   than the rest. The gap widens only slowly and the validation loss still falls
#   at the end, so this model would profit from more training. A validation loss
#   that turned up while the training loss kept falling would be overfitting: the
#   signal to stop, or to add dropout (`AutoregressiveLM(..., dropout=0.2)`).
# * The grey batch loss wanders even after averaging: each batch is a different
#   piece of code, and docstrings are easier than dense expressions. Compare
#   models on fixed text, never on batch losses.
#
# ## Sampling: temperature and top-k
#
# To generate, feed a prompt, take P(next | prompt), draw a character, append it,
# and repeat, carrying the LSTM state so each step costs one time step. Two knobs
# reshape the distribution before drawing:
#
# * **Temperature** T divides the log-probabilities: p_T(c) ∝ p(c)^(1/T).
#   T < 1 sharpens the distribution toward the most likely characters (safer,
#   more repetitive); T > 1 flattens it (more varied, more mistakes); T → 0 is
#   always taking the most likely character (greedy), which tends to loop.
# * **Top-k** keeps only the k most likely characters and renormalises: it cuts
#   off the long tail of unlikely characters that, drawn now and then, derail a
#   sample, without sharpening the ones that remain.
#
# First, what they do to one distribution: the next character after a prompt.

# %%
prompt = "        return "
logp, _ = model.next_log_probs(tokenizer.encode(prompt)[None, :])
logp = logp[0].astype(np.float64)


def reshape(logp, temperature=1.0, top_k=None):
    """The distribution sampling draws from: softmax(logp / T), optionally top-k only."""
    z = logp / temperature
    if top_k is not None:
        z = np.where(z >= np.sort(z)[-top_k], z, -np.inf)
    p = np.exp(z - z.max())
    return p / p.sum()


def show(ch):
    return {"\n": "⏎", " ": "␣"}.get(ch, ch)


top = np.argsort(logp)[::-1][:12]
settings = [("T = 0.5", dict(temperature=0.5)), ("T = 1.0", dict(temperature=1.0)),
            ("T = 1.2", dict(temperature=1.2)), ("T = 1.0, top-k = 5", dict(top_k=5))]
fig = new_figure(12, 3.4)
for ax, (title, kwargs) in zip(fig.subplots(1, len(settings), sharey=True), settings):
    p = reshape(logp, **kwargs)
    ax.bar(range(len(top)), p[top], color="C0")
    ax.set_xticks(range(len(top)), [show(tokenizer.itos[i]) for i in top])
    ax.set_title(f"{title}   (rest: {1 - p[top].sum():.1%})", fontsize=10)
    ax.grid(alpha=0.3, axis="y")
fig.supylabel("probability")
fig.suptitle(f"the next character after {prompt!r}: the 12 most likely, reshaped")
savefig(fig, "06_temperature.png")

# %% [markdown]
# Now whole samples, all from the same prompt and the same random seed, so only
# the reshaping differs:

# %%
prompt = "class "
sample_length = pick(300, fast=40)
for title, kwargs in [("temperature 0.5", dict(temperature=0.5)),
                      ("temperature 0.8", dict(temperature=0.8)),
                      ("temperature 1.2", dict(temperature=1.2)),
                      ("temperature 1.0, top-k 5", dict(temperature=1.0, top_k=5))]:
    out = model.generate(tokenizer.encode(prompt), sample_length,
                         rng=np.random.default_rng(0), **kwargs)
    print(f"----- {title} -----\n{tokenizer.decode(out)}\n")

# %% [markdown]
# What to look for: at 0.5 the text is the most regular (indentation, `self.`,
# `def`, `return`) and tends to repeat itself; at 1.2 it invents words and breaks
# the layout; 0.8 is a common compromise. Top-k 5 at temperature 1 keeps the
# variety of T = 1 within each step but never draws the rare characters that
# derail a line. (All four start alike: the same seed draws the same first
# random numbers, and the first characters are nearly certain anyway.) None of it
# is valid Python for long. A 256-unit LSTM trained for a minute and a half has
# learned the look of code, not its meaning, but the look is there: indentation
# after `:`, docstrings, `self._name` attributes, `def` with arguments.
#
# ## What to take away
#
# * A language model is trained by minimising −log P(next | past), in nats per
#   token; divide by ln 2 for bits per character, exponentiate for perplexity.
# * Truncated BPTT: carry the recurrent state across windows in the forward pass,
#   stop the gradient at the window's start. `StreamBatcher` lays out the stream
#   so that consecutive batches continue each other row by row.
# * Sampling is a choice of distribution: temperature sharpens or flattens it,
#   top-k cuts its tail.
#
# Next: chapter 07 goes from ~100 characters to 10,000 words, where the softmax
# over the vocabulary becomes the bottleneck, and factorises it.
