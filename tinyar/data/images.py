"""Image data sets: the IDX and CIFAR binary readers, and named sets with download.

    images, labels = load_images("fashion-mnist", "train")   # (60000, 1, 28, 28) uint8, int64

Named sets (``image_datasets()``): ``"mnist"``, ``"fashion-mnist"``,
``"cifar10"``, ``"cifar100"`` and ``"emnist"`` (= ``"emnist-byclass"``; also
``-balanced``, ``-bymerge``, ``-letters``, ``-digits``, ``-mnist``). Images are
uint8 (N, C, H, W), labels int64 (N,). A set's files live in
``data_dir() / <folder>`` (``$TINYAR_DATA/mnist/``, ...). Files placed there
by hand are used as they are, under their usual names (gzipped or not);
missing ones are downloaded from the canonical source and checked against
their published SHA-256 (the sums TensorFlow Datasets records, which other
projects confirm). Without network, the error lists which files to put where.

File formats
------------
IDX (MNIST, Fashion-MNIST, EMNIST; LeCun et al.): a 4-byte magic number
``00 00 TT DD`` (two zero bytes, a type code TT, the number of dimensions DD),
DD big-endian uint32 sizes, then the data, big-endian, row-major. Type codes:
08 uint8, 09 int8, 0B int16, 0C int32, 0D float32, 0E float64. Files may be
gzipped; the gzip magic bytes 1F 8B tell. Every header field and the exact
length are checked, so a truncated or foreign file fails with a message that
names it, instead of giving garbage images.

CIFAR binary (Krizhevsky 2009, the "binary version", not the pickled one):
records of 1 label byte (CIFAR-10) or a coarse and a fine label byte
(CIFAR-100) followed by 3072 pixel bytes: the 1024 red values of the 32x32
image row by row, then green, then blue, which is already (3, 32, 32).
CIFAR-10 has data_batch_1..5.bin (train) and test_batch.bin; CIFAR-100
train.bin and test.bin. They are read from a folder or straight out of the
.tar.gz, one pass over the archive, without unpacking it.
"""
import gzip
import io
import math
import os
import tarfile
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import fileio
from ..errors import TinyarError
from .download import DownloadError, data_dir, fetch

__all__ = ["load_images", "image_datasets", "read_idx", "write_idx", "read_cifar10",
           "read_cifar100", "write_cifar", "integer_labels", "ImageFileError", "IMAGE_DATASETS",
           "MAX_DATA_BYTES", "MAX_ARCHIVE_BYTES"]

#: Largest data file (decoded) or array tinyar reads: 2 GiB. The largest file of the
#: named sets, EMNIST ByClass's training images, is 547 MB. A header that declares more
#: is refused before anything is allocated, so a 3 MB gzip cannot ask for 3 GB.
MAX_DATA_BYTES = 2**31
#: Most bytes inflated out of a .tar(.gz) while looking for its CIFAR members.
MAX_ARCHIVE_BYTES = 2**32
#: Bytes read (or inflated) at a time, so no read asks for more than this at once.
CHUNK = 1 << 20


class ImageFileError(TinyarError, ValueError):
    """An image data file is corrupt, truncated, or not in the format expected."""


# ----------------------------------------------------------------- reading, bounded
class _Capped:
    """A binary stream that refuses to give more than ``limit`` bytes: the inflated
    size of a compressed archive is then bounded, whatever its headers claim."""

    def __init__(self, stream, limit, name):
        self.stream, self.limit, self.name, self.done = stream, limit, name, 0

    def read(self, n=-1):
        room = self.limit - self.done + 1
        data = self.stream.read(room if n is None or n < 0 else min(n, room))
        self.done += len(data)
        if self.done > self.limit:
            raise ImageFileError(f"{self.name}: inflates to more than {self.limit:,} bytes; "
                                 f"tinyar reads at most that much of an archive")
        return data


def _read_into(stream, nbytes, dtype, name):
    """Exactly ``nbytes`` bytes of ``stream`` as a flat ``dtype`` array (fewer at the end
    of the stream), read in chunks straight into the array."""
    try:
        array = np.empty(nbytes // dtype.itemsize, dtype)
    except MemoryError:
        raise ImageFileError(f"{name}: {nbytes:,} bytes of data do not fit in this "
                             f"machine's memory") from None
    view = memoryview(array.view(np.uint8))
    filled = 0
    while filled < nbytes:
        n = stream.readinto(view[filled:filled + min(CHUNK, nbytes - filled)])
        if not n:
            break
        filled += n
    return array, filled


def integer_labels(labels, what):
    """``labels`` as int64, if they are whole numbers >= 0; else ``ImageFileError``.

    Integer arrays pass as they are; a float array passes only when every value is
    a whole number (``3.0``: lossless), so a label ``3.7`` is refused, never cut to 3.
    """
    labels = np.asarray(labels)
    if labels.dtype.kind == "f":
        finite = np.isfinite(labels)
        whole = finite & (labels == np.round(labels)) if labels.size else finite
        if not whole.all():
            i = int(np.flatnonzero(~whole)[0])
            raise ImageFileError(f"{what}: label {i} is {float(labels.flat[i]):g}; labels must be "
                                 f"whole numbers (class ids 0, 1, 2, ...)")
        if labels.size and np.abs(labels).max() >= 2**53:
            raise ImageFileError(f"{what}: labels up to {np.abs(labels).max():g} are too "
                                 f"large to be class ids")
    elif labels.dtype.kind not in "iu":
        raise ImageFileError(f"{what}: labels of dtype {labels.dtype}; expected integer class "
                             f"ids")
    if labels.dtype == np.uint64 and labels.size and labels.max() >= 2**63:
        raise ImageFileError(f"{what}: label {int(labels.max())} is too large to be a class id")
    labels = labels.astype(np.int64)
    if labels.size and labels.min() < 0:
        i = int(np.argmin(labels))
        raise ImageFileError(f"{what}: label {i} is {int(labels[i])}; labels must be >= 0")
    return labels


# --------------------------------------------------------------------------- IDX
IDX_TYPES = {0x08: np.dtype(np.uint8), 0x09: np.dtype(np.int8), 0x0B: np.dtype(">i2"),
             0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
_IDX_CODES = {dt.newbyteorder("=") if dt.itemsize > 1 else dt: code
              for code, dt in IDX_TYPES.items()}
_GZIP_MAGIC = b"\x1f\x8b"
#: Errors a damaged gzip or zip stream raises while it is read (BadGzipFile is an OSError).
_STREAM_ERRORS = (EOFError, OSError, zlib.error, zipfile.BadZipFile)


def read_idx(source, *, name=None, ndim=None, max_bytes=None):
    """An IDX file (path, its bytes, or a binary file object; gzipped or not) as a
    native-endian array.

    ``ndim`` (3 for images, 1 for labels) also checks the number of dimensions.
    The header is read first; the data it declares (at most ``max_bytes``,
    ``MAX_DATA_BYTES`` by default) is then read, or inflated, and not a byte
    more, save one to detect trailing data. Raises ``ImageFileError`` naming
    the file, what was expected and what was found.
    """
    max_bytes = MAX_DATA_BYTES if max_bytes is None else int(max_bytes)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _read_idx(io.BytesIO(bytes(source)), name or "<bytes>", ndim, max_bytes,
                         len(source))
    if hasattr(source, "read"):
        return _read_idx(source, name or getattr(source, "name", "<stream>"), ndim, max_bytes,
                         None)
    name = name or str(source)
    try:
        # a raw file holds at most the header (4 + 4 * 255 bytes) and the data
        f = fileio.open_regular(source, max_bytes + 1024, what="IDX file")
    except fileio.FileError as exc:
        raise ImageFileError(str(exc)) from None
    with f:
        return _read_idx(f, name, ndim, max_bytes, os.fstat(f.fileno()).st_size)


def _peek(stream, n):
    if hasattr(stream, "peek"):
        return stream.peek(n)[:n]
    where = stream.tell()
    head = stream.read(n)
    stream.seek(where)
    return head


def _read_idx(raw, name, ndim, max_bytes, size):
    """``read_idx`` on an open stream; ``size``: its length when known and not gzip."""
    gzipped = _peek(raw, 2) == _GZIP_MAGIC
    stream = gzip.GzipFile(fileobj=raw, mode="rb") if gzipped else raw
    size = None if gzipped else size
    try:
        return _parse_idx(stream, name, ndim, max_bytes, size, gzipped)
    except _STREAM_ERRORS as e:
        what = "gzip stream" if gzipped else "file"
        raise ImageFileError(f"{name}: the {what} is damaged or truncated ({e})") from None


def _parse_idx(stream, name, ndim, max_bytes, size, gzipped):
    magic_bytes = stream.read(4)
    if len(magic_bytes) < 4:
        raise ImageFileError(f"{name}: {len(magic_bytes)} bytes, too short for the 4-byte IDX "
                             f"magic number; the file is truncated or empty")
    zero, code, dims = int.from_bytes(magic_bytes[:2], "big"), magic_bytes[2], magic_bytes[3]
    magic = int.from_bytes(magic_bytes, "big")
    if zero != 0:
        raise ImageFileError(f"{name}: not an IDX file: magic number 0x{magic:08x}, expected "
                             f"0x0000TTDD (two zero bytes, a type code, the number of "
                             f"dimensions)")
    if code not in IDX_TYPES:
        known = ", ".join(f"0x{c:02x} ({dt.name})" for c, dt in IDX_TYPES.items())
        raise ImageFileError(f"{name}: unknown IDX type code 0x{code:02x} (magic number "
                             f"0x{magic:08x}); expected one of {known}")
    if dims == 0 or (ndim is not None and dims != ndim):
        want = f"{ndim}" if ndim is not None else "at least 1"
        raise ImageFileError(f"{name}: the IDX header says {dims} dimensions (magic number "
                             f"0x{magic:08x}), expected {want}")
    header = 4 + 4 * dims
    sizes = stream.read(4 * dims)
    if len(sizes) < 4 * dims:
        raise ImageFileError(f"{name}: truncated IDX header: {dims} dimensions need {header} "
                             f"header bytes, the file has {4 + len(sizes)}")
    shape = tuple(int.from_bytes(sizes[4 * i:4 * i + 4], "big") for i in range(dims))
    dtype = IDX_TYPES[code]
    expected = math.prod(shape) * dtype.itemsize      # Python ints: no overflow
    if expected > max_bytes:
        raise ImageFileError(f"{name}: the IDX header declares {shape} values of {dtype.name}, "
                             f"{expected:,} bytes; at most {max_bytes:,} are read")
    if size is not None and size - header != expected:
        _wrong_length(name, shape, dtype, expected, size - header)
    array, found = _read_into(stream, expected, dtype, name)
    if found < expected:
        _wrong_length(name, shape, dtype, expected, found)
    if stream.read(1):
        _wrong_length(name, shape, dtype, expected, None)
    return array.reshape(shape).astype(dtype.newbyteorder("="))   # native-endian


def _wrong_length(name, shape, dtype, expected, found):
    what = "truncated" if found is not None and found < expected else \
        "has extra bytes after the data"
    got = f"found {found:,}" if found is not None else "the stream holds more"
    raise ImageFileError(f"{name}: {what}: the header says {shape} values of {dtype.name}, "
                         f"which is {expected:,} data bytes, {got}")


def write_idx(array, path):
    """Write ``array`` as an IDX file, gzipped when ``path`` ends in ``.gz``."""
    array = np.asarray(array)
    key = array.dtype.newbyteorder("=") if array.dtype.itemsize > 1 else array.dtype
    if key not in _IDX_CODES:
        raise ImageFileError(f"write_idx: IDX has no type for {array.dtype}; use uint8, int8, "
                             f"int16, int32, float32 or float64")
    code = _IDX_CODES[key]
    header = bytes([0, 0, code, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape)
    data = header + array.astype(IDX_TYPES[code]).tobytes()
    path = Path(path)
    fileio.write_bytes(path, gzip.compress(data, mtime=0) if path.suffix == ".gz" else data)
    return path


# ------------------------------------------------------------------------- CIFAR
CIFAR_PIXELS = 3 * 32 * 32
CIFAR10_TRAIN = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
CIFAR10_TEST = ("test_batch.bin",)


def _cifar_records(data, name, label_bytes, limits):
    """Split CIFAR binary bytes into images (N, 3, 32, 32) and labels (N, label_bytes)."""
    row = label_bytes + CIFAR_PIXELS
    if len(data) == 0 or len(data) % row:
        raise ImageFileError(f"{name}: {len(data):,} bytes is not a whole number of {row}-byte "
                             f"records ({label_bytes} label byte(s) + {CIFAR_PIXELS} pixel "
                             f"bytes); the file is truncated or not in this format")
    records = np.frombuffer(data, np.uint8).reshape(-1, row)
    labels = records[:, :label_bytes].astype(np.int64)
    for j, limit in enumerate(limits):
        bad = np.flatnonzero(labels[:, j] >= limit)
        if bad.size:
            raise ImageFileError(f"{name}: record {bad[0]} has label byte {labels[bad[0], j]}, "
                                 f"expected 0..{limit - 1}; not a file of this data set")
    return records[:, label_bytes:].reshape(-1, 3, 32, 32).copy(), labels


def _in_folder(folder, name):
    """Where ``name`` is in ``folder`` or one level down (``cifar-10-batches-bin/``), or
    None. Anything of that name counts (a FIFO, a folder), so that reading it can refuse
    it by name instead of skipping it in silence."""
    for hit in [folder / name] + sorted(folder.glob(f"*/{name}")):
        if os.path.lexists(hit):
            return hit
    return None


def _read_members(source, names):
    """{name: bytes} of the files ``names`` in a folder or a .tar(.gz) archive.

    In a folder the files may also sit one level down (``cifar-10-batches-bin/``).
    An archive is read in one streaming pass that stops once every wanted member
    is found; each member's declared size is checked before it is read, and the
    whole archive inflates to at most ``MAX_ARCHIVE_BYTES``.
    """
    source = Path(source)
    if not os.path.lexists(source):
        raise ImageFileError(f"{source}: no such file or folder")
    if source.is_dir():
        found = {}
        for n in names:
            hit = _in_folder(source, n)
            if hit is not None:
                try:
                    found[n] = fileio.read_bytes(hit, MAX_DATA_BYTES, what="CIFAR file")
                except fileio.FileError as exc:
                    raise ImageFileError(str(exc)) from None
    else:
        found = _read_tar_members(source, names)
    missing = [n for n in names if n not in found]
    if missing:
        raise ImageFileError(f"{source}: missing {', '.join(missing)}")
    return found


def _read_tar_members(source, names):
    try:
        raw = fileio.open_regular(source, what="archive")
    except fileio.FileError as exc:
        raise ImageFileError(str(exc)) from None
    found = {}
    with raw:
        gzipped = raw.peek(2)[:2] == _GZIP_MAGIC
        stream = _Capped(gzip.GzipFile(fileobj=raw, mode="rb") if gzipped else raw,
                         MAX_ARCHIVE_BYTES, str(source))
        try:
            with tarfile.open(fileobj=stream, mode="r|") as tar:
                for member in tar:
                    base = member.name.rsplit("/", 1)[-1]
                    if not (member.isfile() and base in names and base not in found):
                        continue
                    if member.size > MAX_DATA_BYTES:
                        raise ImageFileError(f"{source}: member {member.name} declares "
                                             f"{member.size:,} bytes; at most "
                                             f"{MAX_DATA_BYTES:,} are read")
                    data = tar.extractfile(member).read(member.size)
                    if len(data) != member.size:
                        raise ImageFileError(f"{source}: member {member.name} is truncated: "
                                             f"{len(data):,} of {member.size:,} bytes")
                    found[base] = data
                    if len(found) == len(names):
                        break
        except (tarfile.TarError, *_STREAM_ERRORS) as e:
            raise ImageFileError(f"{source}: not a readable .tar.gz archive, or a truncated "
                                 f"one ({e})") from None
    return found


def read_cifar10(source, split="train"):
    """CIFAR-10 from a folder or the .tar.gz: images (N, 3, 32, 32) uint8, labels (N,) int64."""
    names = CIFAR10_TRAIN if _split(split, "read_cifar10") == "train" else CIFAR10_TEST
    parts = _read_members(source, names)
    images, labels = zip(*(_cifar_records(parts[n], f"{source}: {n}", 1, (10,)) for n in names))
    return np.concatenate(images), np.concatenate(labels)[:, 0]


def read_cifar100(source, split="train"):
    """CIFAR-100 from a folder or the .tar.gz: images, fine labels, coarse labels (int64)."""
    name = "train.bin" if _split(split, "read_cifar100") == "train" else "test.bin"
    data = _read_members(source, (name,))[name]
    images, labels = _cifar_records(data, f"{source}: {name}", 2, (20, 100))
    return images, labels[:, 1].copy(), labels[:, 0].copy()


def write_cifar(path, images, labels, coarse=None):
    """Write CIFAR binary records: (N, 3, 32, 32) uint8 images with their label byte(s).

    With ``coarse`` given, CIFAR-100 records (coarse byte, then fine byte).
    """
    images = np.asarray(images, np.uint8).reshape(-1, CIFAR_PIXELS)
    columns = [np.asarray(labels)] if coarse is None else [np.asarray(coarse), np.asarray(labels)]
    head = np.stack(columns, axis=1).astype(np.uint8)
    fileio.write_bytes(path, np.concatenate([head, images], axis=1).tobytes())
    return Path(path)


def _split(split, who):
    if split not in ("train", "test"):
        raise ValueError(f"{who}: split must be 'train' or 'test', got {split!r}")
    return split


# ------------------------------------------------------------------ named sets
@dataclass(frozen=True)
class Remote:
    """A file of a data set: its name, where to get it, and its size and SHA-256."""
    name: str
    urls: tuple
    sha256: str
    size: int


@dataclass(frozen=True)
class ImageDataset:
    name: str
    folder: str                      # under data_dir()
    shape: tuple                     # (C, H, W)
    num_classes: int
    files: dict = field(default_factory=dict)     # split -> names of the files it reads
    remotes: tuple = ()


def _mirrored(bases, name, sha256, size):
    return Remote(name, tuple(base + name for base in bases), sha256, size)


_MNIST_MIRRORS = ("https://storage.googleapis.com/cvdf-datasets/mnist/",
                  "https://ossci-datasets.s3.amazonaws.com/mnist/",
                  "http://yann.lecun.com/exdb/mnist/")
_FASHION_MIRRORS = ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
                    "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/"
                    "data/fashion/")
_IDX_FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
              "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}

# EMNIST: every split is in one 562 MB zip, gzip/emnist-<subset>-<split>-....gz
EMNIST_SUBSETS = {"byclass": 62, "bymerge": 47, "balanced": 47, "letters": 26, "digits": 10,
                  "mnist": 10}
_EMNIST_ZIP = Remote("gzip.zip", ("https://biometrics.nist.gov/cs_links/EMNIST/gzip.zip",
                                  "https://www.itl.nist.gov/iaui/vip/cs_links/EMNIST/gzip.zip"),
                     "fb9bb67e33772a9cc0b895e4ecf36d2cf35be8b709693c3564cea2a019fcda8e",
                     561_753_746)


def _emnist(subset):
    files = {s: (f"emnist-{subset}-{s}-images-idx3-ubyte.gz",
                 f"emnist-{subset}-{s}-labels-idx1-ubyte.gz") for s in ("train", "test")}
    return ImageDataset(f"emnist-{subset}", "emnist", (1, 28, 28), EMNIST_SUBSETS[subset], files,
                        (_EMNIST_ZIP,))


IMAGE_DATASETS = {
    "mnist": ImageDataset("mnist", "mnist", (1, 28, 28), 10, _IDX_FILES, (
        _mirrored(_MNIST_MIRRORS, "train-images-idx3-ubyte.gz",
                  "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609", 9_912_422),
        _mirrored(_MNIST_MIRRORS, "train-labels-idx1-ubyte.gz",
                  "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c", 28_881),
        _mirrored(_MNIST_MIRRORS, "t10k-images-idx3-ubyte.gz",
                  "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6", 1_648_877),
        _mirrored(_MNIST_MIRRORS, "t10k-labels-idx1-ubyte.gz",
                  "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6", 4_542))),
    "fashion-mnist": ImageDataset("fashion-mnist", "fashion-mnist", (1, 28, 28), 10, _IDX_FILES, (
        _mirrored(_FASHION_MIRRORS, "train-images-idx3-ubyte.gz",
                  "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84", 26_421_880),
        _mirrored(_FASHION_MIRRORS, "train-labels-idx1-ubyte.gz",
                  "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845", 29_515),
        _mirrored(_FASHION_MIRRORS, "t10k-images-idx3-ubyte.gz",
                  "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073", 4_422_102),
        _mirrored(_FASHION_MIRRORS, "t10k-labels-idx1-ubyte.gz",
                  "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5", 5_148))),
    "cifar10": ImageDataset(
        "cifar10", "cifar10", (3, 32, 32), 10, {"train": CIFAR10_TRAIN, "test": CIFAR10_TEST},
        (Remote("cifar-10-binary.tar.gz", ("https://www.cs.toronto.edu/~kriz/"
                                           "cifar-10-binary.tar.gz",),
                "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd",
                170_052_171),)),
    "cifar100": ImageDataset(
        "cifar100", "cifar100", (3, 32, 32), 100, {"train": ("train.bin",), "test": ("test.bin",)},
        (Remote("cifar-100-binary.tar.gz", ("https://www.cs.toronto.edu/~kriz/"
                                            "cifar-100-binary.tar.gz",),
                "58a81ae192c23a4be8b1804d68e518ed807d710a4eb253b1f2a199162a40d8ec",
                168_513_733),)),
    **{f"emnist-{subset}": _emnist(subset) for subset in EMNIST_SUBSETS},
}
_ALIASES = {"emnist": "emnist-byclass", "fashion": "fashion-mnist", "fashionmnist": "fashion-mnist",
            "cifar-10": "cifar10", "cifar-100": "cifar100"}


def image_datasets():
    """The names ``load_images`` knows."""
    return sorted(IMAGE_DATASETS) + ["emnist"]


def _dataset(name):
    key = str(name).lower().replace("_", "-")
    key = _ALIASES.get(key, key)
    if key not in IMAGE_DATASETS:
        raise ValueError(f"load_images: no image data set named {name!r}; known: "
                         f"{', '.join(image_datasets())}")
    return IMAGE_DATASETS[key]


def _local(folder, filename):
    """A hand-placed copy of ``filename`` in ``folder``: gzipped or not, '-' or '.' before idx.

    Anything of such a name counts, a FIFO or a folder too: reading it then refuses it by
    name, where skipping it would download over it or report it missing.
    """
    stem = filename[:-3] if filename.endswith(".gz") else filename
    names = [filename, stem, stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"]
    for sub in (folder, folder / "gzip"):
        for n in names:
            if os.path.lexists(sub / n):
                return sub / n
    return None


def _download(remote, folder, progress):
    """Fetch ``remote`` into ``folder``, trying its mirrors in turn; the last error if all fail."""
    error = None
    for url in remote.urls:
        try:
            return fetch(url, remote.name, remote.sha256, remote.size, directory=folder,
                         progress=progress)
        except DownloadError as e:
            error = e
    raise error


def _missing_error(ds, split, folder, names, cause):
    remotes = [r for r in ds.remotes if r.name in names] or list(ds.remotes)
    listing = "\n".join(f"    {folder / r.name}   ({r.size:,} bytes, sha256 {r.sha256}, from "
                        f"{r.urls[0]})" for r in remotes)
    wanted = ", ".join(names)
    return DownloadError(
        f"load_images({ds.name!r}, {split!r}): {wanted} not found in {folder} and could not be "
        f"downloaded ({cause}).\nWithout network access, get these files some other way and "
        f"place them at\n{listing}\n(or the files themselves, unpacked, in that folder), or set "
        f"$TINYAR_DATA to a folder whose '{ds.folder}' subfolder holds them.")


def load_images(name, split="train", root=None, *, download=True, progress=True):
    """A named image data set: (images (N, C, H, W) uint8, labels (N,) int64).

    Args:
        name: one of ``image_datasets()``.
        split: ``"train"`` or ``"test"``.
        root: the folder holding the set's files; ``data_dir() / <set folder>``
            by default (``$TINYAR_DATA/mnist``, ``.../fashion-mnist``,
            ``.../cifar10``, ``.../cifar100``, ``.../emnist``).
        download: fetch missing files (False: only use what is there).
        progress: show a progress bar while downloading.

    Hand-placed files are used as they are (their format is checked, not their
    hash); downloads are checked against the published SHA-256.
    """
    ds = _dataset(name)
    _split(split, "load_images")
    folder = Path(root).expanduser() if root is not None else data_dir() / ds.folder
    names = ds.files[split]
    if ds.folder in ("cifar10", "cifar100"):
        images, labels = _load_cifar(ds, split, folder, names, download, progress)
    else:
        images, labels = _load_idx(ds, split, folder, names, download, progress)
    return _checked(ds, images, labels)


def _fetch_or_explain(ds, split, folder, names, download, progress):
    """Download the set's archive(s); a DownloadError listing what to place where if we can't."""
    if not download:
        raise _missing_error(ds, split, folder, names, "download=False")
    paths = {}
    for remote in ds.remotes:
        try:
            paths[remote.name] = _download(remote, folder, progress)
        except DownloadError as e:
            raise _missing_error(ds, split, folder, names, str(e).split("\n")[0]) from e
    return paths


def _load_idx(ds, split, folder, names, download, progress):
    images_name, labels_name = names
    local = {n: _local(folder, n) for n in names}
    if not all(local.values()) and ds.folder == "emnist":
        zipped = folder / _EMNIST_ZIP.name
        if not os.path.lexists(zipped):
            zipped = _fetch_or_explain(ds, split, folder, names, download, progress)[
                _EMNIST_ZIP.name]
        arrays = _from_zip(zipped, names, (3, 1))
        images, labels = arrays[images_name], arrays[labels_name]
    else:
        missing = [n for n in names if local[n] is None]
        if missing and not download:
            raise _missing_error(ds, split, folder, missing, "download=False")
        remotes = {r.name: r for r in ds.remotes}
        for n in missing:
            try:
                local[n] = _download(remotes[n], folder, progress)
            except DownloadError as e:
                raise _missing_error(ds, split, folder, missing, str(e).split("\n")[0]) from e
        images = read_idx(local[images_name], ndim=3)
        labels = read_idx(local[labels_name], ndim=1)
    if ds.folder == "emnist":
        images = images.transpose(0, 2, 1)              # EMNIST stores images transposed
        if ds.name == "emnist-letters":                 # its labels run 1..26
            labels = integer_labels(labels, f"load_images({ds.name!r})") - 1
    return images[:, None], labels


def _from_zip(path, names, ndims):
    """{name: array} of the IDX members ``names`` of the EMNIST zip, each member
    streamed through ``read_idx`` (its header bounds what is inflated)."""
    try:
        raw = fileio.open_regular(path, what="zip archive")
    except fileio.FileError as exc:
        raise ImageFileError(str(exc)) from None
    try:
        with raw, zipfile.ZipFile(raw) as z:
            members = {m.filename.rsplit("/", 1)[-1]: m for m in z.infolist()}
            missing = [n for n in names if n not in members]
            if missing:
                raise ImageFileError(f"{path}: missing {', '.join(missing)}")
            arrays = {}
            for n, ndim in zip(names, ndims):
                with z.open(members[n]) as member:
                    arrays[n] = read_idx(member, name=f"{path}: {members[n].filename}",
                                         ndim=ndim)
            return arrays
    # RuntimeError: a damaged directory can claim a zip feature zipfile does not implement
    except (zipfile.BadZipFile, zipfile.LargeZipFile, RuntimeError, *_STREAM_ERRORS) as e:
        raise ImageFileError(f"{path}: not a readable zip archive, or a truncated one "
                             f"({e})") from None


def _load_cifar(ds, split, folder, names, download, progress):
    archive = folder / ds.remotes[0].name
    if folder.is_dir() and all(_has(folder, n) for n in names):
        source = folder
    elif os.path.lexists(archive):
        source = archive
    else:
        source = _fetch_or_explain(ds, split, folder, names, download, progress)[archive.name]
    if ds.name == "cifar10":
        return read_cifar10(source, split)
    from .builtin_hierarchies import cifar100_hierarchy
    images, fine, coarse = read_cifar100(source, split)
    official = cifar100_hierarchy().parent[fine]
    bad = np.flatnonzero(official != coarse)
    if bad.size:
        raise ImageFileError(f"{source}: record {bad[0]} has fine label {fine[bad[0]]} with "
                             f"coarse label {coarse[bad[0]]}, but the official superclass of "
                             f"that fine label is {official[bad[0]]}; the file is corrupt")
    return images, fine


def _has(folder, name):
    return _in_folder(folder, name) is not None


def _checked(ds, images, labels):
    """The images and labels fit the data set: dtype, shapes, counts, label range."""
    if images.dtype != np.uint8:
        raise ImageFileError(f"load_images({ds.name!r}): images of dtype {images.dtype}, "
                             f"expected uint8 (the set's published files hold uint8 pixels)")
    if images.shape[1:] != ds.shape:
        raise ImageFileError(f"load_images({ds.name!r}): images of shape {images.shape[1:]}, "
                             f"expected {ds.shape}")
    if labels.shape != (images.shape[0],):
        raise ImageFileError(f"load_images({ds.name!r}): {images.shape[0]:,} images but "
                             f"labels of shape {labels.shape}")
    labels = integer_labels(labels, f"load_images({ds.name!r})")
    if labels.size and labels.max() >= ds.num_classes:
        raise ImageFileError(f"load_images({ds.name!r}): labels {labels.min()}..{labels.max()}, "
                             f"expected 0..{ds.num_classes - 1}")
    return np.ascontiguousarray(images), labels
