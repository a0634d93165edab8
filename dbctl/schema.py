"""The committed schema snapshot (sql/schema.sql): what a fresh build looks like."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from dbctl.cluster import Cluster, create_database, pg_tool
from dbctl.migrate import SQL, migrate
from dbctl.throwaway import throwaway_cluster

SNAPSHOT = SQL / "schema.sql"
# pg_dump lines that change from run to run or machine to machine.
_VOLATILE = re.compile(r"^(-- Dumped (from|by) .*|\\(un)?restrict .*)$", re.MULTILINE)


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
