"""Logs of the real app: JSON lines, request ids echoed on every response, route templates
instead of paths, never a token, password or ticket code."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from starlette.requests import Request
from starlette.routing import Route
from starlette.testclient import TestClient

from gateway.logs import JsonFormatter, configure_logging, rfc3339_ms
from tests.http import PASSWORD, client_for, new_user

RFC3339_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
GENERATED_ID = re.compile(r"^[0-9a-f]{32}$")
TICKET_CODE = "TKT-SECRET-0123456789"


@pytest.fixture
def logged() -> Iterator[Callable[[], list[dict[str, Any]]]]:
    """What the gateway's own (real) handler writes, parsed line by line: each must be JSON."""
    configure_logging()
    handler = logging.getLogger("gateway").handlers[0]
    assert isinstance(handler, logging.StreamHandler) and isinstance(handler.formatter, JsonFormatter)
    buffer = io.StringIO()
    previous = handler.setStream(buffer)

    def lines() -> list[dict[str, Any]]:
        parsed = [json.loads(line) for line in buffer.getvalue().splitlines()]
        for entry in parsed:
            assert {"time", "level", "logger", "message"} <= set(entry), entry
            assert RFC3339_UTC.match(entry["time"]), entry["time"]
            when = datetime.fromisoformat(entry["time"])
            assert abs(datetime.now(UTC) - when) < timedelta(minutes=5)
        return parsed

    yield lines
    handler.setStream(previous)  # type: ignore[type-var]


def access(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in lines if e["logger"] == "gateway.access"]


@pytest.fixture
def client(dbname: str) -> Iterator[TestClient]:
    with client_for(dbname) as c:
        yield c


def test_access_lines_are_json_with_template_request_id_and_user(
    client: TestClient, owner: psycopg.Connection, logged: Callable[[], list[dict[str, Any]]]
) -> None:
    me, fan = new_user(client, owner)
    _, admin = new_user(client, owner, "admin")
    logged()  # the logins so far are not what this test reads
    start = len(access(logged()))
    r = client.get("/bookings/my-bookings", headers={**fan, "X-Request-ID": "trace-42/abc"})
    assert r.status_code == 200 and r.headers["X-Request-ID"] == "trace-42/abc"
    r = client.post(f"/tickets/{TICKET_CODE}/check-in", headers=admin)
    assert r.status_code == 404
    generated = r.headers["X-Request-ID"]
    assert GENERATED_ID.match(generated)
    client.post("/auth/login", json={"email": me["email"], "password": PASSWORD})

    lines = access(logged())[start:]
    assert len(lines) == 3
    mine, check_in, login = lines
    assert mine["request_id"] == "trace-42/abc" and mine["route"] == "/bookings/my-bookings"
    assert (mine["method"], mine["status"], mine["user_id"], mine["level"]) == ("GET", 200, me["id"], "INFO")
    assert isinstance(mine["ms"], float | int) and mine["ms"] >= 0
    assert check_in["route"] == "/tickets/{ticket_code}/check-in" and check_in["request_id"] == generated
    assert check_in["status"] == 404 and check_in["message"] == "POST /tickets/{ticket_code}/check-in 404"
    assert login["user_id"] == me["id"] and login["route"] == "/auth/login"
    text = json.dumps(logged())
    for secret in (TICKET_CODE, PASSWORD, fan["Authorization"].split()[1], admin["Authorization"].split()[1]):
        assert secret not in text
    assert "Bearer" not in text and "argon2" not in text


@pytest.mark.parametrize(
    ("sent", "kept"),
    [
        ("a", True),
        ("x" * 128, True),
        ("!~" * 10, True),
        ("x" * 129, False),  # too long
        ("two words", False),  # a space is not visible
        ("tab\there", False),
        ("caf\xe9", False),  # not ASCII
        ("", False),
    ],
)
def test_request_id_is_kept_only_when_sane(client: TestClient, sent: str, kept: bool) -> None:
    r = client.get("/healthz", headers={"X-Request-ID": sent.encode("latin-1")})  # type: ignore[dict-item]
    assert r.status_code == 200
    echoed = r.headers["X-Request-ID"]
    assert echoed == sent if kept else GENERATED_ID.match(echoed), (sent, echoed)


def test_every_response_carries_the_request_id(
    client: TestClient, dbname: str, logged: Callable[[], list[dict[str, Any]]]
) -> None:
    async def boom(request: Request) -> None:
        raise RuntimeError("a bug")

    client.app.router.routes.append(Route("/boom/{ticket_code}", boom))  # type: ignore[attr-defined]
    cases = [
        ("GET", f"/nowhere/{TICKET_CODE}", {}, 404),  # no route
        ("DELETE", "/events", {}, 405),
        ("POST", "/auth/login", {"content": b"{not json"}, 422),  # unparsable JSON: validation_failed, always 422
        ("POST", "/auth/login", {"content": b"x" * 70_000}, 413),
        ("GET", "/me", {}, 401),
        ("GET", "/events", {"params": {"q": "x" * 201}}, 422),
        ("GET", f"/boom/{TICKET_CODE}", {}, 500),  # the unhandled-error handler, outside the middleware
    ]
    for i, (method, path, kwargs, status) in enumerate(cases):
        r = client.request(method, path, headers={"X-Request-ID": f"case-{i}"}, **kwargs)
        assert (r.status_code, r.headers.get("X-Request-ID")) == (status, f"case-{i}"), (path, r.text)
    lines = logged()
    by_id = {e["request_id"]: e for e in access(lines)}
    assert [by_id[f"case-{i}"]["status"] for i in range(len(cases))] == [c[3] for c in cases]
    assert by_id["case-0"]["route"] is None, "an unmatched path is not logged"
    assert by_id["case-1"]["route"] == "/events"
    assert by_id["case-6"]["route"] == "/boom/{ticket_code}"
    errors = [e for e in lines if e["logger"] == "gateway" and e["level"] == "ERROR"]
    assert len(errors) == 1 and "RuntimeError: a bug" in errors[0]["exception"]
    assert errors[0]["message"] == "unhandled error on GET /boom/{ticket_code}"
    assert TICKET_CODE not in json.dumps(lines)


def test_other_gateway_loggers_write_json(logged: Callable[[], list[dict[str, Any]]]) -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("gateway.cache").warning("listener lost: %s", "x", exc_info=True)
    (line,) = logged()
    assert (line["logger"], line["level"], line["message"]) == ("gateway.cache", "WARNING", "listener lost: x")
    assert "ValueError: boom" in line["exception"]


@pytest.mark.parametrize("whole", [0, 1, 1_700_000_000, 4_102_444_799])
def test_line_time_is_datetimes_own_text(whole: int) -> None:
    """The access line's time is formatted once per second (gateway/logs.py): it must stay the text
    datetime.isoformat gives, rounding edges included (half a microsecond, the last millisecond)."""
    fractions = [0, 0.0005, 0.000_000_5, 0.000_000_4, 0.999, 0.9995, 0.999_999_4, 0.999_999_5, 0.123_456_7]
    fractions += [n / 997 for n in range(997)]
    for t in [whole + f for f in fractions] + [whole + f for f in reversed(fractions)]:
        expected = datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        assert rfc3339_ms(t) == expected, t
