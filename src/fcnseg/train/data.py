"""The training data: datasets, per-sample seeded augmentation, the resumable sampler, padding collate and
class weights."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from ..data import get_dataset
from ..transforms import SegmentationEval, SegmentationTrain
from .config import TrainConfig

__all__ = [
    "Augmented",
    "SkipFirst",
    "build_dataset",
    "epoch_loader",
    "class_weights_for",
    "class_weights_from_masks",
    "pad_collate",
    "train_val_datasets",
]


def build_dataset(name: str, root: str | Path, split: str, transforms: Any = None) -> Any:
    """``folder``, ``coco`` or ``voc`` at ``root``; items are ``transforms(image, mask)`` (raw PIL pairs without).

    COCO's ``train`` split applies the reference's filter (images whose VOC-class annotations cover > 1000 px).
    """
    return get_dataset(name, root, split, transforms=transforms)


class Augmented(Dataset):
    """Applies the training transform with a generator seeded by (seed, epoch, index)."""

    def __init__(self, dataset: Any, transform: SegmentationTrain, seed: int) -> None:
        self.dataset, self.transform, self.seed = dataset, transform, seed
        self.epoch = 0  # set before each epoch's loader is created (workers get a copy)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        image, mask = self.dataset[i]
        seed = int(np.random.SeedSequence([self.seed, self.epoch, i]).generate_state(1)[0])
        return self.transform(image, mask, torch.Generator().manual_seed(seed))


class SkipFirst(Sampler[int]):
    """The indices of ``sampler`` after the first ``skip``: a resumed epoch continues where it stopped."""

    def __init__(self, sampler: Sampler[int], skip: int) -> None:
        self.sampler, self.skip = sampler, skip

    def __iter__(self) -> Iterator[int]:
        return itertools.islice(iter(self.sampler), self.skip, None)

    def __len__(self) -> int:
        return len(self.sampler) - self.skip  # type: ignore[arg-type]


def pad_collate(batch: Sequence[tuple[Tensor, Tensor]], ignore_index: int = 255) -> tuple[Tensor, Tensor]:
    """Stack (image, mask) pairs of different sizes: pad bottom/right, images with 0, masks with ``ignore_index``."""
    H = max(img.shape[-2] for img, _ in batch)
    W = max(img.shape[-1] for img, _ in batch)
    images = torch.zeros(len(batch), 3, H, W, dtype=batch[0][0].dtype)
    masks = torch.full((len(batch), H, W), ignore_index, dtype=torch.int64)
    for i, (img, m) in enumerate(batch):
        images[i, :, : img.shape[-2], : img.shape[-1]] = img
        masks[i, : m.shape[-2], : m.shape[-1]] = m
    return images, masks


def class_weights_from_masks(masks: Any, num_classes: int, ignore_index: int = 255) -> Tensor:
    """Median frequency balancing (Eigen & Fergus): ``w_c = median(freq) / freq_c`` over the classes present.

    ``masks`` yields HxW label maps. Classes absent from every mask get weight 1 (they never occur as targets).
    """
    counts = torch.zeros(num_classes, dtype=torch.float64)
    for m in masks:
        t = torch.as_tensor(np.array(m)).reshape(-1).long()
        t = t[(t != ignore_index) & (t >= 0) & (t < num_classes)]
        counts += torch.bincount(t, minlength=num_classes).double()
    if counts.sum() == 0:
        raise ValueError("the training masks hold no labelled pixels")
    freq = counts / counts.sum()
    present = freq > 0
    weights = torch.ones(num_classes, dtype=torch.float64)
    weights[present] = freq[present].median() / freq[present]
    return weights.float()


def _read_class_weights(path: str, num_classes: int) -> Tensor:
    try:
        values = [float(v) for v in Path(path).read_text().split()]
    except OSError as e:
        raise FileNotFoundError(f"{path}: cannot read class weights ({e.strerror})") from None
    except ValueError:
        raise ValueError(f"{path}: class weights must be numbers, one per class") from None
    if len(values) != num_classes or not all(math.isfinite(v) and v >= 0 for v in values):
        raise ValueError(f"{path}: expected {num_classes} finite non-negative class weights, got {len(values)} values")
    return torch.tensor(values)


def class_weights_for(config: TrainConfig, dataset: Any, num_classes: int) -> Tensor | None:
    if config.class_weights is None:
        return None
    if config.class_weights != "auto":
        return _read_class_weights(config.class_weights, num_classes)
    labels = getattr(dataset, "labels", None)  # folder datasets: read the masks only, not the images
    masks = (labels(i) for i in range(len(dataset))) if labels is not None else (m for _, m in dataset)
    return class_weights_from_masks(masks, num_classes, config.ignore_index)


def train_val_datasets(config: TrainConfig) -> tuple[Any, Any]:
    """The raw training pairs (augmented per sample by ``Augmented``) and the validation set (evaluation preset,
    or None without ``val_split``)."""
    train_raw = build_dataset(config.dataset, config.data_root, config.train_split)
    val_set = None
    if config.val_split:
        preset = SegmentationEval(resize_size=config.base_size)
        val_set = build_dataset(config.dataset, config.data_root, config.val_split, preset)
    return train_raw, val_set


def epoch_loader(
    dataset: Augmented, sampler: Sampler[int], skip: int, config: TrainConfig, device: torch.device
) -> DataLoader:
    """One epoch's training batches from this rank's ``skip``-th sample on: a resumed epoch continues where it
    stopped. The loader has a private generator, so it never draws from the global RNG (see ``fcnseg.train``)."""
    return DataLoader(
        dataset,
        batch_size=config.batch_size,
        sampler=SkipFirst(sampler, skip),
        num_workers=config.workers,
        collate_fn=partial(pad_collate, ignore_index=config.ignore_index),
        pin_memory=device.type == "cuda",
        drop_last=True,
        generator=torch.Generator(),
    )
