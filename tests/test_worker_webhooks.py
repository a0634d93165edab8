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
from tests.worker_support import Receiver, jobs_of, paid_order, run_until, run_until_idle, settings_for


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
