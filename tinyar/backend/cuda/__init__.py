"""The CUDA backend: numba device arrays and ``numba.cuda`` kernels.

The same ops as the CPU backend (``backend/cpu``), under the same names and
signatures, one kernel file per topic; the imports below name each op and the
file it comes from (``B.lstm_sequence_forward`` in a layer leads here, then to
``cuda/rnn.py``). The topics and every op's NumPy reference are in
``tinyar/backend/ops``.

Without a GPU, ``NUMBA_ENABLE_CUDASIM=1`` (set before numba is imported)
runs every kernel in numba's CUDA simulator: slow (each GPU thread is a
Python thread), but exact, which is how the tests check these kernels on
any machine. Importing this module needs no GPU; allocating does
(``DeviceError`` otherwise).
"""
from . import _util
from ._util import SIMULATOR  # noqa: F401  (True under numba's CUDA simulator)
from ._util import count_launches  # noqa: F401  (kernel launches of a block of code)

name = "cuda"

# The backend protocol (backend/ops: ``protocol()``), file by file.
from .memory import (
    empty, zeros, asarray, copy, contiguous, to_host, is_array, workspace_bytes,
    multiplies_stacks)
from .linalg import matmul, add_bias, sum_rows, axpy
from .elementwise import (
    relu_forward, relu_backward, leaky_relu_forward, leaky_relu_backward, tanh_forward,
    tanh_backward, sigmoid_forward, sigmoid_backward, gelu_forward, gelu_backward,
    gated_tanh_forward, gated_tanh_backward, dropout_mask, dropout_apply, permute)
from .softmax import softmax_forward, softmax_backward, log_softmax_forward, log_softmax_backward
from .loss import (
    cross_entropy_forward, cross_entropy_backward, nll_forward, nll_backward, mse_forward,
    mse_backward, bce_with_logits_forward, bce_with_logits_backward)
from .norm import (
    layer_norm_forward, layer_norm_backward, batch_norm_forward_train, batch_norm_forward_eval,
    batch_norm_backward, batch_norm_backward_eval, batch_norm_update_running)
from .embedding import embedding_forward, embedding_backward, gather_rows, scatter_add_rows
from .optim import (
    sgd_step, adagrad_step, rmsprop_step, adam_step, sum_of_squares, zero_, scale_, clamp_)
from .rnn import (
    rnn_cell_forward, rnn_cell_backward, rnn_sequence_forward, rnn_sequence_backward,
    lstm_cell_forward, lstm_cell_backward, lstm_sequence_forward, lstm_sequence_backward,
    gru_cell_forward, gru_cell_backward, gru_sequence_forward, gru_sequence_backward,
    swap_axes01)
from .conv import (
    im2col, col2im, to_batch_major, to_channel_major, add_channel_bias, channel_sums,
    conv_weight_grad)
from .pool import (
    max_pool2d_forward, max_pool2d_backward, avg_pool2d_forward, avg_pool2d_backward,
    adaptive_avg_pool2d_forward, adaptive_avg_pool2d_backward)
from .multilevel import multilevel_fine_forward, multilevel_fine_backward
from .attention import (
    batched_matmul, causal_softmax_forward, causal_softmax_backward, bias_gelu_forward,
    bias_gelu_backward, split_heads, merge_heads, append_steps)
from .flash import flash_attention_forward, flash_attention_backward

from ..ops import protocol as _protocol  # noqa: E402

__all__ = ["name"] + _protocol()


def is_available():
    """True when CUDA kernels can run here: a GPU, or the simulator."""
    return _util.is_available()
