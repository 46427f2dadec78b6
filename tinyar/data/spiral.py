"""The two-dimensional spiral data set (as in cs231n): K interleaved arms.

Not linearly separable, so a linear classifier stays near 1/K accuracy while
a small MLP separates it: the smallest problem on which a hidden layer
visibly matters.
"""
import numpy as np


def make_spiral(points_per_class=200, num_classes=3, noise=0.2, seed=0, dtype=np.float32):
    """Returns ``X`` (N, 2) and integer labels ``y`` (N,), N = points_per_class * num_classes."""
    if points_per_class < 1 or num_classes < 2:
        raise ValueError("make_spiral: need points_per_class >= 1 and num_classes >= 2, got "
                         f"{points_per_class} and {num_classes}")
    rng = np.random.default_rng(seed)
    radius = np.tile(np.linspace(0.0, 1.0, points_per_class), num_classes)
    labels = np.repeat(np.arange(num_classes), points_per_class)
    angle = (labels * 4.0 + radius * 4.0 + rng.standard_normal(radius.size) * noise)
    X = np.stack([radius * np.sin(angle), radius * np.cos(angle)], axis=1).astype(dtype)
    order = rng.permutation(X.shape[0])
    return X[order], labels[order].astype(np.int64)
