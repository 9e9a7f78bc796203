"""Local copies of remote files: a checkpoint read once per content, a dataset mirrored for training.

A copy's name carries a hash of the URL and the object's ETag, so a rewritten object is fetched again and an
unchanged one never is. Downloads land under a temporary name and are renamed, so a copy is whole or absent, and
two processes (the ranks of a DDP job on one machine) fetching the same object at once each get a whole file.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

from .._atomic import atomic_path
from .._stamp import file_stamp
from .errors import StorageError, storage_errors
from .objects import identity, iter_files, upload
from .paths import AnyPath, as_path, filesystem, is_remote

__all__ = ["as_local", "cache_root", "cached_copy", "local_mirror", "publish_folder"]


def cache_root() -> Path:
    """``$FCNSEG_CACHE``, else ``$XDG_CACHE_HOME/fcnseg``, else ``~/.cache/fcnseg``: where mirrored data goes."""
    if os.environ.get("FCNSEG_CACHE"):
        return Path(os.environ["FCNSEG_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "fcnseg"


def _digest(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


def _download(url: AnyPath, dest: Path) -> None:
    fs, key = filesystem(url)
    with atomic_path(dest) as tmp, storage_errors(url):
        fs.get_file(key, str(tmp))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def cached_copy(url: AnyPath | str, folder: Path, *, hash_prefix: str | None = None) -> Path:
    """A local copy of the object ``url`` in ``folder``, named ``<hash of URL and ETag>-<name>``; downloaded only
    when no copy of this content is there. ``hash_prefix``: the sha256 the file must start with (its name's, for a
    registry file), checked after the download; a mismatch removes the copy and is an error."""
    url = as_path(url)
    found = identity(url)
    if found is None:
        raise FileNotFoundError(errno.ENOENT, "no such object", str(url))
    dest = folder / f"{_digest(str(url), str(found['etag']))}-{url.name}"
    if dest.is_file() and dest.stat().st_size == found["size"]:
        return dest
    _download(url, dest)
    if hash_prefix is not None and not _sha256(dest).startswith(hash_prefix):
        dest.unlink(missing_ok=True)
        raise StorageError(
            str(url), f"its sha256 does not start with {hash_prefix}, as its name says", "fetch a good copy of it",
            run_wide=False,
        )  # fmt: skip
    return dest


@contextlib.contextmanager
def _exclusive(folder: Path) -> Iterator[None]:
    """One process at a time updates a mirror (the ranks of a DDP job on one machine: the first fetches, the others
    find it done); an ``flock``, released by the kernel if its holder dies."""
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / ".fcnseg-mirror.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def local_mirror(url: AnyPath | str, root: Path | None = None, *, allow_empty: bool = False) -> Path:
    """A local folder holding every object under the prefix ``url`` (same relative paths), kept in step with it.

    An object is fetched when its size or ETag differs from the copy's (recorded in ``.fcnseg-mirror.json``);
    copies of objects gone from the prefix are removed. Used for training data, so that each machine of a DDP job
    reads its own disk and no shared file system is needed, and for a run folder in a bucket. An empty prefix is
    an error unless ``allow_empty``.
    """
    url = as_path(url)
    folder = (root or cache_root() / "mirror") / _digest(str(url).rstrip("/"))
    with _exclusive(folder):
        _mirror(url, folder, allow_empty)
    return folder


def _mirror(url: AnyPath, folder: Path, allow_empty: bool) -> None:
    manifest_path = folder / ".fcnseg-mirror.json"
    try:
        old = json.loads(manifest_path.read_text())
    except (OSError, ValueError):
        old = {}
    new: dict[str, dict] = {}
    for obj, rel in iter_files(url):
        found = identity(obj)
        if found is None:  # deleted while listing
            continue
        dest = folder.joinpath(*rel.parts)
        if old.get(str(rel)) != found or not dest.is_file():
            _download(obj, dest)
        new[str(rel)] = found
    if not new and not allow_empty:
        raise StorageError(str(url), "no objects under this prefix", "check the URL", run_wide=False)
    for rel in set(old) - set(new):
        folder.joinpath(rel).unlink(missing_ok=True)
    with atomic_path(manifest_path) as tmp:
        tmp.write_text(json.dumps(new, indent=1, sort_keys=True))


def publish_folder(folder: Path, url: AnyPath | str, sent: dict[str, tuple[int, int]]) -> None:
    """Upload the files of ``folder`` that changed since the last call (``sent``: relative name -> size and mtime,
    updated) to the prefix ``url``, each as a whole object. The inverse of :func:`local_mirror`, for a run folder."""
    url = as_path(url)
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".fcnseg-mirror")):
        rel = path.relative_to(folder)
        stamp = file_stamp(path)
        if stamp is None or sent.get(str(rel)) == stamp:
            continue
        upload(path, url.joinpath(*rel.parts))
        sent[str(rel)] = stamp


def as_local(location: str | os.PathLike[str], *, folder: bool = False) -> Path:
    """A path on this machine for a file or ``folder`` that may be in a bucket: a local path as it is, an object
    fetched into ``cache_root()/files``, a prefix mirrored (:func:`local_mirror`)."""
    path = as_path(location)
    if not is_remote(path):
        return path
    return local_mirror(path) if folder else cached_copy(path, cache_root() / "files")
