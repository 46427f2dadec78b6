"""Training loops and their helpers: progress, metrics."""
from ..progress import ProgressBar
from .metrics import accuracy, confusion_matrix, format_report, hierarchical_report, \
    precision_recall_f1

__all__ = ["ProgressBar", "accuracy", "confusion_matrix", "format_report", "hierarchical_report",
           "precision_recall_f1"]
