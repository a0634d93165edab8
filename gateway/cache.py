"""The events cache (seed section 1.4): a dict with TTL, dropped at once on change.

Every gateway process LISTENs on the channel the catalogue triggers NOTIFY. While that
listener is not connected the cache is bypassed (a change could go unnoticed), and it is
emptied whenever the listener (re)connects.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

import psycopg

log = logging.getLogger("gateway.cache")

CHANNEL = "booking_catalog"
V = TypeVar("V")


class EventsCache(Generic[V]):
    def __init__(self, ttl: float, max_entries: int) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._entries: dict[str, tuple[float, V]] = {}
        self._loading: dict[str, asyncio.Future[V]] = {}
        self._generation = 0
        self.listening = False
        self.clock: Callable[[], float] = time.monotonic  # tests move time explicitly
        self.hits = 0
        self.misses = 0
        # With a read replica: the primary's WAL position when the last change was heard (or the
        # listener connected); reads from a standby must have replayed this far (gateway/db.py).
        self.fence = "0/0"

    def clear(self) -> None:
        self._generation += 1
        self._entries.clear()

    def sweep(self) -> int:
        now = self.clock()
        stale = [k for k, (expiry, _) in self._entries.items() if expiry <= now]
        for key in stale:
            del self._entries[key]
        return len(stale)

    async def get(self, key: str, load: Callable[[], Awaitable[V]]) -> V:
        if not self.listening:
            return await load()
        entry = self._entries.get(key)
        if entry is not None and entry[0] > self.clock():
            self.hits += 1
            return entry[1]
        self.misses += 1
        pending = self._loading.get(key)
        if pending is not None:  # one load per key at a time: no stampede on a cold cache
            return await asyncio.shield(pending)
        future: asyncio.Future[V] = asyncio.get_running_loop().create_future()
        self._loading[key] = future
        generation = self._generation
        try:
            value = await load()
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: waiters (if any) get it, nobody else must
            raise
        finally:
            self._loading.pop(key, None)
        future.set_result(value)
        if generation == self._generation and self.listening:  # no change since we started
            if len(self._entries) >= self.max_entries:
                self._entries.pop(next(iter(self._entries)))
            self._entries[key] = (self.clock() + self.ttl, value)
        return value


async def listen_for_changes(
    cache: EventsCache[Any], conninfo: str, retry_delay: float = 1.0, fence: bool = False
) -> None:
    """Run for ever: LISTEN, drop the cache on every NOTIFY, reconnect after failures.
    fence (a read replica is in use): before each drop, cache.fence becomes the primary's WAL
    position, which the change's commit is behind (its NOTIFY came after the commit)."""
    while True:
        try:
            async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
                await conn.execute(f"LISTEN {CHANNEL}")
                if fence:
                    cache.fence = await wal_position(conn)
                cache.clear()  # anything cached before now may have missed a change
                cache.listening = True
                log.info("listening for catalogue changes")
                if not fence:
                    async for _ in conn.notifies():
                        cache.clear()
                while fence:  # one notification at a time: the position is asked between them
                    async for _ in conn.notifies(stop_after=1):
                        pass
                    cache.fence = await wal_position(conn)
                    cache.clear()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("catalogue listener lost: %s", exc)
        finally:
            cache.listening = False
            cache.clear()
        await asyncio.sleep(retry_delay)


async def wal_position(conn: psycopg.AsyncConnection[Any]) -> str:
    """The primary's WAL insert position (a pg_lsn as text): past every commit made so far, even
    asynchronous ones (the flush and write positions may lag those). Right after a page header
    (no record begun on that page: offset 24, or 40 on a segment's first page) it is moved back to
    the page boundary, the position a standby's replay reports there; no record can end between
    the two, so the fence is as strict and is reached without waiting for the next record."""
    row = await (
        await conn.execute(
            "SELECT (l - CASE WHEN m IN (24, 40) THEN m ELSE 0 END)::text"
            " FROM (SELECT pg_catalog.pg_current_wal_insert_lsn() AS l) AS w,"
            " LATERAL (SELECT ((l - '0/0'::pg_lsn) % current_setting('wal_block_size')::int)::int AS m) AS p"
        )
    ).fetchone()
    assert row is not None
    return str(row[0])


async def sweep_forever(cache: EventsCache[Any], every: float) -> None:
    while True:
        await asyncio.sleep(every)
        removed = cache.sweep()
        if removed:
            log.info("swept %s expired cache entries", removed)


def cache_key(query: Any) -> str:
    return " ".join(str(query or "").lower().split())
