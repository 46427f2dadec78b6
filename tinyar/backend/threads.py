"""How Numba's threads and the BLAS threads share the cores: decided once, here.

Measured on the 2-core development machines (see ../shared/NUMBA_NOTES.md and
``benchmarks/bench_threads.py``): with Numba's default OpenMP threading layer,
a ``prange`` kernel called between two OpenBLAS matrix products made the pair
about 16x slower (7.7 ms instead of 0.48 ms), because the OpenMP workers spin
after the kernel and steal the cores the BLAS threads need.
``OMP_WAIT_POLICY=passive`` cures that but is read by every OpenMP runtime in
the process, PyTorch's too, and slowed torch's own matmul by 1.5x.

The policy:

1. Numba uses the ``workqueue`` threading layer: plain pthreads that sleep
   when idle, so they never spin against OpenBLAS and leave torch's OpenMP
   settings alone. (A user who sets ``NUMBA_THREADING_LAYER`` keeps theirs.)
2. Only kernels that sweep a whole parameter buffer (the optimizers, the
   gradient norm) are ``parallel=True``; there two threads pay (Adam over
   670k floats: 1.0 ms against 2.0 ms serial). Elementwise kernels of a layer
   are serial: at the sizes of a training step a parallel launch costs more
   than it saves (workqueue adds ~0.1 ms per ``prange`` call).
3. BLAS keeps its own threads (all cores) for matrix products.
"""
import os

import numba

THREADING_LAYER = os.environ.get("NUMBA_THREADING_LAYER", "workqueue")


def configure() -> None:
    """Apply the policy; called once when the CPU backend is imported."""
    if numba.config.THREADING_LAYER in ("default", ""):
        numba.config.THREADING_LAYER = THREADING_LAYER


configure()
