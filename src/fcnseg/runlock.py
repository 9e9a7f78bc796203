"""One writer per output folder: ``FOLDER/.fcnseg.lock``, held by the run writing there (``train``, ``segment``).

The lock is an ``flock`` on the file, so the kernel releases it when its process dies, however it dies; the file
holds the owner (pid, host, command) for the message a second run prints. A lock file left by a dead run is taken
over with a warning. Under torchrun one process (rank 0) holds it for the whole job.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ._atomic import WriteError

__all__ = ["LOCK_NAME", "FolderBusyError", "RunLock", "folder_lock"]

LOCK_NAME = ".fcnseg.lock"


class FolderBusyError(Exception):
    """Another live run holds the folder's lock; ``str(e)`` says which and what to do."""


def _owner(command: str) -> dict[str, Any]:
    return {"pid": os.getpid(), "host": socket.gethostname(), "command": command}


def _read_owner(fd: int) -> dict[str, Any] | None:
    os.lseek(fd, 0, os.SEEK_SET)
    data = b"".join(iter(lambda: os.read(fd, 4096), b""))
    try:
        owner = json.loads(data)
    except ValueError:
        return None
    return owner if isinstance(owner, dict) else None


def _who(owner: dict[str, Any] | None) -> str:
    if owner is None:
        return "another process"
    return f"fcnseg {owner.get('command', '?')} (pid {owner.get('pid', '?')} on {owner.get('host', '?')})"


class RunLock:
    """The lock of ``folder`` for ``command``; :meth:`acquire` refuses while another run holds it."""

    def __init__(self, folder: str | Path, command: str) -> None:
        self.path = Path(folder) / LOCK_NAME
        self.command = command
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock (creating the folder), or raise :class:`FolderBusyError` naming the run that holds it."""
        while True:
            fd = self._open()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                owner = _read_owner(fd)
                os.close(fd)
                raise FolderBusyError(
                    f"{self.path.parent} is being written by {_who(owner)}; wait for it to finish or choose another "
                    f"output folder (if that run is gone, remove {self.path})"
                ) from None
            if _same_file(fd, self.path):
                break
            os.close(fd)  # the previous holder removed the file between our open and flock: lock the new one
        previous = _read_owner(fd)
        if previous is not None:  # written by a run that ended without releasing: it died
            print(
                f"fcnseg {self.command}: warning: taking over the lock of {_who(previous)}, which is no longer "
                "running; its outputs in this folder are complete files, but its summary or log may miss its last "
                "entries",
                file=sys.stderr,
            )
        with contextlib.suppress(OSError):  # on a full disk the lock holds all the same, only without its owner
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(_owner(self.command)).encode(), 0)
        self._fd = fd

    def _open(self) -> int:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            return os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:  # the first write into the folder: its fault is the user's to hear about
            raise WriteError(e.errno or errno.EIO, self.path) from e

    def release(self) -> None:
        """Remove the lock file and drop the lock (removed first, so that no one locks a file about to go)."""
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            self.path.unlink()
        os.close(self._fd)
        self._fd = None


def _same_file(fd: int, path: Path) -> bool:
    try:
        st = path.stat()
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (mine.st_dev, mine.st_ino) == (st.st_dev, st.st_ino)


@contextlib.contextmanager
def folder_lock(folder: str | Path, command: str) -> Iterator[RunLock]:
    """Hold ``folder``'s lock for the block (see :class:`RunLock`)."""
    lock = RunLock(folder, command)
    lock.acquire()
    try:
        yield lock
    finally:
        lock.release()
