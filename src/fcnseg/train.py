"""Training and fine-tuning with torchvision's reference recipe; resumable; one process or torchrun (DDP).

``fit(TrainConfig(...))`` trains, ``resume(checkpoint)`` continues; ``fcnseg train`` is a thin layer over them.
The recipe (``references/segmentation/train.py``): SGD, momentum 0.9, weight decay 1e-4, lr 0.02 for a global
batch of 32 (scaled linearly here), poly decay with power 0.9 stepped every iteration (optional linear warm-up),
the aux head at 10x lr, loss = CE(out) + 0.5 * CE(aux) with ignore index 255 (configurable), 30 epochs.

Determinism, which makes ``resume`` exact and one process equal to many: the sampler shuffles with
``seed + epoch``; every sample's augmentation draws from a generator seeded by (seed, epoch, index); the loader
has a private generator, so the global torch RNG is consumed only by the model (dropout) and is checkpointed.

The loop reads top to bottom in :func:`_train`: ``_setup`` builds the run, then per epoch ``_train_epoch``,
``_validate`` and ``_save``, all moving one :class:`RunState` forward.

A checkpoint is self-describing (nanoGPT style) and versioned (``format``, ``version``): the run state
(``epoch``, ``step``, ``samples``, ``best_miou``, ``metrics``), the model's state dict under ``model`` in
torchvision's key layout, the optimizer, scheduler and grad-scaler states, every rank's RNG states, the global
batch, the full config (``config``: a dict of :class:`TrainConfig` fields) and the class names (``categories``),
so it alone can be resumed, evaluated, exported or served.

A run folder belongs to one run: a new run refuses a folder holding another run's files (``exist_ok`` replaces
them), and a resumed run continues in its checkpoint's folder, with the settings it started with.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import random
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, fields, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler, Subset

from ._atomic import atomic_path
from .data import get_dataset
from .data.check import validate_training_data
from .distributed import DistInfo, init_distributed
from .evaluate import evaluate
from .models import find_weights, get_model_builder
from .transforms import SegmentationEval, SegmentationTrain
from .weights import CHECKPOINT_FORMAT, CHECKPOINT_VERSION, WeightsError, read_checkpoint

__all__ = [
    "RunState",
    "TrainConfig",
    "build_dataset",
    "build_model",
    "class_weights_from_masks",
    "criterion",
    "fit",
    "load_finetune_state_dict",
    "pad_collate",
    "poly_lr_factor",
    "resume",
    "save_checkpoint",
]

REFERENCE_LR, REFERENCE_BATCH = 0.02, 32  # the recipe's lr for its global batch (8 GPUs x 4 images)
AUX_WEIGHT, AUX_LR_MULT, POLY_POWER = 0.5, 10.0, 0.9
HEAD_KEYS = ("classifier.4.", "aux_classifier.4.")  # the two final 1x1 convs, re-initialised for new classes


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
    resume: str | None = None  # a last.pth/best.pth to continue exactly; the run's settings come from it
    save_every: int = 0  # also checkpoint every N optimizer steps (0: at epoch ends only)
    log_every: int = 10
    progress: bool = True


# Settings a resumed run may change: they do not alter the arithmetic. The per-process batch layout may change
# with the number of processes as long as the global batch stays (see _per_process_batch).
_RUNTIME_FIELDS = ("data_root", "workers", "device", "output_dir", "exist_ok", "save_every", "log_every", "progress",
                   "batch_size", "accum_steps")  # fmt: skip
RUN_FILES = ("last.pth", "best.pth", "log.jsonl", "class_weights.txt", "tensorboard")  # what a run writes


# ---------------------------------------------------------------------------------------------- data


def build_dataset(name: str, root: str | Path, split: str, transforms: Any = None) -> Any:
    """``folder``, ``coco`` or ``voc`` at ``root``; items are ``transforms(image, mask)`` (raw PIL pairs without).

    COCO's ``train`` split applies the reference's filter (images whose VOC-class annotations cover > 1000 px).
    """
    return get_dataset(name, root, split, transforms=transforms)


class _Augmented(Dataset):
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


class _SkipFirst(Sampler[int]):
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


def _class_weights(config: TrainConfig, dataset: Any, num_classes: int) -> Tensor | None:
    if config.class_weights is None:
        return None
    if config.class_weights != "auto":
        return _read_class_weights(config.class_weights, num_classes)
    labels = getattr(dataset, "labels", None)  # folder datasets: read the masks only, not the images
    masks = (labels(i) for i in range(len(dataset))) if labels is not None else (m for _, m in dataset)
    return class_weights_from_masks(masks, num_classes, config.ignore_index)


# --------------------------------------------------------------------------------------------- model


def load_finetune_state_dict(model: nn.Module, state_dict: dict[str, Tensor]) -> list[str]:
    """Load ``state_dict`` into ``model`` except the final 1x1 convs where the class counts differ.

    Returns the keys left at their fresh initialisation. A source without an aux head leaves the model's aux
    head fresh; any other missing or unexpected key is an error.
    """
    own = model.state_dict()
    fresh = [k for k in own if k.startswith(HEAD_KEYS) and k in state_dict and state_dict[k].shape != own[k].shape]
    source_has_aux = any(k.startswith("aux_classifier.") for k in state_dict)
    model_has_aux = any(k.startswith("aux_classifier.") for k in own)
    sd = {k: v for k, v in state_dict.items() if k not in fresh}
    if not model_has_aux:
        sd = {k: v for k, v in sd.items() if not k.startswith("aux_classifier.")}
    elif not source_has_aux:
        fresh += [k for k in own if k.startswith("aux_classifier.")]
    missing, unexpected = model.load_state_dict(sd, strict=False)
    missing = [k for k in missing if k not in fresh]
    if missing or unexpected:
        raise WeightsError(
            f"weights do not fit {type(model).__name__}: missing {missing[:3]}, unexpected {unexpected[:3]}"
        )
    return fresh


def _read_weights(model_name: str, weights: str) -> tuple[dict[str, Tensor], list[str] | None]:
    """A weights name of the model's enum or a checkpoint path -> (state dict, categories if known)."""
    member = find_weights(model_name, weights)
    if member is not None:
        return member.get_state_dict(progress=False), list(member.meta["categories"])
    sd, extra = read_checkpoint(weights)
    return sd, extra.get("categories")


def build_model(config: TrainConfig, categories: list[str] | None = None) -> tuple[nn.Module, list[str], list[str]]:
    """The model to train and its categories, starting from the weights the config names.

    ``categories`` are the dataset's (if it has names). Returns (model, categories, freshly initialised keys).
    """
    k = config.num_classes
    if categories is not None and k is not None and k != len(categories):
        raise ValueError(f"num_classes={k} but the dataset lists {len(categories)} classes")
    k = k or (len(categories) if categories else None)
    builder = get_model_builder(config.model)
    fresh: list[str] = []
    if config.weights:
        sd, source_categories = _read_weights(config.model, config.weights)
        if "classifier.4.weight" not in sd:
            raise WeightsError(f"{config.weights}: not an FCN state dict (no 'classifier.4.weight')")
        source_k = sd["classifier.4.weight"].shape[0]
        k = k or source_k
        model = builder(num_classes=k, aux_loss=config.aux_loss, weights_backbone=None)
        fresh = load_finetune_state_dict(model, sd)
        if categories is None and k == source_k:
            categories = source_categories
    else:
        if k is None:
            raise ValueError("the number of classes is unknown: pass num_classes (or a dataset with class names)")
        wb = config.weights_backbone
        wb = None if wb is None or wb.lower() == "none" else wb  # a ResNet weights name or a file: the builder's
        model = builder(num_classes=k, aux_loss=config.aux_loss, weights_backbone=wb)
    if categories is None or len(categories) != k:
        categories = [f"class_{i}" for i in range(k)]
    return model, list(categories), fresh


def criterion(outputs: dict[str, Tensor], target: Tensor, weight: Tensor | None = None, ignore_index: int = 255):
    """CE(out) + 0.5 CE(aux), computed in float32 (autocast may hand us bf16/fp16 logits)."""

    def ce(logits: Tensor) -> Tensor:
        return F.cross_entropy(logits.float(), target, weight=weight, ignore_index=ignore_index)

    loss = ce(outputs["out"])
    return loss + AUX_WEIGHT * ce(outputs["aux"]) if "aux" in outputs else loss


def poly_lr_factor(step: int, *, total: int, warmup: int = 0, warmup_factor: float = 0.01) -> float:
    """lr multiplier at optimizer step ``step``: linear warm-up from ``warmup_factor``, then (1 - t)^0.9."""
    if step < warmup:
        return warmup_factor + (1 - warmup_factor) * step / warmup
    t = (step - warmup) / max(total - warmup, 1)
    return max(1 - t, 0.0) ** POLY_POWER


def _optimizer(model: nn.Module, config: TrainConfig, lr: float, steps_per_epoch: int):
    """SGD over the reference's parameter groups (backbone, head, aux head at 10x lr) and its poly schedule."""
    groups = [
        {"params": [p for p in model.backbone.parameters() if p.requires_grad]},
        {"params": [p for p in model.classifier.parameters() if p.requires_grad]},
    ]
    if model.aux_classifier is not None:
        groups.append({"params": list(model.aux_classifier.parameters()), "lr": lr * AUX_LR_MULT})
    groups = [g for g in groups if g["params"]]
    optimizer = torch.optim.SGD(groups, lr=lr, momentum=config.momentum, weight_decay=config.weight_decay)
    factor = partial(
        poly_lr_factor,
        total=steps_per_epoch * config.epochs,
        warmup=int(config.warmup_epochs * steps_per_epoch),
        warmup_factor=config.warmup_factor,
    )
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _set_train_mode(model: nn.Module, config: TrainConfig) -> None:
    model.train()
    if config.freeze_backbone:
        model.backbone.eval()
    if config.freeze_bn:
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()


# ----------------------------------------------------------------------------------------- checkpoints


def save_checkpoint(obj: dict[str, Any], path: str | Path) -> None:
    """``torch.save`` that never leaves a half-written file at ``path``: temp file in the same folder, fsync, rename."""
    with atomic_path(path, durable=True) as tmp, open(tmp, "wb") as f:
        torch.save(obj, f)


def _rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    name, key, *rest = state["numpy"]
    np.random.set_state((name, key.numpy().astype(np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _all_rng_states(info: DistInfo) -> list[dict[str, Any]]:
    """Every rank's RNG states, in rank order (collective under DDP)."""
    if not info.enabled:
        return [_rng_state()]
    states: list[Any] = [None] * info.world_size
    dist.all_gather_object(states, _rng_state())
    return states


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _load_resume(path: str | Path) -> dict[str, Any]:
    """A training checkpoint, upgraded to the current format version (a newer one is refused on reading)."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint to resume from")
    model, ckpt = read_checkpoint(path)
    missing = [k for k in ("optimizer", "scheduler", "config", "step", "epoch") if k not in ckpt]
    if missing:
        raise WeightsError(f"{path}: not a training checkpoint (no {missing[0]!r}); use it as --weights instead")
    ckpt["model"] = model
    if "version" not in ckpt:  # before the format fields: one RNG state per process, the step in global batches
        c = ckpt["config"]
        ckpt["global_batch"] = c["batch_size"] * len(ckpt["rng"]) * c["accum_steps"]
        ckpt["samples"] = ckpt["step"] * ckpt["global_batch"]
    return ckpt


# ------------------------------------------------------------------------------------- run folder, resume


def _own_folder(out: Path, config: TrainConfig) -> bool:
    """Whether ``out`` is the folder of the checkpoint this run resumes: the run's own files."""
    return bool(config.resume) and out.resolve() == Path(config.resume).resolve().parent


def _check_output_dir(out: Path, config: TrainConfig) -> None:
    """A folder belongs to one run: refuse to start in one that holds another run's files (see ``exist_ok``)."""
    if config.exist_ok or _own_folder(out, config):
        return
    found = sorted(name for name in RUN_FILES if (out / name).exists())
    if found:
        last = out / "last.pth"
        resume = f"continue it with --resume {last}" if last.exists() else "it saved no checkpoint to --resume"
        raise FileExistsError(
            f"{out} already holds a run ({', '.join(found)}); {resume}, or start over in it with --exist-ok "
            "(its files are replaced), or choose another --output-dir"
        )


def _clear_output_dir(out: Path) -> None:
    """``exist_ok``: the previous run's files go, so nothing of it is mixed with this run's (rank 0 only)."""
    for name in RUN_FILES:
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def _changes(config: TrainConfig) -> dict[str, Any]:
    """The fields of ``config`` set to something other than their defaults (``fit(TrainConfig(resume=...))``)."""
    default = TrainConfig()
    return {f.name: getattr(config, f.name) for f in fields(TrainConfig)
            if f.name != "resume" and getattr(config, f.name) != getattr(default, f.name)}  # fmt: skip


def _resumed_config(ckpt: dict[str, Any], path: str, changes: dict[str, Any]) -> TrainConfig:
    """The checkpoint's config with ``changes`` applied: runtime fields only; others must equal the checkpoint's.

    The output folder is the checkpoint's own (so a copied run folder resumes into the copy), unless changed.
    """
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(changes) - known)
    if unknown:
        raise TypeError(f"unknown settings {unknown}")
    saved = TrainConfig(**{k: v for k, v in ckpt["config"].items() if k in known})
    differ = {k: v for k, v in changes.items() if k not in _RUNTIME_FIELDS and v != getattr(saved, k)}
    finished = ckpt["epoch"] >= saved.epochs
    if "epochs" in differ and finished and differ["epochs"] > saved.epochs:
        raise ValueError(
            f"{path} finished its {saved.epochs} epochs and its learning rate has decayed to 0; to train more, "
            f"fine-tune from it: fcnseg train --weights {path} --epochs N --output-dir NEW_FOLDER"
        )
    if differ:
        listed = ", ".join(f"{k} {v!r} (checkpoint: {getattr(saved, k)!r})" for k, v in differ.items())
        raise ValueError(
            f"a resumed run keeps the settings it started with, and these differ from {path}'s: {listed}; "
            f"to change them, start a new run from it with --weights {path}"
        )
    paths = {"output_dir": os.path.abspath(changes.get("output_dir") or Path(path).parent)}
    if "data_root" in changes:
        paths["data_root"] = os.path.abspath(changes["data_root"])
    return replace(saved, **{**changes, **paths, "resume": str(path)})


def _per_process_batch(global_batch: int, world_size: int, accum_steps: int, batch_size: int | None = None) -> int:
    """The per-process batch that keeps ``global_batch`` with ``world_size`` processes x ``accum_steps``.

    A resumed run continues where it stopped only with the global batch it started with (the lr, the schedule
    and which samples make a step all depend on it): ``batch_size`` (if given) must keep it, else it is derived.
    """
    if batch_size is None and global_batch % (world_size * accum_steps) == 0:
        batch_size = global_batch // (world_size * accum_steps)
    if batch_size is None or batch_size * world_size * accum_steps != global_batch:
        raise ValueError(
            f"the run's global batch is {global_batch}, which {world_size} processes x {accum_steps} accumulation "
            f"x {batch_size or 'a whole'} per process does not make; choose --batch-size and --accum-steps so that "
            f"batch x {world_size} x accumulation = {global_batch}"
        )
    return batch_size


# ---------------------------------------------------------------------------------------------- logging


class _Logger:
    """Messages to the console, records to ``log.jsonl`` and (if installed) TensorBoard; rank 0 only."""

    def __init__(self, out: Path, enabled: bool) -> None:
        self.enabled = enabled
        self.path = out / "log.jsonl" if enabled else None
        self.tb: Any = None  # a SummaryWriter, or False when tensorboard is not installed
        self.tb_dir = out / "tensorboard"

    def message(self, text: str) -> None:
        if self.enabled:
            from tqdm import tqdm

            tqdm.write(text)

    def record(self, event: str, **values: Any) -> None:
        if self.path is None:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps({"event": event, "time": round(time.time(), 3), **values}) + "\n")
        if self.tb is None:  # opened with the first record, so a failed start leaves no folder behind
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(self.tb_dir))
            except ImportError:  # tensorboard is optional
                self.tb = False
        if self.tb and "step" in values:
            for k, v in values.items():
                if isinstance(v, (int, float)) and k not in ("step", "epoch"):
                    self.tb.add_scalar(f"{event}/{k}", v, values["step"])

    def close(self) -> None:
        if self.tb:
            self.tb.close()


# -------------------------------------------------------------------------------------------- the loop


@dataclass
class RunState:
    """Where a run stands. A checkpoint is this, written out next to the model, optimizer, schedule and RNG states.

    Progress is counted in samples over all processes, so a run resumes with another number of processes as long
    as the global batch stays the same.
    """

    epoch: int = 0  # the epoch in progress (0-based); after the last one, ``config.epochs``
    step: int = 0  # optimizer steps taken
    samples: int = 0  # training samples consumed, all processes together
    best_miou: float = -1.0  # the best validation mIoU so far (-1: none yet)
    metrics: dict[str, Any] | None = None  # the last validation's scores


@dataclass
class _Run:
    """What setup builds and every later phase reads: settings, data, model, optimisation, output."""

    config: TrainConfig
    info: DistInfo
    device: torch.device
    out: Path
    log: _Logger
    categories: list[str]
    train_set: _Augmented
    sampler: DistributedSampler
    val_loader: DataLoader | None
    model: nn.Module  # the bare model: what is saved and validated
    net: nn.Module  # what training calls: the model, or DDP around it
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    amp_dtype: torch.dtype | None
    class_weights: Tensor | None
    global_batch: int
    steps_per_epoch: int


def _check_config(config: TrainConfig, info: DistInfo, device: torch.device) -> str:
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


def _check_ignore_index(ignore_index: int, num_classes: int) -> None:
    """The ignore label pads crops and marks void pixels: it must not be a class, and must fit the int64 masks."""
    if 0 <= ignore_index < num_classes:
        raise ValueError(f"ignore_index {ignore_index} is one of the {num_classes} classes (0..{num_classes - 1})")
    if not -(2**63) <= ignore_index < 2**63:
        raise ValueError(f"ignore_index {ignore_index} does not fit the int64 masks")


def fit(config: TrainConfig) -> dict[str, Any]:
    """Train a run; with ``config.resume``, continue one (see :func:`resume`: the fields set to something other
    than their defaults are the changes asked for). Returns paths, the last validation scores and the best mIoU.

    Under torchrun every process calls this; only rank 0 writes files and prints.
    """
    if config.resume:
        return resume(config.resume, **_changes(config))
    # absolute paths, so the checkpoint's config resumes from any working directory
    config = replace(config, data_root=os.path.abspath(config.data_root), output_dir=os.path.abspath(config.output_dir))
    with _process_group(config.device) as (info, device):
        return _train(config, None, info, device)


def resume(checkpoint: str | Path, **changes: Any) -> dict[str, Any]:
    """Continue the run saved in ``checkpoint`` exactly, in the checkpoint's own folder unless ``output_dir`` says
    otherwise. ``changes`` may set the runtime fields (where the data and output are, workers, device, logging,
    checkpoint frequency) and the per-process batch layout that keeps the global batch (another number of
    processes); any other setting must equal the checkpoint's: a different value is an error that lists it.
    """
    ckpt = _load_resume(checkpoint)
    config = _resumed_config(ckpt, str(checkpoint), changes)
    with _process_group(config.device) as (info, device):
        accum = changes.get("accum_steps", config.accum_steps)
        batch = _per_process_batch(ckpt["global_batch"], info.world_size, accum, changes.get("batch_size"))
        config = replace(config, batch_size=batch, accum_steps=accum)
        return _train(config, ckpt, info, device)


@contextlib.contextmanager
def _process_group(device: str) -> Iterator[tuple[DistInfo, torch.device]]:
    """Join torchrun's process group (if launched by it) for the run; leave it after, if we created it."""
    created = not (dist.is_available() and dist.is_initialized())
    info, dev = init_distributed(device)
    try:
        yield info, dev
    finally:
        if created and info.enabled:
            dist.destroy_process_group()


def _train(config: TrainConfig, ckpt: dict[str, Any] | None, info: DistInfo, device: torch.device) -> dict[str, Any]:
    """Setup, then per epoch: train, validate, save. ``ckpt`` is the checkpoint a resumed run continues."""
    run = _setup(config, ckpt, info, device)
    if ckpt is None:
        state = RunState()
        _seed_everything(config.seed + info.rank)  # dropout differs per rank, as with independent GPUs
    else:
        state = RunState(**{f.name: ckpt[f.name] for f in fields(RunState)})
        _restore(run, ckpt, state)
    if state.epoch >= config.epochs:
        run.log.message(f"{config.resume} has finished its {config.epochs} epochs: nothing to do")
    while state.epoch < config.epochs:
        _train_epoch(run, state)
        if run.val_loader is not None:
            _validate(run, state)
        is_best = state.metrics is not None and state.metrics["miou"] > state.best_miou
        if is_best:
            state.best_miou = state.metrics["miou"]
        state.epoch += 1
        _save(run, state, "last.pth", "best.pth" if is_best else None)
    run.log.close()
    out = run.out
    return {
        "output_dir": str(out),
        "last": str(out / "last.pth"),
        "best": str(out / "best.pth") if state.best_miou >= 0 else None,
        "steps": state.step,
        "metrics": state.metrics,
        "best_miou": state.best_miou if state.best_miou >= 0 else None,
        "categories": run.categories,
    }


def _setup(config: TrainConfig, ckpt: dict[str, Any] | None, info: DistInfo, device: torch.device) -> _Run:
    """Check the settings and the output folder, build data, model, optimizer and schedule; nothing is written
    until all of it succeeded."""
    amp = _check_config(config, info, device)
    out = Path(config.output_dir)
    _check_output_dir(out, config)  # on every rank, before the first collective: before rank 0 writes anything
    if config.deterministic:
        torch.use_deterministic_algorithms(True)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.benchmark = not config.deterministic

    train_raw, val_set = _datasets(config)

    # Model: the same initialisation on every rank; a resumed run's weights come from its checkpoint (_restore).
    _seed_everything(config.seed)
    if ckpt is None:
        model, categories, fresh = build_model(config, getattr(train_raw, "categories", None))
    else:
        bare = replace(config, weights=None, weights_backbone=None, num_classes=ckpt["num_classes"])
        model, categories, fresh = build_model(bare, ckpt["categories"])
    _check_ignore_index(config.ignore_index, len(categories))
    validate_training_data(train_raw, config.ignore_index)  # unmapped mask values, classes without pixels
    if ckpt is None:
        class_weights = _class_weights(config, train_raw, len(categories))
    else:
        saved = ckpt.get("class_weights")
        class_weights = None if saved is None else torch.tensor(saved)
    model, net = _place_model(model, config, info, device)

    # Data order: every rank draws its share of each global batch; validation images are split across ranks
    # (each scores every world_size-th one) and the confusion matrices summed.
    train_set = _Augmented(
        train_raw,
        SegmentationTrain(base_size=config.base_size, crop_size=config.crop_size, ignore_index=config.ignore_index),
        config.seed,
    )
    sampler = DistributedSampler(
        train_set, num_replicas=info.world_size, rank=info.rank, shuffle=True, seed=config.seed, drop_last=True
    )
    steps_per_epoch = len(sampler) // config.batch_size // config.accum_steps
    if steps_per_epoch == 0:
        raise ValueError(
            f"{len(train_set)} training images cannot fill one step of {config.batch_size} x "
            f"{info.world_size} processes x {config.accum_steps} accumulation"
        )
    val_loader = None
    if val_set is not None:
        val_part = Subset(val_set, range(info.rank, len(val_set), info.world_size))
        collate = partial(pad_collate, ignore_index=config.ignore_index)
        val_loader = DataLoader(val_part, batch_size=1, num_workers=config.workers, collate_fn=collate)

    # Optimizer and schedule: the reference's three parameter groups, poly decay per optimizer step.
    global_batch = config.batch_size * info.world_size * config.accum_steps
    lr = config.lr if config.lr is not None else REFERENCE_LR * global_batch / REFERENCE_BATCH
    optimizer, scheduler = _optimizer(model, config, lr, steps_per_epoch)

    run = _Run(
        config=config, info=info, device=device, out=out, log=_Logger(out, info.is_main), categories=categories,
        train_set=train_set, sampler=sampler, val_loader=val_loader, model=model, net=net, optimizer=optimizer,
        scheduler=scheduler, scaler=torch.amp.GradScaler(device.type, enabled=amp == "fp16"),
        amp_dtype={"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp), class_weights=class_weights,
        global_batch=global_batch, steps_per_epoch=steps_per_epoch,
    )  # fmt: skip
    _open_output(run, lr, fresh, amp, new=ckpt is None)
    return run


def _datasets(config: TrainConfig) -> tuple[Any, Any]:
    """The raw training pairs (augmented per sample by ``_Augmented``) and the validation set (evaluation preset,
    or None without ``val_split``)."""
    train_raw = build_dataset(config.dataset, config.data_root, config.train_split)
    val_set = None
    if config.val_split:
        preset = SegmentationEval(resize_size=config.base_size)
        val_set = build_dataset(config.dataset, config.data_root, config.val_split, preset)
    return train_raw, val_set


def _place_model(
    model: nn.Module, config: TrainConfig, info: DistInfo, device: torch.device
) -> tuple[nn.Module, nn.Module]:
    """Freezing, SyncBatchNorm, device, memory format; returns (model, what training calls: DDP around it or it)."""
    if config.freeze_backbone:
        model.backbone.requires_grad_(False)
    if config.sync_bn and info.enabled:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model.to(device)
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    if not info.enabled:
        return model, model
    return model, nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None
    )


def _open_output(run: _Run, lr: float, fresh: list[str], amp: str, *, new: bool) -> None:
    """Everything checked: claim the output folder (rank 0) and say how the run is set up; a new run records its
    start and class weights."""
    config, info, out = run.config, run.info, run.out
    if info.is_main:
        if config.exist_ok and not _own_folder(out, config):
            _clear_output_dir(out)
        out.mkdir(parents=True, exist_ok=True)
    gb = run.global_batch
    run.log.message(
        f"lr {lr:g} = 0.02 x global batch {gb} / 32 "
        f"({config.batch_size} per process x {info.world_size} processes x {config.accum_steps} accumulation)"
        if config.lr is None
        else f"lr {lr:g} (given; global batch {gb})"
    )
    if fresh:
        heads = sorted({k.rsplit(".", 1)[0] for k in fresh})
        run.log.message(f"fine-tuning to {len(run.categories)} classes: re-initialised {heads}")
    if new:
        run.log.record("start", config=asdict(config), lr=lr, global_batch=gb, categories=run.categories,
                       steps_per_epoch=run.steps_per_epoch, world_size=info.world_size, amp=amp)  # fmt: skip
        if run.class_weights is not None and info.is_main:
            text = "\n".join(f"{w:.6g}" for w in run.class_weights.tolist()) + "\n"
            (out / "class_weights.txt").write_text(text)


def _restore(run: _Run, ckpt: dict[str, Any], state: RunState) -> None:
    """Load a checkpoint's model, optimizer, schedule and RNG states into a freshly set-up run."""
    run.model.load_state_dict(ckpt["model"])
    run.optimizer.load_state_dict(ckpt["optimizer"])
    run.scheduler.load_state_dict(ckpt["scheduler"])
    run.scaler.load_state_dict(ckpt["scaler"])
    info, rng = run.info, ckpt.get("rng") or []
    if len(rng) == info.world_size:
        _set_rng_state(rng[info.rank])
    else:  # another number of processes cannot replay the same dropout masks; continue with fresh seeds
        _seed_everything(run.config.seed + info.rank + state.step)
        run.log.message(f"note: checkpoint has RNG states for {len(rng)} processes, this run has {info.world_size}")
    if state.epoch < run.config.epochs:
        per_epoch = run.steps_per_epoch * run.global_batch
        if not 0 <= state.samples - state.epoch * per_epoch <= per_epoch:
            raise ValueError(
                f"{run.config.resume} has seen {state.samples} samples, which is not within epoch {state.epoch + 1} "
                f"of {per_epoch} samples here: is {run.config.data_root} the dataset it was trained on?"
            )
        total = run.steps_per_epoch * run.config.epochs
        run.log.message(f"resumed {run.config.resume} at epoch {state.epoch + 1}, step {state.step}/{total}")
        run.log.record("resume", checkpoint=run.config.resume, step=state.step, samples=state.samples,
                       world_size=info.world_size, batch_size=run.config.batch_size)  # fmt: skip


def _train_epoch(run: _Run, state: RunState) -> None:
    """Train the rest of epoch ``state.epoch``: from the sample where a resumed run stopped to the epoch's end."""
    config, info, device = run.config, run.info, run.device
    done_samples = state.samples - state.epoch * run.steps_per_epoch * run.global_batch  # all ranks together
    done = done_samples // run.global_batch  # optimizer steps of this epoch already taken
    run.sampler.set_epoch(state.epoch)
    run.train_set.epoch = state.epoch
    loader = DataLoader(
        run.train_set,
        batch_size=config.batch_size,
        sampler=_SkipFirst(run.sampler, done_samples // info.world_size),  # this rank's share of the samples seen
        num_workers=config.workers,
        collate_fn=partial(pad_collate, ignore_index=config.ignore_index),
        pin_memory=device.type == "cuda",
        drop_last=True,
        generator=torch.Generator(),  # keeps the loader off the global RNG (see module docstring)
    )
    _set_train_mode(run.model, config)
    from tqdm import tqdm

    bar = tqdm(total=run.steps_per_epoch, initial=done, desc=f"epoch {state.epoch + 1}/{config.epochs}",
               disable=not (info.is_main and config.progress), leave=False, dynamic_ncols=True)  # fmt: skip
    window_loss, window_steps, window_start = torch.zeros((), device=device), 0, time.perf_counter()
    micro, micro_per_epoch = done * config.accum_steps, run.steps_per_epoch * config.accum_steps
    for images, targets in loader:
        if micro >= micro_per_epoch:
            break
        images = images.to(device, non_blocking=True)
        if config.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        targets = targets.to(device, non_blocking=True)
        micro += 1
        last = micro % config.accum_steps == 0  # the micro-batch that completes a step: DDP syncs gradients
        with run.net.no_sync() if info.enabled and not last else contextlib.nullcontext():
            with torch.autocast(device.type, dtype=run.amp_dtype, enabled=run.amp_dtype is not None):
                loss = criterion(run.net(images), targets, _on(run.class_weights, device), config.ignore_index)
            run.scaler.scale(loss / config.accum_steps).backward()
        window_loss += loss.detach().float() / config.accum_steps
        if not last:
            continue
        run.scaler.step(run.optimizer)
        run.scaler.update()
        run.optimizer.zero_grad(set_to_none=True)
        run.scheduler.step()
        state.step += 1
        state.samples += run.global_batch
        window_steps += 1
        bar.update(1)
        end_of_epoch = state.step % run.steps_per_epoch == 0
        if window_steps == config.log_every or end_of_epoch:
            if info.enabled:
                dist.all_reduce(window_loss)
                window_loss /= info.world_size
            images_s = window_steps * run.global_batch / (time.perf_counter() - window_start)
            mean_loss, lr = window_loss.item() / window_steps, run.optimizer.param_groups[0]["lr"]
            bar.set_postfix(loss=f"{mean_loss:.4f}", lr=f"{lr:.2e}", img_s=f"{images_s:.1f}")
            run.log.record("train", epoch=state.epoch, step=state.step, loss=mean_loss, lr=lr, images_per_s=images_s)
            window_loss.zero_()
            window_steps, window_start = 0, time.perf_counter()
        if config.save_every and state.step % config.save_every == 0 and not end_of_epoch:
            _save(run, state, "last.pth")
    bar.close()


def _on(tensor: Tensor | None, device: torch.device) -> Tensor | None:
    return tensor.to(device) if tensor is not None else None


def _validate(run: _Run, state: RunState) -> None:
    """Score the model rank 0 saves on the validation set; sets ``state.metrics`` on every rank."""
    if run.info.enabled:
        # Under DDP the parameters are equal on every rank (the gradients are averaged), but BatchNorm's running
        # statistics are not: DDP hands rank 0's buffers to all ranks at each forward, then every rank updates
        # them with its own images. best.pth must be chosen on the score of the model it holds, rank 0's, so
        # every rank takes rank 0's buffers before validating its share. Training is unchanged: the next forward
        # would broadcast them anyway.
        for buffer in run.model.buffers():
            dist.broadcast(buffer, 0)
    config = run.config
    scores = evaluate(run.model, run.val_loader, len(run.categories), run.device, config.ignore_index).compute()
    state.metrics = {k: v for k, v in scores.items() if k != "pixels"}
    m = state.metrics
    run.log.record("val", epoch=state.epoch, step=state.step, miou=m["miou"], pixel_acc=m["pixel_acc"],
                   mean_acc=m["mean_acc"], iou=m["iou"])  # fmt: skip
    run.log.message(
        f"epoch {state.epoch + 1}/{config.epochs}: mIoU {100 * m['miou']:.1f}, pixel acc {100 * m['pixel_acc']:.1f}"
    )


def _save(run: _Run, state: RunState, name: str, also: str | None = None) -> None:
    """Write the checkpoint, the run state with everything needed to continue it, as ``name`` (and ``also``).

    Collective under DDP (it gathers every rank's RNG states); rank 0 writes.
    """
    checkpoint = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        **asdict(state),
        "model": run.model.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(),
        "scaler": run.scaler.state_dict(),
        "rng": _all_rng_states(run.info),
        "global_batch": run.global_batch,
        "config": asdict(run.config),
        "categories": run.categories,
        "model_name": run.config.model,
        "num_classes": len(run.categories),
        "class_weights": run.class_weights.tolist() if run.class_weights is not None else None,
    }
    if run.info.is_main:
        for n in (name, also) if also else (name,):
            save_checkpoint(checkpoint, run.out / n)
