"""The development stand-in for the providers' payment pages (only with PAYMENT_SANDBOX=yes and
PAYMENT_MODE=provider, never in production; otherwise the routes do not exist: 404).

GET  /payments/sandbox/{transaction_id}?method=&amount=  a tiny HTML page: Success, Failure, and
     "Success, but the callback is lost"
POST /payments/sandbox/{transaction_id}?method=&amount=  {outcome: success|failure|lost} (JSON or
     a form): records the outcome in the stub providers' state (gateway/payments/sandbox_api.py,
     PAYMENT_SANDBOX_DIR), so a later status query (the worker's reconciliation) agrees; then, for
     success and failure, builds that provider's correctly signed callback (with the provider
     transaction id just recorded) and POSTs it over HTTP to our own callback route at the
     address this server listens on (ASGI scope["server"]: never the Host header, never
     PUBLIC_BASE_URL), and answers its status and our own short summary (never its body).
     `lost` sends nothing: the order stays PENDING until reconciliation asks the provider.
     Only a payment the stub providers know (created by our checkout or their create API), still
     pending, with the same method and amount, can be settled here (404 / 409 otherwise): the
     page is no signing oracle for arbitrary references and amounts.
The checkout's pay_url carries method and amount, as a real provider is told them when the
payment is created. ZaloPay calls back on success only, so its failure sends nothing.
"""

from __future__ import annotations

import html
import json
import re
import secrets
import time
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway.config import Settings
from gateway.errors import ApiError, validation_failed
from gateway.payments import callbacks, momo, sandbox_api, webhook, zalopay
from gateway.payments.common import MalformedCallback, amount_of, whole_vnd

PATH = "/payments/sandbox/{transaction_id}"
METHODS = ("MOMO", "ZALOPAY", "BANKING", "CARD")
OUTCOMES = ("success", "failure", "lost")
TRANSACTION_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
CALLBACK_TIMEOUT = 10.0  # seconds for our own callback route to answer
# A server bound to every address is called back on loopback.
EVERY_ADDRESS = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}  # noqa: S104 (names, not a bind)
OUTCOME_MAX_BYTES = 1024  # {"outcome": "success"} or outcome=success
# What each callback answer means, for the sandbox's own summary (the callee's body is not repeated).
SUMMARY = {200: "acknowledged", 204: "applied", 401: "signature refused", 413: "too large",
           422: "refused by the booking", 503: "database busy: retry"}  # fmt: skip
MOMO_DENIED = 1006  # MoMo: "Transaction denied by user."

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Payment sandbox</title>
<style>body{{font-family:sans-serif;max-width:28em;margin:3em auto}}button{{font-size:1.2em;margin:.5em}}</style>
</head><body>
<h1>{method} sandbox</h1>
<p>Order reference <code>{transaction_id}</code>, amount <strong>{amount} VND</strong>.</p>
<p>This page stands in for the provider (development only). Choose what the provider reports:</p>
<form method="post"><button name="outcome" value="success">Success</button>
<button name="outcome" value="failure">Failure</button>
<button name="outcome" value="lost">Success, but the callback is lost</button></form>
<p><small>"Callback lost": the provider records the payment but never calls back; the order stays
PENDING until the worker's reconciliation asks the provider.</small></p>
</body></html>
"""
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
    "base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}


def pay_url(base_url: str, transaction_id: str, method: str, amount: Decimal | int | str) -> str:
    """Where the checkout sends the buyer in development (the stub providers' create answers it too)."""
    return sandbox_api.page_url(base_url, transaction_id, method, amount)


def base_url(settings: Settings, request: Request) -> str:
    """How the buyer reaches us (pay_url, the providers' notify and return URLs)."""
    return (settings.public_base_url or str(request.base_url)).rstrip("/")


def self_url(request: Request) -> str:
    """Our own listening address (ASGI scope["server"]), loopback when bound to every address:
    where the sandbox posts its callbacks. Never from the Host header or PUBLIC_BASE_URL, so a
    request cannot point the signed callback (or its answer) at another server."""
    server = request.scope.get("server")
    if not server or server[1] is None:
        raise ApiError("busy", "the sandbox cannot call back: this server does not listen on a TCP port")
    host, port = str(server[0]), int(server[1])
    host = EVERY_ADDRESS.get(host, host)
    if ":" in host:
        host = f"[{host}]"
    scheme = "https" if request.scope.get("scheme") == "https" else "http"
    return f"{scheme}://{host}:{port}"


def _params(request: Request) -> tuple[str, str, int]:
    transaction_id = request.path_params["transaction_id"]
    if not TRANSACTION_ID.fullmatch(transaction_id):
        raise validation_failed("transaction_id must be 1-64 letters, digits, '_' or '-'")
    method = request.query_params.get("method", "")
    if method not in METHODS:
        raise validation_failed(f"method must be one of {', '.join(METHODS)}")
    try:
        amount = whole_vnd(amount_of(request.query_params.get("amount", "")))
    except (MalformedCallback, ArithmeticError):
        raise validation_failed("amount must be a positive number") from None
    return transaction_id, method, amount


async def page(request: Request) -> Response:
    transaction_id, method, amount = _params(request)
    text = PAGE.format(method=html.escape(method), transaction_id=html.escape(transaction_id), amount=f"{amount:,}")
    return Response(text, media_type="text/html; charset=utf-8", headers=PAGE_HEADERS)


async def _outcome(request: Request) -> str:
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > OUTCOME_MAX_BYTES:
        raise validation_failed("the body must be {outcome}")
    raw = b""
    async for chunk in request.stream():  # stop reading past the limit
        raw += chunk
        if len(raw) > OUTCOME_MAX_BYTES:
            raise validation_failed("the body must be {outcome}")
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    outcome: Any = None
    if kind == "application/x-www-form-urlencoded":
        outcome = next(iter(parse_qs(raw.decode("utf-8", "replace")).get("outcome", [])), None)
    else:
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise validation_failed("the body must be JSON {outcome: success|failure|lost}") from None
        outcome = body.get("outcome") if isinstance(body, dict) else None
    if outcome not in OUTCOMES:
        raise validation_failed("outcome must be success, failure or lost")
    return str(outcome)


def callback_for(
    settings: Settings, method: str, transaction_id: str, amount: int, success: bool, provider_txn_id: str | None = None
) -> tuple[str, bytes, dict[str, str]] | None:
    """(path, body, headers) of the callback the provider would send; None when it sends none.
    `provider_txn_id`: the provider's id of this payment (digits; default a fresh one)."""
    now_ms = int(time.time() * 1000)
    provider_txn = int(provider_txn_id) if provider_txn_id else 10**12 + secrets.randbelow(9 * 10**12)
    json_headers = {"Content-Type": "application/json"}
    if method == "MOMO":
        fields = {
            "partnerCode": settings.momo_partner_code, "orderId": transaction_id, "requestId": transaction_id,
            "amount": amount, "orderInfo": "Sandbox payment", "orderType": "momo_wallet", "transId": provider_txn,
            "resultCode": momo.SUCCESS if success else MOMO_DENIED,
            "message": "Successful." if success else "Transaction denied by user.",
            "payType": "qr", "responseTime": now_ms, "extraData": "",
        }  # fmt: skip
        body = momo.signed_ipn(fields, settings.secret("momo_access_key"), settings.secret("momo_secret_key"))
        return callbacks.MOMO_PATH, json.dumps(body).encode(), json_headers
    if method == "ZALOPAY":
        if not success:
            return None
        known = settings.zalopay_app_id
        app_id: int | str = int(known) if known.isascii() and known.isdigit() else known
        data = {
            "app_id": app_id, "app_trans_id": transaction_id, "app_time": now_ms, "app_user": "sandbox",
            "amount": amount, "embed_data": "{}", "item": "[]", "zp_trans_id": provider_txn,
            "server_time": now_ms, "channel": 38, "merchant_user_id": "", "user_fee_amount": 0, "discount_amount": 0,
        }  # fmt: skip
        body = zalopay.signed_callback(data, settings.secret("zalopay_key2"))
        return callbacks.ZALOPAY_PATH, json.dumps(body).encode(), json_headers
    secret_field, path = ("bank_webhook_secret", callbacks.BANK_PATH) if method == "BANKING" else (
        "card_webhook_secret", callbacks.CARD_PATH)  # fmt: skip
    payload = {
        "transaction_id": transaction_id,
        "amount": amount,
        "status": "SUCCESS" if success else "FAILED",
        "provider_txn_id": str(provider_txn) if success else f"SBX-{secrets.token_hex(8)}",
    }
    raw, headers = webhook.signed_request(payload, settings.secret(secret_field))
    return path, raw, headers


def _settleable(state: sandbox_api.StubState, transaction_id: str, method: str, amount: int) -> None:
    """The payment as the stub providers know it: created, pending, same method and amount."""
    known = state.payment(transaction_id)
    if known is None:
        raise ApiError("not_found", "the sandbox knows no payment with this reference (checkout creates it)")
    if known.get("state") != "pending":
        raise ApiError("conflict", f"this payment is already {known.get('state')} at the provider")
    if known.get("method") != method or known.get("amount") != amount:
        raise ApiError("conflict", "method and amount must be the payment's own (as in its pay_url)")


async def pay(request: Request) -> Response:
    transaction_id, method, amount = _params(request)
    outcome = await _outcome(request)
    settings: Settings = request.app.state.gateway.settings
    state = sandbox_api.StubState(settings.sandbox_dir)  # what a later status query answers
    _settleable(state, transaction_id, method, amount)
    provider_txn_id = None
    if outcome == "failure":
        state.mark_failed(transaction_id, amount, method)
    else:
        provider_txn_id = state.mark_paid(transaction_id, amount, method)
    answer: dict[str, Any] = {"transaction_id": transaction_id, "method": method, "outcome": outcome}
    if outcome == "lost":
        answer["callback"] = None  # paid at the provider, never told: reconciliation finds it
        return JSONResponse(answer)
    callback = callback_for(settings, method, transaction_id, amount, outcome == "success", provider_txn_id)
    if callback is None:
        answer["callback"] = None  # ZaloPay reports failures only through its query API
        return JSONResponse(answer)
    path, body, headers = callback
    try:
        async with httpx.AsyncClient(timeout=CALLBACK_TIMEOUT) as client:
            response = await client.post(self_url(request) + path, content=body, headers=headers)
    except httpx.HTTPError as exc:
        raise ApiError("busy", f"the sandbox could not reach the callback route ({type(exc).__name__})") from None
    answer["callback"] = {"path": path, "status": response.status_code, "result": summary(method, response)}
    return JSONResponse(answer)


def summary(method: str, response: httpx.Response) -> str:
    """Our own words for a callback's answer: ZaloPay's return_code, else the HTTP status."""
    if method == "ZALOPAY" and response.status_code == 200:
        try:
            code = response.json().get("return_code")
        except (ValueError, AttributeError, RecursionError):
            code = None
        return {1: "applied", 0: "refused or busy: ZaloPay would retry", -1: "refused"}.get(code, "unreadable answer")
    return SUMMARY.get(response.status_code, f"HTTP {response.status_code}")


def routes(settings: Settings) -> dict[str, dict[str, Any]]:
    return {PATH: {"GET": page, "POST": pay}} if settings.sandbox else {}
