"""Models built from ``tinyar.nn`` parts only."""
from .classifiers import CNNClassifier, RowRNNClassifier, classifier_from_config
from .language_model import AutoregressiveLM, bits_per_token, perplexity

__all__ = ["AutoregressiveLM", "perplexity", "bits_per_token", "CNNClassifier",
           "RowRNNClassifier", "classifier_from_config"]
