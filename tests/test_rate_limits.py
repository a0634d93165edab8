"""Rate limits: GCRA counters in PostgreSQL behind the gateway's coalesced check, the failed-login
throttle per e-mail address, the client address (TRUSTED_PROXIES + X-Forwarded-For), two
gateway instances sharing one budget, RATE_LIMITS=off, and the DBA functions."""

from __future__ import annotations

import argparse
import asyncio
import shutil
import threading
import time
from collections import Counter
from ipaddress import ip_network
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from bench.__main__ import LIMITS_ON_ROW, Bench, Row
from bench.pyload import build_request, parse_head, run_load
from gateway.app import create_app
from gateway.config import ConfigError, Settings
from gateway.errors import ApiError
from gateway.ratelimit import Check, address_key, check_arrays, client_address
from gateway.routes import RATE_CLASSES, ROUTES
from tests.conftest import call, dba_call, sqlstate_of
from tests.factories import make_ticket_type, make_user, violations
from tests.http import PASSWORD, PASSWORD_HASH, client_for, forged, settings_for
from tests.live import LiveServer
from tests.test_serving import Served


def set_rule(conn: psycopg.Connection, rate_class: str, scope: str, limit: int | None, period: str) -> None:
    dba_call(conn, "set_rate_limit", p_class=rate_class, p_scope=scope, p_max_requests=limit, p_period=period)


def checks(gw: psycopg.Connection, *requests: tuple[str, str | None, str | None]) -> list[int]:
    """Per request: 0 when allowed, else the seconds to wait (the function returns refusals only)."""
    rows = gw.execute(
        "SELECT * FROM api.check_rate_limits(%s::text[], %s::uuid[], %s::text[])",
        ([r[0] for r in requests], [r[1] for r in requests], [r[2] for r in requests]),
    ).fetchall()
    waits = dict(rows)
    assert all(w >= 1 for w in waits.values()) and set(waits) <= set(range(1, len(requests) + 1))
    return [waits.get(n, 0) for n in range(1, len(requests) + 1)]


def counters(owner: psycopg.Connection, prefix: str = "") -> dict[str, Any]:
    return {r[0]: r[1] for r in owner.execute("SELECT key, tat FROM rate_limit_counters WHERE starts_with(key, %s)",
                                             (prefix,))}  # fmt: skip


def reserve_body(tt: dict[str, Any]) -> dict[str, Any]:
    return {"ticket_type_id": tt["id"], "quantity": 1}


def is_rate_limited(r: httpx.Response | Any) -> bool:
    if r.status_code != 429:
        return False
    assert r.json()["code"] == "rate_limited", r.text
    assert int(r.headers["Retry-After"]) >= 1
    return True


# ------------------------------------------------------------------ SQL: the GCRA itself


def test_gcra_passes_the_first_in_arrival_order_and_refused_hits_move_nothing(
    gw: psycopg.Connection, owner: psycopg.Connection
) -> None:
    set_rule(owner, "bookings", "user", 3, "1 minute")
    set_rule(owner, "bookings", "address", 1000, "1 day")  # a long window: remaining does not drift
    a, b = make_user(gw)["id"], make_user(gw)["id"]
    answers = checks(gw, *[("bookings", a, "192.0.2.1")] * 5, ("bookings", b, "192.0.2.1"))
    assert answers[:3] == [0, 0, 0] and answers[5] == 0
    # 3 per minute: one more every 20 s; the 4th must wait for the first to leave the window.
    assert 1 <= answers[3] <= 20 and answers[4] == answers[3]
    before = counters(owner, f"bookings:user:{a}")
    assert checks(gw, ("bookings", a, "192.0.2.1"))[0] >= 1
    assert counters(owner, f"bookings:user:{a}") == before, "a refused hit moved the counter"
    # The address counted only the requests that passed (4 of 7), not the refused ones.
    state = owner.execute("SELECT remaining FROM api.rate_limit_state('bookings:address:192.0.2.1')").fetchone()
    assert state == (1000 - 4,)


def test_a_request_refused_by_one_key_is_not_counted_by_its_other_keys(
    gw: psycopg.Connection, owner: psycopg.Connection
) -> None:
    set_rule(owner, "bookings", "user", 100, "1 minute")
    set_rule(owner, "bookings", "address", 2, "1 minute")
    users = [make_user(gw)["id"] for _ in range(3)]
    answers = checks(gw, *[("bookings", u, "198.51.100.9") for u in users])
    assert answers[:2] == [0, 0] and answers[2] >= 1
    remaining = owner.execute("SELECT remaining FROM api.rate_limit_state(%s)", (f"bookings:user:{users[2]}",))
    assert remaining.fetchall() in ([], [(100,)])


def test_classes_and_scopes_without_a_rule_are_not_limited(gw: psycopg.Connection, owner: psycopg.Connection) -> None:
    set_rule(owner, "admin", "user", None, "1 minute")  # removes the rule
    u = make_user(gw)["id"]
    assert checks(gw, *[("admin", u, "192.0.2.7")] * 50) == [0] * 50
    assert checks(gw, ("browse", None, None), ("nonsense", u, "x")) == [0, 0]
    assert counters(owner, "admin:") == {}


def test_check_refuses_misaligned_arrays(gw: psycopg.Connection) -> None:
    assert sqlstate_of(gw, "check_rate_limits", p_classes=["auth"], p_user_ids=[], p_addresses=["a"]) == "BKVAL"
    assert checks(gw) == []


def test_dba_functions(gw: psycopg.Connection, owner: psycopg.Connection) -> None:
    rules = {(r[0], r[1]): (r[2], r[3]) for r in owner.execute("SELECT * FROM api.rate_limits()")}
    assert rules[("bookings", "user")][0] == 60 and rules[("login_failures", "email")][0] == 10
    assert sqlstate_of(owner, "set_rate_limit", p_class="browse", p_scope="email", p_max_requests=5,
                       p_period="1 minute") == "BKVAL"  # fmt: skip
    assert sqlstate_of(owner, "set_rate_limit", p_class="browse", p_scope="user", p_max_requests=0,
                       p_period="1 minute") == "BKVAL"  # fmt: skip
    assert sqlstate_of(owner, "clear_rate_limit", p_key_prefix=None) == "BKVAL"
    set_rule(owner, "browse", "address", 2, "1 second")
    assert checks(gw, ("browse", None, "192.0.2.50"), ("browse", None, "192.0.2.51")) == [0, 0]
    assert set(counters(owner, "browse:address:192.0.2.5")) == {"browse:address:192.0.2.50",
                                                                 "browse:address:192.0.2.51"}  # fmt: skip
    assert call(owner, "clear_rate_limit", p_key_prefix="browse:address:192.0.2.51") == 1
    time.sleep(1.2)  # the 1-second window has passed: the counter limits nothing any more
    assert call(owner, "purge_rate_limits") >= 1
    assert counters(owner, "browse:address:192.0.2.5") == {}
    for function in ("rate_limits", "set_rate_limit", "rate_limit_state", "clear_rate_limit", "purge_rate_limits"):
        assert owner.execute(
            "SELECT obj_description(%s::regproc, 'pg_proc') LIKE '(DBA-only)%%'", (f"api.{function}",)
        ).fetchone() == (True,)
        assert gw.execute("SELECT has_function_privilege(%s::regproc, 'EXECUTE')",
                          (f"api.{function}",)).fetchone() == (False,)  # fmt: skip


# ------------------------------------------------------------------ the client address


def test_check_arrays_quote_what_they_must() -> None:
    batch = [Check("bookings", "6f1c1f4e-0000-4000-8000-000000000001", '1.2.3.4'),
             Check("auth", None, 'we"ird\\name, {x}'), Check("browse", None, None)]  # fmt: skip
    args = check_arrays(batch)
    assert args["p_classes"] == "{bookings,auth,browse}"
    assert args["p_user_ids"] == "{6f1c1f4e-0000-4000-8000-000000000001,NULL,NULL}"
    assert args["p_addresses"] == '{"1.2.3.4","we\\"ird\\\\name, {x}",NULL}'


def test_check_arrays_read_back_in_postgresql(gw: psycopg.Connection) -> None:
    args = check_arrays([Check("auth", None, 'we"ird\\name, {x}'), Check("browse", None, None)])
    assert gw.execute("SELECT %s::text[]", (args["p_addresses"],)).fetchone() == (['we"ird\\name, {x}', None],)


def test_client_address_believes_only_trusted_proxies() -> None:
    trusted = [ip_network("10.0.0.0/8"), ip_network("::1/128")]
    assert client_address("203.0.113.5", ["1.2.3.4"], trusted) == "203.0.113.5"  # untrusted peer: header ignored
    assert client_address("10.0.0.2", [], trusted) == "10.0.0.2"
    assert client_address("10.0.0.2", ["1.2.3.4, 198.51.100.7"], trusted) == "198.51.100.7"  # spoofed left part
    assert client_address("10.0.0.2", ["1.2.3.4", "198.51.100.7, 10.0.0.9"], trusted) == "198.51.100.7"
    assert client_address("::1", ["10.0.0.3, 10.0.0.4"], trusted) == "10.0.0.3"  # all trusted: left-most
    assert client_address("10.0.0.2", ["1.2.3.4"], []) == "10.0.0.2"  # nothing trusted
    # Entries with the port some proxies append (review finding: they were a 422).
    assert client_address("10.0.0.2", ["198.51.100.7:5678"], trusted) == "198.51.100.7"
    assert client_address("10.0.0.2", ["[2001:db8::1]:443"], trusted) == "2001:db8::1"
    assert client_address("10.0.0.2", ["2001:db8::1"], trusted) == "2001:db8::1"
    with pytest.raises(ApiError) as bad:
        client_address("10.0.0.2", ["not-an-address"], trusted)
    assert bad.value.code == "validation_failed"
    with pytest.raises(ApiError):
        client_address("10.0.0.2", [",".join(["192.0.2.1"] * 40)], trusted)


def test_address_keys() -> None:
    assert address_key("203.0.113.5") == "203.0.113.5"
    assert address_key("2001:db8:1:2:aaaa::1") == address_key("2001:db8:1:2:bbbb::2") == "2001:db8:1:2::/64"
    assert address_key("::ffff:203.0.113.5") == "203.0.113.5"
    assert address_key("testclient") == "testclient"


def test_settings() -> None:
    env = {"DATABASE_URL": "postgresql://x@y/z", "JWT_SECRET": "s"}
    default = Settings.from_env(env)
    assert default.rate_limits is True and default.trusted_proxies == ()
    s = Settings.from_env({**env, "RATE_LIMITS": "off", "TRUSTED_PROXIES": "10.0.0.0/8, ::1,192.0.2.1"})
    assert s.rate_limits is False
    assert [str(n) for n in s.trusted_proxies] == ["10.0.0.0/8", "::1/128", "192.0.2.1/32"]
    for bad in ({"TRUSTED_PROXIES": "10.0.0.0/33"}, {"TRUSTED_PROXIES": "proxy.example"}, {"RATE_LIMITS": "maybe"}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            Settings.from_env({**env, **bad})


def test_openapi_documents_429_with_retry_after_on_every_limited_route(dbname: str) -> None:
    doc = client_for(dbname).get("/openapi.json").json()
    for path, ops in doc["paths"].items():
        for op in ops.values():
            if path in ("/healthz", "/readyz", "/metrics", "/events/{event_id}/waiting-room"):  # no limit: page, probes
                assert "429" not in op["responses"]
            elif path.startswith("/payments/"):  # the providers' callbacks: never limited (payments/callbacks.py)
                assert "429" not in op["responses"]
            else:
                assert "Retry-After" in op["responses"]["429"]["headers"], path


# ------------------------------------------------------------------ over HTTP


def test_a_flooding_user_gets_429_while_another_is_served_and_waiting_serves_again(
    dbname: str, gw: psycopg.Connection, owner: psycopg.Connection
) -> None:
    set_rule(owner, "bookings", "user", 2, "2 seconds")  # two at once, then one a second
    tt = make_ticket_type(gw, quantity=100)
    flooder, other = make_user(gw), make_user(gw)
    with client_for(dbname, rate_limits=True) as client:
        answers = [client.post("/bookings/reserve", json=reserve_body(tt), headers=forged({"sub": flooder["id"]}))
                   for _ in range(4)]  # fmt: skip
        assert [r.status_code for r in answers[:2]] == [201, 201]
        assert all(is_rate_limited(r) for r in answers[2:])
        served = client.post("/bookings/reserve", json=reserve_body(tt), headers=forged({"sub": other["id"]}))
        assert served.status_code == 201, served.text
        time.sleep(int(answers[-1].headers["Retry-After"]))  # exact: the wait it was told is enough
        again = client.post("/bookings/reserve", json=reserve_body(tt), headers=forged({"sub": flooder["id"]}))
        assert again.status_code == 201, again.text
        # Routes of another class have budgets of their own.
        assert client.get("/me", headers=forged({"sub": flooder["id"]})).status_code == 200
    assert violations(gw) == []


def test_rate_limits_off_makes_no_check(dbname: str, gw: psycopg.Connection, owner: psycopg.Connection) -> None:
    set_rule(owner, "bookings", "user", 1, "1 minute")
    set_rule(owner, "login_failures", "email", 1, "15 minutes")
    tt = make_ticket_type(gw, quantity=100)
    user = make_user(gw)
    with client_for(dbname, rate_limits=False) as client:
        for _ in range(5):
            r = client.post("/bookings/reserve", json=reserve_body(tt), headers=forged({"sub": user["id"]}))
            assert r.status_code == 201, r.text
        for _ in range(3):
            r = client.post("/auth/login", json={"email": user["email"], "password": "wrong-password-1"})
            assert r.status_code == 401
    assert counters(owner) == {}, "RATE_LIMITS=off must not touch the counters"
    # The same with limits on: the second reserve is refused.
    with client_for(dbname, rate_limits=True) as client:
        headers = forged({"sub": user["id"]})
        codes = [client.post("/bookings/reserve", json=reserve_body(tt), headers=headers).status_code for _ in range(2)]
    assert codes == [201, 429]


def test_failed_logins_are_throttled_per_email_whatever_the_address(
    dbname: str, gw: psycopg.Connection, owner: psycopg.Connection
) -> None:
    set_rule(owner, "login_failures", "email", 3, "15 minutes")
    victim, bystander = make_user(gw), make_user(gw)
    for u in (victim, bystander):
        owner.execute("UPDATE users SET password_hash = %s WHERE id = %s", (PASSWORD_HASH, u["id"]))
    app = create_app(settings_for(dbname, rate_limits=True, trusted_proxies="127.0.0.1/32"))
    with LiveServer(app) as server, httpx.Client(base_url=server.url) as http:

        def login(email: str, password: str, source: str) -> httpx.Response:
            return http.post("/auth/login", json={"email": email, "password": password},
                             headers={"X-Forwarded-For": source})  # fmt: skip

        sources = ["203.0.113.10", "198.51.100.20", "203.0.113.10"]
        for source in sources:  # three wrong passwords from two addresses
            assert login(victim["email"], "wrong-password-1", source).status_code == 401
        right = login(victim["email"], PASSWORD, "192.0.2.99")  # a third address, the right password
        assert is_rate_limited(right)
        assert int(right.headers["Retry-After"]) > 60  # 3 per 15 minutes: one more every 5 minutes
        assert login(bystander["email"], PASSWORD, "203.0.113.10").status_code == 200  # others unaffected
        # An unknown address gets the same answers (no user enumeration), also in e-mail case.
        for source in sources:
            assert login("  Nobody@Example.com ", "wrong-password-1", source).status_code == 401
        assert is_rate_limited(login("nobody@example.com", "whatever-password", "192.0.2.1"))
        # The counters are keyed by the address the proxy saw, not by the proxy.
        keys = set(counters(owner))
        assert {"auth:address:203.0.113.10", "auth:address:198.51.100.20"} <= keys
        assert not any(k.startswith("auth:address:127.") for k in keys)
        # A DBA lifts the throttle.
        assert call(owner, "clear_rate_limit", p_key_prefix=f"login_failures:email:{victim['email']}") == 1
        assert login(victim["email"], PASSWORD, "192.0.2.99").status_code == 200
        # A malformed X-Forwarded-For from the trusted proxy: 422, not a 500.
        bad = login(victim["email"], PASSWORD, "not-an-address")
        assert bad.status_code == 422 and bad.json()["code"] == "validation_failed"


def test_an_untrusted_peers_forwarded_for_is_ignored(
    dbname: str, gw: psycopg.Connection, owner: psycopg.Connection
) -> None:
    set_rule(owner, "browse", "address", 3, "1 minute")
    app = create_app(settings_for(dbname, rate_limits=True, trusted_proxies="10.0.0.0/8"))
    with LiveServer(app) as server, httpx.Client(base_url=server.url) as http:
        codes = [http.get("/events", headers={"X-Forwarded-For": f"203.0.113.{i}"}).status_code for i in range(5)]
    assert codes == [200, 200, 200, 429, 429]
    assert set(counters(owner, "browse:")) == {"browse:address:127.0.0.1"}


def test_two_gateway_instances_share_one_budget(dbname: str, gw: psycopg.Connection, owner: psycopg.Connection) -> None:
    set_rule(owner, "bookings", "user", 6, "1 minute")
    tt = make_ticket_type(gw, quantity=100)
    user = make_user(gw)
    headers = forged({"sub": user["id"]})
    app_a = create_app(settings_for(dbname, rate_limits=True))
    app_b = create_app(settings_for(dbname, rate_limits=True))
    with LiveServer(app_a) as a, LiveServer(app_b) as b:
        codes = []
        for i in range(10):
            url = (a if i % 2 else b).url
            codes.append(httpx.post(f"{url}/bookings/reserve", json=reserve_body(tt), headers=headers).status_code)
    assert Counter(codes) == {201: 6, 429: 4}, codes
    assert codes[:6] == [201] * 6
    assert violations(gw) == []


async def _flood(url: str, jobs: list[tuple[dict[str, str], dict[str, Any]]]) -> list[int]:
    limits = httpx.Limits(max_connections=len(jobs))
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:
        answers = await asyncio.gather(*(client.post("/bookings/reserve", json=body, headers=headers)
                                         for headers, body in jobs))  # fmt: skip
    return [r.status_code for r in answers]


def test_concurrent_floods_are_counted_exactly_through_the_coalescer(
    dbname: str, gw: psycopg.Connection, owner: psycopg.Connection
) -> None:
    set_rule(owner, "bookings", "user", 10, "1 minute")
    set_rule(owner, "bookings", "address", 1000, "1 day")  # a long window: remaining does not drift
    tt = make_ticket_type(gw, quantity=500)
    users = [make_user(gw) for _ in range(4)]
    jobs = [(forged({"sub": u["id"]}), reserve_body(tt)) for u in users for _ in range(25)]
    app = create_app(settings_for(dbname, rate_limits=True, pool_max=4))
    with LiveServer(app) as server:
        codes = asyncio.run(_flood(server.url, jobs))
        calls = app.state.gateway.limiter.calls
    per_user = [Counter(codes[i * 25 : (i + 1) * 25]) for i in range(4)]
    assert per_user == [Counter({201: 10, 429: 15})] * 4, per_user
    assert 0 < calls <= 100
    remaining = owner.execute("SELECT remaining FROM api.rate_limit_state('bookings:address:127.0.0.1')").fetchone()
    assert remaining == (1000 - 40,)  # only the 40 that passed counted
    assert violations(gw) == []


def test_every_route_has_a_rate_class() -> None:
    classes = {(e.method, e.path): e.rate_class for e in ROUTES}
    assert classes[("POST", "/auth/login")] == classes[("POST", "/auth/register")] == "auth"
    assert classes[("GET", "/events")] == classes[("GET", "/bookings/my-bookings")] == "browse"
    assert classes[("POST", "/bookings/reserve")] == classes[("DELETE", "/bookings/reservations/{reservation_id}")]
    assert classes[("POST", "/bookings/reserve")] == "bookings"
    assert classes[("GET", "/admin/events/{event_id}")] == classes[("POST", "/tickets/{ticket_code}/check-in")]
    assert classes[("POST", "/tickets/{ticket_code}/check-in")] == "admin"
    assert set(classes.values()) <= set(RATE_CLASSES)


def test_operational_routes_are_not_limited(dbname: str, owner: psycopg.Connection) -> None:
    set_rule(owner, "browse", "address", 1, "1 minute")
    with client_for(dbname, rate_limits=True) as client:
        assert [client.get("/healthz").status_code for _ in range(3)] == [200] * 3
        assert [client.get("/readyz").status_code for _ in range(3)] == [200] * 3
        assert [client.get("/openapi.json").status_code for _ in range(3)] == [200] * 3
        assert [client.get("/events").status_code for _ in range(2)] == [200, 429]


# ------------------------------------------------------------------ the bench's own parts


def test_bench_reports_limits_on_against_off() -> None:
    bench = Bench(argparse.Namespace(workers=2, http_seconds=1, seconds=1))
    try:
        hot = Row("http", "reserve hot (coalesced)", 1000, 5000.0, 5000.0, 1, 1, 1, 1, 1, "0")
        readyz = Row("http", "readyz (ceiling: SELECT 1 via the pool)", 1000, 5000.0, None, 1, 1, 1, 1, 1, "0")
        on = Row("http", LIMITS_ON_ROW, 1000, 4600.0, 4600.0, 1, 1, 1, 1, 1, "0")
        bench.rows = [readyz, hot, on]
        text = "\n".join(bench.summary())
        assert "hot reserve with RATE_LIMITS=on 4,600 req/s = **92%** of RATE_LIMITS=off 5,000 req/s" in text
        assert "hot reserve with rate limits on >= 90% of limits off: 92% **met**" in text
        bench.rows = [readyz, hot, Row("http", LIMITS_ON_ROW, 1000, 4000.0, 4000.0, 1, 1, 1, 1, 1, "0")]
        assert "80% **not met**" in "\n".join(bench.summary())
    finally:
        shutil.rmtree(bench.tmp, ignore_errors=True)


def test_the_python_load_generator_against_a_real_server(dbname: str) -> None:
    request = build_request("GET", "/healthz", {"Accept": "application/json"})
    assert request.startswith(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n") and request.endswith(b"\r\n\r\n")
    assert parse_head(b"HTTP/1.1 429 Too Many Requests\r\ncontent-length: 12\r\nretry-after: 3") == (429, 12)
    post = build_request("POST", "/x", {}, b'{"a": 1}')
    assert b"Content-Length: 8\r\n\r\n{" in post
    with LiveServer(create_app(settings_for(dbname))) as server:
        result = asyncio.run(run_load("127.0.0.1", server.port, [request], connections=4, seconds=1, warmup=0.2))
    assert result.requests > 10 and set(result.statuses) == {200} and result.socket_errors == 0
    assert result.rate == result.requests / 1 and result.percentile(50) is not None


def test_a_failed_check_call_answers_every_request_in_it(
    dbname: str, gw: psycopg.Connection, owner: psycopg.Connection
) -> None:
    """The check call cannot run (its grant revoked): every waiting request gets an answer, the
    gateway's error, and none goes on to the route uncounted."""
    tt = make_ticket_type(gw, quantity=100)
    users = [make_user(gw) for _ in range(5)]
    owner.execute("REVOKE EXECUTE ON FUNCTION api.check_rate_limits FROM booking_gateway")
    app = create_app(settings_for(dbname, rate_limits=True))
    with LiveServer(app) as server:
        codes = asyncio.run(_flood(server.url, [(forged({"sub": u["id"]}), reserve_body(tt)) for u in users * 4]))
    assert set(codes) == {500}, codes
    assert owner.execute("SELECT count(*) FROM order_reservations").fetchone() == (0,)


def test_real_gateway_processes_share_one_budget_and_ignore_forwarded_for(
    dbname: str, gw: psycopg.Connection, owner: psycopg.Connection, tmp_path: Path
) -> None:
    """As `make run` serves it (dbctl's uvicorn arguments; RATE_LIMITS left at its default, on):
    two instances of two worker processes each count one budget, and uvicorn's own
    X-Forwarded-For rewrite is off, so a client's header moves nothing."""
    set_rule(owner, "bookings", "user", 6, "1 minute")
    set_rule(owner, "browse", "address", 4, "1 minute")
    tt = make_ticket_type(gw, quantity=100)
    headers = forged({"sub": make_user(gw)["id"]})
    env = {"WEB_CONCURRENCY": "2", "RATE_LIMITS": "", "TRUSTED_PROXIES": ""}
    servers = [Served(dbname, tmp_path / f"gateway-{n}.log", **env).start() for n in range(2)]
    try:
        urls = [f"http://127.0.0.1:{s.port}" for s in servers]
        codes = [httpx.post(f"{urls[i % 2]}/bookings/reserve", json=reserve_body(tt), headers=headers).status_code
                 for i in range(10)]  # fmt: skip
        spoofed = [httpx.get(f"{urls[i % 2]}/events", headers={"X-Forwarded-For": f"203.0.113.{i}"}).status_code
                   for i in range(6)]  # fmt: skip
    finally:
        for s in servers:
            s.stop()
    assert codes == [201] * 6 + [429] * 4, codes
    assert spoofed == [200] * 4 + [429] * 2, spoofed
    assert set(counters(owner, "browse:")) == {"browse:address:127.0.0.1"}
    assert violations(gw) == []


def test_concurrent_wrong_guesses_cannot_outrun_the_login_throttle(dbname: str, owner: psycopg.Connection) -> None:
    """Review finding: a check-then-count let 40 simultaneous guesses all be checked."""
    user = make_user(owner)
    app = create_app(settings_for(dbname, rate_limits=True))
    statuses: list[int] = []
    with LiveServer(app) as server:
        barrier = threading.Barrier(40)

        def guess(n: int) -> None:
            with httpx.Client(base_url=server.url, timeout=30) as http:
                barrier.wait()
                r = http.post("/auth/login", json={"email": user["email"], "password": f"wrong-{n}"})
                statuses.append(r.status_code)

        threads = [threading.Thread(target=guess, args=(n,)) for n in range(40)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    # The rule is 10 failures per 15 minutes per e-mail address: at most 10 passwords get checked.
    assert statuses.count(401) <= 10, f"{statuses.count(401)} passwords were checked"
