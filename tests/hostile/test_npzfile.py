"""tinyar.npzfile: only the members asked for are read, each header checked first."""
import io
import math
import os
import zipfile

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from tinyar.errors import CheckpointError
from tinyar.npzfile import NpzReader


def _member(zf, name, header, data=b"", compress=zipfile.ZIP_STORED):
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, header)
    zf.writestr(name + ".npy", buf.getvalue() + data, compress_type=compress)


def test_reads_what_savez_wrote(tmp_path):
    arrays = {"model/w": np.arange(12, dtype=np.float32).reshape(3, 4),
              "f": np.asfortranarray(np.arange(6.0).reshape(2, 3)), "i": np.arange(3),
              "meta": np.array('{"a": 1}')}
    np.savez(tmp_path / "a.npz", **arrays)
    with NpzReader(tmp_path / "a.npz") as npz:
        assert sorted(npz.names()) == sorted(arrays)
        for name, value in arrays.items():
            got = npz.read(name, kinds="fiU")
            assert got.shape == value.shape and got.dtype == value.dtype
            np.testing.assert_array_equal(got, value)
        assert npz.read_text("meta", 100) == '{"a": 1}'


@settings(max_examples=30, deadline=None)
@given(shape=st.lists(st.integers(0, 10**6), min_size=1, max_size=4))
def test_a_header_cannot_ask_for_more_than_the_member_holds(tmp_path_factory, shape):
    path = tmp_path_factory.mktemp("npz") / "a.npz"
    with zipfile.ZipFile(path, "w") as zf:
        _member(zf, "w", {"descr": "<f8", "fortran_order": False, "shape": tuple(shape)},
                b"\0" * 64)
    needed = math.prod(shape) * 8
    with NpzReader(path) as npz:
        if needed > 64:
            with pytest.raises(CheckpointError, match="declares shape .* but holds only"):
                npz.read("w")
        else:
            assert npz.read("w").shape == tuple(shape)


@pytest.mark.parametrize("descr", ["|O", "<U5", [("a", "<f4")], "<M8[s]", "|V8", "|S3"])
def test_objects_records_and_non_numbers_are_refused(tmp_path, descr):
    with zipfile.ZipFile(tmp_path / "a.npz", "w") as zf:
        _member(zf, "w", {"descr": descr, "fortran_order": False, "shape": (1,)}, b"\0" * 64)
    with NpzReader(tmp_path / "a.npz") as npz, pytest.raises(CheckpointError, match="'w'"):
        npz.read("w", kinds="fiubc")


def test_shape_and_kind_are_checked_before_the_data(tmp_path):
    np.savez(tmp_path / "a.npz", w=np.zeros((3, 4), np.float32), n=np.zeros(3, np.int64))
    with NpzReader(tmp_path / "a.npz") as npz:
        with pytest.raises(CheckpointError, match=r"'w' has shape \(3, 4\), expected \(4, 3\)"):
            npz.read("w", shape=(4, 3))
        with pytest.raises(CheckpointError, match="'n' holds int64 values; expected floats"):
            npz.read("n", kinds="f")
        with pytest.raises(CheckpointError, match="at most 10 are read"):
            npz.read("w", max_bytes=10)


def test_a_compressed_bomb_nobody_asks_for_is_never_inflated(tmp_path):
    with zipfile.ZipFile(tmp_path / "a.npz", "w") as zf:
        _member(zf, "w", {"descr": "<f4", "fortran_order": False, "shape": (2,)}, b"\0" * 8)
        _member(zf, "bomb", {"descr": "<f8", "fortran_order": False, "shape": (2**23,)},
                b"\0" * 2**26, zipfile.ZIP_DEFLATED)
    assert os.path.getsize(tmp_path / "a.npz") < 2**20
    with NpzReader(tmp_path / "a.npz") as npz:
        np.testing.assert_array_equal(npz.read("w"), [0, 0])


@pytest.mark.parametrize("cut", [10, 100, 200, 300, -30, -1])
def test_truncated_files_fail_cleanly(tmp_path, cut):
    np.savez(tmp_path / "a.npz", w=np.arange(50, dtype=np.float32))
    data = (tmp_path / "a.npz").read_bytes()
    (tmp_path / "b.npz").write_bytes(data[:cut])
    with pytest.raises(CheckpointError):
        with NpzReader(tmp_path / "b.npz") as npz:
            npz.read("w")


def test_a_fifo_is_refused(tmp_path):
    os.mkfifo(tmp_path / "model.npz")
    with pytest.raises(CheckpointError, match="FIFO"):
        NpzReader(tmp_path / "model.npz")
