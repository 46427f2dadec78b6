"""Simulated device arrays that allow only what real numba device arrays allow.

numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``) stores a "device" array
as a NumPy array and forwards every attribute to it, so code that calls
``x.fill(0)``, ``x.astype(...)``, ``x + y`` or ``x != 3`` on a device array
passes every simulated test and then fails on a GPU, whose
``DeviceNDArray`` has none of these. It also lacks the
``__cuda_array_interface__`` by which ``backend_of`` recognises a device
array.

``SimDeviceArray`` closes both gaps: it has the interface, and only the
attributes and semantics of a real ``DeviceNDArray`` (numba 0.68 /
numba-cuda 0.30):

* metadata: ``shape, strides, dtype, size, ndim, nbytes, flags``;
* views: ``x[i, a:b]`` (ints and slices; not ``x[...]``, which numba's
  device arrays reject), ``reshape``/``ravel`` (contiguous
  arrays only: a reshape that would copy raises), ``view(dtype)``, ``squeeze``;
* copies: ``copy_to_host``, ``copy_to_device``, ``x[:] = value``,
  ``np.asarray(x)`` (a host copy, as ``DeviceNDArray.__array__`` makes),
  ``x.T`` / ``transpose()`` (a *copy* for 2-D arrays, as numba launches a
  transpose kernel; other ranks raise);
* no arithmetic, no comparisons, no NumPy methods, no ufuncs: each raises
  an error that says the code assumed a NumPy array.

``kernel_modules_follow_the_launch`` and ``_locked_shared_array`` work
around two races in the simulator (see their docstrings).
"""
import sys
import threading
from contextlib import contextmanager

import numpy as np
from numba import cuda as numba_cuda  # not "cuda": that name is swapped below
from numba.cuda.simulator import kernel as _sim_kernel
from numba.cuda.simulator import kernelapi as _sim_kernelapi
from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray

_METADATA = {"strides", "dtype", "size", "ndim", "stream"}


def _numpy_only(name):
    def method(self, *args, **kwargs):
        raise TypeError(f"'{name}' is not defined for numba device arrays (a real GPU array "
                        f"has no arithmetic operators, and compares by identity): this code "
                        f"assumes a NumPy array; use a backend op (B = backend_of(x)) or copy "
                        f"to the host with B.to_host(x)")
    method.__name__ = name
    return method


def _check_index(index):
    """numba device arrays take ints and slices only: no index arrays, and no ``...``."""
    items = index if isinstance(index, tuple) else (index,)
    if any(isinstance(i, (np.ndarray, list, FakeCUDAArray)) for i in items):
        raise TypeError("numba device arrays support basic indexing only (ints and slices): "
                        "this code assumes a NumPy array")
    if any(i is Ellipsis for i in items):
        raise TypeError("numba device arrays do not accept '...' as an index (on a GPU: "
                        "\"unsupported operand type(s) for +: 'ellipsis' and 'int'\"); write "
                        "one ':' per axis, e.g. x[:] = value, or x[()] = value for a 0-d array")


class SimDeviceArray(FakeCUDAArray):
    """A simulated device array with the real ``DeviceNDArray`` API (see the module doc)."""

    __array_ufunc__ = None  # NumPy ufuncs refuse it, as they would need a host array

    @classmethod
    def of(cls, array):
        """Wrap a simulator array or a NumPy array (no copy)."""
        if isinstance(array, cls):
            return array
        if isinstance(array, FakeCUDAArray):
            return cls(array._ary, stream=array.stream)
        return cls(array)

    @property
    def __cuda_array_interface__(self):
        host = self._ary.__array_interface__
        return {"shape": tuple(self._ary.shape), "strides": host["strides"],
                "typestr": host["typestr"], "data": host["data"], "version": 3}

    @property
    def shape(self):
        return tuple(self._ary.shape)  # host side: a plain tuple, as DeviceNDArray.shape

    @property
    def flags(self):
        # DeviceNDArray.flags is a plain dict: x.flags["C_CONTIGUOUS"] works on both
        # kinds of array, x.flags.c_contiguous only on NumPy's
        return {"C_CONTIGUOUS": bool(self._ary.flags.c_contiguous),
                "F_CONTIGUOUS": bool(self._ary.flags.f_contiguous)}

    def __getattr__(self, name):
        if name in _METADATA:
            return getattr(self._ary, name)
        raise AttributeError(f"numba device arrays have no attribute {name!r} (the CUDA "
                             f"simulator's arrays would forward it to NumPy; a GPU's do not): "
                             f"this code assumes a NumPy array")

    def __array__(self, dtype=None, copy=None):
        host = np.array(self._ary, copy=True)
        return host if dtype is None else host.astype(dtype)

    # --- views -------------------------------------------------------------------
    def __getitem__(self, index):
        _check_index(index)
        result = self._ary[index]
        if isinstance(result, np.ndarray):
            return SimDeviceArray(result, stream=self.stream)
        return result

    def __setitem__(self, index, value):
        _check_index(index)
        if isinstance(value, FakeCUDAArray):
            value = value._ary
        self._ary[index] = value

    def _contiguous(self):
        return self._ary.flags.c_contiguous or self._ary.flags.f_contiguous

    def reshape(self, *shape, **kwargs):
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        if tuple(shape) != self._ary.shape and not self._contiguous():
            raise NotImplementedError("operation requires copying (numba cannot reshape a "
                                      "non-contiguous device array)")
        return SimDeviceArray(self._ary.reshape(shape, **kwargs), stream=self.stream)

    def ravel(self, order="C", stream=0):
        if not self._contiguous():
            raise NotImplementedError("operation requires copying")
        return SimDeviceArray(self._ary.ravel(order=order), stream=self.stream)

    def view(self, dtype):
        return SimDeviceArray(self._ary.view(dtype), stream=self.stream)

    def squeeze(self, axis=None, stream=0):
        return SimDeviceArray(self._ary.squeeze(axis), stream=self.stream)

    def bind(self, stream=0):
        return SimDeviceArray(self._ary, stream)

    @property
    def T(self):
        return self.transpose()

    def transpose(self, axes=None):
        if axes is not None and tuple(axes) == tuple(range(self._ary.ndim)):
            return self
        if self._ary.ndim != 2:
            raise NotImplementedError("transposing a non-2D DeviceNDArray isn't supported")
        return SimDeviceArray(np.ascontiguousarray(self._ary.T), stream=self.stream)

    def split(self, section, stream=0):
        return [SimDeviceArray(a) for a in super().split(section, stream)]


for _name in ("__add__", "__radd__", "__sub__", "__rsub__", "__mul__", "__rmul__",
              "__truediv__", "__rtruediv__", "__floordiv__", "__mod__", "__pow__", "__neg__",
              "__abs__", "__iadd__", "__isub__", "__imul__", "__itruediv__", "__matmul__",
              "__rmatmul__", "__eq__", "__ne__", "__lt__", "__le__", "__gt__", "__ge__"):
    setattr(SimDeviceArray, _name, _numpy_only(_name))
SimDeviceArray.__hash__ = object.__hash__


class _RunningKernelCuda:
    """What ``cuda`` means inside the simulated kernel that is running now."""

    def __getattr__(self, name):
        return getattr(_sim_kernel._get_kernel_context(), name)


_RUNNING = _RunningKernelCuda()


@contextmanager
def kernel_modules_follow_the_launch():
    """During a launch, let ``cuda`` in every kernel file mean the running kernel's.

    The simulator runs a kernel with its file's global ``cuda`` swapped for a
    fake module (``cuda.threadIdx`` etc.), and does the same for a device
    function from another file (``_util.block_sum``) around each call. That
    second swap races: each simulated thread is a Python thread, the first
    thread to leave the device function swaps the real module back while
    others are still inside, and they fail with "module 'numba.cuda' has no
    attribute 'blockDim'". We make the swaps unnecessary instead: for the
    launch, ``cuda`` in each of our kernel files is a stand-in that looks up
    the running kernel's fake module on every use.
    """
    real = numba_cuda
    modules = [m for name, m in list(sys.modules.items())
               if name.startswith(__package__ + ".") and getattr(m, "cuda", None) is real]
    for m in modules:
        m.cuda = _RUNNING
    try:
        yield
    finally:
        for m in modules:
            m.cuda = real


_SHARED_LOCK = threading.Lock()
_unlocked_shared_array = _sim_kernelapi.FakeCUDAShared.array


def _locked_shared_array(self, shape, dtype):
    """``cuda.shared.array`` of the simulator, made thread-safe.

    The simulator gives each ``cuda.shared.array`` line of a block one NumPy
    array, looked up by (file, line) in a dict and created when missing, with
    no lock. Each simulated thread is a Python thread: two of them could both
    find it missing and each create its own, and a thread then read a tile
    of a matrix product that nobody had written into *its* array (the
    "intermittent GEMM garbage" seen in ~2 of 12 CI runs, and 3 of 7 runs of
    the optimizer tests). Looking up and creating under a lock removes it.
    """
    if shape == 0:  # dynamic shared memory: one buffer, nothing to create
        return _unlocked_shared_array(self, shape, dtype)
    from numba.core import types
    from numba.np import numpy_support
    if isinstance(dtype, types.Type):
        dtype = numpy_support.as_dtype(dtype)
    frame = sys._getframe(1)
    caller = (frame.f_code.co_filename, frame.f_lineno)
    with _SHARED_LOCK:
        array = self._allocations.get(caller)
        if array is None:
            array = self._allocations[caller] = np.empty(shape, dtype)
    return array


_sim_kernelapi.FakeCUDAShared.array = _locked_shared_array
