"""Helpers for HTTP tests: the real app on the test database."""

from __future__ import annotations

import time
import uuid
from typing import Any

import jwt
import psycopg
from starlette.testclient import TestClient

from gateway.app import create_app
from gateway.config import Settings
from gateway.passwords import hash_password
from tests.conftest import url_for
from tests.factories import make_user

SECRET = "test-secret-that-is-long-enough-for-hs256-0123456789"
PASSWORD = "correct-horse-battery"
PASSWORD_HASH = hash_password(PASSWORD)


def settings_for(dbname: str, **overrides: Any) -> Settings:
    # Rate limits off: the suite plays many users from one address (tests/test_rate_limits.py turns them on).
    base = Settings(
        database_url=url_for(dbname, "booking_gateway"), jwt_secret=SECRET, pool_min=1, pool_max=8, rate_limits=False
    )
    return base.replace(**overrides)


def client_for(dbname: str, **overrides: Any) -> TestClient:
    return TestClient(create_app(settings_for(dbname, **overrides)), raise_server_exceptions=False)


def login(client: TestClient, email: str, password: str = PASSWORD) -> dict[str, str]:
    r = client.post("/auth/login", json={"email": email, "password": password})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def new_user(
    client: TestClient, owner: psycopg.Connection, role: str = "user"
) -> tuple[dict[str, Any], dict[str, str]]:
    """A user made in SQL with a known password hash (argon2 once per session), then logged in over HTTP."""
    user = make_user(owner, role)
    owner.execute("UPDATE users SET password_hash = %s WHERE id = %s", (PASSWORD_HASH, user["id"]))
    return user, login(client, user["email"])


def forged(claims: dict[str, Any], key: str = SECRET, algorithm: str = "HS256") -> dict[str, str]:
    base = {
        "iat": int(time.time()),
        "exp": int(time.time()) + 600,
        "iss": "booking-gateway",
        "role": "user",
        "sid": str(uuid.uuid4()),  # a session of its own, never revoked
    }
    token = jwt.encode({**base, **claims}, key, algorithm=algorithm)
    return {"Authorization": f"Bearer {token}"}


def table_counts(owner: psycopg.Connection) -> dict[str, int]:
    tables = ["users", "events", "ticket_types", "order_reservations", "orders", "order_items", "payments", "tickets"]
    counts = {t: owner.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in tables}  # type: ignore[index]
    counts["stock"] = owner.execute("SELECT coalesce(sum(available_quantity), 0) FROM ticket_types").fetchone()[0]  # type: ignore[index]
    return counts
