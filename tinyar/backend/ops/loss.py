"""Ops of topic 'loss' (filled in by its kernel file's author)."""
