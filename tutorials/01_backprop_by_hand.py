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
# # 01 · Backpropagation by hand
#
# A neural network learns by gradient descent: it moves every weight a small step
# against the gradient of the loss. **Backpropagation** is how that gradient is
# computed: the chain rule, applied one layer at a time from the loss back to the
# input. tinyar has no autograd. Every layer's `backward` is the chain rule written
# out by hand, so in this chapter you do the same thing yourself:
#
# 1. write the forward pass of a two-layer network as four equations;
# 2. derive the backward pass one equation at a time;
# 3. compute the gradients with plain NumPy and check that tinyar's layers
#    (`Linear`, `ReLU`, `CrossEntropyLoss`) give the same numbers;
# 4. check both against **central differences**, which need no calculus at all;
# 5. train the network and look at its loss curve and decision boundary.
#
# Run it with `python tutorials/01_backprop_by_hand.py`. The figures are saved in
# `tutorials/figures/` (or in the folder given by `--out DIR`).

# %%
from _common import figure_path, pick, show  # figure folder, fast mode (for the tests)

import copy

import numpy as np

import tinyar
from tinyar import nn
from tinyar.data import make_spiral
from tinyar.inspect import gradcheck
from tinyar.inspect.plots import plot_curves, plot_decision_boundary
from tinyar.nn.loss import CrossEntropyLoss

tinyar.manual_seed(0)                 # the same weights on every run
# the figures this chapter saves (tests/tutorials checks that it does)
FIGURES = ["01_loss_curve.png", "01_decision_boundary.png"]

# %% [markdown]
# ## The data: a spiral
#
# `make_spiral` draws three interleaved spiral arms in the plane, 100 points per
# arm. No straight line separates them, so a linear classifier gets about a third
# of them right, and a hidden layer has real work to do. We draw a second spiral
# with other noise (`seed=1`) as a test set.

# %%
X, y = make_spiral(points_per_class=100, num_classes=3, seed=0)
X_test, y_test = make_spiral(points_per_class=100, num_classes=3, seed=1)
print("X:", X.shape, X.dtype, "  y:", y.shape, y.dtype, "  classes:", np.bincount(y))
print("first rows of X:\n", X[:3], "\nand their labels:", y[:3])

# %% [markdown]
# ## The forward pass
#
# The network maps a point x (2 numbers) to K = 3 scores, one per class. For a
# batch of N points stacked as the rows of X (N × 2):
#
# ```
# z1 = X W1ᵀ + b1          (N, H)   Linear(2, H): W1 is (H, 2), b1 is (H,)
# a1 = max(z1, 0)          (N, H)   ReLU, elementwise
# z2 = a1 W2ᵀ + b2         (N, K)   Linear(H, K): W2 is (K, H), b2 is (K,)
# p  = softmax(z2)         (N, K)   p[n, k] = exp(z2[n, k]) / Σ_j exp(z2[n, j])
# L  = -(1/N) Σ_n log p[n, y_n]     the cross-entropy, averaged over the batch
# ```
#
# The weights are stored as (out, in), PyTorch's layout, which is why the products
# have a transpose: row n of `X W1ᵀ` is W1 applied to point n.
#
# ## The backward pass, derived
#
# We want dL/dW1, dL/db1, dL/dW2, dL/db2. Write `G` for "dL/d(something)"; every
# gradient has the shape of the thing it is the gradient of, which is a good
# check at every step.
#
# **Step 1: the loss and the softmax together.** For one point with label y the
# loss is ℓ = −log p_y = −z_y + log Σ_j exp(z_j). Differentiate with respect to z_k:
#
# ```
# ∂ℓ/∂z_k = −[k = y] + exp(z_k) / Σ_j exp(z_j) = p_k − [k = y]
# ```
#
# ([k = y] is 1 when k = y, else 0.) So with Y the one-hot matrix of the labels,
# and the 1/N of the mean:
#
# ```
# G2 = dL/dz2 = (p − Y) / N                     (N, K)
# ```
#
# The prediction minus the truth: a surprisingly simple result, and the reason
# softmax and cross-entropy are always fused into one loss (tinyar's
# `CrossEntropyLoss` takes the scores z2, not p).
#
# **Step 2: the second linear layer.** z2[n, k] = Σ_h a1[n, h] W2[k, h] + b2[k].
# The weight W2[k, h] touches z2[n, k] for every n, with slope a1[n, h]; the bias
# b2[k] touches z2[n, k] for every n with slope 1; a1[n, h] touches z2[n, k] for
# every k with slope W2[k, h]. Summing over what each one touches (the chain rule):
#
# ```
# dL/dW2 = G2ᵀ a1        (K, H)     one matrix product
# dL/db2 = Σ_n G2[n, :]  (K,)       the column sums
# dL/da1 = G2 W2         (N, H)     passed on to the layer below
# ```
#
# **Step 3: the ReLU.** a1 = max(z1, 0) has slope 1 where z1 > 0 and 0 elsewhere:
#
# ```
# G1 = dL/dz1 = dL/da1 ⊙ [z1 > 0]      (N, H)   ⊙: elementwise product
# ```
#
# **Step 4: the first linear layer**, exactly as step 2 with X in place of a1:
#
# ```
# dL/dW1 = G1ᵀ X         (H, 2)
# dL/db1 = Σ_n G1[n, :]  (H,)
# dL/dX  = G1 W1         (N, 2)     (not needed for training; tinyar returns it anyway)
# ```
#
# That is the whole of backpropagation for this network. Each layer only needs the
# gradient of its output and what it saw in the forward pass (X, z1 or a1), which
# is why a tinyar layer's `forward` keeps its input and `backward(grad_out)` takes
# one argument.

# %% [markdown]
# ## The same math in NumPy
#
# The function below is the derivation, line for line. The softmax subtracts each
# row's maximum first: softmax(z) = softmax(z − c) for any constant c, and it keeps
# `exp` from overflowing.

# %%
def forward_backward(X, y, W1, b1, W2, b2):
    """The loss and its gradients for the two-layer network, by hand."""
    N = X.shape[0]
    rows = np.arange(N)
    # forward
    z1 = X @ W1.T + b1
    a1 = np.maximum(z1, 0)
    z2 = a1 @ W2.T + b2
    e = np.exp(z2 - z2.max(axis=1, keepdims=True))
    p = e / e.sum(axis=1, keepdims=True)
    loss = -np.log(p[rows, y]).mean()
    # backward
    G2 = p.copy()
    G2[rows, y] -= 1                     # p - Y
    G2 /= N
    dW2 = G2.T @ a1
    db2 = G2.sum(axis=0)
    da1 = G2 @ W2
    G1 = da1 * (z1 > 0)
    dW1 = G1.T @ X
    db1 = G1.sum(axis=0)
    return loss, {"W1": dW1, "b1": db1, "W2": dW2, "b2": db2}


# %% [markdown]
# ## The same network in tinyar
#
# `nn.Sequential` chains modules; its `backward` calls each child's `backward` in
# reverse order. A `Linear` layer's `backward(G)` adds Gᵀx into `weight.grad` and the
# column sums of G into `bias.grad`, and returns G W: steps 2 and 4 above.
# `CrossEntropyLoss.backward()` returns (p − Y)/N: step 1. (Open `tinyar/nn/linear.py`
# and `tinyar/nn/activation.py`: the docstrings carry the same equations.)

# %%
H, K = 100, 3
model = nn.Sequential(nn.Linear(2, H), nn.ReLU(), nn.Linear(H, K))
criterion = CrossEntropyLoss()
print(model)

loss_tinyar = criterion(model(X), y)        # forward: a Python float
model.zero_grad()                           # backward ADDS into .grad, so clear it first
model.backward(criterion.backward())        # dL/dz2 goes in, the chain rule does the rest

# The same weights, handed to the NumPy version.
W1, b1 = model[0].weight.data, model[0].bias.data
W2, b2 = model[2].weight.data, model[2].bias.data
loss_numpy, grads_numpy = forward_backward(X, y, W1, b1, W2, b2)
grads_tinyar = {"W1": model[0].weight.grad, "b1": model[0].bias.grad,
                "W2": model[2].weight.grad, "b2": model[2].bias.grad}

print(f"\nloss: NumPy {loss_numpy:.7f}   tinyar {loss_tinyar:.7f}")
print(f"{'tensor':<7}{'shape':<10}{'max |NumPy - tinyar|':>22}{'max |grad|':>12}")
for name in grads_numpy:
    diff = np.abs(grads_numpy[name] - grads_tinyar[name]).max()
    print(f"{name:<7}{str(grads_numpy[name].shape):<10}{diff:>22.2e}"
          f"{np.abs(grads_numpy[name]).max():>12.2e}")

# %% [markdown]
# The two differ by about 1e-8 or less, some 1e-7 of the gradients' own size: the
# rounding of float32 arithmetic (tinyar's default dtype), which keeps about 7
# significant digits, while the kernels add numbers in a different order than NumPy. Agreeing with each other does not prove
# either is right, though. We could have made the same mistake twice.
#
# ## Checking with central differences
#
# The derivative is the limit of a difference quotient, so we can estimate every
# entry of every gradient without any calculus: nudge one weight by ±ε and watch
# the loss,
#
# ```
# dL/dw ≈ (L(w + ε) − L(w − ε)) / (2ε)
# ```
#
# The error of this *central* difference is O(ε²) (the one-sided
# (L(w+ε) − L(w))/ε is only O(ε)). In float64 with ε = 1e-6 it agrees with the
# exact gradient to about 1e-8 relative, while float32 would drown it in rounding
# error, so the check runs in float64. We compare with the relative error
# max|analytic − numeric| / max(|analytic|, |numeric|). A ReLU has a kink at 0;
# should some z1 lie within ε of 0 the estimate there is wrong, but with random
# weights that almost never happens.

# %%
def numerical_gradient(f, w, eps=1e-6):
    """Central differences of the scalar function f() with respect to array w (changed in place)."""
    grad = np.zeros_like(w)
    for index in np.ndindex(w.shape):
        old = w[index]
        w[index] = old + eps
        plus = f()
        w[index] = old - eps
        minus = f()
        w[index] = old
        grad[index] = (plus - minus) / (2 * eps)
    return grad


params64 = {name: array.astype(np.float64) for name, array in
            {"W1": W1, "b1": b1, "W2": W2, "b2": b2}.items()}
X64 = X.astype(np.float64)
_, analytic = forward_backward(X64, y, **params64)

print(f"{'tensor':<7}{'entries':>8}{'relative error':>16}")
for name, w in params64.items():
    numeric = numerical_gradient(lambda: forward_backward(X64, y, **params64)[0], w)
    err = np.abs(analytic[name] - numeric).max() / max(np.abs(analytic[name]).max(),
                                                      np.abs(numeric).max())
    print(f"{name:<7}{w.size:>8}{err:>16.2e}")

# %% [markdown]
# Relative errors around 1e-8 or below: the derivation is right. Had we forgotten
# the 1/N, written `G2.T @ X` or dropped the ReLU mask, the error would be of order 1.
#
# tinyar has the same check built in: `tinyar.inspect.gradcheck(module, *inputs)`
# copies the module, converts it to float64, and compares its `backward` with
# central differences for every input and every parameter. To check the loss too
# we wrap network and loss into one module. This is also a small lesson in
# tinyar's `Module` contract: `forward` computes and remembers, `backward(grad)`
# takes dL/d(output), adds into the parameters' `.grad` and returns dL/d(input).

# %%
class NetworkWithLoss(nn.Module):
    """L(x, y) = CrossEntropy(net(x), y); backward returns dL/dx."""

    def __init__(self, net):
        super().__init__()
        self.net = net
        self.criterion = CrossEntropyLoss()

    def forward(self, x, targets):
        return self.criterion(self.net(x), targets)

    def backward(self, grad=1.0):
        return self.net.backward(self.criterion.backward(grad))


# 30 points keep it quick: gradcheck runs two forward passes per checked number
report = gradcheck(NetworkWithLoss(copy.deepcopy(model)), X[:30], y[:30])
print(report)
print("all within tolerance:", report.ok())

# %% [markdown]
# `input[0]` is dL/dX: tinyar's backward returns it, and it is checked too. The
# integer labels are passed through unchanged.
#
# ## Training: gradient descent, written out
#
# With the gradients in hand, training is a loop of forward, backward and one
# update per parameter, w ← w − η dL/dw with learning rate η. We update in place
# (`p.data -= ...`): every parameter of a tinyar model is a *view* into one flat
# buffer (see `tinyar/nn/parameter.py`), and assigning a new array to `p.data` would
# cut it loose. `tinyar.optim.SGD(model, lr=1.0)` does exactly this update, as one
# kernel over the whole flat buffer; chapter 02 compares it with smarter optimizers.
#
# All 300 points form one batch (full-batch gradient descent); η = 1 is large but
# stable for this small network.

# %%
steps = pick(4000, fast=300)
learning_rate = 1.0
losses = []
for step in range(steps):
    loss = criterion(model(X), y)
    model.zero_grad()
    model.backward(criterion.backward())
    for p in model.parameters():
        p.data -= learning_rate * p.grad
    losses.append(loss)
    if step % (steps // 8) == 0 or step == steps - 1:
        print(f"step {step:5d}  loss {loss:.4f}")


def predict(points):
    return model(points).argmax(axis=1)


train_accuracy = (predict(X) == y).mean()
test_accuracy = (predict(X_test) == y_test).mean()
print(f"\naccuracy: training {train_accuracy:.1%}, test spiral {test_accuracy:.1%}")

# %% [markdown]
# ## What the network learned
#
# The loss curve is on a log scale. The first few steps jump up and down: η = 1
# overshoots while the weights are still random. Then comes the fast fall of the
# first few hundred steps, the network finding the three arms, and a long slow
# tail, the network sharpening the boundaries between them. The decision boundary colours each point of the plane
# by the class the network predicts there, with the training points on top. A
# linear classifier could only cut the plane into three wedges.

# %%
# tinyar's plot helpers save a PNG and return its path; show() displays it in a notebook
show(plot_curves(figure_path("01_loss_curve.png"), {"training loss": (np.arange(steps), losses)},
                 title="two-layer network on the spiral", logy=True,
                 ylabel="cross-entropy (nats)"))
show(plot_decision_boundary(figure_path("01_decision_boundary.png"), predict, X, y,
                            title=f"decision boundary (test accuracy {test_accuracy:.0%})"))

# %% [markdown]
# ## What to take away
#
# * Backpropagation is the chain rule, one layer at a time; every layer needs only
#   the gradient of its output and what it saw in the forward pass.
# * Softmax + cross-entropy have the gradient p − Y; a linear layer's weight
#   gradient is Gᵀx; an elementwise function multiplies by its derivative.
# * A gradient you derived is not done until it passes a central-difference check
#   in float64. Every layer in tinyar has one in `tests/`.
#
# Next: chapter 02 replaces the hand-written update with tinyar's optimizers and
# learning-rate schedules and compares them on the same problem.
