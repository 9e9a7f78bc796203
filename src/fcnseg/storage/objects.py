"""Reading, writing, listing and identifying files and objects, the same calls for both.

Writing is whole or nothing everywhere. On disk :func:`fcnseg._atomic.atomic_path` writes a temporary file and
renames it (check-then-rename). An object store has no rename, but a PUT is atomic: the content goes to a local
temporary file first and is uploaded once complete, in one PUT or one multipart upload that is completed once
(and aborted on failure), so no reader ever sees part of it. A write that fails before the upload sends nothing.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import IO, Any

from .._atomic import atomic_path as local_atomic_path
from .._stamp import file_stamp
from .errors import storage_errors
from .paths import AnyPath, as_path, check_writable, filesystem, is_remote

__all__ = [
    "atomic_path", "atomic_write", "identity", "is_file", "iter_files", "list_below", "open_read", "read_bytes",
    "remove", "upload",
]  # fmt: skip

READ_BLOCK = 8 << 20  # bytes fetched per ranged GET while streaming an object: its memory bound per open file


def open_read(path: AnyPath | str) -> IO[bytes]:
    """A binary file open for reading; an object is streamed in ranged GETs of :data:`READ_BLOCK` bytes."""
    path = as_path(path)
    if not is_remote(path):
        return open(path, "rb")  # noqa: SIM115
    fs, key = filesystem(path)
    with storage_errors(path):
        return fs.open(key, "rb", block_size=READ_BLOCK)


def read_bytes(path: AnyPath | str) -> bytes:
    """The whole content of a (small) file or object: records, summaries."""
    with open_read(path) as f:
        return f.read()


def is_file(path: AnyPath) -> bool:
    """Whether ``path`` is an existing file or object (a missing bucket is a fault, not ``False``)."""
    return identity(path) is not None


def identity(path: AnyPath) -> dict[str, Any] | None:
    """What identifies the content of a file without reading it, or None if there is none at ``path``.

    On disk ``{"size", "mtime_ns"}`` (:func:`fcnseg._stamp.file_stamp`); in a bucket ``{"size", "etag"}``: the
    ETag changes whenever an object is rewritten, even with the same size in the same second.
    """
    if not is_remote(path):
        size, mtime_ns = file_stamp(path) or (None, None)
        return None if size is None or not Path(path).is_file() else {"size": size, "mtime_ns": mtime_ns}
    fs, key = filesystem(path)
    try:
        with storage_errors(path):
            info = fs.info(key)
    except FileNotFoundError:
        return None
    if info.get("type") == "directory":
        return None
    etag = info.get("ETag") or info.get("etag") or info.get("md5Hash") or info.get("generation")
    return {"size": info.get("size"), "etag": str(etag).strip('"') if etag else None}


def remove(path: AnyPath) -> None:
    """Delete a file or object if it is there."""
    if not is_remote(path):
        Path(path).unlink(missing_ok=True)
        return
    fs, key = filesystem(path)
    with contextlib.suppress(FileNotFoundError), storage_errors(path, writing=True):
        fs.rm_file(key)


def iter_files(folder: AnyPath, suffixes: tuple[str, ...] | None = None) -> Iterator[tuple[AnyPath, PurePosixPath]]:
    """The objects under the prefix ``folder`` (those whose names end in one of ``suffixes``, any case, if given),
    with their path relative to it; listed a "directory" at a time, sorted within each, so that a huge prefix is
    never held whole."""
    fs, key = filesystem(folder)
    root = key.rstrip("/")
    with storage_errors(folder):
        for parent, _, files in fs.walk(root, on_error="raise"):  # never an empty listing for a fault
            for name in sorted(files):
                rel = PurePosixPath(parent, name).relative_to(root)
                if suffixes is None or rel.suffix.lower() in suffixes:
                    yield folder.joinpath(*rel.parts), rel


def list_below(folder: AnyPath) -> None:
    """List everything under the prefix ``folder`` at once (a request per 1,000 objects), so that the existence
    checks that follow (is NAME's record there? its mask?) are answered from fsspec's listing cache instead of a
    HEAD and a LIST each. The cache holds until this process writes there. Nothing to do on disk."""
    if is_remote(folder):
        fs, key = filesystem(folder)
        with storage_errors(folder):
            fs.find(key.rstrip("/"), withdirs=True)


@contextlib.contextmanager
def atomic_path(path: AnyPath | str, *, durable: bool = False, size: int | None = None) -> Iterator[Path]:
    """Yield a local temporary file to write; when the block succeeds it becomes ``path`` whole, else nothing does.

    A local ``path`` is :func:`fcnseg._atomic.atomic_path` (``durable`` and ``size`` as there). An object is uploaded
    from the temporary file once the block is done (see the module docstring); a store's fault leaves as a
    :class:`StorageError`.
    """
    path = as_path(path)
    if not is_remote(path):
        with local_atomic_path(path, durable=durable, size=size) as tmp:
            yield tmp
        return
    check_writable(path)
    with tempfile.TemporaryDirectory(prefix="fcnseg-upload-") as folder:
        tmp = Path(folder) / path.name
        yield tmp
        upload(tmp, path)


def upload(local: Path, path: AnyPath) -> None:
    """Copy the complete local file ``local`` to the object ``path`` in one PUT, or one multipart upload completed
    once (aborted on failure): readers see the old object or the whole new one."""
    check_writable(path)
    fs, key = filesystem(path)
    with storage_errors(path, writing=True):
        fs.put_file(str(local), key)


def atomic_write(path: AnyPath | str, write: Callable[[IO[bytes]], None]) -> None:
    """Call ``write(file)`` on a temporary file and make it ``path`` only if it returns (see :func:`atomic_path`)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        write(f)
