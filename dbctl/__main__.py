"""dbctl: the database side of the Makefile.

python -m dbctl up       start the local cluster (no DATABASE_URL), migrate, seed demo data
python -m dbctl run      up, then serve the gateway with uvicorn
python -m dbctl migrate  migrations + functions loader on the database in use
python -m dbctl psql     psql as the owner/DBA role (reads stdin when piped)
python -m dbctl stop     stop the local cluster
python -m dbctl schema   rewrite sql/schema.sql from a fresh build
python -m dbctl url      print the owner URL in use
"""

from __future__ import annotations

import os
import sys

from dbctl import local
from dbctl.cluster import pg_tool
from dbctl.migrate import migrate
from dbctl.schema import write_snapshot
from dbctl.seed import seed


def up() -> local.Target:
    t = local.target()
    applied = migrate(t.owner_url, t.superuser_url, role_password=t.role_password)
    if applied:
        print(f"Applied migrations: {', '.join(applied)}")
    seed(t.owner_url)
    return t


def gateway_env(t: local.Target) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("GATEWAY_DATABASE_URL", t.gateway_url)
    if t.cluster is not None and "JWT_SECRET" not in env:
        env["JWT_SECRET"] = local.kept_secret("jwt-secret")
    return env


def run() -> None:
    t = up()
    env = gateway_env(t)
    host = env.get("GATEWAY_HOST", "127.0.0.1")
    port = env.get("GATEWAY_PORT", "8000")
    workers = env.get("WEB_CONCURRENCY", str(os.cpu_count() or 1))
    print(f"Gateway on http://{host}:{port} ({workers} worker(s)); Ctrl-C stops it, `make stop` the database.")
    sys.stdout.flush()
    args = [
        sys.executable, "-m", "uvicorn", "--factory", "gateway.app:create_app",
        "--host", host, "--port", port, "--workers", workers,
        "--no-access-log", "--timeout-graceful-shutdown", "10",
    ]  # fmt: skip
    os.execvpe(args[0], args, env)


def main(argv: list[str]) -> int:
    cmd = argv[1] if len(argv) > 1 else "help"
    if cmd == "up":
        up()
    elif cmd == "run":
        run()
    elif cmd == "migrate":
        t = local.target()
        applied = migrate(t.owner_url, t.superuser_url, role_password=t.role_password)
        print(f"Applied: {', '.join(applied) or 'nothing new'}; functions reloaded.")
    elif cmd == "psql":
        t = local.target()
        os.execv(pg_tool("psql"), ["psql", "-X", "-v", "ON_ERROR_STOP=1", t.owner_url, *argv[2:]])
    elif cmd == "stop":
        if os.environ.get("DATABASE_URL"):
            print("DATABASE_URL is set: not stopping a server this project does not own.")
        else:
            local.local_cluster().stop()
            print("Local PostgreSQL stopped.")
    elif cmd == "schema":
        print(f"Wrote {write_snapshot()}")
    elif cmd == "url":
        print(local.target().owner_url)
    else:
        print(__doc__)
        return 0 if cmd == "help" else 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
