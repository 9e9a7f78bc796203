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
rasterization but two rules of its own. Its categories: label 0 is ``__background__``, then every category of the
file by ascending id (ids need not start at 1 or be contiguous, Label Studio's start at 0; unused categories keep
their label, so every split of an export gets the same labels). Its overlaps: tools write annotations in drawing
order and show the later one on top (a car drawn on a road), so an annotation listed later paints over earlier
ones instead of the overlap becoming 255. Every image is kept, with or without annotations. Images are found by
their ``file_name`` under the folders :func:`_export_image_roots` lists.

Either way labels are 8-bit with 255 as the ignore label, so a file with more than 254 categories is refused
(naming the file) rather than having its 255th category silently ignored; an image whose stored size differs
from the ``width``/``height`` its annotations were drawn on is an error naming the file (and, when the two differ
by an EXIF turn, saying so); a file that is not a COCO instances file is a one-line error naming it.
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
from ._drawn import drawn_item
from .categories import VOC_CATEGORIES
from .folder import exif_turn_hint

__all__ = [
    "COCO_VOC_CATEGORY_IDS",
    "CocoSegmentation",
    "annotation_mask",
    "check_segmentation",
    "coco_target",
    "export_category_ids",
    "filter_and_remap",
    "find_coco_annotations",
]

# COCO category ids of the 20 VOC classes, in VOC order; 0 stands for background (no COCO category has id 0).
COCO_VOC_CATEGORY_IDS = [0, 5, 2, 16, 9, 44, 6, 3, 17, 62, 21, 67, 18, 19, 4, 1, 64, 20, 63, 7, 72]

_SPLITS = {"train": "train2017", "val": "val2017"}
_MAX_LABELS = 255  # labels 0..254 fit a uint8 mask beside the ignore label 255


def filter_and_remap(anns: list[dict[str, Any]], category_ids: list[int | None]) -> list[dict[str, Any]]:
    """Annotations of the kept categories, with ``category_id`` replaced by its index in ``category_ids``."""
    kept = [a for a in anns if a["category_id"] in category_ids]
    return [{**a, "category_id": category_ids.index(a["category_id"])} for a in kept]


def annotation_mask(segmentation: list | dict, height: int, width: int) -> np.ndarray:
    """One annotation's pixels as an (H, W) bool array: union of its polygons, or its (un)compressed RLE."""
    from pycocotools import mask as coco_mask

    check_segmentation(segmentation, height, width)
    if isinstance(segmentation, dict):  # RLE; COCO stores crowd regions this way, with uncompressed counts
        rle = segmentation
        if isinstance(rle["counts"], list):
            rle = coco_mask.frPyObjects(rle, *rle["size"])
        elif isinstance(rle["counts"], str):
            rle = {"size": rle["size"], "counts": rle["counts"].encode()}
        return coco_mask.decode(rle).astype(bool)
    polygons = [[float(v) for v in p] for p in segmentation if len(p) >= 6]  # fewer than 3 points enclose nothing
    if not polygons:
        return np.zeros((height, width), dtype=bool)
    return coco_mask.decode(coco_mask.frPyObjects(polygons, height, width)).any(axis=2)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and np.isfinite(v)


def _is_polygon(p: Any) -> bool:
    return isinstance(p, list) and len(p) % 2 == 0 and all(_is_number(v) for v in p)


def check_segmentation(segmentation: Any, height: int, width: int) -> None:
    """ValueError saying what is wrong unless ``segmentation`` is a list of polygons or an RLE of this image size
    (checked without rasterizing, so ``fcnseg data check`` can afford it on every annotation)."""
    if isinstance(segmentation, dict):
        _check_rle(segmentation, height, width)
    elif not isinstance(segmentation, list) or not all(_is_polygon(p) for p in segmentation):
        raise ValueError("segmentation is neither RLE nor a list of [x1, y1, x2, y2, ...] polygons")


def _check_rle(rle: dict, height: int, width: int) -> None:
    size, counts = rle.get("size"), rle.get("counts")
    if not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) for v in size)):
        raise ValueError(f"RLE size {size!r} is not [height, width]")
    if size != [height, width]:
        raise ValueError(f"RLE of size {size[1]}x{size[0]} on a {width}x{height} image")
    if isinstance(counts, list):
        if not all(isinstance(c, int) and c >= 0 for c in counts) or sum(counts) != height * width:
            raise ValueError(f"RLE counts must be non-negative run lengths summing to {height}x{width} pixels")
    elif not isinstance(counts, str) or not counts.isascii():
        raise ValueError("RLE counts are neither run lengths nor a compressed (ASCII) string")
    else:
        runs = _compressed_runs(counts)
        if runs is None or any(c < 0 for c in runs) or sum(runs) != height * width:
            raise ValueError(f"RLE counts string does not decode to run lengths summing to {height}x{width} pixels")


def _compressed_runs(counts: str) -> list[int] | None:
    """The run lengths of COCO's compressed RLE string (pycocotools' ``rleFrString``: 5 bits a character, a
    continuation bit, runs after the second stored as differences); None when the string ends mid-number."""
    runs: list[int] = []
    p = 0
    while p < len(counts):
        x, k, more = 0, 0, True
        while more:
            if p == len(counts):
                return None
            c = ord(counts[p]) - 48
            if not 0 <= c < 64:
                return None
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p, k = p + 1, k + 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        runs.append(x + (runs[-2] if len(runs) > 2 else 0))
    return runs


def coco_target(anns: list[dict[str, Any]], height: int, width: int, *, overlaps_ignored: bool = True) -> np.ndarray:
    """(H, W) uint8 label map from remapped annotations.

    ``overlaps_ignored`` (COCO 2017's protocol): max class over instances, 255 where instances overlap.
    Otherwise (an annotation tool's export) each annotation paints over the ones listed before it.
    """
    target = np.zeros((height, width), dtype=np.uint8)
    if not anns:
        return target
    masks = np.stack([annotation_mask(a.get("segmentation"), height, width) for a in anns])  # (N, H, W)
    cats = np.array([a["category_id"] for a in anns], dtype=np.uint8)
    if not overlaps_ignored:
        for m, c in zip(masks, cats, strict=True):
            target[m] = c
        return target
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
        self.overlaps_ignored = is_2017

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
        self.overlaps_ignored = False
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
            data = json.loads(ann_file.read_bytes())
            self._images, self._anns, self._categories = _parse_instances(data)
        except ValueError as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            raise ValueError(f"{ann_file}: not a COCO instances file ({e})") from None
        self.category_ids = list(export_category_ids(data) if category_ids is None else category_ids)
        if len(self.category_ids) > _MAX_LABELS:
            raise ValueError(
                f"{ann_file}: {len(self.category_ids) - 1} categories, but masks are 8-bit with 255 as the ignore "
                f"label, so at most {_MAX_LABELS - 1} categories fit beside the background"
            )
        self.categories = VOC_CATEGORIES if self.category_ids == COCO_VOC_CATEGORY_IDS else self._names()
        self.transforms = transforms
        self.ids = sorted(self._images)
        if remove_images_without_annotations:
            self.ids = [i for i in self.ids if self._has_valid_annotation(i)]

    @property
    def file_category_ids(self) -> set[int]:
        """The ids of every category the annotation file lists (kept or not)."""
        return set(self._categories)

    def _names(self) -> list[str]:
        return ["__background__"] + [self._categories.get(c, f"coco_{c}") for c in self.category_ids[1:]]

    def _has_valid_annotation(self, image_id: int) -> bool:
        """The reference's training filter: some kept annotation, and their areas sum to more than 1000 pixels."""
        anns = [a for a in self._anns[image_id] if a["category_id"] in self.category_ids]
        return bool(anns) and sum(a.get("area", 0) if _is_number(a.get("area")) else 0 for a in anns) > 1000

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
            return Image.fromarray(coco_target(anns, height, width, overlaps_ignored=self.overlaps_ignored))
        except ValueError as e:
            raise ValueError(f"{self.image_path(i)}: {e}") from None

    def size_mismatch(self, i: int, stored: tuple[int, int]) -> str | None:
        """None if image ``i``'s stored (W, H) is the size the annotation file declares; otherwise why not, naming
        the file (annotations drawn on an EXIF-rotated photo show up here, and the message says so)."""
        info = self._images[self.ids[i]]
        declared = (info["width"], info["height"])
        if stored == declared:
            return None
        path = self.image_path(i)
        hint = exif_turn_hint(path, stored, declared, "annotations")
        w, h = declared
        return f"{path}: stored as {stored[0]}x{stored[1]} but the annotation file declares {w}x{h}{hint}"

    def __getitem__(self, i: int) -> Any:
        return drawn_item(self, i, load_image(self.image_path(i), exif_transpose=False))


def _parse_instances(data: Any) -> tuple[dict[int, dict], dict[int, list[dict]], dict[int, str]]:
    """(images by id, annotations by image id in file order, category names by id) of a COCO instances file.

    Checks what the readers rely on, so that a malformed file is one error saying what is wrong instead of a
    traceback later: the three lists, integer ids, image sizes, annotations of listed images.
    """
    if not isinstance(data, dict):
        raise ValueError(f"the top level is a {type(data).__name__}, not an object")
    for key in ("images", "annotations"):
        if not isinstance(data.get(key), list):
            raise ValueError(f"no {key!r} list")
    if not isinstance(data.get("categories", []), list):
        raise ValueError("'categories' is not a list")
    images: dict[int, dict] = {}
    for img in data["images"]:
        _require(img, "image", {"id": int, "file_name": str, "width": int, "height": int})
        if img["width"] <= 0 or img["height"] <= 0:
            raise ValueError(f"image {img['id']}: size {img['width']}x{img['height']}")
        if not img["file_name"] or "\x00" in img["file_name"]:
            raise ValueError(f"image {img['id']}: file_name {img['file_name']!r} names no file")
        if img["id"] in images:  # which of the two would its annotations belong to?
            raise ValueError(f"image id {img['id']} is listed twice")
        images[img["id"]] = img
    categories: dict[int, str] = {}
    for cat in data.get("categories", []):
        _require(cat, "category", {"id": int, "name": str})
        if cat["id"] in categories:
            raise ValueError(f"category id {cat['id']} is listed twice")
        categories[cat["id"]] = cat["name"]
    anns: dict[int, list[dict]] = {i: [] for i in images}
    for ann in data["annotations"]:
        _require(ann, "annotation", {"image_id": int, "category_id": int})
        if ann["image_id"] not in images:
            raise ValueError(
                f"annotation {ann.get('id')!r} is on image {ann['image_id']}, which 'images' does not list"
            )
        anns[ann["image_id"]].append(ann)
    return images, anns, categories


def _require(entry: Any, what: str, fields: dict[str, type]) -> None:
    """ValueError unless ``entry`` is an object whose ``fields`` have their types (bool is not an int here)."""
    if not isinstance(entry, dict):
        raise ValueError(f"each {what} must be an object, not a {type(entry).__name__}")
    for key, kind in fields.items():
        value = entry.get(key)
        if not isinstance(value, kind) or isinstance(value, bool):
            got = "missing" if key not in entry else repr(value)[:40]
            raise ValueError(f"{what} {repr(entry.get('id'))[:40]}: {key!r} is {got}, not {kind.__name__}")


def _export_image_roots(ann_file: Path, split: str | None) -> list[Path]:
    """Where an export's ``file_name`` may be relative to, tried in order: the annotation file's folder (Label
    Studio writes ``images/x.jpg`` next to ``result.json``), then ``images/`` beside ``annotations/`` (CVAT), with
    the split's sub-folder first when known."""
    here, up = ann_file.parent, ann_file.parent.parent
    roots = [up / "images" / split] if split else []
    return [*roots, here, up / "images", here / "images", up]
