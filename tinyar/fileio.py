"""Reading and writing files safely: the one place tinyar touches the file system.

A run folder may come from someone else (a tarball shared by a classmate), so
tinyar treats what is in it as hostile:

    write   every file goes to a fresh temporary name, created exclusively
            (``O_EXCL``, random suffix) in the target folder, then is renamed
            over the final name with ``os.replace``. A rename replaces a
            symlink planted at the final name; it never writes through it.
            The file gets the permissions the user's umask gives (0666 &
            ~umask), like any file ``open()`` creates.
    read    ``open_regular`` opens only regular files (a FIFO would block
            forever, a device could be endless), and inside a run folder
            refuses symlinks. Every read has a byte cap, checked before the
            data is read. JSON is parsed with a depth limit.
    lock    ``RunLock`` holds an exclusive ``flock`` on ``RUN/.lock`` while a
            training run writes to the folder: a second writer is refused at
            once with the first one's process id.

Errors are ``FileError`` (a ``ValueError``) naming the path and what was wrong.
"""
import contextlib
import fcntl
import json
import math
import os
import re
import stat
import tempfile

from .errors import FileError

#: Largest JSON file tinyar reads (vocabularies of 10^6 words fit many times over).
MAX_JSON_BYTES = 256 * 2**20
#: Deepest nesting accepted in a JSON file (tinyar writes at most ~6 levels).
MAX_JSON_DEPTH = 64
#: Prefix and suffix of tinyar's temporary files, so that leftovers can be found.
TMP_SUFFIX = ".tmp"


def _umask():
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _describe(mode):
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISLNK(mode):
        return "a symlink"
    return "not a regular file"


# --- writing --------------------------------------------------------------------------------
@contextlib.contextmanager
def atomic_write(path, mode="w", encoding="utf-8"):
    """A file object to write ``path``'s new content; renamed into place on success.

    On an exception the temporary file is removed and ``path`` is untouched.
    ``mode``: ``"w"`` (text) or ``"wb"`` (bytes).
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write: mode must be 'w' or 'wb', got {mode!r}")
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    name = os.path.basename(path)
    try:
        os.makedirs(folder, exist_ok=True)
        if os.path.isdir(path) and not os.path.islink(path):
            raise FileError(f"cannot write {path!r}: it is a directory")
        # mkstemp: O_CREAT | O_EXCL (never an existing file or link), a random name
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=TMP_SUFFIX)
    except FileError:
        raise
    except OSError as exc:
        raise FileError(f"cannot write {path!r}: {exc.strerror or exc}") from None
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        kwargs = {"encoding": encoding, "newline": "\n"} if mode == "w" else {}
        with os.fdopen(fd, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and not isinstance(exc, FileError):
            raise FileError(f"cannot write {path!r}: {exc.strerror or exc}") from None
        raise
    _sync_folder(folder)


def _sync_folder(folder):
    """Make the rename itself durable (a crash right after it keeps the new file)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_text(path, text):
    with atomic_write(path, "w") as f:
        f.write(text)
    return os.fspath(path)


def write_bytes(path, data):
    with atomic_write(path, "wb") as f:
        f.write(data)
    return os.fspath(path)


def finite_json(obj):
    """A copy of ``obj`` in which NaN and infinities are ``None`` (JSON's null):
    standard JSON has no NaN, and other readers (browsers, jq) refuse it."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_json(v) for v in obj]
    return obj


def dumps_json(obj, indent=None):
    """Standard JSON text of ``obj`` (non-finite numbers become null)."""
    return json.dumps(finite_json(obj), indent=indent, allow_nan=False)


def write_json(path, obj, indent=None):
    return write_text(path, dumps_json(obj, indent))


# --- reading --------------------------------------------------------------------------------
def open_regular(path, max_bytes=None, follow_symlinks=True, what="file"):
    """``path`` opened for binary reading, if it is a regular file of at most ``max_bytes``.

    ``follow_symlinks=False``: a symlink is refused too (files inside a run folder).
    Opening never blocks: a FIFO is detected, not read.
    """
    path = os.fspath(path)
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    if not follow_symlinks:
        flags |= os.O_NOFOLLOW
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise FileError(f"no {what} at {path!r}") from None
    except OSError as exc:
        if not follow_symlinks and os.path.islink(path):
            raise FileError(f"refusing to read {path!r}: it is a symlink") from None
        raise FileError(f"cannot read {what} {path!r}: {exc.strerror or exc}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise FileError(f"refusing to read {path!r}: it is {_describe(st.st_mode)}, "
                            f"not a regular file")
        if max_bytes is not None and st.st_size > max_bytes:
            raise FileError(f"{what} {path!r} is {st.st_size:,} bytes; at most {max_bytes:,} "
                            f"are read")
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def check_regular(path, follow_symlinks=True, what="file"):
    """Raise ``FileError`` unless ``path`` is a regular file (without opening it)."""
    path = os.fspath(path)
    try:
        st = os.stat(path) if follow_symlinks else os.lstat(path)
    except FileNotFoundError:
        raise FileError(f"no {what} at {path!r}") from None
    except OSError as exc:
        raise FileError(f"cannot read {what} {path!r}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(st.st_mode):
        raise FileError(f"refusing to read {path!r}: it is {_describe(st.st_mode)}, "
                        f"not a regular file")
    return st


def read_bytes(path, max_bytes, follow_symlinks=True, what="file"):
    """The bytes of a regular file of at most ``max_bytes`` (checked before reading,
    and again while reading, in case the file grows)."""
    with open_regular(path, max_bytes, follow_symlinks, what) as f:
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise FileError(f"{what} {path!r} grew past {max_bytes:,} bytes while being read")
    return data


def loads_json(text, source="JSON"):
    """Parse JSON text; a syntax error or too deep a nesting is a ``FileError``."""
    depth = _max_depth(text)
    if depth > MAX_JSON_DEPTH:
        raise FileError(f"{source}: nested {depth} levels deep; at most {MAX_JSON_DEPTH} are read")
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise FileError(f"{source} is not valid JSON ({exc})") from None


def _max_depth(text):
    """The deepest nesting of brackets outside strings: a linear scan over the only
    characters that matter (quotes, escapes, brackets), found by one regular expression."""
    depth = deepest = 0
    in_string = False
    for token in _JSON_STRUCTURE.findall(text):
        if token[0] == "\\":
            continue  # an escape: the character after it (a quote, say) is text
        if token == '"':
            in_string = not in_string
        elif in_string:
            continue
        elif token in "[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


_JSON_STRUCTURE = re.compile(r'\\.|[\[\]{}"]', re.DOTALL)


def read_json(path, max_bytes=MAX_JSON_BYTES, follow_symlinks=True, what="JSON file"):
    """The parsed content of a JSON file, bounded in size and depth."""
    data = read_bytes(path, max_bytes, follow_symlinks, what)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FileError(f"{what} {os.fspath(path)!r} is not UTF-8 text ({exc})") from None
    return loads_json(text, f"{what} {os.fspath(path)!r}")


def run_file(folder, name):
    """The path of ``name`` inside run folder ``folder``, if it is a regular file that is
    not a symlink (``None`` when absent). ``inspect`` reads only such files."""
    path = os.path.join(folder, name)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise FileError(f"cannot read {path!r}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(st.st_mode):
        raise FileError(f"refusing to read {path!r}: it is {_describe(st.st_mode)}, "
                        f"not a regular file")
    return path


# --- locking and cleaning a run folder ------------------------------------------------------
LOCK_NAME = ".lock"


class RunLock:
    """An exclusive lock on a run folder for as long as a training run writes to it.

        with RunLock("runs/lm-1"):
            ...   # a second ``RunLock("runs/lm-1")`` raises FileError at once

    The lock is an ``flock`` on ``RUN/.lock``: the kernel releases it when the
    process ends, however it ends (``kill -9`` included), so a crashed run never
    leaves a folder locked. The file itself stays, holding the last owner's pid.
    """

    def __init__(self, folder):
        self.folder = os.fspath(folder)
        self.fd = None

    def acquire(self):
        path = os.path.join(self.folder, LOCK_NAME)
        try:
            os.makedirs(self.folder, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0),
                         0o666 & ~_umask())
        except OSError as exc:
            raise FileError(f"cannot lock run folder {self.folder!r}: "
                            f"{exc.strerror or exc}") from None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise FileError(f"cannot lock run folder {self.folder!r}: {path!r} is not a "
                                f"regular file")
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise FileError(f"run folder {self.folder!r} is in use by another tinyar process "
                            f"(pid {owner}); wait for it to finish or use another --out") from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd
        return self

    def release(self):
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


def remove_leftovers(folder):
    """Delete temporary files that an interrupted write left in ``folder`` (names
    ``.NAME.XXXXXXXX.tmp``, and the ``NAME.tmp`` of older tinyar versions); returns
    their names. Call it only while holding the folder's ``RunLock``. A symlink with
    such a name is removed as a link; what it points to is never touched."""
    removed = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    for name in names:
        if name.endswith(TMP_SUFFIX) and name != TMP_SUFFIX:
            path = os.path.join(folder, name)
            st = os.lstat(path)
            if stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode):
                os.unlink(path)
                removed.append(name)
    return removed
