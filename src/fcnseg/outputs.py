"""Writing predictions to disk, all or nothing: every file goes to a temporary name first, then is renamed.

A crash, a full disk or Ctrl-C therefore leaves either the complete file or no file, never a partial one,
and a later run can trust that any output it finds is whole (which is what resuming relies on).

Next to the outputs, ``OUT_DIR/.fcnseg/NAME.json`` records whose outputs ``NAME`` holds: the source's real path,
size and modification time (:func:`source_of`), the settings that made them and which outputs were written. It is
written before the outputs (listing none), so outputs never exist without the record that says which image they
belong to, and again once they are all written.

``OUT_DIR`` may be a bucket prefix (``s3://b/out``): every read and write goes through :mod:`fcnseg.storage`, so
the same names, records and rules hold there, with an object's ETag in place of a file's modification time.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np

from . import storage
from ._stamp import file_stamp
from .predict import SegmentationResult
from .storage import AnyPath

__all__ = [
    "OUTPUT_KINDS",
    "RUN_OUTPUTS",
    "WRITERS",
    "atomic_write",
    "merge_rows",
    "output_paths",
    "read_record",
    "read_summary",
    "record_path",
    "remove_outputs",
    "result_record",
    "source_of",
    "write_outputs",
    "write_record",
    "write_summary",
]

RECORD_DIR = ".fcnseg"  # under OUT_DIR: one record per output name

# kind -> file name suffix added to the input's name
OUTPUT_KINDS = {
    "mask": "_mask.png",  # palette PNG of class indices, the input's size
    "color": "_color.png",  # the same mask as plain RGB colours, for viewers that ignore palettes
    "overlay": "_overlay.jpg",  # class colours blended over the photo
    "probs": "_probs.npz",  # compressed float16 (K, H, W) class probabilities + category names
    "json": ".json",  # per-class pixel share and mean confidence
}
# kind -> one file for the whole run, in OUT_DIR
RUN_OUTPUTS = {
    "coco": "predictions.coco.json",  # COCO RLE per image and class: pre-annotations for CVAT, Label Studio
}


def atomic_write(path: AnyPath, write: Callable[[IO[bytes]], None]) -> None:
    """Call ``write(file)`` on a temporary file and make it ``path`` only on success: renamed into place on disk,
    uploaded whole to a bucket (:func:`fcnseg.storage.atomic_write`)."""
    storage.atomic_write(path, write)


def output_paths(base: AnyPath, kinds: Iterable[str]) -> dict[str, AnyPath]:
    """``base`` is the output folder plus the input's stem, e.g. ``out/holiday/beach``."""
    return {k: base.with_name(base.name + OUTPUT_KINDS[k]) for k in kinds}


def result_record(result: SegmentationResult, **meta: Any) -> dict[str, Any]:
    """The per-image JSON: ``meta`` (input, model, weights...), size, and per-class share and mean confidence."""
    h, w = result.mask.shape
    return {**meta, "width": w, "height": h, "classes": result.class_stats()}


def _write_mask(result: SegmentationResult, f: IO[bytes], meta: dict[str, Any]) -> None:
    result.to_image().save(f, format="PNG", optimize=False)


def _write_color(result: SegmentationResult, f: IO[bytes], meta: dict[str, Any]) -> None:
    result.to_image().convert("RGB").save(f, format="PNG")


def _write_overlay(result: SegmentationResult, f: IO[bytes], meta: dict[str, Any]) -> None:
    result.overlay().save(f, format="JPEG", quality=90)


def _write_probs(result: SegmentationResult, f: IO[bytes], meta: dict[str, Any]) -> None:
    if result.probs is None:
        raise ValueError("result holds no probabilities (predict with probs=True)")
    buf = io.BytesIO()  # np.savez wants a seekable file; keep the write to the real file a single step
    np.savez_compressed(buf, probs=result.probs.astype(np.float16), categories=np.array(result.categories))
    f.write(buf.getbuffer())


def _write_json(result: SegmentationResult, f: IO[bytes], meta: dict[str, Any]) -> None:
    f.write(json.dumps(result_record(result, **meta), indent=2).encode() + b"\n")


WRITERS: dict[str, Callable[[SegmentationResult, IO[bytes], dict[str, Any]], None]] = {
    "mask": _write_mask,
    "color": _write_color,
    "overlay": _write_overlay,
    "probs": _write_probs,
    "json": _write_json,
}


def write_outputs(
    result: SegmentationResult, base: AnyPath, kinds: Sequence[str], meta: dict[str, Any] | None = None
) -> list[AnyPath]:
    """Write the requested outputs of one image atomically; returns their paths.

    If one of them fails, those already written for this image are removed too, so an image has either
    all of its outputs or none (a rerun then redoes it).
    """
    paths = output_paths(base, kinds)
    written: list[AnyPath] = []
    try:
        for kind, path in paths.items():
            atomic_write(path, lambda f, kind=kind: WRITERS[kind](result, f, meta or {}))
            written.append(path)
    except BaseException:
        for path in written:
            storage.remove(path)
        raise
    return written


def remove_outputs(base: AnyPath, kinds: Iterable[str]) -> None:
    """Delete the outputs of ``kinds`` at ``base`` (those there are), e.g. an older run's that a new one replaces."""
    for path in output_paths(base, kinds).values():
        storage.remove(path)


def source_of(path: str | AnyPath) -> dict[str, Any]:
    """What identifies an input: its real path (or URL) and :func:`fcnseg.storage.identity`: size and modification
    time (ns) of a file, size and ETag of an object (None if it cannot be read)."""
    path = storage.as_path(path)
    if storage.is_remote(path):
        return {"path": str(path), "size": None, "etag": None, **(storage.identity(path) or {})}
    size, mtime_ns = file_stamp(path) or (None, None)  # also for a path that is not a regular file
    return {"path": os.path.realpath(path), "size": size, "mtime_ns": mtime_ns}


def record_path(out: AnyPath, name: str | Path) -> AnyPath:
    return out / RECORD_DIR / f"{name}.json"


def read_record(out: AnyPath, name: str | Path) -> dict[str, Any] | None:
    """The record of the outputs at ``out/name`` (``{"source": source_of(...), ...}``), or None if there is none."""
    path = record_path(out, name)
    try:
        return json.loads(storage.read_bytes(path))
    except FileNotFoundError:
        return None
    except ValueError as e:  # written atomically by fcnseg: only a hand edit gets here
        raise ValueError(f"{path}: unreadable record ({e}); delete it and the outputs it names to redo them") from None


def write_record(out: Path, name: str | Path, record: dict[str, Any]) -> None:
    atomic_write(record_path(out, name), lambda f: f.write(json.dumps(record, indent=1).encode() + b"\n"))


SUMMARY_FIELDS = ("input", "name", "status", "error", "width", "height", "top_class", "top_share", "outputs", "rank")


def read_summary(path: AnyPath) -> list[dict[str, Any]]:
    """The rows of an existing summary written by :func:`write_summary` (none if there is no file)."""
    if not storage.is_file(path):
        return []
    text = storage.read_bytes(path).decode()
    if path.suffix == ".jsonl":
        try:
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        except ValueError as e:
            raise ValueError(f"{path}: not a summary in JSON Lines ({e}); move it away to start a new one") from None
    return list(csv.DictReader(io.StringIO(text)))


def merge_rows(old: Sequence[dict[str, Any]], new: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """``old`` rows with those of the same output name (or input, for rows without one) replaced by ``new``."""
    merged = {row.get("name") or row["input"]: row for row in [*old, *new]}
    return sorted(merged.values(), key=lambda row: str(row["input"]))


def write_summary(rows: Sequence[dict[str, Any]], path: AnyPath) -> None:
    """One row per input, as CSV or JSON Lines (by the file's suffix: ``.csv`` or ``.jsonl``)."""
    if path.suffix not in (".csv", ".jsonl"):
        raise ValueError(f"{path}: summary must be .csv or .jsonl")

    def write(f: IO[bytes]) -> None:
        text = io.StringIO()
        if path.suffix == ".jsonl":
            for row in rows:
                text.write(json.dumps({k: row.get(k) for k in SUMMARY_FIELDS}) + "\n")
        else:
            writer = csv.DictWriter(text, fieldnames=SUMMARY_FIELDS, extrasaction="ignore", lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
        f.write(text.getvalue().encode())

    atomic_write(path, write)
