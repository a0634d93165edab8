"""What the fuzzer (tests/test_fuzz.py) found, pinned as plain cases: nothing a client can put in
a path, query or JSON body reaches PostgreSQL as an error (each was a 500 or a refused valid
request before), and the error answers follow RFC 9457 / 6750 / 9110."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from starlette.testclient import TestClient

from gateway.errors import ERRORS
from tests.factories import make_ticket_type
from tests.http import client_for, forged, new_user, table_counts

MISSING = "00000000-0000-0000-0000-000000000000"
EVENT = {"slug": "s", "name": "n", "location": "l", "start_time": "2030-01-01T00:00:00Z",
         "end_time": "2030-01-02T00:00:00Z"}  # fmt: skip


@pytest.fixture
def client(dbname: str) -> Iterator[TestClient]:
    with client_for(dbname) as c:
        yield c


@pytest.fixture
def admin(client: TestClient, owner: psycopg.Connection) -> dict[str, str]:
    return new_user(client, owner, "admin")[1]


def _send(client: TestClient, method: str, path: str, headers: dict[str, str], body: Any) -> Any:
    if isinstance(body, bytes):
        return client.request(method, path, headers={**headers, "Content-Type": "application/json"}, content=body)
    if body is None:
        return client.request(method, path, headers=headers)
    return client.request(method, path, headers=headers, json=body)


def _fuzzer_findings(tt_id: str, event_id: str, code: str) -> list[tuple[str, str, Any]]:
    nul, surrogate = "\x00", b'"\\ud800"'
    return [
        # NUL in JSON strings (psycopg refuses NUL in text: was a 500)
        ("POST", "/auth/register", {"email": "a@b.co", "password": "p" * 10, "full_name": f"A{nul}"}),
        ("POST", "/auth/register", {"email": "a@b.co", "password": f"{nul}" * 10, "full_name": "A"}),
        ("POST", "/auth/login", {"email": f"a{nul}@b.co", "password": "x"}),
        ("POST", "/admin/events", {**EVENT, "name": f"n{nul}"}),
        ("POST", "/admin/events", {**EVENT, "location": nul}),
        ("POST", "/admin/events", {**EVENT, "description": nul}),
        ("POST", "/admin/events", {**EVENT, "banner_url": f"http://x/{nul}"}),
        ("PATCH", f"/admin/events/{event_id}", {"description": nul}),
        ("POST", f"/admin/events/{event_id}/ticket-types", {"name": nul, "price": 1, "initial_quantity": 1}),
        ("PATCH", f"/admin/ticket-types/{tt_id}", {"name": f"x{nul}"}),
        # lone surrogates in JSON strings
        ("POST", "/auth/login", b'{"email": ' + surrogate + b', "password": "x"}'),
        ("POST", "/admin/events", b'{"slug": "s", "name": ' + surrogate + b"}"),
        # bodies that are not JSON, or not UTF-8
        ("POST", "/auth/login", b"\x00"),
        ("POST", f"/bookings/complete/{MISSING}", b"\x00"),
        ("POST", "/bookings/reserve", b"\xff\xfe{"),
        # NUL in path and query parameters
        ("GET", "/events/a%00b", None),
        ("POST", "/tickets/TKT-%00/check-in", None),
        ("GET", "/events?q=%00", None),
        ("GET", "/events?q=a%00b", None),
        # path ids that are not canonical UUIDs
        ("GET", "/admin/events/null%2Cnull", None),
        ("POST", "/admin/events/null,null/publish", None),
        ("DELETE", "/bookings/reservations/0.5", None),
        ("GET", f"/admin/events/{MISSING.replace('-', '')}", None),
        ("GET", "/admin/events/{" + MISSING + "}", None),
        # dates RFC 3339 cannot write in UTC (stored as BC / year 10000 before)
        ("POST", "/admin/events", {**EVENT, "start_time": "0001-01-01T00:00:00+14:00"}),
        ("POST", "/admin/events", {**EVENT, "end_time": "9999-12-31T23:59:59-01:00"}),
        (
            "POST",
            "/admin/events",
            b'{"start_time": "0036-11-29T13:34:24+06:12", "name": "\\r\\u0004d", "slug": '
            b'"gateway", "banner_url": "\\u0087\\u0000\\"\\u001a\\u0082(", "end_time": "1024-06-10T14:34:55+23:53", '
            b'"description": "/", "location": "\\u0084\\ud90d\\udfb6"}',
        ),  # the fuzzer's first 500, as it sent it
        ("PATCH", f"/admin/events/{event_id}", {"start_time": "0001-01-01T00:00:00+00:01"}),
        ("PATCH", f"/admin/ticket-types/{tt_id}", {"end_sale_time": "9999-12-31T23:00:00-05:00"}),
        # null for a field that cannot be null (was passed on and refused by SQL)
        ("PATCH", f"/admin/events/{event_id}", {"name": None}),
        ("PATCH", f"/admin/events/{event_id}", {"start_time": None}),
        ("PATCH", f"/admin/ticket-types/{tt_id}", {"price": None}),
        # money and numbers outside what the document allows
        ("POST", f"/admin/events/{event_id}/ticket-types", {"name": "T", "price": 1.5, "initial_quantity": 1}),
        ("POST", f"/admin/events/{event_id}/ticket-types", {"name": "T", "price": "", "initial_quantity": 1}),
        ("POST", f"/admin/events/{event_id}/ticket-types", {"name": "T", "price": "1e2", "initial_quantity": 1}),
        ("POST", f"/admin/events/{event_id}/ticket-types", {"name": "T", "price": " 1", "initial_quantity": 1}),
        ("POST", f"/admin/events/{event_id}/ticket-types", {"name": "T", "price": 10**9, "initial_quantity": 1}),
        ("POST", f"/admin/events/{event_id}/ticket-types", {"name": "T", "price": True, "initial_quantity": 1}),
        ("POST", f"/admin/events/{event_id}/ticket-types", {"name": "T", "price": 1, "initial_quantity": 1e300}),
        ("POST", "/bookings/reserve", {"ticket_type_id": tt_id, "quantity": 1e308}),
        ("POST", "/bookings/reserve", {"ticket_type_id": tt_id, "quantity": 1.5}),
        # names of spaces only, e-mails the database would refuse
        ("POST", "/auth/register", {"email": "000", "password": "p" * 10, "full_name": "A"}),
        ("POST", "/auth/register", {"email": "a@b.co", "password": "p" * 10, "full_name": "   "}),
        ("POST", f"/admin/events/{event_id}/ticket-types", {"name": " ", "price": 1, "initial_quantity": 1}),
        # pages
        ("GET", "/events?limit=0", None),
        ("GET", "/events?limit=201", None),
        ("GET", "/events?limit=1.5", None),
        ("GET", "/events?limit=-1", None),
        ("GET", "/events?limit=" + "9" * 40, None),
        ("GET", "/events?cursor=nope", None),
        ("GET", "/events?cursor=" + "A" * 300, None),
        ("GET", "/events?cursor=WyJ4IiwieSJd", None),  # base64 of ["x","y"]
        ("GET", "/events?cursor=%00", None),
        ("GET", "/bookings/my-bookings?limit=abc", None),
        ("GET", "/bookings/my-bookings?cursor=W10", None),  # base64 of []
        # a ticket code too long
        ("POST", f"/tickets/{code}{'X' * 50}/check-in", None),
    ]


def test_fuzzer_findings_are_422_with_a_problem_body_and_change_nothing(
    client: TestClient, owner: psycopg.Connection, admin: dict[str, str]
) -> None:
    tt = make_ticket_type(owner, quantity=5)
    _, fan = new_user(client, owner)
    headers = {**fan, **admin}
    before = table_counts(owner)
    for method, path, body in _fuzzer_findings(tt["id"], tt["event_id"], "TKT-X"):
        r = _send(client, method, path, headers, body)
        context = (method, path, str(body)[:80], r.status_code, r.text[:300])
        assert r.status_code == 422, context
        assert r.headers["content-type"] == "application/problem+json", context
        problem = r.json()
        assert problem["code"] == "validation_failed" and problem["status"] == 422 and problem["message"], context
        assert problem["type"] == "urn:booking:problem:validation_failed" and problem["title"], context
    assert table_counts(owner) == before


def test_what_the_document_allows_is_accepted(client: TestClient, owner: psycopg.Connection, admin: Any) -> None:
    r = client.post("/admin/events", headers=admin,
                    json={**EVENT, "slug": "far-east", "start_time": "2030-01-01T00:00:00+23:59"})  # fmt: skip
    assert r.status_code == 201, r.text
    assert r.json()["start_time"] == "2029-12-31T00:01:00+00:00", "stored in UTC"
    event_id = r.json()["id"]
    for price, stored in ((100.0, "100.00"), (7, "7.00"), ("150000.5", "150000.50"), ("0.07", "0.07"),
                          ("99999999.99", "99999999.99")):  # fmt: skip
        r = client.post(f"/admin/events/{event_id}/ticket-types", headers=admin,
                        json={"name": "T", "price": price, "initial_quantity": 3.0})  # fmt: skip
        assert r.status_code == 201 and r.json()["price"] == stored, (price, r.text)
        assert r.json()["initial_quantity"] == 3
    r = client.patch(f"/admin/events/{event_id}", headers=admin, json={"description": None, "banner_url": None})
    assert r.status_code == 200 and r.json()["description"] is None
    tt = make_ticket_type(owner)
    _, fan = new_user(client, owner)
    r = client.post("/bookings/reserve", headers=fan, json={"ticket_type_id": tt["id"].upper(), "quantity": 2.0})
    assert r.status_code == 201 and r.json()["quantity"] == 2, r.text
    r = client.get(f"/events/{tt['event_id'].upper()}")
    assert r.status_code == 200, "an upper-case UUID is the same event"


def test_401_carries_a_bearer_challenge(client: TestClient, owner: psycopg.Connection) -> None:
    r = client.get("/me")
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    r = client.get("/me", headers={"Authorization": "Bearer not.a.jwt"})
    assert r.status_code == 401 and r.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    expired = forged({"sub": MISSING, "exp": 1})
    assert client.get("/me", headers=expired).headers["www-authenticate"] == 'Bearer error="invalid_token"'
    r = client.post("/auth/login", json={"email": "ghost@example.com", "password": "whatever"})
    assert r.status_code == 401 and r.json()["code"] == "invalid_credentials"
    assert r.headers["www-authenticate"] == "Bearer"


def test_405_names_the_methods_of_that_path(client: TestClient) -> None:
    cases = {
        ("PUT", "/events"): "GET, HEAD",
        ("DELETE", f"/admin/events/{MISSING}"): "GET, HEAD, PATCH",
        ("GET", "/bookings/reserve"): "POST",
        ("TRACE", "/healthz"): "GET, HEAD",
        ("OPTIONS", f"/bookings/reservations/{MISSING}"): "DELETE",
    }
    for (method, path), allow in cases.items():
        r = client.request(method, path)
        assert r.status_code == 405 and r.headers["allow"] == allow, (method, path, r.headers.get("allow"))
        assert r.json()["code"] == "method_not_allowed"


def test_every_problem_body_is_rfc9457(client: TestClient) -> None:
    for r in (client.get("/nope"), client.get("/me"), client.put("/events"), client.post("/auth/login", content=b"{")):
        body = r.json()
        assert r.headers["content-type"] == "application/problem+json"
        assert body["status"] == r.status_code == ERRORS[body["code"]].status
        assert body["type"] == f"urn:booking:problem:{body['code']}" and body["title"] == ERRORS[body["code"]].meaning
