"""The gateway: Starlette app built from the route table. Run: uvicorn --factory gateway.app:create_app"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from psycopg.types.json import Jsonb
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route, request_response
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway import metrics, netguard
from gateway.auth import Auth, Principal, new_refresh_token, refresh_hash
from gateway.cache import EventsCache, cache_key, listen_for_changes, sweep_forever
from gateway.config import Settings, settings_or_exit
from gateway.db import Database, ReadRouter, make_pool, make_read_pool
from gateway.errors import (
    ApiError,
    forbidden,
    internal_error,
    invalid_credentials,
    method_not_allowed,
    not_found,
    payload_too_large,
    rate_limited,
    unauthorized,
    url_not_allowed,
)
from gateway.logs import AccessLog, configure_logging, route_template
from gateway.models import Body, admission_token, clean_text, idempotency_key, parse_body, path_uuid
from gateway.onsale.join import JoinCoalescer
from gateway.onsale.reserve import Reserver
from gateway.openapi import openapi_document
from gateway.pages import Page, etag_matches, make_page, next_link, page_after, page_limit
from gateway.payments import callbacks as payment_callbacks
from gateway.payments import providers, sandbox, sandbox_api
from gateway.payments.common import whole_vnd
from gateway.ratelimit import RateLimiter, request_address
from gateway.revocations import listen_for_revocations, prune_forever
from gateway.routes import ADMIN, PATH_TEXT_LIMITS, PUBLIC, QUERY_TEXT_LIMITS, ROUTES, Endpoint
from gateway.shedding import GATE, Shedder
from gateway.waiting_room import WaitingRooms, listen_for_waiting_rooms

JSON = "application/json"
STARTUP_REVOCATIONS_WAIT = 2.0  # seconds start() waits for the deny-list (503 busy until it is loaded)
WEBHOOK_RESOLVE_WAIT = 2.0  # seconds POST /admin/webhooks waits for the URL's name to resolve
LOGOUT_NOTICE_WAIT = 1.0  # seconds logout waits to hear its own revocation back from PostgreSQL
EVENTS_MAX_AGE = 10  # seconds a client may reuse a page of GET /events (the gateway's own cache is dropped on change)

Handler = Callable[[Request], Awaitable[Response]]


class GatewayApp(Starlette):
    """Starlette with the access log outside everything, even the 500 handler: every response
    carries X-Request-ID and every request gets its access line."""

    def build_middleware_stack(self) -> ASGIApp:
        # The shedder outside the access log: a refusal must stay cheap (gateway/shedding.py; the
        # protocol of gateway/serving.py refuses earlier still, on the same per-process Gate).
        return Shedder(AccessLog(super().build_middleware_stack()))


class Gateway:
    """What the handlers share; lives on app.state.gateway for the app's lifetime."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.pool = make_pool(settings)
        self.db = Database(self.pool)
        # Catalogue reads (routes marked standby_ok): a read pool when GATEWAY_DATABASE_READ_URL is
        # set, else the primary's Database itself (no second pool, nothing in between).
        self.read_pool = make_read_pool(settings)
        self.read_router = (
            None if self.read_pool is None else ReadRouter(Database(self.read_pool), self.db, lambda: self.cache.fence)
        )
        self.reads: Database | ReadRouter = self.read_router or self.db
        self.auth = Auth(settings.jwt_secret.get_secret_value(), settings.token_ttl, settings.hash_concurrency)
        self.cache: EventsCache[Page] = EventsCache(settings.cache_ttl, settings.cache_max_entries)
        self.reserver = Reserver(
            self.db, settings.reserve_strategy, settings.reserve_coalesce, settings.reserve_batch_max
        )
        self.coalescer = self.reserver.coalescer
        self.joiner = JoinCoalescer(self.db, settings.join_batch_max)
        self.limiter = RateLimiter(self.db, settings.rate_limits, settings.rate_limit_batch_max)
        self.rooms = WaitingRooms()
        self.metrics = metrics.GatewayMetrics(self)
        self.tasks: list[asyncio.Task[None]] = []
        # The providers' APIs (gateway/payments/providers.py): checkout creates the payment there
        # in production provider mode. One client: its connections are reused.
        self.providers = providers.ProviderConfig.from_env(settings.provider_env())
        self.http = httpx.AsyncClient(follow_redirects=False, timeout=settings.payment_provider_timeout)

    async def start(self) -> None:
        # Do not wait for the database: the app starts and answers 503 busy until it is up.
        await self.pool.open(wait=False)
        if self.read_pool is not None:
            await self.read_pool.open(wait=False)
        url = self.settings.database_url.get_secret_value()
        self.tasks = [
            asyncio.create_task(listen_for_changes(self.cache, url, fence=self.read_pool is not None)),
            asyncio.create_task(sweep_forever(self.cache, self.settings.cache_sweep)),
            asyncio.create_task(
                listen_for_revocations(self.auth.revocations, self.settings.database_url.get_secret_value())
            ),
            asyncio.create_task(prune_forever(self.auth.revocations)),
            asyncio.create_task(listen_for_waiting_rooms(self.rooms, self.settings.database_url.get_secret_value())),
        ]
        self.metrics.start()
        await self.auth.revocations.first_load(STARTUP_REVOCATIONS_WAIT)

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.reserver.close()
        await self.joiner.close()
        await self.limiter.close()
        await self.pool.close()
        if self.read_pool is not None:
            await self.read_pool.close()
        await self.metrics.stop()
        await self.http.aclose()


# ------------------------------------------------------------------ request helpers


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise payload_too_large(limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise payload_too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


async def endpoint_body(gw: Gateway, request: Request, endpoint: Endpoint) -> Any:
    """The request body, checked against the model the route table names for this endpoint."""
    model: type[Body] | None = endpoint.body
    assert model is not None, endpoint.path
    return parse_body(model, await read_body(request, gw.settings.max_body_bytes))


def path_args(request: Request) -> dict[str, Any]:
    args: dict[str, Any] = {}
    for name, value in request.path_params.items():
        limit = PATH_TEXT_LIMITS.get(name)
        args[f"p_{name}"] = clean_text(name, value, limit) if limit else path_uuid(name, value)
    return args


def json_response(text: str | None, status: int, headers: dict[str, str] | None = None) -> Response:
    if status == 204:
        return Response(status_code=204)
    return Response(text if text is not None else "null", status_code=status, media_type=JSON, headers=headers)


def authenticate(gw: Gateway, request: Request, auth: str) -> Principal | None:
    if auth == PUBLIC:
        return None
    principal = gw.auth.principal(request.headers.get("authorization"))
    request.state.user_id = principal.user_id
    if auth == ADMIN and not principal.is_admin:
        raise forbidden()
    return principal


def page_response(request: Request, page: Page, status: int, headers: dict[str, str] | None = None) -> Response:
    headers = dict(headers or {})
    if page.next_cursor is not None:
        headers["Link"] = next_link(request, page.next_cursor)
    return json_response(page.body, status, headers)


# ------------------------------------------------------------------ special handlers


async def register(gw: Gateway, request: Request, endpoint: Endpoint, _: Principal | None) -> Response:
    body = await endpoint_body(gw, request, endpoint)
    password_hash = await gw.auth.hash(body.password)
    user = await gw.db.call(
        endpoint.function, {"p_email": body.email, "p_password_hash": password_hash, "p_full_name": body.full_name}
    )
    return json_response(user, endpoint.status)


async def login(gw: Gateway, request: Request, endpoint: Endpoint, _: Principal | None) -> Response:
    body = await endpoint_body(gw, request, endpoint)
    # With limits on, the lookup counts this attempt against the failed-login throttle first.
    found = await gw.db.call(endpoint.function, {"p_email": body.email, "p_count_attempt": gw.limiter.enabled})
    creds: dict[str, str] = json.loads(found) if found else {}
    throttled = gw.limiter.login_throttled(creds)  # before the password: the right one too
    if throttled and gw.limiter.enabled:
        raise rate_limited(throttled, "too many failed logins for this e-mail address; retry later")
    if not await gw.auth.verify(creds.get("password_hash"), body.password):
        raise invalid_credentials()
    await gw.limiter.login_succeeded(body.email)  # a success counts nothing
    request.state.user_id = creds["id"]
    return await start_session(gw, creds["id"])


async def start_session(gw: Gateway, user_id: str) -> Response:
    """After the password check: a session, its first refresh token, an access token."""
    refresh_token = new_refresh_token()
    args = {
        "p_user_id": user_id,
        "p_refresh_hash": refresh_hash(refresh_token),
        "p_session_ttl_seconds": gw.settings.session_ttl,
        "p_refresh_ttl_seconds": gw.settings.refresh_ttl,
    }
    session = json.loads(await gw.db.call("create_session", args) or "{}")
    return token_pair(gw, session, refresh_token)


def token_pair(gw: Gateway, session: dict[str, str], refresh_token: str) -> Response:
    token = gw.auth.issue(session["user_id"], session["role"], session["session_id"])
    return JSONResponse(
        {"access_token": token, "token_type": "bearer", "expires_in": gw.auth.ttl, "refresh_token": refresh_token}
    )


async def refresh(gw: Gateway, request: Request, endpoint: Endpoint, _: Principal | None) -> Response:
    body = await endpoint_body(gw, request, endpoint)
    presented = refresh_hash(body.refresh_token)
    if presented is None:
        raise unauthorized("unknown refresh token")  # as the database says it (BKUNA)
    refresh_token = new_refresh_token()
    args = {
        "p_refresh_hash": presented,
        "p_new_refresh_hash": refresh_hash(refresh_token),
        "p_refresh_ttl_seconds": gw.settings.refresh_ttl,
        "p_grace_seconds": gw.settings.refresh_grace,
    }
    session = json.loads(await gw.db.call(endpoint.function, args) or "{}")
    request.state.user_id = session.get("user_id")
    if session.get("outcome") == "reused":
        gw.auth.revocations.revoke(session["session_id"])  # this process at once; the others by NOTIFY
        raise unauthorized("the refresh token was used before: the session is revoked")
    return token_pair(gw, session, refresh_token)


async def logout(gw: Gateway, request: Request, endpoint: Endpoint, principal: Principal | None) -> Response:
    assert principal is not None
    revocations = gw.auth.revocations
    notice = revocations.expect(principal.session_id)
    try:
        await gw.db.call(endpoint.function, {"p_user_id": principal.user_id, "p_session_id": principal.session_id})
        revocations.revoke(principal.session_id)
        # PostgreSQL sends a NOTIFY to every listener at once: once ours has it, every gateway's
        # listener has been sent it too (bounded wait; docs/DESIGN-NOTES.md, "Sessions").
        if not await revocations.heard(notice, LOGOUT_NOTICE_WAIT):
            logging.getLogger("gateway").warning("logout: the revocation notice did not come back in time")
    finally:
        revocations.done(principal.session_id, notice)
    return Response(status_code=204)


async def events(gw: Gateway, request: Request, endpoint: Endpoint, _: Principal | None) -> Response:
    query = request.query_params.get("q")
    if query is not None:
        clean_text("q", query, QUERY_TEXT_LIMITS["q"], min_length=0)
    limit, after = page_limit(request), page_after(request)
    normalised = cache_key(query)
    key = f"{normalised}\x00{limit}\x00{request.query_params.get('cursor', '')}"

    async def load() -> Page:
        args: dict[str, Any] = {"p_query": normalised or None, "p_limit": limit + 1}
        if after is not None:
            args["p_after_start_time"], args["p_after_id"] = after
        return make_page(await gw.reads.call(endpoint.function, args), limit, "start_time")

    page = await gw.cache.get(key, load)
    headers = {"ETag": page.etag, "Cache-Control": f"public, max-age={min(EVENTS_MAX_AGE, int(gw.settings.cache_ttl))}"}
    if page.next_cursor is not None:
        headers["Link"] = next_link(request, page.next_cursor)
    if etag_matches(request, page.etag):
        return Response(status_code=304, headers=headers)
    return json_response(page.body, endpoint.status, headers)


async def catalogue_read(gw: Gateway, request: Request, endpoint: Endpoint, _: Principal | None) -> Response:
    """A public catalogue read (routes marked standby_ok): through the read pool when there is one."""
    return json_response(await gw.reads.call(endpoint.function, path_args(request)), endpoint.status)


async def my_bookings(gw: Gateway, request: Request, endpoint: Endpoint, principal: Principal | None) -> Response:
    assert principal is not None
    limit, after = page_limit(request), page_after(request)
    args: dict[str, Any] = {"p_user_id": principal.user_id, "p_limit": limit + 1}
    if after is not None:
        args["p_after_created_at"], args["p_after_id"] = after
    page = make_page(with_pay_urls(gw, request, await gw.db.call(endpoint.function, args)), limit, "created_at")
    return page_response(request, page, endpoint.status)


async def create_webhook(gw: Gateway, request: Request, endpoint: Endpoint, principal: Principal | None) -> Response:
    """POST /admin/webhooks: where the URL points is checked before it is stored (the worker checks
    again at every delivery: gateway/netguard.py). A name that does not resolve now is accepted."""
    assert principal is not None
    body = await endpoint_body(gw, request, endpoint)
    if not gw.settings.webhook_allow_private:
        try:
            await netguard.checked_addresses(netguard.Target.parse(body.url), False, WEBHOOK_RESOLVE_WAIT)
        except netguard.AddressRefused as exc:
            raise url_not_allowed(str(exc)) from None
        except OSError:
            pass  # unknown (or slow) name: nothing to refuse yet
    args = {"p_user_id": principal.user_id, "p_url": body.url, "p_events": body.events, "p_event_id": body.event_id}
    return json_response(await gw.db.call(endpoint.function, args), endpoint.status)


async def webhook_attempts(gw: Gateway, request: Request, endpoint: Endpoint, principal: Principal | None) -> Response:
    """GET /admin/webhooks/{webhook_id}/deliveries?limit=: the newest `limit` attempts. No cursor: the
    recent attempts are what an admin looks at; older ones stay in webhook_attempts for DBAs."""
    assert principal is not None
    args = {**path_args(request), "p_user_id": principal.user_id, "p_limit": page_limit(request)}
    return json_response(await gw.db.call(endpoint.function, args), endpoint.status)


async def client_gone(request: Request) -> None:
    """Returns when the client disconnects (the body has been read already)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def reserve(gw: Gateway, request: Request, endpoint: Endpoint, principal: Principal | None) -> Response:
    assert principal is not None
    key = idempotency_key(request.headers.get("idempotency-key"))
    admission = admission_token(request.headers.get("x-admission-token"))
    body = await endpoint_body(gw, request, endpoint)
    try:
        reservation = await gw.reserver.reserve(
            principal.user_id, body.ticket_type_id, body.quantity, lambda: client_gone(request), key, admission
        )
    except ApiError as exc:
        metrics.reserve_outcome(exc.code)
        raise
    if reservation is None:
        metrics.reserve_outcome("client_gone")
        return Response(status_code=499)  # nobody is listening; the status is for the log
    metrics.reserve_outcome("reserved")
    return json_response(reservation, endpoint.status)


async def join_queue(gw: Gateway, request: Request, endpoint: Endpoint, principal: Principal | None) -> Response:
    """POST /events/{event_id}/queue: the database places the fan (concurrent joins of one event
    share one call: gateway/onsale/join.py); this process remembers where."""
    assert principal is not None
    event_id = path_uuid("event_id", request.path_params["event_id"])
    generation = gw.rooms.generation
    place = await gw.joiner.join(event_id, principal.user_id)
    return json_response(gw.rooms.learn(event_id, principal.user_id, place, generation), endpoint.status)


async def queue_status(gw: Gateway, request: Request, endpoint: Endpoint, principal: Principal | None) -> Response:
    """GET /events/{event_id}/queue: from this process's mirror when it can answer (a waiting fan
    whose place it knows: gateway/waiting_room.py), else from the database. Only the latter counts
    against the rate limits: a rate-limit check is itself a database call, and an answer from memory
    costs about what a refusal would."""
    assert principal is not None
    event_id = path_uuid("event_id", request.path_params["event_id"])
    known = gw.rooms.answer(event_id, principal.user_id)
    if known is not None:
        return json_response(known, endpoint.status)
    await check_rate_limit(gw, request, endpoint, principal)
    generation = gw.rooms.generation
    place = await gw.db.call(endpoint.function, {"p_event_id": event_id, "p_user_id": principal.user_id})
    return json_response(gw.rooms.learn(event_id, principal.user_id, place, generation), endpoint.status)


async def checkout(gw: Gateway, request: Request, endpoint: Endpoint, principal: Principal | None) -> Response:
    """POST /bookings/checkout/{reservation_id}: the PENDING order, its payment given a pay_url."""
    assert principal is not None
    args = {**path_args(request), "p_user_id": principal.user_id}
    if (key := idempotency_key(request.headers.get("idempotency-key"))) is not None:
        args["p_idempotency_key"] = key
    body = await endpoint_body(gw, request, endpoint)
    args["p_payment_method"] = body.payment_method
    order = await gw.db.call(endpoint.function, args)  # committed: no transaction is open below
    if gw.settings.payment_mode == "provider" and not gw.settings.sandbox:
        order = await created_at_provider(gw, request, order, principal.user_id)
    elif gw.settings.sandbox:
        sandbox_created(gw, order)
    return json_response(with_pay_url(gw, request, order), endpoint.status)


async def created_at_provider(gw: Gateway, request: Request, order_json: str | None, user_id: str) -> str | None:
    """Production provider mode: a PENDING payment without a pay_url is created at its provider
    (after api.checkout committed, so no lock or transaction is held across the call) and the
    provider's pay_url stored (api.set_pay_url). The provider down, slow or answering nonsense:
    502 provider_unavailable, the order stays PENDING until its deadline, and a replayed checkout
    (same Idempotency-Key) asks again. A bank transfer without a page keeps pay_url null."""
    found = json.loads(order_json) if order_json else None
    payment = found.get("payment") if isinstance(found, dict) else None
    if not isinstance(payment, dict) or payment.get("status") != "PENDING" or payment.get("pay_url"):
        return order_json
    assert isinstance(found, dict)
    expires_in = int((datetime.fromisoformat(payment["expires_at"]) - datetime.now(UTC)).total_seconds())
    if expires_in <= 0 or not await still_pending(gw, user_id, found["id"]):
        # A replayed checkout of an order that timed out, was cancelled or paid meanwhile (its
        # stored first answer says PENDING): no new payment link for it.
        payment["pay_url"] = None
        return json.dumps(found, separators=(",", ":"))
    base = sandbox.base_url(gw.settings, request)
    method, transaction_id = payment["method"], payment["transaction_id"]
    try:
        url = await providers.create_payment(
            gw.http, gw.providers, method=method, transaction_id=transaction_id, amount=whole_vnd(payment["amount"]),
            description=f"Booking order {found['id']}", notify_url=base + payment_callbacks.PATH_OF[method],
            return_url=f"{base}/bookings/orders/{found['id']}", expires_in=expires_in,
        )  # fmt: skip
    except providers.ProviderError as exc:
        logging.getLogger("gateway.payments").warning(
            "payment provider unavailable: method=%s txn=%s reason=%s", method, transaction_id, exc
        )
        raise ApiError(  # the reason is logged, not told (a 5xx says nothing beyond its code)
            "provider_unavailable",
            f"the payment provider ({method}) did not create the payment; the order stays PENDING until "
            "payment.expires_at: repeat the checkout with the same Idempotency-Key to try again",
        ) from None
    if url is None:
        return order_json
    # NULL: the payment stopped being PENDING while the provider answered: no link to show.
    payment["pay_url"] = await gw.db.call("set_pay_url", {"p_transaction_id": transaction_id, "p_pay_url": url})
    return json.dumps(found, separators=(",", ":"))


async def still_pending(gw: Gateway, user_id: str, order_id: str) -> bool:
    """The order's status now (a replayed checkout answers the first, stored answer)."""
    current = json.loads(await gw.db.call("get_order", {"p_user_id": user_id, "p_order_id": order_id}) or "null")
    return isinstance(current, dict) and current.get("status") == "PENDING"


async def order(gw: Gateway, request: Request, endpoint: Endpoint, principal: Principal | None) -> Response:
    assert principal is not None
    found = await gw.db.call(endpoint.function, {**path_args(request), "p_user_id": principal.user_id})
    return json_response(with_pay_url(gw, request, found), endpoint.status)


def sandbox_created(gw: Gateway, order_json: str | None) -> None:
    """Development: the stub providers learn of the payment as a real one would from the create
    call (a local file, not a self-HTTP call), so their status API says pending, not unknown."""
    found = json.loads(order_json) if order_json else None
    payment = found.get("payment") if isinstance(found, dict) else None
    if isinstance(payment, dict) and payment.get("status") == "PENDING":
        state = sandbox_api.StubState(gw.settings.sandbox_dir)
        state.created(payment["transaction_id"], payment["method"], whole_vnd(payment["amount"]))


def with_pay_url(gw: Gateway, request: Request, order_json: str | None) -> str | None:
    """A PENDING payment's pay_url: in development the sandbox page (gateway/payments/sandbox.py,
    built here: no HTTP call on the checkout path); otherwise the provider's, as stored by
    created_at_provider (the order JSON carries it; null until the provider gave one)."""
    if not gw.settings.sandbox:
        return order_json
    found = json.loads(order_json) if order_json else None
    if not _sandbox_pay_url(gw, request, found):
        return order_json
    return json.dumps(found, separators=(",", ":"))


def with_pay_urls(gw: Gateway, request: Request, orders_json: str | None) -> str | None:
    """GET /bookings/my-bookings: each PENDING payment's pay_url, as GET /bookings/orders/{id}
    shows it (with the sandbox on it is built, not stored)."""
    if not gw.settings.sandbox or not orders_json:
        return orders_json
    orders = json.loads(orders_json)
    if not isinstance(orders, list) or not any([_sandbox_pay_url(gw, request, o) for o in orders]):
        return orders_json
    return json.dumps(orders, ensure_ascii=False, separators=(",", ":"))


def _sandbox_pay_url(gw: Gateway, request: Request, found: Any) -> bool:
    """Set the sandbox's pay_url on this order's PENDING payment; whether there was one."""
    payment = found.get("payment") if isinstance(found, dict) else None
    if not isinstance(payment, dict) or payment.get("status") != "PENDING":
        return False
    base = sandbox.base_url(gw.settings, request)
    payment["pay_url"] = sandbox.pay_url(base, payment["transaction_id"], payment["method"], payment["amount"])
    return True


SPECIAL: dict[str, Callable[[Gateway, Request, Endpoint, Principal | None], Awaitable[Response]]] = {
    "register": register,
    "login": login,
    "refresh": refresh,
    "logout": logout,
    "events": events,
    "my_bookings": my_bookings,
    "reserve": reserve,
    "join_queue": join_queue,
    "queue_status": queue_status,
    "create_webhook": create_webhook,
    "webhook_attempts": webhook_attempts,
    "checkout": checkout,
    "order": order,
}
# Specials that check the rate limits themselves (or not at all for some answers).
LIMITS_INSIDE = frozenset({"queue_status"})


async def check_rate_limit(gw: Gateway, request: Request, endpoint: Endpoint, principal: Principal | None) -> None:
    if gw.limiter.enabled:
        address = request_address(request, gw.settings.trusted_proxies)
        await gw.limiter.check(endpoint.rate_class, principal.user_id if principal else None, address)


# Marks an order paid with no provider: SQL refuses it in the database's provider mode (BKPRQ); a
# gateway in provider mode refuses it too, so a database left in instant mode by mistake (the
# migration's default) cannot hand out tickets unpaid behind a production gateway.
PAYS_INSTANTLY = "complete_booking"


def make_handler(endpoint: Endpoint) -> Handler:
    special = SPECIAL.get(endpoint.special or "")
    if endpoint.standby_ok and special is None:
        special = catalogue_read  # decided here, once: the generic path below has no branch for it
    pays_instantly = endpoint.function == PAYS_INSTANTLY

    async def handle(request: Request) -> Response:
        gw: Gateway = request.app.state.gateway
        principal = authenticate(gw, request, endpoint.auth)
        if endpoint.special not in LIMITS_INSIDE:
            await check_rate_limit(gw, request, endpoint, principal)
        if pays_instantly and gw.settings.payment_mode == "provider":
            raise ApiError("payment_required", "this gateway takes payments through a provider: use checkout")
        if special is not None:
            return await special(gw, request, endpoint, principal)
        args = path_args(request)
        if principal is not None and endpoint.passes_user:
            args["p_user_id"] = principal.user_id
        if endpoint.idempotent and (key := idempotency_key(request.headers.get("idempotency-key"))) is not None:
            args["p_idempotency_key"] = key
        if endpoint.body is not None:
            body = await endpoint_body(gw, request, endpoint)
            if endpoint.patch:
                args["p_changes"] = Jsonb(body.model_dump(mode="json", exclude_unset=True))
            else:
                args.update({f"p_{k}": v for k, v in body.model_dump().items()})
        result = await gw.db.call(endpoint.function, args)
        return json_response(result, endpoint.status)

    return handle


class PathHandlers:
    """One path's handlers by method (an ASGI app, so Starlette routes every method here); another
    method is 405 with `Allow` naming this path's methods."""

    def __init__(self, handlers: dict[str, Handler]) -> None:
        if "GET" in handlers:
            handlers = {**handlers, "HEAD": handlers["GET"]}
        self.handlers = handlers
        self.allowed = sorted(handlers)
        self.app = request_response(self.dispatch)

    async def dispatch(self, request: Request) -> Response:
        handler = self.handlers.get(request.method)
        if handler is None:
            raise method_not_allowed(request.method, self.allowed)
        return await handler(request)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


def make_routes(settings: Settings) -> list[BaseRoute]:
    paths: dict[str, dict[str, Handler]] = {}
    for e in ROUTES:
        paths.setdefault(e.path, {})[e.method] = make_handler(e)
    paths["/healthz"] = {"GET": healthz}
    paths["/readyz"] = {"GET": readyz}
    paths["/metrics"] = {"GET": metrics_page}
    paths["/openapi.json"] = {"GET": openapi}
    paths["/events/{event_id}/waiting-room"] = {"GET": waiting_room_page}
    paths.update(payment_callbacks.routes())  # providers' callbacks: gateway/payments/callbacks.py
    paths.update(sandbox.routes(settings))  # development only (BOOKING_ENV, PAYMENT_MODE=provider)
    routes: list[BaseRoute] = [Route(path, PathHandlers(handlers)) for path, handlers in paths.items()]
    if settings.sandbox:  # the providers' APIs, stubbed (gateway/payments/sandbox_api.py): development only
        stub = sandbox_api.app(settings.sandbox_dir, providers.ProviderConfig.from_env(settings.provider_env()),
                               page_base_url=settings.public_base_url)  # fmt: skip
        routes.append(Mount(providers.SANDBOX_API_PATH, app=stub))
    return routes


# ------------------------------------------------------------------ operations


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    gw: Gateway = request.app.state.gateway
    await gw.db.ping()
    return JSONResponse({"status": "ready"})


async def metrics_page(request: Request) -> Response:
    """GET /metrics: the Prometheus text format (gateway/metrics.py). No personal data: open,
    unless METRICS_TOKEN is set, then `Authorization: Bearer <METRICS_TOKEN>`. Never shed, never
    rate limited (like the probes): a scrape must see an overload."""
    gw: Gateway = request.app.state.gateway
    token = gw.settings.metrics_token
    if token is not None:
        scheme, _, presented = request.headers.get("authorization", "").partition(" ")
        expected = token.get_secret_value().encode()
        if scheme.lower() != "bearer" or not hmac.compare_digest(presented.strip().encode(), expected):
            raise unauthorized("GET /metrics needs the bearer token METRICS_TOKEN")
    return Response(gw.metrics.scrape(), media_type=metrics.CONTENT_TYPE)


# ------------------------------------------------------------------ the waiting room's page

WAITING_ROOM_PAGE = (Path(__file__).parent / "static" / "waiting-room.html").read_bytes()


def _inline_hashes(tag: str) -> str:
    blocks = re.findall(rf"<{tag}>(.*?)</{tag}>".encode(), WAITING_ROOM_PAGE, re.DOTALL)
    return " ".join(f"'sha256-{base64.b64encode(hashlib.sha256(b).digest()).decode()}'" for b in blocks)


# Only the page's own inline script and style run (by hash), it talks only to this origin, and
# nothing may frame it, submit its form elsewhere or load anything else.
WAITING_ROOM_HEADERS = {
    "Content-Security-Policy": (
        f"default-src 'none'; script-src {_inline_hashes('script')}; style-src {_inline_hashes('style')}; "
        "connect-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "public, max-age=300",
}


async def waiting_room_page(request: Request) -> Response:
    """The same static page for every well-formed event id, without a database call (it is served to
    the whole crowd at once); the page itself says so when the event has no room (its join is 404)."""
    path_uuid("event_id", request.path_params["event_id"])
    return Response(WAITING_ROOM_PAGE, media_type="text/html; charset=utf-8", headers=WAITING_ROOM_HEADERS)


async def openapi(request: Request) -> Response:
    return JSONResponse(request.app.state.openapi)


# ------------------------------------------------------------------ errors and logging


async def api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return exc.response()


async def http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own answers (an unknown path, mostly), in the API's vocabulary."""
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        return not_found("no such route").response()
    if exc.status_code == 405:
        allowed = (exc.headers or {}).get("Allow", "")
        return method_not_allowed(request.method, [m.strip() for m in allowed.split(",") if m.strip()]).response()
    if exc.status_code < 500:
        return ApiError("validation_failed", str(exc.detail)).response()
    return internal_error().response()


async def unexpected_error(request: Request, exc: Exception) -> Response:
    # The route template, not the path: a path can hold a ticket code.
    route = route_template(request.scope) or "-"
    logging.getLogger("gateway").error("unhandled error on %s %s", request.method, route, exc_info=exc)
    return internal_error().response()


# ------------------------------------------------------------------ the app


def create_app(settings: Settings | None = None) -> Starlette:
    configure_logging()
    settings = settings or settings_or_exit()
    gateway = Gateway(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await gateway.start()
        try:
            yield
        finally:
            await gateway.stop()

    app = GatewayApp(
        routes=make_routes(settings),
        lifespan=lifespan,
        exception_handlers={ApiError: api_error, HTTPException: http_error, Exception: unexpected_error},
    )
    GATE.configure(
        settings.max_in_flight, settings.shed_loop_lag_ms, settings.shed_target_ms, settings.shed_pause_ms
    )  # one app per process
    # A request waiting for a primary connection longer than SHED_TARGET_MS is a standing queue.
    GATE.queues = [gateway.db.turnstile.oldest_wait]
    app.state.gateway = gateway
    app.state.openapi = openapi_document(settings)
    return app
