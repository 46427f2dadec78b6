"""Recurrent layers on the GPU: the whole time loop of a layer in ONE kernel launch.

What runs where (``nn/recurrent.py`` has the math and does the big products)::

    forward, per layer
        A = X W_ih^T                  one GEMM over all T*N rows       (the layer, linalg.py)
        for t = 0 .. T-1:             ONE persistent kernel            (this file)
            A_t += h_{t-1} W_hh^T + b;  gates, c_t, h_t <- A_t
    backward, per layer
        for t = T-1 .. 0:             ONE persistent kernel            (this file)
            dA_t, dc_{t-1} <- gate derivatives;  dh_{t-1} += dA_t W_hh
        db += column sums of dA       one more small kernel            (this file)
        dW_ih += dA^T X, dW_hh += dA^T H_prev, dX = dA W_ih             (the layer)

Why one kernel for all T steps. A launch costs ~30 us on an H100
(docs/performance.md). The CPU's recipe, per step one product with
W_hh and one gate kernel, would be 2 launches per step and layer: for a
2-layer LSTM over T = 128 steps, 512 launches (~15 ms) in the forward alone,
before any arithmetic. Here a layer's sequence costs 1 launch forward and 2
backward, whatever T is.

How a *persistent* kernel runs the recurrence. Rows of the batch never
interact: h_t[n] depends on h_{t-1}[n] only. So the rows are cut into tiles
of ``tile_rows`` rows, one tile per block (grid-stride over tiles when there
are more tiles than blocks), and each block runs ALL T steps of its tile by
itself. Per step each thread takes its (row n, unit j) pairs of the tile and

    1. computes the recurrent dot products h_{t-1}[n, :] . W_hh[g*H + j, :]
       for every gate g, in one pass over h_{t-1}[n, :];
    2. adds the input projection (precomputed, in ``gates``) and the bias,
       applies the same fused gate math as ``cpu/rnn.py`` (the device
       functions ``_lstm_cell`` etc. below, shared with the one-step ops),
       and writes h_t, c_t and the saved activations;
    3. waits at ``cuda.syncthreads()``: after the barrier every thread of the
       block sees all of h_t (global-memory writes of a block are visible
       to the block after a barrier), which step t+1 reads.

h_{t-1} lives in the time-major (T+1, N, H) buffer the op receives; W_hh
stays in global memory and is served from the L1/L2 caches (every block
reads all of it every step). Backward runs t = T-1 .. 0 the same way, in two
phases separated by barriers: the fused gate backward of step t (each
thread its (n, j) pairs), then dh_{t-1}[n, k] += sum_m dA_t[n, m] W_hh[m, k]
(each thread its (n, k) pairs; threads with neighbouring k read neighbouring
W_hh addresses, a coalesced read). The forward's reads of W_hh[g*H + j, :]
are not coalesced (neighbouring threads read rows H apart), but each thread
walks its own rows of W_hh contiguously, so the cache lines it pulls in
serve its next loads.

How it scales. A block holds ``tile_rows = THREADS // H`` rows (at least 1),
so that one pass of its threads covers all (row, unit) pairs of the tile:
H = 256 gives one row per block, H = 64 four rows, which then share the W_hh
lines in L1. The grid has ceil(N / tile_rows) blocks: a batch of 32 with
H = 256 uses 32 of the H100's 132 SMs. Per step a thread does G*H
multiply-adds in sequence (G = 4 for the LSTM), so the time per step grows
with H, not with N, until the batch needs more blocks than the GPU holds.
(These are design estimates: the kernels have not been timed on a GPU yet.)

How this relates to Diamos et al. 2016 ("Persistent RNNs: stashing recurrent
weights on-chip"). They split the *hidden units* across blocks, keep each
block's slice of W_hh in registers for the whole sequence, and need a
grid-wide barrier every step (all of h_t must reach every block): W_hh is
read from off-chip memory once per sequence, which is what makes small
batches fast. We split the *batch* instead: a step needs only a block
barrier, which numba has and its simulator runs, at the cost of reading
W_hh from cache every step. Each of our blocks needs all of W_hh, so keeping
it on-chip (shared memory) would fit an LSTM up to H ~ 120 in float32
(4 H^2 floats in 227 KB); beyond that, splitting the units as Diamos et al.
do is the way to read W_hh once per sequence.

Bias gradients. They sum dA over all t and n, across blocks. A second small
kernel (``_add_column_sums``) sums the columns of the (T*N, G*H) gradient the
recurrence left in place, instead of ``cuda.atomic.add`` in the time loop:
atomics would add T*N values into each of only G*H addresses (contended), and
in an order that changes from run to run, so the last bits of the gradient
would too. The second kernel adds in a fixed order (deterministic), reads
the gradient once with coalesced loads, and costs one launch, independent
of T.

Launches per call (numba's own copies of strided inputs not counted):

    rnn_sequence_forward: 1     rnn_sequence_backward: 2
    lstm_sequence_forward: 1    lstm_sequence_backward: 2
    gru_sequence_forward: 1     gru_sequence_backward: 2 (both bias sums in one kernel)
    rnn/lstm/gru_cell_forward, rnn/lstm/gru_cell_backward: 1 each (one thread per (n, j))
    swap_axes01: 1

The gate math is ``backend/scalar/rnn.py``, the same functions the CPU's step
kernels inline, compiled here as device functions. Precision: exact
``math.tanh`` / ``math.exp`` (cheap on a GPU, unlike the CPU's libm calls), in
the dtype of the arrays: float32 kernels use float32
constants (``dtype.type(1)``) and never promote to float64.
"""
from numba import cuda

from ..scalar import rnn as scalar_rnn
from ._util import (MAX_BLOCKS, SIMULATOR, THREADS, contiguous, flat, launch, launch_flat,
                    out_like, scalar_function, updated_in_place)

__all__ = ["rnn_cell_forward", "rnn_cell_backward", "rnn_sequence_forward",
           "rnn_sequence_backward", "lstm_cell_forward", "lstm_cell_backward",
           "lstm_sequence_forward", "lstm_sequence_backward", "gru_cell_forward",
           "gru_cell_backward", "gru_sequence_forward", "gru_sequence_backward", "swap_axes01"]

# Columns per block of the bias sums: a warp's worth on a GPU, so that a warp
# reads one contiguous stretch of a row. Under the simulator fewer, so that the
# tiny test gradients (20 columns) already span several blocks.
SUM_COLS = 8 if SIMULATOR else 32
# Under the simulator a tile holds at most 2 rows, so that a batch of 3 spans
# two blocks and a partial tile, and a batch of 5 makes the blocks loop.
MAX_TILE_ROWS = 2 if SIMULATOR else THREADS


# --- the gate math of one (row, unit), shared by the one-step and sequence kernels ----
# backend/scalar/rnn.py, the same functions the CPU's step kernels inline.
_activate = scalar_function(scalar_rnn.activate)
_activate_backward = scalar_function(scalar_rnn.activate_backward)
_lstm_cell = scalar_function(scalar_rnn.lstm_cell)
_lstm_cell_backward = scalar_function(scalar_rnn.lstm_cell_backward)
_gru_cell = scalar_function(scalar_rnn.gru_cell)
_gru_cell_backward = scalar_function(scalar_rnn.gru_cell_backward)


# --- one time step: one thread per (row n, unit j) ------------------------------------
@cuda.jit
def _rnn_cell_forward(pre, relu, out):
    zero = pre.dtype.type(0)
    for e in range(cuda.grid(1), pre.size, cuda.gridsize(1)):
        out[e] = _activate(pre[e], relu, zero)


@cuda.jit
def _rnn_cell_backward(grad_h, h, relu, out):
    zero, one = h.dtype.type(0), h.dtype.type(1)
    for e in range(cuda.grid(1), h.size, cuda.gridsize(1)):
        out[e] = _activate_backward(grad_h[e], h[e], relu, zero, one)


@cuda.jit
def _lstm_cell_forward(gates, c_prev, h, c, acts):
    rows, hidden = c_prev.shape
    one = c_prev.dtype.type(1)
    for e in range(cuda.grid(1), rows * hidden, cuda.gridsize(1)):
        n, j = e // hidden, e % hidden
        i, f, g, o, c_new, h_new = _lstm_cell(
            gates[n, j], gates[n, hidden + j], gates[n, 2 * hidden + j],
            gates[n, 3 * hidden + j], c_prev[n, j], one)
        acts[n, j], acts[n, hidden + j], acts[n, 2 * hidden + j], acts[n, 3 * hidden + j] = \
            i, f, g, o
        c[n, j], h[n, j] = c_new, h_new


@cuda.jit
def _lstm_cell_backward_kernel(grad_h, grad_c, acts, c_prev, c, grad_gates, grad_c_prev):
    rows, hidden = c.shape
    one = c.dtype.type(1)
    for e in range(cuda.grid(1), rows * hidden, cuda.gridsize(1)):
        n, j = e // hidden, e % hidden
        d_i, d_f, d_g, d_o, dc = _lstm_cell_backward(
            grad_h[n, j], grad_c[n, j], acts[n, j], acts[n, hidden + j],
            acts[n, 2 * hidden + j], acts[n, 3 * hidden + j], c_prev[n, j], c[n, j], one)
        grad_gates[n, j], grad_gates[n, hidden + j] = d_i, d_f
        grad_gates[n, 2 * hidden + j], grad_gates[n, 3 * hidden + j] = d_g, d_o
        grad_c_prev[n, j] = dc


@cuda.jit
def _gru_cell_forward(gx, gh, b_hh, h_prev, h, acts, hn):
    rows, hidden = h_prev.shape
    one = h_prev.dtype.type(1)
    for e in range(cuda.grid(1), rows * hidden, cuda.gridsize(1)):
        n, j = e // hidden, e % hidden
        ghn = gh[n, 2 * hidden + j] + b_hh[2 * hidden + j]
        r, z, new, h_new = _gru_cell(
            gx[n, j], gx[n, hidden + j], gx[n, 2 * hidden + j], gh[n, j] + b_hh[j],
            gh[n, hidden + j] + b_hh[hidden + j], ghn, h_prev[n, j], one)
        acts[n, j], acts[n, hidden + j], acts[n, 2 * hidden + j] = r, z, new
        h[n, j], hn[n, j] = h_new, ghn


@cuda.jit
def _gru_cell_backward_kernel(grad_h, acts, hn, h_prev, grad_gx, grad_gh, grad_h_prev):
    rows, hidden = h_prev.shape
    one = h_prev.dtype.type(1)
    for e in range(cuda.grid(1), rows * hidden, cuda.gridsize(1)):
        n, j = e // hidden, e % hidden
        r = acts[n, j]
        d_r, d_z, d_n, direct = _gru_cell_backward(
            grad_h[n, j], r, acts[n, hidden + j], acts[n, 2 * hidden + j], hn[n, j],
            h_prev[n, j], one)
        grad_gx[n, j], grad_gx[n, hidden + j], grad_gx[n, 2 * hidden + j] = d_r, d_z, d_n
        grad_gh[n, j], grad_gh[n, hidden + j], grad_gh[n, 2 * hidden + j] = d_r, d_z, d_n * r
        grad_h_prev[n, j] = direct


# --- the recurrent products of one (row, unit) -----------------------------------------
@cuda.jit(device=True)
def _dot(h, t, n, w, m):
    """h[t, n, :] . w[m, :]  (one gate of the RNN)."""
    acc = h.dtype.type(0)
    for k in range(w.shape[1]):
        acc += h[t, n, k] * w[m, k]
    return acc


@cuda.jit(device=True)
def _dots3(h, t, n, w, j, hidden):
    """h[t, n, :] . w[g*H + j, :] for g = 0, 1, 2 (GRU), in one pass over h."""
    a0 = a1 = a2 = h.dtype.type(0)
    for k in range(hidden):
        x = h[t, n, k]
        a0 += x * w[j, k]
        a1 += x * w[hidden + j, k]
        a2 += x * w[2 * hidden + j, k]
    return a0, a1, a2


@cuda.jit(device=True)
def _dots4(h, t, n, w, j, hidden):
    """h[t, n, :] . w[g*H + j, :] for g = 0 .. 3 (LSTM), in one pass over h."""
    a0 = a1 = a2 = a3 = h.dtype.type(0)
    for k in range(hidden):
        x = h[t, n, k]
        a0 += x * w[j, k]
        a1 += x * w[hidden + j, k]
        a2 += x * w[2 * hidden + j, k]
        a3 += x * w[3 * hidden + j, k]
    return a0, a1, a2, a3


@cuda.jit(device=True)
def _dot_column(d, t, n, w, k):
    """d[t, n, :] . w[:, k]: one element of dA_t W_hh (the backward's product)."""
    acc = d.dtype.type(0)
    for m in range(w.shape[0]):
        acc += d[t, n, m] * w[m, k]
    return acc


# --- the persistent sequence kernels: one block runs all T steps of its rows ----------
# In each: ``first`` is the first row of the block's current tile; thread p of
# the block takes pairs p, p + blockDim, ... of the tile's tile_rows * H
# (row, unit) pairs. Every thread of the block runs the same tile and step
# loops, so all of them reach every barrier.
@cuda.jit
def _rnn_sequence_forward(pre, w_hh, bias, h, relu, tile_rows):
    steps, rows, hidden = pre.shape
    zero = pre.dtype.type(0)
    for first in range(cuda.blockIdx.x * tile_rows, rows, cuda.gridDim.x * tile_rows):
        for t in range(steps):
            for p in range(cuda.threadIdx.x, tile_rows * hidden, cuda.blockDim.x):
                n, j = first + p // hidden, p % hidden
                if n < rows:
                    a = pre[t, n, j] + bias[j] + _dot(h, t, n, w_hh, j)
                    h[t + 1, n, j] = _activate(a, relu, zero)
            cuda.syncthreads()  # all of h_t is written before step t+1 reads it


@cuda.jit
def _rnn_sequence_backward(h, w_hh, grad_h, grad_pre, relu, tile_rows):
    steps, rows, hidden = grad_pre.shape
    zero, one = h.dtype.type(0), h.dtype.type(1)
    for first in range(cuda.blockIdx.x * tile_rows, rows, cuda.gridDim.x * tile_rows):
        for t in range(steps - 1, -1, -1):
            for p in range(cuda.threadIdx.x, tile_rows * hidden, cuda.blockDim.x):
                n, j = first + p // hidden, p % hidden
                if n < rows:
                    grad_pre[t, n, j] = _activate_backward(grad_h[t + 1, n, j],
                                                           h[t + 1, n, j], relu, zero, one)
            cuda.syncthreads()  # all of dA_t is written before it is multiplied
            for p in range(cuda.threadIdx.x, tile_rows * hidden, cuda.blockDim.x):
                n, k = first + p // hidden, p % hidden
                if n < rows:
                    grad_h[t, n, k] += _dot_column(grad_pre, t, n, w_hh, k)
            cuda.syncthreads()  # all of dh_{t-1} is complete before step t-1 reads it


@cuda.jit
def _lstm_sequence_forward(gates, w_hh, bias, h, c, tile_rows):
    steps, rows, width = gates.shape
    hidden = width // 4
    one = gates.dtype.type(1)
    for first in range(cuda.blockIdx.x * tile_rows, rows, cuda.gridDim.x * tile_rows):
        for t in range(steps):
            for p in range(cuda.threadIdx.x, tile_rows * hidden, cuda.blockDim.x):
                n, j = first + p // hidden, p % hidden
                if n < rows:
                    r_i, r_f, r_g, r_o = _dots4(h, t, n, w_hh, j, hidden)
                    i, f, g, o, c_new, h_new = _lstm_cell(
                        gates[t, n, j] + bias[j] + r_i,
                        gates[t, n, hidden + j] + bias[hidden + j] + r_f,
                        gates[t, n, 2 * hidden + j] + bias[2 * hidden + j] + r_g,
                        gates[t, n, 3 * hidden + j] + bias[3 * hidden + j] + r_o,
                        c[t, n, j], one)
                    gates[t, n, j], gates[t, n, hidden + j] = i, f
                    gates[t, n, 2 * hidden + j], gates[t, n, 3 * hidden + j] = g, o
                    c[t + 1, n, j], h[t + 1, n, j] = c_new, h_new
            cuda.syncthreads()  # all of h_t is written before step t+1 reads it


@cuda.jit
def _lstm_sequence_backward(gates, c, w_hh, grad_h, grad_c, tile_rows):
    steps, rows, width = gates.shape
    hidden = width // 4
    one = gates.dtype.type(1)
    for first in range(cuda.blockIdx.x * tile_rows, rows, cuda.gridDim.x * tile_rows):
        for t in range(steps - 1, -1, -1):
            for p in range(cuda.threadIdx.x, tile_rows * hidden, cuda.blockDim.x):
                n, j = first + p // hidden, p % hidden
                if n < rows:
                    d_i, d_f, d_g, d_o, dc = _lstm_cell_backward(
                        grad_h[t + 1, n, j], grad_c[n, j], gates[t, n, j],
                        gates[t, n, hidden + j], gates[t, n, 2 * hidden + j],
                        gates[t, n, 3 * hidden + j], c[t, n, j], c[t + 1, n, j], one)
                    gates[t, n, j], gates[t, n, hidden + j] = d_i, d_f
                    gates[t, n, 2 * hidden + j], gates[t, n, 3 * hidden + j] = d_g, d_o
                    grad_c[n, j] = dc
            cuda.syncthreads()  # all of dA_t is written before it is multiplied
            for p in range(cuda.threadIdx.x, tile_rows * hidden, cuda.blockDim.x):
                n, k = first + p // hidden, p % hidden
                if n < rows:
                    grad_h[t, n, k] += _dot_column(gates, t, n, w_hh, k)
            cuda.syncthreads()  # all of dh_{t-1} is complete before step t-1 reads it


@cuda.jit
def _gru_sequence_forward(gates, w_hh, b_ih, b_hh, h, hn, tile_rows):
    steps, rows, width = gates.shape
    hidden = width // 3
    one = gates.dtype.type(1)
    for first in range(cuda.blockIdx.x * tile_rows, rows, cuda.gridDim.x * tile_rows):
        for t in range(steps):
            for p in range(cuda.threadIdx.x, tile_rows * hidden, cuda.blockDim.x):
                n, j = first + p // hidden, p % hidden
                if n < rows:
                    g_r, g_z, g_n = _dots3(h, t, n, w_hh, j, hidden)
                    ghn = g_n + b_hh[2 * hidden + j]
                    r, z, new, h_new = _gru_cell(
                        gates[t, n, j] + b_ih[j], gates[t, n, hidden + j] + b_ih[hidden + j],
                        gates[t, n, 2 * hidden + j] + b_ih[2 * hidden + j],
                        g_r + b_hh[j], g_z + b_hh[hidden + j], ghn, h[t, n, j], one)
                    gates[t, n, j], gates[t, n, hidden + j] = r, z
                    gates[t, n, 2 * hidden + j] = new
                    hn[t, n, j], h[t + 1, n, j] = ghn, h_new
            cuda.syncthreads()  # all of h_t is written before step t+1 reads it


@cuda.jit
def _gru_sequence_backward(gates, hn, h, w_hh, grad_h, grad_gh, tile_rows):
    steps, rows, width = gates.shape
    hidden = width // 3
    one = gates.dtype.type(1)
    for first in range(cuda.blockIdx.x * tile_rows, rows, cuda.gridDim.x * tile_rows):
        for t in range(steps - 1, -1, -1):
            for p in range(cuda.threadIdx.x, tile_rows * hidden, cuda.blockDim.x):
                n, j = first + p // hidden, p % hidden
                if n < rows:
                    r = gates[t, n, j]
                    d_r, d_z, d_n, direct = _gru_cell_backward(
                        grad_h[t + 1, n, j], r, gates[t, n, hidden + j],
                        gates[t, n, 2 * hidden + j], hn[t, n, j], h[t, n, j], one)
                    gates[t, n, j], gates[t, n, hidden + j] = d_r, d_z
                    gates[t, n, 2 * hidden + j] = d_n
                    grad_gh[t, n, j], grad_gh[t, n, hidden + j] = d_r, d_z
                    grad_gh[t, n, 2 * hidden + j] = d_n * r
                    grad_h[t, n, j] += direct
            cuda.syncthreads()  # all of d gh_t is written before it is multiplied
            for p in range(cuda.threadIdx.x, tile_rows * hidden, cuda.blockDim.x):
                n, k = first + p // hidden, p % hidden
                if n < rows:
                    grad_h[t, n, k] += _dot_column(grad_gh, t, n, w_hh, k)
            cuda.syncthreads()  # all of dh_{t-1} is complete before step t-1 reads it


# --- bias gradients: column sums of the (T*N, G*H) gradient, in a fixed order ---------
@cuda.jit(device=True)
def _add_column_sums_of(x, out, buf):
    """out[col] += sum over rows of x[:, col]. A block takes SUM_COLS columns at a time;
    its threads are SUM_COLS lanes (neighbouring columns: coalesced reads of a row)
    times blockDim / SUM_COLS row groups, whose partial sums lane 0..SUM_COLS-1 of
    group 0 adds up in order (no atomics: the same result every run)."""
    rows, cols = x.shape
    lane, group = cuda.threadIdx.x % SUM_COLS, cuda.threadIdx.x // SUM_COLS
    groups = cuda.blockDim.x // SUM_COLS
    for first in range(cuda.blockIdx.x * SUM_COLS, cols, cuda.gridDim.x * SUM_COLS):
        col = first + lane
        partial = x.dtype.type(0)
        if col < cols:
            for r in range(group, rows, groups):
                partial += x[r, col]
        buf[cuda.threadIdx.x] = partial
        cuda.syncthreads()
        if group == 0 and col < cols:
            for g in range(1, groups):
                partial += buf[g * SUM_COLS + lane]
            out[col] += partial
        cuda.syncthreads()  # buf is read before the next columns overwrite it


@cuda.jit
def _add_column_sums(x, out):
    buf = cuda.shared.array(THREADS, x.dtype)
    _add_column_sums_of(x, out, buf)


@cuda.jit
def _add_column_sums2(x, out_x, y, out_y):
    """Both of the GRU's bias gradients in one launch."""
    buf = cuda.shared.array(THREADS, x.dtype)
    _add_column_sums_of(x, out_x, buf)
    _add_column_sums_of(y, out_y, buf)


def _column_sum_blocks(cols):
    return max(1, min((cols + SUM_COLS - 1) // SUM_COLS, MAX_BLOCKS))


# --- host side ---------------------------------------------------------------------------
def _relu_flag(nonlinearity):
    if nonlinearity not in ("tanh", "relu"):
        raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
    return nonlinearity == "relu"


def _launch_sequence(kernel, rows, hidden, *args):
    """One launch of a persistent kernel: blocks of THREADS threads, each running whole
    tiles of ``tile_rows`` batch rows through all time steps."""
    if rows == 0 or hidden == 0:
        return
    tile_rows = max(1, min(THREADS // hidden, MAX_TILE_ROWS))
    tiles = (rows + tile_rows - 1) // tile_rows
    launch(kernel, min(tiles, MAX_BLOCKS), THREADS, *args, tile_rows)


def _add_bias_grad(grad, grad_bias):
    """grad_bias += grad (T, N, G*H) summed over T and N (one launch)."""
    width = grad.shape[-1]
    if grad.size:
        launch(_add_column_sums, _column_sum_blocks(width), THREADS,
               grad.reshape(grad.size // width, width), grad_bias)


# --- vanilla RNN ----------------------------------------------------------------------
def rnn_cell_forward(pre, nonlinearity="tanh", out=None):
    relu = _relu_flag(nonlinearity)
    pre = contiguous(pre)
    out = out_like(out, pre)
    launch_flat(_rnn_cell_forward, pre.size, flat(pre), relu, flat(out))
    return out


def rnn_cell_backward(grad_h, h, nonlinearity="tanh", out=None):
    relu = _relu_flag(nonlinearity)
    grad_h, h = contiguous(grad_h), contiguous(h)
    out = out_like(out, h)
    launch_flat(_rnn_cell_backward, h.size, flat(grad_h), flat(h), relu, flat(out))
    return out


def rnn_sequence_forward(pre, w_hh, bias, h, nonlinearity="tanh"):
    relu = _relu_flag(nonlinearity)
    updated_in_place("h", h)
    pre, w_hh, bias = contiguous(pre), contiguous(w_hh), contiguous(bias)
    steps, rows, hidden = pre.shape
    if steps:
        _launch_sequence(_rnn_sequence_forward, rows, hidden, pre, w_hh, bias, h, relu)
    return h


def rnn_sequence_backward(h, w_hh, grad_h, grad_pre, grad_bias, nonlinearity="tanh"):
    relu = _relu_flag(nonlinearity)
    for name, a in (("grad_h", grad_h), ("grad_pre", grad_pre), ("grad_bias", grad_bias)):
        updated_in_place(name, a)
    h, w_hh = contiguous(h), contiguous(w_hh)
    steps, rows, hidden = grad_pre.shape
    if steps:
        _launch_sequence(_rnn_sequence_backward, rows, hidden, h, w_hh, grad_h, grad_pre, relu)
        _add_bias_grad(grad_pre, grad_bias)
    return grad_h, grad_pre, grad_bias


# --- LSTM ---------------------------------------------------------------------------
def lstm_cell_forward(gates, c_prev, h=None, c=None, acts=None):
    gates, c_prev = contiguous(gates), contiguous(c_prev)
    acts = out_like(acts, gates)  # may be gates itself: each thread reads its values first
    h, c = out_like(h, c_prev), out_like(c, c_prev)
    launch_flat(_lstm_cell_forward, c_prev.size, gates, c_prev, h, c, acts)
    return h, c, acts


def lstm_cell_backward(grad_h, grad_c, acts, c_prev, c, grad_gates=None, grad_c_prev=None):
    grad_h, grad_c, acts = contiguous(grad_h), contiguous(grad_c), contiguous(acts)
    c_prev, c = contiguous(c_prev), contiguous(c)
    grad_gates = out_like(grad_gates, acts)  # may be acts itself
    grad_c_prev = out_like(grad_c_prev, grad_c)  # may be grad_c itself
    launch_flat(_lstm_cell_backward_kernel, c.size, grad_h, grad_c, acts, c_prev, c,
                grad_gates, grad_c_prev)
    return grad_gates, grad_c_prev


def lstm_sequence_forward(gates, w_hh, bias, h, c):
    for name, a in (("gates", gates), ("h", h), ("c", c)):
        updated_in_place(name, a)
    w_hh, bias = contiguous(w_hh), contiguous(bias)
    steps, rows, _ = gates.shape
    if steps:
        _launch_sequence(_lstm_sequence_forward, rows, h.shape[-1], gates, w_hh, bias, h, c)
    return gates, h, c


def lstm_sequence_backward(gates, c, w_hh, grad_h, grad_c, grad_bias):
    for name, a in (("gates", gates), ("grad_h", grad_h), ("grad_c", grad_c),
                    ("grad_bias", grad_bias)):
        updated_in_place(name, a)
    c, w_hh = contiguous(c), contiguous(w_hh)
    steps, rows, _ = gates.shape
    if steps:
        _launch_sequence(_lstm_sequence_backward, rows, c.shape[-1], gates, c, w_hh, grad_h,
                         grad_c)
        _add_bias_grad(gates, grad_bias)
    return gates, grad_h, grad_c, grad_bias


# --- GRU ----------------------------------------------------------------------------
def gru_cell_forward(gx, gh, b_hh, h_prev, h=None, acts=None, hn=None):
    gx, gh, b_hh, h_prev = contiguous(gx), contiguous(gh), contiguous(b_hh), contiguous(h_prev)
    acts = out_like(acts, gx)  # may be gx itself
    h, hn = out_like(h, h_prev), out_like(hn, h_prev)
    launch_flat(_gru_cell_forward, h_prev.size, gx, gh, b_hh, h_prev, h, acts, hn)
    return h, acts, hn


def gru_cell_backward(grad_h, acts, hn, h_prev, grad_gx=None, grad_gh=None, grad_h_prev=None):
    grad_h, acts, hn, h_prev = contiguous(grad_h), contiguous(acts), contiguous(hn), \
        contiguous(h_prev)
    grad_gx = out_like(grad_gx, acts)  # may be acts itself
    grad_gh = out_like(grad_gh, acts)
    grad_h_prev = out_like(grad_h_prev, h_prev)
    launch_flat(_gru_cell_backward_kernel, h_prev.size, grad_h, acts, hn, h_prev, grad_gx,
                grad_gh, grad_h_prev)
    return grad_gx, grad_gh, grad_h_prev


def gru_sequence_forward(gates, w_hh, b_ih, b_hh, h, hn):
    for name, a in (("gates", gates), ("h", h), ("hn", hn)):
        updated_in_place(name, a)
    w_hh, b_ih, b_hh = contiguous(w_hh), contiguous(b_ih), contiguous(b_hh)
    steps, rows, _ = gates.shape
    if steps:
        _launch_sequence(_gru_sequence_forward, rows, h.shape[-1], gates, w_hh, b_ih, b_hh, h,
                         hn)
    return gates, h, hn


def gru_sequence_backward(gates, hn, h, w_hh, grad_h, grad_gh, grad_b_ih, grad_b_hh):
    for name, a in (("gates", gates), ("grad_h", grad_h), ("grad_gh", grad_gh),
                    ("grad_b_ih", grad_b_ih), ("grad_b_hh", grad_b_hh)):
        updated_in_place(name, a)
    hn, h, w_hh = contiguous(hn), contiguous(h), contiguous(w_hh)
    steps, rows, width = gates.shape
    if steps:
        _launch_sequence(_gru_sequence_backward, rows, h.shape[-1], gates, hn, h, w_hh, grad_h,
                         grad_gh)
    if gates.size:  # both bias gradients in one launch
        m = steps * rows
        launch(_add_column_sums2, _column_sum_blocks(width), THREADS,
               gates.reshape(m, width), grad_b_ih, grad_gh.reshape(m, width), grad_b_hh)
    return gates, grad_h, grad_gh, grad_b_ih, grad_b_hh


# --- layout -------------------------------------------------------------------------
@cuda.jit
def _swap_axes01(x, a_size, b_size, inner, out):
    """out[b, a, q] = x[a, b, q], all flat; one thread per output element (writes
    coalesced; the reads are too, in runs of ``inner`` elements)."""
    for e in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        q = e % inner
        ba = e // inner
        b, a = ba // a_size, ba % a_size
        out[e] = x[(a * b_size + b) * inner + q]


def swap_axes01(x, out=None):
    x = contiguous(x)
    a_size, b_size = x.shape[0], x.shape[1]
    shape = (b_size, a_size) + tuple(x.shape[2:])
    out = out_like(out, x, shape=shape)
    if x.size:
        inner = x.size // (a_size * b_size)
        launch_flat(_swap_axes01, x.size, flat(x), a_size, b_size, inner, flat(out))
    return out
