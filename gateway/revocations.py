"""Revoked sessions and role changes, held in memory by every gateway process.

Access tokens are checked without a database call, so what can take one back lives here: the
ids of revoked sessions (logout, refresh-token reuse, a DBA, a deleted user) and the latest role
change per user. PostgreSQL holds the truth (tables revoked_sessions and role_changes, 24 h)
and NOTIFYs channel `booking_revocations` on every change; the listener below applies each
notification and, since NOTIFY has no replay, loads the whole state on every (re)connect,
after LISTEN (so nothing falls between the load and the first notification).

Until the first load succeeds, nothing is known: authenticated requests are answered 503 busy
(the database is not reachable then anyway). While the listener reconnects, the state last
loaded is used, and whatever was revoked meanwhile applies when it is back (about a second).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import psycopg

log = logging.getLogger("gateway.revocations")

CHANNEL = "booking_revocations"
KEEP_SECONDS = 86400  # as long as the database keeps the rows: longer than any access token lives
PRUNE_EVERY = 3600.0


class Revocations:
    def __init__(self) -> None:
        self.sessions: dict[str, float] = {}  # revoked session id -> when this process learnt it
        self.roles: dict[str, tuple[str, float]] = {}  # user id -> (role, changed_at epoch seconds)
        self.loaded = False  # the whole state has been loaded at least once
        self.listening = False
        self._waiters: dict[str, asyncio.Event] = {}
        self._ready: asyncio.Event | None = None

    def forget(self) -> None:
        """Back to knowing nothing (as a process that just started)."""
        self.sessions, self.roles, self.loaded, self._ready = {}, {}, False, None

    # ---------------------------------------------------------------- changes

    def replace(self, state: dict[str, Any]) -> None:
        """The whole state from api.revocation_state()."""
        now = time.time()
        self.sessions = {str(sid): now for sid in state.get("sessions") or ()}
        self.roles = {str(r["user_id"]): (str(r["role"]), float(r["changed_at"])) for r in state.get("roles") or ()}
        self.loaded = True
        if self._ready is not None:
            self._ready.set()
        for sid in list(self._waiters):
            if sid in self.sessions:
                self._waiters.pop(sid).set()

    def revoke(self, session_id: str) -> None:
        self.sessions[session_id] = time.time()

    def apply(self, payload: str) -> None:
        """One notification: `s:<session id>` or `r:<user id>:<role>:<changed_at epoch>`."""
        kind, _, rest = payload.partition(":")
        try:
            if kind == "s":
                self.revoke(rest)
                waiter = self._waiters.pop(rest, None)
                if waiter is not None:
                    waiter.set()
                return
            if kind == "r":
                user_id, role, changed_at = rest.split(":")
                known = self.roles.get(user_id)
                if known is None or float(changed_at) >= known[1]:
                    self.roles[user_id] = (role, float(changed_at))
                return
        except ValueError:
            pass
        log.warning("ignored a malformed revocation notice %r", payload[:100])

    def prune(self) -> int:
        cutoff = time.time() - KEEP_SECONDS
        old = [sid for sid, seen in self.sessions.items() if seen < cutoff]
        for sid in old:
            del self.sessions[sid]
        for user_id in [u for u, (_, changed) in self.roles.items() if changed < cutoff]:
            del self.roles[user_id]
        return len(old)

    async def first_load(self, within: float) -> bool:
        """Wait (bounded) until the state has been loaded once."""
        if self.loaded:
            return True
        if self._ready is None:
            self._ready = asyncio.Event()
        try:
            await asyncio.wait_for(self._ready.wait(), within)
            return True
        except TimeoutError:
            return False

    # ---------------------------------------------------------------- logout's wait

    def expect(self, session_id: str) -> asyncio.Event:
        """An event set when this process's listener hears of this session's revocation; ask
        before causing it, so the notification cannot come first."""
        return self._waiters.setdefault(session_id, asyncio.Event())

    async def heard(self, event: asyncio.Event, within: float) -> bool:
        try:
            await asyncio.wait_for(event.wait(), within)
            return True
        except TimeoutError:
            return False

    def done(self, session_id: str, event: asyncio.Event) -> None:
        if self._waiters.get(session_id) is event:
            del self._waiters[session_id]


async def listen_for_revocations(revocations: Revocations, conninfo: str, retry_delay: float = 1.0) -> None:
    """Run for ever: LISTEN, load the whole state, apply every NOTIFY; reconnect after failures."""
    while True:
        try:
            async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
                await conn.execute(f"LISTEN {CHANNEL}")
                cur = await conn.execute("SELECT api.revocation_state()::text")
                row = await cur.fetchone()
                revocations.replace(json.loads(row[0]) if row and row[0] else {})
                revocations.listening = True
                log.info("listening for revocations (%s sessions revoked)", len(revocations.sessions))
                async for notice in conn.notifies():
                    revocations.apply(notice.payload)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("revocation listener lost: %s", exc)
        finally:
            revocations.listening = False
        await asyncio.sleep(retry_delay)


async def prune_forever(revocations: Revocations, every: float = PRUNE_EVERY) -> None:
    while True:
        await asyncio.sleep(every)
        revocations.prune()
