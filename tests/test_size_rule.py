"""One rule for size and tiles in the CLI and the API: whole images at 520, tiles at native resolution."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torch import nn

from fcnseg.predict import Segmenter


class _Counting(nn.Module):
    """Two classes from a 1x1 conv; counts the windows it sees."""

    def __init__(self) -> None:
        super().__init__()
        self.classifier = nn.Sequential(nn.Conv2d(3, 2, 1))
        self.windows = 0

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        self.windows += x.shape[0]
        return {"out": self.classifier(x)}


def test_tiles_run_at_native_resolution_unless_a_size_is_given():
    image = Image.fromarray(np.zeros((100, 150, 3), np.uint8))  # 150x100, as in the issue
    model = _Counting()
    tiled = Segmenter(model, tile=128, optimize="none")  # eager: the counting model itself runs
    assert tiled.preprocess.resize_size is None
    assert tiled.predict(image).mask.shape == (100, 150)
    assert model.windows == 2  # 150 wide: windows at x 0 and 22; not 48 windows of a 520-px upscale
    assert Segmenter(model).preprocess.resize_size == 520  # whole images: the weights' size
    assert Segmenter(model, size=64, tile=32).preprocess.resize_size == 64  # an explicit size is kept
    assert Segmenter(model, size=None).preprocess.resize_size is None
