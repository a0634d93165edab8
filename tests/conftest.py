"""Test harness: one private PostgreSQL cluster per session (root-safe, pg_cron preloaded),
a template database built by the real migrations, and a fresh copy of it per test
(pytest-postgresql)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from pytest_postgresql import factories

from dbctl.cluster import Cluster
from dbctl.cluster import create_database as create_cluster_database
from dbctl.migrate import GATEWAY_ROLE, OWNER_ROLE, migrate
from dbctl.throwaway import throwaway_cluster
from gateway.sqlcalls import api_call

CRON_DB = "booking_cron"
CLUSTER = throwaway_cluster(cron_database=CRON_DB)
CLUSTER.settings["track_functions"] = "pl"  # lets tests see which api function a route called


def pytest_configure(config: pytest.Config) -> None:
    if not hasattr(config, "workerinput"):
        CLUSTER.start()


def pytest_unconfigure(config: pytest.Config) -> None:
    if os.environ.get("KEEP_TEST_CLUSTER"):
        print(f"test cluster kept: {CLUSTER.datadir} port {CLUSTER.port}")
        return
    CLUSTER.destroy()


def build_template(host: str, port: int, user: str, dbname: str, **_: Any) -> None:
    migrate(f"postgresql://{user}@{host}:{port}/{dbname}")


pg_server = factories.postgresql_noproc(
    host="127.0.0.1", port=CLUSTER.port, user="postgres", dbname="booking_test", load=[build_template]
)
db = factories.postgresql("pg_server")


def url_for(dbname: str, role: str = OWNER_ROLE, **options: str) -> str:
    url = f"postgresql://{role}@127.0.0.1:{CLUSTER.port}/{dbname}"
    if options:
        opts = " ".join(f"-c {k}={v}" for k, v in options.items())
        url += "?options=" + opts.replace(" ", "%20").replace("=", "%3D")
    return url


@pytest.fixture
def dbname(db: psycopg.Connection) -> str:
    return db.info.dbname


@pytest.fixture
def connect(dbname: str) -> Iterator[Callable[..., psycopg.Connection]]:
    """Open more connections to this test's database: connect(role, **settings)."""
    opened: list[psycopg.Connection] = []

    def _connect(role: str = GATEWAY_ROLE, autocommit: bool = True, **settings: str) -> psycopg.Connection:
        conn = psycopg.connect(url_for(dbname, role, **settings), autocommit=autocommit)
        opened.append(conn)
        return conn

    yield _connect
    for conn in opened:
        conn.close()


@pytest.fixture
def owner(connect: Callable[..., psycopg.Connection]) -> psycopg.Connection:
    return connect(OWNER_ROLE)


@pytest.fixture
def gw(connect: Callable[..., psycopg.Connection]) -> psycopg.Connection:
    return connect(GATEWAY_ROLE)


def call(conn: psycopg.Connection, function: str, **args: Any) -> Any:
    """Call api.<function> by argument name; returns the single value."""
    row = conn.execute(api_call(function, args), args).fetchone()
    assert row is not None
    return row[0]


def dba_call(conn: psycopg.Connection, function: str, **args: Any) -> Any:
    """Call a DBA-only api function on conn's database as the owner (the gateway may not)."""
    with psycopg.connect(url_for(conn.info.dbname, OWNER_ROLE), autocommit=True) as owner:
        return call(owner, function, **args)


def sqlstate_of(conn: psycopg.Connection, function: str, **args: Any) -> str | None:
    """Call and return the SQLSTATE it raised (None when it succeeded)."""
    try:
        call(conn, function, **args)
    except psycopg.Error as exc:
        if not conn.autocommit:
            conn.rollback()
        return exc.diag.sqlstate
    return None


@pytest.fixture
def own_cluster() -> Iterator[Cluster]:
    """A private, migrated cluster (database `booking`) for tests that stop and start PostgreSQL."""
    cluster = throwaway_cluster()
    cluster.start()
    create_cluster_database(cluster, "booking")
    migrate(cluster.url("postgres", "booking"))
    yield cluster
    cluster.destroy()


def create_database(name: str) -> None:
    """A new, empty database `name` in the session's cluster (an old one is dropped)."""
    create_cluster_database(CLUSTER, name, replace=True)
