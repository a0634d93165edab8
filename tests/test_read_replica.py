"""Catalogue reads on a streaming standby (issue 13 item 3): a real primary, a real standby made by
dbctl/replica.py (pg_basebackup -R, streaming through a slot), a real gateway (uvicorn on a port)
with GATEWAY_DATABASE_READ_URL listing the standby then the primary (prefer-standby).

- the event list and one event are read on the standby (its pg_stat_activity shows the read pool's
  session and query), a reserve runs on the primary and never on the standby;
- the standby stopped: catalogue reads are still answered (libpq's fallback, and the gateway's own
  retry on the primary pool when only the standby is named), /readyz stays ready, the fallback
  counter of /metrics moves;
- the buyer's own data right after a purchase comes from the primary (the standby's replay is
  paused, so it could not have answered);
- the events cache is not refilled from a standby that has not replayed a catalogue change;
- the exporter's standby-side lag query runs on the standby (and the primary's on the primary).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from dbctl.cluster import Cluster, create_database
from dbctl.migrate import GATEWAY_ROLE, OWNER_ROLE, ROOT, migrate
from dbctl.monitor import exporter_binary, exporter_command, exporter_env, monitor_dsn
from dbctl.replica import drop_standby, make_standby, wait_replayed
from dbctl.throwaway import free_port, throwaway_cluster
from gateway.app import Gateway, create_app
from gateway.config import ConfigError, Settings
from gateway.db import READ_APPLICATION_NAME, Database
from gateway.routes import ROUTES, Endpoint
from tests.conftest import call
from tests.factories import make_ticket_type
from tests.http import PASSWORD_HASH, SECRET
from tests.live import LiveServer
from tests.test_local_cluster import local_env

DB = "booking"
NAME = "standby1"


@dataclass
class Pair:
    primary: Cluster
    standby: Cluster

    def read_url(self, standby_only: bool = False) -> str:
        hosts = "127.0.0.1" if standby_only else "127.0.0.1,127.0.0.1"
        ports = str(self.standby.port) if standby_only else f"{self.standby.port},{self.primary.port}"
        return (
            f"host={hosts} port={ports} dbname={DB} user={GATEWAY_ROLE} "
            "target_session_attrs=prefer-standby connect_timeout=2"
        )


@pytest.fixture
def pair() -> Iterator[Pair]:
    primary = throwaway_cluster()
    primary.start()
    standby: Cluster | None = None
    try:
        create_database(primary, DB)
        migrate(primary.url("postgres", DB))
        standby = make_standby(primary, Path(tempfile.mkdtemp(prefix="booking-standby-")), free_port(), NAME)
        yield Pair(primary, standby)
    finally:
        if standby is not None:
            drop_standby(primary, standby, NAME)
        primary.destroy()


@pytest.fixture
def owner(pair: Pair) -> Iterator[psycopg.Connection]:
    with psycopg.connect(pair.primary.url(OWNER_ROLE, DB), autocommit=True) as conn:
        yield conn


@contextmanager
def gateway(pair: Pair, **overrides: Any) -> Iterator[tuple[httpx.Client, Gateway]]:
    settings = Settings(
        database_url=pair.primary.url(GATEWAY_ROLE, DB), database_read_url=pair.read_url(), jwt_secret=SECRET,
        pool_min=1, pool_max=4, rate_limits=False,
    ).replace(**overrides)  # fmt: skip
    app = create_app(settings)
    with LiveServer(app) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        gw: Gateway = app.state.gateway
        wait_for(lambda: gw.cache.listening, "the catalogue listener")
        # The listener's fence is the primary's WAL position when it connected: once the standby
        # has replayed that far, reads go there (before, they would go to the primary: `behind`).
        wait_replayed(pair.primary, pair.standby)
        yield client, gw


def wait_for(condition: Callable[[], Any], what: str, seconds: float = 20) -> Any:
    deadline = time.monotonic() + seconds
    while not (found := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)
    return found


def sessions(cluster: Cluster, application_name: str) -> list[str]:
    """The last query of each session of that application on the cluster's `booking` database."""
    with cluster.connect(DB) as conn:
        rows = conn.execute(
            "SELECT query FROM pg_stat_activity WHERE datname = %s AND application_name = %s", (DB, application_name)
        ).fetchall()
    return [r[0] for r in rows]


def ran(cluster: Cluster, application_name: str, function: str) -> bool:
    return any(f'"api"."{function}"' in q for q in sessions(cluster, application_name))


def buyer(client: httpx.Client, owner: psycopg.Connection) -> dict[str, str]:
    user = call(owner, "register_user", p_email=f"fan-{time.monotonic_ns()}@example.com",
                p_password_hash=PASSWORD_HASH, p_full_name="Fan")  # fmt: skip
    r = client.post("/auth/login", json={"email": user["email"], "password": "correct-horse-battery"})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def figures(client: httpx.Client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    r = client.get("/metrics")
    assert r.status_code == 200, r.text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    }


def counter(client: httpx.Client, name: str, **labels: str) -> float:
    return figures(client).get((name, tuple(sorted(labels.items()))), 0.0)


def listed(client: httpx.Client) -> list[str]:
    r = client.get("/events")
    assert r.status_code == 200, r.text
    return sorted(e["slug"] for e in r.json())


def replay(standby: Cluster, paused: bool) -> None:
    with standby.connect() as conn:
        conn.execute("SELECT pg_wal_replay_pause()" if paused else "SELECT pg_wal_replay_resume()")


# ------------------------------------------------------------------ routing


def test_catalogue_reads_run_on_the_standby_and_a_reserve_on_the_primary(pair: Pair, owner: psycopg.Connection) -> None:
    tt = make_ticket_type(owner, quantity=10)
    slug = tt["event"]["slug"]
    wait_replayed(pair.primary, pair.standby)
    with gateway(pair) as (client, _):
        r = client.get(f"/events/{slug}")
        assert r.status_code == 200, r.text
        assert [t["available_quantity"] for t in r.json()["ticket_types"]] == [10]
        assert ran(pair.standby, READ_APPLICATION_NAME, "get_event"), sessions(pair.standby, READ_APPLICATION_NAME)
        assert not ran(pair.primary, READ_APPLICATION_NAME, "get_event")
        assert not ran(pair.primary, "booking-gateway", "get_event")

        r = client.get("/events")
        assert r.status_code == 200 and [e["slug"] for e in r.json()] == [slug]
        assert ran(pair.standby, READ_APPLICATION_NAME, "list_published_events")
        assert not ran(pair.primary, "booking-gateway", "list_published_events")
        assert counter(client, "booking_catalogue_reads_total", node="standby") >= 2
        r = client.get("/events/no-such-event")  # the standby's answer is an error: not retried
        assert r.status_code == 404 and r.json()["code"] == "not_found"
        fallbacks = [counter(client, "booking_read_fallbacks_total", reason=why) for why in ("unavailable", "behind")]
        assert fallbacks == [0, 0]

        body = {"ticket_type_id": tt["id"], "quantity": 3}
        r = client.post("/bookings/reserve", headers=buyer(client, owner), json=body)
        assert r.status_code == 201, r.text
        assert ran(pair.primary, "booking-gateway", "reserve_tickets_batch")
        assert not [q for q in sessions(pair.standby, "booking-gateway") if "reserve" in q]
        assert not [q for q in sessions(pair.standby, READ_APPLICATION_NAME) if "reserve" in q]
        # ... and the standby has it once replayed: the availability it answers follows.
        wait_replayed(pair.primary, pair.standby)
        r = client.get(f"/events/{slug}")
        assert [t["available_quantity"] for t in r.json()["ticket_types"]] == [7]
        assert ran(pair.standby, READ_APPLICATION_NAME, "get_event")


@pytest.mark.parametrize("standby_only", [False, True], ids=["standby-then-primary", "standby-only"])
def test_reads_are_answered_when_the_standby_is_gone(pair: Pair, owner: psycopg.Connection, standby_only: bool) -> None:
    """standby-then-primary: libpq opens new read connections on the primary (prefer-standby) and
    the read that met a dead connection is retried on the primary pool; standby-only: every read
    is retried on the primary pool (after the read pool's wait, POOL_TIMEOUT_SECONDS)."""
    tt = make_ticket_type(owner, quantity=5)
    slug = tt["event"]["slug"]
    wait_replayed(pair.primary, pair.standby)
    with gateway(pair, database_read_url=pair.read_url(standby_only), pool_timeout=0.5) as (client, _):
        assert client.get(f"/events/{slug}").status_code == 200
        assert ran(pair.standby, READ_APPLICATION_NAME, "get_event")
        before = counter(client, "booking_read_fallbacks_total", reason="unavailable")
        served_by_primary = counter(client, "booking_catalogue_reads_total", node="primary")
        pair.standby.stop("fast")

        for _ in range(4):
            r = client.get(f"/events/{slug}")
            assert r.status_code == 200, r.text
            assert r.json()["slug"] == slug
            client.get("/events", params={"q": f"x{time.monotonic_ns()}"})  # past the cache: reaches a database
        assert client.get("/readyz").status_code == 200  # the primary alone makes the gateway ready
        fallbacks = counter(client, "booking_read_fallbacks_total", reason="unavailable")
        assert fallbacks > before
        if standby_only:
            assert fallbacks - before >= 8  # no read could be answered by the read pool
        else:  # the read pool itself moved to the primary: its session runs there now
            wait_for(lambda: client.get(f"/events/{slug}").status_code == 200
                     and counter(client, "booking_catalogue_reads_total", node="primary") > served_by_primary,
                     "a read through the read pool answered by the primary")  # fmt: skip
            assert ran(pair.primary, READ_APPLICATION_NAME, "get_event")


def test_my_bookings_right_after_a_purchase_come_from_the_primary(pair: Pair, owner: psycopg.Connection) -> None:
    tt = make_ticket_type(owner, quantity=5)
    wait_replayed(pair.primary, pair.standby)
    with gateway(pair) as (client, _):
        headers = buyer(client, owner)
        replay(pair.standby, paused=True)  # the standby sees nothing from now on
        try:
            r = client.post("/bookings/reserve", headers=headers, json={"ticket_type_id": tt["id"], "quantity": 2})
            assert r.status_code == 201, r.text
            r = client.post(f"/bookings/complete/{r.json()['id']}", headers=headers, json={"payment_method": "MOMO"})
            assert r.status_code == 201, r.text
            order = r.json()
            mine = client.get("/bookings/my-bookings", headers=headers)
            assert mine.status_code == 200 and [o["id"] for o in mine.json()] == [order["id"]]
            assert client.get(f"/bookings/orders/{order['id']}", headers=headers).json()["status"] == "PAID"
            with pair.standby.connect(DB) as conn:  # the standby could not have answered that
                assert conn.execute("SELECT count(*) FROM orders WHERE id = %s", (order["id"],)).fetchone() == (0,)
            assert ran(pair.primary, "booking-gateway", "get_order")  # the last call: on the primary
            on_standby = " ".join(sessions(pair.standby, READ_APPLICATION_NAME))
            assert "my_bookings" not in on_standby and "get_order" not in on_standby
        finally:
            replay(pair.standby, paused=False)


def test_the_events_cache_is_not_refilled_from_a_standby_behind_a_change(pair: Pair, owner: psycopg.Connection) -> None:
    """A new event's NOTIFY empties the cache; the standby, its replay paused, has not seen the
    event: the list must be read on the primary (fallback `behind`), not cached from the standby."""
    first = make_ticket_type(owner)
    wait_replayed(pair.primary, pair.standby)
    with gateway(pair) as (client, _):
        assert listed(client) == [first["event"]["slug"]]
        behind = counter(client, "booking_read_fallbacks_total", reason="behind")
        replay(pair.standby, paused=True)
        try:
            second = make_ticket_type(owner)
            slugs = sorted([first["event"]["slug"], second["event"]["slug"]])
            wait_for(lambda: listed(client) == slugs, "the new event in the list")
            assert listed(client) == slugs  # and it stays (cached)
            assert counter(client, "booking_read_fallbacks_total", reason="behind") > behind
            assert client.get(f"/events/{second['event']['slug']}").status_code == 200  # one event: likewise
        finally:
            replay(pair.standby, paused=False)
        wait_replayed(pair.primary, pair.standby)
        served = counter(client, "booking_catalogue_reads_total", node="standby")
        assert client.get(f"/events/{second['event']['slug']}").status_code == 200
        assert counter(client, "booking_catalogue_reads_total", node="standby") == served + 1  # caught up: standby


# ------------------------------------------------------------------ READ_REPLICA=yes make run


def test_make_run_with_read_replica_reads_the_catalogue_on_a_local_standby(tmp_path: Path) -> None:
    """`READ_REPLICA=yes make run`: the embedded cluster (passwords, scram) gets a streaming standby
    on its own port, the gateway reads the seeded event there; `make stop` stops both."""
    base = Path(tempfile.mkdtemp(prefix="booking-pg-"))
    state, port, standby_port = tmp_path / "state", free_port(), free_port()
    env = local_env(base, state, free_port(), READ_REPLICA="yes", BOOKING_PG_STANDBY_PORT=str(standby_port),
                    RUN_WORKER="no", GATEWAY_PORT=str(port), WEB_CONCURRENCY="1")  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-m", "dbctl", "run"], cwd=ROOT, env=env, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    standby = Cluster(Path(f"{base}-standby") / "data", standby_port)
    try:

        def ready() -> bool:
            assert proc.poll() is None, proc.communicate()[0]
            try:
                return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(ready, "the gateway of `dbctl run`", seconds=180)
        r = httpx.get(f"http://127.0.0.1:{port}/events/demo-onsale-night", timeout=10)
        assert r.status_code == 200, r.text
        standby.password = (state / "pg-password").read_text().strip()
        assert ran(standby, READ_APPLICATION_NAME, "get_event"), sessions(standby, READ_APPLICATION_NAME)
        with standby.connect() as conn:
            assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (True,)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        stop = subprocess.run([sys.executable, "-m", "dbctl", "stop"], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=120)  # fmt: skip
        stopped = not standby.running()
        standby.destroy()
        Cluster(base / "data", 0).destroy()
    assert stop.returncode == 0 and "and its standby stopped" in stop.stdout, stop.stdout + stop.stderr
    assert stopped


# ------------------------------------------------------------------ the exporter on both nodes

EXPORTER = exporter_binary()


@contextmanager
def exporter_on(cluster: Cluster) -> Iterator[str]:
    assert EXPORTER is not None
    address = f"127.0.0.1:{free_port()}"
    env = exporter_env(monitor_dsn(cluster.url(OWNER_ROLE, DB), {}), {"PATH": "/usr/bin:/bin"})
    proc = subprocess.Popen(exporter_command(EXPORTER, address), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        url = f"http://{address}/metrics"

        def up() -> bool:
            assert proc.poll() is None, proc.communicate()[1]
            try:
                return httpx.get(url, timeout=5).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(up, "the exporter")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def exported(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(url, timeout=10).text
    return {
        (s.name, tuple(sorted((k, v) for k, v in s.labels.items() if k != "server"))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


@pytest.mark.skipif(EXPORTER is None, reason="prometheus-postgres-exporter not installed (`make test` installs it)")
def test_replication_lag_is_exported_by_the_primary_and_the_standby(pair: Pair, owner: psycopg.Connection) -> None:
    with exporter_on(pair.primary) as primary_url, exporter_on(pair.standby) as standby_url:
        found = exported(primary_url)
        assert found[("pg_exporter_last_scrape_error", ())] == 0
        assert found[("booking_pg_node_standby", ())] == 0
        labels = (("standby", NAME), ("state", "streaming"), ("sync_state", "async"))
        assert ("booking_pg_replication_replay_lag_bytes", labels) in found, sorted(k for k in found if "repl" in k[0])

        found = exported(standby_url)
        assert found[("pg_exporter_last_scrape_error", ())] == 0  # every query of ours runs on a standby
        assert found[("booking_pg_node_standby", ())] == 1
        assert found[("booking_pg_standby_replay_gap_bytes", ())] == 0
        assert not [k for k in found if k[0].startswith("booking_pg_replication_")]

        replay(pair.standby, paused=True)  # received, not replayed: the standby's lag grows
        try:
            make_ticket_type(owner)
            wait_for(lambda: exported(standby_url)[("booking_pg_standby_replay_gap_bytes", ())] > 0, "a replay gap")
            time.sleep(1.1)
            assert exported(standby_url)[("booking_pg_standby_replay_delay_seconds", ())] >= 1
        finally:
            replay(pair.standby, paused=False)
        wait_for(lambda: exported(standby_url)[("booking_pg_standby_replay_gap_bytes", ())] == 0, "the gap closed")


# ------------------------------------------------------------------ without a cluster


def test_only_public_catalogue_reads_may_go_to_a_standby() -> None:
    marked = {(e.method, e.path) for e in ROUTES if e.standby_ok}
    assert marked == {("GET", "/events"), ("GET", "/events/{id_or_slug}")}
    for bad in (dict(method="POST"), dict(auth="user"), dict(passes_user=True)):
        with pytest.raises(ValueError, match="standby"):
            Endpoint(**{"method": "GET", "path": "/x", "function": "f", "summary": "s", "standby_ok": True, **bad})


def test_without_a_read_url_there_is_no_read_pool() -> None:
    settings = Settings(database_url="host=127.0.0.1 port=1", jwt_secret=SECRET)
    gw = Gateway(settings)
    assert gw.read_pool is None and gw.read_router is None and gw.reads is gw.db and isinstance(gw.reads, Database)
    read = settings.replace(database_read_url="host=a,b port=1,2 target_session_attrs=prefer-standby")
    gw = Gateway(read)
    assert gw.read_pool is not None and gw.read_pool.max_size == 10 and gw.reads is gw.read_router
    assert Settings.from_env({"GATEWAY_DATABASE_URL": "x", "JWT_SECRET": "y", "DATABASE_READ_URL": "host=r",
                              "GATEWAY_READ_POOL_MAX": "3"}).read_pool_max == 3  # fmt: skip
    with pytest.raises(ConfigError, match="GATEWAY_DATABASE_READ_URL") as caught:
        settings.replace(database_read_url="host=a port=1 password=hunter2 nonsense")
    assert "hunter2" not in str(caught.value)
