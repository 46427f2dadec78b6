"""The classifiers' predictions per level: each level's own prediction, so that the
consistency rate (predicted coarse class = parent of the predicted fine label) means
something."""
import numpy as np

from tinyar.data.hierarchy import ClassHierarchy
from tinyar.models.classifiers import CNNClassifier, RowRNNClassifier
from tinyar.nn import FlatSoftmaxHead
from tinyar.train.metrics import hierarchical_report

HIERARCHY = ClassHierarchy(np.array([0, 0, 0, 1, 1]))  # labels 0-2 in class 0, 3-4 in 1


def test_flat_head_coarse_prediction_is_the_class_of_largest_total_probability():
    # label 3 alone is the most likely, but class 0's three labels together are likelier
    logits = np.log(np.array([[0.2, 0.2, 0.2, 0.3, 0.1],
                              [0.05, 0.05, 0.1, 0.5, 0.3]]))
    head = FlatSoftmaxHead(5, 5, hierarchy=HIERARCHY, dtype=np.float64)
    head.linear.weight.data[:] = np.eye(5)  # the logits are the features themselves
    head.linear.bias.data[:] = 0
    coarse, fine = head.predict_levels(logits)
    np.testing.assert_array_equal(fine, [3, 3])
    np.testing.assert_array_equal(coarse, [0, 1])
    report = hierarchical_report(HIERARCHY, np.array([3, 3]), fine, coarse)
    assert report["consistency"] == 0.5


def test_classifiers_predict_each_level_on_its_own():
    rng = np.random.default_rng(0)
    x = rng.random((6, 1, 12, 12)).astype(np.float32)
    for model in (CNNClassifier(HIERARCHY, (1, 12, 12), head="flat"),
                  CNNClassifier(HIERARCHY, (1, 12, 12), head="multilevel"),
                  RowRNNClassifier(HIERARCHY, (1, 12, 12), hidden=4, head="multilevel")):
        coarse, fine = model.predict_levels(x)
        assert coarse.shape == fine.shape == (6,)
        assert coarse.dtype.kind == fine.dtype.kind == "i"
        assert coarse.max() < HIERARCHY.num_classes and fine.max() < HIERARCHY.num_labels
        _, greedy_fine = model.predict_levels(x, "greedy")
        if model.head_kind == "multilevel":  # greedy decoding stays inside the coarse class
            np.testing.assert_array_equal(coarse, HIERARCHY.parent[greedy_fine])


def test_level_probabilities_are_distributions_that_agree_with_the_predictions():
    rng = np.random.default_rng(1)
    x = rng.random((5, 1, 12, 12)).astype(np.float32)
    for head in ("flat", "multilevel"):
        model = CNNClassifier(HIERARCHY, (1, 12, 12), head=head)
        p_coarse, p_fine = model.level_probabilities(x, batch_size=2)
        assert p_coarse.shape == (5, 2) and p_fine.shape == (5, 5)
        np.testing.assert_allclose(p_coarse.sum(axis=1), 1, atol=1e-6)
        np.testing.assert_allclose(p_fine.sum(axis=1), 1, atol=1e-6)
        # the coarse probability of a class is the total of its labels' (both heads)
        np.testing.assert_allclose(p_coarse[:, 0], p_fine[:, :3].sum(axis=1), atol=1e-5)
        coarse, fine = model.predict_levels(x)
        np.testing.assert_array_equal(coarse, p_coarse.argmax(axis=1))
        np.testing.assert_array_equal(fine, p_fine.argmax(axis=1))
