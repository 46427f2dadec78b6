"""The fine level of the multi-level softmax: one softmax per class block.

Rows arrive sorted by their target's class: ``groups`` (G, 4) holds, per
class present in the batch, [first row, end row, first label, end label].
Group g's logits are Z_g = H[r0:r1] W[l0:l1]^T + b[l0:l1], a (rows x labels)
block, and each row's loss is the cross-entropy of its softmax with the row's
``local`` target (index inside the class).
"""
import numpy as np

from . import op


def _example(rng, dtype):
    hidden, rows = 4, 7
    weight = rng.standard_normal((9, hidden)).astype(dtype)
    return dict(h=rng.standard_normal((rows, hidden)).astype(dtype), weight=weight,
                bias=rng.standard_normal(9).astype(dtype),
                groups=np.array([[0, 3, 0, 2], [3, 4, 2, 6], [4, 7, 6, 9]], np.int64),
                local=np.array([1, 0, 1, 3, 0, 2, 1], np.int64))


def _blocks(h, weight, bias, groups):
    for r0, r1, l0, l1 in groups:
        z = h[r0:r1] @ weight[l0:l1].T + bias[l0:l1]
        z = z - z.max(axis=1, keepdims=True)
        yield r0, r1, l0, l1, z - np.log(np.exp(z).sum(axis=1, keepdims=True))


@op("h: (M, H) rows sorted by class; weight: (V, H); bias: (V,); groups: (G, 4) int64; "
    "local: (M,) int64 -> losses (M,), probs: (sum_g rows_g * labels_g,) the softmax blocks",
    example=_example, rtol32=1e-4, atol32=1e-5)
def multilevel_fine_forward(h, weight, bias, groups, local, out_losses=None, out_probs=None):
    losses, probs = np.empty(h.shape[0]), []
    for r0, r1, l0, l1, logp in _blocks(h, weight, bias, groups):
        losses[r0:r1] = -logp[np.arange(r1 - r0), local[r0:r1]]
        probs.append(np.exp(logp).reshape(-1))
    return losses, np.concatenate(probs)


def _backward_example(rng, dtype):
    args = _example(rng, dtype)
    _, probs = multilevel_fine_forward(**args)
    return dict(probs=probs.astype(dtype), h=args["h"], weight=args["weight"],
                groups=args["groups"], local=args["local"], scale=0.5,
                grad_weight=rng.standard_normal(args["weight"].shape).astype(dtype),
                grad_bias=rng.standard_normal(9).astype(dtype),
                grad_h=rng.standard_normal(args["h"].shape).astype(dtype))


@op("probs from the forward; scale: dL/dloss of every row; grad_weight (V, H), grad_bias (V,) "
    "accumulate; grad_h (M, H) is overwritten with the fine level's dL/dh",
    example=_backward_example, inplace=("grad_weight", "grad_bias", "grad_h"),
    contiguous=("probs", "grad_weight", "grad_bias", "grad_h"), rtol32=1e-4, atol32=1e-5)
def multilevel_fine_backward(probs, h, weight, groups, local, scale, grad_weight, grad_bias,
                             grad_h):
    """dZ = scale (P - onehot(local)); dW[l0:l1] += dZ^T H; db += sum dZ; dH = dZ W."""
    grad_weight, grad_bias, grad_h = grad_weight.copy(), grad_bias.copy(), grad_h.copy()
    offset = 0
    for r0, r1, l0, l1 in groups:
        n, s = r1 - r0, l1 - l0
        dz = probs[offset:offset + n * s].reshape(n, s).astype(np.float64).copy()
        offset += n * s
        dz[np.arange(n), local[r0:r1]] -= 1
        dz *= scale
        grad_weight[l0:l1] += dz.T @ h[r0:r1]
        grad_bias[l0:l1] += dz.sum(axis=0)
        grad_h[r0:r1] = dz @ weight[l0:l1]
    return grad_weight, grad_bias, grad_h
