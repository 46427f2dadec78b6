"""CPU kernels of topic 'embedding'."""
__all__ = []
