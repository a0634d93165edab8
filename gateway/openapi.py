"""/openapi.json, generated from the route table, the body models, the error table and the
reserve strategy. Success bodies have schemas (below) that follow the JSON the SQL builds
(sql/functions/00_internal.sql, the *_json helpers); a test checks responses against them.
"""

from __future__ import annotations

from typing import Any

from gateway.config import Settings
from gateway.errors import ERRORS, PROBLEM_JSON, TYPE_PREFIX
from gateway.models import ADMISSION_TOKEN_PATTERN, IDEMPOTENCY_KEY_PATTERN, WebhookEvent
from gateway.onsale.join import BATCH_FUNCTION as JOIN_BATCH_FUNCTION
from gateway.onsale.reserve import ROUTE_FUNCTION, function_for
from gateway.routes import ADMIN, PAGE_DEFAULT, PAGE_MAX, PATH_TEXT_LIMITS, PUBLIC, QUERY_TEXT_LIMITS, ROUTES, Endpoint

JSON = "application/json"
NO_NUL = r"^[^\x00]*$"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _optional(schema: dict[str, Any], *names: str) -> dict[str, Any]:
    """`schema` with these members no longer required."""
    return {**schema, "required": [n for n in schema["required"] if n not in names]}


def _obj(properties: dict[str, Any]) -> dict[str, Any]:
    """An object with exactly these members, all present (the SQL always writes every key)."""
    return {"type": "object", "required": list(properties), "properties": properties}


def _null(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


UUID = {"type": "string", "format": "uuid"}
TIME = {"type": "string", "format": "date-time"}
MONEY = {"type": "string", "pattern": r"^[0-9]+\.[0-9]{2}$", "description": "decimal string, two places"}
COUNT = {"type": "integer", "minimum": 0}
CAP = {"type": "integer", "minimum": 1, "description": "seats one buyer may hold or own; null: no cap"}
RATE = {"type": "integer", "minimum": 1, "description": "people the waiting room admits per minute"}


def _enum(*values: str) -> dict[str, Any]:
    return {"type": "string", "enum": list(values)}


_TICKET_TYPE_LISTED = {
    "id": UUID, "event_id": UUID, "name": {"type": "string"}, "price": MONEY, "initial_quantity": COUNT,
    "start_sale_time": _null(TIME), "end_sale_time": _null(TIME), "max_per_user": _null(CAP),
}  # fmt: skip
_EVENT = {
    "id": UUID, "slug": {"type": "string"}, "name": {"type": "string"}, "description": _null({"type": "string"}),
    "banner_url": _null({"type": "string"}), "location": {"type": "string"}, "start_time": TIME, "end_time": TIME,
    "status": _enum("DRAFT", "PUBLISHED", "CANCELLED", "ENDED"), "max_tickets_per_user": _null(CAP),
    "queue_enabled": {"type": "boolean"}, "admission_rate_per_minute": _null(RATE),
}  # fmt: skip
_TICKET = {
    "ticket_code": {"type": "string"}, "ticket_type_id": UUID, "status": _enum("UNUSED", "CHECKED_IN", "CANCELLED"),
    "checkin_time": _null(TIME),
}  # fmt: skip

WEBHOOK_EVENT = _enum(*(e.value for e in WebhookEvent))
_WEBHOOK = {
    "id": UUID, "url": {"type": "string"}, "events": {"type": "array", "items": WEBHOOK_EVENT, "minItems": 1},
    "event_id": _null({**UUID, "description": "only this event's notifications; null: all"}),
    "active": {"type": "boolean", "description": "false once deleted, or disabled by a 410 answer"},
    "created_at": TIME,
}  # fmt: skip

RESPONSE_SCHEMAS: dict[str, Any] = {
    "User": _obj({"id": UUID, "email": {"type": "string"}, "full_name": {"type": "string"},
                  "role": _enum("user", "admin"), "created_at": TIME}),
    "Token": _obj({"access_token": {"type": "string"}, "token_type": _enum("bearer"),
                   "expires_in": {"type": "integer", "minimum": 1},
                   "refresh_token": {"type": "string", "pattern": "^[A-Za-z0-9_-]{43}$",
                                     "description": "opaque; spent by POST /auth/refresh"}}),
    "TicketTypeListed": _obj(_TICKET_TYPE_LISTED),
    "TicketType": _obj({**_TICKET_TYPE_LISTED, "available_quantity": COUNT, "on_sale": {"type": "boolean"}}),
    "EventListed": _obj({**_EVENT, "ticket_types": {"type": "array", "items": _ref("TicketTypeListed")}}),
    "Event": _obj({**_EVENT, "ticket_types": {"type": "array", "items": _ref("TicketType")}}),
    "Reservation": _obj({"id": UUID, "user_id": UUID, "ticket_type_id": UUID,
                         "quantity": {"type": "integer", "minimum": 1, "maximum": 10},
                         "status": _enum("ACTIVE", "COMPLETED", "CANCELLED", "EXPIRED"),
                         "expires_at": TIME, "created_at": TIME}),
    "OrderItem": _obj({"ticket_type_id": UUID, "ticket_type_name": {"type": "string"}, "event_id": UUID,
                       "event_name": {"type": "string"}, "event_start_time": TIME,
                       "quantity": {"type": "integer", "minimum": 1}, "unit_price": MONEY}),
    "Payment": _optional(_obj({"method": _enum("MOMO", "ZALOPAY", "BANKING", "CARD"), "amount": MONEY,
                               "status": _enum("PENDING", "SUCCESS", "FAILED", "REFUNDED"),
                               "transaction_id": {"type": "string"}, "payment_time": _null(TIME),
                               "pay_url": _null({"type": "string", "description": "where the buyer pays"}),
                               "expires_at": _null(TIME)}), "pay_url", "expires_at"),  # provider mode
    "Ticket": _obj(_TICKET),
    "Order": _obj({"id": UUID, "status": _enum("PENDING", "PAID", "CANCELLED", "TIMEOUT", "REFUND_PENDING",
                                                  "REFUNDED"), "total_amount": MONEY,
                   "created_at": TIME, "reservation_id": _null(UUID),
                   "items": {"type": "array", "items": _ref("OrderItem")},
                   "payment": _null(_ref("Payment")), "tickets": {"type": "array", "items": _ref("Ticket")}}),
    "CheckedIn": _obj(_TICKET),
    "QueuePlace": _obj({"event_id": UUID, "status": _enum("waiting", "admitted"),
                        "position": _null({"type": "integer", "minimum": 1,
                                           "description": "null until the sale opens (then a shuffle decides)"}),
                        "ahead": _null(COUNT),
                        "eta_seconds": _null({**COUNT, "description": "null while admission is paused"}),
                        "admission_token": _null({"type": "string", "description": "send as X-Admission-Token"}),
                        "admission_expires_at": _null(TIME),
                        "poll_after_seconds": _null({"type": "integer", "minimum": 2, "maximum": 30,
                                                     "description": "ask again after this many seconds "
                                                                    "(jittered); null once admitted"})}),
    "Webhook": _obj({**_WEBHOOK, "disabled_at": _null(TIME), "disabled_reason": _null({
        "type": "string", "description": "deleted by its owner, or the receiver answered 410 Gone"})}),
    "WebhookCreated": _obj({**_WEBHOOK, "secret": {
        "type": "string", "pattern": "^whsec_[0-9a-f]{48}$",
        "description": "the HMAC-SHA256 key of X-Booking-Signature; shown only in this answer"}}),
    "WebhookAttempt": _obj({
        "delivery_id": {**UUID, "description": "X-Booking-Delivery: one notification to this webhook"},
        "notification_id": {**UUID, "description": "the body's id: the same for every webhook told of it"},
        "event_type": WEBHOOK_EVENT, "attempt": {"type": "integer", "minimum": 1}, "attempted_at": TIME,
        "status_code": _null({"type": "integer", "description": "the receiver's answer; null: none (network error)"}),
        "error": _null({"type": "string"}), "duration_ms": _null(COUNT),
        "outcome": _enum("DELIVERED", "RETRY", "GONE", "REFUSED", "FAILED"),
        "delivery_status": _enum("PENDING", "DELIVERED", "FAILED", "CANCELLED")}),
    "Status": _obj({"status": {"type": "string"}}),
    "Problem": {
        "type": "object",
        "description": "RFC 9457 problem details plus the contract's code and message.",
        "required": ["type", "title", "status", "code", "message"],
        "properties": {
            "type": {"type": "string", "description": f"{TYPE_PREFIX}<code>"},
            "title": {"type": "string"},
            "status": {"type": "integer"},
            "code": {"type": "string", "enum": sorted(ERRORS)},
            "message": {"type": "string"},
            "detail": {"type": "string"},
            "hint": {"type": "string"},
        },
    },
}  # fmt: skip

HEADERS = {
    "WWW-Authenticate": {"description": 'RFC 6750: `Bearer`, or `Bearer error="invalid_token"`', "required": True,
                         "schema": {"type": "string"}},
    "Retry-After": {"description": "seconds", "required": True, "schema": {"type": "string"}},
    "Link": {"description": 'RFC 8288: `<...>; rel="next"` to the next page; absent on the last page',
             "schema": {"type": "string"}},
    "ETag": {"description": "of this page; send it back in If-None-Match", "required": True,
             "schema": {"type": "string"}},
    "Cache-Control": {"description": "public, short max-age", "required": True, "schema": {"type": "string"}},
}  # fmt: skip
IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key", "in": "header", "required": False,
    "schema": {"type": "string", "pattern": IDEMPOTENCY_KEY_PATTERN},
    "description": "1-255 visible ASCII characters. The same user, key and request within 24 hours gets the first "
                   "answer again (same status and body) and nothing is done twice; the same key with another "
                   "request: 422 idempotency_key_reused. Only successes are recorded: a refused request may be "
                   "retried with its key and is decided again.",
}  # fmt: skip
ADMISSION_TOKEN = {
    "name": "X-Admission-Token", "in": "header", "required": False,
    "schema": {"type": "string", "pattern": ADMISSION_TOKEN_PATTERN},
    "description": "Required for events with a waiting room (queue_enabled): the admission_token of "
                   "GET /events/{event_id}/queue, of the same user and event, unexpired; else 403 not_admitted.",
}  # fmt: skip
STATUS_HEADERS = {401: ["WWW-Authenticate"], 503: ["Retry-After"], 429: ["Retry-After"]}


def errors_of(e: Endpoint) -> list[str]:
    """Every error code a route can answer: its business errors, and what its shape implies."""
    codes: list[str] = []
    if e.auth != PUBLIC:
        codes.append("unauthorized")
    if e.auth == ADMIN:
        codes.append("forbidden")
    if e.body is not None or "{" in e.path or e.query:
        codes.append("validation_failed")
    if e.body is not None:
        codes.append("payload_too_large")
    codes += [c for c in e.errors if c not in codes]
    if e.rate_class:
        codes.append("rate_limited")
    codes += ["method_not_allowed", "internal_error", "busy"]
    return codes


def openapi_document(settings: Settings) -> dict[str, Any]:
    reserve_function = function_for(settings.reserve_strategy, settings.reserve_coalesce)
    paths: dict[str, Any] = {}
    schemas: dict[str, Any] = dict(RESPONSE_SCHEMAS)
    for e in ROUTES:
        function = reserve_function if e.function == ROUTE_FUNCTION else e.function
        if e.special == "join_queue":  # coalesced: gateway/onsale/join.py
            function = JOIN_BATCH_FUNCTION
        op: dict[str, Any] = {
            "summary": e.summary,
            "operationId": e.function,
            "description": f"Calls `api.{function}`.",
            "responses": {str(e.status): _success(e)},
        }
        params = [_path_parameter(name) for name in _path_names(e.path)] + [_query_parameter(q) for q in e.query]
        if e.special == "events":
            params.append({"name": "If-None-Match", "in": "header", "schema": {"type": "string"},
                           "description": "an ETag of this page: 304 when it is unchanged"})  # fmt: skip
            op["responses"]["304"] = {"description": "not modified", "headers": _headers("ETag", "Cache-Control")}
        if e.idempotent:
            params.append(IDEMPOTENCY_KEY)
        if e.special == "reserve":
            params.append(ADMISSION_TOKEN)
        if params:
            op["parameters"] = params
        if e.body is not None:
            schema = e.body.model_json_schema(ref_template="#/components/schemas/{model}")
            schemas.update(schema.pop("$defs", {}))
            schemas[e.body.__name__] = schema
            op["requestBody"] = {"required": True, "content": {JSON: {"schema": _ref(e.body.__name__)}}}
        if e.auth != PUBLIC:
            op["security"] = [{"bearer": []}]
        for code in errors_of(e):
            _document_error(op, code)
        paths.setdefault(e.path, {})[e.method.lower()] = op
    for path, summary, op_id in (("/healthz", "The process is up", "healthz"),
                                 ("/readyz", "The database answers", "readyz")):  # fmt: skip
        op = {"summary": summary, "operationId": op_id,
              "responses": {"200": {"description": "ok", "content": {JSON: {"schema": _ref("Status")}}}}}  # fmt: skip
        _document_error(op, "method_not_allowed")
        if path == "/readyz":
            _document_error(op, "busy")
        paths[path] = {"get": op}
    paths["/metrics"] = {"get": {
        "summary": "Prometheus metrics (text format); a bearer token only when METRICS_TOKEN is set",
        "operationId": "metrics",
        "responses": {"200": {"description": "the metrics", "content": {"text/plain": {"schema": {"type": "string"}}}}},
    }}  # fmt: skip
    _document_error(paths["/metrics"]["get"], "method_not_allowed")
    _document_error(paths["/metrics"]["get"], "unauthorized")
    paths["/events/{event_id}/waiting-room"] = {"get": {
        "summary": "The page fans wait on (HTML): joins, polls, shows the place, then the admission token",
        "operationId": "waiting_room_page",
        "parameters": [{"name": "event_id", "in": "path", "required": True, "schema": UUID}],
        "responses": {"200": {"description": "the page", "content": {"text/html": {"schema": {"type": "string"}}}}},
    }}  # fmt: skip
    _document_error(paths["/events/{event_id}/waiting-room"]["get"], "method_not_allowed")
    _document_error(paths["/events/{event_id}/waiting-room"]["get"], "validation_failed")
    payment_paths(paths, schemas, settings)
    return {
        "openapi": "3.1.0",
        "info": {"title": "Event ticket booking", "version": "1"},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
        },
    }


def _success(e: Endpoint) -> dict[str, Any]:
    if e.status == 204 or e.returns is None:
        return {"description": "done, no body"}
    if e.returns.startswith("["):
        schema: dict[str, Any] = {"type": "array", "items": _ref(e.returns.strip("[]"))}
        headers = (["Link"] if "cursor" in e.query else []) + (
            ["ETag", "Cache-Control"] if e.special == "events" else []
        )
        answer = {"description": "a page" if "limit" in e.query else "a list", "content": {JSON: {"schema": schema}}}
        return {**answer, "headers": _headers(*headers)} if headers else answer
    return {"description": "success", "content": {JSON: {"schema": _ref(e.returns)}}}


def _document_error(op: dict[str, Any], code: str) -> None:
    status = ERRORS[code].status
    entry = op["responses"].setdefault(
        str(status), {"description": "", "content": {PROBLEM_JSON: {"schema": _ref("Problem")}}}
    )
    entry["description"] = ", ".join(filter(None, [entry["description"], code]))
    if status in STATUS_HEADERS:
        entry["headers"] = _headers(*STATUS_HEADERS[status])
    if status == 405:
        entry["headers"] = {"Allow": {"description": "the methods this path takes", "required": True,
                                      "schema": {"type": "string"}}}  # fmt: skip


def _headers(*names: str) -> dict[str, Any]:
    return {name: HEADERS[name] for name in names}


def _path_parameter(name: str) -> dict[str, Any]:
    if name in PATH_TEXT_LIMITS:
        schema: dict[str, Any] = {"type": "string", "minLength": 1, "maxLength": PATH_TEXT_LIMITS[name],
                                  "pattern": NO_NUL}  # fmt: skip
    else:
        schema = {"type": "string", "format": "uuid"}
    return {"name": name, "in": "path", "required": True, "schema": schema}


def _query_parameter(name: str) -> dict[str, Any]:
    if name == "limit":
        schema: dict[str, Any] = {"type": "integer", "minimum": 1, "maximum": PAGE_MAX, "default": PAGE_DEFAULT}
        about = f"page size, default {PAGE_DEFAULT}, at most {PAGE_MAX}"
    elif name == "cursor":
        schema = {"type": "string", "maxLength": 200}
        about = 'opaque: copy it from the Link rel="next" of the previous page'
    else:
        schema = {"type": "string", "maxLength": QUERY_TEXT_LIMITS[name], "pattern": NO_NUL}
        about = "words to search for in names"
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": about}


def _path_names(path: str) -> list[str]:
    return [part[1:-1] for part in path.split("/") if part.startswith("{")]


# ------------------------------------------------------------------ payments (issue 12)

_CALLBACK_SCHEMAS: dict[str, Any] = {
    "MomoIpn": {**_obj({
        "partnerCode": {"type": "string"}, "orderId": {"type": "string"}, "requestId": {"type": "string"},
        "amount": {"type": "integer"}, "orderInfo": {"type": "string"}, "orderType": {"type": "string"},
        "transId": {"type": "integer"}, "resultCode": {"type": "integer"}, "message": {"type": "string"},
        "payType": {"type": "string"}, "responseTime": {"type": "integer"}, "extraData": {"type": "string"},
        "signature": {"type": "string", "description": "hex HMAC-SHA256 under MOMO_SECRET_KEY (API.md)"},
    }), "description": "MoMo's IPN, as MoMo sends it"},
    "ZaloPayCallback": {**_obj({
        "data": {"type": "string", "description": "a JSON object as text: app_id, app_trans_id, amount, "
                                                  "zp_trans_id, server_time, ..."},
        "mac": {"type": "string", "description": "hex HMAC-SHA256 of `data` under ZALOPAY_KEY2"},
        "type": {"type": "integer"},
    }), "description": "ZaloPay's callback, as ZaloPay sends it"},
    "ZaloPayAnswer": _obj({"return_code": {"type": "integer", "enum": [1, 0, -1]},
                           "return_message": {"type": "string"}}),
    "TransferWebhook": {**_obj({
        "transaction_id": {"type": "string"}, "amount": {"anyOf": [{"type": "integer"}, {"type": "string"}]},
        "status": _enum("SUCCESS", "FAILED"), "provider_txn_id": {"type": "string"},
    }), "description": "the bank's or card processor's webhook; header X-Signature: sha256=<hex HMAC of the body>"},
    "SandboxOutcome": _obj({"outcome": _enum("success", "failure", "lost")}),
}  # fmt: skip
X_SIGNATURE = {"name": "X-Signature", "in": "header", "required": False, "schema": {"type": "string"},
               "description": "sha256=<hex HMAC-SHA256 of the raw body> under its webhook secret"}  # fmt: skip
METHODS = _enum("MOMO", "ZALOPAY", "BANKING", "CARD")
HTML = {"text/html": {"schema": {"type": "string"}}}


def payment_paths(paths: dict[str, Any], schemas: dict[str, Any], settings: Settings) -> None:
    """The providers' callbacks (public, signed: gateway/payments/callbacks.py) and, where it
    exists (PAYMENT_SANDBOX=yes, PAYMENT_MODE=provider, not production), the sandbox page. The sandbox's stub providers
    under /payments/sandbox/api/ speak the providers' own formats and are not described here
    (docs/DESIGN-NOTES.md, "Provider APIs")."""
    from gateway.payments import callbacks  # not at the top: callbacks imports the app's helpers

    schemas.update(_CALLBACK_SCHEMAS)
    for path, body, summary in (
        (callbacks.MOMO_PATH, "MomoIpn", "MoMo's payment notice (IPN), verified by its signature"),
        (callbacks.ZALOPAY_PATH, "ZaloPayCallback", "ZaloPay's payment callback, verified by its mac"),
        (callbacks.BANK_PATH, "TransferWebhook", "The bank's transfer webhook, verified by X-Signature"),
        (callbacks.CARD_PATH, "TransferWebhook", "The card processor's webhook, verified by X-Signature"),
    ):
        op: dict[str, Any] = {
            "summary": summary,
            "operationId": "payment_callback_" + path.split("/")[2],
            "description": "Public (the provider calls it); refused unless correctly signed.",
            "requestBody": {"required": True, "content": {JSON: {"schema": _ref(body)}}},
        }
        if body == "TransferWebhook":
            op["parameters"] = [X_SIGNATURE]
        if path == callbacks.ZALOPAY_PATH:  # always 200: ZaloPay reads return_code
            op["responses"] = {"200": {"description": "return_code 1 accepted; 0 refused or the database busy "
                                                      "(ZaloPay retries); -1 bad mac or malformed",
                                       "content": {JSON: {"schema": _ref("ZaloPayAnswer")}}}}  # fmt: skip
            codes = ["payload_too_large"]
        else:
            op["responses"] = {"204": {"description": "accepted (or a duplicate, acknowledged again)"}}
            codes = ["invalid_signature", "validation_failed", "payment_refused", "payload_too_large", "busy"]
        for code in [*codes, "method_not_allowed", "internal_error"]:
            _document_error(op, code)
        paths[path] = {"post": op}
    if not settings.sandbox:
        return
    params = [{"name": "transaction_id", "in": "path", "required": True,
               "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"}},
              {"name": "method", "in": "query", "required": True, "schema": METHODS},
              {"name": "amount", "in": "query", "required": True,
               "schema": {"type": "integer", "minimum": 1}}]  # fmt: skip
    page = {"summary": "Development only: the stand-in for a provider's payment page (HTML)",
            "operationId": "sandbox_page", "parameters": params,
            "responses": {"200": {"description": "the page", "content": HTML}}}  # fmt: skip
    pay = {"summary": "Development only: record the outcome at the stub provider and send its signed callback "
                      "(none for `lost`)",
           "operationId": "sandbox_pay", "parameters": params,
           "requestBody": {"required": True, "content": {JSON: {"schema": _ref("SandboxOutcome")}}},
           "responses": {"200": {"description": "what happened, with the callback's status and a summary",
                                 "content": {JSON: {"schema": {"type": "object"}}}}}}  # fmt: skip
    for op in (page, pay):
        for code in ("validation_failed", "method_not_allowed", "internal_error", "busy"):
            _document_error(op, code)
    for code in ("not_found", "conflict"):  # a payment the stub does not know, or not this one's, or settled
        _document_error(pay, code)
    paths["/payments/sandbox/{transaction_id}"] = {"get": page, "post": pay}
