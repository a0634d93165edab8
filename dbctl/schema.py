"""The committed schema snapshot (sql/schema.sql): what a fresh build looks like."""

from __future__ import annotations

import re
import socket
import subprocess
import tempfile
from pathlib import Path

import psycopg
from psycopg import sql

from dbctl.cluster import FAST_UNSAFE, Cluster, pg_tool, tuned_settings
from dbctl.migrate import SQL, migrate

SNAPSHOT = SQL / "schema.sql"
# pg_dump lines that change from run to run or machine to machine.
_VOLATILE = re.compile(r"^(-- Dumped (from|by) .*|\\(un)?restrict .*)$", re.MULTILINE)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def throwaway_cluster(cron_database: str = "postgres") -> Cluster:
    base = Path(tempfile.mkdtemp(prefix="booking-pg-"))
    port = free_port()
    settings = {**tuned_settings(port), **FAST_UNSAFE, "cron.database_name": f"'{cron_database}'"}
    return Cluster(base / "data", port, settings)


def dump_schema(cluster: Cluster, dbname: str) -> str:
    done = subprocess.run(
        [
            pg_tool("pg_dump"),
            "--schema-only",
            "--exclude-table=_yoyo*",
            "--exclude-table=yoyo_lock",
            cluster.superuser_url(dbname),
        ],
        text=True,
        capture_output=True,
        check=True,
    )
    return _VOLATILE.sub("", done.stdout)


def create_database(cluster: Cluster, dbname: str) -> None:
    with psycopg.connect(cluster.superuser_conninfo(), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))


def build_fresh_dump() -> str:
    """Build a database from zero in a throwaway cluster and dump its schema."""
    cluster = throwaway_cluster()
    try:
        cluster.start()
        create_database(cluster, "snapshot")
        migrate(cluster.url("postgres", "snapshot"))
        return dump_schema(cluster, "snapshot")
    finally:
        cluster.destroy()


def write_snapshot() -> Path:
    SNAPSHOT.write_text(build_fresh_dump())
    return SNAPSHOT
