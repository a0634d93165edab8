"""The connection pools and the one way the gateway talks to PostgreSQL: call an api function.

Everything runs on the primary pool (`Database`), except the catalogue reads the route table
marks `standby_ok` when GATEWAY_DATABASE_READ_URL is set: those go through a `ReadRouter` to a
second pool (a standby), and back to the primary when the standby cannot answer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

import psycopg
from psycopg.types.string import TextLoader
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from gateway.config import Settings
from gateway.errors import busy, from_database, is_connection_problem
from gateway.sqlcalls import FENCE, api_call_bytes, fenced_call_bytes

log = logging.getLogger("gateway.db")


async def _configure(conn: psycopg.AsyncConnection[Any]) -> None:
    # JSON built by PostgreSQL is passed to the client as it is: no parse, no re-encode.
    conn.adapters.register_loader("json", TextLoader)
    await conn.set_autocommit(True)  # each api function call is its own transaction


def make_pool(settings: Settings) -> AsyncConnectionPool:
    return AsyncConnectionPool(
        settings.database_url.get_secret_value(),
        min_size=settings.pool_min,
        max_size=settings.pool_max,
        timeout=settings.pool_timeout,
        max_idle=settings.pool_max_idle,
        reconnect_timeout=0,  # keep trying for ever after an outage: never give up the pool
        configure=_configure,
        kwargs={"application_name": "booking-gateway"},
        open=False,
        name="gateway",
    )


READ_APPLICATION_NAME = "booking-gateway-read"  # the read pool's sessions, for DBAs (pg_stat_activity)
# A read connection lives at most this long (seconds): one that libpq opened on the primary while
# the standby was away (prefer-standby) is replaced within a minute of the standby's return.
READ_POOL_MAX_LIFETIME = 60.0


def make_read_pool(settings: Settings) -> AsyncConnectionPool | None:
    """The catalogue's read pool on GATEWAY_DATABASE_READ_URL; None when it is unset."""
    if settings.database_read_url is None:
        return None
    return AsyncConnectionPool(
        settings.database_read_url.get_secret_value(),
        min_size=min(settings.pool_min, settings.read_pool_max),
        max_size=settings.read_pool_max,
        timeout=settings.pool_timeout,
        max_idle=settings.pool_max_idle,
        max_lifetime=READ_POOL_MAX_LIFETIME,
        reconnect_timeout=0,
        configure=_configure,
        kwargs={"application_name": READ_APPLICATION_NAME},
        open=False,
        name="gateway-read",
    )


class Turnstile:
    """At most `size` holders; the others wait in arrival order, each handed its turn directly.

    Why (issue 10, the crowd bench): psycopg_pool serializes getconn and putconn on one
    asyncio.Lock. With hundreds of requests per process waiting for a connection, that lock
    always has a queue, and an asyncio.Lock hands itself on once per event-loop iteration (the
    next holder runs only on the next pass over the ready callbacks). A returned connection then
    waited behind every queued getconn before the next request could use it: measured, the
    pool's 20 connections were all "in use" with ~800 requests waiting, while PostgreSQL showed
    ~29 of the gateway's ~40 sessions idle in ClientRead and used 0.6 cores; each checkout held
    its connection ~18 ms for ~1 ms of database work. In front of the pool, this turnstile lets
    only as many requests into the pool as it has connections, so its lock is (almost) never
    contended, and a finished request wakes the next waiter in one step (a future's result)."""

    def __init__(self, size: int) -> None:
        self.free = size
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._arrivals: dict[asyncio.Future[None], float] = {}  # insertion order = arrival order

    async def enter(self, patience: float) -> None:
        if self.free > 0 and not self._waiters:
            self.free -= 1
            return
        loop = asyncio.get_running_loop()
        turn: asyncio.Future[None] = loop.create_future()
        self._waiters.append(turn)
        self._arrivals[turn] = loop.time()
        try:
            await asyncio.wait_for(turn, patience)
        except BaseException:
            if turn.done() and not turn.cancelled():
                self.leave()  # handed a turn just as the wait ended: pass it on
            else:
                self._remove(turn)
            raise

    def leave(self) -> None:
        while self._waiters:
            turn = self._waiters.popleft()
            self._arrivals.pop(turn, None)
            if not turn.done():
                turn.set_result(None)  # the turn passes straight to the next waiter
                return
        self.free += 1

    def _remove(self, turn: asyncio.Future[None]) -> None:
        self._arrivals.pop(turn, None)
        try:
            self._waiters.remove(turn)
        except ValueError:
            pass

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def oldest_wait(self, now: float) -> float:
        """How long the longest waiter has waited (loop time), seconds; 0 with nobody waiting. The
        shedding gate's standing-queue test reads it (gateway/shedding.py, Gate.judge)."""
        for arrived in self._arrivals.values():
            return max(0.0, now - arrived)
        return 0.0


class Database:
    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool
        self.turnstile = Turnstile(pool.max_size)
        self._timeout = pool.timeout
        self.timeouts = 0  # requests that waited out the turnstile (503 busy); a metric
        self._checking: asyncio.Task[None] | None = None

    async def call(self, function: str, args: Mapping[str, Any]) -> str | None:
        """Run one api function in its own transaction; returns its JSON text (or None)."""
        rows = await self._run(api_call_bytes(function, args), args)
        return None if not rows or rows[0][0] is None else str(rows[0][0])

    async def rows(self, function: str, args: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        """Run one set-returning api function in its own transaction; returns its rows."""
        return await self._run(api_call_bytes(function, args, rows=True), args)

    async def _run(self, query: bytes, args: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        try:
            try:
                await self.turnstile.enter(self._timeout)
            except TimeoutError:
                self.timeouts += 1
                raise PoolTimeout(f"couldn't get a connection after {self._timeout:.2f} sec") from None
            try:
                async with self.pool.connection() as conn:
                    cur = await conn.execute(query, args)
                    return await cur.fetchall()
            finally:
                self.turnstile.leave()
        except (psycopg.Error, TimeoutError) as exc:
            if is_connection_problem(exc):
                self._recheck_idle_connections()
            raise from_database(exc) from exc

    async def ping(self) -> None:
        try:
            async with self.pool.connection() as conn:
                await conn.execute("SELECT 1")
        except (psycopg.Error, TimeoutError) as exc:
            if is_connection_problem(exc):
                self._recheck_idle_connections()
            raise from_database(exc) from exc

    def _recheck_idle_connections(self) -> None:
        """After the server went away, the idle connections are dead too: test and replace them
        in the background so the next requests do not each find one."""
        if self._checking is None or self._checking.done():
            self._checking = asyncio.create_task(self._check())

    async def _check(self) -> None:
        try:
            await self.pool.check()
        except Exception:  # the server may still be down; the next failure checks again
            log.warning("pool check failed", exc_info=True)


def standby_failure(exc: Exception) -> str | None:
    """Why a read on the read pool is retried on the primary (a fallback reason), or None when
    the error is the answer (a business error, a bad argument): reads are safe to run again."""
    if isinstance(exc, PoolTimeout) or is_connection_problem(exc):
        return "unavailable"  # no standby connection in time, or it broke (stopped, restarted)
    if isinstance(exc, psycopg.Error) and exc.diag.sqlstate == "40001":
        return "recovery_conflict"  # the standby cancelled the query to replay the WAL
    return None


class ReadRouter:
    """Catalogue reads on the read pool, the primary pool when the read pool cannot answer.

    - The read pool's URL usually lists the standby then the primary with
      target_session_attrs=prefer-standby: libpq itself opens read connections on the primary
      while no standby answers.
    - A read that fails on the read pool for want of a connection, or a broken one, or by a
      recovery conflict, is run once more on the primary pool (reads change nothing).
    - Fenced: a standby answers only once it has replayed the WAL up to `fence()`, the primary's
      WAL position when this process last heard of a catalogue change (gateway/cache.py); one
      behind answers no row and the read goes to the primary. Without it, the events cache,
      emptied by the change's NOTIFY, could be refilled from a standby that has not replayed the
      change yet and serve the old page for EVENTS_CACHE_TTL_SECONDS.

    Counts (plain integers, gateway/metrics.py copies them): reads answered through the read pool
    by the node that answered (in_hot_standby, reported by the server: no query), and fallbacks
    by reason."""

    # After the read pool could not connect (or lost its connection), reads skip it for this long
    # and go straight to the primary: a standby that is down or drops packets costs one request
    # per process a POOL_TIMEOUT_SECONDS wait every few seconds, not every read.
    UNAVAILABLE_PAUSE = 5.0

    def __init__(self, reads: Database, primary: Database, fence: Callable[[], str]) -> None:
        self.reads = reads
        self.primary = primary
        self.fence = fence
        self.served = {"standby": 0, "primary": 0}
        self.fallbacks = {"unavailable": 0, "recovery_conflict": 0, "behind": 0}
        self._skip_until = 0.0

    async def call(self, function: str, args: Mapping[str, Any]) -> str | None:
        """As Database.call: one api function's JSON text (or None)."""
        if time.monotonic() < self._skip_until:
            self.fallbacks["unavailable"] += 1
            return await self.primary.call(function, args)
        try:
            rows = await self._read(fenced_call_bytes(function, tuple(args)), {**args, FENCE: self.fence()})
        except psycopg.Error as exc:
            reason = standby_failure(exc)
            if reason is None:
                raise from_database(exc) from exc
            if reason == "unavailable":
                if time.monotonic() >= self._skip_until:
                    log.warning("read pool unavailable (%s): catalogue reads on the primary for %gs", exc,
                                self.UNAVAILABLE_PAUSE)  # fmt: skip
                self._skip_until = time.monotonic() + self.UNAVAILABLE_PAUSE
            self.fallbacks[reason] += 1
            return await self.primary.call(function, args)
        if not rows:
            self.fallbacks["behind"] += 1
            return await self.primary.call(function, args)
        return None if rows[0][0] is None else str(rows[0][0])

    async def _read(self, query: bytes, args: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        db = self.reads
        try:
            try:
                await db.turnstile.enter(db.pool.timeout)
            except TimeoutError:
                # Every read connection busy for POOL_TIMEOUT_SECONDS: the standby is there but
                # saturated. Shed (503 busy) rather than pour its overflow onto the primary, whose
                # pool serves reserve and complete.
                db.timeouts += 1
                raise busy() from None
            try:
                async with db.pool.connection() as conn:
                    rows = await (await conn.execute(query, args)).fetchall()
                    standby = conn.pgconn.parameter_status(b"in_hot_standby") == b"on"
            finally:
                db.turnstile.leave()
        except psycopg.Error as exc:
            if is_connection_problem(exc):
                db._recheck_idle_connections()
            raise
        if rows:
            self.served["standby" if standby else "primary"] += 1
        return rows
