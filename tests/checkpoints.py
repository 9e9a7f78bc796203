"""Training-style checkpoints of random-init models, as the CLI tests feed them to ``--weights``."""

from __future__ import annotations

from pathlib import Path

import torch

from fcnseg.models import fcn_resnet50

THREE_CLASSES = ["background", "thing", "stuff"]  # the class list of the CLI tests' random checkpoint


def write_checkpoint(path: Path, categories: list[str]) -> Path:
    """``{"model", "categories"}`` of a seeded random-init FCN-ResNet50 (no aux head), one class per category name."""
    torch.manual_seed(0)
    model = fcn_resnet50(num_classes=len(categories), aux_loss=False)
    torch.save({"model": model.state_dict(), "categories": categories}, path)
    return path
