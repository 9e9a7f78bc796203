"""Waiting for a state to be reached (a server warmed up, a file written), bounded so a broken run fails."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_until(predicate: Callable[[], bool], timeout: float = 20.0, interval: float = 0.01) -> None:
    """Poll ``predicate`` every ``interval`` seconds until it holds; ``TimeoutError`` after ``timeout`` seconds. The
    bound only stops a hung run: no test asserts how long reaching the state takes."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        time.sleep(interval)
