"""Delivery, the SQL side (sql/functions/90_delivery.sql): jobs deferred in the changing
transaction, webhook deliveries, the worker's records, the webhook routes' functions, the DBAs'
job-queue functions, and what the worker's role may and may not do. Real PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from importlib.metadata import version
from typing import Any

import psycopg
import pytest
from procrastinate import App, PsycopgConnector
from procrastinate.schema import SchemaManager

from dbctl.migrate import GATEWAY_ROLE, MIGRATIONS, WORKER_ROLE
from tests.conftest import call, dba_call, sqlstate_of, url_for
from tests.factories import make_event, make_ticket_type, make_user, reserve
from worker.calls import WORKER_CALLS

MISSING = "00000000-0000-0000-0000-000000000000"
Connect = Callable[..., psycopg.Connection]


@pytest.fixture
def worker(connect: Connect) -> psycopg.Connection:
    """A connection as the worker's role (booking_worker)."""
    return connect(WORKER_ROLE)


def buy(gw: psycopg.Connection, tt: dict[str, Any], quantity: int = 1, user: dict[str, Any] | None = None) -> Any:
    user = user or make_user(gw)
    res = reserve(gw, user, tt, quantity)
    order = call(gw, "complete_booking", p_user_id=user["id"], p_reservation_id=res["id"], p_payment_method="CARD")
    order["user"] = user
    return order


def jobs(owner: psycopg.Connection, task: str | None = None) -> list[dict[str, Any]]:
    rows = owner.execute(
        "SELECT id, queue_name, task_name, priority, lock, args, status::text AS status, attempts"
        "  FROM procrastinate_jobs WHERE %(task)s::text IS NULL OR task_name = %(task)s ORDER BY id",
        {"task": task},
    )
    names = [c.name for c in rows.description or []]
    return [dict(zip(names, row, strict=True)) for row in rows.fetchall()]


def deliveries(owner: psycopg.Connection, webhook_id: str | None = None) -> list[dict[str, Any]]:
    rows = owner.execute(
        "SELECT d.id::text, d.webhook_id::text, d.notification_id::text, d.event_type, d.body, d.status,"
        "       d.attempts, d.job_id, d.delivered_at"
        "  FROM webhook_deliveries d WHERE %(w)s::uuid IS NULL OR d.webhook_id = %(w)s::uuid"
        " ORDER BY d.created_at, d.id",
        {"w": webhook_id},
    )
    names = [c.name for c in rows.description or []]
    return [dict(zip(names, row, strict=True)) for row in rows.fetchall()]


def webhook(gw: psycopg.Connection, admin: dict[str, Any], events: list[str], event_id: str | None = None) -> Any:
    return call(gw, "create_webhook", p_user_id=admin["id"], p_url="https://hooks.example.com/booking",
                p_events=events, p_event_id=event_id)  # fmt: skip


# The queue itself -------------------------------------------------------------------------


def test_the_procrastinate_migration_is_the_installed_schema_verbatim() -> None:
    text = (MIGRATIONS / "0008_procrastinate.sql").read_text()
    header, marker, schema = text.partition(
        f"-- ---- procrastinate {version('procrastinate')} schema.sql, verbatim below this line ----\n"
    )
    assert marker, "the marker line names another procrastinate version than the installed one: add a migration"
    assert all(line.startswith("--") for line in header.splitlines())
    assert schema == SchemaManager.get_schema()


def test_a_completed_order_defers_one_confirmation_job_and_its_row(
    gw: psycopg.Connection, owner: psycopg.Connection
) -> None:
    tt = make_ticket_type(gw)
    assert jobs(owner) == []
    order = buy(gw, tt, 2)
    [job] = jobs(owner)
    assert job["queue_name"] == "mail" and job["task_name"] == "send_confirmation" and job["priority"] == 100
    assert job["args"] == {"order_id": order["id"]} and job["lock"] == f"mail:{order['id']}"
    assert job["status"] == "todo" and job["attempts"] == 0
    row = owner.execute(
        "SELECT kind, recipient, job_id, attempts, sent_at, message_id FROM order_emails WHERE order_id = %s",
        (order["id"],),
    ).fetchall()
    assert row == [("confirmation", order["user"]["email"], job["id"], 0, None, None)]
    # No webhooks: nothing else was written.
    assert deliveries(owner) == []


def test_an_idempotent_replay_defers_nothing_more(gw: psycopg.Connection, owner: psycopg.Connection) -> None:
    user, tt = make_user(gw), make_ticket_type(gw)
    res = reserve(gw, user, tt)
    args = {
        "p_user_id": user["id"],
        "p_reservation_id": res["id"],
        "p_payment_method": "CARD",
        "p_idempotency_key": "k-1",
    }
    first = call(gw, "complete_booking", **args)
    assert call(gw, "complete_booking", **args) == first
    assert len(jobs(owner)) == 1
    assert owner.execute("SELECT count(*) FROM order_emails").fetchone() == (1,)


def test_a_rolled_back_completion_leaves_no_job_and_no_row(connect: Connect, owner: psycopg.Connection) -> None:
    gw = connect(GATEWAY_ROLE)
    user, tt = make_user(gw), make_ticket_type(gw)
    res = reserve(gw, user, tt)
    txn = connect(GATEWAY_ROLE, autocommit=False)
    order = call(txn, "complete_booking", p_user_id=user["id"], p_reservation_id=res["id"], p_payment_method="CARD")
    assert call(txn, "my_bookings", p_user_id=user["id"])[0]["id"] == order["id"]  # it was there, in the transaction
    txn.rollback()
    assert jobs(owner) == []
    assert owner.execute("SELECT count(*) FROM order_emails").fetchone() == (0,)
    assert call(gw, "my_bookings", p_user_id=user["id"]) == []
    # The same completion committed: now the job exists (the rollback above is what removed it).
    call(gw, "complete_booking", p_user_id=user["id"], p_reservation_id=res["id"], p_payment_method="CARD")
    assert len(jobs(owner)) == 1


# Webhooks: who is notified ----------------------------------------------------------------


def test_a_paid_order_notifies_each_matching_active_webhook_once(
    gw: psycopg.Connection, owner: psycopg.Connection
) -> None:
    admin, tt = make_user(gw, role="admin"), make_ticket_type(gw)
    other_event = make_event(gw)
    every = webhook(gw, admin, ["order.paid", "ticket.checked_in"])
    this_event = webhook(gw, admin, ["order.paid"], tt["event_id"])
    webhook(gw, admin, ["order.paid"], other_event["id"])  # another event's
    webhook(gw, admin, ["ticket.checked_in"])  # another type
    deleted = webhook(gw, admin, ["order.paid"])
    call(gw, "delete_webhook", p_user_id=admin["id"], p_webhook_id=deleted["id"])

    order = buy(gw, tt, 2)
    found = deliveries(owner)
    assert sorted(d["webhook_id"] for d in found) == sorted([every["id"], this_event["id"]])
    assert {d["notification_id"] for d in found} == {found[0]["notification_id"]}  # one notification, two deliveries
    assert {d["status"] for d in found} == {"PENDING"} and {d["attempts"] for d in found} == {0}
    webhook_jobs = jobs(owner, "deliver_webhook")
    assert sorted(j["id"] for j in webhook_jobs) == sorted(d["job_id"] for d in found)
    for job in webhook_jobs:
        assert job["queue_name"] == "webhooks" and job["priority"] == 50 and job["lock"] is None
    assert sorted(j["args"]["delivery_id"] for j in webhook_jobs) == sorted(d["id"] for d in found)
    assert len(jobs(owner, "send_confirmation")) == 1

    body = json.loads(found[0]["body"])
    assert list(body) == ["id", "type", "created_at", "data"]
    assert body["id"] == found[0]["notification_id"] and body["type"] == "order.paid"
    data = body["data"]
    assert data["id"] == order["id"] and data["status"] == "PAID"
    assert sorted(t["ticket_code"] for t in data["tickets"]) == sorted(t["ticket_code"] for t in order["tickets"])
    assert data["event"]["id"] == tt["event_id"] and set(data["event"]) == {"id", "slug", "name", "start_time"}
    assert data["buyer"] == {"id": order["user"]["id"], "email": order["user"]["email"],
                             "full_name": order["user"]["full_name"]}  # fmt: skip
    assert found[0]["body"] == found[1]["body"]  # the same bytes for every receiver


def test_notify_webhooks_writes_nothing_without_subscribers(owner: psycopg.Connection) -> None:
    notified = owner.execute(
        "SELECT internal.notify_webhooks('order.refunded', gen_random_uuid(), '{\"x\": 1}')"
    ).fetchone()
    assert notified == (0,)
    assert deliveries(owner) == [] and jobs(owner) == []
    with pytest.raises(psycopg.Error) as exc:
        owner.execute("SELECT internal.notify_webhooks('order.lost', NULL, '{}')")
    assert exc.value.diag.sqlstate == "BKVAL"


def test_order_refunded_subscribers_are_notified_through_the_same_function(
    gw: psycopg.Connection, owner: psycopg.Connection
) -> None:
    admin, tt = make_user(gw, role="admin"), make_ticket_type(gw)
    hook = webhook(gw, admin, ["order.refunded"])
    buy(gw, tt)
    assert deliveries(owner) == []  # subscribed to refunds only
    row = owner.execute(
        "SELECT internal.notify_webhooks('order.refunded', %s, '{\"id\": \"x\"}')", (tt["event_id"],)
    ).fetchone()
    assert row == (1,)
    [found] = deliveries(owner)
    assert found["webhook_id"] == hook["id"] and json.loads(found["body"])["data"] == {"id": "x"}


def test_check_in_notifies_ticket_checked_in(gw: psycopg.Connection, owner: psycopg.Connection) -> None:
    admin, tt = make_user(gw, role="admin"), make_ticket_type(gw)
    hook = webhook(gw, admin, ["ticket.checked_in"])
    order = buy(gw, tt, 2)
    assert deliveries(owner) == []  # a sale is not a check-in
    code = order["tickets"][0]["ticket_code"]
    checked = call(gw, "check_in", p_ticket_code=code)
    [found] = deliveries(owner)
    assert found["webhook_id"] == hook["id"] and found["event_type"] == "ticket.checked_in"
    body = json.loads(found["body"])
    assert body["type"] == "ticket.checked_in"
    assert body["data"]["ticket_code"] == code and body["data"]["order_id"] == order["id"]
    assert body["data"]["event_id"] == tt["event_id"] and body["data"]["ticket_type_id"] == tt["id"]
    assert body["data"]["status"] == "CHECKED_IN" and body["data"]["checkin_time"] is not None
    assert checked["status"] == "CHECKED_IN"
    assert sqlstate_of(gw, "check_in", p_ticket_code=code) == "BKACI"
    assert len(deliveries(owner)) == 1  # the refused second scan notified nobody


# The worker's calls ----------------------------------------------------------------------


def test_confirmation_email_has_what_the_mail_shows(gw: psycopg.Connection, worker: psycopg.Connection) -> None:
    tt = make_ticket_type(gw)
    order = buy(gw, tt, 3)
    mail = call(worker, "confirmation_email", p_order_id=order["id"])
    assert mail["order_id"] == order["id"] and mail["recipient"] == order["user"]["email"]
    assert mail["full_name"] == order["user"]["full_name"]
    assert mail["sent_at"] is None and mail["message_id"] is None and mail["attempts"] == 0
    assert mail["order"]["id"] == order["id"] and mail["order"]["total_amount"] == order["total_amount"]
    assert mail["event"]["id"] == tt["event_id"]
    assert set(mail["event"]) == {"id", "slug", "name", "location", "start_time", "end_time"}
    assert sorted(t["ticket_code"] for t in mail["tickets"]) == sorted(t["ticket_code"] for t in order["tickets"])
    assert {(t["ticket_type_name"], t["status"]) for t in mail["tickets"]} == {("Standard", "UNUSED")}
    assert sqlstate_of(worker, "confirmation_email", p_order_id=MISSING) == "BKNTF"


def test_record_confirmation_attempt_then_sent_once(gw: psycopg.Connection, worker: psycopg.Connection) -> None:
    order = buy(gw, make_ticket_type(gw))
    call(worker, "record_confirmation_attempt", p_order_id=order["id"], p_error="421 try later")
    call(worker, "record_confirmation_attempt", p_order_id=order["id"], p_error="x" * 5000)
    mail = call(worker, "confirmation_email", p_order_id=order["id"])
    assert mail["attempts"] == 2 and mail["sent_at"] is None
    assert call(worker, "record_confirmation_sent", p_order_id=order["id"], p_message_id="<order-1@booking>") is True
    first = call(worker, "confirmation_email", p_order_id=order["id"])
    assert first["sent_at"] is not None and first["message_id"] == "<order-1@booking>"
    assert call(worker, "record_confirmation_sent", p_order_id=order["id"], p_message_id="<again@booking>") is False
    again = call(worker, "confirmation_email", p_order_id=order["id"])
    assert (again["sent_at"], again["message_id"]) == (first["sent_at"], first["message_id"])
    assert sqlstate_of(worker, "record_confirmation_sent", p_order_id=MISSING, p_message_id="m") == "BKNTF"
    assert sqlstate_of(worker, "record_confirmation_attempt", p_order_id=MISSING, p_error="e") == "BKNTF"


def test_webhook_delivery_and_the_attempt_outcomes(
    gw: psycopg.Connection, owner: psycopg.Connection, worker: psycopg.Connection
) -> None:
    admin, tt = make_user(gw, role="admin"), make_ticket_type(gw)
    hook = webhook(gw, admin, ["order.paid"])
    for _ in range(3):
        buy(gw, tt)
    first, second, third = deliveries(owner, hook["id"])

    sent = call(worker, "webhook_delivery", p_delivery_id=first["id"])
    assert sent["url"] == hook["url"] and sent["secret"] == hook["secret"] and sent["active"] is True
    assert sent["body"] == first["body"] and sent["notification_id"] == first["notification_id"]
    assert sent["event_type"] == "order.paid" and sent["status"] == "PENDING" and sent["attempts"] == 0

    def attempt(delivery: dict[str, Any], outcome: str, status_code: int | None, error: str | None = None) -> Any:
        return call(worker, "record_webhook_attempt", p_delivery_id=delivery["id"], p_outcome=outcome,
                    p_status_code=status_code, p_error=error, p_duration_ms=12)  # fmt: skip

    after = attempt(first, "RETRY", 500, "HTTP 500")
    assert after["status"] == "PENDING" and after["attempts"] == 1 and after["delivered_at"] is None
    after = attempt(first, "DELIVERED", 200)
    assert after["status"] == "DELIVERED" and after["attempts"] == 2 and after["delivered_at"] is not None

    listed = call(gw, "webhook_attempts", p_user_id=admin["id"], p_webhook_id=hook["id"])
    assert [(a["delivery_id"], a["attempt"], a["outcome"], a["status_code"]) for a in listed] == [
        (first["id"], 2, "DELIVERED", 200), (first["id"], 1, "RETRY", 500)]  # fmt: skip
    assert listed[1]["error"] == "HTTP 500" and listed[0]["delivery_status"] == "DELIVERED"
    assert listed[0]["notification_id"] == first["notification_id"] and listed[0]["duration_ms"] == 12
    assert len(call(gw, "webhook_attempts", p_user_id=admin["id"], p_webhook_id=hook["id"], p_limit=1)) == 1

    # 410 Gone: this delivery FAILED, the webhook disabled, its other pending deliveries cancelled.
    after = attempt(second, "GONE", 410)
    assert after["status"] == "FAILED" and after["attempts"] == 1
    state = owner.execute("SELECT active, disabled_at IS NOT NULL, disabled_reason FROM webhooks WHERE id = %s",
                          (hook["id"],)).fetchone()  # fmt: skip
    assert state == (False, True, "the receiver answered 410 Gone")
    statuses = {d["id"]: d["status"] for d in deliveries(owner, hook["id"])}
    assert statuses == {first["id"]: "DELIVERED", second["id"]: "FAILED", third["id"]: "CANCELLED"}
    assert call(worker, "webhook_delivery", p_delivery_id=third["id"])["active"] is False
    buy(gw, tt)
    assert len(deliveries(owner, hook["id"])) == 3  # a disabled webhook gets nothing new

    # Refused (address not allowed) and the last failed attempt: FAILED.
    other = webhook(gw, admin, ["order.paid"])
    buy(gw, tt)
    buy(gw, tt)
    refused, failed = deliveries(owner, other["id"])
    assert attempt(refused, "REFUSED", None, "127.0.0.1 is a loopback address")["status"] == "FAILED"
    assert attempt(failed, "FAILED", 503)["status"] == "FAILED"
    assert owner.execute("SELECT active FROM webhooks WHERE id = %s", (other["id"],)).fetchone() == (True,)

    assert sqlstate_of(worker, "record_webhook_attempt", p_delivery_id=first["id"], p_outcome="MAYBE",
                       p_status_code=None, p_error=None, p_duration_ms=None) == "BKVAL"  # fmt: skip
    assert sqlstate_of(worker, "record_webhook_attempt", p_delivery_id=MISSING, p_outcome="RETRY",
                       p_status_code=None, p_error=None, p_duration_ms=None) == "BKNTF"  # fmt: skip
    assert sqlstate_of(worker, "webhook_delivery", p_delivery_id=MISSING) == "BKNTF"


# The webhook routes' functions -----------------------------------------------------------


def test_create_webhook_validates_its_input(gw: psycopg.Connection) -> None:
    admin = make_user(gw, role="admin")

    def state(
        url: str | None = "https://hooks.example.com/x", events: Any = ("order.paid",), event_id: str | None = None
    ) -> str | None:
        return sqlstate_of(gw, "create_webhook", p_user_id=admin["id"], p_url=url,
                           p_events=None if events is None else list(events), p_event_id=event_id)  # fmt: skip

    for url in ("ftp://hooks.example.com/x", "hooks.example.com/x", "javascript:alert(1)", "https://",
                "https://a b.example.com/", "https://user:pw@hooks.example.com/", None,
                "https://hooks.example.com/" + "x" * 2030):  # fmt: skip
        assert state(url=url) == "BKVAL", url
    for events in (None, [], ["order.lost"], ["order.paid", "nope"], ["order.paid", None]):
        assert state(events=events) == "BKVAL", events
    assert state(event_id=MISSING) == "BKNTF"
    assert state(url="http://hooks.example.com:8080/path?q=1") is None
    try:
        call(gw, "create_webhook", p_user_id=admin["id"], p_url="https://x.example.com/", p_events=["order.lost"])
    except psycopg.Error as exc:
        assert "order.paid, order.refunded, ticket.checked_in" in str(exc.diag.message_primary)

    made = call(gw, "create_webhook", p_user_id=admin["id"], p_url="https://hooks.example.com/y",
                p_events=["ticket.checked_in", "order.paid", "order.paid"])  # fmt: skip
    assert made["events"] == ["order.paid", "ticket.checked_in"]  # canonical, no repeats
    assert re.fullmatch(r"whsec_[0-9a-f]{48}", made["secret"]) and made["active"] is True
    assert set(made) == {"id", "url", "events", "event_id", "secret", "active", "created_at"}


def test_webhooks_are_their_creators_alone(gw: psycopg.Connection, owner: psycopg.Connection) -> None:
    admin, other = make_user(gw, role="admin"), make_user(gw, role="admin")
    tt = make_ticket_type(gw)
    older = webhook(gw, admin, ["order.paid"])
    newer = webhook(gw, admin, ["ticket.checked_in"], tt["event_id"])
    listed = call(gw, "list_webhooks", p_user_id=admin["id"])
    assert [w["id"] for w in listed] == [newer["id"], older["id"]]
    assert all("secret" not in w for w in listed) and listed[0]["event_id"] == tt["event_id"]
    assert call(gw, "list_webhooks", p_user_id=other["id"]) == []

    assert sqlstate_of(gw, "delete_webhook", p_user_id=other["id"], p_webhook_id=older["id"]) == "BKNTF"
    assert sqlstate_of(gw, "webhook_attempts", p_user_id=other["id"], p_webhook_id=older["id"]) == "BKNTF"
    assert sqlstate_of(gw, "delete_webhook", p_user_id=admin["id"], p_webhook_id=MISSING) == "BKNTF"
    assert sqlstate_of(gw, "webhook_attempts", p_user_id=admin["id"], p_webhook_id=older["id"], p_limit=0) == "BKVAL"
    assert call(gw, "webhook_attempts", p_user_id=admin["id"], p_webhook_id=older["id"]) == []

    buy(gw, tt)
    assert [d["status"] for d in deliveries(owner, older["id"])] == ["PENDING"]
    call(gw, "delete_webhook", p_user_id=admin["id"], p_webhook_id=older["id"])
    call(gw, "delete_webhook", p_user_id=admin["id"], p_webhook_id=older["id"])  # again: a no-op
    assert deliveries(owner, older["id"])[0]["status"] == "CANCELLED"
    gone = next(w for w in call(gw, "list_webhooks", p_user_id=admin["id"]) if w["id"] == older["id"])
    assert gone["active"] is False and gone["disabled_reason"] == "deleted by its owner"
    assert call(gw, "webhook_attempts", p_user_id=admin["id"], p_webhook_id=older["id"]) == []  # still its owner's
    buy(gw, tt)
    assert len(deliveries(owner, older["id"])) == 1


# DBAs ------------------------------------------------------------------------------------


def fail_next_job(worker: psycopg.Connection, queue: str = "mail") -> int:
    """What a worker does with a job whose retries ran out: fetch it, finish it failed."""
    [worker_id] = worker.execute("SELECT worker_id FROM procrastinate_register_worker_v1()").fetchone() or [None]
    row = worker.execute(
        "SELECT id FROM procrastinate_fetch_job_v2(ARRAY[%s]::varchar[], %s)", (queue, worker_id)
    ).fetchone()
    assert row is not None and row[0] is not None
    worker.execute("SELECT procrastinate_finish_job_v1(%s, 'failed', false)", (row[0],))
    return int(row[0])


def test_job_queue_failed_jobs_and_retries(
    gw: psycopg.Connection, owner: psycopg.Connection, worker: psycopg.Connection, connect: Connect
) -> None:
    tt = make_ticket_type(gw)
    orders = [buy(gw, tt) for _ in range(3)]
    rows = owner.execute("SELECT * FROM api.job_queue()").fetchall()  # one row per (queue, task, status)
    assert [r[:4] for r in rows] == [("mail", "send_confirmation", "todo", 3)]
    assert rows[0][4] is not None and rows[0][4].total_seconds() >= 0

    failed_ids = [fail_next_job(worker), fail_next_job(worker)]
    failed = owner.execute(
        "SELECT id, queue_name, task_name, args, attempts, failed_at FROM api.failed_jobs()"
    ).fetchall()
    assert [r[0] for r in failed] == sorted(failed_ids, reverse=True)
    assert all(r[1:3] == ("mail", "send_confirmation") and r[5] is not None for r in failed)
    assert {r[3]["order_id"] for r in failed} <= {o["id"] for o in orders}
    assert len(owner.execute("SELECT * FROM api.failed_jobs(1)").fetchall()) == 1
    assert sqlstate_of(owner, "failed_jobs", p_limit=0) == "BKVAL"

    # retry_job: todo again, due now, and the listening workers are told.
    listener = connect(WORKER_ROLE)
    listener.execute("LISTEN procrastinate_any_queue_v1")
    dba_call(gw, "retry_job", p_job_id=failed_ids[0])
    heard = [json.loads(n.payload) for n in listener.notifies(timeout=5, stop_after=1)]
    assert heard == [{"type": "job_inserted", "job_id": failed_ids[0]}]
    retried = next(j for j in jobs(owner) if j["id"] == failed_ids[0])
    assert (
        retried["status"] == "todo" and retried["attempts"] == 2
    )  # the failed run, then the retry (procrastinate's count)
    assert sqlstate_of(owner, "retry_job", p_job_id=failed_ids[0]) == "BKNTF"  # not failed any more
    assert sqlstate_of(owner, "retry_job", p_job_id=10**12) == "BKNTF"

    assert dba_call(gw, "retry_failed_jobs", p_task="deliver_webhook") == 0
    assert dba_call(gw, "retry_failed_jobs") == 1
    assert {j["status"] for j in jobs(owner)} == {"todo"}
    assert owner.execute("SELECT * FROM api.failed_jobs()").fetchall() == []


def test_resend_confirmation_defers_a_new_mail_job(
    gw: psycopg.Connection, owner: psycopg.Connection, worker: psycopg.Connection
) -> None:
    order = buy(gw, make_ticket_type(gw))
    [first] = jobs(owner)
    call(worker, "record_confirmation_sent", p_order_id=order["id"], p_message_id="<m@booking>")
    job_id = dba_call(gw, "resend_confirmation", p_order_id=order["id"])
    assert job_id != first["id"]
    [_, again] = jobs(owner)
    assert again["id"] == job_id and again["task_name"] == "send_confirmation" and again["queue_name"] == "mail"
    assert again["args"] == {"order_id": order["id"]} and again["priority"] == 100
    row = owner.execute("SELECT sent_at, message_id, job_id FROM order_emails WHERE order_id = %s", (order["id"],))
    assert row.fetchone() == (None, None, job_id)
    assert sqlstate_of(owner, "resend_confirmation", p_order_id=MISSING) == "BKNTF"


# The worker's role -----------------------------------------------------------------------


@pytest.mark.parametrize("table", ["users", "orders", "tickets", "order_emails", "webhooks", "webhook_deliveries"])
def test_the_worker_role_cannot_read_business_tables(table: str, worker: psycopg.Connection) -> None:
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        worker.execute(f"SELECT 1 FROM public.{table} LIMIT 1")


@pytest.mark.parametrize(
    "statement",
    [
        "SELECT api.complete_booking(gen_random_uuid(), gen_random_uuid(), 'CARD')",
        "SELECT api.create_webhook(gen_random_uuid(), 'https://x.example.com', ARRAY['order.paid'])",
        "SELECT api.list_webhooks(gen_random_uuid())",
        "SELECT api.get_user(gen_random_uuid())",
        "SELECT * FROM api.job_queue()",
        "SELECT api.retry_job(1)",
        "SELECT api.resend_confirmation(gen_random_uuid())",
        "SELECT internal.defer_job('send_confirmation', 'mail', 100, '{}')",
    ],
)
def test_the_worker_role_cannot_run_gateway_dba_or_internal_functions(
    statement: str, worker: psycopg.Connection
) -> None:
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        worker.execute(statement)


def test_the_worker_role_runs_procrastinate_and_the_gateway_role_does_not(
    gw: psycopg.Connection, worker: psycopg.Connection, owner: psycopg.Connection
) -> None:
    buy(gw, make_ticket_type(gw))
    [worker_id] = worker.execute("SELECT worker_id FROM procrastinate_register_worker_v1()").fetchone() or [None]
    worker.execute("SELECT procrastinate_update_heartbeat_v1(%s)", (worker_id,))
    job = worker.execute("SELECT id, task_name FROM procrastinate_fetch_job_v2(ARRAY['mail']::varchar[], %s)",
                         (worker_id,)).fetchone()  # fmt: skip
    assert job is not None and job[1] == "send_confirmation"
    worker.execute("SELECT procrastinate_retry_job_v2(%s, now() + interval '1 minute', NULL, NULL, NULL)", (job[0],))
    worker.execute("SELECT procrastinate_unregister_worker_v1(%s)", (worker_id,))
    assert jobs(owner)[0]["attempts"] == 1
    for statement in (
        "SELECT 1 FROM public.procrastinate_jobs LIMIT 1",
        "SELECT public.procrastinate_register_worker_v1()",
        "SELECT public.procrastinate_defer_jobs_v1(NULL)",
    ):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            gw.execute(statement)
    for function in sorted(WORKER_CALLS):
        granted = gw.execute("SELECT has_function_privilege('booking_gateway', %s::regproc, 'EXECUTE')",
                             (f"api.{function}",)).fetchone()  # fmt: skip
        assert granted == (False,), function


def test_a_procrastinate_worker_as_the_worker_role_runs_the_deferred_job(
    gw: psycopg.Connection, owner: psycopg.Connection, dbname: str
) -> None:
    """procrastinate's own worker (its queries, events, heartbeats) with only booking_worker's
    privileges: the SQL-deferred job reaches a task that reads and records through WORKER_CALLS."""
    order = buy(gw, make_ticket_type(gw), 2)
    url = url_for(dbname, WORKER_ROLE)
    app = App(connector=PsycopgConnector(conninfo=url, min_size=1, max_size=2))
    seen: list[dict[str, Any]] = []

    @app.task(name="send_confirmation", queue="mail")
    async def send_confirmation(order_id: str) -> None:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            cur = await conn.execute("SELECT api.confirmation_email(%s)", (order_id,))
            row = await cur.fetchone()
            assert row is not None
            seen.append(row[0])
            await conn.execute("SELECT api.record_confirmation_sent(%s, %s)", (order_id, f"<order-{order_id}@booking>"))

    async def run() -> None:
        async with app.open_async():
            await app.run_worker_async(queues=["mail"], wait=False, install_signal_handlers=False)

    asyncio.run(run())
    assert [m["order_id"] for m in seen] == [order["id"]] and len(seen[0]["tickets"]) == 2
    assert [j["status"] for j in jobs(owner)] == ["succeeded"]
    sent = owner.execute("SELECT sent_at IS NOT NULL, message_id FROM order_emails").fetchone()
    assert sent == (True, f"<order-{order['id']}@booking>")


def test_worker_calls_are_documented_as_the_workers(owner: psycopg.Connection) -> None:
    for function in WORKER_CALLS:
        comment = owner.execute("SELECT obj_description(%s::regproc, 'pg_proc')", (f"api.{function}",)).fetchone()
        assert comment is not None and comment[0].startswith("(worker) "), function
