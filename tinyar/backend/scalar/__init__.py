"""Scalar math written once, compiled for both devices.

Where the CPU and the CUDA kernels compute the same thing for one element (an
optimizer's update rule, an activation and its derivative, an LSTM or GRU
cell's gate math), the formula lives here as a plain Python function of
scalars. Each backend compiles it for its target with the same name:

    backend/cpu/_util.py    scalar_function(f) = njit(inline="always")(f)
    backend/cuda/_util.py   scalar_function(f) = cuda.jit(device=True)(f)

so ``_adam = scalar_function(scalar.optim.adam)`` in ``cpu/optim.py`` and in
``cuda/optim.py`` is the same code, and the two kernel loops around it read side
by side. The functions take the transcendental functions they need from
``scalar/functions.py`` (``tanh``, ``sigmoid``, ``exp``, ``erf``), which each backend binds
to its own fast versions (the CPU's vectorisable polynomials, the GPU's
intrinsics) when it compiles them.

Constants: a bare ``1`` or ``0.5`` mixed with a float32 value gives float64
arithmetic (Numba's type rules), so the functions take every constant they need
as an argument of the array's dtype, made once by the kernel's wrapper.
"""
from types import FunctionType


def compiler(jit, functions):
    """A backend's ``scalar_function``: ``scalar_function(f)`` is ``jit`` applied to ``f``
    after every helper ``f`` calls from ``backend/scalar`` has been compiled the same
    way, and the names in ``functions`` (``tanh``, ``sigmoid``, ``exp``, ``erf``) bound to the
    backend's versions. Compiled once per function."""
    compiled = {}

    def scalar_function(fn):
        if fn not in compiled:
            names = dict(fn.__globals__)
            for name in fn.__code__.co_names:
                value = names.get(name)
                if name in functions:
                    names[name] = functions[name]
                elif isinstance(value, FunctionType) and value.__module__.startswith(__name__):
                    names[name] = scalar_function(value)
            bound = FunctionType(fn.__code__, names, fn.__name__, fn.__defaults__,
                                 fn.__closure__)
            bound.__qualname__, bound.__doc__ = fn.__qualname__, fn.__doc__
            compiled[fn] = jit(bound)
        return compiled[fn]

    return scalar_function
