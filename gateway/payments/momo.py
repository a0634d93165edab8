"""MoMo's IPN (POST /payments/momo/ipn): JSON whose `signature` is the hex HMAC-SHA256 under
MOMO_SECRET_KEY of `accessKey=...&amount=...&extraData=...&message=...&orderId=...&orderInfo=...
&orderType=...&partnerCode=...&payType=...&requestId=...&responseTime=...&resultCode=...&transId=...`
(keys in that order, accessKey = MOMO_ACCESS_KEY, values as sent, nothing escaped).
resultCode 0 is success; our answer is 204 (docs/DESIGN-NOTES.md, "Payment callbacks and the sandbox")."""

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

PROVIDER = "MOMO"
# The signed string's keys, in MoMo's documented order (accessKey is ours, not in the body).
SIGNED_KEYS = (
    "accessKey", "amount", "extraData", "message", "orderId", "orderInfo", "orderType",
    "partnerCode", "payType", "requestId", "responseTime", "resultCode", "transId",
)  # fmt: skip
TEXT_FIELDS = ("partnerCode", "orderId", "requestId", "orderInfo", "orderType", "message", "payType", "extraData")
NUMBER_FIELDS = ("amount", "transId", "resultCode", "responseTime")
SUCCESS = 0
# Not final: MoMo says the payment is still being processed or only authorised; acknowledged, not applied.
PROCESSING = frozenset({1000, 7000, 7002, 9000})


def raw_signature(fields: Mapping[str, Any], access_key: str) -> str:
    """The string MoMo signs, from the IPN's fields (numbers as JSON writes them)."""
    values = {**fields, "accessKey": access_key}
    return "&".join(f"{key}={values[key]}" for key in SIGNED_KEYS)


def sign(fields: Mapping[str, Any], access_key: str, secret_key: str) -> str:
    return hmac_hex(secret_key, raw_signature(fields, access_key).encode())


def signed_ipn(fields: Mapping[str, Any], access_key: str, secret_key: str) -> dict[str, Any]:
    """An IPN body as MoMo sends it: the fields plus their signature (the sandbox, the tests)."""
    return {**fields, "signature": sign(fields, access_key, secret_key)}


def verify(body: bytes, partner_code: str, access_key: str, secret_key: str) -> PaymentEvent:
    """The verified event of an IPN body, or BadSignature / MalformedCallback."""
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):  # deep nesting: malformed too
        raise MalformedCallback("the body is not JSON") from None
    if not isinstance(payload, dict):
        raise MalformedCallback("the body must be a JSON object")
    for name in TEXT_FIELDS:
        require(payload, name, str)
    for name in NUMBER_FIELDS:
        require(payload, name, int)
    presented = payload.get("signature")
    if not signature_matches(sign(payload, access_key, secret_key), presented):
        raise BadSignature("MoMo signature does not verify")
    if payload["partnerCode"] != partner_code:  # signed, but for another merchant
        raise BadSignature("partnerCode is not ours")
    result = payload["resultCode"]
    return PaymentEvent(
        provider=PROVIDER,
        provider_txn_id=reference(payload, "transId", int),
        transaction_id=reference(payload, "orderId"),
        amount=amount_of(payload["amount"]),
        success=result == SUCCESS,
        raw=payload,
        final=result not in PROCESSING,
    )
