"""The providers' signature schemes (API.md "Checkout with a payment provider"), with real HMACs:
a correct signature verifies; one changed byte, a wrong key, a missing field or a foreign merchant
is refused; MoMo's signed string has the documented keys in the documented order; every
comparison goes through hmac.compare_digest."""

from __future__ import annotations

import hashlib
import hmac
import json
from decimal import Decimal
from typing import Any

import pytest

from gateway.payments import common, momo, webhook, zalopay
from gateway.payments.common import BadSignature, MalformedCallback

ACCESS, SECRET = "F8BBA842ECF85", "K951B6PE1waDMi640xX08PD3vg6EkVlz"
APP_ID, KEY2 = "2553", "kLtgPl8HHhfvMuDHPwKfgfsY4Ydm9eIz"
BANK_SECRET, CARD_SECRET = "bank-secret-0123456789", "card-secret-0123456789"

IPN: dict[str, Any] = {
    "partnerCode": "MOMOSANDBOX", "orderId": "BK0a1b2c3d", "requestId": "BK0a1b2c3d", "amount": 150000,
    "orderInfo": "Tickets & more", "orderType": "momo_wallet", "transId": 4088878653, "resultCode": 0,
    "message": "Successful.", "payType": "qr", "responseTime": 1721720663942, "extraData": "",
}  # fmt: skip


def hexmac(key: str, message: str | bytes) -> str:
    data = message.encode() if isinstance(message, str) else message
    return hmac.new(key.encode(), data, hashlib.sha256).hexdigest()


def body(payload: Any) -> bytes:
    return json.dumps(payload).encode()


# ------------------------------------------------------------------ MoMo


def test_momo_signs_the_documented_string_in_the_documented_order() -> None:
    # Written out by hand from API.md: accessKey first, then the IPN's keys alphabetically.
    expected = (
        "accessKey=F8BBA842ECF85&amount=150000&extraData=&message=Successful.&orderId=BK0a1b2c3d"
        "&orderInfo=Tickets & more&orderType=momo_wallet&partnerCode=MOMOSANDBOX&payType=qr"
        "&requestId=BK0a1b2c3d&responseTime=1721720663942&resultCode=0&transId=4088878653"
    )
    assert momo.raw_signature(IPN, ACCESS) == expected
    assert momo.sign(IPN, ACCESS, SECRET) == hexmac(SECRET, expected)


def test_momo_correct_signature_verifies() -> None:
    event = momo.verify(body(momo.signed_ipn(IPN, ACCESS, SECRET)), "MOMOSANDBOX", ACCESS, SECRET)
    assert (event.provider, event.transaction_id, event.provider_txn_id) == ("MOMO", "BK0a1b2c3d", "4088878653")
    assert event.amount == Decimal(150000) and event.success and event.final
    denied = momo.signed_ipn({**IPN, "resultCode": 1006}, ACCESS, SECRET)
    assert momo.verify(body(denied), "MOMOSANDBOX", ACCESS, SECRET).success is False
    processing = momo.signed_ipn({**IPN, "resultCode": 7000}, ACCESS, SECRET)
    assert momo.verify(body(processing), "MOMOSANDBOX", ACCESS, SECRET).final is False


@pytest.mark.parametrize("field", ["amount", "orderId", "transId", "resultCode", "extraData", "message"])
def test_momo_one_changed_value_is_refused(field: str) -> None:
    signed = momo.signed_ipn(IPN, ACCESS, SECRET)
    value = signed[field]
    signed[field] = value + 1 if isinstance(value, int) else value + "x"
    with pytest.raises(BadSignature):
        momo.verify(body(signed), "MOMOSANDBOX", ACCESS, SECRET)


def test_momo_one_changed_signature_byte_wrong_keys_and_foreign_partner_are_refused() -> None:
    signed = momo.signed_ipn(IPN, ACCESS, SECRET)
    flipped = {**signed, "signature": ("0" if signed["signature"][0] != "0" else "1") + signed["signature"][1:]}
    for payload, access, secret, partner in [
        (flipped, ACCESS, SECRET, "MOMOSANDBOX"),
        (signed, ACCESS, SECRET[:-1] + "X", "MOMOSANDBOX"),  # wrong secret key
        (signed, "OTHERACCESS", SECRET, "MOMOSANDBOX"),  # wrong access key
        ({k: v for k, v in signed.items() if k != "signature"}, ACCESS, SECRET, "MOMOSANDBOX"),
        ({**signed, "signature": 12345}, ACCESS, SECRET, "MOMOSANDBOX"),
        (signed, ACCESS, SECRET, "MOMOOTHER"),  # signed right, but not for us
    ]:
        with pytest.raises(BadSignature):
            momo.verify(body(payload), partner, access, secret)


@pytest.mark.parametrize("field", sorted(IPN))
def test_momo_missing_or_ill_typed_field_is_refused(field: str) -> None:
    signed = momo.signed_ipn(IPN, ACCESS, SECRET)
    with pytest.raises(MalformedCallback):
        momo.verify(body({k: v for k, v in signed.items() if k != field}), "MOMOSANDBOX", ACCESS, SECRET)
    wrong = {**signed, field: True}
    with pytest.raises(MalformedCallback):
        momo.verify(body(wrong), "MOMOSANDBOX", ACCESS, SECRET)


def test_momo_not_json_is_malformed() -> None:
    for raw in (b"", b"{", b"[]", b"\xff\xfe"):
        with pytest.raises(MalformedCallback):
            momo.verify(raw, "MOMOSANDBOX", ACCESS, SECRET)


# ------------------------------------------------------------------ ZaloPay

DATA: dict[str, Any] = {
    "app_id": 2553, "app_trans_id": "261126_0a1b2c3d", "app_time": 1764120000000, "app_user": "buyer",
    "amount": 150000, "embed_data": "{}", "item": "[]", "zp_trans_id": 251126000012345,
    "server_time": 1764120005000, "channel": 38, "merchant_user_id": "", "user_fee_amount": 0,
}  # fmt: skip


def test_zalopay_mac_is_hmac_of_the_data_string_under_key2() -> None:
    signed = zalopay.signed_callback(DATA, KEY2)
    assert signed["mac"] == hexmac(KEY2, signed["data"]) and signed["type"] == 1
    assert json.loads(signed["data"]) == DATA
    event = zalopay.verify(body(signed), APP_ID, KEY2)
    assert (event.provider, event.transaction_id, event.provider_txn_id) == (
        "ZALOPAY", "261126_0a1b2c3d", "251126000012345")  # fmt: skip
    assert event.amount == Decimal(150000) and event.success


def test_zalopay_mac_over_the_data_as_sent_not_as_reparsed() -> None:
    # Another serialisation of the same data (spaces): its own mac verifies, the other's does not.
    spaced = json.dumps(DATA)
    assert zalopay.verify(body({"data": spaced, "mac": hexmac(KEY2, spaced), "type": 1}), APP_ID, KEY2)
    compact = zalopay.signed_callback(DATA, KEY2)
    with pytest.raises(BadSignature):
        zalopay.verify(body({**compact, "data": spaced}), APP_ID, KEY2)


def test_zalopay_changed_byte_wrong_key_missing_mac_foreign_app_are_refused() -> None:
    signed = zalopay.signed_callback(DATA, KEY2)
    changed = {**signed, "data": signed["data"].replace("150000", "150001")}
    flipped = {**signed, "mac": ("a" if signed["mac"][-1] != "a" else "b").join([signed["mac"][:-1], ""])}
    for payload, key, app in [
        (changed, KEY2, APP_ID),
        (flipped, KEY2, APP_ID),
        (signed, KEY2[:-1] + "Q", APP_ID),  # wrong key
        (zalopay.signed_callback(DATA, "key1-is-not-key2"), KEY2, APP_ID),
        ({k: v for k, v in signed.items() if k != "mac"}, KEY2, APP_ID),
        (signed, KEY2, "9999"),  # signed right, another app
    ]:
        with pytest.raises(BadSignature):
            zalopay.verify(body(payload), app, key)


@pytest.mark.parametrize("field", ["app_id", "app_trans_id", "amount", "zp_trans_id", "server_time"])
def test_zalopay_missing_field_is_refused(field: str) -> None:
    signed = zalopay.signed_callback({k: v for k, v in DATA.items() if k != field}, KEY2)
    with pytest.raises(MalformedCallback):
        zalopay.verify(body(signed), APP_ID, KEY2)


def test_zalopay_missing_data_is_refused() -> None:
    with pytest.raises(MalformedCallback):
        zalopay.verify(body({"mac": "00", "type": 1}), APP_ID, KEY2)


# ------------------------------------------------------------------ bank transfer and card

PAYLOAD = {"transaction_id": "TXN-0a1b2c3d", "amount": 150000, "status": "SUCCESS", "provider_txn_id": "VCB-77"}


@pytest.mark.parametrize(("provider", "secret"), [(webhook.BANK, BANK_SECRET), (webhook.CARD, CARD_SECRET)])
def test_webhook_signature_is_hmac_of_the_raw_body(provider: str, secret: str) -> None:
    raw, headers = webhook.signed_request(PAYLOAD, secret)
    assert headers["X-Signature"] == "sha256=" + hexmac(secret, raw)
    event = webhook.verify(provider, raw, headers["X-Signature"], secret)
    assert (event.provider, event.transaction_id, event.provider_txn_id) == (provider, "TXN-0a1b2c3d", "VCB-77")
    assert event.amount == Decimal(150000) and event.success
    raw, headers = webhook.signed_request({**PAYLOAD, "status": "FAILED", "amount": "150000.00"}, secret)
    failed = webhook.verify(provider, raw, headers["X-Signature"], secret)
    assert failed.success is False and failed.amount == Decimal("150000.00")


def test_webhook_changed_byte_wrong_key_missing_header_are_refused() -> None:
    raw, headers = webhook.signed_request(PAYLOAD, BANK_SECRET)
    sig = headers["X-Signature"]
    for data, header, secret in [
        (raw.replace(b"150000", b"150001"), sig, BANK_SECRET),
        (raw + b" ", sig, BANK_SECRET),  # the raw body is what is signed, whitespace too
        (raw, sig[:-1] + ("0" if sig[-1] != "0" else "1"), BANK_SECRET),
        (raw, sig, CARD_SECRET),  # the card secret does not open the bank's webhook
        (raw, None, BANK_SECRET),
        (raw, sig.removeprefix("sha256="), BANK_SECRET),  # the scheme prefix is required
        (raw, "sha1=" + sig.removeprefix("sha256="), BANK_SECRET),
        (raw, "sha256=", BANK_SECRET),
    ]:
        with pytest.raises(BadSignature):
            webhook.verify(webhook.BANK, data, header, secret)


@pytest.mark.parametrize("field", sorted(PAYLOAD))
def test_webhook_missing_field_or_bad_status_is_refused(field: str) -> None:
    for payload in ({k: v for k, v in PAYLOAD.items() if k != field}, {**PAYLOAD, field: None}):
        raw, headers = webhook.signed_request(payload, BANK_SECRET)
        with pytest.raises(MalformedCallback):
            webhook.verify(webhook.BANK, raw, headers["X-Signature"], BANK_SECRET)
    raw, headers = webhook.signed_request({**PAYLOAD, "status": "PAID"}, BANK_SECRET)
    with pytest.raises(MalformedCallback):
        webhook.verify(webhook.BANK, raw, headers["X-Signature"], BANK_SECRET)


# ------------------------------------------------------------------ constant time


def test_every_verification_compares_with_compare_digest(monkeypatch: pytest.MonkeyPatch) -> None:
    """The comparison is hmac.compare_digest's (constant time), for success and refusal alike."""
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(common.hmac, "compare_digest", spy)
    signed_ipn = momo.signed_ipn(IPN, ACCESS, SECRET)
    momo.verify(body(signed_ipn), "MOMOSANDBOX", ACCESS, SECRET)
    with pytest.raises(BadSignature):
        momo.verify(body({**signed_ipn, "signature": "0" * 64}), "MOMOSANDBOX", ACCESS, SECRET)
    zalopay.verify(body(zalopay.signed_callback(DATA, KEY2)), APP_ID, KEY2)
    raw, headers = webhook.signed_request(PAYLOAD, CARD_SECRET)
    webhook.verify(webhook.CARD, raw, headers["X-Signature"], CARD_SECRET)
    with pytest.raises(BadSignature):
        webhook.verify(webhook.CARD, raw, "sha256=" + "0" * 64, CARD_SECRET)
    assert len(calls) == 5
    assert calls[1][1] == b"0" * 64 and calls[4][1] == b"0" * 64


def test_uppercase_hex_is_the_same_signature() -> None:
    signed = momo.signed_ipn(IPN, ACCESS, SECRET)
    assert momo.verify(body({**signed, "signature": signed["signature"].upper()}), "MOMOSANDBOX", ACCESS, SECRET)


def test_whole_vnd_rounds_half_up() -> None:
    assert [common.whole_vnd(v) for v in ("150000.00", "150000.50", "150000.49", 7)] == [150000, 150001, 150000, 7]
