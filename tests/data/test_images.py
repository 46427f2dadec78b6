"""IDX and CIFAR readers and named image sets, on small synthetic files; no network."""
import gzip
import tarfile
import zipfile
from urllib.error import URLError

import numpy as np
import pytest

from tinyar.data import download, images
from tinyar.data.builtin_hierarchies import cifar100_hierarchy
from tinyar.data.download import DownloadError
from tinyar.data.images import (ImageFileError, image_datasets, load_images, read_cifar10,
                                read_cifar100, read_idx, write_cifar, write_idx)


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """$TINYAR_DATA is an empty folder and every download fails as with no network."""
    monkeypatch.setenv("TINYAR_DATA", str(tmp_path / "data"))
    calls = []

    def no_network(url, *args, **kwargs):
        calls.append(url)
        raise URLError("[Errno -3] Temporary failure in name resolution")
    monkeypatch.setattr(download, "urlopen", no_network)
    return tmp_path / "data", calls


def fake_mnist(rng, n):
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    return images, rng.integers(0, 10, n).astype(np.uint8)


# -------------------------------------------------------------------------- IDX
@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
def test_idx_round_trip(tmp_path, rng, suffix, dtype):
    a = (rng.standard_normal((4, 3, 5)) * 100).astype(dtype)
    path = write_idx(a, tmp_path / f"a.idx{suffix}")
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == (suffix == ".gz")
    b = read_idx(path)
    assert b.dtype == np.dtype(dtype).newbyteorder("=") and b.shape == (4, 3, 5)
    np.testing.assert_array_equal(a, b)
    b[0, 0, 0] = 1                                      # a writable copy
    # gzip is detected by its magic bytes, not by the name
    renamed = tmp_path / "no-suffix"
    renamed.write_bytes(path.read_bytes())
    np.testing.assert_array_equal(read_idx(renamed), a)


def test_idx_layout_is_the_published_one(tmp_path):
    # the first bytes of MNIST's label file: magic 0x00000801, then the count
    raw = bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 2, 1])
    (tmp_path / "l").write_bytes(raw)
    assert read_idx(tmp_path / "l").tolist() == [7, 2, 1]
    big = bytes([0, 0, 0x0B, 1, 0, 0, 0, 2, 0x01, 0x02, 0xFF, 0xFE])   # big-endian int16
    assert read_idx(big).tolist() == [258, -2]


def corrupt_cases():
    good = bytes([0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 2]) + bytes(8)
    return [
        (b"", r"0 bytes, too short for the 4-byte IDX magic"),
        (b"\x00\x00", r"2 bytes, too short"),
        (b"\x50\x4b\x03\x04" + bytes(20), r"not an IDX file: magic number 0x504b0304, expected "
                                         r"0x0000TTDD"),
        (bytes([0, 0, 0x07, 1, 0, 0, 0, 1, 5]), r"unknown IDX type code 0x07 \(magic number "
                                               r"0x00000701\); expected one of 0x08 \(uint8\)"),
        (bytes([0, 0, 8, 0]), r"says 0 dimensions.*expected at least 1"),
        (good[:10], r"truncated IDX header: 3 dimensions need 16 header bytes, the file has 10"),
        (good[:-1], r"truncated: the header says \(2, 2, 2\) values of uint8, which is 8 data "
                    r"bytes, found 7"),
        (good + b"xx", r"has extra bytes after the data.*8 data bytes, found 10"),
        (gzip.compress(good, mtime=0)[:-12], r"gzip stream is damaged or truncated"),
    ]


@pytest.mark.parametrize("data, message", corrupt_cases())
def test_idx_corrupt_files_are_named(tmp_path, data, message):
    path = tmp_path / "broken-idx3-ubyte"
    path.write_bytes(data)
    with pytest.raises(ImageFileError, match=message) as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_idx_wrong_number_of_dimensions(tmp_path):
    path = write_idx(np.zeros((3, 2, 2), np.uint8), tmp_path / "x")
    with pytest.raises(ImageFileError, match=r"x: the IDX header says 3 dimensions \(magic number "
                                             r"0x00000803\), expected 1"):
        read_idx(path, ndim=1)


def test_write_idx_rejects_types_idx_lacks(tmp_path):
    with pytest.raises(ImageFileError, match="no type for int64"):
        write_idx(np.zeros(3, np.int64), tmp_path / "x")


# ------------------------------------------------------------------------ CIFAR
def fake_cifar(rng, n, coarse=False):
    imgs = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
    if coarse:
        fine = rng.integers(0, 100, n)
        return imgs, fine, cifar100_hierarchy().parent[fine]
    return imgs, rng.integers(0, 10, n)


def make_cifar10(folder, rng, sizes=(3, 2, 4, 1, 2), test=3):
    folder.mkdir(parents=True, exist_ok=True)
    parts = []
    for i, n in enumerate(sizes):
        parts.append(fake_cifar(rng, n))
        write_cifar(folder / f"data_batch_{i + 1}.bin", *parts[-1])
    test_part = fake_cifar(rng, test)
    write_cifar(folder / "test_batch.bin", *test_part)
    (folder / "batches.meta.txt").write_text("airplane\n")
    train = (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
    return train, test_part


def make_tar(src_folder, path, arcname):
    with tarfile.open(path, "w:gz") as tar:
        tar.add(src_folder, arcname=arcname)
    return path


def test_cifar_record_layout(tmp_path):
    # one record: label byte, then the red plane row by row, then green, then blue
    record = bytes([7]) + bytes([1]) * 1024 + bytes([2]) * 1024 + bytes([3]) * 1024
    (tmp_path / "test_batch.bin").write_bytes(record)
    imgs, labels = read_cifar10(tmp_path, "test")
    assert imgs.shape == (1, 3, 32, 32) and imgs.dtype == np.uint8 and labels.dtype == np.int64
    assert labels.tolist() == [7] and imgs[0, :, 5, 9].tolist() == [1, 2, 3]


def test_cifar10_folder_and_tar_round_trip(tmp_path, rng):
    train, test = make_cifar10(tmp_path / "src" / "cifar-10-batches-bin", rng)
    for source in (tmp_path / "src" / "cifar-10-batches-bin", tmp_path / "src",
                   make_tar(tmp_path / "src" / "cifar-10-batches-bin", tmp_path / "c10.tar.gz",
                            "cifar-10-batches-bin")):
        x, y = read_cifar10(source, "train")
        assert x.shape == (12, 3, 32, 32) and y.dtype == np.int64
        np.testing.assert_array_equal(x, train[0])
        np.testing.assert_array_equal(y, train[1])
        x, y = read_cifar10(source, "test")
        np.testing.assert_array_equal(x, test[0])
        np.testing.assert_array_equal(y, test[1])


def test_cifar100_folder_and_tar_round_trip(tmp_path, rng):
    folder = tmp_path / "cifar-100-binary"
    folder.mkdir()
    train, test = fake_cifar(rng, 5, coarse=True), fake_cifar(rng, 3, coarse=True)
    write_cifar(folder / "train.bin", *train)
    write_cifar(folder / "test.bin", *test)
    tar = make_tar(folder, tmp_path / "c100.tar.gz", "cifar-100-binary")
    for source in (folder, tar):
        x, fine, coarse = read_cifar100(source, "train")
        np.testing.assert_array_equal(x, train[0])
        np.testing.assert_array_equal(fine, train[1])
        np.testing.assert_array_equal(coarse, train[2])
        assert fine.dtype == coarse.dtype == np.int64
        assert read_cifar100(source, "test")[0].shape == (3, 3, 32, 32)


def test_cifar_corrupt_files(tmp_path, rng):
    make_cifar10(tmp_path, rng)
    data = (tmp_path / "data_batch_2.bin").read_bytes()
    (tmp_path / "data_batch_2.bin").write_bytes(data[:-100])
    with pytest.raises(ImageFileError, match=r"data_batch_2\.bin: 6,046 bytes is not a whole "
                                             r"number of 3073-byte records.*truncated"):
        read_cifar10(tmp_path, "train")
    (tmp_path / "test_batch.bin").write_bytes(bytes([12]) + bytes(3072))
    with pytest.raises(ImageFileError, match=r"test_batch\.bin: record 0 has label byte 12, "
                                             r"expected 0\.\.9"):
        read_cifar10(tmp_path, "test")
    (tmp_path / "test_batch.bin").unlink()
    with pytest.raises(ImageFileError, match="missing test_batch.bin"):
        read_cifar10(tmp_path, "test")
    broken = tmp_path / "broken.tar.gz"
    broken.write_bytes(gzip.compress(b"not a tar" * 100)[:50])
    with pytest.raises(ImageFileError, match=r"broken\.tar\.gz: not a readable \.tar\.gz"):
        read_cifar10(broken, "test")
    with pytest.raises(ValueError, match="split must be 'train' or 'test'"):
        read_cifar10(tmp_path, "val")
    with pytest.raises(ImageFileError, match="nowhere: no such file or folder"):
        read_cifar100(tmp_path / "nowhere")


def test_tar_is_read_in_one_pass_without_extracting(tmp_path, rng, monkeypatch):
    make_cifar10(tmp_path / "src", rng)
    tar = make_tar(tmp_path / "src", tmp_path / "c.tar.gz", "cifar-10-batches-bin")
    before = set(tmp_path.rglob("*"))
    read_cifar10(tar, "train")
    assert set(tmp_path.rglob("*")) == before              # nothing written next to it


# ------------------------------------------------------------------- named sets
def place_mnist(folder, rng, n=(6, 4), gz=True, dotted=False):
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for split, count in zip(("train", "test"), n):
        prefix = "train" if split == "train" else "t10k"
        x, y = fake_mnist(rng, count)
        sep = "." if dotted else "-"
        suffix = ".gz" if gz else ""
        write_idx(x, folder / f"{prefix}-images{sep}idx3-ubyte{suffix}")
        write_idx(y, folder / f"{prefix}-labels{sep}idx1-ubyte{suffix}")
        out[split] = (x, y)
    return out


@pytest.mark.parametrize("gz, dotted", [(True, False), (False, False), (False, True)])
def test_hand_placed_mnist_files_are_used(offline, rng, gz, dotted):
    data, calls = offline
    placed = place_mnist(data / "fashion-mnist", rng, gz=gz, dotted=dotted)
    for split in ("train", "test"):
        x, y = load_images("fashion-mnist", split)
        assert x.shape == (placed[split][0].shape[0], 1, 28, 28) and x.dtype == np.uint8
        assert y.dtype == np.int64 and x.flags.c_contiguous
        np.testing.assert_array_equal(x[:, 0], placed[split][0])
        np.testing.assert_array_equal(y, placed[split][1])
    assert calls == []                                     # nothing was downloaded


def test_root_argument(tmp_path, rng, offline):
    placed = place_mnist(tmp_path / "elsewhere", rng)
    x, y = load_images("mnist", "test", root=tmp_path / "elsewhere")
    np.testing.assert_array_equal(y, placed["test"][1])


def test_missing_files_offline_say_what_to_place_where(offline):
    data, calls = offline
    with pytest.raises(DownloadError) as info:
        load_images("mnist", "train", progress=False)
    msg = str(info.value)
    assert "load_images('mnist', 'train')" in msg and "could not be downloaded" in msg
    assert "Temporary failure in name resolution" in msg
    assert f"{data / 'mnist' / 'train-images-idx3-ubyte.gz'}" in msg
    assert f"{data / 'mnist' / 'train-labels-idx1-ubyte.gz'}" in msg
    assert "t10k" not in msg                                # only this split's files
    assert "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609" in msg
    assert "9,912,422 bytes" in msg and "$TINYAR_DATA" in msg
    # every mirror was tried, for the first missing file
    assert len(calls) == 3 and all(c.endswith("train-images-idx3-ubyte.gz") for c in calls)


def test_missing_cifar_offline(offline):
    data, calls = offline
    with pytest.raises(DownloadError, match=r"(?s)load_images\('cifar100', 'test'\).*"
                                            r"cifar100/cifar-100-binary\.tar\.gz.*168,513,733 "
                                            r"bytes.*58a81ae1"):
        load_images("cifar100", "test", progress=False)
    assert calls == ["https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz"]


def test_download_false_never_touches_the_network(offline):
    data, calls = offline
    with pytest.raises(DownloadError, match="download=False"):
        load_images("cifar10", download=False)
    assert calls == []


def test_download_is_verified(tmp_path, rng, monkeypatch, offline):
    """A served copy with the right hash is accepted; the remote table is what fetch sees."""
    data, _ = offline
    served = tmp_path / "served"
    placed = place_mnist(served, rng)
    files = {p.name: p for p in served.iterdir()}
    seen = []

    def fake_fetch(url, filename, sha256, size=None, *, directory=None, progress=True):
        seen.append((url, filename, sha256, size))
        target = directory / filename
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(files[filename].read_bytes())
        return target
    monkeypatch.setattr(images, "fetch", fake_fetch)
    x, y = load_images("mnist", "test", progress=False)
    np.testing.assert_array_equal(y, placed["test"][1])
    assert [s[1] for s in seen] == ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
    assert seen[0][0] == ("https://storage.googleapis.com/cvdf-datasets/mnist/"
                          "t10k-images-idx3-ubyte.gz")
    assert seen[1][2:] == ("f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6", 4542)


def test_named_cifar_sets_from_folder_and_archive(offline, rng):
    data, calls = offline
    train, test = make_cifar10(data / "cifar10" / "cifar-10-batches-bin", rng)
    x, y = load_images("cifar10", "train")
    np.testing.assert_array_equal(x, train[0])
    # CIFAR-100 from the archive, as downloaded
    src = data / "src" / "cifar-100-binary"
    src.mkdir(parents=True)
    part = fake_cifar(rng, 4, coarse=True)
    write_cifar(src / "train.bin", *part)
    write_cifar(src / "test.bin", *part)
    (data / "cifar100").mkdir()
    make_tar(src, data / "cifar100" / "cifar-100-binary.tar.gz", "cifar-100-binary")
    x, y = load_images("cifar100", "train")
    assert x.shape == (4, 3, 32, 32)
    np.testing.assert_array_equal(y, part[1])
    assert calls == []


def test_cifar100_coarse_bytes_must_match_the_official_superclasses(offline, rng):
    data, _ = offline
    imgs, fine, coarse = fake_cifar(rng, 4, coarse=True)
    coarse = coarse.copy()
    coarse[2] = (coarse[2] + 1) % 20
    (data / "cifar100").mkdir(parents=True)
    write_cifar(data / "cifar100" / "test.bin", imgs, fine, coarse)
    with pytest.raises(ImageFileError, match="record 2 has fine label .* official superclass"):
        load_images("cifar100", "test")


def test_named_set_checks_shape_and_labels(offline, rng):
    data, _ = offline
    folder = data / "mnist"
    folder.mkdir(parents=True)
    write_idx(np.zeros((3, 28, 28), np.uint8), folder / "t10k-images-idx3-ubyte.gz")
    write_idx(np.array([1, 2, 11], np.uint8), folder / "t10k-labels-idx1-ubyte.gz")
    with pytest.raises(ImageFileError, match=r"labels 1\.\.11, expected 0\.\.9"):
        load_images("mnist", "test")
    write_idx(np.array([1, 2], np.uint8), folder / "t10k-labels-idx1-ubyte.gz")
    with pytest.raises(ImageFileError, match=r"3 images but labels of shape \(2,\)"):
        load_images("mnist", "test")
    write_idx(np.zeros((2, 32, 32), np.uint8), folder / "t10k-images-idx3-ubyte.gz")
    with pytest.raises(ImageFileError, match=r"images of shape \(1, 32, 32\), expected "
                                             r"\(1, 28, 28\)"):
        load_images("mnist", "test")
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(b"\x00\x00\x08")
    with pytest.raises(ImageFileError, match=r"t10k-labels-idx1-ubyte\.gz: 3 bytes, too short"):
        load_images("mnist", "test")


def test_emnist_from_zip_is_transposed(offline, rng):
    data, calls = offline
    folder = data / "emnist"
    folder.mkdir(parents=True)
    x = rng.integers(0, 256, (3, 28, 28), dtype=np.uint8)
    y = np.array([1, 26, 5], np.uint8)
    write_idx(x, folder / "tmp-x.gz")
    write_idx(y, folder / "tmp-y.gz")
    with zipfile.ZipFile(folder / "gzip.zip", "w") as z:
        z.write(folder / "tmp-x.gz", "gzip/emnist-letters-test-images-idx3-ubyte.gz")
        z.write(folder / "tmp-y.gz", "gzip/emnist-letters-test-labels-idx1-ubyte.gz")
    imgs, labels = load_images("emnist-letters", "test")
    np.testing.assert_array_equal(imgs[:, 0], x.transpose(0, 2, 1))
    assert labels.tolist() == [0, 25, 4]                   # letters' 1..26 made 0..25
    with pytest.raises(ImageFileError, match="missing emnist-letters-train-images"):
        load_images("emnist-letters", "train")
    assert calls == []


def test_unknown_names_and_splits(offline):
    assert {"mnist", "fashion-mnist", "cifar10", "cifar100", "emnist"} <= set(image_datasets())
    with pytest.raises(ValueError, match="no image data set named 'svhn'; known: "):
        load_images("svhn")
    with pytest.raises(ValueError, match="split must be 'train' or 'test', got 'valid'"):
        load_images("mnist", "valid")
