"""The gateway: Starlette app built from the route table. Run: uvicorn --factory gateway.app:create_app"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from psycopg.types.json import Jsonb
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from gateway.auth import Auth, Principal
from gateway.cache import EventsCache, cache_key, listen_for_changes, sweep_forever
from gateway.coalesce import ReserveCoalescer
from gateway.config import Settings, settings_or_exit
from gateway.db import Database, make_pool
from gateway.errors import ApiError
from gateway.logs import AccessLog, configure_logging, route_template
from gateway.models import LoginIn, RegisterIn, ReserveIn, parse_body, path_text, path_uuid
from gateway.openapi import openapi_document
from gateway.routes import ADMIN, PATH_TEXT_LIMITS, PUBLIC, ROUTES, Endpoint

JSON = "application/json"


class GatewayApp(Starlette):
    """Starlette with the access log outside everything, even the 500 handler: every response
    carries X-Request-ID and every request gets its access line."""

    def build_middleware_stack(self) -> ASGIApp:
        return AccessLog(super().build_middleware_stack())


class Gateway:
    """What the handlers share; lives on app.state.gateway for the app's lifetime."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.pool = make_pool(settings)
        self.db = Database(self.pool)
        self.auth = Auth(settings.jwt_secret.get_secret_value(), settings.token_ttl, settings.hash_concurrency)
        self.cache = EventsCache(settings.cache_ttl, settings.cache_max_entries)
        self.coalescer = ReserveCoalescer(self.db, settings.reserve_batch_max)
        self.tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        # Do not wait for the database: the app starts and answers 503 busy until it is up.
        await self.pool.open(wait=False)
        self.tasks = [
            asyncio.create_task(listen_for_changes(self.cache, self.settings.database_url.get_secret_value())),
            asyncio.create_task(sweep_forever(self.cache, self.settings.cache_sweep)),
        ]

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.coalescer.close()
        await self.pool.close()


# ------------------------------------------------------------------ request helpers


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "payload_too_large", f"the body must be at most {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "payload_too_large", f"the body must be at most {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def path_args(request: Request) -> dict[str, Any]:
    args: dict[str, Any] = {}
    for name, value in request.path_params.items():
        limit = PATH_TEXT_LIMITS.get(name)
        args[f"p_{name}"] = path_text(name, value, limit) if limit else path_uuid(name, value)
    return args


def json_response(text: str | None, status: int) -> Response:
    if status == 204:
        return Response(status_code=204)
    return Response(text if text is not None else "null", status_code=status, media_type=JSON)


def authenticate(gw: Gateway, request: Request, auth: str) -> Principal | None:
    if auth == PUBLIC:
        return None
    principal = gw.auth.principal(request.headers.get("authorization"))
    request.state.user_id = principal.user_id
    if auth == ADMIN and not principal.is_admin:
        raise ApiError(403, "forbidden", "this needs the admin role")
    return principal


# ------------------------------------------------------------------ special handlers


async def register(gw: Gateway, request: Request, endpoint: Endpoint, _: Principal | None) -> Response:
    body = parse_body(RegisterIn, await read_body(request, gw.settings.max_body_bytes))
    password_hash = await gw.auth.hash(body.password)
    user = await gw.db.call(
        endpoint.function, {"p_email": body.email, "p_password_hash": password_hash, "p_full_name": body.full_name}
    )
    return json_response(user, endpoint.status)


async def login(gw: Gateway, request: Request, endpoint: Endpoint, _: Principal | None) -> Response:
    body = parse_body(LoginIn, await read_body(request, gw.settings.max_body_bytes))
    found = await gw.db.call(endpoint.function, {"p_email": body.email})
    creds: dict[str, str] = json.loads(found) if found else {}
    if not await gw.auth.verify(creds.get("password_hash"), body.password):
        raise ApiError(401, "invalid_credentials", "wrong e-mail or password")
    request.state.user_id = creds["id"]
    token = gw.auth.issue(creds["id"], creds["role"])
    return JSONResponse({"access_token": token, "token_type": "bearer", "expires_in": gw.auth.ttl})


async def events(gw: Gateway, request: Request, endpoint: Endpoint, _: Principal | None) -> Response:
    query = request.query_params.get("q")
    if query is not None and len(query) > 200:
        raise ApiError(422, "validation_failed", "q: must be at most 200 characters")
    key = cache_key(query)

    async def load() -> str:
        return await gw.db.call(endpoint.function, {"p_query": key or None}) or "[]"

    return json_response(await gw.cache.get(key, load), endpoint.status)


async def client_gone(request: Request) -> None:
    """Returns when the client disconnects (the body has been read already)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def reserve(gw: Gateway, request: Request, endpoint: Endpoint, principal: Principal | None) -> Response:
    assert principal is not None
    body = parse_body(ReserveIn, await read_body(request, gw.settings.max_body_bytes))
    if not gw.settings.coalescing:
        args = {"p_user_id": principal.user_id, "p_ticket_type_id": body.ticket_type_id, "p_quantity": body.quantity}
        return json_response(await gw.db.call(gw.settings.reserve_function, args), endpoint.status)
    granted = gw.coalescer.submit(principal.user_id, str(body.ticket_type_id), body.quantity)
    # If the client leaves first, cancel: the coalescer then drops the request, or releases its hold.
    gone = asyncio.ensure_future(client_gone(request))
    gone.add_done_callback(lambda _: granted.cancel())
    try:
        reservation = await granted
    except asyncio.CancelledError:
        if gone.done() and not gone.cancelled():
            return Response(status_code=499)  # nobody is listening; the status is for the log
        raise
    finally:
        gone.cancel()
    return json_response(reservation, endpoint.status)


SPECIAL: dict[str, Callable[[Gateway, Request, Endpoint, Principal | None], Awaitable[Response]]] = {
    "register": register,
    "login": login,
    "events": events,
    "reserve": reserve,
}


def make_handler(endpoint: Endpoint) -> Callable[[Request], Awaitable[Response]]:
    special = SPECIAL.get(endpoint.special or "")

    async def handle(request: Request) -> Response:
        gw: Gateway = request.app.state.gateway
        principal = authenticate(gw, request, endpoint.auth)
        if special is not None:
            return await special(gw, request, endpoint, principal)
        args = path_args(request)
        if principal is not None and endpoint.passes_user:
            args["p_user_id"] = principal.user_id
        if endpoint.body is not None:
            body = parse_body(endpoint.body, await read_body(request, gw.settings.max_body_bytes))
            if endpoint.patch:
                args["p_changes"] = Jsonb(body.model_dump(mode="json", exclude_unset=True))
            else:
                args.update({f"p_{k}": v for k, v in body.model_dump().items()})
        result = await gw.db.call(endpoint.function, args)
        return json_response(result, endpoint.status)

    return handle


# ------------------------------------------------------------------ operations


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    gw: Gateway = request.app.state.gateway
    await gw.db.ping()
    return JSONResponse({"status": "ready"})


async def openapi(request: Request) -> Response:
    return JSONResponse(request.app.state.openapi)


# ------------------------------------------------------------------ errors and logging


async def api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return exc.response()


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    codes = {404: "not_found", 405: "method_not_allowed"}
    code = codes.get(exc.status_code, "validation_failed" if exc.status_code < 500 else "internal_error")
    return ApiError(exc.status_code, code, str(exc.detail)).response()


async def unexpected_error(request: Request, exc: Exception) -> Response:
    # The route template, not the path: a path can hold a ticket code.
    route = route_template(request.scope) or "-"
    logging.getLogger("gateway").error("unhandled error on %s %s", request.method, route, exc_info=exc)
    return ApiError(500, "internal_error", "internal error").response()


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

    routes = [Route(e.path, make_handler(e), methods=[e.method]) for e in ROUTES]
    routes += [Route("/healthz", healthz), Route("/readyz", readyz), Route("/openapi.json", openapi)]
    app = GatewayApp(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={ApiError: api_error, HTTPException: http_error, Exception: unexpected_error},
    )
    app.state.gateway = gateway
    app.state.openapi = openapi_document(settings)
    return app
