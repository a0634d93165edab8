"""The providers' APIs, stubbed for development and tests (issue 12): the same wire formats as
gateway/payments/providers.py speaks (MoMo v2, ZaloPay v2, our bank/card JSON API), request
signatures verified, answers as the providers document them (MoMo's signed).

- create -> a payUrl / order_url / pay_url leading to the sandbox page (gateway/payments/sandbox.py)
- query  -> paid / failed / pending from the state below; unknown when never created nor paid
- refund -> done and recorded (or, when a test asked for it, failed, pending or late)

State lives in files under a directory (PAYMENT_SANDBOX_DIR; `make run`: .local/sandbox) so every
uvicorn worker and the test that drives it see the same thing: StubState. Keys are checked
(letters, digits, `_ - .`, no leading dot: no path leaves the directory), writes are atomic
(a temporary file renamed).

`app(state_dir)` is the stub as its own ASGI app (tests serve it with uvicorn on a free port);
the gateway mounts the same app under /payments/sandbox/api in development with
PAYMENT_MODE=provider (404 otherwise, like the sandbox page).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.errors import method_not_allowed, not_found
from gateway.payments import providers, webhook
from gateway.payments.common import hmac_hex, signature_matches
from gateway.payments.providers import ProviderConfig

KEY = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,99}$")
MAX_BODY = 16384
STATES = ("pending", "paid", "failed")
REFUND_CONTROLS = ("fail", "pending", "late")
DEFAULT_LATE_SECONDS = 35.0  # longer than any client timeout (MoMo's is 30 s)
PAGE_PATH = "/payments/sandbox/"


class BadKey(ValueError):
    pass


def page_url(base_url: str, transaction_id: str, method: str, amount: Any) -> str:
    """The sandbox page for a payment (the same URL the gateway's sandbox checkout builds)."""
    from gateway.payments.common import whole_vnd

    query = urlencode({"method": method, "amount": whole_vnd(amount)})
    return f"{base_url.rstrip('/')}{PAGE_PATH}{transaction_id}?{query}"


def _key(value: Any) -> str:
    text = str(value)
    if not KEY.fullmatch(text):
        raise BadKey("a reference must be 1-100 letters, digits, '_', '-' or '.', not starting with '.'")
    return text


def _numeric_txn() -> str:
    return str(10**12 + secrets.randbelow(9 * 10**12))


class StubState:
    """What the stub providers know, in files under `state_dir`:
    payments/<transaction_id>.json  {transaction_id, method, amount, state, provider_txn_id}
    txns/<provider_txn_id>          the transaction_id it paid (refunds name the provider's id)
    refunds/<refund_key>.json       {refund_id, method, transaction_id, amount, state, provider_ref}
    control/next_refund.json        how the next refund request is answered (once)"""

    def __init__(self, state_dir: str | os.PathLike[str]) -> None:
        self.root = Path(state_dir)

    # -- files
    def _path(self, kind: str, key: str, suffix: str = ".json") -> Path:
        return self.root / kind / f"{_key(key)}{suffix}"

    def _read(self, path: Path) -> Any:
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (ValueError, RecursionError):
            return None  # a torn file cannot happen (rename), but never let it be a 500

    def _write(self, path: Path, value: Any) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        with os.fdopen(fd, "w") as out:
            json.dump(value, out)
        os.replace(tmp, path)

    # -- payments
    def payment(self, transaction_id: str) -> dict[str, Any] | None:
        found = self._read(self._path("payments", transaction_id))
        return found if isinstance(found, dict) else None

    def created(self, transaction_id: str, method: str, amount: int) -> dict[str, Any]:
        """A payment registered by a create call (pending), or the one already there."""
        existing = self.payment(transaction_id)
        if existing is not None:
            return existing
        record = {"transaction_id": transaction_id, "method": method, "amount": amount, "state": "pending",
                  "provider_txn_id": None, "created_at": time.time()}  # fmt: skip
        self._write(self._path("payments", transaction_id), record)
        return record

    def _settle(self, transaction_id: str, state: str, amount: int | None, method: str | None) -> dict[str, Any]:
        record = self.payment(transaction_id) or {"transaction_id": _key(transaction_id), "method": method,
                                                  "amount": amount, "created_at": time.time()}  # fmt: skip
        if method is not None:
            record["method"] = method
        if amount is not None:
            record["amount"] = amount
        record["state"] = state
        if state == "paid" and not record.get("provider_txn_id"):
            record["provider_txn_id"] = _numeric_txn()
            self._write(self._path("txns", record["provider_txn_id"], ""), transaction_id)
        self._write(self._path("payments", transaction_id), record)
        return record

    def mark_paid(self, transaction_id: str, amount: int | None = None, method: str | None = None) -> str:
        """The buyer paid: a later query says paid. Returns the provider's transaction id."""
        return str(self._settle(transaction_id, "paid", amount, method)["provider_txn_id"])

    def mark_failed(self, transaction_id: str, amount: int | None = None, method: str | None = None) -> None:
        self._settle(transaction_id, "failed", amount, method)

    def by_provider_txn(self, provider_txn_id: str) -> dict[str, Any] | None:
        try:
            path = self._path("txns", provider_txn_id, "")
        except BadKey:
            return None
        transaction_id = self._read(path)
        return self.payment(transaction_id) if isinstance(transaction_id, str) else None

    # -- refunds
    def refund(self, key: str) -> dict[str, Any] | None:
        found = self._read(self._path("refunds", key))
        return found if isinstance(found, dict) else None

    def record_refund(self, key: str, record: dict[str, Any]) -> dict[str, Any]:
        self._write(self._path("refunds", key), record)
        return record

    def refunds(self) -> list[dict[str, Any]]:
        """Every refund the stub recorded (any state), oldest first."""
        folder = self.root / "refunds"
        found = [self._read(path) for path in folder.glob("*.json")] if folder.is_dir() else []
        return sorted((r for r in found if isinstance(r, dict)), key=lambda r: r.get("created_at", 0))

    def next_refund(self, outcome: str, *, seconds: float = DEFAULT_LATE_SECONDS) -> None:
        """How the next refund request is answered, once: "fail" (refused for good), "pending"
        (accepted, still processing: asked again it is done), "late" (done, but the answer only
        after `seconds`, past the client's timeout)."""
        if outcome not in REFUND_CONTROLS:
            raise ValueError(f"outcome must be one of {', '.join(REFUND_CONTROLS)}")
        self._write(self.root / "control" / "next_refund.json", {"outcome": outcome, "seconds": seconds})

    def fail_next_refund(self) -> None:
        self.next_refund("fail")

    def timeout_next_refund(self, seconds: float = DEFAULT_LATE_SECONDS) -> None:
        self.next_refund("late", seconds=seconds)

    def take_refund_control(self) -> dict[str, Any] | None:
        path = self.root / "control" / "next_refund.json"
        taken = path.with_name(f".taken-{secrets.token_hex(6)}")
        try:
            os.replace(path, taken)  # atomic: one request takes it
        except FileNotFoundError:
            return None
        value = self._read(taken)
        taken.unlink(missing_ok=True)
        return value if isinstance(value, dict) else None


# ---------------------------------------------------------------------------------------------
# The HTTP side


class Refused(Exception):
    """A request the stub refuses before looking at its state: the response to send."""

    def __init__(self, response: Response) -> None:
        self.response = response


async def _body(request: Request) -> bytes:
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            raise Refused(JSONResponse({"error": "payload_too_large"}, 413))
    return body


def _json_object(raw: bytes, bad: Callable[[str], Response]) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):  # deep nesting: malformed too
        raise Refused(bad("the body is not JSON")) from None
    if not isinstance(value, dict):
        raise Refused(bad("the body must be a JSON object"))
    return value


def _field(body: dict[str, Any], name: str, kind: type | tuple[type, ...], bad: Callable[[str], Response]) -> Any:
    value = body.get(name)
    if isinstance(value, bool) or not isinstance(value, kind):
        raise Refused(bad(f"{name} is missing or has the wrong type"))
    return value


def _ref(body: dict[str, Any], name: str, bad: Callable[[str], Response]) -> str:
    value = str(_field(body, name, (str, int), bad))
    if not KEY.fullmatch(value):
        raise Refused(bad(f"{name} must be 1-100 letters, digits, '_', '-' or '.'"))
    return value


def _amount(body: dict[str, Any], bad: Callable[[str], Response]) -> int:
    value = _field(body, "amount", int, bad)
    if not 0 < value < 10**12:  # payment_events.amount NUMERIC(14,2), as the callbacks' limit
        raise Refused(bad("amount is out of range"))
    return int(value)


def _origin(request: Request, page_base: str | None) -> str:
    return page_base or f"{request.url.scheme}://{request.url.netloc}"


class Stub:
    def __init__(self, state: StubState, config: ProviderConfig, page_base: str | None) -> None:
        self.state = state
        self.cfg = config
        self.page_base = page_base

    async def _late(self) -> dict[str, Any] | None:
        control = self.state.take_refund_control()
        if control and control.get("outcome") == "late":
            await asyncio.sleep(float(control.get("seconds") or DEFAULT_LATE_SECONDS))
        return control

    # -- MoMo
    def _momo_bad(self, message: str, code: int = 20, status: int = 400) -> Response:
        return JSONResponse({"partnerCode": self.cfg.momo_partner_code, "resultCode": code, "message": message,
                             "responseTime": int(time.time() * 1000)}, status)  # fmt: skip

    def _momo_verified(self, raw: bytes, keys: tuple[str, ...]) -> dict[str, Any]:
        body = _json_object(raw, self._momo_bad)
        if not self.cfg.momo_secret_key or not signature_matches(
            providers.momo_sign(body, keys, self.cfg.momo_access_key, self.cfg.momo_secret_key), body.get("signature")
        ) or body.get("partnerCode") != self.cfg.momo_partner_code:  # fmt: skip
            raise Refused(self._momo_bad("Merchant authentication failed (signature).", code=13, status=401))
        return body

    def _momo_answer(self, answer: dict[str, Any], keys: tuple[str, ...]) -> Response:
        answer = {"partnerCode": self.cfg.momo_partner_code, "responseTime": int(time.time() * 1000), **answer}
        answer["signature"] = providers.momo_sign(answer, keys, self.cfg.momo_access_key, self.cfg.momo_secret_key)
        return JSONResponse(answer)

    async def momo_create(self, request: Request) -> Response:
        body = self._momo_verified(await _body(request), providers.MOMO_CREATE_KEYS)
        order_id = _ref(body, "orderId", self._momo_bad)
        amount = _amount(body, self._momo_bad)
        record = self.state.created(order_id, "MOMO", amount)
        if record.get("amount") != amount or record.get("method") != "MOMO":
            return self._momo_answer({"requestId": body.get("requestId"), "orderId": order_id, "amount": amount,
                                      "resultCode": providers.MOMO_DUPLICATE_ORDER, "message": "Duplicated orderId.",
                                      "payUrl": ""}, providers.MOMO_CREATE_ANSWER_KEYS)  # fmt: skip
        url = page_url(_origin(request, self.page_base), order_id, "MOMO", amount)
        return self._momo_answer({"requestId": body.get("requestId"), "orderId": order_id, "amount": amount,
                                  "resultCode": 0, "message": "Successful.", "payUrl": url, "deeplink": "",
                                  "qrCodeUrl": ""}, providers.MOMO_CREATE_ANSWER_KEYS)  # fmt: skip

    def _momo_refund_trans(self, transaction_id: str) -> list[dict[str, Any]]:
        codes = {"done": 0, "pending": 7000, "failed": 1080}
        return [{"orderId": r["refund_id"], "amount": r["amount"], "resultCode": codes.get(r["state"], 99),
                 "transId": int(r["provider_ref"]) if r.get("provider_ref") else 0,
                 "createdTime": int(r.get("created_at", 0) * 1000)}
                for r in self.state.refunds() if r.get("transaction_id") == transaction_id]  # fmt: skip

    async def momo_query(self, request: Request) -> Response:
        body = self._momo_verified(await _body(request), providers.MOMO_QUERY_KEYS)
        order_id = _ref(body, "orderId", self._momo_bad)
        record = self.state.payment(order_id)
        answer: dict[str, Any] = {"requestId": body.get("requestId"), "orderId": order_id, "extraData": "",
                                  "payType": "", "transId": 0, "amount": 0, "refundTrans": []}  # fmt: skip
        if record is None or record.get("method") not in (None, "MOMO"):
            answer.update(resultCode=providers.MOMO_NOT_FOUND, message="Invalid orderId or orderId is not found.")
        else:
            answer["amount"] = record.get("amount") or 0
            state = record["state"]
            if state == "paid":
                self._complete_pending_refunds(order_id)
                answer.update(resultCode=0, message="Successful.", payType="qr",
                              transId=int(record["provider_txn_id"]),
                              refundTrans=self._momo_refund_trans(order_id))  # fmt: skip
            elif state == "failed":
                answer.update(resultCode=1006, message="Transaction denied by user.")
            else:
                answer.update(resultCode=1000, message="Transaction initiated, waiting for user confirmation.")
        return self._momo_answer(answer, providers.MOMO_QUERY_ANSWER_KEYS)

    def _complete_pending_refunds(self, transaction_id: str) -> None:
        """A refund answered "pending" is done by the time anyone asks again."""
        for r in self.state.refunds():
            if r.get("transaction_id") == transaction_id and r.get("state") == "pending":
                self.state.record_refund(r["key"], {**r, "state": "done"})

    def _new_refund(self, key: str, *, refund_id: str, method: str, payment: dict[str, Any], amount: int,
                    control: dict[str, Any] | None) -> dict[str, Any]:  # fmt: skip
        outcome = (control or {}).get("outcome")
        state = {"fail": "failed", "pending": "pending"}.get(str(outcome), "done")
        return self.state.record_refund(key, {
            "key": key, "refund_id": refund_id, "method": method, "transaction_id": payment["transaction_id"],
            "provider_txn_id": payment.get("provider_txn_id"), "amount": amount, "state": state,
            "provider_ref": _numeric_txn() if state != "failed" else None, "created_at": time.time(),
        })  # fmt: skip

    def _refundable(self, payment: dict[str, Any] | None, amount: int) -> str | None:
        """Why this payment cannot give `amount` back (None: it can)."""
        if payment is None or payment.get("state") != "paid":
            return "no such paid transaction"
        given = sum(r["amount"] for r in self.state.refunds()
                    if r.get("transaction_id") == payment["transaction_id"] and r.get("state") != "failed")  # fmt: skip
        if given + amount > int(payment.get("amount") or 0):
            return "the refund exceeds what was paid"
        return None

    async def momo_refund(self, request: Request) -> Response:
        body = self._momo_verified(await _body(request), providers.MOMO_REFUND_KEYS)
        refund_id = _ref(body, "orderId", self._momo_bad)
        trans_id = _ref(body, "transId", self._momo_bad)
        amount = _amount(body, self._momo_bad)
        base = {"requestId": body.get("requestId"), "orderId": refund_id, "amount": amount, "transId": 0}
        key = f"momo-{refund_id}"
        if self.state.refund(key) is not None or self.state.payment(refund_id) is not None:
            return self._momo_answer({**base, "resultCode": providers.MOMO_DUPLICATE_ORDER,
                                      "message": "Duplicated orderId."}, providers.MOMO_REFUND_ANSWER_KEYS)  # fmt: skip
        payment = self.state.by_provider_txn(trans_id)
        why = self._refundable(payment, amount)
        if why is not None or payment is None:
            return self._momo_answer({**base, "resultCode": 1080, "message": f"Refund failed: {why}."},
                                     providers.MOMO_REFUND_ANSWER_KEYS)  # fmt: skip
        control = await self._late()
        record = self._new_refund(key, refund_id=refund_id, method="MOMO", payment=payment, amount=amount,
                                  control=control)  # fmt: skip
        code, message = {"done": (0, "Successful."), "pending": (7000, "Transaction is being processed."),
                         "failed": (1080, "Refund failed.")}[record["state"]]  # fmt: skip
        answer = {**base, "resultCode": code, "message": message, "transId": int(record["provider_ref"] or 0)}
        return self._momo_answer(answer, providers.MOMO_REFUND_ANSWER_KEYS)

    # -- ZaloPay
    @staticmethod
    def _zp_bad(message: str, sub: int = -2) -> Response:
        return JSONResponse({"return_code": 2, "return_message": "Giao dịch thất bại", "sub_return_code": sub,
                             "sub_return_message": message}, 400)  # fmt: skip

    def _zp_body(self, raw: bytes, request: Request) -> dict[str, Any]:
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind == "application/x-www-form-urlencoded":
            from urllib.parse import parse_qsl

            try:
                pairs = parse_qsl(raw.decode(), strict_parsing=False)
            except UnicodeDecodeError:
                raise Refused(self._zp_bad("the body is not UTF-8")) from None
            body: dict[str, Any] = dict(pairs)
            for name in ("amount", "app_time", "timestamp"):
                if isinstance(body.get(name), str) and body[name].isascii() and body[name].isdigit():
                    body[name] = int(body[name])
            return body
        return _json_object(raw, self._zp_bad)

    def _zp_check(self, body: dict[str, Any], *parts: Any) -> None:
        if not self.cfg.zalopay_key1 or str(body.get("app_id")) != self.cfg.zalopay_app_id:
            raise Refused(self._zp_bad("app_id is not valid", sub=-401))
        if not signature_matches(providers.zalopay_mac(self.cfg.zalopay_key1, *parts), body.get("mac")):
            answer = {"return_code": 2, "return_message": "Giao dịch thất bại", "sub_return_code": -402,
                      "sub_return_message": "mac is not valid"}  # fmt: skip
            raise Refused(JSONResponse(answer, 401))

    async def zalopay_create(self, request: Request) -> Response:
        body = self._zp_body(await _body(request), request)
        app_trans_id = _ref(body, "app_trans_id", self._zp_bad)
        amount = _amount(body, self._zp_bad)
        for name in ("app_user", "embed_data", "item"):
            _field(body, name, str, self._zp_bad)
        _field(body, "app_time", int, self._zp_bad)
        self._zp_check(body, body.get("app_id"), app_trans_id, body["app_user"], amount, body["app_time"],
                       body["embed_data"], body["item"])  # fmt: skip
        if not re.fullmatch(r"\d{6}_.+", app_trans_id):
            return self._zp_bad("app_trans_id must start with yymmdd_", sub=-53)
        record = self.state.created(app_trans_id, "ZALOPAY", amount)
        if record.get("amount") != amount or record.get("method") != "ZALOPAY":
            return JSONResponse({"return_code": 2, "return_message": "Giao dịch thất bại", "sub_return_code": -68,
                                 "sub_return_message": "Duplicate app_trans_id"})  # fmt: skip
        token = secrets.token_hex(12)
        return JSONResponse({
            "return_code": 1, "return_message": "Giao dịch thành công", "sub_return_code": 1,
            "sub_return_message": "Giao dịch thành công",
            "order_url": page_url(_origin(request, self.page_base), app_trans_id, "ZALOPAY", amount),
            "zp_trans_token": token, "order_token": token, "qr_code": "",
        })  # fmt: skip

    async def zalopay_query(self, request: Request) -> Response:
        body = self._zp_body(await _body(request), request)
        app_trans_id = _ref(body, "app_trans_id", self._zp_bad)
        self._zp_check(body, body.get("app_id"), app_trans_id, self.cfg.zalopay_key1)
        record = self.state.payment(app_trans_id)
        if record is None or record.get("method") not in (None, "ZALOPAY"):
            return JSONResponse({"return_code": 2, "return_message": "Giao dịch thất bại",
                                 "sub_return_code": providers.ZALOPAY_NOT_FOUND,
                                 "sub_return_message": "Không tìm thấy giao dịch", "is_processing": False,
                                 "amount": 0, "zp_trans_id": 0})  # fmt: skip
        state = record["state"]
        answer: dict[str, Any] = {"amount": record.get("amount") or 0, "discount_amount": 0, "is_processing": False,
                                  "server_time": int(time.time() * 1000), "zp_trans_id": 0}  # fmt: skip
        if state == "paid":
            self._complete_pending_refunds(app_trans_id)
            answer.update(return_code=1, return_message="Giao dịch thành công", sub_return_code=1,
                          sub_return_message="", zp_trans_id=int(record["provider_txn_id"]))  # fmt: skip
        elif state == "failed":
            answer.update(return_code=2, return_message="Giao dịch thất bại", sub_return_code=-101,
                          sub_return_message="User cancelled")  # fmt: skip
        else:
            answer.update(return_code=3, return_message="Giao dịch chưa được thực hiện", sub_return_code=-54,
                          sub_return_message="Giao dịch chưa thực hiện")  # fmt: skip
        return JSONResponse(answer)

    def _zp_refund_answer(self, record: dict[str, Any]) -> Response:
        code = {"done": 1, "failed": 2, "pending": 3}[record["state"]]
        return JSONResponse({"return_code": code, "return_message": record["state"], "sub_return_code": code,
                             "sub_return_message": record.get("error") or "",
                             "refund_id": int(record["provider_ref"] or 0)})  # fmt: skip

    async def zalopay_refund(self, request: Request) -> Response:
        body = self._zp_body(await _body(request), request)
        m_refund_id = _ref(body, "m_refund_id", self._zp_bad)
        zp_trans_id = _ref(body, "zp_trans_id", self._zp_bad)
        amount = _amount(body, self._zp_bad)
        description = _field(body, "description", str, self._zp_bad)
        timestamp = _field(body, "timestamp", int, self._zp_bad)
        self._zp_check(body, body.get("app_id"), zp_trans_id, amount, description, timestamp)
        if not re.fullmatch(rf"\d{{6}}_{re.escape(self.cfg.zalopay_app_id)}_[A-Za-z0-9]+", m_refund_id):
            return self._zp_bad("m_refund_id must be yymmdd_appid_xxx", sub=-53)
        key = f"zalopay-{m_refund_id}"
        earlier = self.state.refund(key)
        if earlier is not None and earlier["state"] != "failed":
            return self._zp_refund_answer(earlier)
        payment = self.state.by_provider_txn(zp_trans_id)
        why = self._refundable(payment, amount)
        if why is not None or payment is None:
            return JSONResponse({"return_code": 2, "return_message": "Giao dịch thất bại", "sub_return_code": -13,
                                 "sub_return_message": why})  # fmt: skip
        control = await self._late()
        record = self._new_refund(key, refund_id=m_refund_id, method="ZALOPAY", payment=payment, amount=amount,
                                  control=control)  # fmt: skip
        return self._zp_refund_answer(record)

    async def zalopay_query_refund(self, request: Request) -> Response:
        body = self._zp_body(await _body(request), request)
        m_refund_id = _ref(body, "m_refund_id", self._zp_bad)
        timestamp = _field(body, "timestamp", int, self._zp_bad)
        self._zp_check(body, body.get("app_id"), m_refund_id, timestamp)
        record = self.state.refund(f"zalopay-{m_refund_id}")
        if record is None:
            return JSONResponse({"return_code": 2, "return_message": "Giao dịch thất bại", "sub_return_code": -101,
                                 "sub_return_message": "Refund not found"})  # fmt: skip
        if record["state"] == "pending":
            record = self.state.record_refund(record["key"], {**record, "state": "done"})
        return self._zp_refund_answer(record)

    # -- bank and card: our JSON API
    def _bank_secret(self, method: str) -> str:
        return self.cfg.bank_secret if method == "BANKING" else self.cfg.card_secret

    def _bank_answer(self, method: str, payload: dict[str, Any], status: int = 200) -> Response:
        body, headers = providers.signed_json(payload, self._bank_secret(method))
        return Response(body, status, headers=headers)

    def _bank_verified(self, method: str, raw: bytes, request: Request) -> dict[str, Any]:
        secret = self._bank_secret(method)
        header = request.headers.get(webhook.HEADER) or ""
        if not secret or not header.startswith(webhook.PREFIX) or not signature_matches(
            hmac_hex(secret, raw), header[len(webhook.PREFIX) :]
        ):  # fmt: skip
            raise Refused(JSONResponse({"error": "invalid_signature"}, 401))
        return _json_object(raw, lambda m: JSONResponse({"error": "validation_failed", "message": m}, 400))

    @staticmethod
    def _bank_bad(message: str) -> Response:
        return JSONResponse({"error": "validation_failed", "message": message}, 400)

    async def bank_create(self, request: Request, method: str) -> Response:
        body = self._bank_verified(method, await _body(request), request)
        transaction_id = _ref(body, "transaction_id", self._bank_bad)
        amount = _amount(body, self._bank_bad)
        record = self.state.created(transaction_id, method, amount)
        if record.get("amount") != amount or record.get("method") != method:
            return self._bank_bad("transaction_id already used for another payment")
        url = page_url(_origin(request, self.page_base), transaction_id, method, amount)
        return self._bank_answer(method, {"transaction_id": transaction_id, "status": "PENDING", "pay_url": url}, 201)

    async def bank_query(self, request: Request, method: str) -> Response:
        body = self._bank_verified(method, await _body(request), request)
        transaction_id = _ref(body, "transaction_id", self._bank_bad)
        record = self.state.payment(transaction_id)
        if record is None or record.get("method") not in (None, method):
            return self._bank_answer(method, {"error": "not_found", "transaction_id": transaction_id}, 404)
        if record["state"] == "paid":
            self._complete_pending_refunds(transaction_id)
        status = {"paid": "SUCCESS", "failed": "FAILED"}.get(record["state"], "PENDING")
        return self._bank_answer(method, {"transaction_id": transaction_id, "status": status,
                                          "amount": record.get("amount"),
                                          "provider_txn_id": record.get("provider_txn_id")})  # fmt: skip

    async def bank_refund(self, request: Request, method: str) -> Response:
        body = self._bank_verified(method, await _body(request), request)
        refund_id = _ref(body, "refund_id", self._bank_bad)
        transaction_id = _ref(body, "transaction_id", self._bank_bad)
        amount = _amount(body, self._bank_bad)
        key = f"{method.lower()}-{refund_id}"
        record = self.state.refund(key)
        if record is None:
            payment = self.state.payment(transaction_id)
            why = self._refundable(payment, amount)
            if why is not None or payment is None:
                return self._bank_answer(method, {"refund_id": refund_id, "status": "FAILED", "provider_ref": None,
                                                  "error": why})  # fmt: skip
            control = await self._late()
            record = self._new_refund(key, refund_id=refund_id, method=method, payment=payment, amount=amount,
                                      control=control)  # fmt: skip
        elif record["state"] == "pending":
            record = self.state.record_refund(key, {**record, "state": "done"})
        status = {"done": "DONE", "failed": "FAILED", "pending": "PENDING"}[record["state"]]
        error = "refused by the sandbox" if status == "FAILED" else None
        answer = {"refund_id": refund_id, "status": status, "provider_ref": record.get("provider_ref"), "error": error}
        return self._bank_answer(method, answer)


def _handler(call: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
    async def handle(request: Request) -> Response:
        try:
            return await call(request)
        except Refused as refused:
            return refused.response
        except BadKey as exc:
            return JSONResponse({"error": "validation_failed", "message": str(exc)}, 400)

    return handle


def app(state_dir: str | os.PathLike[str], config: ProviderConfig | None = None, *,
        page_base_url: str | None = None) -> Starlette:  # fmt: skip
    """The stub providers as an ASGI app. Credentials: `config`'s, else the environment's
    (ProviderConfig.from_env(os.environ): the same variables as the gateway and the worker).
    `page_base_url`: where the sandbox page lives (default: the request's own origin)."""
    stub = Stub(StubState(state_dir), config or ProviderConfig.from_env(os.environ), page_base_url)
    routes = [
        Route("/momo" + providers.MOMO_CREATE_PATH, _handler(stub.momo_create), methods=["POST"]),
        Route("/momo" + providers.MOMO_QUERY_PATH, _handler(stub.momo_query), methods=["POST"]),
        Route("/momo" + providers.MOMO_REFUND_PATH, _handler(stub.momo_refund), methods=["POST"]),
        Route("/zalopay" + providers.ZALOPAY_CREATE_PATH, _handler(stub.zalopay_create), methods=["POST"]),
        Route("/zalopay" + providers.ZALOPAY_QUERY_PATH, _handler(stub.zalopay_query), methods=["POST"]),
        Route("/zalopay" + providers.ZALOPAY_REFUND_PATH, _handler(stub.zalopay_refund), methods=["POST"]),
        Route("/zalopay" + providers.ZALOPAY_QUERY_REFUND_PATH, _handler(stub.zalopay_query_refund), methods=["POST"]),
    ]
    for prefix, method in (("/bank", "BANKING"), ("/card", "CARD")):
        for path, call in ((providers.BANK_CREATE_PATH, stub.bank_create), (providers.BANK_QUERY_PATH, stub.bank_query),
                           (providers.BANK_REFUND_PATH, stub.bank_refund)):  # fmt: skip
            routes.append(Route(prefix + path, _handler(_bind(call, method)), methods=["POST"]))
    stub_app = Starlette(routes=routes, exception_handlers={HTTPException: _http_error})
    stub_app.state.stub = stub
    return stub_app


async def _http_error(request: Request, exc: Exception) -> Response:
    """An unknown path or method, in the gateway's vocabulary (problem+json)."""
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:
        allowed = [m.strip() for m in (exc.headers or {}).get("Allow", "").split(",") if m.strip()]
        return method_not_allowed(request.method, allowed).response()
    return not_found("no such route").response()


def _bind(call: Callable[[Request, str], Awaitable[Response]], method: str) -> Callable[[Request], Awaitable[Response]]:
    async def bound(request: Request) -> Response:
        return await call(request, method)

    return bound
