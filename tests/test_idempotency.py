"""Idempotency keys on reserve and complete: recorded with the work in one transaction, the same
answer for a retry (also at once, also in one coalesced batch, also after a gateway restart)."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
import pytest

from gateway.app import create_app
from gateway.onsale.reserve import ReserveCoalescer
from gateway.sqlcalls import reserve_requests
from tests.conftest import CLUSTER, call, dba_call, sqlstate_of
from tests.factories import make_ticket_type, make_user, stock, violations
from tests.http import client_for, forged, settings_for
from tests.live import LiveServer
from tests.rawhttp import fire
from tests.test_coalesce import _with_coalescer, patient_gateway_url, wait_for_lock_waiter


def holds_of(owner: psycopg.Connection, user: dict[str, Any]) -> int:
    row = owner.execute("SELECT count(*) FROM order_reservations WHERE user_id = %s", (user["id"],)).fetchone()
    assert row is not None
    return int(row[0])


def keyed_batch(conn: psycopg.Connection, requests: list[tuple[str, str, int]], keys: list[str | None]) -> list[Any]:
    return conn.execute(
        "SELECT * FROM api.reserve_tickets_batch(%s, %s::text[])", (reserve_requests(requests), keys)
    ).fetchall()


# ------------------------------------------------------------------ SQL


@pytest.mark.parametrize("function", ["reserve_tickets", "reserve_tickets_optimistic", "reserve_tickets_batch"])
def test_the_same_key_twice_at_once_makes_one_hold_and_two_identical_answers(
    gw: psycopg.Connection, owner: psycopg.Connection, connect: Any, function: str
) -> None:
    tt = make_ticket_type(gw, quantity=50)
    buyer = make_user(gw)
    conns = [connect() for _ in range(8)]
    barrier = threading.Barrier(len(conns))

    def run(conn: psycopg.Connection) -> Any:
        barrier.wait()
        if function == "reserve_tickets_batch":
            return keyed_batch(conn, [(buyer["id"], tt["id"], 2)], ["retry-1"])[0][0]
        return call(conn, function, p_user_id=buyer["id"], p_ticket_type_id=tt["id"], p_quantity=2,
                    p_idempotency_key="retry-1")  # fmt: skip

    with ThreadPoolExecutor(len(conns)) as pool:
        answers = list(pool.map(run, conns))
    assert all(a == answers[0] for a in answers) and answers[0]["quantity"] == 2
    assert holds_of(owner, buyer) == 1 and stock(gw, tt) == 48
    assert violations(gw) == []


def test_another_request_with_the_key_is_refused_and_nothing_is_done(
    gw: psycopg.Connection, owner: psycopg.Connection
) -> None:
    tt, other_tt = make_ticket_type(gw, quantity=50), make_ticket_type(gw, quantity=50)
    buyer, someone = make_user(gw), make_user(gw)
    first = call(gw, "reserve_tickets", p_user_id=buyer["id"], p_ticket_type_id=tt["id"], p_quantity=2,
                 p_idempotency_key="k")  # fmt: skip
    for args in (
        {"p_ticket_type_id": tt["id"], "p_quantity": 3},
        {"p_ticket_type_id": other_tt["id"], "p_quantity": 2},
    ):
        assert sqlstate_of(gw, "reserve_tickets", p_user_id=buyer["id"], p_idempotency_key="k", **args) == "BKIDR"
        assert (
            sqlstate_of(gw, "reserve_tickets_optimistic", p_user_id=buyer["id"], p_idempotency_key="k", **args)
            == "BKIDR"
        )
    assert sqlstate_of(gw, "complete_booking", p_user_id=buyer["id"], p_reservation_id=first["id"],
                       p_payment_method="CARD", p_idempotency_key="k") == "BKIDR"  # fmt: skip
    assert holds_of(owner, buyer) == 1 and stock(gw, tt) == 48 and stock(gw, other_tt) == 50
    # Keys are per user: another user's "k" is theirs.
    assert call(gw, "reserve_tickets", p_user_id=someone["id"], p_ticket_type_id=tt["id"], p_quantity=3,
                p_idempotency_key="k")["user_id"] == someone["id"]  # fmt: skip


def test_one_batch_with_a_key_twice_answers_both_with_the_first(
    gw: psycopg.Connection, owner: psycopg.Connection
) -> None:
    tt = make_ticket_type(gw, quantity=50)
    a, b = make_user(gw), make_user(gw)
    rows = keyed_batch(
        gw,
        [(a["id"], tt["id"], 2), (b["id"], tt["id"], 1), (a["id"], tt["id"], 2), (a["id"], tt["id"], 4),
         (a["id"], tt["id"], 1), (b["id"], tt["id"], 1)],
        ["x", "x", "x", "x", None, None],
    )  # fmt: skip
    assert rows[0][0] is not None and rows[2] == rows[0], "the same key and request: the first one's answer"
    assert rows[1][0] is not None and rows[1][0]["user_id"] == b["id"], "keys are per user"
    assert rows[3][:2] == (None, "BKIDR")
    assert rows[4][0] is not None and rows[5][0] is not None
    assert holds_of(owner, a) == 2 and holds_of(owner, b) == 2 and stock(gw, tt) == 50 - 2 - 1 - 1 - 1
    # A later batch replays it, and the single-call function recognises the same request.
    assert keyed_batch(gw, [(a["id"], tt["id"], 2)], ["x"])[0][0] == rows[0][0]
    assert call(gw, "reserve_tickets", p_user_id=a["id"], p_ticket_type_id=tt["id"], p_quantity=2,
                p_idempotency_key="x") == rows[0][0]  # fmt: skip
    assert holds_of(owner, a) == 2
    assert violations(gw) == []


def test_only_successes_are_recorded(gw: psycopg.Connection, owner: psycopg.Connection) -> None:
    tt = make_ticket_type(gw, quantity=3)
    buyer, rival = make_user(gw), make_user(gw)
    rival_hold = call(gw, "reserve_tickets", p_user_id=rival["id"], p_ticket_type_id=tt["id"], p_quantity=2)
    args = {"p_user_id": buyer["id"], "p_ticket_type_id": tt["id"], "p_quantity": 2, "p_idempotency_key": "try"}
    assert sqlstate_of(gw, "reserve_tickets", **args) == "BKSLD"
    assert keyed_batch(gw, [(buyer["id"], tt["id"], 2)], ["try"])[0][1] == "BKSLD"
    assert owner.execute("SELECT count(*) FROM idempotency_keys").fetchone() == (0,)
    call(gw, "cancel_reservation", p_user_id=rival["id"], p_reservation_id=rival_hold["id"])
    assert call(gw, "reserve_tickets", **args)["quantity"] == 2, "a refused key is decided again"


def test_a_retried_complete_gets_the_same_order(gw: psycopg.Connection, owner: psycopg.Connection) -> None:
    tt = make_ticket_type(gw, quantity=10)
    buyer = make_user(gw)
    hold = call(gw, "reserve_tickets", p_user_id=buyer["id"], p_ticket_type_id=tt["id"], p_quantity=2)
    args = {"p_user_id": buyer["id"], "p_reservation_id": hold["id"], "p_payment_method": "MOMO"}
    order = call(gw, "complete_booking", **args, p_idempotency_key="pay-1")
    assert call(gw, "complete_booking", **args, p_idempotency_key="pay-1") == order
    assert sqlstate_of(gw, "complete_booking", **args) == "BKRNA", "without the key: as before"
    assert owner.execute("SELECT count(*) FROM orders").fetchone() == (1,)


def test_keys_expire_after_24_hours_and_are_purged(gw: psycopg.Connection, owner: psycopg.Connection) -> None:
    tt = make_ticket_type(gw, quantity=10)
    buyer = make_user(gw)
    args = {"p_user_id": buyer["id"], "p_ticket_type_id": tt["id"], "p_idempotency_key": "old"}
    first = call(gw, "reserve_tickets", **args, p_quantity=1)
    owner.execute("UPDATE idempotency_keys SET created_at = now() - interval '24 hours 1 second'")
    second = call(gw, "reserve_tickets", **args, p_quantity=3)  # absent: claimed again, another request
    assert second["id"] != first["id"] and second["quantity"] == 3
    assert call(gw, "reserve_tickets", **args, p_quantity=3) == second
    owner.execute("UPDATE idempotency_keys SET created_at = now() - interval '25 hours'")
    call(gw, "reserve_tickets", p_user_id=buyer["id"], p_ticket_type_id=tt["id"], p_quantity=1, p_idempotency_key="new")
    assert dba_call(gw, "purge_idempotency_keys") == 1
    assert owner.execute("SELECT key FROM idempotency_keys").fetchall() == [("new",)]


def test_malformed_keys_are_refused_in_sql(gw: psycopg.Connection) -> None:
    tt = make_ticket_type(gw, quantity=10)
    buyer = make_user(gw)
    for key in ("", "with space", "x" * 256, "caf\u00e9", "tab\there"):
        assert sqlstate_of(gw, "reserve_tickets", p_user_id=buyer["id"], p_ticket_type_id=tt["id"], p_quantity=1,
                           p_idempotency_key=key) == "BKVAL", key  # fmt: skip
    with pytest.raises(psycopg.Error) as refused:
        keyed_batch(gw, [(buyer["id"], tt["id"], 1)], [])
    assert refused.value.diag.sqlstate == "BKVAL"


# ------------------------------------------------------------------ HTTP


def test_http_reserve_replays_across_a_gateway_restart(
    dbname: str, gw: psycopg.Connection, owner: psycopg.Connection
) -> None:
    tt = make_ticket_type(gw, quantity=20)
    buyer = make_user(gw)
    headers = {**forged({"sub": buyer["id"]}), "Idempotency-Key": "order-7f3a"}
    with client_for(dbname) as client:
        first = client.post("/bookings/reserve", json={"ticket_type_id": tt["id"], "quantity": 2}, headers=headers)
        assert first.status_code == 201, first.text
        again = client.post("/bookings/reserve", json={"ticket_type_id": tt["id"], "quantity": 3}, headers=headers)
        assert (again.status_code, again.json()["code"]) == (422, "idempotency_key_reused")
    with client_for(dbname, reserve_coalesce=False) as restarted:  # a new app instance, another strategy
        replay = restarted.post("/bookings/reserve", json={"ticket_type_id": tt["id"], "quantity": 2}, headers=headers)
        assert (replay.status_code, replay.content) == (201, first.content)
        complete = {"payment_method": "BANKING"}
        path = f"/bookings/complete/{first.json()['id']}"
        paid = restarted.post(path, json=complete, headers={**headers, "Idempotency-Key": "pay-7f3a"})
        assert paid.status_code == 201, paid.text
    with client_for(dbname) as third:
        retried = third.post(path, json=complete, headers={**headers, "Idempotency-Key": "pay-7f3a"})
        assert (retried.status_code, retried.content) == (201, paid.content)
        unkeyed = third.post(path, json=complete, headers=forged({"sub": buyer["id"]}))
        assert (unkeyed.status_code, unkeyed.json()["code"]) == (409, "reservation_not_active")
    assert holds_of(owner, buyer) == 1 and stock(gw, tt) == 18
    assert owner.execute("SELECT count(*) FROM orders").fetchone() == (1,)


@pytest.mark.parametrize("coalesce", [True, False], ids=["coalesced", "single"])
def test_http_same_key_at_once_one_hold_identical_answers(
    dbname: str, gw: psycopg.Connection, owner: psycopg.Connection, coalesce: bool
) -> None:
    tt = make_ticket_type(gw, quantity=500)
    buyers = [make_user(gw) for _ in range(5)]
    jobs = [("POST", "/bookings/reserve", {**forged({"sub": b["id"]}), "Idempotency-Key": f"k-{b['id'][:8]}"},
             {"ticket_type_id": tt["id"], "quantity": 2}) for b in buyers for _ in range(8)]  # fmt: skip
    app = create_app(settings_for(dbname, reserve_coalesce=coalesce, pool_max=10))
    with LiveServer(app) as server:
        answers = asyncio.run(fire(server.url, jobs, connections=40))
        batches = app.state.gateway.coalescer.batches
    for n, buyer in enumerate(buyers):
        mine = answers[n * 8 : (n + 1) * 8]
        assert all(a == mine[0] for a in mine) and mine[0][0] == 201, mine
        assert holds_of(owner, buyer) == 1
    assert stock(gw, tt) == 500 - 2 * len(buyers)
    if coalesce:
        assert batches < len(jobs), "no batch held two requests"
    assert violations(gw) == []


def test_http_malformed_keys_get_422(dbname: str, gw: psycopg.Connection, owner: psycopg.Connection) -> None:
    tt = make_ticket_type(gw, quantity=20)
    buyer = make_user(gw)
    token: dict[str, Any] = forged({"sub": buyer["id"]})
    with client_for(dbname) as client:
        for key in ("", "two words", "k" * 256, "caf\u00e9".encode()):  # (bytes: sent as they are)
            r = client.post("/bookings/reserve", json={"ticket_type_id": tt["id"], "quantity": 1},
                            headers={**token, "Idempotency-Key": key})  # fmt: skip
            assert (r.status_code, r.json()["code"]) == (422, "validation_failed"), key
            r = client.post(f"/bookings/complete/{tt['id']}", json={"payment_method": "CARD"},
                            headers={**token, "Idempotency-Key": key})  # fmt: skip
            assert (r.status_code, r.json()["code"]) == (422, "validation_failed"), key
        ok = client.post("/bookings/reserve", json={"ticket_type_id": tt["id"], "quantity": 1},
                         headers={**token, "Idempotency-Key": "~!" + "k" * 253})  # fmt: skip
        assert ok.status_code == 201
        spec = client.get("/openapi.json").json()
        params = spec["paths"]["/bookings/reserve"]["post"]["parameters"]
        assert any(p["name"] == "Idempotency-Key" for p in params)
        assert "422" in spec["paths"]["/bookings/complete/{reservation_id}"]["post"]["responses"]
    assert holds_of(owner, buyer) == 1


def test_a_keyed_request_whose_client_left_keeps_its_hold_for_the_retry(
    dbname: str, gw: psycopg.Connection, owner: psycopg.Connection, connect: Any
) -> None:
    """Unkeyed, a hold granted after its client left is given back; keyed, the client's retry
    must find it (and does: the same reservation)."""
    tt = make_ticket_type(gw, quantity=10)
    first, keyed, unkeyed = make_user(gw), make_user(gw), make_user(gw)
    blocker = connect("booking_owner", autocommit=False)

    async def body(coalescer: ReserveCoalescer) -> None:
        blocker.execute("SELECT 1 FROM ticket_types WHERE id = %s FOR UPDATE", (tt["id"],))
        a = coalescer.submit(first["id"], tt["id"], 1)
        b = coalescer.submit(keyed["id"], tt["id"], 2, "left-early")
        c = coalescer.submit(unkeyed["id"], tt["id"], 3)
        await asyncio.to_thread(wait_for_lock_waiter, CLUSTER.superuser_conninfo(), dbname)
        b.cancel()
        c.cancel()
        blocker.rollback()
        await a
        for _ in range(600):  # the release of c's hold runs in the background
            if stock(gw, tt) == 7:
                break
            await asyncio.sleep(0.05)

    asyncio.run(_with_coalescer(dbname, 50, body, database_url=patient_gateway_url(owner, dbname)))
    holds = {r[0]: r[1] for r in owner.execute(
        "SELECT user_id::text, status FROM order_reservations WHERE ticket_type_id = %s", (tt["id"],))}  # fmt: skip
    assert holds == {first["id"]: "ACTIVE", keyed["id"]: "ACTIVE", unkeyed["id"]: "CANCELLED"}
    retry = call(gw, "reserve_tickets", p_user_id=keyed["id"], p_ticket_type_id=tt["id"], p_quantity=2,
                 p_idempotency_key="left-early")  # fmt: skip
    assert retry["status"] == "ACTIVE" and holds_of(owner, keyed) == 1
    assert violations(gw) == []
