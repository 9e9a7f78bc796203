"""HTTP serving: a FastAPI app (``create_app``) with admission control, micro-batching and a web page at ``/``."""

from .admission import Admission, OverloadError, ServiceTime
from .app import ServeConfig, create_app, rle_decode, rle_encode
from .batching import DeadlineExceededError, MicroBatcher

__all__ = [
    "Admission",
    "DeadlineExceededError",
    "MicroBatcher",
    "OverloadError",
    "ServeConfig",
    "ServiceTime",
    "create_app",
    "rle_decode",
    "rle_encode",
]
