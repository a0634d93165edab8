"""The lb-compare and costs parts of the bench (bench/lbcompare.py, bench/costs.py) keep working:
end to end at a tiny scale against the real HAProxy, real gateways and PostgreSQL, with no wrk
(a `wrk` on PATH that only records being called must stay uncalled: the hot reserve is sent by
bench/flowgen.py here); each `--only` run replaces only its own section of RESULTS.md."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bench import costs, lbcompare
from dbctl import haproxy
from gateway.config import ConfigError

ROOT = Path(__file__).resolve().parent.parent

try:
    haproxy.require_binary()
    HAVE_HAPROXY = True
except ConfigError:
    HAVE_HAPROXY = False


def _no_wrk_env(tmp_path: Path) -> tuple[dict[str, str], Path]:
    shim, called = tmp_path / "bin", tmp_path / "wrk-called"
    shim.mkdir()
    (shim / "wrk").write_text(f'#!/bin/sh\necho "$@" >> {called}\nexit 127\n')
    (shim / "wrk").chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL",)}
    return {**env, "PATH": f"{shim}:{env['PATH']}"}, called


@pytest.mark.skipif(not HAVE_HAPROXY, reason="haproxy is not installed (make test installs it)")
def test_lb_compare_end_to_end_small(tmp_path: Path) -> None:
    env, called = _no_wrk_env(tmp_path)
    cmd = [sys.executable, "-m", "bench", "--only", "lb-compare", "--lb-instances", "2", "--lb-crowd-users", "40",
           "--lb-crowd-seconds", "4", "--lb-crowd-warmup", "2", "--crowd-procs", "1", "--lb-hot-connections", "20",
           "--lb-hot-seconds", "3", "--lb-hot-driver", "flowgen", "--lb-rounds", "1", "--no-write"]  # fmt: skip
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    out = done.stdout
    assert done.returncode == 0, (out + done.stderr)[-3000:]
    assert "INVARIANT" not in out
    assert not called.exists(), "lb-compare with --lb-hot-driver flowgen ran wrk"
    section = out[out.index(lbcompare.BEGIN) : out.index(lbcompare.END)]
    for load, model in (("crowd", "closed loop, 40 users, think 0-10 s"),
                        ("hot reserve", "closed loop, 20 connections, no think time (flowgen)")):  # fmt: skip
        block = section[section.index(f"### {load}") :]
        # A row per layout, each with its load model beside the figures; HAProxy's CPU only in its layout.
        figures = rf"{re.escape(model)} \| ([\d,]+) \|( [\d.,]+ \|){{4}} (.*?) \| "
        lb = re.search(rf"^\| 1 \| HAProxy \+ 2 gateways x 1 worker \| {figures}"
                       r"([\d.]+) \(([\d,]+)\) \| ([\d.]+) \(([\d,]+)\) \|", block, re.M)  # fmt: skip
        uv = re.search(rf"^\| 1 \| uvicorn x 2 workers \| {figures}- \| ([\d.]+) \(([\d,]+)\) \|", block, re.M)
        assert lb and uv, block
        for m in (lb, uv):
            assert int(m.group(1).replace(",", "")) > 0
            statuses = dict(kv.split(": ") for kv in m.group(3).split(", "))
            assert set(statuses) <= {"200", "201"}, statuses  # nothing failed at this size
        if load == "hot reserve":  # thousands of requests: both used CPU (/proc counts in 10 ms ticks)
            assert int(lb.group(5).replace(",", "")) > 0 and int(lb.group(7).replace(",", "")) > 0
        ratio = rf"Round 1, ratio HAProxy layout / uvicorn layout \({re.escape(load)}, .*throughput \*\*[\d.]+x\*\*"
        ratio += r".*p99 \*\*[\d.]+x\*\*"
        assert re.search(ratio, block), block
    assert re.search(r"HAProxy's frontend limit \(maxconn.*\): \d+ connections", section)


@pytest.mark.skipif(not HAVE_HAPROXY, reason="haproxy is not installed (make test installs it)")
def test_lb_compare_with_wrk_missing_says_how_to_run_without_it(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    done = subprocess.run([sys.executable, "-m", "bench", "--only", "lb-compare", "--no-write"], cwd=ROOT,
                          env={**os.environ, "PATH": str(empty)}, capture_output=True, text=True, timeout=60,
                          check=False)  # fmt: skip
    assert done.returncode != 0 and "needs wrk" in done.stderr and "--lb-hot-driver flowgen" in done.stderr
    assert "Traceback" not in done.stderr


def test_costs_end_to_end_small(tmp_path: Path) -> None:
    env, called = _no_wrk_env(tmp_path)
    cmd = [sys.executable, "-m", "bench", "--only", "costs", "--costs-seconds", "2", "--costs-orders", "100",
           "--costs-holds", "10", "--no-write"]  # fmt: skip
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    out = done.stdout
    assert done.returncode == 0, (out + done.stderr)[-3000:]
    assert "INVARIANT" not in out and not called.exists()
    section = out[out.index(costs.BEGIN) : out.index(costs.END)]
    # Each route answered, its gateway CPU measured, and the api function it calls timed by
    # pg_stat_statements (the cached catalogue calls none).
    for route, function in (("GET /events (catalogue, cached)", None),
                            ("GET /events/{slug} (live availability)", "get_event"),
                            ("POST /bookings/reserve, one hot type (coalesced)", "reserve_tickets_batch"),
                            ("POST /bookings/complete/{id} (instant payment)", "complete_booking"),
                            ("GET /bookings/my-bookings (first page)", "my_bookings")):  # fmt: skip
        m = re.search(rf"^\| {re.escape(route)} \| ([\d,]+) \| [\d,]+ \| ([\d,]+) \| [\d,]+ \| [\d,]+ \| (.*?) \|",
                      section, re.M)  # fmt: skip
        assert m, (route, section)
        assert int(m.group(1).replace(",", "")) > 0 and int(m.group(2).replace(",", "")) > 0
        if function:
            assert re.search(rf"\b{function} [\d,]+ x [\d.]+", m.group(3)), m.group(3)
    # WAL per order: an order writes more than a reservation alone, and a reservation in a batch of 50
    # writes less than one alone (one commit and one row lock for fifty).
    wal = {name: int(each.replace(",", "")) for name, each in
           re.findall(r"^\| (order|reservation alone|reservation in a coalesced batch)[^|]* \| [\d,]+ \| [\d,]+ "
                      r"\| ([\d,]+) \|", section, re.M)}  # fmt: skip
    assert wal["order"] > wal["reservation alone"] > wal["reservation in a coalesced batch"] > 0, wal
    # Every order adds one row to orders, tickets (1 seat) and payments.
    for table in ("public.orders", "public.tickets", "public.payments"):
        assert re.search(rf"^\| {re.escape(table)} \| 100 \| 1\.00 \| [\d,]+ \|", section, re.M), table


def test_only_parts_replace_their_own_sections() -> None:
    for module in (lbcompare, costs):
        old = f"# Bench results\n\n## pgbench\n| a |\n\n{module.BEGIN}\nold\n{module.END}\n\n## after\n"
        merged = module.splice(old, f"{module.BEGIN}\nnew\n{module.END}\n")
        assert "new" in merged and "old" not in merged and merged.endswith("## after\n")
        assert merged.startswith("# Bench results\n\n## pgbench\n| a |\n")
        appended = module.splice("# Bench results\n", f"{module.BEGIN}\nx\n{module.END}\n")
        assert appended.startswith("# Bench results\n") and appended.rstrip().endswith(module.END)
