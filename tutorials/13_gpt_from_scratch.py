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
# # 13 · A GPT from scratch
#
# Chapter 12 built causal self-attention by hand. A **GPT** (Radford et al.
# 2018, 2019) is little more than that layer, stacked: embed the tokens, add a
# learned vector for each position, pass the result through L identical
# **transformer blocks**, and read the next-token distribution off the top, as
# chapter 06's LSTM did. Everything it needs is already in tinyar:
# `CausalSelfAttention`, `TransformerBlock` and `TransformerStack` in
# `tinyar/nn/`, and `AutoregressiveLM(..., backbone="transformer")` around them.
#
# In this chapter:
#
# 1. the block: pre-LayerNorm, attention, an MLP, two residual connections,
#    written out with tinyar's parts and checked against `TransformerBlock`;
# 2. the GPT: positions, weight tying, GPT-2's initialisation, and where the
#    parameters are;
# 3. training it on Tiny Shakespeare within a time budget (nanoGPT's CPU size:
#    4 layers, 4 heads, width 128, context 64, batch 12, AdamW at 1e-3);
# 4. generating with a **key/value cache**, timed against recomputing the window
#    for every token;
# 5. what the heads look at: attention maps of a prompt, layer by layer;
# 6. the GPT against an LSTM given the same wall time.
#
# `tinyar train --data shakespeare --backbone transformer --heads 4 --context 64
# --layers 4 --hidden 128` trains the same model from the command line.

# %%
from _common import new_figure, pick, savefig

import math
import time

import numpy as np
from matplotlib.colors import PowerNorm

import tinyar
from tinyar import nn
from tinyar.backend.cpu.threads import set_blas_threads
from tinyar.data import CharTokenizer, RandomWindowBatcher, StreamBatcher, load_corpus, split
from tinyar.models import AutoregressiveLM, bits_per_token
from tinyar.optim import Adam, AdamW, clip_grad_norm_

tinyar.manual_seed(0)                 # the same weights on every run
rng = np.random.default_rng(0)
# the figures this chapter saves (tests/tutorials checks that it does)
FIGURES = ["13_generation_time.png", "13_attention_maps.png", "13_gpt_vs_lstm.png"]

# The matrices here are small (768 rows of 128 in training, one row when generating):
# a second BLAS thread gains little, and on a busy machine the two threads' spinning
# can make every product several times slower (chapter 10). One thread it is.
set_blas_threads(1)

# %% [markdown]
# ## The data
#
# Tiny Shakespeare (Karpathy's char-rnn corpus): 1.1 million characters of the
# plays, speakers' names and all. It ships with tinyar, so nothing is
# downloaded. Characters are the tokens, 65 of them; the last 10% is held out.

# %%
text = load_corpus("shakespeare")
tokenizer = CharTokenizer.from_text(text)
ids = tokenizer.encode(text)
train_ids, val_ids = split(ids, 0.9)
V = tokenizer.vocab_size
print(f"{len(text):,} characters, vocabulary of {V}; training {len(train_ids):,}, "
      f"validation {len(val_ids):,}")
print(text[:250])

# %% [markdown]
# ## The block
#
# A transformer block keeps a **residual stream** h (N, T, E) and adds two
# things to it, each computed from a normalised copy:
#
# ```
# h = x + Attention(LayerNorm₁(x))                       positions exchange information
# y = h + W₂ GELU(W₁ LayerNorm₂(h) + b₁) + b₂            each position thinks on its own
# ```
#
# * **Attention** (chapter 12) is the only place where positions talk to each
#   other: position t gathers from positions ≤ t.
# * The **MLP** works on every position separately: E → 4E → E with a GELU,
#   x Φ(x) (Φ the normal CDF), a smooth ReLU. Most of a block's parameters are here.
# * **Residual connections**: each branch *adds* to h instead of replacing it.
#   Backward, the gradient of a sum passes through unchanged, dh = dy +
#   (the branch's backward of dy), so the gradient from the loss reaches the
#   first block undiminished however deep the stack, the same trick as the
#   LSTM's additive cell (chapter 05).
# * **Pre-LayerNorm** (GPT-2's order, and torch's `norm_first=True`): the
#   normalisation sits at the *start* of each branch, so the stream itself is
#   never normalised and the identity path stays clean. The stack ends with
#   one last LayerNorm before the output layer. (The original transformer
#   normalised after each sum, which needs a careful learning-rate warm-up to
#   train at all.)
#
# `TransformerBlock` is exactly this. We compute it from its own parts, one line
# per equation, and compare:

# %%
E, H = 128, 4
block = nn.TransformerBlock(E, H)
print(block)
x = rng.standard_normal((2, 10, E)).astype(np.float32)

h = x + block.self_attn(block.norm1(x))
y_by_hand = h + block.linear2(nn.GELU()(block.linear1(block.norm2(h))))
y_block = block(x)
print(f"block(x) against the two lines above: max difference "
      f"{np.abs(y_block - y_by_hand).max():.1e}")
for name, p in block.named_parameters():
    print(f"  {name:<26}{str(p.shape):<12}{p.size:>8,}")
print(f"  {'total':<38}{block.num_parameters():>8,}  (the MLP: 8E² of the 12E²)")

# %% [markdown]
# ## The GPT
#
# ```
# ids (N, T) → token embedding (V, E) + position embedding (context, E)
#            → L blocks → LayerNorm → Linear to V logits → softmax
# ```
#
# * **Positions.** Attention by itself does not know the order of its keys
#   (permute them and the weighted average is the same); the mask tells a
#   position what is past, not how far back. A learned vector per position,
#   added to the token's embedding, supplies it. With learned positions the
#   model can see at most `context` tokens.
# * **Weight tying** (`tie_weights=True`): the output layer reuses the token
#   embedding matrix, logits = h Wₑᵀ. A token's input and output vectors are
#   one, which saves V·E parameters and usually helps.
# * **Initialisation**, as GPT-2 and nanoGPT: every matrix N(0, 0.02²), and the
#   two projections that write into the residual stream (attention's
#   `out_proj`, the MLP's `linear2`) smaller by √(2L), so that the stream's
#   variance does not grow with the number of blocks adding to it.

# %%
context, layers = 64, 4
gpt = AutoregressiveLM(V, embed_dim=E, hidden_size=E, num_layers=layers,
                       backbone="transformer", num_heads=H, context=context, head="flat",
                       tie_weights=True)
groups = {}
for name, p in gpt.named_parameters():
    group = ("token embedding (V, E), tied to the output layer" if name.startswith("embedding")
             else "positions (context, E)" if "pos_embedding" in name
             else f"{layers} blocks" if name.startswith("backbone.block")
             else "final LayerNorm" if name.startswith("backbone.norm")
             else "output layer's bias (its weight is the embedding)")
    groups[group] = groups.get(group, 0) + p.size
for group, count in groups.items():
    print(f"  {group:<52}{count:>9,}")
print(f"  {'total':<52}{gpt.num_parameters():>9,}")

# %% [markdown]
# ## Training
#
# nanoGPT's recipe, scaled to a CPU:
#
# * batches of 12 windows of 64 characters at **random offsets**
#   (`RandomWindowBatcher`): a transformer carries no state from one window to
#   the next, so the windows need not continue each other as chapter 06's
#   streams did;
# * **AdamW** (Adam with decoupled weight decay, chapter 02) at 1e-3, β₂ = 0.99,
#   warmed up over 100 steps and then down a cosine to 1e-4, the cosine running
#   over the **time budget** as in chapter 06; gradient norm clipped at 1;
# * the loss on a fixed piece of validation text every so often
#   (`model.evaluate`: each window of 64 on its own, as nanoGPT measures it).
#
# The function below trains any `AutoregressiveLM`, recurrent or not, for a
# number of seconds; we will reuse it for the LSTM. Evaluation time is not
# counted against the budget.

# %%
train_budget = pick(70.0, fast=3.0)              # seconds of training, for each model
val_piece = val_ids[:pick(20_000, fast=2_000)]   # fixed: the curves are comparable
evaluations = pick(8, fast=2)


def train_for(model, next_batch, optimizer, budget, peak_lr, min_lr=1e-4, warmup=100):
    """Train for ``budget`` seconds; returns the history of the validation loss.

    ``next_batch(state) -> (x, y, state)`` gives the batches (and carries a
    recurrent state when there is one). The first step is not timed: it pays for
    one-time costs (Numba loading its compiled kernels, memory first touched)."""
    history = {"seconds": [0.0], "steps": [0], "val": [model.evaluate(val_piece)]}
    state, step, seconds = None, 0, 0.0
    while seconds < budget:
        started = time.perf_counter()
        progress = seconds / budget
        warm = min(1.0, (step + 1) / warmup)
        cosine = 0.5 * (1 + math.cos(math.pi * progress))      # 1 -> 0 over the budget
        optimizer.lr = min_lr + (peak_lr * warm - min_lr) * cosine
        x, y, state = next_batch(state)
        loss, state = model.loss(x, y, state)
        model.zero_grad()
        model.backward()
        clip_grad_norm_(model, 1.0)
        optimizer.step()
        step += 1
        seconds += (time.perf_counter() - started) if step > 1 else 0.0
        if seconds >= budget * len(history["val"]) / evaluations:
            history["seconds"].append(seconds)
            history["steps"].append(step)
            history["val"].append(model.evaluate(val_piece))
            print(f"  step {step:5d}  {seconds:5.1f} s  lr {optimizer.lr:.1e}  batch {loss:.3f}  "
                  f"validation {history['val'][-1]:.3f} nats/char")
    print(f"  {step} steps in {seconds:.0f} s, {1000 * seconds / step:.1f} ms a step")
    return history


windows = RandomWindowBatcher(train_ids, batch_size=12, seq_len=context)


def random_windows(state):
    x, y = windows.sample()
    return x, y, None                            # no state between windows


optimizer = AdamW(gpt.parameters(), lr=1e-3, betas=(0.9, 0.99), weight_decay=0.1)
print(f"GPT, {gpt.num_parameters():,} parameters, {train_budget:.0f} s:")
gpt_history = train_for(gpt, random_windows, optimizer, train_budget, peak_lr=1e-3)
held_out = val_ids[:pick(50_000, fast=5_000)]
gpt_val = gpt.evaluate(held_out)
print(f"validation ({len(held_out):,} characters): {gpt_val:.3f} nats/char = "
      f"{bits_per_token(gpt_val):.3f} bits/char (uniform: {math.log(V):.2f} nats)")

# %% [markdown]
# nanoGPT's CPU run of this size reaches about 1.88 nats on this split after
# 2000 steps; how close we get depends on how many steps the budget buys on
# your machine (printed above). A sample, to see what that number means:

# %%
prompt = "ROMEO:\n"
sample = gpt.generate(tokenizer.encode(prompt), pick(300, fast=30), temperature=0.8,
                      top_k=20, rng=np.random.default_rng(0))
print(tokenizer.decode(sample))

# %% [markdown]
# ## Generating with a key/value cache
#
# To sample token t+1 the model needs the last position's output, and that
# depends on the keys and values of all positions ≤ t in every layer. The naive
# loop runs the whole window again for every new token: O(T²) work per token in
# the attention and O(T) in everything else. But the causal mask (chapter 12)
# makes the keys and values of earlier positions *independent of later ones*:
# once computed they never change. So keep them. `generate` holds a
# `TransformerCache` (each layer's keys and values) and feeds the model only the
# new token, whose query attends to the cached keys: O(T) per token.
#
# Both loops below go through the same tokens (a sample) one at a time, through
# the public `next_log_probs(ids, state)`: with `state=None` it runs the last
# `context` tokens from scratch; with the cache it was handed last time, only
# the new token. We check that they give the same distributions and time every
# token.
#
# One thing the cache cannot do: a model with learned positions sees at most
# `context` tokens, so once the text is longer, the window slides by one and
# *every* position moves. The cache is then of no use, and each token past the
# context is a full recompute in both loops.

# %%
gpt.eval()                                       # the cache exists only in evaluation mode
steps = pick(2 * context, fast=context + 8)
tokens = gpt.generate(tokenizer.encode(prompt), steps, temperature=0.8, top_k=20,
                      rng=np.random.default_rng(1))
start = len(tokenizer.encode(prompt))


def per_token(cached):
    """Seconds per new token, and log P(next) at each position, for the sequence ``tokens``."""
    seconds, logps = [], []
    logp, state = gpt.next_log_probs(tokens[None, :start])
    for t in range(start, len(tokens)):
        begin = time.perf_counter()
        if cached:
            logp, state = gpt.next_log_probs(tokens[None, t:t + 1], state)
        else:
            logp, _ = gpt.next_log_probs(tokens[None, :t + 1])      # the last `context` of them
        seconds.append(time.perf_counter() - begin)
        logps.append(logp[0])
    return np.array(seconds), np.array(logps)


per_token(True)                                  # warm-up: load the kernels
_, cached_logp = per_token(True)
_, uncached_logp = per_token(False)
# each token's time, the median of a few passes: one pass is at the mercy of the machine
repeats = pick(3, fast=1)
cached_s = np.median([per_token(True)[0] for _ in range(repeats)], axis=0)
uncached_s = np.median([per_token(False)[0] for _ in range(repeats)], axis=0)
positions = np.arange(start, len(tokens)) + 1    # tokens in the sequence after the step
inside = positions <= context
print(f"same distributions: max |log P cached - log P recomputed| = "
      f"{np.abs(cached_logp - uncached_logp).max():.1e}")
print(f"within the context ({inside.sum()} tokens): cached "
      f"{1000 * cached_s[inside].mean():.2f} ms a token, recomputed "
      f"{1000 * uncached_s[inside].mean():.2f} ms "
      f"({uncached_s[inside].sum() / cached_s[inside].sum():.1f}x)")
if (~inside).any():
    print(f"past the context ({(~inside).sum()} tokens): cached "
          f"{1000 * cached_s[~inside].mean():.2f} ms, recomputed "
          f"{1000 * uncached_s[~inside].mean():.2f} ms")

fig = new_figure(7, 4)
ax = fig.add_subplot()
ax.plot(positions, 1000 * uncached_s, ".", label="recompute the window (next_log_probs(ids))")
ax.plot(positions, 1000 * cached_s, ".", label="key/value cache (next_log_probs(new, cache))")
ax.axvline(context, color="k", ls=":", lw=1, label=f"context = {context}")
ax.set_xlabel("length of the sequence after the new token")
ax.set_ylabel("ms per token")
ax.set_ylim(0, None)
ax.grid(alpha=0.3)
ax.legend(fontsize=8)
ax.set_title("generating one token at a time")
savefig(fig, "13_generation_time.png")

# %% [markdown]
# Within the context the cached cost per token stays flat while the recomputed
# one grows with the window; past it, the two meet. (Models meant for long
# generation use positions that are *relative*, such as rotary embeddings,
# so that cached keys stay valid when the window slides.)
#
# The gain here is modest, well short of the 64 times fewer positions
# computed: a model this small on a CPU spends most of a one-token step on
# fixed costs, some twenty op calls per layer, each a Python call and a kernel
# with almost nothing to do. The recomputed window's cost grows with its length
# and the cached step's does not, so the gain grows with the context. The same
# (untrained) model with a context of 256, timed at the end of its window:

# %%
def time_last_tokens(context, count):
    """Median ms per token, cached and recomputed, for the last ``count`` tokens of a
    full window of an untrained model of this chapter's width with ``context`` positions."""
    model = AutoregressiveLM(V, embed_dim=E, hidden_size=E, num_layers=layers,
                             backbone="transformer", num_heads=H, context=context,
                             head="flat", tie_weights=True)
    model.eval()
    seq = rng.integers(0, V, size=(1, context))
    _, state = model.next_log_probs(seq[:, :context - count])
    cached, recomputed = [], []
    for t in range(context - count, context):
        begin = time.perf_counter()
        _, state = model.next_log_probs(seq[:, t:t + 1], state)
        cached.append(time.perf_counter() - begin)
        begin = time.perf_counter()
        model.next_log_probs(seq[:, :t + 1])
        recomputed.append(time.perf_counter() - begin)
    return 1000 * np.median(cached), 1000 * np.median(recomputed)


for ctx in (64, 256):
    cached_ms, recomputed_ms = time_last_tokens(ctx, pick(12, fast=3))
    print(f"context {ctx:>3}: cached {cached_ms:5.2f} ms a token, recomputing the window "
          f"{recomputed_ms:6.2f} ms ({recomputed_ms / cached_ms:.1f}x)")

# %% [markdown]
#
# ## What the heads look at
#
# Setting `keep_attention = True` on a layer makes it keep its attention matrix
# P (N, H, T, T) as `last_attention`. We do it for the four layers, run a line
# of the validation text through the model, and draw every head: row i is
# where the character at position i looks, column j what it looks at, both
# labelled with the characters. (The colours are on a square-root scale, so
# that weights of a few percent still show.)

# %%
attentions = [m for m in gpt.modules() if isinstance(m, nn.CausalSelfAttention)]
line = "KING RICHARD III:\nWhat is the news?"[:pick(40, fast=24)]
for layer in attentions:
    layer.keep_attention = True
gpt.next_log_probs(tokenizer.encode(line)[None, :])
maps = [layer.last_attention[0] for layer in attentions]        # each (H, T, T)
for layer in attentions:
    layer.keep_attention = False
labels = [{"\n": "⏎", " ": "␣"}.get(c, c) for c in line]

fig = new_figure(3.2 * H, 3.2 * layers)
axes = fig.subplots(layers, H)
for l in range(layers):
    for head in range(H):
        ax = axes[l, head]
        ax.imshow(maps[l][head], cmap="magma", norm=PowerNorm(0.5, vmin=0, vmax=1))
        ax.set_xticks(range(len(labels)), labels, fontsize=5, family="monospace")
        ax.set_yticks(range(len(labels)), labels, fontsize=5, family="monospace")
        ax.tick_params(length=0, pad=1)
        ax.set_title(f"layer {l}, head {head}", fontsize=9)
fig.suptitle(f"attention of the trained GPT on {line!r} (rows: queries, columns: keys)")
savefig(fig, "13_attention_maps.png")

# %% [markdown]
# What to look for (the heads differ from run to run and from machine to
# machine, since a faster one trains longer in the budget). The heads have
# specialised, and three patterns recur:
#
# * a bright line on or just below the diagonal: the character itself, or the
#   previous one or two, a character model's most useful context;
# * **vertical stripes**: one position that many later queries read, often a
#   space, the newline or the colon after the speaker's name: where the
#   current word or line began;
# * a **diffuse** spread over everything so far: an average of the recent text.
#
# The first layer tends to be the most diffuse: its queries see only the raw
# characters and positions. The sharp, selective heads are in the middle
# layers, which can match on what the first layer gathered.
#
# ## The GPT against an LSTM, same wall time
#
# Chapter 06's LSTM (embedding 64, one LSTM layer of 256, Adam at 3e-3, batches of
# 32 × 64 characters as consecutive streams, the state carried across batches)
# on the same text, for the same number of seconds, measured on the same
# validation piece. One difference in the measurement favours the LSTM: it
# carries its state through the validation text, while the GPT sees each window
# of 64 on its own, so its first characters in a window have little context.

# %%
gpt.train()
lstm = AutoregressiveLM(V, embed_dim=64, hidden_size=256, num_layers=1, cell="lstm",
                        head="flat")
streams = StreamBatcher(train_ids, batch_size=32, bptt=64, drop_last=True)
position = 0


def consecutive_streams(state):
    global position
    if position == len(streams):                 # a new epoch: start from a zero state
        position, state = 0, None
    x, y = streams.batch(position)
    position += 1
    return x, y, state


print(f"LSTM, {lstm.num_parameters():,} parameters, {train_budget:.0f} s:")
# a reference line: the bigram model, P(next | previous) counted on the training
# text (+1 so that no pair has probability 0), scored on the validation piece
pairs = np.ones((V, V))
np.add.at(pairs, (train_ids[:-1], train_ids[1:]), 1)
bigram = np.log(pairs / pairs.sum(axis=1, keepdims=True))
bigram_nats = -bigram[val_piece[:-1], val_piece[1:]].mean()
print(f"  (the bigram model: {bigram_nats:.3f} nats/char on the validation piece)")
lstm_history = train_for(lstm, consecutive_streams, Adam(lstm.parameters(), lr=3e-3),
                         train_budget, peak_lr=3e-3, warmup=50)

fig = new_figure(7, 4.2)
ax = fig.add_subplot()
for history, label in ((gpt_history, f"GPT ({gpt.num_parameters():,} parameters)"),
                       (lstm_history, f"LSTM ({lstm.num_parameters():,} parameters)")):
    ax.plot(history["seconds"], history["val"], "o-",
            label=f"{label}: {history['val'][-1]:.3f} after {history['steps'][-1]} steps")
ax.axhline(bigram_nats, color="k", ls=":", lw=1, label="bigram model (counted)")
ax.set_xlabel("training seconds")
ax.set_ylabel("validation nats per character")
ax.set_ylim(1.2, 4.5)
ax.grid(alpha=0.3)
ax.legend()
ax.set_title("Tiny Shakespeare, the same wall time")
savefig(fig, "13_gpt_vs_lstm.png")

print(f"{'':<6}{'steps':>7}{'ms/step':>9}{'characters':>12}{'validation':>12}{'bits/char':>11}")
for name, history, per_step in (("GPT", gpt_history, 12 * context),
                                ("LSTM", lstm_history, 32 * 64)):
    last, steps_taken = history["val"][-1], history["steps"][-1]
    print(f"{name:<6}{steps_taken:>7}{1000 * history['seconds'][-1] / steps_taken:>9.1f}"
          f"{steps_taken * per_step:>12,}{last:>12.3f}{bits_per_token(last):>11.3f}")

# %% [markdown]
# Reading the race (the numbers are your machine's). At this size and on this
# budget the LSTM wins clearly, by about half a nat per character. The
# reasons are in the table:
#
# * **It sees more text.** Its batches hold 32 × 64 characters to the GPT's
#   12 × 64, and its steps are cheaper, so in the same seconds it reads three
#   or four times as many characters.
# * **It has the right bias for characters.** A recurrence sees the previous
#   character first and the distant past through a fading state, which is just
#   what spelling needs. The GPT starts with no notion of "near" at all (its
#   positions are learned vectors) and has to learn from data that the last
#   few characters matter most. Its curve lingers near the dotted line, the
#   bigram model P(next | previous character) counted from the training text,
#   for its first few hundred steps: it has learned the previous character
#   and little else yet.
# * **The measurement favours the LSTM**, as said above: it carries its
#   state through the validation text, the GPT starts every window afresh.
#
# nanoGPT trains this same GPT for 2,000 steps on a laptop CPU to about
# 1.88 nats, and a wider one (6 layers of 384, dropout) on a GPU to about 1.47.
# What the transformer buys is not efficiency at this small scale, but that it
# *scales*: its work is a few large matrix products over all positions at once,
# which grow with the hardware (chapter 11's GPU), while a recurrence is T
# small products one after another, however fast the machine. With more
# data, wider layers and hours on a GPU the transformer catches up and then
# pulls ahead: the story of language models since 2018.
#
# ## What to take away
#
# * A GPT block is h = x + Attn(LN(x)), y = h + MLP(LN(h)): attention mixes
#   positions, the MLP transforms each one, and the residual sums keep the
#   gradient path open through any depth.
# * Learned position vectors give the order; weight tying shares the input and
#   output embeddings; GPT-2's initialisation scales down the projections into
#   the residual stream.
# * Training windows are independent: random offsets, no state.
# * Generation keeps each layer's keys and values (the causal mask makes them
#   final), so a new token costs one position's work, until the text outgrows
#   the learned positions.
# * Attention maps show what each head reads; heads specialise.
