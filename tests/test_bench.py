"""The bench runner must keep working: its pgbench part end to end (1-second runs) on a machine
without wrk, and its reading of wrk's output (the JSON line of bench/wrk/common.lua's done()) on a
sample. wrk itself never runs here: `make test` must pass where it is not installed."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bench.__main__ import wrk_row, wrk_summary
from dbctl.migrate import ROOT

WRK_DIR = ROOT / "bench" / "wrk"

# What `wrk --latency -s bench/wrk/reserve.lua` prints: its text report (which rounds: 1372841 us
# reads "1.37s"), then the line done() writes with the exact figures.
WRK_OUTPUT = """Running 5s test @ http://127.0.0.1:8000
  2 threads and 1000 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   124.09ms   45.10ms   2.00s    80.00%
    Req/Sec     4.01k   512.33     5.10k    70.00%
  Latency Distribution
     50%  117.82ms
     75%  140.00ms
     90%  180.00ms
     99%    1.37s
  39890 requests in 5.00s, 20.00MB read
  Socket errors: connect 0, read 3, write 0, timeout 0
  Non-2xx or 3xx responses: 12
Requests/sec:   7978.12
Transfer/sec:      4.00MB
{"wrk_done":1,"duration_us":4999925,"requests":39890,"bytes":20971520,\
"errors":{"connect":0,"read":3,"write":0,"status":12,"timeout":0},\
"latency_us":{"mean":124093.512,"stdev":45102.337,"max":1998765,\
"p50":117823,"p90":180004,"p99":1372841,"p99.9":1804117}}
"""


def test_wrk_summary_is_exact() -> None:
    summary = wrk_summary(WRK_OUTPUT)
    assert summary is not None
    row = wrk_row("reserve hot (coalesced)", 1000, summary)
    assert row.part == "http" and row.load == 1000
    assert row.rate == pytest.approx(7978.12, abs=0.005)  # requests / duration, as wrk's Requests/sec
    assert row.reservations == row.rate
    assert row.avg_ms == pytest.approx(124.093512)
    assert row.p50_ms == pytest.approx(117.823)
    assert row.p99_ms == pytest.approx(1372.841)  # the text says 1.37s
    assert row.p999_ms == pytest.approx(1804.117)
    assert row.max_ms == pytest.approx(1998.765)
    assert row.errors == "12 non-2xx, socket c/r/w/t 0/3/0/0"


def test_wrk_summary_without_done_line_and_without_errors() -> None:
    text_only = WRK_OUTPUT[: WRK_OUTPUT.index('{"wrk_done"')]
    assert wrk_summary(text_only) is None
    no_errors = wrk_summary(WRK_OUTPUT.replace('"read":3', '"read":0').replace('"status":12', '"status":0'))
    assert no_errors is not None
    clean = wrk_row("GET /events (cached)", 64, no_errors)
    assert clean.errors == "0" and clean.reservations is None


def test_every_wrk_script_prints_the_json_line() -> None:
    """done() lives in common.lua: each scenario script must load it, and it must print every field
    the runner reads."""
    common = (WRK_DIR / "common.lua").read_text()
    assert re.search(r"^function done\(summary, latency, requests\)", common, re.M)
    for key in ("wrk_done", "duration_us", "requests", "errors", "connect", "read", "write", "status", "timeout",
                "latency_us", "mean", "max", "p50", "p90", "p99", "p99.9"):  # fmt: skip
        assert f'"{key}":' in common, key
    scripts = sorted(p for p in WRK_DIR.glob("*.lua") if p.name != "common.lua")
    assert scripts
    for script in scripts:
        assert 'require("common")' in script.read_text(), script.name


def _shim_wrk(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """An environment whose `wrk` only records that it was called, so these tests prove the point
    also on a machine where the real wrk is installed."""
    shim_dir, called = tmp_path / "bin", tmp_path / "wrk-called"
    shim_dir.mkdir()
    (shim_dir / "wrk").write_text(f'#!/bin/sh\necho "$@" >> {called}\nexit 127\n')
    (shim_dir / "wrk").chmod(0o755)
    return {**os.environ, "PATH": f"{shim_dir}:{os.environ['PATH']}"}, called


def test_pgbench_part_runs_and_checks_invariants_without_wrk(tmp_path: Path) -> None:
    env, wrk_called = _shim_wrk(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--only", "pgbench", "--seconds", "1", "--clients", "2", "--no-write"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert not wrk_called.exists(), "the pgbench part ran wrk " + wrk_called.read_text()
    assert re.search(r"^\| reserve_hot_batch \(50/call\) \| 2 \|( [\d,.]+ \|){7} 0 \|$", done.stdout, re.M)
    assert "batch" in done.stdout and "**" in done.stdout  # the ratio line
    assert "| p99.9 ms | max ms |" in done.stdout  # the report's table
    assert "wrk" not in done.stdout.split("Machine:")[1].splitlines()[0]
    assert "INVARIANT" not in done.stdout


def test_http_part_without_wrk_says_how_to_get_it(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--only", "http", "--no-write"],
        cwd=ROOT, env={**os.environ, "PATH": str(empty)}, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode != 0
    assert "needs wrk" in done.stderr and "make bench" in done.stderr, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
