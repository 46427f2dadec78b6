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
# # 04 · Convolutions, from im2col to a small CNN
#
# A fully connected layer treats an image as a flat list of numbers: it does
# not know that pixel (3, 4) is next to pixel (3, 5), and it needs a separate
# weight for every pixel. A **convolution** slides one small filter, say 3 × 3,
# over the whole image and computes the same weighted sum at every position.
# It has few weights, and it finds a stroke or an edge wherever it is.
#
# In this chapter:
#
# 1. what a convolution computes, with loops, and the same numbers from tinyar's
#    `Conv2d` (and PyTorch's, if it is installed);
# 2. **im2col**: copy every window into a column of a matrix, and the whole
#    convolution becomes one matrix product, which BLAS runs near the machine's
#    peak speed;
# 3. the backward pass: dW = G · colsᵀ, and **col2im** to send the gradient
#    back to the pixels;
# 4. gradient checks of `Conv2d` and `MaxPool2d`;
# 5. a LeNet-like network trained on tinyar's glyph images (62 characters) for
#    800 steps (well under a minute), and what its first-layer filters look like;
# 6. a timing of im2col + BLAS against a direct loop.

# %%
from _common import median_time, new_figure, pick, savefig

import time

import numpy as np
from matplotlib.patches import Rectangle
from numba import njit

import tinyar
from tinyar import nn
from tinyar.backend import backend_of
from tinyar.backend.cpu.threads import set_blas_threads
from tinyar.data import GLYPH_CHARS, make_glyphs
from tinyar.inspect import gradcheck
from tinyar.nn.conv import Conv2d
from tinyar.nn.loss import CrossEntropyLoss
from tinyar.nn.pooling import MaxPool2d
from tinyar.optim import Adam

tinyar.manual_seed(0)                 # the same weights on every run
# the figures this chapter saves (tests/tutorials checks that it does)
FIGURES = ["04_im2col.png", "04_training.png", "04_filters.png", "04_timing.png"]

try:                                  # PyTorch is optional: only for side-by-side checks
    import torch
except ImportError:
    torch = None

# One thread for NumPy's BLAS: on a 2-core machine that is also doing other work,
# BLAS's threads wait for each other and can make every product several times
# slower (chapter 10 measures it); one thread is never far from the best here.
set_blas_threads(1)

# %% [markdown]
# ## What a convolution computes
#
# The input x has shape (N, C, H, W): N images of C channels (1 for grey, 3 for
# colour) of H × W pixels. A layer with O output channels has a weight W of shape
# (O, C, kh, kw), one kh × kw filter per input channel for each output channel,
# and a bias b of O numbers. Output channel o at position (i, j) is
#
# ```
# y[n, o, i, j] = b[o] + Σ_c Σ_p Σ_q  W[o, c, p, q] · x[n, c, i·s + p, j·s + q]
# ```
#
# with stride s (how far the window moves between outputs). Strictly this is a
# *cross-correlation*: a mathematician's convolution would flip the filter. Every
# framework does it this way, and a learned filter doesn't care. With zero
# padding p on every side, the output has
#
# ```
# Ho = (H + 2p − kh) // s + 1        Wo = (W + 2p − kw) // s + 1
# ```
#
# rows and columns. The formula, written as loops:

# %%
def conv2d_loops(x, weight, bias, stride=1, padding=0):
    """The convolution formula with a loop per output number (slow: for checking)."""
    n_batch, _, height, width = x.shape
    out_channels, _, kh, kw = weight.shape
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    out_h = (height + 2 * padding - kh) // stride + 1
    out_w = (width + 2 * padding - kw) // stride + 1
    y = np.zeros((n_batch, out_channels, out_h, out_w), x.dtype)
    for n in range(n_batch):
        for o in range(out_channels):
            for i in range(out_h):
                for j in range(out_w):
                    window = xp[n, :, i * stride:i * stride + kh, j * stride:j * stride + kw]
                    y[n, o, i, j] = bias[o] + np.sum(weight[o] * window)
    return y


rng = np.random.default_rng(0)
x = rng.standard_normal((2, 3, 7, 7))               # 2 images, 3 channels, 7 × 7
conv = Conv2d(3, 4, kernel_size=3, stride=2, padding=1, dtype=np.float64)
print(conv, " weight", conv.weight.shape, " bias", conv.bias.shape)

y_loops = conv2d_loops(x, conv.weight.data, conv.bias.data, stride=2, padding=1)
y_tinyar = conv(x)
print("output shape:", y_tinyar.shape, " (7 + 2·1 − 3) // 2 + 1 =", (7 + 2 - 3) // 2 + 1)
print(f"max |loops − tinyar| = {np.abs(y_loops - y_tinyar).max():.2e}")
if torch is not None:
    y_torch = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(conv.weight.data),
                                         torch.from_numpy(conv.bias.data), stride=2, padding=1)
    print(f"max |torch − tinyar| = {np.abs(y_torch.numpy() - y_tinyar).max():.2e}")
else:
    print("(PyTorch is not installed: the comparison with torch is skipped)")

# %% [markdown]
# The three agree to float64 rounding. The loop version does
# N·O·Ho·Wo·C·kh·kw multiply-adds one at a time. For a real layer (batch 64,
# 32 → 64 channels, 11 × 11 outputs, 3 × 3) that is 143 million of them per
# forward pass; the next sections are about doing them fast.
#
# ## im2col: a convolution is a matrix product
#
# Look at the sum again: for one output position it is the dot product of the
# flattened filter W[o] (C·kh·kw numbers) with the flattened window of x under
# it (also C·kh·kw numbers). So copy every window into a **column** of a matrix,
#
# ```
# cols = im2col(x)          (C·kh·kw, N·Ho·Wo)    row (c, p, q), column (n, i, j)
# ```
#
# and all outputs at once are one matrix product:
#
# ```
# Y = W.reshape(O, C·kh·kw) @ cols + b           (O, N·Ho·Wo)  → reorder to (N, O, Ho, Wo)
# ```
#
# Here it is on a 5 × 5 image with one channel and a 3 × 3 kernel: nine windows,
# so nine columns of nine numbers. tinyar's backend does the copying
# (`B.im2col`, a Numba kernel in `tinyar/backend/cpu/conv.py`); the layer calls
# it and then `B.matmul`.

# %%
B = backend_of(x)
image = np.arange(25, dtype=np.float64).reshape(1, 1, 5, 5)
# kernel (3, 3), stride (1, 1), padding (top, bottom, left, right), dilation (1, 1)
cols = B.im2col(image, (3, 3), (1, 1), (0, 0, 0, 0), (1, 1))
print("cols:", cols.shape)
print(cols.astype(int))

edge = np.array([[-1.0, 0.0, 1.0]] * 3)             # a vertical-edge filter
y_matrix = edge.reshape(1, 9) @ cols                # (1, 9): one row per output channel
y_direct = conv2d_loops(image, edge.reshape(1, 1, 3, 3), np.zeros(1))
print("filter @ cols, as 3 × 3:\n", y_matrix.reshape(3, 3))
print("same as the loops:", np.allclose(y_matrix.reshape(3, 3), y_direct[0, 0]))

# %% [markdown]
# Column 0 is the top-left window (pixels 0, 1, 2, 5, 6, 7, 10, 11, 12), column 1
# the window one step to the right, and so on. Every pixel in the middle of the
# image is copied nine times, once per window that covers it: im2col trades
# memory (kh·kw copies of the input) for speed. The picture shows the image, the
# column matrix with the first window's column highlighted, and how many
# columns each pixel lands in. That count comes back in the backward pass.

# %%
counts = B.col2im(np.ones_like(cols), image.shape, (3, 3), (1, 1), (0, 0, 0, 0), (1, 1))

fig = new_figure(13, 4.4)
ax_img, ax_cols, ax_count = fig.subplots(1, 3, gridspec_kw={"width_ratios": [1, 1.6, 1]})
ax_img.imshow(image[0, 0], cmap="Greys", vmin=-10, vmax=40)
for (i, j), v in np.ndenumerate(image[0, 0]):
    ax_img.text(j, i, int(v), ha="center", va="center", fontsize=10,
                color="C3" if i < 3 and j < 3 else "k")
ax_img.add_patch(Rectangle((-0.5, -0.5), 3, 3, fill=False, edgecolor="C3", linewidth=2))
ax_img.set_title("image x (5 × 5), first window in red")
ax_cols.imshow(cols, cmap="Greys", vmin=-10, vmax=40, aspect="auto")
for (r, c), v in np.ndenumerate(cols):
    ax_cols.text(c, r, int(v), ha="center", va="center", fontsize=9,
                 color="C3" if c == 0 else "k")
ax_cols.add_patch(Rectangle((-0.5, -0.5), 1, 9, fill=False, edgecolor="C3", linewidth=2))
ax_cols.set_xticks(range(9), [f"({i},{j})" for i in range(3) for j in range(3)], fontsize=8)
ax_cols.set_yticks(range(9), [f"({p},{q})" for p in range(3) for q in range(3)], fontsize=8)
ax_cols.set_xlabel("column = output position (i, j)")
ax_cols.set_ylabel("row = kernel tap (p, q)")
ax_cols.set_title("cols = im2col(x): (C·kh·kw, N·Ho·Wo) = (9, 9)")
ax_count.imshow(counts[0, 0], cmap="Blues", vmin=0, vmax=10)
for (i, j), v in np.ndenumerate(counts[0, 0]):
    ax_count.text(j, i, int(v), ha="center", va="center", fontsize=10)
ax_count.set_title("col2im(ones): copies of each pixel")
for ax in (ax_img, ax_count):
    ax.set_xticks([])
    ax.set_yticks([])
savefig(fig, "04_im2col.png")

# %% [markdown]
# ## The backward pass: the backward of a matrix product, then col2im
#
# Since Y = W·cols (per image, reordered), the backward is that of a linear layer
# (chapter 01), with cols in place of the input. Write G = dL/dY reordered to
# (O, N·Ho·Wo):
#
# ```
# dL/dW    = G · colsᵀ                (O, C·kh·kw)   → reshape to (O, C, kh, kw)
# dL/db    = row sums of G            (O,)
# dL/dcols = Wᵀ · G                   (C·kh·kw, N·Ho·Wo)
# dL/dx    = col2im(dL/dcols)
# ```
#
# **col2im** undoes im2col's copying: every entry of dL/dcols is *added* back
# to the pixel it was copied from. A pixel that was copied into nine columns
# influenced the loss through all nine, so its gradient is the sum of nine
# contributions: the chain rule's "sum over every path". (col2im is the
# *adjoint* of im2col: ⟨im2col(x), M⟩ = ⟨x, col2im(M)⟩ for every x and M.)
#
# Let us do it by hand on the 3 → 4 channel layer from above and compare with
# what `Conv2d.backward` computed.

# %%
G = rng.standard_normal(y_tinyar.shape)        # some upstream gradient dL/dy
conv.zero_grad()
conv(x)
dx_tinyar = conv.backward(G)

geometry = ((3, 3), (2, 2), (1, 1, 1, 1), (1, 1))   # kernel, stride, padding, dilation
cols = B.im2col(x, *geometry)                       # (3·3·3, 2·4·4) = (27, 32)
G_matrix = G.transpose(1, 0, 2, 3).reshape(4, -1)   # (O, N·Ho·Wo): columns in (n, i, j) order
W_matrix = conv.weight.data.reshape(4, -1)
dW = (G_matrix @ cols.T).reshape(conv.weight.shape)
db = G_matrix.sum(axis=1)
dx = B.col2im(W_matrix.T @ G_matrix, x.shape, *geometry)
print("cols:", cols.shape, " G:", G_matrix.shape)
for name, mine, theirs in (("dW", dW, conv.weight.grad), ("db", db, conv.bias.grad),
                           ("dx", dx, dx_tinyar)):
    print(f"{name}: max |by hand − Conv2d.backward| = {np.abs(mine - theirs).max():.2e}")

M = rng.standard_normal(cols.shape)
print(f"adjoint: <im2col(x), M> = {np.sum(cols * M):.10f},  "
      f"<x, col2im(M)> = {np.sum(x * B.col2im(M, x.shape, *geometry)):.10f}")

# %% [markdown]
# ## Gradient checks: Conv2d and MaxPool2d
#
# Agreeing with our own derivation proves little; central differences (chapter
# 01) don't share our mistakes. `tinyar.inspect.gradcheck` checks dL/dx and
# every parameter in float64. We check a convolution with stride, padding and
# **groups** (the channels split into independent convolutions), and a max pool.
#
# **Max pooling** keeps the largest value of each window (here 2 × 2, stride 2,
# halving the height and width). Only the winner moved the output, so the
# backward sends each gradient to the winner of its window and zero to the
# others; the forward remembers where the winners were. Central differences
# agree as long as no two values in a window are within ε of each other, which
# with random inputs they never are.

# %%
x_small = rng.standard_normal((2, 4, 6, 6))
print(gradcheck(Conv2d(4, 6, kernel_size=3, stride=2, padding=1, groups=2), x_small))
print(gradcheck(MaxPool2d(2), x_small))
print(gradcheck(nn.Sequential(Conv2d(4, 3, 3, padding="same"), nn.ReLU(), MaxPool2d(2)),
                x_small))

# %% [markdown]
# ## A small CNN on the glyphs
#
# `make_glyphs(n)` renders n images of the 62 characters 0–9, A–Z, a–z from the
# fonts that ship with matplotlib, each with its own small rotation, scale,
# shear, shift, stroke width and noise: 28 × 28 grey images like MNIST's,
# made on the spot (about 1 s per 10,000). The test set uses another seed, so
# different distortions.
#
# The network is LeNet-like (LeCun et al. 1998): two blocks of convolution,
# ReLU and max pooling, then two linear layers. The shapes as a batch flows
# through:

# %%
x_train, y_train = make_glyphs(pick(20_000, fast=1_000), seed=0)
x_test, y_test = make_glyphs(pick(2_000, fast=300), seed=1)
print(f"training {x_train.shape} {x_train.dtype}, test {x_test.shape}; "
      f"labels 0..61 = {GLYPH_CHARS}")

model = nn.Sequential(
    Conv2d(1, 32, 3), nn.ReLU(), MaxPool2d(2),      # 28 → 26 → 13
    Conv2d(32, 64, 3), nn.ReLU(), MaxPool2d(2),     # 13 → 11 → 5
    nn.Flatten(), nn.Linear(64 * 5 * 5, 128), nn.ReLU(), nn.Linear(128, 62))
h = x_train[:64]
print(f"{'input':<62}{str(h.shape):>18}")
for layer in model:
    h = layer(h)
    print(f"{str(layer):<62}{str(h.shape):>18}")
print(f"{model.num_parameters():,} parameters, of which the convolutions have "
      f"{model[0].num_parameters() + model[3].num_parameters():,}")

# %% [markdown]
# The convolutions have under 10% of the weights but do most of the arithmetic:
# each of their weights is used at every position of the image, while each weight
# of the first linear layer, which holds most of them, is used once per image.
#
# Training is the loop of chapter 01 with Adam and mini-batches of 64 shuffled
# images: 800 steps, about 2.5 passes over the training set, with the test
# accuracy measured every 100 steps. A step takes 20–30 ms on one core of a
# laptop, so this takes well under a minute; on a slow or busy machine training
# stops early at a time limit of 75 seconds, and the printout says how far it got.

# %%
criterion = CrossEntropyLoss()
optimizer = Adam(model.parameters(), lr=2e-3)
steps, time_limit, batch_size = pick(800, fast=10), pick(75.0, fast=5.0), 64
eval_every = pick(100, fast=5)


def test_accuracy():
    model.eval()
    predicted = np.concatenate([model(x_test[i:i + 500]).argmax(axis=1)
                                for i in range(0, len(x_test), 500)])
    model.train()
    return float(np.mean(predicted == y_test))


history = {"step": [], "loss": [], "eval_step": [0], "accuracy": [test_accuracy()]}
order, position, seconds = rng.permutation(len(x_train)), 0, 0.0
for step in range(1, steps + 1):
    started = time.perf_counter()
    if position + batch_size > len(x_train):        # a new epoch: reshuffle
        order, position = rng.permutation(len(x_train)), 0
    idx = order[position:position + batch_size]
    position += batch_size
    loss = criterion(model(x_train[idx]), y_train[idx])
    model.zero_grad()
    model.backward(criterion.backward())
    optimizer.step()
    seconds += time.perf_counter() - started
    history["step"].append(step)
    history["loss"].append(loss)
    out_of_time = seconds > time_limit
    if step % eval_every == 0 or step == steps or out_of_time:
        history["eval_step"].append(step)
        history["accuracy"].append(test_accuracy())
        print(f"step {step:4d} ({seconds:4.1f} s)  batch loss {loss:.3f}  "
              f"test accuracy {history['accuracy'][-1]:.1%}")
    if out_of_time:
        print(f"stopped at the time limit of {time_limit:.0f} s")
        break
print(f"{step} steps in {seconds:.1f} s ({seconds / step * 1e3:.0f} ms per step of {batch_size}"
      f" images, {step * batch_size / len(x_train):.1f} passes over the training set)")

# %%
fig = new_figure(11, 4)
ax_loss, ax_acc = fig.subplots(1, 2)
window = max(1, step // 40)
smoothed = np.convolve(history["loss"], np.ones(window) / window, mode="valid")
ax_loss.plot(history["step"][window - 1:], smoothed)
ax_loss.set_xlabel("step")
ax_loss.set_ylabel("cross-entropy (nats)")
ax_loss.set_title(f"batch loss (moving average of {window})")
ax_acc.plot(history["eval_step"], history["accuracy"], "o-", color="C1")
ax_acc.axhline(1 / 62, color="0.5", ls=":", label="chance (1/62)")
ax_acc.set_xlabel("step")
ax_acc.set_ylabel("test accuracy")
ax_acc.set_ylim(0, 1)
ax_acc.set_title(f"test accuracy, {len(x_test):,} unseen glyphs")
ax_acc.legend(loc="lower right")
for ax in (ax_loss, ax_acc):
    ax.grid(alpha=0.3, which="both")
savefig(fig, "04_training.png")

# %% [markdown]
# The test accuracy climbs past 80% within a couple of hundred steps and ends in
# the mid-90s.
# What is left is mostly characters that no one can tell apart without
# context: O and 0, l and I and 1, lower and upper case of c, o, s, v, w, x, z.
# Chapter 08 looks at these mistakes closely.
#
# ## What the first layer learned
#
# The first convolution has 32 filters of 3 × 3 weights, small enough to look
# at, though nine numbers say little. More telling are their outputs, the
# **feature maps**: the 32 images the first layer makes of one glyph (after the
# ReLU). Look for these kinds:
#
# * smoothing filters (all weights of one sign) that pass the strokes on,
#   slightly blurred: the later layers build on them;
# * **edge detectors** (positive weights on one side, negative on the other)
#   that light up along one side of a stroke only: the left, the top, a
#   diagonal;
# * inverted ones, bright on the background and dark on the ink;
# * a few that are black for this glyph: their pattern does not occur in it, or
#   the filter is "dead", negative everywhere, and its ReLU never lets
#   anything through (chapter 09 shows how to count those).

# %%
glyph = x_test[:1]
maps = np.maximum(model[0](glyph), 0)[0]              # (32, 26, 26)
filters = model[0].weight.data[:, 0]                 # (32, 3, 3)

fig = new_figure(12, 6.2)
top, bottom = fig.subfigures(2, 1, height_ratios=[1, 1.45])
limit = np.abs(filters).max()
for k, ax in enumerate(top.subplots(2, 16).ravel()):
    ax.imshow(filters[k], cmap="RdBu_r", vmin=-limit, vmax=limit)
    ax.set_axis_off()
top.suptitle("the 32 first-layer filters, 3 × 3 (red positive, blue negative)")
axes = bottom.subplots(3, 12).ravel()
axes[0].imshow(glyph[0, 0], cmap="Greys")
axes[0].set_title(f"input '{GLYPH_CHARS[y_test[0]]}'", fontsize=8)
for k, ax in enumerate(axes[1:33]):
    ax.imshow(maps[k], cmap="magma")
    ax.set_title(f"filter {k}", fontsize=7)
for ax in axes:
    ax.set_axis_off()
bottom.suptitle("what they make of one test glyph: the first layer's 32 feature maps after ReLU")
savefig(fig, "04_filters.png")

# %% [markdown]
# ## im2col + BLAS against a direct loop
#
# Is the copying worth it? Below, the convolution as a direct compiled loop
# (Numba, one core, the formula as it stands) against tinyar's `Conv2d` forward
# (im2col, then one BLAS product), at the size of the network's second
# convolution: batch 64, 32 → 64 channels, 13 × 13 input, 3 × 3. We also time
# the two parts of tinyar's forward on their own.
#
# The direct loop runs on one core, and so does BLAS (`set_blas_threads(1)` at
# the top); for a fair race PyTorch gets one thread too. Each time is the median
# of several calls after a warm-up call (chapter 10 says more about timing).

# %%
@njit(cache=True)
def conv2d_direct(x, weight, bias, y):
    """The convolution formula as a compiled loop, valid padding, stride 1."""
    n_batch, channels, height, width = x.shape
    out_channels, _, kh, kw = weight.shape
    for n in range(n_batch):
        for o in range(out_channels):
            for i in range(height - kh + 1):
                for j in range(width - kw + 1):
                    s = bias[o]
                    for c in range(channels):
                        for p in range(kh):
                            for q in range(kw):
                                s += weight[o, c, p, q] * x[n, c, i + p, j + q]
                    y[n, o, i, j] = s


layer = Conv2d(32, 64, 3)
x_big = rng.standard_normal((pick(64, fast=8), 32, 13, 13)).astype(np.float32)
y_direct = np.empty((x_big.shape[0], 64, 11, 11), np.float32)
conv2d_direct(x_big, layer.weight.data, layer.bias.data, y_direct)
assert np.allclose(y_direct, layer(x_big), atol=1e-4)

repeats = pick(7, fast=2)
W_matrix = layer.weight.data.reshape(64, -1)
geometry = ((3, 3), (1, 1), (0, 0, 0, 0), (1, 1))
cols_big = B.im2col(x_big, *geometry)
timings = {
    "direct loop\n(Numba)": median_time(
        lambda: conv2d_direct(x_big, layer.weight.data, layer.bias.data, y_direct), repeats),
    "Conv2d forward\n(im2col + BLAS)": median_time(lambda: layer(x_big), repeats),
    "  of which\n  im2col": median_time(lambda: B.im2col(x_big, *geometry), repeats),
    "  of which\n  the product": median_time(lambda: W_matrix @ cols_big, repeats),
}
if torch is not None:
    torch_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    tconv = torch.nn.Conv2d(32, 64, 3)
    tx = torch.from_numpy(x_big)
    with torch.no_grad():
        timings["torch Conv2d\nforward"] = median_time(lambda: tconv(tx), repeats)
    torch.set_num_threads(torch_threads)         # back to how it was
macs = x_big.shape[0] * 64 * 11 * 11 * 32 * 9
for name, seconds in timings.items():
    speed = "" if name.endswith("im2col") else f"   {2 * macs / seconds / 1e9:6.1f} GFLOP/s"
    print(f"{' '.join(name.split()):<32} {seconds * 1e3:8.2f} ms{speed}")

# %%
fig = new_figure(8, 4)
ax = fig.add_subplot()
names = list(timings)
ax.barh(names[::-1], [timings[n] * 1e3 for n in names[::-1]],
        color=["C2" if "torch" in n else "C0" if "of which" in n else "C1" for n in names[::-1]])
ax.set_xscale("log")
ax.set_xlabel("milliseconds (median), log scale")
ax.set_title(f"Conv2d 32 → 64, 3 × 3, batch {x_big.shape[0]}, 13 × 13, float32, one thread: "
             f"{macs / 1e6:.0f} M multiply-adds", fontsize=10)
ax.grid(alpha=0.3, axis="x", which="both")
savefig(fig, "04_timing.png")

# %% [markdown]
# im2col + BLAS is many times faster than the direct loop, though both do the same
# multiply-adds (look at the GFLOP/s column: billions of floating-point
# operations per second, two per multiply-add). A matrix product is the most
# optimised routine there is: BLAS keeps small blocks of both matrices in the
# registers and caches, uses every SIMD lane and, for large products, every
# core. The direct loop's innermost loop runs over 3 kernel taps, too short to
# vectorise, and re-reads each input pixel from memory for every filter. The
# copy costs a fraction of the product, so it pays for itself many times over.
# (The rest of `Conv2d`'s forward, beyond the two parts, is the reorder of the
# product's (O, N·Ho·Wo) to (N, O, Ho, Wo), fused with adding the bias.)
# PyTorch, if you have it, is faster again for this one forward, by about two
# on the development machine: its convolution kernels (oneDNN) work on small
# blocks of the input without building the whole column matrix. Over a whole
# training step of this network the two are close (chapter 10).
#
# This is why `Conv2d` (`tinyar/nn/conv.py`) is written the way it is: im2col,
# one product per group, a reorder to (N, O, Ho, Wo) fused with the bias. For
# large batches it works in chunks whose columns fit in the cache, so the
# product reads what im2col has just written.
#
# ## What to take away
#
# * A convolution is the same small weighted sum at every position of the image.
#   Unrolled by im2col it becomes one matrix product, Y = W · cols.
# * Its backward is the matrix product's backward, dW = G · colsᵀ and
#   dcols = Wᵀ · G, followed by col2im, which adds every copy's gradient back
#   to its pixel.
# * Max pooling routes each gradient to the window's winner.
# * A small CNN reaches the mid-90s (per cent) on 62 glyph classes in seconds;
#   its first-layer filters are stroke and edge detectors.
#
# Next: chapter 05 turns from space to time, with recurrent networks and
# backpropagation through time.
