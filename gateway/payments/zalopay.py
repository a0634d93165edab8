"""ZaloPay's callback (POST /payments/zalopay/callback): JSON `{data, mac, type}`; `data` is a JSON
string holding at least app_id, app_trans_id, amount, zp_trans_id, server_time; `mac` is the hex
HMAC-SHA256 of the `data` string, as sent, under ZALOPAY_KEY2. ZaloPay calls back on success only.
The answer is always 200 JSON: return_code 1 "success", -1 when the mac is wrong."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from gateway.payments.common import (
    BadSignature,
    MalformedCallback,
    PaymentEvent,
    amount_of,
    hmac_hex,
    reference,
    require,
    signature_matches,
)

PROVIDER = "ZALOPAY"
CALLBACK_TYPE_ORDER = 1  # `type`: 1 order, 2 agreement

OK = {"return_code": 1, "return_message": "success"}
BAD_MAC = {"return_code": -1, "return_message": "mac not equal"}


def refused(reason: str) -> dict[str, Any]:
    """A verified callback we do not accept (wrong amount, unknown order): ZaloPay retries it a
    few times (return_code 0); the inbox records it once."""
    return {"return_code": 0, "return_message": reason}


def malformed(reason: str) -> dict[str, Any]:
    """Signed (or not) but not the documented shape: never retried into success (-1)."""
    return {"return_code": -1, "return_message": reason}


def not_applied(code: str, *, retry: bool) -> dict[str, Any]:
    """The database did not apply a verified callback: busy or down (`retry`: return_code 0, so
    ZaloPay calls back again), or it refused the values (-1)."""
    return {"return_code": 0 if retry else -1, "return_message": code}


def sign(data: str, key2: str) -> str:
    return hmac_hex(key2, data.encode())


def signed_callback(data: Mapping[str, Any], key2: str) -> dict[str, Any]:
    """A callback body as ZaloPay sends it (the sandbox, the tests)."""
    text = json.dumps(dict(data), separators=(",", ":"))
    return {"data": text, "mac": sign(text, key2), "type": CALLBACK_TYPE_ORDER}


def verify(body: bytes, app_id: str, key2: str) -> PaymentEvent:
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):  # deep nesting: malformed too
        raise MalformedCallback("the body is not JSON") from None
    if not isinstance(payload, dict):
        raise MalformedCallback("the body must be a JSON object")
    data_text = require(payload, "data", str)
    if not signature_matches(sign(data_text, key2), payload.get("mac")):
        raise BadSignature("ZaloPay mac does not verify")
    try:
        data = json.loads(data_text)
    except (ValueError, RecursionError):
        raise MalformedCallback("data is not JSON") from None
    if not isinstance(data, dict):
        raise MalformedCallback("data must be a JSON object")
    require(data, "app_id", (int, str))
    app_trans_id = reference(data, "app_trans_id")
    zp_trans_id = reference(data, "zp_trans_id", (int, str))
    require(data, "server_time", int)
    if str(data["app_id"]) != app_id:  # signed, but for another app
        raise BadSignature("app_id is not ours")
    return PaymentEvent(
        provider=PROVIDER,
        provider_txn_id=zp_trans_id,
        transaction_id=app_trans_id,
        amount=amount_of(require(data, "amount", int)),
        success=True,  # ZaloPay calls back on success only
        raw={"data": data, "type": payload.get("type")},
    )
