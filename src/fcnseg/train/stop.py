"""Stopping a run without losing work: SIGINT (Ctrl-C) or SIGTERM asks the loop to stop; it finishes the optimizer
step in progress, saves ``last.pth`` there and raises :class:`TrainingStopped`, which names the checkpoint that
``resume`` continues from. A second signal stops at once, without saving.

The handler only records the request and says so at once (``stopping after this step, about 12 s; Ctrl-C again
stops without saving``): a signal never interrupts a checkpoint being written, and the wait, which can be a step,
a validation and a save, is estimated from the times the loop measured (:class:`Pace`), so that nobody presses
Ctrl-C again thinking the first one was lost. Under torchrun every rank gets the signal at a slightly different
moment, so the ranks agree (an all-reduce of the request) at each step and stop at the same one.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import FrameType

import torch
import torch.distributed as dist

from ..distributed import DistInfo

__all__ = ["Pace", "StopRequest", "TrainingStopped", "stop_on_signals"]

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class TrainingStopped(BaseException):
    """The run stopped on ``signum`` after saving ``checkpoint`` at optimizer step ``step``.

    A ``BaseException``, like ``KeyboardInterrupt``, so that no ``except Exception`` on the way out swallows it.
    """

    def __init__(self, signum: int, checkpoint: str, step: int) -> None:
        self.signum, self.checkpoint, self.step = signum, checkpoint, step
        name = signal.Signals(signum).name
        super().__init__(f"stopped by {name} at step {step}, saved; continue with --resume {checkpoint}")


@dataclass
class Pace:
    """What the loop measured, to say how long stopping takes: the seconds of the last optimizer step (data loading
    included), validation and checkpoint save (None: not yet timed), and what it is doing now, since when."""

    step_s: float | None = None
    validate_s: float | None = None
    save_s: float | None = None
    phase: str = "step"  # "step", "validate", "save", or "idle" (between them: the loop stops at once)
    since: float = 0.0  # the clock when the phase began
    validate_next: bool = False  # the step in progress ends the epoch: validation and a save follow it

    def enter(self, phase: str, now: float, *, validate_next: bool = False) -> None:
        self.phase, self.since, self.validate_next = phase, now, validate_next

    def took(self, now: float) -> None:
        """The phase in progress ended at ``now``: its time is the estimate for the next one. What follows until the
        loop checks for a signal is a save (after a step or a validation; a validation first after an epoch's last
        step), else nothing."""
        setattr(self, f"{self.phase}_s", now - self.since)
        if self.phase == "step" and self.validate_next:
            self.enter("validate", now)
        else:
            self.enter("save" if self.phase in ("step", "validate") else "idle", now)

    def left(self, now: float) -> float | None:
        """Seconds until the run has stopped: the rest of this phase, then what follows it up to the save; None while
        a part of that has not been timed yet (but for a first save, which counts as nothing)."""
        if self.phase == "idle":
            return 0.0
        parts = {"step": ["step", "save"], "validate": ["validate", "save"], "save": ["save"]}[self.phase]
        if self.phase == "step" and self.validate_next:
            parts = ["step", "validate", "save"]
        current, *rest = (getattr(self, f"{p}_s") for p in parts)
        if current is None or None in rest[:-1]:
            return None
        return max(current - (now - self.since), 0.0) + sum(t or 0.0 for t in rest)


class StopRequest:
    """The signal that asked the run to stop (0: none yet); the first one is acknowledged with ``announce``."""

    def __init__(self, announce: Callable[[str], None] | None = None, clock: Callable[[], float] = time.monotonic):
        self.signum = 0
        self.pace, self.announce, self.clock = Pace(), announce, clock

    def handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum:  # asked twice: stop now
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            raise SystemExit(128 + signum)
        self.signum = signum
        if self.announce is not None:
            self.announce(self.acknowledgement(signum))

    def acknowledgement(self, signum: int) -> str:
        """``stopping after this step, about 12 s; Ctrl-C again stops without saving``: what the first signal does
        (the checkpoint is saved where it stops)."""
        again = "Ctrl-C again" if signum == signal.SIGINT else f"{signal.Signals(signum).name} again"
        if self.pace.phase == "idle":
            return f"stopping now; {again} stops without saving"
        where = {"step": "this step", "validate": "this validation", "save": "saving the checkpoint"}[self.pace.phase]
        left = self.pace.left(self.clock())
        wait = f", about {max(1, round(left))} s" if left is not None else " (not timed yet)"
        return f"stopping after {where}{wait}; {again} stops without saving"

    def agreed(self, info: DistInfo, device: torch.device) -> int:
        """The request as every rank sees it: the same on all of them (a collective under DDP)."""
        if not info.enabled:
            return self.signum
        flag = torch.tensor(self.signum, device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return int(flag)


def say_now(line: str) -> None:
    """Write a line to stderr from a signal handler: straight to the file descriptor, since the handler may run
    while the main thread is inside ``sys.stderr.write`` (a progress bar), which Python's writer refuses to
    re-enter."""
    os.write(2, f"{line}\n".encode())


@contextlib.contextmanager
def stop_on_signals(
    announce: Callable[[str], None] | None = say_now, clock: Callable[[], float] = time.monotonic
) -> Iterator[StopRequest]:
    """Record SIGINT and SIGTERM in a :class:`StopRequest` while the block runs; the previous handlers after. The
    first signal is acknowledged with ``announce`` (None: silently, as on the ranks other than 0).

    Python delivers signals to the main thread only: in another thread the request stays empty.
    """
    request = StopRequest(announce, clock)
    if threading.current_thread() is not threading.main_thread():
        yield request
        return
    previous = {s: signal.signal(s, request.handle) for s in SIGNALS}
    try:
        yield request
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
