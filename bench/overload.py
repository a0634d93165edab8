"""The issue-10 `overload` bench: the hot reserve offered more than the gateway can serve, and what
load shedding (gateway/shedding.py) makes of it: the rate served and shed, and the latency of each.

Load model (every point): bench/thinkload.c, one keep-alive connection per user, all opened
before the clock starts; each user waits a think time drawn uniform 0..2x mean before every
request, the first included (as wrk's delay() does), and sends the next only after the answer: a
closed loop per user, so the offered rate is about users / (mean think + mean response time); a
shed user ignores Retry-After and comes back after its next think time. A request's clock starts
when it is written: think time is not latency. Without think time (the reference) every user's
first request goes at once. Every answer's latency is kept, so the served and shed percentiles
are over all answers of the point. The gateway's and PostgreSQL's CPU include the connection
phase (10,000 accepts) and are divided by the clocked seconds: a slight overstatement.

Why not wrk here: its delay() timers are a list walked on every turn of its event loop, which
with 10,000 thinking users cost 0.6-0.8 of the machine's 2 cores at the overload point (90 us
per request, against 24 us without think time), CPU taken from the gateway under test;
thinkload's timers are a wheel (O(1) per request). The HTTP part still measures with wrk.

  flock /tmp/i10-load.lock python -m bench.overload [--seconds 20] [--think 10,5,2,1,0.5]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.__main__ import HERE, HOT

if TYPE_CHECKING:
    from bench.__main__ import Bench

USERS = 10_000
HOT_CONNECTIONS = 1000
OVERLOAD_MEAN_THINK = 1.0  # seconds: think uniform 0-2 s, the overload point
SWEEP_MEAN_THINK = (10.0, 5.0, 2.0, 1.0, 0.5)  # seconds, for the knee plot
SERVED = ("200", "201", "409")  # 409 sold_out is an answer too
SHED = "503"
MODEL = (
    "closed loop per user: each of N keep-alive connections (bench/thinkload.c) is one user who thinks uniform "
    "0..2x mean before each hot reserve and waits for the answer; offered ~ N / (mean think + mean "
    "latency); shed users retry after their next think, not after Retry-After"
)


@dataclass
class LoadPoint:
    label: str  # e.g. "think 0-2 s (mean 1 s)"
    users: int  # connections
    offered_rps: float | None  # estimate: users / (mean think + mean latency)
    served_rps: float  # 2xx/s (201 + 409 sold_out counts as served: an answer)
    shed_rps: float  # 503 busy/s
    served_p50_ms: float | None
    served_p99_ms: float | None
    shed_p50_ms: float | None
    shed_p99_ms: float | None
    all_p99_ms: float | None
    socket_errors: int
    # Added: what the figures rest on.
    mean_think_s: float = 0.0
    seconds: float = 0.0
    all_p50_ms: float | None = None
    all_max_ms: float | None = None
    other_rps: float = 0.0  # answers neither served nor shed (should be 0)
    statuses: dict[str, int] = field(default_factory=dict)
    # CPU used during the point, in cores (CPU seconds per second): who had the 2 cores.
    cpu_gateway: float = 0.0  # the uvicorn workers
    cpu_generator: float = 0.0  # the load generator (bench/thinkload.c)
    cpu_postgres: float = 0.0


@dataclass
class OverloadResult:
    hot_1000_rps: float  # hot reserve, 1000 connections, no think: measured in the same call
    overload: LoadPoint  # 10,000 users, think uniform 0-2 s
    sweep: list[LoadPoint]  # the same at several think times (for the knee plot), e.g. 10, 5, 2, 1, 0.5 s mean
    model: str  # one sentence naming the load model
    hot_1000: LoadPoint | None = None  # the hot run's whole point (its shed rate, latency)

    @property
    def goodput_ratio(self) -> float:
        return self.overload.served_rps / self.hot_1000_rps if self.hot_1000_rps else 0.0

    def targets(self) -> list[tuple[str, bool]]:
        o = self.overload
        return [
            (f"served p99 < 500 ms: {_ms(o.served_p99_ms)}", o.served_p99_ms is not None and o.served_p99_ms < 500),
            (f"shed p99 < 50 ms: {_ms(o.shed_p99_ms)}", o.shed_p99_ms is None or o.shed_p99_ms < 50),
            (
                f"goodput >= 80% of the hot reserve at 1000 connections: {o.served_rps:,.0f} / "
                f"{self.hot_1000_rps:,.0f} req/s = {self.goodput_ratio:.0%}",
                self.goodput_ratio >= 0.8,
            ),
            (f"no socket errors: {o.socket_errors}", o.socket_errors == 0),
        ]

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "goodput_ratio": self.goodput_ratio}


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x:,.1f} ms"


def _pct(values: list[float], pct: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * pct / 100))]


def think_label(mean: float) -> str:
    return "no think" if mean <= 0 else f"think 0-{2 * mean:g} s (mean {mean:g} s)"


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _cpu(pids: list[int]) -> float:
    """utime + stime of these processes, seconds (those gone since are skipped)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / CLOCK_TICKS


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(x) for x in (task / "children").read_text().split()]
        except OSError:
            pass
    return found


def _gateway_pids(url: str) -> list[int]:
    port = url.rsplit(":", 1)[1]
    out = subprocess.run(["ss", "-Hltnp", f"( sport = :{port} )"], capture_output=True, text=True).stdout
    return sorted({int(x.split(",")[0]) for x in out.split("pid=")[1:]})


def _postgres_pids(bench: Bench) -> list[int]:
    try:
        postmaster = int((bench.cluster.datadir / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return []
    return [postmaster, *_children(postmaster)]


THINKLOAD = HERE / "thinkload.c"


def c_compiler() -> str | None:
    """The C compiler that builds bench/thinkload.c, or None."""
    return shutil.which("cc") or shutil.which("gcc")


def thinkload_binary(bench: Bench) -> str:
    """bench/thinkload.c compiled (once per run) into the run's temporary directory."""
    binary = Path(bench.tmp) / "thinkload"
    if not binary.exists():
        cc = c_compiler()
        if cc is None:
            raise SystemExit("bench/thinkload.c needs a C compiler: `make bench` installs gcc (Debian)")
        subprocess.run([cc, "-O2", "-o", str(binary), str(THINKLOAD)], check=True)
    return str(binary)


def measure(bench: Bench, url: str, users: int, mean_think: float, seconds: int) -> LoadPoint:
    """One point: `users` users (bench/thinkload.c, one connection each) for `seconds`; every
    answer's latency is kept, so served and shed percentiles are over all of them."""
    gateway_pids, postgres_pids = _gateway_pids(url), _postgres_pids(bench)
    cpu_before = (_cpu(gateway_pids), _cpu(postgres_pids))
    host, port = url.split("://", 1)[1].rsplit(":", 1)
    samples_file = Path(bench.tmp) / "thinkload-samples.txt"
    body = '{"ticket_type_id": "' + HOT + '", "quantity": 1}'
    cmd = [thinkload_binary(bench), "-a", host, "-p", port, "-c", str(users), "-d", str(seconds),
           "-t", str(int(mean_think * 2000)), "-T", "10000", "-f", str(bench.tokens), "-m", "POST",
           "-u", "/bookings/reserve", "-b", body, "-o", str(samples_file)]  # fmt: skip
    run = subprocess.run(cmd, capture_output=True, text=True)
    cpu_gateway, cpu_postgres = _cpu(gateway_pids) - cpu_before[0], _cpu(postgres_pids) - cpu_before[1]
    summary = next((json.loads(x) for x in run.stdout.splitlines() if x.startswith('{"thinkload"')), None)
    if run.returncode != 0 or summary is None:
        raise SystemExit(f"thinkload failed ({users} users, {think_label(mean_think)}):\n{run.stderr[-2000:]}")
    by_status: dict[str, list[float]] = {}
    with samples_file.open() as f:
        for line in f:
            status, us, _ = line.split()
            by_status.setdefault(status, []).append(int(us) / 1000)
    samples_file.unlink()
    duration = summary["duration_us"] / 1e6
    served_ms = [v for s in SERVED for v in by_status.get(s, [])]
    shed_ms = by_status.get(SHED, [])
    every_ms = [v for values in by_status.values() for v in values]
    err = summary["errors"]
    mean_latency = sum(every_ms) / len(every_ms) / 1000 if every_ms else 0.0
    return LoadPoint(
        label=think_label(mean_think),
        users=users,
        offered_rps=users / (mean_think + mean_latency) if mean_think + mean_latency > 0 else None,
        served_rps=len(served_ms) / duration,
        shed_rps=len(shed_ms) / duration,
        served_p50_ms=_pct(served_ms, 50),
        served_p99_ms=_pct(served_ms, 99),
        shed_p50_ms=_pct(shed_ms, 50),
        shed_p99_ms=_pct(shed_ms, 99),
        all_p99_ms=_pct(every_ms, 99),
        socket_errors=sum(int(err[k]) for k in ("connect", "read", "write", "timeout", "status")),
        mean_think_s=mean_think,
        seconds=duration,
        all_p50_ms=_pct(every_ms, 50),
        all_max_ms=max(every_ms, default=None),
        other_rps=(len(every_ms) - len(served_ms) - len(shed_ms)) / duration,
        statuses={k: len(v) for k, v in by_status.items()},
        cpu_gateway=cpu_gateway / duration,
        cpu_generator=summary["cpu_s"] / duration,
        cpu_postgres=cpu_postgres / duration,
    )


def run_overload(bench: Bench, url: str, seconds: int, sweep: tuple[float, ...] = SWEEP_MEAN_THINK) -> OverloadResult:
    """The hot reserve at 1000 connections without think time (the capacity the goodput target is
    measured against), then 10,000 users at each think time of the sweep; the 1 s mean point is
    the overload point (run on its own if the sweep lacks it). The invariant after each run.
    `bench.tokens` must be set (bench.tokens_file()); `url` is a gateway started by the caller
    (bench.start_gateway(coalesce=True)). About (1 + len(sweep)) x (seconds + 3) s."""
    from bench.__main__ import _raise_file_limits

    _raise_file_limits()  # 10,000 connections on this side too
    hot = measure(bench, url, HOT_CONNECTIONS, 0.0, seconds)
    hot.label = f"hot reserve, {HOT_CONNECTIONS} connections, no think"
    print(format_point(hot), flush=True)
    bench.check_invariants(f"overload: {hot.label}")
    points = []
    for mean in sweep:
        points.append(measure(bench, url, USERS, mean, seconds))
        print(format_point(points[-1]), flush=True)
        bench.check_invariants(f"overload: {points[-1].label}")
    overload = next((p for p in points if p.mean_think_s == OVERLOAD_MEAN_THINK), None)
    if overload is None:
        overload = measure(bench, url, USERS, OVERLOAD_MEAN_THINK, seconds)
        bench.check_invariants(f"overload: {overload.label}")
    return OverloadResult(hot.served_rps, overload, points, MODEL, hot)


HEADER = (
    "| load | users | offered/s | served/s | shed/s | served p50 / p99 ms | shed p50 / p99 ms "
    "| all p50 / p99 / max ms | socket errors | CPU cores: gateway / generator / PostgreSQL |"
)


def format_point(p: LoadPoint) -> str:
    def f(x: float | None) -> str:
        return "-" if x is None else f"{x:,.1f}"

    offered = "-" if p.offered_rps is None else f"{p.offered_rps:,.0f}"
    return (
        f"| {p.label} | {p.users:,} | {offered} | {p.served_rps:,.0f} | {p.shed_rps:,.0f} "
        f"| {f(p.served_p50_ms)} / {f(p.served_p99_ms)} "
        f"| {f(p.shed_p50_ms)} / {f(p.shed_p99_ms)} "
        f"| {f(p.all_p50_ms)} / {f(p.all_p99_ms)} / {f(p.all_max_ms)} | {p.socket_errors} "
        f"| {p.cpu_gateway:.2f} / {p.cpu_generator:.2f} / {p.cpu_postgres:.2f} |"
        + (f" other answers {p.other_rps:,.1f}/s" if p.other_rps else "")
    )


def report(result: OverloadResult) -> list[str]:
    lines = [f"Load model: {result.model}.", "", HEADER, "|---|---|---|---|---|---|---|---|---|---|"]
    if result.hot_1000 is not None:
        lines.append(format_point(result.hot_1000))
    lines += [format_point(p) for p in result.sweep]
    lines += ["", f"Overload point: {result.overload.label}, {result.overload.users:,} users."]
    lines += [f"- {text} **{'met' if ok else 'NOT met'}**" for text, ok in result.targets()]
    return lines


def main() -> None:
    from bench.__main__ import Bench, _raise_file_limits, _stop

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--think", default=",".join(f"{x:g}" for x in SWEEP_MEAN_THINK), help="mean think times, s")
    parser.add_argument("--workers", type=int, default=int(os.environ.get("WEB_CONCURRENCY", os.cpu_count() or 1)))
    cli = parser.parse_args()
    bench = Bench(argparse.Namespace(workers=cli.workers, http_seconds=cli.seconds))
    try:
        bench.setup_database()
        bench.tokens = bench.tokens_file()
        _raise_file_limits()
        proc, url = bench.start_gateway(coalesce=True)
        try:
            print(HEADER, flush=True)
            result = run_overload(bench, url, cli.seconds, tuple(float(x) for x in cli.think.split(",")))
        finally:
            _stop(proc)
        print("\n".join(report(result)))
        for log in sorted(Path(bench.tmp).glob("gateway-*.log")):  # the gateway's own view: lag, refusals
            print(
                "\n".join(
                    x
                    for x in log.read_text(errors="replace").splitlines()
                    if "gateway.shedding" in x or '"level": "INFO"' not in x
                )
            )
    finally:
        bench.cleanup()


if __name__ == "__main__":
    main()
