"""The gate math of one (row, unit) of the recurrent cells: the same for one time
step and for a whole sequence, on the CPU (``cpu/rnn.py``, inlined into the step
kernels) and on CUDA (``cuda/rnn.py``, device functions of the one-step and the
persistent sequence kernels). PyTorch's gate order: LSTM i, f, g, o; GRU r, z, n.

Inputs are preactivations with their biases added (and, in a sequence, the
recurrent product h_{t-1} W_hh^T); ``zero`` and ``one`` are 0 and 1 in the
arrays' dtype.
"""
from .functions import sigmoid, tanh


def activate(a, relu, zero):
    """The plain RNN's nonlinearity: tanh(a), or relu(a)."""
    if relu:
        return a if a > zero else zero
    return tanh(a)


def activate_backward(grad, y, relu, zero, one):
    """dL/da from dL/dy and y = act(a): tanh' = 1 - y^2, relu' = [y > 0]."""
    if relu:
        return grad if y > zero else zero
    return grad * (one - y * y)


def lstm_cell(a_i, a_f, a_g, a_o, c_prev, one):
    """Preactivations -> (i, f, g, o, c, h):
    i, f, o = sigmoid(a_i, a_f, a_o), g = tanh(a_g), c = f c_prev + i g, h = o tanh(c)."""
    i = sigmoid(a_i, one)
    f = sigmoid(a_f, one)
    g = tanh(a_g)
    o = sigmoid(a_o, one)
    c = f * c_prev + i * g
    return i, f, g, o, c, o * tanh(c)


def lstm_cell_backward(dh, dc_next, i, f, g, o, c_prev, c, one):
    """(dL/dh_t, dL/dc_t from the step after, the activations) ->
    (dL/da_i, dL/da_f, dL/da_g, dL/da_o, dL/dc_{t-1}), with
    dc = dc_next + dh o (1 - tanh^2 c), da_i = dc g i (1 - i), da_f = dc c_prev f (1 - f),
    da_g = dc i (1 - g^2), da_o = dh tanh(c) o (1 - o), dc_{t-1} = dc f."""
    tc = tanh(c)
    dc = dc_next + dh * o * (one - tc * tc)
    return (dc * g * i * (one - i), dc * c_prev * f * (one - f), dc * i * (one - g * g),
            dh * tc * o * (one - o), dc * f)


def gru_cell(x_r, x_z, x_n, h_r, h_z, h_n, h_prev, one):
    """x_*: x W_ih^T + b_ih, h_*: h_prev W_hh^T + b_hh, per gate -> (r, z, n, h):
    r = sigmoid(x_r + h_r), z = sigmoid(x_z + h_z), n = tanh(x_n + r h_n),
    h = (1 - z) n + z h_prev."""
    r = sigmoid(x_r + h_r, one)
    z = sigmoid(x_z + h_z, one)
    n = tanh(x_n + r * h_n)
    return r, z, n, (one - z) * n + z * h_prev


def gru_cell_backward(dh, r, z, n, hn, h_prev, one):
    """-> (dL/da_r, dL/da_z, dL/da_n, the part of dL/dh_prev that bypasses W_hh = dh z),
    with hn = h_n (the recurrent product of the n gate); dL/d(gh) is
    [da_r, da_z, da_n r]."""
    d_n = dh * (one - z) * (one - n * n)
    d_z = dh * (h_prev - n) * z * (one - z)
    d_r = d_n * hn * r * (one - r)
    return d_r, d_z, d_n, dh * z
