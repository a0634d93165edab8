"""The booking core, one function at a time: happy paths and every error by SQLSTATE."""

from __future__ import annotations

import re
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from dbctl.seed import ADMIN_EMAIL, DEMO_SLUG, seed
from tests.conftest import call, dba_call, sqlstate_of, url_for
from tests.factories import NOW, make_event, make_ticket_type, make_user, reserve, stock, violations

# ---------------------------------------------------------------- users


def test_register_get_and_login_lookup(gw: psycopg.Connection) -> None:
    user = call(gw, "register_user", p_email="  Alice@Example.COM ", p_password_hash="$h", p_full_name=" Alice ")
    assert user["email"] == "alice@example.com" and user["full_name"] == "Alice" and user["role"] == "user"
    assert "password_hash" not in user
    assert call(gw, "get_user", p_user_id=user["id"])["email"] == "alice@example.com"
    creds = call(gw, "get_user_credentials", p_email="ALICE@example.com")
    assert creds == {"id": user["id"], "role": "user", "password_hash": "$h", "retry_after": None}
    # An unknown address: the same shape, all null (retry_after: the failed-login throttle, test_rate_limits.py).
    unknown = {"id": None, "role": None, "password_hash": None, "retry_after": None}
    assert call(gw, "get_user_credentials", p_email="nobody@example.com") == unknown


@pytest.mark.parametrize(
    ("args", "sqlstate"),
    [
        ({"p_email": "not-an-email", "p_password_hash": "h", "p_full_name": "A"}, "BKVAL"),
        ({"p_email": "a@b.co", "p_password_hash": "", "p_full_name": "A"}, "BKVAL"),
        ({"p_email": "a@b.co", "p_password_hash": "h", "p_full_name": "  "}, "BKVAL"),
        ({"p_email": "a@b.co", "p_password_hash": "h", "p_full_name": "x" * 256}, "BKVAL"),
    ],
)
def test_register_rejects_bad_fields(gw: psycopg.Connection, args: dict[str, Any], sqlstate: str) -> None:
    assert sqlstate_of(gw, "register_user", **args) == sqlstate


def test_register_twice_is_email_taken(gw: psycopg.Connection) -> None:
    call(gw, "register_user", p_email="b@x.io", p_password_hash="h", p_full_name="B")
    assert sqlstate_of(gw, "register_user", p_email="B@X.io", p_password_hash="h", p_full_name="B") == "BKEML"


def test_set_user_role(gw: psycopg.Connection, owner: psycopg.Connection) -> None:
    user = make_user(gw)
    assert call(owner, "set_user_role", p_email=user["email"], p_role="admin")["role"] == "admin"
    assert sqlstate_of(owner, "set_user_role", p_email=user["email"], p_role="root") == "BKVAL"
    assert sqlstate_of(owner, "set_user_role", p_email="ghost@x.io", p_role="admin") == "BKNTF"
    assert sqlstate_of(gw, "get_user", p_user_id="00000000-0000-0000-0000-000000000000") == "BKNTF"


# ---------------------------------------------------------------- events


def test_event_lifecycle_and_listing(gw: psycopg.Connection) -> None:
    event = make_event(gw, publish=False, p_name="Rock Night Saigon")
    assert event["status"] == "DRAFT"
    assert call(gw, "list_published_events") == []
    assert sqlstate_of(gw, "get_event", p_id_or_slug=event["slug"]) == "BKNTF", "drafts are not public"
    tt = call(gw, "create_ticket_type", p_event_id=event["id"], p_name="VIP", p_price="99.50", p_initial_quantity=5)
    assert tt["price"] == "99.50" and tt["available_quantity"] == 5
    call(gw, "publish_event", p_event_id=event["id"])
    call(gw, "publish_event", p_event_id=event["id"])  # idempotent

    listed = call(gw, "list_published_events")
    assert [e["id"] for e in listed] == [event["id"]]
    assert listed[0]["ticket_types"][0]["price"] == "99.50"
    assert "available_quantity" not in listed[0]["ticket_types"][0], "the cached list carries no live stock"
    assert [e["id"] for e in call(gw, "list_published_events", p_query="rock")] == [event["id"]]
    assert [e["id"] for e in call(gw, "list_published_events", p_query="saig")] == [event["id"]]
    assert call(gw, "list_published_events", p_query="jazz") == []
    assert call(gw, "list_published_events", p_query="100%_") == []

    live = call(gw, "get_event", p_id_or_slug=event["id"])
    assert live["ticket_types"][0]["available_quantity"] == 5 and live["ticket_types"][0]["on_sale"]
    assert call(gw, "get_event", p_id_or_slug=event["slug"])["id"] == event["id"]

    call(gw, "cancel_event", p_event_id=event["id"])
    assert call(gw, "list_published_events") == []
    assert sqlstate_of(gw, "publish_event", p_event_id=event["id"]) == "BKIST"
    assert sqlstate_of(gw, "update_event", p_event_id=event["id"], p_changes='{"name": "x"}') == "BKIST"


def test_events_are_listed_by_start_time(gw: psycopg.Connection) -> None:
    late = make_event(gw, p_start_time=NOW + timedelta(days=20), p_end_time=NOW + timedelta(days=21))
    early = make_event(gw, p_start_time=NOW + timedelta(days=2), p_end_time=NOW + timedelta(days=3))
    assert [e["id"] for e in call(gw, "list_published_events")] == [early["id"], late["id"]]


def test_update_event_and_ticket_type(gw: psycopg.Connection) -> None:
    tt = make_ticket_type(gw)
    event = call(gw, "update_event", p_event_id=tt["event_id"], p_changes='{"name": "Renamed", "description": null}')
    assert event["name"] == "Renamed" and event["description"] is None
    changed = call(gw, "update_ticket_type", p_ticket_type_id=tt["id"], p_changes='{"price": "10.5", "name": "Early"}')
    assert changed["price"] == "10.50" and changed["name"] == "Early"
    other = make_event(gw)
    assert (
        sqlstate_of(gw, "update_event", p_event_id=tt["event_id"], p_changes=f'{{"slug": "{other["slug"]}"}}')
        == "BKSLG"
    )
    assert sqlstate_of(gw, "update_event", p_event_id=tt["event_id"], p_changes='{"status": "ENDED"}') == "BKVAL"
    assert sqlstate_of(gw, "update_event", p_event_id=tt["event_id"], p_changes="[]") == "BKVAL"
    end_before = '{"end_time": "2000-01-01T00:00:00Z"}'
    assert sqlstate_of(gw, "update_event", p_event_id=tt["event_id"], p_changes=end_before) == "BKVAL"
    assert sqlstate_of(gw, "update_ticket_type", p_ticket_type_id=tt["id"], p_changes='{"price": -1}') == "BKVAL"
    stock_change = '{"available_quantity": 1}'
    assert sqlstate_of(gw, "update_ticket_type", p_ticket_type_id=tt["id"], p_changes=stock_change) == "BKVAL"
    missing = "00000000-0000-0000-0000-000000000000"
    assert sqlstate_of(gw, "update_event", p_event_id=missing, p_changes="{}") == "BKNTF"
    assert sqlstate_of(gw, "update_ticket_type", p_ticket_type_id=missing, p_changes="{}") == "BKNTF"


@pytest.mark.parametrize(
    ("fields", "sqlstate"),
    [
        ({"p_slug": "Bad Slug"}, "BKVAL"),
        ({"p_name": ""}, "BKVAL"),
        ({"p_location": ""}, "BKVAL"),
        ({"p_end_time": NOW}, "BKVAL"),
        ({"p_banner_url": "x" * 501}, "BKVAL"),
    ],
)
def test_create_event_rejects(gw: psycopg.Connection, fields: dict[str, Any], sqlstate: str) -> None:
    args = {"p_slug": "ok", "p_name": "N", "p_location": "L", "p_start_time": NOW + timedelta(days=1),
            "p_end_time": NOW + timedelta(days=2), **fields}  # fmt: skip
    assert sqlstate_of(gw, "create_event", **args) == sqlstate


@pytest.mark.parametrize("when", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:00:00-05:00"])
def test_times_outside_what_rfc_3339_can_write_are_refused(gw: psycopg.Connection, when: str) -> None:
    """Year 0 ('1 BC') or 10000 in UTC would be stored and come back unreadable: a CHECK
    (23514) refuses them, or an earlier rule (BKVAL: an end before the start)."""
    refused = {"23514", "BKVAL"}
    args = {"p_slug": "ok", "p_name": "N", "p_location": "L", "p_start_time": NOW + timedelta(days=1),
            "p_end_time": NOW + timedelta(days=2)}  # fmt: skip
    assert sqlstate_of(gw, "create_event", **(args | {"p_start_time": when, "p_end_time": when})) in refused
    tt = make_ticket_type(gw)
    for field in ("start_time", "end_time"):
        changes = f'{{"{field}": "{when}"}}'
        assert sqlstate_of(gw, "update_event", p_event_id=tt["event_id"], p_changes=changes) in refused
    for field in ("start_sale_time", "end_sale_time"):
        changes = f'{{"{field}": "{when}"}}'
        assert sqlstate_of(gw, "update_ticket_type", p_ticket_type_id=tt["id"], p_changes=changes) in refused
        assert sqlstate_of(gw, "create_ticket_type", p_event_id=tt["event_id"], p_name="Late", p_price="1.00",
                           p_initial_quantity=1, **{f"p_{field}": when}) in refused  # fmt: skip
    assert call(gw, "admin_get_event", p_event_id=tt["event_id"])["start_time"] == tt["event"]["start_time"]


def test_slug_taken(gw: psycopg.Connection) -> None:
    event = make_event(gw)
    args = {"p_slug": event["slug"], "p_name": "N", "p_location": "L",
            "p_start_time": NOW + timedelta(days=1), "p_end_time": NOW + timedelta(days=2)}  # fmt: skip
    assert sqlstate_of(gw, "create_event", **args) == "BKSLG"


def test_create_ticket_type_rejects(gw: psycopg.Connection) -> None:
    event = make_event(gw)
    base = {"p_event_id": event["id"], "p_name": "T", "p_price": "1", "p_initial_quantity": 1}
    assert sqlstate_of(gw, "create_ticket_type", **{**base, "p_price": "-1"}) == "BKVAL"
    assert sqlstate_of(gw, "create_ticket_type", **{**base, "p_initial_quantity": -1}) == "BKVAL"
    assert sqlstate_of(gw, "create_ticket_type", **{**base, "p_name": ""}) == "BKVAL"
    window = {"p_start_sale_time": NOW, "p_end_sale_time": NOW - timedelta(hours=1)}
    assert sqlstate_of(gw, "create_ticket_type", **{**base, **window}) == "BKVAL"
    missing = {**base, "p_event_id": "00000000-0000-0000-0000-000000000000"}
    assert sqlstate_of(gw, "create_ticket_type", **missing) == "BKNTF"
    call(gw, "cancel_event", p_event_id=event["id"])
    assert sqlstate_of(gw, "create_ticket_type", **base) == "BKIST"


def test_catalogue_changes_notify_but_reserves_do_not(gw: psycopg.Connection, connect: Any) -> None:
    listener = connect("booking_owner")
    listener.execute("LISTEN booking_catalog")
    tt = make_ticket_type(gw, quantity=10)
    assert list(listener.notifies(timeout=1.0, stop_after=1)), "creating and publishing must notify"
    while list(listener.notifies(timeout=0.2, stop_after=1)):
        pass  # drain
    reserve(gw, make_user(gw), tt, 2)
    assert list(listener.notifies(timeout=0.5, stop_after=1)) == [], "stock changes must not flush caches"
    call(gw, "update_ticket_type", p_ticket_type_id=tt["id"], p_changes='{"price": "1"}')
    assert list(listener.notifies(timeout=1.0, stop_after=1))


# ---------------------------------------------------------------- reserve


@pytest.mark.parametrize("function", ["reserve_tickets", "reserve_tickets_optimistic"])
def test_reserve_happy_path(gw: psycopg.Connection, function: str) -> None:
    user, tt = make_user(gw), make_ticket_type(gw, quantity=10)
    res = call(gw, function, p_user_id=user["id"], p_ticket_type_id=tt["id"], p_quantity=3)
    assert res["status"] == "ACTIVE" and res["quantity"] == 3 and res["ticket_type_id"] == tt["id"]
    held = gw.execute("SELECT %s::timestamptz - now()", (res["expires_at"],)).fetchone()[0]  # type: ignore[index]
    assert timedelta(minutes=9) < held <= timedelta(minutes=10)
    assert stock(gw, tt) == 7
    assert violations(gw) == []


@pytest.mark.parametrize("function", ["reserve_tickets", "reserve_tickets_optimistic"])
def test_reserve_errors(gw: psycopg.Connection, function: str) -> None:
    user = make_user(gw)
    tt = make_ticket_type(gw, quantity=2)

    def state(tt_id: str, quantity: int = 1) -> str | None:
        return sqlstate_of(gw, function, p_user_id=user["id"], p_ticket_type_id=tt_id, p_quantity=quantity)

    assert state(tt["id"], 0) == "BKVAL"
    assert state(tt["id"], 11) == "BKVAL"
    assert state("00000000-0000-0000-0000-000000000000") == "BKNTF"
    assert state(tt["id"], 3) == "BKSLD"
    draft = make_ticket_type(gw, publish=False)
    assert state(draft["id"]) == "BKSNO"
    later = make_ticket_type(gw, p_start_sale_time=NOW + timedelta(days=1))
    assert state(later["id"]) == "BKSNO"
    closed = make_ticket_type(gw, p_start_sale_time=NOW - timedelta(days=2), p_end_sale_time=NOW - timedelta(days=1))
    assert state(closed["id"]) == "BKSNO"
    assert stock(gw, tt) == 2, "failed reserves change nothing"


def test_hold_period_is_configurable(gw: psycopg.Connection, connect: Any) -> None:
    conn = connect("booking_gateway", **{"booking.hold_period": "90s"})
    user, tt = make_user(gw), make_ticket_type(gw)
    res = reserve(conn, user, tt)
    held = gw.execute("SELECT %s::timestamptz - now()", (res["expires_at"],)).fetchone()[0]  # type: ignore[index]
    assert timedelta(seconds=80) < held <= timedelta(seconds=90)


@pytest.mark.parametrize("function", ["reserve_tickets", "reserve_tickets_optimistic"])
def test_reserve_reclaims_expired_holds_before_sold_out(
    gw: psycopg.Connection, owner: psycopg.Connection, function: str
) -> None:
    tt = make_ticket_type(gw, quantity=3)
    first, second = make_user(gw), make_user(gw)
    dead = reserve(gw, first, tt, 3)
    owner.execute("UPDATE order_reservations SET expires_at = now() - interval '1 second' WHERE id = %s", (dead["id"],))
    res = call(gw, function, p_user_id=second["id"], p_ticket_type_id=tt["id"], p_quantity=2)
    assert res["status"] == "ACTIVE"
    status = owner.execute("SELECT status FROM order_reservations WHERE id = %s", (dead["id"],)).fetchone()
    assert status == ("EXPIRED",)
    assert stock(gw, tt) == 1
    assert violations(gw) == []


# ---------------------------------------------------------------- cancel


def test_cancel_returns_stock_once(gw: psycopg.Connection) -> None:
    user, tt = make_user(gw), make_ticket_type(gw, quantity=5)
    res = reserve(gw, user, tt, 4)
    assert call(gw, "cancel_reservation", p_user_id=user["id"], p_reservation_id=res["id"])["status"] == "CANCELLED"
    assert stock(gw, tt) == 5
    assert sqlstate_of(gw, "cancel_reservation", p_user_id=user["id"], p_reservation_id=res["id"]) == "BKRNA"
    assert stock(gw, tt) == 5
    assert violations(gw) == []


def test_cancel_someone_elses_or_unknown_is_not_found(gw: psycopg.Connection) -> None:
    owner_user, other, tt = make_user(gw), make_user(gw), make_ticket_type(gw)
    res = reserve(gw, owner_user, tt)
    assert sqlstate_of(gw, "cancel_reservation", p_user_id=other["id"], p_reservation_id=res["id"]) == "BKNTF"
    missing = "00000000-0000-0000-0000-000000000000"
    assert sqlstate_of(gw, "cancel_reservation", p_user_id=owner_user["id"], p_reservation_id=missing) == "BKNTF"


def test_cancel_expired_hold_is_reservation_expired(gw: psycopg.Connection, owner: psycopg.Connection) -> None:
    user, tt = make_user(gw), make_ticket_type(gw)
    res = reserve(gw, user, tt)
    owner.execute("UPDATE order_reservations SET expires_at = now() - interval '1 s' WHERE id = %s", (res["id"],))
    assert dba_call(gw, "expire_reservations") == 1
    assert sqlstate_of(gw, "cancel_reservation", p_user_id=user["id"], p_reservation_id=res["id"]) == "BKREX"


# ---------------------------------------------------------------- complete


def test_complete_booking_issues_everything_in_one_go(gw: psycopg.Connection, owner: psycopg.Connection) -> None:
    user, tt = make_user(gw), make_ticket_type(gw, quantity=10, price="150000.00")
    res = reserve(gw, user, tt, 3)
    order = call(gw, "complete_booking", p_user_id=user["id"], p_reservation_id=res["id"], p_payment_method="MOMO")
    assert order["status"] == "PAID" and order["total_amount"] == "450000.00"
    assert order["items"] == [
        {**order["items"][0], "ticket_type_id": tt["id"], "quantity": 3, "unit_price": "150000.00"}
    ]
    payment = order["payment"]
    assert payment["method"] == "MOMO" and payment["status"] == "SUCCESS" and payment["amount"] == "450000.00"
    assert payment["transaction_id"].startswith("TXN-") and payment["payment_time"]
    codes = [t["ticket_code"] for t in order["tickets"]]
    assert len(codes) == len(set(codes)) == 3
    assert all(re.fullmatch(r"TKT-[0-9A-F]{20}", c) for c in codes)
    assert {t["status"] for t in order["tickets"]} == {"UNUSED"}
    status = owner.execute("SELECT status FROM order_reservations WHERE id = %s", (res["id"],)).fetchone()
    assert status == ("COMPLETED",)
    # The confirmation e-mail: its row and its job, committed with the order (test_delivery_sql.py).
    emails = owner.execute("SELECT order_id::text, recipient FROM order_emails").fetchall()
    assert emails == [(order["id"], user["email"])]
    jobs = owner.execute("SELECT task_name, args->>'order_id' FROM procrastinate_jobs").fetchall()
    assert jobs == [("send_confirmation", order["id"])]
    assert stock(gw, tt) == 7
    assert violations(gw) == []
    assert call(gw, "my_bookings", p_user_id=user["id"]) == [order]


def test_complete_errors(gw: psycopg.Connection, owner: psycopg.Connection) -> None:
    user, other, tt = make_user(gw), make_user(gw), make_ticket_type(gw)
    res = reserve(gw, user, tt)

    def state(user_id: str, reservation_id: str, method: str = "CARD") -> str | None:
        return sqlstate_of(gw, "complete_booking", p_user_id=user_id, p_reservation_id=reservation_id,
                           p_payment_method=method)  # fmt: skip

    assert state(user["id"], res["id"], "CASH") == "BKVAL"
    assert state(other["id"], res["id"]) == "BKNTF"
    assert state(user["id"], "00000000-0000-0000-0000-000000000000") == "BKNTF"
    call(gw, "complete_booking", p_user_id=user["id"], p_reservation_id=res["id"], p_payment_method="CARD")
    assert state(user["id"], res["id"]) == "BKRNA"

    late = reserve(gw, user, tt)
    owner.execute("UPDATE order_reservations SET expires_at = now() - interval '1 s' WHERE id = %s", (late["id"],))
    assert state(user["id"], late["id"]) == "BKREX"
    dba_call(gw, "expire_reservations")
    assert state(user["id"], late["id"]) == "BKREX"

    cancelled = reserve(gw, user, tt)
    call(gw, "cancel_reservation", p_user_id=user["id"], p_reservation_id=cancelled["id"])
    assert state(user["id"], cancelled["id"]) == "BKRNA"

    held = reserve(gw, user, tt)
    call(gw, "cancel_event", p_event_id=tt["event_id"])
    assert state(user["id"], held["id"]) == "BKSNO"
    assert violations(gw) == []


def test_completed_reservation_error_names_the_order(gw: psycopg.Connection) -> None:
    user, tt = make_user(gw), make_ticket_type(gw)
    res = reserve(gw, user, tt)
    order = call(gw, "complete_booking", p_user_id=user["id"], p_reservation_id=res["id"], p_payment_method="CARD")
    with pytest.raises(psycopg.Error) as info:
        call(gw, "complete_booking", p_user_id=user["id"], p_reservation_id=res["id"], p_payment_method="CARD")
    assert info.value.diag.sqlstate == "BKRNA"
    assert order["id"] in (info.value.diag.message_detail or "")


def test_my_bookings_newest_first_and_only_mine(gw: psycopg.Connection) -> None:
    me, someone, tt = make_user(gw), make_user(gw), make_ticket_type(gw)
    ids = []
    for _ in range(2):
        res = reserve(gw, me, tt)
        ids.append(call(gw, "complete_booking", p_user_id=me["id"], p_reservation_id=res["id"],
                        p_payment_method="BANKING")["id"])  # fmt: skip
        time.sleep(0.01)
    other = reserve(gw, someone, tt)
    call(gw, "complete_booking", p_user_id=someone["id"], p_reservation_id=other["id"], p_payment_method="ZALOPAY")
    assert [o["id"] for o in call(gw, "my_bookings", p_user_id=me["id"])] == ids[::-1]
    assert call(gw, "my_bookings", p_user_id=make_user(gw)["id"]) == []


# ---------------------------------------------------------------- check-in


def test_check_in(gw: psycopg.Connection) -> None:
    user, tt = make_user(gw), make_ticket_type(gw)
    res = reserve(gw, user, tt)
    order = call(gw, "complete_booking", p_user_id=user["id"], p_reservation_id=res["id"], p_payment_method="CARD")
    code = order["tickets"][0]["ticket_code"]
    ticket = call(gw, "check_in", p_ticket_code=code)
    assert ticket["status"] == "CHECKED_IN" and ticket["checkin_time"]
    assert sqlstate_of(gw, "check_in", p_ticket_code=code) == "BKACI"
    assert sqlstate_of(gw, "check_in", p_ticket_code="TKT-NOPE") == "BKNTF"


def test_check_in_cancelled_ticket(gw: psycopg.Connection, owner: psycopg.Connection) -> None:
    user, tt = make_user(gw), make_ticket_type(gw)
    res = reserve(gw, user, tt)
    order = call(gw, "complete_booking", p_user_id=user["id"], p_reservation_id=res["id"], p_payment_method="CARD")
    code = order["tickets"][0]["ticket_code"]
    owner.execute("UPDATE tickets SET status = 'CANCELLED' WHERE ticket_code = %s", (code,))
    assert sqlstate_of(gw, "check_in", p_ticket_code=code) == "BKTCN"


# ---------------------------------------------------------------- maintenance


def test_expire_releases_only_expired_holds(gw: psycopg.Connection, owner: psycopg.Connection) -> None:
    tt = make_ticket_type(gw, quantity=10)
    user = make_user(gw)
    dead = [reserve(gw, user, tt, 2) for _ in range(2)]
    alive = reserve(gw, user, tt, 1)
    owner.execute("UPDATE order_reservations SET expires_at = now() - interval '1 s' WHERE id = ANY(%s)",
                  ([d["id"] for d in dead],))  # fmt: skip
    assert dba_call(gw, "expire_reservations") == 2
    assert dba_call(gw, "expire_reservations") == 0
    assert stock(gw, tt) == 9
    assert owner.execute("SELECT status FROM order_reservations WHERE id = %s", (alive["id"],)).fetchone() == (
        "ACTIVE",
    )
    assert violations(gw) == []


def test_cleanup_deletes_old_finished_holds_and_keeps_orders(gw: psycopg.Connection, owner: psycopg.Connection) -> None:
    user, tt = make_user(gw), make_ticket_type(gw, quantity=10)
    done = reserve(gw, user, tt)
    order = call(gw, "complete_booking", p_user_id=user["id"], p_reservation_id=done["id"], p_payment_method="CARD")
    gone = reserve(gw, user, tt)
    call(gw, "cancel_reservation", p_user_id=user["id"], p_reservation_id=gone["id"])
    active = reserve(gw, user, tt)
    recent = reserve(gw, user, tt)
    call(gw, "cancel_reservation", p_user_id=user["id"], p_reservation_id=recent["id"])
    owner.execute("UPDATE order_reservations SET created_at = now() - interval '31 days' WHERE id <> %s",
                  (recent["id"],))  # fmt: skip

    assert dba_call(gw, "cleanup_reservations") == 2
    left = {r[0] for r in owner.execute("SELECT id::text FROM order_reservations")}
    assert left == {active["id"], recent["id"]}
    kept = call(gw, "my_bookings", p_user_id=user["id"])
    assert [o["id"] for o in kept] == [order["id"]] and kept[0]["reservation_id"] is None
    assert len(kept[0]["tickets"]) == 1
    assert violations(gw) == []
    assert sqlstate_of(owner, "cleanup_reservations", p_older_than="1 hour") == "BKVAL"


def test_check_invariants_reports_each_kind_of_violation(gw: psycopg.Connection, owner: psycopg.Connection) -> None:
    user, tt = make_user(gw), make_ticket_type(gw, quantity=10)
    res = reserve(gw, user, tt, 2)
    order = call(gw, "complete_booking", p_user_id=user["id"], p_reservation_id=res["id"], p_payment_method="CARD")
    assert violations(gw) == []
    owner.execute("UPDATE ticket_types SET available_quantity = available_quantity + 1 WHERE id = %s", (tt["id"],))
    owner.execute("DELETE FROM tickets WHERE ticket_code = %s", (order["tickets"][0]["ticket_code"],))
    owner.execute("UPDATE payments SET amount = 1 WHERE order_id = %s", (order["id"],))
    assert sorted(v[0] for v in violations(gw)) == ["order_total", "stock_balance", "tickets_issued"]


def test_the_demo_seed_creates_its_admin_once(dbname: str, owner: psycopg.Connection, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """`make run`'s seed: the admin exists afterwards (it once looked the admin up through the login
    lookup, whose answer stopped being NULL for an unknown address, and never created it)."""
    monkeypatch.setenv("BOOKING_STATE_DIR", str(tmp_path))
    seed(url_for(dbname))
    seed(url_for(dbname))  # idempotent
    rows = owner.execute("SELECT role FROM users WHERE email = %s", (ADMIN_EMAIL,)).fetchall()
    assert rows == [("admin",)]
    assert (tmp_path / "admin-login.txt").read_text().startswith(ADMIN_EMAIL)
    assert owner.execute("SELECT count(*) FROM events WHERE slug = %s", (DEMO_SLUG,)).fetchone() == (1,)
