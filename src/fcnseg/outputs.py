"""Writing predictions to disk, all or nothing: every file goes to a temporary name first, then is renamed.

A crash, a full disk or Ctrl-C therefore leaves either the complete file or no file, never a partial one,
and a later run can trust that any output it finds is whole (which is what resuming relies on).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np

from ._atomic import atomic_path
from .predict import SegmentationResult

__all__ = [
    "OUTPUT_KINDS",
    "RUN_OUTPUTS",
    "WRITERS",
    "atomic_write",
    "output_paths",
    "result_record",
    "write_outputs",
    "write_summary",
]

# kind -> file name suffix added to the input's stem
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


def atomic_write(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Call ``write(file)`` on a temporary file next to ``path`` and rename it into place only on success."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        write(f)


def output_paths(base: Path, kinds: Iterable[str]) -> dict[str, Path]:
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
    result: SegmentationResult, base: Path, kinds: Sequence[str], meta: dict[str, Any] | None = None
) -> list[Path]:
    """Write the requested outputs of one image atomically; returns their paths.

    If one of them fails, those already written for this image are removed too, so an image has either
    all of its outputs or none (a rerun then redoes it).
    """
    paths = output_paths(base, kinds)
    base.parent.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    try:
        for kind, path in paths.items():
            atomic_write(path, lambda f, kind=kind: WRITERS[kind](result, f, meta or {}))
            written.append(path)
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    return written


SUMMARY_FIELDS = ("input", "status", "error", "width", "height", "top_class", "top_share", "outputs", "rank")


def write_summary(rows: Sequence[dict[str, Any]], path: Path) -> None:
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
