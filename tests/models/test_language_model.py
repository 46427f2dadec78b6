import numpy as np
import pytest

import tinyar
from tinyar.data.hierarchy import ClassHierarchy
from tinyar.errors import ShapeError
from tinyar.models import AutoregressiveLM
from tinyar.nn import Module
from tests.helpers import assert_gradcheck

V = 11


def hierarchy():
    return ClassHierarchy.from_counts(np.arange(1, V + 1), 3)


class LossOf(Module):
    """Wraps the LM as a loss module for gradcheck: (ids, targets) -> loss."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, ids, targets):
        return self.model.loss(ids, targets)[0]

    def backward(self, grad=1.0):
        self.model.backward(grad)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("head", ["flat", "multilevel"])
def test_gradcheck_whole_model(cell, head):
    model = AutoregressiveLM(V, 4, 5, 2, cell, head=head, hierarchy=hierarchy())
    rng = np.random.default_rng(0)
    ids, targets = rng.integers(0, V, (2, 3)), rng.integers(0, V, (2, 3))
    assert_gradcheck(LossOf(model), ids, targets)


def test_tied_weights_share_one_parameter_and_pass_gradcheck():
    model = AutoregressiveLM(V, 6, 6, 1, "lstm", head="flat", tie_weights=True)
    assert model.head.linear.weight is model.embedding.weight
    names = [n for n, _ in model.named_parameters()]
    assert "embedding.weight" in names and "decoder.weight" not in names
    rng = np.random.default_rng(1)
    assert_gradcheck(LossOf(model), rng.integers(0, V, (2, 3)), rng.integers(0, V, (2, 3)))
    with pytest.raises(ValueError, match="tie_weights needs embed_dim == hidden_size"):
        AutoregressiveLM(V, 4, 6, 1, head="flat", tie_weights=True)


def test_multilevel_head_needs_a_matching_hierarchy():
    with pytest.raises(ValueError, match="needs a ClassHierarchy"):
        AutoregressiveLM(V, head="multilevel")
    with pytest.raises(ValueError, match="hierarchy has 11 labels but the vocabulary 12"):
        AutoregressiveLM(12, hierarchy=hierarchy())


def test_state_carries_across_batches():
    """Feeding a sequence in two halves with the state carried equals feeding it whole."""
    model = AutoregressiveLM(V, 4, 5, 2, "lstm", head="flat").double()
    model.eval()
    ids = np.random.default_rng(2).integers(0, V, (3, 8))
    whole, _ = model.features(ids)
    first, state = model.features(ids[:, :4])
    second, _ = model.features(ids[:, 4:], state)
    np.testing.assert_allclose(np.concatenate([first, second], axis=1), whole, rtol=1e-12)


def test_training_reduces_the_loss_on_a_repeating_pattern():
    tinyar.manual_seed(0)
    model = AutoregressiveLM(V, 8, 16, 1, "lstm", head="multilevel", hierarchy=hierarchy())
    opt = tinyar.optim.Adam(model.parameters(), lr=0.03)
    stream = np.tile(np.arange(V), 40)
    x, y = stream[:-1].reshape(1, -1)[:, :400].reshape(4, 100), stream[1:401].reshape(4, 100)
    first = None
    for _ in range(60):
        loss, _ = model.loss(x, y)
        first = first if first is not None else loss
        model.zero_grad()
        model.backward()
        opt.step()
    assert loss < 0.2 < first
    generated = model.generate([0, 1, 2], 8, temperature=0)
    np.testing.assert_array_equal(generated, np.arange(11) % V)


def test_generate_with_top_k_and_bad_prompt():
    model = AutoregressiveLM(V, 4, 5, 1, head="flat")
    out = model.generate([1], 5, temperature=1.0, top_k=3)
    assert out.shape == (6,) and out[0] == 1 and ((0 <= out) & (out < V)).all()
    with pytest.raises(ShapeError, match="at least one token"):
        model.generate([], 3)


def test_evaluate_is_the_mean_loss_in_nats():
    model = AutoregressiveLM(V, 4, 5, 1, head="flat")
    ids = np.random.default_rng(3).integers(0, V, 500)
    nats = model.evaluate(ids, batch_size=4, bptt=10)
    assert 0.5 * np.log(V) < nats < 2 * np.log(V)


def test_bad_shapes_are_explained():
    model = AutoregressiveLM(V, 4, 5, 1, head="flat")
    with pytest.raises(ShapeError, match=r"expected ids \(N, T\), got \(5,\)"):
        model.loss(np.zeros(5, np.int64), np.zeros(5, np.int64))
    with pytest.raises(ShapeError, match="expected targets of the shape of ids"):
        model.loss(np.zeros((2, 5), np.int64), np.zeros((2, 4), np.int64))


def test_conv_backbone_gradcheck_and_causality():
    model = AutoregressiveLM(V, 4, 5, 3, backbone="conv", head="multilevel", hierarchy=hierarchy())
    rng = np.random.default_rng(4)
    assert_gradcheck(LossOf(model), rng.integers(0, V, (2, 5)), rng.integers(0, V, (2, 5)))
    assert model.config()["backbone"] == "conv"
    with pytest.raises(ValueError, match="backbone must be one of 'rnn', 'conv', 'transformer'"):
        AutoregressiveLM(V, backbone="mlp", head="flat")


@pytest.mark.parametrize("head", ["flat", "multilevel"])
def test_a_checkpoint_with_the_names_of_older_tinyar_loads(tmp_path, head):
    """Before heads had one interface the recurrent stack was ``rnn`` and the flat head a
    Linear called ``decoder``: such checkpoints load by name (``Module.RENAMED``)."""
    import zipfile
    from tinyar import checkpoint
    kwargs = dict(head=head, hierarchy=hierarchy() if head == "multilevel" else None)
    model = AutoregressiveLM(V, 4, 6, 1, **kwargs)
    path = checkpoint.save(model, tmp_path / "new.npz")
    old = tmp_path / "old.npz"
    renames = {"model/backbone.": "model/rnn.", "model/head.linear.": "model/decoder."}
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(old, "w") as dst:
        for info in src.infolist():
            name = info.filename
            for new, legacy in renames.items():
                name = name.replace(new, legacy)
            dst.writestr(name, src.read(info))
    assert any(n.startswith("model/rnn.") for n in zipfile.ZipFile(old).namelist())
    loaded = AutoregressiveLM(V, 4, 6, 1, **kwargs)
    checkpoint.load(loaded, old)
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        np.testing.assert_array_equal(a, b, err_msg=name)
    state = {k.replace("backbone.", "rnn.").replace("head.linear.", "decoder."): v
             for k, v in model.state_dict().items()}
    AutoregressiveLM(V, 4, 6, 1, **kwargs).load_state_dict(state)  # in memory too
