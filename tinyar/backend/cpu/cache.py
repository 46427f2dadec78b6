"""Where compiled kernels are cached, so a second process starts in seconds.

Numba's ``cache=True`` stores each kernel's machine code on disk, keyed by
its own source file's timestamp. A kernel that inlines a helper from another
file (``fast_exp`` from ``fastmath.py``) is *not* recompiled when only that
other file changes: a stale kernel would be loaded. We therefore point
Numba's cache at a folder named by a hash of every kernel source file of the
CPU backend and of the scalar math they share with CUDA (``backend/scalar``), so any change to any of them starts a fresh cache. The folder
lives under ``$TINYAR_CACHE`` (default ``~/.cache/tinyar/numba``), which is
writable even when tinyar is installed read-only. A user who sets
``NUMBA_CACHE_DIR`` keeps that choice.
"""
import glob
import hashlib
import os

import numba

_HERE = os.path.dirname(os.path.abspath(__file__))


def kernel_source_hash():
    digest = hashlib.sha256()
    # the kernel files, and the shared scalar math they inline (backend/scalar)
    sources = glob.glob(os.path.join(_HERE, "*.py")) + \
        glob.glob(os.path.join(os.path.dirname(_HERE), "scalar", "*.py"))
    for path in sorted(sources):
        with open(path, "rb") as f:
            digest.update(os.path.basename(path).encode() + b"\0" + f.read())
    return digest.hexdigest()[:16]


def configure():
    """Set Numba's cache folder; must run before any kernel module is imported."""
    if os.environ.get("NUMBA_CACHE_DIR"):
        return
    root = os.environ.get("TINYAR_CACHE") or os.path.join(os.path.expanduser("~"), ".cache",
                                                           "tinyar", "numba")
    folder = os.path.join(root, kernel_source_hash())
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError:
        return  # unwritable home: Numba falls back to its own locations
    numba.config.CACHE_DIR = folder
