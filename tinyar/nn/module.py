"""``Module``: the base class of every layer, loss and model.

There is no autograd. A module's ``forward(x)`` computes its output and keeps
what backward will need; ``backward(grad_out)`` takes dL/d(output), *adds*
dL/d(parameter) into each ``param.grad`` (so a weight used twice gets both
contributions) and returns dL/d(input). A model's backward calls its
children's backward in reverse order: the chain rule, written out.

When the outermost ``__init__`` of a module returns, all its parameters are
packed into one flat buffer (``parameter.FlatBuffer``), so optimizers and
``zero_grad`` work on a single array.

Every subclass's ``forward`` and ``backward`` are wrapped (``__init_subclass__``)
so that misuse is an error naming the layer instead of a crash deep in a kernel
or, worse, a silently wrong gradient:

    forward    records that it ran and the shape of its output (when it is an array);
    backward   refuses to run before a forward, and refuses dL/d(output) of another
               shape than that output (``checks.check_backward_ready`` and
               ``checks.check_output_grad``).

A layer that calls its parent class's forward or backward (``MaxPool1d`` on its
(N, C, 1, L) view) is checked once, at the outermost call. Layers whose backward
overwrites what their forward saved (the recurrent layers) set
``single_backward = True``: a second backward after one forward is refused too.

One process-wide hook, ``set_backward_hook(fn)``, is called as ``fn(module)`` each time a
module's outermost backward returns: data-parallel training (``tinyar.distributed``) starts
sending a group of gradients to the other processes as soon as the layers that own them are
done, while backward goes on below. With no hook set, the cost is one ``is None`` test.
"""
import threading
from collections import OrderedDict
from functools import wraps

import numpy as np

from ..errors import CheckpointError
from .checks import check_backward_ready, check_output_grad
from .parameter import FlatBuffer, Parameter, every_index

_construction = threading.local()

#: How a backward's dL/d(output) may be passed by keyword (the first positional one otherwise).
_GRAD_NAMES = ("grad_out", "grad_output", "grad", "grad_h")

#: Called as ``_backward_hook(module)`` when a module's outermost backward returns, or None.
_backward_hook = None


def set_backward_hook(hook):
    """Make ``hook(module)`` run each time a module's outermost backward returns (after its
    gradients are in ``param.grad``); ``None`` removes it. Returns the hook it replaces, so
    that a caller can restore it (or call it from its own hook)."""
    global _backward_hook
    previous, _backward_hook = _backward_hook, hook
    return previous


def _pack_after(init):
    """``__init__`` that packs the parameters into one flat buffer when the outermost
    constructor returns (a model's, not each of its layers')."""
    @wraps(init)
    def init_then_pack(self, *args, **kw):
        depth = getattr(_construction, "depth", 0)
        _construction.depth = depth + 1
        try:
            init(self, *args, **kw)
        finally:
            _construction.depth = depth
        if depth == 0:  # the outermost constructor has finished
            self.flat_parameters()
    return init_then_pack


def _recording(forward):
    """``forward`` that records, in ``self._forward_record``, that it ran: the output's shape
    when it is an array, else "done" (a loss's float, a recurrent layer's (output, state)).
    Until it returns, the record is None: a forward that raised leaves nothing to go back
    through."""
    @wraps(forward)
    def recorded(self, *args, **kwargs):
        if self.__dict__.get("_in_forward"):  # the layer's own super().forward(...)
            return forward(self, *args, **kwargs)
        object.__setattr__(self, "_forward_record", None)
        object.__setattr__(self, "_in_forward", True)
        try:
            out = forward(self, *args, **kwargs)
        finally:
            object.__setattr__(self, "_in_forward", False)
        shape = getattr(out, "shape", None)
        record = tuple(shape) if shape is not None and hasattr(out, "dtype") else "done"
        object.__setattr__(self, "_forward_record", record)
        return out
    recorded.records_forward = True
    return recorded


def _checked(backward):
    """``backward`` that first checks the record its forward left (see the module docstring)."""
    @wraps(backward)
    def checked(self, *args, **kwargs):
        if self.__dict__.get("_in_backward"):  # the layer's own super().backward(...)
            return backward(self, *args, **kwargs)
        record = self.__dict__.get("_forward_record")
        check_backward_ready(self, record)
        if isinstance(record, tuple) and (args or any(k in kwargs for k in _GRAD_NAMES)):
            grad = args[0] if args else next(kwargs[k] for k in _GRAD_NAMES if k in kwargs)
            check_output_grad(self, grad, record, allow_none=self.accepts_no_grad)
        object.__setattr__(self, "_in_backward", True)
        try:
            result = backward(self, *args, **kwargs)
        finally:
            object.__setattr__(self, "_in_backward", False)
        if self.single_backward:
            object.__setattr__(self, "_forward_record", "consumed")
        if _backward_hook is not None:
            _backward_hook(self)
        return result
    checked.checks_backward = True
    return checked


class Module:
    """Base class: subclasses define ``forward`` and ``backward``."""

    # True for modules whose backward takes ``input_grad=False`` to skip computing
    # dL/d(input) when nobody needs it (the gradient of the data, at the bottom of
    # a model): Linear saves a whole matrix product there. See Sequential.backward.
    skips_input_grad = False
    # True for layers whose backward reads a None dL/d(output) as zeros (the recurrent cells)
    accepts_no_grad = False
    # True for layers whose backward overwrites what their forward saved (see the docstring)
    single_backward = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is not None:
            cls.__init__ = _pack_after(init)
        forward = cls.__dict__.get("forward")
        if forward is not None and not getattr(forward, "records_forward", False):
            recorded = _recording(forward)
            for name, value in list(cls.__dict__.items()):
                if value is forward:  # ``forward = loss``: both names get the recording one
                    setattr(cls, name, recorded)
        backward = cls.__dict__.get("backward")
        if backward is not None and not getattr(backward, "checks_backward", False):
            cls.backward = _checked(backward)

    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "training", True)

    # --- registration -------------------------------------------------------
    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"{type(self).__name__}.__init__ must call super().__init__() "
                                 f"before assigning {name!r}")
        for registry in (self._parameters, self._modules, self._buffers):
            registry.pop(name, None)
        if isinstance(value, Parameter):
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._modules[name] = value
        object.__setattr__(self, name, value)

    def register_buffer(self, name, array):
        """A state array that is saved but not trained (BatchNorm's running mean)."""
        object.__setattr__(self, name, array)
        self._buffers[name] = None  # the value lives in the attribute

    # --- calling ------------------------------------------------------------
    def forward(self, *inputs):
        raise NotImplementedError(f"{type(self).__name__} has no forward")  # abstract

    def backward(self, grad_out):
        raise NotImplementedError(f"{type(self).__name__} has no backward")  # abstract

    def __call__(self, *inputs, **kwargs):
        return self.forward(*inputs, **kwargs)

    # --- traversal ----------------------------------------------------------
    def named_modules(self, prefix=""):
        yield prefix, self
        for name, child in self._modules.items():
            yield from child.named_modules(f"{prefix}.{name}" if prefix else name)

    def children(self):
        return list(self._modules.values())

    def modules(self):
        return [m for _, m in self.named_modules()]

    def named_parameters(self, prefix=""):
        """(dotted name, Parameter) pairs, each parameter once, in definition order."""
        seen = set()
        for module_name, module in self.named_modules(prefix):
            for name, p in module._parameters.items():
                if id(p) not in seen:
                    seen.add(id(p))
                    yield (f"{module_name}.{name}" if module_name else name), p

    def parameters(self):
        return [p for _, p in self.named_parameters()]

    def named_buffers(self):
        for module_name, module in self.named_modules():
            for name in module._buffers:
                yield (f"{module_name}.{name}" if module_name else name), module, name

    def flat_parameters(self):
        """The ``FlatBuffer`` holding every parameter (packed on first use)."""
        return FlatBuffer.of(self.parameters())

    def num_parameters(self):
        return sum(p.size for p in self.parameters())

    # --- state --------------------------------------------------------------
    def state_dict(self):
        """Name -> host array (a copy), parameters then buffers; PyTorch's names."""
        from ..backend import backend_of
        state = OrderedDict()
        for name, p in self.named_parameters():
            state[name] = np.array(backend_of(p.data).to_host(p.data))
        for name, module, attr in self.named_buffers():
            value = getattr(module, attr)
            state[name] = np.array(backend_of(value).to_host(value)) if not np.isscalar(value) \
                else np.array(value)
        return state

    def state_spec(self):
        """Name -> (shape, dtype) of every entry ``state_dict`` would hold, without copying
        anything: what a checkpoint's arrays are checked against before they are read."""
        spec = OrderedDict()
        for name, p in self.named_parameters():
            spec[name] = (tuple(p.shape), np.dtype(p.dtype))
        for name, module, attr in self.named_buffers():
            value = getattr(module, attr)
            dtype = value.dtype if hasattr(value, "dtype") else np.asarray(value).dtype
            spec[name] = (tuple(np.shape(value)), np.dtype(dtype))
        return spec

    #: The names this module's entries had in older tinyar versions: {old: new}, each a
    #: key or the dotted prefix of keys (``"rnn": "backbone"`` also renames
    #: ``"rnn.weight_ih_l0"``), so that older checkpoints load by name.
    RENAMED = {}

    def current_key(self, name):
        """``name``, a state key perhaps from an older tinyar, as this version calls it."""
        for old, new in self.RENAMED.items():
            if name == old or name.startswith(old + "."):
                name = new + name[len(old):]
                break
        first, dot, rest = name.partition(".")
        child = self._modules.get(first) if dot else None
        return f"{first}.{child.current_key(rest)}" if child is not None else name

    def check_buffer(self, name, value):
        """A problem with ``value`` for this module's own buffer ``name`` (a message), or None.
        Subclasses whose buffers have a valid range say so (BatchNorm's variance >= 0)."""
        return None

    def load_state_dict(self, state, strict=True, source=None):
        """Copy arrays into the parameters and buffers, checking names, shapes and values.

        Every entry is checked (``check_state_dict``) before anything is copied, so a bad
        state leaves the module as it was. Returns ``self``.
        """
        params = dict(self.named_parameters())
        buffers = {name: (module, attr) for name, module, attr in self.named_buffers()}
        for name, value in self.check_state_dict(state, strict, source):
            self._copy_in(name, value, params, buffers)
        return self

    def check_state_dict(self, state, strict=True, source=None):
        """Raise ``CheckpointError`` unless ``state`` (name -> array) fits this module; the
        (name, array) pairs to copy. Parameters and floating buffers take real floats
        (float16/32/64, converted to the layer's dtype; integers, booleans, complex
        numbers and text are refused) that are finite and fit that dtype; integer buffers
        (BatchNorm's ``num_batches_tracked``) take integers; each module's ``check_buffer``
        has the last word on its buffers. ``strict``: every name present, no other.
        ``source`` names the state in messages (a checkpoint's path); by default
        ``Class.load_state_dict``."""
        source = source or f"{type(self).__name__}.load_state_dict"
        state = {self.current_key(name): value for name, value in state.items()}
        params = dict(self.named_parameters())
        buffers = {name: (module, attr) for name, module, attr in self.named_buffers()}
        spec = self.state_spec()
        missing = sorted(set(spec) - set(state))
        unexpected = sorted(set(state) - set(spec))
        if strict and (missing or unexpected):
            raise CheckpointError(f"{source}: missing keys {missing}, unexpected keys "
                                  f"{unexpected} (for a {type(self).__name__})")
        checked = []
        for name, value in state.items():
            if name not in spec:
                continue
            shape, dtype = spec[name]
            value = np.asarray(value)
            if value.shape != shape:
                raise CheckpointError(f"{source}: '{name}' has shape {value.shape} in the state, "
                                      f"{shape} in the model")
            what = "parameter" if name in params else "buffer"
            problem = state_value_problem(value, dtype)
            if problem is None and name in buffers:
                module, attr = buffers[name]
                problem = module.check_buffer(attr, value)
            if problem is not None:
                raise CheckpointError(f"{source}: {what} '{name}' {problem}")
            checked.append((name, value))
        return checked

    @staticmethod
    def _copy_in(name, value, params, buffers):
        from ..backend import backend_of
        if name in params:
            target = params[name].data
        else:
            module, attr = buffers[name]
            target = getattr(module, attr)
            if not (isinstance(target, np.ndarray) or hasattr(target, "__cuda_array_interface__")):
                setattr(module, attr, value.item())
                return
        B = backend_of(target)
        target[every_index(target)] = B.asarray(value.astype(target.dtype, copy=False))

    # --- modes and devices --------------------------------------------------
    def train(self, mode=True):
        for m in self.modules():
            object.__setattr__(m, "training", mode)
        return self

    def eval(self):
        return self.train(False)

    def zero_grad(self):
        """Set every gradient to zero: one fill of the flat gradient buffer."""
        from ..backend import backend_of
        grad = self.flat_parameters().grad
        backend_of(grad).zero_(grad)
        return self

    def to(self, target):
        """Move to a device (``"cpu"``, ``"cuda"``) or convert to a dtype (``np.float64``).

        Parameters are repacked into new flat buffers; buffers follow.
        Returns ``self``, as in PyTorch.
        """
        from ..backend import backend_of, get_backend
        device, dtype = _parse_target(target)
        params = self.parameters()
        FlatBuffer.pack(params, dtype=dtype, device=device)
        for _, module, attr in self.named_buffers():
            value = getattr(module, attr)
            if isinstance(value, np.ndarray) or hasattr(value, "__cuda_array_interface__"):
                host = backend_of(value).to_host(value)
                if dtype is not None and np.issubdtype(host.dtype, np.floating):
                    host = host.astype(dtype)
                B = get_backend(device) if device else backend_of(value)
                object.__setattr__(module, attr, B.asarray(host))
        return self

    def float(self):
        return self.to(np.float32)

    def double(self):
        return self.to(np.float64)

    @property
    def dtype(self):
        params = self.parameters()
        return params[0].dtype if params else np.dtype(np.float32)

    # --- printing -----------------------------------------------------------
    def extra_repr(self):
        return ""

    def __repr__(self):
        lines = [f"{type(self).__name__}({self.extra_repr()}"]
        if self._modules:
            for name, child in self._modules.items():
                body = repr(child).replace("\n", "\n  ")
                lines.append(f"\n  ({name}): {body}")
            lines.append("\n")
        return "".join(lines) + ")"


def _parse_target(target):
    if isinstance(target, str):
        return target, None
    from .checks import check_dtype
    return None, check_dtype("Module.to", target)


def state_value_problem(value, dtype):
    """What is wrong with ``value`` as the content of an array of ``dtype`` (a message), or
    None: the kinds must agree (real floats for floats, integers for integers), floats must
    be finite and fit ``dtype``, integers fit it."""
    kind = value.dtype.kind
    if dtype.kind == "f":
        if kind != "f":
            return f"holds {value.dtype} values; the model holds real floats ({dtype})"
        finite = np.isfinite(value)
        bad = value.size - int(np.count_nonzero(finite))
        if bad:
            return f"holds {bad:,} NaN or infinite values (of {value.size:,}): training diverged?"
        if value.size and value.dtype.itemsize > dtype.itemsize:
            largest, limit = float(np.max(np.abs(value))), float(np.finfo(dtype).max)
            if largest > limit:
                return f"holds {largest:g}, beyond the largest {dtype} ({limit:g})"
        return None
    if dtype.kind in "iu":
        if kind not in "iu":
            return f"holds {value.dtype} values; the model holds integers ({dtype})"
        if value.size:
            info = np.iinfo(dtype)
            low, high = int(value.min()), int(value.max())
            if low < info.min or high > info.max:
                return f"holds {low if low < info.min else high}, outside the range of {dtype}"
        return None
    if kind != dtype.kind:
        return f"holds {value.dtype} values; the model holds {dtype}"
    return None
