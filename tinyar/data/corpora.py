"""Text corpora for language models: ``load_corpus(name_or_path) -> str``.

* ``"stdlib"`` (the default): the ``.py`` files of the running Python's
  standard library, about 3 MB of real code that every Python install has,
  so it works offline. Files are taken in sorted path order and test suites,
  installed packages, tools and codec tables are skipped, so the same Python
  version always gives the same text.
* ``"shakespeare"``: Tiny Shakespeare (1.1 MB, char-rnn's corpus), downloaded
  once into ``data_dir()`` and checked by SHA-256.
* a path: a text file, or a folder whose text files are concatenated in
  sorted order.

Files are decoded as UTF-8 (undecodable bytes become U+FFFD) with newlines
normalised to ``'\\n'``; files are joined with ``FILE_SEPARATOR``.

``split(ids, 0.9)`` cuts a corpus (text or ids) into the first 90% for
training and the last 10% for validation.
"""
import os
import sysconfig
from pathlib import Path

from ..errors import TinyarError
from .download import fetch

__all__ = ["load_corpus", "stdlib_corpus", "stdlib_files", "folder_corpus", "shakespeare_corpus",
           "split", "CorpusError", "CORPORA", "DEFAULT_STDLIB_CHARS", "FILE_SEPARATOR",
           "SHAKESPEARE_URL", "SHAKESPEARE_SHA256", "SHAKESPEARE_SIZE", "SHAKESPEARE_FILE"]

CORPORA = ("stdlib", "shakespeare")
DEFAULT_STDLIB_CHARS = 3_000_000
FILE_SEPARATOR = "\n\n"

SHAKESPEARE_URL = ("https://raw.githubusercontent.com/karpathy/char-rnn/master/data/"
                   "tinyshakespeare/input.txt")
SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
SHAKESPEARE_SIZE = 1_115_394
SHAKESPEARE_FILE = "tinyshakespeare.txt"

# Folders of the standard library that are not ordinary library code: test
# suites, third-party packages, the IDLE and 2to3 tools, demos, build
# configuration, and codec modules (large tables of exotic characters).
_STDLIB_SKIP_DIRS = {"test", "tests", "idle_test", "site-packages", "dist-packages", "idlelib",
                     "lib2to3", "turtledemo", "ensurepip", "pydoc_data", "encodings",
                     "lib-dynload", "__pycache__", "__phello__"}
_STDLIB_SKIP_PREFIXES = ("test_", "_sysconfigdata", "config-")


class CorpusError(TinyarError, ValueError):
    """A corpus is unknown, empty, or too short to use."""


def load_corpus(name_or_path="stdlib", *, max_chars=None, min_chars=2, progress=True):
    """The text of a corpus: ``"stdlib"``, ``"shakespeare"``, or a file or folder path.

    ``max_chars`` keeps only the first characters (``"stdlib"`` collects
    ``DEFAULT_STDLIB_CHARS`` when it is None). A text shorter than
    ``min_chars`` (2 by default: one input and its next-token target) is a
    ``CorpusError``. Known names win over paths: write ``./shakespeare`` for
    a file of that name.
    """
    name = os.fspath(name_or_path)
    if name == "stdlib":
        text = stdlib_corpus(DEFAULT_STDLIB_CHARS if max_chars is None else max_chars)
        source = f"the standard library at {_stdlib_dir()}"
    elif name == "shakespeare":
        text, source = shakespeare_corpus(progress=progress), "Tiny Shakespeare"
    else:
        path = Path(name).expanduser()
        if path.is_dir():
            text = folder_corpus(path)
        elif path.is_file():
            text = _read_text(path)
        else:
            raise CorpusError(f"load_corpus: no corpus named {name!r} (known: "
                              f"{', '.join(CORPORA)}) and no file or folder at {path}")
        source = str(path)
    if max_chars is not None:
        text = text[:int(max_chars)]
    if len(text) < min_chars:
        raise CorpusError(f"load_corpus: {source} gives {len(text)} characters, fewer than the "
                          f"{min_chars} needed" + ("; it is empty" if not text else ""))
    return text


def _read_text(path):
    """A file's text: UTF-8 with bad bytes replaced, newlines made ``'\\n'``."""
    with open(path, encoding="utf-8", errors="replace", newline=None) as f:
        return f.read()


def _stdlib_dir():
    return Path(sysconfig.get_paths()["stdlib"])


def stdlib_files():
    """The standard library's ``.py`` files that make up the corpus, in corpus order."""
    root = _stdlib_dir()
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d not in _STDLIB_SKIP_DIRS
                   and not d.startswith(_STDLIB_SKIP_PREFIXES) and not d.startswith(".")]
        for f in files:
            if f.endswith(".py") and not f.startswith(_STDLIB_SKIP_PREFIXES):
                found.append(Path(folder, f))
    # Sort by the path relative to the root, written with '/', so the order is
    # the same on every operating system.
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def stdlib_corpus(max_chars=DEFAULT_STDLIB_CHARS):
    """The first ``max_chars`` characters of the standard library's code.

    Whole files are added in sorted order until the total reaches
    ``max_chars``; the last one is cut there, so the text has exactly
    ``max_chars`` characters (fewer only if the library is smaller).
    """
    max_chars = int(max_chars)
    if max_chars < 1:
        raise ValueError(f"stdlib_corpus: max_chars must be positive, got {max_chars}")
    parts, total = [], 0
    for path in stdlib_files():
        if total >= max_chars:
            break
        text = _read_text(path)
        if not text.strip():
            continue                      # the many empty __init__.py files
        if parts:
            parts.append(FILE_SEPARATOR)
            total += len(FILE_SEPARATOR)
        parts.append(text)
        total += len(text)
    text = "".join(parts)[:max_chars]
    if not text:
        raise CorpusError(f"stdlib_corpus: found no .py files under {_stdlib_dir()} (this Python "
                          f"ships its standard library compiled or zipped); use "
                          f"load_corpus('shakespeare') or the path of a text file instead")
    return text


def _is_text(path, probe=8192):
    """A file is text unless its first bytes hold a NUL (as binary files do)."""
    with open(path, "rb") as f:
        return b"\x00" not in f.read(probe)


def folder_corpus(folder):
    """All text files under ``folder`` (hidden ones skipped), in sorted path order, joined."""
    root = Path(folder)
    found = []
    for sub, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found += [Path(sub, f) for f in files if not f.startswith(".")]
    found = sorted(found, key=lambda p: p.relative_to(root).as_posix())
    texts = [_read_text(p) for p in found if _is_text(p)]
    if not texts:
        raise CorpusError(f"load_corpus: the folder {root} holds no text files")
    return FILE_SEPARATOR.join(texts)


def shakespeare_corpus(progress=True):
    """Tiny Shakespeare, downloaded into ``data_dir()`` on first use."""
    path = fetch(SHAKESPEARE_URL, SHAKESPEARE_FILE, SHAKESPEARE_SHA256, size=SHAKESPEARE_SIZE,
                 progress=progress)
    return _read_text(path)


def split(data, frac=0.9):
    """``(data[:n], data[n:])`` with ``n = int(len(data) * frac)``: train, then validation.

    Works on a string or an array of ids. The validation part is the end of
    the corpus, not a random sample, so no training window overlaps it.
    Each part must hold at least 2 tokens (one input and its target).
    """
    if not 0.0 < frac < 1.0:
        raise ValueError(f"split: frac must be strictly between 0 and 1, got {frac}")
    n = int(len(data) * frac)
    if n < 2 or len(data) - n < 2:
        raise CorpusError(f"split: {len(data)} tokens cut at {frac} give {n} for training and "
                          f"{len(data) - n} for validation; each part needs at least 2. "
                          f"Use a longer corpus")
    return data[:n], data[n:]
