"""Coalesced reserves: concurrent requests for one ticket type share one database call.

While a batch call for a ticket type is in flight, new requests for it queue up and go
together in the next call (first come, first served, at most `max_batch` per call). A lone
request goes at once: there is no timer, so light traffic sees no added delay. The rules
stay in SQL: api.reserve_tickets_batch answers each request as api.reserve_tickets would.

A request whose client went away before its batch was sent is dropped from the batch; one
that is granted after its client went away has its hold cancelled at once, so the seats go
back on sale instead of waiting out the hold.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from gateway.db import Database
from gateway.errors import ApiError, from_sqlstate
from gateway.sqlcalls import reserve_requests

log = logging.getLogger("gateway.coalesce")

BATCH_FUNCTION = "reserve_tickets_batch"


@dataclass
class Waiter:
    user_id: str
    quantity: int
    future: asyncio.Future[str] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class ReserveCoalescer:
    def __init__(self, db: Database, max_batch: int = 50) -> None:
        self.db = db
        self.max_batch = max_batch
        self._queues: dict[str, deque[Waiter]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self.batches = 0  # calls made, for tests and metrics

    def submit(self, user_id: str, ticket_type_id: str, quantity: int) -> asyncio.Future[str]:
        """A future of the reservation JSON, or of the ApiError api.reserve_tickets would raise.
        Cancel it if the client goes away."""
        waiter = Waiter(user_id, quantity)
        queue = self._queues.get(ticket_type_id)
        if queue is None:  # nothing in flight for this type: start a drain, which sends at once
            queue = self._queues[ticket_type_id] = deque()
            self._spawn(self._drain(ticket_type_id, queue))
        queue.append(waiter)
        return waiter.future

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _drain(self, ticket_type_id: str, queue: deque[Waiter]) -> None:
        try:
            while queue:
                batch: list[Waiter] = []
                while queue and len(batch) < self.max_batch:
                    waiter = queue.popleft()
                    if not waiter.future.cancelled():
                        batch.append(waiter)
                if batch:
                    failure = await self._send(ticket_type_id, batch)
                    if failure is not None and failure.status == 503:
                        # The database is unreachable or overloaded: whoever queued behind this
                        # batch would wait out the same timeout. Answer them now.
                        while queue:
                            waiter = queue.popleft()
                            if not waiter.future.done():
                                waiter.future.set_exception(failure)
        finally:
            # No await since the queue was last seen empty: nothing can have slipped in.
            del self._queues[ticket_type_id]
            for waiter in queue:  # only if the loop died: never leave a request hanging
                if not waiter.future.done():
                    waiter.future.set_exception(ApiError(503, "busy", "the service is busy; retry shortly"))

    async def _send(self, ticket_type_id: str, batch: list[Waiter]) -> ApiError | None:
        """One batch call; every waiter gets its answer. Returns the error if the call failed."""
        requests = reserve_requests((w.user_id, ticket_type_id, w.quantity) for w in batch)
        self.batches += 1
        failure: ApiError | None = None
        try:
            answers = await self.db.rows(BATCH_FUNCTION, {"p_requests": requests})
            # One row per request, in order: (reservation JSON text | None, sqlstate, message).
            for waiter, (reservation, sqlstate, message) in zip(batch, answers, strict=True):
                if waiter.future.cancelled():
                    if reservation is not None:
                        self._spawn(self._release(waiter.user_id, json.loads(reservation)["id"]))
                elif reservation is not None:
                    waiter.future.set_result(reservation)
                else:
                    waiter.future.set_exception(from_sqlstate(sqlstate, message))
        except ApiError as exc:
            failure = exc
        except Exception:
            log.exception("reserve batch failed")
            failure = ApiError(500, "internal_error", "internal error")
        finally:
            # Whatever happened (an error, or this task cancelled at shutdown), nobody in the
            # batch is left waiting.
            leftover = failure or ApiError(503, "busy", "the service is busy; retry shortly")
            for waiter in batch:
                if not waiter.future.done():
                    waiter.future.set_exception(leftover)
        return failure

    async def _release(self, user_id: str, reservation_id: str) -> None:
        try:
            await self.db.call("cancel_reservation", {"p_user_id": user_id, "p_reservation_id": reservation_id})
        except ApiError as exc:  # the hold then simply expires
            log.warning("could not release an abandoned hold %s: %s", reservation_id, exc.code)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
