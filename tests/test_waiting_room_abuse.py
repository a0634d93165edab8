"""The waiting room reviewed as an attacker (issue 10): each test here failed before the fix it
guards (see the commit that added it). Time is moved in SQL, never slept, as in
tests/test_waiting_room.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from starlette.testclient import TestClient

from tests.conftest import call, sqlstate_of
from tests.factories import make_event, make_user
from tests.http import client_for, new_user
from tests.test_waiting_room import advance, join, open_sale, status


@pytest.fixture
def client(dbname: str) -> Iterator[TestClient]:
    with client_for(dbname) as c:
        yield c


def test_a_room_does_not_open_before_its_event_has_a_ticket_type(
    client: TestClient, gw: psycopg.Connection, owner: psycopg.Connection
) -> None:
    """Published with its room on but no ticket type yet: the first to find the event used to open
    the room by joining (first place, no shuffle at the real opening), and everyone was admitted
    before the types' sale started (their tokens ran out before it)."""
    event = make_event(gw, p_queue_enabled=True, p_admission_rate_per_minute=600)
    scout, scout_headers = new_user(client, owner)
    url = f"/events/{event['id']}/queue"
    r = client.post(url, headers=scout_headers)
    assert r.status_code == 200, r.text
    assert r.json()["position"] is None and r.json()["eta_seconds"] is None  # no opening known yet
    r = client.get(url, headers=scout_headers)  # the gateway's mirror of such a room loads too
    assert r.status_code == 200 and r.json()["status"] == "waiting" and r.json()["position"] is None, r.text
    assert owner.execute("SELECT api.waiting_room_state() IS NOT NULL").fetchone() == (True,)
    row = owner.execute("SELECT opened_at FROM waiting_rooms WHERE event_id = %s", (event["id"],)).fetchone()
    assert row == (None,)

    # The admin adds the type, its sale an hour away; the crowd arrives; the sale opens.
    call(gw, "create_ticket_type", p_event_id=event["id"], p_name="GA", p_price="1.00", p_initial_quantity=10,
         p_start_sale_time=datetime.now(UTC) + timedelta(hours=1))  # fmt: skip
    crowd = [make_user(gw) for _ in range(5)]
    for user in crowd:
        assert join(gw, event, user)["position"] is None
    open_sale(owner, event, 1)
    status(gw, event, crowd[0])  # the opening's shuffle
    row = owner.execute("SELECT shuffled_entries FROM waiting_rooms WHERE event_id = %s", (event["id"],)).fetchone()
    assert row == (6,)  # the scout was shuffled with everyone there at the opening
    assert owner.execute("SELECT * FROM api.waiting_room_audit(%s)", (event["id"],)).fetchall() == []


@pytest.mark.parametrize("function", ["reserve_tickets", "reserve_tickets_optimistic"])
def test_an_admission_token_with_anything_appended_is_refused(
    gw: psycopg.Connection, owner: psycopg.Connection, function: str
) -> None:
    """Only the MAC part was compared: the token followed by '.<anything>' (up to the length
    bound) was another string the core accepted."""
    event = make_event(gw, publish=False, p_queue_enabled=True, p_admission_rate_per_minute=6)
    tt = call(gw, "create_ticket_type", p_event_id=event["id"], p_name="GA", p_price="1.00", p_initial_quantity=10)
    call(gw, "publish_event", p_event_id=event["id"])
    user = make_user(gw)
    join(gw, event, user)  # opens the room (the type has no sale start): first in line
    advance(owner, event, 15)
    token = status(gw, event, user)["admission_token"]
    args = {"p_user_id": user["id"], "p_ticket_type_id": tt["id"], "p_quantity": 1}
    for bad in [token + ".", token + ".junk", token + "." + "z" * 21, token + ".0"]:
        assert sqlstate_of(gw, function, p_admission_token=bad, **args) == "BKNAD", bad
    assert sqlstate_of(gw, function, p_admission_token=token, **args) is None
