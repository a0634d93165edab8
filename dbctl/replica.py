"""A physical streaming standby of a dbctl Cluster (issue 13: catalogue reads on a replica).

`make_standby(primary, base, port)`: on the primary, the replication role (`booking_replicator`,
with the cluster's password when it has one; its pg_hba line is in Cluster.hba_conf); then
`pg_basebackup -R` as the postgres OS user into `base/data`, streaming the WAL through a
replication slot of its own (so the primary keeps the WAL the standby has not received yet, even
while it is stopped); the standby's own port and `cluster_name` (its application_name on the
primary, so `pg_stat_replication` and the exporter's `booking_pg_replication` name it); started,
and waited for until it is in recovery and streaming. A standby already made is only started.

Used by the tests (tests/test_read_replica.py) and by `READ_REPLICA=yes make run` (dbctl/local.py).
Promotion and failover are pg_auto_failover's (dbctl/autofailover.py), not this module's.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from dbctl.cluster import (
    REPLICATION_ROLE,
    Cluster,
    _run_as_owner,
    pg_tool,
    private_folder,
    set_password,
)


def slot_name(name: str) -> str:
    """The primary's replication slot for standby `name` (slot names: a-z, 0-9 and _)."""
    return "standby_" + re.sub(r"[^a-z0-9_]", "_", name.lower())


def ensure_replication_role(primary: Cluster) -> None:
    """The role standbys stream as, on the (running) primary: REPLICATION, LOGIN, no other right."""
    with primary.connect() as conn:
        if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (REPLICATION_ROLE,)).fetchone():
            conn.execute(sql.SQL("CREATE ROLE {} WITH LOGIN REPLICATION").format(sql.Identifier(REPLICATION_ROLE)))
        if primary.password:
            set_password(conn, REPLICATION_ROLE, primary.password)
    primary._enforce_auth()  # a cluster made before the replication line gets it (reload)


def standby_of(primary: Cluster, base: Path, port: int, name: str) -> Cluster:
    """The Cluster object of a standby (made or not): the primary's settings, its own port and name."""
    settings = {**primary.settings, "port": str(port), "cluster_name": f"'{name}'"}
    return Cluster(base / "data", port, settings, password=primary.password)


def make_standby(primary: Cluster, base: Path, port: int, name: str = "standby", timeout: float = 120.0) -> Cluster:
    """A streaming standby of `primary` in `base` on `port`, running and streaming (see the module)."""
    standby = standby_of(primary, base, port, name)
    if not standby.initialised():
        _base_backup(primary, standby, name)
    standby.start()
    wait_streaming(primary, standby, name, timeout)
    return standby


def _base_backup(primary: Cluster, standby: Cluster, name: str) -> None:
    ensure_replication_role(primary)
    slot = slot_name(name)
    with primary.connect() as conn:  # a slot left by an earlier standby of this name: start afresh
        conn.execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = %s AND NOT active",
            (slot,),
        )
    private_folder(standby.datadir.parent)
    params: dict[str, str | int] = {
        "host": "127.0.0.1",
        "port": primary.port,
        "user": REPLICATION_ROLE,
        "application_name": name,
    }
    # The password through the environment, not the command line (ps shows that to every local
    # user); -R writes it into the standby's primary_conninfo all the same (postgresql.auto.conf,
    # mode 600, in the standby's private folder).
    env = {**os.environ, "PGPASSWORD": primary.password} if primary.password else None
    done = _run_as_owner(
        [pg_tool("pg_basebackup"), "-d", make_conninfo("", **params), "-D", str(standby.datadir),
         "-R", "-X", "stream", "-C", "-S", slot, "--checkpoint=fast", "--no-password"], env=env,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"pg_basebackup failed:\n{done.stdout}\n{done.stderr}")


def streaming(primary: Cluster, standby: Cluster, name: str) -> bool:
    """The standby is in recovery, its WAL receiver streams, and the primary sends to it."""
    try:
        with standby.connect() as conn:
            row = conn.execute(
                "SELECT pg_is_in_recovery(), (SELECT status FROM pg_stat_wal_receiver) = 'streaming'"
            ).fetchone()
        with primary.connect() as conn:
            sent = conn.execute(
                "SELECT 1 FROM pg_stat_replication WHERE application_name = %s AND state = 'streaming'", (name,)
            ).fetchone()
    except psycopg.OperationalError:
        return False
    return row == (True, True) and sent is not None


def wait_streaming(primary: Cluster, standby: Cluster, name: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not streaming(primary, standby, name):
        if time.monotonic() > deadline:
            tail = standby.logfile.read_text()[-3000:] if standby.logfile.exists() else ""
            raise RuntimeError(f"standby {name} on port {standby.port} is not streaming after {timeout:.0f} s\n{tail}")
        time.sleep(0.2)


def wait_replayed(primary: Cluster, standby: Cluster, timeout: float = 60.0) -> None:
    """Until the standby has replayed everything the primary had written when this was called."""
    with primary.connect() as conn:
        row = conn.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()
    assert row is not None
    deadline = time.monotonic() + timeout
    with standby.connect() as conn:
        while not conn.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (row[0],)).fetchone() == (True,):
            if time.monotonic() > deadline:
                raise RuntimeError(f"standby on port {standby.port} did not replay up to {row[0]}")
            time.sleep(0.05)


def drop_standby(primary: Cluster, standby: Cluster, name: str, timeout: float = 30.0) -> None:
    """Stop and delete the standby, then drop its slot on the primary (which would keep WAL for it)."""
    standby.destroy()
    if not primary.running():
        return
    deadline = time.monotonic() + timeout
    with primary.connect() as conn:
        while True:
            try:
                conn.execute(
                    "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = %s",
                    (slot_name(name),),
                )
                return
            except psycopg.errors.ObjectInUse:  # its WAL sender has not noticed the standby is gone yet
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
