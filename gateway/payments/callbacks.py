"""The four callback routes: verify (the provider's module), apply (one call of
api.apply_payment_event), answer in the provider's form. Public, no bearer token, no rate limit
and never shed (gateway/shedding.py): a callback is money already taken, one per purchase, and
a forged one costs one HMAC before it is refused; the body limit is small.

| what happened                         | MoMo, bank, card            | ZaloPay (always 200)      |
|---------------------------------------|-----------------------------|---------------------------|
| applied, or a duplicate               | 204                         | return_code 1             |
| signature wrong, missing, not ours    | 401 invalid_signature       | return_code -1            |
| not the documented shape              | 422 validation_failed       | return_code -1            |
| wrong amount, unknown reference       | 422 payment_refused         | return_code 0 (retried)   |
| database busy or down                 | 503 busy                    | return_code 0 (retried)   |
| the database refuses the values       | its 4xx problem             | return_code -1            |
Only a verified callback reaches the database; a refused one leaves a log line and nothing else.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable

from psycopg.types.json import Jsonb
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway.config import Settings
from gateway.errors import ApiError, payload_too_large, validation_failed
from gateway.payments import momo, webhook, zalopay
from gateway.payments.common import BadSignature, CallbackRefused, MalformedCallback, PaymentEvent

log = logging.getLogger("gateway.payments")

APPLY_FUNCTION = "apply_payment_event"
CALLBACK_MAX_BYTES = 16384  # providers' callbacks are under 2 KiB
# Outcomes of api.apply_payment_event the provider is told it must not count as accepted.
REFUSED = frozenset({"wrong_amount", "unknown_reference"})

MOMO_PATH = "/payments/momo/ipn"
ZALOPAY_PATH = "/payments/zalopay/callback"
BANK_PATH = "/payments/bank/webhook"
CARD_PATH = "/payments/card/webhook"
PATHS = (MOMO_PATH, ZALOPAY_PATH, BANK_PATH, CARD_PATH)
PATH_OF = {"MOMO": MOMO_PATH, "ZALOPAY": ZALOPAY_PATH, "BANKING": BANK_PATH, "CARD": CARD_PATH}  # notify URLs


def invalid_signature(message: str) -> ApiError:
    return ApiError("invalid_signature", message)


def payment_refused(outcome: str) -> ApiError:
    return ApiError("payment_refused", f"the payment was not accepted: {outcome.replace('_', ' ')}")


async def read_callback(request: Request) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > CALLBACK_MAX_BYTES:
        raise payload_too_large(CALLBACK_MAX_BYTES)
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > CALLBACK_MAX_BYTES:
            raise payload_too_large(CALLBACK_MAX_BYTES)
    return body


def verified(provider: str, check: Callable[[], PaymentEvent]) -> PaymentEvent:
    try:
        return check()
    except CallbackRefused as exc:
        log.warning("payment callback refused: provider=%s reason=%s", provider, exc)
        raise


async def apply(request: Request, event: PaymentEvent) -> str:
    """The event through api.apply_payment_event; its outcome (logged with the order). A replay's
    outcome is `duplicate`, with `first_outcome` saying what the first delivery did."""
    if not event.final:
        log.info("payment callback not final, acknowledged: provider=%s txn=%s", event.provider, event.transaction_id)
        return "not_final"
    gw = request.app.state.gateway
    result = json.loads(await gw.db.call(APPLY_FUNCTION, {**event.args(), "p_raw": Jsonb(event.raw)}) or "{}")
    outcome = str(result.get("outcome", ""))
    log.info("payment callback: provider=%s txn=%s outcome=%s order=%s", event.provider,
             event.transaction_id, outcome, result.get("order_id"))  # fmt: skip
    if outcome == "duplicate" and result.get("first_outcome") in REFUSED:
        return str(result["first_outcome"])  # a replay gets the first answer again
    return outcome


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.gateway.settings
    return settings


def _unconfigured(*values: str) -> bool:
    return any(not v for v in values)


async def answered_204(request: Request, provider: str, check: Callable[[], PaymentEvent]) -> Response:
    """MoMo's, the bank's and the card's answer: verified and applied (or a duplicate) -> 204;
    forged -> 401 invalid_signature; signed but not the documented shape -> 422 validation_failed;
    refused by SQL (wrong amount, unknown reference) -> 422 payment_refused."""
    try:
        event = verified(provider, check)
    except BadSignature as exc:
        raise invalid_signature(str(exc)) from None
    except MalformedCallback as exc:
        raise validation_failed(str(exc)) from None
    outcome = await apply(request, event)
    if outcome in REFUSED:
        raise payment_refused(outcome)
    return Response(status_code=204)


async def momo_ipn(request: Request) -> Response:
    s = _settings(request)
    body = await read_callback(request)
    access, secret = s.secret("momo_access_key"), s.secret("momo_secret_key")

    def check() -> PaymentEvent:
        if _unconfigured(s.momo_partner_code, access, secret):
            raise BadSignature("MoMo is not configured (MOMO_PARTNER_CODE, MOMO_ACCESS_KEY, MOMO_SECRET_KEY)")
        return momo.verify(body, s.momo_partner_code, access, secret)

    return await answered_204(request, momo.PROVIDER, check)


async def zalopay_callback(request: Request) -> Response:
    s = _settings(request)
    body = await read_callback(request)
    key2 = s.secret("zalopay_key2")

    def check() -> PaymentEvent:
        if _unconfigured(s.zalopay_app_id, key2):
            raise BadSignature("ZaloPay is not configured (ZALOPAY_APP_ID, ZALOPAY_KEY2)")
        return zalopay.verify(body, s.zalopay_app_id, key2)

    try:
        event = verified(zalopay.PROVIDER, check)
    except BadSignature:
        return JSONResponse(zalopay.BAD_MAC)
    except MalformedCallback as exc:
        return JSONResponse(zalopay.malformed(str(exc)))
    try:
        outcome = await apply(request, event)
    except ApiError as exc:  # ZaloPay reads only return_code: never a problem+json
        log.warning("payment callback not applied: provider=%s txn=%s code=%s", event.provider,
                    event.transaction_id, exc.code)  # fmt: skip
        return JSONResponse(zalopay.not_applied(exc.code, retry=exc.status >= 500))
    return JSONResponse(zalopay.refused(outcome) if outcome in REFUSED else zalopay.OK)


def webhook_handler(provider: str, secret_field: str) -> Callable[[Request], Awaitable[Response]]:
    async def handle(request: Request) -> Response:
        secret = _settings(request).secret(secret_field)
        body = await read_callback(request)

        def check() -> PaymentEvent:
            if not secret:
                raise BadSignature(f"{provider} webhooks are not configured ({secret_field.upper()})")
            return webhook.verify(provider, body, request.headers.get(webhook.HEADER), secret)

        return await answered_204(request, provider, check)

    return handle


def routes() -> dict[str, dict[str, Callable[[Request], Awaitable[Response]]]]:
    """path -> {method: handler}, for gateway/app.py's route list."""
    return {
        MOMO_PATH: {"POST": momo_ipn},
        ZALOPAY_PATH: {"POST": zalopay_callback},
        BANK_PATH: {"POST": webhook_handler(webhook.BANK, "bank_webhook_secret")},
        CARD_PATH: {"POST": webhook_handler(webhook.CARD, "card_webhook_secret")},
    }
