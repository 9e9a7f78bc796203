"""Progress of one clip, frame by frame: a bar on a terminal, a line every few seconds in a log.

A clip of a few minutes takes minutes on a CPU; silence that long reads as a hang. On a terminal, tqdm's bar shows
frames done, frames per second and the time left; otherwise (a log file, a pipe, CI) one line every ``every``
seconds says the same. The clock is a parameter, so that tests drive it instead of waiting.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

from tqdm import tqdm

__all__ = ["FrameProgress"]


class FrameProgress:
    """Frames of one clip as they are written: :meth:`update` per frame, :meth:`close` at the end.

    Args:
        label: how the lines name the clip.
        total: the frames expected (the container's count, or an estimate from its duration); None if unknown.
        quiet: no bar and no lines.
        stream: where both go (default: stderr); a terminal gets the bar, anything else the lines.
        every: seconds between two lines.
        clock: seconds, monotonic (default: :func:`time.monotonic`).
    """

    def __init__(
        self,
        label: str,
        total: int | None,
        *,
        quiet: bool = False,
        stream: TextIO | None = None,
        every: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream = stream or sys.stderr
        self.label, self.total, self.every, self.clock = label, total, every, clock
        terminal = self.stream.isatty()
        self.bar = None if quiet or not terminal else tqdm(total=total, unit="frame", desc=label, leave=False,
                                                           file=self.stream)  # fmt: skip
        self.lines = not quiet and not terminal
        self.done = 0
        self.start = self.said = clock()

    def update(self) -> None:
        """One more frame written."""
        self.done += 1
        if self.bar is not None:
            self.bar.update()
        elif self.lines and self.clock() - self.said >= self.every:
            self.said = self.clock()
            print(f"fcnseg segment: {self.label}: {self.line()}", file=self.stream, flush=True)

    def line(self) -> str:
        """``30/60 frames (50%), 2.0 frames/s, about 15 s left`` (what is known of it)."""
        elapsed = self.clock() - self.start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        if not self.total:
            return f"{self.done} frames, {rate:.1f} frames/s"
        left = max(self.total - self.done, 0)
        eta = f", about {left / rate:.0f} s left" if rate > 0 else ""
        return f"{self.done}/{self.total} frames ({100 * self.done / self.total:.0f}%), {rate:.1f} frames/s{eta}"

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
