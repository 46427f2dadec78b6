"""Ops of topic 'rnn' (filled in by its kernel file's author)."""
