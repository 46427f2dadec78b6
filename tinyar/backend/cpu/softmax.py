"""CPU kernels of topic 'softmax'."""
__all__ = []
