"""Pascal VOC 2012 segmentation from its devkit layout, optionally with the SBD-augmented training set.

Layout (``root`` may be the folder holding ``VOCdevkit``, ``VOCdevkit`` itself, or ``VOC2012``)::

    VOCdevkit/VOC2012/JPEGImages/{id}.jpg
    VOCdevkit/VOC2012/SegmentationClass/{id}.png        palette PNGs: the index is the class, 255 = void border
    VOCdevkit/VOC2012/ImageSets/Segmentation/{train,val,trainval}.txt

SBD augmentation uses the widespread ``SegmentationClassAug`` layout (the 10,582-image ``train_aug`` set of the
DeepLab papers): index PNGs in ``VOC2012/SegmentationClassAug/`` and, if present, the list
``ImageSets/Segmentation/train_aug.txt``; without that list, ``train_aug`` is every mask in
``SegmentationClassAug`` whose id is not in ``val.txt``. This layout was chosen over reading SBD's MATLAB files so
that one reader (index PNGs) serves every split and scipy is not needed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image

from .categories import VOC_CATEGORIES
from .folder import ImageMaskPairs

__all__ = ["VOCSegmentation", "find_voc_root"]


def find_voc_root(root: str | Path, year: str = "2012") -> Path:
    """The ``VOC{year}`` folder under ``root`` (accepting the parent of ``VOCdevkit``, ``VOCdevkit`` or itself)."""
    root = Path(root)
    for cand in (root / "VOCdevkit" / f"VOC{year}", root / f"VOC{year}", root):
        if (cand / "JPEGImages").is_dir():
            return cand
    raise FileNotFoundError(f"{root}: no VOCdevkit/VOC{year}/JPEGImages found")


class VOCSegmentation(ImageMaskPairs):
    """VOC images with their class masks; yields ``(RGB image, mask)`` or ``transforms(image, mask)``.

    Args:
        root: see the module docstring.
        split: a list in ``ImageSets/Segmentation`` (``train``, ``val``, ``trainval``) or ``train_aug`` (SBD).
        transforms: applied to each ``(image, mask)`` pair.
    """

    categories = VOC_CATEGORIES

    def __init__(
        self,
        root: str | Path,
        split: str = "val",
        transforms: Callable[[Image.Image, Image.Image], Any] | None = None,
        year: str = "2012",
    ) -> None:
        self.root = find_voc_root(root, year)
        self.transforms = transforms
        lists = self.root / "ImageSets" / "Segmentation"
        mask_dir = self.root / ("SegmentationClassAug" if split == "train_aug" else "SegmentationClass")
        if not mask_dir.is_dir():
            raise FileNotFoundError(f"{mask_dir}: missing")
        list_file = lists / f"{split}.txt"
        if list_file.is_file():
            ids = list_file.read_text().split()
        elif split == "train_aug":
            val = set((lists / "val.txt").read_text().split()) if (lists / "val.txt").is_file() else set()
            ids = sorted(p.stem for p in mask_dir.glob("*.png") if p.stem not in val)
        else:
            raise FileNotFoundError(f"{list_file}: missing")
        self.images = [self.root / "JPEGImages" / f"{i}.jpg" for i in ids]
        self.masks = [mask_dir / f"{i}.png" for i in ids]
        missing = [str(p) for pair in zip(self.images, self.masks, strict=True) for p in pair if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"{len(missing)} files of split {split!r} missing, e.g. {missing[0]}")
