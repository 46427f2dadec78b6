"""``Optimizer``: the base class of SGD, Adagrad, RMSprop, Adam and AdamW.

Every parameter of a model is a view into one flat ``data`` buffer, and its
gradient a view into one flat ``grad`` buffer (``nn/parameter.py``). An
optimizer keeps its state (momentum, moment estimates) as flat arrays of the
same size, element ``i`` of each belonging to element ``i`` of the buffer, so
that a whole update is ONE kernel call over a few 1-D arrays::

    data      = [ W1 | b1 | W2 | b2 | ... ]
    grad      = [dW1 |db1 |dW2 |db2 | ... ]
    exp_avg   = [ m for every element above ]     (Adam's first moment)
    -> B.adam_step(data, grad, exp_avg, exp_avg_sq, lr, ...)

As in ``torch.optim``, the hyperparameters live in
``optimizer.param_groups[0]`` (one group: every parameter shares them), read
afresh at every step, so that a learning-rate scheduler can change
``param_groups[0]["lr"]`` (or ``optimizer.lr``) between steps.
"""
import math
import numbers

import numpy as np

from ..backend import backend_of
from ..errors import CheckpointError, OptimizerError
from ..nn.module import Module
from ..nn.parameter import FlatBuffer, Parameter


class Optimizer:
    """Holds the parameters' flat buffers, the hyperparameters and the state.

    ``params``: a ``Module`` or an iterable of ``Parameter`` s. Parameters
    that sit next to each other in one flat buffer (all of a model's, or all
    of one layer's) are updated in place through a slice of that buffer;
    any other set is packed into a new flat buffer of its own
    (``FlatBuffer.of``).

    Subclasses set ``defaults`` (hyperparameter name -> value), validate them,
    and implement ``_init_state`` (allocate the state arrays) and ``_update``
    (the one kernel call).
    """

    def __init__(self, params, defaults):
        self._params, self._buffer, data, grad = _flat_view(params, type(self).__name__)
        self._data, self._grad = data, grad
        self._backend = backend_of(data)
        self.defaults = dict(defaults)
        self.param_groups = [dict(self.defaults, params=self._params)]
        self.state = {"step": 0}
        self._init_state()
        self._initial_state = tuple(k for k in self.state if k != "step")

    # --- what subclasses fill in ----------------------------------------------
    def _init_state(self):
        """Allocate the state arrays (zeros unless the algorithm says otherwise)."""

    def _update(self, group, data, grad, step):
        """Run the kernel that updates ``data`` (and the state) for ``step`` (from 1)."""
        raise NotImplementedError(f"{type(self).__name__} has no _update")  # abstract

    # --- the public interface -------------------------------------------------
    @property
    def lr(self):
        return self.param_groups[0]["lr"]

    @lr.setter
    def lr(self, value):
        self.param_groups[0]["lr"] = value

    @property
    def params(self):
        return list(self._params)

    def zero_grad(self):
        """Set every gradient to zero: one fill of the flat gradient buffer."""
        self._check_still_packed()
        self._backend.zero_(self._grad)

    def step(self, closure=None):
        """Update every parameter from its ``.grad``: one kernel call over the flat buffer.

        ``closure`` (optional, as in torch): a function that recomputes the
        loss and the gradients; its loss is returned.
        """
        loss = closure() if closure is not None else None
        self._check_still_packed()
        self.state["step"] += 1
        self._update(self.param_groups[0], self._data, self._grad, self.state["step"])
        return loss

    def state_dict(self):
        """The state as host arrays and plain numbers (no pickle needed to save it).

        ``{"state": {"step": int, "<name>": flat array, ...},
           "param_groups": [{hyperparameters..., "params": [0, 1, ...]}]}``
        """
        state = {}
        for name, value in self.state.items():
            if _is_array(value):
                state[name] = np.array(backend_of(value).to_host(value))
            else:
                state[name] = value
        group = {k: (list(v) if isinstance(v, tuple) else v)
                 for k, v in self.param_groups[0].items() if k != "params"}
        group["params"] = list(range(len(self._params)))
        group["num_elements"] = int(self._data.size)
        return {"state": state, "param_groups": [group]}

    def load_state_dict(self, state_dict):
        """Resume from ``state_dict()``: copies the state arrays, step and hyperparameters.

        A state read from a file is checked whole before anything changes, and any problem
        is a ``CheckpointError`` naming the entry: the hyperparameters must be exactly this
        optimizer's, each valid as the constructor would require (a finite lr >= 0, betas
        in [0, 1), flags True/False); ``step`` an integer >= 0; every state array one this
        algorithm keeps, of one finite float per parameter element (and >= 0 for the
        running squares); the arrays the algorithm starts with all present.
        """
        hyper, arrays, step = self.check_state_dict(state_dict)
        B = backend_of(self._data)
        new_state = {"step": step}
        for key, value in arrays.items():
            target = self.state.get(key)
            if target is None or not _is_array(target):
                target = B.zeros(self._data.size, self._data.dtype)
            target[:] = B.asarray(value.reshape(-1).astype(self._data.dtype, copy=False))
            new_state[key] = target
        self.state = new_state
        self.param_groups[0].update(hyper)
        return self

    def check_state_dict(self, state_dict):
        """Raise ``CheckpointError`` unless ``state_dict`` fits this optimizer (see
        ``load_state_dict``); (hyperparameters, state arrays by name, step)."""
        owner = f"{type(self).__name__}.load_state_dict"
        state, group = _split_state_dict(owner, state_dict)
        hyper = self._checked_group(owner, group)
        arrays, step = self._checked_state(owner, state)
        return hyper, arrays, step

    @property
    def num_elements(self):
        """How many parameter elements this optimizer updates (the length of its state arrays)."""
        return int(self._data.size)

    def expected_state_arrays(self):
        """Name -> shape of every state array this algorithm may keep: the ones it starts
        with (``_init_state``) and the ones it creates on first use (``optional_state``)."""
        return {name: (self.num_elements,) for name in self._initial_state + self.optional_state}

    # state arrays created on first use (SGD's momentum_buffer), and those that hold running
    # squares, which are never negative (a negative one would make sqrt NaN)
    optional_state = ()
    nonnegative_state = ()

    @classmethod
    def check_hyperparameters(cls, group):
        """The hyperparameters in ``group`` (a dict), validated and converted; subclasses
        check theirs, as their constructor does."""
        return dict(group)

    def _checked_group(self, owner, group):
        """The hyperparameters of a saved parameter group, checked (see load_state_dict)."""
        num_elements = group.get("num_elements", self.num_elements)
        if isinstance(num_elements, bool) or num_elements != self.num_elements:
            raise CheckpointError(f"{owner}: the state is for {num_elements!r} parameter "
                                  f"elements, this optimizer has {self.num_elements}")
        params = group.get("params", list(range(len(self._params))))
        if params != list(range(len(self._params))):
            count = len(params) if isinstance(params, list) else params
            raise CheckpointError(f"{owner}: the state is for {count!r} parameters, this "
                                  f"optimizer has {len(self._params)}")
        hyper = {k: v for k, v in group.items() if k not in ("params", "num_elements")}
        initial_lr = hyper.pop("initial_lr", None)  # put there by an lr scheduler
        missing = sorted(set(self.defaults) - set(hyper))
        unknown = sorted(set(hyper) - set(self.defaults))
        if missing or unknown:
            raise CheckpointError(f"{owner}: the hyperparameters do not fit a "
                                  f"{type(self).__name__}: missing {missing}, unknown {unknown}")
        try:
            checked = type(self).check_hyperparameters(hyper)
            if initial_lr is not None:
                checked["initial_lr"] = check_number(owner, "initial_lr", initial_lr, low=0)
        except OptimizerError as exc:
            raise CheckpointError(f"{owner}: {exc}") from None
        return checked

    def _checked_state(self, owner, state):
        """(state arrays by name, step) of a saved state, checked (see load_state_dict)."""
        step = state.get("step")
        if isinstance(step, np.ndarray) and step.ndim == 0:
            step = step.item()
        if isinstance(step, bool) or not isinstance(step, numbers.Integral) or step < 0:
            raise CheckpointError(f"{owner}: 'step' must be an integer >= 0, got {step!r}")
        expected = self.expected_state_arrays()
        arrays = {k: v for k, v in state.items() if k != "step"}
        unknown = sorted(set(arrays) - set(expected))
        missing = sorted(set(self._initial_state) - set(arrays))
        if unknown or missing:
            raise CheckpointError(f"{owner}: the state does not fit a {type(self).__name__}: "
                                  f"unknown entries {unknown}, missing {missing}")
        for key, value in arrays.items():
            problem = _state_array_problem(value, expected[key],
                                           nonnegative=key in self.nonnegative_state)
            if problem:
                raise CheckpointError(f"{owner}: state '{key}' {problem}")
        return arrays, int(step)

    def __repr__(self):
        group = ", ".join(f"{k}={v}" for k, v in self.param_groups[0].items() if k != "params")
        return f"{type(self).__name__}({group}; {self._data.size} parameter elements)"

    # --- helpers for subclasses -----------------------------------------------
    def _zeros(self):
        """A new state array: one zero per parameter element, in the buffer's dtype."""
        return self._backend.zeros(self._data.size, self._data.dtype)

    def _check_still_packed(self):
        """The parameters must still be the views this optimizer updates.

        ``model.to(...)``/``.double()`` repacks parameters into new buffers; a
        parameter whose ``.data`` or ``.grad`` was replaced by a new array is
        no longer in any buffer. Updating the old buffer would silently train
        nothing, so say so instead.
        """
        for p in self._params:
            if (p.flat is not self._buffer or not _views(p.data, self._buffer.data)
                    or not _views(p.grad, self._buffer.grad)):
                raise OptimizerError(
                    f"{type(self).__name__}: the parameters are no longer in the flat buffer "
                    f"this optimizer was built on ({p!r} was repacked or had its .data/.grad "
                    f"replaced, e.g. by model.to(), .double() or an assignment); create the "
                    f"optimizer after converting the model, and write gradients into "
                    f"p.grad[...] instead of rebinding p.grad")


# --- validation helpers, shared by the optimizers ------------------------------
def check_number(owner, name, value, low=None, high=None, low_open=False, high_open=False):
    """``value`` must be a real number within [low, high] (open ends as asked)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or \
            not math.isfinite(value):
        raise OptimizerError(f"{owner}: expected {name} as a finite real number, got {value!r}")
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high:
        left = f"({low}" if low_open else ("(-inf" if low is None else f"[{low}")
        right = f"{high})" if high_open else ("inf)" if high is None else f"{high}]")
        raise OptimizerError(f"{owner}: expected {name} in {left}, {right}, got {value}")
    return float(value)


def check_flag(owner, name, value):
    """``value`` as a bool: True/False (or 1/0), never a string such as "False"."""
    if isinstance(value, (bool, np.bool_)) or (isinstance(value, numbers.Integral)
                                              and value in (0, 1)):
        return bool(value)
    raise OptimizerError(f"{owner}: expected {name} as True or False, got {value!r}")


def _split_state_dict(owner, state_dict):
    """(state, the one parameter group) of a ``state_dict()``-shaped dict."""
    if not isinstance(state_dict, dict) or not isinstance(state_dict.get("state"), dict) \
            or not isinstance(state_dict.get("param_groups"), list):
        raise CheckpointError(f"{owner}: expected a dict with 'state' and 'param_groups' "
                              f"(a dict and a list), got {_describe(state_dict)}")
    groups = state_dict["param_groups"]
    if len(groups) != 1 or not isinstance(groups[0], dict):
        raise CheckpointError(f"{owner}: expected 1 parameter group (a dict), got "
                              f"{_describe(groups)}")
    return state_dict["state"], groups[0]


def _describe(value):
    if isinstance(value, (dict, list)):
        return f"a {type(value).__name__} of {len(value)}"
    return f"a {type(value).__name__}"


def _state_array_problem(value, shape, nonnegative):
    """What is wrong with a saved state array (a message), or None."""
    if not isinstance(value, np.ndarray):
        return f"must be an array of shape {shape}, got {_describe(value)}"
    if value.shape != tuple(shape):
        return f"has shape {value.shape}, expected {tuple(shape)} (one per parameter element)"
    if value.dtype.kind != "f":
        return f"holds {value.dtype} values, expected real floats"
    finite = np.isfinite(value)
    if not finite.all():
        return (f"holds {value.size - int(np.count_nonzero(finite)):,} NaN or infinite values "
                f"(training diverged?)")
    if nonnegative and value.size and value.min() < 0:
        return f"holds {value.min()}; it is a running sum of squares, never negative"
    return None


def _is_array(x):
    return isinstance(x, np.ndarray) or hasattr(x, "__cuda_array_interface__")


def _views(view, buffer):
    """Whether ``view`` is (still) a view into ``buffer`` (host arrays: by ``.base``)."""
    if isinstance(view, np.ndarray):
        return view.base is buffer or view is buffer
    return True  # device arrays: trust the FlatBuffer identity check


def _flat_view(params, owner):
    """(parameters, their FlatBuffer, flat data, flat grad) for an optimizer."""
    if isinstance(params, Module):
        params = params.parameters()
    elif isinstance(params, (Parameter, dict)) or not hasattr(params, "__iter__"):
        kind = "a parameter group dict (one group only: pass the parameters)" \
            if isinstance(params, dict) else f"a {type(params).__name__}"
        raise OptimizerError(f"{owner}: expected a Module or an iterable of Parameters, "
                             f"got {kind}")
    params = list(params)
    for i, p in enumerate(params):
        if not isinstance(p, Parameter):
            kind = "a parameter group dict (one group only: pass the parameters)" \
                if isinstance(p, dict) else f"a {type(p).__name__}"
            raise OptimizerError(f"{owner}: params[{i}] is {kind}, not a Parameter")
    if not params:
        raise OptimizerError(f"{owner}: got an empty parameter list")
    if len({id(p) for p in params}) != len(params):
        raise OptimizerError(f"{owner}: a parameter appears more than once in the list")
    span = _span_in_buffer(params)
    if span is not None:
        buffer, lo, hi = span
        return params, buffer, buffer.data[lo:hi], buffer.grad[lo:hi]
    buffer = FlatBuffer.of(params)
    return params, buffer, buffer.data, buffer.grad


def _span_in_buffer(params):
    """(buffer, lo, hi) when ``params`` are consecutive, in order, in one FlatBuffer."""
    buffer = params[0].flat
    if buffer is None or any(p.flat is not buffer for p in params):
        return None
    offset, offsets = 0, {}
    for p in buffer.params:
        offsets[id(p)] = offset
        offset += p.size
    if any(id(p) not in offsets for p in params):
        return None
    lo = offsets[id(params[0])]
    position = lo
    for p in params:
        if offsets[id(p)] != position:
            return None
        position += p.size
    return buffer, lo, position
