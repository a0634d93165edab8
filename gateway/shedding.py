"""Load shedding (issue 10): each gateway process bounds the requests it has in flight; past the
bound a request is answered 503 `busy` with `Retry-After` at once, so refusing costs microseconds
and the admitted requests keep their latency instead of everyone queueing for seconds.

Where the refusal happens: in the HTTP protocol (gateway/serving.py), as soon as the request head
is parsed, by writing prebuilt bytes to the socket: no ASGI scope handed on, no
RequestResponseCycle, no task, no routing, auth, access line or database. (The first version
refused in the outermost ASGI layer; measured under 3x overload a refusal then still cost
uvicorn a cycle, a task and a response, and waited its turn behind them: shed p99 337 ms.) The
`Shedder` ASGI layer below does the same for a server that does not use that protocol (tests,
another ASGI server): one `Gate` per process, so both count the same requests in flight.

The bound adapts (`Gate.judge`, every TARGET_INTERVAL): when even the quickest request of the
interval took longer than SHED_TARGET_MS, or the oldest request waiting for a database connection
had waited longer than that at every sample for DB_QUEUE_PERSIST (the turnstile: the quickest request
may be a cached read that never queues), a queue stands in the process (CoDel's test: a burst that
drains within the interval does not count), and the bound drops to 90% of what is in flight;
otherwise it grows back by a tenth, up to MAX_IN_FLIGHT, the hard cap. By Little's law the wait
inside the process is in-flight / throughput, so bounding what is in flight bounds the wait, and
adapting the bound to the measured time keeps it right whatever the throughput. A fixed low count
also refused a closed loop of 1000 users served in ~250 ms, who came straight back (22,000
refusals/s). Optionally (SHED_LOOP_LAG_MS) the loop's own lateness refuses too: it sees work
waiting outside the count (sockets read but not parsed, tasks ready but not run).

Always admitted (and not counted): the probes, so an orchestrator never takes a busy but healthy
process for a dead one; GET /metrics, so a scrape sees the overload; and the waiting room's
cheap routes (`GET /events/{id}/queue`, its status, and `GET /events/{id}/waiting-room`, the page):
a fan told "busy" by the waiting room itself would learn nothing, and those answers cost little. See `exempt`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable

from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.errors import PROBLEM_JSON, busy

RETRY_AFTER_SECONDS = 1
LOG_EVERY_SECONDS = 10.0
LAG_TICK_SECONDS = 0.02  # how often the loop's lateness is sampled (50 timer callbacks a second)
TARGET_INTERVAL = 0.1  # seconds: the window of the standing-queue test (SHED_TARGET_MS)
# The database queue stands when its oldest waiter has been older than the target at every sample
# for this long: a short stall of the database (the soak at half capacity had several, which a
# 100 ms window answered with 1,214 x 503) is waited out, not refused; a database that cannot
# keep up is refused once its queue has stood that long.
DB_QUEUE_PERSIST = 0.5
MIN_LIMIT = 64  # requests in flight the adaptive bound never goes below (a reserve batch is 50)
ADMITTED = "gateway.admitted"  # scope key: the protocol counted this request already

log = logging.getLogger("gateway.shedding")


# The providers' callbacks (gateway/payments/callbacks.py PATHS): never shed. A provider may call
# back once only (MoMo), and a forged one costs one HMAC before it is refused.
PAYMENT_CALLBACKS = frozenset({b"/payments/momo/ipn", b"/payments/zalopay/callback", b"/payments/bank/webhook",
                               b"/payments/card/webhook"})  # fmt: skip


def exempt(method: bytes, path: bytes) -> bool:
    """Never shed: /healthz, /readyz and /metrics (any method: a probe must never be refused as busy), POST
    to the payment callbacks, and
    GET /events/<one segment>/queue or /events/<one segment>/waiting-room. `path` is the raw path
    without the query, as sent; a percent-encoded spelling of these paths is not exempt (shed,
    which is safe: only the cheap routes are spared)."""
    if path == b"/healthz" or path == b"/readyz" or path == b"/metrics":
        return True
    if method == b"POST" and path in PAYMENT_CALLBACKS:
        return True  # money already taken; one per purchase (gateway/payments/callbacks.py)
    if method != b"GET" or not path.startswith(b"/events/"):
        return False
    event, slash, tail = path[8:].partition(b"/")
    return bool(event) and bool(slash) and (tail == b"queue" or tail == b"waiting-room")


class Gate:
    """This process's admission state, shared by the protocol and the ASGI layer."""

    def __init__(self) -> None:
        self.max_in_flight = 0  # 0: no bound (create_app sets it from MAX_IN_FLIGHT)
        self.max_lag = 0.0  # seconds; 0: the loop's lag is not watched (SHED_LOOP_LAG_MS)
        self.target = 0.0  # seconds; 0: no standing-queue test (SHED_TARGET_MS)
        self.pause = 0.0  # seconds a refused connection is not read (SHED_PAUSE_MS); 0: read on
        self.in_flight = 0
        self.limit = 0  # the adaptive bound on requests in flight, MIN_LIMIT..max_in_flight
        self._quickest = float("inf")  # the least time a request took in this interval, seconds
        self._interval_ends = 0.0
        self.lag = 0.0  # how late the loop ran the last lag timer, seconds
        self.shed = 0  # refused since the last log line
        self.shed_total = 0
        self.shed_lag = 0  # of shed_total, refused for the loop's lag (the rest: the in-flight bound); metrics
        self._logged = time.monotonic()
        self._watched: asyncio.AbstractEventLoop | None = None
        self._lags: list[float] = []
        body = json.dumps(busy().body()).encode()
        self.body = body
        self._head = (
            b"content-type: " + PROBLEM_JSON.encode() + b"\r\n"
            b"content-length: %d\r\n" % len(body) + b"retry-after: %d\r\n" % RETRY_AFTER_SECONDS
        )
        self._bytes: dict[tuple[int, bool], bytes] = {}  # (id of uvicorn's default headers, keep-alive)
        # Queues inside the process that the standing-queue test also reads: each gives how long
        # its oldest waiter has waited at loop time `now` (the database turnstiles, gateway/db.py).
        self.queues: list[Callable[[float], float]] = []
        self._queue_over_since: float | None = None  # since when every sample was over the target

    def configure(self, max_in_flight: int, max_lag_ms: float, target_ms: float = 0.0, pause_ms: float = 0.0) -> None:
        self.max_in_flight = max_in_flight
        self.pause = pause_ms / 1000
        self.max_lag = max_lag_ms / 1000 if max_in_flight else 0.0  # MAX_IN_FLIGHT=0 turns shedding off
        self.target = target_ms / 1000 if max_in_flight else 0.0
        self.limit = max_in_flight

    def over(self) -> bool:
        """Is this process past its bound? (Then refuse anything not exempt.)"""
        return bool(self.max_in_flight) and (
            self.in_flight >= self.limit or (self.max_lag > 0 and self.lag > self.max_lag)
        )

    def release(self, _: object = None) -> None:
        self.in_flight -= 1

    def done(self, seconds: float) -> None:
        """An admitted request finished after `seconds` (from its head parsed to its task's end)."""
        self.in_flight -= 1
        if seconds < self._quickest:
            self._quickest = seconds

    def judge(self, now: float) -> None:
        """At the end of each TARGET_INTERVAL (from the lag timer), adapt the bound on requests in
        flight: a standing queue when even the quickest request of the interval took longer than
        the target (CoDel's test: a burst that drains within an interval does not count), or when
        requests were in flight and none finished; then the bound drops to 90% of what is in
        flight (never below MIN_LIMIT, enough to fill a coalesced reserve batch); otherwise it grows
        back by a tenth, up to MAX_IN_FLIGHT. Gradual both ways: refusing everything for an interval
        emptied the process, the next interval admitted a burst, and served fell to a few hundred/s."""
        if self.queues:  # sampled at every call (each lag tick, 20 ms)
            if max(age(now) for age in self.queues) <= self.target:
                self._queue_over_since = None
            elif self._queue_over_since is None:
                self._queue_over_since = now
        if now < self._interval_ends:
            return
        self._interval_ends = now + TARGET_INTERVAL
        quickest, self._quickest = self._quickest, float("inf")
        if self.target <= 0:
            return
        if quickest == float("inf"):
            standing = self.in_flight > 0
        else:
            standing = quickest > self.target
        # The quickest request may be a cached read that never waits for the database while the
        # database routes queue for seconds (measured in the crowd bench: the bound never moved
        # with 800 requests waiting 1-2 s for a connection). So a database queue whose oldest
        # waiter was older than the target at every sample for DB_QUEUE_PERSIST is a standing
        # queue too: CoDel's test where the queue is. Every sample, not the last: a stall that
        # clears sooner (a checkpoint, an autovacuum pass) refuses nobody.
        over_since = self._queue_over_since
        standing = standing or (over_since is not None and now - over_since >= DB_QUEUE_PERSIST)
        if standing:
            self.limit = max(min(MIN_LIMIT, self.max_in_flight), min(self.limit, int(self.in_flight * 0.9)))
        elif self.limit < self.max_in_flight:
            self.limit = min(self.max_in_flight, self.limit + max(MIN_LIMIT // 8, self.limit // 10))

    def refused(self) -> None:
        self.shed += 1
        self.shed_total += 1
        if self.in_flight < self.limit:  # over() said yes, not for the count: for the lag
            self.shed_lag += 1

    def report(self) -> None:
        """Every LOG_EVERY_SECONDS (from the lag timer): one line with the refusals and the loop's
        lag over the interval; WARNING when something was refused, else INFO."""
        now = time.monotonic()
        lags = sorted(self._lags)
        self._lags.clear()
        if not lags:
            return
        level = logging.WARNING if self.shed else logging.INFO
        log.log(level, "shedding: %d requests refused in %.0f s; in flight %d (bound now %d, MAX_IN_FLIGHT %d); "
                "loop lag ms p50 %.1f p99 %.1f max %.1f (SHED_LOOP_LAG_MS %.0f, SHED_TARGET_MS %.0f)",
                self.shed, now - self._logged, self.in_flight, self.limit, self.max_in_flight,
                lags[len(lags) // 2] * 1000, lags[int(len(lags) * 0.99)] * 1000, lags[-1] * 1000,
                self.max_lag * 1000, self.target * 1000)  # fmt: skip
        self.shed, self._logged = 0, now

    def response_bytes(self, default_headers: list[tuple[bytes, bytes]], keep_alive: bool) -> bytes:
        """The whole 503 answer. uvicorn replaces its default headers (date, server) once a second
        with a new list: the bytes are built once per list and kept while it lasts."""
        key = (id(default_headers), keep_alive)
        cached = self._bytes.get(key)
        if cached is None:
            head = b"HTTP/1.1 503 Service Unavailable\r\n"
            head += b"".join(name + b": " + value + b"\r\n" for name, value in default_headers)
            head += self._head + (b"" if keep_alive else b"connection: close\r\n")
            cached = head + b"\r\n" + self.body
            if len(self._bytes) > 8:
                self._bytes.clear()
            self._bytes[key] = cached
        return cached

    def watch(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start sampling the loop's lag (once per loop; not at all without a bound)."""
        if not self.max_in_flight or self._watched is loop:
            return
        self._watched = loop
        self._logged = time.monotonic()
        self._interval_ends = loop.time() + TARGET_INTERVAL  # judge whole intervals only

        def tick(expected: float) -> None:
            now = loop.time()
            self.lag = max(0.0, now - expected)
            self._lags.append(self.lag)
            self.judge(now)
            if time.monotonic() - self._logged >= LOG_EVERY_SECONDS:
                self.report()
            if self._watched is loop and not loop.is_closed():
                loop.call_at(now + LAG_TICK_SECONDS, tick, now + LAG_TICK_SECONDS)

        start = loop.time() + LAG_TICK_SECONDS
        loop.call_at(start, tick, start)


GATE = Gate()  # one per process: a uvicorn worker serves one app


class Shedder:
    """Outermost ASGI layer: for requests the protocol has not already admitted (another server,
    the tests' in-process clients), the same bound on the same Gate."""

    def __init__(self, app: ASGIApp, gate: Gate = GATE) -> None:
        self.app = app
        self.gate = gate
        self._start = {
            "type": "http.response.start",
            "status": 503,
            "headers": [
                (b"content-type", PROBLEM_JSON.encode()),
                (b"content-length", str(len(gate.body)).encode()),
                (b"retry-after", str(RETRY_AFTER_SECONDS).encode()),
            ],
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        gate = self.gate
        if scope["type"] != "http" or not gate.max_in_flight or scope.get(ADMITTED):
            await self.app(scope, receive, send)
            return
        path = scope.get("raw_path") or scope["path"].encode()
        if exempt(scope["method"].encode(), path.split(b"?", 1)[0]):
            await self.app(scope, receive, send)
            return
        if gate.over():
            gate.refused()
            # The request body is never read: uvicorn discards it, and the connection stays usable.
            await send(self._start)
            await send({"type": "http.response.body", "body": gate.body})
            return
        gate.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            gate.release()
