"""The events cache across processes, and the pool across a database restart."""

from __future__ import annotations

import time
from typing import Any

import psycopg
from starlette.testclient import TestClient

from gateway.app import create_app
from tests.factories import make_event, make_ticket_type
from tests.http import client_for, new_user, settings_for


def names(client: Any, **params: str) -> list[str]:
    r = client.get("/events", params=params)
    assert r.status_code == 200, r.text
    return [e["name"] for e in r.json()]


def wait_until_listening(client: Any) -> None:
    cache = client.app.state.gateway.cache
    deadline = time.monotonic() + 5
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
        deadline = time.monotonic() + 2
        while names(a) != ["First Night", "Second Night"] and time.monotonic() < deadline:
            time.sleep(0.01)
        assert names(a) == ["First Night", "Second Night"]

        b.patch(f"/admin/events/{draft['id']}", headers=admin, json={"name": "Renamed Night"})
        deadline = time.monotonic() + 2
        while "Renamed Night" not in names(a) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert "Renamed Night" in names(a)


def test_ttl_expiry_when_no_notification_arrives(dbname: str, owner: psycopg.Connection, db: Any) -> None:
    event = make_event(owner, p_name="Old Name")
    with client_for(dbname, cache_ttl=0.5) as a:
        wait_until_listening(a)
        assert names(a) == ["Old Name"]
        # A change that bypasses the triggers (so no NOTIFY): only the TTL can reveal it.
        db.execute("SET session_replication_role = replica")
        db.execute("UPDATE events SET name = 'New Name' WHERE id = %s", (event["id"],))
        db.commit()
        assert names(a) == ["Old Name"], "still cached: proves the cache is in use"
        time.sleep(0.6)
        assert names(a) == ["New Name"]
        assert a.app.state.gateway.cache.sweep() == 0


def test_sweep_drops_expired_entries(dbname: str, owner: psycopg.Connection) -> None:
    make_event(owner)
    with client_for(dbname, cache_ttl=0.1) as a:
        wait_until_listening(a)
        for q in ("a", "b", "c"):
            names(a, q=q)
        time.sleep(0.15)
        assert a.app.state.gateway.cache.sweep() == 3


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
