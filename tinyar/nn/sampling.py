"""Drawing tokens or labels from log-probabilities, with temperature and top-k."""
import numpy as np

from ..device import to_host
from ..errors import NumericalError
from .checks import check_int, check_real


def sample_from_log_probs(logp, temperature=1.0, top_k=None, rng=None):
    """One index per row from softmax(logp / temperature), optionally among the top k.

    ``temperature`` 0 takes the argmax; below 1 sharpens, above 1 flattens.
    ``top_k`` keeps only the k largest entries of each row before sampling.
    Accepts logits too: softmax(z / T) does not care about a per-row shift, which
    is why the row maximum is subtracted *before* dividing by T: the scores are
    then <= 0, so even a tiny T gives exp(0) = 1 for the best entry and 0 (not
    NaN from inf - inf) for the others.

    A NaN in a row (weights that diverged) raises ``NumericalError``: sampling
    from it would return an arbitrary index without a word.
    """
    temperature = check_real("sampling", "temperature", temperature, low=0.0)
    if top_k is not None:
        top_k = check_int("sampling", "top_k", top_k, low=1)
    if rng is None:
        from ..random import generator
        rng = generator()
    logp = to_host(logp)  # one row per sequence: drawing happens on the host
    if np.isnan(logp).any():
        raise NumericalError(f"sampling: the model's scores hold NaN in "
                             f"{int(np.isnan(logp).any(axis=1).sum())} of {logp.shape[0]} rows; "
                             f"its weights or its input are not finite")
    if temperature <= 0:
        return logp.argmax(axis=1)
    z = logp.astype(np.float64)
    z = (z - z.max(axis=1, keepdims=True)) / temperature
    if top_k is not None and top_k < z.shape[1]:
        kth = np.partition(z, -top_k, axis=1)[:, -top_k][:, None]
        z = np.where(z >= kth, z, -np.inf)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    u = rng.random((z.shape[0], 1))
    return np.minimum((p.cumsum(axis=1) < u).sum(axis=1), z.shape[1] - 1)
