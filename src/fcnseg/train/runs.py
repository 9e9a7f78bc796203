"""Run folders: one run per folder (refuse another run's files, or replace them with ``exist_ok``), and the log
a run writes there (console messages, ``log.jsonl``, TensorBoard)."""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from .config import TrainConfig

__all__ = ["RUN_FILES", "Logger", "check_output_dir", "clear_output_dir", "duration", "epoch_line", "own_folder"]


RUN_FILES = ("last.pth", "best.pth", "log.jsonl", "class_weights.txt", "tensorboard")  # what a run writes


def own_folder(out: Path, config: TrainConfig) -> bool:
    """Whether ``out`` is the folder of the checkpoint this run resumes: the run's own files."""
    return bool(config.resume) and out.resolve() == Path(config.resume).resolve().parent


def check_output_dir(out: Path, config: TrainConfig) -> None:
    """A folder belongs to one run: refuse to start in one that holds another run's files (see ``exist_ok``)."""
    if config.exist_ok or own_folder(out, config):
        return
    found = sorted(name for name in RUN_FILES if (out / name).exists())
    if found:
        last = out / "last.pth"
        resume = f"continue it with --resume {last}" if last.exists() else "it saved no checkpoint to --resume"
        raise FileExistsError(
            f"{out} already holds a run ({', '.join(found)}); {resume}, or start over in it with --exist-ok "
            "(its files are replaced), or choose another run folder with -o/--output"
        )


def clear_output_dir(out: Path) -> None:
    """``exist_ok``: the previous run's files go, so nothing of it is mixed with this run's (rank 0 only)."""
    for name in RUN_FILES:
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


class Logger:
    """Messages to the console, records to ``log.jsonl`` and (if installed) TensorBoard; rank 0 only."""

    def __init__(self, out: Path, enabled: bool) -> None:
        self.enabled = enabled
        self.path = out / "log.jsonl" if enabled else None
        self.tb: Any = None  # a SummaryWriter, or False when tensorboard is not installed
        self.tb_dir = out / "tensorboard"

    def message(self, text: str) -> None:
        """A line on stdout, above the bar if there is one; flushed, so a pipe (``| tee``) sees it at once."""
        if self.enabled:
            from tqdm import tqdm

            tqdm.write(text, file=sys.stdout)
            sys.stdout.flush()

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


def epoch_line(
    epoch: int, epochs: int, loss: float | None, lr: float, metrics: dict[str, Any] | None, took: float,
    left: float | None,
) -> str:  # fmt: skip
    """The line a finished epoch (1-based ``epoch``) prints, bar or no bar: mean training loss, lr, validation
    scores (if validated), how long it took and the time left (None: not known yet)."""
    parts = [f"epoch {epoch}/{epochs}: loss {'-' if loss is None else f'{loss:.4f}'}", f"lr {lr:.3g}"]
    if metrics is not None:
        parts.append(f"val mIoU {100 * metrics['miou']:.1f} (pixel acc {100 * metrics['pixel_acc']:.1f})")
    parts += [duration(took), f"ETA {'-' if left is None else duration(left)}"]
    return ", ".join(parts)


def duration(seconds: float) -> str:
    """``42 s``, ``3 min 05 s``, ``2 h 07 min``."""
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"
