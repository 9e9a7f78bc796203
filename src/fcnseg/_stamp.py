"""A file's fingerprint read without opening it: size and modification time change whenever it is rewritten."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["file_stamp"]


def file_stamp(path: str | Path) -> tuple[int, int] | None:
    """``(size, mtime_ns)`` of ``path``, or None when it cannot be stat'ed (missing, no permission)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns
