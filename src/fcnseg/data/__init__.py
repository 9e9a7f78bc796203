"""Datasets read from their real on-disk formats; each yields ``(PIL RGB image, PIL "L" index mask)``.

Each has ``categories`` (class names by index), ``len()``, indexing, and ``image_size(i) -> (H, W)`` read without
decoding pixels (used to batch images of equal size).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .classes import ClassMap, read_class_map
from .coco import COCO_VOC_CATEGORY_IDS, CocoSegmentation
from .folder import FolderSegmentation, read_classes, read_mask, read_mask_array
from .labelstudio import LabelStudioSegmentation
from .voc import VOCSegmentation

__all__ = [
    "COCO_VOC_CATEGORY_IDS",
    "ClassMap",
    "DATASETS",
    "CocoSegmentation",
    "FolderSegmentation",
    "LabelStudioSegmentation",
    "VOCSegmentation",
    "get_dataset",
    "read_class_map",
    "read_classes",
    "read_mask",
    "read_mask_array",
]

DATASETS = ("coco", "voc", "folder", "label-studio")


def get_dataset(
    name: str,
    root: str | Path | None,
    split: str = "val",
    *,
    ann_file: str | Path | None = None,
    images: str | Path | None = None,
    **kwargs: Any,
) -> Any:
    """``coco``, ``voc`` or ``folder`` at ``root``, or ``label-studio`` (``root``: the JSON export file, images
    under ``images``); ``kwargs`` go to the dataset class (e.g. ``transforms``).

    ``coco`` with ``ann_file`` reads that COCO file (images under ``images``) instead of ``root`` and ``split``.
    """
    if name == "label-studio" and ann_file is None:
        if root is None:
            raise ValueError("the label-studio dataset needs its JSON export (--data-root FILE)")
        return LabelStudioSegmentation(root, split, images=images, **kwargs)
    if ann_file is not None or images is not None:
        if name != "coco" or ann_file is None:
            raise ValueError("an annotation file and image folder (--ann-file, --images) go with the coco dataset")
        return CocoSegmentation.from_file(ann_file, images, **kwargs)
    if root is None:
        raise ValueError(f"the {name} dataset needs a root folder (--data-root)")
    if name == "coco":
        return CocoSegmentation(root, split, **kwargs)
    if name == "voc":
        return VOCSegmentation(root, split, **kwargs)
    if name == "folder":
        return FolderSegmentation(root, split, **kwargs)
    raise ValueError(f"unknown dataset {name!r}; choose one of {list(DATASETS)}")
