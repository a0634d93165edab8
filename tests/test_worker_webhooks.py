"""Webhook deliveries end to end: an organizer's webhook, a PAID order, the real worker (in this
process, as booking_worker), a real HTTP receiver on 127.0.0.1 that checks the signature."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import psycopg

from tests.conftest import call
from tests.factories import make_user
from tests.worker_support import (
    Receiver,
    SilentReceiver,
    jobs_of,
    owner_rows,
    paid_order,
    run_until,
    run_until_idle,
    settings_for,
)
from worker.config import WORKER_ROLE
from worker.retry import WEBHOOK_CAP_SECONDS, runs_for


def webhook(gw: psycopg.Connection, url: str, events: list[str] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    admin = make_user(gw, role="admin")
    hook: dict[str, Any] = call(
        gw, "create_webhook", p_user_id=admin["id"], p_url=url, p_events=events or ["order.paid"]
    )
    return admin, hook


def attempts(gw: psycopg.Connection, admin: dict[str, Any], hook: dict[str, Any]) -> list[dict[str, Any]]:
    """GET /admin/webhooks/{id}/deliveries, oldest first."""
    rows: list[dict[str, Any]] = call(gw, "webhook_attempts", p_user_id=admin["id"], p_webhook_id=hook["id"])
    return sorted(rows, key=lambda a: a["attempt"])


def signed(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def test_500_twice_then_200_delivered_on_the_third_try_signed_every_time(
    gw: psycopg.Connection, dbname: str, tmp_path: Path
) -> None:
    with Receiver(statuses=[500, 500]) as receiver:
        admin, hook = webhook(gw, receiver.url)
        order = paid_order(gw, quantity=2)
        settings = settings_for(dbname, tmp_path, webhook_allow_private=True, webhook_retry_base=0.2)
        run_until(settings, lambda: len(receiver.hits) >= 3, "three attempts")
        run_until_idle(settings)

        assert len(receiver.hits) == 3
        bodies = {hit.body for hit in receiver.hits}
        assert len(bodies) == 1, "every retry sends the same bytes (the same notification id)"
        for hit in receiver.hits:
            assert hit.path == "/hooks/booking?src=test"
            assert hit.headers["x-booking-signature"] == signed(hook["secret"], hit.body)
            assert hit.headers["content-type"] == "application/json"
            assert hit.headers["x-booking-event"] == "order.paid"
            assert hit.headers["host"] == f"127.0.0.1:{receiver.port}"
        payload = json.loads(receiver.hits[0].body)
        assert payload["type"] == "order.paid" and payload["id"]
        assert payload["data"]["id"] == order["id"]
        assert {t["ticket_code"] for t in payload["data"]["tickets"]} == {t["ticket_code"] for t in order["tickets"]}

        listed = attempts(gw, admin, hook)
        assert [(a["attempt"], a["status_code"], a["outcome"]) for a in listed] == [
            (1, 500, "RETRY"), (2, 500, "RETRY"), (3, 200, "DELIVERED"),
        ]  # fmt: skip
        assert {a["delivery_status"] for a in listed} == {"DELIVERED"}
        assert {str(a["notification_id"]) for a in listed} == {payload["id"]}
        assert receiver.hits[0].headers["x-booking-delivery"] == str(listed[0]["delivery_id"])
        assert [(status, n) for _, status, n, _ in jobs_of(dbname, "deliver_webhook")] == [("succeeded", 3)]


def test_410_disables_the_webhook_without_a_retry(gw: psycopg.Connection, dbname: str, tmp_path: Path) -> None:
    with Receiver(statuses=[410]) as receiver:
        admin, hook = webhook(gw, receiver.url)
        paid_order(gw, quantity=1)
        settings = settings_for(dbname, tmp_path, webhook_allow_private=True, webhook_retry_base=0.2)
        run_until(settings, lambda: receiver.hits, "the first attempt")
        run_until_idle(settings)
        paid_order(gw, quantity=1)  # after the 410: no delivery for a disabled webhook
        run_until_idle(settings)

        assert len(receiver.hits) == 1
        assert [(a["status_code"], a["outcome"], a["delivery_status"]) for a in attempts(gw, admin, hook)] == [
            (410, "GONE", "FAILED")
        ]
        (listed,) = [w for w in call(gw, "list_webhooks", p_user_id=admin["id"]) if w["id"] == hook["id"]]
        assert listed["active"] is False
        assert [(status, n) for _, status, n, _ in jobs_of(dbname, "deliver_webhook")] == [("succeeded", 1)]


def test_a_loopback_url_is_refused_without_the_opt_in(gw: psycopg.Connection, dbname: str, tmp_path: Path) -> None:
    with Receiver() as receiver:
        admin, hook = webhook(gw, receiver.url)
        paid_order(gw, quantity=1)
        settings = settings_for(dbname, tmp_path, webhook_allow_private=False, webhook_retry_base=0.2)
        run_until(settings, lambda: attempts(gw, admin, hook), "the refused attempt")
        run_until_idle(settings)

        assert receiver.hits == [], "nothing may reach a loopback address without WEBHOOK_ALLOW_PRIVATE=yes"
        (attempt,) = attempts(gw, admin, hook)
        assert (attempt["outcome"], attempt["status_code"], attempt["delivery_status"]) == ("REFUSED", None, "FAILED")
        assert "127.0.0.1 is a loopback address" in attempt["error"]


def delivery_rows(dbname: str, hook: dict[str, Any]) -> list[tuple[Any, ...]]:
    """(status, attempts) of the webhook's deliveries."""
    return owner_rows(dbname, "SELECT status, attempts FROM webhook_deliveries WHERE webhook_id = %s", hook["id"])


def test_a_receiver_that_never_answers_is_cut_off_at_one_deadline(
    gw: psycopg.Connection, dbname: str, tmp_path: Path
) -> None:
    """The receiver accepts the connection and says nothing: the attempt ends at the deadline
    (WEBHOOK_TIMEOUT_SECONDS, 1 s here) as a RETRY, the slot is free again."""
    with SilentReceiver() as receiver:
        admin, hook = webhook(gw, receiver.url)
        paid_order(gw, quantity=1)
        settings = settings_for(
            dbname, tmp_path, webhook_allow_private=True, webhook_timeout=1.0, webhook_retry_base=600
        )
        run_until(settings, lambda: attempts(gw, admin, hook), "the first attempt")

        assert receiver.accepted.is_set(), "the connection was made"
        (attempt,) = attempts(gw, admin, hook)
        assert (attempt["outcome"], attempt["status_code"], attempt["delivery_status"]) == ("RETRY", None, "PENDING")
        assert attempt["error"] == "no answer within 1 s"
        assert 900 <= attempt["duration_ms"] < 5000, "one deadline for the attempt, not 10 s per address"
        assert [status for _, status, _, _ in jobs_of(dbname, "deliver_webhook")] == ["todo"], "retried later"


def test_a_delivery_of_a_webhook_disabled_meanwhile_is_cancelled_unsent(
    gw: psycopg.Connection, dbname: str, tmp_path: Path
) -> None:
    """A delete racing the purchase: the delivery row exists, then the webhook is off before its
    job runs (api.delete_webhook cancels the PENDING ones it sees; setting `active` as the owner
    stands in for the delete that committed after the purchase's snapshot). The job sends
    nothing and closes the delivery, which would otherwise stay PENDING for ever."""
    with Receiver() as receiver:
        admin, hook = webhook(gw, receiver.url)
        paid_order(gw, quantity=1)
        assert delivery_rows(dbname, hook) == [("PENDING", 0)]
        owner_rows(dbname, "UPDATE webhooks SET active = false WHERE id = %s RETURNING id", hook["id"])
        settings = settings_for(dbname, tmp_path, webhook_allow_private=True)
        run_until(settings, lambda: jobs_of(dbname, "deliver_webhook")[0][1] == "succeeded", "the job to end")

        assert receiver.hits == []
        assert delivery_rows(dbname, hook) == [("CANCELLED", 0)]
        assert attempts(gw, admin, hook) == [], "no attempt was made"


def test_a_stalled_webhook_job_given_up_on_its_last_run_fails_its_delivery(
    gw: psycopg.Connection, connect: Any, dbname: str, tmp_path: Path
) -> None:
    """A worker died running a deliver_webhook job on its last allowed run: recovery fails the
    job, and the delivery is recorded FAILED instead of staying PENDING."""
    with Receiver() as receiver:
        _, hook = webhook(gw, receiver.url)
        paid_order(gw, quantity=1)
        settings = settings_for(dbname, tmp_path, webhook_allow_private=True)
        w = connect(WORKER_ROLE)
        dead = w.execute("SELECT procrastinate_register_worker_v1()").fetchone()[0]
        (job_id,) = w.execute("SELECT id FROM procrastinate_fetch_job_v2(ARRAY['webhooks'], %s)", (dead,)).fetchone()
        runs = runs_for(settings.webhook_retry_base, WEBHOOK_CAP_SECONDS)
        owner_rows(dbname, "UPDATE procrastinate_jobs SET attempts = %s WHERE id = %s RETURNING id", runs - 1, job_id)
        owner_rows(
            dbname,
            "UPDATE procrastinate_workers SET last_heartbeat = now() - interval '1 hour' WHERE id = %s RETURNING id",
            dead,
        )
        run_until_idle(settings)  # recovery runs at start

        assert owner_rows(dbname, "SELECT status::text FROM procrastinate_jobs WHERE id = %s", job_id) == [("failed",)]
        assert delivery_rows(dbname, hook) == [("FAILED", 0)]
        assert receiver.hits == []


def test_a_non_ascii_host_is_refused_not_retried(gw: psycopg.Connection, dbname: str, tmp_path: Path) -> None:
    """Only psql can store it (the gateway wants visible ASCII): fullwidth digits resolve to
    127.0.0.1, but httpx cannot encode the Host header (UnicodeEncodeError, once uncaught and
    retried for 24 h). The attempt is REFUSED, the delivery FAILED, nothing sent."""
    with Receiver() as receiver:
        admin, hook = webhook(gw, receiver.url)
        owner_rows(
            dbname, "UPDATE webhooks SET url = %s WHERE id = %s RETURNING id",
            f"http://\uff11\uff12\uff17.0.0.1:{receiver.port}/hook", hook["id"],
        )  # fmt: skip
        paid_order(gw, quantity=1)
        settings = settings_for(dbname, tmp_path, webhook_allow_private=True)
        run_until(settings, lambda: attempts(gw, admin, hook), "the refused attempt", timeout=15)
        run_until_idle(settings)

        assert receiver.hits == []
        (attempt,) = attempts(gw, admin, hook)
        assert (attempt["outcome"], attempt["delivery_status"]) == ("REFUSED", "FAILED")
        assert "UnicodeEncodeError" in attempt["error"]
        assert [(status, n) for _, status, n, _ in jobs_of(dbname, "deliver_webhook")] == [("succeeded", 1)]


def test_a_host_name_is_sent_as_the_host_header(gw: psycopg.Connection, dbname: str, tmp_path: Path) -> None:
    """The worker connects to the address it checked, and the URL's name travels in the Host
    header (and, for https, the TLS server name)."""
    with Receiver() as receiver:
        url = f"http://localhost:{receiver.port}/hook"
        admin, hook = webhook(gw, url)
        paid_order(gw, quantity=1)
        settings = settings_for(dbname, tmp_path, webhook_allow_private=True)
        run_until(settings, lambda: receiver.hits, "the delivery")

        (hit,) = receiver.hits
        assert hit.headers["host"] == f"localhost:{receiver.port}"
        assert hit.path == "/hook"
        assert hit.headers["x-booking-signature"] == signed(hook["secret"], hit.body)
        assert [a["outcome"] for a in attempts(gw, admin, hook)] == ["DELIVERED"]
