"""``Embedding``: a lookup table of learned vectors, one row per token id."""
import numpy as np

from ..backend import backend_of
from ..errors import DTypeError, TargetError
from . import init
from .checks import check_dtype, check_int, describe
from .module import Module
from .parameter import Parameter


class Embedding(Module):
    """y[..., :] = weight[indices[...], :].

    Shapes:
        indices: any shape, any integer dtype, values in [0, num_embeddings)
        y: (*indices.shape, embedding_dim)
        weight: (num_embeddings, embedding_dim), initialised N(0, 1) as in PyTorch

    Forward is a gather of rows. It equals one_hot(indices) @ weight, so the
    backward is that product's weight gradient, a scatter-add of rows:
        dL/dweight[v] += sum of g[i] over the positions i with indices[i] = v
    A row used k times in the batch receives k contributions.

    ``padding_idx``: that row starts at zero and receives no gradient, so it
    stays zero under plain SGD (a "no token" vector). A negative value counts
    from the end, as in PyTorch.

    Indices are not differentiable: backward returns None. On a GPU they
    may be a device array or a NumPy array (data loaders make them on the
    host), which the ops copy over.

    Ops: ``B.embedding_forward``, ``B.embedding_backward``; their NumPy references:
    ``backend/ops/embedding.py``.
    """

    def __init__(self, num_embeddings, embedding_dim, padding_idx=None, dtype=np.float32):
        super().__init__()
        self.num_embeddings = check_int("Embedding", "num_embeddings", num_embeddings)
        self.embedding_dim = check_int("Embedding", "embedding_dim", embedding_dim)
        dtype = check_dtype("Embedding", dtype)
        if padding_idx is not None:
            n = self.num_embeddings
            padding_idx = check_int("Embedding", "padding_idx", padding_idx, low=-n,
                                    high=n - 1) % n
        self.padding_idx = padding_idx
        weight = init.normal((self.num_embeddings, self.embedding_dim), 1.0, dtype)
        if padding_idx is not None:
            weight[padding_idx] = 0
        self.weight = Parameter(weight)

    def extra_repr(self):
        text = f"{self.num_embeddings}, {self.embedding_dim}"
        return text if self.padding_idx is None else f"{text}, padding_idx={self.padding_idx}"

    def _check_indices(self, indices):
        dtype = getattr(indices, "dtype", None)
        if dtype is None or not np.issubdtype(dtype, np.integer):
            got = f"dtype {np.dtype(dtype).name}" if dtype is not None else type(indices).__name__
            raise DTypeError(f"{describe(self)}: expected integer indices, got {got}")
        if indices.size == 0:
            return
        # a kernel cannot raise, so the range is checked here, on the host: free for
        # indices from a data loader, one copy for indices already on the GPU
        host = backend_of(indices).to_host(indices)
        low, high = int(host.min()), int(host.max())
        if low < 0 or high >= self.num_embeddings:
            bad = low if low < 0 else high
            raise TargetError(f"{describe(self)}: index {bad} is outside [0, "
                              f"{self.num_embeddings}) (num_embeddings={self.num_embeddings})")

    def forward(self, indices):
        self._check_indices(indices)
        self._indices = indices
        return backend_of(self.weight.data).embedding_forward(self.weight.data, indices)

    def backward(self, grad_out):
        backend_of(grad_out).embedding_backward(grad_out, self._indices, self.padding_idx,
                                                self.weight.grad)
        return None
