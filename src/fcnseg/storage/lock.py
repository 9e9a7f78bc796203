"""One writer per output prefix in a bucket: a lock object created with a conditional write.

``PREFIX/.fcnseg.lock`` is created only if no object of that name exists (S3 ``If-None-Match: *``, GCS
``ifGenerationMatch=0``, Azure ``If-None-Match: *``: each store decides atomically, so of two runs starting at once
exactly one gets it). It holds the owner (pid, host, command) for the line a second run prints, and is deleted when
the run ends. A store cannot tell that its writer died; a lock left by a run of this host whose process is gone is
taken over with a warning (so a killed run is resumed by running it again), one of another host is reported with
the object to delete.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from typing import Any

from ..runlock import LOCK_NAME, FolderBusyError, RunLock
from .errors import storage_errors
from .objects import read_bytes, remove
from .paths import AnyPath, as_path, check_writable, filesystem, is_remote

__all__ = ["ObjectLock", "run_lock"]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


class ObjectLock:
    """The lock of the prefix ``folder`` for ``command``: :class:`fcnseg.runlock.RunLock`'s contract in a bucket."""

    def __init__(self, folder: AnyPath | str, command: str) -> None:
        self.path = as_path(folder) / LOCK_NAME
        self.command = command
        self._held = False

    def _owner(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "host": socket.gethostname(), "command": self.command}

    def _create(self) -> bool:
        """Create the lock object if there is none; False if one exists."""
        fs, key = filesystem(self.path)
        try:
            with storage_errors(self.path, writing=True):
                fs.pipe_file(key, json.dumps(self._owner()).encode(), mode="create")
        except FileExistsError:
            return False
        return True

    def _holder(self) -> dict[str, Any] | None:
        try:
            owner = json.loads(read_bytes(self.path))
        except (OSError, ValueError):  # gone meanwhile, or not ours
            return None
        return owner if isinstance(owner, dict) else None

    def acquire(self) -> None:
        """Take the lock, or raise :class:`fcnseg.runlock.FolderBusyError` naming the run that holds it."""
        check_writable(self.path)
        if self._create():
            self._held = True
            return
        owner = self._holder()
        dead = (
            owner is not None
            and owner.get("host") == socket.gethostname()
            and isinstance(owner.get("pid"), int)
            and not _alive(owner["pid"])
        )
        if dead:
            remove(self.path)
            if self._create():
                print(
                    f"fcnseg {self.command}: warning: taking over the lock of fcnseg {owner.get('command', '?')} "
                    f"(pid {owner['pid']} on this host), which is no longer running; its outputs are complete "
                    "objects, but its summary may miss its last entries",
                    file=sys.stderr,
                )
                self._held = True
                return
            owner = self._holder()
        who = "another run" if owner is None else (
            f"fcnseg {owner.get('command', '?')} (pid {owner.get('pid', '?')} on {owner.get('host', '?')})"
        )  # fmt: skip
        raise FolderBusyError(
            f"{self.path.parent} is being written by {who}; wait for it to finish or choose another output prefix "
            f"(if that run is gone, delete {self.path})"
        )

    def release(self) -> None:
        """Delete the lock object (if this run holds it)."""
        if self._held:
            self._held = False
            remove(self.path)


def run_lock(folder: AnyPath | str, command: str) -> RunLock | ObjectLock:
    """The lock of an output folder: a :class:`~fcnseg.runlock.RunLock` on disk, an :class:`ObjectLock` in a bucket."""
    folder = as_path(folder)
    return ObjectLock(folder, command) if is_remote(folder) else RunLock(folder, command)
