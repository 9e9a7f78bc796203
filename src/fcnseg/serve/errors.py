"""Error answers: the client gets a short message and a request id, the server log gets the traceback with that id.

Every response carries ``X-Request-ID``; error bodies are ``{"detail": ..., "request_id": ...}``. No exception
text of the server's own code reaches a client: only the messages written for clients (:class:`HTTPError`).
"""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

__all__ = ["HTTPError", "RequestIds", "error_body", "logger"]

logger = logging.getLogger("fcnseg.serve")


class HTTPError(Exception):
    """An expected failure, answered as ``{"detail": ..., "request_id": ...}`` with its status."""

    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.detail, self.headers = status, detail, headers


def error_body(detail: Any, request_id: str) -> dict[str, Any]:
    return {"detail": detail, "request_id": request_id}


class RequestIds:
    """ASGI middleware: an id per HTTP request (in ``request.state.request_id`` and the ``X-Request-ID`` header).

    An exception nothing else handled is logged with its traceback and the id, and answered as a 500 that says
    only "internal server error" and the id.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = uuid.uuid4().hex[:16]
        scope.setdefault("state", {})["request_id"] = rid
        started = False

        async def send_with_id(message: dict) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message = {**message, "headers": [*message.get("headers", []), (b"x-request-id", rid.encode())]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            logger.exception("request %s %s %s failed", rid, scope.get("method"), scope.get("path"))
            if started:  # too late for a clean answer: the server closes the connection
                raise
            body = json.dumps(error_body("internal server error", rid)).encode()
            headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
            await send_with_id({"type": "http.response.start", "status": 500, "headers": headers})
            await send({"type": "http.response.body", "body": body})
