"""The waiting room's polls, answered from memory (issue 10, item 3).

PostgreSQL decides everything (sql/functions/80_waiting_room.sql): who joined and where, the
opening's shuffle, the admission rule, `admitted_at` and the admission tokens. The rule is a pure
function of a room's row and the clock, so every gateway process keeps a mirror of each room's
row (`Room`) and computes it itself:

    serving = 0 before the opening; base while paused or off;
              else base + floor((now - max(base_at, opened_at)) * rate / 60)

the same formula as `internal.waiting_room_serving`, in exact integer microseconds (a test
compares the two at many times). The mirror follows NOTIFY `booking_waiting_rooms` (a trigger on
`waiting_rooms` and one on the ticket types' sale start send each room's new state), and the
whole state is loaded again on every (re)connect, after LISTEN, like gateway/revocations.py.

A fan's position never changes once assigned, so each process remembers it (a bounded map) from
the join's or a poll's database answer. A poll is answered here, with no database call, when the
mirror is live and the room on, and either the fan's position is known and still ahead of the
serving position, or the room has not opened yet and the fan is known to have joined. Everything
else goes to the database: the first poll a process sees of a fan, the opening (whose poll
shuffles), and the moment a fan is admitted (the database records `admitted_at` and signs the
token); that admitted answer is then kept too (same token on every poll, as the database would
answer) until the key is rotated (NOTIFY 'k').

When a room's opening shuffle is announced, the listener reads, in one call per 10,000, the
positions of the fans this process remembers without one (api.waiting_room_positions), so the
crowd's first polls after the opening do not all call the database at once.

Clock: the database's clock decides. On every load the listener measures the offset between this
process's clock and PostgreSQL's (the quickest of a few round trips) and applies it when it is
larger than the measurement's own error; else none (one machine, or NTP: the clocks agree better
than the measure, and its noise would make two processes disagree by a place or two).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import sys
import time
from dataclasses import dataclass
from typing import Any

import psycopg

log = logging.getLogger("gateway.waiting_room")

CHANNEL = "booking_waiting_rooms"
LISTENER_NAME = "booking-gateway-waiting-rooms"  # application_name of the listener's connection
# Fans remembered per process, about 250 bytes each (so at most ~50 MB); past it the oldest are
# forgotten (their next poll asks the database once more).
PLACES_MAX = 200_000
US = 1_000_000
SERVING_MAX = 2_000_000_000  # as internal.waiting_room_serving caps it

# poll_after_seconds: a third of the ETA (polls get denser as the turn nears), within these
# bounds, +-20% jitter so a crowd that joined together does not poll together.
POLL_MIN, POLL_MAX, POLL_PAUSED = 2, 30, 15
# Once a room's sale has opened and until its draw (the shuffle) is announced, at most one poll
# per this many seconds of each process goes to the database, which draws; the others are told
# "no place yet" from memory (else the whole crowd, polling at once, would each call it).
OPENING_PROBE_SECONDS = 1.0


@dataclass(frozen=True)
class Room:
    """One room's row as internal.waiting_room_mirror sends it (times: Unix microseconds)."""

    event_id: str
    enabled: bool
    rate: int | None
    base: int
    base_at: int | None
    paused: bool
    opened_at: int | None
    shuffled: bool
    opens_at: int | None  # before the shuffle: when the sale opens (None: at publication, or no type yet)
    created_at: int | None = None  # which incarnation of the room (a room deleted and made again differs)

    @classmethod
    def from_json(cls, row: dict[str, Any]) -> Room:
        return cls(
            event_id=str(row["event_id"]),
            enabled=bool(row["enabled"]),
            rate=row["rate"],
            base=int(row["base"]),
            base_at=row["base_at"],
            paused=bool(row["paused"]),
            opened_at=row["opened_at"],
            shuffled=bool(row["shuffled"]),
            opens_at=row["opens_at"],
            created_at=row.get("created_at"),
        )

    def _start(self) -> int:
        assert self.opened_at is not None
        # greatest(base_at, opened_at) in SQL ignores a NULL base_at
        return self.opened_at if self.base_at is None else max(self.base_at, self.opened_at)

    def serving(self, now: int) -> int:
        """internal.waiting_room_serving: positions up to this one are admitted."""
        if self.opened_at is None or now < self.opened_at:
            return 0
        if self.paused or not self.enabled or self.rate is None:
            return self.base
        return min(self.base + (now - self._start()) * self.rate // (60 * US), SERVING_MAX)

    def eta_seconds(self, position: int, now: int) -> int | None:
        """internal.waiting_room_answer's ETA for a position not yet served: exact under the
        current rule (ceil of the seconds until base + elapsed * rate / 60 reaches it); None while
        paused or off."""
        if self.paused or not self.enabled or self.rate is None:
            return None
        left = (position - self.base) * 60 * US - (now - self._start()) * self.rate  # in us * rate
        return 0 if left <= 0 else -(-left // (self.rate * US))

    def answer(self, position: int | None, now: int) -> dict[str, Any] | None:
        """The waiting fan's place as api.waiting_room_status would answer it at `now`, or None when
        only the database can answer (admitted, or the opening's shuffle is due)."""
        if not self.enabled:
            return None
        if position is None:  # joined before the opening: no place until the shuffle
            if self.shuffled or self.opens_at is None or now >= self.opens_at:
                return None
            eta = -(-(self.opens_at - now) // US)
            return waiting(self.event_id, None, None, eta)
        if not self.shuffled:
            return None
        serving = self.serving(now)
        if position <= serving:
            return None
        return waiting(self.event_id, position, position - serving - 1, self.eta_seconds(position, now))


def waiting(event_id: str, position: int | None, ahead: int | None, eta: int | None) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "status": "waiting",
        "position": position,
        "ahead": ahead,
        "eta_seconds": eta,
        "admission_token": None,
        "admission_expires_at": None,
    }


def poll_after_seconds(place: dict[str, Any]) -> int | None:
    """When the client should ask again: None once admitted (nothing to wait for); else a third of
    the ETA within 2..30 s (15 s while paused: no ETA), with +-20% jitter."""
    if place.get("status") != "waiting":
        return None
    eta = place.get("eta_seconds")
    if eta is None and place.get("position") is None:  # the sale has opened, the draw is under way
        return POLL_MIN
    base = POLL_PAUSED if eta is None else eta / 3
    return max(POLL_MIN, min(POLL_MAX, round(base * random.uniform(0.8, 1.2))))


class WaitingRooms:
    """This process's mirror of the rooms and the places it has seen."""

    def __init__(self, places_max: int = PLACES_MAX) -> None:
        self.rooms: dict[str, Room] = {}
        # (event id, user id) -> position (None: joined before the opening, not shuffled yet)
        self.places: dict[tuple[str, str], int | None] = {}
        # (event id, user id) -> the database's "admitted" answer (JSON text with the token)
        self.admitted: dict[tuple[str, str], str] = {}
        self.places_max = places_max
        self.listening = False
        self.offset_us = 0  # PostgreSQL's clock minus ours
        self.memory_answers = 0  # polls answered without the database (for tests and the bench)
        self.changes = 0  # notices and loads applied (tests wait on it)
        # Bumped by whatever makes kept answers stale (a load, a room deleted, the key rotated): a
        # database answer read before such a change and arriving after it is not remembered.
        self.generation = 0
        # Rooms whose opening's shuffle this process learned of and whose remembered fans (joined
        # before it, no position yet) it has not asked the database about: the listener does, in
        # one call per 10,000 fans (fill_positions), so their next polls need no database call.
        self.to_fill: set[str] = set()
        self.opening_probes: dict[str, float] = {}  # event id -> when a poll last went to draw (monotonic)
        # Rooms a database answer showed drawn before their notice came: polls go to the database.
        self.drawn_unheard: set[str] = set()

    def now(self) -> int:
        return time.time_ns() // 1000 + self.offset_us

    # ---------------------------------------------------------------- the mirror

    def replace(self, state: dict[str, Any], offset_us: int) -> None:
        """The whole state from api.waiting_room_state() (on every (re)connect)."""
        rooms = {room.event_id: room for room in (Room.from_json(r) for r in state.get("rooms") or ())}
        # The places remembered stay only for rooms that are the same incarnation as before: a room
        # deleted (and maybe made again) while we were away took its places with it.
        kept = {
            event_id
            for event_id, room in rooms.items()
            if event_id in self.rooms and self.rooms[event_id].created_at == room.created_at
        }
        self.places = {key: position for key, position in self.places.items() if key[0] in kept}
        self.rooms = rooms
        self.to_fill = {event_id for event_id, room in rooms.items() if room.shuffled}
        self.drawn_unheard.clear()
        self.admitted.clear()  # a key rotated while we were away would make them stale
        self.offset_us = offset_us
        self.generation += 1
        self.changes += 1

    def apply(self, payload: str) -> None:
        """One notice: `r:<mirror JSON>`, `d:<event id>` (room deleted), `k` (key rotated), `x` or
        `x:rooms` (every place, or every room, truncated)."""
        kind, _, rest = payload.partition(":")
        try:
            if kind == "r":
                room = Room.from_json(json.loads(rest))
                before = self.rooms.get(room.event_id)
                self.rooms[room.event_id] = room
                if room.shuffled and (before is None or not before.shuffled):
                    self.to_fill.add(room.event_id)
                if room.shuffled:
                    self.drawn_unheard.discard(room.event_id)
            elif kind == "d":
                self.rooms.pop(rest, None)
                for key in [k for k in self.places if k[0] == rest]:
                    del self.places[key]
                for key in [k for k in self.admitted if k[0] == rest]:
                    del self.admitted[key]
                self.generation += 1
            elif kind == "k":
                self.admitted.clear()
                self.generation += 1
            elif kind == "x":  # TRUNCATE: every place (and with "x:rooms" every room) is gone
                self.places.clear()
                self.admitted.clear()
                if rest == "rooms":
                    self.rooms.clear()
                self.generation += 1
            else:
                raise ValueError(kind)
        except (ValueError, KeyError, TypeError):
            log.warning("ignored a malformed waiting-room notice %r", payload[:100])
            return
        self.changes += 1

    def unplaced(self, event_id: str) -> list[str]:
        """The fans of this room remembered without a position (they joined before the opening)."""
        return [user for (event, user), position in self.places.items() if event == event_id and position is None]

    def fill(self, event_id: str, positions: dict[str, int], generation: int) -> int:
        """Positions read after the shuffle (api.waiting_room_positions), unless something made the
        places stale meanwhile (a reload, a room deleted or truncated: the generation moved)."""
        if generation != self.generation:
            return 0
        filled = 0
        for user, position in positions.items():
            key = (event_id, user)
            if key in self.places and self.places[key] is None:
                self.places[key] = position
                filled += 1
        return filled

    # ---------------------------------------------------------------- polls

    def answer(self, event_id: str, user_id: str) -> str | None:
        """The poll's answer (JSON text, poll_after_seconds included) from memory, or None when the
        database must answer."""
        if not self.listening:
            return None
        room = self.rooms.get(event_id)
        if room is None or not room.enabled:
            return None
        key = (event_id, user_id)
        admitted = self.admitted.get(key)
        if admitted is not None:
            return admitted
        if key not in self.places:
            return None
        position, now = self.places[key], self.now()
        place = room.answer(position, now)
        if place is None:
            if position is not None or room.shuffled or (room.opens_at is not None and now < room.opens_at):
                return None
            if event_id in self.drawn_unheard:  # drawn, its notice on the way: the database knows
                return None
            # The sale has opened, the draw is not announced yet: one poll now and then draws.
            probed, clock = self.opening_probes.get(event_id), time.monotonic()
            if probed is None or clock - probed >= OPENING_PROBE_SECONDS:
                self.opening_probes[event_id] = clock
                return None
            place = waiting(event_id, None, None, None)
        self.memory_answers += 1
        place["poll_after_seconds"] = poll_after_seconds(place)
        return json.dumps(place)

    def learn(self, event_id: str, user_id: str, text: str | None, generation: int | None = None) -> str:
        """A database answer (join or poll): remember the fan's place; returns the answer with
        poll_after_seconds added. `generation`: self.generation when the call was sent; if it has
        moved since (say the key was rotated while the call ran: its token may be under the old
        key), the answer is passed on but not remembered, so the next poll asks again."""
        place: dict[str, Any] = json.loads(text or "{}")
        if generation is not None and generation != self.generation:
            place["poll_after_seconds"] = poll_after_seconds(place)
            return json.dumps(place)
        key = (sys.intern(event_id), user_id)  # one copy of an event's id for all its fans
        if key not in self.places and len(self.places) >= self.places_max:
            del self.places[next(iter(self.places))]
        self.places[key] = place.get("position")
        room = self.rooms.get(event_id)
        if place.get("position") is not None and room is not None and not room.shuffled:
            self.drawn_unheard.add(event_id)
        place["poll_after_seconds"] = poll_after_seconds(place)
        answer = json.dumps(place)
        if place.get("status") == "admitted" and self.listening:
            if key not in self.admitted and len(self.admitted) >= self.places_max:
                del self.admitted[next(iter(self.admitted))]
            self.admitted[key] = answer
        return answer


async def listen_for_waiting_rooms(rooms: WaitingRooms, conninfo: str, retry_delay: float = 1.0) -> None:
    """Run for ever: LISTEN, load every room, apply every NOTIFY; reconnect after failures."""
    filling: set[asyncio.Task[None]] = set()  # referenced until done (asyncio keeps weak references)
    while True:
        try:
            async with await psycopg.AsyncConnection.connect(
                conninfo, autocommit=True, application_name=LISTENER_NAME
            ) as conn:
                await conn.execute(f"LISTEN {CHANNEL}")
                offset = await clock_offset(conn)
                cur = await conn.execute("SELECT api.waiting_room_state()::text")
                row = await cur.fetchone()
                state = json.loads(row[0]) if row and row[0] else {}
                rooms.replace(state, offset)
                rooms.listening = True
                log.info("listening for waiting rooms (%s rooms, clock offset %d us)", len(rooms.rooms), offset)
                start_filling(rooms, conninfo, filling)
                async for notice in conn.notifies():
                    rooms.apply(notice.payload)
                    if rooms.to_fill:
                        start_filling(rooms, conninfo, filling)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("waiting-room listener lost: %s", exc)
        finally:
            rooms.listening = False
        await asyncio.sleep(retry_delay)


CLOCK_SAMPLES = 5


async def clock_offset(conn: psycopg.AsyncConnection[Any]) -> int:
    """PostgreSQL's clock minus ours, in microseconds, from the quickest of a few round trips (the
    server read its clock somewhere within it: assume the middle). 0 when the difference is within
    what the measurement can tell (half the round trip, plus a millisecond): on one machine, or
    with clocks kept by NTP, the clocks agree better than the measure, and applying its noise would
    make two gateway processes disagree about the serving position."""
    best: tuple[int, int] | None = None  # (round trip, offset)
    for _ in range(CLOCK_SAMPLES):
        before = time.time_ns() // 1000
        cur = await conn.execute("SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::bigint")
        row = await cur.fetchone()
        after = time.time_ns() // 1000
        if row is None or row[0] is None:
            continue
        sample = (after - before, int(row[0]) - (before + after) // 2)
        if best is None or sample[0] < best[0]:
            best = sample
    if best is None or abs(best[1]) <= best[0] // 2 + 1000:
        return 0
    return best[1]


def start_filling(rooms: WaitingRooms, conninfo: str, tasks: set[asyncio.Task[None]]) -> None:
    """A fill_positions task for each room in rooms.to_fill that has fans to fill (kept in `tasks`
    until done: asyncio holds only weak references to tasks)."""
    for event_id in list(rooms.to_fill):
        rooms.to_fill.discard(event_id)
        if rooms.unplaced(event_id):
            task = asyncio.create_task(fill_positions(rooms, conninfo, event_id))
            tasks.add(task)
            task.add_done_callback(tasks.discard)


FILL_CHUNK = 10_000  # api.waiting_room_positions takes at most this many users a call


async def fill_positions(rooms: WaitingRooms, conninfo: str, event_id: str) -> None:
    """After a room's opening shuffle: the positions of the fans this process remembers without one,
    in a few calls on a connection of its own (the listener's is busy listening). Without this, each
    of them would poll the database once right after the opening: the whole crowd at once."""
    generation = rooms.generation
    users = rooms.unplaced(event_id)
    filled = 0
    try:
        async with await psycopg.AsyncConnection.connect(
            conninfo, autocommit=True, application_name=LISTENER_NAME
        ) as conn:
            for start in range(0, len(users), FILL_CHUNK):
                cur = await conn.execute(
                    "SELECT user_id::text, position FROM api.waiting_room_positions(%s, %s::uuid[])",
                    (event_id, users[start : start + FILL_CHUNK]),
                )
                filled += rooms.fill(event_id, {str(u): int(p) for u, p in await cur.fetchall()}, generation)
    except Exception as exc:  # the polls then ask the database, as without this
        log.warning("could not read the positions of waiting room %s: %s", event_id, exc)
        return
    log.info("waiting room %s opened: %d places remembered of %d asked", event_id, filled, len(users))
