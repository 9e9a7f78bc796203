"""HTTP serving: a FastAPI app (``create_app``) with admission control, micro-batching and a web page at ``/``."""

from .admission import Admission, OverloadError, ServiceTime
from .app import create_app
from .batching import DeadlineExceededError, MicroBatcher
from .config import ServeConfig, check_dependencies, uvicorn_options

__all__ = [
    "Admission",
    "DeadlineExceededError",
    "MicroBatcher",
    "OverloadError",
    "ServeConfig",
    "ServiceTime",
    "check_dependencies",
    "create_app",
    "uvicorn_options",
]
