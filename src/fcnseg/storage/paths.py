"""Telling a URL from a local path, and the fsspec file system that serves a URL.

A URL (``s3://b/k``) becomes a ``UPath`` (universal-pathlib, fsspec's pathlib), so ``/``, ``.name``, ``.parent`` and
``.with_name`` work on it as on a ``Path``; ``file://`` URLs and plain paths stay ``Path``. Reading and writing go
through this package's functions, never through the path's own methods, so that every fault is worded once.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union
from urllib.parse import unquote, urlparse

from .errors import StorageError, storage_errors

if TYPE_CHECKING:
    from upath import UPath

__all__ = ["READ_ONLY", "AnyPath", "as_path", "filesystem", "is_remote", "is_url", "location"]

AnyPath = Union[Path, "UPath"]
READ_ONLY = frozenset({"http", "https"})  # served by fsspec for reading; nothing is written there
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_url(text: Any) -> bool:
    """Whether ``text`` is a string spelled ``scheme://...`` (``file://`` included)."""
    return isinstance(text, str) and _URL.match(text) is not None


def is_remote(path: Any) -> bool:
    """Whether ``path`` lives behind fsspec rather than on the local disk (a URL other than ``file://``)."""
    if isinstance(path, Path):
        return False
    if is_url(path):
        return not path.startswith("file://")
    return type(path).__module__.startswith("upath")


def as_path(path: str | os.PathLike[str] | AnyPath) -> AnyPath:
    """A ``Path`` for a local path or ``file://`` URL, a ``UPath`` for any other URL (needs the ``cloud`` extra)."""
    if isinstance(path, Path) or (is_remote(path) and not isinstance(path, str)):
        return path  # type: ignore[return-value]
    text = os.fspath(path)
    if not is_url(text):
        return Path(text)
    if text.startswith("file://"):
        return Path(unquote(urlparse(text).path))
    with storage_errors(text):
        from upath import UPath

        return UPath(text)


def location(path: AnyPath | str) -> str:
    """The full name that identifies ``path``: its URL, or the real path of a local file (links resolved)."""
    return str(path) if is_remote(path) else os.path.realpath(path)


def filesystem(path: AnyPath) -> tuple[Any, str]:
    """The fsspec file system serving the URL ``path``, and the path within it (``bucket/key``)."""
    with storage_errors(path):
        return path.fs, path.path  # type: ignore[union-attr]


def check_writable(path: AnyPath) -> None:
    """Refuse a read-only scheme (``https://``) as a place to write, before anything is computed."""
    if is_remote(path) and getattr(path, "protocol", "") in READ_ONLY:
        raise StorageError(str(path), "https:// URLs are read-only", "write to s3://, gs://, az:// or a folder")
