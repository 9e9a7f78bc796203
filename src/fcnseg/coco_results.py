"""Predictions as COCO: per image and class, a compressed RLE that pycocotools, CVAT and Label Studio read.

``fcnseg segment --save coco`` writes one file for the run (:class:`CocoResults`): a COCO dataset (``images``,
``categories``, ``annotations``) whose annotations also carry a ``score``, so it loads with
``pycocotools.coco.COCO`` as ground truth, serves as a results list (``annotations``) for ``COCO.loadRes``, and
imports into annotation tools as pre-annotations (they match categories by name).

One annotation per image and predicted class other than class 0 (background): ``category_id`` is the class
index, ``segmentation`` the class's pixels as compressed RLE (``counts`` a string), ``area`` and ``bbox``
(``[x, y, width, height]``) as pycocotools computes them, ``score`` the mean softmax probability of the class
over its pixels, ``iscrowd`` 0.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ._atomic import atomic_path

if TYPE_CHECKING:
    from .results import SegmentationResult

__all__ = ["CocoResults", "class_annotations", "coco_rle"]


def coco_rle(mask: np.ndarray) -> dict[str, Any]:
    """An (H, W) boolean mask as COCO's compressed RLE: ``{"size": [H, W], "counts": str}``."""
    from pycocotools import mask as coco_mask

    rle = coco_mask.encode(np.asfortranarray(mask, dtype=np.uint8))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def class_annotations(result: SegmentationResult, image_id: int) -> list[dict[str, Any]]:
    """COCO annotations (without ``id``) of one prediction: one per class present except class 0."""
    from pycocotools import mask as coco_mask

    anns = []
    for stats in result.class_stats():
        c = stats["index"]
        if c == 0:
            continue
        rle = coco_rle(result.mask == c)
        encoded = {**rle, "counts": rle["counts"].encode("ascii")}
        score = stats["mean_confidence"]
        if score is None:  # a score of 1.0 for every class would rank nothing
            raise ValueError("COCO scores are the classes' mean probability: predict with confidence=True")
        anns.append({
            "image_id": image_id,
            "category_id": c,
            "segmentation": rle,
            "area": float(coco_mask.area(encoded)),
            "bbox": [float(v) for v in coco_mask.toBbox(encoded)],
            "score": round(float(score), 6),
            "iscrowd": 0,
        })  # fmt: skip
    return anns


class CocoResults:
    """Collects the predictions of a run and writes them as one COCO file (see the module docstring)."""

    def __init__(self) -> None:
        self.categories: list[str] = []  # the model's, taken from the first result
        self.images: list[dict[str, Any]] = []
        self.annotations: list[dict[str, Any]] = []
        self._file_names: set[str] = set()

    def add(self, file_name: str, result: SegmentationResult, **fields: Any) -> None:
        """Record one image (``file_name`` as the annotation tool knows it, unique in the file) and its class
        annotations; the result must hold its confidence map (the scores). ``fields`` are added to the image's
        entry (a video frame's ``frame_index`` and ``timestamp``)."""
        if file_name in self._file_names:
            raise ValueError(f"{file_name}: already in these predictions; each image needs its own file name")
        h, w = result.mask.shape
        image_id = len(self.images) + 1
        self.annotations += class_annotations(result, image_id)
        self.images.append({"id": image_id, "file_name": file_name, "width": w, "height": h, **fields})
        self._file_names.add(file_name)
        self.categories = list(result.categories)

    @classmethod
    def merge(cls, parts: Sequence[CocoResults]) -> CocoResults:
        """One collection of several (e.g. one per process), images in file-name order, ids renumbered."""
        out = cls()
        out.categories = next((p.categories for p in parts if p.categories), [])
        anns: dict[tuple[int, int], list[dict[str, Any]]] = {}
        for k, p in enumerate(parts):
            for a in p.annotations:
                anns.setdefault((k, a["image_id"]), []).append(a)
        images = sorted(((img, k) for k, p in enumerate(parts) for img in p.images), key=lambda q: q[0]["file_name"])
        for img, k in images:
            image_id = len(out.images) + 1
            out.images.append({**img, "id": image_id})
            out._file_names.add(img["file_name"])
            out.annotations += [{**a, "image_id": image_id} for a in anns.get((k, img["id"]), [])]
        return out

    def document(self) -> dict[str, Any]:
        """The COCO dictionary: ``images``, ``annotations`` (ids from 1), ``categories`` (classes 1..K-1)."""
        return {
            "info": {"description": "fcnseg predictions", "version": "1.0"},
            "images": self.images,
            "annotations": [{"id": i, **a} for i, a in enumerate(self.annotations, 1)],
            "categories": [{"id": i, "name": n, "supercategory": ""} for i, n in enumerate(self.categories) if i > 0],
        }

    def write(self, path: str | Path) -> Path:
        """Write the file atomically (a reader sees the previous file or the whole new one)."""
        path = Path(path)
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(self.document()) + "\n")
        return path
