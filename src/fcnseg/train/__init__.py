"""Training and fine-tuning with torchvision's reference recipe; resumable; one process or torchrun (DDP).

``fit(TrainConfig(...))`` trains, ``resume(checkpoint)`` continues; ``fcnseg train`` is a thin layer over them.
The recipe (``references/segmentation/train.py``): SGD, momentum 0.9, weight decay 1e-4, lr 0.02 for a global
batch of 32 (scaled linearly here), poly decay with power 0.9 stepped every iteration (optional linear warm-up),
the aux head at 10x lr, loss = CE(out) + 0.5 * CE(aux) with ignore index 255 (configurable), 30 epochs.

Determinism, which makes ``resume`` exact and one process equal to many: the sampler shuffles with
``seed + epoch``; every sample's augmentation draws from a generator seeded by (seed, epoch, index); the loader
has a private generator, so the global torch RNG is consumed only by the model (dropout) and is checkpointed.

A run folder belongs to one run: a new run refuses a folder holding another run's files (``exist_ok`` replaces
them), and a resumed run continues in its checkpoint's folder, with the settings it started with.

The files, in the order a run meets them:

- ``config.py``: :class:`TrainConfig`, everything that defines a run, and the checks on its values.
- ``data.py``: datasets, per-sample seeded augmentation, the resumable sampler, padding collate, class weights.
- ``recipe.py``: the model to train (fine-tuning), the loss, the optimizer and the poly schedule.
- ``runs.py``: the output folder (one run per folder) and the log written there.
- ``checkpoint.py``: the run state, RNG states, atomic writes, and the rules a resumed run follows.
- ``setup.py``: builds a :class:`Run` (data, model, optimizer, output) from a config, writing nothing until it all
  succeeded.
- ``stop.py``: SIGINT/SIGTERM save the current step and stop (:class:`TrainingStopped`).
- ``loop.py``: :func:`fit` and :func:`resume`: setup, then per epoch train, validate, save, one line said.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_attributes

if TYPE_CHECKING:
    from .checkpoint import RunState, save_checkpoint
    from .config import TrainConfig
    from .data import build_dataset, class_weights_from_masks, pad_collate
    from .loop import fit, resume
    from .recipe import build_model, criterion, load_finetune_state_dict, poly_lr_factor
    from .stop import TrainingStopped

__all__ = [
    "RunState",
    "TrainConfig",
    "TrainingStopped",
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

# imported on first use, so that ``fcnseg train --help`` reads TrainConfig's defaults without importing torch
__getattr__, __dir__ = lazy_attributes(
    __name__,
    {
        **dict.fromkeys(["RunState", "save_checkpoint"], ".checkpoint"),
        "TrainConfig": ".config",
        **dict.fromkeys(["build_dataset", "class_weights_from_masks", "pad_collate"], ".data"),
        **dict.fromkeys(["fit", "resume"], ".loop"),
        **dict.fromkeys(["build_model", "criterion", "load_finetune_state_dict", "poly_lr_factor"], ".recipe"),
        "TrainingStopped": ".stop",
    },
)
