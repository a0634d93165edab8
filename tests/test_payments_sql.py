"""Provider payments, the SQL side (sql/functions/95_payments.sql): checkout into a PENDING order,
provider events applied once from the inbox, late payments, expiry, the buyer's cancel, refunds,
event cancellation, the payment mode, and THE RACE between a success callback and the expiry job
on real concurrent connections. Real PostgreSQL, no mocks."""

from __future__ import annotations

import re
import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest

from dbctl.migrate import GATEWAY_ROLE, OWNER_ROLE, WORKER_ROLE
from tests.conftest import call, sqlstate_of
from tests.factories import make_event, make_ticket_type, make_user, reserve, stock, violations

Connect = Callable[..., psycopg.Connection]
MISSING = "00000000-0000-0000-0000-000000000000"
TXN_FORMS = {
    "MOMO": r"BK[0-9A-F]{24}",
    "ZALOPAY": r"\d{6}_[0-9A-F]{24}",
    "BANKING": r"TXN-[0-9A-F]{24}",
    "CARD": r"TXN-[0-9A-F]{24}",
}


@pytest.fixture
def provider_mode(owner: psycopg.Connection) -> None:
    call(owner, "set_payment_mode", p_mode="provider")


def checkout(gw: psycopg.Connection, tt: dict[str, Any], quantity: int = 1, method: str = "MOMO",
             user: dict[str, Any] | None = None) -> Any:  # fmt: skip
    user = user or make_user(gw)
    res = reserve(gw, user, tt, quantity)
    order = call(gw, "checkout", p_user_id=user["id"], p_reservation_id=res["id"], p_payment_method=method)
    order["user"] = user
    return order


def pay(conn: psycopg.Connection, order: dict[str, Any], success: bool = True, provider_txn: str | None = None,
        amount: Any = None, provider: str | None = None) -> Any:  # fmt: skip
    payment = order["payment"]
    return call(
        conn,
        "apply_payment_event",
        p_provider=provider or payment["method"],
        p_provider_txn_id=provider_txn or f"P-{order['id']}",
        p_transaction_id=payment["transaction_id"],
        p_amount=amount if amount is not None else round(float(payment["amount"])),
        p_success=success,
        p_raw=psycopg.types.json.Jsonb({"test": True}),
    )


def state(owner: psycopg.Connection, order_id: str) -> dict[str, Any]:
    row = owner.execute(
        "SELECT o.status, p.status, p.provider_txn_id, o.seats_kept,"
        "       (SELECT count(*) FROM tickets t WHERE t.order_id = o.id),"
        "       (SELECT count(*) FROM tickets t WHERE t.order_id = o.id AND t.status = 'UNUSED')"
        "  FROM orders o JOIN payments p ON p.order_id = o.id WHERE o.id = %s",
        (order_id,),
    ).fetchone()
    assert row is not None
    keys = ("order", "payment", "provider_txn_id", "seats_kept", "tickets", "unused")
    return dict(zip(keys, row, strict=True))


def jobs(owner: psycopg.Connection, task: str) -> list[dict[str, Any]]:
    rows = owner.execute(
        "SELECT id, queue_name, priority, args FROM procrastinate_jobs WHERE task_name = %s ORDER BY id", (task,)
    ).fetchall()
    return [dict(zip(("id", "queue", "priority", "args"), r, strict=True)) for r in rows]


def settle_cancel(conn: psycopg.Connection, event_id: str, limit: int = 200) -> list[dict[str, Any]]:
    """What the refund_cancelled_event job does: batches until none is left; the batches."""
    batches = []
    while True:
        batches.append(call(conn, "refund_cancelled_event", p_event_id=event_id, p_limit=limit))
        if batches[-1]["remaining"] == 0:
            return batches
        assert len(batches) < 1000, batches[-3:]


def expire_now(owner: psycopg.Connection, order_id: str) -> None:
    """The payment deadline passes (instead of waiting 15 minutes)."""
    owner.execute("UPDATE orders SET payment_deadline = now() - interval '1 second' WHERE id = %s", (order_id,))


# The mode ------------------------------------------------------------------------------------


def test_instant_is_the_default_and_provider_mode_refuses_complete(gw: psycopg.Connection,
                                                                   owner: psycopg.Connection) -> None:  # fmt: skip
    assert call(owner, "payment_mode")["mode"] == "instant"
    user, tt = make_user(gw), make_ticket_type(gw)
    res = reserve(gw, user, tt)
    assert call(owner, "set_payment_mode", p_mode="provider")["mode"] == "provider"
    args = {"p_user_id": user["id"], "p_reservation_id": res["id"], "p_payment_method": "CARD"}
    assert sqlstate_of(gw, "complete_booking", **args) == "BKPRQ"
    assert sqlstate_of(gw, "complete_booking", **args, p_idempotency_key="k1") == "BKPRQ"
    assert owner.execute("SELECT count(*) FROM orders").fetchone() == (0,)
    call(owner, "set_payment_mode", p_mode="instant")
    assert call(gw, "complete_booking", **args)["status"] == "PAID"
    assert sqlstate_of(owner, "set_payment_mode", p_mode="free") == "BKVAL"
    assert sqlstate_of(owner, "set_payment_mode", p_mode="provider", p_payment_window="10 seconds") == "BKVAL"
    settings = call(owner, "set_payment_mode", p_mode="provider", p_payment_window="20 minutes")
    assert settings["payment_window"] == "00:20:00"


# Checkout --------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", sorted(TXN_FORMS))
def test_checkout_makes_a_pending_order_that_holds_its_seats(
    gw: psycopg.Connection, owner: psycopg.Connection, provider_mode: None, method: str
) -> None:
    tt = make_ticket_type(gw, quantity=10, price="150000.50")
    order = checkout(gw, tt, 3, method)
    payment = order["payment"]
    assert order["status"] == "PENDING" and order["tickets"] == [] and order["total_amount"] == "450001.50"
    assert payment["status"] == "PENDING" and payment["method"] == method and payment["amount"] == "450001.50"
    assert re.fullmatch(TXN_FORMS[method], payment["transaction_id"]), payment["transaction_id"]
    if method == "ZALOPAY":  # ZaloPay's app_trans_id starts with the date in Vietnam
        assert payment["transaction_id"][:6] == datetime.now(ZoneInfo("Asia/Ho_Chi_Minh")).strftime("%y%m%d")
    expires = datetime.fromisoformat(payment["expires_at"])
    assert 14 * 60 < (expires - datetime.fromisoformat(order["created_at"])).total_seconds() <= 15 * 60
    assert stock(gw, tt) == 7  # held -> pending: still off sale
    assert violations(gw) == []
    assert jobs(owner, "send_confirmation") == []
    assert call(gw, "get_order", p_user_id=order["user"]["id"], p_order_id=order["id"]) == {
        k: v for k, v in order.items() if k != "user"
    }
    # The hold is spent: a second checkout or a complete of it is refused.
    res_id = order["reservation_id"]
    assert sqlstate_of(gw, "checkout", p_user_id=order["user"]["id"], p_reservation_id=res_id,
                       p_payment_method=method) == "BKRNA"  # fmt: skip


def test_checkout_refuses_what_complete_refuses(gw: psycopg.Connection, provider_mode: None) -> None:
    user, other, tt = make_user(gw), make_user(gw), make_ticket_type(gw)
    res = reserve(gw, user, tt)
    assert (
        sqlstate_of(gw, "checkout", p_user_id=user["id"], p_reservation_id=res["id"], p_payment_method="CASH")
        == "BKVAL"
    )
    assert (
        sqlstate_of(gw, "checkout", p_user_id=other["id"], p_reservation_id=res["id"], p_payment_method="MOMO")
        == "BKNTF"
    )
    key = {
        "p_user_id": user["id"],
        "p_reservation_id": res["id"],
        "p_payment_method": "MOMO",
        "p_idempotency_key": "c1",
    }
    first = call(gw, "checkout", **key)
    assert call(gw, "checkout", **key) == first  # the same answer, one order
    assert sqlstate_of(gw, "checkout", **{**key, "p_payment_method": "CARD"}) == "BKIDR"


# Callbacks ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", sorted(TXN_FORMS))
def test_success_pays_issues_tickets_and_one_confirmation_once(
    gw: psycopg.Connection, owner: psycopg.Connection, provider_mode: None, method: str
) -> None:
    tt = make_ticket_type(gw, quantity=5)
    order = checkout(gw, tt, 2, method)
    assert pay(gw, order, provider_txn="ZP-1") == {"outcome": "paid", "order_id": order["id"]}
    assert state(owner, order["id"]) == {"order": "PAID", "payment": "SUCCESS", "provider_txn_id": "ZP-1",
                                         "seats_kept": False, "tickets": 2, "unused": 2}  # fmt: skip
    [job] = jobs(owner, "send_confirmation")
    assert job["args"] == {"order_id": order["id"]}
    assert stock(gw, tt) == 3 and violations(gw) == []
    # The provider calls again (same transaction): acknowledged, nothing changes.
    again = pay(gw, order, provider_txn="ZP-1")
    assert again == {"outcome": "duplicate", "order_id": order["id"], "first_outcome": "paid"}
    assert state(owner, order["id"])["tickets"] == 2 and len(jobs(owner, "send_confirmation")) == 1
    assert owner.execute("SELECT count(*), min(outcome) FROM payment_events").fetchone() == (1, "paid")
    seen = call(gw, "get_order", p_user_id=order["user"]["id"], p_order_id=order["id"])
    assert seen["status"] == "PAID" and len(seen["tickets"]) == 2 and seen["payment"]["status"] == "SUCCESS"


def test_failure_cancels_and_returns_the_seats(gw: psycopg.Connection, owner: psycopg.Connection,
                                               provider_mode: None) -> None:  # fmt: skip
    tt = make_ticket_type(gw, quantity=5)
    order = checkout(gw, tt, 2, "BANKING")
    assert pay(gw, order, success=False, provider_txn="B-9")["outcome"] == "cancelled"
    assert state(owner, order["id"])["order"] == "CANCELLED" and state(owner, order["id"])["payment"] == "FAILED"
    assert stock(gw, tt) == 5 and violations(gw) == []
    assert pay(gw, order, success=False, provider_txn="B-9")["outcome"] == "duplicate"
    # A failure for another order with the same provider id (MoMo sends transId 0 for failures)
    # is its own event.
    other = checkout(gw, tt, 1, "BANKING")
    assert pay(gw, other, success=False, provider_txn="B-9")["outcome"] == "cancelled"
    assert stock(gw, tt) == 5 and violations(gw) == []


def test_wrong_amount_and_unknown_reference_are_recorded_and_change_nothing(
    gw: psycopg.Connection, owner: psycopg.Connection, provider_mode: None
) -> None:
    tt = make_ticket_type(gw, quantity=5, price="100000.00")
    order = checkout(gw, tt, 1, "MOMO")
    assert pay(gw, order, amount=1000, provider_txn="M-1")["outcome"] == "wrong_amount"
    assert pay(gw, order, provider="ZALOPAY", provider_txn="M-2")["outcome"] == "unknown_reference"
    forged = {**order, "payment": {**order["payment"], "transaction_id": "BKNOSUCHORDER"}}
    assert pay(gw, forged, provider_txn="M-3") == {"outcome": "unknown_reference", "order_id": None}
    assert state(owner, order["id"])["order"] == "PENDING" and state(owner, order["id"])["tickets"] == 0
    assert stock(gw, tt) == 4 and violations(gw) == [] and jobs(owner, "send_confirmation") == []
    inbox = owner.execute("SELECT provider_txn_id, outcome, raw FROM payment_events ORDER BY id").fetchall()
    assert [r[:2] for r in inbox] == [
        ("M-1", "wrong_amount"),
        ("M-2", "unknown_reference"),
        ("M-3", "unknown_reference"),
    ]
    assert inbox[0][2] == {"test": True}
    # The real payment still goes through.
    assert pay(gw, order, provider_txn="M-4")["outcome"] == "paid"
    assert sqlstate_of(gw, "apply_payment_event", p_provider="PAYPAL", p_provider_txn_id="x",
                       p_transaction_id="y", p_amount=1, p_success=True, p_raw=None) == "BKVAL"  # fmt: skip
    assert sqlstate_of(gw, "apply_payment_event", p_provider="MOMO", p_provider_txn_id="",
                       p_transaction_id="y", p_amount=1, p_success=True, p_raw=None) == "BKVAL"  # fmt: skip


def test_a_second_payment_of_a_paid_order_is_refunded_and_the_order_stays_paid(
    gw: psycopg.Connection, owner: psycopg.Connection, provider_mode: None
) -> None:
    tt = make_ticket_type(gw, quantity=5)
    order = checkout(gw, tt, 1, "CARD")
    pay(gw, order, provider_txn="C-1")
    assert pay(gw, order, provider_txn="C-2")["outcome"] == "refund_pending"
    assert state(owner, order["id"])["order"] == "PAID"
    refunds = owner.execute("SELECT reason, provider_txn_id, status FROM payment_refunds").fetchall()
    assert refunds == [("duplicate", "C-2", "PENDING")]
    assert len(jobs(owner, "refund_payment")) == 1 and violations(gw) == []


# Expiry and late payments --------------------------------------------------------------------------


def test_expiry_times_out_unpaid_orders_and_returns_their_seats(
    gw: psycopg.Connection, owner: psycopg.Connection, provider_mode: None
) -> None:
    tt = make_ticket_type(gw, quantity=5)
    late, fresh = checkout(gw, tt, 2), checkout(gw, tt, 1)
    expire_now(owner, late["id"])
    assert call(owner, "expire_pending_orders") == 1
    assert state(owner, late["id"])["order"] == "TIMEOUT" and state(owner, fresh["id"])["order"] == "PENDING"
    assert stock(gw, tt) == 4 and violations(gw) == []
    assert call(owner, "expire_pending_orders") == 0


def test_a_late_success_with_seats_left_pays(gw: psycopg.Connection, owner: psycopg.Connection,
                                             provider_mode: None) -> None:  # fmt: skip
    tt = make_ticket_type(gw, quantity=3)
    order = checkout(gw, tt, 2)
    expire_now(owner, order["id"])
    call(owner, "expire_pending_orders")
    assert stock(gw, tt) == 3
    assert pay(gw, order)["outcome"] == "late_paid"
    assert state(owner, order["id"])["order"] == "PAID" and state(owner, order["id"])["tickets"] == 2
    assert stock(gw, tt) == 1 and violations(gw) == [] and len(jobs(owner, "send_confirmation")) == 1


def test_a_success_past_the_deadline_before_the_expiry_pays_with_its_own_seats(
    gw: psycopg.Connection, owner: psycopg.Connection, provider_mode: None
) -> None:
    tt = make_ticket_type(gw, quantity=2)
    order = checkout(gw, tt, 2)
    expire_now(owner, order["id"])
    assert pay(gw, order)["outcome"] == "late_paid"
    assert state(owner, order["id"])["order"] == "PAID" and stock(gw, tt) == 0 and violations(gw) == []
    assert call(owner, "expire_pending_orders") == 0


def test_a_late_success_without_seats_is_refunded_never_oversold(
    gw: psycopg.Connection, owner: psycopg.Connection, provider_mode: None
) -> None:
    tt = make_ticket_type(gw, quantity=2)
    order = checkout(gw, tt, 2)
    expire_now(owner, order["id"])
    call(owner, "expire_pending_orders")
    rival = checkout(gw, tt, 1)  # someone else takes one of the released seats
    assert pay(gw, order, provider_txn="LATE-1")["outcome"] == "refund_pending"
    assert state(owner, order["id"]) == {"order": "REFUND_PENDING", "payment": "SUCCESS", "provider_txn_id": "LATE-1",
                                         "seats_kept": False, "tickets": 0, "unused": 0}  # fmt: skip
    [job] = jobs(owner, "refund_payment")
    assert job["queue"] == "payments" and job["priority"] == 90
    [(refund_id, reason, amount)] = owner.execute("SELECT id::text, reason, amount FROM payment_refunds").fetchall()
    assert job["args"] == {"refund_id": refund_id} and reason == "late_no_seats" and amount == 300000
    assert stock(gw, tt) == 1 and violations(gw) == [] and jobs(owner, "send_confirmation") == []
    assert pay(gw, rival)["outcome"] == "paid"
    assert stock(gw, tt) == 1 and violations(gw) == []


def refund_reasons(owner: psycopg.Connection, order_id: str) -> list[str]:
    return [r for (r,) in owner.execute("SELECT reason FROM payment_refunds WHERE order_id = %s", (order_id,))]


def test_a_late_success_that_would_pass_the_type_cap_is_refunded(
    gw: psycopg.Connection, owner: psycopg.Connection, provider_mode: None
) -> None:
    """The buyer's cap (issue 9) holds for late payments too: while the order was TIMEOUT the
    buyer held other seats; re-taking the order's seats would pass the cap, so the money goes back
    even though the seats are there. Once the other seats are gone, a late payment pays."""
    tt = make_ticket_type(gw, quantity=10, p_max_per_user=3)
    order = checkout(gw, tt, 2)
    buyer = order["user"]
    expire_now(owner, order["id"])
    call(owner, "expire_pending_orders")
    reserve(gw, buyer, tt, 2)  # allowed: the TIMEOUT order does not count
    assert pay(gw, order, provider_txn="CAP-1")["outcome"] == "refund_pending"
    assert state(owner, order["id"])["order"] == "REFUND_PENDING" and state(owner, order["id"])["tickets"] == 0
    assert refund_reasons(owner, order["id"]) == ["late_over_cap"]
    assert stock(gw, tt) == 8 and violations(gw) == []  # only the buyer's new hold is off sale
    assert len(jobs(owner, "refund_payment")) == 1 and jobs(owner, "send_confirmation") == []

    # Within the cap (1 other seat + 2 = 3): the late payment pays.
    second = checkout(gw, tt, 2, user=make_user(gw))
    reserve(gw, second["user"], tt, 1)
    expire_now(owner, second["id"])
    call(owner, "expire_pending_orders")
    assert pay(gw, second, provider_txn="CAP-2")["outcome"] == "late_paid"
    assert state(owner, second["id"])["order"] == "PAID" and violations(gw) == []


def test_a_late_success_that_would_pass_the_event_cap_is_refunded(
    gw: psycopg.Connection, owner: psycopg.Connection, provider_mode: None
) -> None:
    event = make_event(gw, publish=False, p_max_tickets_per_user=3)
    a, b = (call(gw, "create_ticket_type", p_event_id=event["id"], p_name=n, p_price="10.00", p_initial_quantity=20)
            for n in ("A", "B"))  # fmt: skip
    call(gw, "publish_event", p_event_id=event["id"])
    order = checkout(gw, a, 2)
    expire_now(owner, order["id"])
    call(owner, "expire_pending_orders")
    other = checkout(gw, b, 2, user=order["user"])  # another type of the event, PENDING: it counts
    assert pay(gw, order, provider_txn="ECAP-1")["outcome"] == "refund_pending"
    assert refund_reasons(owner, order["id"]) == ["late_over_cap"]
    assert stock(gw, a) == 20 and stock(gw, b) == 18 and violations(gw) == []
    assert pay(gw, other, provider_txn="ECAP-2")["outcome"] == "paid"


def test_a_success_after_the_buyer_cancelled_is_a_late_payment(
    gw: psycopg.Connection, owner: psycopg.Connection, provider_mode: None
) -> None:
    tt = make_ticket_type(gw, quantity=2)
    order = checkout(gw, tt, 1)
    user = order["user"]
    assert sqlstate_of(gw, "cancel_order", p_user_id=make_user(gw)["id"], p_order_id=order["id"]) == "BKNTF"
    assert sqlstate_of(gw, "cancel_order", p_user_id=user["id"], p_order_id=MISSING) == "BKNTF"
    assert call(gw, "cancel_order", p_user_id=user["id"], p_order_id=order["id"])["status"] == "CANCELLED"
    assert call(gw, "cancel_order", p_user_id=user["id"], p_order_id=order["id"])["status"] == "CANCELLED"
    assert stock(gw, tt) == 2 and violations(gw) == []
    assert pay(gw, order)["outcome"] == "late_paid"
    assert sqlstate_of(gw, "cancel_order", p_user_id=user["id"], p_order_id=order["id"]) == "BKOST"
    assert stock(gw, tt) == 1 and violations(gw) == []


def test_get_order_is_the_owners_only(gw: psycopg.Connection, provider_mode: None) -> None:
    order = checkout(gw, make_ticket_type(gw))
    assert sqlstate_of(gw, "get_order", p_user_id=make_user(gw)["id"], p_order_id=order["id"]) == "BKNTF"
    assert sqlstate_of(gw, "get_order", p_user_id=order["user"]["id"], p_order_id=MISSING) == "BKNTF"


# Refunds and event cancellation --------------------------------------------------------------------


def test_admin_refund_then_the_workers_record(gw: psycopg.Connection, owner: psycopg.Connection,
                                              connect: Connect, provider_mode: None) -> None:  # fmt: skip
    worker = connect(WORKER_ROLE)
    admin = make_user(gw, role="admin")
    call(gw, "create_webhook", p_user_id=admin["id"], p_url="https://hooks.example.com/b",
         p_events=["order.refunded"], p_event_id=None)  # fmt: skip
    tt = make_ticket_type(gw, quantity=4)
    order = checkout(gw, tt, 2, "ZALOPAY")
    pay(gw, order, provider_txn="zp-77")
    assert sqlstate_of(gw, "refund_order", p_order_id=MISSING) == "BKNTF"
    refunded = call(gw, "refund_order", p_order_id=order["id"])
    assert refunded["status"] == "REFUND_PENDING" and {t["status"] for t in refunded["tickets"]} == {"CANCELLED"}
    assert stock(gw, tt) == 4 and violations(gw) == []
    assert call(gw, "refund_order", p_order_id=order["id"])["status"] == "REFUND_PENDING"  # idempotent
    [job] = jobs(owner, "refund_payment")
    refund_id = job["args"]["refund_id"]
    request = call(worker, "refund_request", p_refund_id=refund_id)
    assert request["provider"] == "ZALOPAY" and request["provider_txn_id"] == "zp-77"
    assert request["transaction_id"] == order["payment"]["transaction_id"] and request["amount_vnd"] == 300000
    assert request["status"] == "PENDING" and request["reason"] == "admin"
    # The provider failed once: counted, the order waits.
    failed = call(worker, "record_refund", p_refund_id=refund_id, p_ok=False, p_provider_ref=None, p_error="timeout")
    assert failed["attempts"] == 1 and state(owner, order["id"])["order"] == "REFUND_PENDING"
    stuck = owner.execute("SELECT refund_id::text, attempts, last_error FROM api.stuck_refunds('0 seconds')").fetchall()
    assert stuck == [(refund_id, 1, "timeout")]
    done = call(worker, "record_refund", p_refund_id=refund_id, p_ok=True, p_provider_ref="zp-r-1", p_error=None)
    assert done["status"] == "DONE" and done["provider_ref"] == "zp-r-1"
    assert state(owner, order["id"])["order"] == "REFUNDED" and state(owner, order["id"])["payment"] == "REFUNDED"
    assert call(worker, "record_refund", p_refund_id=refund_id, p_ok=True, p_provider_ref="again", p_error=None) == done
    [(event_type, body)] = owner.execute("SELECT event_type, body FROM webhook_deliveries").fetchall()
    assert event_type == "order.refunded" and order["id"] in body
    assert violations(gw) == []
    assert sqlstate_of(gw, "refund_order", p_order_id=order["id"]) is None  # REFUNDED: returned unchanged
    pending = checkout(gw, tt, 1)
    assert sqlstate_of(gw, "refund_order", p_order_id=pending["id"]) == "BKOST"
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        gw.execute("SELECT api.record_refund(%s, true)", (refund_id,))


def test_refund_after_the_event_started_keeps_the_seats_off_sale(
    gw: psycopg.Connection, owner: psycopg.Connection, provider_mode: None
) -> None:
    tt = make_ticket_type(gw, quantity=4)
    order = checkout(gw, tt, 2)
    pay(gw, order)
    owner.execute("UPDATE events SET start_time = now() - interval '1 hour' WHERE id = %s", (tt["event_id"],))
    call(gw, "refund_order", p_order_id=order["id"])
    assert state(owner, order["id"])["seats_kept"] is True
    assert stock(gw, tt) == 2 and violations(gw) == []


def test_cancelling_an_event_refunds_its_paid_orders_and_cancels_pending_ones(
    gw: psycopg.Connection, owner: psycopg.Connection, connect: Connect, provider_mode: None
) -> None:
    tt = make_ticket_type(gw, quantity=10)
    paid = [checkout(gw, tt, 2) for _ in range(3)]
    for order in paid:
        pay(gw, order)
    waiting = checkout(gw, tt, 1)
    other_tt = make_ticket_type(gw, quantity=10)
    untouched = checkout(gw, other_tt, 1)
    pay(gw, untouched)
    call(gw, "cancel_event", p_event_id=tt["event_id"])
    # The cancel only flips the status and queues one job; the job's batches do the orders.
    assert {state(owner, o["id"])["order"] for o in paid} == {"PAID"}
    [job] = jobs(owner, "refund_cancelled_event")
    assert job["queue"] == "payments" and job["args"] == {"event_id": tt["event_id"]}
    assert violations(gw) == []
    batches = settle_cancel(connect(WORKER_ROLE), tt["event_id"], limit=2)
    # Two per batch, in id order (paid and pending mixed): 3 refunded and 1 cancelled in all.
    assert [b["refunded"] + b["cancelled"] for b in batches] == [2, 2]
    assert [b["remaining"] for b in batches] == [2, 0]
    assert sum(b["refunded"] for b in batches) == 3 and sum(b["cancelled"] for b in batches) == 1
    assert {state(owner, o["id"])["order"] for o in paid} == {"REFUND_PENDING"}
    assert all(state(owner, o["id"])["unused"] == 0 for o in paid)
    assert state(owner, waiting["id"])["order"] == "CANCELLED"
    assert state(owner, untouched["id"])["order"] == "PAID"
    refund_jobs = jobs(owner, "refund_payment")
    assert len(refund_jobs) == 3
    assert owner.execute("SELECT DISTINCT reason FROM payment_refunds").fetchall() == [("event_cancelled",)]
    assert stock(gw, tt) == 10 and violations(gw) == []
    call(gw, "cancel_event", p_event_id=tt["event_id"])  # again: its job is still queued, nothing more
    assert len(jobs(owner, "refund_payment")) == 3 and len(jobs(owner, "refund_cancelled_event")) == 1
    assert settle_cancel(owner, tt["event_id"]) == [
        {"event_id": tt["event_id"], "refunded": 0, "cancelled": 0, "remaining": 0}
    ]
    # The pending order's money arrives now: it goes back.
    assert pay(gw, waiting)["outcome"] == "refund_pending"
    assert state(owner, waiting["id"])["order"] == "REFUND_PENDING" and violations(gw) == []


def test_cancelling_an_event_refunds_instant_mode_orders_too(gw: psycopg.Connection, owner: psycopg.Connection) -> None:
    user, tt = make_user(gw), make_ticket_type(gw, quantity=3)
    res = reserve(gw, user, tt, 2)
    order = call(gw, "complete_booking", p_user_id=user["id"], p_reservation_id=res["id"], p_payment_method="CARD")
    call(gw, "cancel_event", p_event_id=tt["event_id"])
    settle_cancel(owner, tt["event_id"])
    assert state(owner, order["id"])["order"] == "REFUND_PENDING"
    assert stock(gw, tt) == 3 and violations(gw) == [] and len(jobs(owner, "refund_payment")) == 1


# The DBAs' views ----------------------------------------------------------------------------------


def test_dba_views(gw: psycopg.Connection, owner: psycopg.Connection, provider_mode: None) -> None:
    tt = make_ticket_type(gw, quantity=5)
    order = checkout(gw, tt, 1, "MOMO")
    rows = owner.execute("SELECT order_id::text, provider, overdue FROM api.pending_payments()").fetchall()
    assert rows == [(order["id"], "MOMO", False)]
    pay(gw, order, amount=1, provider_txn="X-1")
    inbox = owner.execute("SELECT provider_txn_id, outcome FROM api.payment_inbox(10, 'wrong_amount')").fetchall()
    assert inbox == [("X-1", "wrong_amount")]
    assert owner.execute("SELECT count(*) FROM api.stuck_refunds()").fetchone() == (0,)
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        gw.execute("SELECT api.set_payment_mode('instant')")


def test_the_worker_reconciles_through_the_same_inbox(gw: psycopg.Connection, owner: psycopg.Connection,
                                                      connect: Connect, provider_mode: None) -> None:  # fmt: skip
    worker = connect(WORKER_ROLE)
    tt = make_ticket_type(gw, quantity=5)
    order = checkout(gw, tt, 1, "MOMO")
    assert call(worker, "payments_to_reconcile", p_older_than="0 seconds", p_limit=10)[0]["order_id"] == order["id"]
    assert call(worker, "payments_to_reconcile", p_older_than="3 minutes", p_limit=10) == []
    payment = order["payment"]
    first = call(worker, "reconcile_payment", p_provider="MOMO", p_provider_txn_id="T-5",
                 p_transaction_id=payment["transaction_id"], p_amount=150000, p_success=True, p_raw=None)  # fmt: skip
    assert first["outcome"] == "paid"
    assert pay(gw, order, provider_txn="T-5")["outcome"] == "duplicate"  # the late callback of the same money
    assert state(owner, order["id"])["tickets"] == 1 and len(jobs(owner, "send_confirmation")) == 1


# THE RACE: the success callback and the expiry job at the same moment --------------------------------


def test_success_callback_and_expiry_race_200_times(
    gw: psycopg.Connection, owner: psycopg.Connection, connect: Connect, provider_mode: None
) -> None:
    """200 rounds on three real connections released together by a barrier: a success callback
    for an order past its deadline, the expiry job, and a rival buyer wanting the order's only
    seat (every other round). Every order ends PAID (its seats kept or re-taken) or REFUND_PENDING (the rival got the
    seat first), never TIMEOUT with money in, never both paid; no deadlock, no lock timeout."""
    rounds = 200
    conns = [connect(GATEWAY_ROLE), connect(OWNER_ROLE), connect(GATEWAY_ROLE)]
    setups = []
    for _ in range(rounds):
        tt = make_ticket_type(gw, quantity=1)
        order = checkout(gw, tt, 1, "MOMO")
        setups.append((tt, order, make_user(gw) if len(setups) % 2 == 0 else None))  # a rival every other round
    owner.execute("UPDATE orders SET payment_deadline = now() - interval '1 second' WHERE status = 'PENDING'")
    errors: list[str] = []
    outcomes: Counter[str] = Counter()

    def callback(conn: psycopg.Connection, tt: dict[str, Any], order: dict[str, Any], rival: dict[str, Any]) -> Any:
        return pay(conn, order)["outcome"]

    def expiry(conn: psycopg.Connection, tt: dict[str, Any], order: dict[str, Any], rival: dict[str, Any]) -> Any:
        return call(conn, "expire_pending_orders")

    def rival_reserve(conn: psycopg.Connection, tt: dict[str, Any], order: dict[str, Any],
                      rival: dict[str, Any]) -> Any:  # fmt: skip
        if rival is None:
            return "no rival"
        return sqlstate_of(conn, "reserve_tickets", p_user_id=rival["id"], p_ticket_type_id=tt["id"], p_quantity=1,
                           p_idempotency_key=None, p_admission_token=None)  # fmt: skip

    work = [callback, expiry, rival_reserve]
    with ThreadPoolExecutor(3) as pool:
        for tt, order, rival in setups:
            barrier = threading.Barrier(3)

            def run(i: int, tt: Any = tt, order: Any = order, rival: Any = rival, barrier: Any = barrier) -> Any:
                barrier.wait()
                try:
                    return work[i](conns[i], tt, order, rival)
                except psycopg.Error as exc:  # a deadlock or a lock timeout is a failure
                    errors.append(f"{work[i].__name__}: {exc.diag.sqlstate} {exc}")
                    return None

            callback_outcome, _, rival_state = list(pool.map(run, range(3)))
            outcomes[callback_outcome] += 1
            final = state(owner, order["id"])
            if callback_outcome in ("paid", "late_paid"):
                assert final["order"] == "PAID" and final["tickets"] == 1, (callback_outcome, final)
                assert rival_state in ("BKSLD", "no rival"), rival_state  # the only seat was the order's
            else:
                assert callback_outcome == "refund_pending" and rival is not None, callback_outcome
                assert final["order"] == "REFUND_PENDING" and final["tickets"] == 0, final
                assert rival_state is None  # the rival holds the seat
    assert errors == []
    assert set(outcomes) <= {"paid", "late_paid", "refund_pending"}, outcomes
    assert owner.execute("SELECT count(*) FROM orders WHERE status IN ('PENDING', 'TIMEOUT')").fetchone() == (0,)
    assert violations(gw) == []
    print("race outcomes:", dict(outcomes))


def together(connect: Connect, *work: Callable[[psycopg.Connection], Any]) -> list[Any]:
    """Run each piece of work on its own connection, released at once; errors are returned."""
    conns = [connect(GATEWAY_ROLE) for _ in work]
    barrier = threading.Barrier(len(work))

    def run(i: int) -> Any:
        barrier.wait()
        try:
            return work[i](conns[i])
        except psycopg.Error as exc:
            return f"error {exc.diag.sqlstate}"

    with ThreadPoolExecutor(len(work)) as pool:
        return list(pool.map(run, range(len(work))))


def test_the_same_callback_twice_at_once_applies_once(
    gw: psycopg.Connection, owner: psycopg.Connection, connect: Connect, provider_mode: None
) -> None:
    tt = make_ticket_type(gw, quantity=100)
    for n in range(30):
        order = checkout(gw, tt)
        outcomes = together(connect, lambda c, o=order: pay(c, o)["outcome"], lambda c, o=order: pay(c, o)["outcome"])
        assert sorted(outcomes) == ["duplicate", "paid"], outcomes
        assert state(owner, order["id"])["tickets"] == 1
        assert len(jobs(owner, "send_confirmation")) == n + 1
    assert violations(gw) == []


def test_a_success_and_the_buyers_cancel_at_once_end_paid(
    gw: psycopg.Connection, owner: psycopg.Connection, connect: Connect, provider_mode: None
) -> None:
    tt = make_ticket_type(gw, quantity=100)
    seen = Counter()
    for _ in range(30):
        order = checkout(gw, tt)
        user_id = order["user"]["id"]
        paid, cancelled = together(
            connect,
            lambda c, o=order: pay(c, o)["outcome"],
            lambda c, o=order, u=user_id: sqlstate_of(c, "cancel_order", p_user_id=u, p_order_id=o["id"]),
        )
        # Either the payment came first (the cancel is refused) or the cancel did (the money
        # then arrives late and re-takes the seat, which is still free).
        assert (paid, cancelled) in (("paid", "BKOST"), ("late_paid", None)), (paid, cancelled)
        assert state(owner, order["id"])["order"] == "PAID"
        seen[paid] += 1
    assert violations(gw) == [] and stock(gw, tt) == 70


def test_two_payments_of_one_order_and_an_event_cancel_at_once_never_deadlock(
    gw: psycopg.Connection, owner: psycopg.Connection, connect: Connect, provider_mode: None
) -> None:
    for _ in range(15):
        tt = make_ticket_type(gw, quantity=10)
        order, other = checkout(gw, tt), checkout(gw, tt)
        outcomes = together(
            connect,
            lambda c, o=order: pay(c, o, provider_txn=f"A-{o['id']}")["outcome"],
            lambda c, o=order: pay(c, o, provider_txn=f"B-{o['id']}")["outcome"],
            lambda c, o=other: pay(c, o)["outcome"],
            lambda c, t=tt: call(c, "cancel_event", p_event_id=t["event_id"])["status"],
        )
        assert not [o for o in outcomes if str(o).startswith("error")], outcomes
        settle_cancel(owner, tt["event_id"])
        # Whatever the order of events: nothing stays PAID in a cancelled event, every payment
        # is either refunded or pending refund, and the stock balances.
        assert state(owner, order["id"])["order"] == "REFUND_PENDING"
        # Paid then refunded by the cancel, or cancelled first and its money refunded on arrival.
        assert state(owner, other["id"])["order"] == "REFUND_PENDING" and outcomes[2] in ("paid", "refund_pending")
        assert owner.execute(
            "SELECT count(*) FROM payment_refunds WHERE order_id = %s", (order["id"],)
        ).fetchone() == (2,)  # fmt: skip
        assert stock(gw, tt) == 10
    assert violations(gw) == []
