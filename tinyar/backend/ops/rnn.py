"""Recurrent cells: the elementwise gate math of one time step, and whole sequences.

Notation (PyTorch's): N batch, T time steps, H hidden size, x_t the input and
h_t, c_t the states at step t. A cell's matrix products are not part of its
gate op: the layer computes the *preactivations*

    a_t = x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh        (N, G*H)

with BLAS and the op does everything elementwise that follows, in one pass.
Gate blocks are laid out side by side along the last axis, in PyTorch's
order: RNN [h] (G = 1), LSTM [i, f, g, o] (G = 4), GRU [r, z, n] (G = 3).

Two families of ops:

* ``*_cell_forward`` / ``*_cell_backward``: one time step, (N, G*H) arrays.
* ``*_sequence_forward`` / ``*_sequence_backward``: the whole time loop of
  one layer, on time-major buffers (T, N, ...) that the layer preallocates.
  The input projections x_t W_ih^T of all steps are computed by the layer
  beforehand (one matrix product); the op runs the recurrence: per step one
  product with W_hh and one fused gate kernel, which also adds the biases
  (forward) and sums their gradients (backward). They update their buffers
  in place (``inplace=``), so a training step allocates nothing.

The references below are the plain NumPy loops the kernels must agree with.
"""
import numpy as np

from . import op


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def _act(pre, nonlinearity):
    return np.tanh(pre) if nonlinearity == "tanh" else np.maximum(pre, 0)


def _act_grad(grad, h, nonlinearity):
    """dL/d(pre) from dL/dh and h = act(pre): tanh' = 1 - h^2, relu' = [h > 0]."""
    return grad * (1 - h * h) if nonlinearity == "tanh" else grad * (h > 0)


def _split(a, parts):
    return np.split(a, parts, axis=-1)


def _rand(rng, dtype, *shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(dtype)


# example sizes: T steps, N rows, H hidden units
_T, _N, _H = 4, 3, 5


# --- vanilla RNN -----------------------------------------------------------------
@op("pre: (N, H) preactivation; out: (N, H)",
    example=lambda rng, dtype: dict(pre=_rand(rng, dtype, _N, _H, scale=2), nonlinearity="tanh"))
def rnn_cell_forward(pre, nonlinearity="tanh", out=None):
    """h = tanh(pre) or relu(pre)."""
    return _act(pre, nonlinearity)


@op("grad_h, h: (N, H); out: (N, H)",
    example=lambda rng, dtype: dict(grad_h=_rand(rng, dtype, _N, _H),
                                    h=np.maximum(_rand(rng, dtype, _N, _H), 0),
                                    nonlinearity="relu"))
def rnn_cell_backward(grad_h, h, nonlinearity="tanh", out=None):
    """dL/d(pre) = dL/dh * (1 - h^2) for tanh, dL/dh * [h > 0] for relu."""
    return _act_grad(grad_h, h, nonlinearity)


def _rnn_seq_example(rng, dtype, nonlinearity="tanh"):
    return dict(pre=_rand(rng, dtype, _T, _N, _H), w_hh=_rand(rng, dtype, _H, _H, scale=0.4),
                bias=_rand(rng, dtype, _H), h=_rand(rng, dtype, _T + 1, _N, _H),
                nonlinearity=nonlinearity)


@op("pre: (T, N, H) = x_t W_ih^T; w_hh: (H, H); bias: (H,) = b_ih + b_hh; h: (T+1, N, H), "
    "h[0] = h_0 on entry, h[t+1] = h_t on exit",
    example=lambda rng, dtype: _rnn_seq_example(rng, dtype, "relu"), inplace=("h",))
def rnn_sequence_forward(pre, w_hh, bias, h, nonlinearity="tanh"):
    """h_t = act(pre_t + bias + h_{t-1} W_hh^T) for t = 0 .. T-1 (h_{-1} = h[0])."""
    h = h.copy()
    for t in range(pre.shape[0]):
        h[t + 1] = _act(pre[t] + bias + h[t] @ w_hh.T, nonlinearity)
    return h


def _rnn_seq_back_example(rng, dtype):
    ex = _rnn_seq_example(rng, dtype)
    h = ex["h"]
    h[1:] = np.tanh(h[1:])
    return dict(h=h, w_hh=ex["w_hh"], grad_h=_rand(rng, dtype, _T + 1, _N, _H),
                grad_pre=np.zeros((_T, _N, _H), dtype), grad_bias=_rand(rng, dtype, _H),
                nonlinearity="tanh")


@op("h: (T+1, N, H) from rnn_sequence_forward; w_hh: (H, H); grad_h: (T+1, N, H), on entry "
    "dL/dh_t from outside the recurrence (the layer above), on exit the total dL/dh_t "
    "(grad_h[0] = dL/dh_0); grad_pre: (T, N, H), on exit dL/d(pre_t); grad_bias: (H,), "
    "dL/d(bias) added in",
    example=_rnn_seq_back_example, inplace=("grad_h", "grad_pre", "grad_bias"))
def rnn_sequence_backward(h, w_hh, grad_h, grad_pre, grad_bias, nonlinearity="tanh"):
    """Backpropagation through time, t = T-1 .. 0:
    dpre_t = dh_t * act'(h_t);  dh_{t-1} += dpre_t W_hh;  then grad_bias += sum of dpre."""
    grad_h, grad_pre = grad_h.copy(), grad_pre.copy()
    for t in reversed(range(grad_pre.shape[0])):
        grad_pre[t] = _act_grad(grad_h[t + 1], h[t + 1], nonlinearity)
        grad_h[t] = grad_h[t] + grad_pre[t] @ w_hh
    return grad_h, grad_pre, grad_bias + grad_pre.sum(axis=(0, 1))


# --- LSTM --------------------------------------------------------------------------
def _lstm_forward(gates, c_prev):
    a_i, a_f, a_g, a_o = _split(gates, 4)
    i, f, g, o = _sigmoid(a_i), _sigmoid(a_f), np.tanh(a_g), _sigmoid(a_o)
    c = f * c_prev + i * g
    h = o * np.tanh(c)
    return h, c, np.concatenate([i, f, g, o], axis=-1)


@op("gates: (N, 4H) preactivations [i, f, g, o]; c_prev: (N, H); h, c: (N, H); "
    "acts: (N, 4H), may be gates itself",
    example=lambda rng, dtype: dict(gates=_rand(rng, dtype, _N, 4 * _H, scale=2),
                                    c_prev=_rand(rng, dtype, _N, _H)))
def lstm_cell_forward(gates, c_prev, h=None, c=None, acts=None):
    """i, f, o = sigmoid(a_i, a_f, a_o); g = tanh(a_g); c = f c_prev + i g; h = o tanh(c).

    Returns (h, c, acts) with acts = [i, f, g, o], what the backward needs.
    """
    return _lstm_forward(gates, c_prev)


def _lstm_backward(grad_h, grad_c, acts, c_prev, c):
    i, f, g, o = _split(acts, 4)
    tc = np.tanh(c)
    dc = grad_c + grad_h * o * (1 - tc * tc)
    d_i = dc * g * i * (1 - i)
    d_f = dc * c_prev * f * (1 - f)
    d_g = dc * i * (1 - g * g)
    d_o = grad_h * tc * o * (1 - o)
    return np.concatenate([d_i, d_f, d_g, d_o], axis=-1), dc * f


def _lstm_cell_back_example(rng, dtype):
    gates = _rand(rng, dtype, _N, 4 * _H, scale=2)
    c_prev = _rand(rng, dtype, _N, _H)
    _, c, acts = _lstm_forward(gates, c_prev)
    return dict(grad_h=_rand(rng, dtype, _N, _H), grad_c=_rand(rng, dtype, _N, _H),
                acts=acts.astype(dtype), c_prev=c_prev, c=c.astype(dtype))


@op("grad_h, grad_c: (N, H) dL/dh_t and dL/dc_t from outside (the future, the layer above); "
    "acts: (N, 4H) from lstm_cell_forward; c_prev, c: (N, H); grad_gates: (N, 4H), may be acts "
    "itself; grad_c_prev: (N, H), may be grad_c itself",
    example=_lstm_cell_back_example)
def lstm_cell_backward(grad_h, grad_c, acts, c_prev, c, grad_gates=None, grad_c_prev=None):
    """dc = grad_c + grad_h o (1 - tanh^2 c);
    d a_i = dc g i(1-i), d a_f = dc c_prev f(1-f), d a_g = dc i (1-g^2),
    d a_o = grad_h tanh(c) o(1-o);  dL/dc_prev = dc f.  Returns (grad_gates, grad_c_prev)."""
    return _lstm_backward(grad_h, grad_c, acts, c_prev, c)


def _lstm_seq_example(rng, dtype):
    return dict(gates=_rand(rng, dtype, _T, _N, 4 * _H),
                w_hh=_rand(rng, dtype, 4 * _H, _H, scale=0.4), bias=_rand(rng, dtype, 4 * _H),
                h=_rand(rng, dtype, _T + 1, _N, _H), c=_rand(rng, dtype, _T + 1, _N, _H))


@op("gates: (T, N, 4H), on entry x_t W_ih^T, on exit the activations [i, f, g, o]; "
    "w_hh: (4H, H); bias: (4H,) = b_ih + b_hh; h, c: (T+1, N, H), [0] = initial state on "
    "entry, [t+1] = state t on exit",
    example=_lstm_seq_example, inplace=("gates", "h", "c"))
def lstm_sequence_forward(gates, w_hh, bias, h, c):
    """For t = 0 .. T-1: a_t = gates_t + bias + h_{t-1} W_hh^T, then the cell
    (lstm_cell_forward)."""
    gates, h, c = gates.copy(), h.copy(), c.copy()
    for t in range(gates.shape[0]):
        h[t + 1], c[t + 1], gates[t] = _lstm_forward(gates[t] + bias + h[t] @ w_hh.T, c[t])
    return gates, h, c


def _lstm_seq_back_example(rng, dtype):
    ex = _lstm_seq_example(rng, dtype)
    gates, h, c = lstm_sequence_forward(**ex)
    return dict(gates=gates.astype(dtype), c=c.astype(dtype), w_hh=ex["w_hh"],
                grad_h=_rand(rng, dtype, _T + 1, _N, _H), grad_c=_rand(rng, dtype, _N, _H),
                grad_bias=_rand(rng, dtype, 4 * _H))


@op("gates: (T, N, 4H), activations from lstm_sequence_forward on entry, dL/d(preactivations) "
    "on exit; c: (T+1, N, H) cell states; w_hh: (4H, H); grad_h: (T+1, N, H), on entry dL/dh_t "
    "from outside the recurrence, on exit the total dL/dh_t (grad_h[0] = dL/dh_0); grad_c: "
    "(N, H), dL/dc_T on entry (the c_n gradient), dL/dc_0 on exit; grad_bias: (4H,), "
    "dL/d(b_ih) = dL/d(b_hh) added in",
    example=_lstm_seq_back_example, inplace=("gates", "grad_h", "grad_c", "grad_bias"))
def lstm_sequence_backward(gates, c, w_hh, grad_h, grad_c, grad_bias):
    """Backpropagation through time, t = T-1 .. 0: the cell backward
    (lstm_cell_backward), then dh_{t-1} += d a_t W_hh;  grad_bias += sum of d a."""
    gates, grad_h, grad_c = gates.copy(), grad_h.copy(), grad_c.copy()
    for t in reversed(range(gates.shape[0])):
        gates[t], grad_c = _lstm_backward(grad_h[t + 1], grad_c, gates[t], c[t], c[t + 1])
        grad_h[t] = grad_h[t] + gates[t] @ w_hh
    return gates, grad_h, grad_c, grad_bias + gates.sum(axis=(0, 1))


# --- GRU ---------------------------------------------------------------------------
def _gru_forward(gx, gh, b_hh, h_prev):
    x_r, x_z, x_n = _split(gx, 3)
    h_r, h_z, h_n = _split(gh + b_hh, 3)
    r, z = _sigmoid(x_r + h_r), _sigmoid(x_z + h_z)
    n = np.tanh(x_n + r * h_n)
    return (1 - z) * n + z * h_prev, np.concatenate([r, z, n], axis=-1), h_n


@op("gx: (N, 3H) = x W_ih^T + b_ih; gh: (N, 3H) = h_prev W_hh^T (no bias); b_hh: (3H,); "
    "h_prev, h: (N, H); acts: (N, 3H), may be gx itself; hn: (N, H)",
    example=lambda rng, dtype: dict(gx=_rand(rng, dtype, _N, 3 * _H, scale=2),
                                    gh=_rand(rng, dtype, _N, 3 * _H),
                                    b_hh=_rand(rng, dtype, 3 * _H),
                                    h_prev=_rand(rng, dtype, _N, _H)))
def gru_cell_forward(gx, gh, b_hh, h_prev, h=None, acts=None, hn=None):
    """r = sigmoid(gx_r + gh_r + b_hr), z = sigmoid(gx_z + gh_z + b_hz),
    n = tanh(gx_n + r hn) with hn = gh_n + b_hn, h = (1 - z) n + z h_prev (PyTorch's GRU).

    Returns (h, acts = [r, z, n], hn), what the backward needs.
    """
    return _gru_forward(gx, gh, b_hh, h_prev)


def _gru_backward(grad_h, acts, hn, h_prev):
    r, z, n = _split(acts, 3)
    d_n = grad_h * (1 - z) * (1 - n * n)
    d_z = grad_h * (h_prev - n) * z * (1 - z)
    d_r = d_n * hn * r * (1 - r)
    return (np.concatenate([d_r, d_z, d_n], axis=-1),
            np.concatenate([d_r, d_z, d_n * r], axis=-1), grad_h * z)


def _gru_cell_back_example(rng, dtype):
    h_prev = _rand(rng, dtype, _N, _H)
    _, acts, hn = _gru_forward(_rand(rng, dtype, _N, 3 * _H, scale=2),
                               _rand(rng, dtype, _N, 3 * _H), _rand(rng, dtype, 3 * _H), h_prev)
    return dict(grad_h=_rand(rng, dtype, _N, _H), acts=acts.astype(dtype),
                hn=hn.astype(dtype), h_prev=h_prev)


@op("grad_h: (N, H) total dL/dh; acts: (N, 3H), hn: (N, H) from gru_cell_forward; h_prev: (N, H); "
    "grad_gx: (N, 3H), may be acts itself; grad_gh: (N, 3H); grad_h_prev: (N, H)",
    example=_gru_cell_back_example)
def gru_cell_backward(grad_h, acts, hn, h_prev, grad_gx=None, grad_gh=None, grad_h_prev=None):
    """d a_n = dh (1-z)(1-n^2), d a_z = dh (h_prev - n) z(1-z), d a_r = d a_n hn r(1-r);
    grad_gx = [d a_r, d a_z, d a_n] (also dL/db_ih), grad_gh = [d a_r, d a_z, d a_n r]
    (also dL/db_hh), grad_h_prev = dh z, the part of dL/dh_prev that bypasses W_hh
    (the layer adds grad_gh W_hh). Returns (grad_gx, grad_gh, grad_h_prev)."""
    return _gru_backward(grad_h, acts, hn, h_prev)


def _gru_seq_example(rng, dtype):
    return dict(gates=_rand(rng, dtype, _T, _N, 3 * _H),
                w_hh=_rand(rng, dtype, 3 * _H, _H, scale=0.4), b_ih=_rand(rng, dtype, 3 * _H),
                b_hh=_rand(rng, dtype, 3 * _H), h=_rand(rng, dtype, _T + 1, _N, _H),
                hn=np.zeros((_T, _N, _H), dtype))


@op("gates: (T, N, 3H), on entry x_t W_ih^T, on exit the activations [r, z, n]; "
    "w_hh: (3H, H); b_ih, b_hh: (3H,); h: (T+1, N, H), h[0] = h_0 on entry, h[t+1] = h_t on "
    "exit; hn: (T, N, H), on exit h_{t-1} W_hn^T + b_hn",
    example=_gru_seq_example, inplace=("gates", "h", "hn"))
def gru_sequence_forward(gates, w_hh, b_ih, b_hh, h, hn):
    """For t = 0 .. T-1: gx_t = gates_t + b_ih, gh_t = h_{t-1} W_hh^T, then the cell
    (gru_cell_forward)."""
    gates, h, hn = gates.copy(), h.copy(), hn.copy()
    for t in range(gates.shape[0]):
        h[t + 1], gates[t], hn[t] = _gru_forward(gates[t] + b_ih, h[t] @ w_hh.T, b_hh, h[t])
    return gates, h, hn


def _gru_seq_back_example(rng, dtype):
    ex = _gru_seq_example(rng, dtype)
    gates, h, hn = gru_sequence_forward(**ex)
    return dict(gates=gates.astype(dtype), hn=hn.astype(dtype), h=h.astype(dtype),
                w_hh=ex["w_hh"], grad_h=_rand(rng, dtype, _T + 1, _N, _H),
                grad_gh=np.zeros((_T, _N, 3 * _H), dtype), grad_b_ih=_rand(rng, dtype, 3 * _H),
                grad_b_hh=_rand(rng, dtype, 3 * _H))


@op("gates: (T, N, 3H), activations from gru_sequence_forward on entry, dL/d(gx_t) on exit; "
    "hn: (T, N, H), h: (T+1, N, H) from the forward; w_hh: (3H, H); grad_h: (T+1, N, H), on "
    "entry dL/dh_t from outside the recurrence, on exit the total dL/dh_t (grad_h[0] = "
    "dL/dh_0); grad_gh: (T, N, 3H), on exit dL/d(gh_t); grad_b_ih, grad_b_hh: (3H,), "
    "dL/d(b_ih), dL/d(b_hh) added in",
    example=_gru_seq_back_example,
    inplace=("gates", "grad_h", "grad_gh", "grad_b_ih", "grad_b_hh"))
def gru_sequence_backward(gates, hn, h, w_hh, grad_h, grad_gh, grad_b_ih, grad_b_hh):
    """Backpropagation through time, t = T-1 .. 0: the cell backward
    (gru_cell_backward), then dh_{t-1} += dh_t z_t + d gh_t W_hh;
    grad_b_ih += sum of d gx, grad_b_hh += sum of d gh."""
    gates, grad_h, grad_gh = gates.copy(), grad_h.copy(), grad_gh.copy()
    for t in reversed(range(gates.shape[0])):
        gates[t], grad_gh[t], direct = _gru_backward(grad_h[t + 1], gates[t], hn[t], h[t])
        grad_h[t] = grad_h[t] + direct + grad_gh[t] @ w_hh
    return (gates, grad_h, grad_gh, grad_b_ih + gates.sum(axis=(0, 1)),
            grad_b_hh + grad_gh.sum(axis=(0, 1)))


# --- layout -------------------------------------------------------------------------
@op("x: (A, B, ...); out: (B, A, ...), C-contiguous",
    example=lambda rng, dtype: dict(x=_rand(rng, dtype, 3, 4, 5)))
def swap_axes01(x, out=None):
    """out[b, a] = x[a, b]: batch-first (N, T, F) <-> time-major (T, N, F), as a copy."""
    return np.ascontiguousarray(np.swapaxes(x, 0, 1))
