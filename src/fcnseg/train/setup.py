"""Setting a run up: check the settings and the output folder, build data, model, optimizer and schedule, and
only then claim the folder. What it builds is a :class:`Run`, which every later phase reads."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, DistributedSampler, Subset

from ..data.check import validate_training_data
from ..distributed import DistInfo
from ..transforms import SegmentationTrain
from .checkpoint import seed_everything
from .config import REFERENCE_BATCH, REFERENCE_LR, TrainConfig, check_config, check_ignore_index
from .data import Augmented, class_weights_for, pad_collate, train_val_datasets
from .recipe import build_model, build_optimizer, place_model
from .runs import Logger, check_output_dir, clear_output_dir, own_folder

__all__ = ["Run", "setup_run"]


@dataclass
class Run:
    """What setup builds and every later phase reads: settings, data, model, optimisation, output."""

    config: TrainConfig
    info: DistInfo
    device: torch.device
    out: Path
    log: Logger
    categories: list[str]
    train_set: Augmented
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
    after_save: Callable[[], None] | None = None  # called on rank 0 after each save (fit's argument)


def setup_run(config: TrainConfig, ckpt: dict[str, Any] | None, info: DistInfo, device: torch.device) -> Run:
    """Check the settings and the output folder, build data, model, optimizer and schedule; nothing is written
    until all of it succeeded."""
    amp = check_config(config, info, device)
    out = Path(config.output_dir)
    check_output_dir(out, config)  # on every rank, before the first collective: before rank 0 writes anything
    if config.deterministic:
        torch.use_deterministic_algorithms(True)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.benchmark = not config.deterministic

    train_raw, val_set = train_val_datasets(config)

    # Model: the same initialisation on every rank; a resumed run's weights come from its checkpoint (restore).
    seed_everything(config.seed)
    if ckpt is None:
        model, categories, fresh = build_model(config, getattr(train_raw, "categories", None))
    else:
        bare = replace(config, weights=None, weights_backbone=None, num_classes=ckpt["num_classes"])
        model, categories, fresh = build_model(bare, ckpt["categories"])
    check_ignore_index(config.ignore_index, len(categories))
    validate_training_data(train_raw, config.ignore_index)  # unmapped mask values, classes without pixels
    if ckpt is None:
        class_weights = class_weights_for(config, train_raw, len(categories))
    else:
        saved = ckpt.get("class_weights")
        class_weights = None if saved is None else torch.tensor(saved)
    if class_weights is not None:
        class_weights = class_weights.to(device)
    model, net = place_model(model, config, info, device)

    # Data order: every rank draws its share of each global batch; validation images are split across ranks
    # (each scores every world_size-th one) and the confusion matrices summed.
    train_set = Augmented(
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
    optimizer, scheduler = build_optimizer(model, config, lr, steps_per_epoch)

    run = Run(
        config=config, info=info, device=device, out=out, log=Logger(out, info.is_main), categories=categories,
        train_set=train_set, sampler=sampler, val_loader=val_loader, model=model, net=net, optimizer=optimizer,
        scheduler=scheduler, scaler=torch.amp.GradScaler(device.type, enabled=amp == "fp16"),
        amp_dtype={"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp), class_weights=class_weights,
        global_batch=global_batch, steps_per_epoch=steps_per_epoch,
    )  # fmt: skip
    open_output(run, lr, fresh, amp, new=ckpt is None)
    return run


def open_output(run: Run, lr: float, fresh: list[str], amp: str, *, new: bool) -> None:
    """Everything checked: claim the output folder (rank 0) and say how the run is set up; a new run records its
    start and class weights."""
    config, info, out = run.config, run.info, run.out
    if info.is_main:
        if config.exist_ok and not own_folder(out, config):
            clear_output_dir(out)
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
