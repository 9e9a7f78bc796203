"""A tiny synthetic segmentation dataset in the folder format: coloured shapes on textured backgrounds.

Class 0 background (a noisy green-grey texture with stripes), 1 disc (reddish), 2 square (bluish). Shape colours
vary per image and carry noise, so a model must learn colour ranges, not single values.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ["background", "disc", "square"]


def _sample(rng: np.random.Generator, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w]
    base = rng.uniform(70, 140, size=3) * np.array([0.8, 1.0, 0.8])
    period = rng.uniform(6, 14)
    stripes = 20 * np.sin(2 * np.pi * (xx * rng.uniform(-1, 1) + yy) / period)
    image = base + stripes[..., None] + rng.normal(0, 12, size=(h, w, 3))
    mask = np.zeros((h, w), dtype=np.uint8)
    for cls in rng.permutation([1, 2]):
        r = rng.uniform(0.15, 0.3) * min(h, w)
        cy, cx = rng.uniform(r, h - r), rng.uniform(r, w - r)
        if cls == 1:
            inside = (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2
            colour = np.array([rng.uniform(170, 240), rng.uniform(20, 80), rng.uniform(20, 80)])
        else:
            inside = (np.abs(yy - cy) <= r) & (np.abs(xx - cx) <= r)
            colour = np.array([rng.uniform(20, 80), rng.uniform(30, 90), rng.uniform(170, 240)])
        image[inside] = colour + rng.normal(0, 12, size=(int(inside.sum()), 3))
        mask[inside] = cls
    return np.clip(image, 0, 255).astype(np.uint8), mask


def write_shapes_dataset(root: Path, n_train: int = 16, n_val: int = 6, seed: int = 0) -> Path:
    """Write ``root/classes.txt`` and ``root/{train,val}/{images,masks}``; returns ``root``."""
    rng = np.random.default_rng(seed)
    (root).mkdir(parents=True, exist_ok=True)
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    for split, n in (("train", n_train), ("val", n_val)):
        (root / split / "images").mkdir(parents=True, exist_ok=True)
        (root / split / "masks").mkdir(parents=True, exist_ok=True)
        for i in range(n):
            size = (int(rng.integers(64, 97)), int(rng.integers(64, 97)))
            image, mask = _sample(rng, size)
            Image.fromarray(image).save(root / split / "images" / f"{i:03d}.png")
            Image.fromarray(mask).save(root / split / "masks" / f"{i:03d}.png")
    return root
