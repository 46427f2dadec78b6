"""CPU kernels of topic 'loss'."""
__all__ = []
