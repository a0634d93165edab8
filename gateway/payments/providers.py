"""The providers' own APIs, asked by us (issue 12): create a payment, ask its status, refund it.
The gateway's checkout calls create_payment; the worker's reconcile_payments and refund_payment
tasks call query_payment and refund. The interface is /work/helper-notes/PROVIDER-API.md's:
ProviderConfig, PaymentStatus, RefundResult, ProviderError and the three coroutines.

Wire formats (docs/DESIGN-NOTES.md, "Provider APIs"):
- MoMo v2: POST {MOMO_ENDPOINT}/v2/gateway/api/create | query | refund, JSON, `signature` the hex
  HMAC-SHA256 under MOMO_SECRET_KEY of `key=value&...` over the documented keys in a-z order
  (accessKey = MOMO_ACCESS_KEY). MoMo signs its answers the same way; an answer carrying a
  signature that does not verify is refused (ProviderError).
- ZaloPay v2: POST {ZALOPAY_ENDPOINT}/v2/create | query | refund | query_refund, JSON, `mac` the hex
  HMAC-SHA256 under ZALOPAY_KEY1 of the documented `|`-joined fields. ZaloPay does not sign its
  answers (TLS is what vouches for them).
- Bank transfer and card: our JSON API (POST {BANK_API_URL|CARD_API_URL}/payments,
  /payments/query, /refunds), requests and answers signed like their webhooks (X-Signature:
  sha256=<hex HMAC-SHA256 of the raw body> under BANK_WEBHOOK_SECRET / CARD_WEBHOOK_SECRET).

Everything that builds, signs or reads a message is a pure function (tested against the
providers' documented vectors); the coroutines only add the HTTP exchange. No database here:
callers must not hold a transaction open across these calls.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, Literal

import httpx

from gateway.payments import webhook
from gateway.payments.common import hmac_hex, signature_matches

METHODS = ("MOMO", "ZALOPAY", "BANKING", "CARD")

# Where the real providers answer (production default of MOMO_ENDPOINT / ZALOPAY_ENDPOINT).
MOMO_PRODUCTION = "https://payment.momo.vn"
ZALOPAY_PRODUCTION = "https://openapi.zalopay.vn"
# The providers' own test environments (development default when the sandbox is off).
MOMO_TEST = "https://test-payment.momo.vn"
ZALOPAY_TEST = "https://sb-openapi.zalopay.vn"
YES, NO = ("yes", "true", "on", "1"), ("no", "false", "off", "0", "")
# The development stand-in, served by the gateway itself (gateway/payments/sandbox_api.py).
SANDBOX_API_PATH = "/payments/sandbox/api"

DEFAULT_TIMEOUT = 10.0  # PAYMENT_PROVIDER_TIMEOUT: seconds per request (connect, read, write each)
MAX_TIMEOUT = 120.0
# MoMo: "Minimum timeout when call this API must be 30s to ensure receive response from MoMo"
# (query, refund, create). The worker's calls (query, refund) wait that long; the checkout's
# create keeps PAYMENT_PROVIDER_TIMEOUT, since a buyer is waiting and a replayed checkout asks
# again (MoMo's create is idempotent on requestId, which is our transaction_id).
MOMO_MIN_TIMEOUT = 30.0

VIETNAM = timezone(timedelta(hours=7))  # ZaloPay's yymmdd_ prefixes are in Vietnam's date


class ProviderError(Exception):
    """The provider could not be asked or answered something unusable (timeout, 5xx, bad JSON,
    bad signature on its answer). `retryable` False only for answers that will never change."""

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


class ProviderConfigError(ValueError):
    """A provider variable has a value that cannot work (the message names it)."""


@dataclass(frozen=True)
class ProviderConfig:
    """Endpoints and credentials, one per process (the same variables for gateway and worker)."""

    momo_endpoint: str
    momo_partner_code: str
    momo_access_key: str = field(repr=False)
    momo_secret_key: str = field(repr=False)
    zalopay_endpoint: str
    zalopay_app_id: str
    zalopay_key1: str = field(repr=False)
    zalopay_key2: str = field(repr=False)
    bank_api_url: str
    bank_secret: str = field(repr=False)
    card_api_url: str
    card_secret: str = field(repr=False)
    timeout: float = DEFAULT_TIMEOUT

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ProviderConfig:
        """With the sandbox on (PAYMENT_SANDBOX=yes, PAYMENT_MODE=provider, not production), every
        endpoint defaults to the gateway's own stub API (PUBLIC_BASE_URL, else
        http://127.0.0.1:${GATEWAY_PORT:-8000}). Otherwise MoMo and ZaloPay default to their test
        hosts in development and their production hosts in production; BANK_API_URL and
        CARD_API_URL have no default ("" here; the gateway's config refuses to start without them
        in provider mode when the sandbox is off). PAYMENT_SANDBOX=yes in production is refused."""

        def get(name: str) -> str:
            return (env.get(name) or "").strip()

        production = get("BOOKING_ENV") == "production"
        sandbox_flag = get("PAYMENT_SANDBOX").lower()
        if sandbox_flag not in YES + NO:
            raise ProviderConfigError(f"PAYMENT_SANDBOX must be yes or no (got {sandbox_flag!r})")
        if production and sandbox_flag in YES:
            raise ProviderConfigError("PAYMENT_SANDBOX=yes is refused in production (BOOKING_ENV=production)")
        sandbox = sandbox_flag in YES and (get("PAYMENT_MODE") or "instant") == "provider"
        if sandbox:
            base = sandbox_base_url(env)
            defaults = {name: f"{base}{SANDBOX_API_PATH}/{name}" for name in ("momo", "zalopay", "bank", "card")}
        elif production:
            defaults = {"momo": MOMO_PRODUCTION, "zalopay": ZALOPAY_PRODUCTION, "bank": "", "card": ""}
        else:
            defaults = {"momo": MOMO_TEST, "zalopay": ZALOPAY_TEST, "bank": "", "card": ""}
        endpoints = {}
        for name, variable in (("momo", "MOMO_ENDPOINT"), ("zalopay", "ZALOPAY_ENDPOINT"),
                               ("bank", "BANK_API_URL"), ("card", "CARD_API_URL")):  # fmt: skip
            value = get(variable) or defaults[name]
            if value and not re.fullmatch(r"https?://[^/?#\s]+(/[^?#\s]*)?", value):
                raise ProviderConfigError(f"{variable} must be an http(s) URL without query (got {value!r})")
            endpoints[name] = value.rstrip("/")
        return cls(
            momo_endpoint=endpoints["momo"],
            momo_partner_code=get("MOMO_PARTNER_CODE"),
            momo_access_key=get("MOMO_ACCESS_KEY"),
            momo_secret_key=get("MOMO_SECRET_KEY"),
            zalopay_endpoint=endpoints["zalopay"],
            zalopay_app_id=get("ZALOPAY_APP_ID"),
            zalopay_key1=get("ZALOPAY_KEY1"),
            zalopay_key2=get("ZALOPAY_KEY2"),
            bank_api_url=endpoints["bank"],
            bank_secret=get("BANK_WEBHOOK_SECRET"),
            card_api_url=endpoints["card"],
            card_secret=get("CARD_WEBHOOK_SECRET"),
            timeout=parse_timeout(get("PAYMENT_PROVIDER_TIMEOUT")),
        )


def sandbox_base_url(env: Mapping[str, str]) -> str:
    """Where the development gateway (and so its sandbox API) listens."""
    public = (env.get("PUBLIC_BASE_URL") or "").strip()
    if public:
        return public.rstrip("/")
    port = (env.get("GATEWAY_PORT") or "").strip() or "8000"
    return f"http://127.0.0.1:{port}"


def parse_timeout(value: str) -> float:
    if not value:
        return DEFAULT_TIMEOUT
    try:
        seconds = float(value)
    except ValueError:
        raise ProviderConfigError(f"PAYMENT_PROVIDER_TIMEOUT must be a number of seconds (got {value!r})") from None
    if not 0 < seconds <= MAX_TIMEOUT:
        raise ProviderConfigError(f"PAYMENT_PROVIDER_TIMEOUT must be in (0, {MAX_TIMEOUT:g}] seconds (got {value!r})")
    return seconds


@dataclass(frozen=True)
class PaymentStatus:
    state: Literal["paid", "failed", "pending", "unknown"]  # unknown: the provider has no such payment
    provider_txn_id: str | None
    amount: int | None  # whole VND
    raw: dict[str, Any]  # the provider's answer (for the inbox's raw column)


@dataclass(frozen=True)
class RefundResult:
    state: Literal["done", "failed", "pending"]  # failed: refused for good; pending: ask again later
    provider_ref: str | None
    error: str | None
    raw: dict[str, Any]


# ---------------------------------------------------------------------------------------------
# MoMo v2

MOMO_CREATE_PATH = "/v2/gateway/api/create"
MOMO_QUERY_PATH = "/v2/gateway/api/query"
MOMO_REFUND_PATH = "/v2/gateway/api/refund"
MOMO_REQUEST_TYPE = "captureWallet"
# The documented signed strings: keys in a-z order, `key=value` joined by `&`, nothing escaped.
MOMO_CREATE_KEYS = ("accessKey", "amount", "extraData", "ipnUrl", "orderId", "orderInfo", "partnerCode",
                    "redirectUrl", "requestId", "requestType")  # fmt: skip
MOMO_CREATE_ANSWER_KEYS = ("accessKey", "amount", "orderId", "partnerCode", "payUrl", "requestId",
                           "responseTime", "resultCode")  # fmt: skip
MOMO_QUERY_KEYS = ("accessKey", "orderId", "partnerCode", "requestId")
MOMO_QUERY_ANSWER_KEYS = ("accessKey", "amount", "extraData", "message", "orderId", "partnerCode", "payType",
                          "requestId", "responseTime", "resultCode", "transId")  # fmt: skip
MOMO_REFUND_KEYS = ("accessKey", "amount", "description", "orderId", "partnerCode", "requestId", "transId")
MOMO_REFUND_ANSWER_KEYS = ("accessKey", "amount", "message", "orderId", "partnerCode", "requestId",
                           "responseTime", "resultCode", "transId")  # fmt: skip

MOMO_SUCCESS = 0
# Result codes (developers.momo.vn, "Result Codes"): still waiting for the buyer or being processed.
MOMO_PENDING = frozenset({1000, 7000, 7002, 8000, 9000})
# The payment (or the refund) was refused or abandoned: final.
MOMO_FAILED = frozenset({1001, 1002, 1003, 1004, 1005, 1006, 1007, 1017, 1026, 1080, 1081, 1088, 2019,
                         4001, 4002, 4100})  # fmt: skip
MOMO_NOT_FOUND = 42  # "Invalid orderId or orderId is not found"
MOMO_DUPLICATE_ORDER = 41  # "Duplicated orderId"
MOMO_DUPLICATE_REQUEST = 40  # "Duplicated requestId" (a refund's requestId is its orderId: the same case)
MOMO_SIMILAR_IN_PROGRESS = 43  # "a similar transaction is being processed": ask again later
# MoMo is busy or in maintenance: ask again later.
MOMO_TRANSIENT = frozenset({10, 98, 99})


def momo_raw(values: Mapping[str, Any], keys: tuple[str, ...]) -> str:
    return "&".join(f"{key}={_text(values.get(key))}" for key in keys)


def momo_sign(values: Mapping[str, Any], keys: tuple[str, ...], access_key: str, secret_key: str) -> str:
    return hmac_hex(secret_key, momo_raw({**values, "accessKey": access_key}, keys).encode())


def _text(value: Any) -> str:
    """A value as MoMo's signed strings write it: JSON numbers as digits, null as empty."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def momo_create_request(cfg: ProviderConfig, *, transaction_id: str, amount: int, description: str,
                        notify_url: str, return_url: str, expires_in: int | None = None) -> dict[str, Any]:  # fmt: skip
    body: dict[str, Any] = {
        "partnerCode": cfg.momo_partner_code,
        "requestId": transaction_id,  # MoMo's idempotency key: a retried create gets the same answer
        "amount": amount,
        "orderId": transaction_id,
        "orderInfo": description,
        "redirectUrl": return_url,
        "ipnUrl": notify_url,
        "requestType": MOMO_REQUEST_TYPE,
        "extraData": "",
        "lang": "en",
    }
    body["signature"] = momo_sign(body, MOMO_CREATE_KEYS, cfg.momo_access_key, cfg.momo_secret_key)
    if expires_in is not None:  # minutes, outside the signed string: the link dies with our deadline
        body["orderExpireTime"] = max(1, -(-expires_in // 60))
    return body


def momo_query_request(cfg: ProviderConfig, *, transaction_id: str, request_id: str) -> dict[str, Any]:
    body: dict[str, Any] = {
        "partnerCode": cfg.momo_partner_code,
        "requestId": request_id,
        "orderId": transaction_id,
        "lang": "en",
    }
    body["signature"] = momo_sign(body, MOMO_QUERY_KEYS, cfg.momo_access_key, cfg.momo_secret_key)
    return body


def momo_refund_request(cfg: ProviderConfig, *, refund_id: str, trans_id: int, amount: int,
                        description: str) -> dict[str, Any]:  # fmt: skip
    body: dict[str, Any] = {
        "partnerCode": cfg.momo_partner_code,
        "orderId": refund_id,  # the refund's own orderId (MoMo: different from the payment's)
        "requestId": refund_id,  # idempotent: a retried refund is the same request
        "amount": amount,
        "transId": trans_id,
        "lang": "en",
        "description": description,
    }
    body["signature"] = momo_sign(body, MOMO_REFUND_KEYS, cfg.momo_access_key, cfg.momo_secret_key)
    return body


def momo_check_answer(cfg: ProviderConfig, answer: dict[str, Any], keys: tuple[str, ...]) -> None:
    """MoMo signs its answers (a-z keys, as the requests); one carrying a signature that does not
    verify, or naming another merchant, is refused. Error answers may come unsigned."""
    presented = answer.get("signature")
    if presented is not None and not signature_matches(
        momo_sign(answer, keys, cfg.momo_access_key, cfg.momo_secret_key), presented
    ):
        raise ProviderError("MoMo's answer has a signature that does not verify")
    partner = answer.get("partnerCode")
    if partner is not None and partner != cfg.momo_partner_code:
        raise ProviderError("MoMo's answer names another partnerCode")


def _result_code(answer: dict[str, Any], name: str = "resultCode") -> int:
    code = answer.get(name)
    if isinstance(code, bool) or not isinstance(code, int):
        raise ProviderError(f"the answer has no integer {name}")
    return code


def _momo_unusable(answer: dict[str, Any], code: int, what: str) -> ProviderError:
    message = f"MoMo {what}: resultCode {code} ({str(answer.get('message') or '')[:200]})"
    return ProviderError(message, retryable=code in MOMO_TRANSIENT)


def momo_parse_create(cfg: ProviderConfig, answer: dict[str, Any]) -> str:
    momo_check_answer(cfg, answer, MOMO_CREATE_ANSWER_KEYS)
    code = _result_code(answer)
    if code != MOMO_SUCCESS:
        raise _momo_unusable(answer, code, "refused to create the payment")
    pay_url = answer.get("payUrl")
    if not isinstance(pay_url, str) or not pay_url.startswith(("https://", "http://")):
        raise ProviderError("MoMo's answer has no payUrl")
    return pay_url


def momo_parse_query(cfg: ProviderConfig, answer: dict[str, Any]) -> PaymentStatus:
    momo_check_answer(cfg, answer, MOMO_QUERY_ANSWER_KEYS)
    code = _result_code(answer)
    trans_id = answer.get("transId")
    txn = str(trans_id) if isinstance(trans_id, int | str) and not isinstance(trans_id, bool) and trans_id else None
    amount = _int_or_none(answer.get("amount"))
    if code == MOMO_SUCCESS:
        if txn is None or amount is None:
            raise ProviderError("MoMo says paid but gives no transId or amount")
        return PaymentStatus("paid", txn, amount, answer)
    if code in MOMO_PENDING:
        return PaymentStatus("pending", txn, amount, answer)
    if code in MOMO_FAILED:
        return PaymentStatus("failed", txn, amount, answer)
    if code == MOMO_NOT_FOUND:
        return PaymentStatus("unknown", None, None, answer)
    raise _momo_unusable(answer, code, "could not say the payment's status")


def momo_parse_refund(cfg: ProviderConfig, answer: dict[str, Any]) -> RefundResult:
    momo_check_answer(cfg, answer, MOMO_REFUND_ANSWER_KEYS)
    code = _result_code(answer)
    ref = answer.get("transId")
    provider_ref = str(ref) if ref not in (None, "", 0) else None
    message = str(answer.get("message") or "")[:500]
    if code == MOMO_SUCCESS:
        return RefundResult("done", provider_ref, None, answer)
    if code in MOMO_PENDING or code == MOMO_SIMILAR_IN_PROGRESS:
        return RefundResult("pending", provider_ref, None, answer)
    if code in MOMO_FAILED:
        return RefundResult("failed", provider_ref, f"MoMo resultCode {code}: {message}", answer)
    # A code we do not know is not a refusal of this refund: asked again (with backoff), never
    # counted as refused (a refusal gives the next attempt a new request id).
    raise ProviderError(f"MoMo answered the refund with resultCode {code} ({message[:200]})", retryable=True)


def momo_refund_in_query(answer: dict[str, Any], refund_id: str) -> RefundResult | None:
    """The refund `refund_id` among a query answer's refundTrans (after MoMo said the refund's
    orderId was a duplicate: an earlier attempt reached it)."""
    for item in answer.get("refundTrans") or []:
        if isinstance(item, dict) and item.get("orderId") == refund_id:
            code = item.get("resultCode")
            ref = str(item["transId"]) if item.get("transId") else None
            if code == MOMO_SUCCESS:
                return RefundResult("done", ref, None, answer)
            if code in MOMO_PENDING:
                return RefundResult("pending", ref, None, answer)
            return RefundResult("failed", ref, f"MoMo resultCode {code}", answer)
    return None


# ---------------------------------------------------------------------------------------------
# ZaloPay v2

ZALOPAY_MIN_EXPIRY = 300  # seconds: the shortest expire_duration_seconds ZaloPay accepts
ZALOPAY_CREATE_PATH = "/v2/create"
ZALOPAY_QUERY_PATH = "/v2/query"
ZALOPAY_REFUND_PATH = "/v2/refund"
ZALOPAY_QUERY_REFUND_PATH = "/v2/query_refund"
ZALOPAY_APP_USER = "booking"
ZALOPAY_SUCCESS, ZALOPAY_FAILED, ZALOPAY_PROCESSING = 1, 2, 3
# sub_return_code of a query for an app_trans_id ZaloPay never saw (the order was not created).
ZALOPAY_NOT_FOUND = -49


def zalopay_mac(key1: str, *parts: Any) -> str:
    return hmac_hex(key1, "|".join(_text(part) for part in parts).encode())


def _app_id(cfg: ProviderConfig) -> int | str:
    app_id = cfg.zalopay_app_id
    return int(app_id) if app_id.isascii() and app_id.isdigit() else app_id


def zalopay_create_request(cfg: ProviderConfig, *, transaction_id: str, amount: int, description: str,
                           notify_url: str, return_url: str, now_ms: int,
                           expires_in: int | None = None) -> dict[str, Any]:  # fmt: skip
    embed_data = json.dumps({"redirecturl": return_url}, separators=(",", ":"))
    body: dict[str, Any] = {
        "app_id": _app_id(cfg),
        "app_user": ZALOPAY_APP_USER,
        "app_trans_id": transaction_id,  # yymmdd_... (api.checkout makes it so)
        "app_time": now_ms,
        "amount": amount,
        "item": "[]",
        "description": description,
        "embed_data": embed_data,
        "bank_code": "",
        "callback_url": notify_url,
    }
    if expires_in is not None:  # outside the mac; ZaloPay's floor is 300 s (the late-payment path covers the rest)
        body["expire_duration_seconds"] = max(ZALOPAY_MIN_EXPIRY, expires_in)
    body["mac"] = zalopay_mac(cfg.zalopay_key1, body["app_id"], transaction_id, ZALOPAY_APP_USER, amount, now_ms,
                              embed_data, "[]")  # fmt: skip
    return body


def zalopay_query_request(cfg: ProviderConfig, *, transaction_id: str) -> dict[str, Any]:
    app_id = _app_id(cfg)
    return {"app_id": app_id, "app_trans_id": transaction_id,
            "mac": zalopay_mac(cfg.zalopay_key1, app_id, transaction_id, cfg.zalopay_key1)}  # fmt: skip


def zalopay_refund_id(cfg: ProviderConfig, refund_id: str, now: datetime) -> str:
    """m_refund_id: yymmdd (Vietnam's date) _ app_id _ our refund's id (letters and digits)."""
    return f"{now.astimezone(VIETNAM):%y%m%d}_{cfg.zalopay_app_id}_{re.sub(r'[^0-9A-Za-z]', '', refund_id)}"


ZALOPAY_REFUND_LOOKBACK_DAYS = 3


def zalopay_refund_ids(cfg: ProviderConfig, refund_id: str, requested_at: datetime, now: datetime) -> list[str]:
    """The m_refund_ids an attempt of this refund may have used: ZaloPay's carry the (Vietnam) date
    of the attempt, so a retry after midnight must look under the earlier days' ids too, or a refund
    made just before midnight whose answer was lost would be asked for again (and the second one
    refused: recorded as a refusal of money that did go back). Today's first (the usual case), then
    back to the day the refund was decided, at most ZALOPAY_REFUND_LOOKBACK_DAYS before today, and
    that day itself."""
    days = (now.astimezone(VIETNAM).date() - requested_at.astimezone(VIETNAM).date()).days
    stamps = [now - timedelta(days=k) for k in range(min(max(days, 0), ZALOPAY_REFUND_LOOKBACK_DAYS) + 1)]
    return list(dict.fromkeys(zalopay_refund_id(cfg, refund_id, t) for t in [*stamps, requested_at]))


def zalopay_refund_request(cfg: ProviderConfig, *, m_refund_id: str, zp_trans_id: str, amount: int,
                           description: str, now_ms: int) -> dict[str, Any]:  # fmt: skip
    app_id = _app_id(cfg)
    return {"app_id": app_id, "m_refund_id": m_refund_id, "zp_trans_id": zp_trans_id, "amount": amount,
            "timestamp": now_ms, "description": description,
            "mac": zalopay_mac(cfg.zalopay_key1, app_id, zp_trans_id, amount, description, now_ms)}  # fmt: skip


def zalopay_query_refund_request(cfg: ProviderConfig, *, m_refund_id: str, now_ms: int) -> dict[str, Any]:
    app_id = _app_id(cfg)
    return {"app_id": app_id, "m_refund_id": m_refund_id, "timestamp": now_ms,
            "mac": zalopay_mac(cfg.zalopay_key1, app_id, m_refund_id, now_ms)}  # fmt: skip


def _zalopay_message(answer: dict[str, Any]) -> str:
    return (f"return_code {answer.get('return_code')}, sub_return_code {answer.get('sub_return_code')} "
            f"({str(answer.get('sub_return_message') or answer.get('return_message') or '')[:200]})")  # fmt: skip


def zalopay_parse_create(answer: dict[str, Any]) -> str:
    code = _result_code(answer, "return_code")
    if code != ZALOPAY_SUCCESS:
        raise ProviderError(f"ZaloPay refused to create the order: {_zalopay_message(answer)}", retryable=False)
    url = answer.get("order_url")
    if not isinstance(url, str) or not url.startswith(("https://", "http://")):
        raise ProviderError("ZaloPay's answer has no order_url")
    return url


def zalopay_parse_query(answer: dict[str, Any]) -> PaymentStatus:
    code = _result_code(answer, "return_code")
    txn = answer.get("zp_trans_id")
    provider_txn = str(txn) if txn not in (None, "", 0) else None
    amount = _int_or_none(answer.get("amount"))
    if code == ZALOPAY_SUCCESS:
        if provider_txn is None or amount is None:
            raise ProviderError("ZaloPay says paid but gives no zp_trans_id or amount")
        return PaymentStatus("paid", provider_txn, amount, answer)
    if code == ZALOPAY_PROCESSING or answer.get("is_processing") is True:
        return PaymentStatus("pending", provider_txn, amount, answer)
    if code == ZALOPAY_FAILED:
        if answer.get("sub_return_code") == ZALOPAY_NOT_FOUND:
            return PaymentStatus("unknown", None, None, answer)
        return PaymentStatus("failed", provider_txn, amount, answer)
    raise ProviderError(f"ZaloPay could not say the order's status: {_zalopay_message(answer)}")


def zalopay_parse_refund(answer: dict[str, Any]) -> RefundResult:
    """The answer of /v2/refund or /v2/query_refund (the same codes)."""
    code = _result_code(answer, "return_code")
    ref = answer.get("refund_id")
    provider_ref = str(ref) if ref not in (None, "", 0) else None
    if code == ZALOPAY_SUCCESS:
        return RefundResult("done", provider_ref, None, answer)
    if code == ZALOPAY_PROCESSING:
        return RefundResult("pending", provider_ref, None, answer)
    if code == ZALOPAY_FAILED:
        return RefundResult("failed", provider_ref, f"ZaloPay {_zalopay_message(answer)}", answer)
    raise ProviderError(f"ZaloPay could not handle the refund: {_zalopay_message(answer)}")


# ---------------------------------------------------------------------------------------------
# Bank transfer and card: our JSON API (docs/DESIGN-NOTES.md, "Provider APIs")

BANK_CREATE_PATH = "/payments"
BANK_QUERY_PATH = "/payments/query"
BANK_REFUND_PATH = "/refunds"
BANK_STATES = {"SUCCESS": "paid", "FAILED": "failed", "PENDING": "pending"}
REFUND_STATES = {"DONE": "done", "FAILED": "failed", "PENDING": "pending"}


def signed_json(payload: Mapping[str, Any], secret: str) -> tuple[bytes, dict[str, str]]:
    """Body and headers of a signed bank/card request (or answer): webhook.py's scheme."""
    return webhook.signed_request(dict(payload), secret)


def check_signed_answer(body: bytes, header: str | None, secret: str, who: str) -> None:
    if header is None or not header.startswith(webhook.PREFIX):
        raise ProviderError(f"{who}'s answer is not signed")
    if not signature_matches(hmac_hex(secret, body), header[len(webhook.PREFIX) :]):
        raise ProviderError(f"{who}'s answer has a signature that does not verify")


def bank_parse_create(answer: dict[str, Any]) -> str | None:
    url = answer.get("pay_url")
    if url is None:
        return None  # a bank transfer: the buyer transfers with the reference, no page
    if not isinstance(url, str) or not url.startswith(("https://", "http://")):
        raise ProviderError("the answer's pay_url is not an http(s) URL")
    return url


def bank_parse_query(answer: dict[str, Any]) -> PaymentStatus:
    state = BANK_STATES.get(str(answer.get("status")))
    if state is None:
        raise ProviderError("the answer's status is not SUCCESS, FAILED or PENDING")
    txn = answer.get("provider_txn_id")
    amount = _int_or_none(answer.get("amount"))
    if state == "paid" and (not txn or amount is None):
        raise ProviderError("the answer says paid but gives no provider_txn_id or amount")
    return PaymentStatus(state, str(txn) if txn else None, amount, answer)  # type: ignore[arg-type]


def bank_parse_refund(answer: dict[str, Any]) -> RefundResult:
    state = REFUND_STATES.get(str(answer.get("status")))
    if state is None:
        raise ProviderError("the answer's status is not DONE, FAILED or PENDING")
    ref = answer.get("provider_ref")
    error = answer.get("error")
    return RefundResult(state, str(ref) if ref else None,  # type: ignore[arg-type]
                        str(error)[:500] if error else None, answer)  # fmt: skip


def _int_or_none(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    return None


# ---------------------------------------------------------------------------------------------
# The HTTP exchange


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise ProviderError(f"unknown payment method {method!r}", retryable=False)


def _require(value: str, what: str) -> str:
    if not value:
        raise ProviderError(f"{what} is not configured", retryable=False)
    return value


async def _post(http: httpx.AsyncClient, url: str, *, content: bytes, headers: dict[str, str],
                seconds: float, who: str, ok_statuses: tuple[int, ...] = (200, 201)) -> httpx.Response:  # fmt: skip
    try:
        response = await http.post(url, content=content, headers=headers, timeout=httpx.Timeout(seconds))
    except httpx.TimeoutException:
        raise ProviderError(f"{who} did not answer within {seconds:g} s") from None
    except httpx.HTTPError as exc:
        raise ProviderError(f"{who} could not be reached ({type(exc).__name__})") from None
    if response.status_code in ok_statuses:
        return response
    retryable = response.status_code >= 500 or response.status_code in (408, 425, 429)
    raise ProviderError(f"{who} answered HTTP {response.status_code}", retryable=retryable)


def _json_of(response: httpx.Response, who: str) -> dict[str, Any]:
    try:
        answer = json.loads(response.content)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise ProviderError(f"{who}'s answer is not JSON") from None
    if not isinstance(answer, dict):
        raise ProviderError(f"{who}'s answer is not a JSON object")
    return answer


async def _post_json(http: httpx.AsyncClient, url: str, body: dict[str, Any], seconds: float,
                     who: str) -> dict[str, Any]:  # fmt: skip
    content = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
    response = await _post(http, url, content=content, headers={"Content-Type": "application/json"},
                           seconds=seconds, who=who)  # fmt: skip
    return _json_of(response, who)


def _bank(cfg: ProviderConfig, method: str) -> tuple[str, str, str]:
    """(base URL, secret, name) of the bank or card API."""
    if method == "BANKING":
        return _require(cfg.bank_api_url, "BANK_API_URL"), _require(cfg.bank_secret, "BANK_WEBHOOK_SECRET"), "the bank"
    return (
        _require(cfg.card_api_url, "CARD_API_URL"),
        _require(cfg.card_secret, "CARD_WEBHOOK_SECRET"),
        "the card processor",
    )


async def _bank_call(http: httpx.AsyncClient, cfg: ProviderConfig, method: str, path: str,
                     payload: dict[str, Any], *, not_found_ok: bool = False) -> dict[str, Any] | None:  # fmt: skip
    base, secret, who = _bank(cfg, method)
    content, headers = signed_json(payload, secret)
    statuses = (200, 201, 404) if not_found_ok else (200, 201)
    response = await _post(http, base + path, content=content, headers=headers, seconds=cfg.timeout, who=who,
                           ok_statuses=statuses)  # fmt: skip
    check_signed_answer(response.content, response.headers.get(webhook.HEADER), secret, who)
    if response.status_code == 404:
        return None
    return _json_of(response, who)


def _momo_credentials(cfg: ProviderConfig) -> None:
    _require(cfg.momo_partner_code, "MOMO_PARTNER_CODE")
    _require(cfg.momo_access_key, "MOMO_ACCESS_KEY")
    _require(cfg.momo_secret_key, "MOMO_SECRET_KEY")
    _require(cfg.momo_endpoint, "MOMO_ENDPOINT")


def _zalopay_credentials(cfg: ProviderConfig) -> None:
    _require(cfg.zalopay_app_id, "ZALOPAY_APP_ID")
    _require(cfg.zalopay_key1, "ZALOPAY_KEY1")
    _require(cfg.zalopay_endpoint, "ZALOPAY_ENDPOINT")


def _now_ms() -> int:
    return int(time.time() * 1000)


async def create_payment(http: httpx.AsyncClient, cfg: ProviderConfig, *, method: str, transaction_id: str,
                         amount: int, description: str, notify_url: str, return_url: str,
                         expires_in: int | None = None) -> str | None:  # fmt: skip
    """Registers the payment at its provider; the pay_url to send the buyer to (None: a bank
    transfer without a page). Safe to call again for the same transaction_id. `expires_in`
    (seconds until our payment deadline): MoMo's and ZaloPay's links expire with it, so a payment
    cannot start long after the order timed out (reconciliation asks for an hour after that)."""
    _check_method(method)
    if method == "MOMO":
        _momo_credentials(cfg)
        body = momo_create_request(cfg, transaction_id=transaction_id, amount=amount, description=description,
                                   notify_url=notify_url, return_url=return_url, expires_in=expires_in)  # fmt: skip
        answer = await _post_json(http, cfg.momo_endpoint + MOMO_CREATE_PATH, body, cfg.timeout, "MoMo")
        return momo_parse_create(cfg, answer)
    if method == "ZALOPAY":
        _zalopay_credentials(cfg)
        body = zalopay_create_request(cfg, transaction_id=transaction_id, amount=amount, description=description,
                                      notify_url=notify_url, return_url=return_url, now_ms=_now_ms(),
                                      expires_in=expires_in)  # fmt: skip
        answer = await _post_json(http, cfg.zalopay_endpoint + ZALOPAY_CREATE_PATH, body, cfg.timeout, "ZaloPay")
        return zalopay_parse_create(answer)
    payload = {"transaction_id": transaction_id, "amount": amount, "description": description,
               "notify_url": notify_url, "return_url": return_url}  # fmt: skip
    created = await _bank_call(http, cfg, method, BANK_CREATE_PATH, payload)
    if created is None:
        raise ProviderError("the answer is empty")
    return bank_parse_create(created)


async def query_payment(http: httpx.AsyncClient, cfg: ProviderConfig, *, method: str,
                        transaction_id: str) -> PaymentStatus:  # fmt: skip
    """What the provider says of our payment `transaction_id`."""
    _check_method(method)
    if method == "MOMO":
        _momo_credentials(cfg)
        request_id = f"{transaction_id}-Q{secrets.token_hex(6)}"
        body = momo_query_request(cfg, transaction_id=transaction_id, request_id=request_id)
        timeout = max(cfg.timeout, MOMO_MIN_TIMEOUT)
        answer = await _post_json(http, cfg.momo_endpoint + MOMO_QUERY_PATH, body, timeout, "MoMo")
        return momo_parse_query(cfg, answer)
    if method == "ZALOPAY":
        _zalopay_credentials(cfg)
        body = zalopay_query_request(cfg, transaction_id=transaction_id)
        answer = await _post_json(http, cfg.zalopay_endpoint + ZALOPAY_QUERY_PATH, body, cfg.timeout, "ZaloPay")
        return zalopay_parse_query(answer)
    found = await _bank_call(http, cfg, method, BANK_QUERY_PATH, {"transaction_id": transaction_id},
                             not_found_ok=True)  # fmt: skip
    if found is None:
        return PaymentStatus("unknown", None, None, {"status": "NOT_FOUND", "transaction_id": transaction_id})
    return bank_parse_query(found)


async def refund(http: httpx.AsyncClient, cfg: ProviderConfig, *, method: str, refund_id: str,
                 transaction_id: str, provider_txn_id: str | None, amount: int,
                 description: str, requested_at: datetime | None = None) -> RefundResult:  # fmt: skip
    """Asks the provider to give `amount` back. Idempotent on refund_id: a retried call (after a
    timeout, a crash) finds the earlier attempt instead of refunding twice (MoMo: the refund's
    orderId is refund_id; ZaloPay: query_refund first, under every m_refund_id an earlier attempt
    may have used (see zalopay_refund_ids); bank/card: the API is keyed on refund_id).
    `requested_at`: when the refund was decided (ZaloPay's ids carry the date of the attempt)."""
    _check_method(method)
    if provider_txn_id is None and method in ("MOMO", "ZALOPAY"):
        status = await query_payment(http, cfg, method=method, transaction_id=transaction_id)
        if status.state != "paid" or status.provider_txn_id is None:
            return RefundResult("failed", None, f"the provider has no paid payment {transaction_id} ({status.state})",
                                status.raw)  # fmt: skip
        provider_txn_id = status.provider_txn_id
    if method == "MOMO":
        _momo_credentials(cfg)
        if not provider_txn_id or not (provider_txn_id.isascii() and provider_txn_id.isdigit()):
            return RefundResult("failed", None, f"MoMo transId must be digits (got {provider_txn_id!r})", {})
        body = momo_refund_request(cfg, refund_id=refund_id, trans_id=int(provider_txn_id), amount=amount,
                                   description=description)  # fmt: skip
        timeout = max(cfg.timeout, MOMO_MIN_TIMEOUT)
        answer = await _post_json(http, cfg.momo_endpoint + MOMO_REFUND_PATH, body, timeout, "MoMo")
        if answer.get("resultCode") in (MOMO_DUPLICATE_ORDER, MOMO_DUPLICATE_REQUEST):  # an earlier attempt got there
            request_id = f"{transaction_id}-Q{secrets.token_hex(6)}"
            query = momo_query_request(cfg, transaction_id=transaction_id, request_id=request_id)
            state = await _post_json(http, cfg.momo_endpoint + MOMO_QUERY_PATH, query, timeout, "MoMo")
            momo_check_answer(cfg, state, MOMO_QUERY_ANSWER_KEYS)
            found = momo_refund_in_query(state, refund_id)
            if found is None:
                raise ProviderError("MoMo says the refund exists but does not list it", retryable=True)
            return found
        return momo_parse_refund(cfg, answer)
    if method == "ZALOPAY":
        _zalopay_credentials(cfg)
        now = datetime.now(UTC)
        m_refund_id = zalopay_refund_id(cfg, refund_id, now)
        url = cfg.zalopay_endpoint
        for candidate in zalopay_refund_ids(cfg, refund_id, requested_at or now, now):
            earlier = await _post_json(http, url + ZALOPAY_QUERY_REFUND_PATH,
                                       zalopay_query_refund_request(cfg, m_refund_id=candidate, now_ms=_now_ms()),
                                       cfg.timeout, "ZaloPay")  # fmt: skip
            if earlier.get("return_code") in (ZALOPAY_SUCCESS, ZALOPAY_PROCESSING):
                return zalopay_parse_refund(earlier)
        body = zalopay_refund_request(cfg, m_refund_id=m_refund_id, zp_trans_id=str(provider_txn_id), amount=amount,
                                      description=description, now_ms=_now_ms())  # fmt: skip
        answer = await _post_json(http, url + ZALOPAY_REFUND_PATH, body, cfg.timeout, "ZaloPay")
        return zalopay_parse_refund(answer)
    payload = {"refund_id": refund_id, "transaction_id": transaction_id, "provider_txn_id": provider_txn_id,
               "amount": amount, "description": description}  # fmt: skip
    refunded = await _bank_call(http, cfg, method, BANK_REFUND_PATH, payload)
    if refunded is None:
        raise ProviderError("the answer is empty")
    return bank_parse_refund(refunded)
