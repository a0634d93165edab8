"""Coalesced joins of a waiting room (issue 10): api.join_waiting_room_batch and the gateway's
JoinCoalescer (gateway/onsale/join.py). Real PostgreSQL, real concurrent connections and HTTP
requests; time is compressed in SQL, never slept."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
import pytest

from gateway.app import create_app
from gateway.db import Database, make_pool
from gateway.errors import ApiError
from gateway.onsale.join import JoinCoalescer
from tests.conftest import call, sqlstate_of
from tests.factories import make_event, make_user
from tests.http import forged, settings_for
from tests.live import LiveServer
from tests.rawhttp import fire
from tests.test_waiting_room import PLACE_KEYS, open_sale, overview, queue_event, status

MISSING = "00000000-0000-0000-0000-000000000000"


def join_batch(conn: psycopg.Connection, event: dict[str, Any], user_ids: list[str]) -> list[tuple[Any, ...]]:
    return conn.execute("SELECT * FROM api.join_waiting_room_batch(%s, %s::uuid[])", (event["id"], user_ids)).fetchall()


def entries(owner: psycopg.Connection, event: dict[str, Any]) -> dict[str, tuple[int, int | None]]:
    rows = owner.execute(
        "SELECT user_id::text, seq, position FROM waiting_room_entries WHERE event_id = %s", (event["id"],)
    ).fetchall()
    return {user: (seq, position) for user, seq, position in rows}


def test_a_batch_places_new_joiners_in_its_order_and_answers_each_element(
    gw: psycopg.Connection, owner: psycopg.Connection
) -> None:
    event, _ = queue_event(gw)
    open_sale(owner, event, 1)  # first come, first served
    early, a, b, c = (make_user(gw) for _ in range(4))
    first = call(gw, "join_waiting_room", p_event_id=event["id"], p_user_id=early["id"])  # a batch of one
    assert first["position"] == 1 and set(first) == PLACE_KEYS

    ids = [b["id"], MISSING, early["id"], a["id"], b["id"], c["id"], None]
    rows = join_batch(gw, event, ids)
    assert len(rows) == len(ids), "one answer per element, in order"
    places = [r[0] for r in rows]
    assert [r[1] for r in rows] == [None, "BKNTF", None, None, None, None, "BKNTF"]
    assert rows[1][2] == "user not found"
    # New places in the order of the batch; the user named twice and the one already in keep theirs.
    assert [p and p["position"] for p in places] == [2, None, 1, 3, 2, 4, None]
    assert places[0] == places[4]
    assert entries(owner, event) == {early["id"]: (1, 1), b["id"]: (2, 2), a["id"]: (3, 3), c["id"]: (4, 4)}
    assert overview(owner, event)["joined"] == 4

    again = join_batch(gw, event, [c["id"], a["id"], a["id"]])  # across batches: the same places, no write
    assert [r[0]["position"] for r in again] == [4, 3, 3]
    assert overview(owner, event)["joined"] == 4
    assert gw.execute("SELECT count(*) FROM api.join_waiting_room_batch(%s, '{}')", (event["id"],)).fetchone() == (0,)
    # The single join keeps its errors.
    assert sqlstate_of(gw, "join_waiting_room", p_event_id=event["id"], p_user_id=MISSING) == "BKNTF"


def test_whole_batch_errors_are_the_single_joins_errors(gw: psycopg.Connection, owner: psycopg.Connection) -> None:
    users = [make_user(gw)["id"] for _ in range(2)]
    plain = make_event(gw)  # no waiting room
    event, _ = queue_event(gw)
    singles: dict[str, Any] = {"p_user_id": users[0]}
    for fn, args in (("join_waiting_room_batch", {"p_user_ids": users}), ("join_waiting_room", singles)):
        assert sqlstate_of(gw, fn, p_event_id=plain["id"], **args) == "BKNTF"
        assert sqlstate_of(gw, fn, p_event_id=MISSING, **args) == "BKNTF"
    assert sqlstate_of(gw, "join_waiting_room_batch", p_event_id=event["id"], p_user_ids=users * 501) == "BKVAL"
    call(gw, "cancel_event", p_event_id=event["id"])
    assert sqlstate_of(gw, "join_waiting_room_batch", p_event_id=event["id"], p_user_ids=users) == "BKSNO"
    assert sqlstate_of(gw, "join_waiting_room", p_event_id=event["id"], p_user_id=users[0]) == "BKSNO"


def test_batches_before_the_opening_are_shuffled_then_later_batches_are_fifo(
    gw: psycopg.Connection, owner: psycopg.Connection
) -> None:
    event, _ = queue_event(gw)
    early = [make_user(gw)["id"] for _ in range(10)]
    rows = join_batch(gw, event, early[:6]) + join_batch(gw, event, early[6:])
    assert all(r[0]["status"] == "waiting" and r[0]["position"] is None for r in rows)
    assert sorted(seq for seq, _ in entries(owner, event).values()) == list(range(1, 11))
    open_sale(owner, event, 1)
    late = [make_user(gw)["id"] for _ in range(4)]
    rows = join_batch(gw, event, late)  # shuffles the early ones first, then queues behind them
    assert [r[0]["position"] for r in rows] == [11, 12, 13, 14]
    assert sorted(status(gw, event, {"id": u})["position"] for u in early) == list(range(1, 11))
    assert owner.execute("SELECT * FROM api.waiting_room_audit(%s)", (event["id"],)).fetchall() == []


def test_idle_capacity_is_banked_once_per_batch(gw: psycopg.Connection, owner: psycopg.Connection) -> None:
    event, _ = queue_event(gw, rate=6)
    open_sale(owner, event, 3600)  # an hour of an empty room
    users = [make_user(gw)["id"] for _ in range(5)]
    rows = join_batch(gw, event, users)
    # Its first new joiner finds nobody waiting and is admitted at once; the rest wait their turn.
    assert [r[0]["status"] for r in rows] == ["admitted"] + ["waiting"] * 4
    assert [r[0]["ahead"] for r in rows[1:]] == [0, 1, 2, 3]
    assert overview(owner, event)["serving"] == 1


def test_joins_send_no_notice(gw: psycopg.Connection, owner: psycopg.Connection, connect: Any) -> None:
    """The gateways mirror a room's rule by NOTIFY; a join only counts (joined): it must stay quiet,
    or 1,000 joins a second would be 1,000 notices a second to every gateway process."""
    event, _ = queue_event(gw, rate=6)
    open_sale(owner, event, 1)
    join_batch(gw, event, [make_user(gw)["id"]])  # creates the room and opens it: those notify
    listener = connect("booking_owner")
    listener.execute("LISTEN booking_waiting_rooms")
    for _ in range(3):
        join_batch(gw, event, [make_user(gw)["id"] for _ in range(5)])
    call(gw, "join_waiting_room", p_event_id=event["id"], p_user_id=make_user(gw)["id"])
    # Notices arrive in commit order: once this one is here, any from the joins would be too.
    owner.execute("NOTIFY booking_waiting_rooms, 'sentinel'")
    heard = [n.payload for n in listener.notifies(timeout=10, stop_after=1)]
    assert heard == ["sentinel"], heard
    assert overview(owner, event)["joined"] == 17


def test_concurrent_batches_give_seq_one_to_n_without_gaps(
    gw: psycopg.Connection, owner: psycopg.Connection, connect: Callable[..., psycopg.Connection]
) -> None:
    """As several gateway processes send them: overlapping batches on their own connections at once."""
    event, _ = queue_event(gw)
    open_sale(owner, event, 1)
    users = [make_user(gw)["id"] for _ in range(60)]
    batches = [[*users[i * 10 : i * 10 + 15], users[(7 * i) % 60]] for i in range(6)]  # overlaps, repeats
    conns = [connect() for _ in batches]
    barrier = threading.Barrier(len(batches))

    def run(i: int) -> list[tuple[Any, ...]]:
        barrier.wait()
        return join_batch(conns[i], event, batches[i])

    with ThreadPoolExecutor(len(batches)) as pool:
        answers = list(pool.map(run, range(len(batches))))
    placed = entries(owner, event)
    assert sorted(placed) == sorted(users)
    assert sorted(seq for seq, _ in placed.values()) == list(range(1, 61))
    assert all(seq == position for seq, position in placed.values())
    for batch, rows in zip(batches, answers, strict=True):
        assert [r[0]["position"] for r in rows] == [placed[u][1] for u in batch]  # every answer is the place
    assert overview(owner, event)["joined"] == 60


# ------------------------------------------------------------------ the gateway's coalescer


@pytest.mark.parametrize("max_batch", [200, 7])
def test_the_coalescer_sends_queued_joins_together(
    dbname: str, gw: psycopg.Connection, owner: psycopg.Connection, max_batch: int
) -> None:
    event, _ = queue_event(gw)
    open_sale(owner, event, 1)
    users = [make_user(gw)["id"] for _ in range(30)]
    jobs = [*users, MISSING, users[0]]

    async def body() -> tuple[list[Any], int]:
        pool = make_pool(settings_for(dbname, pool_min=1, pool_max=4))
        await pool.open(wait=True)
        coalescer = JoinCoalescer(Database(pool), max_batch)
        try:
            results = await asyncio.gather(*(coalescer.join(event["id"], u) for u in jobs), return_exceptions=True)
            return results, coalescer.batches
        finally:
            await coalescer.close()
            await pool.close()

    results, batches = asyncio.run(body())
    # All were queued before the first call went: they share calls, at most max_batch each.
    assert batches == -(-len(jobs) // max_batch), batches
    assert isinstance(results[30], ApiError) and results[30].code == "not_found"
    placed = entries(owner, event)
    assert all(isinstance(r, str) for i, r in enumerate(results) if i != 30)
    assert [json.loads(r)["position"] for r in results[:30]] == [placed[u][1] for u in users]
    assert sorted(seq for seq, _ in placed.values()) == list(range(1, 31))
    assert results[31] == results[0]


def test_concurrent_http_joins_are_coalesced(dbname: str, gw: psycopg.Connection, owner: psycopg.Connection) -> None:
    event, _ = queue_event(gw)
    open_sale(owner, event, 1)
    users = [make_user(gw)["id"] for _ in range(300)]
    path = f"/events/{event['id']}/queue"
    jobs = [("POST", path, forged({"sub": u}), None) for u in users]
    jobs += [("POST", path, forged({"sub": users[5]}), None)] * 5  # one fan, five tabs
    jobs.append(("POST", path, forged({"sub": MISSING}), None))  # a token of a deleted account
    app = create_app(settings_for(dbname, pool_max=10))
    with LiveServer(app) as server:
        answers = asyncio.run(fire(server.url, jobs, connections=150))
        batches = app.state.gateway.joiner.batches
    assert [s for s, _ in answers[:305]] == [200] * 305, [a for a in answers if a[0] != 200][:3]
    assert answers[305][0] == 404 and answers[305][1]["code"] == "not_found"
    placed = entries(owner, event)
    assert sorted(seq for seq, _ in placed.values()) == list(range(1, 301))
    assert [body["position"] for _, body in answers[:300]] == [placed[u][1] for u in users]
    assert {body["position"] for _, body in answers[300:305]} == {placed[users[5]][1]}
    assert batches < len(jobs) / 3, f"{batches} calls for {len(jobs)} joins: coalescing did not happen"

    # The database saw the batches, and no single join (the gateway's connections have closed:
    # their backends reported at exit; the poll covers the report's delay).
    deadline, calls = time.monotonic() + 20, {}
    while time.monotonic() < deadline and calls.get("join_waiting_room_batch", 0) < batches:
        owner.execute("SELECT pg_stat_clear_snapshot()")
        calls = dict(owner.execute(
            "SELECT funcname, calls FROM pg_stat_user_functions WHERE schemaname = 'api'").fetchall())  # fmt: skip
        time.sleep(0.2)
    assert calls.get("join_waiting_room_batch") == batches, calls
    assert "join_waiting_room" not in calls, calls


def test_http_answers_of_coalesced_joins_are_the_single_joins(
    dbname: str, gw: psycopg.Connection, owner: psycopg.Connection
) -> None:
    """Errors come back per element or per call; each fan gets the HTTP answer a single join gave."""
    event, _ = queue_event(gw)
    plain = make_event(gw)
    fans = [make_user(gw)["id"] for _ in range(4)]
    app = create_app(settings_for(dbname))
    with LiveServer(app) as server:

        def joins(event_id: str, users: list[str]) -> list[tuple[int, Any]]:
            jobs = [("POST", f"/events/{event_id}/queue", forged({"sub": u}), None) for u in users]
            return asyncio.run(fire(server.url, jobs, connections=len(jobs)))

        answers = joins(event["id"], [*fans, MISSING])
        assert [s for s, _ in answers] == [200, 200, 200, 200, 404], answers
        assert answers[4][1]["code"] == "not_found" and "user not found" in str(answers[4][1]), answers[4]
        assert {(s, b["code"]) for s, b in joins(plain["id"], fans)} == {(404, "not_found")}
        call(gw, "cancel_event", p_event_id=event["id"])
        assert {(s, b["code"]) for s, b in joins(event["id"], fans)} == {(409, "sale_not_open")}
