"""The generated shapes (``shapes_data``) as Label Studio sees them: a brush labelling config, photo files, and
each photo's ground truth as a Label Studio annotation (brush regions, one per class, drawn as its SDK does)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from shapes_data import _sample

from fcnseg.data.brush import encode_brush_rle

LABELS = ["disc", "square"]  # the shapes' classes 1 and 2
BRUSH_CONFIG = """<View>
  <Image name="image" value="$image"/>
  <BrushLabels name="tag" toName="image">
    <Label value="disc" background="red"/>
    <Label value="square" background="blue"/>
  </BrushLabels>
</View>"""


def shapes_photos(folder: Path, n: int, seed: int = 0, side: int = 64) -> list[tuple[Path, np.ndarray]]:
    """``n`` shapes photos written as PNG files under ``folder``, each with its (H, W) class mask."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        image, mask = _sample(rng, (side, side))
        path = folder / f"shape{seed}-{i:03d}.png"
        Image.fromarray(image).save(path)
        out.append((path, mask))
    return out


def brush_result(mask: np.ndarray) -> list[dict]:
    """A photo's class mask as the ``result`` of a Label Studio annotation: a brush region per class present."""
    h, w = mask.shape
    return [
        {"type": "brushlabels", "from_name": "tag", "to_name": "image", "original_width": w, "original_height": h,
         "value": {"format": "rle", "rle": encode_brush_rle((mask == c).astype(np.uint8) * 255),
                   "brushlabels": [label]}}
        for c, label in enumerate(LABELS, 1) if (mask == c).any()
    ]  # fmt: skip
