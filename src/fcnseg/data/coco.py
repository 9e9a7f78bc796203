"""COCO 2017 as semantic segmentation, following torchvision's ``references/segmentation/coco_utils.py``.

The published FCN numbers come from this protocol, so it is reproduced step for step:

* keep the annotations whose category is in :data:`COCO_VOC_CATEGORY_IDS` (the 20 Pascal VOC classes) and remap
  each to its position in that list (``FilterAndRemapCocoCategories``);
* rasterize each kept annotation (polygons or RLE, crowd regions included, as the reference does) with pycocotools,
  take the max of (instance mask x class) over instances, and set pixels covered by more than one instance to 255,
  the ignore index (``ConvertCocoPolysToMask``);
* images are decoded without applying EXIF orientation (COCO annotations refer to the stored pixels) and the
  image ids are read in sorted order, as ``torchvision.datasets.CocoDetection`` does;
* ``train`` drops images whose kept annotations cover 1000 pixels or fewer in total, summing the annotations'
  ``area`` field (``_coco_remove_images_without_annotations``); ``val`` keeps every image.

Deliberate differences, none of which changes a mask the reference can produce: compressed RLE (string ``counts``)
is decoded instead of crashing in ``frPyObjects``; polygons with fewer than three points, which enclose no pixel
(and which pycocotools mistakes for a box when first), are skipped; an annotation with an empty segmentation adds
nothing; an RLE whose size differs from its image is an error naming both.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..imageio import load_image
from ..weights import VOC_CATEGORIES

__all__ = ["COCO_VOC_CATEGORY_IDS", "CocoSegmentation", "annotation_mask", "coco_target", "filter_and_remap"]

# COCO category ids of the 20 VOC classes, in VOC order; 0 stands for background (no COCO category has id 0).
COCO_VOC_CATEGORY_IDS = [0, 5, 2, 16, 9, 44, 6, 3, 17, 62, 21, 67, 18, 19, 4, 1, 64, 20, 63, 7, 72]

_SPLITS = {"train": "train2017", "val": "val2017"}


def filter_and_remap(anns: list[dict[str, Any]], category_ids: list[int]) -> list[dict[str, Any]]:
    """Annotations of the kept categories, with ``category_id`` replaced by its index in ``category_ids``."""
    kept = [a for a in anns if a["category_id"] in category_ids]
    return [{**a, "category_id": category_ids.index(a["category_id"])} for a in kept]


def annotation_mask(segmentation: list | dict, height: int, width: int) -> np.ndarray:
    """One annotation's pixels as an (H, W) bool array: union of its polygons, or its (un)compressed RLE."""
    from pycocotools import mask as coco_mask

    if isinstance(segmentation, dict):  # RLE; COCO stores crowd regions this way, with uncompressed counts
        rle = segmentation
        if isinstance(rle["counts"], list):
            rle = coco_mask.frPyObjects(rle, *rle["size"])
        m = coco_mask.decode(rle)
        if m.shape != (height, width):
            raise ValueError(f"RLE of size {m.shape[1]}x{m.shape[0]} on a {width}x{height} image")
        return m.astype(bool)
    polygons = [p for p in segmentation if len(p) >= 6]  # fewer than 3 points enclose nothing
    if not polygons:
        return np.zeros((height, width), dtype=bool)
    return coco_mask.decode(coco_mask.frPyObjects(polygons, height, width)).any(axis=2)


def coco_target(anns: list[dict[str, Any]], height: int, width: int) -> np.ndarray:
    """(H, W) uint8 label map from remapped annotations: max class over instances, 255 where instances overlap."""
    if not anns:
        return np.zeros((height, width), dtype=np.uint8)
    masks = np.stack([annotation_mask(a["segmentation"], height, width) for a in anns])  # (N, H, W)
    cats = np.array([a["category_id"] for a in anns], dtype=np.uint8)
    target = (masks * cats[:, None, None]).max(axis=0).astype(np.uint8)
    target[masks.sum(axis=0) > 1] = 255
    return target


class CocoSegmentation:
    """COCO ``{split}2017`` images with VOC-class masks; yields ``(RGB image, mask)`` or ``transforms(image, mask)``.

    Args:
        root: folder holding ``annotations/instances_{split}2017.json`` and ``{split}2017/``.
        split: ``train`` or ``val``.
        transforms: applied to each ``(image, mask)`` pair (e.g. :class:`fcnseg.transforms.SegmentationEval`).
        category_ids: COCO category ids to keep, in label order (default: background + the 20 VOC classes).
        remove_images_without_annotations: drop images whose kept annotations cover <= 1000 pixels
            (default: only for ``train``, as the reference).
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "val",
        transforms: Callable[[Image.Image, Image.Image], Any] | None = None,
        category_ids: list[int] = COCO_VOC_CATEGORY_IDS,
        remove_images_without_annotations: bool | None = None,
    ) -> None:
        if importlib.util.find_spec("pycocotools") is None:
            raise ModuleNotFoundError("COCO masks need pycocotools: pip install 'fcnseg[coco]'")
        if split not in _SPLITS:
            raise ValueError(f"unknown COCO split {split!r}; choose one of {list(_SPLITS)}")
        self.root = Path(root)
        self.image_dir = self.root / _SPLITS[split]
        ann_file = self.root / "annotations" / f"instances_{_SPLITS[split]}.json"
        if not ann_file.is_file():
            raise FileNotFoundError(f"{ann_file}: missing (expected ROOT/annotations/instances_{{train,val}}2017.json)")
        try:
            data = json.loads(ann_file.read_text())
            self._images = {img["id"]: img for img in data["images"]}
            self._anns: dict[int, list[dict[str, Any]]] = {i: [] for i in self._images}
            for ann in data["annotations"]:
                self._anns[ann["image_id"]].append(ann)
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise ValueError(f"{ann_file}: not a COCO instances file ({type(e).__name__}: {e})") from None
        self.category_ids = list(category_ids)
        self.categories = VOC_CATEGORIES if self.category_ids == COCO_VOC_CATEGORY_IDS else self._names(data)
        self.transforms = transforms
        self.ids = sorted(self._images)
        if remove_images_without_annotations is None:
            remove_images_without_annotations = split == "train"
        if remove_images_without_annotations:
            self.ids = [i for i in self.ids if self._has_valid_annotation(i)]

    def _names(self, data: dict[str, Any]) -> list[str]:
        by_id = {c["id"]: c["name"] for c in data.get("categories", [])}
        return [by_id.get(c, "__background__" if c == 0 else f"coco_{c}") for c in self.category_ids]

    def _has_valid_annotation(self, image_id: int) -> bool:
        """The reference's training filter: some kept annotation, and their areas sum to more than 1000 pixels."""
        anns = [a for a in self._anns[image_id] if a["category_id"] in self.category_ids]
        return bool(anns) and sum(a["area"] for a in anns) > 1000

    def __len__(self) -> int:
        return len(self.ids)

    def image_path(self, i: int) -> Path:
        return self.image_dir / self._images[self.ids[i]]["file_name"]

    def image_size(self, i: int) -> tuple[int, int]:
        """(H, W) of image ``i`` from the annotation file, without decoding it."""
        info = self._images[self.ids[i]]
        return info["height"], info["width"]

    def target(self, i: int, height: int, width: int) -> Image.Image:
        """The label map of image ``i`` at the given (decoded) size, as a mode "L" image."""
        anns = filter_and_remap(self._anns[self.ids[i]], self.category_ids)
        try:
            return Image.fromarray(coco_target(anns, height, width))
        except ValueError as e:
            raise ValueError(f"{self.image_path(i)}: {e}") from None

    def __getitem__(self, i: int) -> Any:
        image = load_image(self.image_path(i), exif_transpose=False)
        mask = self.target(i, image.height, image.width)
        if self.transforms is not None:
            return self.transforms(image, mask)
        return image, mask
