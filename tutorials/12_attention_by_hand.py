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
# # 12 · Attention by hand
#
# A recurrent network (chapter 05) reads a sequence one step at a time and
# squeezes the past into a state of fixed size. **Attention** does something
# else: at every position it looks back at *all* earlier positions at once and
# takes a weighted average of what it finds there, with weights it computes
# from the data. That one operation, repeated in layers, is the heart of the
# transformer (chapter 13 builds a GPT from it).
#
# As in chapter 01 we do everything by hand first:
#
# 1. scaled dot-product attention for one head, in NumPy: scores, the
#    **causal mask**, the softmax, the weighted sum;
# 2. why the mask holds −∞ above the diagonal, and what it buys a language model;
# 3. the backward pass, derived and written out, checked by central
#    differences in float64;
# 4. why the scores are divided by √d: what happens to the softmax without it;
# 5. many heads, and tinyar's `CausalSelfAttention`: its weights copied into
#    the NumPy version give the same outputs and the same gradients.

# %%
from _common import new_figure, pick, savefig

import math

import numpy as np

import tinyar
from tinyar.inspect import gradcheck
from tinyar.nn import CausalSelfAttention

tinyar.manual_seed(0)                 # the same weights on every run
rng = np.random.default_rng(0)
# the figures this chapter saves (tests/tutorials checks that it does)
FIGURES = ["12_causal_mask.png", "12_scale_saturation.png", "12_heads.png"]

# %% [markdown]
# ## One head, forward
#
# Take a sequence of T positions, each a vector. A linear map turns each
# position into three vectors of width d:
#
# * a **query** q_i: what position i is looking for;
# * a **key** k_j: what position j offers, to be matched against queries;
# * a **value** v_j: what position j hands over when it is chosen.
#
# Stacked as rows, Q, K and V are (T, d) matrices, and attention is
#
# ```
# S = Q Kᵀ / √d              (T, T)   S[i, j]: how well query i matches key j
# S[i, j] = −∞ for j > i              the causal mask: no peeking at the future
# P = softmax(S)  (each row)  (T, T)   P[i, j] ≥ 0, Σ_j P[i, j] = 1
# O = P V                     (T, d)   row i: a weighted average of the values v_j, j ≤ i
# ```
#
# P is the **attention matrix**: row i says how much position i takes from
# each position j. All of it is matrix products and one softmax, so all T
# positions are computed at once, where an RNN needs T sequential steps.
#
# The function below is this, line for line. `@` and `swapaxes(-1, -2)`
# (the transpose of the last two axes) work on stacks of matrices too, so the
# same code will later run N sequences × H heads at once: (..., T, d).

# %%
def causal_mask(T):
    """(T, T): 0 where position i may look at j (j <= i), -inf above the diagonal."""
    return np.triu(np.full((T, T), -np.inf), k=1)


def softmax_rows(S):
    """softmax over the last axis; subtracting the row's max keeps exp from overflowing
    (the diagonal is never masked, so every row's max is finite)."""
    e = np.exp(S - S.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def attention_forward(Q, K, V, causal=True, scale=True):
    """O = softmax(Q Kᵀ / √d + mask) V for Q, K, V (..., T, d); returns O and P (..., T, T)."""
    d = Q.shape[-1]
    S = Q @ K.swapaxes(-1, -2)
    if scale:
        S = S / math.sqrt(d)
    if causal:
        S = S + causal_mask(Q.shape[-2])
    P = softmax_rows(S)
    return P @ V, P


T, d = 6, 8
Q, K, V = (rng.standard_normal((T, d)) for _ in range(3))
O, P = attention_forward(Q, K, V)
np.set_printoptions(precision=3, suppress=True)
print("P, the attention matrix (rows: queries i, columns: keys j):\n", P)
print("rows sum to", P.sum(axis=1), "  O:", O.shape)

# %% [markdown]
# ## The causal mask
#
# A language model predicts token t+1 from tokens 1..t. If position t could
# attend to position t+1 it would simply read the answer. The mask forbids it:
# above the diagonal (j > i) the score is set to −∞, and since exp(−∞) = 0
# *exactly*, those keys get weight 0 and the softmax spreads the whole weight
# of 1 over the allowed keys j ≤ i. Two wrong ways to do it show why it is done
# this way:
#
# * setting P[i, j] = 0 *after* the softmax would leave rows that sum to less
#   than 1 (the future still took its share of the normalising sum);
# * adding a large finite negative number (−1e4) works in float32 only as long
#   as the scores stay small against it; −∞ is exact for any scores.
#
# What the mask buys: **one forward pass trains T predictions.** A window of T
# tokens gives T next-token targets at once, each computed from exactly its own
# past, all in parallel. And the output at position i does not depend on
# anything after i, so appending a token to the sequence leaves every earlier
# output (and every earlier key and value) unchanged: generation can keep them
# in a *cache* and compute only the new position (chapter 13 times it).
#
# The test: change the last position's input and see which outputs move.

# %%
Q2, K2, V2 = Q.copy(), K.copy(), V.copy()
Q2[-1] += 1.0
K2[-1] += 1.0
V2[-1] += 1.0
for causal in (True, False):
    before, _ = attention_forward(Q, K, V, causal=causal)
    after, _ = attention_forward(Q2, K2, V2, causal=causal)
    moved = np.abs(after - before).max(axis=1)
    print(f"causal={causal!s:<5}  change in each position's output: {moved}")

# %% [markdown]
# With the mask only the last row changes; without it every position's output
# depends on the future. Here is the mask, and the attention matrix of random
# queries and keys of width d = 256, with and without the 1/√d scale (the next
# section explains why the unscaled one looks so different).

# %%
T_big, d_big = 16, 256
Qb, Kb, Vb = (rng.standard_normal((T_big, d_big)) for _ in range(3))
_, P_scaled = attention_forward(Qb, Kb, Vb)
_, P_raw = attention_forward(Qb, Kb, Vb, scale=False)

fig = new_figure(12, 4)
axes = fig.subplots(1, 3)
allowed = np.isfinite(causal_mask(T_big)).astype(float)
axes[0].imshow(allowed, cmap="Greys_r", vmin=0, vmax=1)
axes[0].set_title("causal mask: white j ≤ i (0), black −∞")
for ax, p, title in ((axes[1], P_scaled, f"P = softmax(QKᵀ/√d + mask), d = {d_big}"),
                     (axes[2], P_raw, "without the 1/√d: softmax(QKᵀ + mask)")):
    image = ax.imshow(p, cmap="viridis", vmin=0, vmax=1)
    ax.set_title(title, fontsize=10)
for ax in axes:
    ax.set_xlabel("key position j")
    ax.set_ylabel("query position i")
fig.colorbar(image, ax=axes[1:], shrink=0.8, label="attention weight")
savefig(fig, "12_causal_mask.png")

# %% [markdown]
# ## One head, backward
#
# Given dO = dL/dO (T, d), we want dQ, dK, dV. Go back through the three
# lines of the forward, one at a time (chapter 01's rules: a product's
# gradient is the upstream gradient times the *other* factor, transposed to fit).
#
# **O = P V.** Exactly a linear layer with P in the role of the input:
#
# ```
# dV = Pᵀ dO        (T, d)     value j collects from every query that used it
# dP = dO Vᵀ        (T, T)
# ```
#
# **P = softmax(S), row by row.** For one row p = softmax(s),
# ∂p_j/∂s_k = p_j ([j = k] − p_k), so
#
# ```
# dS[i, k] = Σ_j dP[i, j] P[i, j] ([j = k] − P[i, k])
#          = P[i, k] (dP[i, k] − Σ_j dP[i, j] P[i, j])
# dS = P ⊙ (dP − rowsum(dP ⊙ P))          (T, T)
# ```
#
# The masked entries have P = 0, hence dS = 0: no gradient flows into a score
# that was not used, and the mask itself (a constant) has no gradient.
#
# **S = Q Kᵀ / √d.** A product again, with the constant 1/√d carried along:
#
# ```
# dQ = dS K / √d     (T, d)
# dK = dSᵀ Q / √d    (T, d)
# ```
#
# That is all: two matrix products forward, four back, and the softmax's
# row-wise correction in between.

# %%
def attention_backward(dO, Q, K, V, P, scale=True):
    """dQ, dK, dV for dO = dL/dO (..., T, d), from the forward's Q, K, V and P."""
    c = 1 / math.sqrt(Q.shape[-1]) if scale else 1.0
    dV = P.swapaxes(-1, -2) @ dO
    dP = dO @ V.swapaxes(-1, -2)
    dS = P * (dP - (dP * P).sum(axis=-1, keepdims=True))
    dQ = c * (dS @ K)
    dK = c * (dS.swapaxes(-1, -2) @ Q)
    return dQ, dK, dV


# %% [markdown]
# ## Checking it with central differences
#
# As in chapter 01: put a fixed random weight R on every output, L = Σ R ⊙ O
# (so dO = R), nudge each entry of Q, K and V by ±ε, and compare
# (L(w+ε) − L(w−ε)) / 2ε with the derived gradient, in float64 with ε = 1e-6.
# Chapter 01 wrote that loop out; here tinyar's `gradcheck` runs it. It checks
# anything with tinyar's `Module` contract, so the two NumPy functions become a
# module: `forward(Q, K, V)` computes O and keeps P, `backward(dO)` returns the
# gradients of the three inputs.

# %%
class AttentionByHand(tinyar.nn.Module):
    """O = softmax(Q Kᵀ / √d + mask) V, forward and backward by the functions above."""

    def forward(self, Q, K, V):
        O, P = attention_forward(Q, K, V)
        self.saved = (Q, K, V, P)
        return O

    def backward(self, dO):
        return attention_backward(dO, *self.saved)


report = gradcheck(AttentionByHand(), Q, K, V)
print(report)   # input[0], [1], [2]: Q, K and V

# %% [markdown]
# Errors near 1e-9 or below: the derivation is right. (Forget the row sum in dS,
# or the 1/√d in dQ and dK, and the error is of order 1.)
#
# ## Why divide by √d
#
# Suppose the entries of q and k are independent with mean 0 and variance 1
# (roughly what a layer normalisation before the projection gives). Then
# q·k = Σ_{m=1}^{d} q_m k_m is a sum of d independent terms of variance 1:
#
# ```
# Var(q·k) = d,     std(q·k) = √d
# ```
#
# The wider the head, the larger the spread of the raw scores. A softmax of
# scores that differ by tens puts almost all its weight on the largest one: it
# **saturates** into a one-hot row. That hurts twice. The layer stops
# averaging (it copies one value), and learning stalls, because the softmax's
# Jacobian diag(p) − p pᵀ goes to zero as p becomes one-hot, so dS vanishes no
# matter what dP is. Dividing by √d brings the scores back to variance 1 for
# every d.
#
# We measure it on random queries and keys (every query seeing all 64 keys, no
# mask, so that the reference log 64 is the same for every row): the spread of
# the scores, the **entropy** −Σ_j P log P of a row (log 64 ≈ 4.16 nats for
# uniform weights, 0 for one-hot) and the size of the gradient that gets through
# the softmax: the norm of a row of dS for random dP, the median over the rows.
# (The median, because the odd row whose two best scores happen to be close
# keeps a gradient; the typical row is what saturates.)

# %%
T_keys, trials = 64, pick(40, fast=8)
widths = [2, 4, 8, 16, 32, 64, 128, 256, 512, 1024]
curves = {True: {"std": [], "entropy": [], "grad": []},
          False: {"std": [], "entropy": [], "grad": []}}
for width in widths:
    for scaled, curve in curves.items():
        stds, entropies, grads = [], [], []
        for _ in range(trials):
            q, k = rng.standard_normal((2, T_keys, width))
            S = q @ k.T / (math.sqrt(width) if scaled else 1.0)
            p = softmax_rows(S)
            dP = rng.standard_normal(p.shape)
            dS = p * (dP - (dP * p).sum(axis=-1, keepdims=True))
            stds.append(S.std())
            entropies.append(-(p * np.log(np.maximum(p, 1e-300))).sum(axis=-1).mean())
            grads.append(np.median(np.linalg.norm(dS, axis=-1)))
        for key, values in (("std", stds), ("entropy", entropies), ("grad", grads)):
            curve[key].append(float(np.mean(values)))
print(f"{'d':>5} {'std S':>8} {'(scaled)':>9} {'entropy':>9} {'(scaled)':>9} "
      f"{'|dS row|':>9} {'(scaled)':>9}")
for i, width in enumerate(widths):
    raw, sc = curves[False], curves[True]
    print(f"{width:>5} {raw['std'][i]:>8.2f} {sc['std'][i]:>9.2f} {raw['entropy'][i]:>9.3f} "
          f"{sc['entropy'][i]:>9.3f} {raw['grad'][i]:>9.2e} {sc['grad'][i]:>9.2e}")

fig = new_figure(13, 3.8)
axes = fig.subplots(1, 3)
labels = {True: "S = QKᵀ/√d", False: "S = QKᵀ (no scale)"}
for scaled, curve in curves.items():
    style = dict(marker="o", ms=4, label=labels[scaled])
    axes[0].plot(widths, curve["std"], **style)
    axes[1].plot(widths, curve["entropy"], **style)
    axes[2].plot(widths, curve["grad"], **style)
axes[0].plot(widths, np.sqrt(widths), "k:", lw=1, label="√d")
axes[1].axhline(math.log(T_keys), color="k", ls=":", lw=1, label=f"uniform: log {T_keys}")
axes[0].set_ylabel("std of the scores")
axes[1].set_ylabel("entropy of a row of P (nats)")
axes[2].set_ylabel("median |row of dS| for random dP")
axes[0].set_yscale("log")
axes[2].set_yscale("log")
for ax in axes:
    ax.set_xscale("log", base=2)
    ax.set_xlabel("head width d")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
fig.suptitle(f"softmax saturation: random q, k with unit variance, {T_keys} keys")
savefig(fig, "12_scale_saturation.png")

# %% [markdown]
# Unscaled, the scores' spread grows as √d (the dotted line), the entropy falls
# from 3.4 nats to about 0.1 (the softmax picks one key, as in the right panel
# of the first figure), and past d ≈ 64 the gradient through the
# softmax drops by orders of magnitude. (A little sharpening first makes it
# larger: a uniform row spreads dP thinly over all 64 keys.) Scaled, the
# entropy stays near 3.7 nats (a little under log 64: scores of variance 1 are
# not all equal, so neither are the weights), and all three curves are flat:
# the softmax starts out soft and trainable whatever d is. (Training can still
# sharpen it, by learning larger queries and keys; the scale only fixes the
# starting point.)
#
# ## Many heads
#
# One head computes one weighted average per position: one kind of "looking
# back". A layer with H **heads** splits the width E into H slices of
# D = E / H, runs H independent attentions side by side, and glues the
# results back together. For x (N, T, E):
#
# ```
# [Q | K | V] = x W_inᵀ + b_in                 (N, T, 3E)   one product for all three
# Q → (N, H, T, D)                             head h: columns h·D .. (h+1)·D − 1
# O_h = softmax(Q_h K_hᵀ / √D + mask) V_h      (N, H, T, D) each head on its own
# y = merge(O) W_outᵀ + b_out                  (N, T, E)    heads side by side, then mixed
# ```
#
# Backward is the chain of what we already have: `Linear`'s backward for the
# output projection (dW_out = Σ dyᵀ merge(O), d merge(O) = dy W_out), the
# attention backward for every head at once (the functions above take the
# leading (N, H) axes as they are), and `Linear`'s backward again for the input
# projection, with [dQ | dK | dV] as its upstream gradient.

# %%
def split_heads(a, H):
    """(N, T, E) -> (N, H, T, D): head h gets columns h*D .. (h+1)*D - 1."""
    N, T, E = a.shape
    return a.reshape(N, T, H, E // H).transpose(0, 2, 1, 3)


def merge_heads(a):
    """(N, H, T, D) -> (N, T, H*D): the inverse of split_heads."""
    N, H, T, D = a.shape
    return a.transpose(0, 2, 1, 3).reshape(N, T, H * D)


def mha_forward(x, W_in, b_in, W_out, b_out, H):
    """Causal multi-head self-attention of x (N, T, E); returns y and what backward needs."""
    E = x.shape[-1]
    qkv = x @ W_in.T + b_in                                  # (N, T, 3E)
    Q, K, V = (split_heads(qkv[..., i * E:(i + 1) * E], H) for i in range(3))
    O, P = attention_forward(Q, K, V)                        # (N, H, T, D), (N, H, T, T)
    merged = merge_heads(O)
    return merged @ W_out.T + b_out, (x, Q, K, V, P, merged)


def mha_backward(dy, cache, W_in, W_out, H):
    """dx and the four parameter gradients, from dy = dL/dy (N, T, E)."""
    x, Q, K, V, P, merged = cache
    grads = {"out_proj.weight": np.einsum("nte,ntf->ef", dy, merged),
             "out_proj.bias": dy.sum(axis=(0, 1))}
    dO = split_heads(dy @ W_out, H)
    dQ, dK, dV = attention_backward(dO, Q, K, V, P)
    dqkv = np.concatenate([merge_heads(g) for g in (dQ, dK, dV)], axis=-1)  # (N, T, 3E)
    grads["in_proj_weight"] = np.einsum("ntf,nte->fe", dqkv, x)
    grads["in_proj_bias"] = dqkv.sum(axis=(0, 1))
    return dqkv @ W_in, grads


# %% [markdown]
# ## tinyar's `CausalSelfAttention`
#
# `tinyar.nn.CausalSelfAttention(embed_dim, num_heads)` is this layer, with
# torch's parameter names and layouts: `in_proj_weight` (3E, E) holds
# [W_q; W_k; W_v] as rows, `in_proj_bias` (3E,), and `out_proj`, a `Linear`.
# Open `tinyar/nn/attention.py`: its docstring carries the equations above, and
# its forward calls backend ops by name (`B.split_heads`,
# `B.causal_softmax_forward`, `B.batched_matmul`, ...). The mask is never
# built as a matrix there; the softmax kernel simply stops each row at the
# diagonal. Setting `keep_attention = True` makes the layer keep P as
# `last_attention` (N, H, T, T), for pictures.
#
# We build one in float64, give its biases random values (they start at zero,
# which would test nothing), copy all four arrays into the NumPy version, and
# compare outputs, P, and every gradient for the same upstream dy.

# %%
N, T, E, H = 2, 7, 16, 4
layer = CausalSelfAttention(E, H, dtype=np.float64)
layer.in_proj_bias.data[...] = 0.1 * rng.standard_normal(3 * E)   # in place: parameters are
layer.out_proj.bias.data[...] = 0.1 * rng.standard_normal(E)      # views of one flat buffer
layer.keep_attention = True
print(layer)
for name, p in layer.named_parameters():
    print(f"  {name:<17}{p.shape}")

x = rng.standard_normal((N, T, E))
dy = rng.standard_normal((N, T, E))
y_tinyar = layer(x)
layer.zero_grad()
dx_tinyar = layer.backward(dy)

weights = {name: p.data for name, p in layer.named_parameters()}
y_numpy, cache = mha_forward(x, weights["in_proj_weight"], weights["in_proj_bias"],
                             weights["out_proj.weight"], weights["out_proj.bias"], H)
dx_numpy, grads_numpy = mha_backward(dy, cache, weights["in_proj_weight"],
                                     weights["out_proj.weight"], H)
print(f"\n{'':<19}{'shape':<14}{'max |NumPy - tinyar|':>22}")
print(f"{'y':<19}{str(y_numpy.shape):<14}{np.abs(y_numpy - y_tinyar).max():>22.2e}")
print(f"{'P':<19}{str(cache[4].shape):<14}"
      f"{np.abs(cache[4] - layer.last_attention).max():>22.2e}")
print(f"{'dx':<19}{str(dx_numpy.shape):<14}{np.abs(dx_numpy - dx_tinyar).max():>22.2e}")
for name, p in layer.named_parameters():
    print(f"d {name:<17}{str(p.shape):<14}{np.abs(grads_numpy[name] - p.grad).max():>22.2e}")

# %% [markdown]
# Differences around 1e-15: the same numbers, to float64 rounding. And tinyar's
# layer passes the same central-difference check on its own, input and all four
# parameters (`gradcheck`, chapter 01):

# %%
report = gradcheck(CausalSelfAttention(8, 2), rng.standard_normal((2, 5, 8)))
print(report)
print("all within tolerance:", report.ok())

# %% [markdown]
# Finally, what the heads of this (untrained) layer do with a longer input.
# With random weights every head spreads its weight fairly evenly over the
# past: the i+1 weights of row i are each near 1/(i+1). Each head has its own
# queries and keys, so each draws a slightly different pattern; after training
# (chapter 13) they become very different: one reads the previous character,
# another the space or newline where the current word or line began.

# %%
T_show = 24
layer32 = CausalSelfAttention(32, 4)
layer32.keep_attention = True
layer32(rng.standard_normal((1, T_show, 32)).astype(np.float32))
maps = layer32.last_attention[0]                        # (H, T, T)
fig = new_figure(12, 3.4)
axes = fig.subplots(1, maps.shape[0])
for h, ax in enumerate(axes):
    image = ax.imshow(maps[h], cmap="viridis", vmin=0, vmax=0.5)
    ax.set_title(f"head {h}")
    ax.set_xlabel("key j")
axes[0].set_ylabel("query i")
fig.colorbar(image, ax=list(axes), shrink=0.8, label="P[i, j]")
fig.suptitle("CausalSelfAttention(32, 4), untrained: last_attention of a random input")
savefig(fig, "12_heads.png")

# %% [markdown]
# ## What to take away
#
# * Attention is S = QKᵀ/√d, P = softmax(S + mask), O = PV: two matrix products
#   and a softmax, all positions at once.
# * The causal mask puts −∞ above the diagonal, so each position averages only
#   its past; one forward pass then trains T next-token predictions, and earlier
#   outputs never change when a token is appended (which is what makes a
#   key/value cache possible).
# * Backward: dV = Pᵀ dO, dP = dO Vᵀ, dS = P ⊙ (dP − rowsum(dP ⊙ P)),
#   dQ = dS K/√d, dK = dSᵀ Q/√d.
# * Without the 1/√d the scores spread as √d and the softmax saturates: low
#   entropy, vanishing gradient.
# * Heads are independent attentions over slices of the width, side by side.
#
# Next: chapter 13 puts this layer into a transformer block and trains a small
# GPT on Shakespeare.
