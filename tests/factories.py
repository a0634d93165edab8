"""Builders for test data, all through the api functions (as the gateway would)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from tests.conftest import OWNER_ROLE, call, dba_call, url_for

_seq = itertools.count(1)
NOW = datetime.now(UTC)


def make_user(conn: psycopg.Connection, role: str = "user") -> dict[str, Any]:
    n = next(_seq)
    user: dict[str, Any] = call(
        conn, "register_user", p_email=f"user{n}@example.com", p_password_hash="$argon2id$x", p_full_name=f"U{n}"
    )
    if role != "user":
        user = dba_call(conn, "set_user_role", p_email=user["email"], p_role=role)
    return user


def make_event(conn: psycopg.Connection, publish: bool = True, **fields: Any) -> dict[str, Any]:
    n = next(_seq)
    args: dict[str, Any] = {
        "p_slug": f"event-{n}",
        "p_name": f"Concert {n}",
        "p_location": "Hanoi",
        "p_start_time": NOW + timedelta(days=10),
        "p_end_time": NOW + timedelta(days=10, hours=3),
        **fields,
    }
    event: dict[str, Any] = call(conn, "create_event", **args)
    if publish:
        event = call(conn, "publish_event", p_event_id=event["id"])
    return event


def make_ticket_type(
    conn: psycopg.Connection, quantity: int = 100, price: str = "150000.00", publish: bool = True, **fields: Any
) -> dict[str, Any]:
    event = make_event(conn, publish=False)
    tt: dict[str, Any] = call(
        conn,
        "create_ticket_type",
        p_event_id=event["id"],
        p_name="Standard",
        p_price=price,
        p_initial_quantity=quantity,
        **fields,
    )
    if publish:
        call(conn, "publish_event", p_event_id=event["id"])
    tt["event"] = event
    return tt


def reserve(conn: psycopg.Connection, user: dict[str, Any], tt: dict[str, Any], quantity: int = 1) -> Any:
    return call(conn, "reserve_tickets", p_user_id=user["id"], p_ticket_type_id=tt["id"], p_quantity=quantity)


def stock(conn: psycopg.Connection, tt: dict[str, Any]) -> int:
    event = call(conn, "get_event", p_id_or_slug=tt["event_id"])
    return next(t["available_quantity"] for t in event["ticket_types"] if t["id"] == tt["id"])


def violations(conn: psycopg.Connection) -> list[tuple[Any, ...]]:
    """api.check_invariants() on conn's database (a DBA-only function: run as the owner)."""
    with psycopg.connect(url_for(conn.info.dbname, OWNER_ROLE), autocommit=True) as owner:
        return owner.execute("SELECT * FROM api.check_invariants()").fetchall()
