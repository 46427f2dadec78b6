"""Embedding gather and scatter-add: one thread per output value.

Forward: out[i, d] = weight[indices[i], d]; threads along d read a row of
weight contiguously. Backward: grad_weight[indices[i], d] += grad[i, d]. A
row used k times receives k additions from different threads at once, so
they add with ``cuda.atomic.add`` (a plain ``+=`` would lose all but one).

Index checks. Host indices (what data loaders produce) are checked on the
host before they are copied over, and an index outside [0, V) raises
``IndexError`` as on the CPU. A kernel cannot raise: for device indices the
layer's own check is the guard, and the kernels skip an out-of-range index
(writing zeros in the forward) rather than touch memory they do not own.
"""
import numpy as np
from numba import cuda

from ._util import contiguous, device, flat, launch_flat, out_like, updated_in_place

__all__ = ["embedding_forward", "embedding_backward", "gather_rows", "scatter_add_rows"]


def _flat_indices(indices, vocab):
    """A flat, contiguous device array of indices (int32 or int64)."""
    if isinstance(indices, np.ndarray) or not hasattr(indices, "__cuda_array_interface__"):
        host = np.asarray(indices).reshape(-1)
        if host.dtype not in (np.int32, np.int64):
            host = host.astype(np.int64)
        if host.size and (host.min() < 0 or host.max() >= vocab):
            raise IndexError(f"embedding index out of range [0, {vocab})")
        return device(host)
    indices = contiguous(indices)
    if indices.dtype not in (np.int32, np.int64):
        raise TypeError(f"expected int32 or int64 indices, got {indices.dtype.name}")
    return flat(indices)


@cuda.jit
def _gather(weight, indices, out):
    vocab, dim = weight.shape
    for e in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        i, d = e // dim, e % dim
        row = indices[i]
        if 0 <= row < vocab:
            out[e] = weight[row, d]
        else:
            out[e] = weight.dtype.type(0)


def embedding_forward(weight, indices, out=None):
    vocab, dim = weight.shape
    shape = tuple(np.shape(indices)) + (dim,)
    flat_indices = _flat_indices(indices, vocab)
    weight = contiguous(weight)
    out = out_like(out, weight, shape=shape)
    launch_flat(_gather, out.size, weight, flat_indices, flat(out))
    return out


@cuda.jit
def _scatter_add(grad, indices, padding_idx, grad_weight):
    vocab, dim = grad_weight.shape
    for e in range(cuda.grid(1), grad.size, cuda.gridsize(1)):
        i, d = e // dim, e % dim
        row = indices[i]
        if 0 <= row < vocab and row != padding_idx:
            cuda.atomic.add(grad_weight, (row, d), grad[i, d])


def embedding_backward(grad, indices, padding_idx, grad_weight):
    vocab, dim = grad_weight.shape
    flat_indices = _flat_indices(indices, vocab)
    updated_in_place("grad_weight", grad_weight)
    grad = contiguous(grad).reshape(flat_indices.size, dim)
    launch_flat(_scatter_add, grad.size, grad, flat_indices,
                -1 if padding_idx is None else int(padding_idx), grad_weight)
    return grad_weight


def gather_rows(x, indices, out=None):
    """out[i] = x[indices[i]]: the embedding lookup's kernel, for any rows."""
    return embedding_forward(x, indices, out)


def scatter_add_rows(rows, indices, out):
    """out[indices[i]] += rows[i]: the embedding backward's kernel, for any rows."""
    return embedding_backward(rows, indices, None, out)
