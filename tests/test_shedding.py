"""Load shedding (issue 10, gateway/shedding.py) on a real uvicorn server and real PostgreSQL: with
MAX_IN_FLIGHT=4, four reserves are held in flight (a row lock on their ticket type), the excess is
answered 503 busy with Retry-After while those four still wait, the probes stay answerable, and the
four admitted reserves succeed once the lock goes."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import psycopg

from gateway.app import create_app
from gateway.config import Settings
from gateway.shedding import Shedder
from tests.conftest import url_for
from tests.factories import make_ticket_type, make_user
from tests.http import forged, settings_for
from tests.live import LiveServer

BOUND = 4
EXCESS = 8


def test_excess_requests_are_shed_at_once_and_admitted_ones_succeed(dbname: str, gw: psycopg.Connection) -> None:
    tt = make_ticket_type(gw, quantity=100)
    users = [make_user(gw) for _ in range(BOUND + EXCESS)]
    # One reserve per database call, and time to wait for the lock without a 503 of the database's.
    settings = settings_for(dbname, max_in_flight=BOUND, reserve_coalesce=False, pool_max=BOUND + 2,
                            database_url=url_for(dbname, "booking_gateway", lock_timeout="60s",
                                                 statement_timeout="60s"))  # fmt: skip
    app = create_app(settings)
    blocker = psycopg.connect(url_for(dbname))
    blocker.execute("SELECT 1 FROM ticket_types WHERE id = %s FOR UPDATE", (tt["id"],))
    with LiveServer(app) as server:

        async def scenario() -> tuple[list[httpx.Response], list[tuple[int, str, float]], list[int]]:
            limits = httpx.Limits(max_connections=50)
            async with httpx.AsyncClient(base_url=server.url, limits=limits, timeout=60) as client:

                async def reserve(user: dict[str, Any]) -> httpx.Response:
                    return await client.post("/bookings/reserve", headers=forged({"sub": user["id"]}),
                                             json={"ticket_type_id": tt["id"], "quantity": 1})  # fmt: skip

                admitted = [asyncio.create_task(reserve(u)) for u in users[:BOUND]]
                shedder = app.middleware_stack
                deadline = time.monotonic() + 30
                while not (isinstance(shedder, Shedder) and shedder.in_flight == BOUND):
                    assert time.monotonic() < deadline, "the first requests never got in flight"
                    await asyncio.sleep(0.05)
                    shedder = app.middleware_stack

                async def timed(user: dict[str, Any]) -> tuple[int, str, float]:
                    started = time.monotonic()
                    r = await reserve(user)
                    return r.status_code, r.headers.get("retry-after", ""), time.monotonic() - started

                shed = await asyncio.gather(*(timed(u) for u in users[BOUND:]))
                probes = [(await client.get(path)).status_code for path in ("/healthz", "/readyz")]
                assert not any(t.done() for t in admitted), "the admitted requests were not held"
                await asyncio.to_thread(blocker.rollback)  # release the lock
                return list(await asyncio.gather(*admitted)), shed, probes

        done, shed, probes = asyncio.run(scenario())
    blocker.close()
    for status, retry_after, seconds in shed:
        assert (status, retry_after) == (503, "1")
        assert seconds < 5, f"a shed answer took {seconds:.1f} s: it waited instead of being refused"
    assert probes == [200, 200], "health and readiness must answer under overload"
    assert [r.status_code for r in done] == [201] * BOUND, [r.text for r in done]
    assert app.middleware_stack.in_flight == 0


def test_shed_answer_is_the_busy_problem() -> None:
    shedder = Shedder(app=None, max_in_flight=1)  # type: ignore[arg-type]
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    shedder.in_flight = 1
    asyncio.run(shedder({"type": "http", "path": "/bookings/reserve"}, None, send))  # type: ignore[arg-type]
    assert sent[0]["status"] == 503
    assert (b"retry-after", b"1") in sent[0]["headers"]
    assert b'"code": "busy"' in sent[1]["body"]


def test_max_in_flight_setting() -> None:
    base = {"DATABASE_URL": "postgresql://x@127.0.0.1/x", "JWT_SECRET": "s"}
    assert Settings.from_env(base).max_in_flight == 200
    assert Settings.from_env({**base, "MAX_IN_FLIGHT": "0"}).max_in_flight == 0
