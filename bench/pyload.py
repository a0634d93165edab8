"""A closed-loop HTTP/1.1 load generator in Python (asyncio, keep-alive, raw sockets), for
machines without wrk: N connections, each with one request outstanding at a time, sending
prebuilt requests round-robin, for a fixed time after a warm-up. Slower than wrk (it competes
for the same cores as the gateway and PostgreSQL), so compare rows of one run, not absolutes.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field


@dataclass
class LoadResult:
    seconds: float
    latencies_ms: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    socket_errors: int = 0

    @property
    def requests(self) -> int:
        return len(self.latencies_ms)

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def percentile(self, pct: float) -> float | None:
        """Nearest rank, as wrk computes it."""
        values = sorted(self.latencies_ms)
        if not values:
            return None
        return values[min(len(values) - 1, int(len(values) * pct / 100))]


def build_request(method: str, path: str, headers: dict[str, str], body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    if body or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def parse_head(head: bytes) -> tuple[int, int]:
    """(status, content length) from a response head (status line and headers, CRLF-separated)."""
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    return status, length


class _Clock:
    def __init__(self, warmup: float, seconds: float) -> None:
        now = time.monotonic()
        self.start = now + warmup
        self.end = self.start + seconds


async def _connection(host: str, port: int, requests: list[bytes], offset: int, clock: _Clock,
                      result: LoadResult) -> None:  # fmt: skip
    n = offset
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    while time.monotonic() < clock.end:
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection(host, port)
            assert reader is not None
            request = requests[n % len(requests)]
            n += 1
            sent = time.monotonic()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status, length = parse_head(head[:-4])
            if length:
                await reader.readexactly(length)
            done = time.monotonic()
            if clock.start <= sent and done <= clock.end:
                result.latencies_ms.append((done - sent) * 1000)
                result.statuses[status] += 1
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, IndexError):
            if clock.start <= time.monotonic() <= clock.end:
                result.socket_errors += 1
            if writer is not None:
                writer.close()
            reader = writer = None
            await asyncio.sleep(0.01)
    if writer is not None:
        writer.close()


async def run_load(host: str, port: int, requests: list[bytes], connections: int, seconds: float,
                   warmup: float = 2.0) -> LoadResult:  # fmt: skip
    """Keep `connections` connections busy for warmup + seconds; only the last `seconds` count."""
    clock = _Clock(warmup, seconds)
    result = LoadResult(seconds)
    step = max(1, len(requests) // max(1, connections))
    await asyncio.gather(*(_connection(host, port, requests, i * step, clock, result) for i in range(connections)))
    return result


def load(host: str, port: int, requests: list[bytes], connections: int, seconds: float,
         warmup: float = 2.0) -> LoadResult:  # fmt: skip
    try:
        import uvloop  # the faster loop, when installed (uvicorn[standard] brings it)

        return uvloop.run(run_load(host, port, requests, connections, seconds, warmup))
    except ImportError:
        return asyncio.run(run_load(host, port, requests, connections, seconds, warmup))
