"""Faults a user meets (a full disk, no permission, a failing or vanished drive, too little memory) in one line.

The line names the file, says the cause in words, what was kept and what to do:

    cannot write runs/a/best.pth: the disk is full (needs 136 MB, 2 MB free on /data); last.pth from epoch 1 is
    intact; free at least 134 MB on /data, then continue with --resume runs/a/last.pth

Every command reaches the user through :func:`describe`; a command that knows what survived passes ``kept`` and
``todo``. ``--debug`` or ``FCNSEG_DEBUG=1`` adds the traceback.
"""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path

from ._atomic import WriteError, os_error_in

__all__ = ["DEBUG_ENV", "debug_requested", "describe", "io_fault", "is_out_of_memory", "mount_point"]

DEBUG_ENV = "FCNSEG_DEBUG"

_CAUSES = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is used up",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "the file system is read-only",
    errno.EIO: "input/output error (a failing disk, or a network drive that went away)",
    errno.ENOENT: "no such file (deleted, or its drive unmounted?)",
    errno.ESTALE: "the network drive's handle went stale (remounted or gone)",
    errno.ENOTCONN: "the drive is not connected",
    errno.ENODEV: "its device is gone",
}
# DataLoader workers re-raise an OSError as its type with a traceback as the message: its last line keeps the errno
_WORKER_ERROR = re.compile(r"\[Errno (\d+)\] [^:\n]*: '([^'\n]*)'\s*$")


def debug_requested(flag: bool = False) -> bool:
    """Whether the user asked for tracebacks: ``--debug`` or a non-empty ``FCNSEG_DEBUG`` other than ``0``."""
    return flag or os.environ.get(DEBUG_ENV, "") not in ("", "0")


def io_fault(exc: BaseException) -> OSError | None:
    """The file-system fault a user should hear about behind ``exc`` (itself, a wrapped one, or one a DataLoader
    worker raised); None when ``exc`` is none of the faults this module words (a busy port is not a disk fault)."""
    error = os_error_in(exc)
    if error is not None and error.errno is None and (found := _WORKER_ERROR.search(str(error))):
        code, name = int(found[1]), found[2]
        error = OSError(code, os.strerror(code), name)
    return error if error is not None and error.errno in _CAUSES else None


def is_out_of_memory(exc: BaseException) -> bool:
    """A CPU or CUDA allocation that failed (torch reports the CPU's as a ``RuntimeError``)."""
    import torch

    if isinstance(exc, (MemoryError, torch.OutOfMemoryError)):
        return True
    return isinstance(exc, RuntimeError) and "can't allocate memory" in str(exc)


def mount_point(path: str | Path) -> Path:
    """The mount point holding ``path`` (the thing to free space on)."""
    p = Path(os.path.abspath(path))
    while not p.exists() and p != p.parent:
        p = p.parent
    while not os.path.ismount(p):
        p = p.parent
    return p


def _mb(n: int) -> str:
    return f"{round(n / 1e6)} MB" if n >= 1e6 else f"{max(1, round(n / 1e3))} kB"


def _full_disk(error: WriteError) -> tuple[str, str]:
    """The numbers of a full disk, and how much to free: exact when the file's size was known in advance, else
    "more than" what was written before the disk filled up."""
    where = mount_point(error.filename)
    free = error.free or 0
    if error.needed:
        need, short = f"needs {_mb(error.needed)}", f"at least {_mb(error.needed - free)}"
    elif error.written:
        need, short = f"needs more than the {_mb(error.written)} written", f"more than {_mb(error.written)}"
    else:
        return "", f"space on {where}"
    return f" ({need}, {_mb(free)} free on {where})", f"{short} on {where}"


def _cause(error: OSError) -> str:
    text = _CAUSES.get(error.errno or 0, error.strerror or str(error))
    if error.errno in (errno.ENOSPC, errno.EDQUOT) and isinstance(error, WriteError):
        text += _full_disk(error)[0]
    return text


def _what_to_do(error: OSError) -> str:
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        if isinstance(error, WriteError):
            return f"free {_full_disk(error)[1]}"
        return f"free space on {mount_point(error.filename or '.')}"
    if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return (
            "choose a folder you can write to, or fix its permissions"
            if isinstance(error, WriteError)
            else ("fix its permissions")
        )
    return "check the disk or network drive it lives on"


def describe(error: OSError, *, kept: str | None = None, todo: str | None = None) -> str:
    """One line for an I/O fault: which file, the cause in words, what was kept, what to do.

    ``todo`` is appended to the generic advice ("free at least 12 MB on /data, then <todo>"). A bucket's fault
    (:class:`fcnseg.storage.StorageError`) brings its own cause and advice.
    """
    from .storage import StorageError

    if isinstance(error, StorageError) and error.cause:
        return "; ".join([f"{error.what}: {error.cause}", *([kept] if kept else []), f"{error.advice}, then {todo}"])
    verb = "cannot write " if isinstance(error, WriteError) else ""
    name = error.filename if error.filename is not None else "(unnamed file)"
    parts = [f"{verb}{name}: {_cause(error)}"]
    if kept:
        parts.append(kept)
    advice = _what_to_do(error)
    parts.append(f"{advice}, then {todo}" if todo else f"{advice}, then run again")
    return "; ".join(parts)
