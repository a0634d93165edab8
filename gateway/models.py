"""Request bodies, path and query parameters, checked before anything reaches the database.

The database checks every rule again (DBAs call the same functions); these checks exist so a
malformed request gets a precise 422 naming the field, without a round trip, and so nothing a
client can send reaches PostgreSQL as an error of its own (a NUL character, a lone surrogate,
a date PostgreSQL would print as "BC").

Each type states exactly what it accepts in its JSON schema (/openapi.json is built from these
models): what the schema allows is accepted, what it refuses is refused with 422. The few
rules a schema cannot state (end after start, dates within years 1..9999 in UTC) are in the
field descriptions.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, TypeVar

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    WithJsonSchema,
    field_validator,
)
from pydantic_core import PydanticCustomError

from gateway import netguard
from gateway.errors import validation_failed

# ------------------------------------------------------------------ strings

NO_NUL = r"^[^\x00]*$"  # PostgreSQL text cannot hold NUL
NAMED = r"^[^\x00]*[^\x00 ][^\x00]*$"  # ... and something other than spaces (SQL trims spaces)
UUID_PATTERN = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
# The rule api.register_user applies, with spaces around the address allowed (stripped, as
# they always were).
EMAIL_INPUT_PATTERN = r"^\s*[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\s*$"
SLUG_PATTERN = r"^[a-z0-9]+(-[a-z0-9]+)*$"


# Free text: anything but NUL. Names: also something other than spaces.
Text128 = Annotated[str, StringConstraints(max_length=128, pattern=NO_NUL)]
Text255 = Annotated[str, StringConstraints(max_length=255, pattern=NO_NUL)]
Text500 = Annotated[str, StringConstraints(max_length=500, pattern=NO_NUL)]
Text10000 = Annotated[str, StringConstraints(max_length=10000, pattern=NO_NUL)]
Password = Annotated[str, StringConstraints(min_length=8, max_length=128, pattern=NO_NUL)]
Name100 = Annotated[str, StringConstraints(min_length=1, max_length=100, pattern=NAMED)]
Name255 = Annotated[str, StringConstraints(min_length=1, max_length=255, pattern=NAMED)]
Name500 = Annotated[str, StringConstraints(min_length=1, max_length=500, pattern=NAMED)]


Uuid = Annotated[str, StringConstraints(pattern=UUID_PATTERN), WithJsonSchema(
    {"type": "string", "format": "uuid", "pattern": UUID_PATTERN})]  # fmt: skip


# ------------------------------------------------------------------ numbers


def _integral(value: Any) -> Any:
    """JSON Schema's integer includes 1.0: accept a float with no fraction as that integer."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


Quantity = Annotated[int, Field(ge=1, le=10), BeforeValidator(_integral)]
Stock = Annotated[int, Field(ge=0, le=1_000_000), BeforeValidator(_integral)]
AdmissionRate = Annotated[
    int,
    Field(ge=1, le=1_000_000, description="People the waiting room admits per minute, spread evenly."),
    BeforeValidator(_integral),
]
Cap = Annotated[
    int,
    Field(ge=1, le=1_000_000, description="Seats one buyer may hold or own (holds + pending and paid orders)."),
    BeforeValidator(_integral),
]


PRICE_MAX = 99_999_999
PRICE_PATTERN = r"^[0-9]{1,8}(\.[0-9]{1,2})?$"
_PRICE = re.compile(PRICE_PATTERN)


def _price(value: Any) -> Decimal:
    value = _integral(value)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= PRICE_MAX:
        return Decimal(value)
    if isinstance(value, str) and _PRICE.fullmatch(value):
        return Decimal(value)
    raise PydanticCustomError(
        "price", 'must be a decimal string like "150000.00" (0 to 99999999.99) or a whole number 0 to 99999999'
    )


Money = Annotated[Decimal, BeforeValidator(_price), WithJsonSchema({
    "description": "Money: a decimal string with at most two decimals, or a whole number.",
    "anyOf": [{"type": "string", "pattern": PRICE_PATTERN}, {"type": "integer", "minimum": 0, "maximum": PRICE_MAX}],
})]  # fmt: skip


# ------------------------------------------------------------------ times

TIME_RANGE = "within years 0001..9999 in UTC (what RFC 3339 can write)"


def _in_range(value: datetime) -> datetime:
    try:
        return value.astimezone(UTC)
    except OverflowError as exc:
        raise PydanticCustomError("datetime_range", f"must be {TIME_RANGE}") from exc


Time = Annotated[AwareDatetime, Field(description=f"RFC 3339 date-time with an offset, {TIME_RANGE}.")]
SaleEnd = Annotated[AwareDatetime, Field(description=f"After start_sale_time when both are set; {TIME_RANGE}.")]


# ------------------------------------------------------------------ bodies


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, use_enum_values=True)

    @field_validator("*", mode="after")
    @classmethod
    def _bounded_times(cls, value: Any) -> Any:
        return _in_range(value) if isinstance(value, datetime) else value


class RegisterIn(Body):
    email: Annotated[
        str, StringConstraints(strip_whitespace=True, min_length=3, max_length=255, pattern=EMAIL_INPUT_PATTERN)
    ]
    password: Password
    full_name: Name255


class LoginIn(Body):
    email: Text255
    password: Text128


class RefreshIn(Body):
    refresh_token: Annotated[str, Field(description="The opaque refresh token from login or the last refresh."),
                             StringConstraints(min_length=1, max_length=255, pattern=NO_NUL)]  # fmt: skip


class ReserveIn(Body):
    ticket_type_id: Uuid
    quantity: Quantity


class PaymentMethod(StrEnum):
    MOMO = "MOMO"
    ZALOPAY = "ZALOPAY"
    BANKING = "BANKING"
    CARD = "CARD"


class CompleteIn(Body):
    payment_method: PaymentMethod


Slug = Annotated[str, StringConstraints(pattern=SLUG_PATTERN, max_length=255)]


class EventIn(Body):
    slug: Slug
    name: Name500
    description: Text10000 | None = None
    banner_url: Text500 | None = None
    location: Name500
    start_time: Time
    end_time: Annotated[Time, Field(description=f"After start_time; RFC 3339 with an offset, {TIME_RANGE}.")]
    max_tickets_per_user: Cap | None = None  # over all the event's ticket types; null: no cap
    queue_enabled: Annotated[
        bool, Field(description="Sell through a waiting room (needs admission_rate_per_minute).")
    ] = False
    admission_rate_per_minute: AdmissionRate | None = None


# Patches: a field left out is unchanged; null clears a nullable field and is refused elsewhere.
def _no_default(schema: dict[str, Any]) -> None:
    schema.pop("default", None)


UNSET: Any = Field(default=None, json_schema_extra=_no_default)


class EventPatch(Body):
    slug: Slug = UNSET
    name: Name500 = UNSET
    description: Text10000 | None = None
    banner_url: Text500 | None = None
    location: Name500 = UNSET
    start_time: Time = UNSET
    end_time: Time = UNSET
    max_tickets_per_user: Cap | None = None
    queue_enabled: bool = UNSET
    admission_rate_per_minute: AdmissionRate | None = None


class TicketTypeIn(Body):
    name: Name100
    price: Money
    initial_quantity: Stock
    start_sale_time: Time | None = None
    end_sale_time: SaleEnd | None = None
    max_per_user: Cap | None = None  # null: no cap


class TicketTypePatch(Body):
    name: Name100 = UNSET
    price: Money = UNSET
    start_sale_time: Time | None = None
    end_sale_time: Time | None = None
    max_per_user: Cap | None = None


class WebhookEvent(StrEnum):
    ORDER_PAID = "order.paid"
    ORDER_REFUNDED = "order.refunded"
    TICKET_CHECKED_IN = "ticket.checked_in"


WEBHOOK_URL_MAX = 2048
# Visible ASCII only (a client percent-encodes the rest): urlsplit would silently drop a tab or
# newline, so the URL checked would not be the URL stored.
WEBHOOK_URL_PATTERN = r"^https?://[!-~]+$"
_WEBHOOK_URL = re.compile(WEBHOOK_URL_PATTERN)


def _webhook_url(value: str) -> str:
    """The pattern (with a message a person can read), then what a pattern cannot state: a host,
    no user name or password, a port 1-65535, a host name a resolver takes. Where it may point is
    checked later (422 url_not_allowed)."""
    if not _WEBHOOK_URL.fullmatch(value):
        raise PydanticCustomError(
            "webhook_url", "must start with http:// or https:// and hold only visible ASCII characters (no spaces)"
        )
    try:
        netguard.Target.parse(value)
    except ValueError as exc:
        raise PydanticCustomError("webhook_url", str(exc)) from None
    return value


def _unique(values: list[Any]) -> list[Any]:
    if len(set(values)) != len(values):
        raise PydanticCustomError("unique_items", "must not name an event twice")
    return values


WebhookUrl = Annotated[
    str,
    StringConstraints(max_length=WEBHOOK_URL_MAX),
    AfterValidator(_webhook_url),
    WithJsonSchema({
        "type": "string", "maxLength": WEBHOOK_URL_MAX, "pattern": WEBHOOK_URL_PATTERN,
        "description": "http:// or https:// URL with a host (no user name or password), at most 2048 characters "
                       "of visible ASCII; it must not point at a loopback, private, link-local or reserved address "
                       "(422 url_not_allowed).",
    }),
]  # fmt: skip
WebhookEvents = Annotated[
    list[WebhookEvent],
    Field(min_length=1, max_length=len(WebhookEvent), json_schema_extra={"uniqueItems": True},
          description="The notifications to receive, each at most once."),
    AfterValidator(_unique),
]  # fmt: skip


class WebhookIn(Body):
    url: WebhookUrl
    events: WebhookEvents
    event_id: Annotated[Uuid | None, Field(description="Only this event's notifications; null or absent: all.")] = None


M = TypeVar("M", bound=Body)


def parse_body(model: type[M], raw: bytes) -> M:
    if not raw.strip():
        raise validation_failed("a JSON body is required")
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        if first["type"] == "json_invalid":
            raise validation_failed(f"the body is not valid JSON: {first['msg']}") from exc
        raise validation_failed(_describe(first)) from exc


def _describe(error: Any) -> str:
    field = ".".join(str(p) for p in error["loc"]) or "body"
    return f"{field}: {error['msg']}"


# ------------------------------------------------------------------ path and query parameters

_UUID = re.compile(UUID_PATTERN)


def path_uuid(name: str, value: str) -> str:
    """A path UUID in its canonical form (8-4-4-4-12 hex digits, nothing else)."""
    if not _UUID.fullmatch(value):
        raise validation_failed(f"{name}: must be a UUID")
    return str(uuid.UUID(value))


IDEMPOTENCY_KEY_PATTERN = r"^[!-~]{1,255}$"
_IDEMPOTENCY_KEY = re.compile(IDEMPOTENCY_KEY_PATTERN)
# What may be sent to SQL; only api.waiting_room_status's tokens pass there.
ADMISSION_TOKEN_PATTERN = IDEMPOTENCY_KEY_PATTERN
_ADMISSION_TOKEN = re.compile(ADMISSION_TOKEN_PATTERN)


def admission_token(value: str | None) -> str | None:
    """The X-Admission-Token header: absent, or 1-255 visible ASCII characters (checked in SQL)."""
    if value is None:
        return None
    if not _ADMISSION_TOKEN.fullmatch(value):
        raise validation_failed("X-Admission-Token: must be 1 to 255 visible ASCII characters")
    return value


def idempotency_key(value: str | None) -> str | None:
    """The Idempotency-Key header: absent, or 1-255 visible ASCII characters (0x21-0x7E)."""
    if value is None:
        return None
    if not _IDEMPOTENCY_KEY.fullmatch(value):
        raise validation_failed("Idempotency-Key: must be 1 to 255 visible ASCII characters")
    return value


def clean_text(name: str, value: str, max_length: int, min_length: int = 1) -> str:
    """A path or query string: bounded, no NUL, no lone surrogate (neither can reach PostgreSQL)."""
    if not min_length <= len(value) <= max_length:
        raise validation_failed(f"{name}: must be {min_length} to {max_length} characters")
    if "\x00" in value:
        raise validation_failed(f"{name}: must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise validation_failed(f"{name}: must be valid UTF-8 text") from exc
    return value
