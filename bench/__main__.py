"""make bench: pgbench scenarios and wrk HTTP load against a private, durable PostgreSQL and the
real gateway, all on 127.0.0.1 and bounded in time. Prints one table per part and writes
bench/RESULTS.md. After every run api.check_invariants() must be empty, or the bench fails.

  python -m bench [--seconds 10] [--http-seconds 10] [--clients 1,8,32,128]
                  [--connections 64,256,1000] [--huge 10000] [--only pgbench|http|crowd] [--no-write]
                  [--crowd-parts crowd,sweep,overload,room,cost,soak] [--crowd-users 10000] [--soak-seconds 600] ...
                  [--only delivery] [--delivery-orders 1000] [--delivery-rate 100] [--delivery-load-users 200]

The crowd part (issue 10: users who think between clicks, the overload sweep, the waiting room,
the soak, cost per request) is in bench/crowd.py, its charts in bench/plots.py. `--only crowd`
rewrites only the crowd section of bench/RESULTS.md and keeps the rest.

The delivery part (issue 11: confirmation e-mails through the job queue to a local SMTP sink,
without other load and during an onsale) is in bench/delivery.py; `--only delivery` likewise
rewrites only its own section.

The lb-compare part (issue 13: HAProxy + N single-worker gateways against one uvicorn with N
workers, under the crowd and the 1000-connection hot reserve) is in bench/lbcompare.py; the costs
part (gateway CPU and database time per route, WAL and bytes per order, for docs/SCALING.md) in
bench/costs.py. `--only lb-compare` and `--only costs` each rewrite only their own section.
"""

from __future__ import annotations

import argparse
import datetime as dt
import glob
import json
import os
import platform
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
import psycopg

from bench import costs, crowd, delivery, lbcompare, plots
from bench.flowgen import SOCKET_ERRORS, RouteSummary, pct
from dbctl.__main__ import uvicorn_args
from dbctl.cluster import Cluster, create_database, memory_bytes, pg_tool, tuned_settings
from dbctl.migrate import migrate
from dbctl.throwaway import free_port
from gateway.passwords import hash_password

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SECRET = "bench-secret-bench-secret-bench-secret-0123456789"
HOT = "10000000-0000-4000-8000-000000000001"
CAPPED = "50000000-0000-4000-8000-000000000001"  # max_per_user 4, its event max_tickets_per_user 8
CAPPED_ROW = "reserve capped (4 per buyer: then 409 limit_exceeded)"
USERS = 2000
CROWD_BEGIN, CROWD_END = "<!-- crowd part: begin -->", "<!-- crowd part: end -->"
CROWD_PARTS = ("crowd", "sweep", "overload", "room", "cost", "soak")
LIMITS_ON_ROW = "reserve hot (coalesced, RATE_LIMITS=on)"
# Rules raised for the limits-on rows: 10,000,000 a minute is one every 6 us (intervals are
# microseconds: a limit above 60,000,000 a minute would round the emission interval to 0).
RAISED_RULES = [("bookings", "user"), ("bookings", "address"), ("browse", "user"), ("browse", "address")]
RAISED_LIMIT = 10_000_000


@dataclass
class Row:
    part: str
    scenario: str
    load: int
    rate: float  # transactions or requests per second
    reservations: float | None
    avg_ms: float | None
    p50_ms: float | None
    p99_ms: float | None
    p999_ms: float | None
    max_ms: float | None
    errors: str


@dataclass
class CrowdReport:
    """What the crowd part measured (None: that bench did not run) and the charts drawn."""

    purchase: crowd.CrowdResult | None = None  # the `crowd` bench
    sweep: list[crowd.CrowdResult] = field(default_factory=list)  # the same at other sizes
    overload: Any | None = None  # bench.overload.OverloadResult
    overload_missing: bool = False  # bench/overload.py is not in this tree
    room: crowd.RoomResult | None = None
    cost: crowd.CostResult | None = None
    soak: crowd.SoakResult | None = None
    charts: dict[str, str | None] = field(default_factory=dict)
    ran: bool = False


class Bench:
    secret = SECRET  # signs the users' tokens (bench/crowd.py signs its own users' with it)

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="booking-bench-"))
        os.chmod(self.tmp, 0o755)  # noqa: S103  (the postgres OS user must reach its data folder)
        port = free_port()
        # Durable settings, as in production (not the tests' fsync=off).
        settings = {**tuned_settings(port), "max_connections": "300"}
        # pg_stat_statements for the database time per call (bench/costs.py); other tools build
        # Bench with a partial Namespace (bench/overload.py, bench/crowd_probe.py, tests), hence getattr.
        if getattr(args, "only", None) == "costs":
            settings.update(costs.SETTINGS)
        self.cluster = Cluster(self.tmp / "pg" / "data", port, settings)
        self.rows: list[Row] = []
        self.crowd_report = CrowdReport()
        self.delivery_report: delivery.DeliveryReport | None = None
        self.lb_report: lbcompare.CompareReport | None = None
        self.costs_report: costs.CostsReport | None = None

    # ------------------------------------------------------------------ database

    def url(self, role: str = "booking_owner") -> str:
        return self.cluster.url(role, "booking")

    def setup_database(self) -> None:
        self.cluster.start()
        create_database(self.cluster, "booking")
        migrate(self.cluster.url("postgres", "booking"))
        subprocess.run(
            [pg_tool("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-v", f"hash={hash_password('bench-password')}",
             "-f", str(HERE / "seed.sql"), self.url()],
            check=True,
        )  # fmt: skip

    def check_invariants(self, after: str) -> None:
        with psycopg.connect(self.url()) as conn:
            bad = conn.execute("SELECT * FROM api.check_invariants()").fetchall()
        if bad:
            raise SystemExit(f"INVARIANT VIOLATED after {after}: {bad[:5]}")

    def reservations(self) -> int:
        with psycopg.connect(self.url()) as conn:
            return int(conn.execute("SELECT count(*) FROM order_reservations").fetchone()[0])  # type: ignore[index]

    # ------------------------------------------------------------------ pgbench

    PGBENCH = [
        # (name, scripts, reservations per transaction of script 1, extra PGOPTIONS)
        ("reserve_hot (naive, 1/call)", ["reserve_hot.sql"], 1, ""),
        ("reserve_hot_batch (50/call)", ["reserve_hot_batch.sql"], 50, ""),
        ("reserve_spread (1000 types)", ["reserve_spread.sql"], 1, ""),
        ("browse (list + get)", ["browse.sql"], 0, ""),
        ("purchase (reserve + complete)", ["purchase.sql"], 1, ""),
        ("reserve_hot + expiry (2 s holds)", ["reserve_expiring.sql@19", "expire.sql@1"], 1,
         "-c booking.hold_period=2s"),
    ]  # fmt: skip

    def pgbench(self) -> None:
        for name, scripts, per_txn, options in self.PGBENCH:
            for clients in self.args.clients:
                self.rows.append(self.pgbench_run(name, scripts, per_txn, options, clients))
                print(self.format_row(self.rows[-1]), flush=True)
                self.check_invariants(f"pgbench {name} at {clients} clients")

    def pgbench_run(self, name: str, scripts: list[str], per_txn: int, options: str, clients: int) -> Row:
        prefix = self.tmp / f"pgb-{len(self.rows)}"
        cmd = [pg_tool("pgbench"), "-n", "-M", "prepared", "-c", str(clients), "-j", str(min(clients, 2)),
               "-T", str(self.args.seconds), "--log", f"--log-prefix={prefix}"]  # fmt: skip
        for script in scripts:
            file, _, weight = script.partition("@")
            cmd += ["-f", f"{HERE / 'pgbench' / file}" + (f"@{weight}" if weight else "")]
        cmd.append(self.url())
        env = {**os.environ, "PGOPTIONS": options}
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        out = done.stdout + done.stderr
        tps = _float(r"tps = ([\d.]+) \(without initial connection time\)", out)
        first_script_tps = _float(r"SQL script 1:.*?tps = ([\d.]+)\)", out, re.S) if len(scripts) > 1 else tps
        aborted = len(re.findall(r"client \d+ aborted", out))
        failed = int(_float(r"number of failed transactions: (\d+)", out) or 0)
        latencies = sorted(_pgbench_latencies(prefix))
        for f in glob.glob(f"{prefix}*"):
            os.unlink(f)
        if tps is None:
            raise SystemExit(f"pgbench failed for {name}:\n{out[-2000:]}")
        return Row("pgbench", name, clients, tps, (first_script_tps or 0) * per_txn if per_txn else None,
                   _float(r"latency average = ([\d.]+) ms", out), _pct(latencies, 50), _pct(latencies, 99),
                   _pct(latencies, 99.9), latencies[-1] if latencies else None,
                   f"{aborted} aborted, {failed} failed" if aborted or failed else "0")  # fmt: skip

    # ------------------------------------------------------------------ HTTP

    def tokens_file(self) -> Path:
        path = self.tmp / "tokens.txt"
        now = int(time.time())
        with open(path, "w") as f:
            for n in range(1, USERS + 1):
                user = f"00000000-0000-4000-8000-{n:012d}"
                # sid: the gateway refuses tokens without a session (issue 9); one per user, never revoked.
                session = f"00000000-0000-4000-9000-{n:012d}"
                claims = {"sub": user, "role": "user", "sid": session, "iat": now, "exp": now + 7200,
                          "iss": "booking-gateway"}  # fmt: skip
                f.write(f"{user} {jwt.encode(claims, SECRET, algorithm='HS256')}\n")
        return path

    def raise_rate_limits(self) -> None:
        """Rules so high that nothing is refused (2000 users, all from 127.0.0.1): a row with
        limits on then measures the cost of counting, not of refusing."""
        with psycopg.connect(self.url(), autocommit=True) as conn:
            for rate_class, scope in RAISED_RULES:
                conn.execute("SELECT api.set_rate_limit(%s, %s, %s, '1 minute')", (rate_class, scope, RAISED_LIMIT))

    def start_gateway(self, coalesce: bool, rate_limits: bool = False) -> tuple[subprocess.Popen[bytes], str]:
        port = free_port()
        env = {**os.environ, "GATEWAY_DATABASE_URL": self.url("booking_gateway"), "JWT_SECRET": SECRET,
               "RESERVE_COALESCE": "on" if coalesce else "off", "BOOKING_ENV": "production",
               "ALLOW_INSTANT_PAYMENTS": "yes",  # the benches buy with complete (instant payments)
               "RATE_LIMITS": "on" if rate_limits else "off",
               "GATEWAY_HOST": "127.0.0.1", "GATEWAY_PORT": str(port),
               "WEB_CONCURRENCY": str(self.args.workers)}  # fmt: skip
        log = open(self.tmp / f"gateway-{port}.log", "wb")
        # Served exactly as `make run` serves it (protocol, limits, logging), with a deep backlog.
        proc = subprocess.Popen([*uvicorn_args(env), "--backlog", "65535"], cwd=ROOT, env=env, stdout=log, stderr=log)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{url}/readyz", timeout=2):  # noqa: S310  (our own http URL)
                    return proc, url
            except OSError:  # refused while starting, or 503 until the pool is ready
                time.sleep(0.2)
        raise SystemExit("the gateway did not start")

    def wrk(self, url: str, scenario: str, script: str, connections: int, **env: str) -> Row:
        threads = 2 if connections >= 2 else 1
        cmd = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{self.args.http_seconds}s",
               "--timeout", "10s", "--latency", "-s", str(HERE / "wrk" / script), url]  # fmt: skip
        full_env = {**os.environ, "BENCH_WRK_DIR": str(HERE / "wrk"), "TOKENS_FILE": str(self.tokens), **env}
        done = subprocess.run(cmd, capture_output=True, text=True, env=full_env, check=False)
        out = done.stdout + done.stderr
        summary = wrk_summary(out)
        if done.returncode != 0 or summary is None:
            raise SystemExit(f"wrk failed for {scenario}:\n{out[-2000:]}")
        return wrk_row(scenario, connections, summary)

    def http(self) -> None:
        self.tokens = self.tokens_file()
        _raise_file_limits()
        gateway, url = self.start_gateway(coalesce=True)
        try:
            plan: list[tuple[str, str, dict[str, str]]] = [
                ("readyz (ceiling: SELECT 1 via the pool)", "get.lua", {"WRK_PATH": "/readyz"}),
                ("GET /events (cached)", "get.lua", {"WRK_PATH": "/events"}),
                ("GET /events/{slug} (live)", "get.lua", {"WRK_PATH": "/events/bench-event-1"}),
                ("reserve hot (coalesced)", "reserve.lua", {"HOT_TICKET_TYPE": HOT}),
                # Caps on: the 2000 buyers get 4 seats each (8,000 holds over the run), every
                # later request is refused by the cap, decided in the same core under the same lock.
                (CAPPED_ROW, "reserve.lua", {"HOT_TICKET_TYPE": CAPPED}),
                ("purchase (reserve + complete)", "purchase.lua", {}),
            ]
            for connections in self.args.connections:
                for scenario, script, env in plan:
                    self.run_http(url, scenario, script, connections, env)
            for connections in self.args.huge:
                for scenario, script, env in (plan[0], plan[3]):
                    self.run_http(url, scenario, script, connections, env)
        finally:
            _stop(gateway)
        # The same hot reserve with rate limits on (rules raised: the row measures counting).
        self.raise_rate_limits()
        gateway, url = self.start_gateway(coalesce=True, rate_limits=True)
        try:
            for connections in self.args.connections:
                self.run_http(url, LIMITS_ON_ROW, "reserve.lua", connections, {"HOT_TICKET_TYPE": HOT})
        finally:
            _stop(gateway)
        gateway, url = self.start_gateway(coalesce=False)
        try:
            for connections in self.args.connections:
                self.run_http(url, "reserve hot (RESERVE_COALESCE=off)", "reserve.lua", connections,
                              {"HOT_TICKET_TYPE": HOT})  # fmt: skip
        finally:
            _stop(gateway)

    def run_http(self, url: str, scenario: str, script: str, connections: int, env: dict[str, str]) -> None:
        self.rows.append(self.wrk(url, scenario, script, connections, **env))
        print(self.format_row(self.rows[-1]), flush=True)
        self.check_invariants(f"http {scenario} at {connections} connections")

    # ------------------------------------------------------------------ the crowd (issue 10)

    def crowd_part(self) -> None:
        """Each bench on a fresh gateway (production settings, RATE_LIMITS off), bounded in time,
        api.check_invariants() after each (the soak: each interval)."""
        a, rep = self.args, self.crowd_report
        rep.ran = True
        _raise_file_limits()
        self.tokens = self.tokens_file()  # bench.overload's wrk scripts read it
        for part in a.crowd_parts:
            gateway, url = self.start_gateway(coalesce=True)
            try:
                if part == "crowd":
                    rep.purchase = crowd.run_crowd(
                        self, url, gateway.pid, a.crowd_users, a.crowd_seconds, procs=a.crowd_procs
                    )
                    rep.charts["crowd"] = plots.crowd_timeline(rep.purchase, "crowd.png")
                    print(_crowd_line(rep.purchase), flush=True)
                elif part == "sweep":
                    rep.sweep = crowd.run_sweep(self, url, gateway.pid, a.sweep_users, a.sweep_seconds,
                                                procs=a.crowd_procs)  # fmt: skip
                    rep.charts["sweep"] = plots.crowd_knee([*rep.sweep, *([rep.purchase] if rep.purchase else [])])
                    for point in rep.sweep:
                        print(_crowd_line(point), flush=True)
                elif part == "overload":
                    rep.overload = crowd.run_overload(self, url, a.overload_seconds)
                    rep.overload_missing = rep.overload is None
                    if rep.overload is not None:
                        rep.charts["overload"] = plots.overload_knee(rep.overload)
                        print(f"overload: {rep.overload.overload}", flush=True)
                elif part == "room":
                    rep.room = crowd.run_waiting_room(self, url, a.room_users, a.room_admit_seconds,
                                                      procs=a.crowd_procs)  # fmt: skip
                    rep.charts["room"] = plots.room_admissions(rep.room)
                    print("waiting room:", *(_route_line(r) for r in rep.room.routes), sep="\n  ", flush=True)
                elif part == "cost":
                    rep.cost = crowd.run_cost(self, url, gateway.pid, a.cost_seconds)
                    for row in rep.cost.rows:
                        print(f"cost: {row.name}: {row.gateway_us:,.0f} us gateway, {row.db_us:,.0f} us database "
                              f"per request ({row.requests:,} requests)", flush=True)  # fmt: skip
                elif part == "soak":
                    rep.soak = crowd.run_soak(self, url, gateway.pid, a.soak_seconds, procs=a.crowd_procs,
                                              interval=a.soak_interval)  # fmt: skip
                    rep.charts["soak"] = plots.soak_rss(rep.soak)
                    rep.charts["soak-latency"] = plots.crowd_timeline(rep.soak.crowd, "soak-latency.png")
                    print(_crowd_line(rep.soak.crowd), flush=True)
            finally:
                _stop(gateway)

    # ------------------------------------------------------------------ delivery (issue 11)

    def delivery_part(self) -> None:
        """bench/delivery.py on a fresh gateway (production settings, RATE_LIMITS off), with its own
        worker process and SMTP sink; api.check_invariants() after each of its two runs."""
        a = self.args
        _raise_file_limits()
        gateway, url = self.start_gateway(coalesce=True)
        try:
            self.delivery_report = delivery.run_delivery(
                self, url, gateway.pid, a.delivery_orders, a.delivery_rate, a.delivery_timeout,
                a.delivery_load_users, a.delivery_load_procs,
            )  # fmt: skip
        finally:
            _stop(gateway)

    # ------------------------------------------------------------------ HAProxy vs uvicorn workers (issue 13)

    def lb_compare_part(self) -> None:
        a = self.args
        _raise_file_limits()  # 10,000 connections: HAProxy and the generator inherit the raised limit
        self.tokens = self.tokens_file()  # lb_reserve.lua reads it
        self.lb_report = lbcompare.run_compare(
            self, a.lb_instances, a.lb_loads, a.lb_crowd_users, a.lb_crowd_seconds, a.lb_crowd_warmup,
            a.crowd_procs, a.lb_hot_connections, a.lb_hot_seconds, a.lb_hot_driver, a.lb_rounds,
        )  # fmt: skip

    def lb_section(self) -> list[str]:
        assert self.lb_report is not None
        return lbcompare.section(self.lb_report, f"python -m bench {' '.join(sys.argv[1:])}",
                                 f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC")  # fmt: skip

    # ------------------------------------------------------------------ costs (issue 13, docs/SCALING.md)

    def costs_part(self) -> None:
        a = self.args
        _raise_file_limits()
        self.costs_report = costs.run_costs(self, a.costs_seconds, a.costs_orders, a.costs_holds)

    def costs_section(self) -> list[str]:
        assert self.costs_report is not None
        return costs.section(self.costs_report, f"python -m bench {' '.join(sys.argv[1:])}",
                             f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC")  # fmt: skip

    def delivery_section(self) -> list[str]:
        assert self.delivery_report is not None
        return delivery.section(self.delivery_report, f"python -m bench {' '.join(sys.argv[1:])}",
                                f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC")  # fmt: skip

    def crowd_sections(self) -> list[str]:
        """The crowd part of RESULTS.md: one block per bench, each with its load model, figures,
        charts and targets, between markers so a `--only crowd` run replaces just its blocks."""
        rep, targets = self.crowd_report, self.crowd_targets()
        blocks: dict[str, list[str]] = {}
        if rep.purchase:
            blocks["crowd"] = ["### crowd", "", f"Load model: {rep.purchase.model}.", "", *_crowd_table(rep.purchase),
                               *_chart(rep.charts.get("crowd"), "crowd: p99 per route over time")]  # fmt: skip
        if rep.sweep:
            blocks["sweep"] = _sweep_section([*rep.sweep, *([rep.purchase] if rep.purchase else [])],
                                             rep.charts.get("sweep"))  # fmt: skip
        if rep.overload is not None:
            blocks["overload"] = _overload_section(rep.overload, rep.charts.get("overload"))
        elif rep.overload_missing:
            blocks["overload"] = ["### overload", "", "Not run: `bench/overload.py` is not in this tree.", ""]
        if rep.room:
            blocks["room"] = _room_section(rep.room, rep.charts.get("room"))
        if rep.cost:
            blocks["cost"] = _cost_section(rep.cost)
        if rep.soak:
            blocks["soak"] = _soak_section(rep.soak, rep.charts.get("soak"), rep.charts.get("soak-latency"))
        out = [CROWD_BEGIN, "## The crowd (issue 10): users who think between clicks", "",
               "Load generator: `bench/flowgen.py`, one keep-alive connection per simulated user with its own "
               "token and state; a closed loop per user with think time (each user waits for an answer, "
               "thinks, clicks again), so the offered rate is about users / (mean think + latency). Its own "
               "overhead is reported as *send lag*: how late each request left after its user's think "
               "time ended (milliseconds: the latencies are the server's; seconds: the generator was the "
               "bottleneck), and its CPU is shown beside the gateway's and PostgreSQL's: they share the "
               "machine's cores. Each bench runs on a fresh gateway (production settings, `RATE_LIMITS=off`); "
               "`api.check_invariants()` was empty after each (the runner stops otherwise).",
               ""]  # fmt: skip
        # A `--only crowd` run replaces only its own blocks: each says when and how it was made.
        run = f"Run: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, `python -m bench {' '.join(sys.argv[1:])}`."
        for part in CROWD_PARTS:
            if part in blocks:
                verdicts = ["Targets:", "", *targets[part], ""] if targets.get(part) else []
                title, rest = blocks[part][0], blocks[part][1:]
                out += [_part_begin(part), title, "", run, *rest, *verdicts, _part_end(part)]
        return [*out, CROWD_END]

    def crowd_targets(self) -> dict[str, list[str]]:
        """Issue 10's targets, judged on this run's numbers, per bench."""
        rep = self.crowd_report
        targets: dict[str, list[str]] = {}
        if rep.purchase:
            c = rep.purchase
            worst = max(c.routes, key=lambda r: r.p99_ms or 0.0)
            targets["crowd"] = [f"- p99 < 500 ms on every route: worst {worst.route} {_ms(worst.p99_ms)} ms "
                       f"{_verdict(all((r.p99_ms or 1e9) < 500 for r in c.routes))}; zero socket errors: "
                       f"{c.socket_error_count} {_verdict(c.socket_error_count == 0)} "
                       f"(5xx: {c.total.server_errors})"]  # fmt: skip
        if rep.overload is not None:
            o, hot = rep.overload.overload, rep.overload.hot_1000_rps
            share = o.served_rps / hot if hot else 0.0
            targets["overload"] = [f"- served p99 < 500 ms: {_ms(o.served_p99_ms)} ms "
                       f"{_verdict((o.served_p99_ms or 1e9) < 500)}; shed p99 < 50 ms: {_ms(o.shed_p99_ms)} ms "
                       f"{_verdict(o.shed_p99_ms is None or o.shed_p99_ms < 50)}; goodput >= 80% of the hot reserve "
                       f"at 1000 connections: {o.served_rps:,.0f} / {hot:,.0f} req/s = {share:.0%} "
                       f"{_verdict(share >= 0.8)}"]  # fmt: skip
        if rep.room:
            r = rep.room
            p99 = {s.route: s.p99_ms for s in r.routes}
            order_ok = (r.order_violations == 0 and r.early_admissions == 0 and r.position_mismatches == 0
                        and r.audit_rows == 0 and r.positions_ok)  # fmt: skip
            targets["room"] = [f"- join p99 < 200 ms: {_ms(p99.get(crowd.R_JOIN))} ms "
                       f"{_verdict((p99.get(crowd.R_JOIN) or 1e9) < 200)}; poll p99 < 100 ms: "
                       f"{_ms(p99.get(crowd.R_POLL))} ms {_verdict((p99.get(crowd.R_POLL) or 1e9) < 100)}; reserve "
                       f"p99 < 500 ms: {_ms(p99.get(crowd.R_ROOM_RESERVE))} ms "
                       f"{_verdict((p99.get(crowd.R_ROOM_RESERVE) or 1e9) < 500)}",
                               f"- admissions follow the recorded order exactly: {_verdict(order_ok)} "
                       f"({r.order_violations} answers out of order, {r.early_admissions} admitted early, "
                       f"{r.position_mismatches} positions differing from the database, "
                       f"{r.audit_rows} rows from api.waiting_room_audit); zero oversell: {r.seats_sold:,} sold of "
                       f"{r.stock:,} {_verdict(0 <= r.seats_sold <= r.stock)}"]  # fmt: skip
        if rep.soak:
            s = rep.soak
            growth = max(s.rss_growth.values(), default=0.0)
            fives = s.crowd.total.server_errors
            targets["soak"] = [f"- {s.seconds} s: RSS growth < 10%: worst worker {growth:+.1%} "
                       f"{_verdict(growth < 0.10)}; zero 5xx: {fives} {_verdict(fives == 0)}; invariant clean "
                       f"at each of {s.invariant_checks} checks **met**"]  # fmt: skip
        return targets

    # ------------------------------------------------------------------ report

    @staticmethod
    def format_row(r: Row) -> str:
        def f(x: float | None, digits: int = 1) -> str:
            return "-" if x is None else f"{x:,.{digits}f}"

        cells = [r.scenario, str(r.load), f(r.rate, 0), f(r.reservations, 0),
                 *(f(x, 2) for x in (r.avg_ms, r.p50_ms, r.p99_ms, r.p999_ms, r.max_ms)), r.errors]  # fmt: skip
        return "| " + " | ".join(cells) + " |"

    def report(self, started: float) -> str:
        pg_version = subprocess.run([pg_tool("postgres"), "--version"], capture_output=True, text=True).stdout.strip()
        # wrk only when the HTTP part ran: `--only pgbench` must work where wrk is not installed.
        wrk_version: list[str] = []
        if any(r.part == "http" for r in self.rows):
            wrk_version = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.splitlines()[0:1]
        lines = [
            "# Bench results",
            "",
            f"Run: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, {time.time() - started:.0f} s, `make bench` "
            f"(`python -m bench {' '.join(sys.argv[1:])}`).",
            f"Machine: {os.cpu_count()} cores, {memory_bytes() / 2**30:.0f} GiB, {platform.platform()}; "
            f"{'; '.join([pg_version, *wrk_version])}; Python {platform.python_version()}.",
            "Database: a private cluster with the tuned settings of `dbctl/cluster.py` (durable: fsync and "
            "synchronous_commit on), seeded by `bench/seed.sql` "
            "(2000 users, one hot ticket type, 1000 others, one capped type).",
            f"pgbench: `-M prepared -T {self.args.seconds}`, as booking_owner, scripts in `bench/pgbench/`. "
            f"HTTP: wrk `-t2 --timeout 10s -d {self.args.http_seconds}s`, scripts in `bench/wrk/`, "
            f"{self.args.workers} uvicorn worker(s), pool 5..20, tokens of 2000 distinct users; the gateway, "
            "PostgreSQL and the load generator share the machine's cores.",
            "After every run `api.check_invariants()` was empty (the runner stops otherwise).",
            "",
            "Figures are from one run on a noisy 2-core machine: compare ratios within the run, not absolutes.",
            "",
        ]
        header = [
            "| scenario | clients / connections | tx or req/s | reservations/s | avg ms | p50 ms | p99 ms "
            "| p99.9 ms | max ms | errors |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
        for part, title in (("pgbench", "## pgbench (SQL functions directly)"), ("http", "## HTTP (wrk)")):
            rows = [r for r in self.rows if r.part == part]
            if rows:
                lines += [title, "", *header, *(self.format_row(r) for r in rows), ""]
        if self.rows:
            lines += self.summary()
        if self.crowd_report.ran:
            lines += self.crowd_sections()
        if self.delivery_report is not None:
            lines += ["", *self.delivery_section()]
        if self.lb_report is not None:
            lines += ["", *self.lb_section()]
        if self.costs_report is not None:
            lines += ["", *self.costs_section()]
        return "\n".join(lines) + "\n"

    def summary(self) -> list[str]:
        out = ["## Ratios (same run)", ""]
        naive = {r.load: r for r in self.rows if r.scenario.startswith("reserve_hot (naive")}
        batch = {r.load: r for r in self.rows if r.scenario.startswith("reserve_hot_batch")}
        for load in sorted(naive):
            if load in batch and naive[load].reservations and batch[load].reservations:
                ratio = batch[load].reservations / naive[load].reservations  # type: ignore[operator]
                out.append(f"- pgbench, {load} clients: batch {batch[load].reservations:,.0f} vs naive "
                           f"{naive[load].reservations:,.0f} reservations/s = **{ratio:.1f}x**")  # fmt: skip
        ceiling = {r.load: r for r in self.rows if r.scenario.startswith("readyz")}
        for name in ("reserve hot (coalesced)", "reserve hot (RESERVE_COALESCE=off)"):
            for r in (r for r in self.rows if r.scenario == name):
                if r.load in ceiling:
                    share = r.rate / ceiling[r.load].rate
                    out.append(
                        f"- HTTP, {r.load} connections: {name} {r.rate:,.0f} req/s = **{share:.0%}** of /readyz "
                        f"{ceiling[r.load].rate:,.0f} req/s; p99 {_ms(r.p99_ms)} ms; errors {r.errors}"
                    )
        hot = {r.load: r for r in self.rows if r.scenario == "reserve hot (coalesced)"}
        for r in (r for r in self.rows if r.scenario == LIMITS_ON_ROW and r.load in hot):
            out.append(f"- HTTP, {r.load} connections: hot reserve with RATE_LIMITS=on {r.rate:,.0f} req/s = "
                       f"**{r.rate / hot[r.load].rate:.0%}** of RATE_LIMITS=off {hot[r.load].rate:,.0f} req/s; "
                       f"p99 {_ms(r.p99_ms)} ms; errors {r.errors}")  # fmt: skip
        for r in (r for r in self.rows if r.scenario == CAPPED_ROW and r.load in hot):
            out.append(f"- HTTP, {r.load} connections: capped reserve (caps on) {r.rate:,.0f} req/s = "
                       f"**{r.rate / hot[r.load].rate:.0%}** of the uncapped hot reserve; p99 {_ms(r.p99_ms)} ms; "
                       f"non-2xx are 409 limit_exceeded: {r.errors}")  # fmt: skip
        return [*out, "", *self.targets(ceiling), ""]

    def targets(self, ceiling: dict[int, Row]) -> list[str]:
        """The issue's targets, judged on this run's numbers."""

        def verdict(ok: bool) -> str:
            return "**met**" if ok else "**not met**"

        out = ["## Targets", ""]
        hot = {r.load: r for r in self.rows if r.scenario == "reserve hot (coalesced)"}
        if 1000 in hot and 1000 in ceiling:
            r, c = hot[1000], ceiling[1000]
            share = r.rate / c.rate
            out.append(f"- 1000 connections, hot reserve >= 85% of /readyz: {share:.0%} {verdict(share >= 0.85)}; "
                       f"p99 < 500 ms: {_ms(r.p99_ms)} ms {verdict((r.p99_ms or 1e9) < 500)}; "
                       f"no errors but sold_out: {r.errors} {verdict(r.errors == '0')}")  # fmt: skip
        limited = {r.load: r for r in self.rows if r.scenario == LIMITS_ON_ROW}
        if 1000 in hot and 1000 in limited:
            share = limited[1000].rate / hot[1000].rate
            out.append(f"- 1000 connections, hot reserve with rate limits on >= 90% of limits off: {share:.0%} "
                       f"{verdict(share >= 0.90)}")  # fmt: skip
        for load in sorted(k for k in hot if k > 1000):
            r = hot[load]
            at_load = [x for x in self.rows if x.part == "http" and x.load == load]
            best = max(at_load, key=lambda x: x.rate)
            fast = (r.p99_ms or 1e9) < 1000
            out.append(f"- {load} connections, hot reserve p99 < 1 s: {_ms(r.p99_ms)} ms {verdict(fast)}; "
                       f"no socket errors: {verdict('socket' not in r.errors)}")  # fmt: skip
            if not fast:
                out.append(
                    f"  - Why: wrk keeps all {load:,} connections busy (a closed loop), so by Little's law the mean "
                    f"wait is connections / throughput. A p99 under 1 s needs a mean under 1 s, so more than "
                    f"{load:,} responses/s at this load; the fastest route measured at {load:,} connections "
                    f"({best.scenario}) answered {best.rate:,.0f} req/s: a mean of at least {load / best.rate:.1f} s. "
                    f"The gateway, PostgreSQL and wrk share {os.cpu_count()} cores here; meeting this takes more "
                    "gateway capacity (cores, instances), or admission control that answers 503 early."
                )
        out.append("- Zero oversell: `api.check_invariants()` was empty after every run above.")
        return out

    def cleanup(self) -> None:
        self.cluster.destroy()
        shutil.rmtree(self.tmp, ignore_errors=True)


# ---------------------------------------------------------------------- parsing helpers


def _float(pattern: str, text: str, flags: int = 0) -> float | None:
    m = re.search(pattern, text, flags)
    return float(m.group(1)) if m else None


def _pgbench_latencies(prefix: Path) -> list[float]:
    values: list[float] = []
    for path in glob.glob(f"{prefix}*"):
        with open(path) as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 3 and parts[2].isdigit():
                    values.append(int(parts[2]) / 1000.0)
    return values


def _pct(values: list[float], pct: float) -> float | None:
    """The pct-th percentile of sorted values (nearest rank, as wrk computes it)."""
    if not values:
        return None
    if pct == 50:
        return statistics.median(values)
    return values[min(len(values) - 1, int(len(values) * pct / 100))]


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x:,.2f}"


def wrk_summary(output: str) -> dict[str, Any] | None:
    """The JSON line printed by done() in bench/wrk/common.lua (the last one, if several)."""
    for line in reversed(output.splitlines()):
        if line.startswith('{"wrk_done":'):
            summary: dict[str, Any] = json.loads(line)
            return summary
    return None


def wrk_row(scenario: str, connections: int, summary: dict[str, Any]) -> Row:
    """A table row from wrk's exact figures (microseconds; the text report rounds 1.234 s to 1.23s)."""
    lat, err = summary["latency_us"], summary["errors"]
    rps = summary["requests"] / (summary["duration_us"] / 1e6)
    errors = [f"{err['status']} non-2xx"] if err["status"] else []
    sock = [err[k] for k in ("connect", "read", "write", "timeout")]
    if any(sock):
        errors.append("socket c/r/w/t " + "/".join(str(x) for x in sock))
    return Row("http", scenario, connections, rps, rps if scenario.startswith("reserve") else None,
               lat["mean"] / 1000, lat["p50"] / 1000, lat["p99"] / 1000, lat["p99.9"] / 1000, lat["max"] / 1000,
               ", ".join(errors) or "0")  # fmt: skip


def _raise_file_limits() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 65536
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, target), hard))
    if os.geteuid() == 0:  # a deeper accept queue for 10,000 connections arriving at once (no sysctl needed)
        for knob in ("net/core/somaxconn", "net/ipv4/tcp_max_syn_backlog"):
            try:
                Path("/proc/sys", knob).write_text("65535")
            except OSError:  # a container may not allow it; the bench still runs
                pass


# ---------------------------------------------------------------------- crowd report helpers


def _verdict(ok: bool) -> str:
    return "**met**" if ok else "**not met**"


def _statuses(statuses: dict[int, int]) -> str:
    return ", ".join(f"{'socket error' if k == 0 else k}: {v:,}" for k, v in sorted(statuses.items()))


def _route_line(r: RouteSummary) -> str:
    return (f"{r.route}: {r.requests:,} requests, p50 {_ms(r.p50_ms)} p99 {_ms(r.p99_ms)} max {_ms(r.max_ms)} ms; "
            f"{_statuses(r.statuses)}")  # fmt: skip


def _crowd_line(c: crowd.CrowdResult) -> str:
    return "\n  ".join([f"{c.name}: {c.achieved_rps:,.0f} req/s, socket errors {c.socket_errors}, send lag p99 "
                        f"{_ms(c.lag_p99_ms)} ms", *(_route_line(r) for r in c.routes)])  # fmt: skip


def _route_table(routes: list[RouteSummary], seconds: float) -> list[str]:
    out = ["| route | requests | answers/s | p50 ms | p90 ms | p99 ms | max ms | statuses |",
           "|---|---:|---:|---:|---:|---:|---:|---|"]  # fmt: skip
    for r in routes:
        out.append(f"| {r.route} | {r.requests:,} | {r.requests / seconds:,.0f} | {_ms(r.p50_ms)} | {_ms(r.p90_ms)} "
                   f"| {_ms(r.p99_ms)} | {_ms(r.max_ms)} | {_statuses(r.statuses)} |")  # fmt: skip
    return out


def _crowd_table(c: crowd.CrowdResult) -> list[str]:
    return [*_route_table([*c.routes, c.total], c.seconds), "",
            f"Offered (planned) about {c.offered_rps:,.0f} req/s, answered {c.achieved_rps:,.0f} req/s. Socket "
            f"errors (connect/read/timeout): {'/'.join(str(c.socket_errors.get(k, 0)) for k in SOCKET_ERRORS)}. "
            f"Generator send lag: p50 {_ms(c.lag_p50_ms)}, p99 {_ms(c.lag_p99_ms)}, max {_ms(c.lag_max_ms)} ms. "
            "CPU over the run (mean cores of the machine's " + f"{os.cpu_count()}): "
            + ", ".join(f"{k} {v:.2f}" for k, v in c.cpu_cores.items()) + ".",
            ""]  # fmt: skip


def _sweep_section(points: list[crowd.CrowdResult], chart: str | None) -> list[str]:
    points = sorted(points, key=lambda c: c.users)
    out = ["### crowd sweep: latency against load", "",
           f"Load model: {points[0].model.split(':')[0]}: the purchase flow of `crowd`, think uniform 0-10 s "
           f"(mean 5 s), at {', '.join(f'{c.users:,}' for c in points)} users; the offered load is users / 5 s. "
           "Served = every answer but 503 `busy`.", "",
           "| users | seconds | offered req/s | served req/s | shed (503) req/s | served p50 ms | served p99 ms "
           "| shed p99 ms | max ms | socket errors | gateway / PostgreSQL / generator cores |",
           "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]  # fmt: skip
    for c in points:
        cores = " / ".join(f"{c.cpu_cores.get(k, 0):.2f}" for k in ("gateway", "postgres", "generator"))
        out.append(f"| {c.users:,} | {c.seconds:.0f} | {c.offered_rps:,.0f} | {c.served[0] / c.seconds:,.0f} "
                   f"| {c.shed[0] / c.seconds:,.0f} | {_ms(c.served[1])} | {_ms(c.served[2])} | {_ms(c.shed[2])} "
                   f"| {_ms(c.total.max_ms)} | {c.socket_error_count} | {cores} |")  # fmt: skip
    return [*out, "", *_chart(chart, "purchase flow: latency against offered load")]


def _chart(path: str | None, title: str) -> list[str]:
    return [f"![{title}]({path})", ""] if path else []


def _overload_section(o: Any, chart: str | None) -> list[str]:
    """bench/overload.py's OverloadResult: the hot run at 1000 connections (when it sends the whole
    point), the sweep of think times, and the overload point (once, if it is also in the sweep)."""
    out = ["### overload (`bench/overload.py`)", "", f"Load model: {o.model}.", "",
           "| load | users | offered req/s | served req/s | shed req/s | served p50 ms | served p99 ms "
           "| shed p50 ms | shed p99 ms | all p99 ms | socket errors | CPU cores: gateway / generator / PostgreSQL |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]  # fmt: skip
    hot = getattr(o, "hot_1000", None)
    points = [*([hot] if hot is not None else []), *o.sweep]
    if all(p is not o.overload for p in o.sweep):
        points.append(o.overload)
    for p in points:
        offered = "-" if p.offered_rps is None else f"{p.offered_rps:,.0f}"
        cpu = [getattr(p, k, None) for k in ("cpu_gateway", "cpu_generator", "cpu_postgres")]
        cores = " / ".join("-" if c is None else f"{c:.2f}" for c in cpu)
        label = f"**{p.label}** (the overload point)" if p is o.overload else p.label
        out.append(f"| {label} | {p.users:,} | {offered} | {p.served_rps:,.0f} | {p.shed_rps:,.0f} "
                   f"| {_ms(p.served_p50_ms)} | {_ms(p.served_p99_ms)} | {_ms(p.shed_p50_ms)} | {_ms(p.shed_p99_ms)} "
                   f"| {_ms(p.all_p99_ms)} | {p.socket_errors:,} | {cores} |")  # fmt: skip
    out += ["", f"The hot reserve at 1000 connections (closed loop, no think time) in the same run: "
            f"{o.hot_1000_rps:,.0f} req/s.", "", *_chart(chart, "latency and rates against offered load")]  # fmt: skip
    return out


def _room_section(r: crowd.RoomResult, chart: str | None) -> list[str]:
    def dist(values: list[float]) -> str:
        v = sorted(values)
        picks = [(p, pct(v, p)) for p in (10, 50, 90, 99)]
        return ", ".join(f"p{p} {x:,.1f} s" for p, x in picks if x is not None) + (f", max {v[-1]:,.1f} s" if v else "")

    return ["### waiting room", "", f"Load model: {r.model}.", "", *_route_table(r.routes, r.seconds), "",
            f"Joined {r.joined:,} ({r.joined_before_opening:,} before the opening; the successful joins were sent "
            f"over {r.join_span_s:,.1f} s, {r.joined / max(r.join_span_s, 0.001):,.0f} joins/s, a fan retrying "
            f"after each 503 `busy` as Retry-After says); told admitted {r.admitted_seen:,}; reserved "
            f"{r.reserved:,} (201), sold out "
            f"{r.sold_out:,} (409){'; other answers ' + _statuses(r.other_reserve) if r.other_reserve else ''}; "
            f"{r.seats_sold:,} seats sold of {r.stock:,}. Socket errors (connect/read/timeout): "
            f"{'/'.join(str(r.socket_errors.get(k, 0)) for k in SOCKET_ERRORS)}. Generator send lag p99 "
            f"{_ms(r.lag_p99_ms)} ms, max {_ms(r.lag_max_ms)} ms.",
            "",
            "Order, checked from the answers: positions are exactly 1..joined "
            f"({'yes' if r.positions_ok else 'NO'}) and equal the database's ({r.position_mismatches} differ); "
            f"no answer shows the serving position lower than an earlier answer implied ({r.order_violations} do); "
            f"nobody was told admitted before position x 60 / rate after the opening ({r.early_admissions} were); "
            f"`api.waiting_room_audit` (the recorded shuffle recomputed): {r.audit_rows} rows.",
            "",
            f"Time to admission (joining to the first \"admitted\" answer): {dist(r.wait_seconds)}. Since the "
            f"opening, by position: {dist(r.admission_times)} (the last admissions are due at "
            f"{r.joined * 60 / r.rate_per_minute:,.0f} s; a fan learns it at the next poll, 2-5 s later).",
            "", *_chart(chart, "waiting room: admissions over time, time to admission")]  # fmt: skip


def _cost_section(c: crowd.CostResult) -> list[str]:
    out = ["### Cost per request (from measured CPU)", "", f"Load model: {c.model}.", "",
           "| request | requests | req/s | gateway CPU s | gateway us/request | PostgreSQL us/request | statuses |",
           "|---|---:|---:|---:|---:|---:|---|"]  # fmt: skip
    for row in c.rows:
        out.append(f"| {row.name} | {row.requests:,} | {row.requests / row.seconds:,.0f} | {row.gateway_cpu_s:.2f} "
                   f"| {row.gateway_us:,.0f} | {row.db_us:,.0f} | {_statuses(row.statuses)} |")  # fmt: skip
    poll = c.rows[0]
    g, d = c.cores(poll)
    rate = c.fans / c.poll_every_s
    out += ["", f"On paper: {c.fans:,} queued fans polling every {c.poll_every_s:.0f} s are {rate:,.0f} polls/s; at "
            f"{poll.gateway_us:,.0f} us each that is **{g:.1f} gateway cores** (plus {d:.1f} PostgreSQL cores while "
            "every poll is a database call; a poll answered from the gateway's memory needs none). The reserves "
            "behind them are bounded by the admission rate, not by the crowd.", ""]  # fmt: skip
    return out


def _soak_section(s: crowd.SoakResult, chart: str | None, latency_chart: str | None) -> list[str]:
    pids = sorted({pid for _, rss, _ in s.samples for pid in rss})
    out = ["### soak", "", f"Load model: {s.model}. Capacity probe: the same flow with no think time (closed "
           f"loop, 400 users, 10 s): {s.capacity_rps:,.0f} req/s.", "",
           "| minute | " + " | ".join(f"worker {n} RSS MiB" for n in range(1, len(pids) + 1)) + " | 5xx so far |",
           "|---:|" + "---:|" * len(pids) + "---:|"]  # fmt: skip
    for t, rss, fives in s.samples:
        cells = " | ".join(f"{rss[p] / 1024:,.1f}" if p in rss else "-" for p in pids)
        out.append(f"| {t / 60:.1f} | {cells} | {fives} |")
    growth = ", ".join(f"{g:+.1%}" for _, g in sorted(s.rss_growth.items()))
    out += ["", f"RSS growth per worker from the first minute to the end: {growth}. `api.check_invariants()` "
            f"was empty at each of {s.invariant_checks} checks.", "", *_crowd_table(s.crowd),
            *_chart(chart, "soak: RSS per worker"),
            *_chart(latency_chart, "soak: p99 per route over time")]  # fmt: skip
    return out


def _part_begin(part: str) -> str:
    return f"<!-- crowd bench {part}: begin -->"


def _part_end(part: str) -> str:
    return f"<!-- crowd bench {part}: end -->"


def splice_crowd(existing: str, section: str) -> str:
    """RESULTS.md after a `--only crowd` run: each bench block of `section` replaces the same
    block in `existing` (or joins the crowd part, in CROWD_PARTS order); everything else stays."""
    begin, end = existing.find(CROWD_BEGIN), existing.find(CROWD_END)
    if begin < 0 or end < begin:
        return existing.rstrip("\n") + "\n\n" + section.rstrip("\n") + "\n"

    def block(text: str, part: str) -> str | None:
        a, b = text.find(_part_begin(part)), text.find(_part_end(part))
        return text[a : b + len(_part_end(part))] if a >= 0 and b > a else None

    old = existing[begin : end + len(CROWD_END)]
    blocks = [block(section, p) or block(old, p) for p in CROWD_PARTS]
    first = min((section.find(_part_begin(p)) for p in CROWD_PARTS if _part_begin(p) in section), default=-1)
    intro = section[:first] if first >= 0 else section[: section.find(CROWD_END)]
    merged = intro + "\n".join(b for b in blocks if b) + "\n" + CROWD_END
    return existing[:begin] + merged + existing[end + len(CROWD_END) :]


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


def _parts(text: str) -> list[str]:
    parts = [x.strip() for x in text.split(",") if x.strip()]
    unknown = set(parts) - set(CROWD_PARTS)
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown crowd part(s) {sorted(unknown)}; choose from {CROWD_PARTS}")
    return [p for p in CROWD_PARTS if p in parts]


def _lb_loads(text: str) -> list[str]:
    loads = [x.strip() for x in text.split(",") if x.strip()]
    if not loads or set(loads) - {"crowd", "hot"}:
        raise argparse.ArgumentTypeError(f"--lb-loads takes crowd, hot or both (got {text!r})")
    return [x for x in ("crowd", "hot") if x in loads]


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def _c_compiler() -> str | None:
    from bench.overload import c_compiler  # bench.overload imports this module

    return c_compiler()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=int(os.environ.get("BENCH_SECONDS", 10)))
    parser.add_argument("--http-seconds", type=int, default=int(os.environ.get("BENCH_HTTP_SECONDS", 10)))
    parser.add_argument("--clients", type=_ints, default=[1, 8, 32, 128])
    parser.add_argument("--connections", type=_ints, default=[64, 256, 1000])
    parser.add_argument("--huge", type=_ints, default=[10000])
    parser.add_argument("--workers", type=int, default=int(os.environ.get("WEB_CONCURRENCY", os.cpu_count() or 1)))
    parser.add_argument("--only", choices=["pgbench", "http", "crowd", "delivery", "lb-compare", "costs"])
    crowd_args = parser.add_argument_group("the crowd part (bench/crowd.py)")
    crowd_args.add_argument(
        "--crowd-parts",
        type=_parts,
        default=list(CROWD_PARTS),
        help="a comma-separated subset of " + ",".join(CROWD_PARTS) + " (run in that order)",
    )
    crowd_args.add_argument("--crowd-users", type=int, default=10_000)
    crowd_args.add_argument("--crowd-seconds", type=int, default=60)
    crowd_args.add_argument("--crowd-procs", type=int, default=2, help="load generator processes")
    crowd_args.add_argument(
        "--sweep-users",
        type=_ints,
        default=[2500, 5000, 7500],
        help="crowd sizes of the sweep (the crowd bench adds its own point)",
    )
    crowd_args.add_argument("--sweep-seconds", type=int, default=25)
    crowd_args.add_argument("--overload-seconds", type=int, default=20, help="per run of bench/overload.py")
    crowd_args.add_argument("--room-users", type=int, default=10_000)
    crowd_args.add_argument(
        "--room-admit-seconds",
        type=int,
        default=100,
        help="the admission rate lets everyone in within this many seconds",
    )
    crowd_args.add_argument("--cost-seconds", type=int, default=10)
    crowd_args.add_argument("--soak-seconds", type=int, default=int(os.environ.get("BENCH_SOAK_SECONDS", 600)))
    crowd_args.add_argument("--soak-interval", type=float, default=60.0, help="RSS and invariant every N s")
    mail = parser.add_argument_group("the delivery part (bench/delivery.py)")
    mail.add_argument("--delivery-orders", type=int, default=1000, help="orders per run (two runs: quiet, onsale)")
    mail.add_argument("--delivery-rate", type=float, default=100.0, help="completions per second (fixed schedule)")
    mail.add_argument("--delivery-timeout", type=float, default=120.0,
                      help="seconds after the last scheduled completion to wait for the mails")  # fmt: skip
    mail.add_argument("--delivery-load-users", type=int, default=200,
                      help="users (connections) of the onsale load: the hot reserve without think time")  # fmt: skip
    mail.add_argument("--delivery-load-procs", type=int, default=1, help="processes of the onsale load generator")
    lb = parser.add_argument_group("the lb-compare part (bench/lbcompare.py)")
    lb.add_argument("--lb-instances", type=int, default=2,
                    help="N: HAProxy + N single-worker gateways against one uvicorn with N workers")  # fmt: skip
    lb.add_argument(
        "--lb-loads", type=_lb_loads, default=["crowd", "hot"], help="a comma-separated subset of crowd,hot"
    )
    lb.add_argument("--lb-rounds", type=int, default=2,
                    help="repeat both loads on both layouts (alternating which layout goes first)")  # fmt: skip
    lb.add_argument("--lb-crowd-users", type=int, default=10_000)
    lb.add_argument("--lb-crowd-seconds", type=int, default=30, help="counted, after the warm-up")
    lb.add_argument("--lb-crowd-warmup", type=float, default=10.0, help="seconds of arrivals, run but not counted")
    lb.add_argument("--lb-hot-connections", type=int, default=1000)
    lb.add_argument("--lb-hot-seconds", type=int, default=10)
    lb.add_argument("--lb-hot-driver", choices=["wrk", "flowgen"], default="wrk",
                    help="what sends the hot reserve: wrk (as the HTTP part) or bench/flowgen.py (no wrk)")  # fmt: skip
    cost = parser.add_argument_group("the costs part (bench/costs.py)")
    cost.add_argument("--costs-seconds", type=int, default=10, help="per route")
    cost.add_argument("--costs-orders", type=int, default=2000, help="orders per WAL run")
    cost.add_argument("--costs-holds", type=int, default=100, help="held reservations per user for the complete route")
    parser.add_argument(
        "--no-write", action="store_true", help="print only; leave bench/RESULTS.md and bench/plots/ alone"
    )
    parser.add_argument("--plots-dir", type=Path, help="where the charts go (default bench/plots; with --no-write "
                        "a temporary folder)")  # fmt: skip
    args = parser.parse_args()
    # wrk drives the HTTP part; the overload bench's generator is C (bench/thinkload.c, compiled
    # with cc); the rest of the crowd part is Python.
    needs_wrk = args.only in (None, "http") or (
        args.only == "lb-compare" and "hot" in args.lb_loads and args.lb_hot_driver == "wrk"
    )
    if needs_wrk and shutil.which("wrk") is None:
        raise SystemExit(
            "the HTTP part of the bench needs wrk, which is not installed: `make bench` installs it "
            "(scripts/install-system-deps wrk), or run `apt-get install wrk`; "
            "`python -m bench --only pgbench` runs without it, and so does `--only crowd` "
            "and `--only lb-compare --lb-hot-driver flowgen`."
        )
    needs_cc = args.only in (None, "crowd") and "overload" in args.crowd_parts
    if needs_cc and _c_compiler() is None:
        raise SystemExit(
            "the overload bench compiles bench/thinkload.c and needs a C compiler: `make bench` installs gcc "
            "(scripts/install-system-deps gcc libc6-dev), or run `apt-get install gcc libc6-dev`; "
            "or leave it out: `--crowd-parts crowd,sweep,room,cost,soak`."
        )
    started = time.time()
    bench = Bench(args)
    plots.output = args.plots_dir or (bench.tmp / "plots" if args.no_write else plots.PLOTS)
    try:
        bench.setup_database()
        print("| scenario | load | rate | reservations/s | avg ms | p50 ms | p99 ms | p99.9 ms | max ms | errors |",
              flush=True)  # fmt: skip
        if args.only in (None, "pgbench"):
            bench.pgbench()
        if args.only in (None, "http"):
            bench.http()
        if args.only in (None, "crowd"):
            bench.crowd_part()
        if args.only in (None, "delivery"):
            bench.delivery_part()
        if args.only in (None, "lb-compare"):
            bench.lb_compare_part()
        if args.only == "costs":  # not in a plain `make bench`: its cluster loads pg_stat_statements
            bench.costs_part()
        report = bench.report(started)
        print(report)
        if not args.no_write:
            results = HERE / "RESULTS.md"
            if args.only == "crowd" and results.exists():
                section = "\n".join(bench.crowd_sections()) + "\n"
                results.write_text(splice_crowd(results.read_text(), section))
            elif args.only == "delivery" and results.exists():
                results.write_text(delivery.splice(results.read_text(), "\n".join(bench.delivery_section()) + "\n"))
            elif args.only == "lb-compare" and results.exists():
                results.write_text(lbcompare.splice(results.read_text(), "\n".join(bench.lb_section()) + "\n"))
            elif args.only == "costs" and results.exists():
                results.write_text(costs.splice(results.read_text(), "\n".join(bench.costs_section()) + "\n"))
            else:
                results.write_text(report)
            print(f"wrote {HERE / 'RESULTS.md'} ({bench.reservations():,} reservations made)")
    finally:
        bench.cleanup()


if __name__ == "__main__":
    main()
