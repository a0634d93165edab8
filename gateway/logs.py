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
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

LOG_CONFIG_FILE = Path(__file__).with_name("logging.json")
REQUEST_ID_HEADER = b"x-request-id"
REQUEST_ID_MAX = 128

access_log = logging.getLogger("gateway.access")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
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
        return json.dumps(entry, default=str)


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
            if access_log.isEnabledFor(logging.INFO):
                route = route_template(scope)
                fields = {
                    "request_id": rid,
                    "method": scope["method"],
                    "route": route,
                    "status": status,
                    "ms": round((time.perf_counter() - started) * 1000, 2),
                    "user_id": scope["state"].get("user_id"),
                }
                access_log.info("%s %s %s", scope["method"], route or "-", status, extra={"fields": fields})
