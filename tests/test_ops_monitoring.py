"""Monitoring outside the gateway (issue 13): the PostgreSQL exporter with our queries file, run as
the real Debian binary against a test database; the alert rules and the scrape config through
promtool (check + the rules' unit tests); the dashboard and the rules use only names that exist;
the monitoring role can run its functions and nothing else.

The binaries come from the Debian packages prometheus (promtool) and prometheus-postgres-exporter,
which `make test` installs (scripts/install-system-deps); without them these tests skip, saying so.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from dbctl.migrate import MONITOR_ROLE, OWNER_ROLE, ROOT
from dbctl.monitor import (
    QUERIES,
    ExporterError,
    exporter_address,
    exporter_binary,
    exporter_command,
    exporter_env,
    exporter_wanted,
    monitor_dsn,
)
from dbctl.throwaway import free_port
from gateway import metrics
from tests.conftest import call, url_for
from tests.factories import make_ticket_type, make_user, reserve
from tests.test_payments_sql import checkout
from tests.test_waiting_room import join, open_sale, overview, queue_event, status

OPS = ROOT / "ops"
PROMETHEUS_DIR = OPS / "prometheus"
DASHBOARD = OPS / "grafana" / "onsale.json"
PROMTOOL = shutil.which("promtool")
EXPORTER = exporter_binary()
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not installed (Debian package prometheus; `make test` installs it)"
)
needs_exporter = pytest.mark.skipif(
    EXPORTER is None,
    reason="prometheus-postgres-exporter not installed (Debian package of that name; `make test` installs it)",
)

Figures = list[tuple[str, dict[str, str], float]]


# ------------------------------------------------------------------ promtool


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *args], cwd=PROMETHEUS_DIR, capture_output=True, text=True, timeout=60)


@needs_promtool
@pytest.mark.parametrize("config_file", ["prometheus.yml", "prometheus-compose.yml"])  # one machine, docker-compose.yml
def test_promtool_accepts_the_rules_and_the_scrape_config(config_file: str) -> None:
    rules = promtool("check", "rules", "alerts.yml")
    assert rules.returncode == 0, rules.stdout + rules.stderr
    config = promtool("check", "config", config_file)  # loads alerts.yml too
    assert config.returncode == 0, config.stdout + config.stderr
    assert "1 rule files found" in config.stdout, config.stdout


@needs_promtool
def test_alert_rules_pass_their_unit_tests() -> None:
    done = promtool("test", "rules", "alerts_test.yml")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


@needs_promtool
def test_promtool_test_fails_on_a_wrong_expectation(tmp_path: Path) -> None:
    """The unit tests can fail: the same file with one expected value changed does."""
    shutil.copy(PROMETHEUS_DIR / "alerts.yml", tmp_path / "alerts.yml")
    broken = (PROMETHEUS_DIR / "alerts_test.yml").read_text().replace("(2 rows)", "(3 rows)")
    (tmp_path / "alerts_test.yml").write_text(broken)
    assert PROMTOOL is not None
    done = subprocess.run([PROMTOOL, "test", "rules", "alerts_test.yml"], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode != 0 and "BookingInvariantViolated" in done.stdout + done.stderr


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_every_alert_has_a_severity_and_a_test_where_it_fires() -> None:
    tests = yaml.safe_load((PROMETHEUS_DIR / "alerts_test.yml").read_text())["tests"]
    fired = {case["alertname"] for t in tests for case in t.get("alert_rule_test", []) if case.get("exp_alerts")}
    names = [rule["alert"] for rule in alert_rules()]
    assert len(names) == len(set(names))
    assert set(names) <= fired, set(names) - fired
    for rule in alert_rules():
        assert rule["labels"]["severity"] in ("critical", "warning"), rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
    severities = {rule["alert"]: rule["labels"]["severity"] for rule in alert_rules()}
    assert severities["BookingInvariantViolated"] == "critical"


# ------------------------------------------------------------------ names used = names exported


def gateway_names() -> set[str]:
    """Every sample name the gateway's /metrics can carry (gateway/metrics.py's registry)."""
    names: set[str] = set()
    for family in metrics.REGISTRY.collect():
        base = family.name
        if family.type == "counter":
            names |= {f"{base}_total", f"{base}_created"}
        elif family.type == "histogram":
            names |= {f"{base}_bucket", f"{base}_sum", f"{base}_count", f"{base}_created"}
        else:
            names.add(base)
    return names


def exporter_names() -> set[str]:
    """Our queries file's names (<prefix>_<column> of every non-label column) and the exporter's own
    that the rules and the dashboard use."""
    names = {"pg_up", "pg_exporter_last_scrape_error", "pg_exporter_last_scrape_duration_seconds", "up"}
    for prefix, query in yaml.safe_load(QUERIES.read_text()).items():
        for column in query["metrics"]:
            ((name, spec),) = column.items()
            if spec["usage"] != "LABEL":
                names.add(f"{prefix}_{name}")
    return names


METRIC = re.compile(r"\b(booking_[a-z0-9_]+|pg_[a-z0-9_]+|up)\b(?!\s*\()")


def dashboard_exprs() -> list[str]:
    board = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in board["panels"] for t in p.get("targets", [])]


def test_dashboard_and_rules_use_only_exported_names() -> None:
    known = gateway_names() | exporter_names()
    exprs = dashboard_exprs() + [rule["expr"] for rule in alert_rules()]
    used = {m for e in exprs for m in METRIC.findall(e)}
    assert used - known == set()
    # The things the issue asks to see are on the dashboard.
    board = " ".join(dashboard_exprs())
    for name in (
        "booking_http_requests_total", "booking_http_request_duration_seconds_bucket",
        "booking_reserve_outcomes_total", "booking_shed_total", "booking_db_pool_waiting",
        "booking_waiting_room_serving_position", "booking_pg_waiting_room_waiting", "booking_pg_jobs_todo",
        "booking_pg_payments_orders_pending", "booking_pg_lock_waits_waiting", "booking_pg_holds_active",
        "booking_pg_replication_replay_lag_seconds", "booking_pg_invariant_violations",
    ):  # fmt: skip
        assert name in board, name


def test_the_name_check_would_see_a_wrong_name() -> None:
    assert METRIC.findall('sum(rate(booking_http_requestz_total{route="/x"}[5m])) by (le)') == [
        "booking_http_requestz_total"
    ]
    assert METRIC.findall("histogram_quantile(0.99, x) and up == 0") == ["up"]


@needs_promtool
def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    """promtool parses every dashboard query (as recording rules, the dashboard's variables
    replaced by the scrape config's job names)."""
    exprs = [
        e.replace("$gateway_job", "booking-gateway").replace("$db_job", "booking-postgres") for e in dashboard_exprs()
    ]
    rules = {
        "groups": [
            {"name": "dashboard", "rules": [{"record": f"dashboard:q{i}", "expr": e} for i, e in enumerate(exprs)]}
        ]
    }
    (tmp_path / "dashboard.yml").write_text(yaml.safe_dump(rules))
    assert PROMTOOL is not None
    done = subprocess.run([PROMTOOL, "check", "rules", "dashboard.yml"], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{len(exprs)} rules found" in done.stdout
    rules["groups"][0]["rules"].append({"record": "dashboard:broken", "expr": "sum by (le (rate(x[1m]))"})
    (tmp_path / "dashboard.yml").write_text(yaml.safe_dump(rules))
    broken = subprocess.run([PROMTOOL, "check", "rules", "dashboard.yml"], cwd=tmp_path, capture_output=True, text=True)
    assert broken.returncode != 0


def test_dashboard_is_grafana_json() -> None:
    board = json.loads(DASHBOARD.read_text())
    assert board["title"] and board["uid"] and board["schemaVersion"] >= 30
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        assert panel["type"] in ("timeseries", "stat", "row", "table", "bargauge"), panel["title"]
        for target in panel.get("targets", []):
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]


# ------------------------------------------------------------------ the monitoring role


def test_monitor_role_runs_exactly_its_functions_and_reads_no_table(owner: psycopg.Connection) -> None:
    granted = owner.execute(
        "SELECT p.proname, coalesce(obj_description(p.oid, 'pg_proc'), '') LIKE '(monitor)%%'"
        "  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
        " WHERE n.nspname IN ('api', 'internal', 'public') AND has_function_privilege(%s, p.oid, 'EXECUTE')"
        "   AND p.proacl IS NOT NULL",
        (MONITOR_ROLE,),
    ).fetchall()
    documented = owner.execute(
        "SELECT proname FROM pg_proc WHERE pronamespace = 'api'::regnamespace"
        " AND obj_description(oid, 'pg_proc') LIKE '(monitor)%'"
    ).fetchall()
    called = set(re.findall(r"api\.(monitor_[a-z_]+)\(", QUERIES.read_text()))
    assert {r[0] for r in granted} == {r[0] for r in documented} == called
    assert all(r[1] for r in granted)
    tables = owner.execute(
        "SELECT table_name FROM information_schema.role_table_grants WHERE grantee = %s", (MONITOR_ROLE,)
    ).fetchall()
    assert tables == []
    assert owner.execute("SELECT pg_has_role(%s, 'pg_monitor', 'MEMBER')", (MONITOR_ROLE,)).fetchone() == (True,)


def test_monitor_role_is_refused_tables_and_writes(connect: Callable[..., psycopg.Connection]) -> None:
    monitor = connect(MONITOR_ROLE)
    assert monitor.execute("SELECT active FROM api.monitor_holds()").fetchone() == (0,)
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        monitor.execute("SELECT count(*) FROM public.orders")  # no USAGE on public either
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        monitor.execute("SELECT * FROM api.check_invariants()")
    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        monitor.execute("CREATE TEMP TABLE t (x int)")


def test_monitor_invariants_lists_every_check_of_check_invariants(owner: psycopg.Connection) -> None:
    source = owner.execute("SELECT prosrc FROM pg_proc WHERE oid = 'api.check_invariants'::regproc").fetchone()
    assert source is not None
    checks = set(re.findall(r"SELECT '([a-z_]+)', ", source[0]))
    assert len(checks) >= 9
    rows = owner.execute("SELECT check_name, violations FROM api.monitor_invariants()").fetchall()
    assert {r[0] for r in rows} == checks and all(r[1] == 0 for r in rows)


def test_monitor_payments_and_callbacks_start_at_zero_and_count_a_checkout(
    owner: psycopg.Connection, gw: psycopg.Connection
) -> None:
    assert owner.execute("SELECT * FROM api.monitor_payments()").fetchone() == (0, 0.0, 0, 0, 0, 0.0)
    outcomes = owner.execute("SELECT outcome, events FROM api.monitor_payment_events()").fetchall()
    assert len(outcomes) == 7 and all(n == 0 for _, n in outcomes)
    call(owner, "set_payment_mode", p_mode="provider")
    checkout(gw, make_ticket_type(owner, quantity=5), quantity=2)
    row = owner.execute("SELECT orders_pending, pending_past_deadline, payments_pending FROM api.monitor_payments()")
    assert row.fetchone() == (1, 0, 1)


def test_monitor_waiting_rooms_agrees_with_the_dbas_overview(owner: psycopg.Connection, gw: psycopg.Connection) -> None:
    assert owner.execute("SELECT * FROM api.monitor_waiting_rooms()").fetchall() == []
    event, _ = queue_event(owner, rate=6)
    fans = [make_user(gw) for _ in range(3)]
    for fan in fans:
        join(gw, event, fan)

    def room() -> dict[str, Any]:
        (row,) = owner.execute("SELECT row_to_json(m) FROM api.monitor_waiting_rooms() m").fetchall()
        found: dict[str, Any] = row[0]
        assert found["event_id"] == event["id"] and found["event"] == event["slug"]
        dba = overview(owner, event)
        assert {k: found[k] for k in ("joined", "serving", "waiting", "admitted")} == {
            k: dba[k] for k in ("joined", "serving", "waiting", "admitted")
        }
        return found

    before = room()
    assert (before["joined"], before["serving"], before["waiting"], before["admission_rate_per_minute"]) == (3, 0, 3, 0)
    open_sale(owner, event, seconds_ago=20)
    status(gw, event, fans[0])  # the first poll after the opening shuffles the room
    after = room()
    assert after["admission_rate_per_minute"] == 6 and after["paused"] == 0 and after["joined"] == 3
    assert after["serving"] >= 2  # 20 s at 6 a minute (more as the clock runs on)


# ------------------------------------------------------------------ dbctl's option


def test_metrics_exporter_option_and_address() -> None:
    assert not exporter_wanted({}) and not exporter_wanted({"METRICS_EXPORTER": "no"})
    assert exporter_wanted({"METRICS_EXPORTER": "yes"}) and exporter_wanted({"METRICS_EXPORTER": "ON"})
    with pytest.raises(ExporterError, match="METRICS_EXPORTER"):
        exporter_wanted({"METRICS_EXPORTER": "maybe"})
    assert exporter_address({}) == "127.0.0.1:9187"
    assert exporter_address({"EXPORTER_ADDRESS": "0.0.0.0:19187"}) == "0.0.0.0:19187"
    for bad in ("9187", "host:", "host:99999", ":9187"):
        with pytest.raises(ExporterError, match="EXPORTER_ADDRESS"):
            exporter_address({"EXPORTER_ADDRESS": bad})


def test_monitor_dsn_is_the_owners_connection_as_the_monitor() -> None:
    dsn = monitor_dsn("host=127.0.0.1 port=5 dbname=booking user=booking_owner password=x options='-c role=r'", {})
    assert "user=booking_monitor" in dsn and "password" not in dsn and "role" not in dsn
    assert "sslmode=disable" in dsn and "port=5" in dsn and "dbname=booking" in dsn
    explicit = monitor_dsn("host=a", {"MONITOR_DATABASE_URL": "postgresql://m:pw@db:6432/booking?sslmode=require"})
    assert "user=m" in explicit and "password=pw" in explicit and "sslmode=require" in explicit


# ------------------------------------------------------------------ the exporter itself


@contextmanager
def running_exporter(dbname: str) -> Iterator[str]:
    """The real exporter, as `METRICS_EXPORTER=yes make run` starts it, on a free port."""
    assert EXPORTER is not None
    address = f"127.0.0.1:{free_port()}"
    dsn = monitor_dsn(url_for(dbname, OWNER_ROLE), {})
    proc = subprocess.Popen(
        exporter_command(EXPORTER, address),
        env=exporter_env(dsn, {"PATH": "/usr/bin:/bin"}),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://{address}/metrics"
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                if httpx.get(url, timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise AssertionError(f"the exporter did not start: {proc.communicate()[1]}")
            time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def scrape(url: str) -> Figures:
    r = httpx.get(url, timeout=10)
    assert r.status_code == 200, r.text
    return [(s.name, s.labels, s.value) for f in text_string_to_metric_families(r.text) for s in f.samples]


def figure(found: Figures, name: str, **labels: str) -> float:
    """The one sample `name` whose labels include `labels` (the exporter adds `server`)."""
    hits = [v for n, lab, v in found if n == name and labels.items() <= lab.items()]
    assert len(hits) == 1, (name, labels, hits)
    return hits[0]


@needs_exporter
def test_exporter_figures_move_with_the_database(
    dbname: str, owner: psycopg.Connection, gw: psycopg.Connection, connect: Callable[..., psycopg.Connection]
) -> None:
    tt = make_ticket_type(owner, quantity=10)
    with running_exporter(dbname) as url:
        before = scrape(url)
        assert figure(before, "pg_up") == 1
        assert figure(before, "pg_exporter_last_scrape_error") == 0  # every query of ours ran
        assert figure(before, "booking_pg_holds_active") == 0
        assert figure(before, "booking_pg_lock_waits_waiting", relation="ticket_types") == 0
        assert figure(before, "booking_pg_invariant_violations", check="stock_balance") == 0
        assert figure(before, "booking_pg_payments_orders_pending") == 0
        assert figure(before, "booking_pg_node_standby") == 0
        assert not [n for n, _, _ in before if n.startswith(("booking_pg_jobs_", "booking_pg_replication_"))]

        # A hold, a queued job, and two sessions waiting for the row a third holds.
        reserve(gw, make_user(gw), tt, quantity=3)
        owner.execute(
            "INSERT INTO procrastinate_jobs (queue_name, task_name, args) VALUES ('mail', 'send_confirmation', '{}')"
        )
        holder = connect(OWNER_ROLE, autocommit=False)
        holder.execute("SELECT 1 FROM ticket_types WHERE id = %s FOR UPDATE", (tt["id"],))
        waiters = [connect(OWNER_ROLE) for _ in range(2)]
        threads = [
            threading.Thread(
                target=w.execute, args=("UPDATE ticket_types SET version = version + 1 WHERE id = %s", (tt["id"],))
            )
            for w in waiters
        ]
        try:
            for t in threads:
                t.start()
                wait_for_lock_waits(owner, len([x for x in threads if x.is_alive()]))
            during = scrape(url)
        finally:
            holder.rollback()
            for t in threads:
                t.join(timeout=30)
        assert figure(during, "booking_pg_holds_active") == 1
        assert figure(during, "booking_pg_holds_active_seats") == 3
        assert figure(during, "booking_pg_jobs_todo", queue="mail", task="send_confirmation") == 1
        assert figure(during, "booking_pg_jobs_failed", queue="mail", task="send_confirmation") == 0
        # The first waiter waits on the holder's transaction (tied to the table by its tuple
        # lock), the second on that tuple lock: both are counted.
        assert figure(during, "booking_pg_lock_waits_waiting", relation="ticket_types") == 2
        assert figure(during, "booking_pg_lock_waits_oldest_wait_seconds", relation="ticket_types") > 0
        assert figure(during, "booking_pg_lock_waits_waiting", relation="orders") == 0
        assert figure(during, "booking_pg_all_lock_waits_waiting") == 2

        after = scrape(url)
        assert figure(after, "booking_pg_lock_waits_waiting", relation="ticket_types") == 0

        # A broken stock balance: the invariants are cached for 5 minutes (their cost), so this
        # exporter still shows its first answer; a new one sees the violation.
        owner.execute("UPDATE ticket_types SET available_quantity = available_quantity - 1 WHERE id = %s", (tt["id"],))
        assert figure(scrape(url), "booking_pg_invariant_violations", check="stock_balance") == 0
    with running_exporter(dbname) as url:
        fresh = scrape(url)
        assert figure(fresh, "booking_pg_invariant_violations", check="stock_balance") == 1
        assert figure(fresh, "booking_pg_invariant_violations", check="tickets_issued") == 0


def wait_for_lock_waits(conn: psycopg.Connection, expected: int) -> None:
    deadline = time.monotonic() + 15
    while True:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        ).fetchone()
        if row is not None and row[0] >= expected:
            return
        assert time.monotonic() < deadline, f"{expected} lock waits never showed"
        time.sleep(0.02)
