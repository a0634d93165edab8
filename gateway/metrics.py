"""Prometheus metrics for GET /metrics (issue 13), prometheus-client in multiprocess mode.

Modes. With PROMETHEUS_MULTIPROC_DIR set (`make run` sets it to `.local/metrics`, emptied
before uvicorn starts), every uvicorn worker writes its samples into mmap files there and a
scrape, answered by whichever worker gets it, reads all the files: the counters and histograms
of every worker (those of workers that died too: a counter must not go back), the gauges of the
live ones summed (`livesum`) or the latest (`livemostrecent`). Without it (tests, another
server) the values live in this process and a scrape shows this process only. prometheus_client
chooses its value store when it is imported, so the variable must be set before the process
starts (dbctl does).

Cost on the request path (each request, the hot reserve included): AccessLog
(gateway/logs.py) calls `observe_request` once, after the response: plain integers per (route
template, method, status), moved into the metrics by `flush()` (below). Everything else is
counted in plain integers where it happens too (reserve outcomes, the shedder's refusals, the
cache's hits, the turnstile's timeouts) and copied into the metrics by `GatewayMetrics.sync`: at
each scrape, and in multiprocess mode once a second in every worker (a scrape reaches one worker
only). Batch sizes are observed per batch call.

Labels are bounded: `route` is the route TEMPLATE (`/bookings/complete/{reservation_id}`, never
a path with an id; unmatched paths are `unmatched`), `method` one of the methods HTTP defines
(anything else `other`), `status` an HTTP status, `outcome` a contract error code. The only
label that grows with data is `event_id` on the waiting-room gauges: acceptable because rooms
are few (one per onsale, a handful at a time) and gone rooms are removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import logging
import os
import re
import time
from bisect import bisect_left
from collections import deque
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

if TYPE_CHECKING:
    from gateway.app import Gateway

log = logging.getLogger("gateway.metrics")

MULTIPROC_DIR = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None
CONTENT_TYPE = CONTENT_TYPE_LATEST
SYNC_SECONDS = 1.0  # multiprocess mode: how often each worker copies its gauges and tallies
# GET /metrics is never shed nor rate limited, and an answer costs ~1 ms of CPU: past this many
# scrapes within FLOOD_SECONDS a worker answers its last exposition again (at most that old), so a
# flood of scrapes costs a few expositions a second, not one per request. Prometheus scrapes
# every 15 s or so and never sees this.
FLOOD_SCRAPES = 5
FLOOD_SECONDS = 1.0
clock = time.monotonic  # the flood guard's clock (a test steps its own)

# This process's registry (single-process mode exposes it; in multiprocess mode the files are read).
REGISTRY = CollectorRegistry(auto_describe=True)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 5, 10, 20, 30, 40, 50, 100, 200, 500, 1000)
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"})
UNMATCHED = "unmatched"

REQUESTS = Counter(
    "booking_http_requests", "HTTP requests answered, by route template, method and status",
    ["route", "method", "status"], registry=REGISTRY,
)  # fmt: skip
LATENCY = Histogram(
    "booking_http_request_duration_seconds", "Time from the request's arrival in the app to its answer",
    ["route", "method", "status"], buckets=LATENCY_BUCKETS, registry=REGISTRY,
)  # fmt: skip
RESERVE_OUTCOMES = Counter(
    "booking_reserve_outcomes", "POST /bookings/reserve answers: `reserved` (201), the error code, or `client_gone`",
    ["outcome"], registry=REGISTRY,
)  # fmt: skip
RESERVE_BATCH = Histogram(
    "booking_reserve_batch_size", "Requests per coalesced api.reserve_tickets_batch call",
    buckets=BATCH_BUCKETS, registry=REGISTRY,
)  # fmt: skip
RESERVE_QUEUE = Gauge(
    "booking_reserve_queue_depth", "Reserves queued behind an in-flight batch call (all ticket types)",
    registry=REGISTRY, multiprocess_mode="livesum",
)  # fmt: skip
POOL_SIZE = Gauge(
    "booking_db_pool_size", "Connections in the gateway pools (open, in use or idle)",
    registry=REGISTRY, multiprocess_mode="livesum",
)  # fmt: skip
POOL_MAX = Gauge(
    "booking_db_pool_max", "POOL_MAX_SIZE summed over the gateway processes", registry=REGISTRY,
    multiprocess_mode="livesum",
)  # fmt: skip
POOL_AVAILABLE = Gauge(
    "booking_db_pool_available", "Idle connections in the pools", registry=REGISTRY, multiprocess_mode="livesum"
)
POOL_WAITING = Gauge(
    "booking_db_pool_waiting", "Requests waiting for a connection (the turnstile's queue plus the pool's)",
    registry=REGISTRY, multiprocess_mode="livesum",
)  # fmt: skip
POOL_TIMEOUTS = Counter(
    "booking_db_pool_timeouts", "Requests that got no connection in POOL_TIMEOUT_SECONDS (503 busy), by where",
    ["where"], registry=REGISTRY,
)  # fmt: skip
SHED = Counter(
    "booking_shed", "Requests refused 503 busy by load shedding, by reason (in_flight: the bound; loop_lag)",
    ["reason"], registry=REGISTRY,
)  # fmt: skip
CACHE = Counter(
    "booking_events_cache_lookups", "GET /events cache lookups while the cache is live, by result (hit, miss)",
    ["result"], registry=REGISTRY,
)  # fmt: skip
CATALOGUE_READS = Counter(
    "booking_catalogue_reads", "Catalogue reads answered through the read pool (GATEWAY_DATABASE_READ_URL), by the "
    "node that answered: standby, or primary (libpq chose it: no standby answered)", ["node"], registry=REGISTRY,
)  # fmt: skip
READ_FALLBACKS = Counter(
    "booking_read_fallbacks", "Catalogue reads the read pool could not answer, run again on the primary pool, by "
    "reason (unavailable, recovery_conflict, behind: the standby had not replayed the last catalogue change)",
    ["reason"], registry=REGISTRY,
)  # fmt: skip
ROOM_SERVING = Gauge(
    "booking_waiting_room_serving_position", "Positions up to this one are admitted (the gateway's mirror)",
    ["event_id"], registry=REGISTRY, multiprocess_mode="livemostrecent",
)  # fmt: skip
ROOM_RATE = Gauge(
    "booking_waiting_room_admission_rate_per_minute", "Positions admitted per minute (0 while paused or off)",
    ["event_id"], registry=REGISTRY, multiprocess_mode="livemostrecent",
)  # fmt: skip

# ------------------------------------------------------------------ the request path
#
# A request adds to plain Python numbers (one dict lookup, three additions, a bisect); `flush()`
# moves them into the metrics (in multiprocess mode mmap writes under a lock, ~2.7 us per request
# for the counter and the histogram if done per request). flush() runs at every scrape and, in
# multiprocess mode, once a second in every worker (GatewayMetrics), and at shutdown: a worker
# killed with -9 loses at most its last second.

_NO_LATENCY = [0] * (len(LATENCY_BUCKETS) + 1)
# (route, method, status) -> [count, sum of seconds, count per latency bucket (the last: +Inf)...]
_requests: dict[tuple[str | None, str, int], list[Any]] = {}
_outcomes: dict[str, int] = {}


def observe_request(route: str | None, method: str, status: int, seconds: float) -> None:
    """One answered request (from AccessLog, after the response)."""
    key = (route, method if method in METHODS else "other", status)  # a client's method is any token
    tally = _requests.get(key)
    if tally is None:
        tally = _requests[key] = [0, 0.0, *_NO_LATENCY]
    tally[0] += 1
    tally[1] += seconds
    tally[2 + bisect_left(LATENCY_BUCKETS, seconds)] += 1  # the first bucket whose bound >= seconds (`le`)


def reserve_outcome(outcome: str) -> None:
    _outcomes[outcome] = _outcomes.get(outcome, 0) + 1


def flush() -> None:
    """The tallies of this process since the last flush, into the metrics."""
    for (route, method, status), tally in list(_requests.items()):  # list: a test may run apps in threads
        if not tally[0]:
            continue
        labels = (route or UNMATCHED, method, str(status))
        REQUESTS.labels(*labels).inc(tally[0])
        latency = LATENCY.labels(*labels)
        latency._sum.inc(tally[1])  # prometheus-client 0.26.0's own fields (pinned): observe() in bulk
        for bucket, n in zip(latency._buckets, tally[2:], strict=True):
            if n:
                bucket.inc(n)
        tally[:] = [0, 0.0, *_NO_LATENCY]
    for outcome, n in _outcomes.items():
        if n:
            RESERVE_OUTCOMES.labels(outcome).inc(n)
    _outcomes.clear()


def reserve_batch(size: int) -> None:
    RESERVE_BATCH.observe(size)


# ------------------------------------------------------------------ scrape-time values


class GatewayMetrics:
    """Copies one Gateway's state into the metrics: gauges set, integer tallies added as deltas."""

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self._seen: dict[str, int] = {}
        self._rooms: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        self._scrapes: deque[float] = deque(maxlen=FLOOD_SCRAPES)
        self._last: tuple[float, bytes] | None = None

    def scrape(self) -> bytes:
        """The answer of GET /metrics: a fresh exposition, or under a flood of scrapes (more than
        FLOOD_SCRAPES within FLOOD_SECONDS) the last one again while it is younger than that."""
        now = clock()
        flooded = len(self._scrapes) == FLOOD_SCRAPES and now - self._scrapes[0] < FLOOD_SECONDS
        self._scrapes.append(now)
        if flooded and self._last is not None and now - self._last[0] < FLOOD_SECONDS:
            return self._last[1]
        self.sync()
        body = exposition()
        self._last = (now, body)
        return body

    def _add(self, name: str, counter: Any, value: int) -> None:
        last = self._seen.get(name, 0)
        if value != last:
            counter.inc(value - last if value > last else value)  # smaller: the source was reset
            self._seen[name] = value

    def sync(self) -> None:
        from gateway.shedding import GATE

        flush()
        gw = self.gw
        stats = gw.pool.get_stats()
        POOL_SIZE.set(stats.get("pool_size", 0))
        POOL_MAX.set(gw.pool.max_size)
        POOL_AVAILABLE.set(stats.get("pool_available", 0))
        POOL_WAITING.set(stats.get("requests_waiting", 0) + gw.db.turnstile.waiting)
        self._add("timeouts_turnstile", POOL_TIMEOUTS.labels("turnstile"), gw.db.timeouts)
        self._add("timeouts_pool", POOL_TIMEOUTS.labels("pool"), stats.get("requests_errors", 0))
        RESERVE_QUEUE.set(gw.coalescer.queued())
        if (router := gw.read_router) is not None:
            for node, n in router.served.items():
                self._add(f"reads_{node}", CATALOGUE_READS.labels(node), n)
            for reason, n in router.fallbacks.items():
                self._add(f"fallbacks_{reason}", READ_FALLBACKS.labels(reason), n)
        self._add("cache_hit", CACHE.labels("hit"), gw.cache.hits)
        self._add("cache_miss", CACHE.labels("miss"), gw.cache.misses)
        self._add("shed_lag", SHED.labels("loop_lag"), GATE.shed_lag)
        self._add("shed_in_flight", SHED.labels("in_flight"), GATE.shed_total - GATE.shed_lag)
        rooms = gw.rooms.rooms
        now = gw.rooms.now()
        for event_id, room in rooms.items():
            ROOM_SERVING.labels(event_id).set(room.serving(now))
            running = room.enabled and not room.paused and room.rate is not None
            ROOM_RATE.labels(event_id).set(room.rate if running and room.rate is not None else 0)
        for gone in self._rooms - rooms.keys():
            for gauge in (ROOM_SERVING, ROOM_RATE):
                with contextlib.suppress(KeyError):
                    gauge.remove(gone)
        self._rooms = set(rooms)

    def start(self) -> None:
        """Multiprocess mode: sync every SYNC_SECONDS (a scrape reaches one worker only)."""
        if MULTIPROC_DIR is not None:
            self._task = asyncio.create_task(self._forever())

    async def _forever(self) -> None:
        while True:
            try:
                self.sync()
            except Exception:  # never let metrics take the process down
                log.warning("metrics sync failed", exc_info=True)
            await asyncio.sleep(SYNC_SECONDS)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        flush()
        if MULTIPROC_DIR is not None:
            # This worker's live gauges go; its counters and histograms stay in the sum.
            multiprocess.mark_process_dead(os.getpid(), MULTIPROC_DIR)  # type: ignore[no-untyped-call]


# ------------------------------------------------------------------ exposition

_LIVE_FILE = re.compile(r"gauge_live\w+?_(\d+)\.db$")


def forget_dead_workers(path: str) -> None:
    """A worker killed (kill -9, OOM) never ran its shutdown: drop its live gauges here."""
    pids = {int(m.group(1)) for f in glob.glob(os.path.join(path, "gauge_live*.db")) if (m := _LIVE_FILE.search(f))}
    for pid in pids:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            multiprocess.mark_process_dead(pid, path)  # type: ignore[no-untyped-call]
        except PermissionError:
            pass  # alive, someone else's


def exposition(multiproc_dir: str | None = MULTIPROC_DIR) -> bytes:
    """The Prometheus text format: every worker's samples in multiprocess mode, else this process's."""
    if multiproc_dir is None:
        return generate_latest(REGISTRY)
    forget_dead_workers(multiproc_dir)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=multiproc_dir)  # type: ignore[no-untyped-call]
    return generate_latest(registry)
