"""The providers' APIs as we ask them (gateway/payments/providers.py) and the stub that answers
them (gateway/payments/sandbox_api.py).

First the pure parts, with real HMACs: the signed strings are the documented ones, written out by
hand here (MoMo's a-z `key=value&...`, ZaloPay's `|`-joined fields), and HMAC-SHA256 itself is
checked against RFC 4231. The providers' documentation gives no reproducible vector (its example
signatures are under keys it does not publish), so the strings are the vectors. Then every
method end to end over real sockets: the stub served by uvicorn on a free port, asked by the
real clients; a forged request is refused by the stub, a forged answer by the client."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections.abc import Coroutine, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from dbctl.throwaway import free_port
from gateway.payments import providers, sandbox_api
from gateway.payments.common import hmac_hex
from gateway.payments.providers import PaymentStatus, ProviderConfig, ProviderConfigError, ProviderError
from tests.live import LiveServer

T = TypeVar("T")

CREDENTIALS = {
    "MOMO_PARTNER_CODE": "MOMOSANDBOX", "MOMO_ACCESS_KEY": "F8BBA842ECF85",
    "MOMO_SECRET_KEY": "K951B6PE1waDMi640xX08PD3vg6EkVlz", "ZALOPAY_APP_ID": "2553",
    "ZALOPAY_KEY1": "PcY4iZIKFCIdgZvA6ueMcMHHUbRLYjPL", "ZALOPAY_KEY2": "kLtgPl8HHhfvMuDHPwKfgfsY4Ydm9eIz",
    "BANK_WEBHOOK_SECRET": "bank-secret-0123456789", "CARD_WEBHOOK_SECRET": "card-secret-0123456789",
}  # fmt: skip
CFG = ProviderConfig.from_env(CREDENTIALS)
REFUND_ID = "6f1c2a9e-5b7d-4c1e-9a8b-0123456789ab"


def hexmac(key: str, message: str | bytes) -> str:
    data = message.encode() if isinstance(message, str) else message
    return hmac.new(key.encode(), data, hashlib.sha256).hexdigest()


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


# ------------------------------------------------------------------ the pure parts


def test_hmac_is_rfc_4231_hmac_sha256() -> None:
    # RFC 4231, test case 2.
    assert hmac_hex("Jefe", b"what do ya want for nothing?") == (
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    )


def test_momo_create_signs_the_documented_string() -> None:
    body = providers.momo_create_request(CFG, transaction_id="BK0A1B", amount=150000, description="Order 1",
                                         notify_url="https://x.example/payments/momo/ipn",
                                         return_url="https://x.example/r")  # fmt: skip
    raw = ("accessKey=F8BBA842ECF85&amount=150000&extraData=&ipnUrl=https://x.example/payments/momo/ipn"
           "&orderId=BK0A1B&orderInfo=Order 1&partnerCode=MOMOSANDBOX&redirectUrl=https://x.example/r"
           "&requestId=BK0A1B&requestType=captureWallet")  # fmt: skip
    assert body["signature"] == hexmac(CREDENTIALS["MOMO_SECRET_KEY"], raw)
    assert (body["partnerCode"], body["orderId"], body["requestId"], body["amount"]) == (
        "MOMOSANDBOX", "BK0A1B", "BK0A1B", 150000)  # fmt: skip
    assert "accessKey" not in body  # signed over, never sent


def test_momo_query_and_refund_sign_the_documented_strings() -> None:
    query = providers.momo_query_request(CFG, transaction_id="BK0A1B", request_id="BK0A1B-Q1")
    raw = "accessKey=F8BBA842ECF85&orderId=BK0A1B&partnerCode=MOMOSANDBOX&requestId=BK0A1B-Q1"
    assert query["signature"] == hexmac(CREDENTIALS["MOMO_SECRET_KEY"], raw)
    refund = providers.momo_refund_request(CFG, refund_id=REFUND_ID, trans_id=4088878653, amount=150000,
                                           description="Event cancelled")  # fmt: skip
    raw = (f"accessKey=F8BBA842ECF85&amount=150000&description=Event cancelled&orderId={REFUND_ID}"
           f"&partnerCode=MOMOSANDBOX&requestId={REFUND_ID}&transId=4088878653")  # fmt: skip
    assert refund["signature"] == hexmac(CREDENTIALS["MOMO_SECRET_KEY"], raw)


def momo_answer(fields: dict[str, Any], keys: tuple[str, ...], secret: str = CREDENTIALS["MOMO_SECRET_KEY"]) -> dict[
        str, Any]:  # fmt: skip
    answer = {"partnerCode": "MOMOSANDBOX", "responseTime": 1764120000000, **fields}
    answer["signature"] = providers.momo_sign(answer, keys, CREDENTIALS["MOMO_ACCESS_KEY"], secret)
    return answer


def test_momo_answers_are_checked_against_their_signature() -> None:
    created = momo_answer({"requestId": "BK1", "orderId": "BK1", "amount": 150000, "resultCode": 0,
                           "message": "Successful.", "payUrl": "https://pay.example/x"},
                          providers.MOMO_CREATE_ANSWER_KEYS)  # fmt: skip
    raw = ("accessKey=F8BBA842ECF85&amount=150000&orderId=BK1&partnerCode=MOMOSANDBOX&payUrl=https://pay.example/x"
           "&requestId=BK1&responseTime=1764120000000&resultCode=0")  # fmt: skip
    assert created["signature"] == hexmac(CREDENTIALS["MOMO_SECRET_KEY"], raw)
    assert providers.momo_parse_create(CFG, created) == "https://pay.example/x"
    for forged in ({**created, "payUrl": "https://evil.example/x"}, {**created, "signature": "00" * 32},
                   momo_answer({k: v for k, v in created.items() if k != "signature"},
                               providers.MOMO_CREATE_ANSWER_KEYS, secret="other"),
                   {**created, "partnerCode": "SOMEONE"}):  # fmt: skip
        with pytest.raises(ProviderError):
            providers.momo_parse_create(CFG, forged)
    paid = momo_answer({"requestId": "Q", "orderId": "BK1", "amount": 150000, "transId": 4088878653, "resultCode": 0,
                        "message": "Successful.", "payType": "qr", "extraData": ""},
                       providers.MOMO_QUERY_ANSWER_KEYS)  # fmt: skip
    assert providers.momo_parse_query(CFG, paid) == PaymentStatus("paid", "4088878653", 150000, paid)
    with pytest.raises(ProviderError):
        providers.momo_parse_query(CFG, {**paid, "amount": 1})  # a changed amount breaks the signature


@pytest.mark.parametrize(("code", "state"), [(0, "paid"), (1000, "pending"), (7000, "pending"), (9000, "pending"),
                                             (1006, "failed"), (1005, "failed"), (42, "unknown")])  # fmt: skip
def test_momo_query_result_codes(code: int, state: str) -> None:
    answer = {"orderId": "BK1", "amount": 150000, "transId": 77 if code == 0 else 0, "resultCode": code}
    assert providers.momo_parse_query(CFG, answer).state == state


@pytest.mark.parametrize(("code", "retryable"), [(10, True), (99, True), (13, False), (20, False)])
def test_momo_errors_about_the_request_or_momo_are_provider_errors(code: int, retryable: bool) -> None:
    with pytest.raises(ProviderError) as raised:
        providers.momo_parse_query(CFG, {"orderId": "BK1", "resultCode": code, "message": "x"})
    assert raised.value.retryable is retryable


def test_zalopay_macs_are_the_documented_joins_under_key1() -> None:
    key1 = CREDENTIALS["ZALOPAY_KEY1"]
    body = providers.zalopay_create_request(CFG, transaction_id="261126_AB", amount=50000, description="Order 1",
                                            notify_url="https://x.example/cb", return_url="https://x.example/r",
                                            now_ms=1764120000000)  # fmt: skip
    embed = '{"redirecturl":"https://x.example/r"}'
    assert body["embed_data"] == embed and body["app_id"] == 2553
    assert body["mac"] == hexmac(key1, f"2553|261126_AB|booking|50000|1764120000000|{embed}|[]")
    query = providers.zalopay_query_request(CFG, transaction_id="261126_AB")
    assert query["mac"] == hexmac(key1, f"2553|261126_AB|{key1}")
    refund = providers.zalopay_refund_request(CFG, m_refund_id="261126_2553_X", zp_trans_id="190508000000022",
                                              amount=50000, description="Refund", now_ms=1764120000001)  # fmt: skip
    assert refund["mac"] == hexmac(key1, "2553|190508000000022|50000|Refund|1764120000001")
    asked = providers.zalopay_query_refund_request(CFG, m_refund_id="261126_2553_X", now_ms=1764120000002)
    assert asked["mac"] == hexmac(key1, "2553|261126_2553_X|1764120000002")


def test_zalopay_refund_id_is_yymmdd_in_vietnam_appid_and_ours() -> None:
    from datetime import UTC, datetime

    late_utc = datetime(2026, 11, 25, 18, 30, tzinfo=UTC)  # already 26 Nov in Vietnam (UTC+7)
    assert providers.zalopay_refund_id(CFG, REFUND_ID, late_utc) == "261126_2553_6f1c2a9e5b7d4c1e9a8b0123456789ab"


@pytest.mark.parametrize(("answer", "state"), [
    ({"return_code": 1, "zp_trans_id": 190508000000022, "amount": 50000}, "paid"),
    ({"return_code": 3, "is_processing": False}, "pending"),
    ({"return_code": 2, "sub_return_code": -101}, "failed"),
    ({"return_code": 2, "sub_return_code": providers.ZALOPAY_NOT_FOUND}, "unknown"),
])  # fmt: skip
def test_zalopay_query_answers(answer: dict[str, Any], state: str) -> None:
    assert providers.zalopay_parse_query(answer).state == state


def test_bank_answers_must_be_signed_with_the_secret() -> None:
    body, headers = providers.signed_json({"status": "PENDING"}, "s3cret")
    assert headers["X-Signature"] == "sha256=" + hexmac("s3cret", body)
    providers.check_signed_answer(body, headers["X-Signature"], "s3cret", "the bank")
    for header in (None, "sha256=" + "0" * 64, headers["X-Signature"].upper().replace("SHA256=", "md5=")):
        with pytest.raises(ProviderError):
            providers.check_signed_answer(body, header, "s3cret", "the bank")
    with pytest.raises(ProviderError):
        providers.check_signed_answer(body + b" ", headers["X-Signature"], "s3cret", "the bank")


def test_config_defaults_development_to_the_sandbox_and_production_to_the_providers() -> None:
    sandbox = {"PAYMENT_SANDBOX": "yes", "PAYMENT_MODE": "provider"}
    dev = ProviderConfig.from_env({"GATEWAY_PORT": "18461", **sandbox})
    assert dev.momo_endpoint == "http://127.0.0.1:18461/payments/sandbox/api/momo"
    assert dev.card_api_url == "http://127.0.0.1:18461/payments/sandbox/api/card"
    public = ProviderConfig.from_env({"PUBLIC_BASE_URL": "https://shop.example/", **sandbox})
    assert public.zalopay_endpoint == "https://shop.example/payments/sandbox/api/zalopay"
    # Without the sandbox (not asked for, or instant mode: its routes do not exist) development
    # goes to the providers' test hosts, and the bank's and card's APIs have no default.
    for env in ({"GATEWAY_PORT": "18461"}, {"PAYMENT_SANDBOX": "no", "PAYMENT_MODE": "provider"},
                {"PAYMENT_SANDBOX": "yes", "PAYMENT_MODE": "instant"}):  # fmt: skip
        off = ProviderConfig.from_env(env)
        assert (off.momo_endpoint, off.zalopay_endpoint) == (providers.MOMO_TEST, providers.ZALOPAY_TEST), env
        assert (off.bank_api_url, off.card_api_url) == ("", ""), env
    with pytest.raises(providers.ProviderConfigError, match="PAYMENT_SANDBOX"):
        ProviderConfig.from_env({"BOOKING_ENV": "production", **sandbox})
    with pytest.raises(providers.ProviderConfigError, match="PAYMENT_SANDBOX must be yes or no"):
        ProviderConfig.from_env({"PAYMENT_SANDBOX": "maybe"})
    prod = ProviderConfig.from_env({"BOOKING_ENV": "production", **CREDENTIALS})
    assert (prod.momo_endpoint, prod.zalopay_endpoint) == ("https://payment.momo.vn", "https://openapi.zalopay.vn")
    assert (prod.bank_api_url, prod.card_api_url, prod.timeout) == ("", "", providers.DEFAULT_TIMEOUT)
    named = ProviderConfig.from_env({"BOOKING_ENV": "production", "MOMO_ENDPOINT": "https://test-payment.momo.vn/",
                                     "PAYMENT_PROVIDER_TIMEOUT": "2.5"})  # fmt: skip
    assert (named.momo_endpoint, named.timeout) == ("https://test-payment.momo.vn", 2.5)
    for bad in ({"PAYMENT_PROVIDER_TIMEOUT": "0"}, {"PAYMENT_PROVIDER_TIMEOUT": "soon"},
                {"MOMO_ENDPOINT": "ftp://x"}, {"BANK_API_URL": "https://x/?q=1"}):  # fmt: skip
        with pytest.raises(ProviderConfigError, match=next(iter(bad))):
            ProviderConfig.from_env(bad)
    shown = repr(prod)
    assert all(CREDENTIALS[k] not in shown for k in ("MOMO_SECRET_KEY", "ZALOPAY_KEY1", "BANK_WEBHOOK_SECRET"))


def test_a_deeply_nested_answer_is_a_provider_error_not_a_crash() -> None:
    deep = b"[" * 100000 + b"]" * 100000
    with pytest.raises(ProviderError, match="not JSON") as raised:
        providers._json_of(httpx.Response(200, content=deep), "MoMo")
    assert raised.value.retryable


def test_unconfigured_provider_is_a_permanent_error() -> None:
    async def go() -> None:
        async with httpx.AsyncClient() as http:
            with pytest.raises(ProviderError, match="BANK_API_URL") as raised:
                await providers.query_payment(http, ProviderConfig.from_env({"BOOKING_ENV": "production"}),
                                              method="BANKING", transaction_id="TXN-1")  # fmt: skip
            assert raised.value.retryable is False

    run(go())


# ------------------------------------------------------------------ the stub, over real sockets


@pytest.fixture
def stub(tmp_path: Path) -> Iterator[tuple[ProviderConfig, sandbox_api.StubState]]:
    with LiveServer(sandbox_api.app(tmp_path, CFG)) as live:
        env = {**CREDENTIALS, "MOMO_ENDPOINT": f"{live.url}/momo", "ZALOPAY_ENDPOINT": f"{live.url}/zalopay",
               "BANK_API_URL": f"{live.url}/bank", "CARD_API_URL": f"{live.url}/card"}  # fmt: skip
        yield ProviderConfig.from_env(env), sandbox_api.StubState(tmp_path)


TRANSACTIONS = {"MOMO": "BK0A1B2C", "ZALOPAY": "261126_0A1B2C", "BANKING": "TXN-0A1B2C", "CARD": "TXN-3D4E5F"}


@pytest.mark.parametrize("method", list(TRANSACTIONS))
def test_create_query_pay_refund_through_the_stub(stub: tuple[ProviderConfig, sandbox_api.StubState],
                                                  method: str) -> None:  # fmt: skip
    cfg, state = stub
    txn = TRANSACTIONS[method]

    async def go() -> None:
        async with httpx.AsyncClient() as http:
            unknown = await providers.query_payment(http, cfg, method=method, transaction_id=txn)
            assert unknown.state == "unknown"
            url = await providers.create_payment(http, cfg, method=method, transaction_id=txn, amount=150000,
                                                 description="Order 1", notify_url="http://127.0.0.1:1/n",
                                                 return_url="http://127.0.0.1:1/r")  # fmt: skip
            assert url is not None and f"/payments/sandbox/{txn}?method={method}&amount=150000" in url
            assert (await providers.query_payment(http, cfg, method=method, transaction_id=txn)).state == "pending"
            paid_txn = state.mark_paid(txn, 150000)
            paid = await providers.query_payment(http, cfg, method=method, transaction_id=txn)
            assert (paid.state, paid.provider_txn_id, paid.amount) == ("paid", paid_txn, 150000)
            args = {"method": method, "refund_id": REFUND_ID, "transaction_id": txn, "amount": 150000,
                    "description": "Event cancelled"}  # fmt: skip
            done = await providers.refund(http, cfg, provider_txn_id=paid_txn, **args)
            assert done.state == "done" and done.provider_ref and done.error is None
            again = await providers.refund(http, cfg, provider_txn_id=None, **args)  # a retried job
            assert (again.state, again.provider_ref) == ("done", done.provider_ref)
            more = await providers.refund(
                http, cfg, provider_txn_id=paid_txn, **{**args, "refund_id": "7a000000-0000-4000-8000-000000000000"}
            )
            assert more.state == "failed" and more.error  # nothing left to refund

    run(go())
    recorded = state.refunds()
    assert [(r["transaction_id"], r["amount"], r["state"]) for r in recorded] == [(txn, 150000, "done")]


def test_momo_refund_answers_that_are_not_a_refusal_are_asked_again() -> None:
    """Only MoMo's documented final codes refuse a refund (the worker then counts a refusal and a
    DBA's retry asks under a new request id); 43 (similar transaction in progress) is pending and
    a code we do not know is a retryable error, never a refusal."""
    base = {"partnerCode": CFG.momo_partner_code, "orderId": "RF1", "requestId": "RF1", "amount": 1000,
            "transId": 0, "message": "m", "responseTime": 1}  # fmt: skip
    assert providers.momo_parse_refund(CFG, {**base, "resultCode": 43}).state == "pending"
    assert providers.momo_parse_refund(CFG, {**base, "resultCode": 1001}).state == "failed"
    with pytest.raises(ProviderError) as unknown:
        providers.momo_parse_refund(CFG, {**base, "resultCode": 777})
    assert unknown.value.retryable


def test_zalopay_refund_ids_look_back_to_the_day_the_refund_was_decided() -> None:
    vn = providers.VIETNAM
    now = datetime(2026, 11, 26, 0, 30, tzinfo=vn)
    same_day = providers.zalopay_refund_ids(CFG, REFUND_ID, now - timedelta(minutes=20), now)
    assert same_day == [providers.zalopay_refund_id(CFG, REFUND_ID, now)]
    ids = providers.zalopay_refund_ids(CFG, REFUND_ID, now - timedelta(hours=1), now)  # yesterday in Vietnam
    assert [i[:6] for i in ids] == ["261126", "261125"]
    old = providers.zalopay_refund_ids(CFG, REFUND_ID, now - timedelta(days=10), now)
    assert [i[:6] for i in old] == ["261126", "261125", "261124", "261123", "261116"]


def test_a_zalopay_refund_made_yesterday_is_found_not_made_again(
    stub: tuple[ProviderConfig, sandbox_api.StubState],
) -> None:
    """The first attempt went through just before midnight (Vietnam) and its answer was lost; the
    retry after midnight finds it under yesterday's m_refund_id instead of refunding again."""
    cfg, state = stub
    txn = TRANSACTIONS["ZALOPAY"]
    paid_txn = state.mark_paid(txn, 90000, "ZALOPAY")
    yesterday = datetime.now(UTC) - timedelta(days=1)

    async def go() -> None:
        async with httpx.AsyncClient() as http:
            m_refund_id = providers.zalopay_refund_id(cfg, REFUND_ID, yesterday)
            body = providers.zalopay_refund_request(cfg, m_refund_id=m_refund_id, zp_trans_id=paid_txn, amount=90000,
                                                    description="x", now_ms=providers._now_ms())  # fmt: skip
            first = await http.post(cfg.zalopay_endpoint + providers.ZALOPAY_REFUND_PATH, data=body)
            assert first.json()["return_code"] == 1, first.text
            retry = await providers.refund(http, cfg, method="ZALOPAY", refund_id=REFUND_ID, transaction_id=txn,
                                           provider_txn_id=paid_txn, amount=90000, description="x",
                                           requested_at=yesterday)  # fmt: skip
            assert retry.state == "done"

    run(go())
    assert [r["state"] for r in state.refunds()] == ["done"], "one refund at the provider"


@pytest.mark.parametrize("method", ["ZALOPAY", "BANKING"])
def test_refund_refused_pending_and_late(stub: tuple[ProviderConfig, sandbox_api.StubState], method: str) -> None:
    cfg, state = stub
    txn = TRANSACTIONS[method]
    paid_txn = state.mark_paid(txn, 90000, method)
    quick = ProviderConfig(**{**cfg.__dict__, "timeout": 0.5})

    async def go() -> None:
        async with httpx.AsyncClient() as http:

            def args(refund_id: str) -> dict[str, Any]:
                return {"method": method, "refund_id": refund_id, "transaction_id": txn, "provider_txn_id": paid_txn,
                        "amount": 30000, "description": "x"}  # fmt: skip

            state.fail_next_refund()
            refused = await providers.refund(http, cfg, **args("00000000-0000-4000-8000-000000000001"))
            assert refused.state == "failed" and refused.error
            state.next_refund("pending")
            pending = await providers.refund(http, cfg, **args("00000000-0000-4000-8000-000000000002"))
            assert pending.state == "pending"
            assert (await providers.refund(http, cfg, **args("00000000-0000-4000-8000-000000000002"))).state == "done"
            state.timeout_next_refund(seconds=1.5)
            with pytest.raises(ProviderError, match="did not answer") as late:
                await providers.refund(http, quick, **args("00000000-0000-4000-8000-000000000003"))
            assert late.value.retryable
            await asyncio.sleep(1.5)  # the stub did refund meanwhile; the retry finds it, no second refund
            assert (await providers.refund(http, cfg, **args("00000000-0000-4000-8000-000000000003"))).state == "done"

    run(go())
    assert sorted(r["state"] for r in state.refunds()) == ["done", "done", "failed"]


def test_stub_refuses_forged_requests_and_the_client_refuses_forged_answers(
    stub: tuple[ProviderConfig, sandbox_api.StubState], tmp_path: Path
) -> None:
    cfg, state = stub
    wrong = ProviderConfig(**{**cfg.__dict__, "momo_secret_key": "x", "zalopay_key1": "x", "bank_secret": "x"})

    async def go() -> None:
        async with httpx.AsyncClient() as http:
            for method in ("MOMO", "ZALOPAY", "BANKING"):
                with pytest.raises(ProviderError) as raised:
                    await providers.create_payment(http, wrong, method=method, transaction_id=TRANSACTIONS[method],
                                                   amount=1000, description="d", notify_url="http://x/n",
                                                   return_url="http://x/r")  # fmt: skip
                assert raised.value.retryable is False
            # A stub under other keys: our requests are refused there; its answers, signed with
            # its keys, would be refused here (MoMo, bank: answers are signed).
            other = CREDENTIALS | {"MOMO_SECRET_KEY": "other", "BANK_WEBHOOK_SECRET": "other"}
            with LiveServer(sandbox_api.app(tmp_path / "other", ProviderConfig.from_env(other))) as live:
                impostor = ProviderConfig(**{**cfg.__dict__, "bank_api_url": f"{live.url}/bank"})
                with pytest.raises(ProviderError):
                    await providers.query_payment(http, impostor, method="BANKING", transaction_id="TXN-1")

    run(go())
    assert state.payment(TRANSACTIONS["MOMO"]) is None  # nothing was created


def test_stub_answers_bad_input_with_4xx_and_keeps_its_files_inside(tmp_path: Path) -> None:
    with LiveServer(sandbox_api.app(tmp_path / "state", CFG)) as live:
        good = providers.momo_create_request(CFG, transaction_id="../../escape", amount=1000, description="d",
                                             notify_url="http://x", return_url="http://x")  # fmt: skip
        body, headers = providers.signed_json(
            {"transaction_id": "../x", "amount": 1000}, CREDENTIALS["BANK_WEBHOOK_SECRET"]
        )
        cases = [
            httpx.post(f"{live.url}/momo/v2/gateway/api/create", json=good),
            httpx.post(f"{live.url}/momo/v2/gateway/api/create", content=b"not json"),
            httpx.post(f"{live.url}/momo/v2/gateway/api/query", json=[1, 2]),
            httpx.post(f"{live.url}/zalopay/v2/query", json={"app_id": 2553, "app_trans_id": "x", "mac": "00"}),
            httpx.post(f"{live.url}/zalopay/v2/create", content=b"app_id=2553&amount=abc",
                       headers={"Content-Type": "application/x-www-form-urlencoded"}),
            httpx.post(f"{live.url}/bank/payments", content=body, headers=headers),
            httpx.post(f"{live.url}/card/payments", content=body, headers=headers),  # the bank's signature
            httpx.post(f"{live.url}/bank/refunds", content=b"{}", headers={"X-Signature": "sha256=00"}),
            httpx.get(f"{live.url}/bank/payments"),
        ]  # fmt: skip
    assert all(400 <= r.status_code < 500 for r in cases), [(r.status_code, r.text) for r in cases]
    assert not (tmp_path / "escape.json").exists() and not list(tmp_path.glob("*.json"))
    state = sandbox_api.StubState(tmp_path / "state")
    for key in ("../x", ".hidden", "a/b", "", "x" * 101):
        with pytest.raises(sandbox_api.BadKey):
            state.mark_paid(key, 1000)


def test_a_provider_that_is_down_is_a_retryable_error() -> None:
    cfg = ProviderConfig.from_env({**CREDENTIALS, "ZALOPAY_ENDPOINT": f"http://127.0.0.1:{free_port()}/zalopay"})

    async def go() -> None:
        async with httpx.AsyncClient() as http:
            with pytest.raises(ProviderError, match="could not be reached") as raised:
                await providers.query_payment(http, cfg, method="ZALOPAY", transaction_id="261126_X")
            assert raised.value.retryable

    run(go())


def test_stub_state_is_shared_through_its_files(tmp_path: Path) -> None:
    """Two StubStates on one folder (two uvicorn workers, a test and the stub) see one state."""
    a, b = sandbox_api.StubState(tmp_path), sandbox_api.StubState(tmp_path)
    a.created("BK1", "MOMO", 5000)
    txn = b.mark_paid("BK1")
    assert a.payment("BK1") == {**a.payment("BK1"), "state": "paid", "provider_txn_id": txn, "amount": 5000}  # type: ignore[dict-item]
    assert a.by_provider_txn(txn)["transaction_id"] == "BK1"  # type: ignore[index]
    b.mark_failed("BK2", 7000, "CARD")
    assert a.payment("BK2")["state"] == "failed"  # type: ignore[index]
    assert json.loads((tmp_path / "payments" / "BK2.json").read_text())["method"] == "CARD"


def test_the_stub_refuses_unicode_digits_without_a_500(stub: tuple[ProviderConfig, sandbox_api.StubState]) -> None:
    """'²'.isdigit() is true and int('²') raises: every digits check on what clients send is ASCII."""
    cfg, _ = stub

    async def go() -> None:
        async with httpx.AsyncClient() as http:
            for path in ("/v2/create", "/v2/query_refund"):
                for field in ("amount", "app_time", "timestamp"):
                    r = await http.post(cfg.zalopay_endpoint + path, data={"app_id": "2553", field: "²"})
                    assert r.status_code < 500, (path, field, r.text)

    run(go())
    assert providers._int_or_none("²") is None
