"""Who may use the model: ``Authorization: Bearer KEY`` on the API (``/v1/...``), everything else open.

Label Studio's ML backend (``/label-studio/...``) takes the key as HTTP Basic auth too (any user name, the key as
password): Label Studio's *Model* settings send Basic auth and nothing else.

``/healthz`` and ``/readyz`` stay open for probes (they say nothing about the model), and so do the web page and
``/docs`` (the page asks for the key and sends it). The key is compared in constant time (:func:`hmac.compare_digest`)
so the time of a refusal says nothing about how much of a guess was right; refusals are logged with the client's
address and the request id, never with what was sent.
"""

from __future__ import annotations

import base64
import hmac
import json
from typing import Any

from .errors import error_body, logger

__all__ = ["BASIC_PREFIX", "PROTECTED_PREFIX", "BearerAuth"]

PROTECTED_PREFIX = "/v1/"
BASIC_PREFIX = "/label-studio"  # the ML backend's routes, which also take Basic auth


class BearerAuth:
    """ASGI middleware: 401 on ``/v1/...`` unless the request carries ``Authorization: Bearer <api_key>``.

    Sits inside :class:`.errors.RequestIds`, so refusals carry a request id like every other error, and inside
    CORS, which answers preflights (they carry no credentials) itself.
    """

    def __init__(self, app: Any, api_key: str) -> None:
        if not api_key:
            raise ValueError("an empty API key would let anyone in")
        self.app, self.expected, self.key = app, f"Bearer {api_key}".encode(), api_key.encode()

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        basic = path == BASIC_PREFIX or path.startswith(BASIC_PREFIX + "/")
        if scope["type"] != "http" or not (basic or path.startswith(PROTECTED_PREFIX)):
            await self.app(scope, receive, send)
            return
        sent = next((v for k, v in scope["headers"] if k == b"authorization"), None)
        if sent is not None and (hmac.compare_digest(sent, self.expected) or basic and self._basic_ok(sent)):
            await self.app(scope, receive, send)
            return
        rid = scope["state"]["request_id"]
        client = scope.get("client") or ("unknown", 0)
        why = "no Authorization header" if sent is None else "a wrong API key"
        logger.warning("request %s from %s: %s %s refused, %s", rid, client[0], scope["method"], scope["path"], why)
        how = "Basic auth with the key as password, or 'Authorization: Bearer <key>'" if basic else (
            "'Authorization: Bearer <key>'")  # fmt: skip
        body = json.dumps(error_body(f"missing or wrong API key: send {how}", rid)).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"www-authenticate", b'Basic realm="fcnseg"' if basic else b'Bearer realm="fcnseg"'),
        ]
        await send({"type": "http.response.start", "status": 401, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def _basic_ok(self, sent: bytes) -> bool:
        """``Basic base64(user:password)`` with the key as password (any user), compared in constant time."""
        scheme, _, encoded = sent.partition(b" ")
        if scheme.lower() != b"basic":
            return False
        try:
            _, _, password = base64.b64decode(encoded.strip(), validate=True).partition(b":")
        except ValueError:
            return False
        return hmac.compare_digest(password, self.key)
