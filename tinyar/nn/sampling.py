"""Drawing tokens or labels from log-probabilities, with temperature and top-k."""
import numpy as np

from ..device import to_host


def sample_from_log_probs(logp, temperature=1.0, top_k=None, rng=None):
    """One index per row from softmax(logp / temperature), optionally among the top k.

    ``temperature`` 0 takes the argmax; below 1 sharpens, above 1 flattens.
    ``top_k`` keeps only the k largest entries of each row before sampling.
    Accepts logits too: softmax(z / T) does not care about a per-row shift.
    """
    if rng is None:
        from ..random import generator
        rng = generator()
    logp = to_host(logp)  # one row per sequence: drawing happens on the host
    if temperature <= 0:
        return logp.argmax(axis=1)
    z = logp.astype(np.float64) / temperature
    if top_k is not None and top_k < z.shape[1]:
        kth = np.partition(z, -top_k, axis=1)[:, -top_k][:, None]
        z = np.where(z >= kth, z, -np.inf)
    z -= z.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    u = rng.random((z.shape[0], 1))
    return np.minimum((p.cumsum(axis=1) < u).sum(axis=1), z.shape[1] - 1)
