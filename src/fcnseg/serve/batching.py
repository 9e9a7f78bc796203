"""Micro-batching: requests that arrive while the model is busy share its next forward pass.

An asyncio queue feeds one worker task. When the model is free, the worker takes what is waiting (up to
``max_batch`` items; never waiting for companions, so an idle model starts at once) and runs it in a single
dedicated thread, so the event loop never waits on the model and the model never runs twice at once.

Before an item reaches the model it is dropped if its request went away (the client disconnected or gave
up: its future is cancelled) or if it can no longer finish before its deadline (by the estimate, unless it
found the model idle); the latter is answered with :class:`DeadlineExceededError`. Every batch is timed into
a :class:`~.admission.ServiceTime` estimate.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from .admission import SAFETY, ServiceTime

__all__ = ["BatchStats", "DeadlineExceededError", "MicroBatcher"]


class DeadlineExceededError(RuntimeError):
    """The item waited so long that it could not have finished before its deadline; it was not run."""


@dataclass
class BatchStats:
    """What the worker has done so far: batches, items, a histogram of batch sizes, items dropped unrun."""

    batches: int = 0
    items: int = 0
    sizes: Counter = field(default_factory=Counter)  # batch size -> how many batches had it (bounded by max_batch)
    expired: int = 0
    abandoned: int = 0


@dataclass
class _Item:
    value: Any
    future: asyncio.Future
    cost: int  # model-input pixels
    deadline: float  # time.monotonic(); inf for none


class MicroBatcher:
    """Run ``fn(list_of_items) -> list_of_results`` on batches of concurrently submitted items.

    Args:
        fn: the batch function; called in a worker thread, one call at a time.
        max_batch: largest batch handed to ``fn`` (1 turns batching off); may be changed while running.
        service: the estimate each batch's time is folded into (a fresh one when not given).
        clock: what batches and warm-up calls are timed with (tests give a fake model its own clock).
    """

    def __init__(
        self,
        fn: Callable[[list[Any]], Sequence[Any]],
        *,
        max_batch: int = 8,
        service: ServiceTime | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        self.fn, self.max_batch, self.clock = fn, max_batch, clock
        self.service = service or ServiceTime()
        self.stats = BatchStats()
        self._queue: asyncio.Queue[_Item] | None = None
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
        self._queue = asyncio.Queue()  # bounded by the server's admission control, not here
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

    async def run_timed(self, items: list[Any]) -> float:
        """Run ``fn`` on ``items`` in the model's thread now (warm-up); returns its seconds, results dropped."""
        if self._pool is None:
            raise RuntimeError("the batch worker is not running")
        t = self.clock()
        await asyncio.get_running_loop().run_in_executor(self._pool, self.fn, items)
        return self.clock() - t

    async def submit(self, item: Any, *, cost: int = 1, deadline: float = float("inf")) -> Any:
        """Queue ``item`` and wait for its result.

        ``cost`` is its model-input pixels (for the service-time estimate); ``deadline`` a :func:`time.monotonic`
        time after which it is not worth running (:class:`DeadlineExceededError`). Cancelling the call (a client that
        went away, a timeout) drops the item if the model has not reached it yet.
        """
        if self._queue is None or not self.running:
            raise RuntimeError("the batch worker is not running")
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Item(item, future, cost, deadline))
        return await future

    def _runnable(self, item: _Item, *, ahead: int = 0, idle: bool = False) -> bool:
        """False for an item to drop: its request is gone, or it cannot finish before its deadline, after the
        ``ahead`` units of work put before it in the same batch.

        An item that reached an idle model runs unless its deadline has passed, whatever the estimate says:
        a stale estimate is corrected only by items that run.
        """
        if item.future.done():
            self.stats.abandoned += 1
            return False
        expected = 0.0 if idle else SAFETY * self.service.seconds(ahead + item.cost)
        if time.monotonic() + expected > item.deadline:
            self.stats.expired += 1
            item.future.set_exception(DeadlineExceededError("not started in time to finish before the deadline"))
            return False
        return True

    async def _collect(self) -> list[_Item]:
        """The next batch: the first runnable item, plus whatever else is waiting, up to ``max_batch``."""
        assert self._queue is not None
        batch: list[_Item] = []
        while not batch:
            idle = self._queue.empty()
            item = await self._queue.get()
            if self._runnable(item, idle=idle):
                batch.append(item)
        while len(batch) < self.max_batch and not self._queue.empty():
            item = self._queue.get_nowait()
            if self._runnable(item, ahead=sum(it.cost for it in batch)):
                batch.append(item)
        return batch

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect()
            t = self.clock()
            try:
                results = await loop.run_in_executor(self._pool, self._run, [it.value for it in batch])
            except Exception as e:  # a single item failed: its request gets the error, the worker goes on
                results = [e] * len(batch)
            self.service.observe(self.clock() - t, sum(it.cost for it in batch))
            self.stats.batches += 1
            self.stats.items += len(batch)
            self.stats.sizes[len(batch)] += 1
            for it, result in zip(batch, results, strict=True):
                if it.future.done():
                    continue
                if isinstance(result, BaseException):
                    it.future.set_exception(result)
                else:
                    it.future.set_result(result)

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
