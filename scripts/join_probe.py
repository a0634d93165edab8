"""Join throughput of one event's waiting room (issue 10): N fans join within S seconds.

Open loop: fan i opens its own connection at i/rate seconds and sends one
`POST /events/{id}/queue` with its own token (a fan who clicks "join" once), whatever the answers
before it did. Meanwhile a probe reads `GET /events/{id}` every 50 ms (another route that needs a
pool connection). The gateway is started as `make bench` starts it (production settings,
RATE_LIMITS=off, durable PostgreSQL, bench/seed.sql plus users for every fan).

    flock /tmp/i10-load.lock .venv/bin/python scripts/join_probe.py --fans 10000 --seconds 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urlsplit

import jwt
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.__main__ import SECRET, Bench, _stop

EVENT = "00000000-0000-4000-a000-00000000f00d"


def setup(bench: Bench, fans: int) -> list[str]:
    with psycopg.connect(bench.url(), autocommit=True) as conn:
        conn.execute(
            "INSERT INTO users (id, email, password_hash, full_name)"
            " SELECT ('00000000-0000-4000-8000-' || lpad(n::text, 12, '0'))::uuid, 'fan' || n || '@bench.test',"
            " 'x', 'Fan ' || n FROM generate_series(2001, %s) n ON CONFLICT DO NOTHING",
            (fans,),
        )
        conn.execute(
            "INSERT INTO events (id, slug, name, location, start_time, end_time, status, queue_enabled,"
            " admission_rate_per_minute) VALUES (%s, 'join-probe', 'Join probe', 'Hanoi', now() + interval '5 days',"
            " now() + interval '6 days', 'PUBLISHED', true, 600)",
            (EVENT,),
        )
        conn.execute(
            "INSERT INTO ticket_types (event_id, name, price, initial_quantity, available_quantity, start_sale_time)"
            " VALUES (%s, 'GA', 100, 1000, 1000, now() + interval '1 hour')",
            (EVENT,),
        )
    now = int(time.time())
    tokens = []
    for n in range(1, fans + 1):
        claims = {"sub": f"00000000-0000-4000-8000-{n:012d}", "role": "user",
                  "sid": f"00000000-0000-4000-9000-{n:012d}", "iat": now, "exp": now + 7200,
                  "iss": "booking-gateway"}  # fmt: skip
        tokens.append(jwt.encode(claims, SECRET, algorithm="HS256"))
    return tokens


async def request(host: str, port: int, method: str, path: str, token: str | None) -> tuple[int, float]:
    start = time.perf_counter()
    try:
        reader, writer = await asyncio.open_connection(host, port)
        auth = f"Authorization: Bearer {token}\r\n" if token else ""
        writer.write(f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\n{auth}\r\n".encode())
        await writer.drain()
        status = int((await reader.readline()).split()[1])
        length = 0
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        await reader.readexactly(length)
        writer.close()
    except (OSError, IndexError, ValueError, asyncio.IncompleteReadError):
        status = -1
    return status, (time.perf_counter() - start) * 1000


def pct(values: list[float], p: float) -> float:
    return sorted(values)[min(len(values) - 1, int(len(values) * p / 100))] if values else float("nan")


async def load(url: str, tokens: list[str], seconds: float) -> dict[str, object]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    path = f"/events/{EVENT}/queue"
    rate = len(tokens) / seconds
    joins: list[asyncio.Task[tuple[int, float]]] = []
    probes: list[tuple[int, float]] = []
    done = asyncio.Event()

    async def probe() -> None:
        while not done.is_set():
            probes.append(await request(host, port, "GET", f"/events/{EVENT}", None))
            await asyncio.sleep(0.05)

    prober = asyncio.create_task(probe())
    start = time.perf_counter()
    for i, token in enumerate(tokens):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        joins.append(asyncio.create_task(request(host, port, "POST", path, token)))
    results = await asyncio.gather(*joins)
    elapsed = time.perf_counter() - start
    done.set()
    await prober
    ok = [ms for status, ms in results if status == 200]
    codes: dict[int, int] = {}
    for status, _ in results:
        codes[status] = codes.get(status, 0) + 1
    probe_ok = [ms for status, ms in probes if status == 200]
    return {
        "fans": len(tokens), "offered_per_s": round(rate), "elapsed_s": round(elapsed, 1),
        "joined_per_s": round(len(ok) / elapsed), "statuses": codes,
        "join_p50_ms": round(pct(ok, 50), 1), "join_p99_ms": round(pct(ok, 99), 1),
        "join_max_ms": round(max(ok, default=0), 1),
        "probe_n": len(probes), "probe_non200": sum(1 for s, _ in probes if s != 200),
        "probe_p50_ms": round(pct(probe_ok, 50), 1), "probe_p99_ms": round(pct(probe_ok, 99), 1),
        "probe_mean_ms": round(statistics.mean(probe_ok), 1) if probe_ok else None,
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fans", type=int, default=10000)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    bench = Bench(SimpleNamespace(workers=args.workers))  # type: ignore[arg-type]
    try:
        bench.setup_database()
        tokens = setup(bench, args.fans)
        proc, url = bench.start_gateway(coalesce=True)
        try:
            result = asyncio.run(load(url, tokens, args.seconds))
        finally:
            _stop(proc)
        with psycopg.connect(bench.url()) as conn:
            row = conn.execute(
                "SELECT count(*), count(DISTINCT seq), min(seq), max(seq)"
                " FROM waiting_room_entries WHERE event_id = %s",
                (EVENT,),
            ).fetchone()
        result["entries_distinct_min_max"] = row
        print(json.dumps(result, default=str))
    finally:
        bench.cleanup()


if __name__ == "__main__":
    main()
