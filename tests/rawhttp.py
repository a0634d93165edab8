"""A minimal HTTP/1.1 keep-alive client on asyncio streams, for tests that need hundreds of
requests truly in flight at once (httpx's pool is too slow for that)."""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import urlsplit


async def _request(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str, method: str, path: str,
    headers: dict[str, str], body: Any,
) -> tuple[int, Any]:  # fmt: skip
    payload = b"" if body is None else json.dumps(body).encode()
    head = [f"{method} {path} HTTP/1.1", f"Host: {host}", f"Content-Length: {len(payload)}",
            "Content-Type: application/json", *(f"{k}: {v}" for k, v in headers.items())]  # fmt: skip
    writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + payload)
    await writer.drain()
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionError("server closed the connection")
    status = int(status_line.split()[1])
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode().partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
    data = await reader.readexactly(length) if length else b""
    return status, json.loads(data) if data else None


async def fire(
    url: str, jobs: list[tuple[str, str, dict[str, str], Any]], connections: int = 200
) -> list[tuple[int, Any]]:
    """Run (method, path, headers, body) jobs over `connections` keep-alive connections.
    Returns (status, parsed body) per job, in job order."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    results: list[tuple[int, Any]] = [(0, None)] * len(jobs)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(len(jobs)):
        queue.put_nowait(i)

    async def worker() -> None:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while not queue.empty():
                i = queue.get_nowait()
                method, path, headers, body = jobs[i]
                try:
                    results[i] = await _request(reader, writer, host, method, path, headers, body)
                except (ConnectionError, asyncio.IncompleteReadError) as exc:
                    results[i] = (-1, str(exc))
                    writer.close()
                    reader, writer = await asyncio.open_connection(host, port)
        finally:
            writer.close()

    async with asyncio.timeout(30):  # never hang a test
        await asyncio.gather(*(worker() for _ in range(min(connections, len(jobs)))))
    return results
