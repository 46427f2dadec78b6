"""Averaging the gradients over the ranks: data parallelism's one new step.

Each of N ranks holds the same model and a different 1/N of the global batch (``rank_rows``:
rows r, r+N, ...). Rank r's backward gives the gradient of its own mean loss,

    g_r = dL_r/dθ,   L_r = (1/b) sum over its b rows of loss(row),

and the average of these is the gradient of the whole batch's mean loss:

    (1/N) sum_r g_r = d/dθ [ (1/(N b)) sum over all N b rows of loss(row) ] = dL/dθ,

so that after ``GradientAverager.finish()`` every rank holds the gradient one process would
have computed at batch N b, and the same optimizer step keeps the copies equal. (With
unequal shares, b_r rows on rank r, this weighs ranks and not rows equally.) The one
difference: BatchNorm normalises each rank's rows with their own statistics, as PyTorch's
DistributedDataParallel does without SyncBatchNorm; its running statistics are then rank
0's, broadcast to all at the end of ``finish()`` (``sync.broadcast_buffers``).

The parameters of a model are views into one flat buffer (``nn/parameter.py``), and so are
their gradients: the sum over ranks is an all-reduce of that one array, in place,

    comm.Allreduce(MPI.IN_PLACE, flat.grad)          every rank gets sum_r g_r

followed by one pass that divides by N (multiplies by 1/N). Two ways to do it:

``mode="blocking"``: one ``Allreduce`` of the whole buffer after backward returns. Simple;
the network sits idle during backward, and backward waits during the reduce.

``mode="bucketed"``: the overlap of PyTorch's DistributedDataParallel (Li et al., VLDB 2020).
Backward runs from the last layer to the first, so the head's gradients are final long
before the embedding's. The flat buffer is cut into *buckets*, runs of consecutive
parameters of about ``bucket_bytes`` each, taken from the end of the buffer (the last
layers) towards its start: reverse layer order, the order backward finishes them. When
every layer that owns a parameter of the next bucket has finished its backward (a hook
``nn.module.set_backward_hook`` reports each module's), that bucket's non-blocking
``Iallreduce`` starts, and backward goes on with the layers below while the sum travels.
``finish()`` starts what has not started, waits for all, divides by N. Buckets are started
strictly in order, so every rank issues the same collectives in the same order, as MPI
requires. DDP caps buckets at 25 MB for models of hundreds of megabytes; ours are a few
megabytes, so the default is 1 MB, which still gives a few buckets to overlap.

A bucket is ready when every module that directly owns one of its parameters is done: its
own backward has returned, or that of a module containing it (a layer whose parent computes
its gradients in a fused kernel, such as the multi-level head's two Linear layers). A tied
weight has two owners (the embedding and the head's Linear): its bucket waits for both. A
module whose backward runs again after its bucket was sent would change gradients already
on their way: that is an error, and such a model needs ``mode="blocking"``.

MPI moves a non-blocking collective forward only inside MPI calls (unless its progress
thread is on: MPICH's ``MPIR_CVAR_ASYNC_PROGRESS=1``), so each hook also tests the
requests in flight, which lets them advance between layers.

On a GPU the buffer's slices go through host memory (a copy down, the reduce, a copy back)
unless the MPI is CUDA-aware (``placement.cuda_aware``), which reads device memory itself.
"""
import numbers

import numpy as np

from ..backend import backend_of
from ..errors import ConfigError
from ..nn import module as module_hooks
from ..nn.checks import describe
from .sync import broadcast_buffers
from .world import import_mpi

MODES = ("blocking", "bucketed")


def plan_buckets(flat, bucket_bytes):
    """The buckets of ``flat`` (a ``FlatBuffer``): (start, end) element ranges of
    consecutive whole parameters, from the end of the buffer to its start, each closed once
    it holds ``bucket_bytes`` or more (a parameter larger than that is a bucket of its own),
    and for each bucket the parameters it holds."""
    itemsize = np.dtype(flat.grad.dtype).itemsize
    spans, offset = [], 0
    for p in flat.params:
        spans.append((offset, offset + p.size, p))
        offset += p.size
    buckets, members = [], []
    end, held, current = None, 0, []
    for start, stop, p in reversed(spans):
        if end is None:
            end = stop
        current.append(p)
        held += (stop - start) * itemsize
        if held >= bucket_bytes:
            buckets.append((start, end))
            members.append(current)
            end, held, current = None, 0, []
    if current:
        buckets.append((0, end))
        members.append(current)
    return buckets, members


class GradientAverager:
    """Averages ``model``'s gradients over the ranks of ``world`` (see the module docstring).

        averager = GradientAverager(model, world, mode="bucketed")
        averager.begin()              # before backward (bucketed: arms the hooks)
        loss.backward() / model.backward()
        averager.finish()             # model.flat_parameters().grad is the average
        optimizer.step()

    ``mode``: "blocking" (one Allreduce after backward) or "bucketed" (Iallreduce of each
    bucket as soon as backward is done with it). ``bucket_bytes``: a bucket's size (bytes).
    ``buckets``: the (start, end) element ranges of the flat gradient buffer, in the order
    they are reduced (blocking: one, the whole buffer). ``broadcast_buffers``: end
    ``finish()`` with ``sync.broadcast_buffers`` (BatchNorm's running statistics from rank 0;
    a no-op for a model without buffers). In a world of one process begin and finish do
    nothing. Build it after the model is on its device and dtype (``model.to``), and call
    ``begin`` before each backward, ``finish`` after it.
    """

    def __init__(self, model, world, mode="blocking", bucket_bytes=1 << 20,
                 broadcast_buffers=True):
        if mode not in MODES:
            raise ConfigError(f"GradientAverager: expected mode 'blocking' or 'bucketed', "
                              f"got {mode!r}")
        if isinstance(bucket_bytes, bool) or not isinstance(bucket_bytes, numbers.Integral) \
                or bucket_bytes < 1:
            raise ConfigError(f"GradientAverager: expected bucket_bytes as an integer >= 1, "
                              f"got {bucket_bytes!r}")
        self.model, self.world, self.mode = model, world, mode
        self.bucket_bytes = int(bucket_bytes)
        self.broadcast_buffers = bool(broadcast_buffers)
        self._flat = model.flat_parameters()
        size = int(self._flat.grad.size)
        if mode == "blocking":
            self.buckets = [(0, size)] if size else []
        else:
            self.buckets, members = plan_buckets(self._flat, self.bucket_bytes)
            self._plan_owners(members)
        self._host = None  # the host copy of a GPU buffer's gradients, made on first use
        self._active = False

    @property
    def buckets_started(self):
        """How many buckets of the current step have started their reduction: read between
        backward and ``finish()``, those that backward's hooks started (bucketed mode), the
        overlap; 0 in blocking mode and outside a step."""
        if not self._active or self.mode != "bucketed":
            return 0
        return self._next

    # --- which module's backward completes which bucket ----------------------------------
    def _plan_owners(self, members):
        """For each bucket the modules that directly own its parameters; for each module the
        owners inside it (itself included), whose gradients are final when it is done."""
        bucket_of = {id(p): b for b, params in enumerate(members) for p in params}
        self._owners = [set() for _ in self.buckets]
        self._buckets_of_owner = {}
        modules = {}
        for _, m in self.model.named_modules():
            modules[id(m)] = m
        for key, m in modules.items():
            # _parameters: the ones this module holds itself, not its children's
            for p in m._parameters.values():
                b = bucket_of[id(p)]
                self._owners[b].add(key)
                self._buckets_of_owner.setdefault(key, set()).add(b)
        self._owners_within = {}
        for key, m in modules.items():
            inside = {id(sub) for _, sub in m.named_modules()} & self._buckets_of_owner.keys()
            if inside:
                self._owners_within[key] = sorted(inside)

    # --- one step ------------------------------------------------------------------------
    def begin(self):
        """Before backward: check the model was not repacked; bucketed: arm the hooks."""
        if self.world.size == 1:
            return
        if self._active:
            raise ConfigError("GradientAverager: begin() called again before finish(); call "
                              "finish() after each backward")
        if self.model.flat_parameters() is not self._flat:
            raise ConfigError("GradientAverager: the model's parameters were repacked (by "
                              "model.to(), .double() or .float()) after the averager was "
                              "built; build it after converting the model")
        self._active = True
        if self.mode == "bucketed":
            self._pending = [set(owners) for owners in self._owners]
            self._launched = [False] * len(self.buckets)
            self._next = 0
            self._requests, self._buffers = [], []
            self._previous_hook = module_hooks.set_backward_hook(self._backward_done)

    def finish(self):
        """After backward: every rank's ``flat.grad`` becomes the mean over the ranks."""
        if self.world.size == 1:
            return
        if not self._active:
            raise ConfigError("GradientAverager: finish() without begin(); call begin() "
                              "before each backward")
        MPI = import_mpi()
        grad = self._flat.grad
        if self.mode == "blocking":
            if grad.size:
                buffer = self._reduce_buffer(0, grad.size)
                self.world.comm.Allreduce(MPI.IN_PLACE, buffer, op=MPI.SUM)
                self._copy_back(0, grad.size, buffer)
        else:
            module_hooks.set_backward_hook(self._previous_hook)
            while self._next < len(self.buckets):
                self._launch_next()
            MPI.Request.Waitall(self._requests)
            for (start, end), buffer in zip(self.buckets, self._buffers):
                self._copy_back(start, end, buffer)
        self._active = False
        if grad.size:
            backend_of(grad).scale_(grad, 1.0 / self.world.size)
        if self.broadcast_buffers:
            broadcast_buffers(self.model, self.world)

    # --- the bucketed mode's hook ----------------------------------------------------------
    def _backward_done(self, module):
        """The hook: ``module``'s backward has returned. Its owners' parameters are final;
        start every bucket, in order, whose owners are all done."""
        if self._previous_hook is not None:
            self._previous_hook(module)
        key = id(module)
        owners = self._owners_within.get(key)
        if owners is None:  # a module without parameters, or one of another model
            return
        for b in self._buckets_of_owner.get(key, ()):
            if self._launched[b]:
                module_hooks.set_backward_hook(self._previous_hook)
                raise ConfigError(
                    f"GradientAverager(mode='bucketed'): {describe(module)} ran its backward "
                    f"again after its gradients were sent to the other ranks (a layer used "
                    f"twice in one step); use mode='blocking'")
        for owner in owners:
            for b in self._buckets_of_owner[owner]:
                self._pending[b].discard(owner)
        launched = False
        while self._next < len(self.buckets) and not self._pending[self._next]:
            self._launch_next()
            launched = True
        if self._requests and not launched:
            import_mpi().Request.Testall(self._requests)  # let the reductions in flight advance

    def _launch_next(self):
        """Start the non-blocking sum of bucket ``self._next``."""
        MPI = import_mpi()
        start, end = self.buckets[self._next]
        buffer = self._reduce_buffer(start, end)
        self._buffers.append(buffer)
        self._requests.append(self.world.comm.Iallreduce(MPI.IN_PLACE, buffer, op=MPI.SUM))
        self._launched[self._next] = True
        self._next += 1

    # --- where the numbers are reduced: the buffer itself, or its host copy -------------------
    def _reduce_buffer(self, start, end):
        """The array MPI reduces for elements start:end of the gradients: the buffer's own
        slice on the CPU (and for a CUDA-aware MPI), else a host copy of the device slice."""
        grad = self._flat.grad
        if isinstance(grad, np.ndarray):
            return grad[start:end]
        from .placement import cuda_aware
        if cuda_aware():
            from numba import cuda
            cuda.synchronize()  # MPI reads device memory: the kernels must have written it
            return grad[start:end]
        if self._host is None:
            self._host = _pinned_host_array(grad.size, grad.dtype)
        host = self._host[start:end]
        grad[start:end].copy_to_host(host)
        return host

    def _copy_back(self, start, end, buffer):
        grad = self._flat.grad
        if buffer is not None and not isinstance(grad, np.ndarray) and \
                isinstance(buffer, np.ndarray):
            grad[start:end].copy_to_device(buffer)

    def __repr__(self):
        return (f"GradientAverager(mode={self.mode!r}, {len(self.buckets)} buckets, "
                f"{self.world!r})")


def _pinned_host_array(size, dtype):
    """Page-locked host memory for GPU copies (they run at full bus speed from it), or
    ordinary memory where pinning is not available (numba's simulator)."""
    try:
        from numba import cuda
        return cuda.pinned_array(size, dtype=dtype)
    except Exception:
        return np.empty(size, dtype=dtype)
