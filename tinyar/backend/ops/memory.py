"""The memory functions every backend provides: making arrays, copying them, moving them
between the host and the backend's device.

They are part of the backend protocol like the ops of the other topic files
(``backend/ops/__init__.py`` lists both), but they compute no math, so instead of
an ``@op`` reference each is declared here by its NumPy meaning, which
``tests/backend/test_protocol.py`` checks on every backend:

    empty(shape, dtype=float32)    an uninitialised array on the backend
    zeros(shape, dtype=float32)    an array of zeros on the backend
    asarray(x, dtype=None)         host data (array, list, number) or an array of this
                                   backend as an array of this backend; no copy when
                                   it already is one of the right dtype
    copy(x)                        a C-contiguous copy of x, on x's backend
    contiguous(x)                  x itself when C-contiguous, else a C-contiguous copy
    to_host(x)                     a NumPy array with x's values (a copy from a device)
    is_array(x)                    whether x is an array of this backend
    workspace_bytes()              the most bytes a layer should put in one temporary
                                   work buffer (a convolution's im2col columns): the
                                   backend's choice between memory and launches
    multiplies_stacks()            whether matmul multiplies stacks of strided views,
                                   (N, M, K) @ (N, K, P) (a layer then takes one product
                                   per sample where that beats one for the batch)
"""
import numpy as np

#: name -> the NumPy function whose meaning the backend's version has.
MEMORY = {
    "empty": lambda shape, dtype=np.float32: np.empty(shape, dtype),
    "zeros": lambda shape, dtype=np.float32: np.zeros(shape, dtype),
    "asarray": lambda x, dtype=None: np.asarray(x, dtype),
    "copy": lambda x: np.array(x, order="C", copy=True),
    "contiguous": np.ascontiguousarray,
    "to_host": np.asarray,
    "is_array": lambda x: isinstance(x, np.ndarray),
    "workspace_bytes": lambda: 64 << 20,
    "multiplies_stacks": lambda: True,
}
