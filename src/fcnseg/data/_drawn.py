"""The item of a dataset whose label maps are drawn from annotations (COCO, Label Studio), not read from files.

Annotations are drawn at the size their tool showed the image, so the decoded image must have that size: a
mismatch is an error naming the file instead of a mask drawn on the wrong pixels.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from PIL import Image


class DrawnLabels(Protocol):
    """What :func:`drawn_item` uses of a dataset."""

    transforms: Callable[[Image.Image, Image.Image], Any] | None

    def size_mismatch(self, i: int, size: tuple[int, int]) -> str | None: ...

    def target(self, i: int, height: int, width: int) -> Image.Image: ...


def drawn_item(dataset: DrawnLabels, i: int, image: Image.Image) -> Any:
    """``(image, mask)`` of item ``i``, or ``transforms(image, mask)``, with its label map drawn at the size of
    ``image`` (decoded as the dataset's annotations refer to it); ValueError if that is not the size they were
    drawn on."""
    if problem := dataset.size_mismatch(i, image.size):
        raise ValueError(problem)
    mask = dataset.target(i, image.height, image.width)
    if dataset.transforms is not None:
        return dataset.transforms(image, mask)
    return image, mask
