"""Admission control and load shedding: decide at once whether a request can be answered before its deadline.

The idea of Envoy's and gRPC's admission control: refusing early is cheap, timing out late wastes the work.

1. Every request takes a slot (at most ``max_inflight``) before its body is read; none free: 503 at once.
2. From the image header (nothing decoded yet) its decoded size is charged to a memory budget, and its
   model-input pixels to the backlog: the pixels of every admitted request the model has not finished.
3. The backlog's expected time comes from :class:`ServiceTime`, a moving estimate of the model's seconds per
   input pixel. If the request would finish after its deadline, 503 at once with a ``Retry-After`` of the
   seconds the backlog needs to drain that far, instead of a 504 a minute later.

An idle server (empty backlog) admits any request within the limits: its estimate may be stale, and only
requests that run can correct it.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

__all__ = ["Admission", "OverloadError", "ServiceTime", "Ticket"]

SAFETY = 1.25  # expected times are stretched by this much before comparing them with a deadline


class OverloadError(Exception):
    """A request refused to protect the others; answered 503 with ``Retry-After: retry_after`` seconds."""

    def __init__(self, reason: str, retry_after: int) -> None:
        super().__init__(reason)
        self.reason, self.retry_after = reason, retry_after


class ServiceTime:
    """Exponentially weighted moving average of the model's seconds per input pixel, over finished batches.

    Args:
        alpha: weight of the newest batch (0.3: a change in load shows within a few batches).
    """

    def __init__(self, alpha: float = 0.3) -> None:
        self.alpha = alpha
        self.per_pixel: float | None = None  # None until a batch was timed

    def observe(self, seconds: float, pixels: int) -> None:
        """Fold in one batch that took ``seconds`` for ``pixels`` model-input pixels in all."""
        if pixels <= 0:
            return
        rate = seconds / pixels
        self.per_pixel = rate if self.per_pixel is None else self.per_pixel + self.alpha * (rate - self.per_pixel)

    def seconds(self, pixels: int) -> float:
        """Expected model time for ``pixels`` (0 while nothing was measured)."""
        return pixels * (self.per_pixel or 0.0)


@dataclass
class Ticket:
    """What one admitted request holds: its slot, and what it charged to the backlog and the memory budget."""

    pixels: int = 0
    bytes: int = 0


class Admission:
    """The server's bookkeeping of admitted work; used from the event loop only, so it needs no lock.

    Args:
        service: the model's service-time estimate.
        max_inflight: requests admitted at once (reading, decoding, queued or computing).
        max_bytes: decoded image bytes all admitted requests may hold together.
    """

    def __init__(self, service: ServiceTime, *, max_inflight: int, max_bytes: int) -> None:
        self.service, self.max_inflight, self.max_bytes = service, max_inflight, max_bytes
        self.inflight = self.backlog_pixels = self.held_bytes = 0

    def backlog_seconds(self) -> float:
        """Expected seconds until the model has finished every admitted request (with the safety factor)."""
        return SAFETY * self.service.seconds(self.backlog_pixels)

    def enter(self) -> Ticket:
        """Take a slot, before the body is read; :class:`OverloadError` when all are taken."""
        if self.inflight >= self.max_inflight:
            per_request = self.backlog_seconds() / max(self.inflight, 1)
            raise OverloadError(f"{self.inflight} requests in flight, the limit", _ceil(per_request))
        self.inflight += 1
        return Ticket()

    def charge(self, ticket: Ticket, *, pixels: int, nbytes: int, deadline: float) -> None:
        """Charge model pixels and decoded bytes, or raise :class:`OverloadError` if it cannot finish in time.

        ``deadline`` is on :func:`time.monotonic`'s clock.
        """
        idle = self.backlog_pixels == 0
        if not idle and self.held_bytes + nbytes > self.max_bytes:
            limit = f"decoded images in flight would exceed {self.max_bytes >> 20} MB"
            raise OverloadError(limit, _ceil(self.backlog_seconds()))
        finish = time.monotonic() + SAFETY * self.service.seconds(self.backlog_pixels + pixels)
        if not idle and finish > deadline:
            raise OverloadError(
                f"expected to finish {finish - deadline:.1f} s after its deadline", _ceil(finish - deadline)
            )
        ticket.pixels, ticket.bytes = pixels, nbytes
        self.backlog_pixels += pixels
        self.held_bytes += nbytes

    def computed(self, ticket: Ticket) -> None:
        """The model is done with this request: its pixels leave the backlog (its bytes stay until it is answered)."""
        self.backlog_pixels -= ticket.pixels
        ticket.pixels = 0

    def leave(self, ticket: Ticket) -> None:
        """The request is answered: give back its slot and everything it still holds."""
        self.computed(ticket)
        self.held_bytes -= ticket.bytes
        ticket.bytes = 0
        self.inflight -= 1


def _ceil(seconds: float) -> int:
    """Retry-After in whole seconds, at least 1."""
    return max(1, math.ceil(seconds))
