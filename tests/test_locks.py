"""The lock discipline, checked with real concurrent transactions: who waits for whom, and for
how long. Each test names the design rule it guards (docs/DESIGN-NOTES.md, "Locks")."""

from __future__ import annotations

import threading
from typing import Any

import psycopg
import pytest

from tests.conftest import call, sqlstate_of
from tests.factories import make_ticket_type, make_user, reserve, violations


def test_a_complete_does_not_wait_while_a_reserve_holds_the_ticket_type(gw: psycopg.Connection, connect: Any) -> None:
    """Reserve takes the ticket type FOR NO KEY UPDATE; a complete's foreign keys take FOR KEY
    SHARE on the same row, which NO KEY UPDATE does not block. With FOR UPDATE every complete
    would queue behind the onsale crowd (and here run into the lock timeout)."""
    tt, buyer, crowd = make_ticket_type(gw), make_user(gw), make_user(gw)
    hold = reserve(gw, buyer, tt)
    reserving = connect(autocommit=False)  # the gateway's role, inside a reserve's transaction
    call(reserving, "reserve_tickets", p_user_id=crowd["id"], p_ticket_type_id=tt["id"], p_quantity=1)
    try:
        # If the complete had to wait for the reserve's transaction (which ends only after this
        # call), it would fail with 55P03 when complete_booking's own 2 s lock timeout ran out.
        order = call(connect(), "complete_booking", p_user_id=buyer["id"], p_reservation_id=hold["id"],
                     p_payment_method="CARD")  # fmt: skip
        assert order["status"] == "PAID"
    finally:
        reserving.rollback()
    assert violations(gw) == []


@pytest.mark.parametrize("function", ["reserve_tickets", "reserve_tickets_optimistic", "cancel_reservation"])
def test_a_dba_session_gets_the_functions_own_lock_timeout(gw: psycopg.Connection, connect: Any, function: str) -> None:
    """The api functions carry `SET lock_timeout = 2s` themselves: a DBA's psql session (no role
    setting; here a session that would wait a minute) still gets 55P03 after about 2 s, not a
    hang, whatever the caller's own setting."""
    tt, user = make_ticket_type(gw), make_user(gw)
    hold = reserve(gw, user, tt)
    blocker = connect("booking_owner", autocommit=False)
    blocker.execute("SELECT 1 FROM ticket_types WHERE id = %s FOR UPDATE", (tt["id"],))
    dba = connect("booking_owner", lock_timeout="60s", statement_timeout="30s")
    args: dict[str, Any] = {"p_user_id": user["id"]}
    if function == "cancel_reservation":
        args["p_reservation_id"] = hold["id"]
    else:
        args |= {"p_ticket_type_id": tt["id"], "p_quantity": 1}
    try:
        state = sqlstate_of(dba, function, **args)
    finally:
        blocker.rollback()
    # 57014 (statement_timeout after 30 s) would mean the function's own lock_timeout is gone.
    assert state == "55P03"


def test_a_batch_that_reclaims_after_granting_part_of_it_keeps_the_invariant(
    gw: psycopg.Connection, owner: psycopg.Connection
) -> None:
    """Requests early in a batch are granted from stock; a later one finds stock short and
    reclaims dead holds. The re-read stock must not count this batch's own grants twice."""
    tt, user = make_ticket_type(gw, quantity=6), make_user(gw)
    dead = [reserve(gw, user, tt, 2) for _ in range(2)]  # 4 seats behind dead holds, 2 on sale
    owner.execute(
        "UPDATE order_reservations SET expires_at = now() - interval '1 s' WHERE id = ANY(%s::uuid[])",
        ([d["id"] for d in dead],),
    )
    literal = "{" + ",".join(f'"({user["id"]},{tt["id"]},{q})"' for q in (2, 3, 1, 1)) + "}"
    rows = gw.execute("SELECT reservation IS NOT NULL, sqlstate FROM api.reserve_tickets_batch(%s)",
                      (literal,)).fetchall()  # fmt: skip
    # 2 from stock; 3 needs the reclaim (4 back: 4 left); then 1 -> 0 left; the last is refused.
    assert rows == [(True, None), (True, None), (True, None), (False, "BKSLD")]
    assert owner.execute("SELECT available_quantity FROM ticket_types WHERE id = %s", (tt["id"],)).fetchone() == (0,)
    assert violations(gw) == []


def test_reserves_of_one_ticket_type_queue_on_its_row_and_never_deadlock(gw: psycopg.Connection, connect: Any) -> None:
    """Two batches naming the same two ticket types in opposite orders lock them in id order,
    so they serialise instead of deadlocking (40P01)."""
    a, b, user = make_ticket_type(gw), make_ticket_type(gw), make_user(gw)
    first = connect(autocommit=False)
    second = connect()
    rows_ab = "{" + f'"({user["id"]},{a["id"]},1)","({user["id"]},{b["id"]},1)"' + "}"
    rows_ba = "{" + f'"({user["id"]},{b["id"]},1)","({user["id"]},{a["id"]},1)"' + "}"
    first.execute("SELECT * FROM api.reserve_tickets_batch(%s)", (rows_ab,)).fetchall()
    outcome: dict[str, Any] = {}

    def other() -> None:
        try:
            query = "SELECT sqlstate FROM api.reserve_tickets_batch(%s)"
            outcome["rows"] = second.execute(query, (rows_ba,)).fetchall()
        except psycopg.Error as exc:
            outcome["error"] = exc.diag.sqlstate

    waiting = threading.Thread(target=other)
    waiting.start()
    waiting.join(0.5)  # it queues behind `first` (not a timing assertion: the result is checked below)
    first.commit()
    waiting.join(10)
    assert outcome == {"rows": [(None,), (None,)]}
    assert violations(gw) == []
