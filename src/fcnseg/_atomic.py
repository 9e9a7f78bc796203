"""Writing files so that a reader sees the old file or the whole new one, never a partial write."""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_path"]

_serial = itertools.count()  # with the pid, a temporary name no other writer (process or thread) is using


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | Path, *, durable: bool = False) -> Iterator[Path]:
    """Yield a temporary name next to ``path``: renamed onto ``path`` when the block succeeds, deleted otherwise.

    Holds through exceptions, Ctrl-C and a full disk. ``durable`` also fsyncs the file and its folder before
    and after the rename, so the new file survives a power cut (checkpoints).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{next(_serial)}.tmp")
    try:
        yield tmp
        if durable:
            _fsync(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    if durable:
        with contextlib.suppress(OSError):  # a folder cannot be fsynced on every platform
            _fsync(path.parent)
