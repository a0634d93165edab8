"""make bench: pgbench scenarios and wrk HTTP load against a private, durable PostgreSQL and the
real gateway, all on 127.0.0.1 and bounded in time. Prints one table per part and writes
bench/RESULTS.md. After every run api.check_invariants() must be empty, or the bench fails.

  python -m bench [--seconds 10] [--http-seconds 10] [--clients 1,8,32,128]
                  [--connections 64,256,1000] [--huge 10000] [--only pgbench|http] [--no-write]
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import psycopg

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


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="booking-bench-"))
        os.chmod(self.tmp, 0o755)  # noqa: S103  (the postgres OS user must reach its data folder)
        port = free_port()
        # Durable settings, as in production (not the tests' fsync=off).
        self.cluster = Cluster(self.tmp / "pg" / "data", port, {**tuned_settings(port), "max_connections": "300"})
        self.rows: list[Row] = []

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
        lines += self.summary()
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


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=int(os.environ.get("BENCH_SECONDS", 10)))
    parser.add_argument("--http-seconds", type=int, default=int(os.environ.get("BENCH_HTTP_SECONDS", 10)))
    parser.add_argument("--clients", type=_ints, default=[1, 8, 32, 128])
    parser.add_argument("--connections", type=_ints, default=[64, 256, 1000])
    parser.add_argument("--huge", type=_ints, default=[10000])
    parser.add_argument("--workers", type=int, default=int(os.environ.get("WEB_CONCURRENCY", os.cpu_count() or 1)))
    parser.add_argument("--only", choices=["pgbench", "http"])
    parser.add_argument("--no-write", action="store_true", help="print only; leave bench/RESULTS.md alone")
    args = parser.parse_args()
    if args.only != "pgbench" and shutil.which("wrk") is None:
        raise SystemExit(
            "the HTTP part of the bench needs wrk, which is not installed: `make bench` installs it "
            "(scripts/install-system-deps wrk), or run `apt-get install wrk`; "
            "`python -m bench --only pgbench` runs without it."
        )
    started = time.time()
    bench = Bench(args)
    try:
        bench.setup_database()
        print("| scenario | load | rate | reservations/s | avg ms | p50 ms | p99 ms | p99.9 ms | max ms | errors |",
              flush=True)  # fmt: skip
        if args.only in (None, "pgbench"):
            bench.pgbench()
        if args.only in (None, "http"):
            bench.http()
        report = bench.report(started)
        print(report)
        if not args.no_write:
            (HERE / "RESULTS.md").write_text(report)
            print(f"wrote {HERE / 'RESULTS.md'} ({bench.reservations():,} reservations made)")
    finally:
        bench.cleanup()


if __name__ == "__main__":
    main()
