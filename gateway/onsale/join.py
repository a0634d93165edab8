"""Joins of a waiting room: concurrent joins of one event share one database call.

Each join takes the event's `waiting_rooms` row lock to hand out the next place (seq = joined +
1) and holds it through its commit, so the joins of one event run one at a time. When 10,000 fans
join within seconds, one call and one commit per join is the ceiling (~170 joins/s measured), and
the joins waiting for the lock hold pool connections that every other route needs.

So they are COALESCED like the hot reserve (gateway/onsale/reserve.py; the drain loop both use is
gateway/onsale/coalescer.py): while a call for an event
is in flight, new joins of that event queue up and go together in the next
`api.join_waiting_room_batch` call (in arrival order, at most `max_batch` per call, setting
JOIN_BATCH_MAX): one lock, one insert, one commit for all of them, and one pool connection per
event and process instead of one per join. A lone join goes at once (no timer). The rules stay in
SQL: the batch answers each user as `api.join_waiting_room` would (an unknown user gets its own
error; an event without a room, or not on sale, fails every join of the call, as it would each).

A join is idempotent and cheap to repeat, so a join whose client went away is still made: the
fan's place is kept and their next join or poll finds it.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

from gateway.db import Database
from gateway.errors import from_sqlstate
from gateway.onsale.coalescer import Coalescer, Waiter

log = logging.getLogger("gateway.onsale.join")

BATCH_FUNCTION = "join_waiting_room_batch"
MAX_BATCH = 1000  # api.join_waiting_room_batch refuses more per call


class Joiner(Waiter):
    __slots__ = ("user_id",)

    def __init__(self, user_id: str) -> None:
        super().__init__()
        self.user_id = user_id


class JoinCoalescer(Coalescer[Joiner]):
    """`await coalescer.join(event_id, user_id)` -> the place JSON text, or the ApiError the
    database gave for this join."""

    skip_cancelled = False  # a join is made even when its client went away (the place is kept)
    log = log

    def __init__(self, db: Database, max_batch: int = 200) -> None:
        if not 1 <= max_batch <= MAX_BATCH:
            raise ValueError(f"max_batch must be between 1 and {MAX_BATCH}")
        super().__init__(max_batch)
        self.db = db

    async def join(self, event_id: str, user_id: str) -> str:
        return await self.submit(event_id, user_id)  # a cancelled request's answer is skipped

    def submit(self, event_id: str, user_id: str) -> asyncio.Future[str]:
        return self._enqueue(event_id, Joiner(user_id))

    async def _call(self, event_id: str, batch: list[Joiner]) -> list[tuple[Any, ...]]:
        return await self.db.rows(
            BATCH_FUNCTION, {"p_event_id": uuid.UUID(event_id), "p_user_ids": [uuid.UUID(j.user_id) for j in batch]}
        )

    def _answer(self, joiner: Joiner, row: tuple[Any, ...]) -> None:
        place, sqlstate, message = row
        if joiner.future.done():
            return
        if place is not None:
            joiner.future.set_result(str(place))
        else:
            joiner.future.set_exception(from_sqlstate(sqlstate, message))
