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
        """Resume from ``state_dict()``: copies the state arrays, step and hyperparameters."""
        name = type(self).__name__
        try:
            state, groups = state_dict["state"], state_dict["param_groups"]
        except (KeyError, TypeError) as exc:
            raise CheckpointError(f"{name}.load_state_dict: expected a dict with 'state' and "
                                  f"'param_groups', got {type(state_dict).__name__}") from exc
        if len(groups) != 1:
            raise CheckpointError(f"{name}.load_state_dict: expected 1 parameter group, got "
                                  f"{len(groups)}")
        size = self._data.size
        if groups[0].get("num_elements", size) != size:
            raise CheckpointError(f"{name}.load_state_dict: the state is for "
                                  f"{groups[0]['num_elements']} parameter elements, this "
                                  f"optimizer has {size}")
        B = backend_of(self._data)
        new_state = {}
        for key, value in state.items():
            if isinstance(value, np.ndarray) and value.ndim > 0:
                if value.size != size:
                    raise CheckpointError(f"{name}.load_state_dict: state '{key}' has "
                                          f"{value.size} elements, expected {size}")
                target = self.state.get(key)
                if target is None or not _is_array(target):
                    target = B.zeros(size, self._data.dtype)
                target[:] = B.asarray(value.reshape(-1).astype(self._data.dtype, copy=False))
                new_state[key] = target
            else:
                new_state[key] = value.item() if isinstance(value, np.ndarray) else value
        if "step" not in new_state:
            raise CheckpointError(f"{name}.load_state_dict: the state has no 'step'")
        new_state["step"] = int(new_state["step"])
        self.state = new_state
        group = self.param_groups[0]
        for key, value in groups[0].items():
            if key not in ("params", "num_elements"):
                group[key] = tuple(value) if isinstance(group.get(key), tuple) else value
        return self

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
