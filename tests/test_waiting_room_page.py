"""The page fans wait on, GET /events/{event_id}/waiting-room, in a real headless Chromium against
a real gateway (uvicorn on a free port) and PostgreSQL: it joins, shows the place, polls at the
interval the server suggests, and flips to admitted with the token (time moved in SQL).

The page's inline script runs only if the Content-Security-Policy's hashes are right, so the
browser also checks the CSP.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest

from gateway.app import create_app
from tests.browser import Browser, Tab
from tests.conftest import call
from tests.factories import make_event, make_user
from tests.http import PASSWORD, PASSWORD_HASH, settings_for
from tests.live import LiveServer
from tests.test_waiting_room import advance, join, open_sale, queue_event

STATE = "[document.body.dataset.status, document.getElementById('message').textContent].join(': ')"


@pytest.fixture
def server(dbname: str) -> Iterator[LiveServer]:
    with LiveServer(create_app(settings_for(dbname))) as live:
        yield live


def fan(owner: psycopg.Connection, gw: psycopg.Connection) -> dict[str, Any]:
    user: dict[str, Any] = make_user(gw)
    owner.execute("UPDATE users SET password_hash = %s WHERE id = %s", (PASSWORD_HASH, user["id"]))
    return user


def login(server: LiveServer, email: str) -> str:
    r = httpx.post(f"{server.url}/auth/login", json={"email": email, "password": PASSWORD})
    assert r.status_code == 200, r.text
    token: str = r.json()["access_token"]
    return token


def text(tab: Tab, element: str) -> Any:
    return tab.eval(f"document.getElementById({json.dumps(element)}).textContent")


def test_the_page_joins_shows_the_place_and_flips_to_admitted(
    server: LiveServer, gw: psycopg.Connection, owner: psycopg.Connection
) -> None:
    event, tt = queue_event(gw, rate=6)  # one admission every 10 s
    open_sale(owner, event, 1)
    first = make_user(gw)
    join(gw, event, first)  # position 1 (the first join after the opening: nobody to shuffle)
    me = fan(owner, gw)
    token = login(server, me["email"])
    page_url = f"{server.url}/events/{event['id']}/waiting-room"

    r = httpx.get(page_url)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    csp = r.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'sha256-" in csp and "unsafe-inline" not in csp
    assert httpx.get(f"{server.url}/events/not-a-uuid/waiting-room").status_code == 422

    with Browser() as browser:
        tab = browser.open(f"{page_url}#token={token}")
        tab.wait_for("document.body.dataset.status === 'waiting'", 20, lambda: tab.eval(STATE))
        assert text(tab, "position") == "2"
        assert text(tab, "ahead") in ("1", "0")  # 0 once the first is admitted (10 s after the opening)
        assert "seconds" in text(tab, "eta")
        assert "token=" not in tab.eval("location.href")  # the fragment is dropped from the address bar
        assert tab.eval("sessionStorage.getItem('booking.access_token')") == token
        assert tab.eval("document.getElementById('admitted').hidden") is True

        advance(owner, event, 60)  # six more admissions: my turn came
        admission = tab.wait_for(
            "document.body.dataset.status === 'admitted' && document.getElementById('token').textContent", 40,
            lambda: tab.eval(STATE),
        )  # fmt: skip
        assert admission.startswith("v1.")
        assert tab.eval(f"sessionStorage.getItem('booking.admission.{event['id']}')") == admission
        assert tab.eval("document.getElementById('place').hidden") is True

    # The token the page handed over is the one the reserve core accepts.
    headers = {"Authorization": f"Bearer {token}"}
    reserve = {"ticket_type_id": tt["id"], "quantity": 1}
    r = httpx.post(f"{server.url}/bookings/reserve", headers=headers, json=reserve)
    assert r.status_code == 403 and r.json()["code"] == "not_admitted"
    r = httpx.post(f"{server.url}/bookings/reserve", headers={**headers, "X-Admission-Token": admission}, json=reserve)
    assert r.status_code == 201, r.text


def test_without_a_token_the_page_asks_for_a_login_then_joins(
    server: LiveServer, gw: psycopg.Connection, owner: psycopg.Connection
) -> None:
    event, _ = queue_event(gw, rate=6)  # opens in an hour: the place is drawn at the opening
    me = fan(owner, gw)
    plain = make_event(gw)  # no waiting room
    with Browser() as browser:
        tab = browser.open(f"{server.url}/events/{event['id']}/waiting-room")
        tab.wait_for("document.body.dataset.status === 'login'", 20, lambda: tab.eval(STATE))
        tab.eval(
            f"document.getElementById('email').value = {json.dumps(me['email'])};"
            f"document.getElementById('password').value = {json.dumps('wrong-password')};"
            "document.getElementById('login').requestSubmit()"
        )
        tab.wait_for("document.getElementById('message').textContent.includes('did not work')", 20)
        tab.eval(
            f"document.getElementById('password').value = {json.dumps(PASSWORD)};"
            "document.getElementById('login').requestSubmit()"
        )
        tab.wait_for("document.body.dataset.status === 'waiting'", 20, lambda: tab.eval(STATE))
        assert text(tab, "position") == "drawn when the sale opens"
        assert "minutes" in text(tab, "eta")
        place = call(gw, "waiting_room_status", p_event_id=event["id"], p_user_id=me["id"])
        assert place["status"] == "waiting"  # the page's login joined the room

        # An event without a room: the page says so (its join is 404).
        other = browser.open(f"{server.url}/events/{plain['id']}/waiting-room")
        other.eval(f"sessionStorage.setItem('booking.access_token', {json.dumps(login(server, me['email']))})")
        other.eval("location.reload()")
        other.wait_for("document.body.dataset.status === 'none'", 20, lambda: other.eval(STATE))


def test_the_page_trades_its_refresh_token_when_the_access_token_expires(
    dbname: str, gw: psycopg.Connection, owner: psycopg.Connection
) -> None:
    event, _ = queue_event(gw, rate=6)
    open_sale(owner, event, 1)
    join(gw, event, make_user(gw))  # position 1
    me = fan(owner, gw)
    with LiveServer(create_app(settings_for(dbname, token_ttl=2))) as server, Browser() as browser:
        r = httpx.post(f"{server.url}/auth/login", json={"email": me["email"], "password": PASSWORD})
        pair = r.json()
        tab = browser.open(
            f"{server.url}/events/{event['id']}/waiting-room#token={pair['access_token']}&refresh={pair['refresh_token']}"
        )
        tab.wait_for("document.body.dataset.status === 'waiting'", 20, lambda: tab.eval(STATE))
        assert text(tab, "position") == "2"
        assert "refresh=" not in tab.eval("location.href")
        # The access token lives 1-2 s; the next poll (a few seconds on) is refused, the page
        # trades the refresh token for a new pair and asks again, without bothering the fan.
        tab.wait_for(
            f"sessionStorage.getItem('booking.access_token') !== {json.dumps(pair['access_token'])}", 30,
            lambda: tab.eval(STATE),
        )  # fmt: skip
        tab.wait_for("document.body.dataset.status === 'waiting'", 5, lambda: tab.eval(STATE))
        assert tab.eval("sessionStorage.getItem('booking.refresh_token')") not in (None, pair["refresh_token"])
        assert text(tab, "position") == "2"


def test_the_page_says_why_when_asking_again_cannot_help_and_survives_a_bad_link(
    server: LiveServer, gw: psycopg.Connection, owner: psycopg.Connection
) -> None:
    """A cancelled event's join is 409: the page said "Busy; trying again shortly" and asked again
    every 5 s for ever. A link whose fragment held a malformed %-escape stopped the script at once
    (decodeURIComponent threw): the page stayed on "Loading…"."""
    event, _ = queue_event(gw, rate=6)
    me = fan(owner, gw)
    token = login(server, me["email"])
    page_url = f"{server.url}/events/{event['id']}/waiting-room"
    with Browser() as browser:
        tab = browser.open(f"{page_url}#token=%E0%A4%A")
        tab.wait_for("document.body.dataset.status === 'login'", 20, lambda: tab.eval(STATE))
        call(gw, "cancel_event", p_event_id=event["id"])
        tab.eval(f"sessionStorage.setItem('booking.access_token', {json.dumps(token)})")
        tab.eval("location.reload()")
        tab.wait_for("document.body.dataset.status === 'closed'", 20, lambda: tab.eval(STATE))
        assert "not on sale" in text(tab, "message")
