"""The two steps a Ray Dataset runs per image: :func:`decode_row` in Ray tasks, :class:`SegmentBatch` in actors.

``decode_row`` reads a row's ``path``, ``bytes`` or ``image`` column with the decoder every engine uses
(:func:`fcnseg.predict.decode_input`: EXIF orientation, any mode to RGB, bombs refused) and preprocesses it, so
the actors holding the model (GPU ones above all) spend no time on decoding. ``SegmentBatch`` loads the model
once per actor and segments a batch the way the local engine does (:meth:`fcnseg.predict.Segmenter._run_group`:
same-size images share a forward pass; a batch out of memory is retried an image at a time). A row that cannot
be read or segmented keeps going as a row whose ``error`` column says why, never as an exception that would stop
the whole dataset.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from fcnseg.imageio import ImageDecodeError
from fcnseg.models import get_model_weights, load_weights
from fcnseg.predict import Segmenter, decode_input, describe_size, input_size
from fcnseg.results import SegmentationResult
from fcnseg.transforms import IMAGENET_MEAN, IMAGENET_STD, SemanticSegmentation
from fcnseg.weights import LoadedWeights, WeightsEnum

__all__ = ["SegmentBatch", "decode_row", "preset"]

NO_IMAGE = np.zeros((0, 0, 3), np.uint8)  # the image of a row that could not be decoded (same ndim as the others)
NO_MASK = np.zeros((0, 0), np.uint8)


def _label(row: dict[str, Any]) -> str:
    """How messages name a row: its path when it has one."""
    return str(row.get("path") or "<image>")


def decode_row(row: dict[str, Any], *, preprocess: SemanticSegmentation) -> dict[str, Any]:
    """One row -> the row plus ``image`` (H, W, 3 uint8), ``x`` (3, h, w float32, the model's input) and ``error``
    ("" when decoded). The source is the ``bytes`` column (``read_binary_files``), else ``image`` (``read_images``,
    an H x W x C array), else the file at ``path``."""
    if "bytes" in row:
        found = decode_input(bytes(row["bytes"]), preprocess, name=_label(row))
    elif "image" in row:
        found = _from_array(np.asarray(row["image"]), preprocess, _label(row))
    else:
        found = decode_input(str(row["path"]), preprocess)  # a path or a URL (fcnseg.storage)
    if isinstance(found, str):
        return {**row, "image": NO_IMAGE, "x": np.zeros((3, 0, 0), np.float32), "error": found}
    image, x = found
    return {**row, "image": np.asarray(image), "x": x.numpy(), "error": ""}


def _from_array(pixels: np.ndarray, preprocess: SemanticSegmentation, label: str) -> tuple[Image.Image, Any] | str:
    if pixels.ndim == 2:
        pixels = np.repeat(pixels[..., None], 3, axis=2)
    if pixels.ndim != 3 or pixels.shape[2] not in (3, 4) or pixels.dtype != np.uint8:
        return f"{label}: expected an H x W x 3 (or 4) uint8 image, got {pixels.dtype} {pixels.shape}"
    image = Image.fromarray(pixels[..., :3])
    return image, preprocess(image)


class SegmentBatch:
    """A callable class for ``Dataset.map_batches``: rows decoded by :func:`decode_row` -> their masks.

    Constructed once per actor (``fn_constructor_kwargs``: the keywords of :class:`fcnseg.predict.Segmenter`,
    plus ``threads``, torch's CPU threads in this actor). Adds ``mask`` (H, W uint8 class indices at the image's
    size), with ``probs=True`` ``probs`` (K, H, W float16 softmax), with ``class_share=True`` ``class_share`` (K
    float32 pixel shares, in the order of :attr:`categories`); drops ``x``. A row that fails has ``error`` set and
    an empty mask.
    """

    def __init__(
        self, *, probs: bool = False, class_share: bool = False, threads: int | None = None, **segmenter: Any
    ) -> None:
        if threads:  # Ray sets OMP_NUM_THREADS to the actor's CPU request; the model may use more cores than that
            torch.set_num_threads(threads)
        self.segmenter = Segmenter(**segmenter)
        self.categories = self.segmenter.categories
        self.probs, self.class_share = probs, class_share
        self.confidence = False  # per-pixel confidence, for the mean per class that written JSON reports

    def results(self, batch: dict[str, np.ndarray]) -> list[SegmentationResult | str]:
        """Per row of ``batch``: its result, or the one-line reason it has none."""
        n = len(batch["x"])
        labels = [Path(str(p)) for p in batch["path"]] if "path" in batch else [Path("<image>")] * n
        found: list[SegmentationResult | str] = [str(e) for e in batch["error"]]
        groups: dict[tuple[int, ...], list[tuple[int, Image.Image, torch.Tensor]]] = {}
        for i in range(n):
            if not found[i]:
                x = torch.from_numpy(np.array(batch["x"][i]))  # a writable copy
                groups.setdefault(tuple(x.shape), []).append((i, Image.fromarray(batch["image"][i]), x))
        for group in groups.values():  # answers come in the group's order
            answers = self.segmenter._run_group(labels, group, self.probs, self.confidence)
            for (i, _, _), (_, result) in zip(group, answers, strict=True):
                found[i] = str(result) if isinstance(result, ImageDecodeError) else result
        return found

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        results = self.results(batch)
        out = {k: v for k, v in batch.items() if k != "x"}
        out["error"] = np.array([r if isinstance(r, str) else "" for r in results], dtype=object)
        out["mask"] = _column([NO_MASK if isinstance(r, str) else r.mask for r in results])
        if self.probs:
            empty = np.zeros((len(self.categories), 0, 0), np.float16)
            out["probs"] = _column([empty if isinstance(r, str) else r.probs.astype(np.float16) for r in results])
        if self.class_share:
            k = len(self.categories)
            out["class_share"] = np.stack([
                np.zeros(k, np.float32) if isinstance(r, str) else _shares(r.mask, k) for r in results
            ])  # fmt: skip
        return out


def _shares(mask: np.ndarray, k: int) -> np.ndarray:
    return (np.bincount(mask.reshape(-1), minlength=k)[:k] / max(mask.size, 1)).astype(np.float32)


def _column(arrays: list[np.ndarray]) -> np.ndarray:
    """Arrays of different shapes as one column (an object array, which Ray stores as a variable-shaped tensor)."""
    column = np.empty(len(arrays), dtype=object)
    column[:] = arrays
    return column


def preset(model: str, weights: Any, size: Any = "auto", tiled: bool = False) -> tuple[SemanticSegmentation, str]:
    """The preprocessing the actors' model expects (:func:`fcnseg.predict.input_size`, the one size rule) and the
    line that says so, worked out on the driver for the decoding tasks. Only ``size="auto"`` needs the weights: a
    registry entry's size is in its metadata, a checkpoint's in the file (read here once)."""
    loaded = weights if isinstance(weights, LoadedWeights) else None
    if size == "auto" and not tiled and weights is not None and loaded is None:
        found = get_model_weights(model).resolve(weights)
        if isinstance(found, WeightsEnum):  # no download on the driver
            resize = found.meta["preprocessing"]["resize_size"]
            return _preset(resize), describe_size(resize, "the official weights' size")
        loaded = load_weights(model, found)
    resize, reason = input_size(size, loaded, tiled=tiled)
    return _preset(resize), describe_size(resize, reason)


def _preset(resize: int | None) -> SemanticSegmentation:
    return SemanticSegmentation(resize_size=resize, mean=IMAGENET_MEAN, std=IMAGENET_STD)
