"""Ops of topic 'softmax' (filled in by its kernel file's author)."""
