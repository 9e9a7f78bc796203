"""Run folders: one run per folder (refuse another run's files, or replace them with ``exist_ok``), and the log
a run writes there (console messages, ``log.jsonl``, TensorBoard)."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from .config import TrainConfig

__all__ = ["RUN_FILES", "Logger", "check_output_dir", "clear_output_dir", "own_folder"]


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
            "(its files are replaced), or choose another --output-dir"
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
