"""Hostile data inputs: every read is bounded, opens only regular files, and refuses
what it cannot read faithfully (with one line naming the file) instead of training
on a silently bent copy; the user's own folders of IDX or CIFAR files load as they
are; tampered tokenizer and hierarchy metadata is refused key by key."""
import gzip
import io
import json
import os
import signal
import stat
import tarfile
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from tinyar import fileio
from tinyar.data import corpora, datasets, download, images
from tinyar.data.builtin_hierarchies import cifar100_hierarchy, hierarchy_for
from tinyar.data.corpora import CorpusError, load_corpus
from tinyar.data.datasets import load_dataset
from tinyar.data.hierarchy import ClassHierarchy, HierarchyError
from tinyar.data.images import (ImageFileError, load_images, read_cifar10, read_cifar100,
                                read_idx, write_cifar, write_idx)
from tinyar.data.tokenizers import CharTokenizer, Tokenizer, WordTokenizer
from tinyar.errors import CheckpointError, ConfigError, FileError, TinyarError

HOSTILE = settings(max_examples=60, deadline=None,
                   suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(autouse=True)
def no_hang():
    """A read that blocks (a FIFO opened for reading) fails the test instead of hanging."""
    def expired(signum, frame):
        raise TimeoutError("the read blocked: a FIFO or device was opened")
    old = signal.signal(signal.SIGALRM, expired)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


@pytest.fixture
def offline(tmp_path, monkeypatch):
    monkeypatch.setenv("TINYAR_DATA", str(tmp_path / "data"))

    def no_network(*args, **kwargs):
        raise AssertionError("nothing may be downloaded here")
    monkeypatch.setattr(download, "urlopen", no_network)
    return tmp_path / "data"


def one_line(exc):
    text = str(exc.value if hasattr(exc, "value") else exc)
    assert "\n" not in text, text
    return text


def idx_bytes(shape, code=0x08, data=None):
    header = bytes([0, 0, code, len(shape)]) + b"".join(int(d).to_bytes(4, "big")
                                                        for d in shape)
    return header + (data if data is not None else b"")


class CountingGzip(gzip.GzipFile):
    """A GzipFile that records how many inflated bytes it handed out."""
    given_out = 0

    def read(self, size=-1):          # readinto goes through read
        data = super().read(size)
        CountingGzip.given_out += len(data)
        return data


# ============================================================ 1. reading is bounded
@pytest.mark.parametrize("extra", [1, 1000, 3_000_000])
def test_an_idx_gzip_that_inflates_past_its_header_is_refused_reading_one_byte_more(
        tmp_path, monkeypatch, extra):
    """A header declaring 60000x28x28 and a stream inflating past it: exactly the
    declared bytes and one more are inflated, then the file is refused."""
    shape = (60000, 28, 28)
    declared = 60000 * 28 * 28
    path = tmp_path / "train-images-idx3-ubyte.gz"
    with gzip.open(path, "wb", compresslevel=9) as f:
        f.write(idx_bytes(shape))
        zeros = bytes(1 << 20)
        left = declared + extra
        while left:
            f.write(zeros[:min(left, len(zeros))])
            left -= min(left, len(zeros))
    assert path.stat().st_size < 500_000                   # small on disk
    CountingGzip.given_out = 0
    monkeypatch.setattr(images.gzip, "GzipFile", CountingGzip)
    with pytest.raises(ImageFileError, match="extra bytes after the data") as info:
        read_idx(path)
    assert str(path) in one_line(info)
    assert CountingGzip.given_out <= 4 + 12 + declared + 1


@pytest.mark.parametrize("shape, code", [
    ((10**4, 10**4, 10**4), 0x08),                           # 10^12 elements
    ((2**32 - 1,) * 4, 0x0E),                                # would overflow int64
    ((60000, 28, 28, 28, 28), 0x0D),
    ((2**31 + 1,), 0x08),
    ((1, 2**31), 0x0C),
])
@pytest.mark.parametrize("gz", [False, True])
def test_an_absurd_idx_header_is_refused_before_anything_is_allocated(tmp_path, monkeypatch,
                                                                      shape, code, gz):
    raw = idx_bytes(shape, code, bytes(64))
    path = tmp_path / "x.idx"
    path.write_bytes(gzip.compress(raw) if gz else raw)

    def no_alloc(*args, **kwargs):
        raise AssertionError("allocated before the header was checked")
    monkeypatch.setattr(images.np, "empty", no_alloc)
    with pytest.raises(ImageFileError, match="declares .* bytes; at most") as info:
        read_idx(path)
    one_line(info)


def test_the_caller_cap_on_idx_data_is_honoured(tmp_path):
    path = write_idx(np.zeros((10, 10, 10), np.uint8), tmp_path / "a.gz")
    assert read_idx(path, max_bytes=1000).shape == (10, 10, 10)
    with pytest.raises(ImageFileError, match="1,000 bytes; at most 999"):
        read_idx(path, max_bytes=999)


def _good_idx():
    rng = np.random.default_rng(0)
    return idx_bytes((3, 4, 5), 0x08, rng.integers(0, 256, 60, dtype=np.uint8).tobytes())


@pytest.mark.parametrize("cut", range(0, len(_good_idx())))
def test_a_raw_idx_truncated_anywhere_is_refused(tmp_path, cut):
    path = tmp_path / "t10k-images-idx3-ubyte"
    path.write_bytes(_good_idx()[:cut])
    with pytest.raises(ImageFileError, match="truncated|too short") as info:
        read_idx(path, ndim=3)
    assert str(path) in one_line(info)


@pytest.mark.parametrize("cut", range(0, len(gzip.compress(_good_idx(), mtime=0)), 3))
def test_a_gzipped_idx_truncated_anywhere_is_refused(tmp_path, cut):
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(_good_idx(), mtime=0)[:cut])
    with pytest.raises(ImageFileError) as info:
        read_idx(path, ndim=3)
    assert str(path) in one_line(info)


@pytest.mark.parametrize("code", [c for c in range(256) if c not in images.IDX_TYPES][::7])
def test_unknown_idx_type_codes_are_refused(code):
    with pytest.raises(ImageFileError, match=f"unknown IDX type code 0x{code:02x}"):
        read_idx(idx_bytes((1,), code, b"\0" * 8))


@pytest.mark.parametrize("magic", [b"\x50\x4b\x03\x04", b"\x89PNG", b"\x00\x01\x08\x01",
                                   b"\xff\x00\x08\x01", b"GIF8"])
def test_wrong_magic_numbers_are_refused(magic):
    with pytest.raises(ImageFileError, match="not an IDX file"):
        read_idx(magic + bytes(16))


@HOSTILE
@given(data=st.binary(max_size=200))
def test_random_bytes_give_an_array_or_an_image_file_error(data):
    for blob in (data, gzip.compress(data, mtime=0)[:len(data) + 10]):
        try:
            read_idx(blob)
        except ImageFileError as exc:
            one_line(exc)


def _make_cifar10(folder, rng, n=2):
    folder.mkdir(parents=True, exist_ok=True)
    parts = {}
    for name in images.CIFAR10_TRAIN + images.CIFAR10_TEST:
        x, y = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8), rng.integers(0, 10, n)
        write_cifar(folder / name, x, y)
        parts[name] = (x, y)
    return parts


@pytest.mark.parametrize("cut", [0, 1, 100, 3072, 3074, 6145])
def test_a_truncated_cifar_file_is_refused(tmp_path, rng, cut):
    _make_cifar10(tmp_path, rng)
    data = (tmp_path / "test_batch.bin").read_bytes()
    (tmp_path / "test_batch.bin").write_bytes(data[:cut])
    with pytest.raises(ImageFileError, match="test_batch.bin") as info:
        read_cifar10(tmp_path, "test")
    one_line(info)


def _tar(src, path, arcname="cifar-10-batches-bin"):
    with tarfile.open(path, "w:gz") as tar:
        tar.add(src, arcname=arcname)
    return path


def test_a_tar_gz_truncated_anywhere_is_refused(tmp_path, rng):
    """Cut anywhere before the last wanted member ends (the pass stops there, so the
    archive's zero padding after it is never needed)."""
    _make_cifar10(tmp_path / "src", rng, n=1)
    whole = _tar(tmp_path / "src", tmp_path / "c.tar.gz").read_bytes()
    cut_path = tmp_path / "cut.tar.gz"
    ends = int(len(whole) * 0.97)
    for cut in list(range(0, 200, 13)) + list(range(200, ends, ends // 25)):
        cut_path.write_bytes(whole[:cut])
        with pytest.raises(ImageFileError) as info:
            read_cifar10(cut_path, "test")
        assert str(cut_path) in one_line(info)


def test_a_tar_member_larger_than_the_cap_is_refused_before_it_is_read(tmp_path, rng,
                                                                       monkeypatch):
    _make_cifar10(tmp_path / "src", rng, n=3)
    tar = _tar(tmp_path / "src", tmp_path / "c.tar.gz")
    monkeypatch.setattr(images, "MAX_DATA_BYTES", 3 * 3073 - 1)
    with pytest.raises(ImageFileError, match=r"declares 9,219 bytes; at most 9,218"):
        read_cifar10(tar, "test")


def test_a_tar_gz_bomb_is_cut_off(tmp_path, monkeypatch):
    """An archive whose unwanted first member inflates to far more than the cap."""
    path = tmp_path / "bomb.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo("padding.bin")
        info.size = 20_000_000
        tar.addfile(info, io.BytesIO(bytes(info.size)))
    monkeypatch.setattr(images, "MAX_ARCHIVE_BYTES", 1_000_000)
    with pytest.raises(ImageFileError, match="inflates to more than 1,000,000 bytes"):
        read_cifar100(path, "train")


def test_an_archive_is_read_only_until_its_members_are_found(tmp_path, rng, monkeypatch):
    _make_cifar10(tmp_path / "src", rng, n=1)
    with tarfile.open(tmp_path / "c.tar.gz", "w:gz") as tar:
        tar.add(tmp_path / "src" / "test_batch.bin", arcname="b/test_batch.bin")
        info = tarfile.TarInfo("b/huge.bin")
        info.size = 50_000_000
        tar.addfile(info, io.BytesIO(bytes(info.size)))
    monkeypatch.setattr(images, "MAX_ARCHIVE_BYTES", 1_000_000)   # the tail is never inflated
    assert read_cifar10(tmp_path / "c.tar.gz", "test")[0].shape == (1, 3, 32, 32)


# --- FIFOs, devices and folders where a file is expected -----------------------------------
def _fifo(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(path)
    return path


SPECIAL = ["fifo", "dir", "dangling"]


def _special(kind, path):
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "dir":
        path.mkdir()
    else:
        path.symlink_to(path.parent / "nowhere")
    return path


@pytest.mark.parametrize("kind", SPECIAL)
def test_read_idx_opens_only_regular_files(tmp_path, kind):
    path = _special(kind, tmp_path / "train-images-idx3-ubyte")
    with pytest.raises(ImageFileError, match="FIFO|directory|no IDX file") as info:
        read_idx(path)
    assert str(path) in one_line(info)


@pytest.mark.parametrize("kind", SPECIAL)
@pytest.mark.parametrize("which", ["train-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte"])
def test_a_fifo_in_an_idx_data_folder_is_refused_by_name(tmp_path, rng, kind, which):
    folder = _idx_folder(tmp_path / "mine", rng, skip=which)
    path = _special(kind, folder / which)
    with pytest.raises(ImageFileError, match="FIFO|directory|no IDX file") as info:
        load_dataset(str(folder))
    assert str(path) in one_line(info)


@pytest.mark.parametrize("kind", SPECIAL)
@pytest.mark.parametrize("name", ["data_batch_3.bin", "test_batch.bin"])
def test_a_fifo_in_a_cifar_folder_is_refused_by_name(tmp_path, rng, kind, name):
    _make_cifar10(tmp_path / "c", rng)
    (tmp_path / "c" / name).unlink()
    path = _special(kind, tmp_path / "c" / name)
    with pytest.raises(ImageFileError, match="FIFO|directory|no CIFAR file") as info:
        load_dataset(str(tmp_path / "c"))
    assert str(path) in one_line(info)


def test_a_fifo_as_an_archive_a_named_set_file_or_a_cached_download(tmp_path, rng, offline):
    with pytest.raises(ImageFileError, match="FIFO"):
        read_cifar10(_fifo(tmp_path / "c.tar.gz"))
    place = offline / "mnist"
    place.mkdir(parents=True)
    write_idx(np.zeros((2, 28, 28), np.uint8), place / "t10k-images-idx3-ubyte.gz")
    _fifo(place / "t10k-labels-idx1-ubyte.gz")
    with pytest.raises(ImageFileError, match="FIFO"):
        load_images("mnist", "test")
    _fifo(tmp_path / "cache" / "f.bin")
    with pytest.raises(FileError, match="FIFO"):
        download.fetch("file:///nowhere", "f.bin", "0" * 64, directory=tmp_path / "cache")


@pytest.mark.parametrize("where", ["file", "folder", "nested"])
def test_a_fifo_as_a_corpus_is_refused_by_name(tmp_path, where):
    if where == "file":
        target = path = _fifo(tmp_path / "corpus.txt")
    else:
        path = tmp_path / "texts"
        (path / "sub").mkdir(parents=True)
        (path / "a.txt").write_text("alpha " * 10)
        target = _fifo(path / ("b.txt" if where == "folder" else "sub/c.txt"))
    with pytest.raises(FileError, match="FIFO") as info:
        load_corpus(path)
    assert str(target) in one_line(info)
    with pytest.raises(FileError, match="FIFO"):
        load_corpus(path, max_chars=10**6)


def test_a_fifo_as_a_hierarchy_or_tokenizer_file(tmp_path):
    fifo = _fifo(tmp_path / "h.json")
    with pytest.raises(HierarchyError, match="FIFO"):
        hierarchy_for(fifo, 3)
    with pytest.raises(HierarchyError, match="FIFO"):
        ClassHierarchy.load(fifo)
    with pytest.raises(CheckpointError, match="FIFO"):
        Tokenizer.load(fifo)


# --- max_chars bounds what a corpus reads ---------------------------------------------------
class Counted:
    """Wraps ``fileio.open_regular`` to count the bytes read from each file opened."""

    def __init__(self, monkeypatch):
        self.opened, self.bytes = [], 0
        real = fileio.open_regular
        counter = self

        def counting(path, *args, **kwargs):
            f = real(path, *args, **kwargs)
            counter.opened.append(os.fspath(path))

            class Raw(io.RawIOBase):
                inner = f                           # keeps the real file open

                def readinto(self, b):
                    n = f.raw.readinto(b)
                    counter.bytes += n or 0
                    return n

                def readable(self):
                    return True

                def fileno(self):
                    return f.fileno()

                def close(self):
                    f.close()
                    super().close()
            return io.BufferedReader(Raw())
        monkeypatch.setattr(corpora.fileio, "open_regular", counting)


@pytest.mark.parametrize("max_chars", [1, 17, 3000, 50_000])
@pytest.mark.parametrize("content", ["ascii", "emoji", "crlf"])
def test_max_chars_stops_reading_a_huge_file(tmp_path, monkeypatch, max_chars, content):
    unit = {"ascii": "To be, or not to be\n", "emoji": "\U0001F600\u00e9x\n",
            "crlf": "line\r\n"}[content]
    path = tmp_path / "big.txt"
    with open(path, "wb") as f:
        f.write((unit * (200_000 // len(unit))).encode())
        f.truncate(2**40)                                 # a sparse terabyte after the text
    counted = Counted(monkeypatch)
    text = load_corpus(path, max_chars=max_chars, min_chars=1)
    assert len(text) == max_chars
    assert text == (unit * (max_chars + 1)).replace("\r\n", "\n")[:max_chars]
    assert counted.bytes <= 4 * max_chars + 3 * 8192


def test_a_folder_corpus_stops_at_the_cap(tmp_path, monkeypatch):
    for i in range(50):
        (tmp_path / f"f{i:02d}.txt").write_text(f"file {i:02d} " * 100)      # 800 chars each
    counted = Counted(monkeypatch)
    text = load_corpus(tmp_path, max_chars=2000)
    assert len(text) == 2000 and text.startswith("file 00 ")
    assert len(counted.opened) == 3                       # 800 + 2 + 800 + 2 + 396 characters
    assert counted.bytes <= 3 * (4 * 2000 + 3 * 8192)


def test_without_max_chars_a_corpus_has_a_size_cap(tmp_path, monkeypatch):
    monkeypatch.setattr(corpora, "MAX_CORPUS_BYTES", 1000)
    (tmp_path / "big.txt").write_text("x" * 1001)
    with pytest.raises(CorpusError, match=r"1,001 bytes; at most 1,000.*--max-chars"):
        load_corpus(tmp_path / "big.txt")
    assert load_corpus(tmp_path / "big.txt", max_chars=10) == "x" * 10
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(3):
        (folder / f"{i}.txt").write_text("y" * 400)
    with pytest.raises(CorpusError, match="more than 1,000 bytes of files"):
        load_corpus(folder)


@pytest.mark.parametrize("bad", [0, -5, 2.5, "100", True])
def test_max_chars_must_be_a_positive_integer(tmp_path, bad):
    (tmp_path / "a.txt").write_text("hello")
    with pytest.raises(ConfigError, match="max_chars must be an integer >= 1"):
        load_corpus(tmp_path / "a.txt", max_chars=bad)


# ======================================================= 2. no silent wrong results
@pytest.mark.parametrize("encoding", ["utf-16", "utf-32", "utf-16-le", "utf-16-be",
                                      "utf-32-be"])
@pytest.mark.parametrize("where", ["file", "folder"])
def test_utf16_and_utf32_corpora_are_refused_by_name(tmp_path, encoding, where):
    path = tmp_path / "t" / "text.txt"
    path.parent.mkdir()
    path.write_bytes("To be, or not to be: that is the question.\n".encode(encoding) * 20)
    with pytest.raises(CorpusError) as info:
        load_corpus(path if where == "file" else path.parent)
    message = one_line(info)
    if where == "file" or encoding in ("utf-16", "utf-32"):     # with a byte-order mark
        assert str(path) in message
        assert "UTF-16" in message or "UTF-32" in message or "NUL" in message


@pytest.mark.parametrize("blob", [
    bytes(range(256)) * 40,                                # every byte value, NULs included
    b"\x89PNG\r\n\x1a\n" + bytes(200),
    b"PK\x03\x04" + os.urandom(4000),
    b"text first " * 100 + b"\x00" + b"then binary",      # a NUL past the probe is found too
])
def test_binary_corpora_are_refused_by_name(tmp_path, blob):
    path = tmp_path / "model.bin"
    path.write_bytes(blob)
    with pytest.raises(CorpusError, match="not text|not UTF-8") as info:
        load_corpus(path)
    assert str(path) in one_line(info)


@HOSTILE
@given(data=st.binary(min_size=64, max_size=2000).filter(lambda b: b"\x00" not in b))
def test_mostly_undecodable_bytes_are_not_a_corpus(tmp_path, data):
    text_bytes = bytes(b | 0x80 for b in data)             # high bytes: mostly invalid UTF-8
    path = tmp_path / "noise.txt"
    path.write_bytes(text_bytes)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            text = load_corpus(path, min_chars=1)
    except CorpusError as exc:
        assert str(path) in one_line(exc)
    else:
        assert text.count("\ufffd") <= max(corpora.FEW_BAD_CHARS,
                                           corpora.MOSTLY_BAD * len(text))


def test_a_few_bad_bytes_are_replaced_and_many_are_counted(tmp_path):
    path = tmp_path / "a.txt"
    path.write_bytes(b"caf\xe9 au lait\n" * 3)
    assert load_corpus(path).count("\ufffd") == 3
    path.write_bytes(b"caf\xe9 au lait and a longer line of text\n" * 50)
    with pytest.warns(UserWarning, match="50 undecodable bytes"):
        assert load_corpus(path).count("\ufffd") == 50
    path.write_bytes(b"\xef\xbb\xbfBOM-prefixed UTF-8\n")
    assert load_corpus(path) == "BOM-prefixed UTF-8\n"


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int16, np.int32, np.int8])
def test_a_named_set_with_non_uint8_idx_images_is_refused(offline, dtype):
    place = offline / "mnist"
    place.mkdir(parents=True)
    write_idx(np.zeros((2, 28, 28), dtype), place / "t10k-images-idx3-ubyte.gz")
    write_idx(np.array([1, 2], np.uint8), place / "t10k-labels-idx1-ubyte.gz")
    with pytest.raises(ImageFileError, match=f"dtype {np.dtype(dtype).name}, expected uint8"):
        load_images("mnist", "test")


@pytest.mark.parametrize("labels, message", [
    (np.array([1.0, 3.7], np.float32), "label 1 is 3.7"),
    (np.array([1.0, np.nan]), "label 1 is nan"),
    (np.array([1, -1], np.int8), "label 1 is -1"),
    (np.array([1.0, -2.0]), "label 1 is -2"),
])
def test_a_named_set_with_bad_idx_labels_is_refused(offline, labels, message):
    place = offline / "fashion-mnist"
    place.mkdir(parents=True)
    write_idx(np.zeros((2, 28, 28), np.uint8), place / "t10k-images-idx3-ubyte.gz")
    write_idx(labels, place / "t10k-labels-idx1-ubyte.gz")
    with pytest.raises(ImageFileError, match=message):
        load_images("fashion-mnist", "test")


def _npz(path, **arrays):
    rng = np.random.default_rng(0)
    base = {"x_train": rng.integers(0, 256, (6, 8, 8), dtype=np.uint8),
            "y_train": np.arange(6) % 3,
            "x_test": rng.integers(0, 256, (4, 8, 8), dtype=np.uint8),
            "y_test": np.arange(4) % 3}
    base.update(arrays)
    np.savez(path, **{k: v for k, v in base.items() if v is not None})
    return str(path)


NPZ_REFUSED = [
    ({"y_train": np.arange(5) % 3}, r"6 images but 5 labels"),
    ({"y_train": np.arange(7) % 3}, r"6 images but 7 labels"),
    ({"y_test": np.arange(0)}, r"4 images but 0 labels"),
    ({"x_test": np.zeros((4, 9, 8), np.uint8)}, r"training images are \(1, 8, 8\).*test "
                                                r"images are \(1, 9, 8\)"),
    ({"x_test": np.zeros((4, 3, 8, 8), np.uint8)}, r"\(3, 8, 8\)"),
    ({"x_train": np.zeros((6, 8, 8), np.int16)}, r"dtype int16; expected uint8"),
    ({"x_train": np.zeros((6, 8, 8), np.int64)}, r"dtype int64; expected uint8"),
    ({"x_train": np.zeros((6, 8, 8), bool)}, r"dtype bool"),
    ({"x_train": np.zeros((6, 8, 8), np.complex64)}, r"x_train.*complex"),
    ({"x_train": np.full((6, 8, 8), 255.0)}, r"values 255\.\.255; expected \[0, 1\]"),
    ({"x_train": np.full((6, 8, 8), -0.5, np.float32)}, r"values -0\.5\.\.-0\.5"),
    ({"x_train": np.full((6, 8, 8), np.nan)}, r"NaN or infinite"),
    ({"x_test": np.full((4, 8, 8), np.inf, np.float16)}, r"test set: images hold NaN"),
    ({"y_train": np.array([0, 1, 2, 3.7, 1, 0])}, r"label 3 is 3\.7"),
    ({"y_train": np.array([0, 1, 2, -1, 1, 0])}, r"label 3 is -1"),
    ({"y_train": np.array([True] * 6)}, r"dtype bool"),
    ({"y_train": np.zeros((6, 1), np.int64)}, r"shape \(6, 1\); expected \(N,\)"),
    ({"y_train": np.array([0, 1, 2, 10**6, 1, 0])}, r"label 1000000; at most 100,000"),
    ({"x_train": np.zeros((6,), np.uint8)}, r"shape \(6,\); expected \(N, C, H, W\)"),
    ({"x_train": np.zeros((6, 1, 1, 8, 8), np.uint8)}, r"expected \(N, C, H, W\)"),
    ({"x_train": np.zeros((0, 8, 8), np.uint8), "y_train": np.zeros(0, np.int64)},
     r"the split is empty"),
    ({"x_train": np.zeros((6, 0, 8), np.uint8)}, r"hold no pixels"),
    ({"y_test": None}, r"lacks arrays \['y_test'\]"),
    ({"x_train": None, "y_train": None}, r"lacks arrays \['x_train', 'y_train'\]"),
]


@pytest.mark.parametrize("arrays, message", NPZ_REFUSED)
def test_npz_data_that_cannot_be_used_faithfully_is_refused(tmp_path, arrays, message):
    path = _npz(tmp_path / "data.npz", **arrays)
    with pytest.raises(TinyarError, match=message) as info:
        load_dataset(path)
    one_line(info)


@pytest.mark.parametrize("arrays", [a for a, m in NPZ_REFUSED if "images but" in m
                                    or "expected uint8" in m or "expected (N," in m])
def test_npz_shapes_dtypes_and_counts_are_checked_before_any_data_is_read(tmp_path,
                                                                          monkeypatch, arrays):
    path = _npz(tmp_path / "data.npz", **arrays)

    def no_read(*args, **kwargs):
        raise AssertionError("data read before the headers were checked")
    monkeypatch.setattr(datasets.NpzReader, "read", no_read)
    with pytest.raises(TinyarError):
        load_dataset(path)


def test_npz_with_pickled_objects_or_absurd_headers_is_refused(tmp_path):
    np.savez(tmp_path / "obj.npz", x_train=np.array([object()] * 6, dtype=object),
             y_train=np.arange(6), x_test=np.zeros((2, 4, 4)), y_test=np.arange(2))
    with pytest.raises(ImageFileError, match="x_train.*only plain numbers"):
        load_dataset(str(tmp_path / "obj.npz"))
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ImageFileError, match="not an .npz file"):
        load_dataset(str(tmp_path / "junk.npz"))


@pytest.mark.parametrize("labels", [np.array([0.0, 1.0, 2.0, 0.0, 1.0, 2.0]),
                                    np.array([0, 1, 2, 0, 1, 2], np.uint8),
                                    np.array([0, 1, 2, 0, 1, 2], np.int16)])
def test_whole_number_labels_of_any_numeric_dtype_convert_losslessly(tmp_path, labels):
    path = _npz(tmp_path / "data.npz", y_train=labels,
                x_train=np.random.default_rng(0).random((6, 1, 8, 8)).astype(np.float32))
    x, y, xt, yt, h, name = load_dataset(path)
    assert y.dtype == np.int64 and y.tolist() == [0, 1, 2, 0, 1, 2]
    assert x.dtype == np.float32 and x.shape == (6, 1, 8, 8) and 0 <= x.min() <= x.max() <= 1
    assert xt.dtype == np.float32 and np.allclose(xt * 255, np.round(xt * 255))
    assert h.num_labels == 3 and name == "data.npz"


# ================================================================= 3. the user's folders
def _idx_folder(folder, rng, n=(5, 3), gz=True, dotted=False, skip=None, size=(28, 28)):
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, count in zip(("train", "t10k"), n):
        sep = "." if dotted else "-"
        for kind, array in (("images", rng.integers(0, 256, (count, *size), dtype=np.uint8)),
                            ("labels", rng.integers(0, 10, count).astype(np.uint8))):
            rank = 3 if kind == "images" else 1
            name = f"{prefix}-{kind}{sep}idx{rank}-ubyte" + (".gz" if gz else "")
            if skip not in (name, name[:-3]):
                write_idx(array, folder / name)
    return folder


@pytest.mark.parametrize("gz, dotted", [(True, False), (False, False), (False, True),
                                        (True, True)])
@pytest.mark.parametrize("size", [(28, 28), (12, 20)])
def test_a_folder_of_idx_files_loads_as_it_is(tmp_path, rng, gz, dotted, size, offline):
    folder = _idx_folder(tmp_path / "my-digits", rng, gz=gz, dotted=dotted, size=size)
    x, y, xt, yt, h, name = load_dataset(str(folder))
    assert x.shape == (5, 1, *size) and xt.shape == (3, 1, *size) and x.dtype == np.float32
    assert y.dtype == yt.dtype == np.int64 and name == "my-digits"
    assert h.num_classes == 1 and h.num_labels == int(max(y.max(), yt.max())) + 1
    first = "train-images" + ("." if dotted else "-") + "idx3-ubyte" + (".gz" if gz else "")
    np.testing.assert_allclose(x[:, 0] * 255, read_idx(folder / first), atol=1e-3)


@pytest.mark.parametrize("dtype, ok", [(np.float32, True), (np.float64, True),
                                       (np.int16, False), (np.int32, False)])
def test_a_folder_of_non_uint8_idx_images(tmp_path, rng, dtype, ok):
    folder = _idx_folder(tmp_path / "f", rng)
    write_idx(rng.random((5, 28, 28)).astype(dtype), folder / "train-images-idx3-ubyte.gz")
    if ok:
        x = load_dataset(str(folder))[0]
        assert x.dtype == np.float32 and 0 <= x.min() and x.max() <= 1
    else:
        with pytest.raises(ImageFileError, match=f"dtype {np.dtype(dtype).name}; expected "
                                                 f"uint8"):
            load_dataset(str(folder))


@pytest.mark.parametrize("labels, message", [
    (np.array([0, 1, 2.5, 3, 4], np.float32), "label 2 is 2.5"),
    (np.array([0, 1, 2, 3], np.uint8), "5 images but 4 labels"),
    (np.array([0, 1, 2, 3, 4, 5], np.uint8), "5 images but 6 labels"),
    (np.array([0, -3, 2, 3, 4], np.int8), "label 1 is -3"),
])
def test_a_folder_with_bad_idx_labels_is_refused(tmp_path, rng, labels, message):
    folder = _idx_folder(tmp_path / "f", rng)
    write_idx(labels, folder / "train-labels-idx1-ubyte.gz")
    with pytest.raises(TinyarError, match=message) as info:
        load_dataset(str(folder))
    one_line(info)


def test_a_folder_of_cifar10_batches_loads_with_its_hierarchy(tmp_path, rng):
    parts = _make_cifar10(tmp_path / "c10" / "cifar-10-batches-bin", rng)
    for folder in (tmp_path / "c10" / "cifar-10-batches-bin", tmp_path / "c10"):
        x, y, xt, yt, h, name = load_dataset(str(folder))
        assert x.shape == (10, 3, 32, 32) and xt.shape == (2, 3, 32, 32)
        np.testing.assert_array_equal(yt, parts["test_batch.bin"][1])
        np.testing.assert_allclose(xt * 255, parts["test_batch.bin"][0], atol=1e-3)
        assert h.class_names == hierarchy_for("cifar10").class_names
        assert name == folder.name


def _cifar100_folder(folder, rng, n=4, tamper=False):
    folder.mkdir(parents=True, exist_ok=True)
    parts = {}
    for name in ("train.bin", "test.bin"):
        fine = rng.integers(0, 100, n)
        coarse = cifar100_hierarchy().parent[fine].copy()
        if tamper and name == "test.bin":
            coarse[1] = (coarse[1] + 1) % 20
        x = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
        write_cifar(folder / name, x, fine, coarse)
        parts[name] = (x, fine)
    return parts


def test_a_folder_of_cifar100_files_loads_with_the_superclasses(tmp_path, rng):
    parts = _cifar100_folder(tmp_path / "c100", rng)
    x, y, xt, yt, h, name = load_dataset(str(tmp_path / "c100"))
    np.testing.assert_array_equal(y, parts["train.bin"][1])
    assert h.num_labels == 100 and h.num_classes == 20 and name == "c100"


def test_cifar100_coarse_bytes_that_disagree_need_a_hierarchy(tmp_path, rng):
    _cifar100_folder(tmp_path / "c100", rng, tamper=True)
    with pytest.raises(ImageFileError, match="test.bin record 1 .*--hierarchy") as info:
        load_dataset(str(tmp_path / "c100"))
    one_line(info)
    mapping = tmp_path / "two.json"
    mapping.write_text(json.dumps({"low": list(range(50)), "high": list(range(50, 100))}))
    h = load_dataset(str(tmp_path / "c100"), hierarchy=str(mapping))[4]
    assert h.num_classes == 2 and h.num_labels == 100


def test_a_hierarchy_for_a_folder_json_or_built_in(tmp_path, rng):
    folder = _idx_folder(tmp_path / "f", rng)
    mapping = tmp_path / "h.json"
    mapping.write_text(json.dumps({"small": [0, 1, 2, 3, 4], "large": [5, 6, 7, 8, 9]}))
    h = load_dataset(str(folder), hierarchy=str(mapping))[4]
    assert h.class_names == ["small", "large"] and h.num_labels == 10
    h = load_dataset(str(folder), hierarchy="mnist")[4]
    assert h.num_labels == 10 and h.label_names[3] == "3"
    write_idx(np.full(5, 11, np.uint8), folder / "train-labels-idx1-ubyte.gz")
    with pytest.raises(TinyarError, match="training label 11 is outside the hierarchy's 10 "
                                          "labels"):
        load_dataset(str(folder), hierarchy="mnist")


@pytest.mark.parametrize("present, message", [
    ([], r"holds none of the files.*IDX: train-images-idx3-ubyte.*CIFAR-10: data_batch_1"
         r"\.bin.*CIFAR-100: train\.bin, test\.bin"),
    (["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"],
     r"holds IDX files but lacks t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte"),
    (["data_batch_1.bin", "test_batch.bin"], r"CIFAR-10 files but lacks data_batch_2\.bin"),
    (["train.bin"], r"CIFAR-100 files but lacks test\.bin"),
    (["train.bin", "test_batch.bin"], r"several data formats \(CIFAR-10: test_batch\.bin; "
                                      r"CIFAR-100: train\.bin\)"),
])
def test_a_folder_names_the_files_it_expects(tmp_path, present, message):
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "README.txt").write_text("my data")
    for name in present:
        (folder / name).write_bytes(b"")
    with pytest.raises(ImageFileError, match=message) as info:
        load_dataset(str(folder))
    assert str(folder) in one_line(info)


def test_an_unknown_name_is_one_clear_error(tmp_path):
    with pytest.raises(FileError, match="neither a known data set .* nor an existing"):
        load_dataset(str(tmp_path / "nothing.npz"))


# ============================================================ 4. writers, tampered JSON
def _victim(tmp_path):
    victim = tmp_path / "outside.txt"
    victim.write_text("precious")
    return victim


WRITERS = {
    "tokenizer": lambda p: CharTokenizer.from_text("hello").save(p),
    "hierarchy": lambda p: ClassHierarchy([0, 0, 1]).save(p),
    "idx": lambda p: write_idx(np.zeros((2, 2), np.uint8), p),
    "cifar": lambda p: write_cifar(p, np.zeros((1, 3, 32, 32), np.uint8), [3]),
    "png": lambda p: __import__("tinyar.data.glyphs", fromlist=["x"]).save_grid_png(
        np.zeros((2, 1, 8, 8)), [0, 1], p),
}


@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_writers_replace_a_planted_symlink_and_leave_its_target(tmp_path, writer):
    victim = _victim(tmp_path)
    path = tmp_path / "run" / "out.png"
    path.parent.mkdir()
    path.symlink_to(victim)
    WRITERS[writer](path)
    assert victim.read_text() == "precious"
    assert stat.S_ISREG(path.lstat().st_mode) and path.stat().st_size > 0
    assert sorted(os.listdir(path.parent)) == ["out.png"]


def test_a_download_that_sends_too_much_is_cut_off_and_leaves_nothing(tmp_path):
    big = tmp_path / "served.bin"
    with open(big, "wb") as f:
        f.truncate(2**40)                                 # a sparse terabyte
    with pytest.raises(download.DownloadError, match="larger than the expected 1,000 bytes"):
        download.fetch(big.as_uri(), "f.bin", "0" * 64, size=1000, directory=tmp_path / "c",
                       progress=False)
    assert os.listdir(tmp_path / "c") == []


BAD_VALUES = [None, True, 1, -1, 2.5, "x", "", [], {}, [None], [1, "a"], [[1]], {"a": 1},
              10**30, [10**30], ["a"] * 3]


def _tokenizer_cases():
    char = CharTokenizer.from_text("hello world").to_dict()
    word = WordTokenizer.from_text("to be or not to be", max_vocab=4, lower=True).to_dict()
    cases = []
    for base in (char, word):
        for key in list(base) + ["config.max_vocab", "config.min_count", "config.add_unk",
                                 "config.pattern", "config.lower", "config.bogus"]:
            for value in BAD_VALUES + ["<delete>"]:
                cases.append((base, key, value))
    return cases


def _tampered(base, key, value):
    d = json.loads(json.dumps(base))
    target, leaf = (d["config"], key.split(".")[1]) if key.startswith("config.") else (d, key)
    if value == "<delete>":
        target.pop(leaf, None)
    else:
        target[leaf] = value
    return d


@pytest.mark.parametrize("base, key, value", _tokenizer_cases())
def test_tampered_tokenizer_dicts_give_one_line_checkpoint_errors(base, key, value):
    d = _tampered(base, key, value)
    try:
        tok = Tokenizer.from_dict(d)
    except CheckpointError as exc:
        one_line(exc)
    else:                                                 # the change was a valid one
        assert tok.vocab_size == len(d["tokens"])
        tok.decode(np.arange(tok.vocab_size))


@pytest.mark.parametrize("key, value, message", [
    ("tokens", "abc", "key 'tokens' must be a non-empty list"),
    ("tokens", ["a", "a", "b"], "key 'tokens' lists 'a' twice"),
    ("tokens", ["a", 3, "b"], "key 'tokens' item 1"),
    ("tokens", ["ab", "c", "d"], "key 'tokens' must list single characters"),
    ("tokens", ["c", "b", "a"], "key 'tokens' must list its characters sorted"),
    ("counts", [1, 2], "key 'counts' has 2 entries for 3 tokens"),
    ("counts", [1, True, 2], "key 'counts' item 1"),
    ("counts", [1, -2, 2], "key 'counts' item 1"),
    ("counts", [1, 2**70, 2], "key 'counts' item 1"),
    ("unk_token", "z", "key 'unk_token'"),
    ("version", True, "version True"),
    ("type", ["CharTokenizer"], "holds a \\['CharTokenizer'\\]"),
    ("config", [], "key 'config' must be an object"),
    ("config", {"max_vocab": 1}, "key 'config.max_vocab'"),
    ("config", {"min_count": "2"}, "key 'config.min_count'"),
    ("config", {"add_unk": 1}, "key 'config.add_unk'"),
    ("config", {"evil": 1}, "key 'config' has unknown entries \\['evil'\\]"),
])
def test_each_bad_tokenizer_field_is_named(key, value, message):
    d = CharTokenizer.from_text("abc").to_dict()
    d[key] = value
    with pytest.raises(CheckpointError, match=message):
        Tokenizer.from_dict(d)


@pytest.mark.parametrize("pattern", ["(", "[a-", "x" * 2000, 5, ""])
def test_a_bad_word_pattern_is_refused(pattern):
    d = WordTokenizer.from_text("a b c").to_dict()
    d["config"]["pattern"] = pattern
    with pytest.raises(CheckpointError, match="key 'config.pattern'"):
        Tokenizer.from_dict(d)


@HOSTILE
@given(d=st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
                      lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=20))
def test_arbitrary_json_is_never_a_raw_traceback(d):
    for build in (Tokenizer.from_dict, ClassHierarchy.from_dict):
        try:
            build(d)
        except TinyarError as exc:
            one_line(exc)
    if isinstance(d, dict):
        base = CharTokenizer.from_text("abc").to_dict()
        for key in list(base)[:7]:
            try:
                Tokenizer.from_dict({**base, key: d})
            except TinyarError as exc:
                one_line(exc)


def _hierarchy_cases():
    base = ClassHierarchy([0, 1, 1, 0], class_names=["a", "b"],
                          label_names=["w", "x", "y", "z"]).to_dict()
    return [(base, key, value) for key in ("parent", "class_names", "label_names", "extra")
            for value in BAD_VALUES + [[0, 5, 1, 0], [0, 2, 2, 0], [0, 0, 0, 10**12],
                                       ["a", "a"], ["w", "w", "y", "z"], "<delete>"]]


@pytest.mark.parametrize("base, key, value", _hierarchy_cases())
def test_tampered_hierarchy_dicts_give_one_line_hierarchy_errors(base, key, value):
    d = dict(base)
    if value == "<delete>":
        d.pop(key, None)
    else:
        d[key] = value
    try:
        h = ClassHierarchy.from_dict(d)
    except HierarchyError as exc:
        message = one_line(exc)
        assert any(f"'{k}'" in message for k in ("parent", "class_names", "label_names")) \
            or "unknown keys" in message or "expected an object" in message
    else:
        assert h.num_labels == len(d["parent"])


def test_a_hierarchy_must_fit_the_model_and_cannot_allocate_absurdly():
    d = ClassHierarchy([0, 1, 1]).to_dict()
    with pytest.raises(HierarchyError, match="covers 3 labels, expected 5"):
        ClassHierarchy.from_dict(d, num_labels=5)
    with pytest.raises(HierarchyError, match="class id 1000000000000 for 3 labels"):
        ClassHierarchy(np.array([0, 1, 10**12]))


@pytest.mark.parametrize("mapping, labels, message", [
    ({"a": [True, 1], "b": [0]}, 2, "lists True; labels are strings or integers"),
    ({"a": [1.0], "b": [0]}, 2, "lists 1.0; labels are strings or integers"),
    ({"a": [[0]], "b": [1]}, 2, r"lists \[0\]"),
    ({"a": [{"x": 0}], "b": [1]}, 2, "lists {'x': 0}"),
    ({"a": [None], "b": [0, 1]}, 2, "lists None"),
    ({"a": ["0"], "b": [1]}, 2, "'0', which is not one of the 2 labels"),
    ({"a": [0, 10**30], "b": [1]}, 2, "which is not one of the 2 labels"),
    ({"a": [0, 1], "b": [1]}, 2, "label 1 is in two classes"),
    ({"a": [0], "b": []}, 2, "class 'b' has no labels"),
    ({}, 2, "expected a JSON object .* \\(empty\\)"),
    ([["a", 0]], 2, "expected a JSON object"),
    ({"a": 0}, 2, "class 'a' must map to a list"),
    ({"a": ["cat"], "b": ["dog"]}, ["cat", "cow"], "'dog', which is not one of"),
])
def test_a_user_hierarchy_mapping_is_validated(tmp_path, mapping, labels, message):
    path = tmp_path / "h.json"
    path.write_text(json.dumps(mapping))
    with pytest.raises(HierarchyError, match=message) as info:
        hierarchy_for(path, labels)
    assert str(path) in one_line(info)


@pytest.mark.parametrize("content, message", [
    ("[" * 10_000 + "]" * 10_000, "nested 10000 levels deep"),
    ('{"a": [0, 1]', "not valid JSON"),
    (b"\xff\xfe{}", "not UTF-8"),
])
def test_hierarchy_and_tokenizer_json_is_bounded_and_depth_limited(tmp_path, content,
                                                                   message):
    path = tmp_path / "x.json"
    (path.write_bytes if isinstance(content, bytes) else path.write_text)(content)
    with pytest.raises(HierarchyError, match=message):
        hierarchy_for(path, 2)
    with pytest.raises(HierarchyError, match=message):
        ClassHierarchy.load(path)
    with pytest.raises(CheckpointError, match=message):
        Tokenizer.load(path)


def test_loading_inside_a_run_folder_can_refuse_symlinks(tmp_path):
    real = CharTokenizer.from_text("abc").save(tmp_path / "real.json")
    link = tmp_path / "vocab.json"
    link.symlink_to(real)
    assert Tokenizer.load(link).vocab_size == 3
    with pytest.raises(CheckpointError, match="symlink"):
        Tokenizer.load(link, follow_symlinks=False)
    ClassHierarchy([0, 1]).save(tmp_path / "h-real.json")
    (tmp_path / "h.json").symlink_to(tmp_path / "h-real.json")
    with pytest.raises(HierarchyError, match="symlink"):
        ClassHierarchy.load(tmp_path / "h.json", follow_symlinks=False)
