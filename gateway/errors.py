"""The one error vocabulary: every code the API answers, its HTTP status, and the problem body.

Codes come from two places, merged once into ERRORS: the registry in sql/errors.toml (the
business errors our api functions raise; DBAs read the same file) and the gateway's own codes
below (auth, routing, limits, the database being unavailable). Nothing else states a status:
ApiError looks it up from the code, and /openapi.json documents the same table.

Bodies are RFC 9457 problem details (`application/problem+json`): `type`, `title`, `status`,
plus the contract's `code` and `message` (and `detail`, `hint` for 4xx when there are some).
"""

from __future__ import annotations

import logging
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg_pool import PoolTimeout
from starlette.responses import JSONResponse

log = logging.getLogger("gateway.errors")

PROBLEM_JSON = "application/problem+json"
TYPE_PREFIX = "urn:booking:problem:"  # + code: a stable identifier of the problem type


@dataclass(frozen=True)
class ErrorCode:
    code: str
    status: int
    meaning: str  # the problem type's `title`: the same for every occurrence


REGISTRY_FILE = Path(__file__).resolve().parent.parent / "sql" / "errors.toml"
_REGISTRY_ROWS = tomllib.loads(REGISTRY_FILE.read_text())
# SQLSTATE -> code, for the errors our api functions raise.
REGISTRY: dict[str, str] = {sqlstate: entry["code"] for sqlstate, entry in _REGISTRY_ROWS.items()}

# The gateway's own codes (never raised in SQL).
GATEWAY_CODES = [
    ErrorCode("validation_failed", 422, "A body, path or query value is invalid (also: a body that is not JSON)."),
    ErrorCode("unauthorized", 401, "No bearer token, or an invalid or expired one."),
    ErrorCode("invalid_credentials", 401, "Wrong e-mail or password."),
    ErrorCode("forbidden", 403, "The caller's role may not do this."),
    ErrorCode("not_found", 404, "No such thing, or it is not yours."),
    ErrorCode("method_not_allowed", 405, "This path does not take this method; `Allow` lists the ones it takes."),
    ErrorCode("conflict", 409, "The request conflicts with existing data."),
    ErrorCode("rate_limited", 429, "Too many requests from this user or address; retry after `Retry-After` seconds."),
    ErrorCode(
        "url_not_allowed",
        422,
        "A webhook URL points at an address webhooks may not reach (loopback, private, "
        "link-local, reserved): directly or through its name.",
    ),
    # Payment callbacks (gateway/payments/callbacks.py).
    ErrorCode("invalid_signature", 401, "A payment callback whose signature is missing or does not verify."),
    ErrorCode(
        "payment_refused",
        422,
        "A verified payment callback the booking does not accept (its amount differs from the order's, "
        "or it names no payment of ours); it is recorded and changes nothing.",
    ),
    # Checkout in production provider mode (gateway/app.py): creating the payment at the provider.
    ErrorCode(
        "provider_unavailable",
        502,
        "The payment provider could not be reached in time or gave an unusable answer. The order "
        "stays PENDING until its deadline: repeat the checkout with the same Idempotency-Key to get its pay_url.",
    ),
    ErrorCode("payload_too_large", 413, "The body is larger than the gateway accepts (MAX_BODY_BYTES)."),
    # Answered by the serving protocol (gateway/serving.py) before a request reaches the app.
    ErrorCode("header_timeout", 408, "The request head did not arrive in time (HEADER_TIMEOUT_SECONDS)."),
    ErrorCode("header_too_large", 431, "The request line and headers are larger than accepted (MAX_HEADER_BYTES)."),
    ErrorCode("internal_error", 500, "A bug. Nothing more is said; the log has the details."),
    ErrorCode("busy", 503, "The database is busy or unreachable; retry after `Retry-After` seconds."),
    # Answered by HAProxy (ops/haproxy/haproxy.cfg, `http-error`) in front of several gateways.
    ErrorCode(
        "upstream_failed",
        502,
        "The gateway instance handling the request went away before answering (answered by the load "
        "balancer). A GET was already retried on another instance; a write may or may not have run: "
        "repeat it with the same Idempotency-Key.",
    ),
    ErrorCode(
        "upstream_timeout",
        504,
        "No gateway instance answered in time (answered by the load balancer). A write may or may not "
        "have run: repeat it with the same Idempotency-Key.",
    ),
]
ERRORS: dict[str, ErrorCode] = {e.code: e for e in GATEWAY_CODES}
for _sqlstate, _entry in _REGISTRY_ROWS.items():
    _known = ERRORS.get(_entry["code"])
    if _known is not None and _known.status != _entry["status"]:
        raise RuntimeError(f"{REGISTRY_FILE}: {_sqlstate} gives {_entry['code']} status {_entry['status']}, "
                           f"the gateway says {_known.status}")  # fmt: skip
    ERRORS.setdefault(_entry["code"], ErrorCode(_entry["code"], _entry["status"], _entry["meaning"]))

GENERIC_MESSAGES = {
    "busy": "the service is busy; retry shortly",
    "upstream_failed": "the gateway instance of this request failed before answering",
    "upstream_timeout": "no gateway instance answered in time",
    "conflict": "the request conflicts with existing data",
    "not_found": "a referenced resource does not exist",
    "validation_failed": "a value is invalid",
    "internal_error": "internal error",
}


@dataclass
class ApiError(Exception):
    """An answer that is not a success. The status follows from the code (ERRORS)."""

    code: str
    message: str
    detail: str | None = None
    hint: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.code not in ERRORS:
            raise ValueError(f"unknown error code {self.code!r}: add it to gateway/errors.py or sql/errors.toml")

    @property
    def status(self) -> int:
        return ERRORS[self.code].status

    def body(self) -> dict[str, Any]:
        entry = ERRORS[self.code]
        body: dict[str, Any] = {
            "type": TYPE_PREFIX + self.code,
            "title": entry.meaning,
            "status": entry.status,
            "code": self.code,
            "message": self.message,
        }
        if entry.status < 500:  # a 5xx says nothing beyond its code
            if self.detail:
                body["detail"] = self.detail
            if self.hint:
                body["hint"] = self.hint
        return body

    def response(self) -> JSONResponse:
        headers = dict(self.headers)
        if self.status in (429, 503):
            headers.setdefault("Retry-After", "1")
        if self.status == 401:
            headers.setdefault("WWW-Authenticate", "Bearer")
        return JSONResponse(self.body(), status_code=self.status, headers=headers, media_type=PROBLEM_JSON)


# ------------------------------------------------------------------ named constructors


def validation_failed(message: str) -> ApiError:
    return ApiError("validation_failed", message)


def unauthorized(message: str = "a bearer token is required", *, invalid_token: bool = False) -> ApiError:
    """RFC 6750: no credentials -> plain `Bearer`; a token that did not verify -> error="invalid_token"."""
    challenge = 'Bearer error="invalid_token"' if invalid_token else "Bearer"
    return ApiError("unauthorized", message, headers={"WWW-Authenticate": challenge})


def invalid_credentials() -> ApiError:
    return ApiError("invalid_credentials", "wrong e-mail or password")


def forbidden(message: str = "this needs the admin role") -> ApiError:
    return ApiError("forbidden", message)


def not_found(message: str = "no such resource") -> ApiError:
    return ApiError("not_found", message)


def method_not_allowed(method: str, allowed: list[str]) -> ApiError:
    return ApiError(
        "method_not_allowed", f"{method} is not allowed here", headers={"Allow": ", ".join(sorted(allowed))}
    )


def payload_too_large(limit: int) -> ApiError:
    return ApiError("payload_too_large", f"the body must be at most {limit} bytes")


def rate_limited(retry_after: int, message: str = "too many requests; retry later") -> ApiError:
    return ApiError("rate_limited", message, headers={"Retry-After": str(max(1, retry_after))})


def url_not_allowed(reason: str) -> ApiError:
    return ApiError(
        "url_not_allowed",
        f"webhooks may not reach this URL: {reason}",
        hint="webhooks go to public addresses only; WEBHOOK_ALLOW_PRIVATE=yes on the gateway and worker allows "
        "private ones (local development)",
    )


def busy() -> ApiError:
    return ApiError("busy", GENERIC_MESSAGES["busy"])


def internal_error() -> ApiError:
    return ApiError("internal_error", GENERIC_MESSAGES["internal_error"])


# ------------------------------------------------------------------ from the database

# PostgreSQL's own SQLSTATEs (exact code first, then the two-character class) -> code.
BUILTIN: dict[str, str] = {
    "55P03": "busy",  # lock_not_available (lock_timeout)
    "57014": "busy",  # query_canceled (statement_timeout)
    "40001": "busy",  # serialization_failure
    "40P01": "busy",  # deadlock_detected
    "57P01": "busy",  # admin_shutdown
    "57P02": "busy",  # crash_shutdown
    "57P03": "busy",  # cannot_connect_now
    "25006": "busy",  # read_only_sql_transaction: the node became a standby (a failover) under us
    "08": "busy",  # connection exceptions
    "53": "busy",  # insufficient resources (too many connections, out of memory)
    "23505": "conflict",  # unique_violation
    "23503": "not_found",  # foreign_key_violation: a referenced row is gone
    "23": "validation_failed",  # other integrity violations (check, not null)
    "22": "validation_failed",  # data exceptions (bad number, too long, bad date)
}


def _builtin(sqlstate: str) -> str | None:
    return BUILTIN.get(sqlstate) or BUILTIN.get(sqlstate[:2])


def from_sqlstate(sqlstate: str, message: str, detail: str | None = None, hint: str | None = None) -> ApiError:
    """An error one of our api functions reported (raised, or answered in a batch)."""
    if sqlstate in REGISTRY:
        return ApiError(REGISTRY[sqlstate], message, detail, hint)
    code = _builtin(sqlstate)
    if code:
        return ApiError(code, GENERIC_MESSAGES[code])
    log.error("unexpected SQLSTATE %s: %s", sqlstate, message)
    return internal_error()


def from_database(exc: Exception) -> ApiError:
    """Translate a psycopg / pool exception into the API's error."""
    if isinstance(exc, PoolTimeout):
        return busy()
    if isinstance(exc, psycopg.Error):
        diag = exc.diag
        sqlstate = diag.sqlstate or ""
        if sqlstate in REGISTRY or _builtin(sqlstate):
            return from_sqlstate(sqlstate, diag.message_primary or "", diag.message_detail, diag.message_hint)
        if isinstance(exc, psycopg.OperationalError):
            return busy()  # connection lost, server gone
    log.error("unexpected database error", exc_info=exc)
    return internal_error()


def is_connection_problem(exc: Exception) -> bool:
    if isinstance(exc, psycopg.OperationalError) and not isinstance(exc, PoolTimeout):
        sqlstate = exc.diag.sqlstate or ""
        return sqlstate[:2] in ("", "08", "57")
    return False
