"""A plain folder dataset: ``ROOT/classes.txt`` and ``ROOT/{split}/{images,masks}/`` with matching stems.

``classes.txt`` names the classes and may map mask values or colours to them: see :mod:`fcnseg.data.classes`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..imageio import IMAGE_SUFFIXES, load_image
from .classes import ClassMap, read_class_map, read_mask_array

__all__ = [
    "IMAGE_SUFFIXES",
    "FolderSegmentation",
    "check_pair_size",
    "exif_turn_hint",
    "image_header_size",
    "read_classes",
    "read_mask",
    "read_mask_array",
]


def read_classes(root: str | Path) -> list[str]:
    """Class names from ``classes.txt``, by class index (plain or mapped form, see :mod:`fcnseg.data.classes`)."""
    return list(read_class_map(root).names)


def read_mask(path: str | Path, classes: ClassMap | None = None, ignore_index: int = 255) -> Image.Image:
    """A mask file as an 8-bit label image (mode "L").

    Without ``classes``, the raw values (palette PNGs give their indices, not their colours) must fit 0..255;
    with them, values are mapped to class indices (``ignore_index`` for ignored ones) and unmapped values raise.
    """
    if classes is not None:
        return Image.fromarray(classes.labels(path, ignore_index))
    a = read_mask_array(path)
    if a.size and (a.min() < 0 or a.max() > 255):
        raise ValueError(f"{path}: label values {a.min()}..{a.max()} do not fit 0..255")
    return Image.fromarray(a.astype(np.uint8))


def image_header_size(path: str | Path) -> tuple[int, int]:
    """(H, W) of an image's stored pixels, read from the header only (datasets do not apply EXIF rotation)."""
    with Image.open(path) as img:
        w, h = img.size
    return h, w


def check_pair_size(image: Image.Image, mask: Image.Image, mask_path: str | Path, image_path: str | Path) -> None:
    """A mask must cover its image's stored pixels one for one; raise naming the mask file otherwise."""
    if image.size == mask.size:
        return
    w, h = image.size
    hint = exif_turn_hint(image_path, image.size, mask.size, "masks")
    raise ValueError(f"{mask_path}: mask is {mask.width}x{mask.height} but its image is {w}x{h}{hint}")


def exif_turn_hint(image_path: str | Path, stored: tuple[int, int], other: tuple[int, int], what: str) -> str:
    """Why ``other`` (W, H) differs from an image's ``stored`` size when it is the image *as displayed* (an EXIF
    orientation that swaps width and height), else "".

    Masks or annotations of that size were drawn on the rotated photo: the message says so, as nothing else would
    tell the two conventions apart. ``what`` names them ("masks", "annotations").
    """
    if other != stored[::-1]:
        return ""
    with Image.open(image_path) as img:
        orientation = img.getexif().get(0x0112, 1)
    if orientation not in (5, 6, 7, 8):
        return ""
    return (
        f"; it matches the image as displayed (EXIF orientation {orientation}), but {what} pair with an image's "
        f"stored pixels, as in COCO and VOC: rotate the {what} to them, or store the photo upright (e.g. "
        "ImageMagick's `mogrify -auto-orient`)"
    )


class ImageMaskPairs:
    """Shared reading of ``self.images[i]`` / ``self.masks[i]`` file pairs; subclasses fill both lists.

    Yields ``(RGB image, "L" index mask)``, or ``transforms(image, mask)`` when set. Images are read as stored,
    without their EXIF rotation, like their masks (as torchvision's references and :mod:`fcnseg.data.coco` do):
    pixels that line up in the two files line up in training. Rotating the photo alone would turn it against
    its mask, and a "rotate 180" JPEG would train on a misaligned pair without any error.
    """

    images: list[Path]
    masks: list[Path]
    classes: ClassMap | None = None  # how mask values map to classes; None: the values are the class indices
    ignore_index: int = 255
    transforms: Callable[[Image.Image, Image.Image], Any] | None = None

    def __len__(self) -> int:
        return len(self.images)

    def image_size(self, i: int) -> tuple[int, int]:
        """(H, W) of image ``i`` read from its header."""
        return image_header_size(self.images[i])

    def labels(self, i: int) -> np.ndarray:
        """The (H, W) uint8 label map of item ``i``, reading only its mask (e.g. to count class pixels)."""
        return np.asarray(read_mask(self.masks[i], self.classes, self.ignore_index))

    def __getitem__(self, i: int) -> Any:
        image = load_image(self.images[i], exif_transpose=False)
        mask = read_mask(self.masks[i], self.classes, self.ignore_index)
        check_pair_size(image, mask, self.masks[i], self.images[i])
        if self.transforms is not None:
            return self.transforms(image, mask)
        return image, mask


class FolderSegmentation(ImageMaskPairs):
    """Pairs ``{split}/images/STEM.*`` with ``{split}/masks/STEM.png``; yields ``(RGB image, mask)``.

    ``transforms(image, mask)`` is applied to each pair (see :mod:`fcnseg.transforms`).
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        transforms: Callable[[Image.Image, Image.Image], Any] | None = None,
        ignore_index: int = 255,
    ) -> None:
        self.root, self.split = Path(root), split
        self.classes = read_class_map(self.root)
        self.categories = list(self.classes.names)
        self.ignore_index = ignore_index
        self.transforms = transforms
        images = self.root / split / "images"
        masks = self.root / split / "masks"
        if not images.is_dir():
            raise FileNotFoundError(f"{images}: no such folder")
        self.images = sorted(p for p in images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        self.masks = [masks / f"{p.stem}.png" for p in self.images]
        missing = [str(m) for m in self.masks if not m.is_file()]
        if missing:
            raise FileNotFoundError(f"{len(missing)} masks missing, e.g. {missing[0]}")
