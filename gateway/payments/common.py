"""What every provider module shares: the HMAC, the constant-time comparison, the parsed event
and the two ways a callback is refused before anything is recorded."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

MAX_REFERENCE = 100
# Amounts stop below 10^12: payment_events.amount (and payments.amount) are NUMERIC(14,2), so a
# larger one would fail in SQL (22003) after verification, not be refused in the provider's form.
MAX_AMOUNT = Decimal(10**12)


class CallbackRefused(Exception):
    """A callback the gateway refuses before the database sees it (only a log line is written)."""


class BadSignature(CallbackRefused):
    """The signature is missing or does not verify: 401 (ZaloPay: return_code -1)."""


class MalformedCallback(CallbackRefused):
    """Not the provider's documented shape (bad JSON, a missing or ill-typed field): 422."""


@dataclass(frozen=True)
class PaymentEvent:
    """A verified callback, as api.apply_payment_event takes it."""

    provider: str  # the payment method: MOMO | ZALOPAY | BANKING | CARD
    provider_txn_id: str  # the provider's own id of this payment event (the inbox's unique key)
    transaction_id: str  # ours: the reference the provider was given at checkout
    amount: Decimal
    success: bool
    raw: dict[str, Any] = field(default_factory=dict)  # the callback as received (for DBAs)
    final: bool = True  # False: a "still processing" notice, acknowledged but not applied

    def args(self) -> dict[str, Any]:
        return {
            "p_provider": self.provider,
            "p_provider_txn_id": self.provider_txn_id,
            "p_transaction_id": self.transaction_id,
            "p_amount": self.amount,
            "p_success": self.success,
        }


def hmac_hex(key: str, message: bytes) -> str:
    """Hex HMAC-SHA256 of `message` under `key` (UTF-8): every provider's scheme."""
    return hmac.new(key.encode(), message, hashlib.sha256).hexdigest()


def signature_matches(expected_hex: str, presented: object) -> bool:
    """Constant-time comparison (hmac.compare_digest) of a presented hex signature; anything that
    is not a string of the right form is simply a mismatch."""
    if not isinstance(presented, str):
        return False
    return hmac.compare_digest(expected_hex.encode(), presented.strip().lower().encode("utf-8", "replace"))


def require(payload: dict[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    """payload[name] of the given JSON type (a bool is not an int), or MalformedCallback."""
    if name not in payload:
        raise MalformedCallback(f"{name} is missing")
    value = payload[name]
    if isinstance(value, bool) or not isinstance(value, kind):
        raise MalformedCallback(f"{name} has the wrong type")
    return value


def reference(payload: dict[str, Any], name: str, kind: type | tuple[type, ...] = str) -> str:
    """An identifier (ours or the provider's): a non-empty string (or integer) of at most 100 characters."""
    value = str(require(payload, name, kind))
    if not value or len(value) > MAX_REFERENCE:
        raise MalformedCallback(f"{name} must be 1-{MAX_REFERENCE} characters")
    return value


def amount_of(value: Any, name: str = "amount") -> Decimal:
    """A positive amount: a JSON integer, a JSON number read as Decimal, or a decimal string."""
    if isinstance(value, bool) or not isinstance(value, int | Decimal | str):
        raise MalformedCallback(f"{name} must be a number")
    try:
        amount = Decimal(value)
    except InvalidOperation:
        raise MalformedCallback(f"{name} must be a number") from None
    if not amount.is_finite() or amount <= 0 or amount >= MAX_AMOUNT:
        raise MalformedCallback(f"{name} is out of range")
    return amount


def whole_vnd(amount: Decimal | int | str) -> int:
    """What providers are sent: whole VND, the order's total rounded (half up, as SQL's round)."""
    return int(Decimal(amount).quantize(Decimal(1), rounding="ROUND_HALF_UP"))
