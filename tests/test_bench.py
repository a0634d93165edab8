"""The bench runner must keep working: its pgbench part end to end (1-second runs), and its
wrk-output parsing on a real sample."""

from __future__ import annotations

import subprocess
import sys

from bench.__main__ import _float, _wrk_ms
from dbctl.migrate import ROOT

WRK_SAMPLE = """Running 5s test @ http://127.0.0.1:8000
  2 threads and 1000 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   124.09ms   45.10ms   1.20s    80.00%
  Latency Distribution
     50%  117.82ms
     75%  140.00ms
     90%  180.00ms
     99%    1.37s
  39890 requests in 5.00s, 20.00MB read
  Socket errors: connect 0, read 3, write 0, timeout 0
  Non-2xx or 3xx responses: 12
Requests/sec:   7978.12
"""


def test_wrk_output_is_parsed() -> None:
    assert _float(r"Requests/sec:\s+([\d.]+)", WRK_SAMPLE) == 7978.12
    assert _wrk_ms(r"50%\s+([\d.]+\w+)", WRK_SAMPLE) == 117.82
    assert _wrk_ms(r"99%\s+([\d.]+\w+)", WRK_SAMPLE) == 1370.0
    assert _wrk_ms(r"Latency\s+([\d.]+\w+)", WRK_SAMPLE) == 124.09


def test_pgbench_part_runs_and_checks_invariants() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--only", "pgbench", "--seconds", "1", "--clients", "2", "--no-write"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "| reserve_hot_batch (50/call) | 2 |" in done.stdout
    assert "batch" in done.stdout and "**" in done.stdout  # the ratio line
    assert "INVARIANT" not in done.stdout
