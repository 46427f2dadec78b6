"""The optimizers' update rules for one element: torch.optim's single-tensor
algorithms, in its order of operations (so float32 trajectories match PyTorch's
to rounding). Each returns the new parameter and the new optimizer state of
the element; the kernels (``cpu/optim.py``, ``cuda/optim.py``) loop over the flat
buffers and store them.

Scalars that depend only on the hyperparameters and the step (``-lr``, bias
corrections, ``1 - beta``) arrive precomputed, in the buffers' dtype.
"""
import math


def lerp(start, end, weight, one_minus_weight):
    """start + weight (end - start), the way torch.lerp writes it (exact at both ends)."""
    if abs(weight) < 0.5:
        return start + weight * (end - start)
    return end - (end - start) * one_minus_weight


def sgd(p, g, b, neg_lr, momentum, one_minus_dampening, weight_decay, nesterov, first_step):
    """SGD with L2 weight decay, momentum (buffer ``b``, started at the gradient on the
    first step), dampening and Nesterov: returns (p, b)."""
    if weight_decay != 0:
        g = g + weight_decay * p
    if momentum != 0:
        b = g if first_step else b * momentum + one_minus_dampening * g
        g = g + momentum * b if nesterov else b
    return p + neg_lr * g, b


def adagrad(p, g, s, neg_clr, weight_decay, eps):
    """Adagrad: the sum of squared gradients ``s`` scales the step; returns (p, s)."""
    if weight_decay != 0:
        g = g + weight_decay * p
    s = s + g * g
    return p + neg_clr * g / (math.sqrt(s) + eps), s


def rmsprop(p, g, v, m, b, neg_lr, alpha, one_minus_alpha, eps, weight_decay, momentum,
            centered):
    """RMSprop: running mean of squares ``v``; ``centered`` subtracts the squared
    running mean ``m`` (a variance estimate); ``momentum > 0`` keeps a buffer ``b`` of
    the scaled steps. Returns (p, v, m, b)."""
    if weight_decay != 0:
        g = g + weight_decay * p
    v = v * alpha + one_minus_alpha * g * g
    variance = v
    if centered:
        m = lerp(m, g, one_minus_alpha, alpha)
        variance = v - m * m
    denom = math.sqrt(variance) + eps
    if momentum > 0:
        b = b * momentum + g / denom
        return p + neg_lr * b, v, m, b
    return p + neg_lr * g / denom, v, m, b


def adam(p, g, m, v, v_max, neg_step_size, beta1, one_minus_beta1, beta2, one_minus_beta2,
         bias_correction2_sqrt, eps, weight_decay, decay, decoupled, amsgrad):
    """Adam; AdamW when ``decoupled`` (the weights shrink by ``decay = 1 - lr wd``, apart
    from the gradient); AMSGrad when ``amsgrad`` (the denominator uses the largest second
    moment so far, ``v_max``; a NaN propagates). Returns (p, m, v, v_max)."""
    if weight_decay != 0:
        if decoupled:
            p = p * decay
        else:
            g = g + weight_decay * p
    m = lerp(m, g, one_minus_beta1, beta1)
    v = v * beta2 + one_minus_beta2 * g * g
    v_hat = v
    if amsgrad:
        if not v_max >= v:
            v_max = v
        v_hat = v_max
    denom = math.sqrt(v_hat) / bias_correction2_sqrt + eps
    return p + neg_step_size * m / denom, m, v, v_max
