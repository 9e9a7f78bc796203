"""One image's prediction, :class:`SegmentationResult`: the mask, and what it says (classes, overlay, statistics).

Overlays and class statistics run a band of rows at a time, so a 24 MP result needs no full-size temporaries.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from .transforms import label_to_image, overlay

__all__ = ["BAND_PIXELS", "SegmentationResult"]

BAND_PIXELS = 1 << 20  # pixels per band for overlays and class statistics


def _bands(height: int, width: int) -> list[tuple[int, int]]:
    """Row ranges [top, bottom) of about :data:`BAND_PIXELS` pixels each, covering an image top to bottom."""
    step = max(1, BAND_PIXELS // max(width, 1))
    return [(top, min(height, top + step)) for top in range(0, height, step)]


@dataclass
class SegmentationResult:
    """One image's prediction: ``mask`` (H, W) uint8 class indices at the input's size."""

    mask: np.ndarray
    categories: list[str]
    probs: np.ndarray | None = None  # (K, H, W) float32 softmax, when asked for
    confidence: np.ndarray | None = None  # (H, W) float32 probability of the chosen class, when asked for
    image: Image.Image | None = field(default=None, repr=False)
    entropy: np.ndarray | None = field(default=None, repr=False)  # (H, W) float32 nats, with confidence

    def doubt(self) -> float:
        """How unsure the model is of this image, 0 (certain) to 1 (uniform): the mean over pixels of each pixel's
        entropy divided by its largest possible value, ``log K``. Entropy weighs the whole class distribution (not
        only the winner, as 1 - confidence does), its mean does not grow with image size, and the division makes
        models of different class counts comparable. Needs a result computed with ``confidence=True``."""
        if self.entropy is None:
            raise ValueError("doubt needs the per-pixel entropy: segment with confidence=True")
        k = len(self.categories)
        return 0.0 if k < 2 or self.entropy.size == 0 else float(self.entropy.mean(dtype=np.float64) / np.log(k))

    @property
    def classes(self) -> list[str]:
        """Names of the classes present, largest area first (two classes may share a name: see ``class_stats``)."""
        return [s["name"] for s in self.class_stats()]

    def to_image(self) -> Image.Image:
        """The mask as a palette PNG-ready PIL image (indices kept, seed colours)."""
        return label_to_image(self.mask)

    def overlay(self, alpha: float = 0.5) -> Image.Image:
        """Class colours blended over the image, a band of rows at a time (a 24 MP overlay in one go needs GBs)."""
        if self.image is None:
            raise ValueError("this result holds no image to overlay on")
        h, w = self.mask.shape
        out = Image.new("RGB", (w, h))
        for top, bottom in _bands(h, w):
            box = (0, top, w, bottom)
            out.paste(overlay(self.image.crop(box), self.mask[top:bottom], alpha), box)
        return out

    def class_stats(self) -> list[dict[str, Any]]:
        """One entry per class present, largest first: ``index``, ``name``, ``pixels``, ``share`` and
        ``mean_confidence``. A list identified by ``index``, not a dict by name: two classes may share a name."""
        counts, conf_sum = np.zeros(len(self.categories), np.int64), np.zeros(len(self.categories))
        for top, bottom in _bands(*self.mask.shape):  # bincount copies its input to int64 and float64
            flat = self.mask[top:bottom].reshape(-1)
            counts += np.bincount(flat, minlength=len(self.categories))
            if self.confidence is not None:
                weights = self.confidence[top:bottom].reshape(-1)
                conf_sum += np.bincount(flat, weights=weights, minlength=len(self.categories))
        total = max(int(self.mask.size), 1)
        stats = []
        for i in np.argsort(-counts, kind="stable"):
            if counts[i] == 0:
                break
            stats.append({
                "index": int(i),
                "name": self.categories[i],
                "pixels": int(counts[i]),
                "share": float(counts[i] / total),
                "mean_confidence": None if self.confidence is None else float(conf_sum[i] / counts[i]),
            })  # fmt: skip
        return stats
