"""The embedded cluster's connection strings are taken apart by libpq's rules."""

from __future__ import annotations

import pytest
from psycopg.conninfo import conninfo_to_dict
from yoyo.connections import parse_uri

from dbctl.local import gateway_url_for
from dbctl.migrate import GATEWAY_ROLE, OWNER_ROLE, as_owner, yoyo_url


def test_urls_are_taken_apart_by_libpq_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    """Owner -> gateway and owner -> yoyo keep every parameter, multi-host URLs included."""
    monkeypatch.delenv("GATEWAY_DATABASE_URL", raising=False)
    url = "postgresql://boss:p%40ss@db1:5432,db2:5433/booking?options=-c%20statement_timeout%3D5s&sslmode=require"
    gateway = conninfo_to_dict(gateway_url_for(url))
    assert gateway == {
        "user": GATEWAY_ROLE, "dbname": "booking", "host": "db1,db2", "port": "5432,5433",
        "options": "-c statement_timeout=5s", "sslmode": "require",
    }  # fmt: skip
    keywords = gateway_url_for("host=db1 port=5432 user=boss password=secret dbname=booking")
    assert conninfo_to_dict(keywords) == {"host": "db1", "port": "5432", "user": GATEWAY_ROLE, "dbname": "booking"}
    yoyo = parse_uri(yoyo_url(as_owner(url)))
    assert yoyo.scheme == "postgresql+psycopg"
    assert yoyo.args == {
        "user": "boss", "password": "p@ss", "dbname": "booking", "host": "db1,db2", "port": "5432,5433",
        "options": f"-c statement_timeout=5s -c role={OWNER_ROLE}", "sslmode": "require",
    }  # fmt: skip
