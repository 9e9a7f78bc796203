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

Any other COCO instances file (an annotation tool's export: CVAT, Label Studio, Roboflow...) is read with the same
rasterization, but with its own categories: label 0 is ``__background__``, then every category of the file by
ascending id (ids need not start at 1 or be contiguous, Label Studio's start at 0; unused categories keep their
label, so every split of an export gets the same labels). Every image is kept, with or without
annotations. Images are found by their ``file_name`` under the folders :func:`_export_image_roots` lists.
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

__all__ = [
    "COCO_VOC_CATEGORY_IDS",
    "CocoSegmentation",
    "annotation_mask",
    "coco_target",
    "export_category_ids",
    "filter_and_remap",
    "find_coco_annotations",
]

# COCO category ids of the 20 VOC classes, in VOC order; 0 stands for background (no COCO category has id 0).
COCO_VOC_CATEGORY_IDS = [0, 5, 2, 16, 9, 44, 6, 3, 17, 62, 21, 67, 18, 19, 4, 1, 64, 20, 63, 7, 72]

_SPLITS = {"train": "train2017", "val": "val2017"}


def filter_and_remap(anns: list[dict[str, Any]], category_ids: list[int | None]) -> list[dict[str, Any]]:
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


def export_category_ids(data: dict[str, Any]) -> list[int | None]:
    """Label order of a COCO export: background (``None``: no category of the file), then every category of the
    file by ascending id (Label Studio numbers them from 0, CVAT from 1)."""
    return [None, *sorted(c["id"] for c in data.get("categories", []))]


def find_coco_annotations(root: str | Path, split: str) -> tuple[Path, bool]:
    """The annotation file of ``split`` under ``root`` and whether it is COCO 2017 (read with the VOC protocol).

    Tried in order: ``annotations/instances_{split}2017.json`` (COCO 2017, ``split`` train or val), then an
    export's ``annotations/instances_{split}.json`` (CVAT), ``annotations/{split}.json`` and ``{split}.json``
    (e.g. Label Studio's ``result.json`` as split ``result``).
    """
    root = Path(root)
    if split in _SPLITS and (root / "annotations" / f"instances_{_SPLITS[split]}.json").is_file():
        return root / "annotations" / f"instances_{_SPLITS[split]}.json", True
    tried = [root / "annotations" / f"instances_{split}.json", root / "annotations" / f"{split}.json"]
    tried.append(root / f"{split}.json")
    for path in tried:
        if path.is_file():
            return path, False
    names = ", ".join(str(p.relative_to(root)) for p in tried)
    raise FileNotFoundError(
        f"{root}: no COCO annotations for split {split!r} (looked for annotations/instances_{split}2017.json, {names})"
    )


class CocoSegmentation:
    """COCO images with semantic masks; yields ``(RGB image, mask)`` or ``transforms(image, mask)``.

    ``CocoSegmentation(root, split)`` reads COCO 2017 with the VOC protocol when ``root`` holds
    ``annotations/instances_{split}2017.json`` and ``{split}2017/``, and otherwise an annotation tool's export
    laid out as :func:`find_coco_annotations` describes, with every category of the file; :meth:`from_file`
    reads any annotation file and image folder.

    Args:
        root: the dataset folder (see above).
        split: ``train`` or ``val`` for COCO 2017; an export's split name otherwise (``default`` for CVAT's).
        transforms: applied to each ``(image, mask)`` pair (e.g. :class:`fcnseg.transforms.SegmentationEval`).
        category_ids: COCO category ids to keep, in label order (default: background + the 20 VOC classes for
            COCO 2017, :func:`export_category_ids` for an export).
        remove_images_without_annotations: drop images whose kept annotations cover <= 1000 pixels
            (default: only for COCO 2017's ``train``, as the reference).
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "val",
        transforms: Callable[[Image.Image, Image.Image], Any] | None = None,
        category_ids: list[int | None] | None = None,
        remove_images_without_annotations: bool | None = None,
    ) -> None:
        root = Path(root)
        ann_file, is_2017 = find_coco_annotations(root, split)
        if is_2017:
            image_roots = [root / _SPLITS[split]]
            category_ids = COCO_VOC_CATEGORY_IDS if category_ids is None else category_ids
            if remove_images_without_annotations is None:
                remove_images_without_annotations = split == "train"
        else:
            image_roots = _export_image_roots(ann_file, split)
        self._load(ann_file, image_roots, transforms, category_ids, bool(remove_images_without_annotations))

    @classmethod
    def from_file(
        cls,
        ann_file: str | Path,
        images: str | Path | None = None,
        transforms: Callable[[Image.Image, Image.Image], Any] | None = None,
    ) -> CocoSegmentation:
        """Any COCO instances file with every category it lists; images under ``images`` (default: see
        :func:`_export_image_roots`), every image kept, with or without annotations."""
        ann_file = Path(ann_file)
        if not ann_file.is_file():
            raise FileNotFoundError(f"{ann_file}: no such annotation file")
        roots = [Path(images)] if images is not None else _export_image_roots(ann_file, None)
        self = cls.__new__(cls)
        self._load(ann_file, roots, transforms, None, False)
        return self

    def _load(
        self,
        ann_file: Path,
        image_roots: list[Path],
        transforms: Callable[[Image.Image, Image.Image], Any] | None,
        category_ids: list[int | None] | None,
        remove_images_without_annotations: bool,
    ) -> None:
        if importlib.util.find_spec("pycocotools") is None:
            raise ModuleNotFoundError("COCO masks need pycocotools: pip install 'fcnseg[coco]'")
        self.ann_file, self.image_roots = ann_file, image_roots
        try:
            data = json.loads(ann_file.read_text())
            self._images = {img["id"]: img for img in data["images"]}
            self._anns: dict[int, list[dict[str, Any]]] = {i: [] for i in self._images}
            for ann in data["annotations"]:
                self._anns[ann["image_id"]].append(ann)
            self.category_ids = list(export_category_ids(data) if category_ids is None else category_ids)
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise ValueError(f"{ann_file}: not a COCO instances file ({type(e).__name__}: {e})") from None
        self.categories = VOC_CATEGORIES if self.category_ids == COCO_VOC_CATEGORY_IDS else self._names(data)
        self.transforms = transforms
        self.ids = sorted(self._images)
        if remove_images_without_annotations:
            self.ids = [i for i in self.ids if self._has_valid_annotation(i)]

    def _names(self, data: dict[str, Any]) -> list[str]:
        by_id = {c["id"]: c["name"] for c in data.get("categories", [])}
        return ["__background__"] + [by_id.get(c, f"coco_{c}") for c in self.category_ids[1:]]

    def _has_valid_annotation(self, image_id: int) -> bool:
        """The reference's training filter: some kept annotation, and their areas sum to more than 1000 pixels."""
        anns = [a for a in self._anns[image_id] if a["category_id"] in self.category_ids]
        return bool(anns) and sum(a["area"] for a in anns) > 1000

    def __len__(self) -> int:
        return len(self.ids)

    def image_path(self, i: int) -> Path:
        """Image ``i``'s file: its ``file_name`` under the first image folder that holds it."""
        name = self._images[self.ids[i]]["file_name"]
        for root in self.image_roots:
            if (root / name).is_file():
                return root / name
        raise FileNotFoundError(f"{name}: not found under {', '.join(map(str, self.image_roots))} (see --images)")

    def image_info(self, i: int) -> dict[str, Any]:
        """Image ``i``'s entry in the annotation file (``file_name``, ``height``, ``width``...)."""
        return self._images[self.ids[i]]

    def annotations(self, i: int) -> list[dict[str, Any]]:
        """Image ``i``'s annotations as the file gives them (every category, ids not remapped)."""
        return self._anns[self.ids[i]]

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


def _export_image_roots(ann_file: Path, split: str | None) -> list[Path]:
    """Where an export's ``file_name`` may be relative to, tried in order: the annotation file's folder (Label
    Studio writes ``images/x.jpg`` next to ``result.json``), then ``images/`` beside ``annotations/`` (CVAT), with
    the split's sub-folder first when known."""
    here, up = ann_file.parent, ann_file.parent.parent
    roots = [up / "images" / split] if split else []
    return [*roots, here, up / "images", here / "images", up]
