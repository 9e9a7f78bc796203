"""A plain folder dataset: ``ROOT/classes.txt`` and ``ROOT/{split}/{images,masks}/`` with matching stems."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..imageio import load_image

__all__ = ["IMAGE_SUFFIXES", "FolderSegmentation", "read_classes", "read_mask"]

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


def read_mask(path: str | Path) -> Image.Image:
    """A mask PNG as an 8-bit index image (mode "L"); palette PNGs give their indices, not their colours."""
    img = Image.open(path)
    if img.mode == "P":
        return Image.fromarray(np.asarray(img))
    if img.mode not in ("L", "I", "I;16"):
        raise ValueError(f"{path}: mask must be a single-channel index PNG (got mode {img.mode})")
    return Image.fromarray(np.asarray(img).astype(np.uint8)) if img.mode != "L" else img


class FolderSegmentation:
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

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> Any:
        image, mask = load_image(self.images[i]), read_mask(self.masks[i])
        if self.transforms is not None:
            return self.transforms(image, mask)
        return image, mask
