"""gateway/db.py's Turnstile: no more requests inside the connection pool than it has connections,
the others served in arrival order, handed their turn directly (issue 10's crowd: psycopg_pool's
own lock, always contended with hundreds waiting, held the connections idle)."""

from __future__ import annotations

import asyncio

import psycopg
import pytest

from gateway.db import Database, Turnstile, make_pool
from gateway.errors import ApiError
from tests.factories import make_event
from tests.http import settings_for


def test_waiters_get_their_turn_in_arrival_order() -> None:
    async def scenario() -> list[int]:
        gate = Turnstile(2)
        order: list[int] = []
        release = asyncio.Event()

        async def user(n: int) -> None:
            await gate.enter(30)
            order.append(n)
            if n < 2:
                await release.wait()
            gate.leave()

        tasks = [asyncio.create_task(user(n)) for n in range(8)]
        for _ in range(5):
            await asyncio.sleep(0)
        assert order == [0, 1], "only two inside at once"
        assert gate.waiting == 6
        release.set()
        await asyncio.gather(*tasks)
        assert gate.free == 2 and gate.waiting == 0
        return order

    assert asyncio.run(scenario()) == list(range(8))


def test_a_waiter_that_times_out_or_is_cancelled_leaves_no_hole() -> None:
    async def scenario() -> None:
        gate = Turnstile(1)
        await gate.enter(30)
        with pytest.raises(TimeoutError):
            await gate.enter(0.01)
        assert gate.waiting == 0
        cancelled = asyncio.create_task(gate.enter(30))
        await asyncio.sleep(0)
        cancelled.cancel()
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        assert gate.waiting == 0
        later = asyncio.create_task(gate.enter(30))
        await asyncio.sleep(0)
        gate.leave()
        await asyncio.wait_for(later, 30)  # the turn went to the live waiter
        gate.leave()
        assert gate.free == 1

    asyncio.run(scenario())


def test_many_concurrent_calls_never_queue_inside_the_pool(dbname: str, owner: psycopg.Connection) -> None:
    """200 concurrent api calls on a pool of 3: all answered, and psycopg_pool never had to queue
    one (its queue is behind a lock that hands itself on once per loop iteration)."""
    make_event(owner, p_slug="turnstile-night")

    async def scenario() -> tuple[list[str | None], dict[str, int]]:
        pool = make_pool(settings_for(dbname, pool_min=3, pool_max=3))
        await pool.open(wait=True)
        try:
            db = Database(pool)
            answers = await asyncio.gather(
                *(db.call("get_event", {"p_id_or_slug": "turnstile-night"}) for _ in range(200))
            )
            return answers, pool.get_stats()
        finally:
            await pool.close()

    answers, stats = asyncio.run(scenario())
    assert all(a is not None and "turnstile-night" in a for a in answers)
    assert stats.get("requests_num", 0) >= 200
    assert stats.get("requests_queued", 0) == 0, stats


def test_a_call_that_cannot_get_a_turn_in_time_is_a_pool_timeout(dbname: str) -> None:
    async def scenario() -> None:
        pool = make_pool(settings_for(dbname, pool_min=1, pool_max=1, pool_timeout=0.2))
        await pool.open(wait=True)
        try:
            db = Database(pool)
            await db.turnstile.enter(30)  # the only turn is taken
            with pytest.raises(ApiError) as raised:
                await db.call("get_event", {"p_id_or_slug": "nothing"})
            db.turnstile.leave()
            assert raised.value.code == "busy", raised.value
        finally:
            await pool.close()

    asyncio.run(scenario())
