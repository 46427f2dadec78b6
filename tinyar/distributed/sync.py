"""Making the ranks agree: broadcasts from one rank and sums over all of them.

Data-parallel training keeps one copy of the model on every rank, and the copies must stay
equal. They start equal because rank 0's parameters are broadcast to all
(``broadcast_model``), and on resume rank 0's optimizer state too (``broadcast_optimizer``);
after that each step applies the same averaged gradient to the same parameters
(``gradients.GradientAverager``), so they stay equal without being sent again.

    broadcast_model(model, world)        parameters (the flat buffer) and buffers, from rank 0
    broadcast_buffers(model, world)      buffers only (BatchNorm's running statistics)
    broadcast_optimizer(optimizer, world)   step count, hyperparameters and state arrays
    broadcast_json(obj, world)           a JSON-able object (a config, a vocabulary, a flag)
    allreduce_sum(values, world)         a small float64 vector summed over the ranks
    allreduce_mean(values, world)        ... averaged (the loss of a step, metrics, counts)

Every array goes as one ``Bcast`` of its raw bytes; objects go as UTF-8 JSON, never pickle
(a pickle from another process can run code). Arrays on a GPU go through host memory
unless the MPI is CUDA-aware (``placement.cuda_aware``). Every rank must make the same
calls in the same order: these are collectives. In a world of one process each call
returns at once (``broadcast_json`` still round-trips through JSON, so that a value that
would fail under MPI fails here too).
"""
import json

import numpy as np

from ..backend import backend_of
from ..errors import ConfigError
from .world import import_mpi


def _is_array(value):
    return isinstance(value, np.ndarray) or hasattr(value, "__cuda_array_interface__")


def _bcast_array(array, world, root):
    """Broadcast a contiguous array (NumPy or device) from ``root`` into every rank's
    ``array``, in place."""
    if isinstance(array, np.ndarray):
        world.comm.Bcast(array.reshape(-1), root=root)
        return
    from .placement import cuda_aware
    if cuda_aware():
        from numba import cuda
        cuda.synchronize()  # the kernels that wrote it must be done before MPI reads it
        world.comm.Bcast(array.reshape(array.size), root=root)
        return
    host = backend_of(array).to_host(array)
    world.comm.Bcast(host.reshape(-1), root=root)
    array.copy_to_device(host)


def _agree(world, problem, owner):
    """Every rank learns whether any rank found a ``problem`` (a message or None), and all
    raise together, so that no rank goes on to a collective the others will not make."""
    failed = allreduce_sum([0.0 if problem is None else 1.0], world)[0]
    if problem is not None:
        raise ConfigError(f"{owner}: {problem}")
    if failed:
        raise ConfigError(f"{owner}: another rank's model or optimizer does not match this "
                          f"one's (see that rank's message)")


def broadcast_json(obj, world, root=0):
    """``obj`` (JSON-able: dicts, lists, strings, numbers, booleans, None) as rank ``root``
    holds it, returned on every rank (other ranks' ``obj`` is ignored). Sent as UTF-8 JSON
    bytes: first their length, then the bytes. Tuples come back as lists, as JSON has them."""
    try:
        data = json.dumps(obj).encode("utf-8") if world.rank == root else b""
        encoded = None
    except (TypeError, ValueError) as exc:
        data, encoded = b"", exc
    if world.size == 1:
        if encoded is not None:
            raise ConfigError(f"broadcast_json: expected a JSON-able object, got "
                              f"{type(obj).__name__} ({encoded})")
        return json.loads(data.decode("utf-8"))
    # length -1 tells the other ranks that the root could not encode its object
    length = np.array([len(data) if encoded is None else -1], dtype=np.int64)
    world.comm.Bcast(length, root=root)
    if length[0] < 0:
        what = f"{type(obj).__name__} ({encoded})" if encoded is not None else "an object"
        raise ConfigError(f"broadcast_json: expected a JSON-able object on rank {root}, "
                          f"got {what}")
    buffer = np.frombuffer(data, dtype=np.uint8).copy() if world.rank == root else \
        np.empty(int(length[0]), dtype=np.uint8)
    world.comm.Bcast(buffer, root=root)
    return json.loads(buffer.tobytes().decode("utf-8"))


def allreduce_sum(values, world):
    """The elementwise sum over the ranks of ``values`` (a number, a list of numbers or an
    array; a small vector: a loss, a count of correct answers, a stop flag) as a float64
    array of its shape, the same on every rank."""
    total = np.array(values, dtype=np.float64)  # a copy: the caller's values stay theirs
    if world.size > 1:
        MPI = import_mpi()
        flat = total.reshape(-1)
        world.comm.Allreduce(MPI.IN_PLACE, flat, op=MPI.SUM)
        # MPI does not promise that every rank rounds a sum of more than two terms alike
        # (recursive doubling adds them in a different order on each); the ranks take
        # decisions on these figures (the best step, an early stop, a diverged loss), so
        # they take rank 0's, bit for bit
        world.comm.Bcast(flat, root=0)
    return total


def allreduce_mean(values, world):
    """``allreduce_sum(values, world) / world.size``: the mean over the ranks (of a step's
    loss: the mean of per-rank mean losses, which is the loss of the whole batch when every
    rank holds the same number of rows)."""
    return allreduce_sum(values, world) / world.size


def _model_spec(model):
    """What must agree between ranks for a broadcast of ``model`` to be meaningful."""
    flat = model.flat_parameters()
    buffers = [[name, list(np.shape(getattr(module, attr)))]
               for name, module, attr in model.named_buffers()]
    return {"type": type(model).__name__, "elements": int(flat.data.size),
            "dtype": np.dtype(flat.data.dtype).name, "buffers": buffers}


def broadcast_model(model, world, root=0):
    """Copy rank ``root``'s parameters and buffers into every rank's ``model``, in place.

    Ranks that built their models from different seeds end up with rank ``root``'s. The
    parameters are one flat buffer (``Module.flat_parameters``), sent as one ``Bcast``; the
    buffers (BatchNorm's running statistics and batch count) follow
    (``broadcast_buffers``). First the ranks check that their models have the same kind,
    size, dtype and buffers; if not, every rank raises ``ConfigError``. Returns ``model``.
    """
    if world.size == 1:
        return model
    spec = _model_spec(model)
    reference = broadcast_json(spec, world, root)
    problem = None if reference == spec else (
        f"rank {world.rank} holds a {spec['type']} of {spec['elements']} {spec['dtype']} "
        f"parameter elements and buffers {spec['buffers']}, rank {root} a "
        f"{reference['type']} of {reference['elements']} {reference['dtype']} elements and "
        f"buffers {reference['buffers']}")
    _agree(world, problem, "broadcast_model")
    _bcast_array(model.flat_parameters().data, world, root)
    broadcast_buffers(model, world, root)
    return model


def broadcast_buffers(model, world, root=0):
    """Copy rank ``root``'s buffers (BatchNorm's running mean and variance, its batch count)
    into every rank's ``model``, in place; parameters are not touched. Buffers of one dtype
    travel together as one ``Bcast``.

    Why after every step: each rank's BatchNorm normalises with its own rows' statistics
    (as PyTorch's DistributedDataParallel without SyncBatchNorm) and so updates its running
    statistics from its own rows; ``GradientAverager.finish`` then calls this, so that every
    rank holds rank 0's, as DDP's ``broadcast_buffers=True`` does. Returns ``model``.
    """
    if world.size == 1:
        return model
    by_dtype = {}
    for _, module, attr in model.named_buffers():
        value = getattr(module, attr)
        if _is_array(value):
            by_dtype.setdefault(np.dtype(value.dtype), []).append((module, attr))
    for dtype, entries in by_dtype.items():
        hosts = [backend_of(getattr(m, a)).to_host(getattr(m, a)).reshape(-1)
                 for m, a in entries]
        packed = np.concatenate(hosts) if hosts else np.zeros(0, dtype)
        world.comm.Bcast(packed, root=root)
        offset = 0
        for (module, attr), host in zip(entries, hosts):
            target = getattr(module, attr)
            values = packed[offset:offset + host.size].reshape(np.shape(target))
            offset += host.size
            if isinstance(target, np.ndarray):
                target[...] = values
            else:
                target.copy_to_device(np.ascontiguousarray(values))
    return model


def broadcast_optimizer(optimizer, world, root=0):
    """Copy rank ``root``'s optimizer state (the step count, the hyperparameters, every
    state array: SGD's momentum, Adam's two moments) into every rank's ``optimizer``.

    For a resume: rank 0 reads the checkpoint, the others receive it. Rank ``root`` sends
    ``optimizer.state_dict()`` (JSON for the numbers, one ``Bcast`` per array); every other
    rank loads it with ``load_state_dict``, which checks it as it would a file's. Returns
    ``optimizer``.
    """
    if world.size == 1:
        return optimizer
    state_dict = optimizer.state_dict() if world.rank == root else None
    if world.rank == root:
        arrays = {k: v for k, v in state_dict["state"].items() if isinstance(v, np.ndarray)}
        numbers = {k: v for k, v in state_dict["state"].items() if k not in arrays}
        header = {"type": type(optimizer).__name__, "numbers": numbers,
                  "param_groups": state_dict["param_groups"],
                  "arrays": [[k, v.dtype.name, list(v.shape)] for k, v in arrays.items()]}
    header = broadcast_json(header if world.rank == root else None, world, root)
    problem = None if header["type"] == type(optimizer).__name__ else (
        f"rank {world.rank} holds a {type(optimizer).__name__}, rank {root} a "
        f"{header['type']}")
    _agree(world, problem, "broadcast_optimizer")
    received = dict(header["numbers"])
    for name, dtype, shape in header["arrays"]:
        array = np.ascontiguousarray(arrays[name]) if world.rank == root else \
            np.empty(shape, dtype=np.dtype(dtype))
        world.comm.Bcast(array.reshape(-1), root=root)
        received[name] = array
    if world.rank != root:
        optimizer.load_state_dict({"state": received, "param_groups": header["param_groups"]})
    return optimizer
