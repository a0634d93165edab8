"""Where the database is: DATABASE_URL, or the embedded local cluster that `make run` starts."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from psycopg.conninfo import conninfo_to_dict, make_conninfo

from dbctl.cluster import Cluster, create_database, local_base, tuned_settings
from dbctl.migrate import GATEWAY_ROLE, OWNER_ROLE, ROOT

LOCAL_DB = "booking"
STATE = ROOT / ".local"


@dataclass
class Target:
    owner_url: str  # DBA/owner: migrations, seeds, `make psql`
    gateway_url: str  # the gateway's least-privilege login
    superuser_url: str | None  # for bootstrap; None when the server is not ours
    cluster: Cluster | None


def local_port() -> int:
    return int(os.environ.get("BOOKING_PG_PORT", "54329"))


def local_cluster() -> Cluster:
    port = local_port()
    base = local_base(ROOT)
    settings = tuned_settings(port)
    settings["cron.database_name"] = f"'{LOCAL_DB}'"
    return Cluster(base / "data", port, settings)


def gateway_url_for(owner_url: str) -> str:
    explicit = os.environ.get("GATEWAY_DATABASE_URL")
    if explicit:
        return explicit
    # Same server and database, the gateway role, no password (set GATEWAY_DATABASE_URL
    # when the server wants one).
    params = conninfo_to_dict(owner_url)
    params.pop("password", None)
    params["user"] = GATEWAY_ROLE
    return make_conninfo("", **params)


def target(start: bool = True) -> Target:
    url = os.environ.get("DATABASE_URL")
    if url:
        return Target(url, gateway_url_for(url), os.environ.get("SUPERUSER_DATABASE_URL"), None)
    cluster = local_cluster()
    if start:
        cluster.start()
        create_database(cluster, LOCAL_DB)
    owner = cluster.url(OWNER_ROLE, LOCAL_DB)
    return Target(owner, gateway_url_for(owner), cluster.superuser_url(LOCAL_DB), cluster)


def kept_secret(name: str, nbytes: int = 32) -> str:
    """A secret generated once for local use and kept in .local/ (mode 600)."""
    path = STATE / name
    if path.exists():
        return path.read_text().strip()
    STATE.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(nbytes)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    return value


def state_file(name: str) -> Path:
    STATE.mkdir(parents=True, exist_ok=True)
    return STATE / name
