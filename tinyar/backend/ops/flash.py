"""Memory-efficient ("flash") causal attention over stacks of heads.

Shapes. ``q`` is (S, Tq, D), ``k`` and ``v`` are (S, Tk, D), with S the stacked
(batch x heads) axis and Tq <= Tk. The mask is causal with an offset: query i
sits at absolute position i + (Tk - Tq), so it attends keys j <= i + Tk - Tq
(Tq == Tk is the usual causal mask; Tq < Tk is decoding the last Tq tokens
after a cache of Tk - Tq).

Forward, for each head s and query i, over the allowed keys j:

    s_ij  = scale * q_i . k_j
    lse_i = log sum_j exp(s_ij)
    P_ij  = exp(s_ij - lse_i)                    (the softmax)
    o_i   = sum_j P_ij v_j

Backward, with dO = grad and D_i = dO_i . o_i:

    dP_ij = dO_i . v_j
    dS_ij = P_ij (dP_ij - D_i)
    dq_i  = scale * sum_j dS_ij k_j
    dk_j  = scale * sum_i dS_ij q_i
    dv_j  = sum_i P_ij dO_i

The references below build the whole (Tq, Tk) matrix; the kernels never do
(they walk key tiles with an online softmax and recompute P from ``lse`` in the
backward), which is the point of the op.
"""
import numpy as np

from . import op


def causal_mask(tq, tk):
    """(Tq, Tk) booleans: True where query i may attend key j (j <= i + Tk - Tq)."""
    return np.arange(tk)[None, :] <= np.arange(tq)[:, None] + (tk - tq)


def _scores(q, k, scale):
    s = scale * np.einsum("sid,sjd->sij", q, k)
    return np.where(causal_mask(q.shape[1], k.shape[1]), s, -np.inf)


def _qkv(rng, dtype, s=2, tq=5, tk=7, d=3):
    # Tq < Tk exercises the offset; 7 keys cross the simulator's 4-key tiles
    return dict(q=rng.standard_normal((s, tq, d)).astype(dtype),
                k=rng.standard_normal((s, tk, d)).astype(dtype),
                v=rng.standard_normal((s, tk, d)).astype(dtype), scale=0.7)


@op("q: (S, Tq, D); k, v: (S, Tk, D), Tq <= Tk; out: (S, Tq, D) -> (o, lse: (S, Tq))",
    example=_qkv, rtol32=1e-4, atol32=1e-5)
def flash_attention_forward(q, k, v, scale, out=None):
    """(o, lse): o = softmax(scale q k^T, causal with offset Tk - Tq) v, lse its log-normaliser."""
    s = _scores(q, k, scale)
    m = s.max(axis=-1, keepdims=True)
    lse = m + np.log(np.exp(s - m).sum(axis=-1, keepdims=True))
    p = np.exp(s - lse)
    return np.einsum("sij,sjd->sid", p, v).astype(q.dtype), lse[..., 0].astype(q.dtype)


def _backward_example(rng, dtype):
    args = _qkv(rng, dtype)
    wide = {k: v.astype(np.float64) for k, v in args.items() if k != "scale"}
    o, lse = flash_attention_forward(scale=args["scale"], **wide)
    return dict(grad=rng.standard_normal(o.shape).astype(dtype), o=o.astype(dtype),
                lse=lse.astype(dtype), **args)


@op("grad, q, o: (S, Tq, D); k, v: (S, Tk, D); lse: (S, Tq); out_q, out_k, out_v: like q, k, v "
    "-> (dq, dk, dv)", example=_backward_example, rtol32=1e-4, atol32=1e-5)
def flash_attention_backward(grad, q, k, v, o, lse, scale, out_q=None, out_k=None, out_v=None):
    """(dq, dk, dv) of flash_attention_forward, with P recomputed from q, k and lse."""
    p = np.exp(_scores(q, k, scale) - lse[..., None])  # masked entries: exp(-inf) = 0
    d = (grad * o).sum(axis=-1, keepdims=True)
    ds = p * (np.einsum("sid,sjd->sij", grad, v) - d)
    dq = scale * np.einsum("sij,sjd->sid", ds, k)
    dk = scale * np.einsum("sij,sid->sjd", ds, q)
    dv = np.einsum("sij,sid->sjd", p, grad)
    return dq.astype(q.dtype), dk.astype(q.dtype), dv.astype(q.dtype)
