"""Fault injection for tests/faults: writers that fail with a chosen errno, and a small real disk to fill.

In the spirit of SQLite's I/O-error tests: the fault is raised where the operating system would raise it (a
``write`` or ``rename`` system call), so everything above it, fcnseg's code, runs as it would on a real fault.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

# errno, the words the user's line must hold
CAUSES = {
    "ENOSPC": "the disk is full",
    "EACCES": "permission denied",
    "EROFS": "the file system is read-only",
    "EIO": "input/output error",
}


def fail_rename(monkeypatch: pytest.MonkeyPatch, code: int, name: str) -> None:
    """Writes of a file called ``name`` fail with ``code`` as their finished temporary file is renamed into place
    (what a full quota, a read-only remount or a dead drive does at the last step)."""
    real = os.replace

    def replace(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
        if Path(dst).name == name:
            raise OSError(code, os.strerror(code), str(src), None, str(dst))
        real(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)


class _FailingFile:
    """A file object whose writes go through until ``after`` bytes, then fail with ``code``, as a disk does."""

    def __init__(self, f: Any, code: int, after: int) -> None:
        self.f, self.code, self.left = f, code, after

    def write(self, data: bytes) -> int:
        if len(data) > self.left:
            self.f.write(data[: self.left])
            self.left = 0
            raise OSError(self.code, os.strerror(self.code))
        self.left -= len(data)
        return self.f.write(data)

    def flush(self) -> None:
        self.f.flush()


def fail_torch_save(monkeypatch: pytest.MonkeyPatch, code: int, name: str, after: int = 1 << 20) -> None:
    """``torch.save`` of a file whose final name is ``name`` fails with ``code`` after ``after`` bytes, mid-write,
    the way ENOSPC reaches it (torch then raises ``RuntimeError: [enforce fail at inline_container.cc]``)."""
    real = torch.save

    def save(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        if Path(getattr(f, "name", str(f))).name.startswith(f".{name}."):  # atomic_path's temporary name
            f = _FailingFile(f, code, after)
        real(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)


@contextlib.contextmanager
def small_disk(folder: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted on ``folder`` (a real disk that fills up); skips where mounting is not allowed."""
    folder.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN): {done.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=True)


def fill(folder: Path) -> None:
    """Fill ``folder``'s disk until not a byte is free."""
    with open(folder / "filler", "wb", buffering=0) as f, contextlib.suppress(OSError):  # unbuffered: close can't fail
        while True:
            f.write(b"\0" * 4096)


def one_line(err: str, command: str) -> str:
    """The single error line of ``err`` (asserting there is exactly one and no traceback)."""
    lines = [line for line in err.splitlines() if line.startswith(f"fcnseg {command}: error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]
