"""Gradient through time: how much of a loss's gradient reaches each earlier step.

For a recurrent layer run over x_1 .. x_T, put a loss on the top layer's
hidden state at one step tau (the last by default),

    L = sum(R * h_tau)        R: a fixed random (N, H) array, or yours,

and ask for ||dL/dh_t|| at every t <= tau, the *total* derivative: h_t
reaches L through h_{t+1}, h_{t+2}, ... (and through c_t in an LSTM). In a
vanilla RNN each step back multiplies the gradient by
W_hh^T diag(tanh'(a_t)), so unless W_hh is large it shrinks geometrically:
the vanishing gradient (Hochreiter 1991; Bengio, Simard & Frasconi 1994).
The LSTM's cell state is updated additively, c_t = f_t c_{t-1} + i_t g_t,
so its gradient is scaled by the forget gates only and can survive many
more steps.

How it is computed -- by cutting the sequence. The state after step t,
s_t (every layer's h_t, and c_t for an LSTM), is all the future depends on:
running the layer on x_{t+1} .. x_tau from the initial state s_t gives
exactly the same h_tau as the full run. So dL/dh_t is the gradient with
respect to the *initial state* of that shorter run, which is what the
layer's own ``backward`` returns (dh0). For every t we run the suffix and
its backward with the upstream gradient R on the final state of the top
layer. The states s_t come from running the layer one step at a time.
That costs O(tau^2) steps (nothing for the short sequences this is for)
and uses nothing but the layer's public forward and backward: it measures
exactly the BPTT that training uses. The tests compare it with PyTorch
autograd (``retain_grad`` on every step's state of an unrolled torch
cell).

The work is done in float64 on a CPU copy of the layer (dropout off), so the
layer itself is left as it was.
"""
import numpy as np

from ..backend import backend_of


def _twin(layer):
    """A float64 CPU copy of a RNN / LSTM / GRU layer, batch-first, in eval mode."""
    if getattr(layer, "kind", None) not in ("rnn", "lstm", "gru") or \
            not hasattr(layer, "num_layers"):
        raise TypeError(f"gradient_through_time: expected an RNN, LSTM or GRU layer, got "
                        f"{type(layer).__name__}")
    kwargs = dict(input_size=layer.input_size, hidden_size=layer.hidden_size,
                  num_layers=layer.num_layers, bias=layer.bias, batch_first=True,
                  dtype=np.float64)
    if layer.kind == "rnn":
        kwargs["nonlinearity"] = layer.nonlinearity
    twin = type(layer)(**kwargs)
    twin.load_state_dict(layer.state_dict())
    return twin.eval()


def _host64(a):
    if a is None:
        return None
    if not isinstance(a, np.ndarray):
        a = backend_of(a).to_host(a)
    return np.asarray(a, dtype=np.float64)


def _batch_first(layer, x):
    """x as (N, T, I) float64, and whether it was unbatched (T, I)."""
    x = _host64(x)
    if x.ndim == 2:
        return x[None], True
    if x.ndim != 3:
        raise ValueError(f"gradient_through_time: expected x (N, T, I), (T, N, I) or (T, I), "
                         f"got shape {x.shape}")
    return (x if layer.batch_first else x.transpose(1, 0, 2)).copy(), False


def _initial_state(layer, h0, rows):
    """h0 in the layer's own form -> (L, N, H) float64 arrays (None: zeros)."""
    shape = (layer.num_layers, rows, layer.hidden_size)

    def one(s):
        return np.zeros(shape) if s is None else _host64(s).reshape(shape)

    if layer.kind == "lstm":
        h, c = (None, None) if h0 is None else h0
        return (one(h), one(c))
    return one(h0)


def _loss_step(loss_at, steps):
    if loss_at == "last":
        return steps - 1
    tau = int(loss_at)
    tau = tau + steps if tau < 0 else tau
    if not 0 <= tau < steps:
        raise ValueError(f"gradient_through_time: loss_at {loss_at} is outside the "
                         f"{steps} steps of x")
    return tau


def state_gradients(rnn_layer, x, h0=None, loss_at="last", upstream=None, seed=0):
    """dL/dh_t of the top layer for every step t, L = sum(upstream * h_tau).

    ``rnn_layer``: an ``RNN``, ``LSTM`` or ``GRU`` (any number of layers).
    ``x``: its input in its own layout ((N, T, I) when batch_first, (T, N, I)
    otherwise, (T, I) unbatched); ``h0``: its initial state as the layer
    takes it (for an LSTM a pair (h0, c0)), None for zeros.
    ``loss_at``: "last" or the index tau of the step whose output carries the
    loss (negative counts from the end). ``upstream``: R, shaped like one
    step's output ((N, H), or (H,) unbatched); by default standard normal
    from ``seed``.

    Returns a float64 array (T, N, H) ((T, H) unbatched): entry t is
    dL/d(output[:, t]), the gradient reaching the top layer's h_t, whose
    steps after tau are zero (the future does not affect the past).
    """
    layer = _twin(rnn_layer)
    xs, unbatched = _batch_first(rnn_layer, x)
    rows, steps, hidden = xs.shape[0], xs.shape[1], layer.hidden_size
    tau = _loss_step(loss_at, steps)
    if upstream is None:
        upstream = np.random.default_rng(seed).standard_normal((rows, hidden))
    upstream = _host64(upstream).reshape(rows, hidden)

    # s[t] = the state after reading x[:, t] (so s[t] holds output[:, t] as its top h)
    state = _initial_state(layer, h0, rows)
    states = []
    for t in range(tau + 1):
        _, state = layer(xs[:, t:t + 1], state)
        states.append(state)

    grads = np.zeros((steps, rows, hidden))
    grads[tau] = upstream  # h_tau reaches L directly
    top = np.zeros((layer.num_layers, rows, hidden))
    top[-1] = upstream  # dL/dh_tau of the top layer, nothing on the lower ones
    for t in range(tau):
        suffix = xs[:, t + 1:tau + 1]
        layer(suffix, states[t])  # the forward that the backward below differentiates
        no_output_grad = np.zeros((rows, tau - t, hidden))
        grad_final = (top, None) if layer.kind == "lstm" else top
        _, grad_initial = layer.backward(no_output_grad, grad_final)
        dh0 = grad_initial[0] if layer.kind == "lstm" else grad_initial
        grads[t] = dh0[-1]
    return grads[:, 0] if unbatched else grads


def gradient_through_time(rnn_layer, x, h0=None, loss_at="last", upstream=None, seed=0):
    """||dL/dh_t|| for every step t (a float64 array of length T), L = sum(R * h_tau).

    The norm is over the batch and the hidden units of step t. Read it
    backwards from tau: ``norms[tau - k]`` is what is left k steps back.
    See ``state_gradients`` for the arguments and the module docstring for
    the method.
    """
    grads = state_gradients(rnn_layer, x, h0, loss_at, upstream, seed)
    return np.sqrt(np.square(grads.reshape(grads.shape[0], -1)).sum(axis=1))


def steps_back(norms, loss_at="last"):
    """(k, ||dL/dh_{tau-k}||) for k = 0 .. tau: the curve of the vanishing-gradient plot."""
    norms = np.asarray(norms, dtype=np.float64)
    tau = _loss_step(loss_at, norms.size)
    return np.arange(tau + 1), norms[:tau + 1][::-1].copy()


def remember_bias(layer, value=1.0):
    """Add ``value`` to the bias of the gate that keeps the past, in every layer.

    LSTM: the forget gate f (block 1 of i, f, g, o); GRU: the update gate z
    (block 1 of r, z, n; h' = (1 - z) n + z h). With the default
    initialisation both gates start near sigmoid(0) = 1/2, so the memory
    halves at every step; a bias of 1 (Gers et al. 2000; Jozefowicz et al.
    2015) starts them near 0.73. A plain RNN has no such gate: unchanged.
    Returns the layer.
    """
    if layer.kind not in ("lstm", "gru") or not layer.bias:
        return layer
    H = layer.hidden_size
    for k in range(layer.num_layers):
        layer.weights(k)[2].data[H:2 * H] += value
    return layer


def compare_cells(steps=40, input_size=8, hidden_size=32, batch=8, seed=0,
                  cells=("RNN", "LSTM", "GRU"), gate_bias=1.0):
    """Gradient-through-time norms of fresh RNN, LSTM and GRU layers on the same input.

    Each layer has PyTorch's initialisation, drawn after ``manual_seed(seed)``,
    plus ``gate_bias`` on its remember gate (``remember_bias``; 0 for none);
    x is standard normal. Returns {"RNN": norms, "LSTM": norms, "GRU": norms},
    ready for ``figures.plot_vanishing_gradients``.

    What to expect (hidden 32, 30 steps back): the RNN's gradient falls by
    ~1e-8, the LSTM's and GRU's by ~1e-3 with gate_bias=1; with gate_bias=0
    their gates halve the memory at every step and they fare hardly better
    than the RNN.
    """
    from ..nn.recurrent import GRU, LSTM, RNN
    from ..random import manual_seed
    classes = {"RNN": RNN, "LSTM": LSTM, "GRU": GRU}
    x = np.random.default_rng(seed).standard_normal((batch, steps, input_size))
    out = {}
    for name in cells:
        manual_seed(seed)
        layer = remember_bias(classes[name](input_size, hidden_size, dtype=np.float64), gate_bias)
        out[name] = gradient_through_time(layer, x, seed=seed)
    return out
