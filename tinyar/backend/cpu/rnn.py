"""CPU kernels of topic 'rnn'."""
__all__ = []
