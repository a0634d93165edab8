"""The crowd part of the bench (bench/crowd.py, bench/flowgen.py, bench/plots.py) keeps working:
end to end at a tiny scale against a real gateway and PostgreSQL (no wrk needed), the
waiting-room order check catches an out-of-order admission, a `--only crowd` run replaces only
its own section of RESULTS.md, and the overload result (bench/overload.py's interface) renders."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

from bench import plots
from bench.__main__ import CROWD_BEGIN, CROWD_END, _overload_section, _part_begin, _part_end, splice_crowd
from bench.crowd import order_violations

ROOT = Path(__file__).resolve().parent.parent


def test_crowd_part_end_to_end_small(tmp_path: Path) -> None:
    # A `wrk` that only records that it was called: this part must not need it (the overload
    # part, which does, is not asked for), also where the real wrk is installed.
    shim, called = tmp_path / "bin", tmp_path / "wrk-called"
    shim.mkdir()
    (shim / "wrk").write_text(f'#!/bin/sh\necho "$@" >> {called}\nexit 127\n')
    (shim / "wrk").chmod(0o755)
    charts = tmp_path / "charts"
    cmd = [sys.executable, "-m", "bench", "--only", "crowd", "--crowd-parts", "crowd,room,cost",
           "--crowd-users", "60", "--crowd-seconds", "6", "--crowd-procs", "1", "--room-users", "40",
           "--room-admit-seconds", "6", "--cost-seconds", "2", "--no-write", "--plots-dir", str(charts)]  # fmt: skip
    env = {**os.environ, "PATH": f"{shim}:{os.environ['PATH']}"}
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    out = done.stdout
    assert done.returncode == 0, (out + done.stderr)[-3000:]
    assert "INVARIANT" not in out
    assert not called.exists(), "the crowd part ran wrk"
    # Per-route rows of the purchase flow, answered (200/201), with latencies.
    for route in ("GET /events", "GET /events/{slug}", "POST /bookings/reserve", "POST /events/{id}/queue (join)",
                  "GET /events/{id}/queue (poll)", "POST /bookings/reserve (X-Admission-Token)"):  # fmt: skip
        assert re.search(rf"^\| {re.escape(route)} \| [\d,]+ \| [\d,]+ \| [\d.,]+ \|", out, re.M), route
    # The waiting room: everyone joined and was admitted in the recorded order; 80% of them got a
    # seat, the rest were told sold out, and not one seat more was sold.
    joined = r"Joined 40 \(40 before the opening; .*\); told admitted 40; reserved 32 \(201\), sold out 8 \(409\)"
    assert re.search(joined, out), out
    assert "admissions follow the recorded order exactly: **met** (0 answers out of order, 0 admitted early" in out
    assert "32 sold of 32 **met**" in out
    assert re.search(r"\| waiting-room poll .* \| [\d,]+ \| [\d,]+ \| [\d.]+ \| [\d,]+ \| [\d,]+ \| 200: ", out), out
    assert "gateway cores" in out and "Generator send lag" in out
    assert {p.name for p in charts.iterdir()} == {"crowd.png", "waiting-room.png"}


def _answer(user: int, sent: float, received: float, status: str, position: int, ahead: int) -> tuple[object, ...]:
    return ("answer", user, sent, received, status, position, ahead)


def test_order_check_finds_an_admission_out_of_order() -> None:
    in_order = [
        _answer(1, 0.0, 0.1, "waiting", 3, 2),  # serving 0
        _answer(2, 1.0, 1.1, "admitted", 1, 0),
        _answer(3, 2.0, 2.1, "waiting", 3, 1),  # serving 1
        _answer(1, 3.0, 3.1, "admitted", 3, 0),
    ]
    assert order_violations(in_order) == 0
    # Fan 4 (position 5) told admitted at 1.1 s, but a poll sent later says serving is 1: out of order.
    assert order_violations([*in_order, _answer(4, 1.0, 1.1, "admitted", 5, 0)]) == 1
    # A waiting answer that shows the serving position going back to 0 after two answers said it
    # had reached 1 (fan 2 admitted at 1.1 s, serving 1 at 2.1 s): both are contradicted.
    assert order_violations([*in_order, _answer(5, 2.5, 2.6, "waiting", 4, 3)]) == 2


def test_only_crowd_replaces_its_own_blocks() -> None:
    def crowd_part(*blocks: tuple[str, str]) -> str:
        inner = "\n".join(f"{_part_begin(p)}\n{text}\n{_part_end(p)}" for p, text in blocks)
        return f"{CROWD_BEGIN}\nintro\n{inner}\n{CROWD_END}"

    before = crowd_part(("crowd", "old crowd"), ("room", "old room"))
    old = f"# Bench results\n\n## pgbench\n| a |\n\n{before}\n## after\n"
    merged = splice_crowd(old, crowd_part(("room", "new room"), ("soak", "new soak")))
    assert "## pgbench\n| a |" in merged and merged.endswith("## after\n")
    assert "old crowd" in merged and "new room" in merged and "new soak" in merged and "old room" not in merged
    assert merged.index("old crowd") < merged.index("new room") < merged.index("new soak")  # CROWD_PARTS order
    appended = splice_crowd("# Bench results\n\n## pgbench\n", crowd_part(("crowd", "c")))
    assert appended.startswith("# Bench results\n\n## pgbench\n") and appended.rstrip().endswith(CROWD_END)


def test_overload_result_renders_and_plots(tmp_path: Path) -> None:
    """The interface of bench/overload.py (OverloadResult, LoadPoint) as the design fixes it."""

    def point(label: str, offered: float, served: float, shed: float, p99: float) -> SimpleNamespace:
        return SimpleNamespace(label=label, users=10000, offered_rps=offered, served_rps=served, shed_rps=shed,
                               served_p50_ms=p99 / 5, served_p99_ms=p99, shed_p50_ms=2.0, shed_p99_ms=9.0,
                               all_p99_ms=p99, socket_errors=0)  # fmt: skip

    sweep = [point("think 10 s", 1000, 1000, 0, 40), point("think 2 s", 5000, 3000, 2000, 300),
             point("think 1 s", 9000, 3100, 5900, 450)]  # fmt: skip
    result = SimpleNamespace(hot_1000_rps=3500.0, overload=sweep[-1], sweep=sweep, model="closed loop per user")
    text = "\n".join(_overload_section(result, "plots/overload-knee.png"))
    assert "| **think 1 s** (the overload point) | 10,000 | 9,000 | 3,100 | 5,900 |" in text and "3,500 req/s" in text
    assert text.count("think 1 s") == 1  # the overload point is also in the sweep: shown once
    plots.output = tmp_path
    try:
        assert plots.overload_knee(result) == "plots/overload-knee.png"
    finally:
        plots.output = plots.PLOTS
    assert (tmp_path / "overload-knee.png").stat().st_size > 1000
