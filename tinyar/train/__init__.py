"""Training loops and their helpers."""
from ..progress import ProgressBar

__all__ = ["ProgressBar"]
