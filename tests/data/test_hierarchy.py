import numpy as np
import pytest

from tinyar.data.hierarchy import ClassHierarchy, HierarchyError


def test_frequency_binning_puts_frequent_labels_in_small_classes():
    counts = 1e6 / np.arange(1, 10001)  # Zipf's law
    h = ClassHierarchy.from_counts(counts)
    assert h.num_classes == 100  # default: round(sqrt(V))
    sizes = h.sizes()
    assert sizes[0] < 10 and sizes[-1] > 150
    assert (np.diff(h.parent[np.argsort(-counts, kind="stable")]) >= 0).all()
    # each class holds about the same square-root mass
    mass = np.bincount(h.parent, weights=np.sqrt(counts))
    assert mass.max() / mass.mean() < 1.5


def test_grouped_order_invariants():
    h = ClassHierarchy.from_parents(np.array([2, 0, 1, 0, 2, 2]))
    assert h.num_classes == 3 and list(h.sizes()) == [2, 1, 3]
    for c in range(3):
        assert (h.parent[h.labels_of(c)] == c).all()
    np.testing.assert_array_equal(h.order[h.position], np.arange(6))
    np.testing.assert_array_equal(h.local_index(h.labels_of(2)), [0, 1, 2])


def test_classes_cannot_exceed_labels():
    with pytest.raises(HierarchyError, match=r"num_classes must be in \[1, 5\].*got 6"):
        ClassHierarchy.from_counts(np.ones(5), 6)


def test_empty_classes_are_rejected():
    with pytest.raises(HierarchyError, match=r"classes \[1\] have no labels"):
        ClassHierarchy.from_parents(np.array([0, 2, 2]))


def test_mapping_must_cover_every_label():
    labels = ["car", "ship", "cat", "dog"]
    h = ClassHierarchy.from_mapping({"vehicles": ["car", "ship"], "animals": ["cat", "dog"]}, labels)
    assert h.class_names == ["vehicles", "animals"] and list(h.parent) == [0, 0, 1, 1]
    with pytest.raises(HierarchyError, match="do not cover every label.*'dog'"):
        ClassHierarchy.from_mapping({"vehicles": ["car", "ship"], "animals": ["cat"]}, labels)
    with pytest.raises(HierarchyError, match="'horse', which is not one of"):
        ClassHierarchy.from_mapping({"a": ["car", "ship", "cat", "dog", "horse"]}, labels)
    with pytest.raises(HierarchyError, match="'car' is in two classes"):
        ClassHierarchy.from_mapping({"a": ["car", "ship"], "b": ["car", "cat", "dog"]}, labels)


def test_json_round_trip(tmp_path):
    h = ClassHierarchy.from_counts(np.arange(1, 30), 4)
    h.save(tmp_path / "h.json")
    g = ClassHierarchy.load(tmp_path / "h.json")
    np.testing.assert_array_equal(g.parent, h.parent)


def test_shortlist_gives_the_most_frequent_labels_classes_of_their_own():
    rng = np.random.default_rng(0)
    counts = rng.permutation(np.arange(1, 201) ** 2)
    h = ClassHierarchy.from_counts(counts, 8, shortlist=5)
    top = np.argsort(-counts, kind="stable")[:5]
    np.testing.assert_array_equal(h.parent[top], np.arange(5))  # most frequent first
    assert all(np.sum(h.parent == c) == 1 for c in range(5))
    rest = np.setdiff1d(np.arange(200), top)
    plain = ClassHierarchy.from_counts(counts[rest], 8)
    np.testing.assert_array_equal(h.parent[rest], 5 + plain.parent)
    assert h.num_classes == 5 + plain.num_classes


@pytest.mark.parametrize("shortlist", [-1, 10, 2.0, True, "3"])
def test_shortlist_out_of_range_is_one_line(shortlist):
    with pytest.raises(HierarchyError, match="shortlist must be an integer in \\[0, 9\\]"):
        ClassHierarchy.from_counts(np.arange(1, 11), 3, shortlist=shortlist)
