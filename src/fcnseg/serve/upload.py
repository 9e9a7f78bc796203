"""Reading an upload: under a size cap, a deadline and a minimum transfer rate, charged to the memory budget.

A client that sends its body slowly holds a connection and memory, so the read is bounded the way Kestrel bounds
it (``MinRequestBodyDataRate``: 240 bytes/s after a 5 s grace period): ``n`` bytes must have arrived within
``grace_s + n / min_rate`` seconds, and the whole body within ``timeout_s``; otherwise 408. The body is then parsed
(multipart form field ``file``, or the raw image) with every malformed case answered 400.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starlette.requests import ClientDisconnect, Request

from .errors import HTTPError

__all__ = ["BodyLimits", "ClientGoneError", "read_body", "upload"]

RAW_TYPES = ("application/octet-stream",)  # besides image/*
MULTIPART_FRAMING = 64 * 1024  # room for multipart framing around a file at the size limit


class ClientGoneError(Exception):
    """The client closed the connection before its body was complete (``received`` bytes arrived)."""

    def __init__(self, received: int) -> None:
        super().__init__(f"client left after {received} bytes of its upload")
        self.received = received


@dataclass(frozen=True)
class BodyLimits:
    """How large an upload may be and how fast it must arrive (the ``--max-upload-mb``, ``--body-timeout``,
    ``--min-upload-rate`` flags)."""

    max_bytes: int = 20 * 1024 * 1024
    timeout_s: float = 60.0  # the whole body, from the end of the headers
    min_rate: float = 240.0  # bytes per second, averaged from the start of the body; 0 turns it off
    grace_s: float = 5.0  # before the rate applies

    def allowed_s(self, received: int) -> float:
        """Seconds the first ``received`` bytes (and the next one) may take."""
        if self.min_rate <= 0:
            return self.timeout_s
        return min(self.timeout_s, self.grace_s + received / self.min_rate)


async def read_body(
    request: Request, limits: BodyLimits, charge: Callable[[int], None], clock: Callable[[], float] = time.monotonic
) -> bytes:
    """The body, refused (413) as soon as it is known to exceed the limit, (408) when it arrives too slowly.

    ``charge(n)`` is called for every chunk before it is kept (it may raise to refuse the request); ``clock`` is
    the time source the deadlines are measured on.
    """
    limit = limits.max_bytes + MULTIPART_FRAMING
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise HTTPError(413, f"upload of {int(length)} bytes exceeds the {limits.max_bytes} byte limit")
    start, chunks, size = clock(), [], 0
    stream = request.stream().__aiter__()
    while True:
        try:
            chunk = await asyncio.wait_for(stream.__anext__(), start + limits.allowed_s(size) - clock())
        except StopAsyncIteration:
            return b"".join(chunks)
        except asyncio.TimeoutError:
            raise HTTPError(408, _too_slow(limits, size, clock() - start), {"Connection": "close"}) from None
        except ClientDisconnect:
            raise ClientGoneError(size) from None
        size += len(chunk)
        if size > limit:
            raise HTTPError(413, f"upload exceeds the {limits.max_bytes} byte limit")
        charge(len(chunk))
        chunks.append(chunk)


def _too_slow(limits: BodyLimits, received: int, elapsed: float) -> str:
    if limits.allowed_s(received) >= limits.timeout_s:
        return f"upload not complete within {limits.timeout_s:g} s ({received} bytes received)"
    return (
        f"upload too slow: {received} bytes in {elapsed:.1f} s, under the minimum of {limits.min_rate:g} bytes/s "
        f"(after {limits.grace_s:g} s)"
    )


async def upload(request: Request, limits: BodyLimits, charge: Callable[[int], None]) -> tuple[bytes, str]:
    """(image bytes, name) from a multipart form field ``file`` or a raw image body."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "multipart/form-data" and not ctype.startswith("image/") and ctype not in RAW_TYPES:
        raise HTTPError(
            415, f"unsupported media type {ctype or '(none)'!r}; send multipart/form-data or an image/* body"
        )
    body = await read_body(request, limits, charge)
    if ctype != "multipart/form-data":
        return _checked_size(body, limits), "upload"
    return await _form_file(request, body, limits)


async def _form_file(request: Request, body: bytes, limits: BodyLimits) -> tuple[bytes, str]:
    """The ``file`` field of a multipart ``body`` that was already read; 400 unless the body is a whole form."""
    if not _has_closing_boundary(request, body):
        raise HTTPError(400, "malformed multipart body: no closing boundary (truncated?)")
    sent = False

    async def replay() -> dict[str, Any]:  # feed the already-read body to the form parser
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, replay).form(max_files=4, max_fields=16)
    except Exception as e:  # starlette's MultiPartException and parser errors
        raise HTTPError(400, f"malformed multipart body: {getattr(e, 'message', 'cannot parse')}") from None
    try:
        file = form.get("file")
        if file is None or isinstance(file, str):
            raise HTTPError(422, "multipart body has no file field named 'file'")
        ftype = (file.content_type or "application/octet-stream").split(";")[0].strip().lower()
        if not ftype.startswith("image/") and ftype not in RAW_TYPES:
            raise HTTPError(415, f"{file.filename}: unsupported media type {ftype!r}; upload an image")
        data = await file.read()
    finally:
        await form.close()  # the parser spools parts to temporary files
    return _checked_size(data, limits), file.filename or "upload"


def _has_closing_boundary(request: Request, body: bytes) -> bool:
    """Whether ``body`` ends with the form's closing delimiter ``--BOUNDARY--`` (RFC 2046 5.1.1): a body cut
    short parses as a form with missing fields, which is the client's broken upload, not a missing field."""
    params = request.headers.get("content-type", "").split(";")[1:]
    boundary = next((p.split("=", 1)[1].strip().strip('"') for p in params if p.strip().startswith("boundary=")), "")
    return bool(boundary) and body.rstrip().endswith(b"--" + boundary.encode("latin-1") + b"--")


def _checked_size(data: bytes, limits: BodyLimits) -> bytes:
    if len(data) > limits.max_bytes:
        raise HTTPError(413, f"upload of {len(data)} bytes exceeds the {limits.max_bytes} byte limit")
    return data
