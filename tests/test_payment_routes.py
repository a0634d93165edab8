"""The buyer's and the admin's payment routes over HTTP (provider mode, the SQL of issue 12):
checkout (idempotent, with the sandbox pay_url), the order (owner only), cancel (seats back),
the admin refund; complete is refused in provider mode."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from starlette.testclient import TestClient

from tests.factories import make_ticket_type, stock, violations
from tests.http import client_for, new_user
from tests.test_payment_callbacks import DEV, callback_for, problem


@pytest.fixture
def client(dbname: str, owner: psycopg.Connection) -> Iterator[TestClient]:
    owner.execute("SELECT api.set_payment_mode('provider')")
    with client_for(dbname, **DEV) as c:
        yield c


def reserve(client: TestClient, headers: dict[str, str], tt: dict[str, Any], quantity: int = 2) -> str:
    r = client.post("/bookings/reserve", headers=headers, json={"ticket_type_id": tt["id"], "quantity": quantity})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def test_checkout_is_idempotent_and_complete_needs_a_payment(client: TestClient, owner: psycopg.Connection) -> None:
    tt = make_ticket_type(owner, quantity=10)
    _, headers = new_user(client, owner)
    rid = reserve(client, headers, tt)
    problem(client.post(f"/bookings/complete/{rid}", headers=headers, json={"payment_method": "MOMO"}), 409,
            "payment_required")  # fmt: skip
    keyed = {**headers, "Idempotency-Key": "checkout-1"}
    first = client.post(f"/bookings/checkout/{rid}", headers=keyed, json={"payment_method": "CARD"})
    again = client.post(f"/bookings/checkout/{rid}", headers=keyed, json={"payment_method": "CARD"})
    assert first.status_code == again.status_code == 201, first.text
    assert first.json() == again.json()
    payment = first.json()["payment"]
    assert payment["pay_url"].startswith("http://testserver/payments/sandbox/TXN-") and payment["expires_at"]
    problem(client.post(f"/bookings/checkout/{rid}", headers=keyed, json={"payment_method": "MOMO"}), 422,
            "idempotency_key_reused")  # fmt: skip
    assert owner.execute("SELECT count(*) FROM orders").fetchone() == (1,)
    problem(client.post(f"/bookings/checkout/{rid}", headers=headers, json={"payment_method": "PAYPAL"}), 422,
            "validation_failed")  # fmt: skip
    assert stock(owner, tt) == 8


def test_my_bookings_shows_a_pending_payments_pay_url_as_the_order_does(
    client: TestClient, owner: psycopg.Connection
) -> None:
    tt = make_ticket_type(owner, quantity=10)
    _, headers = new_user(client, owner)
    pending = client.post(f"/bookings/checkout/{reserve(client, headers, tt)}", headers=headers,
                          json={"payment_method": "ZALOPAY"}).json()  # fmt: skip
    cancelled = client.post(f"/bookings/checkout/{reserve(client, headers, tt)}", headers=headers,
                            json={"payment_method": "MOMO"}).json()  # fmt: skip
    assert client.delete(f"/bookings/orders/{cancelled['id']}", headers=headers).status_code == 204
    listed = {o["id"]: o for o in client.get("/bookings/my-bookings", headers=headers).json()}
    shown = client.get(f"/bookings/orders/{pending['id']}", headers=headers).json()
    assert listed[pending["id"]]["payment"]["pay_url"] == shown["payment"]["pay_url"] == pending["payment"]["pay_url"]
    assert "/payments/sandbox/" in shown["payment"]["pay_url"]
    assert "pay_url" not in listed[cancelled["id"]]["payment"]  # not PENDING: nothing to pay


def test_order_is_the_owners_and_cancel_gives_the_seats_back(client: TestClient, owner: psycopg.Connection) -> None:
    tt = make_ticket_type(owner, quantity=10)
    _, headers = new_user(client, owner)
    _, stranger = new_user(client, owner)
    rid = reserve(client, headers, tt)
    order = client.post(f"/bookings/checkout/{rid}", headers=headers, json={"payment_method": "MOMO"}).json()
    problem(client.get(f"/bookings/orders/{order['id']}", headers=stranger), 404, "not_found")
    problem(client.delete(f"/bookings/orders/{order['id']}", headers=stranger), 404, "not_found")
    problem(client.get("/bookings/orders/not-a-uuid", headers=headers), 422, "validation_failed")
    assert client.delete(f"/bookings/orders/{order['id']}", headers=headers).status_code == 204
    cancelled = client.get(f"/bookings/orders/{order['id']}", headers=headers).json()
    assert cancelled["status"] == "CANCELLED" and "pay_url" not in cancelled["payment"]
    assert stock(owner, tt) == 10
    assert violations(owner) == []


def test_admin_refund_of_a_paid_order(client: TestClient, owner: psycopg.Connection) -> None:
    tt = make_ticket_type(owner, quantity=10)
    _, headers = new_user(client, owner)
    _, admin = new_user(client, owner, "admin")
    rid = reserve(client, headers, tt)
    order = client.post(f"/bookings/checkout/{rid}", headers=headers, json={"payment_method": "BANKING"}).json()
    problem(client.post(f"/admin/orders/{order['id']}/refund", headers=admin), 409, "invalid_order_state")
    path, body, cb_headers = callback_for("BANKING", order)
    assert client.post(path, content=body, headers=cb_headers).status_code == 204
    problem(client.post(f"/admin/orders/{order['id']}/refund", headers=headers), 403, "forbidden")
    problem(client.delete(f"/bookings/orders/{order['id']}", headers=headers), 409, "invalid_order_state")
    r = client.post(f"/admin/orders/{order['id']}/refund", headers=admin)
    assert r.status_code == 200, r.text
    refunded = r.json()
    assert refunded["status"] in ("REFUND_PENDING", "REFUNDED")
    assert {t["status"] for t in refunded["tickets"]} == {"CANCELLED"}
    assert stock(owner, tt) == 10  # the event has not started: the seats are on sale again
    assert violations(owner) == []


def test_a_provider_gateway_refuses_complete_even_if_the_database_says_instant(
    dbname: str, owner: psycopg.Connection
) -> None:
    """The database's mode is the rule (SQL refuses complete in provider mode); a gateway set to
    provider refuses it too, so a database left in instant mode (the migration's default, a
    forgotten `dbctl up` with PAYMENT_MODE) cannot hand out tickets unpaid."""
    owner.execute("SELECT api.set_payment_mode('instant')")
    tt = make_ticket_type(owner, quantity=10)
    with client_for(dbname, **DEV) as c:
        _, headers = new_user(c, owner)
        rid = reserve(c, headers, tt)
        problem(c.post(f"/bookings/complete/{rid}", headers=headers, json={"payment_method": "MOMO"}), 409,
                "payment_required")  # fmt: skip
    assert owner.execute("SELECT count(*) FROM orders").fetchone() == (0,)
    with client_for(dbname) as c:  # an instant gateway on an instant database: the demo's path
        _, headers = new_user(c, owner)
        rid = reserve(c, headers, tt)
        assert c.post(f"/bookings/complete/{rid}", headers=headers, json={"payment_method": "MOMO"}).status_code == 201
