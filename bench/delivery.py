"""Issue 11's delivery bench (`python -m bench --only delivery`): how long a buyer waits for the
confirmation e-mail, without other load and during an onsale.

- A local SMTP sink (aiosmtpd's Controller on a free 127.0.0.1 port, in its own process: its
  timestamps are not delayed by the bench's own work) accepts every message and appends one JSON
  line per message: the moment it accepted it (the end of DATA, before the 250), its Message-ID
  and recipients.
- A real worker process (`python -m worker`, SMTP_URL pointing at the sink, WORKER_DATABASE_URL
  the bench database as booking_worker) sends the mails; a real gateway (production settings,
  RATE_LIMITS=off) takes the orders.
- N orders (1,000) per run, each made over HTTP as a buyer makes it: its own user and token,
  `POST /bookings/reserve` (one seat of the hot ticket type), then `POST /bookings/complete/{id}`.
  The reserves come first (spread over a few seconds, not measured); the completions follow at
  a fixed rate (100/s), each sent at its scheduled moment whatever the others do (an open loop),
  on the buyer's own connection. A completion answered 503 `busy` or lost to a socket error is
  sent again 1 s later (as Retry-After says); its completion time is when the 201 arrived.
- Measured: from the first completion (201 received) to the last confirmation accepted by the
  sink; per order, from its 201 to its mail's acceptance (p50/p99/max); `procrastinate_jobs`
  todo + doing by queue every 0.5 s (the chart); that every order's Message-ID
  (`<order-ID@booking>`) was accepted exactly once, to the buyer; `order_emails.sent_at` set;
  the mail jobs all succeeded; api.check_invariants() after each run.
- Twice: `quiet` (nothing else running) and `onsale`: the same orders while the hot reserve is
  hammered through the same gateway by a closed loop without think time (N users, one keep-alive
  connection each, each sending the next reserve as soon as the answer arrives), started 3 s
  before the first reserve and stopped when the last mail is accepted.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import resource
import select
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg

from bench.crowd import _auth, _cpu, _send, ensure_users, gateway_workers, host_port, make_tokens, postgres_pids
from bench.flowgen import FlowRun, RouteSummary, Stats, User, _ProcessRun, build_request, cpu_seconds, pct
from dbctl.throwaway import free_port

if TYPE_CHECKING:
    from bench.__main__ import Bench

ROOT = Path(__file__).resolve().parent.parent
HOT = "10000000-0000-4000-8000-000000000001"
MESSAGE_ID = re.compile(r"<order-([0-9a-fA-F-]{36})@booking>")
R_RESERVE = "POST /bookings/reserve (the orders' holds)"
R_COMPLETE = "POST /bookings/complete/{id} (the orders)"
R_LOAD = "POST /bookings/reserve (hot, the onsale load)"
SAMPLE_EVERY = 0.5
WARM_UP = 5  # orders before the runs, not reported (see run_delivery)
BEGIN, END = "<!-- delivery part: begin -->", "<!-- delivery part: end -->"
DEPTH_SQL = "SELECT queue_name, status::text, count(*) FROM procrastinate_jobs GROUP BY 1, 2"


# ---------------------------------------------------------------------- the SMTP sink


class _Recorder:
    """aiosmtpd handler: accept everything, append one JSON line per message."""

    def __init__(self, out: Any) -> None:
        self.out = out

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        accepted = time.time()
        from email.parser import BytesHeaderParser

        content = envelope.content if isinstance(envelope.content, bytes) else envelope.content.encode()
        headers = BytesHeaderParser().parsebytes(content)
        record = {"t": accepted, "message_id": headers.get("Message-ID", ""), "to": list(envelope.rcpt_tos),
                  "bytes": len(content)}  # fmt: skip
        self.out.write(json.dumps(record) + "\n")
        self.out.flush()
        return "250 Message accepted for delivery"


def sink_main(port: int, path: str) -> None:
    """`python -m bench.delivery sink PORT FILE`: serve until SIGTERM/SIGINT; print "ready" once up."""
    from aiosmtpd.controller import Controller

    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})  # the server thread inherits it
    with open(path, "a") as out:
        controller = Controller(_Recorder(out), hostname="127.0.0.1", port=port)
        controller.start()
        print("ready", flush=True)
        signal.sigwait({signal.SIGTERM, signal.SIGINT})
        controller.stop()


class Sink:
    """The sink process and what it accepted so far (its JSON lines, read incrementally)."""

    def __init__(self, folder: Path) -> None:
        self.port = free_port()
        self.path = folder / "smtp-sink.jsonl"
        self.path.touch()
        self.records: list[dict[str, Any]] = []
        self._offset = 0
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.delivery", "sink", str(self.port), str(self.path)],
            cwd=ROOT, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], 30.0)
        line = self.proc.stdout.readline() if ready else ""  # "ready", or EOF if it failed (stderr says why)
        if line.strip() != "ready":
            self.proc.kill()
            raise SystemExit(f"the SMTP sink did not start (port {self.port})")

    def poll(self) -> list[dict[str, Any]]:
        """Records appended since the last poll (whole lines only)."""
        with open(self.path, "rb") as f:
            f.seek(self._offset)
            data = f.read()
        end = data.rfind(b"\n") + 1
        self._offset += end
        new = [json.loads(line) for line in data[:end].splitlines() if line.strip()]
        self.records.extend(new)
        return new

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.poll()


# ---------------------------------------------------------------------- the worker


def start_worker(bench: Bench, smtp_port: int, log: Path) -> subprocess.Popen[bytes]:
    """`python -m worker` against the bench database as booking_worker, mail to the sink. Returns
    once it listens for jobs (its LISTEN connection is in pg_stat_activity)."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "MAIL_DIR", "SMTP_URL")}
    env.update({"WORKER_DATABASE_URL": bench.url("booking_worker"), "SMTP_URL": f"smtp://127.0.0.1:{smtp_port}"})
    out = open(log, "wb")  # the child keeps writing to it
    proc = subprocess.Popen([sys.executable, "-m", "worker"], cwd=ROOT, env=env, stdout=out, stderr=out)
    deadline = time.monotonic() + 30
    with bench.cluster.connect("booking") as conn:  # the superuser: it sees other roles' queries
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SystemExit(f"the worker exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
            row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE usename = 'booking_worker' "
                               "AND query ILIKE 'LISTEN%'").fetchone()  # fmt: skip
            if row and row[0]:
                return proc
            time.sleep(0.2)
        seen = conn.execute("SELECT state, query FROM pg_stat_activity WHERE usename = 'booking_worker'").fetchall()
    proc.kill()
    raise SystemExit(
        f"the worker did not start listening within 30 s (its sessions: {seen}):\n{log.read_text()[-3000:]}"
    )


def stop_process(proc: subprocess.Popen[bytes], wait: float = 30.0) -> int | None:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=wait)
    except subprocess.TimeoutExpired:
        proc.kill()
        return None


# ---------------------------------------------------------------------- the orders and the load


@dataclass
class Order:
    user: int
    order_id: str | None  # None: not completed (status says why)
    scheduled: float = 0.0  # when its completion was due (epoch)
    completed: float = 0.0  # the 201 received (epoch)
    attempts: int = 0  # completions sent (503 busy or a socket error: sent again 1 s later)
    status: int = 0  # the last answer (201 when completed)


async def _order(user: User, n: int, reserve_at: float, complete_at: float, body: bytes, out: list[Order]) -> None:
    headers = _auth(user.token)
    order = Order(n, None, complete_at)
    out.append(order)
    try:
        await user.sleep_until_wall(reserve_at)
        reservation = None
        while not user.stopping:
            status, answer = await _send(user, R_RESERVE, build_request("POST", "/bookings/reserve", headers, body))
            order.status = status
            if status == 201:
                reservation = json.loads(answer)["id"]
                break
            if status not in (0, 503):
                return
            await user.think(1.0)
        if reservation is None:
            return
        await user.sleep_until_wall(complete_at)
        raw = build_request("POST", f"/bookings/complete/{reservation}", headers, b'{"payment_method": "CARD"}')
        while not user.stopping:
            order.attempts += 1
            status, answer = await _send(user, R_COMPLETE, raw)
            order.status = status
            if status == 201:
                order.completed = time.time()
                order.order_id = json.loads(answer)["id"]
                return
            if status not in (0, 503):
                return
            await user.think(1.0)
    finally:
        user.close()


async def onsale_flow(user: User, p: dict[str, Any]) -> None:
    """The onsale load: the hot reserve, a closed loop without think time, until `stop` exists."""
    raw = build_request("POST", "/bookings/reserve", _auth(user.token), p["body"])
    while not user.stopping and not _stopped(p["stop"]):
        await _send(user, R_LOAD, raw)


_stop_checked = [0.0, False]  # per load process: when the stop file was last looked for, and the answer


def _stopped(stop: Path) -> bool:
    """Whether the stop file exists, looked for at most every 0.1 s (not one stat() per request)."""
    now = time.monotonic()
    if not _stop_checked[1] and now - _stop_checked[0] >= 0.1:
        _stop_checked[:] = [now, stop.exists()]
    return bool(_stop_checked[1])


# ---------------------------------------------------------------------- one run


@dataclass
class Sample:
    t: float  # epoch
    depth: dict[str, int]  # queue -> todo + doing
    doing: dict[str, int]  # queue -> doing
    mail_jobs: int  # mail jobs ever deferred (any status): completions so far
    accepted: int  # messages the sink accepted so far


@dataclass
class DeliveryRun:
    name: str  # quiet | onsale
    load_model: str | None
    rate: float  # the completions' schedule, per second
    orders: list[Order]
    mails: list[dict[str, Any]]  # sink records that name one of these orders
    samples: list[Sample]
    stats: Stats  # the orders' HTTP requests
    load: RouteSummary | None = None
    load_rps: float = 0.0
    load_seconds: float = 0.0
    cpu_cores: dict[str, float] = field(default_factory=dict)
    worker_cpu_s: float = 0.0
    sent_at_set: int = 0  # order_emails rows with sent_at, of these orders
    mail_jobs: dict[str, int] = field(default_factory=dict)  # status -> count (mail queue, this run's jobs)
    timed_out: bool = False

    @property
    def completed(self) -> list[Order]:
        return [o for o in self.orders if o.order_id]

    def accepted_at(self) -> dict[str, float]:
        """order id -> when its first copy was accepted."""
        first: dict[str, float] = {}
        for m in self.mails:
            oid = _order_id(m)
            if oid and (oid not in first or m["t"] < first[oid]):
                first[oid] = m["t"]
        return first

    def copies(self) -> Counter[str]:
        return Counter(oid for m in self.mails if (oid := _order_id(m)))

    def latencies(self) -> list[float]:
        """Per order, seconds from its 201 to its mail's acceptance (delivered orders only)."""
        at = self.accepted_at()
        return sorted(at[o.order_id] - o.completed for o in self.completed if o.order_id in at)

    def figures(self) -> dict[str, Any]:
        done = self.completed
        at = self.accepted_at()
        lat = self.latencies()
        copies = self.copies()
        first = min((o.completed for o in done), default=0.0)
        last = max((o.completed for o in done), default=0.0)
        last_mail = max(at.values(), default=0.0)
        first_mail = min(at.values(), default=0.0)
        recipients = {o.order_id: f"bench{o.user}@example.com" for o in done}
        wrong = sum(1 for m in self.mails if (oid := _order_id(m)) and m["to"] != [recipients.get(oid)])
        depth_max = max((s.depth.get("mail", 0) for s in self.samples), default=0)
        complete = self.stats.summary(R_COMPLETE)
        return {
            "orders": len(self.orders), "completed": len(done), "not_completed": Counter(o.status for o in
            self.orders if not o.order_id), "retried": sum(1 for o in done if o.attempts > 1),
            "completion_span": last - first, "completion_rate": (len(done) - 1) / (last - first) if last > first
            else None, "span": last_mail - first if at else None, "tail": last_mail - last if at else None,
            "p50": pct(lat, 50), "p99": pct(lat, 99), "max": lat[-1] if lat else None, "delivered": len(at),
            "missing": sum(1 for o in done if o.order_id not in at), "duplicates": sum(1 for n in copies.values()
            if n > 1), "copies": sum(copies.values()), "wrong_recipient": wrong, "depth_max": depth_max,
            "complete_p50_ms": complete.p50_ms, "complete_p99_ms": complete.p99_ms,
            "late_start": sum(1 for o in done if o.completed - o.scheduled > 1.0),
            "mail_rate": (len(at) - 1) / (last_mail - first_mail) if last_mail > first_mail else None,
        }  # fmt: skip


def _order_id(record: dict[str, Any]) -> str | None:
    m = MESSAGE_ID.search(record.get("message_id") or "")
    return m.group(1).lower() if m else None


async def _sample(conn: psycopg.AsyncConnection[Any], sink: Sink, since: int, mail_before: int) -> Sample:
    rows = await (await conn.execute(DEPTH_SQL)).fetchall()
    depth: dict[str, int] = {}
    doing: dict[str, int] = {}
    mail = 0
    for queue, status, n in rows:
        if status in ("todo", "doing"):
            depth[queue] = depth.get(queue, 0) + n
        if status == "doing":
            doing[queue] = doing.get(queue, 0) + n
        if queue == "mail":
            mail += n
    sink.poll()
    return Sample(time.time(), depth, doing, mail - mail_before, len(sink.records) - since)


async def _drive(bench: Bench, url: str, sink: Sink, tokens: list[tuple[int, str]], rate: float, reserve_at: float,
                 reserve_window: float, t0: float, deadline: float
                 ) -> tuple[list[Order], Stats, list[Sample], bool]:  # fmt: skip
    """The orders (reserve, then complete on schedule) and the sampler, until every completed
    order's mail was accepted and the queue is empty, or `deadline` (epoch)."""
    host, port = host_port(url)
    run = _ProcessRun(host, port, time.monotonic() + (deadline - time.time()), 1)
    body = json.dumps({"ticket_type_id": HOT, "quantity": 1}).encode()
    orders: list[Order] = []
    spread = reserve_window / max(1, len(tokens))
    tasks = [
        _order(User(run, i, token), n, reserve_at + i * spread, t0 + i / rate, body, orders)
        for i, (n, token) in enumerate(tokens)
    ]
    flow = asyncio.gather(*tasks)
    since = len(sink.records)
    samples: list[Sample] = []
    timed_out = False
    async with await psycopg.AsyncConnection.connect(bench.url(), autocommit=True) as conn:
        mail_sql = "SELECT count(*) FROM procrastinate_jobs WHERE queue_name = 'mail'"
        mail_before = int((await (await conn.execute(mail_sql)).fetchall())[0][0])
        tick = time.monotonic()
        while True:
            samples.append(await _sample(conn, sink, since, mail_before))
            if flow.done():
                ids = {o.order_id for o in orders if o.order_id}
                seen = {_order_id(m) for m in sink.records[since:]}
                if ids <= seen and not samples[-1].depth.get("mail"):
                    break
            if time.time() >= deadline:
                timed_out = True
                break
            tick += SAMPLE_EVERY
            await asyncio.sleep(max(0.0, tick - time.monotonic()))
    if not flow.done():
        flow.cancel()
    await asyncio.gather(flow, return_exceptions=True)
    return orders, run.stats, samples, timed_out


def run_once(bench: Bench, url: str, gateway_pid: int, worker: subprocess.Popen[bytes], sink: Sink, name: str,
             first_user: int, count: int, rate: float, timeout: float, load_users: int = 0, load_procs: int = 1,
             load_first_user: int = 0) -> DeliveryRun:  # fmt: skip
    tokens = make_tokens(bench.secret, first_user, count)
    reserve_window = max(0.2, count / 250)  # the holds (not measured): 250 reserves/s
    load: FlowRun | None = None
    stop = bench.tmp / f"stop-{name}"
    now = time.time()
    warmup = min(3.0, 0.5 + count / 100) if load_users else 0.0  # the load before the first hold
    reserve_at = now + 0.5 + warmup
    t0 = reserve_at + reserve_window + 0.5
    deadline = t0 + count / rate + timeout
    if load_users:
        # Forked before this process runs its own event loop (asyncio.run below).
        host, port = host_port(url)
        body = json.dumps({"ticket_type_id": HOT, "quantity": 1}).encode()
        load_tokens = make_tokens(bench.secret, load_first_user, load_users)
        load = FlowRun(host, port, onsale_flow, load_tokens, {"body": body, "stop": stop}, deadline + 5,
                       load_procs, seed=7).start()  # fmt: skip
    workers, pg = gateway_workers(gateway_pid), postgres_pids(bench)
    cpu0 = (_cpu(workers), _cpu(pg), cpu_seconds(worker.pid), cpu_seconds(sink.proc.pid), _self_cpu())
    started = time.monotonic()
    try:
        orders, stats, samples, timed_out = asyncio.run(
            _drive(bench, url, sink, tokens, rate, reserve_at, reserve_window, t0, deadline)
        )
    finally:
        stop.touch()
    elapsed = time.monotonic() - started
    cpu1 = (_cpu(workers), _cpu(pg), cpu_seconds(worker.pid), cpu_seconds(sink.proc.pid), _self_cpu())
    result = DeliveryRun(name, None, rate, orders, [], samples, stats, timed_out=timed_out)
    cores = [(b - a) / elapsed for a, b in zip(cpu0, cpu1, strict=True)]
    result.cpu_cores = {"gateway": cores[0], "postgres": cores[1], "worker": cores[2], "SMTP sink": cores[3],
                        "bench (orders, sampler)": cores[4]}  # fmt: skip
    result.worker_cpu_s = cpu1[2] - cpu0[2]
    if load is not None:
        load_stats = load.wait()
        stopped = stop.stat().st_mtime
        result.load = load_stats.summary(R_LOAD, reserve_at, stopped)
        result.load_seconds = stopped - reserve_at
        result.load_rps = result.load.requests / max(0.001, result.load_seconds)
        result.cpu_cores["load generator"] = load_stats.cpu_s / elapsed
        result.load_model = (f"the hot reserve (`POST /bookings/reserve`, one seat of one ticket type) through the "
                             f"same gateway, a closed loop without think time: {load_users:,} users, one keep-alive "
                             f"connection each, each sending its next reserve as soon as the answer arrives "
                             f"(bench/flowgen.py in {load_procs} process{'es' if load_procs > 1 else ''}), from "
                             f"{warmup:g} s before the first hold until the last mail was accepted")  # fmt: skip
    sink.poll()
    ids = {o.order_id for o in result.completed}
    result.mails = [m for m in sink.records if _order_id(m) in ids]
    bench.check_invariants(f"delivery ({name})")
    return result


def _self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def finish(bench: Bench, runs: list[DeliveryRun], sink: Sink) -> None:
    """After the last run (and a grace period for a late second copy): each run's mails and the
    database's view of them."""
    for run in runs:
        ids = {o.order_id for o in run.completed if o.order_id}
        run.mails = [m for m in sink.records if _order_id(m) in ids]
        with psycopg.connect(bench.url()) as conn:
            row = conn.execute("SELECT count(*) FROM order_emails WHERE order_id = ANY(%s::uuid[]) "
                               "AND sent_at IS NOT NULL", (sorted(ids),)).fetchone()  # fmt: skip
            run.sent_at_set = int(row[0]) if row else 0
            jobs = conn.execute("SELECT status::text, count(*) FROM procrastinate_jobs WHERE queue_name = 'mail' "
                                "AND args->>'order_id' = ANY(%s) GROUP BY 1", (sorted(ids),)).fetchall()  # fmt: skip
            run.mail_jobs = {status: int(n) for status, n in jobs}


def strangers(sink: Sink, runs: list[DeliveryRun]) -> int:
    """Accepted messages that name none of the runs' orders (the warm-up's included)."""
    ids = {o.order_id for run in runs for o in run.completed}
    return sum(1 for m in sink.records if _order_id(m) not in ids)


@dataclass
class DeliveryReport:
    runs: list[DeliveryRun]
    strangers: int
    chart: str | None
    orders: int
    rate: float
    worker_exit: int | None
    backlog_cancelled: int = 0  # mail and webhook jobs of earlier bench parts, cancelled before the runs


def run_delivery(bench: Bench, url: str, gateway_pid: int, orders: int = 1000, rate: float = 100.0,
                 timeout: float = 120.0, load_users: int = 200, load_procs: int = 1) -> DeliveryReport:  # fmt: skip
    """Both runs against one gateway, one worker and one sink: quiet first, then onsale. Before
    them, WARM_UP orders (not reported) warm the worker: its first mails pay for imports and
    first-use costs (about a second here) that neither run should carry."""
    from bench import plots

    ensure_users(bench, 2 * orders + load_users + WARM_UP)
    # In a whole `make bench` the crowd part has left ~250,000 confirmation jobs of its own orders in
    # the queue: a worker started now would send those first and every run here would time out. They
    # are not this bench's mails: cancelled (procrastinate's own status), so each run starts with the
    # queue it describes (quiet: empty).
    with psycopg.connect(bench.url(), autocommit=True) as conn:
        row = conn.execute(
            "WITH c AS (UPDATE procrastinate_jobs SET status = 'cancelled' WHERE status = 'todo' RETURNING 1) "
            "SELECT count(*) FROM c"
        ).fetchone()
    backlog = int(row[0]) if row else 0
    if backlog:
        print(f"delivery: cancelled {backlog:,} queued jobs left by the earlier bench parts", flush=True)
    sink = Sink(bench.tmp)
    worker: subprocess.Popen[bytes] | None = None
    runs: list[DeliveryRun] = []
    warm: DeliveryRun | None = None
    try:
        worker = start_worker(bench, sink.port, bench.tmp / "worker.log")
        warm = run_once(bench, url, gateway_pid, worker, sink, "warm-up", 2 * orders + load_users + 1, WARM_UP, rate,
                        timeout)  # fmt: skip
        runs.append(run_once(bench, url, gateway_pid, worker, sink, "quiet", 1, orders, rate, timeout))
        print(_line(runs[-1]), flush=True)
        runs.append(run_once(bench, url, gateway_pid, worker, sink, "onsale", orders + 1, orders, rate, timeout,
                             load_users, load_procs, 2 * orders + 1))  # fmt: skip
        print(_line(runs[-1]), flush=True)
        time.sleep(2.0)  # a late second copy would arrive now
    finally:
        exit_code = stop_process(worker) if worker is not None else None
        sink.stop()
    finish(bench, runs, sink)
    chart = plots.delivery_queue(runs)
    return DeliveryReport(
        runs, strangers(sink, [*runs, *([warm] if warm else [])]), chart, orders, rate, exit_code, backlog
    )


def _line(run: DeliveryRun) -> str:
    f = run.figures()
    return (f"delivery {run.name}: {f['completed']:,} orders completed, first completion -> last mail accepted "
            f"{_s(f['span'])} s, completion -> accepted p50 {_s(f['p50'])} p99 {_s(f['p99'])} max {_s(f['max'])} s, "
            f"max mail queue {f['depth_max']:,}" + (f"; load {run.load_rps:,.0f} req/s" if run.load else "")
            + (" (TIMED OUT)" if run.timed_out else ""))  # fmt: skip


def _s(x: float | None) -> str:
    return "-" if x is None else f"{x:,.2f}"


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x:,.1f}"


# ---------------------------------------------------------------------- RESULTS.md


def section(rep: DeliveryReport, command: str, when: str) -> list[str]:
    """The delivery part of bench/RESULTS.md, between markers (a `--only delivery` run replaces just it)."""
    out = [BEGIN, "## Delivery (issue 11): confirmation e-mails through the job queue", "",
           f"Run: {when}, `{command}`.", "",
           f"Each run: {rep.orders:,} orders, each by its own buyer over HTTP through the gateway (production "
           "settings, RATE_LIMITS=off): `POST /bookings/reserve` (one seat of the hot ticket type; the holds "
           f"first, not measured), then `POST /bookings/complete/{{id}}` at a fixed {rep.rate:,.0f} completions/s "
           "(an open loop: each sent at its scheduled moment whatever the others do; a 503 `busy` or a socket "
           "error is retried 1 s later and counts from its 201). One worker process (`python -m worker`, "
           "its defaults: WORKER_CONCURRENCY 10, all queues) sends to a local SMTP sink (aiosmtpd in its own "
           f"process; a message counts as accepted at the end of DATA); {WARM_UP} orders before the runs, not "
           "reported, warm it up (its first mails pay for imports). *Completion* = the 201 received; "
           "*accepted* = the sink's timestamp (same clock). `procrastinate_jobs` todo + doing sampled every "
           f"{SAMPLE_EVERY} s. Gateway, PostgreSQL (durable settings), worker, sink and load generator share "
           "the machine's cores."
           + (f" Before the runs, {rep.backlog_cancelled:,} queued jobs left by the earlier bench parts (their "
              "orders' e-mails) were cancelled, so the quiet run starts with an empty queue."
              if rep.backlog_cancelled else ""), "",
           "| run | orders completed | completions/s (achieved) | first completion -> last mail accepted s "
           "| last completion -> last mail s | completion -> accepted p50 s | p99 s | max s | max mail queue "
           "(todo + doing) | mails/s (first to last accepted) | complete p50 / p99 ms "
           "| worker: cores, CPU ms per mail |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"]  # fmt: skip
    for run in rep.runs:
        f = run.figures()
        per_mail = run.worker_cpu_s * 1000 / max(1, f["delivered"])
        label = run.name + (" (TIMED OUT)" if run.timed_out else "")
        rate = "-" if f["completion_rate"] is None else f"{f['completion_rate']:,.0f}"
        mails = "-" if f["mail_rate"] is None else f"{f['mail_rate']:,.1f}"
        worker = run.cpu_cores.get("worker", 0.0)
        out.append(f"| {label} | {f['completed']:,} | {rate} | {_s(f['span'])} | {_s(f['tail'])} | {_s(f['p50'])} "
                   f"| {_s(f['p99'])} | {_s(f['max'])} | {f['depth_max']:,} | {mails} | {_ms(f['complete_p50_ms'])} / "
                   f"{_ms(f['complete_p99_ms'])} | {worker:.2f}, {per_mail:,.1f} |")  # fmt: skip
    out.append("")
    for run in rep.runs:
        f = run.figures()
        cores = ", ".join(f"{k} {v:.2f}" for k, v in run.cpu_cores.items())
        text = (f"- **{run.name}**: {f['completed']:,} of {f['orders']:,} orders completed"
                + (f" (not completed, by last answer: {_statuses(f['not_completed'])})" if f["not_completed"] else "")
                + f"; {f['retried']:,} completions needed a retry; {f['late_start']:,} completed more than 1 s after "
                f"their scheduled moment. Mails: {f['delivered']:,} orders' confirmations accepted, {f['copies']:,} "
                f"messages, {f['duplicates']:,} orders with more than one copy, {f['missing']:,} missing, "
                f"{f['wrong_recipient']:,} to another address than the buyer's; `order_emails.sent_at` set for "
                f"{run.sent_at_set:,}; mail jobs by status: {_statuses(run.mail_jobs)}. CPU (mean cores over the "
                f"run): {cores}.")  # fmt: skip
        out.append(text)
        if run.load is not None:
            out.append(f"  - Load model: {run.load_model}. The load: {run.load.requests:,} reserves in "
                       f"{run.load_seconds:,.1f} s = {run.load_rps:,.0f} req/s, p50 {_ms(run.load.p50_ms)} ms, "
                       f"p99 {_ms(run.load.p99_ms)} ms; answers {_statuses(run.load.statuses)}.")  # fmt: skip

    def sent_by_worker(run: DeliveryRun) -> str:
        f = run.figures()
        per_mail = run.worker_cpu_s * 1000 / max(1, f["delivered"])
        sent = "-" if f["mail_rate"] is None else f"{f['mail_rate']:,.1f}"
        return (f"{sent}/s in the {run.name} run ({run.cpu_cores.get('worker', 0.0):.2f} cores, mean over the run; "
                f"{per_mail:,.1f} ms of CPU per mail)")  # fmt: skip

    sent = " and ".join(map(sent_by_worker, rep.runs))
    out += ["", f"Reading: completions came at {rep.rate:,.0f}/s; the worker sent {sent}"
            + ". A mail's wait is the mails ahead of it divided by that rate: the queue (chart) grows while "
            "completions outpace the worker and drains after."]  # fmt: skip
    out += ["", f"Exactly once: every order's Message-ID (`<order-ID@booking>`) counted in the sink over both runs "
            f"(after a 2 s grace): {_exactly_once(rep)}; {rep.strangers} accepted messages named no order of "
            f"these runs. The worker stopped on SIGTERM with exit status {rep.worker_exit}. "
            "`api.check_invariants()` was empty after each run (the runner stops otherwise).", ""]  # fmt: skip
    if rep.chart:
        out += [f"![job queue depth and mails over time]({rep.chart})", ""]
    out += ["Targets:", "", *targets(rep), "", END]
    return out


def _exactly_once(rep: DeliveryReport) -> str:
    ok = rep.strangers == 0 and all(
        (f := run.figures())["duplicates"] == 0 and f["missing"] == 0 and f["wrong_recipient"] == 0 for run in rep.runs
    )
    total = sum(run.figures()["completed"] for run in rep.runs)
    return f"{'**met**' if ok else '**not met**'} ({total:,} orders)"


def targets(rep: DeliveryReport) -> list[str]:
    """Issue 11: "onsale load must not delay e-mails for minutes", read as: during the onsale,
    every mail accepted and the slowest under 60 s after its order; the quiet run beside it."""
    by_name = {run.name: run for run in rep.runs}
    out = []
    onsale, quiet = by_name.get("onsale"), by_name.get("quiet")
    if onsale is not None:
        f = onsale.figures()
        ok = f["max"] is not None and f["max"] < 60 and f["missing"] == 0 and not onsale.timed_out
        base = (
            f" (without load: p99 {_s(quiet.figures()['p99'])} s, max {_s(quiet.figures()['max'])} s)" if quiet else ""
        )
        out.append(f"- Onsale load must not delay e-mails for minutes (every mail accepted, the slowest within 60 s "
                   f"of its order): under the onsale load completion -> accepted p99 {_s(f['p99'])} s, max "
                   f"{_s(f['max'])} s, {f['missing']} missing{base}: {'**met**' if ok else '**not met**'}")  # fmt: skip
    out.append(f"- Every confirmation accepted exactly once, to its buyer: {_exactly_once(rep)}")
    return out


def _statuses(counts: dict[Any, int]) -> str:
    if not counts:
        return "none"
    return ", ".join(f"{'socket error' if k == 0 else k}: {v:,}" for k, v in sorted(counts.items(), key=str))


def splice(existing: str, part: str) -> str:
    """RESULTS.md with the delivery part replaced (or appended when it is not there yet)."""
    begin, end = existing.find(BEGIN), existing.find(END)
    if begin < 0 or end < begin:
        return existing.rstrip("\n") + "\n\n" + part.rstrip("\n") + "\n"
    return existing[:begin] + part.rstrip("\n") + existing[end + len(END) :]


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "sink":
        sink_main(int(sys.argv[2]), sys.argv[3])
    else:
        raise SystemExit("usage: python -m bench.delivery sink PORT FILE (the bench runs it: python -m bench)")
