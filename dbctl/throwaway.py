"""Throwaway clusters for tests, schema snapshots and benches: a free port, a private
temporary folder, trust on 127.0.0.1 (nothing else can reach the folder, and the cluster is
destroyed after use)."""

from __future__ import annotations

import socket
import tempfile
from pathlib import Path

from dbctl.cluster import Cluster, tuned_settings

# Throwaway clusters trade durability for speed.
FAST_UNSAFE = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "shared_buffers": "128MB",
    "log_min_duration_statement": "-1",
    "log_lock_waits": "off",
    "lock_timeout": "0",
    "max_connections": "300",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def throwaway_cluster(cron_database: str = "postgres") -> Cluster:
    """A fast, unsafe cluster in a new temporary folder; call destroy() when done."""
    base = Path(tempfile.mkdtemp(prefix="booking-pg-"))
    port = free_port()
    settings = {**tuned_settings(port), **FAST_UNSAFE, "cron.database_name": f"'{cron_database}'"}
    return Cluster(base / "data", port, settings)
