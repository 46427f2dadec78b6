"""The fine level of the multi-level softmax as one compiled loop over classes.

A batch touches ~C classes; written in Python, each class costs ~10 calls
(gather, product, bias, softmax, loss; and as many in backward), ~5 us each,
which for C = 100 is several milliseconds of pure overhead: more than the
arithmetic. Here the loop over the classes runs inside one ``@njit`` call,
which calls the BLAS ``gemm`` directly through a ctypes function pointer
passed as an argument (the same technique as the recurrent time loops in
``rnn.py``), and does each block's softmax and cross-entropy in place:

    forward, for each class block g (rows r0:r1 of the class-sorted H,
    labels l0:l1 of W):
        P_g = H_g W_g^T                    gemm
        P_g = softmax(P_g + b_g)           in place, one pass per row; loss
    backward:
        P_g = scale (P_g - onehot)         in place: now dL/dZ_g
        dW_g += P_g^T H_g                  gemm, beta = 1
        dH_g  = P_g W_g                    gemm
        db_g += sum_rows P_g

Where kernels may share the BLAS's threads (MKL on GNU OpenMP,
``backend/cpu/threads.py``), the class blocks are split into one run per thread
of near-equal work (rows x labels); blocks share nothing, so the runs need no
synchronisation. For the word LM (V = 10,000, C = 100, 1,120 rows of 256) the
fine level went from 1.1 to 0.54 ms forward and from 2.0 to 0.90 ms backward.

Where no BLAS can be called from compiled code, the same loops run in Python
with NumPy products.
"""
import math

import numpy as np
from numba import njit, prange

from ._util import ERROR_MODEL, FASTMATH, contiguous, thread_chunks
from .fastmath import fast_exp, maxnum
from .blas import gemm_routine
from .gemm import gemm_nn, gemm_nt, gemm_tn

__all__ = ["multilevel_fine_forward", "multilevel_fine_backward"]

_KERNEL = dict(cache=True, fastmath=FASTMATH, error_model=ERROR_MODEL)
_THREADED = dict(_KERNEL, parallel=True)


@njit(**_KERNEL)
def _softmax_rows_and_loss(z, bias, local, losses):
    """z (n, s) += bias; then softmax per row, in place; losses[i] = -log p[i, local[i]]."""
    for i in range(z.shape[0]):
        row = z[i]
        for j in range(row.size):
            row[j] += bias[j]
        m = row[0]
        for j in range(1, row.size):
            m = maxnum(m, row[j])
        target_shifted = row[local[i]] - m  # before the row is overwritten by exp
        total = row.dtype.type(0)
        for j in range(row.size):
            e = fast_exp(row[j] - m)
            row[j] = e
            total += e
        losses[i] = math.log(total) - target_shifted
        inv = row.dtype.type(1) / total
        for j in range(row.size):
            row[j] *= inv


@njit(**_KERNEL)
def _forward_loop(gemm, h, weight, bias, groups, offsets, local, losses, probs, g0, g1):
    """Class blocks g0:g1; block g's probabilities start at ``offsets[g]`` in ``probs``."""
    for g in range(g0, g1):
        r0, r1, l0, l1 = groups[g, 0], groups[g, 1], groups[g, 2], groups[g, 3]
        n, s = r1 - r0, l1 - l0
        z = probs[offsets[g]:offsets[g] + n * s].reshape((n, s))
        gemm_nt(gemm, h[r0:r1], weight[l0:l1], z, 0.0)
        _softmax_rows_and_loss(z, bias[l0:l1], local[r0:r1], losses[r0:r1])


@njit(**_KERNEL)
def _backward_loop(gemm, probs, h, weight, groups, offsets, local, scale, grad_weight,
                   grad_bias, grad_h, g0, g1):
    for g in range(g0, g1):
        r0, r1, l0, l1 = groups[g, 0], groups[g, 1], groups[g, 2], groups[g, 3]
        n, s = r1 - r0, l1 - l0
        dz = probs[offsets[g]:offsets[g] + n * s].reshape((n, s))
        for i in range(n):
            k = scale[r0 + i]
            row = dz[i]
            for j in range(s):
                row[j] *= k
            row[local[r0 + i]] -= k
            for j in range(s):
                grad_bias[l0 + j] += row[j]
        gemm_tn(gemm, dz, h[r0:r1], grad_weight[l0:l1], 1.0)
        gemm_nn(gemm, dz, weight[l0:l1], grad_h[r0:r1], 0.0)


# Threaded: every class block writes its own rows of the outputs, its own labels'
# rows of grad_weight and grad_bias, and its own stretch of probs, so the blocks
# are split among the threads with nothing shared (``bounds``: the first block of
# each thread's run, and the end). Inside the prange MKL runs single-threaded.
@njit(**_THREADED)
def _forward_threads(gemm, h, weight, bias, groups, offsets, local, losses, probs, bounds):
    for p in prange(bounds.size - 1):
        _forward_loop(gemm, h, weight, bias, groups, offsets, local, losses, probs, bounds[p],
                      bounds[p + 1])


@njit(**_THREADED)
def _backward_threads(gemm, probs, h, weight, groups, offsets, local, scale, grad_weight,
                      grad_bias, grad_h, bounds):
    for p in prange(bounds.size - 1):
        _backward_loop(gemm, probs, h, weight, groups, offsets, local, scale, grad_weight,
                       grad_bias, grad_h, bounds[p], bounds[p + 1])


def _offsets(groups):
    """Where each class block's (rows x labels) probabilities start in the flat buffer,
    and the buffer's size."""
    sizes = (groups[:, 1] - groups[:, 0]) * (groups[:, 3] - groups[:, 2])
    ends = np.cumsum(sizes)
    return ends - sizes, int(ends[-1]) if ends.size else 0


def _split(groups, offsets, size, width):
    """Runs of class blocks of near-equal work (rows x labels), one per thread; a
    single run where kernels stay serial or the work is small."""
    pieces = thread_chunks(size * width, groups.shape[0])
    if pieces == 1:
        return None
    # a block's work is its size; cut where the running total passes k/pieces of it
    bounds = np.searchsorted(offsets, size * np.arange(1, pieces) / pieces)
    bounds = np.unique(np.concatenate([[0], bounds, [groups.shape[0]]])).astype(np.int64)
    # runs far from even (a block holding most of the work) are better left to the
    # serial loop, where the BLAS threads each product
    runs = bounds.size - 1
    work = np.diff(np.append(offsets, size)[bounds])
    return bounds if runs > 1 and work.max() <= 1.5 * size / runs else None


def multilevel_fine_forward(h, weight, bias, groups, local, out_losses=None, out_probs=None):
    h, weight, bias = contiguous(h), contiguous(weight), contiguous(bias)
    groups, local = np.ascontiguousarray(groups, np.int64), np.ascontiguousarray(local, np.int64)
    offsets, size = _offsets(groups)
    losses = np.empty(h.shape[0], h.dtype) if out_losses is None else out_losses
    probs = np.empty(size, h.dtype) if out_probs is None or out_probs.size != size else out_probs
    gemm = gemm_routine(h.dtype)
    bounds = _split(groups, offsets, size, h.shape[1])
    if gemm is not None and bounds is not None:
        _forward_threads(gemm, h, weight, bias, groups, offsets, local, losses, probs, bounds)
        return losses, probs
    if gemm is not None:
        _forward_loop(gemm, h, weight, bias, groups, offsets, local, losses, probs, 0,
                      groups.shape[0])
        return losses, probs
    for (r0, r1, l0, l1), offset in zip(groups, offsets):
        n, s = r1 - r0, l1 - l0
        z = probs[offset:offset + n * s].reshape(n, s)
        np.matmul(h[r0:r1], weight[l0:l1].T, out=z)
        _softmax_rows_and_loss(z, bias[l0:l1], local[r0:r1], losses[r0:r1])
    return losses, probs


def multilevel_fine_backward(probs, h, weight, groups, local, scale, grad_weight, grad_bias,
                             grad_h):
    """Consumes ``probs`` (they become dL/dZ in place); see the module docstring."""
    h, weight = contiguous(h), contiguous(weight)
    groups, local = np.ascontiguousarray(groups, np.int64), np.ascontiguousarray(local, np.int64)
    scale = np.broadcast_to(np.asarray(scale, h.dtype), (h.shape[0],)).copy()
    gemm = gemm_routine(h.dtype)
    offsets, size = _offsets(groups)
    bounds = _split(groups, offsets, size, h.shape[1])
    if gemm is not None and bounds is not None:
        _backward_threads(gemm, probs, h, weight, groups, offsets, local, scale, grad_weight,
                          grad_bias, grad_h, bounds)
        return grad_weight, grad_bias, grad_h
    if gemm is not None:
        _backward_loop(gemm, probs, h, weight, groups, offsets, local, scale, grad_weight,
                       grad_bias, grad_h, 0, groups.shape[0])
        return grad_weight, grad_bias, grad_h
    for (r0, r1, l0, l1), offset in zip(groups, offsets):
        n, s = r1 - r0, l1 - l0
        dz = probs[offset:offset + n * s].reshape(n, s)
        dz *= scale[r0:r1, None]
        dz[np.arange(n), local[r0:r1]] -= scale[r0:r1]
        grad_bias[l0:l1] += dz.sum(axis=0)
        grad_weight[l0:l1] += dz.T @ h[r0:r1]
        np.matmul(dz, weight[l0:l1], out=grad_h[r0:r1])
    return grad_weight, grad_bias, grad_h
