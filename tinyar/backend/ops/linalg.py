"""Matrix products and the bias sums around them."""
import numpy as np

from . import op


def _mm_example(rng, dtype, trans_a=False, trans_b=False, accumulate=False):
    a = rng.standard_normal((5, 7) if not trans_a else (7, 5)).astype(dtype)
    b = rng.standard_normal((7, 3) if not trans_b else (3, 7)).astype(dtype)
    out = rng.standard_normal((5, 3)).astype(dtype)
    return dict(a=a, b=b, out=out, trans_a=trans_a, trans_b=trans_b, accumulate=accumulate)


@op("a: (M, K) or (K, M) if trans_a; b: (K, N) or (N, K) if trans_b; out: (M, N)",
    example=lambda rng, dtype: _mm_example(rng, dtype, trans_b=True, accumulate=True),
    inplace=("out",))
def matmul(a, b, out=None, trans_a=False, trans_b=False, accumulate=False):
    """out = op(a) @ op(b), or out += ... when accumulate (BLAS beta = 1)."""
    product = (a.T if trans_a else a) @ (b.T if trans_b else b)
    return out + product if accumulate else product


@op("y: (..., F), bias: (F,); updates y",
    example=lambda rng, dtype: dict(y=rng.standard_normal((4, 3, 6)).astype(dtype),
                                    bias=rng.standard_normal(6).astype(dtype)),
    inplace=("y",))
def add_bias(y, bias):
    """y += bias, broadcast over every leading axis."""
    return y + bias


@op("x: (M, F), out: (F,)",
    example=lambda rng, dtype: dict(x=rng.standard_normal((9, 4)).astype(dtype),
                                    out=rng.standard_normal(4).astype(dtype), accumulate=True),
    inplace=("out",))
def sum_rows(x, out=None, accumulate=False):
    """out = x.sum(axis=0), or out += ... when accumulate (a bias gradient)."""
    s = x.sum(axis=0)
    return out + s if accumulate else s


@op("x, y: any shape, same; updates y",
    example=lambda rng, dtype: dict(alpha=0.5, x=rng.standard_normal((3, 5)).astype(dtype),
                                    y=rng.standard_normal((3, 5)).astype(dtype)),
    inplace=("y",))
def axpy(alpha, x, y):
    """y += alpha * x."""
    return y + alpha * x
