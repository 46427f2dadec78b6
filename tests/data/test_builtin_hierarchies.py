import json

import pytest

from tinyar.data.builtin_hierarchies import (CIFAR100_CLASSES, CIFAR100_LABELS, CIFAR10_LABELS,
                                             EMNIST_BALANCED_LABELS, FASHION_MNIST_LABELS,
                                             builtin_hierarchies, cifar100_hierarchy,
                                             cifar10_hierarchy, fashion_mnist_hierarchy,
                                             glyph_hierarchy, hierarchy_for, mnist_hierarchy)
from tinyar.data.glyphs import GLYPH_CHARS
from tinyar.data.hierarchy import ClassHierarchy, HierarchyError

# The fine -> coarse table of the CIFAR-100 files (the coarse label byte of
# each fine label), as widely published; written out independently of the
# name mapping in builtin_hierarchies so that a typo there is caught.
CIFAR100_FINE_TO_COARSE = [
    4, 1, 14, 8, 0, 6, 7, 7, 18, 3, 3, 14, 9, 18, 7, 11, 3, 9, 7, 11,
    6, 11, 5, 10, 7, 6, 13, 15, 3, 15, 0, 11, 1, 10, 12, 14, 16, 9, 11, 5,
    5, 19, 8, 8, 15, 13, 14, 17, 18, 10, 16, 4, 17, 4, 2, 0, 17, 4, 18, 17,
    10, 3, 2, 12, 12, 16, 12, 1, 9, 19, 2, 10, 0, 1, 16, 12, 9, 13, 15, 13,
    16, 19, 2, 4, 6, 19, 5, 5, 8, 19, 18, 1, 2, 15, 6, 0, 17, 8, 14, 13]


def coarse_of(h, label_name):
    return h.class_names[h.parent[h.label_names.index(label_name)]]


def test_fashion_mnist():
    h = fashion_mnist_hierarchy()
    assert h.num_labels == 10 and h.num_classes == 6
    assert h.label_names == FASHION_MNIST_LABELS and h.label_names[3] == "Dress"
    assert h.class_names == ["tops", "bottoms", "dresses", "outerwear", "footwear", "bags"]
    assert h.parent.tolist() == [0, 1, 0, 2, 3, 4, 0, 4, 5, 4]
    assert coarse_of(h, "Ankle boot") == "footwear" and coarse_of(h, "Shirt") == "tops"


def test_mnist_flat_and_parity():
    flat = mnist_hierarchy()
    assert flat.num_classes == 1 and flat.num_labels == 10 and flat.sizes().tolist() == [10]
    assert flat.label_names == [str(d) for d in range(10)]
    parity = mnist_hierarchy("parity")
    assert parity.class_names == ["even", "odd"] and parity.parent.tolist() == [0, 1] * 5
    with pytest.raises(HierarchyError, match="'flat' or 'parity'"):
        mnist_hierarchy("round")


def test_cifar10():
    h = cifar10_hierarchy()
    assert h.num_labels == 10 and h.class_names == ["vehicles", "animals"]
    vehicles = sorted(h.label_names[i] for i in h.labels_of(0))
    assert vehicles == ["airplane", "automobile", "ship", "truck"]
    assert h.sizes().tolist() == [4, 6] and h.label_names == CIFAR10_LABELS


def test_cifar100_official_mapping():
    h = cifar100_hierarchy()
    assert h.num_labels == 100 and h.num_classes == 20 and (h.sizes() == 5).all()
    assert h.label_names == CIFAR100_LABELS == sorted(CIFAR100_LABELS)
    assert CIFAR100_LABELS[:3] == ["apple", "aquarium_fish", "baby"]
    assert CIFAR100_LABELS[-1] == "worm"
    assert h.class_names == CIFAR100_CLASSES == sorted(CIFAR100_CLASSES)
    assert h.parent.tolist() == CIFAR100_FINE_TO_COARSE
    for fine, coarse in [("apple", "fruit_and_vegetables"), ("whale", "aquatic_mammals"),
                         ("bicycle", "vehicles_1"), ("tractor", "vehicles_2"),
                         ("maple_tree", "trees"), ("keyboard", "household_electrical_devices"),
                         ("crab", "non-insect_invertebrates"), ("mushroom", "fruit_and_vegetables"),
                         ("skyscraper", "large_man-made_outdoor_things")]:
        assert coarse_of(h, fine) == coarse


def test_glyphs_and_emnist():
    h = glyph_hierarchy()
    assert h.num_labels == 62 and h.class_names == ["digit", "upper", "lower"]
    assert h.sizes().tolist() == [10, 26, 26] and "".join(h.label_names) == GLYPH_CHARS
    assert [coarse_of(h, c) for c in "7Qq"] == ["digit", "upper", "lower"]
    assert hierarchy_for("emnist").parent.tolist() == h.parent.tolist()
    b = hierarchy_for("emnist-balanced")
    assert b.num_labels == 47 and b.sizes().tolist() == [10, 26, 11]
    assert b.label_names == EMNIST_BALANCED_LABELS


def test_hierarchy_for_names():
    assert set(builtin_hierarchies()) >= {"mnist", "fashion-mnist", "cifar10", "cifar100", "glyphs"}
    for name in builtin_hierarchies():
        h = hierarchy_for(name)
        assert isinstance(h, ClassHierarchy) and h.label_names and h.class_names
    assert hierarchy_for("Fashion_MNIST").num_classes == 6
    with pytest.raises(HierarchyError, match="no built-in hierarchy named 'imagenet'.*known: "):
        hierarchy_for("imagenet")
    with pytest.raises(HierarchyError, match="labels only with a JSON file"):
        hierarchy_for("cifar10", labels=["a"])


# ------------------------------------------------------------------------- JSON
def write(tmp_path, obj, name="groups.json"):
    path = tmp_path / name
    path.write_text(json.dumps(obj) if not isinstance(obj, str) else obj)
    return path


def test_json_mapping_round_trip(tmp_path):
    labels = ["cat", "dog", "car", "bus", "cow"]
    path = write(tmp_path, {"animals": ["cat", "dog", "cow"], "vehicles": ["bus", "car"]})
    h = hierarchy_for(path, labels)
    assert h.class_names == ["animals", "vehicles"] and h.label_names == labels
    assert h.parent.tolist() == [0, 0, 1, 1, 0]
    same = ClassHierarchy.from_json(str(path), labels)
    assert same.parent.tolist() == h.parent.tolist()
    # labels named by id
    ids = hierarchy_for(write(tmp_path, {"low": [0, 1], "high": [2]}, "ids.json"), 3)
    assert ids.parent.tolist() == [0, 0, 1]


def test_json_leaves_must_cover_the_labels(tmp_path):
    path = write(tmp_path, {"animals": ["cat", "dog"], "vehicles": ["car"]})
    with pytest.raises(HierarchyError, match=r"groups\.json.*do not cover every label; 2 missing, "
                                             r"e\.g\. \['bus', 'cow'\]"):
        hierarchy_for(path, ["cat", "dog", "car", "bus", "cow"])


def test_json_label_outside_the_hierarchy(tmp_path):
    path = write(tmp_path, {"animals": ["cat", "dog", "unicorn"], "vehicles": ["car"]})
    with pytest.raises(HierarchyError, match=r"groups\.json.*'animals' lists 'unicorn', which is "
                                             r"not one of the 3 labels"):
        hierarchy_for(path, ["cat", "dog", "car"])


@pytest.mark.parametrize("content, message", [
    ({"a": ["x"], "b": ["x", "y"]}, "'x' is in two classes"),
    ({"a": ["x", "y"], "b": []}, "class 'b' has no labels"),
    ({"a": "x y"}, "class 'a' must map to a list"),
    (["x", "y"], "expected a JSON object"),
    ("{not json", "not valid JSON"),
])
def test_json_malformed(tmp_path, content, message):
    with pytest.raises(HierarchyError, match=message):
        hierarchy_for(write(tmp_path, content), ["x", "y"])


def test_json_needs_labels_and_a_file(tmp_path):
    path = write(tmp_path, {"a": ["x"]})
    with pytest.raises(HierarchyError, match="needs the data's labels"):
        hierarchy_for(path)
    with pytest.raises(HierarchyError, match="no JSON file at"):
        hierarchy_for(tmp_path / "nope.json", ["x"])
