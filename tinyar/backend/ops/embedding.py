"""Embedding lookup (a gather of rows) and its backward (a scatter-add of rows).

``indices`` is an integer array of any shape; ``weight`` is (V, D). Every
index must lie in [0, V): the layer checks that before calling these ops.
"""
import numpy as np

from . import op


@op("weight: (V, D); indices: integer, any shape; out: (*indices.shape, D)",
    example=lambda rng, dtype: dict(weight=rng.standard_normal((6, 4)).astype(dtype),
                                    indices=rng.integers(0, 6, size=(3, 5))))
def embedding_forward(weight, indices, out=None):
    """out[..., :] = weight[indices[...], :]."""
    return weight[indices]


def _backward_example(rng, dtype):
    # repeated indices, and the padding row among them
    indices = np.array([[1, 3, 1, 0], [5, 1, 3, 3]], dtype=np.int64)
    return dict(grad=rng.standard_normal((2, 4, 3)).astype(dtype), indices=indices,
                padding_idx=3, grad_weight=rng.standard_normal((6, 3)).astype(dtype))


@op("grad: (*indices.shape, D); indices: integer; grad_weight: (V, D); updates grad_weight",
    example=_backward_example, inplace=("grad_weight",))
def embedding_backward(grad, indices, padding_idx, grad_weight):
    """grad_weight[indices[i]] += grad[i] for every position i (a row used k times gets k
    contributions), except rows equal to padding_idx (-1 or None: no padding row)."""
    d = grad_weight.shape[1]
    flat_idx = indices.reshape(-1)
    flat_grad = grad.reshape(-1, d)
    if padding_idx is not None and padding_idx >= 0:
        keep = flat_idx != padding_idx
        flat_idx, flat_grad = flat_idx[keep], flat_grad[keep]
    out = grad_weight.copy()
    np.add.at(out, flat_idx, flat_grad)
    return (out,)


# The same two kernels, named for what other layers use them for: the multi-level head
# sorts its rows by class (a gather) and scatters the gradient back.
@op("x: (V, D); indices: integer, 1-D; out: (len(indices), D)",
    example=lambda rng, dtype: dict(x=rng.standard_normal((7, 3)).astype(dtype),
                                    indices=np.array([4, 0, 6, 4, 2], np.int64)))
def gather_rows(x, indices, out=None):
    """out[i] = x[indices[i]]."""
    return x[indices]


@op("rows: (M, D); indices: integer (M,); out: (V, D); updates out",
    example=lambda rng, dtype: dict(rows=rng.standard_normal((5, 3)).astype(dtype),
                                    indices=np.array([4, 0, 6, 4, 2], np.int64),
                                    out=rng.standard_normal((7, 3)).astype(dtype)),
    inplace=("out",))
def scatter_add_rows(rows, indices, out):
    """out[indices[i]] += rows[i] (an index used k times gets k contributions)."""
    result = out.copy()
    np.add.at(result, indices, rows)
    return (result,)
