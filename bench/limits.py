"""The rate limiter's cost on the hot reserve, without wrk: the real gateway (uvicorn workers
as `make run` serves it) on a private durable cluster seeded like `make bench`, loaded by the
Python closed-loop generator in bench/pyload.py, with RATE_LIMITS=off and =on alternately in
one run (rules raised so nothing is refused: the limits-on rows measure counting).

  python -m bench.limits [--connections 1000] [--seconds 15] [--rounds 2] [--workers 2]
"""

from __future__ import annotations

import argparse
import glob
import os
import statistics
import threading
from pathlib import Path
from urllib.parse import urlsplit

import psycopg

from bench.__main__ import HOT, Bench, _raise_file_limits, _stop
from bench.pyload import LoadResult, build_request, load

TICKS = os.sysconf("SC_CLK_TCK")


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            fields = Path(stat).read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        tree.setdefault(int(fields[1]), []).append(int(stat.split("/")[2]))
    return tree


def tree_cpu(roots: list[int]) -> float:
    """CPU seconds (user + system) used so far by these processes and all their descendants
    (the gateway's uvicorn workers; the postmaster's backends, which live as long as the pool)."""
    tree, total, todo = _children(), 0.0, list(roots)
    while todo:
        pid = todo.pop()
        todo += tree.get(pid, [])
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / TICKS
    return total


class CpuWindow:
    """CPU seconds the roots' trees used between two moments (timers: the load's own window)."""

    def __init__(self, roots: list[int], start_in: float, seconds: float) -> None:
        self.roots, self.marks = roots, [0.0, 0.0]
        self.timers = [
            threading.Timer(start_in, self._mark, (0,)),
            threading.Timer(start_in + seconds, self._mark, (1,)),
        ]
        for timer in self.timers:
            timer.start()

    def _mark(self, n: int) -> None:
        self.marks[n] = tree_cpu(self.roots)

    @property
    def used(self) -> float:
        for timer in self.timers:
            timer.join()
        return self.marks[1] - self.marks[0]


def function_calls(bench: Bench) -> dict[str, int]:
    """Calls so far of the functions the hot reserve uses (whole run: warm-up included)."""
    with psycopg.connect(bench.url(), autocommit=True) as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        rows = conn.execute("SELECT funcname, calls FROM pg_stat_user_functions WHERE schemaname = 'api'").fetchall()
    return {name: int(calls) for name, calls in rows}


def reserve_requests(tokens_path: str) -> list[bytes]:
    body = f'{{"ticket_type_id": "{HOT}", "quantity": 1}}'.encode()
    requests = []
    with open(tokens_path) as f:
        for line in f:
            _, token = line.split()
            headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
            requests.append(build_request("POST", "/bookings/reserve", headers, body))
    return requests


def row(name: str, connections: int, r: LoadResult, cpu_us: float) -> str:
    def ms(x: float | None) -> str:
        return "-" if x is None else f"{x:,.1f}"

    other = {s: n for s, n in r.statuses.items() if s != 201}
    errors = ", ".join(f"{n} x {s}" for s, n in sorted(other.items()))
    if r.socket_errors:
        errors = ", ".join(filter(None, [errors, f"{r.socket_errors} socket"]))
    mean = statistics.fmean(r.latencies_ms) if r.requests else None
    return (f"| {name} | {connections} | {r.rate:,.0f} | {ms(mean)} "
            f"| {ms(r.percentile(50))} | {ms(r.percentile(99))} | {ms(max(r.latencies_ms, default=None))} "
            f"| {errors or '0'} | {cpu_us:,.0f} |")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--warmup", type=float, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workers", type=int, default=int(os.environ.get("WEB_CONCURRENCY", os.cpu_count() or 1)))
    args = parser.parse_args()
    args.http_seconds = args.seconds
    bench = Bench(args)
    try:
        bench.setup_database()
        bench.raise_rate_limits()
        with psycopg.connect(bench.cluster.superuser_url("booking"), autocommit=True) as conn:
            conn.execute("ALTER DATABASE booking SET track_functions = 'pl'")  # calls per function, below
        _raise_file_limits()
        requests = reserve_requests(str(bench.tokens_file()))
        print("| hot reserve | connections | req/s | avg ms | p50 ms | p99 ms | max ms | non-201 "
              "| CPU us/request (gateway + PostgreSQL) |")  # fmt: skip
        print("|---|---:|---:|---:|---:|---:|---:|---|---:|", flush=True)
        rates: dict[bool, list[float]] = {False: [], True: []}
        cpu_us: dict[bool, list[float]] = {False: [], True: []}
        postmaster = int((bench.cluster.datadir / "postmaster.pid").read_text().split()[0])
        for n in range(args.rounds):
            for limits in (False, True) if n % 2 == 0 else (True, False):
                gateway, url = bench.start_gateway(coalesce=True, rate_limits=limits)
                try:
                    parts = urlsplit(url)
                    assert parts.hostname and parts.port
                    calls_before = function_calls(bench)
                    cpu = CpuWindow([gateway.pid], args.warmup, args.seconds)
                    pg_cpu = CpuWindow([postmaster], args.warmup, args.seconds)
                    result = load(parts.hostname, parts.port, requests, args.connections, args.seconds, args.warmup)
                    used, pg_used = cpu.used, pg_cpu.used
                    calls = {k: v - calls_before.get(k, 0) for k, v in function_calls(bench).items()}
                finally:
                    _stop(gateway)
                bench.check_invariants(f"rate limits {'on' if limits else 'off'}")
                rates[limits].append(result.rate)
                per_request = (used + pg_used) / result.requests * 1e6 if result.requests else 0.0
                total = max(1, sum(result.statuses.values()))
                print(f"  gateway {used / total * 1e6:,.0f} us + PostgreSQL {pg_used / total * 1e6:,.0f} us "
                      f"per request; calls {calls}", flush=True)  # fmt: skip
                cpu_us[limits].append(per_request)
                print(row(f"RATE_LIMITS={'on' if limits else 'off'} (round {n + 1})", args.connections, result,
                          per_request), flush=True)  # fmt: skip
        with psycopg.connect(bench.url()) as conn:
            counters = conn.execute("SELECT count(*) FROM rate_limit_counters").fetchone()
        off, on = statistics.fmean(rates[False]), statistics.fmean(rates[True])
        cpu_off, cpu_on = statistics.median(cpu_us[False]), statistics.median(cpu_us[True])
        print(f"\nmean over {args.rounds} round(s): limits on {on:,.0f} req/s vs off {off:,.0f} req/s = "
              f"**{on / off:.0%}**; median CPU per request (gateway + PostgreSQL): on {cpu_on:,.0f} us vs off "
              f"{cpu_off:,.0f} us = {cpu_on / cpu_off:.0%} (capacity ratio off/on {cpu_off / cpu_on:.0%}); "
              f"counters rows after the run: {counters[0] if counters else 0}")  # fmt: skip
    finally:
        bench.cleanup()


if __name__ == "__main__":
    main()
