"""Paths that may be URLs: local files and objects in buckets behind one small interface, with the same rules.

Every path fcnseg reads or writes may be a URL that fsspec understands (``s3://``, ``gs://``, ``az://``,
``https://`` for reading, ``file://``); a plain path stays a local file. The rules that hold on disk hold in a bucket:

- :func:`atomic_path` / :func:`atomic_write`: a reader sees the old object or the whole new one, never a partial
  write (on disk check-then-rename; in a bucket one complete PUT, or a multipart upload completed once);
- :func:`identity`: what says an input is still the same file (size and mtime on disk; size and ETag in a bucket);
- :func:`run_lock`: one writer per output folder (an ``flock`` on disk; a lock object created with a conditional
  write in a bucket: S3 ``If-None-Match: *``, GCS ``ifGenerationMatch=0``, Azure ``If-None-Match: *``);
- :class:`StorageError`: a bucket's faults (no credentials, access denied, no such bucket, throttled after the
  library's retries) in one line naming the object.

Credentials and endpoints come from each library's own chain (for S3-compatible stores ``AWS_ENDPOINT_URL``);
fcnseg never asks for keys. fsspec and the store's library are the ``cloud`` extra, imported only for a URL.
"""

from .cache import as_local, cache_root, cached_copy, local_mirror, publish_folder
from .errors import StorageError, storage_errors, translate
from .lock import ObjectLock, run_lock
from .objects import (
    atomic_path,
    atomic_write,
    identity,
    is_file,
    iter_files,
    list_below,
    open_read,
    read_bytes,
    remove,
    upload,
)
from .paths import AnyPath, as_path, check_writable, filesystem, is_remote, is_url, location

__all__ = [
    "AnyPath",
    "ObjectLock",
    "StorageError",
    "as_local",
    "as_path",
    "atomic_path",
    "atomic_write",
    "cache_root",
    "cached_copy",
    "check_writable",
    "filesystem",
    "identity",
    "is_file",
    "is_remote",
    "is_url",
    "iter_files",
    "list_below",
    "local_mirror",
    "location",
    "open_read",
    "publish_folder",
    "read_bytes",
    "remove",
    "run_lock",
    "storage_errors",
    "translate",
    "upload",
]
