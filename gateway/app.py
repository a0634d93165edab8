"""Placeholder app (replaced by the full gateway)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from psycopg_pool import AsyncConnectionPool
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    pool = AsyncConnectionPool(os.environ["GATEWAY_DATABASE_URL"], min_size=1, max_size=5, open=False)
    await pool.open()
    app.state.pool = pool
    yield
    await pool.close()


async def healthz(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> JSONResponse:
    async with request.app.state.pool.connection() as conn:
        await conn.execute("SELECT 1")
    return JSONResponse({"status": "ready"})


app = Starlette(routes=[Route("/healthz", healthz), Route("/readyz", readyz)], lifespan=lifespan)
