"""Writing files so that a reader sees the old file or the whole new one, never a partial write.

Every writer goes through :func:`atomic_path`, so a failed write reaches the user in one shape: a
:class:`WriteError` naming the final file (never the temporary one) with the ``errno`` that stopped it, even when a
library buried that ``OSError`` (``torch.save`` reports a full disk as ``RuntimeError: [enforce fail at
inline_container.cc] unexpected pos``).
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

__all__ = ["WriteError", "atomic_path", "os_error_in"]

_serial = itertools.count()  # with the pid, a temporary name no other writer (process or thread) is using
_NEARLY_FULL = 1 << 20  # bytes: a disk with less free space than this after a failed write was full


class WriteError(OSError):
    """Writing ``filename`` failed with ``errno``; the file is as it was before (or absent).

    ``needed``: bytes the file needs (the size it was given, or of the file it replaces), else ``written``: bytes
    written before the failure, less than it needs; ``free``: bytes free on its disk when it failed.
    """

    def __init__(
        self, code: int, filename: Path, *, needed: int | None = None, written: int = 0, free: int | None = None
    ) -> None:
        super().__init__(code, os.strerror(code), str(filename))
        self.needed, self.written, self.free = needed, written, free


def os_error_in(exc: BaseException) -> OSError | None:
    """The ``OSError`` behind ``exc``: itself, or the first one in the chain Python would print (``__cause__``, else
    ``__context__`` unless ``raise ... from None`` hid it)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, OSError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)  # type: ignore[assignment]
    return None


def _free(folder: Path) -> int | None:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _failure(exc: BaseException, tmp: Path, path: Path, needed: int | None) -> WriteError | None:
    """``exc`` raised while writing ``tmp`` as a WriteError about ``path``; None if it is not about this write."""
    error = os_error_in(exc)
    free = _free(path.parent)
    written = _size(tmp)  # before the temporary file is removed: a lower bound of what the file needs
    if error is None:  # torch.save to a path loses the OSError: a disk left (nearly) full says what happened
        if not (isinstance(exc, RuntimeError) and free is not None and free < _NEARLY_FULL):
            return None
        code = errno.ENOSPC
    elif error.filename not in (None, str(tmp), tmp) or error.errno is None:
        return None  # about another file (an input read inside the block): left as it is
    else:
        code = error.errno
    if needed is not None and written >= needed:  # the estimate was wrong: all that is known is a lower bound
        needed = None
    return WriteError(code, path, needed=needed, written=written, free=free)


@contextlib.contextmanager
def atomic_path(path: str | Path, *, durable: bool = False, size: int | None = None) -> Iterator[Path]:
    """Yield a temporary name next to ``path``: renamed onto ``path`` when the block succeeds, deleted otherwise.

    Holds through exceptions, Ctrl-C and a full disk; an ``OSError`` of the write leaves as a :class:`WriteError`
    about ``path``. ``durable`` also fsyncs the file and its folder before and after the rename, so the new file
    survives a power cut (checkpoints). Free space is checked before anything is written when the size is known:
    ``size``, or for a durable file the size of the one it replaces if larger (a checkpoint keeps its size from
    save to save).
    """
    path = Path(path)
    needed = max(size or 0, _size(path) if durable else 0) or None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise WriteError(e.errno or errno.EIO, path) from e
    free = _free(path.parent)
    if needed is not None and free is not None and free < needed:  # the old file stays until the rename
        raise WriteError(errno.ENOSPC, path, needed=needed, free=free)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{next(_serial)}.tmp")
    try:
        yield tmp
        if durable:
            _fsync(tmp)
        os.replace(tmp, path)
    except BaseException as e:
        failure = _failure(e, tmp, path, needed)
        if failure is None:
            raise
        raise failure from e
    finally:
        with contextlib.suppress(OSError):  # a drive that went away cannot remove it either
            tmp.unlink(missing_ok=True)
    if durable:
        with contextlib.suppress(OSError):  # a folder cannot be fsynced on every platform
            _fsync(path.parent)
