"""The PostgreSQL exporter (issue 13): Debian's prometheus-postgres-exporter with our queries file.

`METRICS_EXPORTER=yes make run` starts it beside the gateway and the worker (one more supervised
child, dbctl/supervise.py) on EXPORTER_ADDRESS (127.0.0.1:9187), logged in as the monitoring role
booking_monitor (MONITOR_DATABASE_URL, or the owner's connection with that user). The tests start
the same command line against their own database.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path

from psycopg.conninfo import conninfo_to_dict, make_conninfo

from dbctl.migrate import MONITOR_ROLE, ROOT

QUERIES = ROOT / "ops" / "postgres-exporter" / "queries.yaml"
DEBIAN_PACKAGE = "prometheus-postgres-exporter"
BINARIES = ("prometheus-postgres-exporter", "postgres_exporter")  # Debian's name, upstream's
DEFAULT_ADDRESS = "127.0.0.1:9187"


class ExporterError(Exception):
    pass


def exporter_binary() -> str | None:
    for name in BINARIES:
        found = shutil.which(name)
        if found:
            return found
    return None


def exporter_wanted(env: Mapping[str, str]) -> bool:
    value = env.get("METRICS_EXPORTER", "").strip().lower()
    if value in ("", "no", "false", "0", "off"):
        return False
    if value in ("yes", "true", "1", "on"):
        return True
    raise ExporterError(f"METRICS_EXPORTER must be yes or no (got {value!r})")


def exporter_address(env: Mapping[str, str]) -> str:
    address = env.get("EXPORTER_ADDRESS") or DEFAULT_ADDRESS
    host, sep, port = address.rpartition(":")
    if not sep or not host or not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
        raise ExporterError(f"EXPORTER_ADDRESS must be host:port (got {address!r})")
    return address


def monitor_dsn(owner_url: str, env: Mapping[str, str]) -> str:
    """MONITOR_DATABASE_URL, or the owner's connection as booking_monitor (no password: the
    exporter finds it in PGPASSFILE), as key=value conninfo for the exporter's driver (lib/pq),
    with sslmode=disable unless the connection names one (lib/pq would otherwise require TLS)."""
    params = {k: v for k, v in conninfo_to_dict(env.get("MONITOR_DATABASE_URL") or owner_url).items() if v}
    if not env.get("MONITOR_DATABASE_URL"):
        params.pop("password", None)
        params.pop("options", None)  # the owner's `-c role=...`, if any
        params["user"] = MONITOR_ROLE
    params.setdefault("sslmode", "disable")
    return make_conninfo("", **params)


def exporter_command(binary: str, address: str, queries: Path = QUERIES) -> list[str]:
    return [
        binary,
        f"--extend.query-path={queries}",
        f"--web.listen-address={address}",
        "--log.level=warn",
    ]


def exporter_env(dsn: str, base: Mapping[str, str], pgpass: Path | None = None) -> dict[str, str]:
    env = {k: v for k, v in base.items() if not k.startswith(("DATA_SOURCE_", "PG_EXPORTER_"))}
    env["DATA_SOURCE_NAME"] = dsn
    if pgpass is not None:
        env["PGPASSFILE"] = str(pgpass)
    return env


def require_binary() -> str:
    binary = exporter_binary()
    if binary is None:
        raise ExporterError(
            f"METRICS_EXPORTER=yes needs {DEBIAN_PACKAGE}: scripts/install-system-deps {DEBIAN_PACKAGE}"
            " (make run installs it when METRICS_EXPORTER=yes)"
        )
    return binary
