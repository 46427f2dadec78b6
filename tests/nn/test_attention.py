"""CausalSelfAttention: gradient checks, PyTorch twins, the flash path, the KV cache."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import tinyar
from tinyar.errors import ConfigError, ShapeError, TinyarError
from tinyar.nn.attention import CausalSelfAttention, KVCache
from tests.helpers import TOL, assert_gradcheck, compare_with_torch, load_into_torch, \
    torch_or_skip

SETTINGS = settings(max_examples=8, deadline=None)
DTYPES = [np.float64, np.float32]


def _randomize(layer, rng, scale=0.5):
    """Every parameter random (the biases start at zero), so that each one's role shows."""
    for p in layer.parameters():
        p.data[...] = rng.standard_normal(p.shape) * scale
    return layer


def _causal_mask(torch, steps):
    """torch's boolean attn_mask: True where a query may *not* look (the future)."""
    return torch.ones(steps, steps, dtype=torch.bool).triu(1)


# --- gradient checks -----------------------------------------------------------------------
@SETTINGS
@given(n=st.integers(1, 2), steps=st.integers(1, 5), heads=st.integers(1, 2),
       head_dim=st.integers(1, 3), bias=st.booleans(), flash=st.booleans(),
       seed=st.integers(0, 99))
def test_gradcheck(n, steps, heads, head_dim, bias, flash, seed):
    rng = np.random.default_rng([seed, 1])
    e = heads * head_dim
    layer = _randomize(CausalSelfAttention(e, heads, bias=bias, flash_above=0 if flash else None),
                       rng)
    assert_gradcheck(layer, rng.standard_normal((n, steps, e)))


def test_gradcheck_with_attention_dropout(rng):
    """gradcheck reseeds before every forward, so each forward drops the same weights."""
    layer = _randomize(CausalSelfAttention(4, 2, dropout=0.3), rng)
    assert_gradcheck(layer, rng.standard_normal((2, 5, 4)))


# --- PyTorch twins -------------------------------------------------------------------------
def _sdpa_twin(torch, embed_dim, num_heads, bias):
    """The same projections around F.scaled_dot_product_attention(is_causal=True)."""
    F = torch.nn.functional

    class Twin(torch.nn.Module):
        def __init__(self):
            super().__init__()
            e = embed_dim
            self.in_proj_weight = torch.nn.Parameter(torch.empty(3 * e, e))
            self.in_proj_bias = torch.nn.Parameter(torch.empty(3 * e)) if bias else None
            self.out_proj = torch.nn.Linear(e, e, bias=bias)

        def forward(self, x):
            n, t, e = x.shape
            qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)
            q, k, v = (part.reshape(n, t, num_heads, -1).transpose(1, 2)
                       for part in qkv.split(e, dim=-1))
            o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            return self.out_proj(o.transpose(1, 2).reshape(n, t, e))

    return Twin()


def _mha_twin(torch, embed_dim, num_heads, bias):
    """torch.nn.MultiheadAttention(batch_first=True) with a causal attn_mask."""

    class Twin(torch.nn.MultiheadAttention):
        def forward(self, x):
            mask = _causal_mask(torch, x.shape[1])
            return super().forward(x, x, x, attn_mask=mask, need_weights=False)[0]

    return Twin(embed_dim, num_heads, bias=bias, batch_first=True)


@pytest.mark.torch
@pytest.mark.parametrize("twin", ["sdpa", "mha"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n, steps, heads, head_dim, bias", [
    (2, 5, 2, 3, True), (1, 7, 1, 4, True), (3, 4, 4, 2, False), (2, 1, 2, 2, True)])
def test_matches_torch(twin, dtype, n, steps, heads, head_dim, bias, rng, monkeypatch):
    torch = torch_or_skip()
    # the key bias's gradient is exactly 0 in exact arithmetic (a softmax row does not change
    # when one constant is added to all its scores), so both sides hold float32 rounding
    # noise there, ~1e-6: no relative tolerance can compare noise with noise
    import tests.helpers as helpers
    monkeypatch.setitem(helpers.TOL, np.float32, dict(rtol=1e-5, atol=1e-5))
    e = heads * head_dim
    # weights of the size training gives (0.3): float32 results then stay within rtol 1e-5
    # of torch's whatever order the BLAS threads sum in
    ours = _randomize(CausalSelfAttention(e, heads, bias=bias), rng, scale=0.3)
    theirs = (_sdpa_twin if twin == "sdpa" else _mha_twin)(torch, e, heads, bias)
    compare_with_torch(ours, theirs, rng.standard_normal((n, steps, e)), dtype=dtype)


@pytest.mark.torch
def test_state_dict_names_are_torch_mha_names():
    torch = torch_or_skip()
    for bias in (True, False):
        ours = CausalSelfAttention(6, 3, bias=bias)
        theirs = torch.nn.MultiheadAttention(6, 3, bias=bias, batch_first=True)
        assert list(ours.state_dict()) == list(theirs.state_dict())
        for name, value in theirs.state_dict().items():
            assert ours.state_dict()[name].shape == tuple(value.shape), name


def test_initialisation_as_torch_mha():
    layer = CausalSelfAttention(8, 2)
    bound = np.sqrt(6.0 / (4 * 8))  # xavier_uniform on (3E, E)
    assert np.abs(layer.in_proj_weight.data).max() <= bound
    assert not layer.in_proj_bias.data.any() and not layer.out_proj.bias.data.any()


# --- the flash path --------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n, steps, heads, head_dim", [(2, 9, 2, 3), (1, 17, 1, 4)])
def test_flash_path_equals_the_plain_path(dtype, n, steps, heads, head_dim, rng):
    e = heads * head_dim
    plain = _randomize(CausalSelfAttention(e, heads, dtype=dtype), rng)
    flash = CausalSelfAttention(e, heads, dtype=dtype, flash_above=steps - 1)
    flash.load_state_dict(plain.state_dict())
    x = rng.standard_normal((n, steps, e)).astype(dtype)
    g = rng.standard_normal((n, steps, e)).astype(dtype)
    y_plain, y_flash = plain(x), flash(x)
    assert flash._flash and not plain._flash
    # two float32 summation orders (block by block, row by row) differ by a few ulps of the
    # largest terms: atol 1e-5 there; float64 as strict as everywhere
    tol = TOL[dtype] if dtype == np.float64 else dict(rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(y_flash, y_plain, **tol)
    np.testing.assert_allclose(flash.backward(g), plain.backward(g), **tol)
    for (name, a), (_, b) in zip(flash.named_parameters(), plain.named_parameters()):
        np.testing.assert_allclose(a.grad, b.grad, err_msg=name, **tol)


def test_flash_only_without_dropout_or_heat_maps(rng):
    layer = CausalSelfAttention(4, 2, dropout=0.5, flash_above=2)
    x = rng.standard_normal((1, 5, 4)).astype(np.float32)
    layer(x)
    assert not layer._flash  # dropping attention weights needs P
    layer.eval()(x)
    assert layer._flash      # evaluation drops nothing
    layer.keep_attention = True
    layer(x)
    assert not layer._flash and layer.last_attention.shape == (1, 2, 5, 5)
    layer(x[:, :2])
    assert not layer._flash  # short: the plain path
    assert CausalSelfAttention(4, 2).flash_above is None  # the module constant decides


# --- heat maps ---------------------------------------------------------------------------
def test_keep_attention_is_the_causal_softmax(rng):
    layer = _randomize(CausalSelfAttention(6, 3, dtype=np.float64), rng)
    layer.keep_attention = True
    x = rng.standard_normal((2, 4, 6))
    layer(x)
    p = layer.last_attention
    assert isinstance(p, np.ndarray) and p.shape == (2, 3, 4, 4)
    np.testing.assert_allclose(p.sum(-1), 1.0, rtol=1e-12)
    assert not np.triu(p, 1).any()
    # against the definition, head by head
    qkv = x @ layer.in_proj_weight.data.T + layer.in_proj_bias.data
    q, k = qkv[..., :6].reshape(2, 4, 3, 2), qkv[..., 6:12].reshape(2, 4, 3, 2)
    s = np.einsum("nthd,nuhd->nhtu", q, k) / np.sqrt(2)
    s = np.where(np.triu(np.ones((4, 4), bool), 1), -np.inf, s)
    expected = np.exp(s - s.max(-1, keepdims=True))
    np.testing.assert_allclose(p, expected / expected.sum(-1, keepdims=True), rtol=1e-10)


@pytest.mark.torch
def test_keep_attention_matches_torch_weights(rng):
    torch = torch_or_skip()
    ours = _randomize(CausalSelfAttention(4, 2, dtype=np.float64), rng)
    theirs = torch.nn.MultiheadAttention(4, 2, batch_first=True).double()
    load_into_torch(ours, theirs)
    x = rng.standard_normal((2, 5, 4))
    ours.keep_attention = True
    ours(x)
    t = torch.from_numpy(x)
    _, weights = theirs(t, t, t, attn_mask=_causal_mask(torch, 5), average_attn_weights=False)
    np.testing.assert_allclose(ours.last_attention, weights.detach().numpy(), rtol=1e-10)


# --- the KV cache ------------------------------------------------------------------------
@pytest.mark.parametrize("chunks", [[1] * 6, [3, 1, 2], [2, 4], [6]])
@pytest.mark.parametrize("bias, flash_above", [(True, None), (False, None), (True, 0)])
def test_cached_forward_equals_the_full_causal_forward(chunks, bias, flash_above, rng):
    """(flash_above=0: the flash ops, with the queries offset behind the cached keys)"""
    layer = _randomize(CausalSelfAttention(6, 2, bias=bias, dtype=np.float64,
                                           flash_above=flash_above), rng).eval()
    x = rng.standard_normal((2, sum(chunks), 6))
    full = layer(x)
    cache, start, pieces = KVCache(), 0, []
    for size in chunks:
        y, new = layer(x[:, start:start + size], cache)
        assert cache.length == start and new.length == start + size  # caches are values
        assert new.k.shape == (2 * 2, start + size, 3)
        pieces.append(y)
        cache, start = new, start + size
    np.testing.assert_allclose(np.concatenate(pieces, axis=1), full, rtol=1e-12, atol=1e-13)


def test_one_cache_two_continuations(rng):
    layer = _randomize(CausalSelfAttention(4, 2, dtype=np.float64), rng).eval()
    x = rng.standard_normal((1, 5, 4))
    _, cache = layer(x[:, :3], KVCache())
    a, _ = layer(x[:, 3:4], cache)
    b, _ = layer(x[:, 4:5], cache)
    np.testing.assert_allclose(a, layer(x[:, :4])[:, 3:], rtol=1e-12)
    np.testing.assert_allclose(b, layer(x[:, [0, 1, 2, 4]])[:, 3:], rtol=1e-12)


def test_backward_after_an_empty_cache_works_and_after_a_prefix_is_refused(rng):
    layer = _randomize(CausalSelfAttention(4, 2, dtype=np.float64), rng).eval()
    x = rng.standard_normal((1, 3, 4))
    y, cache = layer(x, KVCache())
    dx = layer.backward(np.ones_like(y))
    layer(x)
    np.testing.assert_allclose(dx, layer.backward(np.ones_like(y)), rtol=1e-12)
    layer(x[:, :1], cache)
    with pytest.raises(TinyarError, match="continued a KV cache"):
        layer.backward(np.ones((1, 1, 4)))


# --- dropout -----------------------------------------------------------------------------
def test_dropout_is_repeatable_and_off_in_evaluation(rng):
    layer = _randomize(CausalSelfAttention(4, 2, dropout=0.5, dtype=np.float64), rng)
    x = rng.standard_normal((2, 6, 4))
    tinyar.manual_seed(3)
    a = layer(x)
    tinyar.manual_seed(3)
    b = layer(x)
    np.testing.assert_array_equal(a, b)
    c = layer(x)  # the next mask
    assert np.abs(c - a).max() > 1e-6
    evaluated = layer.eval()(x)
    assert np.abs(evaluated - a).max() > 1e-6
    np.testing.assert_array_equal(evaluated, layer(x))


# --- errors ------------------------------------------------------------------------------
def test_errors():
    with pytest.raises(ConfigError, match="num_heads must divide embed_dim 6, got 4"):
        CausalSelfAttention(6, 4)
    layer = CausalSelfAttention(4, 2)
    with pytest.raises(ShapeError, match=r"CausalSelfAttention.*expected input \(N, T, 4\)"):
        layer(np.zeros((2, 3, 5), np.float32))
    with pytest.raises(ShapeError, match=r"expected input \(N, T, 4\)"):
        layer(np.zeros((3, 4), np.float32))
    with pytest.raises(TinyarError, match="KV cache is for generation; call .eval"):
        layer(np.zeros((1, 2, 4), np.float32), KVCache())
    layer.eval()
    _, cache = layer(np.zeros((1, 2, 4), np.float32), KVCache())
    with pytest.raises(ShapeError, match=r"cache.k of shape \(4, 2, 2\)"):
        layer(np.zeros((2, 1, 4), np.float32), cache)
    with pytest.raises(TypeError, match="cache must be a KVCache"):
        layer(np.zeros((1, 2, 4), np.float32), (cache.k, cache.v))
