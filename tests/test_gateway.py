"""The HTTP gateway against a real PostgreSQL: every route, auth, bad input, errors."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from starlette.testclient import TestClient

from gateway import ratelimit
from gateway.errors import ERRORS
from gateway.onsale import reserve
from gateway.routes import DBA_ONLY, GATEWAY_CALLS, ROUTES
from tests.factories import make_ticket_type, violations
from tests.http import PASSWORD, client_for, forged, new_user, table_counts
from worker.calls import WORKER_CALLS

MISSING = "00000000-0000-0000-0000-000000000000"


@pytest.fixture
def client(dbname: str) -> Iterator[TestClient]:
    with client_for(dbname) as c:
        yield c


@pytest.fixture
def user(client: TestClient, owner: psycopg.Connection) -> tuple[dict[str, Any], dict[str, str]]:
    return new_user(client, owner)


@pytest.fixture
def admin(client: TestClient, owner: psycopg.Connection) -> dict[str, str]:
    return new_user(client, owner, "admin")[1]


def problem(response: Any, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == code and body["message"], body


# ------------------------------------------------------------------ auth


def test_register_login_me(client: TestClient) -> None:
    r = client.post("/auth/register", json={"email": "New@Example.com", "password": PASSWORD, "full_name": "N"})
    assert r.status_code == 201 and r.json()["email"] == "new@example.com" and r.json()["role"] == "user"
    assert "password" not in r.text and "argon2" not in r.text
    problem(client.post("/auth/register", json={"email": "new@example.com", "password": PASSWORD, "full_name": "N"}),
            409, "email_taken")  # fmt: skip
    problem(client.post("/auth/register", json={"email": "bad", "password": PASSWORD, "full_name": "N"}),
            422, "validation_failed")  # fmt: skip
    problem(client.post("/auth/register", json={"email": "a@b.co", "password": "short", "full_name": "N"}),
            422, "validation_failed")  # fmt: skip
    # Spaces around an address were always stripped: still accepted (API.md allows only additions).
    r = client.post("/auth/register", json={"email": " spaced@example.com ", "password": PASSWORD, "full_name": "S"})
    assert r.status_code == 201 and r.json()["email"] == "spaced@example.com"

    r = client.post("/auth/login", json={"email": "NEW@example.com", "password": PASSWORD})
    assert r.status_code == 200
    token = r.json()
    assert token["token_type"] == "bearer" and token["expires_in"] == 900
    me = client.get("/me", headers={"Authorization": f"Bearer {token['access_token']}"})
    assert me.status_code == 200 and me.json()["email"] == "new@example.com"

    problem(client.post("/auth/login", json={"email": "new@example.com", "password": "wrong-password"}),
            401, "invalid_credentials")  # fmt: skip
    problem(client.post("/auth/login", json={"email": "ghost@example.com", "password": PASSWORD}),
            401, "invalid_credentials")  # fmt: skip


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer not.a.jwt"},
        forged({"sub": "00000000-0000-0000-0000-000000000001", "exp": int(time.time()) - 10}),
        forged({"sub": "00000000-0000-0000-0000-000000000001"}, key="another-key-another-key-another-key!"),
        forged({"sub": "00000000-0000-0000-0000-000000000001"}, key="", algorithm="none"),
        forged({"sub": "not-a-uuid"}),
        forged({"sub": "00000000-0000-0000-0000-000000000001", "role": "root"}),
        forged({"sub": "00000000-0000-0000-0000-000000000001", "iss": "someone-else"}),
    ],
    ids=["none", "empty", "basic", "garbage", "expired", "other-key", "alg-none", "bad-sub", "bad-role", "bad-iss"],
)
def test_bad_tokens_are_401(client: TestClient, headers: dict[str, str]) -> None:
    problem(client.get("/me", headers=headers), 401, "unauthorized")
    problem(client.get("/bookings/my-bookings", headers=headers), 401, "unauthorized")
    problem(client.post("/admin/events", headers=headers, json={}), 401, "unauthorized")


def test_users_are_forbidden_on_admin_routes(client: TestClient, user: Any) -> None:
    _, headers = user
    problem(client.post("/admin/events", headers=headers, json={}), 403, "forbidden")
    problem(client.post(f"/admin/events/{MISSING}/publish", headers=headers), 403, "forbidden")
    problem(client.post("/tickets/TKT-X/check-in", headers=headers), 403, "forbidden")


# ------------------------------------------------------------------ the whole flow


def test_admin_builds_an_event_and_a_fan_buys_and_checks_in(client: TestClient, admin: Any, user: Any) -> None:
    start = datetime.now(UTC) + timedelta(days=7)
    event = {"slug": "big-show", "name": "Big Show", "location": "Hanoi",
             "start_time": start.isoformat(), "end_time": (start + timedelta(hours=3)).isoformat()}  # fmt: skip
    r = client.post("/admin/events", headers=admin, json=event)
    assert r.status_code == 201 and r.json()["status"] == "DRAFT"
    event_id = r.json()["id"]
    problem(client.post("/admin/events", headers=admin, json=event), 409, "slug_taken")
    assert client.get(f"/admin/events/{event_id}", headers=admin).json()["status"] == "DRAFT"
    problem(client.get("/events/big-show"), 404, "not_found")

    r = client.patch(f"/admin/events/{event_id}", headers=admin, json={"description": "Loud."})
    assert r.status_code == 200 and r.json()["description"] == "Loud." and r.json()["name"] == "Big Show"
    r = client.post(f"/admin/events/{event_id}/ticket-types", headers=admin,
                    json={"name": "GA", "price": "150000.00", "initial_quantity": 3})  # fmt: skip
    assert r.status_code == 201 and r.json()["available_quantity"] == 3 and r.json()["price"] == "150000.00"
    tt_id = r.json()["id"]
    r = client.patch(f"/admin/ticket-types/{tt_id}", headers=admin, json={"price": 120000})
    assert r.status_code == 200 and r.json()["price"] == "120000.00"
    assert client.post(f"/admin/events/{event_id}/publish", headers=admin).json()["status"] == "PUBLISHED"

    listed = client.get("/events").json()
    assert [e["slug"] for e in listed] == ["big-show"]
    assert [e["slug"] for e in client.get("/events", params={"q": "big"}).json()] == ["big-show"]
    live = client.get("/events/big-show").json()
    assert live["ticket_types"][0]["available_quantity"] == 3

    _, fan = user
    r = client.post("/bookings/reserve", headers=fan, json={"ticket_type_id": tt_id, "quantity": 2})
    assert r.status_code == 201, r.text
    hold = r.json()
    assert hold["status"] == "ACTIVE" and hold["quantity"] == 2 and hold["expires_at"]
    problem(client.post("/bookings/reserve", headers=fan, json={"ticket_type_id": tt_id, "quantity": 2}),
            409, "sold_out")  # fmt: skip
    problem(client.post("/bookings/reserve", headers=fan, json={"ticket_type_id": MISSING, "quantity": 1}),
            404, "not_found")  # fmt: skip

    r = client.post(f"/bookings/complete/{hold['id']}", headers=fan, json={"payment_method": "ZALOPAY"})
    assert r.status_code == 201, r.text
    order = r.json()
    assert order["status"] == "PAID" and order["total_amount"] == "240000.00"
    assert order["payment"]["method"] == "ZALOPAY" and order["payment"]["status"] == "SUCCESS"
    assert len(order["tickets"]) == 2
    problem(client.post(f"/bookings/complete/{hold['id']}", headers=fan, json={"payment_method": "CARD"}),
            409, "reservation_not_active")  # fmt: skip
    assert client.get("/bookings/my-bookings", headers=fan).json() == [order]

    code = order["tickets"][0]["ticket_code"]
    r = client.post(f"/tickets/{code}/check-in", headers=admin)
    assert r.status_code == 200 and r.json()["status"] == "CHECKED_IN"
    problem(client.post(f"/tickets/{code}/check-in", headers=admin), 409, "already_checked_in")
    problem(client.post("/tickets/TKT-NOPE/check-in", headers=admin), 404, "not_found")

    assert client.post(f"/admin/events/{event_id}/cancel", headers=admin).json()["status"] == "CANCELLED"
    problem(client.post(f"/admin/events/{event_id}/publish", headers=admin), 409, "invalid_state")
    problem(client.post("/bookings/reserve", headers=fan, json={"ticket_type_id": tt_id, "quantity": 1}),
            409, "sale_not_open")  # fmt: skip


def test_cancel_and_ownership(client: TestClient, owner: psycopg.Connection, user: Any) -> None:
    tt = make_ticket_type(owner, quantity=5)
    _, mine = user
    _, theirs = new_user(client, owner)
    hold = client.post("/bookings/reserve", headers=mine, json={"ticket_type_id": tt["id"], "quantity": 2}).json()
    problem(client.delete(f"/bookings/reservations/{hold['id']}", headers=theirs), 404, "not_found")
    problem(client.post(f"/bookings/complete/{hold['id']}", headers=theirs, json={"payment_method": "CARD"}),
            404, "not_found")  # fmt: skip
    r = client.delete(f"/bookings/reservations/{hold['id']}", headers=mine)
    assert r.status_code == 204 and r.content == b""
    problem(client.delete(f"/bookings/reservations/{hold['id']}", headers=mine), 409, "reservation_not_active")
    assert client.get(f"/events/{tt['event_id']}").json()["ticket_types"][0]["available_quantity"] == 5
    assert client.get("/bookings/my-bookings", headers=theirs).json() == []


def test_expired_hold_is_410(client: TestClient, owner: psycopg.Connection, user: Any) -> None:
    tt = make_ticket_type(owner)
    _, fan = user
    hold = client.post("/bookings/reserve", headers=fan, json={"ticket_type_id": tt["id"], "quantity": 1}).json()
    owner.execute("UPDATE order_reservations SET expires_at = now() - interval '1 s' WHERE id = %s", (hold["id"],))
    problem(client.post(f"/bookings/complete/{hold['id']}", headers=fan, json={"payment_method": "CARD"}),
            410, "reservation_expired")  # fmt: skip


def test_optimistic_strategy_is_configuration(dbname: str, owner: psycopg.Connection) -> None:
    tt = make_ticket_type(owner, quantity=5)
    with client_for(dbname, reserve_strategy="optimistic") as c:
        _, fan = new_user(c, owner)
        r = c.post("/bookings/reserve", headers=fan, json={"ticket_type_id": tt["id"], "quantity": 1})
        assert r.status_code == 201
        assert "api.reserve_tickets_optimistic" in c.get("/openapi.json").text
    calls: dict[str, int] = {}
    # The row can show calls=0 while the call is counted, until the backend reports (<= ~10 s).
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and calls.get("reserve_tickets_optimistic", 0) < 1:
        owner.execute("SELECT pg_stat_clear_snapshot()")
        calls = dict(owner.execute(
            "SELECT funcname, calls FROM pg_stat_user_functions WHERE schemaname = 'api'").fetchall())  # fmt: skip
        time.sleep(0.2)
    assert calls.get("reserve_tickets_optimistic") == 1 and "reserve_tickets" not in calls, calls


# ------------------------------------------------------------------ bad input


def _bad_requests(tt_id: str, event_id: str) -> list[tuple[str, str, Any]]:
    big = "x" * 70000
    return [
        ("POST", "/bookings/reserve", b"{not json"),
        ("POST", "/bookings/reserve", b""),
        ("POST", "/bookings/reserve", []),
        ("POST", "/bookings/reserve", "a string"),
        ("POST", "/bookings/reserve", 42),
        ("POST", "/bookings/reserve", None),
        ("POST", "/bookings/reserve", {}),
        ("POST", "/bookings/reserve", {"ticket_type_id": tt_id}),
        ("POST", "/bookings/reserve", {"ticket_type_id": tt_id, "quantity": "2"}),
        ("POST", "/bookings/reserve", {"ticket_type_id": tt_id, "quantity": 2.5}),
        ("POST", "/bookings/reserve", {"ticket_type_id": tt_id, "quantity": 0}),
        ("POST", "/bookings/reserve", {"ticket_type_id": tt_id, "quantity": 11}),
        ("POST", "/bookings/reserve", {"ticket_type_id": tt_id, "quantity": -1}),
        ("POST", "/bookings/reserve", {"ticket_type_id": tt_id, "quantity": 10**40}),
        ("POST", "/bookings/reserve", {"ticket_type_id": tt_id, "quantity": True}),
        ("POST", "/bookings/reserve", {"ticket_type_id": "not-a-uuid", "quantity": 1}),
        ("POST", "/bookings/reserve", {"ticket_type_id": 12345, "quantity": 1}),
        ("POST", "/bookings/reserve", {"ticket_type_id": tt_id, "quantity": 1, "extra": 1}),
        ("POST", "/bookings/reserve", b'{"ticket_type_id": "' + big.encode() + b'", "quantity": 1}'),
        ("POST", "/bookings/complete/not-a-uuid", {"payment_method": "CARD"}),
        ("POST", f"/bookings/complete/{MISSING}", {"payment_method": "CASH"}),
        ("POST", f"/bookings/complete/{MISSING}", {"payment_method": ["CARD"]}),
        ("POST", f"/bookings/complete/{MISSING}", {}),
        ("DELETE", "/bookings/reservations/123", None),
        ("GET", "/events/" + "x" * 300, None),
        ("GET", "/events?q=" + "x" * 300, None),
        ("POST", "/auth/register", {"email": "a@b.co", "password": "p" * 1000, "full_name": "A"}),
        ("POST", "/auth/register", {"email": "a@b.co", "password": PASSWORD, "full_name": ""}),
        ("POST", "/auth/register", {"email": ["a@b.co"], "password": PASSWORD, "full_name": "A"}),
        ("POST", "/auth/login", {"email": "a@b.co"}),
        ("POST", "/admin/events", {"slug": "Bad Slug", "name": "n", "location": "l",
                                   "start_time": "2030-01-01T00:00:00Z", "end_time": "2030-01-02T00:00:00Z"}),
        ("POST", "/admin/events", {"slug": "s", "name": "n", "location": "l",
                                   "start_time": "2030-01-01T00:00:00", "end_time": "2030-01-02T00:00:00"}),
        ("POST", "/admin/events", {"slug": "s", "name": "n", "location": "l",
                                   "start_time": "yesterday", "end_time": "2030-01-02T00:00:00Z"}),
        ("POST", "/admin/events", {"slug": "s", "name": "n", "location": "l",
                                   "start_time": "2030-01-02T00:00:00Z", "end_time": "2030-01-01T00:00:00Z"}),
        ("POST", "/admin/events", {"slug": "s", "name": "n" * 501, "location": "l",
                                   "start_time": "2030-01-01T00:00:00Z", "end_time": "2030-01-02T00:00:00Z"}),
        ("PATCH", f"/admin/events/{event_id}", {"status": "PUBLISHED"}),
        ("PATCH", f"/admin/events/{event_id}", {"end_time": "2000-01-01T00:00:00Z"}),
        ("PATCH", f"/admin/events/{event_id}", {"name": None}),
        ("PATCH", "/admin/events/nope", {"name": "x"}),
        ("POST", f"/admin/events/{event_id}/ticket-types", {"name": "T", "price": "-1", "initial_quantity": 1}),
        ("POST", f"/admin/events/{event_id}/ticket-types", {"name": "T", "price": "1.001", "initial_quantity": 1}),
        ("POST", f"/admin/events/{event_id}/ticket-types", {"name": "T", "price": "1e12", "initial_quantity": 1}),
        ("POST", f"/admin/events/{event_id}/ticket-types", {"name": "T", "price": "NaN", "initial_quantity": 1}),
        ("POST", f"/admin/events/{event_id}/ticket-types", {"name": "T", "price": 1, "initial_quantity": 10**10}),
        ("PATCH", f"/admin/ticket-types/{tt_id}", {"available_quantity": 1000}),
        ("PATCH", f"/admin/ticket-types/{tt_id}", {"price": "abc"}),
        ("POST", "/admin/events", big),
    ]  # fmt: skip


def test_malformed_requests_are_4xx_with_a_code_and_change_nothing(
    client: TestClient, owner: psycopg.Connection, admin: dict[str, str]
) -> None:
    tt = make_ticket_type(owner, quantity=5)
    _, fan = new_user(client, owner)
    before = table_counts(owner)
    headers = {**fan, **admin}  # admin's token wins: every route is reachable
    for method, path, body in _bad_requests(tt["id"], tt["event_id"]):
        if isinstance(body, bytes):
            r = client.request(method, path, headers={**headers, "Content-Type": "application/json"}, content=body)
        elif body is None:
            r = client.request(method, path, headers=headers)
        else:
            r = client.request(method, path, headers=headers, json=body)
        assert 400 <= r.status_code < 500, (method, path, str(body)[:80], r.status_code, r.text[:200])
        assert r.json()["code"] in {"validation_failed", "payload_too_large", "not_found"}, (path, r.text[:200])
        assert "Traceback" not in r.text and "SELECT" not in r.text
    assert table_counts(owner) == before


def test_validation_errors_name_the_field(client: TestClient, user: Any) -> None:
    _, fan = user
    r = client.post("/bookings/reserve", headers=fan, json={"ticket_type_id": MISSING, "quantity": 50})
    problem(r, 422, "validation_failed")
    assert r.json()["message"].startswith("quantity")
    r = client.post("/bookings/reserve", headers=fan, content=b"{")
    problem(r, 422, "validation_failed")
    assert r.json()["message"].startswith("the body is not valid JSON")


def test_unknown_route_and_method(client: TestClient) -> None:
    problem(client.get("/nope"), 404, "not_found")
    problem(client.put("/events"), 405, "method_not_allowed")


# ------------------------------------------------------------------ operations


def test_health_ready_openapi(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ready"}
    doc = client.get("/openapi.json").json()
    for e in ROUTES:
        op = doc["paths"][e.path][e.method.lower()]
        assert str(e.status) in op["responses"]
        if e.body is not None:
            assert "requestBody" in op and "413" in op["responses"] and "422" in op["responses"]
        if e.status != 204:
            assert "schema" in op["responses"][str(e.status)]["content"]["application/json"], e.path
        for code in e.errors:
            assert code in op["responses"][str(ERRORS[code].status)]["description"], (e.path, code)
        assert {"405", "500", "503"} <= set(op["responses"]), e.path
        if e.auth != "public":
            assert "WWW-Authenticate" in op["responses"]["401"]["headers"]
    assert "409" in doc["paths"]["/bookings/reserve"]["post"]["responses"]
    assert "hold_period" in doc["paths"]["/bookings/reserve"]["post"]["summary"]


def test_every_route_calls_a_real_function_and_every_function_is_routed_or_dba_only(
    owner: psycopg.Connection,
) -> None:
    functions = dict(owner.execute(
        "SELECT proname, coalesce(obj_description(oid, 'pg_proc'), '') FROM pg_proc"
        " WHERE pronamespace = 'api'::regnamespace").fetchall())  # fmt: skip
    routed = {e.function for e in ROUTES} | reserve.ALL_FUNCTIONS  # every strategy's function
    routed |= GATEWAY_CALLS  # called by the gateway outside the route table
    routed |= ratelimit.ALL_FUNCTIONS  # the rate-limit check and the failed-login record
    assert routed <= set(functions), routed - set(functions)
    assert not routed & WORKER_CALLS, routed & WORKER_CALLS
    unrouted = set(functions) - routed - WORKER_CALLS  # the worker's (tests/test_conventions.py)
    monitor = {name for name, doc in functions.items() if doc.startswith("(monitor)")}  # tests/test_ops_monitoring.py
    assert not routed & monitor, routed & monitor
    unrouted -= monitor
    assert unrouted == DBA_ONLY, unrouted ^ DBA_ONLY
    for name in DBA_ONLY:
        assert "(DBA-only)" in functions[name], name
    # Least privilege: the gateway's role may run exactly what it calls (sql/gateway_grants.sql).
    granted = {row[0] for row in owner.execute(
        "SELECT proname FROM pg_proc WHERE pronamespace = 'api'::regnamespace"
        " AND has_function_privilege('booking_gateway', oid, 'EXECUTE')")}  # fmt: skip
    assert granted == routed | {reserve.RELEASE_FUNCTION}, granted ^ (routed | {reserve.RELEASE_FUNCTION})


def test_login_then_token_for_deleted_user_is_404_not_500(client: TestClient, owner: psycopg.Connection) -> None:
    user, _ = new_user(client, owner)
    # A valid token whose session was never recorded (deleting a user revokes its sessions,
    # then the answer is 401: tests/test_sessions.py): the database's answer is 404, not 500.
    headers = forged({"sub": user["id"]})
    tt = make_ticket_type(owner)
    owner.execute("DELETE FROM users WHERE id = %s", (user["id"],))
    problem(client.get("/me", headers=headers), 404, "not_found")
    problem(client.post("/bookings/reserve", headers=headers, json={"ticket_type_id": tt["id"], "quantity": 1}),
            404, "not_found")  # fmt: skip
    assert violations(owner) == []


def test_a_verified_token_stops_working_when_it_expires(client: TestClient, user: Any) -> None:
    me, _ = user
    # exp is whole seconds: 3 s ahead is 2-3 s of validity, wherever in the second we are.
    exp = int(time.time()) + 3
    headers = forged({"sub": me["id"], "exp": exp})
    assert client.get("/me", headers=headers).status_code == 200  # verified, and remembered
    assert client.get("/me", headers=headers).status_code == 200
    time.sleep(max(0.0, exp - time.time()) + 0.2)  # until just past exp, by the clock itself
    problem(client.get("/me", headers=headers), 401, "unauthorized")
