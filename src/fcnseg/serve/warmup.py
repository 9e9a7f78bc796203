"""Warm-up: run the model's paths before the server says it is ready, time them, and decide whether batching pays.

The first call of each path allocates memory, picks kernels and, with ``--fast``, compiles (seconds to
minutes): paid here, not by the first clients. The timings seed the service-time estimate, and batching is
kept only when a batch of two costs clearly less per image than one image alone (on a CPU it often does
not: the cores are already busy with one image).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from PIL import Image

from .batching import MicroBatcher

__all__ = ["BATCH_GAIN", "WarmupReport", "warm_up", "warmup_image"]

BATCH_GAIN = 0.9  # batching is kept when an image in a batch of two costs under 90% of an image alone
REPEATS = 2  # timed calls per path after the first (the minimum is kept: the CPU may be shared)


@dataclass
class WarmupReport:
    """What warm-up measured: seconds for one image and per image in a batch of two, the batch limit chosen, and
    what one uploaded pixel costs in model-input pixels (resizing it, upsampling the mask to it)."""

    pixels: int
    single_s: float
    pair_s: float | None
    max_batch: int
    image_pixel_weight: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        """The log's line: ``one image 0.41 s (270400 model pixels); a batch of two 0.39 s per image: batching off
        (batches of up to 1)``."""
        pair = "" if self.pair_s is None else f"; a batch of two {self.pair_s:.2f} s per image"
        batching = "batching on" if self.max_batch > 1 else "batching off"
        weight = self.image_pixel_weight
        weight = f"; an uploaded pixel costs {weight:.3g} model pixels" if weight else ""
        return (f"one image {self.single_s:.2f} s ({self.pixels} model pixels){pair}: {batching} (batches of up to "
                f"{self.max_batch}){weight}")  # fmt: skip


def warmup_image(width: int, height: int) -> Image.Image:
    """A smooth synthetic photo-like image (gradients), so no model path sees an unusual input."""
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1), (x + y) % 256], -1)
    return Image.fromarray(rgb.astype(np.uint8))


async def _fastest(batcher: MicroBatcher, *calls: list[Any]) -> list[float]:
    """Per call in ``calls``: seconds of the fastest of ``REPEATS`` runs, after an untimed first run of each (which
    may compile). The calls take turns, so load from other jobs on a shared CPU hits each alike."""
    for items in calls:
        await batcher.run_timed(items)
    times = [[await batcher.run_timed(items) for items in calls] for _ in range(REPEATS)]
    return [min(column) for column in zip(*times, strict=True)]


async def warm_up(
    batcher: MicroBatcher, image: Image.Image, pixels: int, max_batch: int, large: Image.Image | None = None
) -> WarmupReport:
    """Warm every batch size the server will use on ``image`` (``pixels`` model-input pixels); set the estimate
    and ``batcher.max_batch`` (1 unless batching pays, else ``max_batch``).

    ``large``, an image the model sees at the same size as ``image`` but with more pixels, prices the work done
    per uploaded pixel (without it, that work is taken to be part of the model's pixels: native resolution).
    """
    pair_call = [[image, image]] if max_batch > 1 else []
    large_call = [[large]] if large is not None else []
    single, *rest = await _fastest(batcher, [image], *pair_call, *large_call)
    pair = rest.pop(0) / 2 if pair_call else None
    weight = 0.0
    if large is not None:
        small_px, large_px = image.width * image.height, large.width * large.height
        per_upload_px = max(rest.pop(0) - single, 0.0) / (large_px - small_px)
        per_model_px = max(single - per_upload_px * small_px, single / 10) / pixels
        weight = per_upload_px / per_model_px
    batcher.service.observe(single, round(pixels + weight * image.width * image.height))
    if pair is not None and pair < BATCH_GAIN * single:
        for n in range(3, max_batch + 1):  # compiled paths compile per batch size
            await batcher.run_timed([image] * n)
    elif max_batch > 1:
        max_batch = 1
    batcher.max_batch = max_batch
    return WarmupReport(pixels, single, pair, max_batch, weight)
