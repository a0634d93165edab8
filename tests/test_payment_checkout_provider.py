"""Checkout against a provider (production provider mode) and the development sandbox's stub
providers, with real sockets: the stub (gateway/payments/sandbox_api.py) served by uvicorn on a
free port plays MoMo, ZaloPay, the bank and the card processor, and the gateway is configured as
in production with its endpoints pointing there.

- checkout creates the payment at the provider after api.checkout committed, answers the
  provider's pay_url and stores it (GET order and a replayed checkout show it);
- the provider down (nothing listens), or answering under other keys: 502 provider_unavailable,
  the order stays PENDING without a pay_url; the same checkout again once it is up: 201 with it;
- the sandbox page records its outcome where the stub's status API reads it, and "callback lost"
  records a payment nobody is told about."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from starlette.testclient import TestClient

from dbctl.throwaway import free_port
from gateway.app import create_app
from gateway.payments import callbacks, providers, sandbox_api
from gateway.payments.providers import ProviderConfig
from tests.factories import make_ticket_type, violations
from tests.http import client_for, new_user, settings_for
from tests.live import LiveServer

CREDENTIALS: dict[str, Any] = {
    "payment_mode": "provider",
    "momo_partner_code": "MOMOSANDBOX", "momo_access_key": "test-momo-access", "momo_secret_key": "test-momo-secret",
    "zalopay_app_id": "2553", "zalopay_key1": "test-zalopay-key1", "zalopay_key2": "test-zalopay-key2",
    "bank_webhook_secret": "test-bank-secret", "card_webhook_secret": "test-card-secret",
}  # fmt: skip
# The development sandbox is asked for (PAYMENT_SANDBOX=yes: `make run` sets it).
DEV: dict[str, Any] = {**CREDENTIALS, "payment_sandbox": True}
PRODUCTION = {"production": True, "jwt_secret": "x" * 40, "public_base_url": "https://tickets.example"}
STUB_CONFIG = ProviderConfig.from_env(settings_for("unused", **DEV).provider_env())


def endpoints(url: str) -> dict[str, str]:
    return {"momo_endpoint": f"{url}/momo", "zalopay_endpoint": f"{url}/zalopay", "bank_api_url": f"{url}/bank",
            "card_api_url": f"{url}/card"}  # fmt: skip


@pytest.fixture
def stub(tmp_path: Path) -> Iterator[tuple[LiveServer, sandbox_api.StubState]]:
    with LiveServer(sandbox_api.app(tmp_path, STUB_CONFIG)) as live:
        yield live, sandbox_api.StubState(tmp_path)


def problem(response: Any, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.json()["code"] == code, response.text


def reserve(client: TestClient, owner: psycopg.Connection) -> tuple[str, dict[str, str]]:
    tt = make_ticket_type(owner, quantity=10, price="75000.40")
    _, headers = new_user(client, owner)
    r = client.post("/bookings/reserve", headers=headers, json={"ticket_type_id": tt["id"], "quantity": 2})
    assert r.status_code == 201, r.text
    return r.json()["id"], headers


def stored_pay_url(owner: psycopg.Connection, transaction_id: str) -> str | None:
    row = owner.execute("SELECT pay_url FROM payments WHERE transaction_id = %s", (transaction_id,)).fetchone()
    assert row is not None
    return row[0]  # type: ignore[no-any-return]


@pytest.mark.parametrize("method", ["MOMO", "ZALOPAY", "BANKING", "CARD"])
def test_checkout_creates_the_payment_at_the_provider_and_stores_its_pay_url(
    dbname: str, owner: psycopg.Connection, stub: tuple[LiveServer, sandbox_api.StubState], method: str
) -> None:
    live, state = stub
    with client_for(dbname, **PRODUCTION, **CREDENTIALS, **endpoints(live.url)) as client:
        rid, headers = reserve(client, owner)
        key = {**headers, "Idempotency-Key": f"checkout-{method}"}
        r = client.post(f"/bookings/checkout/{rid}", headers=key, json={"payment_method": method})
        assert r.status_code == 201, r.text
        order = r.json()
        txn, pay_url = order["payment"]["transaction_id"], order["payment"]["pay_url"]
        # The stub answers a page of its own origin: the URL came from the provider, not from us.
        assert pay_url == f"{live.url}/payments/sandbox/{txn}?method={method}&amount=150001"
        assert stored_pay_url(owner, txn) == pay_url
        created = state.payment(txn)
        assert created is not None and (created["method"], created["amount"], created["state"]) == (
            method, 150001, "pending")  # fmt: skip
        assert client.get(f"/bookings/orders/{order['id']}", headers=headers).json()["payment"]["pay_url"] == pay_url
        replay = client.post(f"/bookings/checkout/{rid}", headers=key, json={"payment_method": method})
        assert (replay.status_code, replay.json()) == (201, order)
    assert violations(owner) == []


def test_provider_down_is_502_then_the_same_checkout_succeeds(
    dbname: str, owner: psycopg.Connection, tmp_path: Path
) -> None:
    port = free_port()  # nothing listens there yet
    with client_for(dbname, **PRODUCTION, **CREDENTIALS, **endpoints(f"http://127.0.0.1:{port}")) as client:
        rid, headers = reserve(client, owner)
        key = {**headers, "Idempotency-Key": "down-then-up"}
        r = client.post(f"/bookings/checkout/{rid}", headers=key, json={"payment_method": "ZALOPAY"})
        problem(r, 502, "provider_unavailable")
        assert "Idempotency-Key" in r.json()["message"] and "ConnectError" not in r.text
        row = owner.execute("SELECT o.id, o.status, p.transaction_id, p.pay_url, o.payment_deadline > now()"
                            "  FROM orders o JOIN payments p ON p.order_id = o.id"
                            " WHERE o.reservation_id = %s", (rid,)).fetchone()  # fmt: skip
        assert row is not None
        order_id, status, txn, pay_url, holding = row
        assert (status, pay_url, holding) == ("PENDING", None, True)  # held until its deadline
        shown = client.get(f"/bookings/orders/{order_id}", headers=headers).json()
        assert shown["status"] == "PENDING" and shown["payment"]["pay_url"] is None
        with LiveServer(sandbox_api.app(tmp_path, STUB_CONFIG), port=port):
            again = client.post(f"/bookings/checkout/{rid}", headers=key, json={"payment_method": "ZALOPAY"})
            assert again.status_code == 201, again.text
        assert again.json()["id"] == str(order_id)
        assert again.json()["payment"]["pay_url"] == stored_pay_url(owner, txn) is not None
        assert str(stored_pay_url(owner, txn)).startswith(f"http://127.0.0.1:{port}/payments/sandbox/{txn}?")
        assert client.get(f"/bookings/orders/{order_id}", headers=headers).json()["payment"]["pay_url"] == (
            again.json()["payment"]["pay_url"])  # fmt: skip
    assert violations(owner) == []


def test_a_replayed_checkout_of_an_order_no_longer_pending_gets_no_new_payment_link(
    dbname: str, owner: psycopg.Connection, tmp_path: Path
) -> None:
    """The first create failed (502); the buyer cancels; the replay (same key: its stored answer
    says PENDING) must not create a payment at the provider for the dead order."""
    port = free_port()
    with client_for(dbname, **PRODUCTION, **CREDENTIALS, **endpoints(f"http://127.0.0.1:{port}")) as client:
        rid, headers = reserve(client, owner)
        key = {**headers, "Idempotency-Key": "down-then-cancelled"}
        problem(client.post(f"/bookings/checkout/{rid}", headers=key, json={"payment_method": "MOMO"}),
                502, "provider_unavailable")  # fmt: skip
        row = owner.execute("SELECT o.id, p.transaction_id FROM orders o JOIN payments p ON p.order_id = o.id"
                            " WHERE o.reservation_id = %s", (rid,)).fetchone()  # fmt: skip
        assert row is not None
        order_id, txn = row
        assert client.delete(f"/bookings/orders/{order_id}", headers=headers).status_code == 204
        with LiveServer(sandbox_api.app(tmp_path, STUB_CONFIG), port=port):
            again = client.post(f"/bookings/checkout/{rid}", headers=key, json={"payment_method": "MOMO"})
        assert again.status_code == 201, again.text
        assert again.json()["payment"]["pay_url"] is None
    assert sandbox_api.StubState(tmp_path).payment(txn) is None, "the provider was not asked"
    assert stored_pay_url(owner, txn) is None


def test_the_payment_link_expires_with_the_order(dbname: str, owner: psycopg.Connection) -> None:
    """MoMo's orderExpireTime (minutes) and ZaloPay's expire_duration_seconds (at least 300) follow
    the order's deadline (outside their signed strings)."""
    urls = {"notify_url": "https://t/n", "return_url": "https://t/r"}
    momo = providers.momo_create_request(STUB_CONFIG, transaction_id="BK1", amount=1000, description="d",
                                         expires_in=899, **urls)  # fmt: skip
    assert momo["orderExpireTime"] == 15
    unsigned = {k: v for k, v in momo.items() if k != "orderExpireTime"}
    again = providers.momo_create_request(STUB_CONFIG, transaction_id="BK1", amount=1000, description="d", **urls)
    assert unsigned == again
    zalo = providers.zalopay_create_request(STUB_CONFIG, transaction_id="261126_1", amount=1000, description="d",
                                            now_ms=1, expires_in=120, **urls)  # fmt: skip
    assert zalo["expire_duration_seconds"] == 300


def test_provider_under_other_keys_is_502_and_nothing_is_stored(
    dbname: str, owner: psycopg.Connection, tmp_path: Path
) -> None:
    other = ProviderConfig(**{**STUB_CONFIG.__dict__, "momo_secret_key": "not-ours"})
    with (
        LiveServer(sandbox_api.app(tmp_path, other)) as live,
        client_for(dbname, **PRODUCTION, **CREDENTIALS, **endpoints(live.url)) as client,
    ):
        rid, headers = reserve(client, owner)
        problem(client.post(f"/bookings/checkout/{rid}", headers=headers, json={"payment_method": "MOMO"}),
                502, "provider_unavailable")  # fmt: skip
    assert owner.execute("SELECT count(*) FROM payments WHERE pay_url IS NOT NULL").fetchone() == (0,)


def test_set_pay_url_keeps_the_first_url_and_refuses_non_urls(dbname: str, owner: psycopg.Connection) -> None:
    with client_for(dbname, **DEV) as client:  # development: no provider call
        rid, headers = reserve(client, owner)
        order = client.post(f"/bookings/checkout/{rid}", headers=headers, json={"payment_method": "CARD"}).json()
    txn = order["payment"]["transaction_id"]
    assert stored_pay_url(owner, txn) is None  # the sandbox's URL is built, not stored
    first = owner.execute("SELECT api.set_pay_url(%s, 'https://pay.example/1')", (txn,)).fetchone()
    second = owner.execute("SELECT api.set_pay_url(%s, 'https://pay.example/2')", (txn,)).fetchone()
    assert first == second == ("https://pay.example/1",)
    assert owner.execute("SELECT api.set_pay_url('TXN-nobody', 'https://pay.example/3')").fetchone() == (None,)
    for bad in ("javascript:alert(1)", "https://x y", "https://" + "x" * 2000):
        with pytest.raises(psycopg.Error) as raised:
            owner.execute("SELECT api.set_pay_url(%s, %s)", (txn, bad))
        assert raised.value.sqlstate == "BKVAL"
        owner.rollback()


# ------------------------------------------------------------------ the development sandbox


def test_sandbox_page_records_outcomes_the_stub_api_answers(
    dbname: str, owner: psycopg.Connection, tmp_path: Path
) -> None:
    """A person's choice on the sandbox page is what the stub's status API answers afterwards:
    `lost` pays without a callback (the order stays PENDING: reconciliation's case), `success`
    calls back with the same provider transaction id the status API gives."""
    settings = settings_for(dbname, **DEV, payment_sandbox_dir=str(tmp_path))
    with LiveServer(create_app(settings)) as live, TestClient(
        create_app(settings.replace(public_base_url=live.url))
    ) as client:  # fmt: skip
        cfg = ProviderConfig.from_env({**settings.provider_env(), "PUBLIC_BASE_URL": live.url})
        assert cfg.momo_endpoint == f"{live.url}/payments/sandbox/api/momo"
        orders = {}
        for method in ("MOMO", "BANKING"):
            rid, headers = reserve(client, owner)
            orders[method] = client.post(f"/bookings/checkout/{rid}", headers=headers,
                                         json={"payment_method": method}).json()  # fmt: skip

        async def status(method: str) -> providers.PaymentStatus:
            async with httpx.AsyncClient() as http:
                txn = orders[method]["payment"]["transaction_id"]
                return await providers.query_payment(http, cfg, method=method, transaction_id=txn)

        assert asyncio.run(status("MOMO")).state == "pending"  # checkout told the stub
        page = httpx.get(orders["MOMO"]["payment"]["pay_url"], timeout=30)
        assert 'value="lost"' in page.text
        lost = httpx.post(orders["MOMO"]["payment"]["pay_url"], data={"outcome": "lost"}, timeout=30)
        assert lost.status_code == 200 and lost.json()["callback"] is None, lost.text
        momo = asyncio.run(status("MOMO"))
        assert (momo.state, momo.amount) == ("paid", 150001) and momo.provider_txn_id
        still = owner.execute("SELECT status FROM orders WHERE id = %s", (orders["MOMO"]["id"],)).fetchone()
        assert still == ("PENDING",)  # nobody told the gateway

        paid = httpx.post(orders["BANKING"]["payment"]["pay_url"], json={"outcome": "success"}, timeout=30)
        assert paid.json()["callback"]["path"] == callbacks.BANK_PATH and paid.json()["callback"]["status"] == 204
        bank = asyncio.run(status("BANKING"))
        inbox = owner.execute("SELECT provider_txn_id FROM payment_events WHERE transaction_id = %s",
                              (orders["BANKING"]["payment"]["transaction_id"],)).fetchall()  # fmt: skip
        assert bank.state == "paid" and inbox == [(bank.provider_txn_id,)]
    assert violations(owner) == []


def test_sandbox_api_exists_only_where_the_sandbox_does(dbname: str, tmp_path: Path) -> None:
    path = "/payments/sandbox/api/momo/v2/gateway/api/query"
    body = providers.momo_query_request(STUB_CONFIG, transaction_id="BK1", request_id="R1")
    with client_for(dbname, **PRODUCTION, **CREDENTIALS, bank_api_url="https://b.example",
                    card_api_url="https://c.example") as c:  # fmt: skip
        problem(c.post(path, json=body), 404, "not_found")
    with client_for(dbname) as c:  # development, instant mode
        problem(c.post(path, json=body), 404, "not_found")
    with client_for(dbname, **DEV, payment_sandbox_dir=str(tmp_path)) as c:
        r = c.post(path, json=body)
        assert r.status_code == 200 and r.json()["resultCode"] == providers.MOMO_NOT_FOUND, r.text
        problem(c.post("/payments/sandbox/api/momo/v2/gateway/api/nothing", json=body), 404, "not_found")
        forged = c.post(path, json={**body, "signature": "00" * 32})
        assert forged.status_code == 401


def test_make_run_gives_the_worker_the_gateways_provider_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker asks the same providers as the gateway (in development: the gateway's sandbox
    API) with the same credentials; both get PAYMENT_SANDBOX_DIR=<state dir>/sandbox."""
    from dbctl import __main__ as dbctl_main
    from dbctl import local

    monkeypatch.setenv("BOOKING_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("GATEWAY_PORT", "18461")
    monkeypatch.setenv("PAYMENT_MODE", "provider")
    for name in ("PUBLIC_BASE_URL", "BOOKING_ENV", "MOMO_ENDPOINT", "PAYMENT_SANDBOX_DIR", "MOMO_SECRET_KEY",
                 "BANK_API_URL", "PAYMENT_SANDBOX"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(local, "write_pgpass", lambda *a, **k: tmp_path / "pgpass")
    target = local.Target("postgresql://owner@h/db", "postgresql://gw@h/db", None, object())  # type: ignore[arg-type]
    gateway, worker = dbctl_main.gateway_env(target), dbctl_main.worker_env(target)
    assert worker["PAYMENT_SANDBOX_DIR"] == gateway["PAYMENT_SANDBOX_DIR"] == str(tmp_path.resolve() / "sandbox")
    assert worker["PAYMENT_SANDBOX"] == gateway["PAYMENT_SANDBOX"] == "yes"  # make run is for development
    for name in ("MOMO_PARTNER_CODE", "MOMO_SECRET_KEY", "ZALOPAY_KEY1", "BANK_WEBHOOK_SECRET", "CARD_WEBHOOK_SECRET"):
        assert worker[name] == gateway[name] and worker[name], name
    assert worker["MOMO_ENDPOINT"] == "http://127.0.0.1:18461/payments/sandbox/api/momo"
    assert worker["CARD_API_URL"] == "http://127.0.0.1:18461/payments/sandbox/api/card"
    assert ProviderConfig.from_env(worker) == ProviderConfig.from_env(gateway)
    monkeypatch.setenv("MOMO_ENDPOINT", "https://test-payment.momo.vn")
    assert dbctl_main.worker_env(target)["MOMO_ENDPOINT"] == "https://test-payment.momo.vn"
    monkeypatch.setenv("PAYMENT_SANDBOX", "no")  # said: kept
    assert dbctl_main.gateway_env(target)["PAYMENT_SANDBOX"] == "no"
    monkeypatch.delenv("PAYMENT_SANDBOX")
    monkeypatch.setenv("BOOKING_ENV", "production")  # never switched on for production
    assert "PAYMENT_SANDBOX" not in dbctl_main.gateway_env(target)
    assert "PAYMENT_SANDBOX" not in dbctl_main.worker_env(target)
