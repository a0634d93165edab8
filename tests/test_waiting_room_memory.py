"""Polls answered from the gateway's memory (gateway/waiting_room.py): the Python rule equals the
SQL one, the mirror follows NOTIFY and reloads on reconnect, and a waiting fan's polls reach no
database function at all.

Time is moved in SQL, as in tests/test_waiting_room.py.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from starlette.testclient import TestClient

from gateway.waiting_room import LISTENER_NAME, POLL_MAX, POLL_MIN, Room, WaitingRooms, poll_after_seconds
from tests.conftest import call, dba_call
from tests.factories import make_user
from tests.http import client_for, new_user
from tests.test_waiting_room import HTTP_PLACE_KEYS, advance, join, open_sale, queue_event, without_poll_hint


def sql_answers(
    owner: psycopg.Connection, event: dict[str, Any], users: list[dict[str, Any]]
) -> tuple[int, dict[str, dict[str, Any]], Room | None]:
    """In one transaction (one now()): every user's api.waiting_room_status, then the room's
    mirror row as the gateways load it, and that now() in Unix microseconds."""
    with owner.transaction():
        row = owner.execute(
            "SELECT (extract(epoch FROM now()) * 1000000)::bigint,"
            " json_object_agg(u, api.waiting_room_status(%s, u))::text FROM unnest(%s::uuid[]) u",
            (event["id"], [u["id"] for u in users]),
        ).fetchone()
        state = owner.execute("SELECT api.waiting_room_state()::text").fetchone()
    assert row is not None and state is not None
    rooms = [Room.from_json(r) for r in json.loads(state[0])["rooms"] if r["event_id"] == event["id"]]
    return row[0], json.loads(row[1]), rooms[0] if rooms else None


def assert_python_equals_sql(owner: psycopg.Connection, event: dict[str, Any], users: list[dict[str, Any]]) -> int:
    """Python's answer equals SQL's for every waiting user; for admitted ones Python defers to the
    database (None). Returns how many Python answered."""
    now, answers, room = sql_answers(owner, event, users)
    assert room is not None
    answered = 0
    for user in users:
        expected = answers[user["id"]]
        mine = room.answer(expected["position"], now)
        if expected["status"] == "admitted":
            assert mine is None, (expected, room, now)
        elif expected["position"] is None and room.opens_at is not None and now < room.opens_at:
            assert mine == expected, (expected, room, now)  # before the opening
            answered += 1
        elif expected["position"] is not None:
            assert mine == expected, (expected, room, now)
            answered += 1
    return answered


def test_the_python_rule_equals_the_sql_rule_at_many_times(gw: psycopg.Connection, owner: psycopg.Connection) -> None:
    event, _ = queue_event(gw, rate=7)  # 60/7 s apart: the division is never exact
    users = [make_user(gw) for _ in range(40)]
    for user in users[:30]:
        join(gw, event, user)
    assert assert_python_equals_sql(owner, event, users[:30]) == 30  # before the opening: ETA to it
    open_sale(owner, event, 0.5)
    call(gw, "waiting_room_status", p_event_id=event["id"], p_user_id=users[0]["id"])  # shuffles
    answered = 0
    # Uneven steps, so the elapsed time lands at many fractions of an admission interval.
    for step in [0.0, 3.3, 5.27, 0.001, 8.571428, 0.000001, 13.0, 29.9, 0.77, 61.0, 17.17]:
        advance(owner, event, step)
        answered += assert_python_equals_sql(owner, event, users[:30])
    for user in users[30:]:  # later joiners: first come, first served
        join(gw, event, user)
    dba_call(gw, "set_waiting_room_rate", p_event_id=event["id"], p_rate=13)
    for step in [1.1, 4.615384, 2.0]:
        advance(owner, event, step)
        answered += assert_python_equals_sql(owner, event, users)
    dba_call(gw, "pause_waiting_room", p_event_id=event["id"])
    advance(owner, event, 100)
    answered += assert_python_equals_sql(owner, event, users)  # paused: no ETA
    dba_call(gw, "resume_waiting_room", p_event_id=event["id"])
    for step in [0.2, 9.9, 33.3]:
        advance(owner, event, step)
        answered += assert_python_equals_sql(owner, event, users)
    call(gw, "update_event", p_event_id=event["id"], p_changes=psycopg.types.json.Jsonb({"queue_enabled": False}))
    state = json.loads(owner.execute("SELECT api.waiting_room_state()::text").fetchone()[0])  # type: ignore[index]
    assert [r for r in state["rooms"] if r["event_id"] == event["id"]] == []  # a room that is off is not loaded
    assert answered > 100  # the comparisons were not all deferred to the database


def test_poll_after_seconds_follows_the_eta_within_bounds() -> None:
    assert poll_after_seconds({"status": "admitted", "eta_seconds": 0}) is None
    for eta, low, high in [(0, 2, 2), (3, 2, 2), (30, 8, 12), (60, 16, 24), (10_000, 30, 30), (None, 12, 18)]:
        values = {poll_after_seconds({"status": "waiting", "position": 5, "eta_seconds": eta}) for _ in range(200)}
        assert all(isinstance(v, int) and POLL_MIN <= v <= POLL_MAX for v in values)
        assert min(values) >= low and max(values) <= high, (eta, values)
    assert len({poll_after_seconds({"status": "waiting", "position": 5, "eta_seconds": 90}) for _ in range(200)}) > 3
    # No place and no ETA: the sale has opened and the draw is under way: soon.
    assert poll_after_seconds({"status": "waiting", "position": None, "eta_seconds": None}) == POLL_MIN


# ------------------------------------------------------------------ over HTTP


@pytest.fixture
def client(dbname: str) -> Iterator[TestClient]:
    with client_for(dbname) as c:
        yield c


def rooms_of(client: TestClient) -> WaitingRooms:
    rooms: WaitingRooms = client.app.state.gateway.rooms  # type: ignore[attr-defined]
    return rooms


def eventually(check: Callable[[], bool], within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "not within the time allowed"
        time.sleep(0.02)


def mirror_is(client: TestClient, owner: psycopg.Connection, event: dict[str, Any]) -> Callable[[], bool]:
    """The gateway's mirror of the room equals the row as SQL builds it now (the same fields the
    rule reads: a mirror that misses a change shows here)."""

    def check() -> bool:
        state = json.loads(owner.execute("SELECT api.waiting_room_state()::text").fetchone()[0])  # type: ignore[index]
        rows = [Room.from_json(r) for r in state["rooms"] if r["event_id"] == event["id"]]
        mine = rooms_of(client).rooms.get(event["id"])
        if mine is not None and not mine.enabled:
            mine = None  # a room that is off is answered by the database (which says 404): not loaded
        return rooms_of(client).listening and mine == (rows[0] if rows else None)

    return check


@pytest.fixture
def limited_client(dbname: str) -> Iterator[TestClient]:
    """With rate limits on, as in production (their check is a database call of its own)."""
    with client_for(dbname, rate_limits=True) as c:
        yield c


def test_waiting_fans_polls_reach_no_database_function(
    limited_client: TestClient, gw: psycopg.Connection, owner: psycopg.Connection
) -> None:
    client = limited_client
    event, tt = queue_event(gw, rate=6)
    fans = [new_user(client, owner) for _ in range(5)]
    url = f"/events/{event['id']}/queue"
    for _, headers in fans:
        assert client.post(url, headers=headers).status_code == 200
    open_sale(owner, event, 11)  # position 1 admitted, 2..5 waiting (for 9 more seconds)
    eventually(mirror_is(client, owner, event))
    first = {u["id"]: client.get(url, headers=h).json() for u, h in fans}  # the opening shuffles (database)
    eventually(mirror_is(client, owner, event))  # the shuffle's notice
    waiting = [(u, h) for u, h in fans if first[u["id"]]["status"] == "waiting"]
    assert len(waiting) == 4
    rooms = rooms_of(client)

    _, stranger = new_user(client, owner)  # logged in now: login needs the database
    # Neither the status function nor the rate-limit check can run any more for the gateway:
    # waiting fans are still answered.
    owner.execute("REVOKE EXECUTE ON FUNCTION api.waiting_room_status, api.check_rate_limits FROM booking_gateway")
    before = rooms.memory_answers
    for _ in range(3):
        for user, headers in waiting:
            r = client.get(url, headers=headers)
            assert r.status_code == 200, r.text
            place = r.json()
            assert set(place) == HTTP_PLACE_KEYS
            assert without_poll_hint(place) | {"eta_seconds": None} == without_poll_hint(first[user["id"]]) | {
                "eta_seconds": None
            }
            assert 0 <= first[user["id"]]["eta_seconds"] - place["eta_seconds"] <= 5  # a little later
            assert POLL_MIN <= place["poll_after_seconds"] <= POLL_MAX
    assert rooms.memory_answers - before == 12
    # Not vacuous: a fan this process has never seen needs the database, which now refuses.
    assert client.get(url, headers=stranger).status_code >= 400

    # Time passes (in SQL): the next in line is admitted. Memory knows it cannot sign: the
    # database answers (the only call), records admitted_at and signs the token.
    owner.execute("GRANT EXECUTE ON FUNCTION api.waiting_room_status, api.check_rate_limits TO booking_gateway")
    next_user, next_headers = min(waiting, key=lambda f: first[f[0]["id"]]["position"])
    assert first[next_user["id"]]["position"] == 2
    advance(owner, event, 10)
    eventually(mirror_is(client, owner, event))
    admitted = client.get(url, headers=next_headers).json()
    assert admitted["status"] == "admitted" and admitted["admission_token"] and admitted["poll_after_seconds"] is None
    # ... and is kept: later polls need no database either, the same token every time.
    owner.execute("REVOKE EXECUTE ON FUNCTION api.waiting_room_status FROM booking_gateway")
    assert client.get(url, headers=next_headers).json() == admitted
    owner.execute("GRANT EXECUTE ON FUNCTION api.waiting_room_status TO booking_gateway")

    # A DBA rotates the key: the old token stops working at once; the gateway drops what it kept
    # and the fan's next poll brings a token under the new key, with the same expiry.
    rotated = dba_call(gw, "rotate_admission_secret")
    assert rotated["live_admissions"] == 2
    eventually(lambda: next_user["id"] not in {k[1] for k in rooms.admitted})
    renewed = client.get(url, headers=next_headers).json()
    assert renewed["status"] == "admitted" and renewed["admission_token"] != admitted["admission_token"]
    assert renewed["admission_expires_at"] == admitted["admission_expires_at"]
    reserve = {"ticket_type_id": tt["id"], "quantity": 1}
    r = client.post("/bookings/reserve", headers={**next_headers, "X-Admission-Token": admitted["admission_token"]},
                    json=reserve)  # fmt: skip
    assert r.status_code == 403 and r.json()["code"] == "not_admitted"
    r = client.post("/bookings/reserve", headers={**next_headers, "X-Admission-Token": renewed["admission_token"]},
                    json=reserve)  # fmt: skip
    assert r.status_code == 201, r.text


def test_the_mirror_follows_every_change_and_reloads_after_a_lost_connection(
    client: TestClient, gw: psycopg.Connection, owner: psycopg.Connection, connect: Callable[..., psycopg.Connection]
) -> None:
    event, _ = queue_event(gw, rate=6)
    fans = [new_user(client, owner) for _ in range(3)]
    url = f"/events/{event['id']}/queue"
    for _, headers in fans:
        client.post(url, headers=headers)
    eventually(mirror_is(client, owner, event))  # the room row's creation
    for change in [
        lambda: open_sale(owner, event, 25),  # the opening moves (ticket types)
        lambda: call(gw, "waiting_room_status", p_event_id=event["id"], p_user_id=fans[0][0]["id"]),  # shuffle
        lambda: dba_call(gw, "set_waiting_room_rate", p_event_id=event["id"], p_rate=12),
        lambda: dba_call(gw, "pause_waiting_room", p_event_id=event["id"]),
        lambda: dba_call(gw, "resume_waiting_room", p_event_id=event["id"]),
        lambda: call(gw, "update_event", p_event_id=event["id"],
                     p_changes=psycopg.types.json.Jsonb({"queue_enabled": False})),
        lambda: call(gw, "update_event", p_event_id=event["id"],
                     p_changes=psycopg.types.json.Jsonb({"queue_enabled": True})),
    ]:  # fmt: skip
        change()
        eventually(mirror_is(client, owner, event))

    # A change the listener cannot hear (its notice suppressed), then its connection is lost:
    # the reconnect loads the whole state again.
    owner.execute("ALTER TABLE waiting_rooms DISABLE TRIGGER waiting_room_changed")
    owner.execute("UPDATE waiting_rooms SET paused_at = now() WHERE event_id = %s", (event["id"],))
    owner.execute("ALTER TABLE waiting_rooms ENABLE TRIGGER waiting_room_changed")
    assert not mirror_is(client, owner, event)()
    superuser = connect("postgres")
    killed = superuser.execute(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
        " WHERE datname = current_database() AND application_name = %s",
        (LISTENER_NAME,),
    ).fetchone()
    assert killed == (1,)
    eventually(mirror_is(client, owner, event))
    assert rooms_of(client).rooms[event["id"]].paused
    waiting = [client.get(url, headers=h).json() for _, h in fans]
    assert any(p["status"] == "waiting" and p["eta_seconds"] is None for p in waiting)  # paused: no ETA


def test_before_the_opening_polls_are_answered_from_memory_and_the_opening_goes_to_the_database(
    client: TestClient, gw: psycopg.Connection, owner: psycopg.Connection
) -> None:
    event, _ = queue_event(gw, rate=6)  # opens in an hour
    fans = [new_user(client, owner) for _ in range(3)]
    url = f"/events/{event['id']}/queue"
    for _, headers in fans:
        assert client.post(url, headers=headers).json()["position"] is None
    eventually(mirror_is(client, owner, event))
    owner.execute("REVOKE EXECUTE ON FUNCTION api.waiting_room_status FROM booking_gateway")
    for _, headers in fans:
        place = client.get(url, headers=headers).json()
        assert place["position"] is None and 3500 <= place["eta_seconds"] <= 3600, place
        assert place["poll_after_seconds"] == POLL_MAX
    owner.execute("GRANT EXECUTE ON FUNCTION api.waiting_room_status TO booking_gateway")
    open_sale(owner, event, 1)
    eventually(mirror_is(client, owner, event))
    # Past the opening memory cannot answer (the shuffle is due): the database shuffles.
    places = sorted(client.get(url, headers=h).json()["position"] for _, h in fans)
    assert places == [1, 2, 3]
    row = owner.execute("SELECT shuffled_entries FROM waiting_rooms WHERE event_id = %s", (event["id"],)).fetchone()
    assert row == (3,)


def test_at_the_opening_the_gateway_reads_the_crowds_positions_at_once(
    client: TestClient, gw: psycopg.Connection, owner: psycopg.Connection
) -> None:
    # Fans joined before the opening have no position in memory. When the shuffle is announced,
    # the gateway reads all their positions in one call, so their next polls (the whole crowd, at
    # the same moment) need no database call each.
    event, _ = queue_event(gw, rate=6)
    fans = [new_user(client, owner) for _ in range(12)]
    url = f"/events/{event['id']}/queue"
    for _, headers in fans:
        assert client.post(url, headers=headers).json()["position"] is None
    rooms = rooms_of(client)
    open_sale(owner, event, 1)
    eventually(mirror_is(client, owner, event))
    dba_call(gw, "open_waiting_rooms")  # the shuffle, by pg_cron's job (not by a poll of this gateway)
    eventually(lambda: all(rooms.places[(event["id"], u["id"])] is not None for u, _ in fans))
    recorded = dict(
        owner.execute(
            "SELECT user_id::text, position FROM waiting_room_entries WHERE event_id = %s", (event["id"],)
        ).fetchall()
    )
    owner.execute("REVOKE EXECUTE ON FUNCTION api.waiting_room_status FROM booking_gateway")
    try:
        serving = set()
        for user, headers in fans:
            if recorded[user["id"]] == 1:  # admitted 10 s after the opening: only the database signs
                continue
            place = client.get(url, headers=headers).json()
            assert place["status"] == "waiting" and place["position"] == recorded[user["id"]], place
            serving.add(place["position"] - place["ahead"] - 1)
        assert len(serving) == 1 and serving <= {0, 1}  # one serving position for all
    finally:
        owner.execute("GRANT EXECUTE ON FUNCTION api.waiting_room_status TO booking_gateway")
    # The function answers only positions, only for the users asked, at most 10,000 a call; the
    # gateway may call it, a stranger to the room gets nothing.
    rows = gw.execute(
        "SELECT count(*) FROM api.waiting_room_positions(%s, %s::uuid[])",
        (event["id"], [u["id"] for u, _ in fans[:5]] + ["00000000-0000-4000-8000-000000000000"]),
    ).fetchone()
    assert rows == (5,)


def test_once_the_sale_opens_one_poll_draws_and_the_others_hear_no_place_yet(
    client: TestClient, gw: psycopg.Connection, owner: psycopg.Connection
) -> None:
    # Between the opening and the draw's notice, the crowd's polls (all at once) must not each
    # call the database: one per second of each process does (and draws), the others are told
    # "no place yet" from memory, and to ask again soon.
    event, _ = queue_event(gw, rate=6)
    fans = [new_user(client, owner) for _ in range(6)]
    url = f"/events/{event['id']}/queue"
    for _, headers in fans:
        assert client.post(url, headers=headers).json()["position"] is None
    open_sale(owner, event, 1)
    eventually(mirror_is(client, owner, event))
    owner.execute("REVOKE EXECUTE ON FUNCTION api.waiting_room_status FROM booking_gateway")  # no draw can happen
    try:
        answers = [client.get(url, headers=headers) for _, headers in fans]
    finally:
        owner.execute("GRANT EXECUTE ON FUNCTION api.waiting_room_status TO booking_gateway")
    assert answers[0].status_code >= 400  # the one that went to the database
    for r in answers[1:]:
        assert r.status_code == 200, r.text
        place = r.json()
        assert (place["status"], place["position"], place["ahead"], place["eta_seconds"]) == (
            "waiting",
            None,
            None,
            None,
        )
        assert place["poll_after_seconds"] == POLL_MIN
    time.sleep(1.1)  # a second later, a poll goes to the database again: it draws
    drawn = client.get(url, headers=fans[0][1]).json()
    assert drawn["position"] is not None
