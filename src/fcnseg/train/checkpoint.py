"""Checkpoints: the run state, RNG states, atomic writing, and the rules a resumed run follows.

A run writes two self-describing (nanoGPT style), versioned (``format``, ``version``) files:

- ``last.pth``, to continue the run: the run state (``epoch``, ``step``, ``samples``, ``best_miou``,
  ``metrics``), the optimizer steps an epoch has (``steps_per_epoch``, to say where the run stood), the model's
  state dict under ``model`` in torchvision's key layout, the optimizer, scheduler and grad-scaler states, every
  rank's RNG states, the global batch, the class weights, the full config (``config``: a dict of
  :class:`TrainConfig` fields, sizes included) and the class names (``categories``).
- ``best.pth``, to use the best model: ``model``, ``config``, ``categories``, ``model_name``, ``num_classes``,
  the format fields, and where and what it scored (``epoch``, ``step``, ``samples``, ``best_miou``, ``metrics``).

Either alone can be evaluated, exported or served; ``last.pth`` alone can be resumed.
"""

from __future__ import annotations

import os
import random
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.distributed as dist

from .._atomic import atomic_path
from ..distributed import DistInfo
from ..weights import CHECKPOINT_FORMAT, CHECKPOINT_VERSION, WeightsError, fit_state_dict, read_checkpoint
from .config import RUNTIME_FIELDS, TrainConfig

if TYPE_CHECKING:
    from .setup import Run

# What a run's two files hold: last.pth all of a run_checkpoint, best.pth these keys of it.
RESUME_KEYS = ("optimizer", "scheduler", "scaler", "rng", "config", "epoch", "step", "samples", "global_batch")
INFERENCE_KEYS = ("format", "version", "model", "config", "categories", "model_name", "num_classes", "epoch", "step",
                  "samples", "best_miou", "metrics")  # fmt: skip

__all__ = [
    "INFERENCE_KEYS",
    "RESUME_KEYS",
    "RunState",
    "all_rng_states",
    "changed_fields",
    "checkpoint_place",
    "inference_checkpoint",
    "load_resume",
    "per_process_batch",
    "restore",
    "run_checkpoint",
    "resumed_config",
    "save_checkpoint",
    "seed_everything",
    "tensor_bytes",
]


def save_checkpoint(obj: dict[str, Any], path: str | Path) -> None:
    """``torch.save`` that never leaves a half-written file at ``path``: temp file in the same folder, fsync, rename.

    The free space is checked first against the bytes of the tensors it holds, so even a run's first checkpoint
    is refused on a disk that cannot take it, before a byte is written."""
    with atomic_path(path, durable=True, size=tensor_bytes(obj)) as tmp, open(tmp, "wb") as f:
        torch.save(obj, f)


def tensor_bytes(obj: Any) -> int:
    """Bytes of the tensor storages in ``obj`` (dicts, lists and tuples walked), each storage counted once as
    ``torch.save`` writes it: a lower bound of the file's size."""
    storages: dict[tuple[int, int], int] = {}
    stack = [obj]
    while stack:
        item = stack.pop()
        if isinstance(item, torch.Tensor):
            storage = item.untyped_storage()
            storages[(storage.data_ptr(), storage.nbytes())] = storage.nbytes()
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return sum(storages.values())


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


def all_rng_states(info: DistInfo) -> list[dict[str, Any]]:
    """Every rank's RNG states, in rank order (collective under DDP)."""
    if not info.enabled:
        return [_rng_state()]
    states: list[Any] = [None] * info.world_size
    dist.all_gather_object(states, _rng_state())
    return states


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def load_resume(path: str | Path) -> dict[str, Any]:
    """A run's ``last.pth``: the model and everything a run needs to continue (a newer format is refused on
    reading). ``best.pth`` holds the model only: it starts a new run (``--weights``), it does not resume one."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint to resume from")
    model, ckpt = read_checkpoint(path)
    if ckpt.get("format") != CHECKPOINT_FORMAT:
        raise WeightsError(f"{path}: not an fcnseg training checkpoint; start a new run from it with --weights")
    missing = [k for k in RESUME_KEYS if k not in ckpt]
    if missing:
        raise WeightsError(
            f"{path}: holds a model for inference (no {missing[0]!r}), not a run to resume: resume from the run's "
            "last.pth, or start a new run from this one with --weights"
        )
    ckpt["model"] = model
    return ckpt


def run_checkpoint(run: Run, state: RunState) -> dict[str, Any]:
    """``last.pth``: the run state with everything needed to continue it (collective under DDP: it gathers every
    rank's RNG states)."""
    return {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        **asdict(state),
        "model": run.model.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(),
        "scaler": run.scaler.state_dict(),
        "rng": all_rng_states(run.info),
        "global_batch": run.global_batch,
        "steps_per_epoch": run.steps_per_epoch,
        "config": asdict(run.config),
        "categories": run.categories,
        "model_name": run.config.model,
        "num_classes": len(run.categories),
        "class_weights": run.class_weights.tolist() if run.class_weights is not None else None,
    }


def checkpoint_place(ckpt: dict[str, Any]) -> str:
    """Where in its run a checkpoint was saved, for messages: ``epoch 2`` at the end of epoch 2, ``epoch 3, step 7``
    within epoch 3 (step: the run's optimizer steps); ``step 7 (2 epochs finished)`` for a file that does not
    record how many steps an epoch has."""
    epoch, step, per_epoch = ckpt["epoch"], ckpt.get("step"), ckpt.get("steps_per_epoch")
    if step is None or (per_epoch and step == epoch * per_epoch):
        return f"epoch {epoch}"
    if per_epoch:
        return f"epoch {epoch + 1}, step {step}"
    return f"step {step} ({epoch} epoch{'s' * (epoch != 1)} finished)"


def inference_checkpoint(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """``best.pth``: what inference reads (weights, config with the sizes, categories, format) and what the model
    scored where; no optimizer, schedule or RNG states, so half the size of ``last.pth``."""
    return {k: checkpoint[k] for k in INFERENCE_KEYS}


def changed_fields(config: TrainConfig) -> dict[str, Any]:
    """The fields of ``config`` set to something other than their defaults (``fit(TrainConfig(resume=...))``)."""
    default = TrainConfig()
    return {f.name: getattr(config, f.name) for f in fields(TrainConfig)
            if f.name != "resume" and getattr(config, f.name) != getattr(default, f.name)}  # fmt: skip


def resumed_config(ckpt: dict[str, Any], path: str, changes: dict[str, Any]) -> TrainConfig:
    """The checkpoint's config with ``changes`` applied: runtime fields only; others must equal the checkpoint's.

    The output folder is the checkpoint's own (so a copied run folder resumes into the copy), unless changed.
    """
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(changes) - known)
    if unknown:
        raise TypeError(f"unknown settings {unknown}")
    saved = TrainConfig(**{k: v for k, v in ckpt["config"].items() if k in known})
    differ = {k: v for k, v in changes.items() if k not in RUNTIME_FIELDS and v != getattr(saved, k)}
    finished = ckpt["epoch"] >= saved.epochs
    if "epochs" in differ and finished and differ["epochs"] > saved.epochs:
        raise ValueError(
            f"{path} finished its {saved.epochs} epochs and its learning rate has decayed to 0; to train more, "
            f"fine-tune from it: fcnseg train --weights {path} --epochs N -o NEW_FOLDER"
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


def per_process_batch(global_batch: int, world_size: int, accum_steps: int, batch_size: int | None = None) -> int:
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


def restore(run: Run, ckpt: dict[str, Any], state: RunState) -> None:
    """Load a checkpoint's model, optimizer, schedule and RNG states into a freshly set-up run."""
    fit_state_dict(run.model, ckpt["model"], str(run.config.resume))
    run.optimizer.load_state_dict(ckpt["optimizer"])
    run.scheduler.load_state_dict(ckpt["scheduler"])
    run.scaler.load_state_dict(ckpt["scaler"])
    info, rng = run.info, ckpt.get("rng") or []
    if len(rng) == info.world_size:
        _set_rng_state(rng[info.rank])
    else:  # another number of processes cannot replay the same dropout masks; continue with fresh seeds
        seed_everything(run.config.seed + info.rank + state.step)
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
