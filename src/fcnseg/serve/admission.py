"""Admission control: refuse at once what cannot be answered in time, so the server keeps answering the rest.

1. On arrival, before the body is read: a server whose slots are all taken answers 503 at once.
2. While the body is read (by :mod:`.upload`, under a deadline and a minimum rate), its bytes are charged to the
   memory budget from the first byte; a reader holds no slot, so slow uploads cannot lock other clients out.
3. With the body read, the request takes a slot (at most ``max_inflight``, and at most ``max_per_client`` for one
   client address, so one address cannot take them all). From the image header (nothing decoded yet) its decoded
   size is charged to the memory budget, and its cost to the backlogs of the model (model-input pixels, plus the
   uploaded pixels the pre- and postprocessing touch) and of the decode/encode pool (uploaded pixels).
4. The backlogs' expected time comes from :class:`ServiceTime`, moving estimates of seconds per unit of cost.
   If the request would finish after its deadline, 503 at once with a ``Retry-After`` of the seconds the
   backlog needs to drain that far, instead of a 504 a minute later.

An idle server (empty backlog) admits any request within the limits: its estimate may be stale, and only
requests that run can correct it.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from dataclasses import dataclass

__all__ = ["Admission", "OverloadError", "ServiceTime", "Ticket"]

SAFETY = 1.25  # expected times are stretched by this much before comparing them with a deadline


class OverloadError(Exception):
    """A request refused to protect the others; answered 503 with ``Retry-After: retry_after`` seconds."""

    def __init__(self, reason: str, retry_after: int) -> None:
        super().__init__(reason)
        self.reason, self.retry_after = reason, retry_after


class ServiceTime:
    """Moving estimate of seconds per unit of work (a pixel), made pessimistic by its own jitter.

    Like TCP's retransmission timer (RFC 6298): a moving mean of the observed rate and a moving mean of its
    deviation; :meth:`seconds` uses mean + ``k`` deviations, so on a noisy (shared) CPU the estimate covers most
    observations instead of half of them.

    Args:
        alpha: weight of the newest observation in the mean (0.3: a change in load shows within a few batches).
        beta: the same for the deviation.
        k: deviations added to the mean.
    """

    def __init__(self, alpha: float = 0.3, beta: float = 0.25, k: float = 2.0) -> None:
        self.alpha, self.beta, self.k = alpha, beta, k
        self.per_pixel: float | None = None  # the mean; None until something was timed
        self.deviation = 0.0

    def observe(self, seconds: float, pixels: int) -> None:
        """Fold in one observation: ``seconds`` for ``pixels`` units of work in all."""
        if pixels <= 0:
            return
        rate = seconds / pixels
        if self.per_pixel is None:
            self.per_pixel, self.deviation = rate, rate / 2
            return
        self.deviation += self.beta * (abs(rate - self.per_pixel) - self.deviation)
        self.per_pixel += self.alpha * (rate - self.per_pixel)

    def seconds(self, pixels: int) -> float:
        """Expected (pessimistic) seconds for ``pixels`` units of work; 0 while nothing was measured."""
        if self.per_pixel is None:
            return 0.0
        return pixels * (self.per_pixel + self.k * self.deviation)


@dataclass
class Ticket:
    """What one request holds: its slot once admitted, and what it charged to the backlogs and the memory budget."""

    client: str = ""
    slot: bool = False
    upload_bytes: int = 0  # of the body read so far (released once the image is decoded)
    cost: int = 0  # model cost: model-input pixels, plus uploaded pixels weighted by their share of the work
    image_pixels: int = 0
    bytes: int = 0


class Admission:
    """The server's bookkeeping of admitted work; used from the event loop only, so it needs no lock.

    Two stages can be the bottleneck, so both are estimated: the model (one thread, cost in model pixels) and
    the pool that decodes uploads and encodes answers (``pool_workers`` threads, cost in uploaded pixels).

    Args:
        service: the model's service-time estimate (seconds per unit of cost).
        pool: the decode/encode pool's estimate (seconds per uploaded pixel).
        pool_workers: threads of that pool.
        max_inflight: requests admitted at once (body read; decoding, queued or computing).
        max_bytes: upload and decoded image bytes all requests may hold together.
        max_per_client: slots one client address may hold at once (None: no share, any client may take all).
    """

    def __init__(
        self,
        service: ServiceTime,
        pool: ServiceTime,
        *,
        pool_workers: int,
        max_inflight: int,
        max_bytes: int,
        max_per_client: int | None = None,
    ) -> None:
        self.service, self.pool, self.pool_workers = service, pool, pool_workers
        self.max_inflight, self.max_bytes, self.max_per_client = max_inflight, max_bytes, max_per_client
        self.inflight = self.backlog = self.pool_backlog = self.held_bytes = 0
        self.per_client: Counter[str] = Counter()  # slots held, by client address

    def backlog_seconds(self, cost: int = 0, image_pixels: int = 0) -> float:
        """Expected seconds until every admitted request (plus one of ``cost`` and ``image_pixels``) is done,
        with the safety factor."""
        pool = self.pool.seconds(self.pool_backlog + image_pixels) / self.pool_workers
        return SAFETY * (self.service.seconds(self.backlog + cost) + pool)

    def arrive(self, client: str) -> Ticket:
        """A request from ``client`` arrived (its body not read yet); :class:`OverloadError` when every slot is
        taken or the client holds its share, so the server does not read uploads it cannot take."""
        ticket = Ticket(client)
        self._check_free(ticket)
        return ticket

    def hold_upload(self, ticket: Ticket, nbytes: int) -> None:
        """Charge ``nbytes`` more of a body being read to the memory budget; :class:`OverloadError` when it would
        exceed the budget (unless this request is the only one holding memory: it may use it all)."""
        if self.held_bytes > ticket.upload_bytes + ticket.bytes and self.held_bytes + nbytes > self.max_bytes:
            raise OverloadError(f"uploads and images in flight would exceed {self.max_bytes >> 20} MB", 1)
        ticket.upload_bytes += nbytes
        self.held_bytes += nbytes

    def enter(self, ticket: Ticket) -> None:
        """Take a slot, once the body is read; :class:`OverloadError` when all are taken or its client holds its
        share of them."""
        self._check_free(ticket)
        ticket.slot = True
        self.inflight += 1
        self.per_client[ticket.client] += 1

    def _check_free(self, ticket: Ticket) -> None:
        """:class:`OverloadError` unless a slot is free for ``ticket``'s client."""
        per_request = _ceil(self.backlog_seconds() / max(self.inflight, 1))
        if self.inflight >= self.max_inflight:
            raise OverloadError(f"{self.inflight} requests in flight, the limit", per_request)
        share = self.max_per_client
        if share is not None and self.per_client[ticket.client] >= share:
            raise OverloadError(f"this client has {share} requests in flight, its share", per_request)

    def charge(self, ticket: Ticket, *, cost: int, image_pixels: int, nbytes: int, deadline: float) -> None:
        """Charge the model cost, uploaded pixels and decoded bytes of a request, or raise :class:`OverloadError`
        if it cannot finish before ``deadline`` (on :func:`time.monotonic`'s clock)."""
        idle = self.backlog == 0 and self.pool_backlog == 0
        if not idle and self.held_bytes + nbytes > self.max_bytes:
            limit = f"decoded images in flight would exceed {self.max_bytes >> 20} MB"
            raise OverloadError(limit, _ceil(self.backlog_seconds()))
        finish = time.monotonic() + self.backlog_seconds(cost, image_pixels)
        if not idle and finish > deadline:
            raise OverloadError(
                f"expected to finish {finish - deadline:.1f} s after its deadline", _ceil(finish - deadline)
            )
        ticket.cost, ticket.image_pixels, ticket.bytes = cost, image_pixels, nbytes
        self.backlog += cost
        self.pool_backlog += image_pixels
        self.held_bytes += nbytes

    def decoded(self, ticket: Ticket) -> None:
        """The pool has decoded this request: its pixels leave the pool's backlog (the estimate per pixel
        includes encoding the answer later, so decoded requests need not be counted again), its upload bytes
        leave the memory budget."""
        self.pool_backlog -= ticket.image_pixels
        self.held_bytes -= ticket.upload_bytes
        ticket.image_pixels = ticket.upload_bytes = 0

    def computed(self, ticket: Ticket) -> None:
        """The model is done with this request: its cost leaves the model's backlog."""
        self.backlog -= ticket.cost
        ticket.cost = 0

    def leave(self, ticket: Ticket) -> None:
        """The request is answered (or refused): give back its slot and everything it still holds."""
        self.decoded(ticket)
        self.computed(ticket)
        self.held_bytes -= ticket.bytes
        ticket.bytes = 0
        if ticket.slot:
            ticket.slot = False
            self.inflight -= 1
            self.per_client[ticket.client] -= 1
            if not self.per_client[ticket.client]:
                del self.per_client[ticket.client]


def _ceil(seconds: float) -> int:
    """Retry-After in whole seconds, at least 1."""
    return max(1, math.ceil(seconds))
