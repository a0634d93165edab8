"""Pages: GET /events and GET /bookings/my-bookings take limit and an opaque keyset cursor,
point at the next page with Link rel="next", and stay stable while rows are added. GET /events
answers with an ETag and Cache-Control, and 304 to a matching If-None-Match."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from starlette.testclient import TestClient

from gateway.routes import PAGE_DEFAULT, PAGE_MAX
from tests.conftest import call
from tests.factories import NOW, make_event, make_ticket_type, reserve
from tests.http import client_for, new_user

LINK = re.compile(r'^<(?P<url>[^>]+)>; rel="next"$')


@pytest.fixture
def client(dbname: str) -> Iterator[TestClient]:
    with client_for(dbname) as c:
        yield c


def walk(client: TestClient, url: str, headers: dict[str, str] | None = None) -> list[list[dict[str, Any]]]:
    """Every page from `url`, following Link rel="next" until a page has none."""
    pages = []
    while True:
        r = client.get(url, headers=headers)
        assert r.status_code == 200, r.text
        pages.append(r.json())
        link = r.headers.get("link")
        if link is None:
            return pages
        match = LINK.match(link)
        assert match, link
        url = match["url"]
        assert len(pages) < 50, "the pages never end"


def test_events_come_in_pages_that_add_up_to_the_list(client: TestClient, owner: psycopg.Connection) -> None:
    for day in (5, 1, 3, 2, 4):
        make_event(owner, p_start_time=NOW + timedelta(days=day), p_end_time=NOW + timedelta(days=day, hours=2))
    make_event(owner, publish=False)  # drafts are not listed
    everything = client.get("/events").json()
    assert len(everything) == 5 and "link" not in client.get("/events").headers
    pages = walk(client, "/events?limit=2")
    assert [len(p) for p in pages] == [2, 2, 1]
    assert [e["id"] for p in pages for e in p] == [e["id"] for e in everything]
    assert [e["start_time"] for e in everything] == sorted(e["start_time"] for e in everything)
    assert walk(client, "/events?limit=5") == [everything], "an exactly full last page has no next link"
    assert walk(client, f"/events?limit={PAGE_MAX}") == [everything]


def test_event_pages_are_stable_while_events_are_added(client: TestClient, owner: psycopg.Connection) -> None:
    ids = [make_event(owner, p_start_time=NOW + timedelta(days=d), p_end_time=NOW + timedelta(days=d, hours=1))["id"]
           for d in (1, 2, 3, 4)]  # fmt: skip
    first = client.get("/events?limit=2")
    assert [e["id"] for e in first.json()] == ids[:2]
    # Arrivals before and inside the page already read: the next page neither repeats nor skips.
    make_event(owner, p_start_time=NOW + timedelta(hours=1), p_end_time=NOW + timedelta(hours=2))
    make_event(owner, p_start_time=NOW + timedelta(days=1, hours=1), p_end_time=NOW + timedelta(days=1, hours=2))
    later = make_event(owner, p_start_time=NOW + timedelta(days=5), p_end_time=NOW + timedelta(days=5, hours=1))
    rest = walk(client, LINK.match(first.headers["link"])["url"])  # type: ignore[index]
    assert [e["id"] for p in rest for e in p] == [*ids[2:], later["id"]]


def test_the_query_and_the_limit_travel_in_the_next_link(client: TestClient, owner: psycopg.Connection) -> None:
    for n in range(3):
        make_event(owner, p_name=f"Jazz night {n}")
    make_event(owner, p_name="Rock")
    pages = walk(client, "/events?q=jazz&limit=1")  # same start times: the id decides the order
    assert [e["name"] for p in pages for e in p] == [e["name"] for e in client.get("/events?q=jazz").json()]
    assert sorted(e["name"] for p in pages for e in p) == ["Jazz night 0", "Jazz night 1", "Jazz night 2"]
    link = client.get("/events?q=jazz&limit=1").headers["link"]
    assert "q=jazz" in link and "limit=1" in link and "cursor=" in link


def test_default_page_size(client: TestClient, owner: psycopg.Connection) -> None:
    for n in range(PAGE_DEFAULT + 1):
        owner.execute("SELECT api.create_event(%s, 'E', 'L', now() + interval '1 day', now() + interval '2 days')",
                      (f"bulk-{n}",))  # fmt: skip
    owner.execute("UPDATE events SET status = 'PUBLISHED'")
    r = client.get("/events")
    assert len(r.json()) == PAGE_DEFAULT and "link" in r.headers


def test_events_etag_cache_control_and_304(client: TestClient, owner: psycopg.Connection) -> None:
    event = make_event(owner)
    r = client.get("/events")
    etag = r.headers["etag"]
    assert re.fullmatch(r'"[0-9a-f]{32}"', etag) and r.headers["cache-control"].startswith("public, max-age=")
    again = client.get("/events", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == etag
    assert client.get("/events", headers={"If-None-Match": f'"other", W/{etag}'}).status_code == 304
    assert client.get("/events", headers={"If-None-Match": "*"}).status_code == 304
    assert client.get("/events", headers={"If-None-Match": '"other"'}).status_code == 200
    assert client.get("/events?limit=1", headers={"If-None-Match": etag}).status_code == 304, "same body"
    # A change makes a new body, so a new tag (the cache is dropped on NOTIFY; wait for it).
    call(owner, "update_event", p_event_id=event["id"], p_changes=psycopg.types.json.Jsonb({"name": "Renamed"}))
    deadline = time.monotonic() + 10
    while True:
        r = client.get("/events", headers={"If-None-Match": etag})
        if r.status_code == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    assert r.status_code == 200 and r.json()[0]["name"] == "Renamed" and r.headers["etag"] != etag


def test_the_cache_keeps_pages_apart(client: TestClient, owner: psycopg.Connection) -> None:
    for day in (1, 2, 3):
        make_event(owner, p_start_time=NOW + timedelta(days=day), p_end_time=NOW + timedelta(days=day, hours=1))
    whole, one = client.get("/events").json(), client.get("/events?limit=1").json()
    assert len(whole) == 3 and one == whole[:1]
    second = client.get(LINK.match(client.get("/events?limit=1").headers["link"])["url"]).json()  # type: ignore[index]
    assert second == whole[1:2]
    assert client.get("/events").json() == whole


def test_my_bookings_in_pages_newest_first(client: TestClient, owner: psycopg.Connection) -> None:
    me, headers = new_user(client, owner)
    tt = make_ticket_type(owner, quantity=20)
    for _ in range(5):
        hold = reserve(owner, me, tt)
        call(owner, "complete_booking", p_user_id=me["id"], p_reservation_id=hold["id"], p_payment_method="CARD")
    everything = client.get("/bookings/my-bookings", headers=headers).json()
    assert len(everything) == 5
    assert [o["created_at"] for o in everything] == sorted((o["created_at"] for o in everything), reverse=True)
    pages = walk(client, "/bookings/my-bookings?limit=2", headers)
    assert [len(p) for p in pages] == [2, 2, 1]
    assert [o["id"] for p in pages for o in p] == [o["id"] for o in everything]
    # Someone else's cursor shows nothing of theirs: the cursor only says where to start.
    _, other = new_user(client, owner)
    link = client.get("/bookings/my-bookings?limit=2", headers=headers).headers["link"]
    assert client.get(LINK.match(link)["url"], headers=other).json() == []  # type: ignore[index]


def test_a_page_that_gains_a_next_page_is_a_new_answer(client: TestClient, owner: psycopg.Connection) -> None:
    """Same items, but a next page now exists: a new tag, and a 304 still says where it is."""
    make_event(owner)
    r = client.get("/events?limit=1")
    assert r.status_code == 200 and "link" not in r.headers
    etag = r.headers["etag"]
    make_event(owner, p_start_time=NOW + timedelta(days=20), p_end_time=NOW + timedelta(days=21))
    deadline = time.monotonic() + 10  # the gateway's cache is dropped on NOTIFY (late on a loaded machine)
    while True:
        r = client.get("/events?limit=1", headers={"If-None-Match": etag})
        if r.status_code == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    assert r.status_code == 200 and len(r.json()) == 1 and LINK.match(r.headers["link"])
    assert r.headers["etag"] != etag
    again = client.get("/events?limit=1", headers={"If-None-Match": r.headers["etag"]})
    assert again.status_code == 304 and again.headers["link"] == r.headers["link"]
