"""The providers' callbacks through the real app and a real PostgreSQL: a forged one is refused
(401 invalid_signature, ZaloPay return_code -1) and nothing is recorded; a correct one reaches
api.apply_payment_event and gets the provider's answer; a replay gets the same answer and changes
nothing. The sandbox builds correctly signed callbacks and POSTs them to our own routes over real
HTTP (tests/live.py). Production rules: no sandbox, no instant payments by accident.

Tests that need the SQL side of issue 12 (api.checkout, api.apply_payment_event: branch i12-sql)
skip, saying so, on a database without it."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient

from dbctl.__main__ import apply_payment_mode, payment_credentials
from dbctl.migrate import OWNER_ROLE
from gateway.app import create_app
from gateway.config import ConfigError, Settings
from gateway.errors import ApiError
from gateway.payments import callbacks, momo, sandbox, sandbox_api, webhook, zalopay
from gateway.routes import ROUTES
from gateway.shedding import PAYMENT_CALLBACKS, exempt
from tests.conftest import url_for
from tests.factories import make_ticket_type, stock, violations
from tests.http import client_for, new_user, settings_for, table_counts
from tests.live import LiveServer

CREDENTIALS: dict[str, Any] = {
    "payment_mode": "provider",
    "momo_partner_code": "MOMOSANDBOX", "momo_access_key": "test-momo-access", "momo_secret_key": "test-momo-secret",
    "zalopay_app_id": "2553", "zalopay_key1": "test-zalopay-key1", "zalopay_key2": "test-zalopay-key2",
    "bank_webhook_secret": "test-bank-secret", "card_webhook_secret": "test-card-secret",
}  # fmt: skip
# The development sandbox is asked for (PAYMENT_SANDBOX=yes: `make run` sets it).
DEV: dict[str, Any] = {**CREDENTIALS, "payment_sandbox": True}
PRODUCTION = {"production": True, "jwt_secret": "x" * 40}
# Production provider mode also needs the bank's and the card processor's API (no default).
API_URLS = {"public_base_url": "https://tickets.example", "bank_api_url": "https://bank.example/api",
            "card_api_url": "https://card.example/api"}  # fmt: skip


def problem(response: Any, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.json()["code"] == code, response.text


@pytest.fixture
def client(dbname: str) -> Iterator[TestClient]:
    with client_for(dbname, **DEV) as c:
        yield c


def inbox_size(owner: psycopg.Connection) -> int:
    """Rows in the provider-event inbox (0 before its migration exists)."""
    if owner.execute("SELECT to_regclass('payment_events')").fetchone() == (None,):
        return 0
    return int(owner.execute("SELECT count(*) FROM payment_events").fetchone()[0])  # type: ignore[index]


def has_payments_sql(owner: psycopg.Connection) -> bool:
    return owner.execute("SELECT to_regprocedure('api.apply_payment_event(text,text,text,numeric,boolean,jsonb)')"
                         " IS NOT NULL").fetchone() == (True,)  # fmt: skip


@pytest.fixture
def payments_sql(owner: psycopg.Connection) -> None:
    if not has_payments_sql(owner):
        pytest.skip("needs the SQL side of issue 12 (branch i12-sql: api.apply_payment_event, api.checkout)")


def momo_ipn(order_id: str = "BK00ff", amount: int = 150000, trans_id: int = 9001, result: int = 0,
             secret: str = CREDENTIALS["momo_secret_key"]) -> dict[str, Any]:  # fmt: skip
    fields = {
        "partnerCode": "MOMOSANDBOX", "orderId": order_id, "requestId": order_id, "amount": amount,
        "orderInfo": "test", "orderType": "momo_wallet", "transId": trans_id, "resultCode": result,
        "message": "Successful." if result == 0 else "Failed.", "payType": "qr", "responseTime": 1764120000000,
        "extraData": "",
    }  # fmt: skip
    return momo.signed_ipn(fields, CREDENTIALS["momo_access_key"], secret)


def zalopay_callback(app_trans_id: str = "261126_00ff", amount: int = 150000, zp_trans_id: int = 9002,
                     key2: str = CREDENTIALS["zalopay_key2"]) -> dict[str, Any]:  # fmt: skip
    data = {"app_id": 2553, "app_trans_id": app_trans_id, "amount": amount, "zp_trans_id": zp_trans_id,
            "server_time": 1764120000000, "app_time": 1764120000000, "embed_data": "{}", "item": "[]"}  # fmt: skip
    return zalopay.signed_callback(data, key2)


def transfer(transaction_id: str = "TXN-00ff", amount: int = 150000, status: str = "SUCCESS",
             provider_txn_id: str = "P-1", secret: str = CREDENTIALS["bank_webhook_secret"]
             ) -> tuple[bytes, dict[str, str]]:  # fmt: skip
    payload = {"transaction_id": transaction_id, "amount": amount, "status": status, "provider_txn_id": provider_txn_id}
    return webhook.signed_request(payload, secret)


# ------------------------------------------------------------------ forged: refused, nothing recorded


def forged_requests() -> list[tuple[str, bytes, dict[str, str]]]:
    json_headers = {"Content-Type": "application/json"}
    good_ipn = momo_ipn()
    good_zp = zalopay_callback()
    bank_body, bank_headers = transfer()
    card_body, card_headers = transfer(secret=CREDENTIALS["card_webhook_secret"])
    return [
        (callbacks.MOMO_PATH, json.dumps(momo_ipn(secret="not-the-secret")).encode(), json_headers),
        (callbacks.MOMO_PATH, json.dumps({**good_ipn, "amount": 1}).encode(), json_headers),
        (callbacks.MOMO_PATH, json.dumps({k: v for k, v in good_ipn.items() if k != "signature"}).encode(),
         json_headers),
        (callbacks.ZALOPAY_PATH, json.dumps(zalopay_callback(key2="not-key2")).encode(), json_headers),
        (callbacks.ZALOPAY_PATH, json.dumps({**good_zp, "data": good_zp["data"].replace("150000", "1")}).encode(),
         json_headers),
        (callbacks.BANK_PATH, bank_body.replace(b"SUCCESS", b"FAILED"), bank_headers),
        (callbacks.BANK_PATH, card_body, card_headers),  # the card's secret does not open the bank's route
        (callbacks.CARD_PATH, bank_body, bank_headers),
        (callbacks.CARD_PATH, card_body, {"Content-Type": "application/json"}),  # no X-Signature
    ]  # fmt: skip


def test_forged_callbacks_are_refused_and_nothing_is_recorded(
    client: TestClient, owner: psycopg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    before = table_counts(owner), inbox_size(owner)
    for path, body, headers in forged_requests():
        r = client.post(path, content=body, headers=headers)
        if path == callbacks.ZALOPAY_PATH:
            assert r.status_code == 200 and r.json() == {"return_code": -1, "return_message": "mac not equal"}
        else:
            problem(r, 401, "invalid_signature")
    assert (table_counts(owner), inbox_size(owner)) == before
    refusals = [r for r in caplog.records if r.name == "gateway.payments" and "refused" in r.getMessage()]
    assert len(refusals) == len(forged_requests())


def test_unconfigured_provider_refuses_even_a_callback_signed_with_an_empty_key(dbname: str) -> None:
    with client_for(dbname, payment_mode="provider", **API_URLS) as c:  # no credentials at all
        empty_ipn = momo.signed_ipn({k: v for k, v in momo_ipn().items() if k != "signature"}, "", "")
        problem(c.post(callbacks.MOMO_PATH, json=empty_ipn), 401, "invalid_signature")
        body, headers = transfer(secret="")
        problem(c.post(callbacks.BANK_PATH, content=body, headers=headers), 401, "invalid_signature")
        r = c.post(callbacks.ZALOPAY_PATH, json=zalopay_callback(key2=""))
        assert r.json()["return_code"] == -1


def test_malformed_and_oversized_callbacks(client: TestClient) -> None:
    problem(client.post(callbacks.MOMO_PATH, content=b"{not json"), 422, "validation_failed")
    problem(client.post(callbacks.MOMO_PATH, json=[1, 2]), 422, "validation_failed")
    body, headers = transfer(status="MAYBE")  # signed, but not a documented status
    problem(client.post(callbacks.BANK_PATH, content=body, headers=headers), 422, "validation_failed")
    assert client.post(callbacks.ZALOPAY_PATH, content=b"[]").json()["return_code"] == -1
    problem(client.post(callbacks.CARD_PATH, content=b"x" * (callbacks.CALLBACK_MAX_BYTES + 1)), 413,
            "payload_too_large")  # fmt: skip
    problem(client.get(callbacks.MOMO_PATH), 405, "method_not_allowed")


DEEP = b"[" * 8000 + b"]" * 8000  # past Python's recursion limit: json raises RecursionError


def test_deeply_nested_json_is_malformed_on_every_route(client: TestClient, owner: psycopg.Connection) -> None:
    """Unsigned (MoMo, ZaloPay: parsed before the signature) or signed (bank, card, ZaloPay's
    data): a 4xx in the provider's form, never a 500, nothing recorded."""
    before = inbox_size(owner)
    problem(client.post(callbacks.MOMO_PATH, content=DEEP), 422, "validation_failed")
    problem(client.post(callbacks.MOMO_PATH, content=b'{"a":' + DEEP + b"}"), 422, "validation_failed")
    r = client.post(callbacks.ZALOPAY_PATH, content=DEEP)
    assert r.status_code == 200 and r.json()["return_code"] == -1, r.text
    deep_data = DEEP.decode()
    signed_deep = {"data": deep_data, "mac": zalopay.sign(deep_data, CREDENTIALS["zalopay_key2"]), "type": 1}
    r = client.post(callbacks.ZALOPAY_PATH, json=signed_deep)  # the mac verifies; its data is too deep
    assert r.status_code == 200 and r.json()["return_code"] == -1, r.text
    for path, secret in ((callbacks.BANK_PATH, "bank_webhook_secret"), (callbacks.CARD_PATH, "card_webhook_secret")):
        headers = {webhook.HEADER: webhook.sign(DEEP, CREDENTIALS[secret]), "Content-Type": "application/json"}
        problem(client.post(path, content=DEEP, headers=headers), 422, "validation_failed")
    assert inbox_size(owner) == before


def test_amounts_from_a_trillion_are_refused_in_each_providers_form(
    client: TestClient, owner: psycopg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    """payment_events.amount is NUMERIC(14,2): 10^12 and up is refused before the database
    (the provider's form, a gateway.payments log line), 999,999,999,999 still gets there."""
    big = 10**12
    problem(client.post(callbacks.MOMO_PATH, json=momo_ipn(amount=big)), 422, "validation_failed")
    r = client.post(callbacks.ZALOPAY_PATH, json=zalopay_callback(amount=5 * big))
    assert r.status_code == 200 and r.json()["return_code"] == -1, r.text
    for path, secret in ((callbacks.BANK_PATH, "bank_webhook_secret"), (callbacks.CARD_PATH, "card_webhook_secret")):
        body, headers = transfer(amount=big, secret=CREDENTIALS[secret])
        problem(client.post(path, content=body, headers=headers), 422, "validation_failed")
    assert inbox_size(owner) == 0
    refusals = [r for r in caplog.records if r.name == "gateway.payments" and "out of range" in r.getMessage()]
    assert len(refusals) == 4
    if has_payments_sql(owner):  # just below the limit: a well-formed callback for nobody
        problem(client.post(callbacks.MOMO_PATH, json=momo_ipn(amount=big - 1)), 422, "payment_refused")
        assert inbox_size(owner) == 1


@pytest.mark.usefixtures("payments_sql")
def test_zalopay_is_told_to_retry_when_the_database_is_busy(
    client: TestClient, connect: Callable[..., psycopg.Connection]
) -> None:
    """A real lock held on another connection: api.apply_payment_event's lock_timeout (2 s) ends
    its wait, the gateway maps it to busy, and ZaloPay gets return_code 0 (it calls back again),
    not a problem+json it cannot read. MoMo, on the same lock, gets 503 busy."""
    holder = connect(OWNER_ROLE)
    with holder.transaction():
        holder.execute("LOCK TABLE payment_events IN SHARE MODE")  # blocks every insert into the inbox
        r = client.post(callbacks.ZALOPAY_PATH, json=zalopay_callback(zp_trans_id=424242))
        assert r.status_code == 200 and r.headers["content-type"] == "application/json", r.text
        assert r.json() == {"return_code": 0, "return_message": "busy"}
        problem(client.post(callbacks.MOMO_PATH, json=momo_ipn(trans_id=424243)), 503, "busy")
    r = client.post(callbacks.ZALOPAY_PATH, json=zalopay_callback(zp_trans_id=424242))  # the retry, lock gone
    assert r.json()["return_code"] == 0 and r.json()["return_message"] == "unknown_reference", r.text


# ------------------------------------------------------------------ configuration and the sandbox's existence


def test_production_refuses_instant_payments_unless_allowed(dbname: str) -> None:
    with pytest.raises(ConfigError, match="PAYMENT_MODE=instant"):
        settings_for(dbname, **PRODUCTION)
    assert settings_for(dbname, **PRODUCTION, allow_instant_payments=True).payment_mode == "instant"
    env = {"GATEWAY_DATABASE_URL": "postgresql://x@h/db", "JWT_SECRET": "y" * 40, "BOOKING_ENV": "production"}
    with pytest.raises(ConfigError, match="ALLOW_INSTANT_PAYMENTS=yes"):
        Settings.from_env(env)
    assert Settings.from_env({**env, "ALLOW_INSTANT_PAYMENTS": "yes"}).production


def test_production_provider_mode_needs_every_credential_and_never_shows_them(dbname: str) -> None:
    missing = {**CREDENTIALS, "zalopay_key2": "", "card_webhook_secret": ""}
    with pytest.raises(ConfigError) as refused:
        settings_for(dbname, **PRODUCTION, **missing)
    assert "ZALOPAY_KEY2" in str(refused.value) and "CARD_WEBHOOK_SECRET" in str(refused.value)
    assert "MOMO_SECRET_KEY" not in str(refused.value)
    assert "BANK_API_URL" in str(refused.value) and "CARD_API_URL" in str(refused.value)
    assert "PUBLIC_BASE_URL" in str(refused.value)  # the providers' callback URL, never from a Host header
    with pytest.raises(ConfigError, match="needs CARD_API_URL"):
        settings_for(dbname, **PRODUCTION, **CREDENTIALS, public_base_url=API_URLS["public_base_url"],
                     bank_api_url=API_URLS["bank_api_url"])  # fmt: skip
    s = settings_for(dbname, **PRODUCTION, **CREDENTIALS, **API_URLS)
    assert not s.sandbox
    assert CREDENTIALS["momo_secret_key"] not in repr(s) and CREDENTIALS["bank_webhook_secret"] not in repr(s)
    env = {"GATEWAY_DATABASE_URL": "postgresql://x@h/db", "JWT_SECRET": "y", "PAYMENT_MODE": "provider",
           "MOMO_SECRET_KEY": "visible?", "POOL_MAX_SIZE": "0"}  # fmt: skip
    with pytest.raises(ConfigError) as bad:
        Settings.from_env(env)
    assert "visible?" not in str(bad.value)
    with pytest.raises(ConfigError, match="PAYMENT_MODE"):
        Settings.from_env({**env, "POOL_MAX_SIZE": "5", "PAYMENT_MODE": "free"})


def test_sandbox_exists_only_when_asked_for_in_development_provider_mode(dbname: str) -> None:
    path = "/payments/sandbox/BK00ff?method=MOMO&amount=150000"
    with client_for(dbname, **PRODUCTION, **CREDENTIALS, **API_URLS) as c:
        problem(c.get(path), 404, "not_found")
        problem(c.post(path, json={"outcome": "success"}), 404, "not_found")
        # the callbacks themselves exist in production
        problem(c.post(callbacks.MOMO_PATH, json=momo_ipn(secret="forged")), 401, "invalid_signature")
    with client_for(dbname) as c:  # development, instant mode
        problem(c.get(path), 404, "not_found")
    with client_for(dbname, **CREDENTIALS, **API_URLS) as c:  # development provider mode, not asked for
        problem(c.get(path), 404, "not_found")
        problem(c.post(path, json={"outcome": "success"}), 404, "not_found")
        problem(c.post("/payments/sandbox/api/momo/v2/gateway/api/query", json={}), 404, "not_found")
    with client_for(dbname, **DEV) as c:
        r = c.get(path)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        assert 'value="success"' in r.text and 'value="failure"' in r.text and "150,000" in r.text
        assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
        problem(c.get("/payments/sandbox/BK00ff?method=PAYPAL&amount=1"), 422, "validation_failed")
        problem(c.get("/payments/sandbox/BK00ff?method=MOMO&amount=-5"), 422, "validation_failed")
        problem(c.get("/payments/sandbox/BK%3Cscript%3E?method=MOMO&amount=5"), 422, "validation_failed")
        problem(c.post(path, json={"outcome": "maybe"}), 422, "validation_failed")
        problem(c.post(path, content=DEEP, headers={"Content-Type": "application/json"}), 422, "validation_failed")


def test_payment_sandbox_is_a_config_error_in_production(dbname: str) -> None:
    with pytest.raises(ConfigError, match="PAYMENT_SANDBOX"):
        settings_for(dbname, **PRODUCTION, **DEV, **API_URLS)
    env = {"GATEWAY_DATABASE_URL": "postgresql://x@h/db", "JWT_SECRET": "y" * 40, "BOOKING_ENV": "production",
           "ALLOW_INSTANT_PAYMENTS": "yes"}  # fmt: skip
    with pytest.raises(ConfigError, match="PAYMENT_SANDBOX=yes"):
        Settings.from_env({**env, "PAYMENT_SANDBOX": "yes"})  # even in instant mode: a forgotten switch
    assert not Settings.from_env({**env, "PAYMENT_SANDBOX": "no"}).sandbox
    with pytest.raises(ConfigError, match="PAYMENT_SANDBOX"):
        Settings.from_env({**env, "BOOKING_ENV": "development", "PAYMENT_SANDBOX": "maybe"})
    # Development provider mode without the sandbox: the bank's and card's APIs have no default.
    dev = {"GATEWAY_DATABASE_URL": "postgresql://x@h/db", "JWT_SECRET": "y", "PAYMENT_MODE": "provider"}
    with pytest.raises(ConfigError, match=r"PUBLIC_BASE_URL, BANK_API_URL, CARD_API_URL .*PAYMENT_SANDBOX=yes"):
        Settings.from_env(dev)
    assert Settings.from_env({**dev, "PAYMENT_SANDBOX": "yes"}).sandbox
    urls = {
        "PUBLIC_BASE_URL": "https://t.example",
        "BANK_API_URL": "https://b.example",
        "CARD_API_URL": "https://c.example",
    }
    assert not Settings.from_env({**dev, **urls}).sandbox


@pytest.fixture
def sandbox_state(tmp_path: Path) -> sandbox_api.StubState:
    return sandbox_api.StubState(tmp_path / "sandbox")


def test_sandbox_zalopay_failure_sends_nothing(dbname: str, owner: psycopg.Connection,
                                               sandbox_state: sandbox_api.StubState) -> None:  # fmt: skip
    sandbox_state.created("261126_00ff", "ZALOPAY", 5000)
    with client_for(dbname, **DEV, payment_sandbox_dir=str(sandbox_state.root)) as c:
        r = c.post("/payments/sandbox/261126_00ff?method=ZALOPAY&amount=5000", data={"outcome": "failure"})
        assert r.status_code == 200 and r.json()["callback"] is None, r.text
    assert inbox_size(owner) == 0


def test_sandbox_settles_only_a_payment_the_stub_providers_know(
    dbname: str, owner: psycopg.Connection, sandbox_state: sandbox_api.StubState
) -> None:
    """No signing oracle: an unknown reference (404), another method or amount than the payment's,
    or a payment already settled (409) gets no signed callback and changes nothing."""
    sandbox_state.created("BKknown", "BANKING", 5000)
    with client_for(dbname, **DEV, payment_sandbox_dir=str(sandbox_state.root)) as c:
        success = {"outcome": "success"}
        problem(c.post("/payments/sandbox/BKnobody?method=BANKING&amount=5000", json=success), 404, "not_found")
        problem(c.post("/payments/sandbox/BKknown?method=BANKING&amount=500000", json=success), 409, "conflict")
        problem(c.post("/payments/sandbox/BKknown?method=CARD&amount=5000", json=success), 409, "conflict")
        sandbox_state.mark_failed("BKknown")
        problem(c.post("/payments/sandbox/BKknown?method=BANKING&amount=5000", json=success), 409, "conflict")
        big = b'{"outcome": "success", "pad": "' + b"x" * 2000 + b'"}'
        problem(c.post("/payments/sandbox/BKknown?method=BANKING&amount=5000", content=big,
                       headers={"Content-Type": "application/json"}), 422, "validation_failed")  # fmt: skip
    assert sandbox_state.payment("BKnobody") is None and sandbox_state.payment("BKknown")["state"] == "failed"  # type: ignore[index]
    assert inbox_size(owner) == 0


def test_sandbox_self_callback_reaches_our_route_over_http(
    dbname: str, owner: psycopg.Connection, sandbox_state: sandbox_api.StubState
) -> None:
    """The sandbox signs with the gateway's own credentials and POSTs to its own callback route
    over real HTTP: here for a payment the stub knows and the database does not, so it goes as
    far as the database and back (a 422 payment_refused). Its answer is the status and our own
    words, not the callee's body."""
    sandbox_state.created("BKnobody", "BANKING", 5000)
    settings = settings_for(dbname, **DEV, payment_sandbox_dir=str(sandbox_state.root))
    with LiveServer(create_app(settings)) as live:
        r = httpx.post(f"{live.url}/payments/sandbox/BKnobody?method=BANKING&amount=5000",
                       json={"outcome": "failure"}, timeout=30)  # fmt: skip
    assert r.status_code == 200, r.text
    answer = r.json()["callback"]
    assert set(answer) == {"path", "status", "result"} and answer["path"] == callbacks.BANK_PATH
    assert answer["status"] != 401, answer  # it verified: the signature is right
    if has_payments_sql(owner):
        assert (answer["status"], answer["result"]) == (422, "refused by the booking"), answer


class Listener:
    """A real HTTP server on a free port that records every request it gets and answers a body
    that must never travel back to a sandbox caller."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, bytes]] = []

        async def record(request: Request) -> Response:
            self.seen.append((request.method, request.url.path, await request.body()))
            return JSONResponse({"internal": "secret-data"})

        self.app = Starlette(routes=[Route("/{path:path}", record, methods=["GET", "POST"])])


@pytest.mark.usefixtures("payments_sql")
def test_sandbox_never_calls_the_host_header_or_public_base_url(
    dbname: str, owner: psycopg.Connection, sandbox_state: sandbox_api.StubState
) -> None:
    """SSRF: a forged Host header (and even PUBLIC_BASE_URL) naming another listener does not
    send it the signed callback: the sandbox calls the address it listens on, and the answer
    carries no callee body. The order is paid through our own route."""
    listener = Listener()
    with LiveServer(listener.app) as other:
        settings = settings_for(dbname, **DEV, payment_sandbox_dir=str(sandbox_state.root), public_base_url=other.url)
        with LiveServer(create_app(settings)) as live, TestClient(create_app(settings)) as client:
            _, _, order = buy(client, owner, "BANKING")
            txn = order["payment"]["transaction_id"]
            assert sandbox_state.payment(txn) is not None  # checkout told the stub
            r = httpx.post(f"{live.url}/payments/sandbox/{txn}?method=BANKING&amount=300000",
                           json={"outcome": "success"}, headers={"Host": f"127.0.0.1:{other.port}"},
                           timeout=30)  # fmt: skip
        assert r.status_code == 200, r.text
        assert "secret-data" not in r.text and "internal" not in r.text
        assert r.json()["callback"] == {"path": callbacks.BANK_PATH, "status": 204, "result": "applied"}
        assert listener.seen == []
    paid = owner.execute("SELECT status FROM orders WHERE id = %s", (order["id"],)).fetchone()
    assert paid == ("PAID",)


def test_sandbox_self_url_is_the_listening_address() -> None:
    def scope(server: Any, scheme: str = "http") -> Request:
        return Request({"type": "http", "server": server, "scheme": scheme, "headers": [(b"host", b"evil.example")]})

    assert sandbox.self_url(scope(("127.0.0.1", 8123))) == "http://127.0.0.1:8123"
    assert sandbox.self_url(scope(("0.0.0.0", 8123))) == "http://127.0.0.1:8123"  # noqa: S104
    assert sandbox.self_url(scope(("::", 8123))) == "http://[::1]:8123"
    assert sandbox.self_url(scope(("fd00::5", 9))) == "http://[fd00::5]:9"
    with pytest.raises(ApiError):
        sandbox.self_url(scope(("/run/gw.sock", None)))


# ------------------------------------------------------------------ with the SQL side (i12-sql)


def buy(client: TestClient, owner: psycopg.Connection, method: str, quantity: int = 2) -> tuple[
        dict[str, Any], dict[str, str], dict[str, Any]]:  # fmt: skip
    tt = make_ticket_type(owner, quantity=10)
    _, headers = new_user(client, owner)
    r = client.post("/bookings/reserve", headers=headers, json={"ticket_type_id": tt["id"], "quantity": quantity})
    assert r.status_code == 201, r.text
    r = client.post(f"/bookings/checkout/{r.json()['id']}", headers=headers, json={"payment_method": method})
    assert r.status_code == 201, r.text
    order = r.json()
    assert order["status"] == "PENDING" and order["payment"]["status"] == "PENDING"
    return tt, headers, order


def callback_for(method: str, order: dict[str, Any], success: bool = True, amount: int | None = None,
                 provider_txn: str = "777") -> tuple[str, bytes, dict[str, str]]:  # fmt: skip
    txn = order["payment"]["transaction_id"]
    value = amount if amount is not None else int(Decimal(order["total_amount"]))
    json_headers = {"Content-Type": "application/json"}
    if method == "MOMO":
        ipn = momo_ipn(txn, value, int(provider_txn), 0 if success else 1006)
        return callbacks.MOMO_PATH, json.dumps(ipn).encode(), json_headers
    if method == "ZALOPAY":
        return (
            callbacks.ZALOPAY_PATH,
            json.dumps(zalopay_callback(txn, value, int(provider_txn))).encode(),
            json_headers,
        )
    secret = CREDENTIALS["bank_webhook_secret" if method == "BANKING" else "card_webhook_secret"]
    body, headers = transfer(txn, value, "SUCCESS" if success else "FAILED", provider_txn, secret)
    return callbacks.BANK_PATH if method == "BANKING" else callbacks.CARD_PATH, body, headers


OK_ANSWER = {"MOMO": (204, None), "ZALOPAY": (200, zalopay.OK), "BANKING": (204, None), "CARD": (204, None)}


def answer(r: Any) -> tuple[int, Any]:
    return r.status_code, (r.json() if r.content else None)


@pytest.mark.usefixtures("payments_sql")
@pytest.mark.parametrize("method", ["MOMO", "ZALOPAY", "BANKING", "CARD"])
def test_signed_success_pays_and_a_replay_gets_the_same_answer(
    client: TestClient, owner: psycopg.Connection, method: str
) -> None:
    _, headers, order = buy(client, owner, method)
    assert order["payment"]["pay_url"].endswith(
        f"/payments/sandbox/{order['payment']['transaction_id']}?method={method}&amount=300000"
    )
    path, body, cb_headers = callback_for(method, order)
    first = client.post(path, content=body, headers=cb_headers)
    assert answer(first) == OK_ANSWER[method], first.text
    paid = client.get(f"/bookings/orders/{order['id']}", headers=headers).json()
    assert paid["status"] == "PAID" and len(paid["tickets"]) == 2, paid
    counts, inbox = table_counts(owner), inbox_size(owner)
    assert inbox == 1
    assert confirmations(owner, order["id"]) == (1, 1), "one confirmation e-mail, its job deferred with the PAID"
    again = client.post(path, content=body, headers=cb_headers)
    assert answer(again) == answer(first)
    assert (table_counts(owner), inbox_size(owner)) == (counts, inbox)
    assert confirmations(owner, order["id"]) == (1, 1), "a replay sends no second e-mail"
    assert client.get(f"/bookings/orders/{order['id']}", headers=headers).json() == paid
    assert violations(owner) == []


def confirmations(owner: psycopg.Connection, order_id: str) -> tuple[int, int]:
    """(order_emails confirmation rows, send_confirmation jobs) of an order."""
    row = owner.execute(
        "SELECT (SELECT count(*) FROM order_emails WHERE order_id = %(o)s AND kind = 'confirmation'),"
        " (SELECT count(*) FROM procrastinate_jobs WHERE task_name = 'send_confirmation'"
        "    AND args ->> 'order_id' = %(o)s::text)",
        {"o": order_id},
    ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


@pytest.mark.usefixtures("payments_sql")
@pytest.mark.parametrize("method", ["MOMO", "BANKING", "CARD"])
def test_signed_failure_cancels_and_returns_the_seats(client: TestClient, owner: psycopg.Connection,
                                                      method: str) -> None:  # fmt: skip
    tt, headers, order = buy(client, owner, method)
    assert stock(owner, tt) == 8
    path, body, cb_headers = callback_for(method, order, success=False)
    assert answer(client.post(path, content=body, headers=cb_headers)) == OK_ANSWER[method]
    assert client.get(f"/bookings/orders/{order['id']}", headers=headers).json()["status"] == "CANCELLED"
    assert stock(owner, tt) == 10
    assert violations(owner) == []


@pytest.mark.usefixtures("payments_sql")
@pytest.mark.parametrize("method", ["MOMO", "ZALOPAY", "BANKING"])
def test_wrong_amount_is_refused_recorded_and_refused_again(client: TestClient, owner: psycopg.Connection,
                                                            method: str) -> None:  # fmt: skip
    _, headers, order = buy(client, owner, method)
    path, body, cb_headers = callback_for(method, order, amount=1000)
    first = client.post(path, content=body, headers=cb_headers)
    if method == "ZALOPAY":
        assert first.status_code == 200 and first.json()["return_code"] == 0, first.text
    else:
        problem(first, 422, "payment_refused")
    assert answer(client.post(path, content=body, headers=cb_headers)) == answer(first)
    assert client.get(f"/bookings/orders/{order['id']}", headers=headers).json()["status"] == "PENDING"
    assert inbox_size(owner) == 1


@pytest.mark.usefixtures("payments_sql")
@pytest.mark.parametrize("method", ["MOMO", "ZALOPAY", "BANKING", "CARD"])
def test_sandbox_flow_over_real_http(dbname: str, owner: psycopg.Connection, method: str,
                                     connect: Callable[..., psycopg.Connection]) -> None:  # fmt: skip
    with LiveServer(create_app(settings_for(dbname, **DEV))) as live, TestClient(
            create_app(settings_for(dbname, **DEV, public_base_url=live.url))) as client:  # fmt: skip
        _, headers, order = buy(client, owner, method)
        pay_url = order["payment"]["pay_url"]
        assert pay_url.startswith(live.url + "/payments/sandbox/")
        page = httpx.get(pay_url, timeout=30)
        assert page.status_code == 200 and "Success" in page.text
        r = httpx.post(pay_url, data={"outcome": "success"}, timeout=30)
        assert r.status_code == 200, r.text
        assert r.json()["callback"] == {"path": callbacks.PATH_OF[method], "status": OK_ANSWER[method][0],
                                        "result": "applied"}  # fmt: skip
        paid = client.get(f"/bookings/orders/{order['id']}", headers=headers).json()
        assert paid["status"] == "PAID" and len(paid["tickets"]) == 2
    assert violations(owner) == []


# ------------------------------------------------------------------ shedding, make run


def test_callbacks_are_never_shed_and_never_rate_limited() -> None:
    for path in callbacks.PATHS:
        assert exempt(b"POST", path.encode()), path
        assert not exempt(b"GET", path.encode())
    assert not exempt(b"POST", b"/payments/sandbox/x")
    assert {p.encode() for p in callbacks.PATHS} == PAYMENT_CALLBACKS
    assert not {e.path for e in ROUTES} & set(callbacks.PATHS)  # no bearer token, no rate limit


def test_make_run_keeps_development_credentials_in_the_state_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BOOKING_STATE_DIR", str(tmp_path))
    first = payment_credentials()
    assert payment_credentials() == first  # generated once, then kept
    assert (tmp_path / "momo-secret-key").stat().st_mode & 0o777 == 0o600
    assert len({first[k] for k in ("MOMO_ACCESS_KEY", "MOMO_SECRET_KEY", "ZALOPAY_KEY2", "BANK_WEBHOOK_SECRET")}) == 4
    env = {"GATEWAY_DATABASE_URL": "postgresql://x@h/db", "JWT_SECRET": "y", "PAYMENT_MODE": "provider",
           "PAYMENT_SANDBOX": "yes", **first}  # fmt: skip
    s = Settings.from_env(env)
    assert s.sandbox and s.secret("zalopay_key2") == first["ZALOPAY_KEY2"] and s.momo_partner_code == "MOMOSANDBOX"


@pytest.mark.usefixtures("payments_sql")
def test_make_run_applies_payment_mode_to_the_database(dbname: str, owner: psycopg.Connection) -> None:
    apply_payment_mode(url_for(dbname, OWNER_ROLE), "provider")
    assert owner.execute("SELECT api.payment_mode() ->> 'mode'").fetchone() == ("provider",)
    apply_payment_mode(url_for(dbname, OWNER_ROLE), "")  # unset: the database keeps its mode
    assert owner.execute("SELECT api.payment_mode() ->> 'mode'").fetchone() == ("provider",)
    apply_payment_mode(url_for(dbname, OWNER_ROLE), "instant")
    assert owner.execute("SELECT api.payment_mode() ->> 'mode'").fetchone() == ("instant",)
