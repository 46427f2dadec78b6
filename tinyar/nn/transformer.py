"""A GPT backbone: learned positions and pre-LayerNorm transformer blocks.

    h = dropout(x + pos[0:T])                          (N, T, E)
    h = block_l(h) for l = 0 .. L-1                    causal self-attention + an MLP
    out = LayerNorm(h)

and each block (``TransformerBlock``), as ``torch.nn.TransformerEncoderLayer(norm_first=True)``:

    h = h + dropout1(attn(norm1(h)))
    h = h + dropout2(linear2(dropout(gelu(linear1(norm2(h))))))

The residual sums make each block's backward ``dh = g + (the branch's backward of g)``.

``TransformerStack`` has the backbone interface of the recurrent and convolutional stacks
(``forward(x, state) -> (out, state)``, ``backward(grad_output) -> (dx, None)``), so that
``AutoregressiveLM`` can use it in their place. Its state, in evaluation mode, is a
``TransformerCache``: each layer's keys and values, so that generating a token costs
O(T E) instead of the O(T^2 E) of running the window again.

Ops: ``B.matmul``, ``B.bias_gelu_forward/backward``, ``B.sum_rows``, ``B.add_bias``,
``B.axpy``, ``B.copy``, ``B.contiguous``, ``B.append_steps`` and those of the layers used
(``nn/attention.py``, ``nn/linear.py``, ``nn/normalization.py``, ``nn/dropout.py``).
"""
import numpy as np

from ..backend import backend_of
from ..errors import ConfigError, ShapeError, TinyarError
from .attention import CausalSelfAttention, KVCache
from .checks import (check_choice, check_dtype, check_float_input, check_flag, check_int,
                     check_output_grad, check_real, check_shape, check_size, describe)
from .dropout import Dropout
from .embedding import Embedding
from .linear import Linear
from .module import Module
from .normalization import LayerNorm

ACTIVATIONS = ("gelu", "gelu_tanh")


def check_heads(owner, embed_dim, num_heads):
    """num_heads: an integer >= 1 that divides embed_dim (each head gets embed_dim / H)."""
    heads = check_int(owner, "num_heads", num_heads)
    if embed_dim % heads:
        raise ConfigError(f"{owner}: num_heads must divide embed_dim {embed_dim}, got {heads}")
    return heads


class TransformerBlock(Module):
    """A pre-LayerNorm transformer block with causal self-attention, batch first.

    Shapes: x (N, T, E) -> y (N, T, E); the MLP's width is F = mlp_ratio * E.

    Parameter names are ``torch.nn.TransformerEncoderLayer(d_model=E, nhead=H,
    dim_feedforward=F, dropout=p, activation="gelu", norm_first=True, batch_first=True)``'s,
    so state_dicts map 1:1 (run the torch layer with a causal ``src_mask``):

        self_attn.in_proj_weight (3E, E), self_attn.in_proj_bias (3E,)
        self_attn.out_proj.weight (E, E), self_attn.out_proj.bias (E,)
        linear1.weight (F, E), linear1.bias (F,)     linear2.weight (E, F), linear2.bias (E,)
        norm1.weight, norm1.bias, norm2.weight, norm2.bias (E,)

    Dropout with probability p sits where torch's does: on the attention weights (inside
    ``self_attn``), on the attention branch (``dropout1``), after the activation
    (``dropout``) and on the MLP branch (``dropout2``). ``bias=False`` removes every bias,
    the LayerNorms' too, as torch's ``bias=False``. ``activation``: "gelu" (exact, erf) or
    "gelu_tanh" (the tanh approximation; torch's twin is
    ``activation=lambda x: F.gelu(x, approximate="tanh")``).

    The MLP's first layer is a product and a fused bias + GELU:
        a = x W1^T,  u = gelu(a + b1)         (``B.matmul``, ``B.bias_gelu_forward``)
        du/d(a + b1) by ``B.bias_gelu_backward``; dL/db1 = its column sums.

    ``forward(x, cache)`` with a ``KVCache`` returns (y, new_cache), as the attention does.
    """

    def __init__(self, embed_dim, num_heads, mlp_ratio=4, dropout=0.0, activation="gelu",
                 bias=True, dtype=np.float32):
        super().__init__()
        name = "TransformerBlock"
        e = self.embed_dim = check_int(name, "embed_dim", embed_dim)
        check_heads(name, e, num_heads)
        self.mlp_ratio = check_int(name, "mlp_ratio", mlp_ratio)
        p = check_real(name, "dropout", dropout, low=0.0, high=1.0)
        self.activation = check_choice(name, "activation", activation, ACTIVATIONS)
        bias, dtype = check_flag(name, "bias", bias), check_dtype(name, dtype)
        hidden = self.mlp_ratio * e
        self.self_attn = CausalSelfAttention(e, num_heads, dropout=p, bias=bias, dtype=dtype)
        self.linear1 = Linear(e, hidden, bias=bias, dtype=dtype)
        self.dropout = Dropout(p)
        self.linear2 = Linear(hidden, e, bias=bias, dtype=dtype)
        self.norm1 = LayerNorm(e, bias=bias, dtype=dtype)
        self.norm2 = LayerNorm(e, bias=bias, dtype=dtype)
        self.dropout1 = Dropout(p)
        self.dropout2 = Dropout(p)

    def extra_repr(self):
        return f"embed_dim={self.embed_dim}, num_heads={self.self_attn.num_heads}, " \
               f"mlp_ratio={self.mlp_ratio}, activation={self.activation!r}"

    def forward(self, x, cache=None):
        e = self.embed_dim
        check_float_input(self, x, self.linear1.weight.dtype)
        check_shape(self, x, f"(N, T, {e})", ndim=3)
        check_size(self, x, 2, e, f"(N, T, {e})")
        B = backend_of(x)
        attended = self.self_attn(self.norm1(x), cache)
        if cache is not None:
            attended, cache = attended
        # each branch ends in a fresh array that nothing saved for backward: the sum goes there
        h = B.axpy(1.0, x, self.dropout1(attended))
        u = self._mlp_hidden(B, self.norm2(h))
        y = B.axpy(1.0, h, self.dropout2(self.linear2(self.dropout(u))))
        return y if cache is None else (y, cache)

    def _mlp_hidden(self, B, z):
        """gelu(z W1^T + b1), (N, T, F): linear1's product, then the fused bias + GELU."""
        self._z = z.reshape(-1, self.embed_dim)
        self._a = B.matmul(self._z, self.linear1.weight.data, trans_b=True)
        u = B.bias_gelu_forward(self._a, self._bias1(B), self.activation == "gelu_tanh")
        return u.reshape(*z.shape[:-1], -1)

    def _bias1(self, B):
        """linear1's bias, or zeros when there is none (the fused op always adds one)."""
        if self.linear1.bias is not None:
            return self.linear1.bias.data
        return B.zeros(self.linear1.out_features, self.linear1.weight.dtype)

    def backward(self, grad_out):
        B = backend_of(grad_out)
        # h + MLP(norm2(h)): dh = g + norm2'(MLP'(g))
        grad_u = self.dropout.backward(self.linear2.backward(self.dropout2.backward(grad_out)))
        grad_a = B.bias_gelu_backward(grad_u.reshape(self._a.shape), self._a, self._bias1(B),
                                      self.activation == "gelu_tanh")
        weight = self.linear1.weight
        B.matmul(grad_a, self._z, out=weight.grad, trans_a=True, accumulate=True)
        if self.linear1.bias is not None:
            B.sum_rows(grad_a, out=self.linear1.bias.grad, accumulate=True)
        grad_z = B.matmul(grad_a, weight.data).reshape(grad_out.shape)
        grad_h = B.axpy(1.0, grad_out, self.norm2.backward(grad_z))
        # x + attn(norm1(x)): dx = dh + norm1'(attn'(dh))
        grad_n1 = self.self_attn.backward(self.dropout1.backward(grad_h))
        return B.axpy(1.0, grad_h, self.norm1.backward(grad_n1))


class TransformerCache:
    """A ``TransformerStack``'s state in evaluation mode: what generation carries forward.

        layers   one ``KVCache`` per block, each of ``length`` positions
        inputs   the last min(length, context - 1) raw inputs x (N, *, E), or None:
                 what a window that outgrows the context is recomputed from
        length   the positions seen so far that the caches hold (<= context)

    A value, like ``KVCache``: a forward returns a new one and leaves its argument as it
    was.
    """

    __slots__ = ("layers", "inputs", "length")

    def __init__(self, layers, inputs, length):
        self.layers, self.inputs, self.length = tuple(layers), inputs, int(length)

    def __repr__(self):
        return f"TransformerCache(layers={len(self.layers)}, length={self.length})"


class TransformerStack(Module):
    """The GPT backbone: x (N, T, E) -> (out (N, T, E), state), batch first, T <= context.

    Parameters: ``pos_embedding.weight`` (context, E), one learned vector per position;
    ``block0.*`` .. ``block{L-1}.*`` (``TransformerBlock``'s names); ``norm.weight``,
    ``norm.bias``. ``drop`` is the dropout on the embedded input.

    Training: windows are independent (``carries_state = False``): ``state`` is ignored
    and None returned, and T > context is an error.

    Evaluation: the state is a ``TransformerCache`` (None to start), and the forward returns
    the new one. With a cache of Tc positions, x's positions are Tc .. Tc+T-1: each layer
    appends their keys and values to its cache and their queries attend everything before
    them, so a token costs O(T E) per layer. When Tc + T would pass ``context``, the window
    slides: the last ``context`` inputs (the cache keeps the last context - 1 raw inputs
    for this) are recomputed from scratch at positions 0 .. context-1, exactly what an
    uncached forward of that window gives, and the cache restarts from them. Past the
    context every token is such a recompute, O(context^2 E), as a model with learned
    absolute positions needs.

    Positions are added with ``B.add_bias`` over (N, T*E) rows, and their gradient is the
    column sums of dL/dh over the batch (``B.sum_rows``): no index arrays, nothing copied
    between host and device.
    """

    carries_state = False

    def __init__(self, embed_dim, num_layers, num_heads, context, mlp_ratio=4, dropout=0.0,
                 activation="gelu", dtype=np.float32):
        super().__init__()
        name = "TransformerStack"
        self.embed_dim = check_int(name, "embed_dim", embed_dim)
        self.num_layers = check_int(name, "num_layers", num_layers)
        self.num_heads = check_heads(name, self.embed_dim, num_heads)
        self.context = check_int(name, "context", context)
        p = check_real(name, "dropout", dropout, low=0.0, high=1.0)
        check_choice(name, "activation", activation, ACTIVATIONS)
        dtype = check_dtype(name, dtype)
        self.pos_embedding = Embedding(self.context, self.embed_dim, dtype=dtype)
        self.drop = Dropout(p)
        for i in range(self.num_layers):  # one by one, as CausalConvStack (allocation limits)
            setattr(self, f"block{i}", TransformerBlock(self.embed_dim, self.num_heads,
                                                        mlp_ratio, p, activation, dtype=dtype))
        self.norm = LayerNorm(self.embed_dim, dtype=dtype)
        self.hidden_size = self.embed_dim  # what a language-model head reads

    def extra_repr(self):
        return f"embed_dim={self.embed_dim}, num_layers={self.num_layers}, " \
               f"num_heads={self.num_heads}, context={self.context}"

    def _blocks(self):
        return [getattr(self, f"block{i}") for i in range(self.num_layers)]

    # --- forward ---------------------------------------------------------------------------
    def forward(self, x, state=None):
        e = self.embed_dim
        check_float_input(self, x, self.norm.weight.dtype)
        check_shape(self, x, f"(N, T, {e})", ndim=3)
        check_size(self, x, 2, e, f"(N, T, {e})")
        steps = x.shape[1]
        if steps > self.context:
            raise ShapeError(f"{describe(self)}: expected at most context={self.context} "
                             f"positions, got input {tuple(x.shape)}; feed windows of at most "
                             f"{self.context} steps")
        self._continued = False
        if self.training:
            return self._run(x, 0, None), None
        if state is not None and not isinstance(state, TransformerCache):
            raise TypeError(f"{describe(self)}: state must be None or the TransformerCache a "
                            f"forward returned, got {type(state).__name__}")
        B = backend_of(x)
        if state is not None and state.length + steps > self.context:
            # slide the window: the last `context` inputs, recomputed from position 0
            window = B.append_steps(state.inputs, x) if state.inputs is not None else x
            window = B.contiguous(window[:, window.shape[1] - self.context:])
            self._continued = True
            out, caches = self._run(window, 0, [KVCache() for _ in range(self.num_layers)])
            out = B.contiguous(out[:, self.context - steps:])
            return out, self._new_cache(B, caches, None, window, self.context)
        if state is None:
            state = TransformerCache([KVCache() for _ in range(self.num_layers)], None, 0)
        self._continued = state.length > 0
        out, caches = self._run(x, state.length, list(state.layers))
        return out, self._new_cache(B, caches, state.inputs, x, state.length + steps)

    def _new_cache(self, B, caches, inputs, x, length):
        """The cache after x: its layers, and the last context - 1 raw inputs."""
        keep = min(length, self.context - 1)
        if keep == 0:
            return TransformerCache(caches, None, length)
        seen = x if inputs is None else B.append_steps(inputs, x)
        return TransformerCache(caches, B.contiguous(seen[:, seen.shape[1] - keep:]), length)

    def _run(self, x, start, caches):
        """out = norm(blocks(drop(x + pos[start:start+T]))); with caches (a list of one
        KVCache per block) also returns the new ones."""
        B = backend_of(x)
        n, steps, e = x.shape
        h = B.copy(x)
        positions = self.pos_embedding.weight.data[start:start + steps]
        B.add_bias(h.reshape(n, steps * e), positions.reshape(steps * e))
        self._steps = steps
        self._start = start
        h = self.drop(h)
        for i, block in enumerate(self._blocks()):
            if caches is None:
                h = block(h)
            else:
                h, caches[i] = block(h, caches[i])
        out = self.norm(h)
        self._output_shape = out.shape
        return out if caches is None else (out, caches)

    # --- backward --------------------------------------------------------------------------
    def backward(self, grad_output, grad_state=None):
        """(dx, None): no gradient reaches a state (the cache is not differentiated)."""
        if self._continued:
            raise TinyarError(f"{describe(self)}: no backward after a forward that continued "
                              f"a cache (generation); run the whole window without a state")
        check_output_grad(self, grad_output, self._output_shape,
                          what="grad_output of the output's shape")
        B = backend_of(grad_output)
        g = self.norm.backward(grad_output)
        for block in reversed(self._blocks()):
            g = block.backward(g)
        g = self.drop.backward(g)
        n, steps, e = g.shape
        grad_pos = self.pos_embedding.weight.grad[self._start:self._start + steps]
        B.sum_rows(g.reshape(n, steps * e), out=grad_pos.reshape(steps * e), accumulate=True)
        return g, None  # h = x + pos: dL/dx = dL/dh
