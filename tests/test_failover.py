"""Automatic failover (issue 13 item 4), with real pg_autoctl processes: a monitor and two nodes
(dbctl/autofailover.py), a real gateway process on the multi-host read-write URL, purchases
flowing; the primary's machine is lost (kill -9 of its pg_autoctl and its postmaster); the
standby is promoted, the same gateway process finds it by itself, and every 201 answered before
and after is in the database, with the invariants clean."""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psycopg
import pytest

from bench.purchases import Load, verify
from dbctl import autofailover
from dbctl.__main__ import uvicorn_args
from dbctl.migrate import migrate
from dbctl.throwaway import free_port
from tests.conftest import call
from tests.http import SECRET

ROOT = Path(__file__).resolve().parent.parent
MISSING = autofailover.autoctl_binary() is None or not autofailover.monitor_extension_installed()
needs_autofailover = pytest.mark.skipif(
    MISSING and not os.environ.get("CI"),
    reason=f"pg_auto_failover is not installed: scripts/install-system-deps {' '.join(autofailover.PACKAGES)}"
    " (make test installs it)",
)


@pytest.fixture
def formation(monkeypatch: pytest.MonkeyPatch) -> Iterator[autofailover.Formation]:
    # Under /tmp (postgres must reach it), not pytest's tmp_path (in root's private folder).
    base = Path(tempfile.mkdtemp(prefix="booking-af-"))
    f = autofailover.Formation(base, free_port(), (free_port(), free_port()), secrets.token_urlsafe(16), fast=True)
    monkeypatch.setenv("PGPASSFILE", str(f.pgpass))  # this process's logins (libpq reads it)
    try:
        f.create()
        yield f
    finally:
        f.destroy()


def wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()[-3000:]
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"the gateway did not get ready: {log.read_text()[-3000:]}")


@pytest.mark.slow
@needs_autofailover
def test_primary_lost_writes_resume_on_the_promoted_node_with_no_201_lost(
    formation: autofailover.Formation, tmp_path: Path
) -> None:
    f = formation
    migrate(f.url("booking_owner"), f.url("postgres"), role_password=f.password)
    with psycopg.connect(f.url("booking_gateway"), autocommit=True) as gw:
        start = datetime.now(UTC) + timedelta(days=10)
        event = call(gw, "create_event", p_slug="failover", p_name="Failover night", p_location="Hanoi",
                     p_start_time=start, p_end_time=start + timedelta(hours=3))  # fmt: skip
        tt = call(gw, "create_ticket_type", p_event_id=event["id"], p_name="Standard", p_price="100000.00",
                  p_initial_quantity=100000)  # fmt: skip
        call(gw, "publish_event", p_event_id=event["id"])
        users = [call(gw, "register_user", p_email=f"buyer{n}@example.com", p_password_hash="$argon2id$x",
                      p_full_name=f"B{n}")["id"] for n in range(1500)]  # fmt: skip

    primary, standby = f.wait_healthy(60)
    assert f.writable() == primary
    assert f.synchronous(primary), "a 201 must wait for the standby: synchronous replication is off"

    port = free_port()
    env = {**os.environ, "GATEWAY_DATABASE_URL": f.url("booking_gateway"), "PGPASSFILE": str(f.pgpass),
           "JWT_SECRET": SECRET, "RATE_LIMITS": "no", "GATEWAY_HOST": "127.0.0.1", "GATEWAY_PORT": str(port),
           "WEB_CONCURRENCY": "1", "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics")}  # fmt: skip
    (tmp_path / "metrics").mkdir()
    log = tmp_path / "gateway.log"
    with log.open("ab") as out:
        gateway = subprocess.Popen(uvicorn_args(env), env=env, cwd=ROOT, stdout=out, stderr=out)
    url = f"http://127.0.0.1:{port}"
    load = Load(url, users, tt["id"], SECRET, clients=6, timeout=20)
    runner = threading.Thread(target=lambda: asyncio.run(load.run()))
    try:
        wait_ready(url, gateway, log)
        runner.start()

        def orders() -> int:
            return len(load.ok("complete"))

        deadline = time.monotonic() + 60
        while orders() < 30 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert orders() >= 30, f"no purchases before the failover: {load.failures()}"

        killed_at = time.monotonic()
        before = orders()
        f.kill_node(primary)  # keeper and postmaster: the machine is gone

        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and load.first_success_after(killed_at + 1) is None:
            assert gateway.poll() is None, log.read_text()[-3000:]
            time.sleep(0.5)
        resumed = load.first_success_after(killed_at + 1)
        assert resumed is not None, f"no purchase succeeded after the failover: {load.failures(killed_at)}"
        time.sleep(3)  # a few more purchases on the promoted node
        load.stop()
        runner.join(timeout=60)
        assert not runner.is_alive()
        assert gateway.poll() is None, "the gateway was not restarted, and is still up"
    finally:
        load.stop()
        gateway.terminate()
        try:
            gateway.wait(timeout=20)
        except subprocess.TimeoutExpired:
            gateway.kill()

    assert f.writable() == standby, f"the standby was not promoted: {f.state()}"
    after = [a for a in load.ok("complete") if a.at > killed_at]
    assert len(after) >= 3 and orders() > before, (len(after), load.failures(killed_at))
    # What failed meanwhile is a 503 (no primary) or a lost answer, never a 500.
    failed = load.failures()
    assert all(k.split()[1] in ("503", "no") for k in failed), failed
    with psycopg.connect(f.url("booking_owner"), autocommit=True) as owner:
        assert owner.info.port == f.port_of(standby)
        figures = verify(owner, load)
    print(
        f"failover: purchases again {resumed - killed_at:.1f} s after the kill; failed meanwhile {dict(failed)};"
        f" {figures['orders_201']} orders answered 201 ({len(after)} after the kill), all found"
    )
    assert figures["missing_reservations"] == [], figures
    assert figures["missing_or_unpaid_orders"] == [], figures
    assert figures["paid_without_tickets"] == [], figures
    assert figures["violations"] == [], figures

    # `make cluster-stop`, then `make cluster` (dbctl/onebox.py): the promoted node is the primary
    # now and the lost one is down; starting the formation again brings both back (the lost one as
    # the standby, pg_rewind), with no failover back and every order still there.
    f.stop_all()
    f.create()
    assert f.wait_healthy(120) == (standby, primary)
    with psycopg.connect(f.url("booking_owner"), autocommit=True) as owner:
        assert owner.execute("SELECT count(*) FROM orders WHERE status = 'PAID'").fetchone()[0] >= figures["orders_201"]  # type: ignore[index]
        assert owner.execute("SELECT count(*) FROM api.check_invariants()").fetchone() == (0,)


def test_make_cluster_hands_every_process_the_multi_host_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`make cluster` (dbctl/onebox.py): the gateways write through read-write and read through
    prefer-standby over both nodes, the worker writes through read-write; each gets a pgpass with
    its own role's line only."""
    from psycopg.conninfo import conninfo_to_dict

    from dbctl import haproxy, onebox
    from gateway.config import ConfigError

    monkeypatch.setenv("BOOKING_STATE_DIR", str(tmp_path))
    f = onebox.formation_from_env({"CLUSTER_PG_PORT": "6000"})
    assert (f.monitor_port, f.node_ports) == (6000, (6001, 6002))
    with pytest.raises(ConfigError, match="CLUSTER_PG_PORT"):
        onebox.formation_from_env({"CLUSTER_PG_PORT": "many"})
    apps = onebox.Apps(f, haproxy.Layout.from_env({}), tmp_path / "apps")
    env = apps.gateway_env(8001, 1, {})
    write, read = conninfo_to_dict(env["GATEWAY_DATABASE_URL"]), conninfo_to_dict(env["GATEWAY_DATABASE_READ_URL"])
    assert (write["host"], write["port"], write["user"]) == ("127.0.0.1,127.0.0.1", "6001,6002", "booking_gateway")
    assert (write["target_session_attrs"], read["target_session_attrs"]) == ("read-write", "prefer-standby")
    assert read["port"] == "6001,6002" and env["WEB_CONCURRENCY"] == "1" and env["GATEWAY_PORT"] == "8001"
    lines = [x for x in Path(env["PGPASSFILE"]).read_text().splitlines() if not x.startswith("#")]
    assert [x.split(":")[3] for x in lines] == ["booking_gateway"]
    wenv = apps.worker_env({})
    worker = conninfo_to_dict(wenv["WORKER_DATABASE_URL"])
    assert (worker["port"], worker["user"], worker["target_session_attrs"]) == (
        "6001,6002",
        "booking_worker",
        "read-write",
    )
    assert [x.split(":")[3] for x in Path(wenv["PGPASSFILE"]).read_text().splitlines()[1:]] == ["booking_worker"]
