"""Migrations: yoyo for tables (forward only), then the functions loader, every time.

The loader drops the api/internal functions and re-creates them from `sql/functions/*.sql`
(file-name order), grants the gateway EXECUTE on the functions listed in
`sql/gateway_grants.sql`, the worker what `sql/worker_grants.sql` lists and the monitor what
`sql/monitor_grants.sql` lists (and nothing else), then (re)schedules `sql/cron_jobs.sql`,
all in one transaction. A database built from zero and one migrated step by step end up
equal (tests compare both against the committed `sql/schema.sql`).
"""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path
from urllib.parse import quote, urlencode

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from yoyo import get_backend, read_migrations

from dbctl.cluster import set_password

ROOT = Path(__file__).resolve().parent.parent
SQL = ROOT / "sql"
MIGRATIONS = SQL / "migrations"
FUNCTIONS = SQL / "functions"
CRON_JOBS = SQL / "cron_jobs.sql"
GATEWAY_GRANTS = SQL / "gateway_grants.sql"
WORKER_GRANTS = SQL / "worker_grants.sql"
MONITOR_GRANTS = SQL / "monitor_grants.sql"
BOOTSTRAP = SQL / "bootstrap.sql"

OWNER_ROLE = "booking_owner"
GATEWAY_ROLE = "booking_gateway"
WORKER_ROLE = "booking_worker"
MONITOR_ROLE = "booking_monitor"
LOADED_SCHEMAS = ("api", "internal")


def as_owner(conninfo: str) -> str:
    """Connect with the given login but act as the owner role (SET ROLE at login).

    Takes a URL or key=value conninfo, keeps its other options, returns key=value conninfo.
    """
    options = conninfo_to_dict(conninfo).get("options") or ""
    return make_conninfo(conninfo, options=f"{options} -c role={OWNER_ROLE}".strip())


def yoyo_url(conninfo: str) -> str:
    """The same connection as a yoyo URL: yoyo picks its driver by the `postgresql+psycopg`
    scheme and hands the query parameters to psycopg.connect, so every libpq parameter
    travels there (multi-host `host=a,b port=1,2` included)."""
    params = {k: str(v) for k, v in conninfo_to_dict(conninfo).items() if v is not None}
    return "postgresql+psycopg://?" + urlencode(params, quote_via=quote)


def is_superuser(url: str) -> bool:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()
        return bool(row and row[0])


ROLE_PASSWORD_VARIABLES = {
    GATEWAY_ROLE: "GATEWAY_DB_PASSWORD",
    WORKER_ROLE: "WORKER_DB_PASSWORD",
    MONITOR_ROLE: "MONITOR_DB_PASSWORD",
}


def role_password_for(role: str, local_password: str) -> str:
    """The password of a least-privilege role on a cluster dbctl runs (make run, make cluster):
    its variable (GATEWAY_DB_PASSWORD, ...) when set, else one derived from the cluster's local
    password (HMAC-SHA256, keyed by it, of the role's name). Derived, not the same: the gateway's
    (worker's, exporter's) process holds its own password only, and cannot log in as the owner or
    the superuser with it, nor work the local password out from it."""
    explicit = os.environ.get(ROLE_PASSWORD_VARIABLES[role], "")
    if explicit:
        return explicit
    return hmac.new(local_password.encode(), f"booking-role-password:{role}".encode(), hashlib.sha256).hexdigest()


def bootstrap(superuser_url: str, role_password: str | None = None) -> None:
    """Roles, database owner, pg_cron (superuser only; idempotent).

    role_password (the embedded cluster's local password) becomes the owner's password; the
    gateway, worker and monitor roles get role_password_for(role, role_password):
    GATEWAY_DB_PASSWORD (WORKER_DB_PASSWORD, MONITOR_DB_PASSWORD) when set, else one derived from it.
    Without role_password (a DATABASE_URL of yours), only the variables that are set are applied.
    """
    with psycopg.connect(superuser_url, autocommit=True) as conn:
        conn.execute(BOOTSTRAP.read_text())
        passwords: dict[str, str | None] = {OWNER_ROLE: role_password}
        for role, variable in ROLE_PASSWORD_VARIABLES.items():
            passwords[role] = role_password_for(role, role_password) if role_password else os.environ.get(variable)
        for role, password in passwords.items():
            if password:
                set_password(conn, role, password)


def apply_migrations(url: str, source: Path = MIGRATIONS) -> list[str]:
    """Apply pending yoyo migrations, each in its own transaction. Returns their ids."""
    backend = get_backend(yoyo_url(as_owner(url)))
    migrations = read_migrations(str(source))
    with backend.lock():
        pending = backend.to_apply(migrations)
        backend.apply_migrations(pending)
    return [m.id for m in pending]


def load_functions(
    url: str,
    source: Path = FUNCTIONS,
    cron_jobs: Path = CRON_JOBS,
    grants: Path = GATEWAY_GRANTS,
    worker_grants: Path = WORKER_GRANTS,
    monitor_grants: Path = MONITOR_GRANTS,
) -> None:
    """Drop every api/internal function and re-create them from the files, in one transaction.

    Dropping first lets a deploy change a return type (CREATE OR REPLACE cannot) and removes
    what the files no longer define, so a migrated database equals a fresh one. Sessions that
    call the functions meanwhile see the old set until commit; their cached plans depend on
    the dropped functions and are re-planned against the new ones.
    """
    with psycopg.connect(as_owner(url)) as conn:
        existing = conn.execute(
            "SELECT p.oid::regprocedure::text FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
            " WHERE n.nspname = ANY(%s)",
            (list(LOADED_SCHEMAS),),
        ).fetchall()
        for (signature,) in existing:
            conn.execute(f"DROP FUNCTION {signature}")
        for path in sorted(source.glob("*.sql")):
            try:
                conn.execute(path.read_text())
            except psycopg.Error as exc:
                raise RuntimeError(f"{path.name}: {exc}") from exc
        for schema in LOADED_SCHEMAS:
            roles = f"PUBLIC, {GATEWAY_ROLE}, {WORKER_ROLE}, {MONITOR_ROLE}"
            conn.execute(f"REVOKE ALL ON ALL FUNCTIONS IN SCHEMA {schema} FROM {roles}")
        conn.execute(grants.read_text())
        conn.execute(worker_grants.read_text())
        conn.execute(monitor_grants.read_text())
        if cron_jobs.exists():
            conn.execute(cron_jobs.read_text())


def migrate(
    url: str, superuser_url: str | None = None, source: Path = MIGRATIONS, role_password: str | None = None
) -> list[str]:
    """Everything a deploy does to a database: bootstrap (when we can), tables, functions."""
    if superuser_url is None and is_superuser(url):
        superuser_url = url
    if superuser_url is not None:
        bootstrap(superuser_url, role_password)
    applied = apply_migrations(url, source)
    load_functions(url)
    return applied
