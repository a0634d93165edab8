"""The waiting room reviewed as an attacker (issue 10): each test here failed before the fix it
guards (see the commit that added it). Time is moved in SQL, never slept, as in
tests/test_waiting_room.py.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from starlette.testclient import TestClient

from gateway.waiting_room import WaitingRooms
from tests.conftest import call, dba_call, sqlstate_of
from tests.factories import make_event, make_user
from tests.http import client_for, new_user
from tests.test_waiting_room import advance, join, open_sale, queue_event, status


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
    _, scout_headers = new_user(client, owner)
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


def rooms_of(client: TestClient) -> WaitingRooms:
    rooms: WaitingRooms = client.app.state.gateway.rooms  # type: ignore[attr-defined]
    return rooms


def eventually(check: Callable[[], bool], within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "not within the time allowed"
        time.sleep(0.02)


def test_a_token_signed_before_a_key_rotation_is_not_kept_by_the_gateway(
    client: TestClient, gw: psycopg.Connection, owner: psycopg.Connection, connect: Callable[..., psycopg.Connection]
) -> None:
    """A poll that the database answered "admitted" with a token under the old key, and whose
    answer reached the gateway after the rotation's notice (which empties the kept answers), was
    kept: every later poll got the dead token from memory, and the fan could not reserve."""
    event, tt = queue_event(gw, rate=6)
    _, headers = new_user(client, owner)
    url = f"/events/{event['id']}/queue"
    assert client.post(url, headers=headers).json()["position"] is None  # joined before the opening
    open_sale(owner, event, 15)  # position 1 is admitted by the next poll
    # Hold that poll's commit (after it signed) until the key is rotated: a deferred trigger waits
    # for an advisory lock this test holds.
    owner.execute(
        "CREATE FUNCTION public.hold_commit() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER AS"
        " $$ BEGIN PERFORM pg_advisory_xact_lock(4242); RETURN NULL; END $$"
    )
    owner.execute(
        "CREATE CONSTRAINT TRIGGER hold_commit AFTER UPDATE ON waiting_room_entries"
        " DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION public.hold_commit()"
    )
    holder = connect("booking_owner")
    holder.execute("SELECT pg_advisory_lock(4242)")
    answers: list[dict[str, object]] = []
    poll = threading.Thread(target=lambda: answers.append(client.get(url, headers=headers).json()))
    poll.start()
    eventually(lambda: owner.execute(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = 4242 AND NOT granted"
    ).fetchone() == (1,))  # fmt: skip
    rooms = rooms_of(client)
    before = rooms.changes
    dba_call(gw, "rotate_admission_secret")
    eventually(lambda: rooms.changes > before)  # the gateway heard of the rotation
    holder.execute("SELECT pg_advisory_unlock(4242)")
    poll.join(10)
    assert answers and answers[0]["status"] == "admitted"
    stale = answers[0]["admission_token"]
    owner.execute("DROP TRIGGER hold_commit ON waiting_room_entries")

    reserve = {"ticket_type_id": tt["id"], "quantity": 1}
    r = client.post("/bookings/reserve", headers={**headers, "X-Admission-Token": stale}, json=reserve)
    assert r.status_code == 403  # the race happened: that answer was signed under the old key
    fresh = client.get(url, headers=headers).json()
    assert fresh["status"] == "admitted" and fresh["admission_token"] != stale
    assert fresh["admission_expires_at"] == answers[0]["admission_expires_at"]
    r = client.post("/bookings/reserve", headers={**headers, "X-Admission-Token": fresh["admission_token"]},
                    json=reserve)  # fmt: skip
    assert r.status_code == 201, r.text


def test_a_room_reset_by_a_dba_voids_the_places_the_gateway_remembers(
    client: TestClient, gw: psycopg.Connection, owner: psycopg.Connection, connect: Callable[..., psycopg.Connection]
) -> None:
    """A gateway answered a fan's poll from the place it remembered after the room was reset: by
    TRUNCATE (no row trigger, so no notice), or deleted and made again while its listener was
    disconnected (the reload kept every remembered place). The database says "not in this room"."""
    event, _ = queue_event(gw, rate=6)  # opens in an hour: waiting polls are answered from memory
    url = f"/events/{event['id']}/queue"
    fans = [new_user(client, owner) for _ in range(2)]
    for _, headers in fans:
        assert client.post(url, headers=headers).status_code == 200
    rooms = rooms_of(client)
    assert client.get(url, headers=fans[0][1]).status_code == 200
    assert rooms.memory_answers > 0  # answered from memory so far

    before = rooms.changes
    owner.execute("TRUNCATE waiting_rooms CASCADE")
    eventually(lambda: rooms.changes > before)
    r = client.get(url, headers=fans[0][1])
    assert r.status_code == 404 and r.json()["code"] == "not_found", r.text

    # Both join again (a new room); then, unheard by the gateway, the room is deleted and made
    # again with only the second fan, and the listener's connection is lost: the reload must not
    # keep the first fan's place.
    for _, headers in fans:
        assert client.post(url, headers=headers).status_code == 200
    assert client.get(url, headers=fans[0][1]).status_code == 200
    owner.execute("ALTER TABLE waiting_rooms DISABLE TRIGGER waiting_room_changed")
    owner.execute("DELETE FROM waiting_rooms WHERE event_id = %s", (event["id"],))
    join(gw, event, fans[1][0])
    owner.execute("ALTER TABLE waiting_rooms ENABLE TRIGGER waiting_room_changed")
    before = rooms.changes
    superuser = connect("postgres")
    superuser.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database()"
        " AND application_name = 'booking-gateway-waiting-rooms'"
    )
    eventually(lambda: rooms.changes > before and rooms.listening)
    r = client.get(url, headers=fans[0][1])
    assert r.status_code == 404 and r.json()["code"] == "not_found", r.text
    assert client.get(url, headers=fans[1][1]).status_code == 200


def test_polls_at_the_opening_do_not_queue_behind_the_shuffle_and_a_dba_job_opens_rooms(
    gw: psycopg.Connection, owner: psycopg.Connection, connect: Callable[..., psycopg.Connection]
) -> None:
    """The shuffle runs under the room's row lock and costs ~15 us per entry: with a few hundred
    thousand fans it outlasts the gateway's 5 s statement_timeout, so no gateway call could ever
    open the room, and every poll queued on the lock until its lock_timeout (503 for the whole
    crowd). Now polls answer "no place yet" without waiting, and api.open_waiting_rooms (pg_cron,
    as the owner: no such timeout) opens every room that is due."""
    event, _ = queue_event(gw, rate=6)
    fans = [make_user(gw) for _ in range(3)]
    for fan in fans:
        join(gw, event, fan)
    open_sale(owner, event, 15)
    shuffler = connect("booking_owner")  # stands for a long shuffle in progress: holds the room row
    with shuffler.transaction():
        shuffler.execute("SELECT 1 FROM waiting_rooms WHERE event_id = %s FOR UPDATE", (event["id"],))
        for fan in fans:
            place = status(gw, event, fan)  # not 55P03 after the lock timeout
            assert place["status"] == "waiting" and place["position"] is None, place
            again = join(gw, event, fan)  # joining again does not wait either
            assert again["position"] is None
    assert sqlstate_of(gw, "open_waiting_rooms") == "42501"  # DBA-only
    row = owner.execute("SELECT api.open_waiting_rooms()").fetchone()
    assert row == (1,)
    assert owner.execute("SELECT api.open_waiting_rooms()").fetchone() == (0,)  # once
    assert sorted(status(gw, event, fan)["position"] for fan in fans) == [1, 2, 3]
    assert owner.execute("SELECT * FROM api.waiting_room_audit(%s)", (event["id"],)).fetchall() == []


def test_publishing_an_event_whose_room_was_prepared_tells_the_gateways(
    client: TestClient, gw: psycopg.Connection, owner: psycopg.Connection
) -> None:
    """A DBA set the rate of a draft's room (the row exists, mirrored as off: a draft has no room);
    publishing sent no notice, so every gateway kept the room as off and sent each of the crowd's
    polls to the database until the opening."""
    event = make_event(gw, publish=False, p_queue_enabled=True, p_admission_rate_per_minute=6)
    call(gw, "create_ticket_type", p_event_id=event["id"], p_name="GA", p_price="1.00", p_initial_quantity=10,
         p_start_sale_time=datetime.now(UTC) + timedelta(hours=1))  # fmt: skip
    rooms = rooms_of(client)
    before = rooms.changes
    dba_call(gw, "set_waiting_room_rate", p_event_id=event["id"], p_rate=60)
    eventually(lambda: rooms.changes > before)
    assert not rooms.rooms[event["id"]].enabled
    before = rooms.changes
    call(gw, "publish_event", p_event_id=event["id"])
    eventually(lambda: rooms.changes > before)
    assert rooms.rooms[event["id"]].enabled
    _, headers = new_user(client, owner)
    url = f"/events/{event['id']}/queue"
    assert client.post(url, headers=headers).status_code == 200
    answered = rooms.memory_answers
    assert client.get(url, headers=headers).json()["position"] is None
    assert rooms.memory_answers == answered + 1  # from memory


def test_the_gateway_role_reads_no_waiting_room_table_nor_the_signing_key(gw: psycopg.Connection) -> None:
    """A guard (no fix): whoever holds the gateway's credential cannot read the key, the shuffle's
    seed or anyone's place, nor sign a token with a helper."""
    for query in [
        "SELECT secret FROM public.admission_secret",
        "SELECT shuffle_seed FROM public.waiting_rooms",
        "SELECT position FROM public.waiting_room_entries",
        "SELECT internal.admission_token(gen_random_uuid(), gen_random_uuid(), 1, '\\x00'::bytea)",
        "SELECT internal.waiting_room_open(gen_random_uuid())",
    ]:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            gw.execute(query)
        gw.rollback()
