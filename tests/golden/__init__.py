"""torchvision's FCN outputs for deterministic weights: the reference for numerical parity, kept in the repo.

``{name}.expected.pt`` holds a normalized input (1, 3, 75, 113) and torchvision 0.28's ``out`` and ``aux`` for it
(each (1, 21, 75, 113), fp32, eval mode), cut from the project's shared golden fixtures. The odd size exercises the
stride-8 feature map, the dilation and the bilinear upsampling (``align_corners=False``).
``{name}.keys.txt`` is torchvision's state-dict manifest, one ``key dtype shape`` line per tensor, in order.

The weights are not stored: :func:`state_dict` regenerates them from the fixtures' specification. Each tensor is
drawn from NumPy's legacy ``RandomState`` (a frozen stream, the same on every machine and NumPy version) seeded with
the CRC32 of its key:

- ``running_var``: uniform [0.5, 1.5); ``running_mean``: normal(0, 0.1)
- 1-d ``weight`` (batch-norm scale): uniform [0.6, 1.2); ``bias``: normal(0, 0.01)
- other weights (convolutions): normal(0, sqrt(1 / fan_in)), fan_in = product of all but the first dimension
- ``num_batches_tracked`` (int64): zeros
"""

from __future__ import annotations

import math
import zlib
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent


def manifest(name: str) -> dict[str, tuple[list[int], str]]:
    """torchvision's state-dict keys in order, each with its shape and dtype name."""
    out = {}
    for line in (HERE / f"{name}.keys.txt").read_text().splitlines():
        key, dtype, shape = line.split(" ")
        out[key] = ([int(n) for n in shape.split("x")] if shape else [], dtype)
    return out


def _draw(key: str, shape: list[int]) -> np.ndarray:
    rng = np.random.RandomState(zlib.crc32(key.encode()))
    leaf = key.rsplit(".", 1)[-1]
    n = math.prod(shape)
    if leaf == "running_var":
        values = rng.uniform(0.5, 1.5, n)
    elif leaf == "running_mean":
        values = rng.normal(0.0, 0.1, n)
    elif leaf == "weight" and len(shape) == 1:
        values = rng.uniform(0.6, 1.2, n)
    elif leaf == "bias":
        values = rng.normal(0.0, 0.01, n)
    else:
        values = rng.normal(0.0, math.sqrt(1.0 / math.prod(shape[1:])), n)
    return values.reshape(shape).astype(np.float32)


def state_dict(name: str) -> dict[str, torch.Tensor]:
    """The deterministic weights the expected outputs were computed with, in torchvision's layout."""
    return {
        key: torch.zeros(shape, dtype=torch.int64) if dtype == "int64" else torch.from_numpy(_draw(key, shape))
        for key, (shape, dtype) in manifest(name).items()
    }


def expected(name: str) -> dict[str, torch.Tensor]:
    """``{"input", "out", "aux"}`` computed by torchvision for :func:`state_dict`'s weights."""
    return torch.load(HERE / f"{name}.expected.pt", weights_only=True)
