"""Ops of topic 'embedding' (filled in by its kernel file's author)."""
