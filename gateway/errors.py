"""The one error map: SQLSTATE -> (HTTP status, API code), and the JSON problem body.

Business errors come from the registry in sql/errors.toml (the same file DBAs read);
PostgreSQL's own classes that mean "try again" become 503 busy.
"""

from __future__ import annotations

import logging
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg_pool import PoolTimeout
from starlette.responses import JSONResponse

log = logging.getLogger("gateway.errors")

REGISTRY_FILE = Path(__file__).resolve().parent.parent / "sql" / "errors.toml"
REGISTRY: dict[str, tuple[int, str]] = {
    sqlstate: (entry["status"], entry["code"]) for sqlstate, entry in tomllib.loads(REGISTRY_FILE.read_text()).items()
}

BUSY = (503, "busy")
# PostgreSQL's own SQLSTATEs (exact code first, then the two-character class).
BUILTIN: dict[str, tuple[int, str]] = {
    "55P03": BUSY,  # lock_not_available (lock_timeout)
    "57014": BUSY,  # query_canceled (statement_timeout)
    "40001": BUSY,  # serialization_failure
    "40P01": BUSY,  # deadlock_detected
    "57P01": BUSY,  # admin_shutdown
    "57P02": BUSY,  # crash_shutdown
    "57P03": BUSY,  # cannot_connect_now
    "08": BUSY,  # connection exceptions
    "53": BUSY,  # insufficient resources (too many connections, out of memory)
    "23505": (409, "conflict"),  # unique_violation
    "23503": (404, "not_found"),  # foreign_key_violation: a referenced row is gone
    "23": (422, "validation_failed"),  # other integrity violations (check, not null)
    "22": (422, "validation_failed"),  # data exceptions (bad number, too long, bad date)
}
GENERIC_MESSAGES = {
    "busy": "the service is busy; retry shortly",
    "conflict": "the request conflicts with existing data",
    "not_found": "a referenced resource does not exist",
    "validation_failed": "a value is invalid",
    "internal_error": "internal error",
}


@dataclass
class ApiError(Exception):
    status: int
    code: str
    message: str
    detail: str | None = None
    hint: str | None = None

    def response(self) -> JSONResponse:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.status < 500:
            if self.detail:
                body["detail"] = self.detail
            if self.hint:
                body["hint"] = self.hint
        headers = {"Retry-After": "1"} if self.status in (429, 503) else None
        return JSONResponse(body, status_code=self.status, headers=headers)


def from_sqlstate(sqlstate: str, message: str, detail: str | None = None, hint: str | None = None) -> ApiError:
    """An error one of our api functions reported (raised, or answered in a batch)."""
    if sqlstate in REGISTRY:
        return ApiError(*REGISTRY[sqlstate], message, detail, hint)
    mapped = BUILTIN.get(sqlstate) or BUILTIN.get(sqlstate[:2])
    if mapped:
        return ApiError(*mapped, GENERIC_MESSAGES[mapped[1]])
    log.error("unexpected SQLSTATE %s: %s", sqlstate, message)
    return ApiError(500, "internal_error", GENERIC_MESSAGES["internal_error"])


def from_database(exc: Exception) -> ApiError:
    """Translate a psycopg / pool exception into the API's error."""
    if isinstance(exc, PoolTimeout):
        return ApiError(*BUSY, GENERIC_MESSAGES["busy"])
    if isinstance(exc, psycopg.Error):
        diag = exc.diag
        sqlstate = diag.sqlstate or ""
        if sqlstate in REGISTRY or BUILTIN.get(sqlstate) or BUILTIN.get(sqlstate[:2]):
            return from_sqlstate(sqlstate, diag.message_primary or "", diag.message_detail, diag.message_hint)
        if isinstance(exc, psycopg.OperationalError):
            return ApiError(*BUSY, GENERIC_MESSAGES["busy"])  # connection lost, server gone
    log.error("unexpected database error", exc_info=exc)
    return ApiError(500, "internal_error", GENERIC_MESSAGES["internal_error"])


def is_connection_problem(exc: Exception) -> bool:
    if isinstance(exc, psycopg.OperationalError) and not isinstance(exc, PoolTimeout):
        sqlstate = exc.diag.sqlstate or ""
        return sqlstate[:2] in ("", "08", "57")
    return False
