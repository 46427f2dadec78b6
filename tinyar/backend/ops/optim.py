"""Ops of topic 'optim' (filled in by its kernel file's author)."""
