"""HTTP serving: a FastAPI app (``create_app``) with micro-batched inference and a web page at ``/``."""

from .app import ServeConfig, create_app, rle_decode, rle_encode
from .batching import MicroBatcher, QueueFullError

__all__ = ["MicroBatcher", "QueueFullError", "ServeConfig", "create_app", "rle_decode", "rle_encode"]
