"""The events cache across processes, and the pool across a database restart."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

import psycopg
from starlette.testclient import TestClient

from gateway.app import create_app
from gateway.cache import EventsCache, listen_for_changes
from tests.conftest import url_for
from tests.factories import make_event, make_ticket_type
from tests.http import client_for, new_user, settings_for


def names(client: Any, **params: str) -> list[str]:
    r = client.get("/events", params=params)
    assert r.status_code == 200, r.text
    return [e["name"] for e in r.json()]


def wait_until_listening(client: Any) -> None:
    cache = client.app.state.gateway.cache
    deadline = time.monotonic() + 30
    while not cache.listening and time.monotonic() < deadline:
        time.sleep(0.02)
    assert cache.listening


def test_a_change_through_one_gateway_shows_at_once_in_another(dbname: str, owner: psycopg.Connection) -> None:
    make_event(owner, p_name="First Night")
    with client_for(dbname) as a, client_for(dbname) as b:
        wait_until_listening(a)
        wait_until_listening(b)
        assert names(a) == ["First Night"]
        assert names(a) == ["First Night"]
        assert a.app.state.gateway.cache.hits >= 1, "the second read must come from the cache"

        _, admin = new_user(b, owner, "admin")
        draft = b.post("/admin/events", headers=admin, json={
            "slug": "second", "name": "Second Night", "location": "Hue",
            "start_time": "2031-01-01T18:00:00Z", "end_time": "2031-01-01T22:00:00Z"}).json()  # fmt: skip
        assert names(a) == ["First Night"], "drafts are not listed"
        assert b.post(f"/admin/events/{draft['id']}/publish", headers=admin).status_code == 200
        deadline = time.monotonic() + 30
        while names(a) != ["First Night", "Second Night"] and time.monotonic() < deadline:
            time.sleep(0.01)
        assert names(a) == ["First Night", "Second Night"]

        b.patch(f"/admin/events/{draft['id']}", headers=admin, json={"name": "Renamed Night"})
        deadline = time.monotonic() + 30
        while "Renamed Night" not in names(a) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert "Renamed Night" in names(a)


class Clock:
    """An explicit clock for the cache: TTLs pass when the test says, not when the machine does."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_ttl_expiry_when_no_notification_arrives(dbname: str, owner: psycopg.Connection, db: Any) -> None:
    event = make_event(owner, p_name="Old Name")
    with client_for(dbname, cache_ttl=60) as a:
        cache = a.app.state.gateway.cache
        cache.clock = clock = Clock()
        wait_until_listening(a)
        assert names(a) == ["Old Name"]
        # A change that bypasses the triggers (so no NOTIFY): only the TTL can reveal it.
        db.execute("SET session_replication_role = replica")
        db.execute("UPDATE events SET name = 'New Name' WHERE id = %s", (event["id"],))
        db.commit()
        clock.now += 59
        assert names(a) == ["Old Name"], "still cached: proves the cache is in use"
        clock.now += 1
        assert names(a) == ["New Name"]
        assert cache.sweep() == 0


def test_sweep_drops_expired_entries(dbname: str, owner: psycopg.Connection) -> None:
    make_event(owner)
    with client_for(dbname, cache_ttl=60) as a:
        cache = a.app.state.gateway.cache
        cache.clock = clock = Clock()
        wait_until_listening(a)
        for q in ("a", "b", "c"):
            names(a, q=q)
        clock.now += 30
        names(a, q="d")
        assert cache.sweep() == 0
        clock.now += 30
        assert cache.sweep() == 3, "a, b and c expired; d has 30 s left"
        clock.now += 30
        assert cache.sweep() == 1


async def until(condition: Callable[[], bool]) -> None:
    for _ in range(3000):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("timed out")


def test_a_change_during_a_load_is_not_cached_over(dbname: str, owner: psycopg.Connection) -> None:
    """A NOTIFY arrives while a list is loading: the list loaded before the change must not be
    stored (the cache's generation check), or it would be served until the TTL runs out."""
    event = make_event(owner, p_name="Before")
    url = url_for(dbname, "booking_gateway")

    async def scenario() -> tuple[str, str, str]:
        cache = EventsCache(ttl=3600, max_entries=10)
        listener = asyncio.create_task(listen_for_changes(cache, url))
        loaded, release = asyncio.Event(), asyncio.Event()
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:

            async def load() -> str:
                cur = await conn.execute("SELECT api.list_published_events(NULL)::text")
                row = await cur.fetchone()
                assert row is not None
                loaded.set()
                await release.wait()  # still loading when the change arrives
                return str(row[0])

            async def fresh_load() -> str:
                cur = await conn.execute("SELECT api.list_published_events(NULL)::text")
                row = await cur.fetchone()
                assert row is not None
                return str(row[0])

            try:
                async with asyncio.timeout(30):
                    await until(lambda: cache.listening)
                    first = asyncio.create_task(cache.get("", load))
                    await loaded.wait()
                    generation = cache._generation
                    await asyncio.to_thread(
                        owner.execute, "UPDATE events SET name = 'After' WHERE id = %s", (event["id"],)
                    )
                    await until(lambda: cache._generation != generation)  # the NOTIFY reached the listener
                    release.set()
                    stale = await first
                    again = await cache.get("", fresh_load)
                    assert cache.listening
                    return stale, again, await cache.get("", fresh_load)
            finally:
                listener.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await listener

    stale, again, cached = asyncio.run(scenario())
    assert "Before" in stale, "the load that was under way answers its own caller"
    assert "After" in again and "Before" not in again, "what was loading during the change is not kept"
    assert cached == again


def test_get_event_is_live_not_cached(dbname: str, owner: psycopg.Connection) -> None:
    tt = make_ticket_type(owner, quantity=5)
    with client_for(dbname) as a:
        _, fan = new_user(a, owner)
        assert a.get(f"/events/{tt['event_id']}").json()["ticket_types"][0]["available_quantity"] == 5
        a.post("/bookings/reserve", headers=fan, json={"ticket_type_id": tt["id"], "quantity": 2})
        assert a.get(f"/events/{tt['event_id']}").json()["ticket_types"][0]["available_quantity"] == 3


def test_pool_survives_a_database_restart(own_cluster: Any) -> None:
    settings = settings_for("booking", database_url=own_cluster.url("booking_gateway", "booking"))
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        assert client.get("/events").status_code == 200
        assert client.get("/readyz").status_code == 200
        own_cluster.stop("fast")
        for path in ("/readyz", "/events/some-event", "/events"):
            r = client.get(path)
            assert r.status_code == 503, (path, r.text)
            assert r.json()["code"] == "busy" and r.headers["Retry-After"] == "1"
        assert client.get("/healthz").status_code == 200, "the process itself is fine"
        own_cluster.start()
        deadline = time.monotonic() + 15
        statuses = []
        while time.monotonic() < deadline:
            statuses.append(client.get("/readyz").status_code)
            if statuses[-3:] == [200, 200, 200]:
                break
            time.sleep(0.2)
        assert statuses[-3:] == [200, 200, 200], statuses
        assert client.get("/events").status_code == 200
        assert client.get("/events/nope").status_code == 404
