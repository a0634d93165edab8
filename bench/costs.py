"""Per-request costs for docs/SCALING.md (`python -m bench --only costs`), on the bench's private,
durable cluster with pg_stat_statements loaded:

- HTTP, per route (a closed loop, no think time, 200 users, one route at a time on a fresh
  measurement window): gateway CPU (utime + stime of the gateway's processes) / requests,
  PostgreSQL CPU (all its processes) / requests, and the database time of the api function the
  route calls (pg_stat_statements, top-level statements: total_exec_time / calls), for the
  catalogue reads, the hot (coalesced) and a spread reserve, complete and my-bookings.
- SQL, no gateway: WAL bytes per order (pg_current_wal_lsn before and after N purchases, each a
  reserve and a complete in their own transactions as the gateway runs them), right after a
  CHECKPOINT (full-page images) and again in steady state, per reservation alone, and per
  reservation of the coalesced batch (50 per call on the hot type); pg_walinspect splits the
  steady-state WAL by resource manager. Rows and bytes each table gained per order.

Everything but this bench's own load shares the machine (other helpers' clusters and benches):
CPU per request is what the processes used, not wall time, so it is the least noisy figure here.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import psycopg

from bench import crowd
from bench.flowgen import FlowRun, User, build_request

if TYPE_CHECKING:
    from bench.__main__ import Bench

BEGIN, END = "<!-- costs part: begin -->", "<!-- costs part: end -->"
# Added to the cluster's settings for this part only (bench/__main__.py).
SETTINGS = {"shared_preload_libraries": "'pg_cron,pg_stat_statements'", "pg_stat_statements.track": "top",
            "pg_stat_statements.max": "2000"}  # fmt: skip
USERS = 200


def spread_type(n: int) -> str:
    return f"20000000-0000-4000-8000-{(n - 1) % 1000 + 1:012d}"


@dataclass
class RouteCost(crowd.CostRow):
    """A route's cost (crowd.CostRow: requests, CPU of gateway and PostgreSQL, gateway_us, db_us)
    plus the api functions it called."""

    functions: dict[str, tuple[int, float]]  # api function -> (calls, total ms), top-level statements

    def db_time_us(self) -> float:
        """Database time (statement execution) per request, all api functions the route called."""
        return sum(ms for _, ms in self.functions.values()) * 1000 / max(1, self.requests)


@dataclass
class WalRun:
    name: str
    count: int  # orders or reservations
    wal_bytes: int
    seconds: float

    @property
    def per(self) -> float:
        return self.wal_bytes / max(1, self.count)


@dataclass
class CostsReport:
    routes: list[RouteCost] = field(default_factory=list)
    wal: list[WalRun] = field(default_factory=list)
    wal_by_rmgr: list[tuple[str, int, int, int]] = field(default_factory=list)  # rmgr, records, bytes, fpi bytes
    tables: list[tuple[str, int, int]] = field(default_factory=list)  # table, rows gained, bytes gained
    orders_for_tables: int = 0
    workers: int = 0
    seconds: int = 0
    notes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------- HTTP routes


async def _loop(user: User, p: dict[str, Any]) -> None:
    raw = p["request"](user)
    while not user.stopping:
        await crowd._send(user, p["route"], raw)


async def _complete_loop(user: User, p: dict[str, Any]) -> None:
    """From the window's start (the holds are not spent before it), pays for this user's held
    reservations one after another, then idles."""
    headers = crowd._auth(user.token)
    await user.sleep_until_wall(p["start"])
    for rid in p["holds"].get(user.index, []):
        if user.stopping:
            return
        raw = build_request("POST", f"/bookings/complete/{rid}", headers, b'{"payment_method": "CARD"}')
        await crowd._send(user, p["route"], raw)
    while not user.stopping:
        await user.think(0.5)


class _Get:
    def __init__(self, path: str) -> None:
        self.path = path

    def __call__(self, user: User) -> bytes:
        return build_request("GET", self.path.format(k=user.index % 100 + 1), crowd._auth(user.token))


class _Reserve:
    def __init__(self, hot: bool) -> None:
        self.hot = hot

    def __call__(self, user: User) -> bytes:
        ticket_type = crowd.HOT if self.hot else spread_type(user.index)
        body = json.dumps({"ticket_type_id": ticket_type, "quantity": 1}).encode()
        return build_request("POST", "/bookings/reserve", crowd._auth(user.token), body)


def _functions(conn: psycopg.Connection[Any]) -> dict[str, tuple[int, float]]:
    out: dict[str, tuple[int, float]] = {}
    rows = conn.execute("SELECT query, calls, total_exec_time FROM pg_stat_statements "
                        "WHERE toplevel AND dbid = (SELECT oid FROM pg_database WHERE datname = current_database())"
                        ).fetchall()  # fmt: skip
    for query, calls, total in rows:
        m = re.search(r'"?\bapi"?\."?([a-z_]+)"?\s*\(', query)  # the gateway quotes: "api"."f"(
        if m:
            c, t = out.get(m.group(1), (0, 0.0))
            out[m.group(1)] = (c + int(calls), t + float(total))
    return out


def measure_route(bench: Bench, url: str, gateway_pid: int, name: str, route: str, flow: Any,
                  params: dict[str, Any], seconds: int, users: int = USERS) -> RouteCost:  # fmt: skip
    tokens = crowd.make_tokens(bench.secret, 1, users)
    host, port = crowd.host_port(url)
    start = time.time() + 2.0  # connections made and the pool warm before the window opens
    end = start + seconds
    run = FlowRun(host, port, flow, tokens, {"route": route, "start": start, **params}, end, 1).start()
    with psycopg.connect(bench.cluster.url("postgres", "booking"), autocommit=True) as su:
        time.sleep(max(0.0, start - time.time()))
        workers = crowd.gateway_workers(gateway_pid)
        su.execute("SELECT pg_stat_statements_reset()")
        g0, d0 = crowd._cpu(workers), crowd._cpu(crowd.postgres_pids(bench))
        time.sleep(max(0.0, end - time.time()))
        g1, d1 = crowd._cpu(workers), crowd._cpu(crowd.postgres_pids(bench))
        functions = _functions(su)
    stats = run.wait()
    s = stats.summary(route, start, end)
    bench.check_invariants(f"costs: {name}")
    return RouteCost(name, s.requests, float(seconds), g1 - g0, d1 - d0, s.statuses, functions)


def hold_reservations(bench: Bench, users: int, per_user: int) -> dict[int, list[str]]:
    """per_user held reservations (1 seat, spread types) for each of users 1..users, made in SQL."""
    holds: dict[int, list[str]] = {}
    with psycopg.connect(bench.url(), autocommit=True) as conn:
        rows = conn.execute(
            "SELECT u, api.reserve_tickets(p_user_id => ('00000000-0000-4000-8000-' || lpad(u::text, 12, '0'))::uuid,"
            " p_ticket_type_id => ('20000000-0000-4000-8000-' || lpad(((u + k) %% 1000 + 1)::text, 12, '0'))::uuid,"
            " p_quantity => 1)->>'id' FROM generate_series(1, %s) u, generate_series(1, %s) k",
            (users, per_user),
        ).fetchall()
    for u, rid in rows:
        holds.setdefault(int(u), []).append(rid)
    return holds


def run_routes(bench: Bench, seconds: int, complete_per_user: int) -> list[RouteCost]:
    from bench.__main__ import _stop

    crowd.ensure_users(bench, USERS)
    plan: list[tuple[str, str, Any, dict[str, Any]]] = [
        ("GET /events (catalogue, cached)", crowd.R_LIST, _loop, {"request": _Get("/events")}),
        ("GET /events/{slug} (live availability)", crowd.R_EVENT, _loop,
         {"request": _Get("/events/bench-event-{k}")}),
        ("POST /bookings/reserve, one hot type (coalesced)", crowd.R_RESERVE, _loop, {"request": _Reserve(True)}),
        ("POST /bookings/reserve, 200 types (coalesced)", crowd.R_RESERVE, _loop, {"request": _Reserve(False)}),
        ("POST /bookings/complete/{id} (instant payment)", crowd.R_COMPLETE, _complete_loop, {}),
        ("GET /bookings/my-bookings (first page)", "GET /bookings/my-bookings", _loop,
         {"request": _Get("/bookings/my-bookings")}),
    ]  # fmt: skip
    out = []
    for name, route, flow, params in plan:
        if flow is _complete_loop:
            params = {"holds": hold_reservations(bench, USERS, complete_per_user)}
        gateway, url = bench.start_gateway(coalesce=True)  # a fresh one per route: nothing cached from the last
        try:
            out.append(measure_route(bench, url, gateway.pid, name, route, flow, params, seconds))
        finally:
            _stop(gateway)
        r = out[-1]
        print(f"costs: {name}: {r.requests / r.seconds:,.0f} req/s, gateway {r.gateway_us:,.0f} us, PostgreSQL CPU "
              f"{r.db_us:,.0f} us, statement time {r.db_time_us():,.0f} us per request; {r.functions}",
              flush=True)  # fmt: skip
    return out


# ---------------------------------------------------------------------- WAL and rows


def _lsn(conn: psycopg.Connection[Any]) -> str:
    return str(conn.execute("SELECT pg_current_wal_lsn()").fetchone()[0])  # type: ignore[index]


def _wal_diff(conn: psycopg.Connection[Any], a: str, b: str) -> int:
    return int(conn.execute("SELECT pg_wal_lsn_diff(%s::pg_lsn, %s::pg_lsn)", (b, a)).fetchone()[0])  # type: ignore[index]


def _purchases(conn: psycopg.Connection[Any], first_user: int, count: int, complete: bool = True) -> None:
    """count purchases (or reservations), each statement its own transaction, as the gateway runs them."""
    for i in range(count):
        n = (first_user + i) % 2000 + 1
        user = f"00000000-0000-4000-8000-{n:012d}"
        reserve = "SELECT api.reserve_tickets(p_user_id => %s, p_ticket_type_id => %s, p_quantity => 1)->>'id'"
        rid = conn.execute(reserve, (user, spread_type(first_user + i))).fetchone()[0]  # type: ignore[index]
        if complete:
            conn.execute("SELECT api.complete_booking(p_user_id => %s, p_reservation_id => %s, "
                         "p_payment_method => 'CARD')", (user, rid))  # fmt: skip


def _batches(conn: psycopg.Connection[Any], calls: int, size: int = 50) -> None:
    for c in range(calls):
        conn.execute(
            "SELECT count(reservation) FROM api.reserve_tickets_batch(ARRAY(SELECT ROW(('00000000-0000-4000-8000-' "
            "|| lpad(((%s + g) %% 2000 + 1)::text, 12, '0'))::uuid, %s::uuid, 1)::api.reserve_request "
            "FROM generate_series(0, %s) g))",
            (c * size, crowd.HOT, size - 1),
        )


def _tables(conn: psycopg.Connection[Any]) -> dict[str, tuple[int, int]]:
    names = [r[0] for r in conn.execute(
        "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'cron', 'pg_toast') "
        "ORDER BY 1").fetchall()]  # fmt: skip
    out = {}
    for name in names:
        rows = conn.execute(f"SELECT count(*), pg_total_relation_size('{name}') FROM {name}").fetchone()
        out[name] = (int(rows[0]), int(rows[1]))  # type: ignore[index]
    return out


def run_wal(bench: Bench, report: CostsReport, orders: int) -> None:
    su_url = bench.cluster.url("postgres", "booking")
    with psycopg.connect(su_url, autocommit=True) as su, psycopg.connect(bench.url(), autocommit=True) as conn:
        walinspect = True
        try:
            su.execute("CREATE EXTENSION IF NOT EXISTS pg_walinspect")
        except psycopg.Error:
            walinspect = False
        su.execute("CHECKPOINT")

        def timed(name: str, count: int, work: Any) -> tuple[str, str]:
            a, t = _lsn(su), time.monotonic()
            work()
            b = _lsn(su)
            report.wal.append(WalRun(name, count, _wal_diff(su, a, b), time.monotonic() - t))
            print(f"costs: WAL {name}: {report.wal[-1].per:,.0f} bytes each", flush=True)
            return a, b

        timed("order (reserve + complete), first after a CHECKPOINT", orders,
              lambda: _purchases(conn, 0, orders))  # fmt: skip
        before = _tables(conn)
        a, b = timed("order (reserve + complete), steady state", orders, lambda: _purchases(conn, orders, orders))
        after = _tables(conn)
        timed("reservation alone (api.reserve_tickets, 1 seat)", orders,
              lambda: _purchases(conn, 2 * orders, orders, complete=False))  # fmt: skip
        calls = max(1, orders // 50)
        timed("reservation in a coalesced batch (api.reserve_tickets_batch, 50 per call, hot type)", calls * 50,
              lambda: _batches(conn, calls))  # fmt: skip
        if walinspect:
            rows = su.execute('SELECT "resource_manager/record_type", count, record_size, fpi_size '
                              "FROM pg_get_wal_stats(%s, %s, true) WHERE count > 0 ORDER BY combined_size DESC",
                              (a, b)).fetchall()  # fmt: skip
            report.wal_by_rmgr = [(str(r[0]), int(r[1]), int(r[2]), int(r[3])) for r in rows]
        else:
            report.notes.append("pg_walinspect was not available: no split of the WAL by resource manager.")
        report.orders_for_tables = orders
        report.tables = [(t, after[t][0] - before[t][0], after[t][1] - before[t][1]) for t in after
                         if t in before and (after[t][0] != before[t][0] or after[t][1] != before[t][1])]  # fmt: skip
    bench.check_invariants("costs: WAL runs")


def run_costs(bench: Bench, seconds: int, orders: int, complete_per_user: int) -> CostsReport:
    report = CostsReport(workers=bench.args.workers, seconds=seconds)
    with psycopg.connect(bench.cluster.url("postgres", "booking"), autocommit=True) as su:
        su.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    report.routes = run_routes(bench, seconds, complete_per_user)
    run_wal(bench, report, orders)
    return report


# ---------------------------------------------------------------------- the report


def section(r: CostsReport, command: str, when: str) -> list[str]:
    out = [BEGIN, "## Cost per request and per order (issue 13, for docs/SCALING.md)", "",
           f"Run: {when}, `{command}`. Private durable cluster (fsync and synchronous_commit on, "
           "pg_stat_statements loaded), the bench seed. Shared 2-core machine: other work ran beside it, so "
           "rates are noisy; CPU per request (what the processes used) is the steadier figure.", "",
           "### Per route (HTTP)", "",
           f"Load model: closed loop, no think time, {USERS} users (keep-alive connections, distinct tokens), "
           f"one route at a time for {r.seconds} s on a fresh gateway ({r.workers} uvicorn worker(s), coalesced "
           "reserves, `RATE_LIMITS=off`); Python generator (bench/flowgen.py) on the same cores. Gateway CPU = "
           "utime + stime of the gateway's processes / requests; PostgreSQL CPU = all its processes / requests; "
           "statement time = pg_stat_statements total_exec_time of the top-level api calls / requests.", "",
           "| route | requests | req/s | gateway CPU us/req | PostgreSQL CPU us/req | statement time us/req "
           "| api calls (calls, mean ms) | statuses |",
           "|---|---:|---:|---:|---:|---:|---|---|"]  # fmt: skip
    for c in r.routes:
        calls = "; ".join(f"{f} {n:,} x {ms / max(1, n):.3f}" for f, (n, ms) in sorted(c.functions.items())
                          if f not in ("check_invariants",))  # fmt: skip
        statuses = ", ".join(f"{'socket error' if k == 0 else k}: {v:,}" for k, v in sorted(c.statuses.items()))
        out.append(f"| {c.name} | {c.requests:,} | {c.requests / c.seconds:,.0f} | {c.gateway_us:,.0f} "
                   f"| {c.db_us:,.0f} | {c.db_time_us():,.0f} | {calls} | {statuses} |")  # fmt: skip
    out += ["", "### WAL per order and per reservation (SQL, no gateway)", "",
            "Each reserve and each complete in its own transaction (as the gateway runs them), one session, "
            "spread ticket types, durable commits; bytes = pg_wal_lsn_diff over the run / count (autovacuum and "
            "the pg_cron jobs' WAL in that window included).", "",
            "| run | count | WAL bytes | bytes each | seconds |", "|---|---:|---:|---:|---:|"]  # fmt: skip
    for w in r.wal:
        out.append(f"| {w.name} | {w.count:,} | {w.wal_bytes:,} | {w.per:,.0f} | {w.seconds:.1f} |")
    if r.wal_by_rmgr:
        orders = next((w.count for w in r.wal if "steady" in w.name), 1)
        out += ["", "Steady-state orders' WAL by record type (pg_walinspect, pg_get_wal_stats per record):", "",
                "| resource manager/record type | records | record bytes | full-page image bytes | bytes per order |",
                "|---|---:|---:|---:|---:|"]  # fmt: skip
        for name, count, size, fpi in r.wal_by_rmgr:
            out.append(f"| {name} | {count:,} | {size:,} | {fpi:,} | {(size + fpi) / orders:,.0f} |")
    if r.tables:
        n = r.orders_for_tables
        out += ["", f"### Rows and bytes per order (the {n:,} steady-state orders)", "",
                "Bytes: pg_total_relation_size (heap, indexes, TOAST) gained / orders: pages, dead row versions "
                "(updates of ticket_types and reservations) and fill included.", "",
                "| table | rows gained | rows per order | bytes per order |", "|---|---:|---:|---:|"]  # fmt: skip
        for table, rows, size in sorted(r.tables, key=lambda t: -t[2]):
            out.append(f"| {table} | {rows:,} | {rows / n:.2f} | {size / n:,.0f} |")
        total = sum(size for _, _, size in r.tables)
        out += ["", f"All tables: {total / n:,.0f} bytes per order."]
    return [*out, "", *r.notes, END]


def splice(existing: str, part: str) -> str:
    begin, end = existing.find(BEGIN), existing.find(END)
    if begin < 0 or end < begin:
        return existing.rstrip("\n") + "\n\n" + part.rstrip("\n") + "\n"
    return existing[:begin] + part.rstrip("\n") + existing[end + len(END) :]
