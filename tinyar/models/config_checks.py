"""Checking a model's arguments, and the config a checkpoint stores to rebuild it.

A model is rebuilt from a JSON object saved in its checkpoint (``model.config()``
-> ``Model.from_config(config)``). Read back from a file, that object may hold
anything: a string where a size belongs (``"hidden_size": "256"``), a size no
machine can hold, a missing or an unknown key. Each model declares its keys
once, as a *spec* (key -> check), and the same spec checks

* the constructor's arguments (``check_arguments``): a ``ConfigError`` naming
  the model and the argument, as every layer of ``tinyar.nn`` does;
* a config read from a checkpoint (``check_config``): every key present, no
  other, each value of the right type and range, or a ``CheckpointError``
  naming the key, what was expected and what was found::

      AutoregressiveLM config: hidden_size must be an integer >= 1, got '256'

Sizes are only checked for being sizes here; whether they fit the checkpoint's
arrays (or the machine) is ``checkpoint.build``'s job, which builds the model
under an allocation limit (``nn.init.allocation_limit``).
"""
from ..errors import CheckpointError, ConfigError
from ..nn.checks import check_choice, check_flag, check_int, check_ints, check_real
from ..nn.multilevel import LevelWeightSchedule, check_level_weights


# --- checks, each (owner, key, value) -> the converted value ---------------------------------
def size(low=1):
    """An integer >= ``low`` (a layer size, a count)."""
    return lambda owner, key, value: check_int(owner, key, value, low=low)


def fraction():
    """A probability of dropping: a finite number in [0, 1)."""
    return lambda owner, key, value: check_real(owner, key, value, low=0.0, high=1.0,
                                                high_open=True)


def choice(*options):
    return lambda owner, key, value: check_choice(owner, key, value, options)


def flag():
    return check_flag


def image_shape():
    """(channels, height, width): a list or tuple of three integers >= 1."""
    def check(owner, key, value):
        if not isinstance(value, (tuple, list)):
            _refuse(owner, key, "a list [C, H, W] of integers >= 1", value)
        return check_ints(owner, key, value, 3, low=1)
    return check


def level_weights():
    return lambda owner, key, value: check_level_weights(owner, value)


def schedule():
    """None, or a ``LevelWeightSchedule`` (its milestones as a JSON list)."""
    def check(owner, key, value):
        if value is None or isinstance(value, LevelWeightSchedule):
            return value
        if not isinstance(value, (tuple, list)):
            _refuse(owner, key, "None or a list of [start, [w_coarse, w_fine]]", value)
        try:
            return LevelWeightSchedule(value)
        except ConfigError as exc:
            raise ConfigError(f"{owner}: {key}: {exc}") from None
    return check


def _refuse(owner, key, expected, value):
    raise ConfigError(f"{owner}: {key} must be {expected}, got {value!r}")


# --- applying a spec -------------------------------------------------------------------------
def check_arguments(owner, arguments, spec):
    """The constructor's ``arguments`` (a dict) checked and converted by ``spec``."""
    return {key: spec[key](owner, key, value) for key, value in arguments.items()}


def check_config(owner, config, spec):
    """A config read from a checkpoint: a JSON object with exactly the keys of ``spec``,
    each checked; the converted values. Every problem is a ``CheckpointError``."""
    where = f"{owner} config"
    if not isinstance(config, dict):
        raise CheckpointError(f"{where}: expected a JSON object of settings, got "
                              f"{type(config).__name__}")
    missing = [key for key in spec if key not in config]
    unknown = sorted(str(key) for key in config if key not in spec)
    if missing or unknown:
        found = [f"{what} keys {keys}" for what, keys in (("missing", missing),
                                                        ("unknown", unknown)) if keys]
        raise CheckpointError(f"{where}: {' and '.join(found)}; expected exactly {list(spec)}")
    try:
        return {key: check(where, key, config[key]) for key, check in spec.items()}
    except ConfigError as exc:
        raise CheckpointError(str(exc)) from None


def construct(owner, make, values):
    """``make(**values)`` for a checked config; a combination the constructor refuses (a
    ``ConfigError``: tied weights of different sizes, say) is the config's fault, so a
    ``CheckpointError`` too."""
    try:
        return make(**values)
    except ConfigError as exc:
        raise CheckpointError(f"{owner} config: {str(exc).removeprefix(owner + ': ')}") \
            from None
