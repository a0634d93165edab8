"""Issue 13's comparison (`python -m bench --only lb-compare`): HAProxy in front of N single-worker
gateways (the layout `make lb` starts: dbctl/haproxy.py, ops/haproxy/haproxy.cfg) against one
uvicorn with N workers (what `make run` starts), in the same run, over the same database:

- `crowd`: the issue-10 purchase flow (bench/crowd.py's crowd_flow), 10,000 users with think
  time, one keep-alive connection each: a closed loop per user (bench/flowgen.py).
- `hot reserve`: POST /bookings/reserve on the hot ticket type at 1000 connections, no think time
  (a closed loop per connection): wrk as the HTTP part drives it (bench/wrk/lb_reserve.lua, which
  also counts answers by status), or bench/flowgen.py with `--lb-hot-driver flowgen` (no wrk).

Both layouts are started once and stay up; the loads run one layout at a time, the crowd first
HAProxy then uvicorn, the hot reserve the other way round (neither always goes first). Each figure
comes with its load model, and the CPU (utime + stime from /proc) of HAProxy, the gateway
processes, PostgreSQL and the load generator over the run. api.check_invariants() after each run.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from bench import crowd
from bench.flowgen import FlowRun, Stats, pct
from dbctl import haproxy
from dbctl.__main__ import fresh_metrics_dir, uvicorn_args
from dbctl.throwaway import free_port

if TYPE_CHECKING:
    from bench.__main__ import Bench

HERE = Path(__file__).resolve().parent
BEGIN, END = "<!-- lb-compare part: begin -->", "<!-- lb-compare part: end -->"
HOT = crowd.HOT
LB, UV = "haproxy", "uvicorn"


@dataclass
class Layout:
    name: str  # LB or UV
    label: str
    url: str
    gateway_pids: list[int]  # main processes (their children, the uvicorn workers, are counted too)
    haproxy_pid: int | None
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    frontend_limit: int | None = None  # HAProxy's maxconn (derived from ulimit -n)
    gateway_urls: list[str] = field(default_factory=list)  # each gateway's own port (its /metrics)

    def batch_totals(self) -> tuple[float, float]:
        """(reserves, batch calls) so far, from the gateways' booking_reserve_batch_size histograms."""
        total, calls = 0.0, 0.0
        for url in self.gateway_urls:
            try:
                with urllib.request.urlopen(f"{url}/metrics", timeout=5) as r:  # noqa: S310  (our own http URL)
                    text = r.read().decode()
            except OSError:
                continue
            for row in text.splitlines():
                if row.startswith("booking_reserve_batch_size_sum "):
                    total += float(row.split()[1])
                elif row.startswith("booking_reserve_batch_size_count "):
                    calls += float(row.split()[1])
        return total, calls

    def gateway_processes(self) -> list[int]:
        out: list[int] = []
        for pid in self.gateway_pids:
            out.append(pid)
            out += [w for w in crowd.gateway_workers(pid) if w != pid]
        return out


@dataclass
class LoadResult:
    layout: str
    load: str  # "crowd" or "hot reserve"
    model: str
    seconds: float
    requests: int  # answered or failed within the counted window
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    statuses: dict[str, int]  # "201", "409", ..., "socket connect/read/timeout", "non-2xx" (wrk without counts)
    cpu_s: dict[str, float]  # haproxy, gateways, postgres, generator: CPU seconds over the run
    wall_s: float  # the span the CPU was measured over
    short: str = ""  # the load model in a few words, beside each figure
    batch_mean: float | None = None  # reserves per api.reserve_tickets_batch call (the gateways' histograms)
    round: int = 1

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def cores(self, party: str) -> float | None:
        return self.cpu_s[party] / self.wall_s if party in self.cpu_s and self.wall_s else None

    def cpu_us_per_request(self, party: str) -> float | None:
        return self.cpu_s[party] / self.requests * 1e6 if party in self.cpu_s and self.requests else None


@dataclass
class CompareReport:
    instances: int
    results: list[LoadResult]
    haproxy_version: str
    notes: list[str] = field(default_factory=list)

    def get(self, layout: str, load: str, rnd: int) -> LoadResult | None:
        return next((r for r in self.results if r.layout == layout and r.load == load and r.round == rnd), None)


# ---------------------------------------------------------------------- the layouts


def _wait_ready(url: str, what: str, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=2):  # noqa: S310  (our own http URL)
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"{what} did not become ready at {url}")


def gateway_base_env(bench: Bench) -> dict[str, str]:
    """As Bench.start_gateway: production settings, instant payments, rate limits off."""
    return {**os.environ, "GATEWAY_DATABASE_URL": bench.url("booking_gateway"), "JWT_SECRET": bench.secret,
            "RESERVE_COALESCE": "on", "BOOKING_ENV": "production", "ALLOW_INSTANT_PAYMENTS": "yes",
            "RATE_LIMITS": "off", "GATEWAY_BACKLOG": "65535"}  # fmt: skip


def start_haproxy_layout(bench: Bench, instances: int) -> Layout:
    """`make lb`'s layout: N gateways with WEB_CONCURRENCY=1 on their own ports, HAProxy with the
    repository's config in front (HAProxy connects from 127.0.0.2, which the gateways trust)."""
    binary = haproxy.require_binary()
    layout = haproxy.Layout(port=free_port(), stats_port=free_port(),
                            gateway_ports=tuple(free_port() for _ in range(instances)))  # fmt: skip
    base = gateway_base_env(bench)
    procs: list[subprocess.Popen[bytes]] = []
    for n, port in enumerate(layout.gateway_ports, 1):
        env = haproxy.gateway_env(base, layout, port, bench.tmp / f"lb-metrics-{n}")
        fresh_metrics_dir(env["PROMETHEUS_MULTIPROC_DIR"])
        log = open(bench.tmp / f"lb-gw{n}.log", "wb")
        procs.append(subprocess.Popen(uvicorn_args(env), cwd=haproxy.ROOT, env=env, stdout=log, stderr=log))
    for port in layout.gateway_ports:
        _wait_ready(f"http://127.0.0.1:{port}", "a gateway")
    config = bench.tmp / "haproxy.cfg"
    config.write_text(haproxy.render(layout.gateway_ports, layout.host))
    log = open(bench.tmp / "haproxy.log", "wb")
    proxy = subprocess.Popen(haproxy.haproxy_command(binary, config), env=haproxy.haproxy_env(layout, os.environ),
                             stdout=log, stderr=log)  # fmt: skip
    url = f"http://127.0.0.1:{layout.port}"
    _wait_ready(url, "HAProxy")
    _wait_all_up(layout.stats_port, instances)
    label = f"HAProxy + {instances} gateways x 1 worker"
    result = Layout(LB, label, url, [p.pid for p in procs], proxy.pid, [*procs, proxy])
    result.frontend_limit = frontend_limit(layout.stats_port)
    result.gateway_urls = [f"http://127.0.0.1:{p}" for p in layout.gateway_ports]
    return result


def frontend_limit(stats_port: int) -> int | None:
    """The frontend's connection limit (`slim` in the stats CSV): with maxconn unset, HAProxy derives
    it from its file-descriptor limit (two descriptors per proxied connection)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{stats_port}/;csv", timeout=2) as r:
            for row in r.read().decode().splitlines():
                cells = row.split(",")
                if cells[:2] == ["booking", "FRONTEND"] and cells[6].isdigit():
                    return int(cells[6])
    except OSError:
        pass
    return None


def _wait_all_up(stats_port: int, instances: int, seconds: float = 20.0) -> None:
    """Until HAProxy's health checks have every gateway UP (rise 2: about 1 s)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{stats_port}/;csv", timeout=2) as r:
                rows = [line.split(",") for line in r.read().decode().splitlines() if line.startswith("gateways,gw")]
            if len(rows) == instances and all(row[17].startswith("UP") for row in rows):
                return
        except OSError:
            pass
        time.sleep(0.3)
    raise SystemExit("HAProxy did not see every gateway UP")


def start_uvicorn_layout(bench: Bench, instances: int) -> Layout:
    """`make run`'s gateway: one uvicorn (one port) with N workers."""
    port = free_port()
    env = {**gateway_base_env(bench), "GATEWAY_HOST": "127.0.0.1", "GATEWAY_PORT": str(port),
           "WEB_CONCURRENCY": str(instances), "PROMETHEUS_MULTIPROC_DIR": str(bench.tmp / "uv-metrics")}  # fmt: skip
    fresh_metrics_dir(env["PROMETHEUS_MULTIPROC_DIR"])
    log = open(bench.tmp / "uv-gateway.log", "wb")
    proc = subprocess.Popen(uvicorn_args(env), cwd=haproxy.ROOT, env=env, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    _wait_ready(url, "the gateway")
    return Layout(UV, f"uvicorn x {instances} workers", url, [proc.pid], None, [proc], gateway_urls=[url])


def stop_layout(layout: Layout) -> None:
    from bench.__main__ import _stop

    for proc in reversed(layout.procs):  # HAProxy first: no new requests reach a stopping gateway
        _stop(proc)


# ---------------------------------------------------------------------- measuring


class Meter:
    """CPU seconds (utime + stime) of each party between start() and stop()."""

    def __init__(self, bench: Bench, layout: Layout) -> None:
        self.bench, self.layout = bench, layout

    def _sample(self) -> dict[str, float]:
        out = {"gateways": crowd._cpu(self.layout.gateway_processes()),
               "postgres": crowd._cpu(crowd.postgres_pids(self.bench))}  # fmt: skip
        if self.layout.haproxy_pid is not None:
            out["haproxy"] = crowd._cpu([self.layout.haproxy_pid])
        return out

    def start(self) -> Meter:
        self.t0, self.c0 = time.monotonic(), self._sample()
        return self

    def stop(self) -> tuple[dict[str, float], float]:
        c1 = self._sample()
        return {k: c1[k] - self.c0[k] for k in c1}, time.monotonic() - self.t0


def _statuses_from(stats: Stats, idx: list[int]) -> dict[str, int]:
    out: dict[str, int] = {}
    for i in idx:
        s = stats.status[i]
        key = str(s) if s else "socket error"
        out[key] = out.get(key, 0) + 1
    if out.get("socket error"):
        out.pop("socket error")
        for kind, n in stats.socket_errors.items():
            if n:
                out[f"socket {kind}"] = n
    return out


def _percentiles(stats: Stats, idx: list[int]) -> tuple[float | None, ...]:
    answered = sorted(stats.latency_ms[i] for i in idx if stats.status[i])
    return pct(answered, 50), pct(answered, 95), pct(answered, 99), answered[-1] if answered else None


def run_crowd(bench: Bench, layout: Layout, users: int, seconds: int, warmup: float, procs: int,
              think_max: float = 10.0) -> LoadResult:  # fmt: skip
    """bench/crowd.py's purchase flow; the first `warmup` seconds (the arrivals) are run, not counted."""
    crowd.ensure_users(bench, users)
    tokens = crowd.make_tokens(bench.secret, 1, users)
    host, port = crowd.host_port(layout.url)
    ramp = min(10.0, warmup) if warmup else 10.0
    start = time.time() + 1.0 + warmup
    end = start + seconds
    launched = time.time()
    run = FlowRun(host, port, crowd.crowd_flow, tokens, crowd.crowd_params(think_max, ramp), end, procs).start()
    time.sleep(max(0.0, start - time.time()))
    meter = Meter(bench, layout).start()
    time.sleep(max(0.0, end - time.time()))
    cpu, wall = meter.stop()
    stats = run.wait()
    gen_wall = time.time() - launched
    cpu["generator"] = stats.cpu_s * wall / gen_wall  # its mean share over the counted span
    bench.check_invariants(f"lb-compare crowd on {layout.label}")
    idx = stats.select(None, start, end)
    p50, p95, p99, mx = _percentiles(stats, idx)
    model = (f"closed loop per user, {users:,} users (one keep-alive connection each), think uniform "
             f"0-{think_max:.0f} s (mean {think_max / 2:.1f} s) before every click, the purchase flow "
             f"(list, event, reserve, complete); arrivals over {ramp:.0f} s, {warmup:.0f} s run before the "
             f"{seconds} s counted; Python generator (bench/flowgen.py) in {procs} process(es)")  # fmt: skip
    short = f"closed loop, {users:,} users, think 0-{think_max:.0f} s"
    return LoadResult(layout.name, "crowd", model, float(seconds), len(idx), p50, p95, p99, mx,
                      _statuses_from(stats, idx), cpu, wall, short)  # fmt: skip


def run_hot(bench: Bench, layout: Layout, connections: int, seconds: int, driver: str) -> LoadResult:
    before = layout.batch_totals()
    if driver == "wrk":
        result = _hot_wrk(bench, layout, connections, seconds)
    else:
        result = _hot_flowgen(bench, layout, connections, seconds)
    after = layout.batch_totals()
    calls = after[1] - before[1]
    result.batch_mean = (after[0] - before[0]) / calls if calls else None
    bench.check_invariants(f"lb-compare hot reserve on {layout.label}")
    return result


def _hot_wrk(bench: Bench, layout: Layout, connections: int, seconds: int) -> LoadResult:
    threads = 2 if connections >= 2 else 1
    cmd = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s", "--timeout", "10s",
           "--latency", "-s", str(HERE / "wrk" / "lb_reserve.lua"), layout.url]  # fmt: skip
    env = {**os.environ, "BENCH_WRK_DIR": str(HERE / "wrk"), "TOKENS_FILE": str(bench.tokens),
           "HOT_TICKET_TYPE": HOT}  # fmt: skip
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    meter = Meter(bench, layout).start()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    cpu, wall = meter.stop()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu["generator"] = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    out = done.stdout + done.stderr
    from bench.__main__ import wrk_summary

    summary = wrk_summary(out)
    if done.returncode != 0 or summary is None:
        raise SystemExit(f"wrk failed for the hot reserve on {layout.label}:\n{out[-2000:]}")
    lat, err = summary["latency_us"], summary["errors"]
    statuses = {k: int(v) for k, v in _wrk_statuses(out).items()}
    for kind in ("connect", "read", "write", "timeout"):
        if err[kind]:
            statuses[f"socket {kind}"] = int(err[kind])
    model = (
        f"closed loop per connection, {connections:,} connections, no think time, POST /bookings/reserve "
        f"of 1 seat on one hot ticket type, tokens of 2000 users; wrk -t{threads} --timeout 10s, {seconds} s"
    )
    short = f"closed loop, {connections:,} connections, no think time (wrk)"
    return LoadResult(layout.name, "hot reserve", model, summary["duration_us"] / 1e6, int(summary["requests"]),
                      lat["p50"] / 1000, lat.get("p95", 0) / 1000 or None, lat["p99"] / 1000, lat["max"] / 1000,
                      statuses, cpu, wall, short)  # fmt: skip


def _wrk_statuses(output: str) -> dict[str, int]:
    """The line lb_reserve.lua's done() prints: answers by status over all threads."""
    for line in reversed(output.splitlines()):
        if line.startswith('{"wrk_statuses":'):
            counts: dict[str, int] = json.loads(line)["wrk_statuses"]
            return counts
    return {}


def _hot_flowgen(bench: Bench, layout: Layout, connections: int, seconds: int) -> LoadResult:
    crowd.ensure_users(bench, connections)
    tokens = crowd.make_tokens(bench.secret, 1, connections)
    host, port = crowd.host_port(layout.url)
    start = time.time() + 2.0
    end = start + seconds
    launched = time.time()
    params = {"route": crowd.R_RESERVE, "request": crowd._ReserveRequest()}
    run = FlowRun(host, port, crowd.loop_flow, tokens, params, end, 1).start()
    time.sleep(max(0.0, start - time.time()))
    meter = Meter(bench, layout).start()
    time.sleep(max(0.0, end - time.time()))
    cpu, wall = meter.stop()
    stats = run.wait()
    cpu["generator"] = stats.cpu_s * wall / (time.time() - launched)
    idx = stats.select(None, start, end)
    p50, p95, p99, mx = _percentiles(stats, idx)
    model = (
        f"closed loop per connection, {connections:,} connections, no think time, POST /bookings/reserve "
        f"of 1 seat on one hot ticket type; Python generator (bench/flowgen.py, no wrk), {seconds} s"
    )
    return LoadResult(layout.name, "hot reserve", model, float(seconds), len(idx), p50, p95, p99, mx,
                      _statuses_from(stats, idx), cpu, wall,
                      f"closed loop, {connections:,} connections, no think time (flowgen)")  # fmt: skip


def run_compare(bench: Bench, instances: int, loads: list[str], crowd_users: int, crowd_seconds: int,
                crowd_warmup: float, crowd_procs: int, hot_connections: int, hot_seconds: int,
                hot_driver: str, rounds: int = 1) -> CompareReport:  # fmt: skip
    """`rounds` times: the crowd on both layouts, then the hot reserve on both; the order of the
    layouts alternates (crowd: HAProxy first in odd rounds; hot reserve: the other way round)."""
    version = subprocess.run([haproxy.require_binary(), "-v"], capture_output=True, text=True, check=False)
    report = CompareReport(instances, [], (version.stdout.splitlines() or ["haproxy"])[0])
    lb = start_haproxy_layout(bench, instances)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    report.notes.append(f"File descriptors: ulimit -n {soft:,} (hard {hard:,}) for every process here; HAProxy's "
                        f"frontend limit (maxconn, which the config leaves to HAProxy to derive from it): "
                        f"{lb.frontend_limit if lb.frontend_limit is not None else 'unknown'} connections. Clients "
                        "beyond it wait in the kernel's accept queue until a connection closes.")  # fmt: skip
    try:
        uv = start_uvicorn_layout(bench, instances)
        try:
            for rnd in range(1, rounds + 1):
                first, second = (lb, uv) if rnd % 2 else (uv, lb)
                if "crowd" in loads:
                    for layout in (first, second):
                        result = run_crowd(bench, layout, crowd_users, crowd_seconds, crowd_warmup, crowd_procs)
                        result.round = rnd
                        report.results.append(result)
                        print(line(result, layout.label), flush=True)
                if "hot" in loads:
                    for layout in (second, first):
                        result = run_hot(bench, layout, hot_connections, hot_seconds, hot_driver)
                        result.round = rnd
                        report.results.append(result)
                        print(line(result, layout.label), flush=True)
        finally:
            stop_layout(uv)
    finally:
        stop_layout(lb)
    return report


# ---------------------------------------------------------------------- the report


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x:,.1f}"


def _statuses(s: dict[str, int]) -> str:
    return ", ".join(f"{k}: {v:,}" for k, v in sorted(s.items())) or "-"


def line(r: LoadResult, label: str) -> str:
    return (f"lb-compare round {r.round}, {r.load} on {label}: {r.rps:,.0f} req/s, p50 {_ms(r.p50_ms)} "
            f"p95 {_ms(r.p95_ms)} p99 {_ms(r.p99_ms)} ms; {_statuses(r.statuses)}; CPU s "
            + ", ".join(f"{k} {v:.1f}" for k, v in sorted(r.cpu_s.items())))  # fmt: skip


def section(report: CompareReport, command: str, when: str) -> list[str]:
    n = report.instances
    labels = {LB: f"HAProxy + {n} gateways x 1 worker", UV: f"uvicorn x {n} workers"}
    out = [BEGIN, f"## HAProxy + {n} single-worker gateways vs one uvicorn with {n} workers (issue 13)", "",
           f"Run: {when}, `{command}`. {os.cpu_count()} cores shared by HAProxy, the gateways, PostgreSQL "
           f"and the load generator; {report.haproxy_version.strip()}, `ops/haproxy/haproxy.cfg` as `make lb` "
           f"renders it (default nbthread: one thread per core). Both layouts ran in the same run over the same "
           "database (production settings, coalesced reserves, `RATE_LIMITS=off`), in rounds; in odd rounds "
           "the crowd ran HAProxy first and the hot reserve uvicorn first, in even rounds the other way round. "
           "CPU: utime + stime from /proc over the counted span; *cores* = CPU seconds / wall seconds; *us/req* "
           "= CPU / requests. `api.check_invariants()` was empty after each "
           "run.", ""]  # fmt: skip
    for load in ("crowd", "hot reserve"):
        rows = [r for r in report.results if r.load == load]
        if not rows:
            continue
        out += [f"### {load}", "", f"Load model: {rows[0].model}.", "",
                "| round | layout | load model | req/s | p50 ms | p95 ms | p99 ms | max ms | answers by status "
                "| HAProxy cores (us/req) | gateway cores (us/req) | PostgreSQL cores (us/req) | generator cores |",
                "|---:|---|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|"]  # fmt: skip
        for r in rows:

            def cell(party: str, res: LoadResult = r) -> str:
                c, us = res.cores(party), res.cpu_us_per_request(party)
                return "-" if c is None else f"{c:.2f} ({us:,.0f})"

            gen = r.cores("generator")
            generator = "-" if gen is None else f"{gen:.2f}"
            out.append(f"| {r.round} | {labels[r.layout]} | {r.short} | {r.rps:,.0f} | {_ms(r.p50_ms)} "
                       f"| {_ms(r.p95_ms)} | {_ms(r.p99_ms)} | {_ms(r.max_ms)} | {_statuses(r.statuses)} "
                       f"| {cell('haproxy')} | {cell('gateways')} | {cell('postgres')} | {generator} |")  # fmt: skip
        out.append("")
        throughput, p99s = [], []
        for rnd in sorted({r.round for r in rows}):
            a, b = report.get(LB, load, rnd), report.get(UV, load, rnd)
            if not (a and b and b.rps and a.p99_ms and b.p99_ms):
                continue
            gw_a, gw_b = a.cpu_us_per_request("gateways"), b.cpu_us_per_request("gateways")
            hp = a.cpu_us_per_request("haproxy")
            throughput.append(a.rps / b.rps)
            p99s.append(a.p99_ms / b.p99_ms)
            batches = ""
            if a.batch_mean and b.batch_mean:
                batches = (f" Reserves per coalesced batch call (the gateways' `booking_reserve_batch_size`): "
                           f"{a.batch_mean:.1f} vs {b.batch_mean:.1f}.")  # fmt: skip
            out.append(f"- Round {rnd}, ratio HAProxy layout / uvicorn layout ({load}, {a.short}): "
                       f"throughput **{a.rps / b.rps:.2f}x** ({a.rps:,.0f} vs {b.rps:,.0f} req/s), p50 "
                       f"**{(a.p50_ms or 0) / (b.p50_ms or 1):.2f}x**, p99 **{a.p99_ms / b.p99_ms:.2f}x** "
                       f"({_ms(a.p99_ms)} vs {_ms(b.p99_ms)} ms); gateway CPU per request {gw_a or 0:,.0f} vs "
                       f"{gw_b or 0:,.0f} us, plus HAProxy's {hp or 0:,.0f} us.{batches}")  # fmt: skip
        if len(throughput) > 1:
            mid, mid99 = statistics.median(throughput), statistics.median(p99s)
            out.append(f"- Over the {len(throughput)} rounds: throughput ratio {min(throughput):.2f}x to "
                       f"{max(throughput):.2f}x (median **{mid:.2f}x**), p99 ratio {min(p99s):.2f}x to "
                       f"{max(p99s):.2f}x (median **{mid99:.2f}x**).")  # fmt: skip
        out.append("")
    out += [*report.notes, END]
    return out


def splice(existing: str, part: str) -> str:
    """RESULTS.md with the lb-compare part replaced (or appended when it is not there yet)."""
    begin, end = existing.find(BEGIN), existing.find(END)
    if begin < 0 or end < begin:
        return existing.rstrip("\n") + "\n\n" + part.rstrip("\n") + "\n"
    return existing[:begin] + part.rstrip("\n") + existing[end + len(END) :]
