"""Check that the CUDA kernels compile for a real GPU, on a machine without one.

numba's simulator runs kernels as Python: it checks results, not types, so a
kernel can pass every simulated test and still fail to compile (a float64
constant where float32 was meant, an unsupported call). ``libNVVM`` (from a
CUDA toolkit) compiles to PTX without a GPU, so this closes the gap:

1. under the simulator, ``record(fn)`` runs ``fn`` (the op tests' examples)
   and notes every kernel launch with the numba types of its arguments;
2. in a process *without* the simulator, ``python -m
   tinyar.backend.cuda.compile_check launches.json`` compiles each recorded
   (kernel, argument types) to PTX for compute capability 7.5 (the lowest
   that CUDA 13's NVVM accepts) and reports failures, and float64
   instructions in float32 kernels. Exit status 0: all good, 1: failures,
   2: no compiler toolchain here (libNVVM; NVRTC too under numba-cuda).

It found, for example, that numba 0.68's CUDA target cannot compile the
builtins ``min(a, b)``/``max(a, b)``, which the simulator runs happily.
"""
import json
import re
import sys
from contextlib import contextmanager
from importlib import import_module

import numpy as np

CC = (7, 5)
FLOAT64_ON_PURPOSE = {"_sum_of_squares"}


def _describe(value):
    """A JSON description of a kernel argument's numba type."""
    if hasattr(value, "__cuda_array_interface__") or isinstance(value, np.ndarray):
        host = value._ary if hasattr(value, "_ary") else value
        layout = "C" if host.flags.c_contiguous else ("F" if host.flags.f_contiguous else "A")
        return ["array", host.dtype.str, host.ndim, layout]
    if isinstance(value, (bool, np.bool_)):
        return ["scalar", "bool"]
    if isinstance(value, int):
        return ["scalar", "int64"]
    if isinstance(value, float):
        return ["scalar", "float64"]
    return ["scalar", np.asarray(value).dtype.str]


@contextmanager
def record(launches, run=True):
    """Within the block, every kernel launch appends (module, name, argument types) to
    ``launches`` (once each); with ``run=False`` the kernels are not run (fast, but
    the ops' results are garbage)."""
    from . import _util
    from ..ops import TOPICS
    modules = [_util] + [import_module(f"{__package__}.{topic}") for topic in TOPICS]
    modules = [m for m in modules if getattr(m, "launch", None) is _util.launch]
    original = _util.launch

    def recording_launch(kernel, blocks, threads, *args):
        fn = kernel.fn if hasattr(kernel, "fn") else kernel.py_func
        entry = [fn.__module__, fn.__name__, [_describe(a) for a in args]]
        if entry not in launches:
            launches.append(entry)
        if run:
            original(kernel, blocks, threads, *args)

    for m in modules:
        m.launch = recording_launch
    try:
        yield launches
    finally:
        for m in modules:
            m.launch = original
        if not run:  # constant arrays made meanwhile were never filled
            _util.clear_constants()


def _numba_type(description):
    from numba import from_dtype, types
    if description[0] == "array":
        _, dtype, ndim, layout = description
        return types.Array(from_dtype(np.dtype(dtype)), ndim, layout)
    if description[1] == "bool":
        return types.boolean
    return from_dtype(np.dtype(description[1]))


def _pretend_device():
    """Device functions (``block_sum``) compile for the current device's compute
    capability, which needs a driver; without one, pretend a device of ``CC``."""
    from types import SimpleNamespace

    from numba.cuda import dispatcher
    device = SimpleNamespace(compute_capability=CC)
    dispatcher.get_current_device = lambda: device


def compile_all(launches):
    """Compile every recorded launch to PTX; returns a list of failure messages.

    A kernel whose arrays are all float32 must also compile to float32
    arithmetic: float64 instructions in its PTX mean a stray float64 constant
    (a bare ``1.0``), which costs 2-64x on a GPU. ``FLOAT64_ON_PURPOSE``
    lists the kernels that accumulate in float64 by design.
    """
    from numba import cuda
    if not cuda.is_available():
        _pretend_device()
    failures = []
    for module, name, args in launches:
        kernel = getattr(import_module(module), name)
        signature = tuple(_numba_type(a) for a in args)
        try:
            ptx, _ = cuda.compile_ptx(kernel.py_func, signature, cc=CC)
        except Exception as exc:  # report them all, not just the first
            failures.append(f"{module}.{name}{signature}: {type(exc).__name__}: "
                            f"{str(exc).splitlines()[0] if str(exc) else ''}")
            continue
        floats = {a[1] for a in args if a[0] == "array" and a[1][1] == "f"}
        if floats == {"<f4"} and name not in FLOAT64_ON_PURPOSE:
            f64 = sorted(set(re.findall(r"\b[a-z]+(?:\.[a-z0-9]+)*\.f64\b", ptx)))
            if f64:
                failures.append(f"{module}.{name}{signature}: float64 instructions in a "
                                f"float32 kernel: {', '.join(f64[:6])}")
    return failures


def _probe(x):
    x[0] = x[0] + x.dtype.type(1)


def toolchain_problem():
    """None when this machine can compile a kernel to PTX, else why not.

    numba's built-in CUDA target needs libNVVM; numba-cuda (the ``cuda``
    extra) needs NVRTC too. Both come with a CUDA toolkit, not with the
    Python packages, so a trivial kernel is compiled to find out.
    """
    try:
        from numba import cuda, types
        if not cuda.is_available():
            _pretend_device()
        cuda.compile_ptx(_probe, (types.float32[::1],), cc=CC)
        return None
    except Exception as exc:
        text = str(exc).splitlines()[0] if str(exc) else ""
        return f"{type(exc).__name__}: {text}"


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    problem = toolchain_problem()
    if problem is not None:
        print(f"no CUDA compiler toolchain here (libNVVM, and NVRTC for numba-cuda, come with "
              f"a CUDA toolkit): cannot compile to PTX ({problem})")
        return 2
    with open(argv[0]) as f:
        launches = json.load(f)
    failures = compile_all(launches)
    for line in failures:
        print(line)
    print(f"compiled {len(launches) - len(failures)} of {len(launches)} kernel signatures "
          f"for compute capability {CC[0]}.{CC[1]}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
