"""pg_cron: jobs are scheduled only in cron.database_name, and the expiry job really runs."""

from __future__ import annotations

import time
from collections.abc import Iterator

import psycopg
import pytest

from dbctl.migrate import migrate
from tests.conftest import CRON_DB, call, create_database, url_for
from tests.factories import make_ticket_type, make_user


@pytest.fixture(scope="module")
def cron_db() -> Iterator[str]:
    create_database(CRON_DB)
    migrate(url_for(CRON_DB, "postgres"))
    yield CRON_DB


def test_jobs_are_scheduled_in_the_cron_database(cron_db: str) -> None:
    with psycopg.connect(url_for(cron_db, "postgres")) as conn:
        jobs = conn.execute("SELECT jobname, schedule, command, database, username FROM cron.job ORDER BY jobname")
        assert jobs.fetchall() == [
            (
                "booking-cleanup-reservations",
                "0 2 * * *",
                "SELECT api.cleanup_reservations()",
                cron_db,
                "booking_owner",
            ),
            (
                "booking-expire-pending-orders",
                "* * * * *",
                "SELECT api.expire_pending_orders()",
                cron_db,
                "booking_owner",
            ),
            ("booking-expire-reservations", "* * * * *", "SELECT api.expire_reservations()", cron_db, "booking_owner"),
            ("booking-open-waiting-rooms", "* * * * *", "SELECT api.open_waiting_rooms()", cron_db, "booking_owner"),
            (
                "booking-purge-idempotency-keys",
                "*/10 * * * *",
                "SELECT api.purge_idempotency_keys()",
                cron_db,
                "booking_owner",
            ),
            ("booking-purge-rate-limits", "*/10 * * * *", "SELECT api.purge_rate_limits()", cron_db, "booking_owner"),
            ("booking-purge-sessions", "*/10 * * * *", "SELECT api.purge_sessions()", cron_db, "booking_owner"),
        ]
    migrate(url_for(cron_db, "postgres"))  # rescheduling is idempotent
    with psycopg.connect(url_for(cron_db, "postgres")) as conn:
        assert conn.execute("SELECT count(*) FROM cron.job").fetchone() == (7,)


def test_other_databases_get_no_cron(owner: psycopg.Connection) -> None:
    assert owner.execute("SELECT count(*) FROM pg_extension WHERE extname = 'pg_cron'").fetchone() == (0,)


@pytest.mark.slow
def test_pg_cron_really_expires_holds(cron_db: str) -> None:
    with (
        psycopg.connect(url_for(cron_db, "booking_gateway"), autocommit=True) as gw,
        psycopg.connect(url_for(cron_db, "booking_owner"), autocommit=True) as owner,
    ):
        user, tt = make_user(gw), make_ticket_type(gw, quantity=5)
        res = call(gw, "reserve_tickets", p_user_id=user["id"], p_ticket_type_id=tt["id"], p_quantity=2)
        owner.execute("UPDATE order_reservations SET expires_at = now() - interval '1 s' WHERE id = %s", (res["id"],))
        deadline = time.monotonic() + 75  # one tick is at most a minute away
        status = None
        while time.monotonic() < deadline:
            status = owner.execute("SELECT status FROM order_reservations WHERE id = %s", (res["id"],)).fetchone()
            if status == ("EXPIRED",):
                break
            time.sleep(1)
        assert status == ("EXPIRED",), "pg_cron did not run api.expire_reservations() within 75 s"
        available = owner.execute("SELECT available_quantity FROM ticket_types WHERE id = %s", (tt["id"],))
        assert available.fetchone() == (5,)
        runs = owner.execute(
            "SELECT count(*) FROM cron.job_run_details d JOIN cron.job j USING (jobid)"
            " WHERE j.jobname = 'booking-expire-reservations' AND d.status = 'succeeded'"
        )
        assert runs.fetchone()[0] >= 1  # type: ignore[index]
