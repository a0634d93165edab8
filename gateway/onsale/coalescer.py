"""The drain loop shared by the gateway's coalescers (gateway/onsale/reserve.py, join.py).

Concurrent requests with the same key (a ticket type, an event) share one database call: while a
call for a key is in flight, new requests for it queue up and go together in the next call (first
come, first served, at most `max_batch` per call). A lone request goes at once: there is no timer,
so light traffic sees no added delay. What a call is and how each request learns its answer are
the subclass's (`_call`, `_answer`); what happens when a call fails is the same for all of them.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Sequence
from typing import Any, Generic, TypeVar

from gateway.errors import ApiError, busy, internal_error


class Waiter:
    """One request in a coalescer's queue: the future its handler awaits."""

    __slots__ = ("future",)

    def __init__(self) -> None:
        self.future: asyncio.Future[str] = asyncio.get_running_loop().create_future()


W = TypeVar("W", bound=Waiter)


class Coalescer(Generic[W]):
    skip_cancelled = True  # drop a request whose handler went away before its call was sent
    log = logging.getLogger("gateway.onsale")

    def __init__(self, max_batch: int) -> None:
        self.max_batch = max_batch
        self._queues: dict[str, deque[W]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self.batches = 0  # calls made, for tests and metrics

    def queued(self) -> int:
        """Requests waiting behind an in-flight call, all keys (a metrics gauge)."""
        return sum(len(queue) for queue in self._queues.values())

    def _enqueue(self, key: str, waiter: W) -> asyncio.Future[str]:
        queue = self._queues.get(key)
        if queue is None:  # nothing in flight for this key: start a drain, which sends at once
            queue = self._queues[key] = deque()
            self._spawn(self._drain(key, queue))
        queue.append(waiter)
        return waiter.future

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _drain(self, key: str, queue: deque[W]) -> None:
        try:
            while queue:
                batch: list[W] = []
                while queue and len(batch) < self.max_batch:
                    waiter = queue.popleft()
                    if not (self.skip_cancelled and waiter.future.cancelled()):
                        batch.append(waiter)
                if batch:
                    failure = await self._send(key, batch)
                    if failure is not None and failure.status == 503:
                        # The database is unreachable or overloaded: whoever queued behind this
                        # batch would wait out the same timeout. Answer them now.
                        while queue:
                            waiter = queue.popleft()
                            if not waiter.future.done():
                                waiter.future.set_exception(failure)
        finally:
            # No await since the queue was last seen empty: nothing can have slipped in.
            del self._queues[key]
            for waiter in queue:  # only if the loop died: never leave a request hanging
                if not waiter.future.done():
                    waiter.future.set_exception(busy())

    async def _send(self, key: str, batch: list[W]) -> ApiError | None:
        """One call; every request of the batch gets its answer. Returns the error if the call failed."""
        self.batches += 1
        failure: ApiError | None = None
        try:
            rows = await self._call(key, batch)
            for waiter, row in zip(batch, rows, strict=True):
                self._answer(waiter, row)
        except ApiError as exc:
            failure = exc
        except Exception:
            self.log.exception("batch call failed")
            failure = internal_error()
        finally:
            # Whatever happened (an error, or this task cancelled at shutdown), nobody in the
            # batch is left waiting.
            leftover = failure or busy()
            for waiter in batch:
                if not waiter.future.done():
                    waiter.future.set_exception(leftover)
        return failure

    async def _call(self, key: str, batch: list[W]) -> Sequence[tuple[Any, ...]]:
        """The one database call of a batch: one row per request, in order."""
        raise NotImplementedError

    def _answer(self, waiter: W, row: tuple[Any, ...]) -> None:
        """Hand one request its row of the call's answer."""
        raise NotImplementedError

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
