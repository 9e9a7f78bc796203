"""The server's settings (the flags of ``fcnseg serve``), the uvicorn settings they imply, and the start-up check
of the modules answering needs."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from .protocol import header_deadline_protocol
from .upload import BodyLimits

__all__ = ["ServeConfig", "check_dependencies", "uvicorn_options"]

# what the server imports while answering: checked at start, so a missing one is not a 500 at the first request
RUNTIME_MODULES = {"pycocotools.mask": "pycocotools", "python_multipart": "python-multipart"}


@dataclass
class ServeConfig:
    """Limits, admission and batching knobs of the server (the flags of ``fcnseg serve``)."""

    max_upload_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 16_000_000  # of the uploaded image, checked from its header before decoding
    max_model_pixels: int = 4_000_000  # of the image as the model sees it (resized, or native with size None)
    max_batch: int = 8  # upper bound; warm-up keeps 1 unless batching raises throughput
    max_inflight: int = 32  # requests admitted at once; more are answered 503 before their body is read
    max_per_client: int | None = None  # slots one client address may hold; None: half of max_inflight
    max_decoded_mb: int = 1024  # memory all uploads and admitted images may hold (BYTES_PER_PIXEL a pixel)
    body_timeout_s: float = 60.0  # the whole body must arrive within this (from the end of the headers)
    min_upload_rate: float = 240.0  # bytes/s the body must average after upload_grace_s; 0: no minimum
    upload_grace_s: float = 5.0
    header_timeout_s: float = 10.0  # a connection's request headers must be complete within this
    keep_alive_s: int = 5  # an idle keep-alive connection is closed after this
    max_connections: int = 512  # open connections per process; beyond it, requests are answered 503
    api_key: str | None = None  # when set, /v1/... requires "Authorization: Bearer <api_key>"
    cors_origins: tuple[str, ...] = ()  # origins whose pages may call the API from a browser; none by default
    decode_workers: int = 2  # threads decoding uploads and encoding answers
    timeout_s: float = 60.0  # each request's deadline, from its arrival
    warmup: bool = True  # warm up and time the model before /readyz says ready (tests of fakes turn it off)
    warmup_side: int | None = None  # warm-up image side; None: the model's input size, else 256
    label_studio_url: str | None = None  # where Label Studio's task paths (/data/upload/...) are fetched from
    label_studio_api_key: str | None = None  # sent to label_studio_url only
    label_studio_allow: tuple[str, ...] = ()  # other hosts (or networks) task images may be fetched from

    @property
    def body_limits(self) -> BodyLimits:
        return BodyLimits(self.max_upload_bytes, self.body_timeout_s, self.min_upload_rate, self.upload_grace_s)

    @property
    def client_share(self) -> int:
        return self.max_per_client or max(1, self.max_inflight // 2)


def uvicorn_options(cfg: ServeConfig) -> dict[str, Any]:
    """``uvicorn.run``/``uvicorn.Config`` settings that guard connections: headers within
    ``cfg.header_timeout_s`` (:mod:`.protocol`), idle keep-alive closed after ``cfg.keep_alive_s``, and
    ``cfg.max_connections`` open connections (uvicorn's ``limit_concurrency``: beyond it, 503)."""
    return {
        "http": header_deadline_protocol(cfg.header_timeout_s),
        "timeout_keep_alive": cfg.keep_alive_s,
        "limit_concurrency": cfg.max_connections,
        "h11_max_incomplete_event_size": 16 * 1024,  # request line and headers (h11's default, stated)
    }


def check_dependencies() -> None:
    """Import what answering needs now, at start; :class:`ModuleNotFoundError` names the package to install."""
    for module, package in RUNTIME_MODULES.items():
        try:
            importlib.import_module(module)
        except ModuleNotFoundError:
            raise ModuleNotFoundError(f"fcnseg serve needs {package} ({module} is missing)") from None
