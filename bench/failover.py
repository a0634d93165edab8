"""`make failover-drill` (python -m bench.failover): the failover drill of issue 13, item 6.

On a throwaway copy of the `make cluster` layout (dbctl/onebox.py: pg_auto_failover monitor,
primary and standby with synchronous replication; HAProxy over GATEWAY_INSTANCES single-worker
gateways; a job worker), on free 127.0.0.1 ports, under a closed-loop purchase load through
HAProxy (bench/purchases.py: DRILL_CLIENTS clients, each reserve then complete, no think time):

1. kill -9 the primary's postmaster (its pg_autoctl keeper stays and starts PostgreSQL again);
2. kill -9 the primary's whole node (keeper and postmaster: a lost machine): the monitor fails
   over to the standby; the lost node is then started again and rejoins as the standby;
3. kill -9 one gateway instance (HAProxy's health checks take it out).

For each: the time until purchases succeed again and the requests that failed meanwhile (by
status and code). Then every reservation and order answered 201 is looked up in the database,
the invariants checked, PAID orders without tickets counted, and the worker's jobs checked (it
must have reconnected by itself). The figures go into bench/RESULTS.md (its own section).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import re
import secrets
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psycopg

from bench.purchases import Load, clean, verify
from dbctl import autofailover, haproxy
from dbctl.migrate import OWNER_ROLE, migrate
from dbctl.onebox import Apps
from dbctl.throwaway import free_port

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "RESULTS.md"
BEGIN, END = "<!-- failover-drill:begin -->", "<!-- failover-drill:end -->"
SECRET = secrets.token_urlsafe(32)


def _int(name: str, default: int) -> int:
    return int(os.environ.get(name, "").strip() or default)


def outage(load: Load, t0: float, settle: float) -> dict[str, Any]:
    """From t0 (the kill) to `settle` later: failures by kind, and when purchases succeeded again
    (the first completed order after the last failure of the window; 0 when nothing failed)."""
    failed = load.failures(t0, t0 + settle)
    last_fail = max((a.at for a in load.answers if a.status != 201 and t0 <= a.at <= t0 + settle), default=None)
    if last_fail is None:
        back = 0.0
    else:
        first = load.first_success_after(last_fail)
        back = (first - t0) if first is not None else float("nan")
    ok = sum(1 for a in load.answers if a.status == 201 and t0 <= a.at <= t0 + settle)
    return {"recovered_s": back, "failed": dict(failed), "failed_total": sum(failed.values()), "ok": ok}


def monitor_events(f: autofailover.Formation, since: dt.datetime) -> list[str]:
    """What the monitor decided since then (its pgautofailover.event table)."""
    with psycopg.connect(f"host=127.0.0.1 port={f.monitor_port} user=autoctl_node dbname=pg_auto_failover",
                         password=f.password, autocommit=True) as conn:  # fmt: skip
        rows = conn.execute("SELECT eventtime, description FROM pgautofailover.event WHERE eventtime > %s"
                            " ORDER BY eventid", (since,)).fetchall()  # fmt: skip
    return [f"{(t - since).total_seconds():+.1f}s {d}" for t, d in rows]


def wait_orders(load: Load, n: int, timeout: float = 60) -> None:
    target = len(load.ok("complete")) + n
    deadline = time.monotonic() + timeout
    while len(load.ok("complete")) < target:
        if time.monotonic() > deadline:
            raise RuntimeError(f"purchases do not flow: {load.failures(time.monotonic() - timeout)}")
        time.sleep(0.2)


def drill() -> dict[str, Any]:
    clients = _int("DRILL_CLIENTS", 32)
    instances = _int("GATEWAY_INSTANCES", 2)
    settle = float(_int("DRILL_SETTLE_SECONDS", 40))
    base = Path(tempfile.mkdtemp(prefix="booking-drill-"))
    work = Path(tempfile.mkdtemp(prefix="booking-drill-apps-"))
    f = autofailover.Formation(base, free_port(), (free_port(), free_port()), secrets.token_urlsafe(16))
    layout = haproxy.Layout(port=free_port(), stats_port=free_port(),
                            gateway_ports=tuple(free_port() for _ in range(instances)))  # fmt: skip
    apps = Apps(f, layout, work)
    os.environ["PGPASSFILE"] = str(f.pgpass)
    report: dict[str, Any] = {"clients": clients, "instances": instances, "settle": settle}
    load: Load | None = None
    runner: threading.Thread | None = None
    try:
        t = time.monotonic()
        f.create()
        report["create_s"] = time.monotonic() - t
        migrate(f.url(OWNER_ROLE), f.url("postgres"), role_password=f.password)
        with psycopg.connect(f.url(OWNER_ROLE), autocommit=True) as owner:
            owner.execute("SELECT api.set_payment_mode('instant')")
            start = dt.datetime.now(dt.UTC) + dt.timedelta(days=10)
            event = owner.execute("SELECT api.create_event(p_slug => 'drill', p_name => 'Drill', p_location => 'Hanoi',"
                                  " p_start_time => %s, p_end_time => %s)->>'id'",
                                  (start, start + dt.timedelta(hours=3))).fetchone()[0]  # type: ignore[index]  # fmt: skip
            tt = owner.execute("SELECT api.create_ticket_type(p_event_id => %s, p_name => 'Standard',"
                               " p_price => 100000, p_initial_quantity => 1000000)->>'id'",
                               (event,)).fetchone()[0]  # type: ignore[index]  # fmt: skip
            owner.execute("SELECT api.publish_event(%s)", (event,))
            users = [r[0] for r in owner.execute(
                "SELECT api.register_user(p_email => 'drill' || n || '@example.com', p_password_hash => '$argon2id$x',"
                " p_full_name => 'D' || n)->>'id' FROM generate_series(1, %s) n", (_int("DRILL_USERS", 60_000),),
            )]  # fmt: skip
        env = {**os.environ, "JWT_SECRET": SECRET, "RATE_LIMITS": "no", "PAYMENT_SANDBOX_DIR": str(work / "sandbox"),
               "MAIL_DIR": str(work / "mail"), "BOOKING_STATE_DIR": str(work)}  # fmt: skip
        apps.start(env)
        apps.wait_ready()
        load = Load(f"http://127.0.0.1:{layout.port}", users, str(tt), SECRET, clients=clients, timeout=30)
        runner = threading.Thread(target=lambda: asyncio.run(load.run()), daemon=True)
        began = time.monotonic()
        runner.start()
        wait_orders(load, 200)
        time.sleep(10)
        steady = [a for a in load.ok("complete") if a.at > began + 5]
        report["steady_rate"] = len(steady) / max(time.monotonic() - began - 5, 1)

        # 1. The primary's postmaster alone.
        primary = f.writable()
        assert primary is not None
        t0 = time.monotonic()
        pm_wall = dt.datetime.now(dt.UTC)
        f.kill_postmaster(primary)
        time.sleep(settle)
        for line in monitor_events(f, pm_wall):
            print("monitor:", line)
        report["postmaster"] = {**outage(load, t0, settle), "primary_before": primary, "primary_after": f.writable(),
                                "states": f.state()}  # fmt: skip
        f.wait_healthy(120)
        wait_orders(load, 100)

        # 2. The primary's whole node: keeper and postmaster (failover).
        primary = f.writable()
        assert primary is not None
        t0 = time.monotonic()
        killed_wall = dt.datetime.now(dt.UTC)
        f.kill_node(primary)
        time.sleep(settle)
        report["node"] = {**outage(load, t0, settle), "primary_before": primary, "primary_after": f.writable()}
        t = time.monotonic()
        f.start(primary)  # the lost node comes back: it rejoins as the standby (pg_rewind)
        f.wait_healthy(180)
        report["node"]["rejoin_s"] = time.monotonic() - t
        wait_orders(load, 100)

        # 3. One gateway instance.
        victim = apps.pid("gw1")
        assert victim is not None
        t0 = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        time.sleep(15)
        report["gateway"] = outage(load, t0, 15)
        load.stop()
        runner.join(timeout=60)

        # The worker found the new primary by itself: the confirmation mails of orders paid after
        # the failover were sent (their jobs succeeded), none failed.
        time.sleep(10)
        with psycopg.connect(f.url(OWNER_ROLE), autocommit=True) as owner:
            report["verify"] = verify(owner, load)
            report["jobs"] = dict(owner.execute(
                "SELECT status::text, count(*) FROM procrastinate_jobs WHERE task_name = 'send_confirmation'"
                " GROUP BY 1").fetchall())  # fmt: skip
            report["jobs_done_after_failover"] = owner.execute(
                "SELECT count(*) FROM procrastinate_events WHERE type = 'succeeded' AND at > %s", (killed_wall,)
            ).fetchone()[0]  # type: ignore[index]
        report["answers"] = dict(Counter(f"{a.step} {a.status}" for a in load.answers))
        report["worker_alive"] = apps.pid("worker") is not None
        report["gateways_alive"] = [apps.pid(f"gw{n}") is not None for n in range(1, instances + 1)]
        return report
    finally:
        if load is not None:
            load.stop()
        apps.stop(timeout=15)
        f.destroy()
        shutil.rmtree(work, ignore_errors=True)


def _failed(d: dict[str, int]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in sorted(d.items(), key=lambda kv: -kv[1])) or "none"


def section(r: dict[str, Any]) -> str:
    v = r["verify"]
    pm, node, gw = r["postmaster"], r["node"], r["gateway"]
    failover = "no failover: the same node stayed primary" if pm["primary_after"] == pm["primary_before"] else (
        f"failed over to {pm['primary_after']}")  # fmt: skip
    lines = [
        BEGIN,
        "## Failover drill (issue 13): pg_auto_failover under purchase load",
        "",
        f"Run: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, `make failover-drill` (`python -m bench.failover`), "
        "on the shared 2-core machine (other benches running).",
        "",
        "Layout: the `make cluster` layout on throwaway ports: pg_auto_failover 2.0 monitor + primary + standby "
        "(synchronous replication, the demo timing of dbctl/autofailover.py: unhealthy after 5 s, "
        "primary_demote_timeout 10 s), HAProxy over "
        f"{r['instances']} single-worker gateways, a job worker; all processes on one machine.",
        f"Load model: closed loop, {r['clients']} concurrent clients through HAProxy, no think time; each client buys "
        "as a new user: `POST /bookings/reserve` (1 ticket) then `POST /bookings/complete/{id}` (instant payment); "
        "an unanswered or 502/503/504 request is tried again by the same client after 50 ms (200 ms for complete), "
        "with the same `Idempotency-Key` (one per step of each purchase), so a try whose answer was lost is "
        "answered with its first outcome. "
        f"Steady rate before the faults: {r['steady_rate']:.0f} orders/s. Each fault is watched for "
        f"{r['settle']:.0f} s (the gateway's 15 s).",
        "",
        "| fault | purchases succeed again after | requests failed meanwhile (step status code) "
        "| 201s in the window (reserve + complete) |",
        "|---|---|---|---|",
        f"| kill -9 the primary's postmaster (its keeper starts it again; {failover}) | {pm['recovered_s']:.1f} s | "
        f"{_failed(pm['failed'])} | {pm['ok']} |",
        f"| kill -9 the primary's node: keeper + postmaster (failover {node['primary_before']} -> "
        f"{node['primary_after']}) | {node['recovered_s']:.1f} s | {_failed(node['failed'])} | {node['ok']} |",
        f"| kill -9 one gateway instance (of {r['instances']}) | {gw['recovered_s']:.1f} s | {_failed(gw['failed'])} | "
        f"{gw['ok']} |",
        "",
        f"The lost node, started again, rejoined as the standby (pg_rewind) in {node['rejoin_s']:.1f} s; "
        "no gateway or worker was restarted for the failover.",
        "",
        f"Checked afterwards through the read-write URL (the new primary): {v['reservations_201']} reservations and "
        f"{v['orders_201']} orders answered 201; missing reservations: {len(v['missing_reservations'])}, "
        f"orders missing or not PAID: {len(v['missing_or_unpaid_orders'])}, PAID orders without tickets: "
        f"{len(v['paid_without_tickets'])}, `api.check_invariants()` rows: {len(v['violations'])} "
        f"({v['paid_orders_in_db']} PAID orders in the database: at least the 201s, more when an answer was "
        "lost in flight). "
        f"The worker, not restarted, reconnected to the new primary by itself: {r['jobs_done_after_failover']} jobs "
        f"succeeded after the node was killed (confirmation-mail jobs at the end: {r['jobs']}; the worker sends "
        "mails slower than this load buys).",
        "",
        "`503 busy (HAProxy)` is HAProxy's own answer (the same problem+json body as a gateway's `503 busy`): while "
        "no node takes writes every gateway's /readyz fails and HAProxy has none in service; `no answer` is a "
        "connection cut by a kill.",
        "",
        f"All answers: {r['answers']}.",
        END,
    ]
    return "\n".join(lines) + "\n"


def splice(existing: str, new: str) -> str:
    if BEGIN in existing and END in existing:
        return re.sub(re.escape(BEGIN) + ".*?" + re.escape(END) + "\n?", lambda _: new, existing, flags=re.S)
    return existing.rstrip("\n") + "\n\n" + new


def main() -> int:
    missing = autofailover.autoctl_binary() is None or not autofailover.monitor_extension_installed()
    if missing:
        print("pg_auto_failover is missing: make failover-drill installs it", file=sys.stderr)
        return 1
    haproxy.require_binary()
    report = drill()
    text = section(report)
    RESULTS.write_text(splice(RESULTS.read_text(), text))
    print(text)
    ok = clean(report["verify"])
    print("drill: " + ("clean" if ok else "PROBLEMS FOUND (see above)"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
