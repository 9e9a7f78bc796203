"""Accumulate a confusion matrix of a model over a data loader (the published protocol's core)."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn

from .metrics import ConfusionMatrix

__all__ = ["evaluate"]


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    loader: Iterable[tuple[Tensor, Tensor]],
    num_classes: int,
    device: torch.device | str = "cpu",
    ignore_index: int = 255,
) -> ConfusionMatrix:
    """Run ``model`` over ``(images (N,3,H,W), targets (N,H,W))`` batches; return the summed confusion matrix.

    Under torch.distributed the counts are summed over ranks before returning.
    """
    model.eval()
    cm = ConfusionMatrix(num_classes, ignore_index)
    for images, targets in loader:
        logits = model(images.to(device))["out"]
        cm.update(targets, logits.argmax(1).cpu())
    cm.all_reduce()
    return cm
