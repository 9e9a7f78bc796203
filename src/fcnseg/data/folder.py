"""A plain folder dataset: ``ROOT/classes.txt`` and ``ROOT/{split}/{images,masks}/`` with matching stems."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..imageio import load_image

__all__ = [
    "IMAGE_SUFFIXES",
    "FolderSegmentation",
    "check_pair_size",
    "image_header_size",
    "read_classes",
    "read_mask",
    "read_mask_array",
]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif")


def read_classes(root: str | Path) -> list[str]:
    """Class names from ``classes.txt``, one a line; the line number is the class index."""
    path = Path(root) / "classes.txt"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing (one class name a line, the first being index 0)")
    names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not names:
        raise ValueError(f"{path}: lists no classes")
    return names


def read_mask_array(path: str | Path) -> np.ndarray:
    """A mask file's raw label values as an (H, W) integer array; palette PNGs give their indices, not colours."""
    try:
        with Image.open(path) as img:
            img.load()
            mode, a = img.mode, np.asarray(img)
    except (OSError, SyntaxError, ValueError) as e:
        raise ValueError(f"{path}: unreadable mask ({e})") from None
    if mode not in ("P", "L", "1", "I", "I;16", "I;16B", "I;16L"):
        raise ValueError(
            f"{path}: mask must be a single-channel index or palette PNG (got mode {mode}); "
            "colour-coded masks must be converted to class indices"
        )
    return a.astype(np.int64)


def read_mask(path: str | Path) -> Image.Image:
    """A mask PNG as an 8-bit index image (mode "L"); palette PNGs give their indices, not their colours."""
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
    """A mask must cover its image's stored pixels one for one; raise naming the mask file otherwise.

    A mask the size of the image *as displayed* (an EXIF orientation that swaps width and height) was drawn on
    the rotated photo: the error says so, as nothing else would tell the two conventions apart.
    """
    if image.size == mask.size:
        return
    w, h = image.size
    hint = ""
    with Image.open(image_path) as img:
        orientation = img.getexif().get(0x0112, 1)
    if orientation in (5, 6, 7, 8) and mask.size == (h, w):
        hint = (
            f"; it matches the image as displayed (EXIF orientation {orientation}), but masks pair with an image's "
            "stored pixels, as in COCO and VOC: rotate the mask to them or remove the image's orientation tag"
        )
    raise ValueError(f"{mask_path}: mask is {mask.width}x{mask.height} but its image is {w}x{h}{hint}")


class ImageMaskPairs:
    """Shared reading of ``self.images[i]`` / ``self.masks[i]`` file pairs; subclasses fill both lists.

    Yields ``(RGB image, "L" index mask)``, or ``transforms(image, mask)`` when set. Images are read as stored,
    without their EXIF rotation, like their masks (as torchvision's references and :mod:`fcnseg.data.coco` do):
    pixels that line up in the two files line up in training. Rotating the photo alone would turn it against
    its mask, and a "rotate 180" JPEG would train on a misaligned pair without any error.
    """

    images: list[Path]
    masks: list[Path]
    transforms: Callable[[Image.Image, Image.Image], Any] | None = None

    def __len__(self) -> int:
        return len(self.images)

    def image_size(self, i: int) -> tuple[int, int]:
        """(H, W) of image ``i`` read from its header."""
        return image_header_size(self.images[i])

    def __getitem__(self, i: int) -> Any:
        image, mask = load_image(self.images[i], exif_transpose=False), read_mask(self.masks[i])
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
        self.root = Path(root)
        self.categories = read_classes(self.root)
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
