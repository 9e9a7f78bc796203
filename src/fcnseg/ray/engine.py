"""``fcnseg segment --engine ray``: files listed by the driver, read and decoded in Ray tasks, segmented in an actor
pool, written by the actors straight to the output folder; only one small row per image comes back.

The driver decides every name and every skip exactly as the local engine does (``fcnseg.cli.segment``), and the
actors write through the same ``save`` function, so the two engines leave the same masks, names and records. The
actor pool is Ray Data's: an actor that dies is restarted and its batch retried (Ray Data gives its actors
``max_restarts=-1, max_task_retries=-1``); an image is written whole or not at all (``fcnseg._atomic``), so a
retried batch only rewrites what had not been recorded. A store's fault that every image would meet (no
credentials, access denied, throttled past the retries: :class:`fcnseg.storage.StorageError`) stops the run with
its one line, as it stops the local engine.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import numpy as np

from fcnseg.results import SegmentationResult
from fcnseg.storage import StorageError
from fcnseg.transforms import SemanticSegmentation

from .batch import NO_IMAGE, SegmentBatch, decode_row
from .placement import Placement, pool_args

__all__ = ["SaveBatch", "segment_files"]

Save = Callable[[SegmentationResult, dict[str, Any]], dict[str, Any]]


class SaveBatch(SegmentBatch):
    """An actor that segments a batch and writes each image's outputs with ``save(result, row)``; it answers per row
    ``key``, ``error`` ("" when written), ``errno`` (of a failed write, else 0), ``stop`` (the store refused in a way
    every image would meet) and ``fields`` (what ``save`` returned, for the summary, as JSON)."""

    def __init__(self, *, save: Save, confidence: bool = False, **options: Any) -> None:
        super().__init__(**options)
        self.save, self.confidence = save, confidence

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        errors, codes, stops, fields = [], [], [], []
        for i, result in enumerate(self.results(batch)):
            row = {k: batch[k][i] for k in ("key", "path", "name", "claim", "recorded")}
            error, code, stop, saved = result if isinstance(result, str) else "", 0, bool(batch["stop"][i]), {}
            if not error:
                try:
                    saved = self.save(result, row)
                except StorageError as e:
                    error, stop = str(e), e.run_wide
                except OSError as e:
                    error, code = e.strerror or str(e), e.errno or 0
            errors.append(error)
            codes.append(code)
            stops.append(stop)
            fields.append(json.dumps(saved))
        return {
            "key": batch["key"], "error": np.array(errors, object), "errno": np.array(codes), "stop": np.array(stops),
            "fields": fields,
        }  # fmt: skip


def decode_or_stop(row: dict[str, Any], *, preprocess: SemanticSegmentation) -> dict[str, Any]:
    """:func:`fcnseg.ray.batch.decode_row`, plus ``stop``: True when the store refused the read in a way every
    image would meet (its one line is the row's ``error``). A Ray task's exception reaches the driver only as the
    text of a traceback, so the fault travels as a row."""
    try:
        return {**decode_row(row, preprocess=preprocess), "stop": False}
    except StorageError as e:
        if not e.run_wide:
            raise
        return {**row, "image": NO_IMAGE, "x": np.zeros((3, 0, 0), np.float32), "error": str(e), "stop": True}


def segment_files(
    ray: Any,
    rows: list[dict[str, Any]],
    *,
    preprocess: SemanticSegmentation,
    segmenter: dict[str, Any],
    save: Save,
    place: Placement,
    batch_size: int,
    probs: bool = False,
    confidence: bool = False,
    quiet: bool = False,
) -> Iterator[dict[str, Any]]:
    """Segment and write the files of ``rows`` (``key``, ``path``, and what ``save`` needs: ``name``, ``claim``...),
    yielding for each ``{"key", "error", "errno", "fields"}`` as they finish (in no particular order); a store's
    fault that every image would meet is raised as the :class:`fcnseg.storage.StorageError` of its one line."""
    from ray.data import DataContext

    DataContext.get_current().enable_progress_bars = not quiet
    blocks = max(1, min(math.ceil(len(rows) / (2 * batch_size)), 10_000))  # a few batches per block stream well
    ds = ray.data.from_items(rows, override_num_blocks=blocks)
    ds = ds.map(partial(decode_or_stop, preprocess=preprocess))
    ds = ds.map_batches(
        SaveBatch,
        fn_constructor_kwargs={
            "save": save, "confidence": confidence, "probs": probs, "threads": place.threads,
            "device": place.device, **segmenter,
        },
        **pool_args(ray, place, batch_size),
    )  # fmt: skip
    for row in ds.iter_rows():
        if row["stop"]:  # the store refuses every image alike: stop with its line, as the local engine does
            raise StorageError(str(row["error"]))
        fields = json.loads(row["fields"])
        yield {"key": int(row["key"]), "error": str(row["error"]), "errno": int(row["errno"]), "fields": fields}
