"""The loop: :func:`fit` sets a run up, then per epoch trains, validates, saves and says one line, moving one
:class:`RunState` forward; :func:`resume` continues a saved run exactly. SIGINT or SIGTERM saves ``last.pth`` at
the current step and stops (see ``stop.py``)."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from ..distributed import DistInfo, process_group
from ..evaluate import evaluate
from .checkpoint import (
    RunState,
    changed_fields,
    inference_checkpoint,
    load_resume,
    per_process_batch,
    restore,
    resumed_config,
    run_checkpoint,
    save_checkpoint,
    seed_everything,
)
from .config import TrainConfig
from .data import epoch_loader
from .recipe import criterion, set_train_mode
from .runs import epoch_line
from .setup import Run, setup_run
from .stop import StopRequest, TrainingStopped, stop_on_signals

__all__ = ["TrainingStopped", "fit", "resume"]

clock = time.monotonic  # the epoch times and ETA; a test may set another


def fit(config: TrainConfig, *, after_save: Callable[[], None] | None = None) -> dict[str, Any]:
    """Train a run; with ``config.resume``, continue one (see :func:`resume`: the fields set to something other
    than their defaults are the changes asked for). Returns paths, the last validation scores and the best mIoU.

    Under torchrun every process calls this; only rank 0 writes files and prints, and calls ``after_save`` each
    time it saved the checkpoints (the CLI uploads a run folder kept in a bucket then).
    """
    if config.resume:
        return resume(config.resume, after_save=after_save, **changed_fields(config))
    # absolute paths, so the checkpoint's config resumes from any working directory
    config = replace(config, data_root=os.path.abspath(config.data_root), output_dir=os.path.abspath(config.output_dir))
    with process_group(config.device) as (info, device):
        return _train(config, None, info, device, after_save)


def resume(checkpoint: str | Path, *, after_save: Callable[[], None] | None = None, **changes: Any) -> dict[str, Any]:
    """Continue the run saved in ``checkpoint`` exactly, in the checkpoint's own folder unless ``output_dir`` says
    otherwise. ``changes`` may set the runtime fields (where the data and output are, workers, device, logging,
    checkpoint frequency) and the per-process batch layout that keeps the global batch (another number of
    processes); any other setting must equal the checkpoint's: a different value is an error that lists it.
    """
    ckpt = load_resume(checkpoint)
    config = resumed_config(ckpt, str(checkpoint), changes)
    with process_group(config.device) as (info, device):
        accum = changes.get("accum_steps", config.accum_steps)
        batch = per_process_batch(ckpt["global_batch"], info.world_size, accum, changes.get("batch_size"))
        config = replace(config, batch_size=batch, accum_steps=accum)
        return _train(config, ckpt, info, device, after_save)


def _train(
    config: TrainConfig,
    ckpt: dict[str, Any] | None,
    info: DistInfo,
    device: torch.device,
    after_save: Callable[[], None] | None,
) -> dict[str, Any]:
    """Setup, then per epoch: train, validate, save, report. ``ckpt`` is the checkpoint a resumed run continues."""
    run = setup_run(config, ckpt, info, device)
    run.after_save = after_save
    if ckpt is None:
        state = RunState()
        seed_everything(config.seed + info.rank)  # dropout differs per rank, as with independent GPUs
    else:
        state = RunState(**{f.name: ckpt[f.name] for f in fields(RunState)})
        restore(run, ckpt, state)
    if state.epoch >= config.epochs:
        run.log.message(f"{config.resume} has finished its {config.epochs} epochs: nothing to do")
    started, start_samples = clock(), state.samples
    total = config.epochs * run.steps_per_epoch * run.global_batch  # samples, all processes together
    with stop_on_signals() as stop, contextlib.closing(run.log):
        while state.epoch < config.epochs:
            epoch_start = clock()
            loss = _train_epoch(run, state, stop)
            if run.val_loader is not None:
                _validate(run, state)
            is_best = state.metrics is not None and state.metrics["miou"] > state.best_miou
            if is_best:
                state.best_miou = state.metrics["miou"]
            state.epoch += 1
            _save(run, state, best=is_best)
            now, trained = clock(), state.samples - start_samples
            # the time left: the samples left at this process's pace so far (validation included)
            left = (total - state.samples) * (now - started) / trained if trained else None
            lr = run.optimizer.param_groups[0]["lr"]
            line = epoch_line(state.epoch, config.epochs, loss, lr, state.metrics, now - epoch_start, left)
            run.log.message(line)
            if state.epoch < config.epochs:
                _stop_if_asked(run, state, stop)  # a signal during validation: last.pth is this epoch's
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


def _train_epoch(run: Run, state: RunState, stop: StopRequest) -> float | None:
    """Train the rest of epoch ``state.epoch``: from the sample where a resumed run stopped to the epoch's end.

    Returns the mean training loss of the steps taken (None if there were none); stops when ``stop`` is asked.
    """
    config, info, device = run.config, run.info, run.device
    done_samples = state.samples - state.epoch * run.steps_per_epoch * run.global_batch  # all ranks together
    done = done_samples // run.global_batch  # optimizer steps of this epoch already taken
    run.sampler.set_epoch(state.epoch)
    run.train_set.epoch = state.epoch
    loader = epoch_loader(run.train_set, run.sampler, done_samples // info.world_size, config, device)
    set_train_mode(run.model, config)
    from tqdm import tqdm

    epoch_loss, epoch_steps = 0.0, 0
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
                loss = criterion(run.net(images), targets, run.class_weights, config.ignore_index)
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
            epoch_loss, epoch_steps = epoch_loss + window_loss.item(), epoch_steps + window_steps
            window_loss.zero_()
            window_steps, window_start = 0, time.perf_counter()
        saved = config.save_every and state.step % config.save_every == 0 and not end_of_epoch
        if saved:
            _save(run, state)
        if not end_of_epoch:  # after the epoch's last step, it stops once the epoch is validated and saved
            _stop_if_asked(run, state, stop, save=not saved)
    bar.close()
    return epoch_loss / epoch_steps if epoch_steps else None


def _validate(run: Run, state: RunState) -> None:
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


def _save(run: Run, state: RunState, *, best: bool = False) -> None:
    """Write ``last.pth`` (to continue the run) and, for the best model so far, ``best.pth`` (to use it).

    Collective under DDP (it gathers every rank's RNG states); rank 0 writes.
    """
    checkpoint = run_checkpoint(run, state)
    if run.info.is_main:
        save_checkpoint(checkpoint, run.out / "last.pth")
        if best:
            save_checkpoint(inference_checkpoint(checkpoint), run.out / "best.pth")
        if run.after_save is not None:
            run.after_save()


def _stop_if_asked(run: Run, state: RunState, stop: StopRequest, *, save: bool = False) -> None:
    """On a signal (agreed by every rank), save ``last.pth`` at this step if ``save`` and raise TrainingStopped."""
    signum = stop.agreed(run.info, run.device)
    if not signum:
        return
    if save:
        _save(run, state)
    run.log.record("stop", epoch=state.epoch, step=state.step, samples=state.samples, signal=signum)
    raise TrainingStopped(signum, str(run.out / "last.pth"), state.step)
