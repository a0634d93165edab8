"""Demo data for `make run`: an admin and a published event with ticket types. Idempotent."""

from __future__ import annotations

import secrets
from pathlib import Path

import psycopg

from dbctl.local import state_file
from gateway.passwords import hash_password

ADMIN_EMAIL = "admin@example.com"
DEMO_SLUG = "demo-onsale-night"


def seed(owner_url: str, login_file: Path | None = None) -> None:
    """login_file: where the demo admin's login is written (`.local/admin-login.txt` by default;
    `make cluster` keeps its own, its database's admin being another)."""
    with psycopg.connect(owner_url) as conn:
        if conn.execute("SELECT 1 FROM users WHERE email = %s", (ADMIN_EMAIL,)).fetchone() is None:
            password = secrets.token_urlsafe(12)
            conn.execute(
                "SELECT api.register_user(p_email => %s, p_password_hash => %s, p_full_name => %s)",
                (ADMIN_EMAIL, hash_password(password), "Demo Admin"),
            )
            conn.execute("SELECT api.set_user_role(%s, 'admin')", (ADMIN_EMAIL,))
            try:
                login = login_file or state_file("admin-login.txt")
                login.write_text(f"{ADMIN_EMAIL}\n{password}\n")
                login.chmod(0o600)
                where = f"also in {login}"
            except OSError as exc:  # a read-only folder (a container): the output is the record
                where = f"not written to a file: {exc.strerror}"
            print(f"Demo admin created: {ADMIN_EMAIL} / {password}  ({where})")

        if conn.execute("SELECT 1 FROM events WHERE slug = %s", (DEMO_SLUG,)).fetchone() is None:
            event = conn.execute(
                """
                SELECT api.create_event(
                  p_slug => %s, p_name => 'Demo Onsale Night', p_location => 'Hanoi Opera House',
                  p_start_time => now() + interval '30 days',
                  p_end_time => now() + interval '30 days 3 hours',
                  p_description => 'A demo event seeded by make run.')->>'id'
                """,
                (DEMO_SLUG,),
            ).fetchone()[0]  # type: ignore[index]
            for name, price, qty in (("Standard", "500000.00", 1000), ("VIP", "1500000.00", 100)):
                conn.execute(
                    "SELECT api.create_ticket_type(p_event_id => %s, p_name => %s,"
                    " p_price => %s::numeric, p_initial_quantity => %s)",
                    (event, name, price, qty),
                )
            conn.execute("SELECT api.publish_event(%s)", (event,))
            print(f"Demo event published: /events/{DEMO_SLUG}")
