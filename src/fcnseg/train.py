"""Training and fine-tuning with torchvision's reference recipe; resumable; one process or torchrun (DDP).

``fit(TrainConfig(...))`` is the whole loop; ``fcnseg train`` is a thin layer over it. The recipe
(``references/segmentation/train.py``): SGD, momentum 0.9, weight decay 1e-4, lr 0.02 for a global batch of 32
(scaled linearly here), poly decay with power 0.9 stepped every iteration (optional linear warm-up), the aux head
at 10x lr, loss = CE(out) + 0.5 * CE(aux) with ignore index 255, 30 epochs.

Determinism, which makes ``resume`` exact and one process equal to many: the sampler shuffles with
``seed + epoch``; every sample's augmentation draws from a generator seeded by (seed, epoch, index); the loader
has a private generator, so the global torch RNG is consumed only by the model (dropout) and is checkpointed.

A checkpoint is self-describing (nanoGPT style): the model's state dict under ``model`` in torchvision's key
layout, the optimizer, scheduler and grad-scaler states, where to continue (``epoch``, ``step``), every rank's
RNG states, the full config and the categories, so it alone can be resumed, evaluated, exported or served.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import random
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
from .weights import CHECKPOINT_SUFFIXES, WeightsError, load_state_dict_file, read_checkpoint

__all__ = [
    "TrainConfig",
    "build_dataset",
    "build_model",
    "class_weights_from_masks",
    "criterion",
    "fit",
    "load_finetune_state_dict",
    "pad_collate",
    "poly_lr_factor",
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
    ignore_index: int = 255
    amp: str = "none"  # none | auto | bf16 | fp16 (auto: fp16 on CUDA, bf16 on CPU)
    channels_last: bool = False
    # run
    seed: int = 0
    deterministic: bool = False
    device: str = "auto"
    output_dir: str = "runs/train"
    resume: str | None = None  # a last.pth/best.pth to continue exactly; the run's settings come from it
    save_every: int = 0  # also checkpoint every N optimizer steps (0: at epoch ends only)
    log_every: int = 10
    progress: bool = True


# Settings a resumed run may change: they do not alter the arithmetic.
_RUNTIME_FIELDS = ("workers", "device", "resume", "progress", "log_every")


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


def _looks_like_path(text: str) -> bool:
    return Path(text).suffix.lower() in CHECKPOINT_SUFFIXES or "/" in text or os.sep in text or Path(text).exists()


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
        if wb is None or wb.lower() == "none":
            model = builder(num_classes=k, aux_loss=config.aux_loss, weights_backbone=None)
        elif not _looks_like_path(wb):  # a ResNet weights name: the builder checks it and loads the cached file
            model = builder(num_classes=k, aux_loss=config.aux_loss, weights_backbone=wb)
        else:
            model = builder(num_classes=k, aux_loss=config.aux_loss, weights_backbone=None)
            backbone_sd = load_state_dict_file(wb)
            try:
                model.backbone.load_imagenet_state_dict(backbone_sd)
            except RuntimeError as e:
                raise WeightsError(f"{wb}: not an ImageNet ResNet state dict for {config.model}: {e}") from None
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


def _resumed_config(saved: dict[str, Any], given: TrainConfig) -> TrainConfig:
    known = {f.name for f in fields(TrainConfig)}
    config = TrainConfig(**{k: v for k, v in saved.items() if k in known})
    return replace(config, **{k: getattr(given, k) for k in _RUNTIME_FIELDS})


def _load_resume(path: str) -> dict[str, Any]:
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint to resume from")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise WeightsError(f"{path}: not a readable checkpoint ({type(e).__name__}: {e})") from None
    missing = [k for k in ("model", "optimizer", "scheduler", "config", "step", "epoch") if k not in ckpt]
    if missing:
        raise WeightsError(f"{path}: not a training checkpoint (no {missing[0]!r}); use it as --weights instead")
    return ckpt


# ------------------------------------------------------------------------------------------------ logging


class _Logger:
    """Messages to the console, records to ``log.jsonl`` and (if installed) TensorBoard; rank 0 only."""

    def __init__(self, out: Path | None, enabled: bool) -> None:
        self.enabled = enabled
        self.path = out / "log.jsonl" if out is not None and enabled else None
        self.tb: Any = None  # a SummaryWriter, or False when tensorboard is not installed
        self.tb_dir = out / "tensorboard" if out is not None else None

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


# -------------------------------------------------------------------------------------------------- fit


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


def fit(config: TrainConfig) -> dict[str, Any]:
    """Train (or resume) a run; returns paths, the last validation scores and the best mIoU.

    Under torchrun every process calls this; only rank 0 writes files and prints.
    """
    ckpt = None
    if config.resume:
        ckpt = _load_resume(config.resume)
        config = _resumed_config(ckpt["config"], config)
    else:  # absolute paths, so the checkpoint's config resumes from any working directory
        paths = {k: os.path.abspath(getattr(config, k)) for k in ("data_root", "output_dir")}
        config = replace(config, **paths)
    created_group = not (dist.is_available() and dist.is_initialized())
    info, device = init_distributed(config.device)
    created_group = created_group and info.enabled
    try:
        return _fit(config, ckpt, info, device)
    finally:
        if created_group:
            dist.destroy_process_group()


def _fit(config: TrainConfig, ckpt: dict[str, Any] | None, info: DistInfo, device: torch.device) -> dict[str, Any]:
    amp = _check_config(config, info, device)
    if config.deterministic:
        torch.use_deterministic_algorithms(True)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.benchmark = not config.deterministic
    out = Path(config.output_dir)  # created once the settings and inputs have been checked
    log = _Logger(out, info.is_main)

    # Data: raw pairs, augmented with per-sample seeds; validation split across ranks without duplicates.
    train_raw = build_dataset(config.dataset, config.data_root, config.train_split)
    validate_training_data(train_raw, config.ignore_index)  # unmapped mask values, classes without pixels
    _seed_everything(config.seed)  # same initialisation on every rank
    if ckpt is None:
        model, categories, fresh = build_model(config, getattr(train_raw, "categories", None))
    else:  # the checkpoint holds the weights: build the bare architecture
        bare = replace(config, weights=None, weights_backbone=None, num_classes=ckpt["num_classes"])
        model, categories, fresh = build_model(bare, ckpt["categories"])
    K = len(categories)
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
    total_steps = steps_per_epoch * config.epochs
    val_loader = None
    if config.val_split:
        val_set = build_dataset(
            config.dataset, config.data_root, config.val_split, SegmentationEval(resize_size=config.base_size)
        )
        val_part = Subset(val_set, range(info.rank, len(val_set), info.world_size))
        val_loader = DataLoader(val_part, batch_size=1, num_workers=config.workers, collate_fn=pad_collate)

    # Model: freezing, BatchNorm mode, memory format, DDP.
    if config.freeze_backbone:
        model.backbone.requires_grad_(False)
    if config.sync_bn and info.enabled:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model.to(device)
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    net = model
    if info.enabled:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    # Optimizer and schedule: the reference's three parameter groups, poly decay per optimizer step.
    global_batch = config.batch_size * info.world_size * config.accum_steps
    lr = config.lr if config.lr is not None else REFERENCE_LR * global_batch / REFERENCE_BATCH
    optimizer, scheduler = _optimizer(model, config, lr, steps_per_epoch)
    scaler = torch.amp.GradScaler(device.type, enabled=amp == "fp16")
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)

    start_epoch, step, best_miou, metrics = 0, 0, -1.0, None
    weights_tensor: Tensor | None
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        start_epoch, step, best_miou = ckpt["epoch"], ckpt["step"], ckpt.get("best_miou", -1.0)
        metrics = ckpt.get("metrics")
        cw = ckpt.get("class_weights")
        weights_tensor = torch.tensor(cw) if cw is not None else None
        rng = ckpt.get("rng") or []
        if len(rng) == info.world_size:
            _set_rng_state(rng[info.rank])
        else:  # a different world size cannot replay the same dropout masks; continue with fresh seeds
            _seed_everything(config.seed + info.rank + step)
            log.message(f"note: checkpoint has RNG states for {len(rng)} processes, this run has {info.world_size}")
        log.message(f"resumed {config.resume} at epoch {start_epoch + 1}, step {step}/{total_steps}")
    else:
        weights_tensor = _class_weights(config, train_raw, K)
        _seed_everything(config.seed + info.rank)  # dropout differs per rank, as with independent GPUs
    loss_weight = weights_tensor.to(device) if weights_tensor is not None else None
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)

    log.message(
        f"lr {lr:g} = 0.02 x global batch {global_batch} / 32 "
        f"({config.batch_size} per process x {info.world_size} processes x {config.accum_steps} accumulation)"
        if config.lr is None
        else f"lr {lr:g} (given; global batch {global_batch})"
    )
    if fresh:
        log.message(f"fine-tuning to {K} classes: re-initialised {sorted({k.rsplit('.', 1)[0] for k in fresh})}")
    if ckpt is None:
        log.record("start", config=asdict(config), lr=lr, global_batch=global_batch, categories=categories,
                   steps_per_epoch=steps_per_epoch, world_size=info.world_size, amp=amp)  # fmt: skip
        if weights_tensor is not None and info.is_main:
            (out / "class_weights.txt").write_text("\n".join(f"{w:.6g}" for w in weights_tensor.tolist()) + "\n")

    def checkpoint(epoch: int, name: str) -> dict[str, Any]:
        """Collective (gathers RNG states); rank 0 writes ``name``. ``epoch`` is where a resume continues."""
        state = {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(),
            "epoch": epoch,
            "step": step,
            "rng": _all_rng_states(info),
            "config": asdict(config),
            "categories": categories,
            "model_name": config.model,
            "num_classes": K,
            "class_weights": weights_tensor.tolist() if weights_tensor is not None else None,
            "metrics": metrics,
            "best_miou": best_miou,
        }
        if info.is_main:
            save_checkpoint(state, out / name)
        return state

    from tqdm import tqdm

    micro_per_epoch = steps_per_epoch * config.accum_steps
    for epoch in range(start_epoch, config.epochs):
        done = step - epoch * steps_per_epoch  # optimizer steps of this epoch already taken (resume)
        sampler.set_epoch(epoch)
        train_set.epoch = epoch
        loader = DataLoader(
            train_set,
            batch_size=config.batch_size,
            sampler=_SkipFirst(sampler, done * config.accum_steps * config.batch_size),
            num_workers=config.workers,
            collate_fn=partial(pad_collate, ignore_index=config.ignore_index),
            pin_memory=device.type == "cuda",
            drop_last=True,
            generator=torch.Generator(),  # keeps the loader off the global RNG (see module docstring)
        )
        _set_train_mode(model, config)
        bar = tqdm(total=steps_per_epoch, initial=done, desc=f"epoch {epoch + 1}/{config.epochs}",
                   disable=not (info.is_main and config.progress), leave=False, dynamic_ncols=True)  # fmt: skip
        window_loss, window_steps, window_start = torch.zeros((), device=device), 0, time.perf_counter()
        micro = done * config.accum_steps
        for images, targets in loader:
            if micro >= micro_per_epoch:
                break
            images = images.to(device, non_blocking=True)
            if config.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            targets = targets.to(device, non_blocking=True)
            micro += 1
            last = micro % config.accum_steps == 0
            sync = net.no_sync() if info.enabled and not last else contextlib.nullcontext()
            with sync:
                with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                    loss = criterion(net(images), targets, loss_weight, config.ignore_index)
                scaler.scale(loss / config.accum_steps).backward()
            window_loss += loss.detach().float() / config.accum_steps
            if not last:
                continue
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            step += 1
            window_steps += 1
            bar.update(1)
            if window_steps == config.log_every or step % steps_per_epoch == 0:
                if info.enabled:
                    dist.all_reduce(window_loss)
                    window_loss /= info.world_size
                elapsed = time.perf_counter() - window_start
                images_s = window_steps * global_batch / elapsed
                mean_loss = window_loss.item() / window_steps
                current_lr = optimizer.param_groups[0]["lr"]
                bar.set_postfix(loss=f"{mean_loss:.4f}", lr=f"{current_lr:.2e}", img_s=f"{images_s:.1f}")
                log.record("train", epoch=epoch, step=step, loss=mean_loss, lr=current_lr, images_per_s=images_s)
                window_loss.zero_()
                window_steps, window_start = 0, time.perf_counter()
            if config.save_every and step % config.save_every == 0 and step % steps_per_epoch != 0:
                checkpoint(epoch, "last.pth")
        bar.close()

        if val_loader is not None:
            scores = evaluate(model, val_loader, K, device, config.ignore_index).compute()
            metrics = {k: v for k, v in scores.items() if k != "pixels"}
            log.record("val", epoch=epoch, step=step, miou=metrics["miou"], pixel_acc=metrics["pixel_acc"],
                       mean_acc=metrics["mean_acc"], iou=metrics["iou"])  # fmt: skip
            log.message(
                f"epoch {epoch + 1}/{config.epochs}: mIoU {100 * metrics['miou']:.1f}, "
                f"pixel acc {100 * metrics['pixel_acc']:.1f}"
            )
        is_best = metrics is not None and metrics["miou"] > best_miou
        if is_best:
            best_miou = metrics["miou"]
        state = checkpoint(epoch + 1, "last.pth")
        if is_best and info.is_main:
            save_checkpoint(state, out / "best.pth")
    log.close()
    return {
        "output_dir": str(out),
        "last": str(out / "last.pth"),
        "best": str(out / "best.pth") if best_miou >= 0 else None,
        "steps": step,
        "metrics": metrics,
        "best_miou": best_miou if best_miou >= 0 else None,
        "categories": categories,
    }
