"""Text corpora for language models: ``load_corpus(name_or_path) -> str``.

* ``"stdlib"`` (the default): the ``.py`` files of the running Python's
  standard library, about 3 MB of real code that every Python install has,
  so it works offline. Files are taken in sorted path order and test suites,
  installed packages, tools and codec tables are skipped, so the same Python
  version always gives the same text.
* ``"shakespeare"``: Tiny Shakespeare (1.1 MB of public-domain text, char-rnn's
  corpus), which ships with tinyar (``tinyar/data/text/``), so it works
  offline; where that copy is missing (a trimmed install) it is downloaded once
  into ``data_dir()``. Either copy is checked by SHA-256.
* a path: a text file, or a folder whose text files are concatenated in
  sorted order.

Files are decoded as UTF-8 with newlines normalised to ``'\\n'``; files are
joined with ``FILE_SEPARATOR``. Reading is bounded: with ``max_chars`` a file
is decoded incrementally and reading stops at the cap (at most 4 bytes a
character), and a folder stops at the cap too; without it a corpus may hold at
most ``MAX_CORPUS_BYTES``. Only regular files are opened (a FIFO would block
forever). A file that is not UTF-8 text is refused, naming it: NUL bytes (a
binary file), a UTF-16/32 byte-order mark, or mostly undecodable bytes. A few
undecodable bytes in a real text file become U+FFFD (with a warning that
counts them when there are more than ``FEW_BAD_CHARS``). In a folder, binary
files are skipped; a file in another text encoding, or one that is not a
regular file, is refused.

``split(ids, 0.9)`` cuts a corpus (text or ids) into the first 90% for
training and the last 10% for validation.
"""
import codecs
import hashlib
import io
import numbers
import os
import sysconfig
import warnings
from pathlib import Path

from .. import fileio
from ..errors import ConfigError, TinyarError
from .download import fetch

__all__ = ["load_corpus", "stdlib_corpus", "stdlib_files", "folder_corpus", "shakespeare_corpus",
           "split", "CorpusError", "CORPORA", "DEFAULT_STDLIB_CHARS", "FILE_SEPARATOR",
           "SHAKESPEARE_URL", "SHAKESPEARE_SHA256", "SHAKESPEARE_SIZE", "SHAKESPEARE_FILE",
           "MAX_CORPUS_BYTES"]

CORPORA = ("stdlib", "shakespeare")
DEFAULT_STDLIB_CHARS = 3_000_000
FILE_SEPARATOR = "\n\n"
#: Largest corpus read without ``max_chars`` (a file, or a folder's files together).
MAX_CORPUS_BYTES = 2**30
#: Undecodable bytes (U+FFFD) a text file may hold without a warning.
FEW_BAD_CHARS = 8
#: A file whose characters are more than this fraction U+FFFD is not UTF-8 text.
MOSTLY_BAD = 0.1
#: Bytes looked at to tell text from binary: NUL bytes there mean a binary file.
PROBE = 8192
_BOMS = ((codecs.BOM_UTF32_LE, "UTF-32"), (codecs.BOM_UTF32_BE, "UTF-32"),
         (codecs.BOM_UTF16_LE, "UTF-16"), (codecs.BOM_UTF16_BE, "UTF-16"))

SHAKESPEARE_URL = ("https://raw.githubusercontent.com/karpathy/char-rnn/master/data/"
                   "tinyshakespeare/input.txt")
SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
SHAKESPEARE_SIZE = 1_115_394
SHAKESPEARE_FILE = "tinyshakespeare.txt"
#: The copy that ships with the package.
PACKAGED_SHAKESPEARE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "text",
                                    SHAKESPEARE_FILE)

# Folders of the standard library that are not ordinary library code: test
# suites, third-party packages, the IDLE and 2to3 tools, demos, build
# configuration, and codec modules (large tables of exotic characters).
_STDLIB_SKIP_DIRS = {"test", "tests", "idle_test", "site-packages", "dist-packages", "idlelib",
                     "lib2to3", "turtledemo", "ensurepip", "pydoc_data", "encodings",
                     "lib-dynload", "__pycache__", "__phello__"}
_STDLIB_SKIP_PREFIXES = ("test_", "_sysconfigdata", "config-")


class CorpusError(TinyarError, ValueError):
    """A corpus is unknown, empty, too short, too large, or not UTF-8 text."""


class _NotText(CorpusError):
    """A file that is binary (NUL bytes, mostly undecodable): a folder skips it."""


def load_corpus(name_or_path="stdlib", *, max_chars=None, min_chars=2, progress=True):
    """The text of a corpus: ``"stdlib"``, ``"shakespeare"``, or a file or folder path.

    ``max_chars`` keeps only the first characters, and reading stops there
    (``"stdlib"`` collects ``DEFAULT_STDLIB_CHARS`` when it is None). A text
    shorter than ``min_chars`` (2 by default: one input and its next-token
    target) is a ``CorpusError``. Known names win over paths: write
    ``./shakespeare`` for a file of that name.
    """
    name = os.fspath(name_or_path)
    if max_chars is not None:
        if isinstance(max_chars, bool) or not isinstance(max_chars, numbers.Integral) \
                or max_chars < 1:
            raise ConfigError(f"load_corpus: max_chars must be an integer >= 1 (or None), "
                              f"got {max_chars!r}")
    if name == "stdlib":
        text = stdlib_corpus(DEFAULT_STDLIB_CHARS if max_chars is None else max_chars)
        source = f"the standard library at {_stdlib_dir()}"
    elif name == "shakespeare":
        path = shakespeare_path(progress=progress)
        text, source = _read_text(path, max_chars), "Tiny Shakespeare"
    else:
        path = Path(name).expanduser()
        if path.is_dir():
            text = folder_corpus(path, max_chars)
        elif os.path.lexists(path):
            text = _read_text(path, max_chars)      # refuses a FIFO, a device, by name
        else:
            raise CorpusError(f"load_corpus: no corpus named {name!r} (known: "
                              f"{', '.join(CORPORA)}) and no file or folder at {path}")
        source = str(path)
    if len(text) < min_chars:
        raise CorpusError(f"load_corpus: {source} gives {len(text)} characters, fewer than the "
                          f"{min_chars} needed" + ("; it is empty" if not text else ""))
    return text


def _read_text(path, max_chars=None, max_bytes=None):
    """A file's text: UTF-8, newlines made ``'\\n'``, its first ``max_chars`` characters.

    Decoding is incremental, so with ``max_chars`` at most about
    ``4 * max_chars`` bytes are read (UTF-8 spends at most 4 bytes on a
    character), however large the file. Without it the file may hold at most
    ``max_bytes`` (default ``MAX_CORPUS_BYTES``). Raises ``CorpusError``
    (naming the file) when it is not UTF-8 text; see the module docstring.
    """
    max_bytes = MAX_CORPUS_BYTES if max_bytes is None else max_bytes
    with fileio.open_regular(path, what="corpus file") as f:    # refuses FIFOs, devices
        if max_chars is None:
            size = os.fstat(f.fileno()).st_size
            if size > max_bytes:
                raise CorpusError(f"load_corpus: {path} is {size:,} bytes; at most "
                                  f"{max_bytes:,} are read without max_chars: pass max_chars "
                                  f"(--max-chars) to read only its beginning")
        _check_head(path, f.peek(PROBE)[:PROBE])
        # utf-8-sig drops a UTF-8 byte-order mark; newline=None turns \r\n and \r into \n
        reader = io.TextIOWrapper(f, encoding="utf-8-sig", errors="replace", newline=None)
        # read(n) decodes chunk by chunk and stops at n characters (<= 4n bytes); a file
        # that grows while it is read yields at most max_bytes characters, as chars <= bytes
        text = reader.read(int(max_chars) if max_chars is not None else max_bytes + 1)
        reader.detach()
    if max_chars is None and len(text) > max_bytes:
        raise CorpusError(f"load_corpus: {path} grew past {max_bytes:,} bytes while being read")
    _check_text(path, text)
    return text


def _check_head(path, head):
    for bom, encoding in _BOMS:
        if head.startswith(bom):
            raise CorpusError(f"load_corpus: {path} is {encoding} text (it starts with a "
                              f"{encoding} byte-order mark); tinyar reads UTF-8: convert it, "
                              f"e.g. iconv -f {encoding} -t UTF-8")
    if b"\x00" in head:
        raise _NotText(f"load_corpus: {path} is not text: it holds NUL bytes (a binary file?)")


def _check_text(path, text):
    if "\x00" in text:
        at = text.index("\x00")
        raise _NotText(f"load_corpus: {path} is not text: character {at:,} is a NUL byte")
    bad = text.count("\ufffd")
    if bad > FEW_BAD_CHARS and bad > MOSTLY_BAD * len(text):
        raise _NotText(f"load_corpus: {path} is not UTF-8 text: {bad:,} of its {len(text):,} "
                       f"characters are undecodable bytes")
    if bad > FEW_BAD_CHARS:
        warnings.warn(f"load_corpus: {path}: {bad:,} undecodable bytes (not UTF-8) became "
                      f"U+FFFD", stacklevel=3)


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
    ``max_chars`` characters (fewer only if the library is smaller). Each
    file is read only as far as the characters still wanted.
    """
    max_chars = int(max_chars)
    if max_chars < 1:
        raise ValueError(f"stdlib_corpus: max_chars must be positive, got {max_chars}")
    parts, total = [], 0
    for path in stdlib_files():
        if total >= max_chars:
            break
        try:
            text = _read_text(path, max_chars - total)
        except (CorpusError, fileio.FileError):
            continue                      # not a text file: not library code
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


def _folder_files(root):
    """The files under ``root`` (hidden ones skipped) in sorted path order."""
    found = []
    for sub, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found += [Path(sub, f) for f in files if not f.startswith(".")]
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def folder_corpus(folder, max_chars=None):
    """All text files under ``folder`` (hidden ones skipped), in sorted path order, joined.

    Binary files are skipped. Reading stops once ``max_chars`` characters are
    collected; without it the files may hold ``MAX_CORPUS_BYTES`` together.
    Anything that is not a regular file (a FIFO, a device) is refused by name.
    """
    root = Path(folder)
    texts, total, size = [], 0, 0
    for path in _folder_files(root):
        if max_chars is not None and total >= max_chars:
            break
        if max_chars is None:
            size += fileio.check_regular(path, what="corpus file").st_size
            if size > MAX_CORPUS_BYTES:
                raise CorpusError(f"load_corpus: the folder {root} holds more than "
                                  f"{MAX_CORPUS_BYTES:,} bytes of files; pass max_chars "
                                  f"(--max-chars) to read only its beginning")
        try:
            text = _read_text(path, None if max_chars is None else max_chars - total)
        except _NotText:
            continue
        if texts:
            total += len(FILE_SEPARATOR)
        texts.append(text)
        total += len(text)
    if not texts:
        raise CorpusError(f"load_corpus: the folder {root} holds no text files")
    text = FILE_SEPARATOR.join(texts)
    return text if max_chars is None else text[:max_chars]


def shakespeare_path(progress=True):
    """The path of Tiny Shakespeare: the packaged copy when it is whole, else the one in
    ``data_dir()``, downloaded on first use."""
    if _is_whole(PACKAGED_SHAKESPEARE):
        return PACKAGED_SHAKESPEARE
    return fetch(SHAKESPEARE_URL, SHAKESPEARE_FILE, SHAKESPEARE_SHA256, size=SHAKESPEARE_SIZE,
                 progress=progress)


def _is_whole(path):
    """A regular file of Tiny Shakespeare's size and SHA-256 (3 ms for its 1.1 MB)."""
    try:
        if not os.path.isfile(path) or os.path.getsize(path) != SHAKESPEARE_SIZE:
            return False
        with open(path, "rb") as f:
            return hashlib.sha256(f.read(SHAKESPEARE_SIZE + 1)).hexdigest() == SHAKESPEARE_SHA256
    except OSError:
        return False


def shakespeare_corpus(progress=True):
    """Tiny Shakespeare, downloaded into ``data_dir()`` on first use."""
    return _read_text(shakespeare_path(progress))


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
