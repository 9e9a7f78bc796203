"""A file's fingerprints: size and modification time read without opening it, and its content's sha256.

``(size, mtime_ns)`` changes whenever a file is rewritten by ordinary means, but a tool may keep both through an
edit in place (``exiftool -P`` fixing an orientation tag keeps the mtime, and a tag's new value often the size).
:func:`change_stamp` adds the two a user cannot set back, the inode (a file replaced by a new one) and the
status-change time (``st_ctime_ns``: every write and every ``utime`` sets it to now), so "the stamp is the same"
means "the content has not been touched"; :func:`content_hash` decides the rest.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

__all__ = ["change_stamp", "content_hash", "file_stamp"]

_CHUNK = 1 << 20


def file_stamp(path: str | Path) -> tuple[int, int] | None:
    """``(size, mtime_ns)`` of ``path``, or None when it cannot be stat'ed (missing, no permission)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def change_stamp(path: str | Path) -> dict[str, int] | None:
    """Size, mtime, ctime, inode and device of ``path`` (None when it cannot be stat'ed): equal stamps taken at two
    times mean the file was neither written nor replaced in between (on file systems that keep a ctime)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns, "inode": st.st_ino,
            "device": st.st_dev}  # fmt: skip


def content_hash(path: str | Path) -> str | None:
    """The sha256 of the file's bytes (hex), read 1 MiB at a time; None when it cannot be read, or is not a regular
    file (a named pipe must be read once, by its decoder: opening it here would wait for its writer)."""
    digest = hashlib.sha256()
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return None
        with open(path, "rb") as f:
            while block := f.read(_CHUNK):
                digest.update(block)
    except OSError:
        return None
    return digest.hexdigest()
