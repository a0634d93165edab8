"""The waiting room (issue 10, item 3): joining, the opening shuffle, admission at the event's
rate, admission tokens checked by the reserve core, pause and resume.

Time is compressed, never slept: the sale's opening (and the room's serving clock) is moved into
the past in SQL. Rates are chosen so every assertion has seconds of slack (one admission every
10 s at 6 a minute).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from starlette.testclient import TestClient

from gateway.sqlcalls import reserve_requests
from tests.conftest import call, dba_call, sqlstate_of
from tests.factories import make_event, make_user, stock, violations
from tests.http import PASSWORD_HASH, client_for, login, new_user

NOW = datetime.now(UTC)


def queue_event(conn: psycopg.Connection, rate: int = 6, quantity: int = 100) -> tuple[dict[str, Any], dict[str, Any]]:
    """A published event with a waiting room whose sale opens in an hour, and its ticket type."""
    event = make_event(conn, publish=False, p_queue_enabled=True, p_admission_rate_per_minute=rate)
    tt = call(conn, "create_ticket_type", p_event_id=event["id"], p_name="Standard", p_price="100000.00",
              p_initial_quantity=quantity, p_start_sale_time=datetime.now(UTC) + timedelta(hours=1))  # fmt: skip
    event = call(conn, "publish_event", p_event_id=event["id"])
    return event, tt


def open_sale(owner: psycopg.Connection, event: dict[str, Any], seconds_ago: float) -> None:
    """The sale opened `seconds_ago` (before anyone polled since)."""
    owner.execute(
        "UPDATE ticket_types SET start_sale_time = now() - make_interval(secs => %s) WHERE event_id = %s",
        (seconds_ago, event["id"]),
    )


def advance(owner: psycopg.Connection, event: dict[str, Any], seconds: float) -> None:
    """Let `seconds` pass for the room's clock: its opening and last rebase move into the past."""
    owner.execute(
        "UPDATE waiting_rooms SET opened_at = opened_at - make_interval(secs => %(s)s),"
        " base_at = base_at - make_interval(secs => %(s)s), paused_at = paused_at - make_interval(secs => %(s)s)"
        " WHERE event_id = %(e)s",
        {"s": seconds, "e": event["id"]},
    )


def join(conn: psycopg.Connection, event: dict[str, Any], user: dict[str, Any]) -> dict[str, Any]:
    place: dict[str, Any] = call(conn, "join_waiting_room", p_event_id=event["id"], p_user_id=user["id"])
    return place


def status(conn: psycopg.Connection, event: dict[str, Any], user: dict[str, Any]) -> dict[str, Any]:
    place: dict[str, Any] = call(conn, "waiting_room_status", p_event_id=event["id"], p_user_id=user["id"])
    return place


def overview(conn: psycopg.Connection, event: dict[str, Any]) -> dict[str, Any]:
    row = conn.execute("SELECT row_to_json(w) FROM api.waiting_room(%s) w", (event["id"],)).fetchone()
    assert row is not None
    result: dict[str, Any] = row[0]
    return result


PLACE_KEYS = {"event_id", "status", "position", "ahead", "eta_seconds", "admission_token", "admission_expires_at"}
HTTP_PLACE_KEYS = PLACE_KEYS | {"poll_after_seconds"}  # the gateway adds when to ask again


def mirrored(client: TestClient, change: Callable[[], None], within: float = 5.0) -> None:
    """Make a change in SQL, then wait until the gateway's waiting-room mirror has heard of it
    (NOTIFY is delivered asynchronously: a poll right after could be answered from the old state)."""
    rooms = client.app.state.gateway.rooms  # type: ignore[attr-defined]
    before = rooms.changes
    change()
    deadline = time.monotonic() + within
    while rooms.changes == before:
        assert time.monotonic() < deadline, "the gateway did not hear of the change"
        time.sleep(0.01)


def without_poll_hint(place: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in place.items() if k != "poll_after_seconds"}


# ------------------------------------------------------------------ order


def test_pre_opening_joiners_are_shuffled_by_a_recorded_seed_then_fifo(
    gw: psycopg.Connection, owner: psycopg.Connection
) -> None:
    event, _ = queue_event(gw)
    early = [make_user(gw) for _ in range(12)]
    for user in early:
        place = join(gw, event, user)
        assert set(place) == PLACE_KEYS
        # Before the opening nobody has a place yet (the shuffle decides it) and nobody is admitted.
        assert place["status"] == "waiting" and place["position"] is None and place["admission_token"] is None
        assert 3500 <= place["eta_seconds"] <= 3600  # until the opening
    open_sale(owner, event, 35)
    late = [make_user(gw) for _ in range(3)]
    late_places = [join(gw, event, user) for user in late]  # the first join after the opening shuffles

    room = owner.execute(
        "SELECT shuffle_seed, shuffled_entries, shuffled_through FROM waiting_rooms WHERE event_id = %s",
        (event["id"],),
    ).fetchone()
    assert room is not None
    seed, shuffled, through = room
    assert (shuffled, through) == (12, 12)
    positions = {user["id"]: status(gw, event, user)["position"] for user in early}
    assert sorted(positions.values()) == list(range(1, 13))
    # The order is sha256(seed || ':' || user id), recomputed here independently of the SQL.
    expected = sorted(early, key=lambda u: (hashlib.sha256(f"{seed}:{u['id']}".encode()).digest(), u["id"]))
    assert [positions[u["id"]] for u in expected] == list(range(1, 13))
    assert [positions[u["id"]] for u in early] != list(range(1, 13))  # not arrival order (p = 1/12!)
    # Later joiners: first come, first served, behind everyone who was there at the opening.
    assert [p["position"] for p in late_places] == [13, 14, 15]
    assert owner.execute("SELECT * FROM api.waiting_room_audit(%s)", (event["id"],)).fetchall() == []  # consistent

    # The audit is not vacuous: a tampered order is reported.
    first, second = expected[0], expected[1]
    for user, position in ((first, -1), (second, 1), (first, 2)):  # swapped (the unique index allows no overlap)
        owner.execute(
            "UPDATE waiting_room_entries SET position = %s WHERE event_id = %s AND user_id = %s",
            (position, event["id"], user["id"]),
        )
    audit = owner.execute("SELECT user_id::text FROM api.waiting_room_audit(%s)", (event["id"],)).fetchall()
    assert {r[0] for r in audit} == {first["id"], second["id"]}


def test_joining_again_returns_the_same_place_and_writes_nothing(
    gw: psycopg.Connection, owner: psycopg.Connection
) -> None:
    event, _ = queue_event(gw)
    open_sale(owner, event, 1)
    users = [make_user(gw) for _ in range(3)]
    firsts = [join(gw, event, u) for u in users]
    again = [join(gw, event, u) for u in users]
    assert [p["position"] for p in firsts] == [p["position"] for p in again] == [1, 2, 3]
    rows = owner.execute(
        "SELECT count(*), max(seq) FROM waiting_room_entries WHERE event_id = %s", (event["id"],)
    ).fetchone()
    assert rows == (3, 3)
    assert overview(owner, event)["joined"] == 3


def test_concurrent_joins_get_one_place_each_without_gaps(
    gw: psycopg.Connection, owner: psycopg.Connection, connect: Callable[..., psycopg.Connection]
) -> None:
    event, _ = queue_event(gw)
    open_sale(owner, event, 1)
    users = [make_user(gw) for _ in range(16)]
    jobs = users + [users[0]] * 8  # one fan joining from 9 tabs at once
    conns = [connect("booking_gateway") for _ in jobs]
    barrier = threading.Barrier(len(jobs))

    def run(i: int) -> int:
        barrier.wait()
        return int(join(conns[i], event, jobs[i])["position"])

    with ThreadPoolExecutor(len(jobs)) as pool:
        positions = list(pool.map(run, range(len(jobs))))
    assert len({positions[0], *positions[16:]}) == 1  # the same place in every tab
    assert sorted(positions[:16]) == list(range(1, 17))
    rows = owner.execute(
        "SELECT count(*), min(seq), max(seq), bool_and(position = seq) FROM waiting_room_entries WHERE event_id = %s",
        (event["id"],),
    ).fetchone()
    assert rows == (16, 1, 16, True)
    assert overview(owner, event)["joined"] == 16


# ------------------------------------------------------------------ admission at the rate


def test_admission_follows_the_rate_in_queue_order(gw: psycopg.Connection, owner: psycopg.Connection) -> None:
    event, _ = queue_event(gw, rate=6)  # one every 10 s
    users = [make_user(gw) for _ in range(10)]
    for u in users:
        join(gw, event, u)
    assert all(status(gw, event, u)["status"] == "waiting" for u in users)  # not open: nobody admitted
    open_sale(owner, event, 35)  # 35 s at 6 a minute: positions 1..3 (for 5 more seconds)
    places = {u["id"]: status(gw, event, u) for u in users}
    for place in places.values():
        if place["position"] <= 3:
            assert place["status"] == "admitted" and place["ahead"] == 0 and place["eta_seconds"] == 0
            assert place["admission_token"] and place["admission_expires_at"]
        else:
            assert place["status"] == "waiting" and place["admission_token"] is None
            assert place["ahead"] == place["position"] - 4
            # The next admission is 5 s away, then one every 10 s.
            expected = (place["position"] - 3) * 10 - 5
            assert expected - 5 <= place["eta_seconds"] <= expected + 1, place
    room = overview(owner, event)
    assert (room["serving"], room["admitted"], room["waiting"], room["tokens_issued"]) == (3, 3, 7, 3)

    advance(owner, event, 60)  # a minute later: 6 more
    admitted = sorted(status(gw, event, u)["position"] for u in users if status(gw, event, u)["status"] == "admitted")
    assert admitted == list(range(1, 10))
    assert overview(owner, event)["serving"] == 9


def test_idle_capacity_is_not_banked(gw: psycopg.Connection, owner: psycopg.Connection) -> None:
    """An hour of an empty room does not let the next crowd in at once."""
    event, _ = queue_event(gw, rate=6)
    open_sale(owner, event, 3600)
    users = [make_user(gw) for _ in range(5)]
    places = [join(gw, event, u) for u in users]
    # The first finds nobody waiting and is admitted at once; the rest wait their turn.
    assert places[0]["status"] == "admitted"
    assert [p["status"] for p in places[1:]] == ["waiting"] * 4
    assert overview(owner, event)["serving"] == 1


def test_a_rate_change_applies_from_now(gw: psycopg.Connection, owner: psycopg.Connection) -> None:
    event, _ = queue_event(gw, rate=6)
    users = [make_user(gw) for _ in range(30)]
    for u in users:
        join(gw, event, u)
    open_sale(owner, event, 35)
    status(gw, event, users[0])  # opens the room
    assert overview(owner, event)["serving"] == 3
    room = dba_call(gw, "set_waiting_room_rate", p_event_id=event["id"], p_rate=60)
    assert room["serving"] == 3 and room["admission_rate_per_minute"] == 60  # not 35 s at 60 a minute
    advance(owner, event, 5.5)
    assert overview(owner, event)["serving"] == 8
    # The admin route does the same (PATCH), through the same trigger.
    call(
        gw, "update_event", p_event_id=event["id"], p_changes=psycopg.types.json.Jsonb({"admission_rate_per_minute": 6})
    )
    assert overview(owner, event)["serving"] == 8
    assert sqlstate_of(owner, "set_waiting_room_rate", p_event_id=event["id"], p_rate=0) == "BKVAL"


def test_pause_freezes_admission_and_resume_counts_from_then(gw: psycopg.Connection, owner: psycopg.Connection) -> None:
    event, _ = queue_event(gw, rate=6)
    users = [make_user(gw) for _ in range(10)]
    for u in users:
        join(gw, event, u)
    open_sale(owner, event, 35)
    status(gw, event, users[0])
    room = dba_call(gw, "pause_waiting_room", p_event_id=event["id"])
    assert room["paused"] and room["serving"] == 3
    advance(owner, event, 600)  # ten minutes paused
    assert overview(owner, event)["serving"] == 3
    waiting = next(status(gw, event, u) for u in users if status(gw, event, u)["status"] == "waiting")
    assert waiting["eta_seconds"] is None  # nobody knows while paused
    assert dba_call(gw, "pause_waiting_room", p_event_id=event["id"])["serving"] == 3  # idempotent
    room = dba_call(gw, "resume_waiting_room", p_event_id=event["id"])
    assert not room["paused"] and room["serving"] == 3  # the pause is not made up for
    advance(owner, event, 25)
    assert overview(owner, event)["serving"] == 5
    assert dba_call(gw, "resume_waiting_room", p_event_id=event["id"])["serving"] == 5  # idempotent


def test_a_room_paused_before_anyone_joined_admits_nobody_until_resumed(
    gw: psycopg.Connection, owner: psycopg.Connection
) -> None:
    event, _ = queue_event(gw, rate=6)
    assert dba_call(gw, "pause_waiting_room", p_event_id=event["id"])["paused"] is True
    users = [make_user(gw) for _ in range(3)]
    for u in users:
        join(gw, event, u)
    open_sale(owner, event, 600)
    assert all(status(gw, event, u)["status"] == "waiting" for u in users)
    assert overview(owner, event)["serving"] == 0
    dba_call(gw, "resume_waiting_room", p_event_id=event["id"])
    advance(owner, event, 15)
    assert sorted(status(gw, event, u)["status"] for u in users) == ["admitted", "waiting", "waiting"]


def test_switching_the_room_off_sells_without_tokens(gw: psycopg.Connection, owner: psycopg.Connection) -> None:
    event, tt = queue_event(gw, rate=6)
    user = make_user(gw)
    join(gw, event, user)
    open_sale(owner, event, 5)
    args = {"p_user_id": user["id"], "p_ticket_type_id": tt["id"], "p_quantity": 1}
    assert sqlstate_of(gw, "reserve_tickets", **args) == "BKNAD"
    call(gw, "update_event", p_event_id=event["id"], p_changes=psycopg.types.json.Jsonb({"queue_enabled": False}))
    assert sqlstate_of(gw, "waiting_room_status", p_event_id=event["id"], p_user_id=user["id"]) == "BKNTF"
    assert call(gw, "reserve_tickets", **args)["status"] == "ACTIVE"
    # On again: the places are kept.
    call(gw, "update_event", p_event_id=event["id"], p_changes=psycopg.types.json.Jsonb({"queue_enabled": True}))
    assert status(gw, event, user)["position"] == 1


# ------------------------------------------------------------------ tokens and the reserve core


@pytest.fixture
def admitted(gw: psycopg.Connection, owner: psycopg.Connection) -> Iterator[dict[str, Any]]:
    """Two events with waiting rooms, open; users a and b admitted to the first, a to the second."""
    event, tt = queue_event(gw, rate=6)
    other, other_tt = queue_event(gw, rate=6)
    a, b, c = make_user(gw), make_user(gw), make_user(gw)
    for u in (a, b, c):
        join(gw, event, u)
    join(gw, other, a)
    open_sale(owner, event, 25)  # positions 1 and 2 admitted
    open_sale(owner, other, 25)
    places = {u["id"]: status(gw, event, u) for u in (a, b, c)}
    by_position = sorted((a, b, c), key=lambda u: places[u["id"]]["position"])
    first, second, third = by_position
    yield {
        "event": event, "tt": tt, "other": other, "other_tt": other_tt,
        "first": first, "second": second, "third": third,
        "token": places[first["id"]]["admission_token"], "second_token": places[second["id"]]["admission_token"],
        "a": a,
    }  # fmt: skip


@pytest.mark.parametrize("function", ["reserve_tickets", "reserve_tickets_optimistic"])
def test_the_core_refuses_a_reserve_without_a_valid_admission(
    gw: psycopg.Connection, owner: psycopg.Connection, admitted: dict[str, Any], function: str
) -> None:
    tt, first, second, third = admitted["tt"], admitted["first"], admitted["second"], admitted["third"]
    args = {"p_ticket_type_id": tt["id"], "p_quantity": 1}
    # No token (a DBA in psql too: the check is in the core, not in the gateway).
    assert sqlstate_of(gw, function, p_user_id=first["id"], **args) == "BKNAD"
    assert sqlstate_of(owner, function, p_user_id=first["id"], **args) == "BKNAD"
    assert (
        sqlstate_of(gw, function, p_user_id=first["id"], p_admission_token="v1.9999999999." + "0" * 64, **args)
        == "BKNAD"
    )
    # Another user's token, and the third (still waiting: no token of their own).
    assert sqlstate_of(gw, function, p_user_id=third["id"], p_admission_token=admitted["token"], **args) == "BKNAD"
    assert sqlstate_of(gw, function, p_user_id=second["id"], p_admission_token=admitted["token"], **args) == "BKNAD"
    # Malformed ones are refused the same way (never a cast error), also the right token with
    # its expiry written with a leading zero (nobody signs that form).
    _, expiry, mac = admitted["token"].split(".")
    for bad in [
        "",
        "v1.",
        "v1..",
        "v1.12a." + mac,
        "v2." + expiry + "." + mac,
        "v1." + "9" * 13 + "." + mac,
        "v1.0" + expiry + "." + mac,
        admitted["token"] + "0",
        admitted["token"].upper(),
        "v1.-1." + mac,
    ]:
        assert sqlstate_of(gw, function, p_user_id=first["id"], p_admission_token=bad, **args) == "BKNAD", bad
    # The right one: granted.
    hold = call(gw, function, p_user_id=first["id"], p_admission_token=admitted["token"], **args)
    assert hold["status"] == "ACTIVE"
    # A token of the user for another event does not open this one (and vice versa).
    a, other_tt = admitted["a"], admitted["other_tt"]
    other_token = status(gw, admitted["other"], a)["admission_token"]
    assert other_token is not None  # alone in that room: admitted
    assert sqlstate_of(gw, function, p_user_id=a["id"], p_ticket_type_id=other_tt["id"], p_quantity=1,
                       p_admission_token=other_token) is None  # fmt: skip
    if a is not first:
        assert sqlstate_of(gw, function, p_user_id=a["id"], p_admission_token=other_token, **args) == "BKNAD"
    assert stock(gw, tt) == 99 and violations(owner) == []


def test_the_batch_decides_admission_per_request(gw: psycopg.Connection, admitted: dict[str, Any]) -> None:
    tt, first, second, third = admitted["tt"], admitted["first"], admitted["second"], admitted["third"]
    requests = reserve_requests([(first["id"], tt["id"], 1), (second["id"], tt["id"], 1), (third["id"], tt["id"], 1)])
    rows = gw.execute(
        "SELECT * FROM api.reserve_tickets_batch(%s, p_admission_tokens => %s)",
        (requests, [admitted["token"], None, admitted["token"]]),
    ).fetchall()
    assert [state for _, state, _ in rows] == [None, "BKNAD", "BKNAD"]
    rows = gw.execute("SELECT * FROM api.reserve_tickets_batch(%s)", (requests,)).fetchall()
    assert [state for _, state, _ in rows] == ["BKNAD"] * 3
    # Keyed requests keep their tokens aligned after the keys are sorted out.
    rows = gw.execute(
        "SELECT * FROM api.reserve_tickets_batch(%s, %s, %s)",
        (requests, ["k1", None, "k3"], [admitted["token"], admitted["second_token"], None]),
    ).fetchall()
    assert [state for _, state, _ in rows] == [None, None, "BKNAD"]


def test_an_expired_admission_is_refused(
    gw: psycopg.Connection, owner: psycopg.Connection, admitted: dict[str, Any]
) -> None:
    event, tt, first = admitted["event"], admitted["tt"], admitted["first"]
    args = {"p_user_id": first["id"], "p_ticket_type_id": tt["id"], "p_quantity": 1}
    place = status(gw, event, first)
    expires = datetime.fromisoformat(place["admission_expires_at"])
    assert timedelta(minutes=9) < expires - datetime.now(UTC) <= timedelta(minutes=10)  # 10 minutes from admission
    # The admission began 11 minutes ago: the status hands out the token it had, now expired.
    owner.execute(
        "UPDATE waiting_room_entries SET admitted_at = now() - interval '11 minutes'"
        " WHERE event_id = %s AND user_id = %s",
        (event["id"], first["id"]),
    )
    place = status(gw, event, first)
    assert place["status"] == "admitted" and datetime.fromisoformat(place["admission_expires_at"]) < datetime.now(UTC)
    assert sqlstate_of(gw, "reserve_tickets", p_admission_token=place["admission_token"], **args) == "BKNAD"
    # A correctly signed token whose expiry passed a second ago.
    row = owner.execute(
        "SELECT internal.admission_token(%s, %s, extract(epoch FROM now())::bigint - 1, secret) FROM admission_secret",
        (event["id"], first["id"]),
    ).fetchone()
    assert row is not None
    assert sqlstate_of(gw, "reserve_tickets", p_admission_token=row[0], **args) == "BKNAD"
    # ... and one of the same shape signed with another key.
    forged = owner.execute(
        "SELECT internal.admission_token(%s, %s, extract(epoch FROM now())::bigint + 600, '\\x00'::bytea)",
        (event["id"], first["id"]),
    ).fetchone()
    assert forged is not None
    assert sqlstate_of(gw, "reserve_tickets", p_admission_token=forged[0], **args) == "BKNAD"


# ------------------------------------------------------------------ over HTTP


def test_http_join_poll_reserve_and_a_gateway_restart_keeps_every_place(dbname: str, owner: psycopg.Connection) -> None:
    with client_for(dbname) as client:
        _, admin_headers = new_user(client, owner, "admin")
        body = {"slug": "queued-show", "name": "Queued", "location": "Hanoi",
                "start_time": (NOW + timedelta(days=5)).isoformat(),
                "end_time": (NOW + timedelta(days=5, hours=2)).isoformat(), "queue_enabled": True}  # fmt: skip
        r = client.post("/admin/events", headers=admin_headers, json=body)
        assert r.status_code == 422 and r.json()["code"] == "validation_failed", r.text  # a room needs a rate
        r = client.post("/admin/events", headers=admin_headers, json={**body, "admission_rate_per_minute": 6})
        assert r.status_code == 201, r.text
        event = r.json()
        assert event["queue_enabled"] is True and event["admission_rate_per_minute"] == 6
        start = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
        tt = client.post(f"/admin/events/{event['id']}/ticket-types", headers=admin_headers,
                         json={"name": "GA", "price": "100000.00", "initial_quantity": 50,
                               "start_sale_time": start}).json()  # fmt: skip
        assert client.post(f"/admin/events/{event['id']}/publish", headers=admin_headers).status_code == 200
        plain = client.post("/admin/events", headers=admin_headers, json={**body, "slug": "plain-show",
                                                                          "queue_enabled": False}).json()  # fmt: skip
        assert plain["queue_enabled"] is False and plain["admission_rate_per_minute"] is None

        fans = [new_user(client, owner) for _ in range(4)]
        for _, headers in fans:
            r = client.post(f"/events/{event['id']}/queue", headers=headers)
            assert r.status_code == 200, r.text
            assert set(r.json()) == HTTP_PLACE_KEYS and r.json()["status"] == "waiting"
            again = client.post(f"/events/{event['id']}/queue", headers=headers)
            assert again.status_code == 200 and again.json()["position"] == r.json()["position"]
        # No waiting room, or not joined: 404.
        fan_headers = fans[0][1]
        assert client.get(f"/events/{plain['id']}/queue", headers=fan_headers).json()["code"] == "not_found"
        assert client.post(f"/events/{plain['id']}/queue", headers=fan_headers).status_code == 404
        _, outsider_headers = new_user(client, owner)
        assert client.get(f"/events/{event['id']}/queue", headers=outsider_headers).status_code == 404
        assert client.get(f"/events/{event['id']}/queue").status_code == 401
        assert client.get("/events/not-a-uuid/queue", headers=fan_headers).status_code == 422

        mirrored(client, lambda: open_sale(owner, event, 15))  # one admitted (position 1)
        before = {
            user["id"]: without_poll_hint(client.get(f"/events/{event['id']}/queue", headers=h).json())
            for user, h in fans
        }
        assert sorted(p["position"] for p in before.values()) == [1, 2, 3, 4]

    # A new gateway (a restart): everyone's place is where it was; nothing lived in the process.
    with client_for(dbname) as client:
        after = {
            user["id"]: without_poll_hint(client.get(f"/events/{event['id']}/queue", headers=h).json())
            for user, h in fans
        }
        assert after == before
        lucky, lucky_headers = next((u, h) for u, h in fans if after[u["id"]]["status"] == "admitted")
        unlucky_headers = next(h for u, h in fans if after[u["id"]]["status"] == "waiting")
        token = after[lucky["id"]]["admission_token"]
        reserve = {"ticket_type_id": tt["id"], "quantity": 2}
        r = client.post("/bookings/reserve", headers=lucky_headers, json=reserve)
        assert r.status_code == 403 and r.json()["code"] == "not_admitted", r.text
        r = client.post("/bookings/reserve", headers={**unlucky_headers, "X-Admission-Token": token}, json=reserve)
        assert r.status_code == 403 and r.json()["code"] == "not_admitted", r.text
        r = client.post("/bookings/reserve", headers={**lucky_headers, "X-Admission-Token": "x" * 300}, json=reserve)
        assert r.status_code == 422
        r = client.post("/bookings/reserve", headers={**lucky_headers, "X-Admission-Token": token}, json=reserve)
        assert r.status_code == 201, r.text
    assert violations(owner) == []


@pytest.mark.parametrize("overrides", [{}, {"reserve_coalesce": False}, {"reserve_strategy": "optimistic"}])
def test_every_reserve_strategy_asks_for_the_admission(
    dbname: str, gw: psycopg.Connection, owner: psycopg.Connection, admitted: dict[str, Any], overrides: dict[str, Any]
) -> None:
    """Coalesced batch (the default), one call per request, optimistic: all go through the core."""
    first = admitted["first"]
    owner.execute("UPDATE users SET password_hash = %s WHERE id = %s", (PASSWORD_HASH, first["id"]))
    with client_for(dbname, **overrides) as client:
        headers = login(client, first["email"])
        reserve = {"ticket_type_id": admitted["tt"]["id"], "quantity": 1}
        r = client.post("/bookings/reserve", headers=headers, json=reserve)
        assert r.status_code == 403 and r.json()["code"] == "not_admitted", r.text
        r = client.post("/bookings/reserve", headers={**headers, "X-Admission-Token": admitted["token"]}, json=reserve)
        assert r.status_code == 201, r.text
        # An event without a waiting room needs nothing.
        plain = make_event(gw)
        tt = call(gw, "create_ticket_type", p_event_id=plain["id"], p_name="GA", p_price="1.00", p_initial_quantity=5)
        r = client.post("/bookings/reserve", headers=headers, json={"ticket_type_id": tt["id"], "quantity": 1})
        assert r.status_code == 201, r.text
