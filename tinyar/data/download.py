"""Downloading a data file once, checking it, and keeping it in a cache folder.

``fetch(url, filename, sha256)`` returns the path of ``filename`` in
``data_dir()`` (``$TINYAR_DATA``, else ``~/.cache/tinyar``), downloading it
first when it is missing or its SHA-256 is wrong. The download goes to a
fresh temporary name in the same folder (``fileio.atomic_write``) and is
renamed only once its hash checks out, so an interrupted download never
leaves a half file behind under the real name. A server cannot fill the disk:
at most the expected size (or ``MAX_DOWNLOAD_BYTES``) is written. Without
network, the error says which file to place where.
"""
import hashlib
import http.client
import os
import warnings
from pathlib import Path
from urllib.request import urlopen

from .. import fileio
from ..errors import TinyarError
from ..progress import ProgressBar

__all__ = ["data_dir", "fetch", "sha256_of", "DownloadError", "MAX_DOWNLOAD_BYTES"]

CHUNK = 1 << 16
#: Most bytes downloaded for a file of unknown size (the largest named one is 562 MB).
MAX_DOWNLOAD_BYTES = 2**32


class DownloadError(TinyarError, OSError):
    """A data file could not be downloaded, or its contents are not the expected ones."""


def data_dir():
    """The folder data files are cached in: ``$TINYAR_DATA`` or ``~/.cache/tinyar``."""
    env = os.environ.get("TINYAR_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "tinyar"


def sha256_of(path):
    """The SHA-256 of a file, as 64 hex digits."""
    h = hashlib.sha256()
    with fileio.open_regular(path, what="data file") as f:     # never blocks on a FIFO
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _problem(path, sha256, size):
    """Why the file at ``path`` is not the expected one, or None when it is."""
    actual = fileio.check_regular(path, what="data file").st_size
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


class _Carried(Exception):
    """Carries an error out of ``atomic_write``, which reports any OSError raised inside
    it as a failure to write: a network error or a bad hash is no such thing."""

    def __init__(self, error):
        super().__init__(str(error))
        self.error = error


def _download(url, path, sha256, size, progress, timeout):
    limit = size if size is not None else MAX_DOWNLOAD_BYTES
    try:
        with urlopen(url, timeout=timeout) as response, fileio.atomic_write(path, "wb") as out:
            try:
                _copy(response, out, url, path, sha256, size, limit, progress)
            except (OSError, http.client.HTTPException) as e:
                raise _Carried(e) from None
    except _Carried as carried:
        raise carried.error from None


def _copy(response, out, url, path, sha256, size, limit, progress):
    """Stream ``response`` into ``out``, at most ``limit`` bytes, and check its hash."""
    h = hashlib.sha256()
    done = 0
    total = size or int(response.headers.get("Content-Length") or 0) or None
    bar = ProgressBar(total, path.name, unit="B", disable=not progress)
    while chunk := response.read(min(CHUNK, limit + 1 - done)):
        done += len(chunk)
        if done > limit:
            bar.close()
            raise DownloadError(
                f"the file downloaded from {url} is larger than the expected {limit:,} bytes; "
                f"the download was stopped there and nothing was written to {path}.")
        out.write(chunk)
        h.update(chunk)
        bar.update(len(chunk))
    bar.close()
    digest = h.hexdigest()
    if digest != sha256.lower() or (size is not None and done != size):
        raise DownloadError(
            f"the file downloaded from {url} has {done:,} bytes and sha256 {digest}, "
            f"expected {'' if size is None else f'{size:,} bytes and '}sha256 "
            f"{sha256.lower()}; the download was damaged or the file changed upstream. "
            f"Nothing was written to {path}.")
