"""The worker's side of payments end to end: refund_payment, reconcile_payments and the refund
e-mail. Real PostgreSQL, the real worker (in this process, as booking_worker), the providers'
stub (gateway/payments/sandbox_api.py) served by uvicorn on a free 127.0.0.1 port and asked
over real sockets in each provider's wire format, a real SMTP server (aiosmtpd) and a real
webhook receiver. No mocks."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from gateway.payments.providers import ProviderConfig
from gateway.payments.sandbox_api import StubState
from gateway.payments.sandbox_api import app as stub_app
from tests.conftest import call
from tests.factories import make_event, make_ticket_type, make_user, reserve, stock, violations
from tests.live import LiveServer
from tests.worker_support import (
    Receiver,
    SmtpSink,
    jobs_of,
    owner_rows,
    run_until,
    run_until_idle,
    settings_for,
    smtp_server,
)
from worker import app as worker_app
from worker.config import WORKER_ROLE, WorkerSettings

METHODS = ("MOMO", "ZALOPAY", "BANKING", "CARD")
CREDENTIALS = ProviderConfig(
    momo_endpoint="", momo_partner_code="MOMOTEST", momo_access_key="acc-test", momo_secret_key="momo-secret",
    zalopay_endpoint="", zalopay_app_id="2553", zalopay_key1="zp-key1", zalopay_key2="zp-key2",
    bank_api_url="", bank_secret="bank-secret", card_api_url="", card_secret="card-secret", timeout=5.0,
)  # fmt: skip


@dataclasses.dataclass
class Stub:
    """The stub providers on a real port: `config` points the worker at them; `state` is what
    they know (a test marks payments paid there, or makes the next refund fail)."""

    config: ProviderConfig
    state: StubState

    def with_timeout(self, seconds: float) -> ProviderConfig:
        return dataclasses.replace(self.config, timeout=seconds)


@pytest.fixture
def stub(tmp_path: Path) -> Iterator[Stub]:
    state_dir = tmp_path / "stub"
    with LiveServer(stub_app(state_dir, CREDENTIALS)) as server:
        config = dataclasses.replace(
            CREDENTIALS, momo_endpoint=f"{server.url}/momo", zalopay_endpoint=f"{server.url}/zalopay",
            bank_api_url=f"{server.url}/bank", card_api_url=f"{server.url}/card",
        )  # fmt: skip
        yield Stub(config, StubState(state_dir))


@pytest.fixture
def smtp() -> Iterator[SmtpSink]:
    with smtp_server(SmtpSink()) as (sink, port):
        sink.port = port  # type: ignore[attr-defined]
        yield sink


@pytest.fixture
def provider_mode(owner: psycopg.Connection) -> None:
    call(owner, "set_payment_mode", p_mode="provider")


def worker_settings(dbname: str, tmp_path: Path, smtp: SmtpSink, **changes: Any) -> WorkerSettings:
    values: dict[str, Any] = {
        "smtp_url": f"smtp://127.0.0.1:{smtp.port}",  # type: ignore[attr-defined]
        "webhook_allow_private": True,
        "refund_retry_base": 0.2,
        **changes,
    }
    return settings_for(dbname, tmp_path / "mail", **values)


def checkout(gw: psycopg.Connection, tt: dict[str, Any], quantity: int = 2, method: str = "MOMO",
             user: dict[str, Any] | None = None) -> dict[str, Any]:  # fmt: skip
    user = user or make_user(gw)
    res = reserve(gw, user, tt, quantity)
    order: dict[str, Any] = call(gw, "checkout", p_user_id=user["id"], p_reservation_id=res["id"],
                                 p_payment_method=method)  # fmt: skip
    order["user"] = user
    return order


def whole(order: dict[str, Any]) -> int:
    return round(float(order["payment"]["amount"]))


def pay_with_callback(gw: psycopg.Connection, stub: Stub, order: dict[str, Any]) -> str:
    """The buyer pays at the (stub) provider, whose callback the gateway verified and applied
    (api.apply_payment_event, as gateway/payments/callbacks.py calls it). The provider's id."""
    payment = order["payment"]
    provider_txn = stub.state.mark_paid(payment["transaction_id"], whole(order), payment["method"])
    answer = call(gw, "apply_payment_event", p_provider=payment["method"], p_provider_txn_id=provider_txn,
                  p_transaction_id=payment["transaction_id"], p_amount=whole(order), p_success=True,
                  p_raw=Jsonb({"callback": True}))  # fmt: skip
    assert answer["outcome"] == "paid", answer
    return provider_txn


def order_state(dbname: str, order_id: str) -> dict[str, Any]:
    [row] = owner_rows(
        dbname,
        "SELECT o.status, p.status, p.provider_txn_id,"
        "       (SELECT count(*) FROM tickets t WHERE t.order_id = o.id),"
        "       (SELECT count(*) FROM tickets t WHERE t.order_id = o.id AND t.status = 'UNUSED')"
        "  FROM orders o JOIN payments p ON p.order_id = o.id WHERE o.id = %s",
        order_id,
    )
    return dict(zip(("order", "payment", "provider_txn_id", "tickets", "unused"), row, strict=True))


def refunds_of(dbname: str, order_id: str) -> list[dict[str, Any]]:
    rows = owner_rows(
        dbname,
        "SELECT id::text, status, reason, attempts, refusals, last_error, provider_ref, amount, job_id"
        "  FROM payment_refunds WHERE order_id = %s ORDER BY created_at",
        order_id,
    )
    keys = ("id", "status", "reason", "attempts", "refusals", "last_error", "provider_ref", "amount", "job_id")
    return [dict(zip(keys, r, strict=True)) for r in rows]


def mails(sink: SmtpSink, kind: str, order_id: str) -> list[Any]:
    """The messages the SMTP server accepted of one kind (confirmation or refund) for one order."""
    wanted = f"<order-{order_id}@booking>" if kind == "confirmation" else f"<refund-{order_id}@booking>"
    return [r.message for r in sink.received if r.message["Message-ID"] == wanted]


def stub_refunds(stub: Stub, transaction_id: str) -> list[dict[str, Any]]:
    return [r for r in stub.state.refunds() if r.get("transaction_id") == transaction_id]


def refunded_everything(dbname: str, sink: SmtpSink, *orders: dict[str, Any]) -> bool:
    return all(order_state(dbname, o["id"])["order"] == "REFUNDED" and mails(sink, "refund", o["id"]) for o in orders)


# Refunds ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_an_admin_refund_ends_refunded_with_one_refund_one_mail_and_the_webhook(
    gw: psycopg.Connection, dbname: str, provider_mode: None, stub: Stub, smtp: SmtpSink, tmp_path: Path,
    method: str,
) -> None:  # fmt: skip
    admin = make_user(gw, role="admin")
    with Receiver() as receiver:
        call(gw, "create_webhook", p_user_id=admin["id"], p_url=receiver.url, p_events=["order.refunded"],
             p_event_id=None)  # fmt: skip
        tt = make_ticket_type(gw, quantity=5, price="150000.00")
        order = checkout(gw, tt, 2, method)
        provider_txn = pay_with_callback(gw, stub, order)
        settings = worker_settings(dbname, tmp_path, smtp)
        run_until(settings, lambda: mails(smtp, "confirmation", order["id"]), "the confirmation", providers=stub.config)

        assert call(gw, "refund_order", p_order_id=order["id"])["status"] == "REFUND_PENDING"
        assert stock(gw, tt) == 5
        run_until(settings, lambda: refunded_everything(dbname, smtp, order) and receiver.hits, "the refund",
                  providers=stub.config)  # fmt: skip

        # The provider was asked once, for the whole amount of this payment, and said done.
        txn = order["payment"]["transaction_id"]
        [at_stub] = stub_refunds(stub, txn)
        assert (at_stub["state"], at_stub["amount"], at_stub["provider_txn_id"]) == ("done", 300000, provider_txn)
        [refund] = refunds_of(dbname, order["id"])
        assert (refund["status"], refund["reason"], refund["attempts"]) == ("DONE", "admin", 1)
        assert refund["provider_ref"] == at_stub["provider_ref"]
        assert order_state(dbname, order["id"]) == {
            "order": "REFUNDED", "payment": "REFUNDED", "provider_txn_id": provider_txn, "tickets": 2, "unused": 0,
        }  # fmt: skip
        # One refund e-mail to the buyer: which order, which event, how much.
        [msg] = mails(smtp, "refund", order["id"])
        assert order["user"]["email"] in msg["To"] and "refunded" in msg["Subject"]
        text = msg.get_body(("plain",)).get_content()
        assert order["id"] in text and tt["event"]["name"] in text and "300,000 VND" in text
        assert "organizer refunded" in text
        [(sent_at, attempts)] = owner_rows(
            dbname, "SELECT sent_at IS NOT NULL, attempts FROM order_emails WHERE order_id = %s AND kind = 'refund'",
            order["id"],
        )  # fmt: skip
        assert (sent_at, attempts) == (True, 1)
        # The order.refunded webhook, once.
        [hit] = receiver.hits
        assert hit.headers["x-booking-event"] == "order.refunded" and order["id"].encode() in hit.body

        # Running again changes nothing: the refund job is done, the mail sent.
        run_until_idle(settings, stub.config)
        assert len(stub_refunds(stub, txn)) == 1 and len(mails(smtp, "refund", order["id"])) == 1
        assert len(mails(smtp, "confirmation", order["id"])) == 1 and len(receiver.hits) == 1
    assert violations(gw) == []


def test_a_refund_job_for_a_refund_already_done_asks_nobody(
    gw: psycopg.Connection, owner: psycopg.Connection, dbname: str, provider_mode: None, stub: Stub,
    smtp: SmtpSink, tmp_path: Path,
) -> None:  # fmt: skip
    tt = make_ticket_type(gw, quantity=5)
    order = checkout(gw, tt, 1, "CARD")
    pay_with_callback(gw, stub, order)
    call(gw, "refund_order", p_order_id=order["id"])
    settings = worker_settings(dbname, tmp_path, smtp)
    run_until(settings, lambda: refunded_everything(dbname, smtp, order), "the refund", providers=stub.config)
    [refund] = refunds_of(dbname, order["id"])
    # A copy of the job (a DBA's retry, a stalled run put back): nothing is asked, nothing changes.
    owner.execute(
        "SELECT internal.defer_job('refund_payment', 'payments', 90, jsonb_build_object('refund_id', %s::text))",
        (refund["id"],),
    )
    run_until_idle(settings, stub.config)
    assert len(stub_refunds(stub, order["payment"]["transaction_id"])) == 1
    assert refunds_of(dbname, order["id"]) == [refund]
    assert [status for _, status, *_ in jobs_of(dbname, "refund_payment")] == ["succeeded", "succeeded"]


def test_cancelling_an_event_refunds_every_paid_order_through_jobs(
    gw: psycopg.Connection, dbname: str, provider_mode: None, stub: Stub, smtp: SmtpSink, tmp_path: Path
) -> None:
    event = make_event(gw, publish=False)
    tt = call(gw, "create_ticket_type", p_event_id=event["id"], p_name="Standard", p_price="200000.00",
              p_initial_quantity=20)  # fmt: skip
    call(gw, "publish_event", p_event_id=event["id"])
    paid = [checkout(gw, tt, 1 + i % 2, method) for i, method in enumerate(METHODS)]
    for order in paid:
        pay_with_callback(gw, stub, order)
    pending = checkout(gw, tt, 1, "MOMO")
    call(gw, "cancel_event", p_event_id=event["id"])
    settings = worker_settings(dbname, tmp_path, smtp)
    run_until(settings, lambda: refunded_everything(dbname, smtp, *paid), "every refund", providers=stub.config)

    for order in paid:
        [at_stub] = stub_refunds(stub, order["payment"]["transaction_id"])
        assert at_stub["state"] == "done" and at_stub["amount"] == whole(order)
        assert [r["reason"] for r in refunds_of(dbname, order["id"])] == ["event_cancelled"]
        [msg] = mails(smtp, "refund", order["id"])
        assert "The event was cancelled." in msg.get_body(("plain",)).get_content()
    assert order_state(dbname, pending["id"])["order"] == "CANCELLED"
    assert stub_refunds(stub, pending["payment"]["transaction_id"]) == []
    assert violations(gw) == []


@pytest.mark.parametrize("method", ["ZALOPAY", "CARD"])
def test_a_refund_whose_answer_times_out_is_asked_again_and_made_once(
    gw: psycopg.Connection, dbname: str, provider_mode: None, stub: Stub, smtp: SmtpSink, tmp_path: Path,
    method: str,
) -> None:  # fmt: skip
    """The provider takes the refund but answers after the worker's timeout: the run records the
    error and the job is retried; the retry asks under the same request id and learns it is done.
    The money went back once."""
    tt = make_ticket_type(gw, quantity=5)
    order = checkout(gw, tt, 2, method)
    pay_with_callback(gw, stub, order)
    call(gw, "refund_order", p_order_id=order["id"])
    stub.state.timeout_next_refund(seconds=2.0)
    providers = stub.with_timeout(1.0)
    # The retry comes after the late answer is in (2 s): base 3 s.
    settings = worker_settings(dbname, tmp_path, smtp, refund_retry_base=3.0)
    run_until_idle(settings, providers)
    [refund] = refunds_of(dbname, order["id"])
    assert refund["status"] == "PENDING" and refund["attempts"] == 1 and refund["refusals"] == 0
    assert refund["last_error"].startswith("not yet: ProviderError")
    assert order_state(dbname, order["id"])["order"] == "REFUND_PENDING"

    run_until(settings, lambda: refunded_everything(dbname, smtp, order), "the retried refund", providers=providers)
    [at_stub] = stub_refunds(stub, order["payment"]["transaction_id"])
    assert at_stub["state"] == "done"
    [refund] = refunds_of(dbname, order["id"])
    assert (refund["status"], refund["attempts"], refund["provider_ref"]) == ("DONE", 2, at_stub["provider_ref"])
    [(_, status, attempts, _)] = jobs_of(dbname, "refund_payment")
    assert (status, attempts) == ("succeeded", 2)


def test_a_refund_the_provider_is_still_processing_is_asked_again(
    gw: psycopg.Connection, dbname: str, provider_mode: None, stub: Stub, smtp: SmtpSink, tmp_path: Path
) -> None:
    tt = make_ticket_type(gw, quantity=5)
    order = checkout(gw, tt, 1, "MOMO")
    pay_with_callback(gw, stub, order)
    call(gw, "refund_order", p_order_id=order["id"])
    stub.state.next_refund("pending")
    settings = worker_settings(dbname, tmp_path, smtp)
    run_until(settings, lambda: refunded_everything(dbname, smtp, order), "the refund", providers=stub.config)
    [at_stub] = stub_refunds(stub, order["payment"]["transaction_id"])
    assert at_stub["state"] == "done"
    [refund] = refunds_of(dbname, order["id"])
    assert refund["status"] == "DONE" and refund["attempts"] == 2 and refund["refusals"] == 0


def test_a_refund_refused_for_good_waits_for_a_dba_then_goes_through(
    gw: psycopg.Connection, owner: psycopg.Connection, dbname: str, provider_mode: None, stub: Stub,
    smtp: SmtpSink, tmp_path: Path,
) -> None:  # fmt: skip
    """Refused (no money moved): recorded, not retried (the job fails), the refund stays PENDING
    in api.stuck_refunds; the DBA's retry asks under a new request id and it goes through."""
    tt = make_ticket_type(gw, quantity=5)
    order = checkout(gw, tt, 1, "CARD")
    pay_with_callback(gw, stub, order)
    call(gw, "refund_order", p_order_id=order["id"])
    stub.state.fail_next_refund()
    settings = worker_settings(dbname, tmp_path, smtp)
    run_until(settings, lambda: jobs_of(dbname, "refund_payment")[0][1] == "failed", "the refused refund's job",
              providers=stub.config)  # fmt: skip
    run_until_idle(settings, stub.config)
    [(job_id, _, attempts, _)] = jobs_of(dbname, "refund_payment")
    assert attempts == 1  # not retried
    [refund] = refunds_of(dbname, order["id"])
    assert (refund["status"], refund["attempts"], refund["refusals"]) == ("PENDING", 1, 1)
    assert refund["last_error"].startswith("refused: ")
    [stuck] = owner.execute(
        "SELECT refund_id::text, refusals, job_status, last_error FROM api.stuck_refunds('0 seconds')"
    ).fetchall()
    assert stuck[:3] == (refund["id"], 1, "failed") and stuck[3].startswith("refused: ")
    assert order_state(dbname, order["id"])["order"] == "REFUND_PENDING" and mails(smtp, "refund", order["id"]) == []

    call(owner, "retry_job", p_job_id=job_id)
    run_until(settings, lambda: refunded_everything(dbname, smtp, order), "the refund after the DBA's retry",
              providers=stub.config)  # fmt: skip
    at_stub = stub_refunds(stub, order["payment"]["transaction_id"])
    assert sorted(r["state"] for r in at_stub) == ["done", "failed"]
    assert len({r["refund_id"] for r in at_stub}) == 2  # the refused request id was not used again
    assert [r["state"] for r in at_stub if r["refund_id"] == worker_app.provider_refund_id(refund["id"])] == ["failed"]


def test_the_refund_request_id_is_stable_and_changes_only_after_a_refusal() -> None:
    refund_id = str(uuid.uuid4())
    first = worker_app.provider_refund_id(refund_id)
    assert first == worker_app.provider_refund_id(refund_id) and first.isalnum() and len(first) <= 50
    assert first == "RF" + uuid.UUID(refund_id).hex.upper()
    assert worker_app.provider_refund_id(refund_id, 1) == first + "R1" != worker_app.provider_refund_id(refund_id, 2)


# Reconciliation -------------------------------------------------------------------------------


def age(owner: psycopg.Connection, order: dict[str, Any], minutes: int = 4) -> None:
    """The order was made `minutes` ago (reconciliation asks about PENDING ones after 3)."""
    owner.execute("UPDATE orders SET created_at = now() - make_interval(mins => %s) WHERE id = %s",
                  (minutes, order["id"]))  # fmt: skip


def reconcile(owner: psycopg.Connection) -> None:
    """A reconcile_payments job now (the periodic one comes every minute)."""
    owner.execute("SELECT internal.defer_job('reconcile_payments', 'payments', 10, '{}'::jsonb)")


def inbox(dbname: str, order_id: str) -> list[tuple[Any, ...]]:
    return owner_rows(
        dbname, "SELECT kind, outcome, provider_txn_id, raw IS NOT NULL FROM payment_events WHERE order_id = %s"
        " ORDER BY id", order_id,
    )  # fmt: skip


def test_reconciliation_is_a_periodic_task_of_the_payments_queue(dbname: str, tmp_path: Path) -> None:
    app = worker_app.build_app(worker_app.Runtime(settings_for(dbname, tmp_path)))
    [periodic] = [p for p in app.periodic_registry.periodic_tasks.values() if p.task.name == "reconcile_payments"]
    assert periodic.cron == "* * * * *"
    assert (periodic.task.queue, periodic.task.lock, periodic.task.queueing_lock) == (
        "payments", "reconcile_payments", "reconcile_payments",
    )  # fmt: skip
    refund = app.tasks["refund_payment"]
    assert (refund.queue, refund.priority) == ("payments", 90)
    assert "payments" in WorkerSettings.from_env({"WORKER_DATABASE_URL": "postgresql:///x"}).queues


def test_reconciliation_fixes_a_lost_callback(
    gw: psycopg.Connection, owner: psycopg.Connection, dbname: str, provider_mode: None, stub: Stub,
    smtp: SmtpSink, tmp_path: Path,
) -> None:  # fmt: skip
    """Paid at the provider, the callback never came: the job asks, the order becomes PAID with its
    tickets and ONE confirmation; the callback arriving after all is a duplicate. Failed at the
    provider: CANCELLED, seats back. Still open there, or too young: left alone."""
    tt = make_ticket_type(gw, quantity=20)
    lost = {method: checkout(gw, tt, 2, method) for method in METHODS}
    failed, waiting, young = checkout(gw, tt, 1, "ZALOPAY"), checkout(gw, tt, 1, "CARD"), checkout(gw, tt, 1, "MOMO")
    provider_txns = {}
    for method, order in lost.items():
        provider_txns[method] = stub.state.mark_paid(order["payment"]["transaction_id"], whole(order), method)
        age(owner, order)
    stub.state.mark_failed(failed["payment"]["transaction_id"], whole(failed), "ZALOPAY")
    stub.state.created(waiting["payment"]["transaction_id"], "CARD", whole(waiting))
    stub.state.mark_paid(young["payment"]["transaction_id"], whole(young), "MOMO")
    for order in (failed, waiting):
        age(owner, order)
    assert stock(gw, tt) == 20 - 8 - 3

    settings = worker_settings(dbname, tmp_path, smtp)
    reconcile(owner)
    run_until(settings, lambda: all(mails(smtp, "confirmation", o["id"]) for o in lost.values()),
              "the confirmations", providers=stub.config)  # fmt: skip

    for method, order in lost.items():
        assert order_state(dbname, order["id"]) == {"order": "PAID", "payment": "SUCCESS",
                                                     "provider_txn_id": provider_txns[method], "tickets": 2,
                                                     "unused": 2}  # fmt: skip
        assert inbox(dbname, order["id"]) == [("success", "paid", provider_txns[method], True)]
        assert len(mails(smtp, "confirmation", order["id"])) == 1
    assert order_state(dbname, failed["id"])["order"] == "CANCELLED"
    assert order_state(dbname, waiting["id"])["order"] == "PENDING" and inbox(dbname, waiting["id"]) == []
    assert order_state(dbname, young["id"])["order"] == "PENDING" and inbox(dbname, young["id"]) == []
    assert stock(gw, tt) == 20 - 8 - 2 and violations(gw) == []
    # (the worker's periodic deferrer may have added runs of its own)
    assert {status for _, status, _, _ in jobs_of(dbname, "reconcile_payments")} == {"succeeded"}

    # The lost MoMo callback arrives after all: the same provider transaction, applied once.
    momo = lost["MOMO"]
    again = call(gw, "apply_payment_event", p_provider="MOMO", p_provider_txn_id=provider_txns["MOMO"],
                 p_transaction_id=momo["payment"]["transaction_id"], p_amount=whole(momo), p_success=True,
                 p_raw=Jsonb({"callback": True}))  # fmt: skip
    assert (again["outcome"], again["first_outcome"]) == ("duplicate", "paid")
    reconcile(owner)
    run_until_idle(settings, stub.config)
    assert len(mails(smtp, "confirmation", momo["id"])) == 1 and len(inbox(dbname, momo["id"])) == 1
    assert order_state(dbname, momo["id"])["tickets"] == 2


def test_a_late_payment_found_by_reconciliation_with_and_without_seats(
    gw: psycopg.Connection, owner: psycopg.Connection, dbname: str, provider_mode: None, stub: Stub,
    smtp: SmtpSink, tmp_path: Path,
) -> None:  # fmt: skip
    """Both orders timed out before their lost callbacks; reconciliation asks about them once.
    Seats left: PAID (seats re-taken, tickets, the confirmation). None left: REFUND_PENDING, and
    the refund goes through the provider to REFUNDED with the refund e-mail saying why."""
    roomy, tight = make_ticket_type(gw, quantity=5), make_ticket_type(gw, quantity=2)
    with_seats, without = checkout(gw, roomy, 2, "ZALOPAY"), checkout(gw, tight, 2, "MOMO")
    for order in (with_seats, without):
        stub.state.mark_paid(order["payment"]["transaction_id"], whole(order), order["payment"]["method"])
        owner.execute("UPDATE orders SET payment_deadline = now() - interval '1 second' WHERE id = %s",
                      (order["id"],))  # fmt: skip
    assert call(owner, "expire_pending_orders") == 2
    rival = checkout(gw, tight, 1, "CARD")  # takes one of the released seats: 1 left, 2 needed
    assert stock(gw, roomy) == 5 and stock(gw, tight) == 1

    settings = worker_settings(dbname, tmp_path, smtp)
    reconcile(owner)
    run_until(settings, lambda: mails(smtp, "confirmation", with_seats["id"]) and refunded_everything(
        dbname, smtp, without), "the late payments settled", providers=stub.config)  # fmt: skip

    paid = order_state(dbname, with_seats["id"])
    assert (paid["order"], paid["tickets"], paid["unused"]) == ("PAID", 2, 2)
    assert [outcome for _, outcome, *_ in inbox(dbname, with_seats["id"])] == ["late_paid"]
    assert stock(gw, roomy) == 3
    refunded = order_state(dbname, without["id"])
    assert (refunded["order"], refunded["payment"], refunded["tickets"]) == ("REFUNDED", "REFUNDED", 0)
    assert [outcome for _, outcome, *_ in inbox(dbname, without["id"])] == ["refund_pending"]
    [refund] = refunds_of(dbname, without["id"])
    assert (refund["reason"], refund["status"]) == ("late_no_seats", "DONE")
    [at_stub] = stub_refunds(stub, without["payment"]["transaction_id"])
    assert at_stub["state"] == "done" and at_stub["amount"] == whole(without)
    [msg] = mails(smtp, "refund", without["id"])
    assert "no longer available" in msg.get_body(("plain",)).get_content()
    assert mails(smtp, "confirmation", without["id"]) == []
    assert stock(gw, tight) == 1 and violations(gw) == []
    assert order_state(dbname, rival["id"])["order"] == "PENDING"

    # Answered for good (paid): a second run does not ask about them again (nothing changes either way).
    reconcile(owner)
    run_until_idle(settings, stub.config)
    assert len(inbox(dbname, with_seats["id"])) == 1 and len(inbox(dbname, without["id"])) == 1


def test_payments_to_reconcile_asks_pending_ones_every_run_and_timed_out_ones_until_answered(
    gw: psycopg.Connection, owner: psycopg.Connection, connect: Any, provider_mode: None
) -> None:
    worker = connect(WORKER_ROLE)
    tt = make_ticket_type(gw, quantity=20)
    old, young, timed_out, answered = (checkout(gw, tt, 1, m) for m in ("MOMO", "CARD", "ZALOPAY", "BANKING"))
    for order in (old, timed_out, answered):
        age(owner, order)
    for order in (timed_out, answered):
        owner.execute("UPDATE orders SET payment_deadline = now() - interval '1 second' WHERE id = %s", (order["id"],))
    assert call(owner, "expire_pending_orders") == 2
    # The provider told us about this one (a failure callback after the expiry): nothing lost.
    call(gw, "apply_payment_event", p_provider="BANKING", p_provider_txn_id="B-1",
         p_transaction_id=answered["payment"]["transaction_id"], p_amount=None, p_success=False)  # fmt: skip

    def listed() -> list[tuple[str, str]]:
        return [(r["order_id"], r["status"]) for r in call(worker, "payments_to_reconcile")]

    assert listed() == [(timed_out["id"], "TIMEOUT"), (old["id"], "PENDING")]  # money maybe without an order first
    assert listed() == [(old["id"], "PENDING")]  # the timed-out one is asked again in 5 minutes, not every run
    owner.execute("UPDATE payments SET reconciled_at = now() - interval '6 minutes' WHERE order_id = %s",
                  (timed_out["id"],))  # fmt: skip
    assert listed() == [(timed_out["id"], "TIMEOUT"), (old["id"], "PENDING")]  # no final answer yet: asked again
    # A final answer (here the provider's failure, as the worker records it) ends the questions.
    call(worker, "reconcile_payment", p_provider="ZALOPAY", p_provider_txn_id="Z-failed",
         p_transaction_id=timed_out["payment"]["transaction_id"], p_amount=None, p_success=False)  # fmt: skip
    owner.execute("UPDATE payments SET reconciled_at = now() - interval '6 minutes' WHERE order_id = %s",
                  (timed_out["id"],))  # fmt: skip
    assert listed() == [(old["id"], "PENDING")]
    [row] = call(worker, "payments_to_reconcile")
    assert row["provider"] == "MOMO" and row["transaction_id"] == old["payment"]["transaction_id"]
    assert row["amount_vnd"] == whole(old) and young["id"] not in str(listed())


def test_a_malformed_provider_endpoint_stops_the_worker_at_start(
    dbname: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MOMO_ENDPOINT", "ftp://momo.example")
    with pytest.raises(worker_app.WorkerError, match="MOMO_ENDPOINT"):
        run_until_idle(settings_for(dbname, tmp_path))
