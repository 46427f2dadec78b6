"""CPU kernels of topic 'optim'."""
__all__ = []
