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
# # 08 · The multi-level image classifier
#
# Labels often come in a hierarchy: a "lower-case e" is a *letter*, a "7" a
# *digit*, a "tabby cat" an *animal*. Chapter 07 factorised a language model's
# softmax over word classes to make it cheap. Here the same factorisation is
# used for a different reason: the coarse level means something, and we want to
# predict it, measure it and make better mistakes.
#
# ```
# P(fine = y | x) = P(coarse = c(y) | x) · P(fine = y | coarse = c(y), x)
# ```
#
# c(y) is the coarse class of label y. The network has two softmax heads on top of
# the same features: one over the C coarse classes, one over the labels *of each
# class*. It is a proper distribution over all labels (chapter 07 checked that),
# and we get P(coarse | x) for free.
#
# In this chapter, on tinyar's 62 glyphs (digits, upper- and lower-case letters):
#
# 1. the data and its hierarchy;
# 2. the same CNN trained twice, with a flat head and with the multi-level head;
# 3. accuracy at each level, **joint** against **greedy** decoding, consistency
#    between the levels, and how bad the mistakes are;
# 4. the confusion matrices, and a look at the mistakes themselves;
# 5. level-weight schedules, briefly.
#
# `tinyar classify --head multilevel` runs all of it from the command line
# (`tinyar/train/classify.py`); here the loop is written out.

# %%
from _common import figure_path, new_figure, pick, savefig, show

import time

import numpy as np

import tinyar
from tinyar.backend.cpu.threads import set_blas_threads
from tinyar.data import GLYPH_CHARS, hierarchy_for, make_glyphs, save_grid_png
from tinyar.inspect.confusion import plot_confusion_matrix
from tinyar.models.classifiers import CNNClassifier
from tinyar.nn.multilevel import LevelWeightSchedule
from tinyar.optim import Adam
from tinyar.train.metrics import format_report, hierarchical_report

tinyar.manual_seed(0)                 # the same weights on every run
# the figures this chapter saves (tests/tutorials checks that it does)
FIGURES = ["08_glyphs.png", "08_training.png", "08_confusion_coarse.png",
           "08_confusion_fine.png", "08_mistakes.png"]

# One BLAS thread: on a 2-core machine that is also doing other work, BLAS's
# threads can make every product several times slower (chapter 10).
set_blas_threads(1)

# %% [markdown]
# ## The glyphs and their hierarchy
#
# `make_glyphs` renders the 62 characters from twelve fonts with random rotation,
# scale, shear, shift, stroke width and noise (chapter 04). `hierarchy_for("glyphs")`
# is the two-level hierarchy: 10 digits, 26 upper-case and 26 lower-case letters.
# A `ClassHierarchy` stores `parent[label]`, the coarse class of each label, and
# the labels grouped by class (`labels_of(c)`).

# %%
hierarchy = hierarchy_for("glyphs")
print(hierarchy)
for c, name in enumerate(hierarchy.class_names):
    print(f"  class {c} {name!r:<8} {hierarchy.class_size(c):2d} labels: "
          + "".join(hierarchy.label_names[y] for y in hierarchy.labels_of(c)))

x_train, y_train = make_glyphs(pick(20_000, fast=1_000), seed=0)
x_test, y_test = make_glyphs(pick(3_000, fast=300), seed=1)
print(f"training {x_train.shape}, test {x_test.shape}")

# one example of each character, a row per coarse class (blank tiles pad the digits' row)
row_of = {0: list(range(10)) + [62] * 16, 1: list(range(10, 36)), 2: list(range(36, 62))}
examples = [np.flatnonzero(y_test == label)[0] if label < 62 else -1
            for c in range(3) for label in row_of[c]]
tiles = np.where(np.array(examples)[:, None, None, None] >= 0, x_test[examples], 0.0)
labels = [label for c in range(3) for label in row_of[c]]
show(save_grid_png(tiles, labels, figure_path("08_glyphs.png"), names=list(GLYPH_CHARS) + [""],
                   ncols=26))

# %% [markdown]
# Some pairs are nearly impossible to tell apart without context, and many of
# them cross the coarse classes: O (upper) and 0 (digit) and o (lower); l
# (lower), I (upper) and 1 (digit); and the letters whose lower case is a small
# upper case: c, o, s, v, w, x, z. Those are the interesting mistakes.
#
# ## Two heads on one backbone
#
# `CNNClassifier` (`tinyar/models/classifiers.py`) is chapter 04's LeNet-like
# network up to its 128 features (conv – ReLU – pool, twice, then Linear(1600, 128)
# and ReLU), with a head chosen by `head=`:
#
# * **flat**: Linear(128, 62) and the cross-entropy over 62 labels. Its coarse
#   prediction is the parent of the predicted label.
# * **multilevel**: `MultiLevelClassifier` (`tinyar/nn/multilevel.py`): a
#   Linear(128, 3) softmax for P(coarse | x) and, per coarse class, a softmax over
#   its labels for P(fine | coarse, x), stored as one Linear(128, 62) whose rows
#   are grouped by class. The training loss is
#
# ```
# L = w_c · (−log P(c(y) | x)) + w_f · (−log P(y | c(y), x))
# ```
#
# averaged over the batch. With the level weights w_c = w_f = 1 this is exactly
# −log P(y | x), the cross-entropy of the factored distribution, so the two models
# minimise the same kind of quantity; only the parametrisation differs. Other
# weights change what the network attends to first (see the end of the chapter).
#
# Both models start from the same backbone weights (`tinyar.manual_seed(0)`
# before each is built), see the same batches in the same order and take the same
# number of steps: 600 steps of 64 images, Adam at 2e-3, about 15 seconds each
# on a laptop. On a slow or busy machine the first stops at a time limit of 60
# seconds, and the second then takes as many steps as the first managed.

# %%
steps, time_limit, batch_size = pick(600, fast=10), pick(60.0, fast=5.0), 64
eval_every, n_eval = pick(100, fast=5), min(1_000, len(x_test))


def train(head, steps):
    tinyar.manual_seed(0)                              # the same backbone weights
    model = CNNClassifier(hierarchy, image_shape=(1, 28, 28), arch="lenet", head=head)
    optimizer = Adam(model.parameters(), lr=2e-3)
    rng = np.random.default_rng(0)                     # the same batches
    order, position, seconds = rng.permutation(len(x_train)), 0, 0.0
    curve = {"step": [], "loss": [], "eval_step": [], "accuracy": []}
    for step in range(1, steps + 1):
        started = time.perf_counter()
        if position + batch_size > len(x_train):
            order, position = rng.permutation(len(x_train)), 0
        idx = order[position:position + batch_size]
        position += batch_size
        loss = model.loss(x_train[idx], y_train[idx])
        model.zero_grad()
        model.backward()
        optimizer.step()
        seconds += time.perf_counter() - started
        curve["step"].append(step)
        curve["loss"].append(loss)
        out_of_time = seconds > time_limit
        if step % eval_every == 0 or step == steps or out_of_time:
            _, fine = model.predict_levels(x_test[:n_eval])
            curve["eval_step"].append(step)
            curve["accuracy"].append(float(np.mean(fine == y_test[:n_eval])))
        if out_of_time:
            print(f"  stopped at the time limit of {time_limit:.0f} s")
            break
    print(f"{head:>10} head: {step} steps in {seconds:.1f} s, {model.num_parameters():,} "
          f"parameters; loss at step 1 {curve['loss'][0]:.3f}, test accuracy on the first "
          f"{n_eval:,} {curve['accuracy'][-1]:.1%}")
    return model, curve


flat_model, flat_curve = train("flat", steps)
multi_model, multi_curve = train("multilevel", len(flat_curve["step"]))
print(multi_model.head)

# %%
fig = new_figure(11, 4)
ax_loss, ax_acc = fig.subplots(1, 2)
for name, curve in (("flat", flat_curve), ("multi-level", multi_curve)):
    window = max(1, len(curve["loss"]) // 30)
    smoothed = np.convolve(curve["loss"], np.ones(window) / window, mode="valid")
    ax_loss.plot(curve["step"][window - 1:], smoothed, label=name)
    ax_acc.plot(curve["eval_step"], curve["accuracy"], "o-", label=name)
ax_loss.set_title("training loss, −log P(y | x) (moving average)")
ax_loss.set_ylabel("nats")
ax_acc.set_title(f"fine-level test accuracy (first {n_eval:,} test images)")
for ax in (ax_loss, ax_acc):
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
    ax.legend()
savefig(fig, "08_training.png")

# %% [markdown]
# On the glyphs the flat head learns faster, step for step, and after 600 steps
# it is still a few points ahead (in our runs 94–95% against 90–94%, depending on
# the seed). Two things to see here:
#
# * **At step 1** the multi-level head is slightly *worse* (about 4.20 nats
#   against log 62 = 4.13): with random weights it spreads the probability
#   uniformly over the 3 classes and then over the labels of each, so a letter
#   gets (1/3)·(1/26) < 1/62, which costs more than the digits' (1/3)·(1/10)
#   gains. It learns the class frequencies within a few steps and is ahead for
#   the first few dozen; then the flat head overtakes it.
# * **Later**, the factored model asks more of the features. Its coarse head is
#   a linear softmax over the 128 features, so the features must make "upper
#   case", "lower case" and "digit" *linearly separable*: put A and Z on one
#   side and o and O on opposite sides. The flat head only needs each label to
#   be separable from the others, and gets P(case) as a sum over labels, which
#   is not linear. The glyph hierarchy groups labels by *kind*, not by *shape*,
#   and the backbone pays for learning the kinds.
#
# ## Per-level accuracy
#
# `hierarchical_report(hierarchy, y_true, y_pred_fine, y_pred_coarse)`
# (`tinyar/train/metrics.py`) measures both levels; `format_report` prints it.
# The true coarse class is the parent of the true label.

# %%
reports = {}
for name, model in (("flat", flat_model), ("multi-level", multi_model)):
    coarse, fine = model.predict_levels(x_test, decode="joint")
    reports[name] = hierarchical_report(hierarchy, y_test, fine, coarse)
    print(f"--- {name} head (joint decoding) ---")
    print(format_report(reports[name]))

# %% [markdown]
# The coarse level is much easier than the fine one (3 classes against 62) and
# its accuracy is higher, but not by as much as one might expect: most fine
# mistakes are O/0/o or l/I/1 or c/C, which are *also* coarse mistakes. The
# hierarchical precision and recall (Kiritchenko et al. 2005) give half a hit
# for the right coarse class with the wrong label; here, with two levels, they
# are the mean of the two accuracies.
#
# ## Joint against greedy decoding
#
# Which label should the multi-level model predict?
#
# * **joint**: the label with the highest P(y | x) = P(c(y) | x) · P(y | c(y), x),
#   computed for all 62 labels: the exact most likely label;
# * **greedy**: first the most likely class ĉ = argmax_c P(c | x), then the most
#   likely label within it. Cheaper (C + |ĉ| scores instead of all of them, which
#   matters for 10,000 words, not for 62 glyphs), but it can miss: when P(digit)
#   = 0.45, P(upper) = 0.55, and the model is sure it is a 0 if it is a digit but
#   torn between O and Q if it is upper case, the joint answer is 0 (0.45) and the
#   greedy one O (about 0.3).
#
# The two differ exactly when the most likely class is not the class of the most
# likely label. The fraction of images where they agree is the **consistency**
# of the model's two levels: `hierarchical_report` measures it when given the
# model's own coarse prediction argmax_c P(c | x). A flat model has a P(coarse |
# x) too, the sum of its label probabilities over each class, so we can ask the
# same of it.

# `level_probabilities` gives both, for either head (for the flat one, P(c | x) is
# the sum of its label probabilities over c's labels).

# %%
for name, model in (("flat", flat_model), ("multi-level", multi_model)):
    p_coarse, p_fine = model.level_probabilities(x_test)
    log_p = np.log(p_fine)
    joint = log_p.argmax(axis=1)
    best_class = p_coarse.argmax(axis=1)
    greedy = np.array([hierarchy.labels_of(c)[np.argmax(row[hierarchy.labels_of(c)])]
                       for row, c in zip(log_p, best_class)])
    report = hierarchical_report(hierarchy, y_test, joint, best_class)
    differ = np.flatnonzero(joint != greedy)
    print(f"{name:>11}: joint accuracy {np.mean(joint == y_test):.2%}, greedy "
          f"{np.mean(greedy == y_test):.2%}; they differ on {differ.size} of {len(y_test)} "
          f"images; consistency {report['consistency']:.2%}; coarse accuracy of "
          f"argmax P(c|x) {np.mean(best_class == hierarchy.parent[y_test]):.2%}")
    if differ.size:
        right = [int(np.sum(pred[differ] == y_test[differ])) for pred in (joint, greedy)]
        print(f"{'':>13}where they differ: joint right {right[0]}, greedy right {right[1]}")

_, greedy_lib = multi_model.predict_levels(x_test, decode="greedy")
assert np.array_equal(greedy_lib, greedy), "the library's greedy decoding is the same"

# %% [markdown]
# Joint and greedy decoding disagree on only a handful of images, the ambiguous
# ones, where the mass of P(c | x) is split; on those, either can be right, and
# overall the two end up within a few images of each other. The exact argmax
# is the safer default (`decode="joint"`); greedy is the one that scales to
# large label sets. `model.predict_levels(x, decode="greedy")` is the library's
# version of the greedy decoder above (the assert checks they agree).
#
# ## How bad are the mistakes?
#
# Not all mistakes are equal: calling an "e" a "c" is a better mistake than
# calling it a "7". `hierarchical_report` measures the **severity** of each
# fine-level mistake as the height of the lowest common ancestor of the true and
# the predicted label in the tree root → class → label (Bertinetto et al. 2020,
# "Making Better Mistakes"): 1 when both are in the same class, 2 when they
# meet only at the root.

# %%
for name, report in reports.items():
    m = report["mistakes"]
    print(f"{name:>11}: {m['count']} mistakes of {report['num_samples']}: "
          f"{m['same_coarse']} inside the true class, {m['other_coarse']} in another; "
          f"mean LCA height {m['mean_height']:.2f}")

# %% [markdown]
# On the glyphs most mistakes of either model cross the classes (in our runs
# two thirds to three quarters of them), because the hardest pairs (o/O/0,
# l/I/1, s/S, ...) sit in different classes: the hierarchy by *kind of character*
# is not the hierarchy by *shape*. A multi-level head does not change that; here
# it makes more mistakes of both kinds. A head can only make "better mistakes"
# when the coarse classes group labels that look alike. On CIFAR-100, whose
# superclasses group similar images (the five kinds of trees, the five vehicles),
# that is much more the case.
#
# ## Confusion matrices
#
# `plot_confusion_matrix` (`tinyar/inspect/confusion.py`) draws a matrix with the
# true classes as rows and the predicted ones as columns, each row divided by its
# number of samples, so the diagonal is each class's recall. The fine matrix
# groups the labels by class (the hierarchy's `order`) with lines between the
# classes: confusions inside a class fall in the diagonal blocks, confusions
# across classes off them. (`tinyar classify` writes both for every run with
# `plot_level_confusions`.)

# %%
report = reports["multi-level"]
show(plot_confusion_matrix(
    figure_path("08_confusion_coarse.png"), np.array(report["coarse"]["confusion_matrix"]),
    hierarchy.class_names, f"coarse level, multi-level head: accuracy "
                           f"{report['coarse']['accuracy']:.3f}"))
order = hierarchy.order
fine_cm = np.array(report["fine"]["confusion_matrix"])[np.ix_(order, order)]
show(plot_confusion_matrix(
    figure_path("08_confusion_fine.png"), fine_cm, [hierarchy.label_names[i] for i in order],
    f"fine level, multi-level head: accuracy {report['fine']['accuracy']:.3f}",
    groups=hierarchy.starts[1:-1]))

off_diagonal = np.array(report["fine"]["confusion_matrix"])
np.fill_diagonal(off_diagonal, 0)
print("the most frequent confusions (true → predicted: count):")
for flat_index in np.argsort(off_diagonal, axis=None)[::-1][:10]:
    t, p = np.unravel_index(flat_index, off_diagonal.shape)
    if off_diagonal[t, p]:
        print(f"  {GLYPH_CHARS[t]} → {GLYPH_CHARS[p]}: {off_diagonal[t, p]}")

# %% [markdown]
# ## A look at the mistakes
#
# Numbers hide what the mistakes look like. Here are misclassified test glyphs of
# the multi-level model, each captioned "true → predicted". Many are mistakes a
# person would make too.

# %%
_, fine = multi_model.predict_levels(x_test)
wrong = np.flatnonzero(fine != y_test)[:pick(60, fast=20)]
if wrong.size == 0:                    # a perfect model: show some right ones instead
    wrong = np.arange(12)
captions = [f"{GLYPH_CHARS[y_test[i]]}→{GLYPH_CHARS[fine[i]]}" for i in wrong]
show(save_grid_png(x_test[wrong], np.arange(wrong.size), figure_path("08_mistakes.png"),
                   names=captions, ncols=15, scale=2))

# %% [markdown]
# ## Level-weight schedules
#
# The level weights (w_c, w_f) need not be 1 and 1, nor fixed. Branch CNNs
# (B-CNN, Zhu & Bajwa 2017) start with most of the weight on the coarse level, so
# the early layers learn the broad distinctions first, and move it to the fine
# level as training goes on. `LevelWeightSchedule` holds the milestones; the
# model's `set_epoch(epoch)` applies them (`train_classifier` calls it at the
# start of every epoch):
#
# ```
# CNNClassifier(hierarchy, head="multilevel",
#               schedule=LevelWeightSchedule([(0, (0.9, 0.1)), (2, (0.5, 0.5)), (4, (0.1, 0.9))]))
# tinyar classify --head multilevel --epochs 6 --weight-schedule "0:0.9,0.1;2:0.5,0.5;4:0.1,0.9"
# ```

# %%
schedule = LevelWeightSchedule([(0, (0.9, 0.1)), (2, (0.5, 0.5)), (4, (0.1, 0.9))])
print("epoch:  " + "  ".join(f"{e:^10d}" for e in range(6)))
print("(wc,wf): " + "  ".join(f"{str(schedule(e)):^10}" for e in range(6)))

# %% [markdown]
# With weights other than (1, 1) the loss is no longer −log P(y | x), so the
# model is not trained for the best fine-level likelihood while they last;
# whether that helps depends on the data. On the glyphs, where the coarse
# classes are not shapes, don't expect much. The point of a schedule is data
# whose coarse classes are easier *and* meaningful. Try it: `tinyar classify
# --data cifar100` (downloaded once) with and without `--weight-schedule`.
#
# ## What to take away
#
# * P(y | x) = P(c(y) | x) · P(y | c(y), x): two softmaxes on one backbone, a proper
#   distribution over all labels, trained with the same log-likelihood as a flat
#   head when the level weights are 1.
# * Joint decoding finds the exact most likely label; greedy decoding (best class,
#   then best label in it) is cheaper and differs exactly when the two levels
#   disagree, which is rare.
# * Measure every level, the consistency between them and the severity of the
#   mistakes; a hierarchy helps make better mistakes only when its classes group
#   labels that look alike.
#
# Next: chapter 09 looks inside training, at gradients, updates and activations.
