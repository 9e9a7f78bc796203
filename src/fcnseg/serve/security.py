"""Who may use the model: ``Authorization: Bearer KEY`` on the API (``/v1/...``), everything else open.

The scheme's name is case-insensitive (RFC 7235, section 2.1: ``bearer KEY`` is as good as ``Bearer KEY``); the key
itself is compared exactly.

``/healthz`` and ``/readyz`` stay open for probes (they say nothing about the model), and so do the web page and
``/docs`` (the page asks for the key and sends it). The key is compared in constant time (:func:`hmac.compare_digest`)
so the time of a refusal says nothing about how much of a guess was right; refusals are logged with the client's
address and the request id, never with what was sent.
"""

from __future__ import annotations

import hmac
import json
from typing import Any

from .errors import error_body, logger

__all__ = ["PROTECTED_PREFIX", "BearerAuth", "bearer_token", "openapi_bearer"]

PROTECTED_PREFIX = "/v1/"


def bearer_token(header: bytes) -> bytes:
    """The token of an ``Authorization: Bearer TOKEN`` header (the scheme in any case, RFC 7235); b"" for any other
    scheme or shape, which matches no key."""
    scheme, _, token = header.partition(b" ")
    return token.lstrip(b" ") if scheme.lower() == b"bearer" else b""


class BearerAuth:
    """ASGI middleware: 401 on ``/v1/...`` unless the request carries ``Authorization: Bearer <api_key>``.

    Sits inside :class:`.errors.RequestIds`, so refusals carry a request id like every other error, and inside
    CORS, which answers preflights (they carry no credentials) itself.
    """

    def __init__(self, app: Any, api_key: str) -> None:
        if not api_key:
            raise ValueError("an empty API key would let anyone in")
        self.app, self.expected = app, api_key.encode()

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(PROTECTED_PREFIX):
            await self.app(scope, receive, send)
            return
        sent = next((v for k, v in scope["headers"] if k == b"authorization"), None)
        if sent is not None and hmac.compare_digest(bearer_token(sent), self.expected):
            await self.app(scope, receive, send)
            return
        rid = scope["state"]["request_id"]
        client = scope.get("client") or ("unknown", 0)
        why = "no Authorization header" if sent is None else "a wrong API key"
        logger.warning("request %s from %s: %s %s refused, %s", rid, client[0], scope["method"], scope["path"], why)
        body = json.dumps(error_body("missing or wrong API key: send 'Authorization: Bearer <key>'", rid)).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"www-authenticate", b'Bearer realm="fcnseg"'),
        ]
        await send({"type": "http.response.start", "status": 401, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def openapi_bearer() -> Any:
    """The bearer scheme as the OpenAPI schema declares it, so that /docs' *Authorize* button sends the key.

    A dependency of the ``/v1/...`` routes that checks nothing (``auto_error=False``): :class:`BearerAuth` does, with
    its constant-time compare, its log line and its error body, before a route is reached.
    """
    from fastapi.security import HTTPBearer

    return HTTPBearer(auto_error=False, scheme_name="apiKey", description="the server's API key (--api-key-file)")
