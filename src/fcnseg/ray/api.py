"""``fcnseg.ray.segment``: masks as columns of a Ray Dataset, for a pipeline that already runs on Ray."""

from __future__ import annotations

from functools import partial
from typing import Any

from .batch import SegmentBatch, decode_row, preset
from .placement import placement, pool_args

__all__ = ["segment"]


def segment(
    dataset: Any,
    *,
    model: str = "fcn_resnet50",
    weights: Any = "DEFAULT",
    size: int | str = "auto",
    workers: int | None = None,
    batch_size: int = 4,
    device: str = "auto",
    probs: bool = False,
    class_share: bool = False,
    optimize: str = "default",
) -> Any:
    """A lazy ``ray.data.Dataset``: ``dataset``'s rows with a ``mask`` column (H x W uint8 class indices at each
    image's size) and ``error`` ("" or why the row has no mask), plus ``probs``/``class_share`` if asked for
    (:class:`fcnseg.ray.SegmentBatch`).

    ``dataset`` has a ``bytes`` column (``ray.data.read_binary_files(..., include_paths=True)``: decoded by fcnseg,
    EXIF orientation applied), an ``image`` column (``ray.data.read_images``) or a ``path`` column of files every
    node can read. Decoding runs in Ray tasks; the model in ``workers`` actors (default: one per GPU, else one per
    node), each loading ``weights`` once. Needs a connected Ray (``ray.init``).
    """
    import ray

    place = placement(ray, workers, device)
    preprocess, _ = preset(model, weights, size)
    options = {"model": model, "weights": weights, "size": size, "batch_size": batch_size, "optimize": optimize}
    return dataset.map(partial(decode_row, preprocess=preprocess)).map_batches(
        SegmentBatch,
        fn_constructor_kwargs={
            "probs": probs, "class_share": class_share, "threads": place.threads, "device": place.device, **options,
        },
        **pool_args(ray, place, batch_size),
    )  # fmt: skip
