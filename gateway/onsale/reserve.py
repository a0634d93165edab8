"""Reserves: which SQL function decides a hold, and how concurrent requests reach it.

This module owns the reserve strategy (settings RESERVE_STRATEGY, RESERVE_COALESCE,
RESERVE_BATCH_MAX) and every SQL function name it may call; the route table names the
canonical `reserve_tickets`, and /openapi.json asks `function_for` what really runs.

- pessimistic (default): `api.reserve_tickets` locks the ticket type; with coalescing on
  (default), concurrent requests for one ticket type share one `api.reserve_tickets_batch`
  call instead (one lock and one commit per batch).
- optimistic: `api.reserve_tickets_optimistic` (version compare-and-set), one call per request.

The coalescer (its drain loop is gateway/onsale/coalescer.py's): while a batch call for a ticket
type is in flight, new requests for it queue up and go together in the next call (first come,
first served, at most `max_batch` per call). A lone request goes at once: there is no timer, so
light traffic sees no added delay. The rules stay in SQL: api.reserve_tickets_batch answers each
request as api.reserve_tickets would.

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
from collections.abc import Awaitable, Callable
from typing import Any

from gateway import metrics
from gateway.db import Database
from gateway.errors import ApiError, from_sqlstate
from gateway.onsale.coalescer import Coalescer, Waiter
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


class ReserveWaiter(Waiter):
    __slots__ = ("admission_token", "idempotency_key", "quantity", "user_id")

    def __init__(
        self, user_id: str, quantity: int, idempotency_key: str | None = None, admission_token: str | None = None
    ) -> None:
        super().__init__()
        self.user_id = user_id
        self.quantity = quantity
        self.idempotency_key = idempotency_key
        self.admission_token = admission_token


class ReserveCoalescer(Coalescer[ReserveWaiter]):
    log = log

    def __init__(self, db: Database, max_batch: int = 50) -> None:
        super().__init__(max_batch)
        self.db = db

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
        return self._enqueue(ticket_type_id, ReserveWaiter(user_id, quantity, idempotency_key, admission_token))

    async def _call(self, ticket_type_id: str, batch: list[ReserveWaiter]) -> list[tuple[Any, ...]]:
        metrics.reserve_batch(len(batch))
        return await self._call_batch(ticket_type_id, batch)

    def _answer(self, waiter: ReserveWaiter, row: tuple[Any, ...]) -> None:
        reservation, sqlstate, message = row
        if waiter.future.cancelled():
            # A keyed hold stays: the client's retry with its key gets this very hold.
            if reservation is not None and waiter.idempotency_key is None:
                self._spawn(self._release(waiter.user_id, json.loads(reservation)["id"]))
        elif reservation is not None:
            waiter.future.set_result(reservation)
        else:
            waiter.future.set_exception(from_sqlstate(sqlstate, message))

    async def _call_batch(self, ticket_type_id: str, batch: list[ReserveWaiter]) -> list[tuple[Any, ...]]:
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
