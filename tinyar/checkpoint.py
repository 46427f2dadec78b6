"""Checkpoints: one ``.npz`` file of arrays plus JSON metadata, never pickle.

Layout of ``model.npz``::

    model/<name>      every entry of module.state_dict() (PyTorch's names)
    optim/<path>      arrays of optimizer.state_dict() (nested keys joined by /)
    __tinyar__        a JSON string: format version, class name, the user's
                      ``meta`` and the optimizer's state with its arrays
                      replaced by {"__array__": "optim/<path>"}

The file is written under a temporary name in the same folder and renamed,
so a crash mid-write never leaves a half-written checkpoint behind.
"""
import json
import os
import tempfile
import zipfile

import numpy as np

from .errors import CheckpointError

FORMAT = 1
_META_KEY = "__tinyar__"


def _is_array(value):
    return isinstance(value, np.ndarray) or hasattr(value, "__cuda_array_interface__")


def _pack(obj, prefix, arrays):
    """A JSON-able copy of nested dicts/lists in which every array is moved into
    ``arrays`` under its path and replaced by ``{"__array__": path}``."""
    if _is_array(obj):
        from .backend import backend_of
        arrays[prefix] = np.asarray(backend_of(obj).to_host(obj))
        return {"__array__": prefix}
    if isinstance(obj, dict):
        return {str(k): _pack(v, f"{prefix}/{k}", arrays) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_pack(v, f"{prefix}/{i}", arrays) for i, v in enumerate(obj)]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def _unpack(obj, arrays):
    if isinstance(obj, dict):
        if set(obj) == {"__array__"}:
            return arrays[obj["__array__"]]
        return {k: _unpack(v, arrays) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_unpack(v, arrays) for v in obj]
    return obj


def save(module, path, meta=None, optimizer=None):
    """Write ``module``'s state (and ``optimizer``'s) to ``path`` atomically.

    ``meta``: anything JSON can hold (config, vocabulary, class hierarchy).
    Returns the path written.
    """
    path = os.fspath(path)
    if not path.endswith(".npz"):
        path += ".npz"
    arrays = {f"model/{k}": v for k, v in module.state_dict().items()}
    header = {"format": FORMAT, "class": type(module).__name__, "meta": meta}
    if optimizer is not None:
        header["optimizer"] = {"class": type(optimizer).__name__,
                               "state": _pack(optimizer.state_dict(), "optim", arrays)}
    try:
        header_json = json.dumps(header)
    except TypeError as exc:
        raise CheckpointError(f"save: meta must be JSON-serialisable ({exc})") from exc
    arrays[_META_KEY] = np.array(header_json)

    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npz", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def read(path):
    """(arrays by key, header dict) of a checkpoint file, with clear errors."""
    path = os.fspath(path)
    if not os.path.exists(path) and os.path.exists(path + ".npz"):
        path += ".npz"
    if not os.path.exists(path):
        raise CheckpointError(f"no checkpoint at {path!r}")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path!r} is truncated or not a tinyar checkpoint ({exc})") from exc
    if _META_KEY not in arrays:
        raise CheckpointError(f"{path!r} is not a tinyar checkpoint: it has no '{_META_KEY}' entry")
    try:
        header = json.loads(str(arrays.pop(_META_KEY)))
    except ValueError as exc:
        raise CheckpointError(f"{path!r}: its metadata is not valid JSON ({exc})") from exc
    if header.get("format") != FORMAT:
        raise CheckpointError(f"{path!r} has checkpoint format {header.get('format')}, this tinyar "
                              f"reads format {FORMAT}")
    return arrays, header


def load(module, path, optimizer=None, strict=True):
    """Load a checkpoint into ``module`` (and ``optimizer``); returns the saved ``meta``.

    A missing key, an unexpected key or a shape mismatch raises
    ``CheckpointError`` naming the key and both shapes.
    """
    arrays, header = read(path)
    state = {k[len("model/"):]: v for k, v in arrays.items() if k.startswith("model/")}
    module.load_state_dict(state, strict=strict)
    if optimizer is not None:
        saved = header.get("optimizer")
        if saved is None:
            raise CheckpointError(f"{os.fspath(path)!r} holds no optimizer state")
        if saved["class"] != type(optimizer).__name__:
            raise CheckpointError(f"{os.fspath(path)!r} holds the state of a {saved['class']} "
                                  f"optimizer, not of a {type(optimizer).__name__}")
        optimizer.load_state_dict(_unpack(saved["state"], arrays))
    return header.get("meta")
