"""What ``fcnseg segment`` reads, and the name under OUT_DIR that each input's outputs get.

Inputs are files, folders (walked recursively, symlinked sub-folders followed), globs and ``-`` (paths on stdin,
one a line), each of them also as a URL (``s3://b/photos/`` is a folder, ``s3://b/photos/*.jpg`` a glob; see
:mod:`fcnseg.storage`). The output folder is never read as input. A name is a function of the input's path and of the
records already in OUT_DIR, never of the order the inputs come in, so adding files never renames outputs:

- a file found in a folder input is named by its path relative to that folder, without suffix (``trip/a``); a
  file given by name, a glob match or a line on stdin by its stem (``a``);
- if OUT_DIR already holds another source's outputs under that name (per the record
  :func:`fcnseg.outputs.read_record` finds, or files without a record), or another input of this run took it,
  the name gets the first 8 hex digits of the sha256 of the input's real path (``a-1f3e0c2b``), which no other
  source shares. An input keeps whichever of the two names its own record is under.
"""

from __future__ import annotations

import glob
import hashlib
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TextIO

from .. import storage
from ..data.folder import IMAGE_SUFFIXES
from ..outputs import OUTPUT_KINDS, output_paths, read_record
from ..storage import AnyPath
from ..video import VIDEO_SUFFIXES

__all__ = ["Input", "collect_inputs", "name_inputs"]

Warn = Callable[[str], None]


@dataclass(frozen=True)
class Input:
    path: AnyPath  # as found: what messages and the summary show (a URL for an object)
    stem: Path  # the readable name: relative to the folder given (sub-folders kept), or the file's stem
    name: Path | None = None  # where its outputs go, relative to OUT_DIR; None when both candidate names are taken


def _warn(message: str) -> None:
    print(f"fcnseg segment: warning: {message}", file=sys.stderr)


def _walk(folder: Path, skip: str, warn: Warn) -> Iterator[Path]:
    """Image files under ``folder`` in sorted order, through symlinked folders; ``skip`` (a real path) is not entered.

    A link back to a folder being walked is reported and not followed, as is a link that leads nowhere.
    """

    def visit(d: Path, above: frozenset[str]) -> Iterator[Path]:
        try:
            entries = sorted(d.iterdir())
        except OSError as e:
            warn(f"{d}: cannot list folder ({e.strerror or e})")
            return
        for entry in entries:
            if entry.is_dir():
                real = os.path.realpath(entry)
                if real in above:
                    warn(f"{entry}: symbolic link loop back to {real}; not followed")
                elif real != skip:
                    yield from visit(entry, above | {real})
            elif entry.is_file():
                if entry.suffix.lower() in IMAGE_SUFFIXES + VIDEO_SUFFIXES:
                    yield entry
            elif entry.is_symlink():
                warn(f"{entry}: broken or looping symbolic link; skipped")

    yield from visit(folder, frozenset({os.path.realpath(folder)}))


def _inside(path: str, folder: str) -> bool:
    sep = "/" if storage.is_url(folder) else os.sep
    return path == folder or path.startswith(folder.rstrip(sep) + sep)


def _remote(spec: str) -> list[tuple[AnyPath, Path]]:
    """The objects a URL names, with their readable names: the one object, a glob's matches, or the image objects
    under a prefix, walked like a folder. A URL naming nothing is kept, to be reported as a failed input."""
    url = storage.as_path(spec)
    if not spec.endswith("/") and storage.is_file(url):
        return [(url, Path(url.stem))]
    if glob.has_magic(spec):
        fs, key = storage.filesystem(url)
        with storage.storage_errors(spec):
            matches = sorted(fs.glob(key))
        root = spec.split("://", 1)[0] + "://"
        return [(storage.as_path(root + m), Path(Path(m).stem)) for m in matches] or [(url, Path(url.stem))]
    found = [(p, Path(rel).with_suffix("")) for p, rel in storage.iter_files(url, IMAGE_SUFFIXES)]
    return found or [(url, Path(url.stem))]


def collect_inputs(
    specs: list[str], stdin: TextIO | None = None, *, output: Path | None = None, warn: Warn = _warn
) -> list[Input]:
    """Expand files, folders, globs and ``-``; drop duplicates (by real path) and anything inside ``output``.

    A path that does not exist (or a pattern that matches nothing) is kept, so that it is reported as a failed
    input like any unreadable file. A folder input inside ``output`` is an error (``ValueError``).
    """
    skip = storage.location(output) if output is not None else "\0"  # "\0": no real path equals it
    found: list[tuple[AnyPath, Path]] = []
    for spec in specs:
        if spec == "-":
            lines = [s.strip() for s in (stdin or sys.stdin).read().splitlines()]
            found += [(storage.as_path(s), Path(storage.as_path(s).stem)) for s in lines if s]
            continue
        if storage.is_remote(spec):
            found += _remote(spec)
            continue
        path = storage.as_path(spec)
        matches = [path]
        if not path.exists() and glob.has_magic(spec):  # a pattern matching nothing stays, to be reported
            matches = sorted(map(Path, glob.glob(spec, recursive=True))) or [path]
        for m in matches:
            if m.is_dir():
                if _inside(os.path.realpath(m), skip):
                    raise ValueError(f"{m}: inside the output folder {output}, which is never read as input")
                found += [(f, f.relative_to(m).with_suffix("")) for f in _walk(m, skip, warn)]
            else:
                found.append((m, Path(m.stem)))
    inputs, seen, ignored = [], set(), 0
    for path, stem in found:
        real = storage.location(path)
        if _inside(real, skip):
            ignored += 1
        elif real not in seen:
            seen.add(real)
            inputs.append(Input(path, stem))
    if ignored:
        warn(f"{ignored} input{'s' * (ignored > 1)} inside the output folder {output} ignored (outputs are not inputs)")
    return inputs


def _owner(out: AnyPath, name: Path) -> str | None:
    """The real path of the source whose outputs are at ``name``; "" if files are there without a record."""
    record = read_record(out, name)
    if record is not None:
        return record["source"]["path"]
    return "" if any(map(storage.is_file, output_paths(out / name, OUTPUT_KINDS).values())) else None


def name_inputs(inputs: list[Input], out: AnyPath) -> list[Input]:
    """Give each input its name under ``out`` (see the module docstring)."""
    taken: set[Path] = set()
    named = []
    for item in inputs:
        real = storage.location(item.path)
        hashed = item.stem.with_name(f"{item.stem.name}-{hashlib.sha256(real.encode()).hexdigest()[:8]}")
        owners = {c: _owner(out, c) for c in (item.stem, hashed)}
        mine = [c for c, o in owners.items() if o == real]
        free = [c for c, o in owners.items() if o is None and c not in taken]
        name = (mine or free or [None])[0]
        if name is not None:
            taken.add(name)
        named.append(replace(item, name=name))
    return named
