"""The pieces of a GPT's attention and MLP that are not plain matrix products.

Causal self-attention over S = N * H (batch x heads) independent sequences:

    q, k, v = split_heads(x W_qkv^T, groups=3, num_heads=H)    (S, T, D) each
    A = batched_matmul(q, k, trans_b=True)                     (S, Tq, Tk) scores
    P = causal_softmax_forward(A, scale=1/sqrt(D))             masked, normalised
    O = batched_matmul(P, v)                                   (S, Tq, D)
    y = merge_heads(O[None], batch=N)                          (N, T, H * D)

Causal masking with a KV cache: the Tq queries are the *last* Tq of the Tk
positions, so query i sits at absolute position i + (Tk - Tq) and sees keys
j <= i + (Tk - Tq) (Tq == Tk in training; Tq == 1 when generating one token
after ``append_steps`` has grown the cache).

The MLP's bias + GELU is one fused op (the bias of the preceding product is
added on the way in).
"""
from math import pi, sqrt

import numpy as np

from . import op
from .elementwise import _erf


# --- batched products -----------------------------------------------------------
def _bmm_example(rng, dtype, trans_a=False, trans_b=True, accumulate=True):
    s, m, k, n = 3, 5, 7, 4
    a = rng.standard_normal((s, k, m) if trans_a else (s, m, k)).astype(dtype)
    b = rng.standard_normal((s, n, k) if trans_b else (s, k, n)).astype(dtype)
    out = rng.standard_normal((s, m, n)).astype(dtype)
    return dict(a=a, b=b, out=out, trans_a=trans_a, trans_b=trans_b, accumulate=accumulate)


@op("a: (S, M, K) or (S, K, M) if trans_a; b: (S, K, N) or (S, N, K) if trans_b; "
    "out: (S, M, N)", example=_bmm_example, inplace=("out",))
def batched_matmul(a, b, out=None, trans_a=False, trans_b=False, accumulate=False):
    """out[s] = op(a[s]) @ op(b[s]) for every s, or out[s] += ... when accumulate."""
    product = np.matmul(a.swapaxes(1, 2) if trans_a else a, b.swapaxes(1, 2) if trans_b else b)
    return out + product if accumulate else product


# --- causal softmax ---------------------------------------------------------------
def causal_mask(tq, tk):
    """(Tq, Tk) booleans: True where query i may attend key j (j <= i + Tk - Tq)."""
    return np.arange(tk)[None, :] <= np.arange(tq)[:, None] + (tk - tq)


def _scores(rng, dtype, shape=(3, 4, 6)):
    x = rng.standard_normal(shape) * 3
    x[0] += 200  # a large common offset: only a max-shifted softmax survives it
    return x.astype(dtype)


@op("scores: (S, Tq, Tk), Tq <= Tk; out: (S, Tq, Tk), may be scores",
    example=lambda rng, dtype: dict(scores=_scores(rng, dtype), scale=0.35))
def causal_softmax_forward(scores, scale, out=None):
    """P[s, i, j] = exp(z_j - m) / sum_{j' allowed} exp(z_j' - m) over the allowed
    j <= i + Tk - Tq, with z = scale * scores and m the max of the allowed z;
    exactly 0 where j is masked."""
    allowed = causal_mask(*scores.shape[1:])
    z = np.where(allowed, scale * scores, -np.inf)
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


@op("grad = dL/dP, p = P: (S, Tq, Tk); out: like p, may be grad",
    example=lambda rng, dtype: dict(
        grad=rng.standard_normal((3, 4, 6)).astype(dtype),
        p=causal_softmax_forward(_scores(rng, dtype), 0.35).astype(dtype), scale=0.35))
def causal_softmax_backward(grad, p, scale, out=None):
    """dL/dscores = scale * P * (dP - sum_j dP_j P_j); 0 where masked (there P = 0)."""
    return scale * p * (grad - (grad * p).sum(axis=-1, keepdims=True))


# --- bias + GELU ------------------------------------------------------------------
GELU_TANH_CUBIC = 0.044715
SQRT_2_OVER_PI = sqrt(2 / pi)


def _gelu_example(rng, dtype, approximate, grad=False):
    args = dict(x=rng.standard_normal((5, 6)).astype(dtype) * 2,
                bias=rng.standard_normal(6).astype(dtype), approximate=approximate)
    if grad:
        args["grad"] = rng.standard_normal((5, 6)).astype(dtype)
    return args


def _gelu_parts(u, approximate):
    """(Phi-like factor, its derivative) of GELU(u) = u * factor(u)."""
    if approximate:
        t = np.tanh(SQRT_2_OVER_PI * (u + GELU_TANH_CUBIC * u ** 3))
        du = SQRT_2_OVER_PI * (1 + 3 * GELU_TANH_CUBIC * u * u)
        return 0.5 * (1 + t), 0.5 * u * (1 - t * t) * du
    return 0.5 * (1 + _erf(u / sqrt(2))), u * np.exp(-0.5 * u * u) / sqrt(2 * pi)


# (the registry checks one example per op: forward in the tanh form, backward in the
# erf form; the other two combinations are the same code with the other scalar function)
@op("x: (M, F), bias: (F,); out: like x",
    example=lambda rng, dtype: _gelu_example(rng, dtype, approximate=True))
def bias_gelu_forward(x, bias, approximate=False, out=None):
    """y = GELU(x + bias): u Phi(u), or u (1 + tanh(sqrt(2/pi) (u + 0.044715 u^3))) / 2
    when approximate (torch's approximate="tanh")."""
    u = x + bias
    return u * _gelu_parts(u, approximate)[0]


@op("grad, x: (M, F), bias: (F,); out: like x",
    example=lambda rng, dtype: _gelu_example(rng, dtype, approximate=False, grad=True))
def bias_gelu_backward(grad, x, bias, approximate=False, out=None):
    """dL/dx = grad * GELU'(x + bias) (also dL/d(x + bias); the bias gradient is its
    sum over rows)."""
    factor, slope = _gelu_parts(x + bias, approximate)
    return grad * (factor + slope)


# --- moving heads -----------------------------------------------------------------
@op("x: (N, T, G * H * D); out: (G, N * H, T, D)",
    example=lambda rng, dtype: dict(x=rng.standard_normal((2, 3, 3 * 2 * 4)).astype(dtype),
                                    groups=3, num_heads=2))
def split_heads(x, groups, num_heads, out=None):
    """out[g, n H + h, t, d] = x[n, t, (g H + h) D + d]: x viewed as (N, T, G, H, D),
    axes to (G, N, H, T, D). groups=3 splits a fused QKV projection into q, k, v."""
    n, t, width = x.shape
    d = width // (groups * num_heads)
    return x.reshape(n, t, groups, num_heads, d).transpose(2, 0, 3, 1, 4) \
        .reshape(groups, n * num_heads, t, d)


@op("x: (G, N * H, T, D); out: (N, T, G * H * D)",
    example=lambda rng, dtype: dict(x=rng.standard_normal((3, 2 * 2, 3, 4)).astype(dtype),
                                    batch=2))
def merge_heads(x, batch, out=None):
    """The inverse of ``split_heads``: out[n, t, (g H + h) D + d] = x[g, n H + h, t, d]."""
    g, s, t, d = x.shape
    h = s // batch
    return x.reshape(g, batch, h, t, d).transpose(1, 3, 0, 2, 4).reshape(batch, t, g * h * d)


@op("cache: (S, Ta, D), new: (S, Tb, D); out: (S, Ta + Tb, D)",
    example=lambda rng, dtype: dict(cache=rng.standard_normal((3, 4, 5)).astype(dtype),
                                    new=rng.standard_normal((3, 1, 5)).astype(dtype)))
def append_steps(cache, new, out=None):
    """out = concatenate([cache, new], axis=1): a KV cache grown by Tb steps."""
    return np.concatenate([cache, new], axis=1)
