"""Checkpoints: one ``.npz`` file of arrays plus JSON metadata, never pickle.

Layout of ``model.npz``::

    model/<name>      every entry of module.state_dict() (PyTorch's names)
    optim/<path>      arrays of optimizer.state_dict() (nested keys joined by /)
    extra/<path>      arrays of the caller's ``extra`` (a carried recurrent state, ...)
    __tinyar__        a JSON string: format version, class name, the user's ``meta``,
                      and the optimizer's state and ``extra`` with each array replaced
                      by {"__array__": "optim/<path>"} or {"__array__": "extra/<path>"}

Writing goes through ``fileio.atomic_write``: a fresh temporary name in the same
folder, renamed over the checkpoint, so a crash mid-write never leaves a
half-written file, and a symlink planted at the checkpoint's name is replaced,
never written through. What is written can be read back: the JSON is standard
(no NaN) and no deeper than ``fileio.MAX_JSON_DEPTH``, and a state that
``load`` would refuse (NaN weights after a diverged step) is refused here, so
the last good checkpoint stays.

Reading treats the file as hostile (a run folder may come from anyone) and is
bounded before anything is allocated:

1. only the members asked for are read (``npzfile.NpzReader``): the JSON
   header (at most ``MAX_META_CHARS`` characters), the model's own
   ``state_dict`` names, the optimizer arrays the header references; an
   extra member, however large, is never inflated;
2. each member's declared shape and dtype are compared with what the model
   or the optimizer holds *before* its data is read; weights must be finite
   real floats, integer buffers integers (``Module.check_state_dict``);
3. a model rebuilt from the JSON config (``build``) is built under an
   allocation limit given by the arrays the file declares, so a config of
   ``hidden_size: 40000`` in a 60 KB file is refused in microseconds.

Every problem is a ``CheckpointError`` (a ``ValueError``) of one line naming the file.
"""
import os

import numpy as np

from . import fileio
from .errors import CheckpointError
from .nn import init
from .nn.module import state_value_problem
from .npzfile import NpzReader

FORMAT = 1
_META_KEY = "__tinyar__"
#: Longest JSON header read, in characters (stored as UTF-32: 4 bytes each).
MAX_META_CHARS = fileio.MAX_JSON_BYTES // 4
#: Most bytes ``read_extra`` reads by default (a carried LSTM state is a few MB).
MAX_EXTRA_BYTES = 1 << 30
#: deflate never inflates more than ~1032-fold: a file of n bytes cannot hold arrays of more
#: than this many times n bytes, whatever its zip directory claims.
DEFLATE_MAX_RATIO = 1032
#: ``build``'s allocation limit, in multiples of the values the file's model arrays hold:
#: a model may allocate a weight that it then replaces (a decoder tied to its embedding).
BUILD_ALLOWANCE = 2

_KINDS = {"f": "f", "i": "iu", "u": "iu", "b": "b"}  # a target's dtype kind -> kinds read


# --- writing ------------------------------------------------------------------------------
def save(module, path, meta=None, optimizer=None, extra=None):
    """Write ``module``'s state (and ``optimizer``'s, and ``extra``) to ``path`` atomically.

    ``meta``: anything JSON can hold (config, vocabulary, class hierarchy).
    ``extra``: nested dicts/lists of arrays (real numbers) and JSON values, read back by
    ``read_extra``: e.g. the recurrent state carried between batches, ``[(h, c), ...]``.
    A ``.npz`` suffix is added when missing. Returns the path written.
    """
    path = os.fspath(path)
    if not path.endswith(".npz"):
        path += ".npz"
    arrays = {f"model/{k}": v for k, v in module.state_dict().items()}
    header = {"format": FORMAT, "class": type(module).__name__, "meta": meta}
    if optimizer is not None:
        header["optimizer"] = {"class": type(optimizer).__name__,
                               "state": _pack(optimizer.state_dict(), "optim", arrays)}
    if extra is not None:
        header["extra"] = _pack(extra, "extra", arrays)
    for name, value in arrays.items():
        kinds = "fiub" if name.startswith("model/") else "fiu"
        problem = state_value_problem(value, value.dtype) if value.dtype.kind in kinds else \
            f"holds {value.dtype} values; only real numbers are saved"
        if problem:
            raise CheckpointError(f"save {path!r}: refusing to write {name!r}, which {problem}")
    arrays[_META_KEY] = np.array(_header_json(header, path))
    with fileio.atomic_write(path, "wb") as f:
        np.savez(f, **arrays)
    return path


def _pack(obj, prefix, arrays):
    """A JSON-able copy of nested dicts/lists in which every array is moved into
    ``arrays`` under its path and replaced by ``{"__array__": path}``."""
    if prefix.count("/") > fileio.MAX_JSON_DEPTH:  # (before Python's recursion limit)
        raise CheckpointError(f"save: {prefix.split('/')[0]} is nested more than "
                              f"{fileio.MAX_JSON_DEPTH} levels deep; it could not be read back")
    if _is_array(obj):
        from .backend import backend_of
        arrays[prefix] = np.asarray(backend_of(obj).to_host(obj))
        return {"__array__": prefix}
    if isinstance(obj, dict):
        for key in obj:
            if not isinstance(key, str) or "/" in key or key == "__array__" or not key:
                raise CheckpointError(f"save: {prefix}: keys must be non-empty strings without "
                                      f"'/' (they name file members), other than '__array__'; "
                                      f"got {key!r}")
        return {k: _pack(v, f"{prefix}/{k}", arrays) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_pack(v, f"{prefix}/{i}", arrays) for i, v in enumerate(obj)]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def _is_array(value):
    return isinstance(value, np.ndarray) or hasattr(value, "__cuda_array_interface__")


def _header_json(header, path):
    """Standard JSON of ``header`` (NaN becomes null), after checking that it is no deeper
    than the reader accepts: a file that cannot be read back is never written."""
    header = _plain(header, 1, path)
    try:
        return fileio.dumps_json(header)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"save {path!r}: meta (and extra) must be JSON-serialisable "
                              f"({exc})") from None


def _plain(obj, depth, path):
    """``obj`` with NumPy scalars as Python numbers and tuples as lists; refuses nesting
    deeper than ``fileio.MAX_JSON_DEPTH`` (counting the header's own levels)."""
    if isinstance(obj, (dict, list, tuple)) and depth > fileio.MAX_JSON_DEPTH:
        raise CheckpointError(f"save {path!r}: meta is nested more than "
                              f"{fileio.MAX_JSON_DEPTH} levels deep; it could not be read back")
    if isinstance(obj, dict):
        return {k: _plain(v, depth + 1, path) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v, depth + 1, path) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


# --- reading: the open file -------------------------------------------------------------------
class _Checkpoint:
    """An open checkpoint: its ``NpzReader`` and its checked JSON header."""

    def __init__(self, path, follow_symlinks=True):
        self.path = _resolve(os.fspath(path))
        self.follow_symlinks = follow_symlinks
        self.npz = NpzReader(self.path, what="checkpoint", follow_symlinks=follow_symlinks)
        try:
            self.header = self._read_header()
        except BaseException:
            self.npz.close()
            raise

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.npz.close()

    def fail(self, message):
        return CheckpointError(f"{self.path!r}: {message}")

    def _read_header(self):
        if _META_KEY not in self.npz:
            raise CheckpointError(f"{self.path!r} is not a tinyar checkpoint: it has no "
                                  f"'{_META_KEY}' member")
        text = self.npz.read_text(_META_KEY, MAX_META_CHARS)
        try:
            header = fileio.loads_json(text, f"{self.path!r}: its metadata")
        except fileio.FileError as exc:
            raise CheckpointError(str(exc)) from None
        if not isinstance(header, dict):
            raise self.fail(f"its metadata must be a JSON object, got {type(header).__name__}")
        version = header.get("format")
        if version != FORMAT or isinstance(version, bool):
            raise self.fail(f"has checkpoint format {version!r}, this tinyar reads format "
                            f"{FORMAT}")
        for key, kinds in (("class", (str,)), ("optimizer", (dict, type(None)))):
            if not isinstance(header.get(key), kinds):
                raise self.fail(f"its metadata's {key!r} must be a "
                                f"{' or '.join(k.__name__ for k in kinds)}, got "
                                f"{type(header.get(key)).__name__}")
        return header

    # --- the model's arrays ---
    def model_names(self):
        return [n[len("model/"):] for n in self.npz.names() if n.startswith("model/")]

    def check_declared(self, names, what):
        """The arrays ``names`` (members) must fit in this machine's memory and in what
        the file's size can hold; raises before any of them is read. Their total bytes."""
        total = sum(self.npz.header(n).nbytes for n in names)
        memory = physical_memory()
        if memory is not None and total > memory:
            raise self.fail(f"its {what} declare {total:,} bytes, more than this machine's "
                            f"memory ({memory:,} bytes)")
        size = os.stat(self.path, follow_symlinks=self.follow_symlinks).st_size
        if total > DEFLATE_MAX_RATIO * size + 4096 * len(names):
            raise self.fail(f"its {what} declare {total:,} bytes, which a file of {size:,} "
                            f"bytes cannot hold: the file is damaged or forged")
        return total

    def model_state(self, module, strict):
        """The model's entries, name -> array, each member's shape and dtype checked
        against ``module`` before it is read; unexpected members are never read."""
        spec = module.state_spec()
        # current name -> the name in the file (which an older tinyar may have written)
        stored = {module.current_key(name): name for name in self.model_names()}
        present = set(stored)
        missing, unexpected = sorted(set(spec) - present), sorted(present - set(spec))
        if strict and (missing or unexpected):
            raise self.fail(f"does not fit the {type(module).__name__}: missing keys "
                            f"{missing}, unexpected keys {unexpected}")
        wanted = [name for name in spec if name in present]
        for name in wanted:
            self._check_member(f"model/{stored[name]}", *spec[name])
        return {name: self.npz.read(f"model/{stored[name]}", shape=spec[name][0],
                                    kinds=_KINDS.get(spec[name][1].kind, spec[name][1].kind))
                for name in wanted}

    def _check_member(self, member, shape, dtype):
        header = self.npz.header(member)
        kinds = _KINDS.get(dtype.kind, dtype.kind)
        if header.dtype.kind not in kinds:
            expected = {"f": "real floats", "i": "integers", "u": "integers"}.get(
                dtype.kind, "booleans") + f" ({dtype})"
            raise self.fail(f"member {member!r} holds {header.dtype} values, the model holds "
                            f"{expected}")
        if header.shape != tuple(shape):
            raise self.fail(f"member {member!r} has shape {header.shape}, the model expects "
                            f"{tuple(shape)}")

    # --- the optimizer's state ---
    def optimizer_state(self, optimizer):
        """The optimizer's ``state_dict``, its arrays read after their shapes were checked."""
        saved = self.header.get("optimizer")
        if saved is None:
            raise self.fail("holds no optimizer state")
        if not isinstance(saved.get("class"), str) or "state" not in saved:
            raise self.fail("its optimizer entry must hold 'class' (a string) and 'state'")
        if saved["class"] != type(optimizer).__name__:
            raise self.fail(f"holds the state of a {saved['class']} optimizer, not of a "
                            f"{type(optimizer).__name__}")
        expected = optimizer.expected_state_arrays()

        def shape_of(member):
            name = member[len("optim/state/"):] if member.startswith("optim/state/") else None
            if name not in expected:
                raise self.fail(f"its optimizer state refers to {member!r}; a "
                                f"{type(optimizer).__name__} keeps only "
                                f"{sorted('optim/state/' + n for n in expected)}")
            return expected[name]
        return self.unpack(saved["state"], shape_of, "f")

    # --- packed structures (optimizer state, extra) ---
    def unpack(self, packed, shape_of, kinds, max_bytes=None):
        """``packed`` with each ``{"__array__": member}`` replaced by that member's array.
        ``shape_of(member)``: the shape it must have (None: any), raising for a member
        that does not belong. Every referenced member is checked, and their total size
        bounded, before any is read; each may be referenced once."""
        members = []
        _references(packed, members)
        for member in members:
            if not isinstance(member, str) or member not in self.npz:
                raise self.fail(f"its metadata refers to an array {member!r} that the file "
                                f"does not hold")
        if len(set(members)) != len(members):
            raise self.fail("its metadata refers to the same array twice")
        shapes = {member: shape_of(member) for member in members}
        for member, shape in shapes.items():
            header = self.npz.header(member)
            if header.dtype.kind not in kinds:
                raise self.fail(f"member {member!r} holds {header.dtype} values; only real "
                                f"numbers are read")
            if shape is not None and header.shape != tuple(shape):
                raise self.fail(f"member {member!r} has shape {header.shape}, expected "
                                f"{tuple(shape)}")
        total = self.check_declared(members, "arrays")
        if max_bytes is not None and total > max_bytes:
            raise self.fail(f"its arrays declare {total:,} bytes; at most {max_bytes:,} are "
                            f"read")
        arrays = {}
        for member in members:
            array = self.npz.read(member, shape=shapes[member], kinds=kinds)
            problem = state_value_problem(array, array.dtype)
            if problem:
                raise self.fail(f"member {member!r} {problem}")
            arrays[member] = array
        return _unpack(packed, arrays)


def _references(obj, out):
    """Collect the members ``{"__array__": member}`` entries of ``obj`` name, in order."""
    if isinstance(obj, dict):
        if set(obj) == {"__array__"}:
            out.append(obj["__array__"])
            return
        for value in obj.values():
            _references(value, out)
    elif isinstance(obj, list):
        for value in obj:
            _references(value, out)


def _unpack(obj, arrays):
    if isinstance(obj, dict):
        if set(obj) == {"__array__"}:
            return arrays[obj["__array__"]]
        return {k: _unpack(v, arrays) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_unpack(v, arrays) for v in obj]
    return obj


def _resolve(path):
    """``path``, or ``path + ".npz"`` when only that exists (``save`` adds the suffix)."""
    if not os.path.lexists(path) and os.path.lexists(path + ".npz"):
        return path + ".npz"
    return path


def physical_memory():
    """This machine's memory in bytes, or None where the system does not say."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


# --- reading: the public functions -------------------------------------------------------
def read_header(path, follow_symlinks=True):
    """The checked JSON header of a checkpoint (format, class, meta, optimizer, extra),
    reading nothing else. ``follow_symlinks=False`` for a file inside a run folder."""
    with _Checkpoint(path, follow_symlinks) as ckpt:
        return ckpt.header


def read_meta(path, follow_symlinks=True):
    """The ``meta`` a checkpoint was saved with, reading only its JSON header (bounded)."""
    return read_header(path, follow_symlinks).get("meta")


def read_extra(path, follow_symlinks=True, max_bytes=MAX_EXTRA_BYTES):
    """The ``extra`` a checkpoint was saved with (None if none): its JSON with the arrays
    put back (lists where tuples were saved). Arrays hold real numbers, floats finite, at
    most ``max_bytes`` in total, checked before any is read."""
    with _Checkpoint(path, follow_symlinks) as ckpt:
        packed = ckpt.header.get("extra")
        if packed is None:
            return None

        def shape_of(member):
            if member != "extra" and not member.startswith("extra/"):
                raise ckpt.fail(f"its extra state refers to {member!r}, outside extra/")
            return None
        return ckpt.unpack(packed, shape_of, "fiu", max_bytes)


def read(path, follow_symlinks=True):
    """(model arrays by member name ``model/<name>``, header) of a checkpoint, for tools
    that show what a file holds (``tinyar inspect``). The arrays must be real numbers and
    fit in memory and in the file (checked from their headers before reading)."""
    with _Checkpoint(path, follow_symlinks) as ckpt:
        names = [f"model/{n}" for n in ckpt.model_names()]
        ckpt.check_declared(names, "model arrays")
        return {n: ckpt.npz.read(n, kinds="fiu") for n in names}, ckpt.header


def load(module, path, optimizer=None, strict=True, follow_symlinks=True):
    """Load a checkpoint into ``module`` (and ``optimizer``); returns the saved ``meta``.

    A missing or unexpected key (``strict``), a shape or dtype that does not fit, a NaN
    or infinite weight, or an optimizer state of another kind raises ``CheckpointError``
    naming the file and the entry. Everything is checked before anything is copied: a
    refused checkpoint leaves the module and the optimizer as they were.
    """
    with _Checkpoint(path, follow_symlinks) as ckpt:
        _load_into(ckpt, module, optimizer, strict)
        return ckpt.header.get("meta")


def build(path, builder, follow_symlinks=True):
    """The model a checkpoint describes, built by ``builder(meta)`` and loaded (strict).

    ``builder(meta)`` reads the config from ``meta`` (a dict; a missing entry, a KeyError in
    the builder, is a ``CheckpointError``) and builds the model (``from_config``).
    It runs under an allocation limit (``nn.init.allocation_limit``) of
    ``BUILD_ALLOWANCE`` times the values the file's ``model/*`` arrays declare, so a
    config asking for far more than the file holds is refused before anything large is
    allocated; so is a file declaring more than this machine's memory.
    """
    with _Checkpoint(path, follow_symlinks) as ckpt:
        names = [f"model/{n}" for n in ckpt.model_names()]
        ckpt.check_declared(names, "model arrays")
        declared = sum(ckpt.npz.header(n).size for n in names)
        limit = BUILD_ALLOWANCE * declared
        meta = ckpt.header.get("meta")
        if not isinstance(meta, dict):
            raise ckpt.fail(f"its meta must be a JSON object holding the model's config, got "
                            f"{type(meta).__name__}")
        try:
            with init.allocation_limit(limit, f"{ckpt.path!r} (its arrays hold {declared:,} "
                                              f"values)"):
                model = builder(meta)
        except KeyError as exc:  # the builder looked for an entry the meta does not have
            raise ckpt.fail(f"its meta has no entry {exc}") from None
        except CheckpointError as exc:
            message = str(exc)
            raise CheckpointError(message if message.startswith(repr(ckpt.path)) else
                                  f"{ckpt.path!r}: {message}") from None
        _load_into(ckpt, model, None, strict=True)
        return model


def _load_into(ckpt, module, optimizer, strict):
    state = ckpt.model_state(module, strict)
    source = repr(ckpt.path)
    checked = module.check_state_dict(state, strict, source)
    optimizer_state = None
    if optimizer is not None:
        optimizer_state = ckpt.optimizer_state(optimizer)
        try:
            optimizer.check_state_dict(optimizer_state)
        except CheckpointError as exc:
            raise ckpt.fail(str(exc)) from None
    module.load_state_dict(dict(checked), strict, source)
    if optimizer is not None:
        optimizer.load_state_dict(optimizer_state)
