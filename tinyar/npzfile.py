"""Reading ``.npz`` files that may be hostile: only the members asked for, each checked
before its data is read.

An ``.npz`` file (what ``np.savez`` writes) is a zip archive with one ``.npy``
member per array. Each member starts with a small header that declares the
array's dtype and shape, then holds the raw bytes. ``np.load`` trusts those
headers: a member whose header declares a (100000, 100000) float64 array makes
it allocate 80 GB, and a compressed member can inflate 1000-fold. This reader
instead

1. lists the members without reading any (the zip's central directory);
2. reads a member's ``.npy`` header alone (at most ``MAX_HEADER`` bytes) and
   checks its dtype (numbers only: no objects, so no pickle, no strings) and,
   when the caller knows it, its exact shape, before reading the data;
3. reads exactly the declared number of bytes, which must also fit in the
   member's own declared size, straight into the array (no second copy).

Members nobody asks for are never decompressed.

    with NpzReader("run/model.npz") as npz:
        npz.names()                              # ['model/linear.weight', ...]
        npz.header("model/linear.weight")        # ArrayHeader(shape=(3, 4), dtype=float32)
        w = npz.read("model/linear.weight", shape=(3, 4), kinds="f")
"""
import math
import zipfile
from dataclasses import dataclass

import numpy as np

from . import fileio
from .errors import CheckpointError

#: Longest ``.npy`` header read (NumPy's own writer stays far below it).
MAX_HEADER = 10_000
#: dtype kinds a caller can allow: float, signed and unsigned integer, bool, complex.
NUMERIC_KINDS = "fiubc"
#: ... and unicode text (``np.array("a string")``, how a checkpoint stores its JSON).
KINDS = NUMERIC_KINDS + "U"


@dataclass(frozen=True)
class ArrayHeader:
    """What a ``.npy`` header declares: shape, dtype, memory order."""
    shape: tuple
    dtype: np.dtype
    fortran_order: bool

    @property
    def size(self):
        return math.prod(self.shape)  # Python ints: a hostile shape cannot overflow

    @property
    def nbytes(self):
        return self.size * self.dtype.itemsize


class NpzReader:
    """A read-only view of an ``.npz`` file's members; see the module docstring.

    ``error``: the exception class raised for every problem (``CheckpointError`` for
    checkpoints, an image-file error for data sets), its message naming the file.
    ``follow_symlinks=False`` refuses a symlinked file (a run folder's ``model.npz``).
    """

    def __init__(self, path, what="checkpoint", error=CheckpointError, follow_symlinks=True):
        self.path, self.what, self.error = str(path), what, error
        try:
            self._file = fileio.open_regular(path, follow_symlinks=follow_symlinks, what=what)
        except fileio.FileError as exc:
            raise error(str(exc)) from None
        try:
            self._zip = zipfile.ZipFile(self._file)
            infos = self._zip.infolist()
        except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError,
                RuntimeError) as exc:  # RuntimeError: a damaged directory can claim a zip
            self._file.close()          # version or feature that zipfile does not implement
            raise error(f"{self.path!r} is truncated or not an .npz file ({exc})") from None
        self._members = {}
        for info in infos:
            if info.filename.endswith(".npy"):
                self._members[info.filename[:-len(".npy")]] = info
        self._headers = {}

    # --- context manager ---
    def close(self):
        self._zip.close()
        self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # --- what is inside ---
    def names(self):
        """Every array name in the file (member names without ``.npy``)."""
        return list(self._members)

    def __contains__(self, name):
        return name in self._members

    def _fail(self, name, message):
        return self.error(f"{self.path!r}: member {name!r} {message}")

    def _open(self, name):
        if name not in self._members:
            raise self.error(f"{self.path!r} has no member {name!r}")
        info = self._members[name]
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise self._fail(name, f"uses zip compression method {info.compress_type}; "
                                   f"only stored and deflated members are read")
        try:
            return self._zip.open(info)
        except (zipfile.BadZipFile, OSError, ValueError, RuntimeError) as exc:
            raise self._fail(name, f"cannot be opened ({exc})") from None

    def _read_header(self, fp, name):
        fmt = np.lib.format
        try:
            version = fmt.read_magic(fp)
            if version == (1, 0):
                shape, fortran, dtype = fmt.read_array_header_1_0(fp, max_header_size=MAX_HEADER)
            elif version in ((2, 0), (3, 0)):
                shape, fortran, dtype = fmt.read_array_header_2_0(fp, max_header_size=MAX_HEADER)
            else:
                raise ValueError(f"unknown .npy format version {version}")
        except (ValueError, OSError, EOFError, SyntaxError, TypeError, zipfile.BadZipFile,
                MemoryError, RecursionError) as exc:
            raise self._fail(name, f"has a damaged .npy header ({exc})") from None
        dtype = np.dtype(dtype)
        if dtype.hasobject or dtype.kind not in KINDS or dtype.fields is not None \
                or dtype.subdtype is not None:
            raise self._fail(name, f"holds {dtype} values; only plain numbers and text are read")
        if any(not isinstance(n, int) or n < 0 for n in shape):
            raise self._fail(name, f"declares an invalid shape {shape}")
        header = ArrayHeader(tuple(int(n) for n in shape), dtype, bool(fortran))
        # the data must fit in what the zip entry itself declares: a header cannot ask
        # for more bytes than the member holds
        room = self._members[name].file_size - fp.tell()
        if header.nbytes > room:
            raise self._fail(name, f"declares shape {header.shape} of {dtype} "
                                   f"({header.nbytes:,} bytes) but holds only {max(room, 0):,}")
        return header

    def header(self, name):
        """The ``ArrayHeader`` of ``name``, read without its data."""
        if name not in self._headers:
            with self._open(name) as fp:
                self._headers[name] = self._read_header(fp, name)
        return self._headers[name]

    def declared_bytes(self, names=None):
        """The bytes the arrays ``names`` (default: all) declare, from their headers."""
        return sum(self.header(n).nbytes for n in (self.names() if names is None else names))

    def read(self, name, shape=None, kinds=NUMERIC_KINDS, max_bytes=None):
        """The array ``name``; its declared shape must equal ``shape`` (when given), its
        dtype kind be in ``kinds`` (e.g. ``"f"`` for float weights) and its size at most
        ``max_bytes``: all checked from the header, before any data is read. Text
        (kind ``"U"``) is read only when ``kinds`` names it."""
        with self._open(name) as fp:
            header = self._read_header(fp, name)
            self._headers[name] = header
            if header.dtype.kind not in kinds:
                raise self._fail(name, f"holds {header.dtype} values; expected "
                                       f"{_kind_names(kinds)}")
            if shape is not None and header.shape != tuple(shape):
                raise self._fail(name, f"has shape {header.shape}, expected {tuple(shape)}")
            if max_bytes is not None and header.nbytes > max_bytes:
                raise self._fail(name, f"declares {header.nbytes:,} bytes; at most "
                                       f"{max_bytes:,} are read")
            array = np.empty(header.size, header.dtype)
            view = memoryview(array.view(np.uint8))
            filled = 0
            try:
                while filled < header.nbytes:
                    n = fp.readinto(view[filled:])
                    if not n:
                        break
                    filled += n
            except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
                raise self._fail(name, f"is damaged ({exc})") from None
        if filled != header.nbytes:
            raise self._fail(name, f"is truncated: {filled:,} of {header.nbytes:,} bytes")
        if header.fortran_order:
            return array.reshape(header.shape, order="F").copy(order="C")
        return array.reshape(header.shape)


    def read_text(self, name, max_chars):
        """The string stored as a 0-d unicode array (``np.array("...")``), at most
        ``max_chars`` characters."""
        array = self.read(name, shape=(), kinds="U", max_bytes=4 * max_chars)
        return str(array[()])


_KIND_NAMES = {"f": "floats", "i": "signed integers", "u": "unsigned integers", "b": "booleans",
               "c": "complex numbers", "U": "text"}


def _kind_names(kinds):
    return " or ".join(_KIND_NAMES[k] for k in kinds)
