"""Load shedding (issue 10, gateway/shedding.py and gateway/serving.py) on the gateway as `make run`
serves it (a real uvicorn process with dbctl's arguments) and real PostgreSQL: with MAX_IN_FLIGHT=4,
four reserves are held in flight (a row lock on their ticket type), the excess is answered 503
busy with Retry-After by the HTTP protocol itself while those four still wait (no access line: no
ASGI cycle was made), on a connection that stays usable; the probes and the waiting room's cheap
routes still reach the app; the four admitted reserves succeed once the lock goes."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from gateway.app import create_app
from gateway.config import Settings
from gateway.db import Turnstile
from gateway.shedding import DB_QUEUE_PERSIST, Gate, Shedder, exempt
from tests.conftest import url_for
from tests.factories import make_ticket_type, make_user
from tests.http import forged, settings_for
from tests.test_serving import Served, read_response

BOUND = 4
EXCESS = 8


def reserve_bytes(user: dict[str, Any], ticket_type_id: str) -> bytes:
    body = json.dumps({"ticket_type_id": ticket_type_id, "quantity": 1}).encode()
    auth = forged({"sub": user["id"]})["Authorization"]
    return (
        b"POST /bookings/reserve HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        + f"Authorization: {auth}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body
    )


def get_status(sock: socket.socket, path: str) -> int:
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    return read_response(sock)[0]


def waiting_on_lock(conn: psycopg.Connection) -> int:
    row = conn.execute("SELECT count(*) FROM pg_locks WHERE NOT granted").fetchone()
    return int(row[0]) if row else 0


def test_excess_requests_are_shed_at_once_and_admitted_ones_succeed(
    dbname: str, gw: psycopg.Connection, tmp_path: Path
) -> None:
    tt = make_ticket_type(gw, quantity=100)
    users = [make_user(gw) for _ in range(BOUND + EXCESS)]
    # One reserve per database call, and time to wait for the lock without a 503 of the database's.
    server = Served(
        dbname, tmp_path / "gateway.log", MAX_IN_FLIGHT=str(BOUND), RESERVE_COALESCE="off",
        POOL_MAX_SIZE=str(BOUND + 4), POOL_TIMEOUT_SECONDS="60", RATE_LIMITS="off",
        GATEWAY_DATABASE_URL=url_for(dbname, "booking_gateway", lock_timeout="60s", statement_timeout="60s"),
    ).start()  # fmt: skip
    blocker = psycopg.connect(url_for(dbname))
    blocker.execute("SELECT 1 FROM ticket_types WHERE id = %s FOR UPDATE", (tt["id"],))
    admitted = [server.connect() for _ in range(BOUND)]
    try:
        for sock, user in zip(admitted, users, strict=False):
            sock.sendall(reserve_bytes(user, tt["id"]))
        deadline = time.monotonic() + 30
        while waiting_on_lock(gw) < BOUND:
            assert time.monotonic() < deadline, "the first requests never got in flight"
            time.sleep(0.05)

        # The excess at once, each on its own connection (the reserves above hold their row lock
        # for at most the 2 s lock_timeout of api.reserve_tickets, so this must be quick).
        excess = [server.connect() for _ in users[BOUND:]]
        started = time.monotonic()
        for sock, user in zip(excess, users[BOUND:], strict=True):
            sock.sendall(reserve_bytes(user, tt["id"]))
        shed = []
        for sock in excess:
            status, headers, body = read_response(sock)
            shed.append((status, headers.get("retry-after"), json.loads(body or b"{}").get("code"),
                         time.monotonic() - started))  # fmt: skip
        # The connection stays usable after a refusal (read again after SHED_PAUSE_MS). Exempt:
        # the probes and the waiting room's cheap routes reach the app (a 401 or 404 is the app's
        # answer, not a refusal); anything else is refused.
        sock = excess[0]
        exempt_statuses = [
            get_status(sock, path)
            for path in ("/healthz", "/readyz", f"/events/{tt['event']['id']}/queue", "/events/x/waiting-room")
        ]
        assert get_status(sock, "/events") == 503
        for sock in excess:
            sock.close()
        for status, retry_after, code, seconds in shed:
            assert (status, retry_after, code) == (503, "1", "busy")
            assert seconds < 5, f"a shed answer took {seconds:.1f} s: it waited instead of being refused"
        assert exempt_statuses[:2] == [200, 200], "health and readiness must answer under overload"
        assert 503 not in exempt_statuses, exempt_statuses
        assert all(read_response_nowait(s) is None for s in admitted), "the admitted requests were not held"

        blocker.rollback()  # release the lock: the four held reserves go through
        done = [read_response(sock) for sock in admitted]
        assert [status for status, _, _ in done] == [201] * BOUND, [body for _, _, body in done]
        with server.connect() as sock:  # and the process admits again (once a 100 ms window shows
            deadline = time.monotonic() + 10  # requests finishing: SHED_TARGET_MS)
            while (status := get_status(sock, "/events")) == 503 and time.monotonic() < deadline:
                time.sleep(0.1)
            assert status == 200
    finally:
        for sock in admitted:
            sock.close()
        blocker.close()
        server.stop()
    # Refused in the protocol: no ASGI cycle, so no access line for any 503 (the app logs every
    # request it sees); the periodic shedding line is not asserted (it comes every 10 s).
    access = [line for line in server.log_lines() if line.get("logger") == "gateway.access"]
    assert access, "the access log is on"
    assert [line["status"] for line in access if line["route"] == "/bookings/reserve"] == [201] * BOUND


def read_response_nowait(sock: socket.socket) -> bytes | None:
    sock.setblocking(False)
    try:
        return sock.recv(65536)
    except BlockingIOError:
        return None
    finally:
        sock.setblocking(True)
        sock.settimeout(20)


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        (b"GET", b"/healthz", True),
        (b"POST", b"/readyz", True),
        (b"GET", b"/events/abc/queue", True),
        (b"GET", b"/events/abc/waiting-room", True),
        (b"POST", b"/events/abc/queue", False),  # joining is a write: shed like any other
        (b"GET", b"/events//queue", False),
        (b"GET", b"/events/a/b/queue", False),
        (b"GET", b"/events/abc/queue/x", False),
        (b"GET", b"/events/abc", False),
        (b"GET", b"/healthz/", False),
        (b"POST", b"/bookings/reserve", False),
    ],
)
def test_exempt_routes(method: bytes, path: bytes, expected: bool) -> None:
    assert exempt(method, path) is expected


def test_the_asgi_layer_sheds_on_the_same_gate() -> None:
    """A server without gateway/serving.py's protocol (the tests' in-process clients, another
    ASGI server): the Shedder refuses on the same bound, with the same problem."""
    gate = Gate()
    gate.configure(1, 0)
    shedder = Shedder(app=None, gate=gate)  # type: ignore[arg-type]
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    gate.in_flight = 1
    scope = {"type": "http", "method": "POST", "path": "/bookings/reserve", "raw_path": b"/bookings/reserve"}
    asyncio.run(shedder(scope, None, send))  # type: ignore[arg-type]
    assert sent[0]["status"] == 503
    assert (b"retry-after", b"1") in sent[0]["headers"]
    assert b'"code": "busy"' in sent[1]["body"]
    assert gate.shed_total == 1


def test_a_lagging_loop_sheds_and_the_bound_off_sheds_nothing() -> None:
    gate = Gate()
    gate.configure(100, 50)
    assert not gate.over()
    gate.lag = 0.2  # the loop ran a timer 200 ms late: saturated, whatever the count
    assert gate.over()
    gate.configure(0, 50)  # MAX_IN_FLIGHT=0: no shedding at all
    assert not gate.over()


def test_a_standing_queue_lowers_the_bound_and_it_grows_back() -> None:
    gate = Gate()
    gate.configure(1000, 0, 250)
    gate.in_flight = 500
    gate.done(0.4)  # the quickest request of the interval took 400 ms: a queue that stays
    gate.judge(now=1.0)
    assert gate.limit == int(499 * 0.9) and gate.over()
    gate.done(0.1)  # then one took 100 ms: no standing queue, the bound grows back by a tenth
    gate.judge(now=2.0)
    assert gate.limit == 449 + 44
    gate.in_flight = 0
    gate.judge(now=3.0)  # nothing in flight, nothing finished: idle, not stuck
    assert gate.limit == 493 + 49 and not gate.over()
    gate.in_flight = 900
    gate.judge(now=4.0)  # in flight and nothing finished for a whole interval: stuck
    assert gate.limit == 542 and gate.over()  # never raised by a stall; 90% of in flight is above it


def test_shedding_settings(dbname: str) -> None:
    base = {"DATABASE_URL": "postgresql://x@127.0.0.1/x", "JWT_SECRET": "s"}
    defaults = Settings.from_env(base)
    assert (defaults.max_in_flight, defaults.shed_target_ms, defaults.shed_loop_lag_ms) == (1000, 150, 0)
    assert defaults.shed_pause_ms == 250
    assert Settings.from_env({**base, "MAX_IN_FLIGHT": "0"}).max_in_flight == 0
    assert Settings.from_env({**base, "SHED_LOOP_LAG_MS": "75"}).shed_loop_lag_ms == 75
    create_app(settings_for(dbname, max_in_flight=7, shed_loop_lag_ms=30))
    from gateway.shedding import GATE

    assert (GATE.max_in_flight, GATE.max_lag) == (7, 0.03)
    create_app(settings_for(dbname))  # leave the process's gate as the other tests expect


class Transport(asyncio.Transport):
    """What the protocol writes, kept (the socket's side of the test)."""

    def __init__(self) -> None:
        super().__init__()
        self.written = b""
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += bytes(data)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 8000) if name in ("sockname", "peername") else default

    paused = False

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False


def test_the_protocol_refuses_before_any_asgi_cycle_or_task() -> None:
    """The point of refusing in the protocol: a refused request costs no RequestResponseCycle and no
    task (the app is never called), its body is dropped, and the connection serves the next
    request as soon as the process is under its bound again."""
    import uvicorn
    from uvicorn.server import ServerState

    from gateway.serving import BoundedHttpToolsProtocol

    calls: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        calls.append(scope["path"])
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})

    async def scenario() -> None:
        from gateway.shedding import GATE

        saved = (GATE.max_in_flight, GATE.max_lag, GATE.target, GATE.pause)
        config = uvicorn.Config(app, log_level="warning", proxy_headers=False)
        state = ServerState()
        protocol = BoundedHttpToolsProtocol(config=config, server_state=state, app_state={})
        transport = Transport()
        protocol.connection_made(transport)
        body = b'{"ticket_type_id": "x", "quantity": 1}'
        request = b"POST /bookings/reserve HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
        try:
            GATE.configure(1, 0, 0, 50)  # a bound of one request in flight; refused connections rest 50 ms
            GATE.in_flight = 1  # full
            protocol.data_received(request + b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
            assert transport.written.startswith(b"HTTP/1.1 503 ")
            assert b"retry-after: 1\r\n" in transport.written and b'"code": "busy"' in transport.written
            assert protocol.cycle is not None and protocol.cycle.scope["path"] == "/healthz"  # only the probe's
            assert len(state.tasks) == 1  # the probe's task; none for the refused reserve
            assert not transport.paused  # a first refusal: whatever comes next is read at once
            await asyncio.sleep(0.01)
            assert calls == ["/healthz"] and transport.written.endswith(b"ok") and not transport.closed
            # Asked again at once (within QUICK_COMEBACK of the refusal, ignoring Retry-After):
            # refused, and the connection is not read for SHED_PAUSE_MS.
            protocol.data_received(request)
            assert transport.written.count(b"HTTP/1.1 503 ") == 2
            assert transport.paused  # not read again at once (what was already read is handled)
            await asyncio.sleep(0.2)
            assert not transport.paused
            # Back later (as a user who thought): refused while still over the bound, not held.
            protocol.data_received(request)
            assert transport.written.count(b"HTTP/1.1 503 ") == 3
            assert not transport.paused
            # A loop running late reads every comeback late: within QUICK_COMEBACK plus its lag
            # is still "at once" (10,000 clients hammering made the loop ~100 ms late).
            await asyncio.sleep(0.1)
            GATE.lag = 0.2
            protocol.data_received(request)
            assert transport.written.count(b"HTTP/1.1 503 ") == 4
            assert transport.paused
            GATE.lag = 0.0
            await asyncio.sleep(0.1)
            assert not transport.paused
            GATE.in_flight = 0  # room again: the same connection is served
            protocol.data_received(request)
            await asyncio.sleep(0.05)
            assert calls == ["/healthz", "/bookings/reserve"]
            assert GATE.in_flight == 0  # counted while in flight, released at its end
        finally:
            GATE.configure(saved[0], saved[1] * 1000, saved[2] * 1000, saved[3] * 1000)
            GATE.in_flight = 0
            GATE.lag = 0.0
            protocol.connection_lost(None)

    asyncio.run(scenario())


def test_a_database_queue_lowers_the_bound_though_cached_reads_are_quick() -> None:
    """The crowd bench's metastable state: cached GET /events answered in milliseconds while
    database routes waited seconds for a connection, and the bound never moved. A waiter in the
    turnstile older than the target at every sample for DB_QUEUE_PERSIST is a standing queue too."""

    async def scenario() -> None:
        turnstile = Turnstile(1)
        await turnstile.enter(5)  # the only connection is taken
        waiter = asyncio.ensure_future(turnstile.enter(5))
        await asyncio.sleep(0)  # it queues
        loop = asyncio.get_running_loop()
        gate = Gate()
        gate.configure(1000, 0, 250)
        gate.queues = [turnstile.oldest_wait]
        gate.in_flight = 500
        start = loop.time()
        over = int((0.25 + DB_QUEUE_PERSIST) / 0.02) - 3  # ticks until just short of the persistence
        for tick in range(1, over):  # the lag timer's samples, every 20 ms, the waiter aging
            gate.done(0.002)  # cached reads: quick
            gate.judge(now=start + tick * 0.02)
        # The waiter is over the 250 ms target, for not quite DB_QUEUE_PERSIST: waited out so far.
        assert gate.limit == 1000
        for tick in range(over, over + 11):
            gate.done(0.002)
            gate.judge(now=start + tick * 0.02)
        # Over the target for more than DB_QUEUE_PERSIST: a standing queue, though requests were quick.
        assert gate.limit <= int(500 * 0.9)  # 90% of what was in flight (done() counted some out)
        turnstile.leave()  # the connection is handed to the waiter
        await waiter
        assert turnstile.oldest_wait(loop.time() + 10) == 0.0  # nobody waits now
        gate.done(0.002)
        lowered = gate.limit
        gate.judge(now=loop.time() + 10)
        assert gate.limit > lowered  # grows back

    asyncio.run(scenario())


def test_a_database_stall_that_clears_within_db_queue_persist_refuses_nobody() -> None:
    """CoDel's test on the database queue needs every sample over the target for DB_QUEUE_PERSIST:
    a stall that clears sooner (the queue's oldest waiter younger than the target at one sample)
    does not lower the bound; one that lasts does."""
    wait = 0.4  # the oldest waiter's age at every sample, set by the scenario
    gate = Gate()
    gate.configure(1000, 0, 250)
    gate.queues = [lambda now: wait]
    gate.in_flight = 500
    now = 0.0
    short = int(DB_QUEUE_PERSIST / 0.02) - 5  # samples: 100 ms short of DB_QUEUE_PERSIST
    for _ in range(short):  # over the target
        now += 0.02
        gate.done(0.002)  # cached reads: quick
        gate.judge(now=now)
    wait = 0.0  # the stall clears: the queue empties at one sample
    now += 0.02
    gate.judge(now=now)
    wait = 0.4
    for _ in range(short):  # over the target again: still under DB_QUEUE_PERSIST since it cleared
        now += 0.02
        gate.done(0.002)
        gate.judge(now=now)
    assert gate.limit == 1000
    for _ in range(15):  # and on, past DB_QUEUE_PERSIST without a break
        now += 0.02
        gate.done(0.002)
        gate.judge(now=now)
    assert gate.limit <= int(500 * 0.9)  # 90% of what was in flight (done() counted some out)
