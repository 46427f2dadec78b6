"""``Module``: the base class of every layer, loss and model.

There is no autograd. A module's ``forward(x)`` computes its output and keeps
what backward will need; ``backward(grad_out)`` takes dL/d(output), *adds*
dL/d(parameter) into each ``param.grad`` (so a weight used twice gets both
contributions) and returns dL/d(input). A model's backward calls its
children's backward in reverse order: the chain rule, written out.

When the outermost ``__init__`` of a module returns, all its parameters are
packed into one flat buffer (``parameter.FlatBuffer``), so optimizers and
``zero_grad`` work on a single array.
"""
import threading
from collections import OrderedDict
from functools import wraps

import numpy as np

from ..errors import CheckpointError
from .parameter import FlatBuffer, Parameter, every_index

_construction = threading.local()


class Module:
    """Base class: subclasses define ``forward`` and ``backward``."""

    # True for modules whose backward takes ``input_grad=False`` to skip computing
    # dL/d(input) when nobody needs it (the gradient of the data, at the bottom of
    # a model): Linear saves a whole matrix product there. See Sequential.backward.
    skips_input_grad = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is None:
            return

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

        cls.__init__ = init_then_pack

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

    def load_state_dict(self, state, strict=True):
        """Copy arrays into the parameters and buffers, checking names and shapes."""
        from ..backend import backend_of
        params = dict(self.named_parameters())
        buffers = {name: (module, attr) for name, module, attr in self.named_buffers()}
        expected = set(params) | set(buffers)
        missing = sorted(expected - set(state))
        unexpected = sorted(set(state) - expected)
        if strict and (missing or unexpected):
            raise CheckpointError(f"{type(self).__name__}.load_state_dict: missing keys {missing}, "
                                  f"unexpected keys {unexpected}")
        for name, value in state.items():
            if name not in expected:
                continue
            value = np.asarray(value)
            target = params[name].data if name in params else getattr(*buffers[name])
            if tuple(np.shape(target)) != value.shape:
                raise CheckpointError(f"{type(self).__name__}.load_state_dict: '{name}' has shape "
                                      f"{value.shape} in the state, {tuple(np.shape(target))} in "
                                      f"the model")
            if name in params:
                B = backend_of(target)
                target[every_index(target)] = B.asarray(value.astype(target.dtype, copy=False))
            else:
                module, attr = buffers[name]
                if isinstance(target, np.ndarray) or hasattr(target, "__cuda_array_interface__"):
                    B = backend_of(target)
                    target[every_index(target)] = B.asarray(value.astype(target.dtype, copy=False))
                else:
                    setattr(module, attr, value.item())
        return self

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
    return None, np.dtype(target)
