"""Joins of a waiting room: concurrent joins of one event share one database call.

Each join takes the event's `waiting_rooms` row lock to hand out the next place (seq = joined +
1) and holds it through its commit, so the joins of one event run one at a time. When 10,000 fans
join within seconds, one call and one commit per join is the ceiling (~170 joins/s measured), and
the joins waiting for the lock hold pool connections that every other route needs.

So they are COALESCED like the hot reserve (gateway/onsale/reserve.py): while a call for an event
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
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from gateway.db import Database
from gateway.errors import ApiError, busy, from_sqlstate, internal_error

log = logging.getLogger("gateway.onsale.join")

BATCH_FUNCTION = "join_waiting_room_batch"
MAX_BATCH = 1000  # api.join_waiting_room_batch refuses more per call


@dataclass
class Joiner:
    user_id: str
    future: asyncio.Future[str] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class JoinCoalescer:
    """`await coalescer.join(event_id, user_id)` -> the place JSON text, or the ApiError the
    database gave for this join."""

    def __init__(self, db: Database, max_batch: int = 200) -> None:
        if not 1 <= max_batch <= MAX_BATCH:
            raise ValueError(f"max_batch must be between 1 and {MAX_BATCH}")
        self.db = db
        self.max_batch = max_batch
        self._queues: dict[str, deque[Joiner]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self.batches = 0  # calls made, for tests and metrics

    async def join(self, event_id: str, user_id: str) -> str:
        return await self.submit(event_id, user_id)  # a cancelled request's answer is skipped

    def submit(self, event_id: str, user_id: str) -> asyncio.Future[str]:
        joiner = Joiner(user_id)
        queue = self._queues.get(event_id)
        if queue is None:  # nothing in flight for this event: start a drain, which sends at once
            queue = self._queues[event_id] = deque()
            task = asyncio.get_running_loop().create_task(self._drain(event_id, queue))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        queue.append(joiner)
        return joiner.future

    async def _drain(self, event_id: str, queue: deque[Joiner]) -> None:
        try:
            while queue:
                batch = [queue.popleft() for _ in range(min(len(queue), self.max_batch))]
                failure = await self._send(event_id, batch)
                if failure is not None and failure.status == 503:
                    # The database is unreachable or overloaded: whoever queued behind this batch
                    # would wait out the same timeout. Answer them now.
                    while queue:
                        joiner = queue.popleft()
                        if not joiner.future.done():
                            joiner.future.set_exception(failure)
        finally:
            # No await since the queue was last seen empty: nothing can have slipped in.
            del self._queues[event_id]
            for joiner in queue:  # only if the loop died: never leave a request hanging
                if not joiner.future.done():
                    joiner.future.set_exception(busy())

    async def _send(self, event_id: str, batch: list[Joiner]) -> ApiError | None:
        """One batch call; every joiner gets its answer. Returns the error if the call failed."""
        self.batches += 1
        failure: ApiError | None = None
        try:
            rows = await self.db.rows(
                BATCH_FUNCTION,
                {"p_event_id": uuid.UUID(event_id), "p_user_ids": [uuid.UUID(j.user_id) for j in batch]},
            )
            for joiner, (place, sqlstate, message) in zip(batch, rows, strict=True):
                if joiner.future.done():
                    continue
                if place is not None:
                    joiner.future.set_result(str(place))
                else:
                    joiner.future.set_exception(from_sqlstate(sqlstate, message))
        except ApiError as exc:
            failure = exc
        except Exception:
            log.exception("join batch failed")
            failure = internal_error()
        finally:
            # Whatever happened (an error, or this task cancelled at shutdown), nobody in the
            # batch is left waiting.
            leftover = failure or busy()
            for joiner in batch:
                if not joiner.future.done():
                    joiner.future.set_exception(leftover)
        return failure

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
