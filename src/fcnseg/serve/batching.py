"""Micro-batching: requests that arrive while the model is busy share its next forward pass.

An asyncio queue (bounded: a full queue is the server's signal to answer 503) feeds one worker task.
The worker takes the first waiting item, gathers more for at most ``max_wait`` seconds up to
``max_batch`` items, and runs the batch in a single dedicated thread, so the event loop never waits on
the model and the model never runs twice at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

__all__ = ["BatchStats", "MicroBatcher", "QueueFullError"]


class QueueFullError(RuntimeError):
    """The queue holds ``max_queue`` waiting items already."""


@dataclass
class BatchStats:
    """What the worker has done so far: how many batches, of which sizes."""

    batches: int = 0
    items: int = 0
    sizes: list[int] = field(default_factory=list)
    busy: bool = False


class MicroBatcher:
    """Run ``fn(list_of_items) -> list_of_results`` on batches of concurrently submitted items.

    Args:
        fn: the batch function; called in a worker thread, one call at a time.
        max_batch: largest batch handed to ``fn`` (1 turns batching off).
        max_wait: seconds to wait for more items once one is there (0: take only what is already queued).
        max_queue: items allowed to wait; :meth:`submit` raises :class:`QueueFullError` beyond.
    """

    def __init__(
        self, fn: Callable[[list[Any]], Sequence[Any]], *, max_batch: int = 8, max_wait: float = 0.005,
        max_queue: int = 32,
    ) -> None:  # fmt: skip
        if max_batch < 1 or max_queue < 1 or max_wait < 0:
            raise ValueError("max_batch and max_queue must be >= 1 and max_wait >= 0")
        self.fn, self.max_batch, self.max_wait, self.max_queue = fn, max_batch, max_wait, max_queue
        self.stats = BatchStats()
        self._queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None
        self._pool: ThreadPoolExecutor | None = None

    @property
    def queued(self) -> int:
        """Items waiting (not counting the batch being computed)."""
        return self._queue.qsize() if self._queue is not None else 0

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        """Start the worker on the running event loop."""
        self._queue = asyncio.Queue(maxsize=self.max_queue)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fcnseg-infer")
        self._task = asyncio.get_running_loop().create_task(self._work())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        self._task = self._pool = None

    async def submit(self, item: Any, timeout: float | None = None) -> Any:
        """Queue ``item`` and wait for its result; ``asyncio.TimeoutError`` after ``timeout`` seconds."""
        if self._queue is None or not self.running:
            raise RuntimeError("the batch worker is not running")
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        try:
            self._queue.put_nowait((item, future))
        except asyncio.QueueFull:
            raise QueueFullError(f"{self.max_queue} requests are already waiting") from None
        return await asyncio.wait_for(future, timeout)  # on timeout the future is cancelled and skipped

    async def _collect(self) -> list[tuple[Any, asyncio.Future]]:
        assert self._queue is not None
        batch = [await self._queue.get()]
        deadline = time.monotonic() + self.max_wait
        while len(batch) < self.max_batch:
            if not self._queue.empty():
                batch.append(self._queue.get_nowait())
                continue
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), left))
            except asyncio.TimeoutError:
                break
        return [(item, fut) for item, fut in batch if not fut.done()]  # drop requests that timed out meanwhile

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect()
            if not batch:
                continue
            items = [item for item, _ in batch]
            self.stats.busy = True
            try:
                results = await loop.run_in_executor(self._pool, self._run, items)
            except Exception as e:  # a single item failed: its request gets the error, the worker goes on
                results = [e] * len(items)
            finally:
                self.stats.busy = False
            self.stats.batches += 1
            self.stats.items += len(items)
            self.stats.sizes.append(len(items))
            for (_, fut), result in zip(batch, results, strict=True):
                if fut.done():
                    continue
                if isinstance(result, BaseException):
                    fut.set_exception(result)
                else:
                    fut.set_result(result)

    def _run(self, items: list[Any]) -> list[Any]:
        """``fn`` on the batch; if it fails, each item alone, so one bad item cannot fail the others."""
        try:
            results = list(self.fn(items))
            if len(results) != len(items):
                raise RuntimeError(f"batch function returned {len(results)} results for {len(items)} items")
            return results
        except Exception:
            if len(items) == 1:
                raise
        out: list[Any] = []
        for item in items:
            try:
                out.append(self.fn([item])[0])
            except Exception as e:  # handed to that request's future
                out.append(e)
        return out
