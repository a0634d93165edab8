"""Per-buyer caps: decided in the reserve core under the ticket type's lock (and the (event,
buyer) locks for the event cap), for every way in, with real concurrent connections."""

from __future__ import annotations

import asyncio
import random
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
import pytest

from gateway.app import create_app
from gateway.sqlcalls import reserve_requests
from tests.conftest import call, sqlstate_of
from tests.factories import make_event, make_ticket_type, make_user, stock, violations
from tests.http import client_for, forged, new_user, settings_for
from tests.live import LiveServer
from tests.rawhttp import fire


def held_seats(owner: psycopg.Connection, user: dict[str, Any], tt_ids: list[str]) -> int:
    """Seats the buyer holds (ACTIVE, unexpired) or owns (PENDING/PAID orders) of these types."""
    row = owner.execute(
        "SELECT coalesce((SELECT sum(quantity) FROM order_reservations WHERE user_id = %(u)s"
        "                  AND ticket_type_id = ANY (%(t)s::uuid[]) AND status = 'ACTIVE' AND expires_at > now()), 0)"
        "     + coalesce((SELECT sum(i.quantity) FROM orders o JOIN order_items i ON i.order_id = o.id"
        "                  WHERE o.user_id = %(u)s AND i.ticket_type_id = ANY (%(t)s::uuid[])"
        "                    AND o.status IN ('PENDING', 'PAID')), 0)",
        {"u": user["id"], "t": tt_ids},
    ).fetchone()
    assert row is not None
    return int(row[0])


def run_at_once(connect: Callable[..., psycopg.Connection], jobs: list[Any], work: Callable[..., Any]) -> list[Any]:
    """work(conn, job) for every job, one thread and connection per job, released together."""
    conns = [connect("booking_gateway") for _ in jobs]
    barrier = threading.Barrier(len(jobs))

    def run(index: int) -> Any:
        barrier.wait()
        return work(conns[index], jobs[index])

    with ThreadPoolExecutor(len(jobs)) as pool:
        return list(pool.map(run, range(len(jobs))))


def batch_states(conn: psycopg.Connection, requests: list[tuple[str, str, int]]) -> list[str | None]:
    rows = conn.execute("SELECT * FROM api.reserve_tickets_batch(%s)", (reserve_requests(requests),)).fetchall()
    return [state for _, state, _ in rows]


# ------------------------------------------------------------------ one buyer, 50 at once


@pytest.mark.parametrize("function", ["reserve_tickets", "reserve_tickets_optimistic"])
def test_fifty_concurrent_reserves_of_one_buyer_never_pass_the_type_cap(
    gw: psycopg.Connection, owner: psycopg.Connection, connect: Any, function: str
) -> None:
    tt = make_ticket_type(gw, quantity=500, p_max_per_user=9)
    buyer, other = make_user(gw), make_user(gw)
    rng = random.Random(5)
    quantities = [rng.randint(1, 4) for _ in range(50)]

    def work(conn: psycopg.Connection, quantity: int) -> str | None:
        return sqlstate_of(conn, function, p_user_id=buyer["id"], p_ticket_type_id=tt["id"], p_quantity=quantity)

    states = run_at_once(connect, quantities, work)
    assert set(states) <= {None, "BKLIM", "BKBSY"}, states
    granted = sum(q for q, s in zip(quantities, states, strict=True) if s is None)
    assert granted == held_seats(owner, buyer, [tt["id"]])
    assert 9 - 3 <= granted <= 9, "never above the cap, and refused only when the next one would pass it"
    assert "BKLIM" in states
    assert stock(gw, tt) == 500 - granted
    assert call(gw, "reserve_tickets", p_user_id=other["id"], p_ticket_type_id=tt["id"], p_quantity=4)
    assert violations(gw) == []


def test_concurrent_batches_with_several_requests_of_one_buyer_never_pass_the_cap(
    gw: psycopg.Connection, owner: psycopg.Connection, connect: Any
) -> None:
    """As the coalescer sends them: several requests of one buyer in one call count together."""
    tt = make_ticket_type(gw, quantity=500, p_max_per_user=10)
    buyer, other = make_user(gw), make_user(gw)
    rng = random.Random(7)
    calls = [[(buyer["id"], tt["id"], rng.randint(1, 4)) for _ in range(5)] + [(other["id"], tt["id"], 1)]
             for _ in range(10)]  # fmt: skip
    answers = run_at_once(connect, calls, batch_states)
    buyer_states = [s for states in answers for s in states[:5]]
    assert set(buyer_states) == {None, "BKLIM"}
    granted = sum(r[2] for c, states in zip(calls, answers, strict=True) for r, s in zip(c, states, strict=True)
                  if s is None and r[0] == buyer["id"])  # fmt: skip
    assert granted == held_seats(owner, buyer, [tt["id"]])
    assert 10 - 3 <= granted <= 10
    assert all(states[5] is None for states in answers), "the other buyer is not capped by this one"
    assert violations(gw) == []


def test_one_call_counts_a_buyers_requests_together(gw: psycopg.Connection) -> None:
    tt = make_ticket_type(gw, quantity=100, p_max_per_user=5)
    a, b = make_user(gw), make_user(gw)
    states = batch_states(gw, [(a["id"], tt["id"], 3), (b["id"], tt["id"], 3), (a["id"], tt["id"], 3),
                               (a["id"], tt["id"], 2), (b["id"], tt["id"], 3)])  # fmt: skip
    assert states == [None, None, "BKLIM", None, "BKLIM"]
    rows = gw.execute(
        "SELECT message FROM api.reserve_tickets_batch(%s)", (reserve_requests([(a["id"], tt["id"], 1)]),)
    ).fetchall()
    assert rows == [("at most 5 tickets of this ticket type per buyer (you have 5)",)]


@pytest.mark.parametrize("coalesce", [True, False], ids=["coalesced", "single"])
def test_fifty_concurrent_http_reserves_of_one_buyer(
    dbname: str, gw: psycopg.Connection, owner: psycopg.Connection, coalesce: bool
) -> None:
    tt = make_ticket_type(gw, quantity=500, p_max_per_user=8)
    buyer = make_user(gw)
    headers = forged({"sub": buyer["id"]})
    rng = random.Random(3)
    quantities = [rng.randint(1, 4) for _ in range(50)]
    jobs = [("POST", "/bookings/reserve", headers, {"ticket_type_id": tt["id"], "quantity": q}) for q in quantities]
    app = create_app(settings_for(dbname, reserve_coalesce=coalesce, pool_max=10))
    with LiveServer(app) as server:
        answers = asyncio.run(fire(server.url, jobs, connections=50))
        batches = app.state.gateway.coalescer.batches
    statuses = [status for status, _ in answers]
    assert set(statuses) == {201, 409}, answers
    assert {body["code"] for status, body in answers if status == 409} == {"limit_exceeded"}
    granted = sum(q for q, (status, _) in zip(quantities, answers, strict=True) if status == 201)
    assert granted == held_seats(owner, buyer, [tt["id"]])
    assert 8 - 3 <= granted <= 8
    if coalesce:
        assert batches < 50, "no batch held several requests of the buyer"
    assert violations(gw) == []


# ------------------------------------------------------------------ the event cap


def two_types_of_a_capped_event(gw: psycopg.Connection, cap: int) -> tuple[dict[str, Any], dict[str, Any]]:
    event = make_event(gw, publish=False, p_max_tickets_per_user=cap)
    types = [call(gw, "create_ticket_type", p_event_id=event["id"], p_name=n, p_price="10.00", p_initial_quantity=300)
             for n in ("A", "B")]  # fmt: skip
    call(gw, "publish_event", p_event_id=event["id"])
    types.sort(key=lambda t: t["id"])
    return types[0], types[1]


def test_event_cap_across_two_types_under_concurrency(
    gw: psycopg.Connection, owner: psycopg.Connection, connect: Any
) -> None:
    """Single reserves of either type and batches spanning both, at once: never above the event
    cap, and no deadlock (a batch takes all its type rows before any (event, buyer) lock)."""
    a, b = two_types_of_a_capped_event(gw, cap=12)
    buyer, other = make_user(gw), make_user(gw)
    rng = random.Random(9)
    jobs: list[Any] = []
    for n in range(40):
        if n % 4 == 0:  # a batch over both types, the other buyer in it too
            jobs.append([(buyer["id"], b["id"], rng.randint(1, 3)), (buyer["id"], a["id"], rng.randint(1, 3)),
                         (other["id"], a["id"], 1)])  # fmt: skip
        else:
            jobs.append((buyer["id"], rng.choice([a, b])["id"], rng.randint(1, 4)))

    def work(conn: psycopg.Connection, job: Any) -> list[tuple[int, str | None]]:
        if isinstance(job, list):
            return list(zip([r[2] for r in job], batch_states(conn, job), strict=True))
        state = sqlstate_of(conn, "reserve_tickets", p_user_id=job[0], p_ticket_type_id=job[1], p_quantity=job[2])
        return [(job[2], state)]

    answers = run_at_once(connect, jobs, work)
    buyer_answers = [ans for job, results in zip(jobs, answers, strict=True)
                     for r, ans in zip(job if isinstance(job, list) else [job], results, strict=True)
                     if r[0] == buyer["id"]]  # fmt: skip
    assert {s for _, s in buyer_answers} == {None, "BKLIM"}, buyer_answers
    granted = sum(q for q, s in buyer_answers if s is None)
    assert granted == held_seats(owner, buyer, [a["id"], b["id"]])
    assert 12 - 3 <= granted <= 12
    assert held_seats(owner, other, [a["id"]]) == 10
    assert violations(gw) == []


def test_event_cap_counts_every_type_and_names_itself(gw: psycopg.Connection) -> None:
    a, b = two_types_of_a_capped_event(gw, cap=5)
    buyer = make_user(gw)
    call(gw, "reserve_tickets", p_user_id=buyer["id"], p_ticket_type_id=a["id"], p_quantity=3)
    with pytest.raises(psycopg.Error) as refused:
        call(gw, "reserve_tickets", p_user_id=buyer["id"], p_ticket_type_id=b["id"], p_quantity=3)
    assert refused.value.diag.sqlstate == "BKLIM"
    assert refused.value.diag.message_primary == "at most 5 tickets of this event per buyer (you have 3)"
    assert call(gw, "reserve_tickets", p_user_id=buyer["id"], p_ticket_type_id=b["id"], p_quantity=2)


# ------------------------------------------------------------------ what counts


def test_cancelled_and_expired_holds_free_the_cap_and_orders_count(
    gw: psycopg.Connection, owner: psycopg.Connection
) -> None:
    tt = make_ticket_type(gw, quantity=100, p_max_per_user=5)
    buyer = make_user(gw)

    def reserve(quantity: int) -> str | None:
        return sqlstate_of(gw, "reserve_tickets", p_user_id=buyer["id"], p_ticket_type_id=tt["id"], p_quantity=quantity)

    hold = call(gw, "reserve_tickets", p_user_id=buyer["id"], p_ticket_type_id=tt["id"], p_quantity=4)
    assert reserve(2) == "BKLIM"
    call(gw, "cancel_reservation", p_user_id=buyer["id"], p_reservation_id=hold["id"])
    assert reserve(5) is None  # cancelled: freed
    owner.execute("UPDATE order_reservations SET expires_at = now() - interval '1 second' WHERE user_id = %s",
                  (buyer["id"],))  # fmt: skip
    hold = call(gw, "reserve_tickets", p_user_id=buyer["id"], p_ticket_type_id=tt["id"], p_quantity=3)  # expired: freed
    call(gw, "complete_booking", p_user_id=buyer["id"], p_reservation_id=hold["id"], p_payment_method="CARD")
    assert reserve(3) == "BKLIM"  # the paid order counts
    assert reserve(2) is None
    row = owner.execute("SELECT held, pending, paid, max_per_user, event_seats FROM api.buyer_counts(%s)",
                        (buyer["email"].upper(),)).fetchall()  # fmt: skip
    assert row == [(2, 0, 3, 5, 5)]
    assert violations(gw) == []
    owner.execute("UPDATE orders SET status = 'CANCELLED' WHERE user_id = %s", (buyer["id"],))  # (as refunds will)
    assert reserve(3) is None  # a cancelled order does not count


def test_no_cap_means_no_limit(gw: psycopg.Connection) -> None:
    tt = make_ticket_type(gw, quantity=100)
    buyer = make_user(gw)
    for _ in range(10):
        call(gw, "reserve_tickets", p_user_id=buyer["id"], p_ticket_type_id=tt["id"], p_quantity=10)
    assert stock(gw, tt) == 0


# ------------------------------------------------------------------ administration


def test_caps_over_the_admin_api(dbname: str, owner: psycopg.Connection) -> None:
    with client_for(dbname) as client:
        _, admin = new_user(client, owner, "admin")
        base = {"slug": "capped", "name": "Capped", "location": "Hue",
                "start_time": "2031-01-01T18:00:00Z", "end_time": "2031-01-01T21:00:00Z"}  # fmt: skip
        r = client.post("/admin/events", json={**base, "max_tickets_per_user": 6}, headers=admin)
        assert r.status_code == 201 and r.json()["max_tickets_per_user"] == 6, r.text
        event_id = r.json()["id"]
        r = client.post(f"/admin/events/{event_id}/ticket-types",
                        json={"name": "GA", "price": "10.00", "initial_quantity": 50, "max_per_user": 4},
                        headers=admin)  # fmt: skip
        assert r.status_code == 201 and r.json()["max_per_user"] == 4, r.text
        tt_id = r.json()["id"]
        r = client.get(f"/admin/events/{event_id}", headers=admin)
        assert r.json()["max_tickets_per_user"] == 6 and r.json()["ticket_types"][0]["max_per_user"] == 4
        for bad in (0, -1, 1.5, "4", 1_000_001):
            r = client.patch(f"/admin/ticket-types/{tt_id}", json={"max_per_user": bad}, headers=admin)
            assert (r.status_code, r.json()["code"]) == (422, "validation_failed"), (bad, r.text)
            r = client.post("/admin/events", json={**base, "slug": "x", "max_tickets_per_user": bad}, headers=admin)
            assert (r.status_code, r.json()["code"]) == (422, "validation_failed"), (bad, r.text)
        r = client.patch(f"/admin/ticket-types/{tt_id}", json={"max_per_user": None}, headers=admin)
        assert r.status_code == 200 and r.json()["max_per_user"] is None
        r = client.patch(f"/admin/events/{event_id}", json={"max_tickets_per_user": None}, headers=admin)
        assert r.status_code == 200 and r.json()["max_tickets_per_user"] is None
        r = client.patch(f"/admin/events/{event_id}", json={"max_tickets_per_user": 2}, headers=admin)
        assert r.json()["max_tickets_per_user"] == 2
        client.post(f"/admin/events/{event_id}/publish", headers=admin)
        r = client.get("/events")
        assert r.json()[0]["max_tickets_per_user"] == 2 and r.json()[0]["ticket_types"][0]["max_per_user"] is None
        _, fan = new_user(client, owner)
        r = client.post("/bookings/reserve", json={"ticket_type_id": tt_id, "quantity": 3}, headers=fan)
        assert (r.status_code, r.json()["code"]) == (409, "limit_exceeded")
        assert "at most 2 tickets of this event per buyer" in r.json()["message"]


def test_the_database_refuses_a_cap_below_one(gw: psycopg.Connection, owner: psycopg.Connection) -> None:
    tt = make_ticket_type(gw)
    assert sqlstate_of(gw, "update_ticket_type", p_ticket_type_id=tt["id"], p_changes='{"max_per_user": 0}') == "BKVAL"
    assert (
        sqlstate_of(gw, "update_ticket_type", p_ticket_type_id=tt["id"], p_changes='{"max_per_user": "x"}') == "BKVAL"
    )
    assert (
        sqlstate_of(gw, "update_event", p_event_id=tt["event_id"], p_changes='{"max_tickets_per_user": 2.5}') == "BKVAL"
    )
    with pytest.raises(psycopg.errors.CheckViolation):
        owner.execute("UPDATE ticket_types SET max_per_user = 0 WHERE id = %s", (tt["id"],))
    with pytest.raises(psycopg.errors.CheckViolation):
        owner.execute("UPDATE events SET max_tickets_per_user = 0 WHERE id = %s", (tt["event_id"],))
