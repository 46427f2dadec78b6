"""Embedding gather and scatter-add: one serial pass over the indices each.

The backward is a loop, not ``grad_weight[indices] += grad``: NumPy's fancy
``+=`` adds a row used k times only once (it reads all rows, then writes),
while the loop adds all k contributions. Each kernel also refuses an index
outside [0, V) rather than touch memory it does not own (the layer checks
first and gives the clear message).
"""
import numpy as np
from numba import njit

from ._util import ERROR_MODEL, contiguous

__all__ = ["embedding_forward", "embedding_backward", "gather_rows", "scatter_add_rows"]


def _flat_indices(indices):
    """A flat, contiguous array of indices; unusual integer types become int64."""
    indices = contiguous(np.asarray(indices)).reshape(-1)
    if indices.dtype not in (np.int32, np.int64):
        indices = indices.astype(np.int64)
    return indices


@njit(cache=True, error_model=ERROR_MODEL)
def _gather(weight, indices, out):
    vocab, dim = weight.shape
    for i in range(indices.size):
        row = indices[i]
        if row < 0 or row >= vocab:
            raise IndexError("embedding index out of range")
        for d in range(dim):
            out[i, d] = weight[row, d]


def embedding_forward(weight, indices, out=None):
    weight = contiguous(weight)
    shape = tuple(np.shape(indices)) + (weight.shape[1],)
    if out is None:
        out = np.empty(shape, weight.dtype)
    elif out.shape != shape or not out.flags.c_contiguous:
        raise ValueError(f"out must be C-contiguous of shape {shape}, got {out.shape}")
    _gather(weight, _flat_indices(indices), out.reshape(-1, weight.shape[1]))
    return out


@njit(cache=True, error_model=ERROR_MODEL)
def _scatter_add(grad, indices, padding_idx, grad_weight):
    vocab, dim = grad_weight.shape
    for i in range(indices.size):
        row = indices[i]
        if row < 0 or row >= vocab:
            raise IndexError("embedding index out of range")
        if row == padding_idx:
            continue
        for d in range(dim):
            grad_weight[row, d] += grad[i, d]


def embedding_backward(grad, indices, padding_idx, grad_weight):
    if not grad_weight.flags.c_contiguous:
        raise ValueError("grad_weight is updated in place and must be C-contiguous")
    dim = grad_weight.shape[1]
    grad = contiguous(grad).reshape(-1, dim)
    _scatter_add(grad, _flat_indices(indices), -1 if padding_idx is None else int(padding_idx),
                 grad_weight)
    return grad_weight


def gather_rows(x, indices, out=None):
    """out[i] = x[indices[i]]: the embedding lookup's kernel, for any rows."""
    return embedding_forward(x, indices, out)


def scatter_add_rows(rows, indices, out):
    """out[indices[i]] += rows[i]: the embedding backward's kernel, for any rows."""
    return embedding_backward(rows, indices, None, out)
