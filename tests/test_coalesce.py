"""Coalesced reserves: the batch function's answers, FIFO grants, HTTP races, abandoned
clients, and batches that fail."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import socket
import time
from collections import Counter
from datetime import timedelta
from typing import Any

import psycopg
import pytest

from gateway.app import create_app
from gateway.db import Database, make_pool
from gateway.errors import ApiError
from gateway.onsale.reserve import ReserveCoalescer
from gateway.sqlcalls import reserve_requests
from tests.conftest import CLUSTER, call, sqlstate_of, url_for
from tests.factories import NOW, make_ticket_type, make_user, stock, violations
from tests.http import forged, settings_for
from tests.live import LiveServer
from tests.rawhttp import fire

MISSING = "00000000-0000-0000-0000-000000000000"


def batch(conn: psycopg.Connection, requests: list[dict[str, Any]]) -> list[tuple[str, Any]]:
    literal = reserve_requests((r["user_id"], r["ticket_type_id"], r["quantity"]) for r in requests)
    rows = conn.execute("SELECT * FROM api.reserve_tickets_batch(%s)", (literal,)).fetchall()
    return [("ok", reservation) if reservation is not None else ("error", state) for reservation, state, _ in rows]


def patient_gateway_url(owner: psycopg.Connection, dbname: str) -> str:
    """The gateway's URL for tests that hold a row lock while things happen: lock and statement
    timeouts of a minute, in this test's database only, so a slow machine cannot turn the wait
    into a 503 before the test releases the lock."""
    owner.execute("""
        DO $$ DECLARE f regprocedure; BEGIN
          FOR f IN SELECT p.oid::regprocedure FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                   WHERE n.nspname IN ('api', 'internal') AND array_to_string(p.proconfig, ',') LIKE '%lock_timeout%'
          LOOP EXECUTE format('ALTER FUNCTION %s SET lock_timeout = %L', f, '60s'); END LOOP;
        END $$""")  # fmt: skip
    return url_for(dbname, "booking_gateway", lock_timeout="60s", statement_timeout="60s")


def wait_for_lock_waiter(superuser_conninfo: str, dbname: str, timeout: float = 30) -> None:
    """Until a session of `dbname` waits on a lock (a reserve stuck behind the test's row lock).
    Polls as the superuser: only it sees other roles' waits."""
    with psycopg.connect(superuser_conninfo, autocommit=True) as conn:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = %s", (dbname,)
            ).fetchone()
            if row and row[0] > 0:
                return
            time.sleep(0.02)
    raise AssertionError("nothing waited on the lock")


# ------------------------------------------------------------------ the batch function


def test_batch_grants_in_array_order_and_answers_like_reserve_tickets(
    gw: psycopg.Connection, owner: psycopg.Connection
) -> None:
    users = [make_user(gw) for _ in range(3)]
    hot = make_ticket_type(gw, quantity=5)
    closed = make_ticket_type(gw, p_start_sale_time=NOW + timedelta(days=1))
    gone = make_user(gw)
    owner.execute("DELETE FROM users WHERE id = %s", (gone["id"],))
    sequence = [
        (users[0], hot, 3),
        (users[1], hot, 3),  # only 2 left
        (users[2], hot, 1),  # a later, smaller request still fits
        (users[0], closed, 1),
        (users[1], {"id": MISSING}, 1),
        (users[2], hot, 0),
        (gone, hot, 1),
        (users[0], hot, 1),
        (users[1], hot, 1),  # sold out now
    ]
    requests = [{"user_id": u["id"], "ticket_type_id": t["id"], "quantity": q} for u, t, q in sequence]
    answers = batch(gw, requests)
    assert [a[1] if a[0] == "error" else "ok" for a in answers] == [
        "ok", "BKSLD", "ok", "BKSNO", "BKNTF", "BKVAL", "BKNTF", "ok", "BKSLD",
    ]  # fmt: skip
    granted = [a[1] for a in answers if a[0] == "ok"]
    assert [g["quantity"] for g in granted] == [3, 1, 1] and {g["status"] for g in granted} == {"ACTIVE"}
    rows = owner.execute(
        "SELECT id::text, user_id::text, quantity FROM order_reservations WHERE ticket_type_id = %s", (hot["id"],)
    ).fetchall()
    assert sorted(rows) == sorted((g["id"], r[0]["id"], g["quantity"]) for g, r in zip(
        granted, [sequence[0], sequence[2], sequence[7]], strict=True))  # fmt: skip
    assert stock(gw, hot) == 0
    assert violations(gw) == []

    # The same sequence through the single-request function gives the same kinds of answers.
    twin, twin_closed = make_ticket_type(gw, quantity=5), closed
    singles = []
    for u, t, q in sequence:
        target = twin if t is hot else twin_closed if t is closed else t
        singles.append(
            sqlstate_of(gw, "reserve_tickets", p_user_id=u["id"], p_ticket_type_id=target["id"], p_quantity=q)
        )
    assert [s or "ok" for s in singles] == [a[1] if a[0] == "error" else "ok" for a in answers]


def test_batch_reclaims_expired_holds_and_rejects_malformed_batches(
    gw: psycopg.Connection, owner: psycopg.Connection
) -> None:
    user, tt = make_user(gw), make_ticket_type(gw, quantity=2)
    dead = call(gw, "reserve_tickets", p_user_id=user["id"], p_ticket_type_id=tt["id"], p_quantity=2)
    owner.execute("UPDATE order_reservations SET expires_at = now() - interval '1 s' WHERE id = %s", (dead["id"],))
    answers = batch(gw, [{"user_id": user["id"], "ticket_type_id": tt["id"], "quantity": 1}] * 3)
    assert [a[0] for a in answers] == ["ok", "ok", "error"]
    assert violations(gw) == []
    too_many = reserve_requests([(user["id"], tt["id"], 1)] * 1001)
    assert sqlstate_of(gw, "reserve_tickets_batch", p_requests=too_many) == "BKVAL"
    # Typed input: what is not a request does not parse at all; what parses is checked per request.
    assert sqlstate_of(gw, "reserve_tickets_batch", p_requests='{"(nope,x,1)"}') == "22P02"
    odd = f'{{"(,{tt["id"]},1)","({user["id"]},,1)","({user["id"]},{tt["id"]},)","({user["id"]},{tt["id"]},0)",' \
          f'"({user["id"]},{tt["id"]},11)"}}'  # fmt: skip
    rows = gw.execute("SELECT sqlstate FROM api.reserve_tickets_batch(%s)", (odd,)).fetchall()
    assert [r[0] for r in rows] == ["BKVAL"] * 5
    assert gw.execute("SELECT count(*) FROM api.reserve_tickets_batch(NULL)").fetchone() == (0,)


# ------------------------------------------------------------------ the coalescer, on a real pool


async def _with_coalescer(dbname: str, max_batch: int, body: Any, **settings: Any) -> Any:
    pool = make_pool(settings_for(dbname, pool_min=1, pool_max=4, **settings))
    await pool.open(wait=True)
    coalescer = ReserveCoalescer(Database(pool), max_batch)
    try:
        return await body(coalescer)
    finally:
        await coalescer.close()
        await pool.close()


@pytest.mark.parametrize("max_batch", [50, 7])
def test_first_come_first_served(dbname: str, gw: psycopg.Connection, max_batch: int) -> None:
    tt = make_ticket_type(gw, quantity=10)
    users = [make_user(gw) for _ in range(30)]

    async def body(coalescer: ReserveCoalescer) -> list[Any]:
        futures = [coalescer.submit(u["id"], tt["id"], 1) for u in users]  # arrival order
        results = await asyncio.gather(*futures, return_exceptions=True)
        assert coalescer.batches == -(-30 // max_batch), "requests queued together must share calls"
        return results

    results = asyncio.run(_with_coalescer(dbname, max_batch, body))
    granted = [i for i, r in enumerate(results) if isinstance(r, str)]
    assert granted == list(range(10))
    assert all(isinstance(r, ApiError) and r.code == "sold_out" for r in results[10:])
    assert violations(gw) == []


def test_a_lone_request_goes_at_once(dbname: str, gw: psycopg.Connection) -> None:
    tt, user = make_ticket_type(gw), make_user(gw)

    async def body(coalescer: ReserveCoalescer) -> int:
        granted = coalescer.submit(user["id"], tt["id"], 1)
        await asyncio.sleep(0)  # one turn of the loop: no timer, no waiting for company
        sent = coalescer.batches
        await granted
        return sent

    assert asyncio.run(_with_coalescer(dbname, 50, body)) == 1, "the call was made at once"


def test_abandoned_requests_leave_no_hold(
    dbname: str, gw: psycopg.Connection, owner: psycopg.Connection, connect: Any
) -> None:
    tt = make_ticket_type(gw, quantity=10)
    first, in_flight, queued = make_user(gw), make_user(gw), make_user(gw)
    blocker = connect("booking_owner", autocommit=False)

    async def body(coalescer: ReserveCoalescer) -> None:
        blocker.execute("SELECT 1 FROM ticket_types WHERE id = %s FOR UPDATE", (tt["id"],))
        a = coalescer.submit(first["id"], tt["id"], 1)
        b = coalescer.submit(in_flight["id"], tt["id"], 2)
        # Both are in the first batch: wait until it provably waits on the lock.
        await asyncio.to_thread(wait_for_lock_waiter, CLUSTER.superuser_conninfo(), dbname)
        c = coalescer.submit(queued["id"], tt["id"], 3)
        b.cancel()  # its client left while its batch was in flight
        c.cancel()  # its client left before its batch was sent
        blocker.rollback()
        await a
        for _ in range(600):  # the release of b's hold runs in the background
            if stock(gw, tt) == 9:
                break
            await asyncio.sleep(0.05)

    asyncio.run(_with_coalescer(dbname, 50, body, database_url=patient_gateway_url(owner, dbname)))
    holds = {r[0]: r[1] for r in connect("booking_owner").execute(
        "SELECT user_id::text, status FROM order_reservations WHERE ticket_type_id = %s", (tt["id"],))}  # fmt: skip
    assert holds == {first["id"]: "ACTIVE", in_flight["id"]: "CANCELLED"}
    assert stock(gw, tt) == 9
    assert violations(gw) == []


# ------------------------------------------------------------------ through HTTP


async def _fire(url: str, jobs: list[tuple[dict[str, str], str, int]]) -> list[tuple[int, str]]:
    """POST /bookings/reserve for each (headers, ticket_type_id, quantity), 200 at a time."""
    requests = [("POST", "/bookings/reserve", h, {"ticket_type_id": t, "quantity": q}) for h, t, q in jobs]
    answers = await fire(url, requests, connections=200)
    return [
        (status, (body or {}).get("code", "ok") if isinstance(body, dict) else str(body)) for status, body in answers
    ]


@pytest.fixture
def users_with_tokens(gw: psycopg.Connection) -> list[tuple[dict[str, Any], dict[str, str]]]:
    users = [make_user(gw) for _ in range(25)]
    return [(u, forged({"sub": u["id"]})) for u in users]


@pytest.mark.parametrize("coalesce", [True, False], ids=["coalesced", "single"])
def test_http_race_gets_the_same_kinds_of_answers(
    dbname: str, gw: psycopg.Connection, users_with_tokens: Any, coalesce: bool
) -> None:
    open_a, open_b = make_ticket_type(gw, quantity=60), make_ticket_type(gw, quantity=25)
    closed = make_ticket_type(gw, p_start_sale_time=NOW - timedelta(days=2), p_end_sale_time=NOW - timedelta(days=1))
    rng = random.Random(11)
    jobs = [(rng.choice(users_with_tokens)[1], rng.choice([open_a, open_a, open_b, closed])["id"], rng.randint(1, 4))
            for _ in range(400)]  # fmt: skip
    app = create_app(settings_for(dbname, reserve_coalesce=coalesce, pool_max=10))
    with LiveServer(app) as server:
        answers = asyncio.run(_fire(server.url, jobs))
        batches = app.state.gateway.coalescer.batches

    by_type: dict[str, Counter[tuple[int, str]]] = {}
    for (_, tt_id, _), answer in zip(jobs, answers, strict=True):
        by_type.setdefault(tt_id, Counter())[answer] += 1
    assert set(by_type[closed["id"]]) == {(409, "sale_not_open")}
    for tt in (open_a, open_b):
        assert set(by_type[tt["id"]]) == {(201, "ok"), (409, "sold_out")}, by_type[tt["id"]]
        granted = sum(q for (_, t, q), a in zip(jobs, answers, strict=True) if t == tt["id"] and a[0] == 201)
        assert granted + stock(gw, tt) == tt["initial_quantity"]
        assert stock(gw, tt) < 4, "nothing refused while stock could serve it"
    assert violations(gw) == []
    if coalesce:
        assert 0 < batches <= 100, f"{batches} calls for 400 requests: coalescing did not happen"
    else:
        assert batches == 0


def test_a_failed_batch_answers_every_waiting_request(own_cluster: Any) -> None:
    with psycopg.connect(own_cluster.url("booking_gateway", "booking"), autocommit=True) as gw:
        # The cluster is stopped "immediate" below and runs synchronous_commit=off: make sure
        # these rows are in the WAL on disk, or crash recovery may lose them.
        gw.execute("SET synchronous_commit = on")
        tt = make_ticket_type(gw, quantity=100_000)
        users = [make_user(gw) for _ in range(10)]
    settings = settings_for("booking", pool_max=4, database_url=own_cluster.url("booking_gateway", "booking"))
    jobs = [(forged({"sub": users[i % 10]["id"]}), tt["id"], 1) for i in range(600)]
    # The first batch is provably in flight (waiting on this lock) when the server dies.
    blocker = psycopg.connect(own_cluster.url("booking_owner", "booking"))
    blocker.execute("SELECT 1 FROM ticket_types WHERE id = %s FOR UPDATE", (tt["id"],))
    with LiveServer(create_app(settings)) as server:

        async def scenario() -> list[tuple[int, str]]:
            firing = asyncio.ensure_future(_fire(server.url, jobs))
            await asyncio.to_thread(wait_for_lock_waiter, own_cluster.superuser_conninfo("booking"), "booking")
            await asyncio.to_thread(own_cluster.stop, "immediate")
            async with asyncio.timeout(20):  # every request answered: none hangs
                return await firing

        answers = asyncio.run(scenario())
        blocker.close()
        assert Counter(answers) == {(503, "busy"): 600}
        own_cluster.start()
        deadline = time.monotonic() + 15
        while asyncio.run(_fire(server.url, jobs[:5])) != [(201, "ok")] * 5 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert asyncio.run(_fire(server.url, jobs[:5])) == [(201, "ok")] * 5, "serves again after the restart"
    with psycopg.connect(own_cluster.url("booking_owner", "booking")) as owner:
        assert owner.execute("SELECT * FROM api.check_invariants()").fetchall() == []


class RequestIds(logging.Handler):
    """The request ids of finished requests, from the gateway's access log."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()

    def emit(self, record: logging.LogRecord) -> None:
        fields = getattr(record, "fields", None) or {}
        self.seen.add(str(fields.get("request_id")))

    def wait_for(self, request_id: str, timeout: float = 10) -> None:
        """Until that request is finished, or the timeout (the assertions come later)."""
        deadline = time.monotonic() + timeout
        while request_id not in self.seen and time.monotonic() < deadline:
            time.sleep(0.02)


def send_reserve(port: int, headers: dict[str, str], tt_id: str, quantity: int, request_id: str) -> socket.socket:
    body = json.dumps({"ticket_type_id": tt_id, "quantity": quantity}).encode()
    head = [
        "POST /bookings/reserve HTTP/1.1", "Host: t", "Content-Type: application/json",
        f"Content-Length: {len(body)}", f"X-Request-ID: {request_id}", *(f"{k}: {v}" for k, v in headers.items()),
    ]  # fmt: skip
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + body)
    return sock


def test_a_client_that_hangs_up_leaves_no_hold(
    dbname: str, gw: psycopg.Connection, owner: psycopg.Connection, connect: Any
) -> None:
    """Real clients over TCP close their connections while their reserves wait: one whose batch
    is in flight (granted later, so its hold must be given back at once) and one still queued
    (dropped before its batch is sent). A client that stays is served as usual."""
    tt = make_ticket_type(gw, quantity=10)
    in_flight, queued, stays = make_user(gw), make_user(gw), make_user(gw)
    blocker = connect("booking_owner", autocommit=False)
    ids = RequestIds()
    access = logging.getLogger("gateway.access")
    app = create_app(settings_for(dbname, database_url=patient_gateway_url(owner, dbname)))
    access.addHandler(ids)
    try:
        with LiveServer(app) as server:
            blocker.execute("SELECT 1 FROM ticket_types WHERE id = %s FOR UPDATE", (tt["id"],))
            leaving = send_reserve(server.port, forged({"sub": in_flight["id"]}), tt["id"], 2, "leaves-in-flight")
            wait_for_lock_waiter(CLUSTER.superuser_conninfo(), dbname)  # its batch waits on the lock
            queued_sock = send_reserve(server.port, forged({"sub": queued["id"]}), tt["id"], 3, "leaves-queued")
            staying = send_reserve(server.port, forged({"sub": stays["id"]}), tt["id"], 1, "stays")
            time.sleep(0.2)  # let the server read both; either way neither may end up holding seats
            leaving.close()
            queued_sock.close()
            ids.wait_for("leaves-in-flight")  # the server noticed (or 10 s passed: then the
            ids.wait_for("leaves-queued")  # assertions below say whether it ever does)
            blocker.rollback()
            with staying:
                assert staying.recv(65536).startswith(b"HTTP/1.1 201 "), "the client that stayed is served"
            deadline = time.monotonic() + 20
            while stock(gw, tt) != 9 and time.monotonic() < deadline:
                time.sleep(0.05)  # the abandoned hold is cancelled in the background
    finally:
        access.removeHandler(ids)
    holds = {r[0]: r[1] for r in connect("booking_owner").execute(
        "SELECT user_id::text, status FROM order_reservations WHERE ticket_type_id = %s", (tt["id"],))}  # fmt: skip
    assert holds.get(in_flight["id"]) in (None, "CANCELLED"), holds
    assert holds.get(queued["id"]) in (None, "CANCELLED"), holds
    assert holds[stays["id"]] == "ACTIVE"
    assert stock(gw, tt) == 9
    assert violations(gw) == []
