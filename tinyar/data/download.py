"""Downloading a data file once, checking it, and keeping it in a cache folder.

``fetch(url, filename, sha256)`` returns the path of ``filename`` in
``data_dir()`` (``$TINYAR_DATA``, else ``~/.cache/tinyar``), downloading it
first when it is missing or its SHA-256 is wrong. The download goes to a
temporary name in the same folder and is renamed only once its hash checks
out, so an interrupted download never leaves a half file behind under the
real name. Without network, the error says which file to place where.
"""
import hashlib
import http.client
import os
import tempfile
import warnings
from pathlib import Path
from urllib.request import urlopen

from ..errors import TinyarError
from ..progress import ProgressBar

__all__ = ["data_dir", "fetch", "sha256_of", "DownloadError"]

CHUNK = 1 << 16


class DownloadError(TinyarError, OSError):
    """A data file could not be downloaded, or its contents are not the expected ones."""


def data_dir():
    """The folder data files are cached in: ``$TINYAR_DATA`` or ``~/.cache/tinyar``."""
    env = os.environ.get("TINYAR_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "tinyar"


def sha256_of(path):
    """The SHA-256 of a file, as 64 hex digits."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _problem(path, sha256, size):
    """Why the file at ``path`` is not the expected one, or None when it is."""
    actual = path.stat().st_size
    if size is not None and actual != size:
        return f"{actual:,} bytes, expected {size:,}"
    digest = sha256_of(path)
    if digest != sha256.lower():
        return f"sha256 {digest}, expected {sha256.lower()}"
    return None


def fetch(url, filename, sha256, size=None, *, directory=None, progress=True, timeout=60):
    """The local path of ``filename``, downloaded from ``url`` if needed.

    Args:
        url: where to download from (``https://``, ``http://`` or ``file://``).
        filename: the name in the cache folder.
        sha256: the expected SHA-256 (hex); checked on the cached file at
            every call and on every download.
        size: the expected size in bytes, when known (a cheap first check,
            and the total of the progress bar).
        directory: the cache folder; ``data_dir()`` by default.
        progress: print a text progress bar to stderr while downloading.

    A cached file with the wrong hash is reported with a warning and
    downloaded again. Raises ``DownloadError`` when there is no network (the
    message says where to place the file by hand) or when the downloaded
    bytes do not have the expected hash (nothing is written then).
    """
    directory = Path(directory).expanduser() if directory is not None else data_dir()
    path = directory / filename
    corrupt = None
    if path.exists():
        corrupt = _problem(path, sha256, size)
        if corrupt is None:
            return path
        warnings.warn(f"the cached {path} is corrupt ({corrupt}); downloading it again "
                      f"from {url}", stacklevel=2)
    directory.mkdir(parents=True, exist_ok=True)
    try:
        _download(url, path, sha256, size, progress, timeout)
    except DownloadError:
        raise
    except (OSError, http.client.HTTPException) as e:   # URLError, timeouts, cut connections
        reason = getattr(e, "reason", None) or e
        was = f"The cached copy there is corrupt ({corrupt}). " if corrupt else ""
        expected = f"{size:,} bytes, " if size is not None else ""
        raise DownloadError(
            f"could not download {url} ({reason}).\n{was}Without network access, get that "
            f"file some other way and place it at\n    {path}\n({expected}sha256 {sha256}), "
            f"or set $TINYAR_DATA to a folder that holds {filename}.") from e
    return path


def _download(url, path, sha256, size, progress, timeout):
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        h = hashlib.sha256()
        done = 0
        with os.fdopen(fd, "wb") as out, urlopen(url, timeout=timeout) as response:
            total = size or int(response.headers.get("Content-Length") or 0) or None
            bar = ProgressBar(total, path.name, unit="B", disable=not progress)
            while chunk := response.read(CHUNK):
                out.write(chunk)
                h.update(chunk)
                done += len(chunk)
                bar.update(len(chunk))
            bar.close()
        digest = h.hexdigest()
        if digest != sha256.lower() or (size is not None and done != size):
            raise DownloadError(
                f"the file downloaded from {url} has {done:,} bytes and sha256 {digest}, "
                f"expected {'' if size is None else f'{size:,} bytes and '}sha256 "
                f"{sha256.lower()}; the download was damaged or the file changed upstream. "
                f"Nothing was written to {path}.")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
