"""GET /metrics (issue 13): Prometheus text that parses, moves with traffic, carries route templates
(never an id), and, in multiprocess mode, sums what every process wrote."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from dbctl.__main__ import fresh_metrics_dir, uvicorn_args
from dbctl.throwaway import free_port
from gateway import metrics
from gateway.payments import callbacks
from gateway.routes import ROUTES
from tests.conftest import url_for
from tests.factories import make_ticket_type
from tests.http import SECRET, client_for, new_user

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = {e.path for e in ROUTES} | {
    "/healthz",
    "/readyz",
    "/metrics",
    "/openapi.json",
    "/events/{event_id}/waiting-room",
    *callbacks.PATHS,  # the providers' callbacks (the fuzz test calls them in this process too)
    metrics.UNMATCHED,
}

ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-|TKT-", re.IGNORECASE)  # a uuid or a ticket code
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(text: str) -> Samples:
    """Every sample of the exposition by (name, sorted labels); parsing fails on malformed text."""
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(found: Samples, name: str, **labels: str) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture
def client(dbname: str) -> Iterator[TestClient]:
    with client_for(dbname) as c:
        yield c


def scrape(client: TestClient, **headers: str) -> Samples:
    r = client.get("/metrics", headers=headers)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return samples(r.text)


def test_reserve_moves_its_counters_and_routes_are_templates(client: TestClient, owner: psycopg.Connection) -> None:
    tt = make_ticket_type(owner, quantity=3)
    _, fan = new_user(client, owner)
    before = scrape(client)
    reserve = {"route": "/bookings/reserve", "method": "POST"}

    r = client.post("/bookings/reserve", headers=fan, json={"ticket_type_id": tt["id"], "quantity": 2})
    assert r.status_code == 201, r.text
    reservation_id = r.json()["id"]
    r = client.post("/bookings/reserve", headers=fan, json={"ticket_type_id": tt["id"], "quantity": 2})
    assert r.status_code == 409 and r.json()["code"] == "sold_out", r.text
    r = client.post(f"/bookings/complete/{reservation_id}", headers=fan, json={"payment_method": "MOMO"})
    assert r.status_code == 201, r.text
    assert client.get(f"/no/such/{reservation_id}").status_code == 404

    after = scrape(client)
    outcomes = "booking_reserve_outcomes_total"
    assert value(after, outcomes, outcome="reserved") == value(before, outcomes, outcome="reserved") + 1
    assert value(after, outcomes, outcome="sold_out") == value(before, outcomes, outcome="sold_out") + 1
    total = "booking_http_requests_total"
    assert value(after, total, **reserve, status="201") == value(before, total, **reserve, status="201") + 1
    assert value(after, total, **reserve, status="409") == value(before, total, **reserve, status="409") + 1
    complete = {"route": "/bookings/complete/{reservation_id}", "method": "POST", "status": "201"}
    assert value(after, total, **complete) == value(before, total, **complete) + 1
    count = "booking_http_request_duration_seconds_count"
    assert value(after, count, **reserve, status="201") == value(before, count, **reserve, status="201") + 1
    # Coalescing is on by default: each reserve went through one batch call.
    batches = "booking_reserve_batch_size_count"
    assert value(after, batches) >= value(before, batches) + 2

    routes = {dict(labels)["route"] for (name, labels) in after if name.startswith("booking_http_")}
    # Templates only: the app's, or a test app's own (the metrics are per process); never an id.
    assert {"/bookings/reserve", "/bookings/complete/{reservation_id}", metrics.UNMATCHED} <= routes
    assert not [r for r in routes - TEMPLATES if "{" not in r], routes - TEMPLATES
    assert not [r for r in routes if ID.search(r)], routes
    scraped = client.get("/metrics").text
    assert reservation_id not in scraped and tt["id"] not in scraped  # no id in any label

    # Scrape-time values are there (this process's pool, the turnstile, the coalescer's queue).
    assert value(after, "booking_db_pool_max") == 8
    assert ("booking_reserve_queue_depth", ()) in after and ("booking_db_pool_waiting", ()) in after


def test_cache_hits_and_misses(client: TestClient, owner: psycopg.Connection) -> None:
    make_ticket_type(owner)
    deadline = time.monotonic() + 10
    while not client.app.state.gateway.cache.listening:  # type: ignore[attr-defined]
        assert time.monotonic() < deadline, "the catalogue listener did not connect"
        time.sleep(0.05)
    before = scrape(client)
    for _ in range(3):
        assert client.get("/events?limit=7").status_code == 200
    after = scrape(client)
    lookups = "booking_events_cache_lookups_total"
    assert value(after, lookups, result="miss") == value(before, lookups, result="miss") + 1
    assert value(after, lookups, result="hit") == value(before, lookups, result="hit") + 2


def test_metrics_token(dbname: str) -> None:
    token = "metrics-token-0123456789"
    with client_for(dbname, metrics_token=token) as c:
        for headers in ({}, {"Authorization": "Bearer wrong-token-0123456789"}, {"Authorization": token}):
            r = c.get("/metrics", headers=headers)
            assert r.status_code == 401 and r.json()["code"] == "unauthorized", r.text
        scrape(c, Authorization=f"Bearer {token}")
    with client_for(dbname) as c:
        scrape(c)  # unset: open


WRITER = textwrap.dedent("""
    import sys
    from gateway import metrics
    for _ in range(int(sys.argv[1])):
        metrics.observe_request("/bookings/reserve", "POST", 201, 0.003)
        metrics.reserve_outcome("reserved")
    metrics.flush()
    metrics.RESERVE_QUEUE.set(5)  # a live gauge of a process that then dies without saying so
""")


def test_two_processes_are_summed_and_dead_gauges_dropped(tmp_path: Path) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    for n in (3, 4):
        subprocess.run([sys.executable, "-c", WRITER, str(n)], cwd=ROOT, env=env, check=True, timeout=60)
    assert len(list(tmp_path.glob("counter_*.db"))) == 2  # one file per process
    found = samples(metrics.exposition(str(tmp_path)).decode())
    labels = {"route": "/bookings/reserve", "method": "POST", "status": "201"}
    assert value(found, "booking_http_requests_total", **labels) == 7
    assert value(found, "booking_http_request_duration_seconds_count", **labels) == 7
    bucket = "booking_http_request_duration_seconds_bucket"  # 3 ms each: as Histogram.observe would count
    assert value(found, bucket, **labels, le="0.0025") == 0 and value(found, bucket, **labels, le="0.005") == 7
    assert value(found, bucket, **labels, le="+Inf") == 7
    assert abs(value(found, "booking_http_request_duration_seconds_sum", **labels) - 0.021) < 1e-9
    assert value(found, "booking_reserve_outcomes_total", outcome="reserved") == 7
    assert value(found, "booking_reserve_queue_depth") == 0  # both writers are gone: their live gauges too
    assert not list(tmp_path.glob("gauge_live*.db"))


def get(url: str) -> httpx.Response:
    with httpx.Client(timeout=10) as c:  # a new connection each time: any worker may take it
        return c.get(url)


def test_uvicorn_workers_share_one_exposition(dbname: str, tmp_path: Path) -> None:
    """The real command `make run` serves with (2 workers): every worker's requests are in the
    scrape, whichever worker answers it."""
    port = free_port()
    folder = tmp_path / "metrics"
    folder.mkdir()
    (folder / "counter_1.db").write_bytes(b"stale")  # a previous run's file: removed before the start
    env: dict[str, Any] = {
        **os.environ,
        "GATEWAY_DATABASE_URL": url_for(dbname, "booking_gateway"),
        "JWT_SECRET": SECRET,
        "RATE_LIMITS": "off",
        "GATEWAY_PORT": str(port),
        "WEB_CONCURRENCY": "2",
        "PROMETHEUS_MULTIPROC_DIR": str(folder),
    }
    fresh_metrics_dir(str(folder))
    assert not list(folder.iterdir())
    proc = subprocess.Popen(uvicorn_args(env), cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            try:
                if get(f"{base}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.2)
        sent = 0
        while len(list(folder.glob("counter_*.db"))) < 2:  # until both workers have answered something
            assert get(f"{base}/healthz").status_code == 200
            sent += 1
            assert sent < 2000, "one worker took every connection"
        total = sent + 1  # and the first one that answered
        healthz = {"route": "/healthz", "method": "GET", "status": "200"}
        deadline = time.monotonic() + 20  # a worker moves its tallies into the files once a second
        while True:
            found = samples(get(f"{base}/metrics").text)
            if value(found, "booking_http_requests_total", **healthz) == total:
                break
            assert time.monotonic() < deadline, value(found, "booking_http_requests_total", **healthz)
            time.sleep(0.3)
        for _ in range(4):  # whichever worker answers the scrape, the sums are the same
            found = samples(get(f"{base}/metrics").text)
            assert value(found, "booking_http_requests_total", **healthz) == total
            assert value(found, "booking_http_request_duration_seconds_count", **healthz) == total
            assert value(found, "booking_db_pool_max") == 2 * 20  # both workers' pools (livesum)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_a_flood_of_scrapes_gets_the_last_answer_again(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """/metrics is never shed nor rate limited: past FLOOD_SCRAPES scrapes in FLOOD_SECONDS a
    worker answers its last exposition again instead of computing one per request. The guard's
    clock is stepped by the test (a loaded machine may take longer than a second to scrape)."""
    now = [1000.0]
    monkeypatch.setattr(metrics, "clock", lambda: now[0])
    healthz = {"route": "/healthz", "method": "GET", "status": "200"}
    for _ in range(metrics.FLOOD_SCRAPES + 3):
        scrape(client)
        now[0] += 0.01
    before = value(scrape(client), "booking_http_requests_total", **healthz)
    assert client.get("/healthz").status_code == 200
    flooded = value(scrape(client), "booking_http_requests_total", **healthz)
    assert flooded == before, "within the flood the last answer is served again"
    now[0] += metrics.FLOOD_SECONDS + 0.1
    fresh = value(scrape(client), "booking_http_requests_total", **healthz)
    assert fresh == before + 1, "once the last answer is older than FLOOD_SECONDS, a fresh one"
