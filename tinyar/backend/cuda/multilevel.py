"""The fine level of the multi-level softmax: one block per target row, all classes at once.

On the CPU (``backend/cpu/multilevel.py``) a compiled loop walks the classes
present in the batch and calls BLAS once per class block. On the GPU a loop
over classes would be a loop over launches (~30 us each). Instead every
target row gets a block, whatever its class, and each call is one launch:

    multilevel_fine_forward    1 launch (after copying the small group table over)
    multilevel_fine_backward   1 launch

Which class a row belongs to. The host sends a table with one line per
class block, [first row, end row, first label, end label, offset of the
block in ``probs``]; the rows are sorted by class, so a block finds its
row's line by binary search on the first rows (log2(G) reads).

Forward, block for row r of class block g (labels l0:l1, s = l1 - l0):

    z_j  = h[r] . W[l0 + j] + b[l0 + j]      each thread takes labels j, j + threads, ...
    m    = max_j z_j                          block_max
    p_j  = exp(z_j - m) / sum_j exp(z_j - m)  block_sum; written to probs
    loss = log(sum_j exp(z_j - m)) - (z_t - m)      t the row's label inside the class

Backward, with k = scale (x the row's scale when a per-row array is given):

    dz_j = k (p_j - [j == t])                 written over probs (as on the CPU)
    db[l0 + j]   += dz_j                      atomic: rows of a class share labels
    (barrier: the block's dz are all written)
    dh[r, d]      = sum_j dz_j W[l0 + j, d]   each thread takes features d, d + threads, ...
    dW[l0 + j, d] += dz_j h[r, d]             atomic, for the same reason

In the second half neighbouring threads take neighbouring features d, so
their reads of W and their atomic adds to dW hit neighbouring addresses.
The atomics make the order of the additions into dW and db vary from run
to run (float sums differ in the last bits); the CPU's per-class products
have a fixed order.

What this gives up: each thread computes a dot product over the H features
alone, reading W rows no other thread of the block reads, and a class with
fewer labels than the block has threads leaves threads idle. Tiling rows of
the same class like ``linalg.matmul`` would reuse W from shared memory; the
simple version is one launch and exact.
"""
import math

import numpy as np
from numba import cuda

from ._util import (ROW_THREADS, as_float, block_max, block_sum, contiguous, device,
                    device_empty, flat, is_device_array, launch_rows, ones, out_like,
                    updated_in_place)

__all__ = ["multilevel_fine_forward", "multilevel_fine_backward"]


# --- the group table ------------------------------------------------------------------
def _host_groups(groups):
    """Groups (G, 4) as a host int64 array (device groups are copied back: G is small)."""
    if is_device_array(groups):
        groups = contiguous(groups).copy_to_host()
    return np.asarray(groups, dtype=np.int64).reshape(-1, 4)


def _group_table(groups):
    """(device table (G, 5): r0, r1, l0, l1, offset in probs; the size of probs)."""
    groups = _host_groups(groups)
    sizes = (groups[:, 1] - groups[:, 0]) * (groups[:, 3] - groups[:, 2])
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    table = np.concatenate([groups, offsets[:, None]], axis=1)
    return device(np.ascontiguousarray(table)), int(sizes.sum())


def _rows_index(local):
    """The rows' labels inside their class, as a flat device integer array."""
    if is_device_array(local):
        return flat(contiguous(local))
    return device(np.ascontiguousarray(local, dtype=np.int64).reshape(-1))


@cuda.jit(device=True)
def _group_of(table, r):
    """The line g of the table with table[g, 0] <= r < table[g + 1, 0] (binary search)."""
    lo, hi = 0, table.shape[0] - 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if table[mid, 0] <= r:
            lo = mid
        else:
            hi = mid - 1
    return lo


# --- forward ------------------------------------------------------------------------------
@cuda.jit
def _fine_forward(h, weight, bias, table, local, losses, probs):
    buf = cuda.shared.array(ROW_THREADS, h.dtype)
    rows, features = h.shape
    tid, threads = cuda.threadIdx.x, cuda.blockDim.x
    for r in range(cuda.blockIdx.x, rows, cuda.gridDim.x):
        g = _group_of(table, r)
        r0, r1, l0, l1, offset = table[g, 0], table[g, 1], table[g, 2], table[g, 3], table[g, 4]
        if r < r0 or r >= r1:  # a row no group covers: nothing to compute
            continue
        s = l1 - l0
        base = offset + (r - r0) * s
        target = local[r]
        best = h.dtype.type(-math.inf)
        z_target = h.dtype.type(0)
        for j in range(tid, s, threads):
            z = h.dtype.type(0)
            for d in range(features):
                z += h[r, d] * weight[l0 + j, d]
            z += bias[l0 + j]
            probs[base + j] = z  # the logit for now; the probability below
            if z > best:
                best = z
            if j == target:
                z_target = z
        m = block_max(buf, best)
        z_target = block_sum(buf, z_target)  # only the thread holding the target adds a term
        part = h.dtype.type(0)
        for j in range(tid, s, threads):  # a thread reads back only what it wrote
            e = math.exp(probs[base + j] - m)
            probs[base + j] = e
            part += e
        total = block_sum(buf, part)
        inv = h.dtype.type(1) / total
        for j in range(tid, s, threads):
            probs[base + j] *= inv
        if tid == 0:
            losses[r] = math.log(total) - (z_target - m)


def multilevel_fine_forward(h, weight, bias, groups, local, out_losses=None, out_probs=None):
    h, weight, bias = device(h), device(weight), flat(contiguous(bias))
    table, size = _group_table(groups)
    losses = out_like(out_losses, h, shape=(h.shape[0],))
    probs = out_probs if out_probs is not None and out_probs.size == size else \
        device_empty(size, h.dtype)
    launch_rows(_fine_forward, h.shape[0], h, weight, bias, table, _rows_index(local), losses,
                flat(probs))
    return losses, probs


# --- backward -----------------------------------------------------------------------------
@cuda.jit
def _fine_backward(probs, h, weight, table, local, scale, row_scale, grad_weight, grad_bias,
                   grad_h):
    rows, features = h.shape
    tid, threads = cuda.threadIdx.x, cuda.blockDim.x
    for r in range(cuda.blockIdx.x, rows, cuda.gridDim.x):
        g = _group_of(table, r)
        r0, r1, l0, l1, offset = table[g, 0], table[g, 1], table[g, 2], table[g, 3], table[g, 4]
        if r < r0 or r >= r1:
            continue
        s = l1 - l0
        base = offset + (r - r0) * s
        target = local[r]
        k = scale * row_scale[r]
        for j in range(tid, s, threads):
            dz = probs[base + j] * k
            if j == target:
                dz -= k
            probs[base + j] = dz
            cuda.atomic.add(grad_bias, l0 + j, dz)
        cuda.syncthreads()  # every dz of the row is in probs before any thread reads them
        for d in range(tid, features, threads):
            h_d = h[r, d]
            acc = h.dtype.type(0)
            for j in range(s):
                dz = probs[base + j]
                acc += dz * weight[l0 + j, d]
                cuda.atomic.add(grad_weight, (l0 + j, d), dz * h_d)
            grad_h[r, d] = acc


def multilevel_fine_backward(probs, h, weight, groups, local, scale, grad_weight, grad_bias,
                             grad_h):
    """Consumes ``probs`` (they become dL/dZ in place); see the module docstring."""
    h, weight = device(h), device(weight)
    probs = flat(updated_in_place("probs", probs))
    updated_in_place("grad_weight", grad_weight)
    grad_bias = flat(updated_in_place("grad_bias", grad_bias))
    updated_in_place("grad_h", grad_h)
    table, _ = _group_table(groups)
    rows = h.shape[0]
    if np.ndim(scale) == 0 and not is_device_array(scale):
        k, row_scale = as_float(scale, h), ones(rows, h.dtype)
    else:  # a scale per row
        k, row_scale = as_float(1.0, h), flat(contiguous(device(scale, h.dtype)))
    launch_rows(_fine_backward, rows, probs, h, weight, table, _rows_index(local), k, row_scale,
                grad_weight, grad_bias, grad_h)
    return grad_weight, grad_bias, grad_h
