"""The embedded cluster of `make run` asks every role for a password, and dbctl still gets in.

Two real local-style clusters, each in a private folder with a private state folder: one
initialised by this dbctl, one initialised the old way (trust) and upgraded by `dbctl up`.
dbctl runs as a subprocess, exactly as the Makefile runs it.
"""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict
from yoyo.connections import parse_uri

from dbctl.cluster import Cluster, create_database, tuned_settings
from dbctl.local import gateway_url_for
from dbctl.migrate import (
    GATEWAY_ROLE,
    MONITOR_ROLE,
    OWNER_ROLE,
    ROOT,
    WORKER_ROLE,
    as_owner,
    migrate,
    role_password_for,
    yoyo_url,
)
from dbctl.monitor import exporter_binary
from dbctl.throwaway import free_port

ROLES = ["postgres", OWNER_ROLE, GATEWAY_ROLE]
GATEWAY_PASSWORD = "gateway-password-from-env"
INHERITED_CONNECTION_SETTINGS = {
    "DATABASE_URL", "SUPERUSER_DATABASE_URL", "GATEWAY_DATABASE_URL", "GATEWAY_DB_PASSWORD",
    "PGPASSFILE", "PGPASSWORD", "PGHOST", "PGPORT", "PGUSER", "PGDATABASE", "PGSERVICE",
    "METRICS_EXPORTER", "EXPORTER_ADDRESS", "MONITOR_DATABASE_URL", "MONITOR_DB_PASSWORD",
}  # fmt: skip


@dataclass
class Local:
    cluster: Cluster  # how the test reaches the folder; dbctl builds its own from the env
    state: Path
    env: dict[str, str]
    up: subprocess.CompletedProcess[str] | None = None  # what `dbctl up` printed

    def dbctl(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [sys.executable, "-m", "dbctl", *args],
            cwd=ROOT, env=self.env, input=stdin, text=True, capture_output=True, timeout=300, check=False,
        )  # fmt: skip
        assert done.returncode == 0, f"dbctl {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
        return done

    def password(self) -> str:
        return (self.state / "pg-password").read_text().strip()


def login_error(port: int, role: str, password: str = "") -> str | None:
    """Log in to `booking` over TCP with exactly this password (no pgpass); the error, or None."""
    try:
        psycopg.connect(
            host="127.0.0.1", port=port, user=role, dbname="booking", password=password,
            passfile=os.path.join(tempfile.gettempdir(), "no-such-pgpass"), connect_timeout=10,
        ).close()  # fmt: skip
    except psycopg.OperationalError as exc:
        return str(exc)
    return None


def local_env(base: Path, state: Path, port: int, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in INHERITED_CONNECTION_SETTINGS}
    env.update(BOOKING_PGDATA=str(base), BOOKING_PG_PORT=str(port), BOOKING_STATE_DIR=str(state), **extra)
    return env


def old_trust_cluster(base: Path, port: int) -> Cluster:
    """What an earlier dbctl left behind: a running cluster that trusts 127.0.0.1, migrated,
    its roles without passwords. work_mem differs from today's settings (a reload applies it)."""
    settings = {**tuned_settings(port), "cron.database_name": "'booking'", "work_mem": "4MB"}
    cluster = Cluster(base / "data", port, settings)
    cluster.start()
    create_database(cluster, "booking")
    migrate(cluster.url("postgres", "booking"))
    return cluster


def local_cluster(tmp_path_factory: pytest.TempPathFactory, kind: str) -> Iterator[Local]:
    base = Path(tempfile.mkdtemp(prefix="booking-pg-"))  # reachable by the postgres OS user
    state = tmp_path_factory.mktemp(f"state-{kind}")
    port = free_port()
    cluster = Cluster(base / "data", port)
    try:
        if kind == "fresh":
            env = local_env(base, state, port, GATEWAY_DB_PASSWORD=GATEWAY_PASSWORD)
        else:
            env = local_env(base, state, port)
            old_trust_cluster(base, port)
            for role in ROLES:
                assert login_error(port, role) is None, "the old cluster should trust everyone"
        local = Local(cluster, state, env)
        local.up = local.dbctl("up")
        yield local
    finally:
        cluster.destroy()


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Local]:
    """Initialised by this dbctl; GATEWAY_DB_PASSWORD set."""
    yield from local_cluster(tmp_path_factory, "fresh")


@pytest.fixture(scope="module")
def upgraded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Local]:
    """Initialised the old way (trust), then `dbctl up` with this dbctl."""
    yield from local_cluster(tmp_path_factory, "upgraded")


@pytest.fixture(params=["fresh", "upgraded"])
def local(request: pytest.FixtureRequest) -> Local:
    cluster: Local = request.getfixturevalue(request.param)
    return cluster


@pytest.mark.parametrize("role", ROLES)
def test_login_without_the_password_is_refused(local: Local, role: str) -> None:
    assert "no password supplied" in (login_error(local.cluster.port, role) or "")
    assert "password authentication failed" in (login_error(local.cluster.port, role, "wrong") or "")


def test_every_role_logs_in_with_its_password(local: Local) -> None:
    derived = role_password_for(GATEWAY_ROLE, local.password())
    gateway = GATEWAY_PASSWORD if local.env.get("GATEWAY_DB_PASSWORD") else derived
    for role, password in (("postgres", local.password()), (OWNER_ROLE, local.password()), (GATEWAY_ROLE, gateway)):
        assert login_error(local.cluster.port, role, password) is None, role


def test_the_gateways_password_is_its_own(upgraded: Local) -> None:
    """The gateway (worker, exporter) process holds only its role's password: it opens no other
    role, and the local password (the superuser's, the owner's) does not open the gateway role.
    (The cluster without GATEWAY_DB_PASSWORD: each role's password is derived from the local one.)"""
    assert not upgraded.env.get("GATEWAY_DB_PASSWORD")
    port, local_password = upgraded.cluster.port, upgraded.password()
    for role in (GATEWAY_ROLE, WORKER_ROLE, MONITOR_ROLE):
        own = role_password_for(role, local_password)
        assert own != local_password
        for other in ("postgres", OWNER_ROLE):
            assert "password authentication failed" in (login_error(port, other, own) or ""), (role, other)
        assert "password authentication failed" in (login_error(port, role, local_password) or ""), role


def test_pg_hba_has_no_trust_and_secrets_are_private(local: Local) -> None:
    rules = [line.split() for line in (local.cluster.datadir / "pg_hba.conf").read_text().splitlines()]
    rules = [r for r in rules if r and not r[0].startswith("#")]
    assert rules and {r[-1] for r in rules} == {"scram-sha-256"}
    assert {r[0] for r in rules} == {"host"} and {r[3] for r in rules} == {"127.0.0.1/32", "::1/128"}
    for name in ("pg-password", "pgpass"):
        assert stat.S_IMODE((local.state / name).stat().st_mode) == 0o600, name


def test_make_psql_and_migrate_still_work_and_print_no_password(local: Local) -> None:
    out = local.dbctl("psql", "-At", stdin="SELECT current_user, current_setting('work_mem');").stdout
    assert out.strip() == f"{OWNER_ROLE}|10MB"  # the upgraded cluster also reloaded its settings
    assert "Applied: nothing new" in local.dbctl("migrate").stdout
    url = local.dbctl("url").stdout
    assert url.strip() == f"postgresql://{OWNER_ROLE}@127.0.0.1:{local.cluster.port}/booking"
    assert local.up is not None
    assert local.password() not in url + local.up.stdout + local.up.stderr


def test_pg_cron_still_runs_without_a_login(local: Local) -> None:
    with psycopg.connect(
        host="127.0.0.1", port=local.cluster.port, user="postgres", dbname="booking", password=local.password()
    ) as conn:
        launcher = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pg_cron launcher'")
        assert launcher.fetchone() == (1,)
        jobs = conn.execute("SELECT count(*) FROM cron.job WHERE database = 'booking'").fetchone()
        assert jobs is not None and jobs[0] >= 1


def test_gateway_db_password_wins_for_the_gateway(fresh: Local) -> None:
    error = login_error(fresh.cluster.port, GATEWAY_ROLE, fresh.password())
    assert "password authentication failed" in (error or "")


def test_upgrade_reloads_settings_and_survives_a_restart(upgraded: Local) -> None:
    assert upgraded.up is not None and "settings changed: reloaded" in upgraded.up.stderr
    upgraded.dbctl("stop")
    assert not upgraded.cluster.running()
    out = upgraded.dbctl("psql", "-At", stdin="SELECT 1;").stdout  # starts it again, under the new rules
    assert out.strip() == "1"
    assert "no password supplied" in (login_error(upgraded.cluster.port, "postgres") or "")


def test_a_lost_password_file_gets_a_clear_message(fresh: Local, tmp_path: Path) -> None:
    state = tmp_path / "state"
    shutil.copytree(fresh.state, state)
    (state / "pg-password").write_text("not-the-password\n")
    done = subprocess.run(
        [sys.executable, "-m", "dbctl", "psql"], cwd=ROOT, env={**fresh.env, "BOOKING_STATE_DIR": str(state)},
        input="SELECT 1;", text=True, capture_output=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode != 0
    assert f"Its password is kept in {state / 'pg-password'}" in done.stderr
    assert "Traceback" not in done.stderr


def test_make_run_serves_through_the_pgpass_file(fresh: Local) -> None:
    port = free_port()
    env = {**fresh.env, "GATEWAY_PORT": str(port), "WEB_CONCURRENCY": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "dbctl", "run"], cwd=ROOT, env=env, start_new_session=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        status = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                status = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code
            except httpx.TransportError:
                status = None
            if status == 200:
                break
            time.sleep(0.3)
        assert status == 200, "the gateway started by `dbctl run` did not get ready"
        # The gateway's PGPASSFILE holds its own role's password only, never the owner's or the
        # superuser's (a changed GATEWAY_DATABASE_URL must not log it in as postgres).
        gateway_pgpass = fresh.state / "pgpass-gateway"
        entries = [line for line in gateway_pgpass.read_text().splitlines() if not line.startswith("#")]
        assert entries and all(line.split(":")[3] == GATEWAY_ROLE for line in entries), entries
        assert stat.S_IMODE(gateway_pgpass.stat().st_mode) == 0o600
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_urls_are_taken_apart_by_libpq_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    """Owner -> gateway and owner -> yoyo keep every parameter, multi-host URLs included."""
    monkeypatch.delenv("GATEWAY_DATABASE_URL", raising=False)
    url = "postgresql://boss:p%40ss@db1:5432,db2:5433/booking?options=-c%20statement_timeout%3D5s&sslmode=require"
    gateway = conninfo_to_dict(gateway_url_for(url))
    assert gateway == {
        "user": GATEWAY_ROLE, "dbname": "booking", "host": "db1,db2", "port": "5432,5433",
        "options": "-c statement_timeout=5s", "sslmode": "require",
    }  # fmt: skip
    keywords = gateway_url_for("host=db1 port=5432 user=boss password=secret dbname=booking")
    assert conninfo_to_dict(keywords) == {"host": "db1", "port": "5432", "user": GATEWAY_ROLE, "dbname": "booking"}
    yoyo = parse_uri(yoyo_url(as_owner(url)))
    assert yoyo.scheme == "postgresql+psycopg"
    assert yoyo.args == {
        "user": "boss", "password": "p@ss", "dbname": "booking", "host": "db1,db2", "port": "5432,5433",
        "options": f"-c statement_timeout=5s -c role={OWNER_ROLE}", "sslmode": "require",
    }  # fmt: skip


def children_of(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def gone(pid: int) -> bool:
    """Exited (a zombie left for a reaper counts: it runs nothing any more)."""
    try:
        return "State:\tZ" in Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True


def wait_for(check: Callable[[], object], what: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.3)


def ready(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code == 200
    except httpx.TransportError:
        return False


def start_make_run(
    fresh: Local, tmp_path: Path, children: int = 2, **extra: str
) -> tuple[subprocess.Popen[bytes], int, Path]:
    port = free_port()
    mail = tmp_path / "mail"
    env = {**fresh.env, "GATEWAY_PORT": str(port), "WEB_CONCURRENCY": "1", "MAIL_DIR": str(mail), "RATE_LIMITS": "off"}
    env.update(extra)
    with open(tmp_path / "make-run.log", "wb") as out:  # the child keeps its own copy
        proc = subprocess.Popen([sys.executable, "-m", "dbctl", "run"], cwd=ROOT, env=env, stdout=out, stderr=out)
    wait_for(lambda: proc.poll() is not None or (ready(port) and len(children_of(proc.pid)) == children), "make run")
    assert proc.poll() is None, (tmp_path / "make-run.log").read_text()
    return proc, port, mail


def test_make_run_starts_gateway_and_worker_a_purchase_mails_and_sigterm_stops_both(
    fresh: Local, tmp_path: Path
) -> None:
    """The acceptance path: `make run`, buy a ticket over HTTP, the .eml with its QR code appears;
    SIGTERM to `make run` stops the gateway and the worker, exit status 0."""
    proc, port, mail = start_make_run(fresh, tmp_path)
    try:
        kids = children_of(proc.pid)
        cmdlines = sorted(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode() for pid in kids)
        assert "uvicorn" in cmdlines[0] and cmdlines[1].endswith("-m worker "), cmdlines
        worker_pgpass = fresh.state / "pgpass-worker"
        entries = [line for line in worker_pgpass.read_text().splitlines() if not line.startswith("#")]
        assert entries and all(line.split(":")[3] == "booking_worker" for line in entries), entries
        assert stat.S_IMODE(worker_pgpass.stat().st_mode) == 0o600

        b = f"http://127.0.0.1:{port}"
        creds = {"email": "fan-run@example.com", "password": "s3cret-pass"}
        httpx.post(f"{b}/auth/register", json={**creds, "full_name": "Fan"}, timeout=10).raise_for_status()
        token = httpx.post(f"{b}/auth/login", json=creds, timeout=10).json()["access_token"]
        auth = {"Authorization": f"Bearer {token}"}
        event = httpx.get(f"{b}/events/demo-onsale-night", timeout=10).json()
        tt = event["ticket_types"][0]["id"]
        res = httpx.post(f"{b}/bookings/reserve", json={"ticket_type_id": tt, "quantity": 2}, headers=auth, timeout=10)
        order = httpx.post(
            f"{b}/bookings/complete/{res.json()['id']}", json={"payment_method": "MOMO"}, headers=auth, timeout=10
        ).json()
        eml = mail / f"{order['id']}.eml"
        wait_for(eml.exists, "the confirmation .eml", timeout=30)
        text = eml.read_text()
        assert "fan-run@example.com" in text and text.count("Content-Type: image/png") == 2
        assert all(t["ticket_code"] in text for t in order["tickets"])
    finally:
        proc.send_signal(signal.SIGTERM)  # the supervisor alone: it passes the signal on
        status = proc.wait(timeout=60)
    assert status == 0, (tmp_path / "make-run.log").read_text()
    assert all(gone(pid) for pid in kids)
    log = (tmp_path / "make-run.log").read_text()
    assert '"worker stopped"' in log and "Traceback" not in log


def test_make_run_killed_takes_its_children_along(fresh: Local, tmp_path: Path) -> None:
    """kill -9 of `make run`: PR_SET_PDEATHSIG stops the gateway and the worker anyway."""
    proc, _, _ = start_make_run(fresh, tmp_path)
    kids = children_of(proc.pid)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    wait_for(lambda: all(gone(pid) for pid in kids), "the orphans to stop", timeout=60)


def test_make_run_without_the_worker_and_with_a_wrong_run_worker(fresh: Local, tmp_path: Path) -> None:
    proc, _, _ = start_make_run(fresh, tmp_path, children=1, RUN_WORKER="no")
    try:
        (kid,) = children_of(proc.pid)
        assert "uvicorn" in Path(f"/proc/{kid}/cmdline").read_text()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    done = subprocess.run(
        [sys.executable, "-m", "dbctl", "run"], cwd=ROOT, env={**fresh.env, "RUN_WORKER": "maybe"},
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode != 0 and "RUN_WORKER must be yes or no" in done.stderr


@pytest.mark.skipif(
    exporter_binary() is None, reason="prometheus-postgres-exporter not installed (`make test` installs it)"
)
def test_make_run_with_the_exporter_logs_it_in_as_the_monitor(fresh: Local, tmp_path: Path) -> None:
    """METRICS_EXPORTER=yes: a third child, the PostgreSQL exporter, logged in as booking_monitor
    through its own pgpass line (this cluster asks every role for a password); every query of
    ours runs; SIGTERM stops it with the rest."""
    address = f"127.0.0.1:{free_port()}"
    proc, _, _ = start_make_run(
        fresh, tmp_path, children=2, RUN_WORKER="no", METRICS_EXPORTER="yes", EXPORTER_ADDRESS=address
    )
    try:
        kids = children_of(proc.pid)
        pgpass = fresh.state / "pgpass-monitor"
        entries = [line for line in pgpass.read_text().splitlines() if not line.startswith("#")]
        assert entries and all(line.split(":")[3] == "booking_monitor" for line in entries), entries
        assert stat.S_IMODE(pgpass.stat().st_mode) == 0o600

        def scraped() -> str | None:
            try:
                r = httpx.get(f"http://{address}/metrics", timeout=10)
            except httpx.TransportError:
                return None
            return r.text if r.status_code == 200 else None

        wait_for(scraped, "the exporter", timeout=30)
        text = scraped() or ""
        assert "\npg_up 1" in text and "\npg_exporter_last_scrape_error 0" in text, text[-2000:]
        assert 'booking_pg_holds_active{server="127.0.0.1:' in text
    finally:
        proc.send_signal(signal.SIGTERM)
        status = proc.wait(timeout=60)
    assert status == 0, (tmp_path / "make-run.log").read_text()
    assert all(gone(pid) for pid in kids)
    log = (tmp_path / "make-run.log").read_text()
    assert f"PostgreSQL exporter on http://{address}/metrics" in log
