"""Reserves: which SQL function decides a hold, and how concurrent requests reach it.

This module owns the reserve strategy (settings RESERVE_STRATEGY, RESERVE_COALESCE,
RESERVE_BATCH_MAX) and every SQL function name it may call; the route table names the
canonical `reserve_tickets`, and /openapi.json asks `function_for` what really runs.

- pessimistic (default): `api.reserve_tickets` locks the ticket type; with coalescing on
  (default), concurrent requests for one ticket type share one `api.reserve_tickets_batch`
  call instead (one lock and one commit per batch).
- optimistic: `api.reserve_tickets_optimistic` (version compare-and-set), one call per request.

The coalescer: while a batch call for a ticket type is in flight, new requests for it queue up
and go together in the next call (first come, first served, at most `max_batch` per call). A
lone request goes at once: there is no timer, so light traffic sees no added delay. The rules
stay in SQL: api.reserve_tickets_batch answers each request as api.reserve_tickets would.

A request whose client went away before its batch was sent is dropped from the batch; one
that is granted after its client went away has its hold cancelled at once, so the seats go
back on sale instead of waiting out the hold -- unless it came with an Idempotency-Key: that
client will retry with the key and must get the hold its key recorded.

Idempotency keys travel with each request (`p_idempotency_key`, or in a batch
`p_idempotency_keys` aligned with the requests; a batch without keys does not send the array).
The SQL functions claim, replay and record them.

Waiting-room admission tokens (X-Admission-Token) travel the same way (`p_admission_token`, or
`p_admission_tokens` in a batch, sent only when a request of it has one); the reserve core
checks them for events with a waiting room. Nothing here decides admission.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from gateway import metrics
from gateway.db import Database
from gateway.errors import ApiError, busy, from_sqlstate, internal_error
from gateway.sqlcalls import reserve_requests

log = logging.getLogger("gateway.onsale.reserve")

STRATEGIES = {"pessimistic": "reserve_tickets", "optimistic": "reserve_tickets_optimistic"}
BATCH_FUNCTION = "reserve_tickets_batch"
ROUTE_FUNCTION = STRATEGIES["pessimistic"]  # what the route table names: the canonical reserve
RELEASE_FUNCTION = "cancel_reservation"  # gives back a hold whose client went away
ALL_FUNCTIONS = frozenset({*STRATEGIES.values(), BATCH_FUNCTION})


def function_for(strategy: str, coalesce: bool) -> str:
    """The api function a reserve runs under these settings (coalescing applies to the pessimistic path)."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown reserve strategy {strategy!r}: one of {', '.join(STRATEGIES)}")
    if strategy == "pessimistic" and coalesce:
        return BATCH_FUNCTION
    return STRATEGIES[strategy]


class Reserver:
    """The one way the gateway places a hold: `await reserver.reserve(...)` -> reservation JSON text."""

    def __init__(self, db: Database, strategy: str, coalesce: bool, batch_max: int) -> None:
        self.db = db
        self.function = function_for(strategy, coalesce)
        self.coalescing = self.function == BATCH_FUNCTION
        self.coalescer = ReserveCoalescer(db, batch_max)  # idle unless coalescing

    async def reserve(
        self,
        user_id: str,
        ticket_type_id: str,
        quantity: int,
        client_gone: Callable[[], Awaitable[None]],
        idempotency_key: str | None = None,
        admission_token: str | None = None,
    ) -> str | None:
        """The reservation JSON; raises the ApiError the SQL function raised. Returns None when
        `client_gone()` finished first (a coalesced request is then dropped, or its hold given back)."""
        if not self.coalescing:
            args: dict[str, Any] = {"p_user_id": user_id, "p_ticket_type_id": ticket_type_id, "p_quantity": quantity}
            if idempotency_key is not None:
                args["p_idempotency_key"] = idempotency_key
            if admission_token is not None:
                args["p_admission_token"] = admission_token
            return await self.db.call(self.function, args)
        granted = self.coalescer.submit(user_id, ticket_type_id, quantity, idempotency_key, admission_token)
        gone = asyncio.ensure_future(client_gone())
        gone.add_done_callback(lambda _: granted.cancel())
        try:
            return await granted
        except asyncio.CancelledError:
            if gone.done() and not gone.cancelled():
                return None  # nobody is listening
            raise
        finally:
            gone.cancel()

    async def close(self) -> None:
        await self.coalescer.close()


@dataclass
class Waiter:
    user_id: str
    quantity: int
    idempotency_key: str | None = None
    admission_token: str | None = None
    future: asyncio.Future[str] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class ReserveCoalescer:
    def __init__(self, db: Database, max_batch: int = 50) -> None:
        self.db = db
        self.max_batch = max_batch
        self._queues: dict[str, deque[Waiter]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self.batches = 0  # calls made, for tests and metrics

    def queued(self) -> int:
        """Requests waiting behind an in-flight batch call, all ticket types (a metrics gauge)."""
        return sum(len(queue) for queue in self._queues.values())

    def submit(
        self,
        user_id: str,
        ticket_type_id: str,
        quantity: int,
        idempotency_key: str | None = None,
        admission_token: str | None = None,
    ) -> asyncio.Future[str]:
        """A future of the reservation JSON, or of the ApiError api.reserve_tickets would raise.
        Cancel it if the client goes away."""
        waiter = Waiter(user_id, quantity, idempotency_key, admission_token)
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
                    waiter.future.set_exception(busy())

    async def _send(self, ticket_type_id: str, batch: list[Waiter]) -> ApiError | None:
        """One batch call; every waiter gets its answer. Returns the error if the call failed."""
        self.batches += 1
        metrics.reserve_batch(len(batch))
        failure: ApiError | None = None
        try:
            answers = await self._call_batch(ticket_type_id, batch)
            for waiter, (reservation, sqlstate, message) in zip(batch, answers, strict=True):
                if waiter.future.cancelled():
                    # A keyed hold stays: the client's retry with its key gets this very hold.
                    if reservation is not None and waiter.idempotency_key is None:
                        self._spawn(self._release(waiter.user_id, json.loads(reservation)["id"]))
                elif reservation is not None:
                    waiter.future.set_result(reservation)
                else:
                    waiter.future.set_exception(from_sqlstate(sqlstate, message))
        except ApiError as exc:
            failure = exc
        except Exception:
            log.exception("reserve batch failed")
            failure = internal_error()
        finally:
            # Whatever happened (an error, or this task cancelled at shutdown), nobody in the
            # batch is left waiting.
            leftover = failure or busy()
            for waiter in batch:
                if not waiter.future.done():
                    waiter.future.set_exception(leftover)
        return failure

    async def _call_batch(self, ticket_type_id: str, batch: list[Waiter]) -> list[tuple[Any, ...]]:
        """The one call of the batch function: one row per request, in order:
        (reservation JSON text | None, sqlstate, message)."""
        requests = reserve_requests((w.user_id, ticket_type_id, w.quantity) for w in batch)  # api.reserve_request[]
        args: dict[str, Any] = {"p_requests": requests}
        if any(w.idempotency_key is not None for w in batch):
            args["p_idempotency_keys"] = [w.idempotency_key for w in batch]
        if any(w.admission_token is not None for w in batch):
            args["p_admission_tokens"] = [w.admission_token for w in batch]
        return await self.db.rows(BATCH_FUNCTION, args)

    async def _release(self, user_id: str, reservation_id: str) -> None:
        try:
            await self.db.call(RELEASE_FUNCTION, {"p_user_id": user_id, "p_reservation_id": reservation_id})
        except ApiError as exc:  # the hold then simply expires
            log.warning("could not release an abandoned hold %s: %s", reservation_id, exc.code)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
