"""Concurrency on real connections: no oversell, no deadlock, no hang."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
import pytest

from tests.conftest import call, dba_call, sqlstate_of
from tests.factories import make_ticket_type, make_user, stock, violations

WORKERS = 24


def hammer(
    connect: Callable[..., psycopg.Connection], jobs: list[Any], work: Callable[[psycopg.Connection, Any], Any]
) -> list[Any]:
    """Run work(conn, job) for every job on WORKERS threads, each with its own connection,
    all released at once by a barrier."""
    conns = [connect("booking_gateway") for _ in range(WORKERS)]
    barrier = threading.Barrier(WORKERS)
    chunks = [jobs[i::WORKERS] for i in range(WORKERS)]

    def run(index: int) -> list[Any]:
        barrier.wait()
        return [work(conns[index], job) for job in chunks[index]]

    with ThreadPoolExecutor(WORKERS) as pool:
        return [r for chunk in pool.map(run, range(WORKERS)) for r in chunk]


def try_reserve(function: str) -> Callable[[psycopg.Connection, Any], Any]:
    def work(conn: psycopg.Connection, job: tuple[str, str, int]) -> tuple[int, str | None]:
        user_id, tt_id, quantity = job
        state = sqlstate_of(conn, function, p_user_id=user_id, p_ticket_type_id=tt_id, p_quantity=quantity)
        return quantity, state

    return work


@pytest.mark.parametrize("function", ["reserve_tickets", "reserve_tickets_optimistic"])
@pytest.mark.parametrize("mixed", [False, True], ids=["qty1", "qty1-4"])
def test_last_100_tickets_are_never_oversold(
    gw: psycopg.Connection, connect: Any, owner: psycopg.Connection, function: str, mixed: bool
) -> None:
    tt = make_ticket_type(gw, quantity=100)
    users = [make_user(gw) for _ in range(20)]
    rng = random.Random(7)
    jobs = [(users[i % 20]["id"], tt["id"], rng.randint(1, 4) if mixed else 1) for i in range(240)]
    results = hammer(connect, jobs, try_reserve(function))

    granted = sum(q for q, state in results if state is None)
    outcomes = Counter(state for _, state in results)
    assert set(outcomes) <= {None, "BKSLD", "BKBSY"}, outcomes
    held = owner.execute(
        "SELECT coalesce(sum(quantity), 0) FROM order_reservations WHERE ticket_type_id = %s AND status = 'ACTIVE'",
        (tt["id"],),
    ).fetchone()
    assert held == (granted,)
    assert granted + stock(gw, tt) == 100
    if function == "reserve_tickets":
        # Pessimistic: nothing is refused while stock could serve the request.
        assert granted > 100 - 4 if mixed else granted == 100
    assert outcomes[None] > 0 and outcomes["BKSLD"] > 0
    assert violations(gw) == []


def test_expiry_and_cleanup_never_deadlock_with_live_traffic(
    gw: psycopg.Connection, connect: Any, owner: psycopg.Connection
) -> None:
    types = [make_ticket_type(gw, quantity=200) for _ in range(3)]
    users = [make_user(gw) for _ in range(10)]
    # Old finished holds for cleanup to chew on while traffic runs.
    for tt in types:
        owner.execute(
            "INSERT INTO order_reservations (user_id, ticket_type_id, quantity, status, expires_at, created_at)"
            " SELECT %s, %s, 1, 'EXPIRED', now() - interval '40 days', now() - interval '40 days'"
            " FROM generate_series(1, 300)",
            (users[0]["id"], tt["id"]),
        )
    # Run at least 6 s, and on a slow machine until enough of each kind has happened (at most 60 s).
    started = time.monotonic()
    errors: Counter[str] = Counter()
    done: Counter[str] = Counter()
    lock = threading.Lock()

    def enough() -> bool:
        return done["complete"] > 20 and done["cancel"] > 20 and done["expired"] > 0 and done["cleaned"] == 900

    def running() -> bool:
        elapsed = time.monotonic() - started
        return elapsed < 6.0 or (elapsed < 60.0 and not enough())

    def shopper(seed: int) -> None:
        # Holds last 300 ms here, so expiry and reclaim find plenty to do.
        conn = connect("booking_gateway", **{"booking.hold_period": "300ms"})
        rng = random.Random(seed)
        while running():
            tt, user = rng.choice(types), rng.choice(users)
            try:
                res = call(conn, "reserve_tickets", p_user_id=user["id"], p_ticket_type_id=tt["id"],
                           p_quantity=rng.randint(1, 3))  # fmt: skip
                action = rng.choice(["complete", "cancel", "abandon"])
                if action == "complete":
                    call(conn, "complete_booking", p_user_id=user["id"], p_reservation_id=res["id"],
                         p_payment_method="CARD")  # fmt: skip
                elif action == "cancel":
                    call(conn, "cancel_reservation", p_user_id=user["id"], p_reservation_id=res["id"])
                with lock:
                    done[action] += 1
            except psycopg.Error as exc:
                with lock:
                    errors[exc.diag.sqlstate or "?"] += 1

    def janitor() -> None:
        conn = connect("booking_owner")
        while running():
            try:
                expired = call(conn, "expire_reservations")
                cleaned = call(conn, "cleanup_reservations")
                with lock:  # compute first: `d[k] += call()` reads d[k] before the call
                    done["expired"] += expired
                    done["cleaned"] += cleaned
            except psycopg.Error as exc:
                with lock:
                    errors["janitor " + (exc.diag.sqlstate or "?")] += 1
            time.sleep(0.01)

    with ThreadPoolExecutor(12) as pool:
        futures = [pool.submit(shopper, i) for i in range(10)] + [pool.submit(janitor) for _ in range(2)]
        for f in futures:
            f.result()

    assert "40P01" not in errors, f"deadlock: {errors}"
    # Allowed: BKSLD (stock ran low), BKREX (a hold expired between reserve and complete).
    assert set(errors) <= {"BKSLD", "BKREX"}, errors
    assert enough(), done
    assert violations(gw) == []
    call(owner, "expire_reservations")
    assert violations(gw) == []


def test_a_held_lock_turns_into_lock_timeout_not_a_hang(gw: psycopg.Connection, connect: Any) -> None:
    tt, user = make_ticket_type(gw), make_user(gw)
    blocker = connect("booking_owner", autocommit=False)
    blocker.execute("SELECT 1 FROM ticket_types WHERE id = %s FOR UPDATE", (tt["id"],))
    started = time.monotonic()
    state = sqlstate_of(gw, "reserve_tickets", p_user_id=user["id"], p_ticket_type_id=tt["id"], p_quantity=1)
    waited = time.monotonic() - started
    blocker.rollback()
    assert state == "55P03", "lock_not_available: the gateway maps it to 503 busy"
    # lock_timeout is 2 s; the statement_timeout (5 s) would be another SQLSTATE. The upper
    # bound only says "not a hang" and is generous for a loaded machine.
    assert 1.5 < waited < 30


def test_expiry_skips_a_locked_ticket_type_instead_of_waiting(
    gw: psycopg.Connection, connect: Any, owner: psycopg.Connection
) -> None:
    tt, user = make_ticket_type(gw), make_user(gw)
    res = call(gw, "reserve_tickets", p_user_id=user["id"], p_ticket_type_id=tt["id"], p_quantity=1)
    owner.execute("UPDATE order_reservations SET expires_at = now() - interval '1 s' WHERE id = %s", (res["id"],))
    blocker = connect("booking_owner", autocommit=False)
    blocker.execute("SELECT 1 FROM ticket_types WHERE id = %s FOR NO KEY UPDATE", (tt["id"],))
    started = time.monotonic()
    assert dba_call(gw, "expire_reservations") == 0
    # Waiting for the lock would take its 2 s lock_timeout (and then fail): well under that.
    assert time.monotonic() - started < 1.9
    blocker.rollback()
    assert dba_call(gw, "expire_reservations") == 1


def test_two_completes_of_one_hold_make_one_order(gw: psycopg.Connection, connect: Any) -> None:
    tt, user = make_ticket_type(gw), make_user(gw)
    res = call(gw, "reserve_tickets", p_user_id=user["id"], p_ticket_type_id=tt["id"], p_quantity=2)
    jobs = [res["id"]] * WORKERS

    def work(conn: psycopg.Connection, reservation_id: str) -> str | None:
        return sqlstate_of(conn, "complete_booking", p_user_id=user["id"], p_reservation_id=reservation_id,
                           p_payment_method="CARD")  # fmt: skip

    outcomes = Counter(hammer(connect, jobs, work))
    assert outcomes == {None: 1, "BKRNA": WORKERS - 1}
    assert len(call(gw, "my_bookings", p_user_id=user["id"])) == 1
    assert violations(gw) == []
