"""Where the database is: DATABASE_URL, or the embedded local cluster that `make run` starts.

The embedded cluster asks every role for a password: one generated password kept in the
state folder (`.local/pg-password`, mode 600) for postgres, booking_owner, booking_gateway and
booking_worker (GATEWAY_DB_PASSWORD / WORKER_DB_PASSWORD, when set, for the gateway / the
worker). dbctl writes `.local/pgpass` and points PGPASSFILE at it, so the URLs it prints and
hands on carry no password, and psql, the migrations, the gateway and the worker it starts find
the password there (the gateway's and the worker's processes get a pgpass with their line only).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from dbctl import replica
from dbctl.cluster import Cluster, create_database, local_base, tuned_settings, write_private
from dbctl.migrate import GATEWAY_ROLE, MONITOR_ROLE, OWNER_ROLE, ROOT, WORKER_ROLE, role_password_for

LOCAL_DB = "booking"
PASSWORD_FILE = "pg-password"  # noqa: S105  (a file name)
PGPASS_FILE = "pgpass"
GATEWAY_PGPASS_FILE = "pgpass-gateway"
WORKER_PGPASS_FILE = "pgpass-worker"
MONITOR_PGPASS_FILE = "pgpass-monitor"


@dataclass
class Target:
    owner_url: str  # DBA/owner: migrations, seeds, `make psql`
    gateway_url: str  # the gateway's least-privilege login
    superuser_url: str | None  # for bootstrap; None when the server is not ours
    cluster: Cluster | None

    @property
    def worker_url(self) -> str:
        """The job worker's least-privilege login (WORKER_DATABASE_URL, or the owner's with
        user booking_worker)."""
        return worker_url_for(self.owner_url)

    @property
    def role_password(self) -> str | None:
        """The password bootstrap gives the roles (the embedded cluster's; None elsewhere)."""
        return self.cluster.password if self.cluster else None


def state_dir() -> Path:
    """Generated local secrets and logins: `.local/` (ignored by git), or BOOKING_STATE_DIR."""
    return Path(os.environ.get("BOOKING_STATE_DIR") or ROOT / ".local")


def local_port() -> int:
    return int(os.environ.get("BOOKING_PG_PORT", "54329"))


def local_cluster() -> Cluster:
    port = local_port()
    base = local_base(ROOT)
    settings = tuned_settings(port)
    settings["cron.database_name"] = f"'{LOCAL_DB}'"
    return Cluster(base / "data", port, settings, password=kept_secret(PASSWORD_FILE))


def _role_url(owner_url: str, role: str, variable: str) -> str:
    """`variable`, or the owner's connection with `role` (any password dropped: set the
    variable, or use a pgpass file, when the server wants one)."""
    explicit = os.environ.get(variable)
    if explicit:
        return explicit
    params = conninfo_to_dict(owner_url)
    params.pop("password", None)
    params["user"] = role
    return make_conninfo("", **params)


def gateway_url_for(owner_url: str) -> str:
    """GATEWAY_DATABASE_URL, or the owner's connection with the gateway role."""
    return _role_url(owner_url, GATEWAY_ROLE, "GATEWAY_DATABASE_URL")


def worker_url_for(owner_url: str) -> str:
    """WORKER_DATABASE_URL, or the owner's connection with the worker role."""
    return _role_url(owner_url, WORKER_ROLE, "WORKER_DATABASE_URL")


def target(start: bool = True) -> Target:
    url = os.environ.get("DATABASE_URL")
    if url:
        return Target(url, gateway_url_for(url), os.environ.get("SUPERUSER_DATABASE_URL"), None)
    cluster = local_cluster()
    os.environ["PGPASSFILE"] = str(write_pgpass(cluster))  # for this process and what it starts
    if start:
        try:
            cluster.start()
            create_database(cluster, LOCAL_DB)
        except psycopg.OperationalError as exc:
            if "password authentication failed" not in str(exc):
                raise
            raise SystemExit(
                f"The embedded cluster in {cluster.datadir} refused dbctl's login: {exc}\n"
                f"Its password is kept in {state_dir() / PASSWORD_FILE}; if that file was lost or"
                f" replaced, put the old one back, or remove {cluster.datadir.parent} to start afresh."
            ) from exc
    owner = cluster.url(OWNER_ROLE, LOCAL_DB)
    return Target(owner, gateway_url_for(owner), cluster.superuser_url(LOCAL_DB), cluster)


def write_pgpass(
    cluster: Cluster,
    gateway_only: bool = False,
    worker_only: bool = False,
    monitor_only: bool = False,
    standby: Cluster | None = None,
) -> Path:
    """`.local/pgpass` (mode 600) with the embedded cluster's passwords, for libpq; with
    `gateway_only`, `.local/pgpass-gateway` with the gateway role's line alone (the gateway's
    PGPASSFILE: its process gets no password of the owner or the superuser); with
    `worker_only`, `.local/pgpass-worker` with the worker role's line alone (the worker's); with
    `monitor_only`, `.local/pgpass-monitor`, the monitoring role's (the PostgreSQL exporter's).
    `standby` (READ_REPLICA=yes): the same lines for its port too (the same roles and passwords)."""
    assert cluster.password is not None
    assert gateway_only + worker_only + monitor_only <= 1
    gateway = role_password_for(GATEWAY_ROLE, cluster.password)
    worker = role_password_for(WORKER_ROLE, cluster.password)
    monitor = role_password_for(MONITOR_ROLE, cluster.password)

    def field(value: str) -> str:
        return value.replace("\\", "\\\\").replace(":", "\\:")

    if gateway_only:
        roles: tuple[tuple[str, str], ...] = ((GATEWAY_ROLE, gateway),)
        name = GATEWAY_PGPASS_FILE
    elif worker_only:
        roles, name = ((WORKER_ROLE, worker),), WORKER_PGPASS_FILE
    elif monitor_only:
        roles, name = ((MONITOR_ROLE, monitor),), MONITOR_PGPASS_FILE
    else:
        roles = ((GATEWAY_ROLE, gateway), (WORKER_ROLE, worker), (MONITOR_ROLE, monitor), ("*", cluster.password))
        name = PGPASS_FILE
    ports = (cluster.port,) if standby is None else (cluster.port, standby.port)
    lines = [
        f"{host}:{port}:*:{role}:{field(password)}\n"
        for port in ports
        for host in ("127.0.0.1", "localhost")
        for role, password in roles
    ]
    path = state_file(name)
    write_private(path, "# Written by dbctl for the embedded cluster; PGPASSFILE points here.\n" + "".join(lines))
    return path


def kept_secret(name: str, nbytes: int = 32) -> str:
    """A secret generated once for local use and kept in .local/ (mode 600)."""
    path = state_dir() / name
    if path.exists():
        return path.read_text().strip()
    state_dir().mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(nbytes)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    return value


def state_file(name: str) -> Path:
    state_dir().mkdir(parents=True, exist_ok=True)
    return state_dir() / name


# ------------------------------------------------------------------ READ_REPLICA=yes make run

STANDBY_NAME = "local_standby"


def read_replica_wanted(env: Mapping[str, str]) -> bool:
    value = env.get("READ_REPLICA", "").strip().lower()
    if value in ("", "no", "false", "0", "off"):
        return False
    if value in ("yes", "true", "1", "on"):
        return True
    raise SystemExit(f"READ_REPLICA must be yes or no (got {value!r})")


def local_standby(primary: Cluster) -> Cluster:
    """The embedded cluster's standby: beside its folder (`.local/pg-standby`), on
    BOOKING_PG_STANDBY_PORT (the primary's port + 1 by default)."""
    base = local_base(ROOT)
    raw = os.environ.get("BOOKING_PG_STANDBY_PORT", "").strip() or str(primary.port + 1)
    if not raw.isdigit() or not 1 <= int(raw) <= 65535 or int(raw) == primary.port:
        raise SystemExit(f"BOOKING_PG_STANDBY_PORT must be a port (1-65535) other than BOOKING_PG_PORT (got {raw!r})")
    port = int(raw)
    return replica.standby_of(primary, base.with_name(base.name + "-standby"), port, STANDBY_NAME)


def start_standby(t: Target) -> Cluster:
    """READ_REPLICA=yes: the embedded cluster's streaming standby, made on the first run (a base
    backup of the running primary), started and streaming."""
    if t.cluster is None:
        raise SystemExit(
            "READ_REPLICA=yes makes a standby of the embedded cluster; with DATABASE_URL set, point "
            "GATEWAY_DATABASE_READ_URL at your own standby instead"
        )
    standby = local_standby(t.cluster)
    return replica.make_standby(t.cluster, standby.datadir.parent, standby.port, STANDBY_NAME)


def read_url(t: Target, standby: Cluster) -> str:
    """The gateway's read URL for the local standby: the standby, then the primary, prefer-standby
    (libpq opens read connections on the primary while the standby is down)."""
    assert t.cluster is not None
    params = conninfo_to_dict(t.gateway_url)
    params.update(host="127.0.0.1,127.0.0.1", port=f"{standby.port},{t.cluster.port}",
                  target_session_attrs="prefer-standby", connect_timeout="2")  # fmt: skip
    params.pop("hostaddr", None)
    return make_conninfo("", **params)
