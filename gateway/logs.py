"""Logs as JSON lines, and the access log with request ids.

Every line is one JSON object: time (RFC 3339, UTC), level, logger, message, plus the record's
`fields` (the access log's) and `exception` when there is one. `make run` hands uvicorn
gateway/logging.json, so uvicorn's own lines are JSON too; create_app() sets up the gateway
loggers the same way when nothing else has (tests, other servers).

Access lines carry the route TEMPLATE (`/tickets/{ticket_code}/check-in`), never the concrete
path: a ticket code in a path is as good as the ticket. Unmatched paths log no path at all.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from pathlib import Path
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway import metrics

LOG_CONFIG_FILE = Path(__file__).with_name("logging.json")
REQUEST_ID_HEADER = b"x-request-id"
REQUEST_ID_MAX = 128

access_log = logging.getLogger("gateway.access")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": rfc3339_ms(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update((k, v) for k, v in fields.items() if k not in entry)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return _ENCODER.encode(entry)


# One encoder for every line: json.dumps(entry, default=str) built a new JSONEncoder per call.
# Same output (json.dumps' defaults plus default=str).
_ENCODER = json.JSONEncoder(default=str)
_second: tuple[int, str] = (-1, "")  # the last whole second formatted, and its text


def rfc3339_ms(created: float) -> str:
    """`datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")` with `Z` for
    `+00:00`, the same text, at a fraction of the cost: the date and time of day are formatted once
    per second (every access line needs one; issue 10 measured the log line at ~28 us/request)."""
    global _second
    whole = int(created // 1)  # datetime's own rounding: to the microsecond, half to even
    micros = round((created - whole) * 1e6)
    if micros >= 1_000_000:
        whole, micros = whole + 1, micros - 1_000_000
    if _second[0] != whole:
        _second = (whole, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)))
    return f"{_second[1]}.{micros // 1000:03d}Z"


def configure_logging() -> None:
    """JSON lines on stderr for the `gateway` loggers, unless a log config already set them up."""
    gateway = logging.getLogger("gateway")
    if gateway.handlers:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    gateway.addHandler(handler)
    gateway.setLevel(logging.INFO)
    gateway.propagate = False


def request_id(scope: Scope) -> str:
    """The client's X-Request-ID if it is 1-128 visible ASCII characters, else a new one."""
    for name, value in scope["headers"]:
        if name == REQUEST_ID_HEADER:
            if 0 < len(value) <= REQUEST_ID_MAX and all(0x21 <= b <= 0x7E for b in value):
                return str(value.decode("ascii"))
            break
    return uuid.uuid4().hex


def route_template(scope: Scope) -> str | None:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else None


class AccessLog:
    """Outermost ASGI layer: gives each request an id (echoed in X-Request-ID on every response,
    errors included) and writes one access line: method, route template, status, ms, user id.
    No bodies, no tokens, no concrete paths."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        rid = request_id(scope)
        scope.setdefault("state", {})["request_id"] = rid
        status = 500
        header = (REQUEST_ID_HEADER, rid.encode("ascii"))

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [h for h in message.get("headers", ()) if h[0].lower() != REQUEST_ID_HEADER]
                message = {**message, "headers": [*headers, header]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - started
            route = route_template(scope)
            metrics.observe_request(route, scope["method"], status, seconds)
            if access_log.isEnabledFor(logging.INFO):
                fields = {
                    "request_id": rid,
                    "method": scope["method"],
                    "route": route,
                    "status": status,
                    "ms": round(seconds * 1000, 2),
                    "user_id": scope["state"].get("user_id"),
                }
                # Logger.info() less its caller lookup (a walk up the stack for a file and line the
                # JSON lines never show): the same record otherwise, through the same handlers.
                args = (scope["method"], route or "-", status)
                access_log.handle(
                    access_log.makeRecord(
                        access_log.name, logging.INFO, __file__, 0, "%s %s %s", args, None, "access", {"fields": fields}
                    )
                )
