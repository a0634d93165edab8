"""A lean per-user HTTP/1.1 load generator: each simulated user is one keep-alive connection
with its own token and state, running a flow (an async function) that thinks between clicks.

Why not wrk: its Lua cannot keep per-connection state (a user's reservation id, admission
token) nor split latency per route. Why this shape: asyncio Protocols (no streams), prebuilt
request bytes, a parser that reads only the status line and Content-Length, and the users
split over several processes (fork) when one cannot keep up.

Its own overhead is measured, not assumed: every request has a scheduled moment (when the
user's think time ends) and an actual write; `lag` is the difference. A lag of milliseconds
means the latencies are the server's; seconds of lag mean the generator was the bottleneck and
the offered load was lower than planned (the report prints it next to the figures).

Load model: a closed loop per user with think time. Each user sends one request, waits for the
answer, thinks, sends the next; the offered rate is about users / (mean think + latency), so it
falls a little when answers slow down (unlike an open loop that keeps arriving regardless).
"""

from __future__ import annotations

import array
import asyncio
import multiprocessing
import os
import random
import resource
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

TIMEOUT_SECONDS = 10.0  # as wrk --timeout 10s: no answer by then is a socket error (timeout)
SOCKET_ERRORS = ("connect", "read", "timeout")


class SocketError(Exception):
    """The connection failed (connect refused, reset, closed or timed out); counted by kind."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


def build_request(method: str, path: str, headers: dict[str, str] | None = None, body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    if body or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class _Connection(asyncio.Protocol):
    """One keep-alive connection with at most one request outstanding (HTTP/1.1, no pipelining)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.waiter: asyncio.Future[tuple[int, bytes, bytes]] | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        waiter = self.waiter
        if waiter is None or waiter.done():
            return
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self.buf[:end])
        length = 0
        i = head.lower().find(b"\r\ncontent-length:")
        if i >= 0:
            j = head.find(b"\r\n", i + 2)
            length = int(head[i + 17 : j if j >= 0 else len(head)])
        total = end + 4 + length
        if len(self.buf) < total:
            return
        body = bytes(self.buf[end + 4 : total])
        del self.buf[:total]
        self.waiter = None
        waiter.set_result((int(head[9:12]), head, body))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(SocketError("read"))


@dataclass
class Stats:
    """What one process measured. Per request: route index, wall time sent, latency ms, status
    (0: a socket error). Compact arrays: a 10-minute soak is a few million requests."""

    routes: list[str] = field(default_factory=list)
    route: array.array[int] = field(default_factory=lambda: array.array("H"))
    sent: array.array[float] = field(default_factory=lambda: array.array("d"))
    latency_ms: array.array[float] = field(default_factory=lambda: array.array("f"))
    status: array.array[int] = field(default_factory=lambda: array.array("H"))
    lag_ms: array.array[float] = field(default_factory=lambda: array.array("f"))
    socket_errors: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SOCKET_ERRORS, 0))
    notes: list[Any] = field(default_factory=list)  # whatever a flow records (e.g. waiting-room answers)
    users_done: int = 0
    cpu_s: float = 0.0  # the generator's own CPU (utime + stime of its processes)

    def route_id(self, name: str) -> int:
        try:
            return self.routes.index(name)
        except ValueError:
            self.routes.append(name)
            return len(self.routes) - 1

    def merge(self, other: Stats) -> None:
        remap = [self.route_id(name) for name in other.routes]
        self.route.extend(remap[r] for r in other.route)
        self.sent.extend(other.sent)
        self.latency_ms.extend(other.latency_ms)
        self.status.extend(other.status)
        self.lag_ms.extend(other.lag_ms)
        for k, v in other.socket_errors.items():
            self.socket_errors[k] = self.socket_errors.get(k, 0) + v
        self.notes.extend(other.notes)
        self.users_done += other.users_done
        self.cpu_s += other.cpu_s

    # ------------------------------------------------------------------ summaries

    def select(self, route: str | None = None, since: float = 0.0, until: float = float("inf")) -> list[int]:
        rid = self.routes.index(route) if route in self.routes else -1
        return [i for i in range(len(self.sent))
                if (route is None or self.route[i] == rid) and since <= self.sent[i] < until]  # fmt: skip

    def summary(self, route: str | None = None, since: float = 0.0, until: float = float("inf")) -> RouteSummary:
        idx = self.select(route, since, until)
        answered = sorted(self.latency_ms[i] for i in idx if self.status[i])
        statuses: dict[int, int] = {}
        for i in idx:
            statuses[self.status[i]] = statuses.get(self.status[i], 0) + 1
        return RouteSummary(route or "all", len(idx), statuses, pct(answered, 50), pct(answered, 90),
                            pct(answered, 99), answered[-1] if answered else None)  # fmt: skip


@dataclass
class RouteSummary:
    route: str
    requests: int
    statuses: dict[int, int]  # 0 = socket error
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    max_ms: float | None

    @property
    def server_errors(self) -> int:
        return sum(n for s, n in self.statuses.items() if s >= 500)


def pct(values: list[float], p: float) -> float | None:
    """The p-th percentile of sorted values (nearest rank, as wrk computes it)."""
    if not values:
        return None
    return float(values[min(len(values) - 1, int(len(values) * p / 100))])


class User:
    """One simulated user: a connection (opened lazily, reopened after an error), its token, and
    `request()`, which records latency per route and the generator's own lag."""

    def __init__(self, run: _ProcessRun, index: int, token: str) -> None:
        self.run = run
        self.index = index
        self.token = token
        self.rng = random.Random(run.seed * 1_000_003 + index)
        self.conn: _Connection | None = None
        self.due = 0.0  # monotonic: when the next request is scheduled (end of think time)

    @property
    def stopping(self) -> bool:
        return time.monotonic() >= self.run.end

    async def think(self, seconds: float) -> None:
        """Wait `seconds` (clipped to the end of the run); the next request is due then."""
        self.due = time.monotonic() + seconds
        await asyncio.sleep(max(0.0, min(self.due, self.run.end) - time.monotonic()))

    async def sleep_until_wall(self, wall: float) -> None:
        await self.think(max(0.0, wall - time.time()))

    async def request(self, route: str, raw: bytes) -> tuple[int, bytes, bytes]:
        """Send `raw`, wait for the whole answer: (status, head, body). SocketError on failure
        (counted; the next request reconnects)."""
        stats = self.run.stats
        rid = stats.route_id(route)
        now = time.monotonic()
        lag = max(0.0, now - self.due) if self.due else 0.0
        try:
            if self.conn is None or self.conn.closed:
                self.conn = await self._connect()
            conn = self.conn
            assert conn.transport is not None
            waiter: asyncio.Future[tuple[int, bytes, bytes]] = self.run.loop.create_future()
            conn.waiter = waiter
            sent_wall, sent = time.time(), time.monotonic()
            conn.transport.write(raw)
            timer = self.run.loop.call_later(TIMEOUT_SECONDS, _time_out, waiter)
            try:
                status, head, body = await waiter
            finally:
                timer.cancel()
            if b"\r\nconnection: close" in head.lower():
                conn.closed = True  # now: the next request must not write to it before connection_lost
                conn.transport.close()
        except SocketError as e:
            stats.socket_errors[e.kind] += 1
            stats.route.append(rid)
            stats.sent.append(time.time())
            stats.latency_ms.append(0.0)
            stats.status.append(0)
            stats.lag_ms.append(lag * 1000)
            if self.conn is not None and self.conn.transport is not None:
                self.conn.transport.abort()
            self.conn = None
            raise
        stats.route.append(rid)
        stats.sent.append(sent_wall)
        stats.latency_ms.append((time.monotonic() - sent) * 1000)
        stats.status.append(status)
        stats.lag_ms.append(lag * 1000)
        self.due = 0.0
        return status, head, body

    async def _connect(self) -> _Connection:
        try:
            _, conn = await asyncio.wait_for(
                self.run.loop.create_connection(_Connection, self.run.host, self.run.port), TIMEOUT_SECONDS
            )
        except (OSError, TimeoutError) as e:
            raise SocketError("connect") from e
        return conn

    def close(self) -> None:
        if self.conn is not None and self.conn.transport is not None:
            self.conn.transport.close()
        self.conn = None


def _time_out(waiter: asyncio.Future[tuple[int, bytes, bytes]]) -> None:
    if not waiter.done():
        waiter.set_exception(SocketError("timeout"))


Flow = Callable[[User, dict[str, Any]], Awaitable[None]]


class _ProcessRun:
    def __init__(self, host: str, port: int, end: float, seed: int) -> None:
        self.host, self.port, self.end, self.seed = host, port, end, seed
        self.stats = Stats()
        self.loop = asyncio.get_running_loop()


async def _run_users(host: str, port: int, flow: Flow, tokens: list[tuple[int, str]], params: dict[str, Any],
                     end_wall: float, seed: int) -> Stats:  # fmt: skip
    run = _ProcessRun(host, port, time.monotonic() + (end_wall - time.time()), seed)

    async def one(index: int, token: str) -> None:
        user = User(run, index, token)
        try:
            await flow(user, params)
            run.stats.users_done += 1
        except SocketError:
            pass  # counted; the flow gave up on this user
        finally:
            user.close()

    await asyncio.gather(*(one(i, t) for i, t in tokens))
    return run.stats


def _child(conn: Any, host: str, port: int, flow: Flow, tokens: list[tuple[int, str]], params: dict[str, Any],
           end_wall: float, seed: int) -> None:  # fmt: skip
    coro = _run_users(host, port, flow, tokens, params, end_wall, seed)
    try:
        import uvloop  # the generator's own loop: the faster one when installed

        stats = uvloop.run(coro)
    except ImportError:
        stats = asyncio.run(coro)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    stats.cpu_s = usage.ru_utime + usage.ru_stime
    conn.send(stats)
    conn.close()


class FlowRun:
    """Users (index, token) split over `procs` forked processes, each running `flow(user, params)`
    until it returns or `end_wall` (time.time()) passes. start(), then wait() -> merged Stats;
    the caller may do its own periodic work (invariants, RSS) between start and wait."""

    def __init__(self, host: str, port: int, flow: Flow, tokens: list[tuple[int, str]], params: dict[str, Any],
                 end_wall: float, procs: int = 1, seed: int = 1) -> None:  # fmt: skip
        self.end_wall = end_wall
        ctx = multiprocessing.get_context("fork")
        self.children: list[tuple[Any, Any]] = []
        procs = max(1, min(procs, len(tokens)))
        for n in range(procs):
            parent_end, child_end = ctx.Pipe(duplex=False)
            share = tokens[n::procs]
            p = ctx.Process(target=_child, args=(child_end, host, port, flow, share, params, end_wall, seed + n),
                            daemon=True)  # fmt: skip
            self.children.append((p, parent_end))

    def start(self) -> FlowRun:
        for p, _ in self.children:
            p.start()
        return self

    def alive(self) -> bool:
        return any(p.is_alive() for p, _ in self.children)

    def wait(self, grace: float = 30.0) -> Stats:
        merged = Stats()
        for p, conn in self.children:
            # recv before join: a child blocks on a full pipe until the parent reads.
            left = max(1.0, self.end_wall + grace - time.time())
            if not conn.poll(left):
                p.kill()
                raise SystemExit(f"the load generator (pid {p.pid}) did not finish in time")
            merged.merge(conn.recv())
            p.join(10)
        return merged

    def pids(self) -> list[int]:
        return [p.pid for p, _ in self.children if p.pid is not None]


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc (clock ticks)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
