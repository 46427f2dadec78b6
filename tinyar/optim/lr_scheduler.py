"""Learning-rate schedulers with torch.optim.lr_scheduler's semantics.

A scheduler changes ``optimizer.param_groups[0]["lr"]`` once per call of its
``step()``, which goes AFTER ``optimizer.step()``::

    scheduler = CosineAnnealingLR(optimizer, T_max=100)
    for epoch in range(100):
        train_one_epoch(model, optimizer)     # uses the current lr
        scheduler.step()                      # the lr for the next epoch

Creating a scheduler records the optimizer's lr as ``initial_lr`` (the base
lr) and sets the lr of "epoch 0". ``last_epoch`` counts the ``step()`` calls.
``get_last_lr()`` is a list with one lr per parameter group (here one), as in
torch; ``state_dict()`` holds plain numbers, so training can resume.

Like torch's, StepLR, ExponentialLR and CosineAnnealingLR compute the next lr
from the current one (a recursive form), so that a change of the lr by hand
carries on; the formulas in each docstring are the closed forms they follow.
"""
import math
import numbers

from ..errors import CheckpointError
from .optimizer import Optimizer, OptimizerError, check_number


class LRScheduler:
    """Base class: subclasses implement ``get_lr()``, the lrs at ``last_epoch``."""

    def __init__(self, optimizer):
        _check_optimizer(self, optimizer)
        self.optimizer = optimizer
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
        self.base_lrs = [group["initial_lr"] for group in optimizer.param_groups]
        self.last_epoch = -1
        self._step_count = 0
        self._is_initial = True  # the constructor's step sets epoch 0's lr
        self.step()
        self._is_initial = False

    def get_lr(self):
        raise NotImplementedError(f"{type(self).__name__} has no get_lr")  # abstract

    def step(self):
        """Advance one epoch (or iteration) and set the optimizer's lr for it."""
        self._step_count += 1
        self.last_epoch += 1
        for group, lr in zip(self.optimizer.param_groups, self.get_lr()):
            group["lr"] = lr
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def get_last_lr(self):
        """The lr of each parameter group as set by the last ``step()``."""
        return list(self._last_lr)

    def state_dict(self):
        """Every attribute but the optimizer: plain numbers, strings and lists."""
        return {key: (list(value) if isinstance(value, list) else value)
                for key, value in self.__dict__.items() if key != "optimizer"}

    def load_state_dict(self, state_dict):
        """Resume from ``state_dict()``. A state read from a file must hold exactly this
        scheduler's entries, each of the kind it has now (an int for an int, a finite
        number for a float, a list of as many, the same mode string), all checked before
        any is applied: a bad one is a ``CheckpointError`` naming it, never an attribute
        planted on the scheduler or a NaN learning rate. (A JSON null where a float is
        stands for the infinity JSON cannot write: ReduceLROnPlateau's ``best`` before any
        metric; the current value, the same infinity, is kept.)"""
        owner = f"{type(self).__name__}.load_state_dict"
        current = self.state_dict()
        if not isinstance(state_dict, dict):
            raise CheckpointError(f"{owner}: expected a dict, got {type(state_dict).__name__}")
        missing = sorted(set(current) - set(state_dict))
        unknown = sorted(str(k) for k in set(state_dict) - set(current))
        if missing or unknown:
            raise CheckpointError(f"{owner}: the state does not fit a {type(self).__name__}: "
                                  f"missing {missing}, unknown {unknown}")
        restored = {key: _restored(owner, key, current[key], value)
                    for key, value in state_dict.items()}
        self.__dict__.update(restored)

    def __repr__(self):
        return f"{type(self).__name__}(last_epoch={self.last_epoch}, lr={self._last_lr})"


class StepLR(LRScheduler):
    """Multiply the lr by ``gamma`` every ``step_size`` epochs.

        lr(epoch) = base_lr * gamma ** (epoch // step_size)
    """

    def __init__(self, optimizer, step_size, gamma=0.1):
        self.step_size = _check_count(self, "step_size", step_size, low=1)
        self.gamma = check_number(type(self).__name__, "gamma", gamma, low=0)
        super().__init__(optimizer)

    def get_lr(self):
        if self.last_epoch == 0 or self.last_epoch % self.step_size != 0:
            return [group["lr"] for group in self.optimizer.param_groups]
        return [group["lr"] * self.gamma for group in self.optimizer.param_groups]


class ExponentialLR(LRScheduler):
    """Multiply the lr by ``gamma`` every epoch: lr(epoch) = base_lr * gamma ** epoch."""

    def __init__(self, optimizer, gamma):
        self.gamma = check_number(type(self).__name__, "gamma", gamma, low=0)
        super().__init__(optimizer)

    def get_lr(self):
        if self._is_initial:
            return [group["lr"] for group in self.optimizer.param_groups]
        return [group["lr"] * self.gamma for group in self.optimizer.param_groups]


class CosineAnnealingLR(LRScheduler):
    """Cosine decay from the base lr to ``eta_min`` over ``T_max`` epochs.

    Without warm-up (``warmup_steps=0``) this is torch's CosineAnnealingLR,
    step for step (same recursive form, same floating-point results):

        lr(e) = eta_min + (base_lr - eta_min) * (1 + cos(pi * e / T_max)) / 2

    and, like torch's, it keeps following the cosine past ``T_max`` (back up
    to base_lr at 2 T_max, and so on).

    With ``warmup_steps = W > 0`` (not in torch) the lr first rises linearly
    from 0 to the base lr, then decays over the remaining ``T_max - W``
    epochs; ``T_max`` is the length of the whole schedule:

        lr(e) = base_lr * e / W                                          e <  W
        lr(e) = eta_min + (base_lr - eta_min) * (1 + cos(pi * (e - W) / (T_max - W))) / 2
                                                                         e >= W

    The first step therefore runs at lr 0 (Adam still gathers its moments).
    The warm-up schedule is computed from the closed form above, so a change
    of the lr by hand does not carry on.
    """

    def __init__(self, optimizer, T_max, eta_min=0.0, warmup_steps=0):
        name = type(self).__name__
        self.T_max = _check_count(self, "T_max", T_max, low=1)
        self.eta_min = check_number(name, "eta_min", eta_min, low=0)
        self.warmup_steps = _check_count(self, "warmup_steps", warmup_steps, low=0)
        if self.warmup_steps and self.warmup_steps >= self.T_max:
            raise OptimizerError(f"{name}: expected warmup_steps < T_max (T_max counts the "
                                 f"warm-up too), got warmup_steps={warmup_steps}, T_max={T_max}")
        super().__init__(optimizer)

    def get_lr(self):
        groups = self.optimizer.param_groups
        if self.warmup_steps:
            return [self._warmup_cosine(base_lr) for base_lr in self.base_lrs]
        if self._is_initial:
            return [group["lr"] for group in groups]
        e, T = self.last_epoch, self.T_max
        if (e - 1 - T) % (2 * T) == 0:  # the cosine's trough: the ratio below is 0/0
            return [group["lr"] + (base_lr - self.eta_min) * (1 - math.cos(math.pi / T)) / 2
                    for base_lr, group in zip(self.base_lrs, groups)]
        return [(1 + math.cos(math.pi * e / T)) / (1 + math.cos(math.pi * (e - 1) / T))
                * (group["lr"] - self.eta_min) + self.eta_min for group in groups]

    def _warmup_cosine(self, base_lr):
        e, W = self.last_epoch, self.warmup_steps
        if e < W:
            return base_lr * e / W
        progress = (e - W) / (self.T_max - W)
        return self.eta_min + (base_lr - self.eta_min) * (1 + math.cos(math.pi * progress)) / 2


class ReduceLROnPlateau(LRScheduler):
    """Multiply the lr by ``factor`` when a metric has stopped improving.

    ``step(metric)`` after each evaluation (a validation loss with
    ``mode="min"``, an accuracy with ``mode="max"``). A metric counts as an
    improvement on the best so far when

        rel, min:  metric < best * (1 - threshold)      abs, min:  metric < best - threshold
        rel, max:  metric > best * (1 + threshold)      abs, max:  metric > best + threshold

    After more than ``patience`` epochs without improvement the lr becomes
    max(lr * factor, min_lr) (changes smaller than ``eps`` are skipped), and
    the next ``cooldown`` epochs are not counted. As torch.optim.lr_scheduler
    .ReduceLROnPlateau.
    """

    def __init__(self, optimizer, mode="min", factor=0.1, patience=10, threshold=1e-4,
                 threshold_mode="rel", cooldown=0, min_lr=0, eps=1e-8):
        name = type(self).__name__
        _check_optimizer(self, optimizer)
        if mode not in ("min", "max"):
            raise OptimizerError(f"{name}: expected mode 'min' or 'max', got {mode!r}")
        if threshold_mode not in ("rel", "abs"):
            raise OptimizerError(f"{name}: expected threshold_mode 'rel' or 'abs', got "
                                 f"{threshold_mode!r}")
        self.optimizer = optimizer
        self.mode, self.threshold_mode = mode, threshold_mode
        self.factor = check_number(name, "factor", factor, low=0, high=1, high_open=True)
        self.patience = _check_count(self, "patience", patience, low=0)
        self.threshold = check_number(name, "threshold", threshold, low=0)
        self.cooldown = _check_count(self, "cooldown", cooldown, low=0)
        self.min_lr = check_number(name, "min_lr", min_lr, low=0)
        self.eps = check_number(name, "eps", eps, low=0)
        self.last_epoch = 0
        self.best = math.inf if mode == "min" else -math.inf
        self.num_bad_epochs = 0
        self.cooldown_counter = 0
        self._last_lr = [group["lr"] for group in optimizer.param_groups]

    def step(self, metric):
        """Record this epoch's metric; lower the lr after too long a plateau."""
        if isinstance(metric, bool) or not isinstance(metric, numbers.Real):
            try:
                metric = float(metric)  # a 0-d array
            except (TypeError, ValueError) as exc:
                raise OptimizerError(f"{type(self).__name__}.step: expected the metric as a "
                                     f"number, got {type(metric).__name__}") from exc
        current = float(metric)
        self.last_epoch += 1
        if self._is_better(current):
            self.best = current
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0  # bad epochs during the cooldown do not count
        if self.num_bad_epochs > self.patience:
            for group in self.optimizer.param_groups:
                old_lr = float(group["lr"])
                new_lr = max(old_lr * self.factor, self.min_lr)
                if old_lr - new_lr > self.eps:
                    group["lr"] = new_lr
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def _is_better(self, current):
        if self.mode == "min":
            if self.threshold_mode == "rel":
                return current < self.best * (1.0 - self.threshold)
            return current < self.best - self.threshold
        if self.threshold_mode == "rel":
            return current > self.best * (self.threshold + 1.0)
        return current > self.best + self.threshold


def _restored(owner, key, now, saved):
    """``saved`` as the value of an entry whose value is ``now``, if it is of the same kind."""
    def refuse(expected):
        raise CheckpointError(f"{owner}: '{key}' must be {expected}, got {saved!r}")

    if isinstance(now, bool):
        if not isinstance(saved, bool):
            refuse("True or False")
        return saved
    if isinstance(now, numbers.Integral):
        if isinstance(saved, bool) or not isinstance(saved, numbers.Integral):
            refuse("an integer")
        return int(saved)
    if isinstance(now, float) or now is None:
        if saved is None and (now is None or not math.isfinite(now)):
            return now
        if isinstance(saved, bool) or not isinstance(saved, numbers.Real) or \
                not math.isfinite(saved):
            refuse("a finite number")
        return float(saved)
    if isinstance(now, str):
        if saved != now:
            refuse(f"{now!r}, as this scheduler was built")
        return saved
    if isinstance(now, list):
        if not isinstance(saved, list) or len(saved) != len(now):
            refuse(f"a list of {len(now)}")
        return [_restored(owner, f"{key}[{i}]", a, b) for i, (a, b) in enumerate(zip(now, saved))]
    refuse(f"a {type(now).__name__}")


def _check_optimizer(scheduler, optimizer):
    if not isinstance(optimizer, Optimizer):
        raise OptimizerError(f"{type(scheduler).__name__}: expected a tinyar Optimizer, got "
                             f"{type(optimizer).__name__}")


def _check_count(owner, name, value, low):
    """An integer >= low (an epoch count)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise OptimizerError(f"{type(owner).__name__}: expected {name} as an integer >= {low}, "
                             f"got {value!r}")
    return int(value)
