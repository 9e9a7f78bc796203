"""What defines a run: :class:`TrainConfig`, stored in every checkpoint, and the checks on its values."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: the config reads without torch (``fcnseg train --help`` shows its defaults)
    import torch

    from ..distributed import DistInfo

__all__ = ["REFERENCE_BATCH", "REFERENCE_LR", "RUNTIME_FIELDS", "TrainConfig", "check_config", "check_ignore_index"]


REFERENCE_LR, REFERENCE_BATCH = 0.02, 32  # the recipe's lr for its global batch (8 GPUs x 4 images)


@dataclass
class TrainConfig:
    """Everything that defines a run; stored in every checkpoint."""

    # data
    dataset: str = "folder"  # folder | coco | voc
    data_root: str = "."
    train_split: str = "train"
    val_split: str | None = "val"  # None: no validation, no best checkpoint
    base_size: int = 520  # training resizes the shorter side to [0.5, 2.0] x base_size; validation to base_size
    crop_size: int = 480
    workers: int = 2
    # model and where its weights come from
    model: str = "fcn_resnet50"
    weights: str | None = None  # whole-model start: FCN weights name ("DEFAULT") or a checkpoint path
    weights_backbone: str | None = "DEFAULT"  # ImageNet weights name or path (ignored when weights is set)
    num_classes: int | None = None  # default: the dataset's classes, else the weights' classes
    aux_loss: bool = True
    freeze_backbone: bool = False  # backbone parameters fixed and its BatchNorm in eval mode
    freeze_bn: bool = False  # every BatchNorm in eval mode: running statistics used, not updated
    sync_bn: bool = False  # SyncBatchNorm across ranks (CUDA only: torch's SyncBatchNorm has no CPU kernel)
    # optimisation
    epochs: int = 30
    batch_size: int = 8  # per process
    accum_steps: int = 1  # micro-batches per optimizer step
    lr: float | None = None  # None: 0.02 x global batch / 32
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_epochs: float = 0.0
    warmup_factor: float = 0.01  # lr multiplier at the first warm-up step
    class_weights: str | None = None  # "auto" (median frequency balancing) or a file with one weight per class
    ignore_index: int = 255  # void pixels and crop padding; any value that is not a class (-1 too)
    amp: str = "none"  # none | auto | bf16 | fp16 (auto: fp16 on CUDA, bf16 on CPU)
    channels_last: bool = False
    # run
    seed: int = 0
    deterministic: bool = False
    device: str = "auto"
    output_dir: str = "runs/train"  # one run per folder; a resumed run defaults to its checkpoint's folder
    exist_ok: bool = False  # start in a folder that holds another run's files, replacing them
    resume: str | None = None  # a last.pth to continue exactly; the run's settings come from it
    save_every: int = 0  # also checkpoint every N optimizer steps (0: at epoch ends only)
    log_every: int = 10
    progress: bool = True


# Settings a resumed run may change: they do not alter the arithmetic. The per-process batch layout may change
# with the number of processes as long as the global batch stays (see per_process_batch).
RUNTIME_FIELDS = ("data_root", "workers", "device", "output_dir", "exist_ok", "save_every", "log_every", "progress",
                   "batch_size", "accum_steps")  # fmt: skip


def check_config(config: TrainConfig, info: DistInfo, device: torch.device) -> str:
    """Validate the settings; return the resolved AMP mode (none, bf16 or fp16)."""
    for name in ("epochs", "batch_size", "accum_steps", "crop_size", "base_size"):
        if getattr(config, name) < 1:
            raise ValueError(f"{name} must be at least 1, got {getattr(config, name)}")
    amp = config.amp
    if amp not in ("none", "auto", "bf16", "fp16"):
        raise ValueError(f"amp must be none, auto, bf16 or fp16, got {amp!r}")
    if amp == "auto":
        amp = "fp16" if device.type == "cuda" else "bf16"
    if amp == "fp16" and device.type != "cuda":
        raise ValueError("fp16 autocast needs CUDA; use amp=bf16 on CPU")
    if config.sync_bn and info.enabled and device.type != "cuda":
        raise ValueError("SyncBatchNorm needs CUDA (torch has no CPU kernel); on CPU use freeze_bn instead")
    return amp


def check_ignore_index(ignore_index: int, num_classes: int) -> None:
    """The ignore label pads crops and marks void pixels: it must not be a class, and must fit the int64 masks."""
    if 0 <= ignore_index < num_classes:
        raise ValueError(f"ignore_index {ignore_index} is one of the {num_classes} classes (0..{num_classes - 1})")
    if not -(2**63) <= ignore_index < 2**63:
        raise ValueError(f"ignore_index {ignore_index} does not fit the int64 masks")
