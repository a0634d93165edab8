"""HAProxy in front of several gateways (issue 13, ops/haproxy/haproxy.cfg, dbctl/haproxy.py):
the real haproxy binary over real single-worker gateway processes, as `make lb` starts them.
Requests reach every instance; X-Forwarded-For is set and believed only from HAProxy's address;
a gateway killed with -9 is taken out while GETs keep succeeding and no POST runs twice; a
gateway started again comes back."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from dbctl import haproxy
from dbctl.__main__ import uvicorn_args
from dbctl.throwaway import free_port
from gateway.config import ConfigError
from gateway.errors import ERRORS, GENERIC_MESSAGES, ApiError
from tests.conftest import OWNER_ROLE, dba_call, url_for
from tests.factories import make_ticket_type, make_user, violations
from tests.http import SECRET, forged

ROOT = Path(__file__).resolve().parent.parent

try:
    BINARY: str | None = haproxy.require_binary()
except ConfigError:
    BINARY = None
needs_haproxy = pytest.mark.skipif(BINARY is None, reason="haproxy is not installed (make test installs it)")


class Layout:
    """N gateways (one uvicorn worker each) and HAProxy, on free 127.0.0.1 ports."""

    def __init__(self, dbname: str, tmp: Path, count: int = 2) -> None:
        self.layout = haproxy.Layout(port=free_port(), stats_port=free_port(),
                                     gateway_ports=tuple(free_port() for _ in range(count)))  # fmt: skip
        self.url = f"http://127.0.0.1:{self.layout.port}"
        self.tmp = tmp
        base = {**os.environ, "GATEWAY_DATABASE_URL": url_for(dbname, "booking_gateway"), "JWT_SECRET": SECRET,
                "RATE_LIMITS": "", "TRUSTED_PROXIES": ""}  # fmt: skip
        self.envs = [haproxy.gateway_env(base, self.layout, p, tmp / f"metrics-{n}")
                     for n, p in enumerate(self.layout.gateway_ports, 1)]  # fmt: skip
        self.gateways: list[subprocess.Popen[bytes] | None] = [None] * count
        self.proxy: subprocess.Popen[bytes] | None = None

    def start_gateway(self, n: int) -> None:
        env = self.envs[n]
        Path(env["PROMETHEUS_MULTIPROC_DIR"]).mkdir(exist_ok=True)
        with (self.tmp / f"gw{n + 1}.log").open("ab") as log:
            self.gateways[n] = subprocess.Popen(uvicorn_args(env), env=env, cwd=ROOT, stderr=log)

    def start(self) -> Layout:
        for n in range(len(self.gateways)):
            self.start_gateway(n)
        config = self.tmp / "haproxy.cfg"
        config.write_text(haproxy.render(self.layout.gateway_ports))
        assert BINARY is not None
        with (self.tmp / "haproxy.log").open("ab") as log:
            env = haproxy.haproxy_env(self.layout, os.environ)
            self.proxy = subprocess.Popen(haproxy.haproxy_command(BINARY, config), env=env, stderr=log, stdout=log)
        self.wait_states({f"gw{n}": "UP" for n in range(1, len(self.gateways) + 1)})
        return self

    def stop(self) -> None:
        for proc in [self.proxy, *self.gateways]:
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()

    def states(self) -> dict[str, str]:
        """HAProxy's own view of each server (its stats page as CSV)."""
        try:
            text = httpx.get(f"http://127.0.0.1:{self.layout.stats_port}/;csv", timeout=2).text
        except httpx.HTTPError:
            return {}
        rows = csv.DictReader(io.StringIO(text.lstrip("# ")))
        return {r["svname"]: r["status"] for r in rows if r["pxname"] == "gateways" and r["svname"].startswith("gw")}

    def wait_states(self, wanted: dict[str, str], seconds: float = 20) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            states = self.states()
            if all(states.get(k, "").startswith(v) for k, v in wanted.items()):
                return
            assert self.proxy is not None and self.proxy.poll() is None, (self.tmp / "haproxy.log").read_text()
            time.sleep(0.2)
        raise AssertionError(f"HAProxy's servers are {self.states()}, wanted {wanted}")


@pytest.fixture
def lb(dbname: str, tmp_path: Path) -> Iterator[Layout]:
    layout = Layout(dbname, tmp_path)
    try:
        yield layout.start()
    finally:
        layout.stop()


def client_from(address: str) -> httpx.Client:
    """A client connecting from another loopback address (127.0.0.0/8 is all ours on Linux)."""
    return httpx.Client(transport=httpx.HTTPTransport(local_address=address), timeout=20)


def set_rule(owner: psycopg.Connection, rate_class: str, scope: str, limit: int, period: str) -> None:
    dba_call(owner, "set_rate_limit", p_class=rate_class, p_scope=scope, p_max_requests=limit, p_period=period)


def test_config_renders_one_server_per_gateway_and_checks() -> None:
    text = haproxy.render([9001, 9002, 9003])
    assert "server gw3 127.0.0.1:9003" in text and haproxy.MARKER not in text
    assert "http-request disable-l7-retry if !METH_GET !METH_HEAD" in text
    env = {"HAPROXY_PORT": "9000", "GATEWAY_INSTANCES": "3"}
    assert haproxy.Layout.from_env(env).gateway_ports == (9001, 9002, 9003)
    with pytest.raises(ConfigError, match="GATEWAY_INSTANCES"):
        haproxy.Layout.from_env({"GATEWAY_INSTANCES": "many"})
    with pytest.raises(ConfigError, match="HAPROXY_SOURCE"):
        haproxy.Layout.from_env({"HAPROXY_SOURCE": "haproxy"})
    gw = haproxy.gateway_env({}, haproxy.Layout.from_env({}), 8001, Path("/tmp/m"))
    assert gw["TRUSTED_PROXIES"] == "127.0.0.2" and gw["WEB_CONCURRENCY"] == "1"


@needs_haproxy
def test_requests_reach_every_gateway_and_the_limiter_sees_the_client(
    lb: Layout, gw: psycopg.Connection, owner: psycopg.Connection
) -> None:
    set_rule(owner, "browse", "address", 4, "1 minute")
    with client_from("127.0.0.5") as flooder, client_from("127.0.0.6") as other:
        # The client's own X-Forwarded-For is not believed: HAProxy appends the real address.
        answers = [flooder.get(f"{lb.url}/events", headers={"X-Forwarded-For": f"203.0.113.{i}"}) for i in range(6)]
        served = other.get(f"{lb.url}/events")
    assert [r.status_code for r in answers] == [200] * 4 + [429] * 2, [r.text for r in answers]
    assert {r.headers["X-Served-By"] for r in answers} == {"gw1", "gw2"}  # both instances, one budget
    assert served.status_code == 200, served.text
    keys = {r[0] for r in owner.execute("SELECT key FROM rate_limit_counters WHERE starts_with(key, 'browse:')")}
    assert keys == {"browse:address:127.0.0.5", "browse:address:127.0.0.6"}  # not HAProxy's 127.0.0.2


def assert_problem(r: httpx.Response, code: str) -> None:
    assert r.headers["content-type"] == "application/problem+json", r.text
    assert r.json() == ApiError(code, GENERIC_MESSAGES[code]).body()


def test_haproxys_own_answers_are_the_apis_problem_bodies() -> None:
    """Every `http-error` line of the config is the body gateway/errors.py gives that code."""
    lines = [x.strip() for x in haproxy.CONFIG_TEMPLATE.read_text().splitlines() if x.strip().startswith("http-error")]
    found = {}
    for line in lines:
        match = re.fullmatch(
            r"http-error status (\d+) content-type application/problem\+json( hdr Retry-After 1)? string '(.*)'", line
        )
        assert match, line
        body = json.loads(match.group(3))
        assert ERRORS[body["code"]].status == body["status"] == int(match.group(1))
        assert body == ApiError(body["code"], GENERIC_MESSAGES[body["code"]]).body()
        assert bool(match.group(2)) == (body["status"] == 503)  # Retry-After, as the gateway's 503s
        found[body["status"]] = body["code"]
    assert found == {502: "upstream_failed", 503: "busy", 504: "upstream_timeout"}


@needs_haproxy
def test_no_gateway_in_service_answers_a_json_503_busy(lb: Layout) -> None:
    """While no gateway passes /readyz (e.g. a failover without a primary yet), HAProxy answers
    itself: the gateway's 503 busy body and Retry-After, not an HTML page."""
    assert httpx.get(f"{lb.url}/events", timeout=10).status_code == 200
    for n, proc in enumerate(lb.gateways):
        assert proc is not None
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        lb.gateways[n] = None
    lb.wait_states({"gw1": "DOWN", "gw2": "DOWN"})
    for r in (httpx.get(f"{lb.url}/events", timeout=10), httpx.post(f"{lb.url}/bookings/reserve", json={}, timeout=10)):
        assert r.status_code == 503
        assert r.headers["retry-after"] == "1"
        assert_problem(r, "busy")


@needs_haproxy
def test_a_killed_gateway_is_taken_out_no_post_runs_twice_and_a_restarted_one_comes_back(
    lb: Layout, gw: psycopg.Connection, owner: psycopg.Connection, connect: Callable[..., psycopg.Connection]
) -> None:
    tt = make_ticket_type(gw, quantity=100)
    users = [make_user(gw) for _ in range(8)]
    # Reserves and reads held in flight on both gateways: the tables they read are locked meanwhile.
    holder = connect(OWNER_ROLE, autocommit=False)
    holder.execute("LOCK TABLE events, ticket_types IN ACCESS EXCLUSIVE MODE")
    results: dict[str, int] = {}
    failed: list[httpx.Response] = []
    reads: list[int] = []

    def reserve(user: dict[str, Any]) -> None:
        try:
            r = httpx.post(f"{lb.url}/bookings/reserve", json={"ticket_type_id": tt["id"], "quantity": 1},
                           headers=forged({"sub": user["id"]}), timeout=30)  # fmt: skip
            results[user["id"]] = r.status_code
            if r.status_code == 502:
                failed.append(r)
        except httpx.HTTPError:
            results[user["id"]] = 0

    def read() -> None:
        try:
            reads.append(httpx.get(f"{lb.url}/events/{tt['event_id']}", timeout=30).status_code)
        except httpx.HTTPError:
            reads.append(0)

    threads = [threading.Thread(target=reserve, args=(u,)) for u in users]
    threads += [threading.Thread(target=read) for _ in range(6)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:  # both gateways' calls wait on the lock
        (waiting,) = gw.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                                "AND usename = 'booking_gateway'").fetchone() or (0,)  # fmt: skip
        if waiting >= 4:
            break
        time.sleep(0.1)
    else:
        raise AssertionError("the requests did not reach both gateways")
    victim = lb.gateways[0]
    assert victim is not None
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    holder.rollback()
    for t in threads:
        t.join(timeout=30)
    # The reads in flight on the killed gateway were retried on the other one (a GET is safe to).
    assert reads == [200] * 6, reads
    # GETs keep succeeding at once: a refused connection is retried on the other gateway.
    gets = [httpx.get(f"{lb.url}/events", timeout=10) for _ in range(6)]
    assert [r.status_code for r in gets] == [200] * 6
    lb.wait_states({"gw1": "DOWN", "gw2": "UP"})
    assert {r.headers["X-Served-By"] for r in (httpx.get(f"{lb.url}/events") for _ in range(4))} == {"gw2"}

    codes = Counter(results.values())
    assert codes[201] >= 1 and sum(codes.values()) == len(users), codes
    assert set(codes) <= {201, 502}, codes
    assert codes[502] >= 1, f"no reserve was in flight on the killed gateway: {codes}"
    for r in failed:  # HAProxy's 502 speaks the API's problem+json, with a code clients know
        assert_problem(r, "upstream_failed")
    rows = dict(owner.execute("SELECT user_id::text, count(*) FROM order_reservations WHERE ticket_type_id = %s "
                              "GROUP BY user_id", (tt["id"],)).fetchall())  # fmt: skip
    assert all(n == 1 for n in rows.values()), rows  # never twice
    assert all(rows.get(uid) == 1 for uid, code in results.items() if code == 201), (rows, results)
    assert violations(gw) == []

    lb.start_gateway(0)
    lb.wait_states({"gw1": "UP", "gw2": "UP"})
    assert {r.headers["X-Served-By"] for r in (httpx.get(f"{lb.url}/events") for _ in range(6))} == {"gw1", "gw2"}
