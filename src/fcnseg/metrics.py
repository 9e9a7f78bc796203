"""Segmentation scores from one confusion matrix accumulated over a whole dataset.

Scores derived from per-batch averages differ from the published protocol; accumulate counts, then divide.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["ConfusionMatrix"]


class ConfusionMatrix:
    """``mat[t, p]`` counts pixels of true class t predicted as p; pixels equal to ``ignore_index`` are skipped."""

    def __init__(self, num_classes: int, ignore_index: int = 255) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.mat = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def update(self, target: Tensor, pred: Tensor) -> None:
        """Add a batch of label maps (any matching shapes, integer dtype)."""
        if target.shape != pred.shape:
            raise ValueError(f"target shape {tuple(target.shape)} != prediction shape {tuple(pred.shape)}")
        t, p = target.reshape(-1).long().cpu(), pred.reshape(-1).long().cpu()
        keep = (t != self.ignore_index) & (t >= 0) & (t < self.num_classes)
        n = self.num_classes
        self.mat += torch.bincount(n * t[keep] + p[keep], minlength=n * n).reshape(n, n)

    def reset(self) -> None:
        self.mat.zero_()

    def all_reduce(self) -> None:
        """Sum the counts over all processes of a ``torch.distributed`` group."""
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            mat = self.mat.to("cuda") if dist.get_backend() == "nccl" else self.mat
            dist.all_reduce(mat)
            self.mat = mat.cpu()

    def compute(self) -> dict[str, object]:
        """Scores as fractions in [0, 1]; a class absent from both truth and prediction gets NaN.

        NaN classes are left out of the means (``nanmean``); ``absent`` lists them. With every class present
        this equals the torchvision reference, whose plain ``mean`` would turn NaN instead. Per-class accuracy
        (recall) is NaN for a class absent from the ground truth even if predicted; its IoU is then 0.
        Dice equals F1 (``2 TP / (2 TP + FP + FN)``).
        """
        h = self.mat.double()
        tp = h.diag()
        gt = h.sum(1)  # pixels of each true class
        pr = h.sum(0)  # pixels predicted as each class
        union = gt + pr - tp
        total = h.sum()
        iou = tp / union  # 0/0 -> NaN: class never seen nor predicted
        acc = tp / gt
        dice = 2 * tp / (gt + pr)
        freq = gt / total
        valid = ~iou.isnan()
        return {
            "pixel_acc": (tp.sum() / total).item(),
            "mean_acc": acc.nanmean().item(),
            "iou": iou.tolist(),
            "miou": iou.nanmean().item(),
            "fwiou": (freq[valid] * iou[valid]).sum().item(),
            "acc": acc.tolist(),
            "dice": dice.tolist(),
            "mean_dice": dice.nanmean().item(),
            "pixels": int(total.item()),
            "absent": [i for i in range(self.num_classes) if not valid[i]],
        }
