"""Scoring a model on a dataset: one confusion matrix over every pixel of every image (the published protocol).

Batches hold images of one size only, so nothing is padded and a prediction never depends on the batch it
travelled in (padding the input would change the convolutions near the borders). Under torch.distributed each
rank scores a disjoint share of the images, with no sampler padding, and the counts are summed.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .metrics import ConfusionMatrix
from .transforms import SegmentationEval, resized_size
from .upsample import postprocess

__all__ = [
    "EvalRun",
    "evaluate",
    "evaluate_dataset",
    "format_table",
    "plot_confusion_matrix",
    "shard",
    "size_grouped_batches",
    "summarize",
]

Batch = tuple[Tensor | Sequence[Tensor], Tensor | Sequence[Tensor]]


def _same_size_groups(images: Tensor | Sequence[Tensor], targets: Tensor | Sequence[Tensor]) -> Iterator[Batch]:
    """A stacked batch as is; a list of per-image tensors as stacked groups of equal image and target sizes."""
    if isinstance(images, Tensor):
        yield images, targets
        return
    groups: dict[tuple[Any, Any], list[int]] = {}
    for i, (x, t) in enumerate(zip(images, targets, strict=True)):
        groups.setdefault((tuple(x.shape), tuple(t.shape)), []).append(i)
    for idx in groups.values():
        yield torch.stack([images[i] for i in idx]), torch.stack([targets[i] for i in idx])


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    loader: Iterable[Batch],
    num_classes: int,
    device: torch.device | str = "cpu",
    ignore_index: int = 255,
    progress: Callable[[int], object] | None = None,
) -> ConfusionMatrix:
    """Run ``model`` over ``(images, targets)`` batches; return the confusion matrix summed over all of them.

    A batch is either stacked tensors ``(N, 3, h, w)`` / ``(N, H, W)`` or two lists of per-image tensors of
    any sizes (grouped by size here). Logits are upsampled to the target's size when it differs from the input's
    (scoring at native resolution). ``progress(n)`` is called with the number of images after each batch.
    Under torch.distributed the counts are summed over ranks before returning.
    """
    model.eval()
    cm = ConfusionMatrix(num_classes, ignore_index)
    for images, targets in loader:
        for x, t in _same_size_groups(images, targets):
            logits = model(x.to(device))["out"]  # (N, K, h, w)
            logits = postprocess(logits, tuple(t.shape[-2:]))  # (N, K, H, W); a no-op when sizes agree
            cm.update(t, logits.argmax(1).cpu())
        if progress is not None:
            progress(len(images))
    cm.all_reduce()
    return cm


def size_grouped_batches(keys: Sequence[Hashable], batch_size: int) -> list[list[int]]:
    """Positions of ``keys`` cut into batches of equal key, at most ``batch_size`` each, in first-seen order."""
    if batch_size < 1:
        raise ValueError(f"batch size must be at least 1, got {batch_size}")
    groups: dict[Hashable, list[int]] = {}
    for i, k in enumerate(keys):
        groups.setdefault(k, []).append(i)
    return [idx[j : j + batch_size] for idx in groups.values() for j in range(0, len(idx), batch_size)]


def shard(n: int, rank: int, world_size: int) -> range:
    """The items of rank ``rank``: every ``world_size``-th one, so each item goes to exactly one rank."""
    return range(rank, n, world_size)


class _LoadError(str):
    """Stands in for a sample that failed to load, so the main process raises its one-line message."""


class _EvalSamples:
    """A dataset of raw ``(image, mask)`` pairs seen through the eval preset; failures become :class:`_LoadError`."""

    def __init__(self, dataset: Any, transform: SegmentationEval) -> None:
        self.dataset, self.transform = dataset, transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor] | _LoadError:
        try:
            return self.transform(*self.dataset[i])
        except (ValueError, OSError) as e:  # ImageDecodeError and bad masks are ValueErrors naming their file
            return _LoadError(str(e))


def _collate(samples: list[Any]) -> Any:
    bad = [s for s in samples if isinstance(s, _LoadError)]
    if bad:
        return bad[0]
    return [s[0] for s in samples], [s[1] for s in samples]


def _raise_failures(loader: Iterable[Any]) -> Iterator[Batch]:
    for batch in loader:
        if isinstance(batch, _LoadError):
            raise ValueError(str(batch))
        yield batch


@dataclass
class EvalRun:
    """What :func:`evaluate_dataset` measured: the matrix (summed over ranks), image count and wall time."""

    confusion: ConfusionMatrix
    num_images: int
    seconds: float

    @property
    def images_per_s(self) -> float:
        return self.num_images / self.seconds if self.seconds > 0 else float("nan")


def evaluate_dataset(
    model: nn.Module,
    dataset: Any,
    num_classes: int,
    *,
    resize_size: int | None = 520,
    native: bool = False,
    batch_size: int = 1,
    limit: int | None = None,
    device: torch.device | str = "cpu",
    ignore_index: int = 255,
    workers: int = 0,
    progress: bool = False,
) -> EvalRun:
    """Score ``model`` on a dataset of raw ``(PIL image, PIL mask)`` pairs with the eval preset.

    Images are resized so their shorter side is ``resize_size`` (the reference preset); the mask too, unless
    ``native``, where the logits are upsampled to the mask's original size instead. ``limit`` keeps the first
    images. Datasets with ``image_size(i) -> (H, W)`` are batched by size up front; others still work, batched
    in order and split by size per batch. Under torch.distributed, rank r scores images r, r + K, ...
    """
    import torch.distributed as dist
    from torch.utils.data import DataLoader
    from tqdm import tqdm

    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    n = len(dataset) if limit is None else min(limit, len(dataset))
    mine = list(shard(n, rank, world))
    keys = [_input_key(_header_size(dataset, i), resize_size, native) for i in mine]
    batches = [[mine[j] for j in b] for b in size_grouped_batches(keys, batch_size)]
    samples = _EvalSamples(dataset, SegmentationEval(resize_size=resize_size, resize_mask=not native))
    loader = DataLoader(samples, batch_sampler=batches, collate_fn=_collate, num_workers=workers)
    start = time.perf_counter()
    with tqdm(total=n, unit="img", desc="eval", disable=not progress or rank != 0, dynamic_ncols=True) as bar:
        # rank 0 stands for all: the ranks hold equal shares and move at about the same pace
        advance = lambda k: bar.update(min(k * world, n - bar.n))  # noqa: E731
        cm = evaluate(model, _raise_failures(loader), num_classes, device, ignore_index, advance)
    return EvalRun(cm, n, time.perf_counter() - start)


def _header_size(dataset: Any, i: int) -> tuple[int, int] | None:
    """(H, W) of image ``i`` if the dataset can tell without decoding; loading it will report a bad file."""
    try:
        return dataset.image_size(i)
    except (AttributeError, OSError, ValueError):
        return None


def _input_key(hw: tuple[int, int] | None, resize_size: int | None, native: bool) -> Hashable:
    """Images with the same key give tensors of the same sizes after the eval preset."""
    if hw is None:
        return None
    resized = hw if resize_size is None else resized_size(*hw, resize_size)
    return (resized, hw) if native else resized


def _percent(v: float) -> float | None:
    return None if math.isnan(v) else 100.0 * v


def summarize(run: EvalRun, categories: Sequence[str]) -> dict[str, Any]:
    """The scores of a run as JSON-ready percentages; ``None`` marks classes absent from truth and prediction."""
    m = run.confusion.compute()
    mat = run.confusion.mat
    return {
        "miou": _percent(m["miou"]),
        "pixel_acc": _percent(m["pixel_acc"]),
        "mean_acc": _percent(m["mean_acc"]),
        "fwiou": _percent(m["fwiou"]),
        "mean_dice": _percent(m["mean_dice"]),
        "categories": list(categories),
        "iou": [_percent(v) for v in m["iou"]],
        "acc": [_percent(v) for v in m["acc"]],
        "dice": [_percent(v) for v in m["dice"]],
        "absent_classes": [categories[i] for i in m["absent"]],
        "gt_pixels": mat.sum(1).tolist(),
        "pred_pixels": mat.sum(0).tolist(),
        "pixels": m["pixels"],
        "confusion_matrix": mat.tolist(),
        "num_images": run.num_images,
        "seconds": run.seconds,
        "images_per_s": run.images_per_s,
        "units": "percent; null marks a class absent from both ground truth and predictions, left out of the means",
    }


def format_table(summary: dict[str, Any], model: str) -> str:
    """The seed page's table (model, mean IoU, global pixelwise accuracy), then one row per class."""

    def f(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.1f}"

    cats = summary["categories"]
    width = max(len(model), max(len(c) for c in cats), 5)
    total = max(sum(summary["gt_pixels"]), 1)
    lines = [
        f"{'model':{width}}  {'mean IoU':>8}  {'global pixelwise acc':>20}",
        f"{model:{width}}  {f(summary['miou']):>8}  {f(summary['pixel_acc']):>20}",
        "",
        f"{'class':{width}}  {'IoU':>6}  {'acc':>6}  {'Dice':>6}  {'GT px %':>7}",
    ]
    for i, c in enumerate(cats):
        share = 100.0 * summary["gt_pixels"][i] / total
        lines.append(
            f"{c:{width}}  {f(summary['iou'][i]):>6}  {f(summary['acc'][i]):>6}  {f(summary['dice'][i]):>6}  "
            f"{share:7.2f}"
        )
    lines += [
        f"{'mean':{width}}  {f(summary['miou']):>6}  {f(summary['mean_acc']):>6}  {f(summary['mean_dice']):>6}",
        "",
        f"frequency-weighted IoU {f(summary['fwiou'])}; {summary['num_images']} images, "
        f"{summary['pixels']:,} scored pixels, {summary['images_per_s']:.2f} images/s",
    ]
    if summary["absent_classes"]:
        lines.append(
            f"n/a: {len(summary['absent_classes'])} classes absent from ground truth and predictions "
            f"({', '.join(summary['absent_classes'])}); left out of the means"
        )
    return "\n".join(lines)


def plot_confusion_matrix(mat: Tensor, categories: Sequence[str], path: str | Path, title: str = "") -> None:
    """Save the row-normalized confusion matrix (each true class's pixels, as predicted) as a PNG."""
    from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global state

    m = mat.double()
    rows = m.sum(1, keepdim=True)
    norm = (m / rows.clamp(min=1)).numpy()
    k = len(categories)
    fig = Figure(figsize=(2 + 0.4 * k, 1.5 + 0.4 * k))
    ax = fig.subplots()
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(k), categories, rotation=90, fontsize=7)
    ax.set_yticks(range(k), categories, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("ground truth")
    ax.set_title(title or "confusion matrix (row-normalized)", fontsize=9)
    if k <= 30:
        for t in range(k):
            for p in range(k):
                if norm[t, p] >= 0.005:
                    colour = "white" if norm[t, p] > 0.5 else "black"
                    ax.text(p, t, f"{100 * norm[t, p]:.0f}", ha="center", va="center", fontsize=5, color=colour)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=120)
