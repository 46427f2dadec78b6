"""Ready-made two-level class hierarchies for tinyar's image data sets.

The multi-level classifier factorises P(y | x) = P(coarse | x) * P(fine | coarse, x),
so each data set needs a grouping of its fine labels into coarse classes.
Label ids are the data set's own (label 3 of Fashion-MNIST is 'Dress');
every hierarchy here carries ``label_names`` in that order and ``class_names``.

* ``"fashion-mnist"``: 10 labels in 6 classes by what the garment is worn on
  or for: tops (T-shirt/top, Pullover, Shirt), bottoms (Trouser), dresses
  (Dress), outerwear (Coat), footwear (Sandal, Sneaker, Ankle boot), bags
  (Bag). Coat could pass for a top; we keep it apart because it is worn over
  the others, which also keeps the hard tops class (the usual confusions
  T-shirt/Pullover/Shirt) to the garments that are really alike.
* ``"mnist"``: digits have no natural grouping (round/straight or small/large
  would be arbitrary), so the default is *flat*: one class ``"digit"`` holding
  all ten. P(coarse) is then 1 and the model is exactly a plain softmax, a
  useful baseline. ``mnist_hierarchy("parity")`` gives even/odd instead.
* ``"cifar10"``: vehicles (airplane, automobile, ship, truck) and animals
  (bird, cat, deer, dog, frog, horse).
* ``"cifar100"``: the official 20 superclasses over the 100 fine labels
  (Krizhevsky 2009, "Learning Multiple Layers of Features from Tiny Images",
  appendix D), with the fine labels in their official alphabetical order, so
  ``parent`` is the same fine->coarse table as the coarse label byte of the
  CIFAR-100 files.
* ``"glyphs"`` and ``"emnist-byclass"``: 62 characters 0-9, A-Z, a-z in the
  classes digit, upper, lower. ``"emnist-balanced"``/``"emnist-bymerge"``: their
  47 classes (the lowercase letters that look like their capitals are merged
  into them) in the same three classes; ``"emnist-digits"``/``"emnist-mnist"``
  are MNIST's flat digits. (EMNIST Letters, 26 case-merged letters, has none.)

For other data, write the grouping as JSON, ``{"coarse name": ["fine label", ...]}``,
and load it with ``hierarchy_for(path, labels)``.
"""
import os
from pathlib import Path

import numpy as np

from .glyphs import GLYPH_CHARS
from ..nn.hierarchy import ClassHierarchy, HierarchyError

__all__ = ["hierarchy_for", "builtin_hierarchies", "fashion_mnist_hierarchy", "mnist_hierarchy",
           "cifar10_hierarchy", "cifar100_hierarchy", "glyph_hierarchy",
           "emnist_balanced_hierarchy",
           "MNIST_LABELS", "FASHION_MNIST_LABELS", "CIFAR10_LABELS", "CIFAR100_LABELS",
           "CIFAR100_CLASSES", "CIFAR100_SUPERCLASSES", "EMNIST_BALANCED_LABELS"]

MNIST_LABELS = [str(d) for d in range(10)]

FASHION_MNIST_LABELS = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                        "Sneaker", "Bag", "Ankle boot"]

FASHION_MNIST_GROUPS = {
    "tops": ["T-shirt/top", "Pullover", "Shirt"],
    "bottoms": ["Trouser"],
    "dresses": ["Dress"],
    "outerwear": ["Coat"],
    "footwear": ["Sandal", "Sneaker", "Ankle boot"],
    "bags": ["Bag"],
}

CIFAR10_LABELS = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                  "truck"]

CIFAR10_GROUPS = {
    "vehicles": ["airplane", "automobile", "ship", "truck"],
    "animals": ["bird", "cat", "deer", "dog", "frog", "horse"],
}

# The official superclasses, in the order of the files' coarse label byte
# (alphabetical), each with its five fine labels.
CIFAR100_SUPERCLASSES = {
    "aquatic_mammals": ["beaver", "dolphin", "otter", "seal", "whale"],
    "fish": ["aquarium_fish", "flatfish", "ray", "shark", "trout"],
    "flowers": ["orchid", "poppy", "rose", "sunflower", "tulip"],
    "food_containers": ["bottle", "bowl", "can", "cup", "plate"],
    "fruit_and_vegetables": ["apple", "mushroom", "orange", "pear", "sweet_pepper"],
    "household_electrical_devices": ["clock", "keyboard", "lamp", "telephone", "television"],
    "household_furniture": ["bed", "chair", "couch", "table", "wardrobe"],
    "insects": ["bee", "beetle", "butterfly", "caterpillar", "cockroach"],
    "large_carnivores": ["bear", "leopard", "lion", "tiger", "wolf"],
    "large_man-made_outdoor_things": ["bridge", "castle", "house", "road", "skyscraper"],
    "large_natural_outdoor_scenes": ["cloud", "forest", "mountain", "plain", "sea"],
    "large_omnivores_and_herbivores": ["camel", "cattle", "chimpanzee", "elephant", "kangaroo"],
    "medium_mammals": ["fox", "porcupine", "possum", "raccoon", "skunk"],
    "non-insect_invertebrates": ["crab", "lobster", "snail", "spider", "worm"],
    "people": ["baby", "boy", "girl", "man", "woman"],
    "reptiles": ["crocodile", "dinosaur", "lizard", "snake", "turtle"],
    "small_mammals": ["hamster", "mouse", "rabbit", "shrew", "squirrel"],
    "trees": ["maple_tree", "oak_tree", "palm_tree", "pine_tree", "willow_tree"],
    "vehicles_1": ["bicycle", "bus", "motorcycle", "pickup_truck", "train"],
    "vehicles_2": ["lawn_mower", "rocket", "streetcar", "tank", "tractor"],
}
CIFAR100_CLASSES = list(CIFAR100_SUPERCLASSES)
# The official fine label order is alphabetical (the fine label byte indexes it).
CIFAR100_LABELS = sorted(label for members in CIFAR100_SUPERCLASSES.values()
                         for label in members)

# EMNIST Balanced and ByMerge: digits, the 26 capitals, then the 11 lowercase
# letters whose capital looks different (c, i, j, k, l, m, o, p, s, u, v, w,
# x, y, z were merged into their capitals).
EMNIST_BALANCED_LABELS = list("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ") + list("abdefghnqrt")


def _case_classes(labels):
    """digit / upper / lower for a list of one-character labels."""
    kinds = ["digit", "upper", "lower"]
    parent = [0 if c.isdigit() else 1 if c.isupper() else 2 for c in labels]
    return ClassHierarchy(np.asarray(parent, np.int64), class_names=kinds,
                          label_names=list(labels))


def fashion_mnist_hierarchy():
    """Fashion-MNIST's 10 garments in 6 classes (see the module docstring)."""
    return ClassHierarchy.from_mapping(FASHION_MNIST_GROUPS, FASHION_MNIST_LABELS)


def mnist_hierarchy(grouping="flat"):
    """MNIST's digits: ``"flat"`` (one class holding all ten) or ``"parity"`` (even, odd)."""
    if grouping == "flat":
        return ClassHierarchy(np.zeros(10, np.int64), class_names=["digit"],
                              label_names=MNIST_LABELS)
    if grouping == "parity":
        return ClassHierarchy(np.arange(10, dtype=np.int64) % 2, class_names=["even", "odd"],
                              label_names=MNIST_LABELS)
    raise HierarchyError(f"mnist_hierarchy: grouping must be 'flat' or 'parity', got "
                         f"{grouping!r}")


def cifar10_hierarchy():
    """CIFAR-10: vehicles and animals."""
    return ClassHierarchy.from_mapping(CIFAR10_GROUPS, CIFAR10_LABELS)


def cifar100_hierarchy():
    """CIFAR-100: the official 20 superclasses of 5 fine labels each."""
    return ClassHierarchy.from_mapping(CIFAR100_SUPERCLASSES, CIFAR100_LABELS)


def glyph_hierarchy():
    """The 62 glyphs (and EMNIST ByClass): digit, upper, lower."""
    return _case_classes(GLYPH_CHARS)


def emnist_balanced_hierarchy():
    """EMNIST Balanced/ByMerge's 47 classes: digit, upper, lower."""
    return _case_classes(EMNIST_BALANCED_LABELS)


_BUILDERS = {
    "mnist": mnist_hierarchy,
    "fashion-mnist": fashion_mnist_hierarchy,
    "cifar10": cifar10_hierarchy,
    "cifar100": cifar100_hierarchy,
    "glyphs": glyph_hierarchy,
    "emnist": glyph_hierarchy,                 # 'emnist' means the ByClass split
    "emnist-byclass": glyph_hierarchy,
    "emnist-balanced": emnist_balanced_hierarchy,
    "emnist-bymerge": emnist_balanced_hierarchy,
    "emnist-digits": mnist_hierarchy,
    "emnist-mnist": mnist_hierarchy,
}


def builtin_hierarchies():
    """The names ``hierarchy_for`` knows."""
    return sorted(_BUILDERS)


def _normalise(name):
    return name.lower().replace("_", "-").replace("fashionmnist", "fashion-mnist")


def hierarchy_for(name_or_path, labels=None):
    """The hierarchy of a named data set, or one read from a JSON mapping file.

    ``hierarchy_for("cifar100")``; ``hierarchy_for("groups.json", labels)`` reads
    ``{"coarse name": ["fine label", ...], ...}`` where ``labels`` lists the
    data's fine labels in label-id order (or is their number, when the file
    names labels by id). See ``ClassHierarchy.from_json``.
    """
    name = os.fspath(name_or_path)
    key = _normalise(name)
    if key in _BUILDERS:
        if labels is not None:
            raise HierarchyError(f"hierarchy_for: {name!r} is a built-in hierarchy with its own "
                                 f"labels; pass labels only with a JSON file")
        return _BUILDERS[key]()
    path = Path(name).expanduser()
    if os.path.lexists(path):           # a FIFO or a folder is then refused by name
        if labels is None:
            raise HierarchyError(f"hierarchy_for: reading {path} needs the data's labels "
                                 f"(a list of label names in id order, or their number)")
        return ClassHierarchy.from_json(path, labels)
    raise HierarchyError(f"hierarchy_for: no built-in hierarchy named {name!r} (known: "
                         f"{', '.join(builtin_hierarchies())}) and no JSON file at {path}")
