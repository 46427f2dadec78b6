"""One family of exceptions, so that user code can catch ``tinyar.TinyarError``.

Each subclasses the built-in exception a Python user would expect
(``ValueError`` for wrong shapes and values, ``TypeError`` for wrong dtypes),
and its message names the layer, what it expected and what it got::

    Linear(in_features=128): expected input (..., 128), got (32, 100)
"""


class TinyarError(Exception):
    """Base class of every error tinyar raises on purpose."""


class ShapeError(TinyarError, ValueError):
    """An array has the wrong rank or size."""


class DTypeError(TinyarError, TypeError):
    """An array has the wrong dtype (float32 where int64 was needed, ...)."""


class TargetError(TinyarError, ValueError):
    """Integer targets outside ``[0, num_classes)``."""


class NumericalError(TinyarError, ValueError):
    """A NaN or infinity where a finite number was needed (a diverging loss)."""


class CheckpointError(TinyarError, ValueError):
    """A checkpoint file is missing, truncated or does not fit the model."""


class OptimizerError(TinyarError, ValueError):
    """A bad hyperparameter, or parameters an optimizer can no longer update."""


class DeviceError(TinyarError, RuntimeError):
    """A device was asked for that this machine does not have."""


class FileError(TinyarError, ValueError):
    """A file or folder that cannot be read or written safely: missing, not a regular
    file, a symlink where none is accepted, larger than tinyar reads, or locked."""


class ConfigError(TinyarError, ValueError):
    """An option or setting out of range, of the wrong type, or in conflict with another:
    ``--steps: expected an integer >= 1, got 0``."""
