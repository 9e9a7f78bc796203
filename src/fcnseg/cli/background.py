"""Work on a stream of items in worker threads while the stream's producer (the model) keeps going.

``fcnseg segment`` writes each image's outputs (PNG encode, overlay blend, JPEG encode: C code that releases the
GIL) here while the model runs on the next batch, so a folder run's wall time approaches the model's time alone.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from typing import TypeVar

__all__ = ["in_background"]

T = TypeVar("T")
R = TypeVar("R")


def in_background(
    items: Iterable[T], work: Callable[[T], R], *, threads: int = 1, window: int = 2
) -> Iterator[tuple[T, R | Exception]]:
    """``(item, work(item))`` for each item, in order, with ``work`` running in ``threads`` threads.

    An exception raised by ``work`` is yielded in place of its result, so that one bad item is reported and the
    rest go on. At most ``window`` items wait or run at a time (each holds a decoded image and its mask), so
    memory stays bounded when the model outpaces the writers. On Ctrl-C, or when the consumer stops early, the
    work already running finishes (its files are complete) and the rest is never started. ``threads=0`` runs
    ``work`` inline. One thread is the default: on a CPU the model already keeps busy, one writer is what overlaps
    best, and a failing image then never has a later one's outputs written beside it.
    """
    if threads <= 0:
        for item in items:
            yield item, _call(work, item)
        return
    pending: deque[tuple[T, Future]] = deque()
    pool = ThreadPoolExecutor(threads, thread_name_prefix="fcnseg-writer")
    stop = threading.Event()  # set by a KeyboardInterrupt inside ``work``: no later item starts
    try:
        for item in items:
            pending.append((item, pool.submit(_call, work, item, stop)))
            while len(pending) > window or (pending and pending[0][1].done()):
                done, future = pending.popleft()
                yield done, future.result()
        while pending:
            done, future = pending.popleft()
            yield done, future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _call(work: Callable[[T], R], item: T, stop: threading.Event | None = None) -> R | Exception:
    if stop is not None and stop.is_set():
        raise CancelledError
    try:
        return work(item)
    except Exception as e:  # reported with its item
        return e
    except BaseException:  # KeyboardInterrupt, SystemExit: stop the run, after the items before this one
        if stop is not None:
            stop.set()
        raise
