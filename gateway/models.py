"""Request bodies and path parameters, checked before anything reaches the database.

The database checks every rule again (DBAs call the same functions); these checks exist so a
malformed request gets a precise 4xx naming the field, without a round trip.
"""

from __future__ import annotations

import uuid
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, TypeVar

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from gateway.errors import ApiError

Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, use_enum_values=True)


class RegisterIn(Body):
    email: Annotated[str, StringConstraints(strip_whitespace=True, min_length=3, max_length=255)]
    password: Annotated[str, StringConstraints(min_length=8, max_length=128)]
    full_name: Annotated[Text, StringConstraints(max_length=255)]


class LoginIn(Body):
    email: Annotated[str, StringConstraints(max_length=255)]
    password: Annotated[str, StringConstraints(max_length=128)]


class ReserveIn(Body):
    ticket_type_id: uuid.UUID
    quantity: Annotated[int, Field(ge=1, le=10)]


class PaymentMethod(StrEnum):
    MOMO = "MOMO"
    ZALOPAY = "ZALOPAY"
    BANKING = "BANKING"
    CARD = "CARD"


class CompleteIn(Body):
    payment_method: PaymentMethod


Slug = Annotated[str, StringConstraints(pattern=r"^[a-z0-9]+(-[a-z0-9]+)*$", max_length=255)]
Name500 = Annotated[Text, StringConstraints(max_length=500)]
Url = Annotated[str, StringConstraints(max_length=500)]
Money = Annotated[Decimal, Field(ge=0, max_digits=10, decimal_places=2)]


class EventIn(Body):
    slug: Slug
    name: Name500
    description: Annotated[str, StringConstraints(max_length=10000)] | None = None
    banner_url: Url | None = None
    location: Name500
    start_time: AwareDatetime
    end_time: AwareDatetime


class EventPatch(Body):
    slug: Slug | None = None
    name: Name500 | None = None
    description: Annotated[str, StringConstraints(max_length=10000)] | None = None
    banner_url: Url | None = None
    location: Name500 | None = None
    start_time: AwareDatetime | None = None
    end_time: AwareDatetime | None = None


class TicketTypeIn(Body):
    name: Annotated[Text, StringConstraints(max_length=100)]
    price: Money
    initial_quantity: Annotated[int, Field(ge=0, le=1_000_000)]
    start_sale_time: AwareDatetime | None = None
    end_sale_time: AwareDatetime | None = None


class TicketTypePatch(Body):
    name: Annotated[Text, StringConstraints(max_length=100)] | None = None
    price: Money | None = None
    start_sale_time: AwareDatetime | None = None
    end_sale_time: AwareDatetime | None = None


M = TypeVar("M", bound=Body)


def parse_body(model: type[M], raw: bytes) -> M:
    if not raw.strip():
        raise ApiError(422, "validation_failed", "a JSON body is required")
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        if first["type"] == "json_invalid":
            raise ApiError(400, "validation_failed", "the body is not valid JSON") from exc
        raise ApiError(422, "validation_failed", _describe(first)) from exc


def _describe(error: Any) -> str:
    field = ".".join(str(p) for p in error["loc"]) or "body"
    return f"{field}: {error['msg']}"


# Path parameters: a bad UUID is a 422 naming the parameter, never a database error.
def path_uuid(name: str, value: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError as exc:
        raise ApiError(422, "validation_failed", f"{name}: must be a UUID") from exc


def path_text(name: str, value: str, max_length: int) -> str:
    if not 1 <= len(value) <= max_length:
        raise ApiError(422, "validation_failed", f"{name}: must be 1 to {max_length} characters")
    return value
