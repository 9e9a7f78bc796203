"""Reaching Ray: the import with a one-line hint when it is missing, and a session that is joined or started.

A process that already called ``ray.init`` (a user's pipeline, a test) keeps its session: fcnseg neither starts a
second one nor shuts that one down. Otherwise ``address`` (or ``RAY_ADDRESS``, which ``ray.init`` reads) names the
cluster to join; with neither, a local Ray is started on this machine for the run and stopped after it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from types import ModuleType

__all__ = ["RAY_HINT", "ray_session", "require_ray"]

RAY_HINT = "the Ray engine needs Ray Data: pip install 'fcnseg[ray]'"


def require_ray() -> ModuleType:
    """The ``ray`` module with Ray Data, or an ImportError whose message says what to install."""
    try:
        import ray
        import ray.data  # noqa: F401  (ray without the [data] extra lacks pyarrow and pandas)
    except ImportError as e:
        raise ImportError(f"{RAY_HINT} ({e})") from None
    return ray


@contextlib.contextmanager
def ray_session(address: str | None = None, *, quiet: bool = False) -> Iterator[ModuleType]:
    """The ``ray`` module, connected for the block (see the module docstring)."""
    ray = require_ray()
    if ray.is_initialized():
        yield ray
        return
    ray.init(address=address, log_to_driver=not quiet, logging_level="WARNING")
    try:
        yield ray
    finally:
        ray.shutdown()
