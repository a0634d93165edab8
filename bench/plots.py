"""The charts of `make bench` (PNG files in bench/plots/, linked from bench/RESULTS.md):
latency against offered load (the knee), latency over time in the crowd and the soak, and the
waiting room's admissions over time with the time-to-admission distribution.
Each chart's title names its load model (open or closed loop, think time)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt

if TYPE_CHECKING:
    from bench.crowd import CrowdResult, RoomResult, SoakResult

PLOTS = Path(__file__).resolve().parent / "plots"
output = PLOTS  # where charts go (python -m bench --no-write: a temporary folder)


def _save(fig: Any, name: str) -> str:
    """Writes the chart; returns its path relative to bench/RESULTS.md."""
    output.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(output / name, dpi=90)
    plt.close(fig)
    return f"plots/{name}"


def overload_knee(result: Any) -> str | None:
    """Served p50/p99 and shed p99 (log scale) and served/shed rates against offered load, from
    bench.overload's sweep (LoadPoint: offered_rps, served_rps, shed_rps, served_p50_ms ...)."""
    points = sorted(result.sweep, key=lambda p: p.offered_rps or 0.0)
    if not points:
        return None
    x = [p.offered_rps or 0.0 for p in points]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    series = [("served_p50_ms", "served p50", "o-"), ("served_p99_ms", "served p99", "s-"),
              ("shed_p99_ms", "shed (503) p99", "^--"), ("all_p99_ms", "all answers p99", "x:")]  # fmt: skip
    for attr, label, style in series:
        ys = [getattr(p, attr, None) for p in points]
        if any(y is not None for y in ys):
            ax.plot([a for a, y in zip(x, ys, strict=True) if y is not None], [y for y in ys if y is not None],
                    style, label=label)  # fmt: skip
    ax.axhline(500, color="red", lw=0.8, ls=":", label="500 ms target")
    ax.set_yscale("log")
    ax.set_xlabel("offered load, requests/s (users / (mean think + latency))")
    ax.set_ylabel("latency, ms (log)")
    rates = ax.twinx()
    rates.plot(x, [p.served_rps for p in points], "g-", alpha=0.4, lw=3, label="served req/s")
    rates.plot(x, [p.shed_rps for p in points], "m-", alpha=0.4, lw=3, label="shed req/s")
    rates.set_ylabel("requests/s")
    lines = ax.get_legend_handles_labels()
    more = rates.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], fontsize=8, loc="upper left")
    ax.set_title("Hot reserve against offered load (closed loop per user, think time varied)", fontsize=10)
    return _save(fig, "overload-knee.png")


def crowd_knee(points: list[CrowdResult]) -> str | None:
    """The crowd's purchase flow at several sizes: answered p50/p99 (503 apart) and the rates
    against the offered load; where p99 leaves the floor and 503s appear is the knee."""
    points = sorted(points, key=lambda c: c.offered_rps)
    if len(points) < 2:
        return None
    x = [c.offered_rps for c in points]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for idx, label, style in ((1, "served p50", "o-"), (2, "served p99", "s-")):
        ys = [c.served[idx] for c in points]
        ax.plot([a for a, y in zip(x, ys, strict=True) if y is not None], [y for y in ys if y is not None], style,
                label=label)  # fmt: skip
    ys = [c.shed[2] for c in points]
    if any(y is not None for y in ys):
        ax.plot([a for a, y in zip(x, ys, strict=True) if y is not None], [y for y in ys if y is not None], "^--",
                label="shed (503) p99")  # fmt: skip
    ax.axhline(500, color="red", lw=0.8, ls=":", label="500 ms target")
    ax.set_yscale("log")
    ax.set_xlabel("offered load, requests/s (users / mean think 5 s)")
    ax.set_ylabel("latency, ms (log)")
    rates = ax.twinx()
    rates.plot(x, [c.served[0] / c.seconds for c in points], "g-", alpha=0.4, lw=3, label="served req/s")
    rates.plot(x, [c.shed[0] / c.seconds for c in points], "m-", alpha=0.4, lw=3, label="shed req/s")
    rates.set_ylabel("requests/s")
    lines, more = ax.get_legend_handles_labels(), rates.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], fontsize=8, loc="upper left")
    ax.set_title("Purchase flow against offered load (closed loop per user, think 0-10 s, users varied)",
                 fontsize=10)  # fmt: skip
    return _save(fig, "crowd-knee.png")


def crowd_timeline(crowd: CrowdResult, name: str) -> str | None:
    """p50 and p99 per route in 5-second bins over the run, and the request rate."""
    if not crowd.timeline:
        return None
    fig, (lat, rate) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    routes = [r.route for r in crowd.routes]
    for route in routes:
        pts = [(t, row[route]) for t, row in crowd.timeline if route in row]
        lat.plot([t for t, _ in pts], [v[1] for _, v in pts], "-", label=f"{route} p99")
    lat.axhline(500, color="red", lw=0.8, ls=":", label="500 ms target")
    lat.set_yscale("log")
    lat.set_ylabel("p99 latency, ms (log)")
    lat.legend(fontsize=7)
    step = crowd.timeline[1][0] - crowd.timeline[0][0] if len(crowd.timeline) > 1 else 5.0
    rate.plot([t for t, _ in crowd.timeline], [sum(v[2] for v in row.values()) / step for _, row in crowd.timeline])
    rate.set_ylabel("answers/s")
    rate.set_xlabel("seconds since start")
    lat.set_title(f"{crowd.name}: {crowd.users:,} users, closed loop per user with think time", fontsize=10)
    return _save(fig, name)


def room_admissions(room: RoomResult) -> str | None:
    """Admissions over time (first "admitted" answer per fan, since the opening) against the
    configured rate, and the distribution of each fan's wait from joining to admission."""
    if not room.admission_times:
        return None
    fig, (adm, hist) = plt.subplots(1, 2, figsize=(10, 4))
    times = sorted(room.admission_times)
    adm.plot(times, range(1, len(times) + 1), label="fans told admitted (by poll)")
    end = times[-1]
    adm.plot([0, end], [0, end * room.rate_per_minute / 60], "r:", label=f"rate {room.rate_per_minute:,}/min")
    adm.set_xlabel("seconds since the sale opened")
    adm.set_ylabel("admitted fans")
    adm.legend(fontsize=8)
    adm.set_title("Admissions over time", fontsize=10)
    hist.hist(room.wait_seconds, bins=40)
    hist.set_xlabel("seconds from joining to admission")
    hist.set_ylabel("fans")
    hist.set_title(f"Time to admission ({room.users:,} fans, polls every 2-5 s)", fontsize=10)
    return _save(fig, "waiting-room.png")


def soak_rss(soak: SoakResult) -> str | None:
    if len(soak.samples) < 2:
        return None
    fig, ax = plt.subplots(figsize=(8, 4))
    pids = sorted({pid for _, rss, _ in soak.samples for pid in rss})
    for n, pid in enumerate(pids, 1):
        pts = [(t / 60, rss[pid] / 1024) for t, rss, _ in soak.samples if pid in rss]
        ax.plot([a for a, _ in pts], [b for _, b in pts], "o-", label=f"worker {n} (pid {pid})")
    ax.set_xlabel("minutes")
    ax.set_ylabel("RSS, MiB")
    ax.set_ylim(bottom=0)
    fives = soak.samples[-1][2]
    ax.legend(fontsize=8)
    ax.set_title(f"Soak: gateway RSS per worker ({soak.users:,} users, think 0-10 s; {fives} 5xx)", fontsize=10)
    return _save(fig, "soak-rss.png")


def delivery_queue(runs: list[Any]) -> str | None:
    """bench/delivery.py: per run (quiet, onsale), the job queue depth (todo + doing, by queue)
    and the mails deferred (completions) and accepted by the SMTP sink, over time."""
    runs = [r for r in runs if r.samples]
    if not runs:
        return None
    fig, axes = plt.subplots(2, len(runs), figsize=(6 * len(runs), 6), sharex="col", squeeze=False)
    for col, run in enumerate(runs):
        done = [o.completed for o in run.orders if o.order_id]
        zero = min(done) if done else run.samples[0].t
        t = [s.t - zero for s in run.samples]
        depth, totals = axes[0][col], axes[1][col]
        for queue in sorted({q for s in run.samples for q in s.depth} | {"mail"}):
            depth.plot(t, [s.depth.get(queue, 0) for s in run.samples], "-", label=f"{queue} (todo + doing)")
        depth.plot(t, [s.doing.get("mail", 0) for s in run.samples], ":", label="mail (doing)")
        depth.set_ylabel("jobs")
        depth.legend(fontsize=7)
        title = f"{run.name}: {len(done):,} orders at {run.rate:,.0f}/s"
        depth.set_title(title + (f", onsale load {run.load_rps:,.0f} req/s" if run.load else ", no other load"),
                        fontsize=10)  # fmt: skip
        totals.plot(t, [s.mail_jobs for s in run.samples], "-", label="completed (mail jobs deferred)")
        totals.plot(t, [s.accepted for s in run.samples], "-", label="mails accepted by the sink")
        totals.set_xlabel("seconds since the first completion (sampled every 0.5 s)")
        totals.set_ylabel("orders")
        totals.legend(fontsize=7)
    return _save(fig, "delivery-queue.png")
