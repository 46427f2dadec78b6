"""Embedding: gather forward, scatter-add backward, padding row, PyTorch twin, errors."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import tinyar
from tinyar.errors import DTypeError, ShapeError, TargetError
from tinyar.nn.embedding import Embedding
from tests.helpers import assert_gradcheck, compare_with_torch, torch_or_skip

SETTINGS = settings(max_examples=10, deadline=None)


@SETTINGS
@given(vocab=st.integers(2, 5), dim=st.integers(1, 3),
       shape=st.lists(st.integers(1, 3), min_size=1, max_size=3),
       padding=st.booleans(), seed=st.integers(0, 99))
def test_embedding_gradcheck(vocab, dim, shape, padding, seed):
    rng = np.random.default_rng([seed, 1])  # a stream apart from gradcheck's own (seed + 1)
    # The padding row's gradient is zero by design, not by calculus: keep it out of the
    # indices here (its behaviour is checked exactly below and against torch).
    # A small vocabulary and several positions: indices repeat.
    indices = rng.integers(0, vocab - 1 if padding else vocab, size=shape)
    layer = Embedding(vocab, dim, padding_idx=vocab - 1 if padding else None)
    assert_gradcheck(layer, indices)


def test_repeated_indices_add_up_and_padding_row_gets_nothing(rng):
    layer = Embedding(5, 3, padding_idx=4, dtype=np.float64)
    indices = np.array([[1, 1, 4], [1, 2, 4]])
    g = rng.standard_normal((2, 3, 3))
    layer(indices)
    assert layer.backward(g) is None  # indices have no gradient
    expected = np.zeros((5, 3))
    expected[1] = g[0, 0] + g[0, 1] + g[1, 0]
    expected[2] = g[1, 1]
    np.testing.assert_allclose(layer.weight.grad, expected)
    layer(indices)
    layer.backward(g)  # accumulates
    np.testing.assert_allclose(layer.weight.grad, 2 * expected)


@pytest.mark.torch
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("padding_idx", [None, 2, -1])
@pytest.mark.parametrize("shape", [(7,), (3, 5), (2, 2, 3)])
def test_embedding_matches_torch(shape, padding_idx, dtype, rng):
    torch = torch_or_skip()
    ours = Embedding(6, 4, padding_idx=padding_idx)
    theirs = torch.nn.Embedding(6, 4, padding_idx=padding_idx)
    indices = rng.integers(0, 6, size=shape)
    indices.flat[:3] = 5  # the last row (padding_idx=-1) certainly used, several times
    y, _ = compare_with_torch(ours, theirs, indices, dtype=dtype)
    assert y.shape == shape + (4,) and y.dtype == dtype
    if padding_idx is not None:
        assert not ours.weight.grad[padding_idx].any()
        assert ours.weight.grad.any()


@pytest.mark.parametrize("dtype", [np.int8, np.uint8, np.int16, np.int32, np.uint32, np.int64,
                                   np.uint64])
def test_any_integer_dtype_and_strided_indices(dtype, rng):
    layer = Embedding(7, 3, dtype=np.float64)
    base = rng.integers(0, 7, size=(4, 6))
    indices = base.astype(dtype)[:, ::2]  # not contiguous
    y = layer(indices)
    np.testing.assert_array_equal(y, layer.weight.data[base[:, ::2]])
    g = rng.standard_normal(y.shape)
    layer.backward(g)
    expected = np.zeros((7, 3))
    np.add.at(expected, base[:, ::2], g)
    np.testing.assert_allclose(layer.weight.grad, expected)


def test_scalar_index_gives_one_vector():
    layer = Embedding(4, 3)
    y = layer(np.array(2))
    assert y.shape == (3,)
    np.testing.assert_array_equal(y, layer.weight.data[2])


def test_init_is_standard_normal_with_zero_padding_row_and_repeatable():
    tinyar.manual_seed(3)
    layer = Embedding(400, 50, padding_idx=7)
    w = layer.weight.data
    assert w.dtype == np.float32 and not w[7].any()
    rest = np.delete(w, 7, axis=0)
    assert abs(rest.mean()) < 0.02 and abs(rest.std() - 1) < 0.02
    tinyar.manual_seed(3)
    np.testing.assert_array_equal(Embedding(400, 50, padding_idx=7).weight.data, w)


def test_padding_idx_counts_from_the_end():
    assert Embedding(5, 2, padding_idx=-2).padding_idx == 3


@pytest.mark.torch
@pytest.mark.parametrize("padding_idx", [None, 0])
def test_state_dict_names_match_torch(padding_idx):
    torch = torch_or_skip()
    theirs = torch.nn.Embedding(5, 3, padding_idx=padding_idx).state_dict()
    ours = Embedding(5, 3, padding_idx=padding_idx).state_dict()
    assert list(ours) == list(theirs)
    assert ours["weight"].shape == tuple(theirs["weight"].shape)


@pytest.mark.parametrize("indices", [np.zeros((2, 3), np.float32), np.zeros(3, bool), [1, 2]])
def test_rejects_non_integer_indices(indices):
    with pytest.raises(DTypeError, match=r"Embedding\(10, 4\): expected integer indices"):
        Embedding(10, 4)(indices)


@pytest.mark.parametrize("bad", [10, 12, -1])
def test_rejects_indices_out_of_range(bad):
    indices = np.array([[0, 3], [bad, 9]])
    with pytest.raises(TargetError, match=rf"Embedding\(10, 4\): index {bad} is outside \[0, 10\)"):
        Embedding(10, 4)(indices)


def test_rejects_bad_padding_idx():
    with pytest.raises(ValueError, match=r"padding_idx must be an integer in \[-5, 4\], got 5"):
        Embedding(5, 2, padding_idx=5)
    with pytest.raises(ValueError, match=r"padding_idx .*got -6"):
        Embedding(5, 2, padding_idx=-6)


def test_rejects_wrong_grad_shape():
    layer = Embedding(10, 4)
    layer(np.array([1, 2, 3]))
    with pytest.raises(ShapeError, match=r"Embedding\(10, 4\).*\(3, 4\)"):
        layer.backward(np.zeros((3, 5), np.float32))


def test_op_refuses_out_of_range_index(backend):
    # the layer checks first; the kernel must still never write outside grad_weight
    with pytest.raises(IndexError):
        backend.embedding_backward(np.ones((1, 2)), np.array([4]), None, np.zeros((4, 2)))
    with pytest.raises(IndexError):
        backend.embedding_forward(np.ones((4, 2)), np.array([-1]))
