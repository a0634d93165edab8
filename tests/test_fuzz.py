"""Property-based fuzzing of every operation in /openapi.json (schemathesis, in-process ASGI,
real database): no 5xx, every answer documented and matching its schema, valid requests
accepted, invalid ones refused with a 4xx, 405 with Allow. Once with a user's token, once with
an admin's. Bounded (max_examples) so it costs a minute or two on two cores.

Random UUIDs find nothing, so about half the generated ids are swapped for real ones (an event,
a ticket type, a hold, a ticket) to reach past the 404s into the business rules.
"""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import Case, CheckContext, Response
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import negative_data_rejection, positive_data_acceptance

from gateway.app import create_app
from gateway.models import UUID_PATTERN
from gateway.payments import callbacks
from tests.conftest import call
from tests.factories import make_ticket_type, make_user, reserve
from tests.http import forged, settings_for

MAX_EXAMPLES = 60

# Rules a JSON schema cannot state; a valid-by-schema request may still break them (422).
CROSS_FIELD_RULES = re.compile(
    r"end_time must be after start_time|end_sale_time must be after start_sale_time"
    r"|within years 0001\.\.9999 in UTC|^cursor: "
    r"|^url: (a webhook URL|the port|the host name)"  # a URL's host, port, user info (gateway/netguard.py)
)
UUID = re.compile(UUID_PATTERN)


@dataclass
class World:
    """Real rows to aim generated requests at, and the caller's token."""

    headers: dict[str, str]
    ids: dict[str, list[str]] = field(default_factory=dict)
    rng: random.Random = field(default_factory=lambda: random.Random(8))

    def aim(self, case: Case) -> None:
        """Swap about half of the generated, well-formed ids for real ones (the case stays valid)."""
        for name, value in list((case.path_parameters or {}).items()):
            real = self.ids.get(name)
            if real and isinstance(value, str) and (UUID.fullmatch(value) or name == "ticket_code"):
                if self.rng.random() < 0.5:
                    case.path_parameters[name] = self.rng.choice(real)
        body = case.body
        if (
            isinstance(body, dict)
            and isinstance(body.get("ticket_type_id"), str)
            and UUID.fullmatch(body["ticket_type_id"])
        ):
            if self.rng.random() < 0.5:
                body["ticket_type_id"] = self.rng.choice(self.ids["ticket_type_id"])


class Bearer(requests.auth.AuthBase):
    """The caller's token, given to schemathesis as auth (so its no-auth probes go without it)."""

    def __init__(self, authorization: str) -> None:
        self.authorization = authorization

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = self.authorization
        return request


def valid_requests_are_accepted(ctx: CheckContext, response: Response, case: Case) -> bool | None:
    """positive_data_acceptance, also allowing the business answers and the rules above."""
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive:
        return None
    status = response.status_code
    if status < 300 or status in (304, 401, 403, 404, 409, 410):
        return None
    if status == 422 and CROSS_FIELD_RULES.search(response.json().get("message", "")):
        return None
    if status == 422 and response.json().get("code") == "idempotency_key_reused":
        return None  # a business answer: the generator sent one key with two different requests
    if status == 422 and response.json().get("code") == "url_not_allowed":
        return None  # where a URL's name points is not in any schema
    raise AssertionError(f"a request valid by the document was refused: {status} {response.text[:300]}")


@pytest.fixture(params=["user", "admin"])
def world(request: pytest.FixtureRequest, owner: psycopg.Connection) -> World:
    caller = make_user(owner, request.param)
    buyer = make_user(owner)
    tt = make_ticket_type(owner, quantity=1000)
    draft = make_ticket_type(owner, publish=False)
    holds = [reserve(owner, caller, tt)["id"] for _ in range(3)]
    hook = call(owner, "create_webhook", p_user_id=caller["id"], p_url="https://hooks.invalid/fuzz",
                p_events=["order.paid"], p_event_id=None)  # fmt: skip
    paid = call(owner, "complete_booking", p_user_id=caller["id"], p_reservation_id=holds[0], p_payment_method="CARD")
    other = reserve(owner, buyer, tt)["id"]
    return World(
        headers=forged({"sub": caller["id"], "role": request.param}),
        ids={
            "event_id": [tt["event_id"], draft["event_id"]],
            "id_or_slug": [tt["event_id"], tt["event"]["slug"], draft["event"]["slug"]],
            "ticket_type_id": [tt["id"], draft["id"]],
            "reservation_id": [*holds, other],
            "ticket_code": [t["ticket_code"] for t in paid["tickets"]],
            "webhook_id": [hook["id"]],
        },
    )


@pytest.fixture
def api_schema(request: pytest.FixtureRequest, dbname: str, world: World) -> Iterator[Any]:
    # schemathesis 4.32's pytest glue renames the item through `_nodeid`, which pytest 9 no longer has.
    request.node._nodeid = request.node.nodeid
    app = create_app(settings_for(dbname, pool_max=4))
    access = logging.getLogger("gateway.access")
    level, access.level = access.level, logging.WARNING  # thousands of requests: keep the output readable
    try:
        loaded = schemathesis.openapi.from_asgi("/openapi.json", app)
        loaded.auth.set_from_requests(Bearer(world.headers["Authorization"]))
        yield loaded
    finally:
        asgi.shutdown_lifespans()  # the app's pool closes before the test database is dropped
        access.setLevel(level)


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True, database=None
)
def test_every_operation_answers_as_documented(case: Case, world: World) -> None:
    world.aim(case)
    excluded = [positive_data_acceptance]
    if case.operation.path == callbacks.ZALOPAY_PATH:
        # ZaloPay's contract: every answer is 200 JSON and return_code says what happened, a
        # refusal included (-1); checked below instead of "invalid data gets a 4xx".
        excluded.append(negative_data_rejection)
    case.call_and_validate(
        excluded_checks=excluded,
        additional_checks=[valid_requests_are_accepted, unsigned_callbacks_are_refused],
    )


def unsigned_callbacks_are_refused(ctx: CheckContext, response: Response, case: Case) -> bool | None:
    """No generated payment callback is accepted (none carries a valid signature)."""
    if not case.operation.path.startswith("/payments/"):
        return None
    if case.operation.path == callbacks.ZALOPAY_PATH and response.status_code == 200:
        if response.json().get("return_code") != -1:
            raise AssertionError(f"ZaloPay callback not refused: {response.text[:300]}")
        return None
    if not 400 <= response.status_code < 500:
        raise AssertionError(f"payment callback not refused with a 4xx: {response.status_code} {response.text[:300]}")
    return None
