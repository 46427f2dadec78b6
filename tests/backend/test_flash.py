"""Flash attention against naive attention, on shapes that cross the kernels' tiles.

The naive path builds the whole (Tq, Tk) matrix: P = softmax(scale q k^T + mask),
o = P v, and its backward is the chain rule through the softmax written plainly
(dP = dO v^T, dS = P (dP - rowsum(dP P))), not the D_i = dO_i . o_i shortcut the
flash kernels use, so the two agree only if both are right.
"""
import numpy as np
import pytest

# CPU tiles: 32 queries x 64 keys; simulated CUDA tiles: 4 x 4 (so small shapes there)
CPU_SHAPES = [(1, 1, 1, 1), (2, 5, 5, 3), (3, 33, 33, 4), (2, 70, 131, 5), (2, 64, 64, 8),
              (1, 1, 100, 2)]
CUDA_SHAPES = [(1, 1, 1, 1), (2, 5, 5, 3), (2, 6, 9, 4), (3, 9, 9, 2), (1, 1, 7, 2)]


def naive_attention(q, k, v, scale):
    tq, tk = q.shape[1], k.shape[1]
    allowed = np.arange(tk)[None, :] <= np.arange(tq)[:, None] + (tk - tq)
    s = np.where(allowed, scale * q @ k.transpose(0, 2, 1), -np.inf)
    p = np.exp(s - s.max(axis=-1, keepdims=True))
    p /= p.sum(axis=-1, keepdims=True)
    lse = np.log(np.where(allowed, np.exp(scale * q @ k.transpose(0, 2, 1)), 0).sum(axis=-1))
    return p @ v, p, lse


def naive_attention_backward(grad, q, k, v, p, scale):
    dp = grad @ v.transpose(0, 2, 1)
    ds = p * (dp - (dp * p).sum(axis=-1, keepdims=True))  # softmax backward, row by row
    return scale * ds @ k, scale * ds.transpose(0, 2, 1) @ q, p.transpose(0, 2, 1) @ grad


def _shapes(backend):
    return CPU_SHAPES if backend.name == "cpu" else CUDA_SHAPES


def _inputs(shape, dtype=np.float64, seed=0):
    s, tq, tk, d = shape
    rng = np.random.default_rng(seed)
    q, k, v = (rng.standard_normal((s, t, d)).astype(dtype) for t in (tq, tk, tk))
    return q, k, v, rng.standard_normal((s, tq, d)).astype(dtype), 1 / np.sqrt(d)


def test_flash_equals_naive_attention_float64(backend):
    for shape in _shapes(backend):
        q, k, v, grad, scale = _inputs(shape)
        o_ref, p, lse_ref = naive_attention(q, k, v, scale)
        dq_ref, dk_ref, dv_ref = naive_attention_backward(grad, q, k, v, p, scale)
        B = backend
        qd, kd, vd = (B.asarray(a) for a in (q, k, v))
        o, lse = B.flash_attention_forward(qd, kd, vd, scale)
        np.testing.assert_allclose(B.to_host(o), o_ref, rtol=1e-12, atol=1e-13, err_msg=str(shape))
        np.testing.assert_allclose(B.to_host(lse), lse_ref, rtol=1e-12, atol=1e-13)
        grads = B.flash_attention_backward(B.asarray(grad), qd, kd, vd, o, lse, scale)
        for name, g, e in zip(("dq", "dk", "dv"), grads, (dq_ref, dk_ref, dv_ref)):
            np.testing.assert_allclose(B.to_host(g), e, rtol=1e-11, atol=1e-12,
                                       err_msg=f"{name} {shape}")


def test_flash_float32_is_close_to_float64(backend):
    shape = (2, 40, 70, 4) if backend.name == "cpu" else (2, 6, 9, 3)
    q, k, v, grad, scale = _inputs(shape, seed=3)
    o_ref, p, lse_ref = naive_attention(q, k, v, scale)
    grads_ref = naive_attention_backward(grad, q, k, v, p, scale)
    B = backend
    args = [B.asarray(a.astype(np.float32)) for a in (q, k, v)]
    o, lse = B.flash_attention_forward(*args, scale)
    assert B.to_host(o).dtype == np.float32 and B.to_host(lse).dtype == np.float32
    np.testing.assert_allclose(B.to_host(o), o_ref, rtol=1e-4, atol=1e-5)
    grads = B.flash_attention_backward(B.asarray(grad.astype(np.float32)), *args, o, lse, scale)
    for g, e in zip(grads, grads_ref):
        np.testing.assert_allclose(B.to_host(g), e, rtol=1e-4, atol=1e-5)


def test_large_scores_do_not_overflow(backend):
    # scores near 1e3: exp would overflow without the running max
    q, k, v, grad, _ = _inputs((1, 7, 9, 2), seed=5)
    scale = 300.0
    o_ref, p, lse_ref = naive_attention(q, k, v, scale)
    B = backend
    o, lse = B.flash_attention_forward(B.asarray(q), B.asarray(k), B.asarray(v), scale)
    np.testing.assert_allclose(B.to_host(o), o_ref, rtol=1e-10, atol=1e-12)
    assert np.isfinite(B.to_host(lse)).all()


def test_outputs_are_written_into_out_arrays(backend):
    B = backend
    q, k, v, grad, scale = (B.asarray(a) if isinstance(a, np.ndarray) else a
                            for a in _inputs((2, 3, 5, 2), seed=1))
    out = B.zeros((2, 3, 2), np.float64)
    o, lse = B.flash_attention_forward(q, k, v, scale, out=out)
    assert o is out
    outs = B.zeros((2, 3, 2), np.float64), B.zeros((2, 5, 2), np.float64), \
        B.zeros((2, 5, 2), np.float64)
    got = B.flash_attention_backward(grad, q, k, v, o, lse, scale, out_q=outs[0],
                                     out_k=outs[1], out_v=outs[2])
    assert all(g is e for g, e in zip(got, outs))


def test_more_queries_than_keys_is_refused(backend):
    B = backend
    with pytest.raises(ValueError, match="Tq <= Tk"):
        B.flash_attention_forward(B.zeros((1, 4, 2)), B.zeros((1, 3, 2)), B.zeros((1, 3, 2)), 1.0)
