"""Load shedding (issue 10): each gateway process admits at most MAX_IN_FLIGHT requests at once;
past that a request is answered 503 `busy` with `Retry-After` at once, before routing, auth, the
access log or the database, so refusing costs microseconds and the admitted requests keep their
latency instead of everyone queueing for seconds.

Why a count of requests in flight: by Little's law a process that serves X requests/s with L in
flight keeps each about L / X seconds, so the bound caps the time a request can wait inside the
process (200 in flight at ~1,500 req/s per process is ~130 ms), whatever the offered load.

Always admitted (and not counted): the probes, so an orchestrator never takes a busy but healthy
process for a dead one, and the cheap status routes listed in EXEMPT_PATHS (the waiting room's
status route belongs there when it exists).
"""

from __future__ import annotations

import json
import logging
import time

from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.errors import PROBLEM_JSON, busy

EXEMPT_PATHS = frozenset({"/healthz", "/readyz"})
RETRY_AFTER_SECONDS = 1
LOG_EVERY_SECONDS = 10.0

log = logging.getLogger("gateway.shedding")


class Shedder:
    """Outermost ASGI layer: counts the requests in flight in this process, refuses past the bound."""

    def __init__(self, app: ASGIApp, max_in_flight: int) -> None:
        self.app = app
        self.max_in_flight = max_in_flight  # 0: no bound
        self.in_flight = 0
        self.shed = 0  # refused since the last log line
        self._logged = time.monotonic()
        # The refusal is the same bytes every time: build it once.
        self._body = json.dumps(busy().body()).encode()
        self._start = {
            "type": "http.response.start",
            "status": 503,
            "headers": [
                (b"content-type", PROBLEM_JSON.encode()),
                (b"content-length", str(len(self._body)).encode()),
                (b"retry-after", str(RETRY_AFTER_SECONDS).encode()),
            ],
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.max_in_flight or scope["path"] in EXEMPT_PATHS:
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.max_in_flight:
            await self._refuse(send)
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1

    async def _refuse(self, send: Send) -> None:
        self.shed += 1
        now = time.monotonic()
        if now - self._logged >= LOG_EVERY_SECONDS:  # one line per interval, not one per refusal
            log.warning("shedding load: %d requests refused in %.0f s (MAX_IN_FLIGHT %d)",
                        self.shed, now - self._logged, self.max_in_flight)  # fmt: skip
            self.shed, self._logged = 0, now
        # The request body is never read: uvicorn discards it, and the connection stays usable.
        await send(self._start)
        await send({"type": "http.response.body", "body": self._body})
