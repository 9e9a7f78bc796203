"""Stopping a run without losing work: SIGINT (Ctrl-C) or SIGTERM asks the loop to stop; it finishes the optimizer
step in progress, saves ``last.pth`` there and raises :class:`TrainingStopped`, which names the checkpoint that
``resume`` continues from. A second signal stops at once, without saving.

The handler only records the request: a signal never interrupts a checkpoint being written. Under torchrun every
rank gets the signal at a slightly different moment, so the ranks agree (an all-reduce of the request) at each
step and stop at the same one.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

import torch
import torch.distributed as dist

from ..distributed import DistInfo

__all__ = ["StopRequest", "TrainingStopped", "stop_on_signals"]

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class TrainingStopped(BaseException):
    """The run stopped on ``signum`` after saving ``checkpoint`` at optimizer step ``step``.

    A ``BaseException``, like ``KeyboardInterrupt``, so that no ``except Exception`` on the way out swallows it.
    """

    def __init__(self, signum: int, checkpoint: str, step: int) -> None:
        self.signum, self.checkpoint, self.step = signum, checkpoint, step
        name = signal.Signals(signum).name
        super().__init__(f"stopped by {name} at step {step}, saved; continue with --resume {checkpoint}")


class StopRequest:
    """The signal that asked the run to stop (0: none yet)."""

    def __init__(self) -> None:
        self.signum = 0

    def handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum:  # asked twice: stop now
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            raise SystemExit(128 + signum)
        self.signum = signum

    def agreed(self, info: DistInfo, device: torch.device) -> int:
        """The request as every rank sees it: the same on all of them (a collective under DDP)."""
        if not info.enabled:
            return self.signum
        flag = torch.tensor(self.signum, device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return int(flag)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[StopRequest]:
    """Record SIGINT and SIGTERM in a :class:`StopRequest` while the block runs; the previous handlers after.

    Python delivers signals to the main thread only: in another thread the request stays empty.
    """
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return
    previous = {s: signal.signal(s, request.handle) for s in SIGNALS}
    try:
        yield request
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
