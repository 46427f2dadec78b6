"""Ops of topic 'norm' (filled in by its kernel file's author)."""
