"""Rate limits: per user and per client address, per route class, decided in PostgreSQL.

The counters are GCRA state in an unlogged table and the rules are rows of a table
(sql/functions/70_rate_limits.sql), so every gateway process and instance shares one budget
and DBAs change the rules live. To keep that affordable on the hot path, the checks of
concurrent requests are COALESCED: while one `api.check_rate_limits` call is in flight, new
checks queue and go together in the next call (at most `max_batch`); a lone request goes at
once (no timer, no added delay under light load). The call is its own transaction, so a
refused or failed business call still counts.

The failed-login throttle is per e-mail address: `api.get_user_credentials` (the login lookup)
counts the attempt before the password is checked and says whether the address is throttled;
`api.record_login_success` gives a successful attempt back, so only failures stay counted.

RATE_LIMITS=off: no check at all (no database call).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Address, IPv6Network, ip_address
from typing import Any

from starlette.requests import Request

from gateway.db import Database
from gateway.errors import ApiError, busy, internal_error, rate_limited, validation_failed

log = logging.getLogger("gateway.ratelimit")

CHECK_FUNCTION = "check_rate_limits"
LOGIN_SUCCESS_FUNCTION = "record_login_success"
ALL_FUNCTIONS = frozenset({CHECK_FUNCTION, LOGIN_SUCCESS_FUNCTION})
MAX_FORWARDED_ENTRIES = 32  # more hops than any real proxy chain: the header is refused

Networks = Sequence[IPv4Network | IPv6Network]


# ------------------------------------------------------------------ the client address


def address_key(host: str) -> str:
    """The rate-limit key of an address: IPv4 as is, IPv6 by its /64 (one host's or one
    subscriber's usual allocation), an IPv4-mapped IPv6 address as the IPv4 one. Something that
    is not an address (a test client's name, a Unix socket) is used as it is."""
    try:
        addr = ip_address(host)
    except ValueError:
        return host[:100]
    if isinstance(addr, IPv6Address):
        if addr.ipv4_mapped is not None:
            return str(addr.ipv4_mapped)
        return str(IPv6Network((addr, 64), strict=False))
    return str(addr)


def _trusted(host: str, trusted: Networks) -> bool:
    try:
        addr = ip_address(host)
    except ValueError:
        return False
    if isinstance(addr, IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return any(addr in net for net in trusted)


def _without_port(entry: str) -> str:
    """An X-Forwarded-For entry without the port some proxies append: `203.0.113.7:5678`,
    `[2001:db8::1]:443` (a bare IPv6 address has several colons and is left alone)."""
    if entry.startswith("["):
        host, bracket, _ = entry[1:].partition("]")
        return host if bracket else entry
    if entry.count(":") == 1:
        return entry.partition(":")[0]
    return entry


def client_address(peer: str | None, forwarded_for: Sequence[str], trusted: Networks) -> str:
    """The client's address: the TCP peer; when the peer is a trusted proxy, the right-most
    X-Forwarded-For entry that is not itself a trusted proxy (entries left of it are whatever
    the client sent and are never believed). A malformed entry a trusted proxy passed on is a
    422 (validation_failed): it cannot be keyed honestly."""
    host = peer or "unknown"
    if not trusted or not forwarded_for or not _trusted(host, trusted):
        return host
    entries = [e.strip() for value in forwarded_for for e in value.split(",")]
    if len(entries) > MAX_FORWARDED_ENTRIES:
        raise validation_failed(f"X-Forwarded-For has more than {MAX_FORWARDED_ENTRIES} entries")
    for entry in reversed(entries):
        try:
            host = str(ip_address(_without_port(entry)))
        except ValueError:
            raise validation_failed("X-Forwarded-For must be a list of IP addresses") from None
        if not _trusted(host, trusted):
            return host
    return host  # every hop is a trusted proxy: the left-most one is the client


@functools.lru_cache(maxsize=4096)
def _peer_key(peer: str) -> str:
    return address_key(peer)


def request_address(request: Request, trusted: Networks) -> str:
    """The rate-limit key of the request's client (hot path: a peer that is not a trusted proxy
    is keyed from a cache, and its headers are not even read)."""
    peer = request.client.host if request.client else "unknown"
    if not trusted or not _trusted_peer(peer, tuple(trusted)):
        return _peer_key(peer)
    return address_key(client_address(peer, request.headers.getlist("x-forwarded-for"), trusted))


@functools.lru_cache(maxsize=4096)
def _trusted_peer(peer: str, trusted: tuple[IPv4Network | IPv6Network, ...]) -> bool:
    return _trusted(peer, trusted)


# ------------------------------------------------------------------ the coalesced check


def _quoted(value: str | None) -> str:
    if value is None:
        return "NULL"
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def check_arrays(batch: Sequence[Check]) -> dict[str, str]:
    """The arguments of api.check_rate_limits as array literals (sent as text, read by PostgreSQL
    as the parameters' types): one string per array instead of a Python object per element, on
    the hot path. Classes come from the route table and user ids from verified tokens (UUIDs);
    addresses are quoted, whatever they hold."""
    return {
        "p_classes": "{" + ",".join(c.rate_class for c in batch) + "}",
        "p_user_ids": "{" + ",".join(c.user_id or "NULL" for c in batch) + "}",
        "p_addresses": "{" + ",".join(_quoted(c.address) for c in batch) + "}",
    }


@dataclass
class Check:
    rate_class: str
    user_id: str | None
    address: str | None
    future: asyncio.Future[int] | None = None  # set by RateLimiter.check


class RateLimiter:
    def __init__(self, db: Database, enabled: bool, max_batch: int = 200) -> None:
        self.db = db
        self.enabled = enabled
        self.max_batch = max_batch
        self._queue: deque[Check] = deque()
        self._draining: asyncio.Task[None] | None = None
        self.calls = 0  # database calls made, for tests and metrics

    async def check(self, rate_class: str, user_id: str | None, address: str | None) -> None:
        """Returns when the request may go on; raises 429 rate_limited (with Retry-After)."""
        if not self.enabled:
            return
        item = Check(rate_class, user_id, address, asyncio.get_running_loop().create_future())
        self._queue.append(item)
        if self._draining is None:  # nothing in flight: send at once
            self._draining = asyncio.get_running_loop().create_task(self._drain())
        assert item.future is not None
        retry_after = await item.future
        if retry_after > 0:
            raise rate_limited(retry_after)

    async def _drain(self) -> None:
        try:
            while self._queue:
                batch = [self._queue.popleft() for _ in range(min(self.max_batch, len(self._queue)))]
                failure = await self._send(batch)
                if failure is not None and failure.status == 503:
                    # The database is unreachable or overloaded: whoever queued behind this
                    # call would wait out the same timeout. Answer them now.
                    self._fail(list(self._queue), failure)
                    self._queue.clear()
        finally:
            # No await since the queue was last seen empty: nothing can have slipped in.
            self._draining = None
            while self._queue:  # only if this task died: never leave a request hanging
                item = self._queue.popleft()
                if item.future is not None and not item.future.done():
                    item.future.set_exception(busy())

    async def _send(self, batch: list[Check]) -> ApiError | None:
        """One call for the batch; every check in it gets its answer. Returns the error if the
        call failed (its checks get it too: the gateway does not serve what it cannot count)."""
        self.calls += 1
        failure: ApiError | None = None
        try:
            refused = await self.db.rows(CHECK_FUNCTION, check_arrays(batch))
            waits = dict(refused)  # position (from 1) -> seconds; the others passed
            for n, item in enumerate(batch, 1):
                if item.future is not None and not item.future.done():
                    item.future.set_result(int(waits.get(n, 0)))
        except ApiError as exc:  # the database is unreachable or busy: so is everything else
            failure = exc
        except Exception:
            log.exception("rate-limit check failed")
            failure = internal_error()
        finally:
            self._fail(batch, failure or busy())  # whoever has no answer yet (also: cancelled at shutdown)
        return failure

    @staticmethod
    def _fail(batch: list[Check], error: ApiError) -> None:
        for item in batch:
            if item.future is not None and not item.future.done():
                item.future.set_exception(error)

    # -------------------------------------------------------------- failed logins

    @staticmethod
    def login_throttled(credentials: dict[str, Any]) -> int:
        """Seconds a login must wait (0: go on), from api.get_user_credentials' answer."""
        return int(credentials.get("retry_after") or 0)

    async def login_succeeded(self, email: str) -> None:
        if self.enabled:
            await self.db.call(LOGIN_SUCCESS_FUNCTION, {"p_email": email})

    async def close(self) -> None:
        task = self._draining
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
