import hashlib
import http.client
import io
from pathlib import Path
from urllib.error import URLError

import pytest

from tinyar.data import download
from tinyar.data.download import DownloadError, data_dir, fetch, sha256_of

PAYLOAD = b"tinyar test payload\n" * 5000          # 100 kB: several read chunks


@pytest.fixture
def served(tmp_path):
    """A file reachable by a file:// URL, and its hash."""
    src = tmp_path / "server" / "data.txt"
    src.parent.mkdir()
    src.write_bytes(PAYLOAD)
    return src.as_uri(), hashlib.sha256(PAYLOAD).hexdigest()


def test_data_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("TINYAR_DATA", str(tmp_path / "d"))
    assert data_dir() == tmp_path / "d"
    monkeypatch.delenv("TINYAR_DATA")
    assert data_dir() == Path.home() / ".cache" / "tinyar"


def test_fetch_downloads_checks_and_caches(tmp_path, served, capsys, monkeypatch):
    url, digest = served
    monkeypatch.setenv("TINYAR_DATA", str(tmp_path / "cache"))
    path = fetch(url, "data.txt", digest, size=len(PAYLOAD))
    assert path == tmp_path / "cache" / "data.txt"
    assert path.read_bytes() == PAYLOAD and sha256_of(path) == digest
    err = capsys.readouterr().err
    assert "data.txt 100% |" in err and "100000/100000" in err and err.endswith("\n")
    assert [p.name for p in path.parent.iterdir()] == ["data.txt"]     # no temp file left

    def no_network(*args, **kwargs):
        raise AssertionError("a good cached file must not be downloaded again")
    monkeypatch.setattr(download, "urlopen", no_network)
    assert fetch(url, "data.txt", digest) == path


def test_fetch_without_progress_is_silent(tmp_path, served, capsys):
    url, digest = served
    fetch(url, "x.txt", digest, directory=tmp_path, progress=False)
    assert capsys.readouterr().err == ""


def test_fetch_wrong_hash_writes_nothing(tmp_path, served):
    url, _ = served
    with pytest.raises(DownloadError, match=r"(?s)sha256 [0-9a-f]{64}, expected.*0{64}.*"
                                            r"Nothing was written"):
        fetch(url, "data.txt", "0" * 64, directory=tmp_path / "c", progress=False)
    assert list((tmp_path / "c").iterdir()) == []
    # a server that sends more than the expected size is cut off there
    with pytest.raises(DownloadError, match="larger than the expected 7 bytes.*stopped"):
        fetch(url, "data.txt", hashlib.sha256(PAYLOAD).hexdigest(), size=7,
              directory=tmp_path / "c", progress=False)
    assert list((tmp_path / "c").iterdir()) == []


def test_fetch_replaces_a_corrupt_cached_file(tmp_path, served):
    url, digest = served
    (tmp_path / "data.txt").write_bytes(b"truncated")
    with pytest.warns(UserWarning, match=r"corrupt \(9 bytes, expected 100,000\)"):
        path = fetch(url, "data.txt", digest, size=len(PAYLOAD), directory=tmp_path,
                     progress=False)
    assert path.read_bytes() == PAYLOAD


@pytest.mark.parametrize("failure", [
    URLError("no route to host"),
    TimeoutError("timed out"),
    http.client.IncompleteRead(b"partial"),
])
def test_fetch_offline_error(tmp_path, monkeypatch, failure):
    def broken(*args, **kwargs):
        raise failure
    monkeypatch.setattr(download, "urlopen", broken)
    with pytest.raises(DownloadError) as info:
        fetch("https://example.invalid/f.txt", "f.txt", "ab" * 32, size=1234,
              directory=tmp_path / "c", progress=False)
    msg = str(info.value)
    assert "could not download https://example.invalid/f.txt" in msg
    assert str(tmp_path / "c" / "f.txt") in msg and "1,234 bytes" in msg and "ab" * 32 in msg
    assert info.value.__cause__ is failure
    assert list((tmp_path / "c").iterdir()) == []


def test_progress_bar_without_total_counts_and_rates():
    from tinyar.progress import ProgressBar
    out = io.StringIO()
    bar = ProgressBar(None, "f.bin", unit="B", file=out)
    bar.update(5000)
    bar.update(7000)
    bar.close()
    text = out.getvalue()
    assert text.startswith("f.bin 12,000 B [") and "B/s]" in text and text.endswith("\n")


def test_progress_bar_with_total_in_a_log_prints_every_tenth():
    from tinyar.progress import ProgressBar
    out = io.StringIO()
    with ProgressBar(100, "train", file=out) as bar:
        for _ in range(100):
            bar.update(1, loss=0.5)
    lines = out.getvalue().splitlines()
    assert len(lines) == 11 and lines[-1].startswith("train 100% |") and "loss=0.5" in lines[-1]


def test_progress_bar_of_a_resumed_run_rates_only_this_process(monkeypatch):
    """A run resumed at step 600 of 1,000: the bar starts at 60 %, and the rate and the
    ETA come from the steps done since the resume, not from all 600."""
    from tinyar import progress
    clock = iter([100.0, 110.0])  # the bar starts at t=100; 10 s later it is drawn
    monkeypatch.setattr(progress.time, "perf_counter", lambda: next(clock))
    bar = progress.ProgressBar(1000, "train", unit="step", rate_unit="tok", rate_scale=32,
                               file=io.StringIO(), initial=600)
    assert bar.line(100.0).startswith("train  60% |")
    bar.count = 700  # 100 steps of 32 tokens in 10 s: 320 tok/s, 300 steps left: 30 s
    line = bar.line(110.0)
    assert "700/1000 [00:10<00:30, 320.0 tok/s]" in line, line
