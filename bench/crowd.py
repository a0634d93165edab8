"""Issue 10's crowd benches, driven by bench/flowgen.py (one keep-alive connection per user):

- `crowd`: N users (10,000) each running the purchase flow (GET /events, GET /events/{slug},
  POST /bookings/reserve on one of the event's 10 types, POST /bookings/complete) with a think
  time uniform 0..THINK_MAX before every click. Per-route p50/p99/max, socket errors, 5xx.
- `waiting room`: an event with queue_enabled, its sale opening ~15 s after the start; N users
  join within 10 s before the opening, poll every 2-5 s (the server's poll_after_seconds clipped
  to 2..5 when it sends one), reserve once admitted with X-Admission-Token. Join/poll/reserve
  latency, admissions checked against the recorded order (from the answers and
  api.waiting_room_audit), zero oversell, time to admission.
- `soak`: the crowd flow at about half of the measured capacity for a long time; gateway RSS
  per worker, 5xx and api.check_invariants() each interval.
- `cost`: gateway worker CPU (utime + stime) per waiting-room poll and per hot reserve, and
  what 1,000,000 fans polling every 20 s would need.

Every run is bounded (its own deadline) and followed by api.check_invariants().
"""

from __future__ import annotations

import bisect
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jwt
import psycopg

from bench.flowgen import FlowRun, RouteSummary, Stats, User, build_request, cpu_seconds, pct

if TYPE_CHECKING:
    from bench.__main__ import Bench

R_LIST, R_EVENT, R_RESERVE, R_COMPLETE = "GET /events", "GET /events/{slug}", "POST /bookings/reserve", \
    "POST /bookings/complete/{id}"  # fmt: skip
R_JOIN, R_POLL, R_ROOM_RESERVE = "POST /events/{id}/queue (join)", "GET /events/{id}/queue (poll)", \
    "POST /bookings/reserve (X-Admission-Token)"  # fmt: skip
ROOM_EVENT = "40000000-0000-4000-8000-000000010000"
ROOM_TYPE = "60000000-0000-4000-8000-000000000001"
COST_EVENT = "40000000-0000-4000-8000-000000010001"
COST_TYPE = "60000000-0000-4000-8000-000000000002"
HOT = "10000000-0000-4000-8000-000000000001"


def user_id(n: int) -> str:
    return f"00000000-0000-4000-8000-{n:012d}"


def make_tokens(secret: str, first: int, count: int) -> list[tuple[int, str]]:
    """(user number, bearer token) for users first..first+count-1 (the bench's seeded users)."""
    now = int(time.time())
    out = []
    for n in range(first, first + count):
        claims = {"sub": user_id(n), "role": "user", "sid": f"00000000-0000-4000-9000-{n:012d}", "iat": now,
                  "exp": now + 7200, "iss": "booking-gateway"}  # fmt: skip
        out.append((n, jwt.encode(claims, secret, algorithm="HS256")))
    return out


def ensure_users(bench: Bench, count: int) -> None:
    """The seed has 2000 users; the crowd needs one account per simulated user."""
    with psycopg.connect(bench.url(), autocommit=True) as conn:
        conn.execute(
            "INSERT INTO users (id, email, password_hash, full_name) "
            "SELECT ('00000000-0000-4000-8000-' || lpad(n::text, 12, '0'))::uuid, 'bench' || n || '@example.com', "
            "       (SELECT password_hash FROM users LIMIT 1), 'Bench ' || n "
            "  FROM generate_series(1, %s) n ON CONFLICT DO NOTHING",
            (count,),
        )


def host_port(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


async def _send(user: User, route: str, raw: bytes) -> tuple[int, bytes]:
    """A request whose socket error is counted and survived (the next request reconnects)."""
    from bench.flowgen import SocketError

    try:
        status, _, body = await user.request(route, raw)
    except SocketError:
        return 0, b""
    return status, body


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}


# ---------------------------------------------------------------------- the purchase flow


async def crowd_flow(user: User, p: dict[str, Any]) -> None:
    """Browse, look at one event, reserve one seat of one of its 10 types, pay. A think time
    uniform 0..think_max before every click; arrivals spread over `ramp` seconds."""
    rng, think_max = user.rng, p["think_max"]
    headers = _auth(user.token)
    await user.think(rng.uniform(0, p["ramp"]))
    while not user.stopping:
        k = rng.randint(1, 100)
        await user.think(rng.uniform(0, think_max))
        if user.stopping:
            return
        await _send(user, R_LIST, p["list"])
        await user.think(rng.uniform(0, think_max))
        if user.stopping:
            return
        await _send(user, R_EVENT, p["events"][k - 1])
        await user.think(rng.uniform(0, think_max))
        if user.stopping:
            return
        ticket_type = f"20000000-0000-4000-8000-{(k - 1) * 10 + rng.randint(1, 10):012d}"
        body = json.dumps({"ticket_type_id": ticket_type, "quantity": 1}).encode()
        status, answer = await _send(user, R_RESERVE, build_request("POST", "/bookings/reserve", headers, body))
        if status != 201:
            continue
        await user.think(rng.uniform(0, think_max))
        if user.stopping:
            return
        reservation = json.loads(answer)["id"]
        await _send(user, R_COMPLETE, build_request("POST", f"/bookings/complete/{reservation}", headers,
                                                    b'{"payment_method": "CARD"}'))  # fmt: skip


def crowd_params(think_max: float, ramp: float) -> dict[str, Any]:
    return {
        "think_max": think_max,
        "ramp": ramp,
        "list": build_request("GET", "/events"),
        "events": [build_request("GET", f"/events/bench-event-{k}") for k in range(1, 101)],
    }


@dataclass
class CrowdResult:
    name: str
    model: str
    users: int
    seconds: float
    offered_rps: float  # the plan: users / (mean think + latency), latency ~0
    achieved_rps: float
    routes: list[RouteSummary]
    total: RouteSummary
    socket_errors: dict[str, int]
    lag_p50_ms: float | None
    lag_p99_ms: float | None
    lag_max_ms: float | None
    procs: int
    cpu_cores: dict[str, float] = field(default_factory=dict)  # mean cores used over the run, per party
    served: tuple[int, float | None, float | None] = (0, None, None)  # answers other than 503: n, p50, p99
    shed: tuple[int, float | None, float | None] = (0, None, None)  # 503 busy: n, p50, p99
    timeline: list[tuple[float, dict[str, tuple[float | None, float | None, int]]]] = field(default_factory=list)

    @property
    def socket_error_count(self) -> int:
        return sum(self.socket_errors.values())


def summarize(name: str, model: str, users: int, stats: Stats, start: float, end: float, offered: float,
              procs: int, routes: list[str]) -> CrowdResult:  # fmt: skip
    lags = sorted(stats.lag_ms)
    total = stats.summary(None, start, end)
    window = [i for i in range(len(stats.sent)) if start <= stats.sent[i] < end and stats.status[i]]
    served = sorted(stats.latency_ms[i] for i in window if stats.status[i] != 503)
    shed = sorted(stats.latency_ms[i] for i in window if stats.status[i] == 503)
    return CrowdResult(
        name, model, users, end - start, offered, total.requests / (end - start),
        [stats.summary(r, start, end) for r in routes if r in stats.routes], total, dict(stats.socket_errors),
        pct(lags, 50), pct(lags, 99), lags[-1] if lags else None, procs, timeline=timeline(stats, start, end),
        served=(len(served), pct(served, 50), pct(served, 99)), shed=(len(shed), pct(shed, 50), pct(shed, 99)),
    )  # fmt: skip


def timeline(stats: Stats, start: float, end: float, step: float = 5.0) -> list[tuple[float, dict[str, Any]]]:
    """Per `step` seconds and route: (p50, p99, requests), for the plots."""
    bins: dict[int, dict[int, list[float]]] = {}
    for i in range(len(stats.sent)):
        t = stats.sent[i]
        if start <= t < end and stats.status[i]:
            bins.setdefault(int((t - start) // step), {}).setdefault(stats.route[i], []).append(stats.latency_ms[i])
    out = []
    for b in sorted(bins):
        row = {}
        for rid, values in bins[b].items():
            values.sort()
            row[stats.routes[rid]] = (pct(values, 50), pct(values, 99), len(values))
        out.append((b * step, row))
    return out


class CpuMeter:
    """Mean cores used by the gateway's workers and by PostgreSQL between start() and stop()."""

    def __init__(self, bench: Bench, gateway_pid: int) -> None:
        self.bench, self.gateway_pid = bench, gateway_pid

    def start(self) -> CpuMeter:
        self.t0 = time.monotonic()
        self.workers = gateway_workers(self.gateway_pid)
        self.g0, self.d0 = _cpu(self.workers), _cpu(postgres_pids(self.bench))
        return self

    def stop(self, generator_cpu_s: float, generator_seconds: float) -> dict[str, float]:
        dt = time.monotonic() - self.t0
        db = _cpu(postgres_pids(self.bench)) - self.d0
        return {"gateway": (_cpu(self.workers) - self.g0) / dt, "postgres": db / dt,
                "generator": generator_cpu_s / generator_seconds}  # fmt: skip


def run_crowd(bench: Bench, url: str, gateway_pid: int, users: int, seconds: int, think_max: float = 10.0,
              ramp: float = 10.0, procs: int = 2, warmup: float = 0.0) -> CrowdResult:  # fmt: skip
    """10,000 users through the purchase flow. By default the arrivals (`ramp` seconds) are
    measured too: a crowd arrives in a burst. `warmup`: seconds run but not counted."""
    ensure_users(bench, users)
    tokens = make_tokens(bench.secret, 1, users)
    host, port = host_port(url)
    start = time.time() + 1.0 + warmup
    end = start + seconds
    launched = time.time()
    run = FlowRun(host, port, crowd_flow, tokens, crowd_params(think_max, ramp), end, procs).start()
    meter = CpuMeter(bench, gateway_pid).start()
    stats = run.wait()
    cores = meter.stop(stats.cpu_s, time.time() - launched)
    bench.check_invariants(f"crowd ({users} users)")
    model = (f"closed loop per user: {users:,} users, one keep-alive connection each, arriving over {ramp:.0f} s, "
             f"think uniform 0-{think_max:.0f} s (mean {think_max / 2:.1f} s) before every click, {seconds} s "
             f"{'counted after ' + format(warmup, '.0f') + ' s of warm-up' if warmup else 'from the first arrival'}, "
             f"Python generator in {procs} processes")  # fmt: skip
    offered = users / (think_max / 2)
    result = summarize(
        "crowd", model, users, stats, start, end, offered, procs, [R_LIST, R_EVENT, R_RESERVE, R_COMPLETE]
    )
    result.cpu_cores = cores
    return result


def run_sweep(bench: Bench, url: str, gateway_pid: int, users: list[int], seconds: int, procs: int = 2,
              think_max: float = 10.0) -> list[CrowdResult]:  # fmt: skip
    """The crowd at several sizes (the same flow and think time): latency against offered load."""
    return [run_crowd(bench, url, gateway_pid, n, seconds, think_max, procs=procs, warmup=10.0) for n in users]


# ---------------------------------------------------------------------- the waiting room


async def room_flow(user: User, p: dict[str, Any]) -> None:
    rng = user.rng
    headers = _auth(user.token)
    path = f"/events/{p['event_id']}/queue"
    join, poll = build_request("POST", path, headers), build_request("GET", path, headers)
    await user.sleep_until_wall(p["join_from"] + rng.random() * p["join_window"])
    notes = user.run.stats.notes
    status, body, sent = 0, b"", time.time()
    while not user.stopping:
        sent = time.time()
        status, body = await _send(user, R_JOIN, join)
        if status == 200:
            break
        await user.think(1.0)  # 503 busy (Retry-After: 1) or a socket error: try again
    notes.append(("join", user.index, sent))
    place: dict[str, Any] = {}
    while not user.stopping:
        if status == 200:
            place = json.loads(body)
            notes.append(("answer", user.index, sent, time.time(), place["status"], place["position"], place["ahead"]))
            if place["status"] == "admitted":
                break
        hint = place.get("poll_after_seconds") if status == 200 else None
        await user.think(min(5.0, max(2.0, float(hint))) if hint else rng.uniform(2.0, 5.0))
        if user.stopping:
            return
        sent = time.time()
        status, body = await _send(user, R_POLL, poll)
    if place.get("status") != "admitted":
        return
    h = {**headers, "X-Admission-Token": place["admission_token"]}
    raw = build_request("POST", "/bookings/reserve", h, json.dumps({"ticket_type_id": p["ticket_type"],
                                                                    "quantity": 1}).encode())  # fmt: skip
    for _ in range(5):
        status, _ = await _send(user, R_ROOM_RESERVE, raw)
        if status not in (0, 503):
            break
        await user.think(1.0)
    user.run.stats.notes.append(("reserve", user.index, status))


@dataclass
class RoomResult:
    model: str
    users: int
    rate_per_minute: int
    stock: int
    routes: list[RouteSummary]
    socket_errors: dict[str, int]
    lag_p99_ms: float | None
    lag_max_ms: float | None
    joined: int
    admitted_seen: int  # users told "admitted"
    reserved: int  # 201
    sold_out: int  # 409 sold_out
    other_reserve: dict[int, int]
    order_violations: int  # answers that contradict a single, non-decreasing serving position
    early_admissions: int  # told admitted before the rate allowed it
    position_mismatches: int  # answers' positions vs the database's recorded positions
    audit_rows: int  # api.waiting_room_audit
    positions_ok: bool  # positions are exactly 1..joined
    seats_sold: int  # reserved quantity in the database (<= stock)
    opened_at: float
    admission_times: list[float]  # seconds from the opening to the first "admitted" answer, by position
    wait_seconds: list[float]  # seconds from joining to the first "admitted" answer
    seconds: float
    join_span_s: float = 0.0  # from the first to the last successful join (sent times)
    joined_before_opening: int = 0
    timeline: list[tuple[float, dict[str, Any]]] = field(default_factory=list)


def create_room(bench: Bench, event_id: str, ticket_type: str, rate: int, opens: float | None, stock: int,
                slug: str) -> None:  # fmt: skip
    """An event with a waiting room (queue_enabled, rate) whose sale opens at `opens` (epoch; None:
    open now), one ticket type of `stock` seats. Inserted as the owner, as bench/seed.sql does."""
    with psycopg.connect(bench.url(), autocommit=True) as conn:
        conn.execute(
            "INSERT INTO events (id, slug, name, location, start_time, end_time, status, queue_enabled, "
            "admission_rate_per_minute) VALUES (%s, %s, 'Bench Onsale', 'Hanoi', now() + interval '90 days', "
            "now() + interval '90 days 3 hours', 'PUBLISHED', true, %s)",
            (event_id, slug, rate),
        )
        conn.execute(
            "INSERT INTO ticket_types (id, event_id, name, price, initial_quantity, available_quantity, "
            "start_sale_time) VALUES (%s, %s, 'Onsale', 500000, %s, %s, to_timestamp(%s))",
            (ticket_type, event_id, stock, stock, opens),
        )


def run_waiting_room(bench: Bench, url: str, users: int, admit_seconds: int = 100, procs: int = 2,
                     stock: int | None = None) -> RoomResult:  # fmt: skip
    ensure_users(bench, users)
    tokens = make_tokens(bench.secret, 1, users)
    rate = max(1, math.ceil(users * 60 / admit_seconds))
    stock = stock if stock is not None else users * 8 // 10  # the last fifth find it sold out
    start = time.time()
    join_from, join_window = start + 4.0, 10.0
    opens = join_from + join_window + 1.0
    create_room(bench, ROOM_EVENT, ROOM_TYPE, rate, opens, stock, "bench-onsale")
    end = opens + users * 60 / rate + 25.0
    params = {"event_id": ROOM_EVENT, "ticket_type": ROOM_TYPE, "join_from": join_from, "join_window": join_window}
    host, port = host_port(url)
    stats = FlowRun(host, port, room_flow, tokens, params, end, procs).start().wait()
    bench.check_invariants(f"waiting room ({users} users)")
    model = (f"closed loop per user: {users:,} users, one keep-alive connection each, join uniformly within "
             f"{join_window:.0f} s before the sale opens, poll every 2-5 s (uniform, or the server's "
             f"poll_after_seconds clipped to 2-5), reserve once admitted; admission {rate:,}/min "
             f"({users:,} in {admit_seconds} s), {stock:,} seats; Python generator in {procs} processes")  # fmt: skip
    return check_room(bench, stats, users, rate, stock, model, start, end)


def order_violations(answers: list[tuple[Any, ...]]) -> int:
    """Answers that contradict one serving position that never decreases. An answer is
    ("answer", user, sent, received, status, position, ahead): "admitted" says serving >= position;
    "waiting" says serving = position - ahead - 1 exactly. No answer sent after another was
    received may show a lower serving position than that one implied: if fan A was told admitted
    and a later poll says the serving position is below A's, A was admitted out of order."""
    exact = sorted((a[2], a[5] - a[6] - 1) for a in answers if a[4] == "waiting" and a[5] is not None)
    suffix_min = [2**31] * (len(exact) + 1)
    for i in range(len(exact) - 1, -1, -1):
        suffix_min[i] = min(exact[i][1], suffix_min[i + 1])
    sent_times = [e[0] for e in exact]
    violations = 0
    for a in answers:
        if a[5] is None:
            continue
        bound = a[5] if a[4] == "admitted" else a[5] - a[6] - 1
        if suffix_min[bisect.bisect_left(sent_times, a[3])] < bound:
            violations += 1
    return violations


def check_room(bench: Bench, stats: Stats, users: int, rate: int, stock: int, model: str, start: float,
               end: float) -> RoomResult:  # fmt: skip
    with psycopg.connect(bench.url()) as conn:
        row = conn.execute("SELECT extract(epoch FROM opened_at)::float8 FROM waiting_rooms WHERE event_id = %s",
                           (ROOM_EVENT,)).fetchone()  # fmt: skip
        opened_at = float(row[0]) if row and row[0] is not None else float("nan")
        entries = "SELECT user_id::text, position FROM waiting_room_entries WHERE event_id = %s"
        recorded: dict[str, int] = dict(conn.execute(entries, (ROOM_EVENT,)).fetchall())
        audit = conn.execute("SELECT count(*) FROM api.waiting_room_audit(%s)", (ROOM_EVENT,)).fetchone()
        sold = conn.execute("SELECT initial_quantity - available_quantity FROM ticket_types WHERE id = %s",
                            (ROOM_TYPE,)).fetchone()  # fmt: skip
    joins = {n[1]: n for n in stats.notes if n[0] == "join"}
    answers = [n for n in stats.notes if n[0] == "answer"]
    reserves = [n[2] for n in stats.notes if n[0] == "reserve"]
    position: dict[int, int] = {}
    mismatches = 0
    for a in answers:
        if a[5] is not None:
            position.setdefault(a[1], a[5])
            if position[a[1]] != a[5] or recorded.get(user_id(a[1])) != a[5]:
                mismatches += 1
    violations = order_violations(answers)
    first_admitted: dict[int, float] = {}
    for a in sorted(answers, key=lambda x: x[3]):
        if a[4] == "admitted":
            first_admitted.setdefault(a[1], a[3])
    # Told admitted before position p was due (opened_at + p * 60 / rate; 50 ms for clocks and
    # the transaction's now() taken before the answer is sent)?
    early = sum(1 for u, t in first_admitted.items() if t < opened_at + position[u] * 60 / rate - 0.05)
    by_position = sorted((position[u], t - opened_at) for u, t in first_admitted.items())
    waits = sorted(t - joins[u][2] for u, t in first_admitted.items() if u in joins)
    positions = sorted(recorded.values())
    result = RoomResult(
        model, users, rate, stock,
        [stats.summary(r, start, end) for r in (R_JOIN, R_POLL, R_ROOM_RESERVE) if r in stats.routes],
        dict(stats.socket_errors), pct(sorted(stats.lag_ms), 99), max(stats.lag_ms, default=None), len(recorded),
        len(first_admitted), reserves.count(201), reserves.count(409),
        {s: reserves.count(s) for s in set(reserves) - {201, 409}}, violations, early, mismatches,
        int(audit[0]) if audit else -1, positions == list(range(1, len(positions) + 1)),
        int(sold[0]) if sold else -1, opened_at, [t for _, t in by_position], waits, end - start,
        timeline=timeline(stats, start, end),
    )  # fmt: skip
    join_times = sorted(j[2] for j in joins.values())
    if join_times:
        result.join_span_s = join_times[-1] - join_times[0]
        result.joined_before_opening = sum(1 for t in join_times if t < opened_at)
    return result


# ---------------------------------------------------------------------- soak


def gateway_workers(gateway_pid: int) -> list[int]:
    """The uvicorn worker processes: children of the gateway's main process."""
    try:
        children = Path(f"/proc/{gateway_pid}/task/{gateway_pid}/children").read_text().split()
    except OSError:
        return []
    workers = []
    for c in children:
        try:
            cmd = Path(f"/proc/{c}/cmdline").read_bytes()
        except OSError:
            continue
        if b"resource_tracker" not in cmd:
            workers.append(int(c))
    return workers or [gateway_pid]


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


@dataclass
class SoakResult:
    model: str
    seconds: int
    capacity_rps: float
    users: int
    crowd: CrowdResult
    samples: list[tuple[float, dict[int, int], int]]  # (seconds since start, {worker pid: RSS KiB}, 5xx so far)
    invariant_checks: int
    rss_growth: dict[int, float]  # per worker: last / first-minute sample - 1


def measure_capacity(bench: Bench, url: str, procs: int, seconds: int = 10) -> float:
    """The purchase flow with no think time (closed loop, 400 users): requests/s the gateway
    serves, generator included (it shares the cores)."""
    tokens = make_tokens(bench.secret, 1, 400)
    host, port = host_port(url)
    start = time.time() + 3.0  # 3 s of warm-up, not counted
    end = start + seconds
    stats = FlowRun(host, port, crowd_flow, tokens, crowd_params(0.0, 0.0), end, procs).start().wait()
    bench.check_invariants("capacity probe")
    return stats.summary(None, start, end).requests / seconds


def run_soak(bench: Bench, url: str, gateway_pid: int, seconds: int, procs: int = 2, interval: float = 60.0,
             think_max: float = 10.0) -> SoakResult:  # fmt: skip
    capacity = measure_capacity(bench, url, procs)
    users = max(100, int(capacity / 2 * (think_max / 2)))
    ensure_users(bench, users)
    tokens = make_tokens(bench.secret, 1, users)
    host, port = host_port(url)
    start = time.time() + 1.0
    end = start + seconds
    launched = time.time()
    run = FlowRun(host, port, crowd_flow, tokens, crowd_params(think_max, 10.0), end, procs).start()
    meter = CpuMeter(bench, gateway_pid).start()
    samples: list[tuple[float, dict[int, int], int]] = []
    checks = 0
    next_at = time.time()
    while run.alive() and time.time() < end + 5:
        if time.time() >= next_at:
            samples.append((max(0.0, time.time() - start), {w: rss_kib(w) for w in gateway_workers(gateway_pid)}, -1))
            bench.check_invariants(f"soak at {time.time() - start:.0f} s")
            checks += 1
            next_at += interval
        time.sleep(min(1.0, max(0.05, next_at - time.time())))
    stats = run.wait()
    cores = meter.stop(stats.cpu_s, time.time() - launched)
    samples.append((time.time() - start, {w: rss_kib(w) for w in gateway_workers(gateway_pid)}, -1))
    bench.check_invariants("soak (end)")
    checks += 1
    # 5xx up to each sample, from the requests' send times.
    fives = sorted(stats.sent[i] - start for i in range(len(stats.sent)) if stats.status[i] >= 500)
    samples = [(t, rss, bisect.bisect_right(fives, t)) for t, rss, _ in samples]
    model = (f"closed loop per user: {users:,} users (half of the measured capacity of {capacity:,.0f} req/s "
             f"times the mean think time), think uniform 0-{think_max:.0f} s, the purchase flow, "
             f"{seconds} s")  # fmt: skip
    crowd = summarize("soak", model, users, stats, start, end, users / (think_max / 2), procs,
                      [R_LIST, R_EVENT, R_RESERVE, R_COMPLETE])  # fmt: skip
    crowd.cpu_cores = cores
    # Growth from the first sample taken after a minute of load (the workers' warm-up) to the last.
    base = next((s for s in samples if s[0] >= min(interval, seconds / 2) - 1), samples[0])
    growth = {pid: samples[-1][1].get(pid, 0) / kib - 1 for pid, kib in base[1].items() if kib}
    return SoakResult(model, seconds, capacity, users, crowd, samples, checks, growth)


# ---------------------------------------------------------------------- cost per request


async def loop_flow(user: User, p: dict[str, Any]) -> None:
    """No think time: one request after another (a closed loop), the user's own prebuilt request."""
    raw = p["request"](user)
    while not user.stopping:
        await _send(user, p["route"], raw)


@dataclass
class CostRow:
    name: str
    requests: int
    seconds: float
    gateway_cpu_s: float
    db_cpu_s: float
    statuses: dict[int, int]

    @property
    def gateway_us(self) -> float:
        return self.gateway_cpu_s / max(1, self.requests) * 1e6

    @property
    def db_us(self) -> float:
        return self.db_cpu_s / max(1, self.requests) * 1e6


@dataclass
class CostResult:
    rows: list[CostRow]
    model: str
    fans: int = 1_000_000
    poll_every_s: float = 20.0

    def cores(self, row: CostRow) -> tuple[float, float]:
        rate = self.fans / self.poll_every_s
        return rate * row.gateway_us / 1e6, rate * row.db_us / 1e6


def postgres_pids(bench: Bench) -> list[int]:
    pid_file = Path(bench.cluster.datadir) / "postmaster.pid"
    try:
        master = int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return []
    try:
        children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    except OSError:
        children = []
    return [master, *(int(c) for c in children)]


def _cpu(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            total += cpu_seconds(pid)
        except OSError:
            pass  # a backend that ended
    return total


def measure_cost(bench: Bench, url: str, name: str, route: str, request: Any, users: list[tuple[int, str]],
                 gateway_pid: int, seconds: int, procs: int) -> CostRow:  # fmt: skip
    host, port = host_port(url)
    start = time.time() + 2.0
    end = start + seconds
    run = FlowRun(host, port, loop_flow, users, {"route": route, "request": request}, end, procs).start()
    time.sleep(max(0.0, start - time.time()))
    workers = gateway_workers(gateway_pid)
    g0, d0 = _cpu(workers), _cpu(postgres_pids(bench))
    time.sleep(max(0.0, end - time.time()))
    g1, d1 = _cpu(workers), _cpu(postgres_pids(bench))
    stats = run.wait()
    s = stats.summary(route, start, end)
    bench.check_invariants(f"cost: {name}")
    return CostRow(name, s.requests, seconds, g1 - g0, d1 - d0, s.statuses)


def run_cost(bench: Bench, url: str, gateway_pid: int, seconds: int = 10, procs: int = 1) -> CostResult:
    """Gateway (and database) CPU per request: a poll of a waiting fan, and the hot reserve."""
    ensure_users(bench, 400)
    tokens = make_tokens(bench.secret, 1, 400)
    create_room(bench, COST_EVENT, COST_TYPE, 1, None, 1000, "bench-cost-room")  # open now, 1 a minute
    path = f"/events/{COST_EVENT}/queue"
    # 200 fans join first (setup, in SQL, one transaction), then poll as fast as they are
    # answered: all but the first in the queue wait, so the poll is the common one.
    pollers = tokens[200:]
    with psycopg.connect(bench.url()) as conn:
        for n, _ in pollers:
            conn.execute("SELECT api.join_waiting_room(%s, %s)", (COST_EVENT, user_id(n)))
    rows = [
        measure_cost(bench, url, "waiting-room poll (GET /events/{id}/queue, a waiting fan)", R_POLL,
                     _PollRequest(path), pollers, gateway_pid, seconds, procs),
        measure_cost(bench, url, "hot reserve (POST /bookings/reserve, coalesced)", R_RESERVE, _ReserveRequest(),
                     tokens[:200], gateway_pid, seconds, procs),
    ]  # fmt: skip
    model = (f"closed loop, no think time: 200 users (connections) for {seconds} s each; CPU = utime + stime of "
             "the gateway's worker processes and of all PostgreSQL processes over the run, divided by the "
             "requests answered")  # fmt: skip
    return CostResult(rows, model)


class _PollRequest:
    def __init__(self, path: str) -> None:
        self.path = path

    def __call__(self, user: User) -> bytes:
        return build_request("GET", self.path, _auth(user.token))


class _ReserveRequest:
    def __call__(self, user: User) -> bytes:
        body = json.dumps({"ticket_type_id": HOT, "quantity": 1}).encode()
        return build_request("POST", "/bookings/reserve", _auth(user.token), body)


# ---------------------------------------------------------------------- overload (SHED's module)


def run_overload(bench: Bench, url: str, seconds: int) -> Any | None:
    """bench.overload.run_overload (the `overload` bench, another part of issue 10), when present.
    Imported here so this module works before it lands."""
    import importlib

    try:
        module = importlib.import_module("bench.overload")
    except ModuleNotFoundError as e:
        if e.name != "bench.overload":
            raise
        return None
    return module.run_overload(bench, url, seconds)
