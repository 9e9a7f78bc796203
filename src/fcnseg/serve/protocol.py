"""uvicorn's HTTP/1.1 protocol with a deadline for request headers: a connection cannot sit idle or trickle them.

uvicorn closes a keep-alive connection only when it stays silent for ``timeout_keep_alive`` seconds after a
response, and any byte restarts that wait; a fresh connection that sends nothing, or sends its headers one byte at
a time, is never closed (uvicorn issue #157 planned ``--timeout-request-start`` and never shipped it). ASGI code runs
only once the headers are complete, so the deadline has to live in the protocol, as other uvicorn users do (e.g.
xorbitsai/inference's ``RequestDeadlineMixin``). The body has its own deadline, enforced by the app
(:mod:`.upload`), where it can answer 408 and free the request's share of the server.
"""

from __future__ import annotations

import asyncio
import logging

from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = ["header_deadline_protocol"]

logger = logging.getLogger("fcnseg.serve")


class _HeaderDeadline(H11Protocol):
    """Closes the connection when a request's headers are not complete ``header_timeout`` seconds after the
    connection opened or the previous response ended."""

    header_timeout = 10.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._header_timer: asyncio.TimerHandle | None = None
        self._arm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
        super().connection_lost(exc)

    def _arm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
        if not self.transport.is_closing():
            self._header_timer = self.loop.call_later(self.header_timeout, self._expire)

    def _expire(self) -> None:
        """Close unless a request (its headers complete) is being answered: then the app's deadlines apply."""
        waiting = self.cycle is None or self.cycle.response_complete
        if waiting and not self.transport.is_closing():
            client = f"{self.client[0]}:{self.client[1]}" if self.client else "a client"
            logger.info("closed the connection of %s: no complete request within %g s", client, self.header_timeout)
            self.transport.close()


def header_deadline_protocol(header_timeout: float) -> type[H11Protocol]:
    """An H11Protocol class for ``uvicorn.Config(http=...)`` that closes connections whose request headers are not
    complete within ``header_timeout`` seconds."""
    return type("HeaderDeadlineH11Protocol", (_HeaderDeadline,), {"header_timeout": header_timeout})
