"""``CausalSelfAttention``: multi-head self-attention in which position t sees only <= t.

For x (N, T, E), H heads of width D = E / H:

    [q | k | v] = x W_in^T + b_in                  one product, (N, T, 3E)
    q, k, v -> (N*H, T, D) each                    ``split_heads``: head h is columns h*D..
    S = q k^T                                      (N*H, T, T) scores
    P = softmax(S / sqrt(D)), masked causally      P[i, j] = 0 for j > i
    o = dropout(P) v                               (N*H, T, D)
    y = merge_heads(o) W_out^T + b_out             (N, T, E)

Backward, from dO = dL/do (after the output projection's own backward):

    dV = P^T dO                    dP = dO V^T
    dS = P * (dP - rowsum(dP * P)) / sqrt(D)       the softmax's Jacobian, and the scale
    dQ = dS K                      dK = dS^T Q
    then [dQ | dK | dV] through the input projection, as a Linear layer's backward.

(With attention dropout, P in dV = P^T dO is the dropped P and dP passes back through the
same mask before the softmax's backward.)

Long sequences (more than ``flash_above`` keys) without attention dropout take the *flash*
path: the ops ``flash_attention_forward/backward`` compute o, and later dQ, dK, dV, block by
block from q, k, v and the rows' log-sum-exp, so the T x T matrix P is never stored. The
result is the same as the path above, to rounding.

Generation keeps a ``KVCache`` (the keys and values of every position so far): a forward
with a cache appends the new positions' k, v to it and lets the new queries attend all of
them, so the t-th token costs O(t D) per head instead of recomputing the whole window.

Ops: ``B.matmul``, ``B.add_bias``, ``B.sum_rows``, ``B.split_heads``, ``B.merge_heads``,
``B.batched_matmul``, ``B.causal_softmax_forward/backward``, ``B.append_steps``,
``B.flash_attention_forward/backward``; their NumPy references: ``backend/ops/linalg.py``,
``backend/ops/attention.py``, ``backend/ops/flash.py``.
"""
import math

import numpy as np

from ..backend import backend_of
from ..errors import ConfigError, ShapeError, TinyarError
from . import init
from .checks import (check_dtype, check_flag, check_float_input, check_int, check_real,
                     check_shape, check_size, describe)
from .dropout import Dropout
from .linear import Linear
from .module import Module
from .parameter import Parameter

#: Key length above which attention without dropout takes the flash path (no T x T matrix):
#: on a 2-core EPYC the batched products win up to T = 512, flash at 1024 (backend/cpu/flash.py).
FLASH_ABOVE = 512


class KVCache:
    """The keys and values a ``CausalSelfAttention`` layer has seen: k, v (N*H, Tc, D), or
    None for an empty cache (``KVCache()``). ``length`` = Tc, the positions it holds.

    A cache is a value: a cached forward returns a new ``KVCache`` and leaves the one it
    was given as it was, so a caller may run two continuations from the same cache.
    """

    __slots__ = ("k", "v")

    def __init__(self, k=None, v=None):
        self.k, self.v = k, v

    @property
    def length(self):
        return 0 if self.k is None else self.k.shape[1]

    def __repr__(self):
        shape = None if self.k is None else tuple(self.k.shape)
        return f"KVCache(k, v: {shape})"


class CausalSelfAttention(Module):
    """Causal multi-head self-attention, batch first: x (N, T, E) -> y (N, T, E).

    Parameters, named as in ``torch.nn.MultiheadAttention`` so that state_dicts map 1:1:
        in_proj_weight (3E, E)    rows [W_q; W_k; W_v], xavier-uniform at first
        in_proj_bias (3E,)        zero at first (absent when bias=False)
        out_proj.weight (E, E), out_proj.bias (E,)   a ``Linear``; its bias starts at 0

    ``forward(x)`` -> y: the training path; ``backward(dy)`` -> dx.
    ``forward(x, cache)`` -> (y, new_cache), evaluation mode only: ``cache`` is a
    ``KVCache`` (``KVCache()`` to start) of the Tc positions before x; x's T queries sit at
    positions Tc .. Tc+T-1 and attend all Tc+T keys up to their own. A backward is
    possible only after a cached forward that started from an empty cache.

    ``dropout``: the probability of dropping an attention weight in training (tinyar's
    ``Dropout``, its masks from ``tinyar.manual_seed``). ``flash_above``: key lengths above
    which the flash path is taken when no weight is dropped (default ``FLASH_ABOVE``).
    ``keep_attention`` (attribute, default False): keep P as a host array
    ``last_attention`` (N, H, Tq, Tk) for heat maps; the forward then never takes the
    flash path.
    """

    def __init__(self, embed_dim, num_heads, dropout=0.0, bias=True, dtype=np.float32,
                 flash_above=None):
        super().__init__()
        name = "CausalSelfAttention"
        self.embed_dim = check_int(name, "embed_dim", embed_dim)
        self.num_heads = check_int(name, "num_heads", num_heads)
        if self.embed_dim % self.num_heads:
            raise ConfigError(f"{name}: num_heads must divide embed_dim {self.embed_dim}, "
                              f"got {self.num_heads}")
        self.head_dim = self.embed_dim // self.num_heads
        bias, dtype = check_flag(name, "bias", bias), check_dtype(name, dtype)
        self.flash_above = None if flash_above is None else \
            check_int(name, "flash_above", flash_above, low=0)
        e = self.embed_dim
        # torch's xavier_uniform_ on the (3E, E) matrix: bound sqrt(6 / (fan_in + fan_out))
        self.in_proj_weight = Parameter(init.uniform((3 * e, e), math.sqrt(6.0 / (4 * e)),
                                                     dtype))
        self.in_proj_bias = Parameter(init.zeros(3 * e, dtype)) if bias else None
        self.out_proj = Linear(e, e, bias=bias, dtype=dtype)
        if bias:
            self.out_proj.bias.data[...] = 0
        self.attn_drop = Dropout(check_real(name, "dropout", dropout, low=0.0, high=1.0))
        self.keep_attention = False
        self.last_attention = None

    def extra_repr(self):
        return f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, " \
               f"dropout={self.attn_drop.p}, bias={self.in_proj_bias is not None}"

    # --- forward ---------------------------------------------------------------------------
    def forward(self, x, cache=None):
        e, heads = self.embed_dim, self.num_heads
        check_float_input(self, x, self.in_proj_weight.dtype)
        check_shape(self, x, f"(N, T, {e})", ndim=3)
        check_size(self, x, 2, e, f"(N, T, {e})")
        if cache is not None:
            self._check_cache(x, cache)
        B = backend_of(x)
        n, steps = x.shape[0], x.shape[1]
        self._x = x.reshape(n * steps, e)
        qkv = B.matmul(self._x, self.in_proj_weight.data, trans_b=True)  # (N*T, 3E)
        if self.in_proj_bias is not None:
            B.add_bias(qkv, self.in_proj_bias.data)
        qkv = B.split_heads(qkv.reshape(n, steps, 3 * e), 3, heads)  # (3, N*H, T, D)
        q, k, v = qkv[0], qkv[1], qkv[2]  # views, by index on any backend
        prefix = 0 if cache is None else cache.length
        if prefix:  # the new keys and values go after the cached ones
            k, v = B.append_steps(cache.k, k), B.append_steps(cache.v, v)
        scale = 1.0 / math.sqrt(self.head_dim)
        self._n, self._scale, self._prefix = n, scale, prefix
        self._q, self._k, self._v = q, k, v
        self._flash = self._takes_flash(k.shape[1])
        if self._flash:  # o and each row's log-sum-exp; no T x T matrix
            o, self._lse = B.flash_attention_forward(q, k, v, scale)
            self._o, self._p = o, None
        else:
            scores = B.batched_matmul(q, k, trans_b=True)  # (N*H, T, Tc+T)
            p = B.causal_softmax_forward(scores, scale, out=scores)  # in place: one T x T array
            self._p, self._p_dropped = p, self.attn_drop(p)
            o = B.batched_matmul(self._p_dropped, v)  # (N*H, T, D)
            if self.keep_attention:
                self.last_attention = np.array(B.to_host(p)).reshape(
                    n, heads, steps, prefix + steps)
        y = self.out_proj(B.merge_heads(o.reshape(1, *o.shape), n))  # (N, T, E)
        return y if cache is None else (y, KVCache(k, v))

    def _takes_flash(self, keys):
        """The flash path: enough keys, and nothing that needs P (dropout, heat maps)."""
        limit = FLASH_ABOVE if self.flash_above is None else self.flash_above
        dropping = self.attn_drop.training and self.attn_drop.p > 0.0
        return keys > limit and not dropping and not self.keep_attention

    def _check_cache(self, x, cache):
        if not isinstance(cache, KVCache):
            raise TypeError(f"{describe(self)}: cache must be a KVCache (KVCache() to start), "
                            f"got {type(cache).__name__}")
        if self.training:
            raise TinyarError(f"{describe(self)}: a KV cache is for generation; call .eval() "
                              f"first (training runs whole windows, without a cache)")
        if cache.k is not None:
            expected = (x.shape[0] * self.num_heads, cache.length, self.head_dim)
            for name, a in (("k", cache.k), ("v", cache.v)):
                if a is None or tuple(a.shape) != expected:
                    raise ShapeError(f"{describe(self)}: expected cache.{name} of shape "
                                     f"{expected} (N*H, Tc, D) for input {tuple(x.shape)}, got "
                                     f"{None if a is None else tuple(a.shape)}")

    # --- backward --------------------------------------------------------------------------
    def backward(self, grad_out):
        """dL/dx from dL/dy (N, T, E); adds into every parameter's grad (module docstring)."""
        if self._prefix:
            raise TinyarError(f"{describe(self)}: no backward after a forward that continued "
                              f"a KV cache (generation); run the whole window without one")
        B = backend_of(grad_out)
        n, e, heads = self._n, self.embed_dim, self.num_heads
        q, k, v, scale = self._q, self._k, self._v, self._scale
        grad_o = B.split_heads(self.out_proj.backward(grad_out), 1, heads)[0]  # (N*H, T, D)
        grad_heads = B.empty((3,) + tuple(q.shape), q.dtype)  # [dQ, dK, dV], filled in place
        dq, dk, dv = grad_heads[0], grad_heads[1], grad_heads[2]
        if self._flash:  # P recomputed block by block from q, k and the log-sum-exp
            B.flash_attention_backward(grad_o, q, k, v, self._o, self._lse, scale, out_q=dq,
                                       out_k=dk, out_v=dv)
        else:
            B.batched_matmul(self._p_dropped, grad_o, out=dv, trans_a=True)  # dV = P^T dO
            grad_p = self.attn_drop.backward(B.batched_matmul(grad_o, v, trans_b=True))
            grad_s = B.causal_softmax_backward(grad_p, self._p, scale, out=grad_p)  # dL/d(qk^T)
            B.batched_matmul(grad_s, k, out=dq)                # dQ = dS K
            B.batched_matmul(grad_s, q, out=dk, trans_a=True)  # dK = dS^T Q
        grad_qkv = B.merge_heads(grad_heads, n).reshape(-1, 3 * e)  # (N*T, 3E)
        B.matmul(grad_qkv, self._x, out=self.in_proj_weight.grad, trans_a=True, accumulate=True)
        if self.in_proj_bias is not None:
            B.sum_rows(grad_qkv, out=self.in_proj_bias.grad, accumulate=True)
        return B.matmul(grad_qkv, self.in_proj_weight.data).reshape(n, -1, e)
