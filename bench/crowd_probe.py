"""Issue 10 diagnosis probe (not part of make bench): a durable cluster and the gateway exactly as
`make run` serves it (bench/__main__.py's harness), then wrk runs of the hot reserve by users who
think between clicks (bench/wrk/reserve_think.lua). Server settings come from the environment
(KEEP_ALIVE_SECONDS, MAX_IN_FLIGHT, ...), so the same probe compares them.

  python -m bench.crowd_probe [--connections 10000] [--seconds 20] [--think-max-ms 10000,2000]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import time
from pathlib import Path

from bench.__main__ import HERE, HOT, Bench, wrk_summary


def ss_counts(port: int) -> str:
    """Established connections to the port per owning process, and the listen queue (Recv-Q)."""
    out = subprocess.run(["ss", "-Htnp", "state", "established", f"( sport = :{port} )"],
                         capture_output=True, text=True).stdout  # fmt: skip
    per: dict[str, int] = {}
    for line in out.splitlines():
        pid = line.split("pid=")[1].split(",")[0] if "pid=" in line else "unaccepted"
        per[pid] = per.get(pid, 0) + 1
    listen = subprocess.run(["ss", "-Hltn", f"( sport = :{port} )"], capture_output=True, text=True).stdout.split()
    return f"established per pid {per}; listen Recv-Q/Send-Q {listen[1:3] if len(listen) > 2 else listen}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--connections", type=int, default=10000)
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--think-max-ms", default="10000")
    parser.add_argument("--probes", type=int, default=40, help="0: no latency probe beside the crowd")
    parser.add_argument("--script", default="reserve_think.lua", help="e.g. get.lua with WRK_PATH=/healthz")
    parser.add_argument("--backlog", type=int, default=0, help="0: the serving default (no --backlog)")
    cli = parser.parse_args()
    args = argparse.Namespace(workers=int(os.environ.get("WEB_CONCURRENCY", 2)), http_seconds=cli.seconds)
    bench = Bench(args)
    try:
        bench.setup_database()
        bench.tokens = bench.tokens_file()
        proc, url = bench.start_gateway(coalesce=True)
        port = int(url.rsplit(":", 1)[1])
        for think in cli.think_max_ms.split(","):
            cmd = ["wrk", "-t", "2", "-c", str(cli.connections), "-d", f"{cli.seconds}s", "--timeout", "10s",
                   "--latency", "-s", str(HERE / "wrk" / cli.script), url]  # fmt: skip
            env = {**os.environ, "BENCH_WRK_DIR": str(HERE / "wrk"), "TOKENS_FILE": str(bench.tokens),
                   "HOT_TICKET_TYPE": HOT, "THINK_MAX_MS": think}  # fmt: skip
            wrk = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
            # One connection per thread: latency split by status (bench/wrk/probe_think.lua).
            probe_cmd = ["wrk", "-t", str(cli.probes), "-c", str(cli.probes), "-d", f"{cli.seconds}s",
                         "--timeout", "10s", "-s", str(HERE / "wrk" / "probe_think.lua"), url]  # fmt: skip
            probe = subprocess.Popen(probe_cmd if cli.probes else ["true"], stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, env=env)  # fmt: skip
            for _ in range(3):
                time.sleep(cli.seconds / 3)
                print("  ", ss_counts(port), flush=True)
            out, _ = wrk.communicate()
            by_status: dict[str, list[float]] = {}
            for line in probe.communicate()[0].splitlines():
                if line.startswith("sample "):
                    _, status, ms = line.split()
                    by_status.setdefault(status, []).append(float(ms))
            for status, values in sorted(by_status.items()):
                values.sort()
                pick = {p: values[min(len(values) - 1, int(len(values) * p / 100))] for p in (50, 90, 99)}
                print(f"  probe ({cli.probes} users, one connection per wrk thread): status {status}: "
                      f"{len(values)} answers, ms p50 {pick[50]:.1f} p90 {pick[90]:.1f} p99 {pick[99]:.1f} "
                      f"max {values[-1]:.1f}", flush=True)  # fmt: skip
            s = wrk_summary(out)
            lat = {k: round(v / 1000, 1) for k, v in s["latency_us"].items()} if s else None
            rate = s["requests"] / s["duration_us"] * 1e6 if s else 0
            print(
                f"think 0..{think} ms, {cli.connections} conns: {rate:,.0f} req/s, latency ms {lat}, "
                f"errors {s and s['errors']}",
                flush=True,
            )
            print("\n".join(line for line in out.splitlines() if line.startswith('{"statuses"')))
        log = sorted(Path(bench.tmp).glob("gateway-*.log"))
        text = log[0].read_text(errors="replace") if log else ""
        print("gateway log lines mentioning errors:", sum("error" in x.lower() for x in text.splitlines()))
        print("\n".join([x for x in text.splitlines() if '"level": "INFO"' not in x][-8:]))
        proc.terminate()
        proc.wait(15)
    finally:
        bench.cleanup()


if __name__ == "__main__":
    main()
