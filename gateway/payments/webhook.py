"""Bank transfer and card webhooks (POST /payments/bank/webhook, /payments/card/webhook): one
scheme for both, each with its own secret (BANK_WEBHOOK_SECRET, CARD_WEBHOOK_SECRET). JSON
`{transaction_id, amount, status: "SUCCESS" | "FAILED", provider_txn_id}` with the header
`X-Signature: sha256=<hex HMAC-SHA256 of the raw body>`. The answer is 204."""

from __future__ import annotations

import json
from decimal import Decimal
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

BANK, CARD = "BANKING", "CARD"
HEADER = "X-Signature"
PREFIX = "sha256="
STATUSES = {"SUCCESS": True, "FAILED": False}


def sign(body: bytes, secret: str) -> str:
    """The X-Signature header's value for this raw body."""
    return PREFIX + hmac_hex(secret, body)


def signed_request(payload: dict[str, Any], secret: str) -> tuple[bytes, dict[str, str]]:
    """A webhook as the bank or card processor sends it: body bytes and headers."""
    body = json.dumps(payload, separators=(",", ":")).encode()
    return body, {HEADER: sign(body, secret), "Content-Type": "application/json"}


def verify(provider: str, body: bytes, header: str | None, secret: str) -> PaymentEvent:
    """The signature first, over the raw bytes; only a verified body is parsed."""
    if header is None or not header.startswith(PREFIX):
        raise BadSignature(f"{HEADER}: sha256=<hex> is missing")
    if not signature_matches(hmac_hex(secret, body), header[len(PREFIX) :]):
        raise BadSignature(f"{HEADER} does not verify")
    try:
        payload = json.loads(body, parse_float=Decimal)
    except (ValueError, UnicodeDecodeError, RecursionError):  # deep nesting: malformed too
        raise MalformedCallback("the body is not JSON") from None
    if not isinstance(payload, dict):
        raise MalformedCallback("the body must be a JSON object")
    status = require(payload, "status", str)
    if status not in STATUSES:
        raise MalformedCallback("status must be SUCCESS or FAILED")
    return PaymentEvent(
        provider=provider,
        provider_txn_id=reference(payload, "provider_txn_id"),
        transaction_id=reference(payload, "transaction_id"),
        amount=amount_of(require(payload, "amount", (int, Decimal, str))),
        success=STATUSES[status],
        raw={k: (str(v) if isinstance(v, Decimal) else v) for k, v in payload.items()},
    )
