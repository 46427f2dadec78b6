"""CPU kernels of topic 'norm'."""
__all__ = []
