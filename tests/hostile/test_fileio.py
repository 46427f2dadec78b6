"""tinyar.fileio: writes never follow a planted symlink, reads open only regular files
of bounded size, JSON is bounded in depth, and a run folder takes one writer."""
import json
import os
import stat

import pytest

from tinyar import fileio
from tinyar.errors import FileError


def _victim(tmp_path):
    target = tmp_path / "outside" / "authorized_keys"
    target.parent.mkdir()
    target.write_text("ssh-ed25519 AAAA the user's key\n")
    return target


@pytest.mark.parametrize("writer", ["text", "bytes", "json"])
def test_write_replaces_a_planted_symlink_and_leaves_its_target(tmp_path, writer):
    victim = _victim(tmp_path)
    path = tmp_path / "run" / "samples.txt"
    path.parent.mkdir()
    path.symlink_to(victim)
    {"text": lambda: fileio.write_text(path, "new"),
     "bytes": lambda: fileio.write_bytes(path, b"new"),
     "json": lambda: fileio.write_json(path, ["new"])}[writer]()
    assert victim.read_text() == "ssh-ed25519 AAAA the user's key\n"
    assert not path.is_symlink() and stat.S_ISREG(path.lstat().st_mode)
    assert "new" in path.read_text()


def test_write_takes_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        fileio.write_text(tmp_path / "a.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o640


def test_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "log.json"
    path.write_text("old")
    with pytest.raises(RuntimeError):
        with fileio.atomic_write(path) as f:
            f.write("half")
            raise RuntimeError("crash mid-write")
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["log.json"]


def test_write_onto_a_directory_is_one_clear_error(tmp_path):
    (tmp_path / "model.npz").mkdir()
    with pytest.raises(FileError, match="directory"):
        fileio.write_text(tmp_path / "model.npz", "x")


def test_json_is_standard_json(tmp_path):
    fileio.write_json(tmp_path / "a.json", {"loss": float("nan"), "x": [float("inf"), 1.5]})
    assert json.loads((tmp_path / "a.json").read_text(), parse_constant=lambda c: 1 / 0) == \
        {"loss": None, "x": [None, 1.5]}


def test_a_fifo_is_refused_not_read(tmp_path):
    os.mkfifo(tmp_path / "model.npz")
    with pytest.raises(FileError, match="FIFO"):
        fileio.read_bytes(tmp_path / "model.npz", 100)
    with pytest.raises(FileError, match="FIFO"):
        fileio.check_regular(tmp_path / "model.npz")


def test_symlinks_refused_where_asked(tmp_path):
    victim = _victim(tmp_path)
    (tmp_path / "log.json").symlink_to(victim)
    with pytest.raises(FileError, match="symlink"):
        fileio.read_bytes(tmp_path / "log.json", 1000, follow_symlinks=False)
    with pytest.raises(FileError, match="symlink"):
        fileio.run_file(tmp_path, "log.json")
    assert fileio.read_bytes(tmp_path / "log.json", 1000) == victim.read_bytes()
    assert fileio.run_file(tmp_path, "absent.json") is None


def test_reads_are_bounded(tmp_path):
    (tmp_path / "big.json").write_text("[" + "1," * 1000 + "1]")
    with pytest.raises(FileError, match="at most 100 are read"):
        fileio.read_json(tmp_path / "big.json", max_bytes=100)


@pytest.mark.parametrize("text,depth", [('{"a": "[[[[", "b": [[1]]}', 3),
                                        ('["\\"[", [[]]]', 3), ("[" * 70 + "]" * 70, 70)])
def test_json_depth_is_measured_outside_strings(text, depth):
    assert fileio._max_depth(text) == depth


def test_deep_json_is_refused_before_parsing():
    with pytest.raises(FileError, match="nested 100000 levels"):
        fileio.loads_json("[" * 100_000 + "]" * 100_000)


def test_bad_json_names_its_source(tmp_path):
    (tmp_path / "log.json").write_text("{not json")
    with pytest.raises(FileError, match="log.json.*not valid JSON"):
        fileio.read_json(tmp_path / "log.json")


def test_a_run_folder_takes_one_writer(tmp_path):
    with fileio.RunLock(tmp_path):
        with pytest.raises(FileError, match=f"in use by another tinyar process \\(pid {os.getpid()}"):
            fileio.RunLock(tmp_path).acquire()
    with fileio.RunLock(tmp_path):  # released: free again
        pass


def test_lock_file_symlink_is_not_followed(tmp_path):
    victim = _victim(tmp_path)
    (tmp_path / ".lock").symlink_to(victim)
    with pytest.raises(FileError):
        fileio.RunLock(tmp_path).acquire()
    assert victim.read_text() == "ssh-ed25519 AAAA the user's key\n"


def test_leftovers_are_removed_and_links_never_followed(tmp_path):
    victim = _victim(tmp_path)
    (tmp_path / ".model.npz.a8f3k2.tmp").write_bytes(b"half")
    (tmp_path / "log.json.tmp").symlink_to(victim)
    (tmp_path / "model.npz").write_bytes(b"keep")
    assert sorted(fileio.remove_leftovers(tmp_path)) == [".model.npz.a8f3k2.tmp", "log.json.tmp"]
    assert sorted(os.listdir(tmp_path)) == ["model.npz", "outside"]
    assert victim.exists()
