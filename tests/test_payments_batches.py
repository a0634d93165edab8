"""Payments at scale and the money we refuse (review fixes of issue 12): cancelling an event of
thousands of PAID orders (one short transaction, then the refund_cancelled_event job's batches,
with callbacks and refunds arriving meanwhile), the bounded set-based expiry of thousands of
overdue orders (a reserve on the same hot type goes through meanwhile), a verified wrong amount
refunded, unknown references listed for DBAs, NULL references refused. Real PostgreSQL, real
concurrent connections, the worker's own code; no mocks."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from dbctl.migrate import GATEWAY_ROLE, OWNER_ROLE, WORKER_ROLE
from tests.conftest import call, sqlstate_of
from tests.factories import make_ticket_type, make_user, reserve, stock, violations
from tests.test_payments_sql import checkout, jobs, pay, state
from tests.worker_support import jobs_of, run_until_idle, settings_for
from worker import app as worker_app

Connect = Callable[..., psycopg.Connection]

# Orders made in bulk by the owner (building thousands through reserve + checkout + pay would take
# minutes here); the same rows those functions write, and the invariants check them.
BULK_ORDERS = """
WITH o AS (
  INSERT INTO orders (user_id, total_amount, status, payment_deadline, created_at)
  SELECT %(user)s, tt.price * %(qty)s, %(status)s, now() - interval '1 minute', now() - interval '20 minutes'
    FROM ticket_types tt, generate_series(1, %(n)s)
   WHERE tt.id = %(tt)s
  RETURNING id, total_amount
), i AS (
  INSERT INTO order_items (order_id, ticket_type_id, quantity, unit_price)
  SELECT o.id, %(tt)s, %(qty)s, o.total_amount / %(qty)s FROM o
), p AS (
  INSERT INTO payments (order_id, transaction_id, payment_method, amount, status, payment_time, provider_txn_id)
  SELECT o.id, 'BK' || upper(encode(public.gen_random_bytes(12), 'hex')), 'MOMO', o.total_amount,
         CASE WHEN %(status)s = 'PAID' THEN 'SUCCESS' ELSE 'PENDING' END,
         CASE WHEN %(status)s = 'PAID' THEN now() END,
         CASE WHEN %(status)s = 'PAID' THEN 'M-' || o.id END
    FROM o
), t AS (
  INSERT INTO tickets (order_id, ticket_type_id, ticket_code, status)
  SELECT o.id, %(tt)s, 'TK-' || upper(encode(public.gen_random_bytes(8), 'hex')), 'UNUSED'
    FROM o, generate_series(1, %(qty)s)
   WHERE %(status)s = 'PAID'
)
UPDATE ticket_types SET available_quantity = available_quantity - %(n)s * %(qty)s WHERE id = %(tt)s
"""


def bulk_orders(owner: psycopg.Connection, tt: dict[str, Any], n: int, status: str, qty: int = 1) -> None:
    user = owner.execute("SELECT id FROM users ORDER BY created_at LIMIT 1").fetchone()
    assert user is not None
    owner.execute(BULK_ORDERS, {"user": user[0], "tt": tt["id"], "n": n, "status": status, "qty": qty})


def count(owner: psycopg.Connection, query: str, *params: Any) -> int:
    row = owner.execute(query, params).fetchone()
    assert row is not None
    return int(row[0])


def run_cancel_task(dbname: str, tmp_path: Path, event_id: str) -> str:
    """The worker's refund_cancelled_event task, its own code on its own pool (as the worker role).
    Run directly rather than through a queue: the thousands of refund_payment jobs it defers
    share the `payments` queue and are not this test's subject."""

    async def go() -> str:
        settings = settings_for(dbname, tmp_path / "mail")
        runtime = worker_app.Runtime(settings)
        async with AsyncConnectionPool(settings.database_url.get_secret_value(), min_size=1, max_size=2) as pool:
            runtime._pool = pool
            return await runtime.refund_cancelled_event(None, event_id)  # type: ignore[arg-type]

    return asyncio.run(go())


# Cancelling a big event ----------------------------------------------------------------------------


def test_cancelling_an_event_of_thousands_of_paid_orders_answers_at_once_and_refunds_them_in_batches(
    gw: psycopg.Connection, owner: psycopg.Connection, connect: Connect, dbname: str, tmp_path: Path
) -> None:
    call(owner, "set_payment_mode", p_mode="provider")
    paid_n = 4000
    tt = make_ticket_type(gw, quantity=paid_n + 50)
    make_user(gw)
    pending = [checkout(gw, tt, 1) for _ in range(4)]  # their money arrives during the batches
    early = checkout(gw, tt, 1)
    pay(gw, early, provider_txn="EARLY-1")  # paid through the API: refunded by an admin meanwhile
    bulk_orders(owner, tt, paid_n, "PAID")
    assert violations(gw) == []
    # The gateway's role answers within its statement_timeout, or 503 busy: the cancel of the
    # old code (every order refunded in the one transaction) ran past it with 4000 orders.
    assert gw.execute("SHOW statement_timeout").fetchone() == ("5s",)
    assert call(gw, "cancel_event", p_event_id=tt["event_id"])["status"] == "CANCELLED"
    assert count(owner, "SELECT count(*) FROM orders WHERE status = 'PAID'") == paid_n + 1
    [job] = jobs(owner, "refund_cancelled_event")
    assert job["queue"] == "payments" and job["args"] == {"event_id": tt["event_id"]}
    assert jobs(owner, "refund_payment") == []
    assert violations(gw) == []  # a cancelled event with PAID orders still to refund is consistent
    assert sqlstate_of(gw, "reserve_tickets", p_user_id=make_user(gw)["id"], p_ticket_type_id=tt["id"],
                       p_quantity=1, p_idempotency_key=None, p_admission_token=None) == "BKSNO"  # fmt: skip

    result: dict[str, Any] = {}
    task = threading.Thread(target=lambda: result.update(done=run_cancel_task(dbname, tmp_path, tt["event_id"])))
    task.start()
    try:
        # Once the first batch has committed, money and an admin refund arrive on their own
        # connections while the next batches run.
        deadline = time.monotonic() + 60
        while count(owner, "SELECT count(*) FROM orders WHERE status = 'REFUND_PENDING'") == 0:
            assert time.monotonic() < deadline and task.is_alive(), "no batch committed"
            time.sleep(0.05)
        still_paid = count(owner, "SELECT count(*) FROM orders WHERE status = 'PAID'")
        callbacks = [connect(GATEWAY_ROLE) for _ in range(2)]
        outcomes: list[Any] = []

        def money(conn: psycopg.Connection, orders: list[dict[str, Any]]) -> None:
            for order in orders:
                try:
                    outcomes.append(pay(conn, order)["outcome"])
                except psycopg.Error as exc:
                    outcomes.append(f"error {exc.diag.sqlstate}")

        def admin(conn: psycopg.Connection) -> None:
            try:
                outcomes.append(call(conn, "refund_order", p_order_id=early["id"])["status"])
                outcomes.append(pay(conn, early, provider_txn="EARLY-2")["outcome"])  # paid twice
            except psycopg.Error as exc:
                outcomes.append(f"error {exc.diag.sqlstate}")

        others = [
            threading.Thread(target=money, args=(callbacks[0], pending)),
            threading.Thread(target=admin, args=(callbacks[1],)),
        ]
        for t in others:
            t.start()
        for t in others:
            t.join()
    finally:
        task.join()
    assert still_paid > 0, "the callbacks came after the last batch"
    assert not [o for o in outcomes if str(o).startswith("error")], outcomes  # no deadlock, no lock timeout
    assert outcomes.count("refund_pending") == len(pending) + 1 and "REFUND_PENDING" in outcomes, outcomes
    assert result["done"].startswith(f"event {tt['event_id']}: ")

    # Every order of the event ends REFUND_PENDING with one refund (and its job) of its payment
    # (whoever came first: the batch, the admin, the callback of a pending order the batch had
    # cancelled), plus the refund of the second payment.
    orders_n = paid_n + 1 + len(pending)
    assert count(owner, "SELECT count(*) FROM orders WHERE status IN ('PAID', 'PENDING')") == 0
    assert count(owner, "SELECT count(*) FROM orders WHERE status = 'REFUND_PENDING'") == orders_n
    own = owner.execute(
        "SELECT count(*), count(DISTINCT order_id), count(job_id) FROM payment_refunds WHERE reason <> 'duplicate'"
    ).fetchone()
    assert own == (orders_n, orders_n, orders_n)
    reasons = {r for (r,) in owner.execute("SELECT DISTINCT reason FROM payment_refunds").fetchall()}
    assert {"event_cancelled", "duplicate"} <= reasons <= {"event_cancelled", "duplicate", "admin", "late_no_seats"}
    assert count(owner, "SELECT count(*) FROM payment_refunds WHERE reason = 'event_cancelled'") >= paid_n
    assert len(jobs(owner, "refund_payment")) == orders_n + 1
    assert count(owner, "SELECT count(*) FROM tickets WHERE status = 'UNUSED'") == 0
    assert stock(gw, tt) == paid_n + 50
    assert violations(gw) == []


def test_the_worker_runs_the_cancel_job_of_an_event(gw: psycopg.Connection, owner: psycopg.Connection,
                                                    dbname: str, tmp_path: Path) -> None:  # fmt: skip
    """End to end through the queue: the job the cancel defers, taken by a real worker."""
    call(owner, "set_payment_mode", p_mode="provider")
    tt = make_ticket_type(gw, quantity=10)
    waiting = [checkout(gw, tt, 2) for _ in range(3)]
    call(gw, "cancel_event", p_event_id=tt["event_id"])
    run_until_idle(settings_for(dbname, tmp_path / "mail", queues=("payments",)))
    [(_, status, _, args)] = jobs_of(dbname, "refund_cancelled_event")
    assert status == "succeeded" and args == {"event_id": tt["event_id"]}
    assert {state(owner, o["id"])["order"] for o in waiting} == {"CANCELLED"}
    assert stock(gw, tt) == 10 and violations(gw) == []
    # Cancelling again queues the job again (a lost or failed job is recovered that way); it
    # finds nothing left.
    call(gw, "cancel_event", p_event_id=tt["event_id"])
    run_until_idle(settings_for(dbname, tmp_path / "mail", queues=("payments",)))
    assert [j[1] for j in jobs_of(dbname, "refund_cancelled_event")] == ["succeeded", "succeeded"]


def test_the_cancel_batches_are_bounded_and_checked(gw: psycopg.Connection, owner: psycopg.Connection,
                                                    connect: Connect) -> None:  # fmt: skip
    worker = connect(WORKER_ROLE)
    tt = make_ticket_type(gw, quantity=600)
    make_user(gw)
    bulk_orders(owner, tt, 500, "PAID")
    assert sqlstate_of(worker, "refund_cancelled_event", p_event_id=tt["event_id"], p_limit=10) == "BKIST"
    call(gw, "cancel_event", p_event_id=tt["event_id"])
    first = call(worker, "refund_cancelled_event", p_event_id=tt["event_id"], p_limit=200)
    assert first == {"event_id": tt["event_id"], "refunded": 200, "cancelled": 0, "remaining": 300}
    assert violations(gw) == []  # consistent between batches
    assert sqlstate_of(worker, "refund_cancelled_event", p_event_id=tt["event_id"], p_limit=0) == "BKVAL"
    assert sqlstate_of(worker, "refund_cancelled_event", p_event_id=tt["event_id"], p_limit=5001) == "BKVAL"
    missing = "00000000-0000-0000-0000-000000000000"
    assert sqlstate_of(worker, "refund_cancelled_event", p_event_id=missing, p_limit=10) == "BKNTF"
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        gw.execute("SELECT api.refund_cancelled_event(%s)", (tt["event_id"],))


# The expiry ------------------------------------------------------------------------------------------


def test_the_expiry_of_thousands_of_overdue_orders_is_bounded_and_lets_reserves_through(
    gw: psycopg.Connection, owner: psycopg.Connection, connect: Connect
) -> None:
    call(owner, "set_payment_mode", p_mode="provider")
    overdue = 4500
    tt = make_ticket_type(gw, quantity=overdue + 100)
    make_user(gw)
    bulk_orders(owner, tt, overdue, "PENDING")
    fresh = checkout(gw, tt, 1)  # not due
    assert violations(gw) == []
    # Bounded: at most p_limit orders per call, earliest deadline first, the rest next call.
    assert call(owner, "expire_pending_orders", p_limit=1000) == 1000
    assert stock(gw, tt) == 100 - 1 + 1000 and violations(gw) == []

    # The rest while buyers reserve and cancel holds of the same type on their own connections:
    # each reserve waits for the type at most its 2 s lock_timeout, so a type held through a long
    # expiry fails them with 55P03 (the one-by-one loop held it ~1.8 s for 4000 orders). A run
    # that finds the type held by a buyer skips it (SKIP LOCKED) and the next run takes it.
    buyers = [(connect(GATEWAY_ROLE), make_user(gw)) for _ in range(2)]
    stop = threading.Event()
    results: list[str] = []

    def buy(conn: psycopg.Connection, user: dict[str, Any]) -> None:
        while not stop.is_set():
            try:
                res = reserve(conn, user, tt, 1)
                call(conn, "cancel_reservation", p_user_id=user["id"], p_reservation_id=res["id"])
                results.append("ok")
            except psycopg.Error as exc:
                results.append(f"error {exc.diag.sqlstate}")
            time.sleep(0.02)

    threads = [threading.Thread(target=buy, args=b) for b in buyers]
    for t in threads:
        t.start()
    try:
        while len(results) < 4:
            time.sleep(0.01)
        runs, expired = 0, 0
        while expired < overdue - 1000:
            runs += 1
            assert runs < 500, f"{expired} expired after {runs} runs"
            got = call(owner, "expire_pending_orders")
            assert got in (0, overdue - 1000), got  # the type held by a buyer right now, or all of it
            expired += got
            time.sleep(0.0 if got else 0.03)
        done_at = len(results)
        while len(results) < done_at + 4:
            time.sleep(0.01)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert set(results) == {"ok"}, [r for r in results if r != "ok"][:5]
    assert call(owner, "expire_pending_orders") == 0
    assert count(owner, "SELECT count(*) FROM orders WHERE status = 'TIMEOUT'") == overdue
    assert state(owner, fresh["id"])["order"] == "PENDING"
    assert count(owner, "SELECT count(*) FROM payments WHERE status = 'FAILED'") == overdue
    assert stock(gw, tt) == overdue + 100 - 1 and violations(gw) == []


def test_an_overdue_order_over_two_types_expires_once_both_can_be_locked(
    gw: psycopg.Connection, owner: psycopg.Connection, connect: Connect
) -> None:
    """Checkout makes single-type orders today; an order over several types must still expire
    (the old expiry skipped it for ever)."""
    call(owner, "set_payment_mode", p_mode="provider")
    first, second = make_ticket_type(gw, quantity=5), make_ticket_type(gw, quantity=5)
    order = checkout(gw, first, 2)
    owner.execute(
        "INSERT INTO order_items (order_id, ticket_type_id, quantity, unit_price) SELECT %s, id, 1, price"
        "  FROM ticket_types WHERE id = %s",
        (order["id"], second["id"]),
    )
    owner.execute("UPDATE ticket_types SET available_quantity = available_quantity - 1 WHERE id = %s", (second["id"],))
    owner.execute(
        "UPDATE orders SET total_amount = total_amount + 150000, payment_deadline = now() - interval '1 second'"
        " WHERE id = %s",
        (order["id"],),
    )
    owner.execute("UPDATE payments SET amount = amount + 150000 WHERE order_id = %s", (order["id"],))
    other = checkout(gw, first, 1)
    owner.execute("UPDATE orders SET payment_deadline = now() - interval '1 second' WHERE id = %s", (other["id"],))
    assert violations(gw) == []
    # Someone holds the second type right now: the order waits for a later run, never half done.
    holder = connect(OWNER_ROLE, autocommit=False)
    holder.execute("SELECT 1 FROM ticket_types WHERE id = %s FOR NO KEY UPDATE", (second["id"],))
    assert call(owner, "expire_pending_orders") == 1  # the single-type one
    assert state(owner, order["id"])["order"] == "PENDING" and state(owner, other["id"])["order"] == "TIMEOUT"
    holder.rollback()
    assert call(owner, "expire_pending_orders") == 1
    assert state(owner, order["id"])["order"] == "TIMEOUT"
    assert stock(gw, first) == 5 and stock(gw, second) == 5 and violations(gw) == []


# Refused money ----------------------------------------------------------------------------------------


def test_a_verified_wrong_amount_is_refunded_and_changes_no_seats(
    gw: psycopg.Connection, owner: psycopg.Connection, connect: Connect
) -> None:
    call(owner, "set_payment_mode", p_mode="provider")
    worker = connect(WORKER_ROLE)
    tt = make_ticket_type(gw, quantity=5, price="100000.00")
    order = checkout(gw, tt, 2, "MOMO")
    answer = pay(gw, order, amount=1000, provider_txn="W-1")
    assert answer["outcome"] == "wrong_amount" and answer["order_id"] == order["id"]
    assert state(owner, order["id"])["order"] == "PENDING" and state(owner, order["id"])["tickets"] == 0
    assert stock(gw, tt) == 3
    [job] = jobs(owner, "refund_payment")
    assert job["queue"] == "payments" and job["args"] == {"refund_id": answer["refund_id"]}
    request = call(worker, "refund_request", p_refund_id=answer["refund_id"])
    assert (request["reason"], request["amount_vnd"], request["provider_txn_id"]) == ("wrong_amount", 1000, "W-1")
    assert request["provider"] == "MOMO" and request["transaction_id"] == order["payment"]["transaction_id"]
    # The provider sends it again: one refund.
    assert pay(gw, order, amount=1000, provider_txn="W-1")["outcome"] == "duplicate"
    assert len(jobs(owner, "refund_payment")) == 1
    # A second wrong amount is refunded too, and the right money still pays the order.
    second = pay(gw, order, amount=5, provider_txn="W-2")
    assert second["outcome"] == "wrong_amount" and second["refund_id"] != answer["refund_id"]
    assert pay(gw, order, provider_txn="W-3")["outcome"] == "paid"
    assert stock(gw, tt) == 3 and violations(gw) == []
    # A wrong amount's refund done leaves the order as it is (PAID, or REFUND_PENDING for its own
    # refund): the order's own refund is separate.
    call(worker, "record_refund", p_refund_id=answer["refund_id"], p_ok=True, p_provider_ref="r-1", p_error=None)
    assert state(owner, order["id"])["order"] == "PAID"
    assert call(gw, "refund_order", p_order_id=order["id"])["status"] == "REFUND_PENDING"
    call(worker, "record_refund", p_refund_id=second["refund_id"], p_ok=True, p_provider_ref="r-2", p_error=None)
    assert state(owner, order["id"])["order"] == "REFUND_PENDING" and violations(gw) == []
    reasons = owner.execute("SELECT reason, amount FROM payment_refunds ORDER BY created_at, reason").fetchall()
    assert sorted(reasons) == sorted([("wrong_amount", 1000), ("wrong_amount", 5), ("admin", 200000)])
    assert owner.execute("SELECT count(*) FROM api.unresolved_payments()").fetchone() == (0,)


def test_unknown_references_and_amountless_money_wait_for_a_dba(gw: psycopg.Connection,
                                                                owner: psycopg.Connection) -> None:  # fmt: skip
    call(owner, "set_payment_mode", p_mode="provider")
    tt = make_ticket_type(gw, quantity=5)
    order = checkout(gw, tt, 1, "MOMO")
    forged = {**order, "payment": {**order["payment"], "transaction_id": "BKNOSUCHORDER"}}
    assert pay(gw, forged, provider_txn="U-1")["outcome"] == "unknown_reference"
    assert pay(gw, forged, provider_txn="U-2", success=False)["outcome"] == "unknown_reference"  # no money
    no_amount = call(gw, "apply_payment_event", p_provider="MOMO", p_provider_txn_id="U-3",
                     p_transaction_id=order["payment"]["transaction_id"], p_amount=None, p_success=True,
                     p_raw=None)  # fmt: skip
    assert no_amount["outcome"] == "wrong_amount" and "refund_id" not in no_amount
    unresolved = "SELECT id, provider_txn_id, outcome, order_id::text FROM api.unresolved_payments()"
    rows = owner.execute(unresolved).fetchall()
    assert [r[1:] for r in rows] == [("U-1", "unknown_reference", None), ("U-3", "wrong_amount", order["id"])]
    assert sqlstate_of(owner, "resolve_payment_event", p_event_id=rows[0][0], p_note=" ") == "BKVAL"
    assert sqlstate_of(owner, "resolve_payment_event", p_event_id=-1, p_note="x") == "BKNTF"
    settled = call(owner, "resolve_payment_event", p_event_id=rows[0][0], p_note="returned via the MoMo portal")
    assert settled["resolved_note"] == "returned via the MoMo portal"
    left = owner.execute("SELECT provider_txn_id FROM api.unresolved_payments()").fetchall()
    assert left == [("U-3",)]
    assert state(owner, order["id"])["order"] == "PENDING" and jobs(owner, "refund_payment") == []
    assert violations(gw) == []
    for dba_only in ("SELECT * FROM api.unresolved_payments()", "SELECT api.resolve_payment_event(1, 'x')"):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            gw.execute(dba_only)


@pytest.mark.parametrize(
    ("reference", "provider_txn", "amount", "success"),
    [
        (None, "N-1", 1000, True),  # NULL passed the length check before
        (None, "N-2", None, False),  # a failure with no reference escaped the inbox's unique index
        ("", "N-3", 1000, True),
        ("x" * 256, "N-4", 1000, True),
        ("BK1", "N-5", -1, True),
        ("BK1", "N-6", 10**12, True),
        ("BK1", None, 1000, True),
    ],
)
def test_bad_references_and_amounts_are_refused(gw: psycopg.Connection, owner: psycopg.Connection, reference: Any,
                                                provider_txn: Any, amount: Any, success: bool) -> None:  # fmt: skip
    args = {"p_provider": "MOMO", "p_provider_txn_id": provider_txn, "p_transaction_id": reference,
            "p_amount": amount, "p_success": success, "p_raw": None}  # fmt: skip
    assert sqlstate_of(gw, "apply_payment_event", **args) == "BKVAL"
    assert sqlstate_of(gw, "apply_payment_event", **args) == "BKVAL"  # twice: nothing recorded either time
    assert owner.execute("SELECT count(*) FROM payment_events").fetchone() == (0,)
