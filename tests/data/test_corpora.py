import shutil
import urllib.request
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest

from tinyar.data import corpora, download
from tinyar.data.corpora import (CorpusError, FILE_SEPARATOR, SHAKESPEARE_FILE,
                                 SHAKESPEARE_SHA256, SHAKESPEARE_SIZE, load_corpus, split,
                                 stdlib_corpus, stdlib_files)
from tinyar.data.download import DownloadError

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "tinyshakespeare.txt"


def shared_shakespeare():
    for candidate in (SHARED, Path("/work/shared/data/tinyshakespeare.txt")):
        if candidate.is_file():
            return candidate
    pytest.skip("no copy of Tiny Shakespeare at ../shared/data/tinyshakespeare.txt "
                "(the tests do not download it)")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """$TINYAR_DATA points at an empty folder, the network is off, and there is no packaged
    copy of Tiny Shakespeare (a trimmed install)."""
    monkeypatch.setenv("TINYAR_DATA", str(tmp_path / "cache"))
    monkeypatch.setattr(corpora, "PACKAGED_SHAKESPEARE", str(tmp_path / "no-such-file"))

    def offline(*args, **kwargs):
        raise URLError("[Errno -3] Temporary failure in name resolution")
    monkeypatch.setattr(download, "urlopen", offline)
    return tmp_path / "cache"


# ----------------------------------------------------------------------- stdlib
def test_stdlib_is_deterministic_and_sized():
    a = stdlib_corpus(200_000)
    b = stdlib_corpus(200_000)
    assert a == b and len(a) == 200_000
    assert "def " in a and "import " in a
    assert stdlib_corpus(50_000) == a[:50_000]        # a prefix of the bigger one
    assert FILE_SEPARATOR in a


def test_stdlib_default_size_and_skipped_folders():
    text = load_corpus("stdlib")
    assert len(text) == corpora.DEFAULT_STDLIB_CHARS
    assert load_corpus("stdlib", max_chars=1000) == text[:1000]
    files = stdlib_files()
    parts = {part for f in files for part in f.parts}
    assert not parts & {"test", "tests", "site-packages", "idlelib", "lib2to3", "encodings"}
    assert not any(f.name.startswith("test_") for f in files)
    assert files == sorted(files, key=lambda p: p.as_posix())


# ---------------------------------------------------------------- files, folders
def test_file_and_folder(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "z.txt").write_bytes(b"zed\r\nline\n")      # newlines normalised
    (tmp_path / "a.txt").write_text("alpha\n")
    (tmp_path / "b" / "img.bin").write_bytes(b"\x89PNG\x00\x01")   # binary: skipped
    (tmp_path / ".hidden").write_text("secret")                  # hidden: skipped
    (tmp_path / "c.md").write_bytes(b"caf\xe9\n")                  # bad UTF-8: replaced
    assert load_corpus(tmp_path / "a.txt") == "alpha\n"
    assert load_corpus(str(tmp_path)) == FILE_SEPARATOR.join(
        ["alpha\n", "zed\nline\n", "caf\ufffd\n"])
    assert load_corpus(tmp_path, max_chars=3) == "alp"


def test_empty_and_missing_corpora(tmp_path):
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(CorpusError, match="0 characters.*empty"):
        load_corpus(tmp_path / "empty.txt")
    (tmp_path / "short.txt").write_text("hello")
    with pytest.raises(CorpusError, match="5 characters, fewer than the 100"):
        load_corpus(tmp_path / "short.txt", min_chars=100)
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "x").write_bytes(b"\x00\x00")
    with pytest.raises(CorpusError, match="no text files"):
        load_corpus(tmp_path / "bin")
    with pytest.raises(CorpusError, match="no corpus named 'nope'.*stdlib, shakespeare"):
        load_corpus("nope")


def test_split():
    ids = np.arange(100)
    train, val = split(ids, 0.9)
    assert np.array_equal(train, np.arange(90)) and np.array_equal(val, np.arange(90, 100))
    assert split("abcdefghij", 0.8) == ("abcdefgh", "ij")
    with pytest.raises(CorpusError, match="at least 2"):
        split(np.arange(10), 0.9)
    with pytest.raises(ValueError, match="frac"):
        split(ids, 1.0)


# ------------------------------------------------------------------ shakespeare
def test_shakespeare_ships_with_the_package(monkeypatch, tmp_path):
    """Offline and with an empty cache, the packaged copy is read, checked by SHA-256."""
    monkeypatch.setenv("TINYAR_DATA", str(tmp_path / "empty"))
    monkeypatch.setattr(download, "urlopen", lambda *a, **k: pytest.fail("downloaded"))
    text = load_corpus("shakespeare")
    assert text.startswith("First Citizen:") and len(text) == 1_115_394


def test_a_damaged_packaged_copy_is_not_used(cache, monkeypatch, tmp_path):
    """A packaged copy of the right size but other bytes: the download is tried instead
    (offline here, so its message)."""
    damaged = tmp_path / "tinyshakespeare.txt"
    damaged.write_bytes(b"x" * 1_115_394)
    monkeypatch.setattr(corpora, "PACKAGED_SHAKESPEARE", str(damaged))
    with pytest.raises(DownloadError):
        load_corpus("shakespeare")


def test_shakespeare_from_cache(cache):
    source = shared_shakespeare()
    cache.mkdir()
    shutil.copy(source, cache / SHAKESPEARE_FILE)
    text = load_corpus("shakespeare")
    assert text.startswith("First Citizen:\nBefore we proceed")
    assert len(text.encode("utf-8")) == SHAKESPEARE_SIZE


def test_shakespeare_offline_message(cache):
    with pytest.raises(DownloadError) as info:
        load_corpus("shakespeare")
    msg = str(info.value)
    assert "could not download" in msg and "Temporary failure" in msg
    assert str(cache / SHAKESPEARE_FILE) in msg and SHAKESPEARE_SHA256 in msg
    assert "$TINYAR_DATA" in msg and "1,115,394 bytes" in msg
    assert isinstance(info.value, OSError)
    assert not cache.exists() or not any(cache.iterdir())        # no partial file left


def test_shakespeare_corrupt_cache_is_reported(cache):
    source = shared_shakespeare()
    cache.mkdir()
    data = bytearray(source.read_bytes())
    data[1000] ^= 1                                        # same size, one bit flipped
    (cache / SHAKESPEARE_FILE).write_bytes(bytes(data))
    with pytest.warns(UserWarning, match="corrupt"), \
            pytest.raises(DownloadError, match=r"(?s)corrupt \(sha256 [0-9a-f]{64}, expected"):
        load_corpus("shakespeare")


def test_shakespeare_corrupt_cache_is_downloaded_again(cache, monkeypatch):
    source = shared_shakespeare()
    cache.mkdir()
    (cache / SHAKESPEARE_FILE).write_text("not shakespeare")
    monkeypatch.setattr(download, "urlopen", urllib.request.urlopen)    # file:// only
    monkeypatch.setattr(corpora, "SHAKESPEARE_URL", source.resolve().as_uri())
    with pytest.warns(UserWarning, match="corrupt"):
        text = load_corpus("shakespeare", progress=False)
    assert text.startswith("First Citizen:")
    assert download.sha256_of(cache / SHAKESPEARE_FILE) == SHAKESPEARE_SHA256


def test_shakespeare_pipeline(cache):
    """Corpus -> tokenizer -> split -> batches, end to end on the real text."""
    from tinyar.data import CharTokenizer, StreamBatcher, WordTokenizer
    cache.mkdir()
    shutil.copy(shared_shakespeare(), cache / SHAKESPEARE_FILE)
    text = load_corpus("shakespeare")
    tok = CharTokenizer.from_text(text)
    assert tok.vocab_size == 65                       # char-rnn's well-known count
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    train, val = split(ids, 0.9)
    assert len(train) == int(len(ids) * 0.9) and len(train) + len(val) == len(ids)
    x, y = StreamBatcher(train, batch_size=16, bptt=64).batch(0)
    assert tok.decode(x[0]) == text[:64] and tok.decode(y[0]) == text[1:65]
    words = WordTokenizer.from_text(text, max_vocab=5000)
    assert words.vocab_size == 5000 and words.itos[0] == "\n"
    assert words.decode(words.encode("First Citizen:\n")) == "First Citizen:\n"
