"""Checkpoints: one ``.npz`` file of arrays plus JSON metadata, never pickle.

Layout of ``model.npz``::

    model/<name>      every entry of module.state_dict() (PyTorch's names)
    optim/<name>      arrays of optimizer.state_dict(), when an optimizer is given
    __tinyar__        a JSON string: format version, class name, the user's
                      ``meta`` and the optimizer's scalar state

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


def _split_state(state):
    arrays, scalars = {}, {}
    for key, value in state.items():
        if isinstance(value, np.ndarray) or hasattr(value, "__cuda_array_interface__"):
            from .backend import backend_of
            arrays[key] = backend_of(value).to_host(value)
        else:
            scalars[key] = value
    return arrays, scalars


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
        optim_arrays, optim_scalars = _split_state(optimizer.state_dict())
        arrays.update({f"optim/{k}": v for k, v in optim_arrays.items()})
        header["optimizer"] = {"class": type(optimizer).__name__, "scalars": optim_scalars}
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
        optim_state = dict(saved["scalars"])
        optim_state.update({k[len("optim/"):]: v for k, v in arrays.items()
                            if k.startswith("optim/")})
        optimizer.load_state_dict(optim_state)
    return header.get("meta")
