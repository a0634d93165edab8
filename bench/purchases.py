"""Purchase load for the failover test and drill: closed-loop clients, each buying one ticket
after the other (reserve, then complete, no think time) as its own user, every answer recorded;
then the database is checked against the answers (every 201 is there, nothing half-done)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import jwt
import psycopg

RETRY = (0, 502, 503, 504)  # no answer, or the service unavailable for now: the same user tries again


@dataclass
class Answer:
    at: float  # monotonic time the answer came
    step: str  # reserve | complete
    status: int  # 0: no HTTP answer (connection refused/reset, timeout)
    code: str | None  # the error body's code, or the transport error's class
    id: str | None  # the reservation's / order's id on 201


@dataclass
class Load:
    """`clients` closed loops against `base_url`, until stop() is called."""

    base_url: str
    users: list[str]
    ticket_type_id: str
    secret: str
    clients: int = 8
    timeout: float = 30.0
    answers: list[Answer] = field(default_factory=list)
    _stop: bool = False

    def tokens(self) -> Iterator[dict[str, str]]:
        for user in self.users:
            now = int(time.time())
            claims = {"sub": user, "iat": now, "exp": now + 3600, "iss": "booking-gateway", "role": "user",
                      "sid": str(uuid.uuid4())}  # fmt: skip
            yield {"Authorization": f"Bearer {jwt.encode(claims, self.secret, algorithm='HS256')}"}

    def stop(self) -> None:
        self._stop = True

    async def run(self) -> None:
        headers = self.tokens()
        limits = httpx.Limits(max_connections=self.clients, max_keepalive_connections=self.clients)
        async with httpx.AsyncClient(base_url=self.base_url, timeout=self.timeout, limits=limits) as client:
            await asyncio.gather(*(self._client(client, headers) for _ in range(self.clients)))

    async def _client(self, client: httpx.AsyncClient, headers: Iterator[dict[str, str]]) -> None:
        auth = None
        reserve_key = ""
        while not self._stop:
            if auth is None:
                auth = next(headers, None)
                # As the API asks of a client that retries: one Idempotency-Key per purchase step,
                # the same on every try, so a try whose answer was lost (a kill, a failover) is
                # answered with its first outcome instead of running twice.
                reserve_key = str(uuid.uuid4())
            if auth is None:
                return  # every user has bought
            body = {"ticket_type_id": self.ticket_type_id, "quantity": 1}
            reservation = await self._post(client, "reserve", "/bookings/reserve", body,
                                           {**auth, "Idempotency-Key": reserve_key})  # fmt: skip
            if reservation is None:
                if self.answers[-1].status not in RETRY:
                    auth = None  # refused for good: the next user
                await asyncio.sleep(0.05)  # a short pause: no hammering while nothing answers
                continue
            order = None
            complete = {**auth, "Idempotency-Key": str(uuid.uuid4())}
            for _ in range(5):  # the hold is ours for minutes: try the payment again after a failure
                order = await self._post(client, "complete", f"/bookings/complete/{reservation}",
                                         {"payment_method": "CARD"}, complete)  # fmt: skip
                if order is not None or self._stop or self.answers[-1].status not in RETRY:
                    break
                await asyncio.sleep(0.2)
            auth = None

    async def _post(self, client: httpx.AsyncClient, step: str, path: str, body: dict[str, Any],
                    auth: dict[str, str]) -> str | None:  # fmt: skip
        try:
            r = await client.post(path, json=body, headers=auth)
        except httpx.HTTPError as exc:
            self.answers.append(Answer(time.monotonic(), step, 0, type(exc).__name__, None))
            return None
        code = None
        ident = None
        try:
            data = r.json()
            if r.status_code == 201:
                ident = str(data["id"])
            elif isinstance(data, dict):
                code = str(data.get("code") or data.get("error", {}).get("code"))
        except (ValueError, KeyError, AttributeError):
            code = "unparsed"
        if r.status_code >= 500 and "x-served-by" not in r.headers:
            code = f"{code} (HAProxy)"  # answered by HAProxy itself: no gateway was in service
        self.answers.append(Answer(time.monotonic(), step, r.status_code, code, ident))
        return ident

    # ---- figures -------------------------------------------------------------------------------
    def ok(self, step: str) -> list[Answer]:
        return [a for a in self.answers if a.step == step and a.status == 201]

    def failures(self, since: float = 0.0, until: float = float("inf")) -> Counter[str]:
        """Failed answers between two times, by `step status code`."""
        return Counter(f"{a.step} {a.status or 'no answer'} {a.code or ''}".strip()
                       for a in self.answers if a.status != 201 and since <= a.at <= until)  # fmt: skip

    def first_success_after(self, t: float, step: str = "complete") -> float | None:
        return min((a.at for a in self.answers if a.at > t and a.step == step and a.status == 201), default=None)

    def last_success_before(self, t: float) -> float | None:
        return max((a.at for a in self.answers if a.at <= t and a.status == 201), default=None)


def verify(conn: psycopg.Connection[Any], load: Load) -> dict[str, Any]:
    """Every reservation and order answered 201 is in the database, every PAID order has its
    tickets, and api.check_invariants() finds nothing. Returns the figures; the lists of what is
    missing are empty when all is well."""
    reservations = [a.id for a in load.ok("reserve")]
    orders = [a.id for a in load.ok("complete")]
    found_res = {r[0] for r in conn.execute("SELECT id::text FROM order_reservations WHERE id = ANY(%s::uuid[])",
                                            (reservations,))}  # fmt: skip
    paid = {r[0] for r in conn.execute("SELECT id::text FROM orders WHERE id = ANY(%s::uuid[]) AND status = 'PAID'",
                                       (orders,))}  # fmt: skip
    without_tickets = conn.execute(
        "SELECT o.id::text FROM orders o WHERE o.status = 'PAID' AND NOT EXISTS"
        " (SELECT 1 FROM tickets t WHERE t.order_id = o.id)"
    ).fetchall()
    violations = conn.execute("SELECT * FROM api.check_invariants()").fetchall()
    return {
        "reservations_201": len(reservations),
        "orders_201": len(orders),
        "missing_reservations": sorted(set(reservations) - found_res),
        "missing_or_unpaid_orders": sorted(set(orders) - paid),
        "paid_without_tickets": [r[0] for r in without_tickets],
        "violations": violations,
        "paid_orders_in_db": conn.execute("SELECT count(*) FROM orders WHERE status = 'PAID'").fetchone()[0],  # type: ignore[index]
    }


def clean(figures: dict[str, Any]) -> bool:
    return not any(figures[k] for k in ("missing_reservations", "missing_or_unpaid_orders",
                                        "paid_without_tickets", "violations"))  # fmt: skip
