"""dbctl: the database side of the Makefile.

python -m dbctl up       start the local cluster (no DATABASE_URL), migrate, seed demo data
python -m dbctl run      up, then serve the gateway with uvicorn and run a job worker (RUN_WORKER=no: no worker)
python -m dbctl lb       up, then N single-worker gateways behind HAProxy and a job worker (dbctl/haproxy.py)
python -m dbctl cluster  pg_auto_failover (monitor, primary, standby), HAProxy, N gateways, a worker, in the background
python -m dbctl cluster-stop  stop all that `cluster` started (data kept)
python -m dbctl worker   a job worker alone, on the database in use
python -m dbctl exporter the PostgreSQL exporter alone (ops/postgres-exporter/queries.yaml), on the database in use
python -m dbctl migrate  migrations + functions loader on the database in use
python -m dbctl psql     psql as the owner/DBA role (reads stdin when piped)
python -m dbctl stop     stop the local cluster
python -m dbctl schema   rewrite sql/schema.sql from a fresh build
python -m dbctl url      print the owner URL in use
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

import psycopg

from dbctl import local, monitor
from dbctl.cluster import Cluster, pg_tool
from dbctl.migrate import migrate
from dbctl.schema import write_snapshot
from dbctl.seed import seed
from dbctl.supervise import Child, supervise
from gateway.config import ConfigError, ServerSettings, Settings
from gateway.logs import LOG_CONFIG_FILE
from gateway.payments.providers import ProviderConfig, ProviderConfigError
from worker.config import WorkerSettings

WORKER_ARGS = [sys.executable, "-m", "worker"]


def up() -> local.Target:
    t = local.target()
    applied = migrate(t.owner_url, t.superuser_url, role_password=t.role_password)
    if applied:
        print(f"Applied migrations: {', '.join(applied)}")
    seed(t.owner_url)
    # The local database follows the gateway's default (instant) when PAYMENT_MODE is unset, so a
    # plain `make run` after a provider run is instant on both sides; a database of DATABASE_URL
    # keeps its own mode unless PAYMENT_MODE says.
    apply_payment_mode(t.owner_url, os.environ.get("PAYMENT_MODE") or ("instant" if t.cluster is not None else ""))
    return t


def apply_payment_mode(owner_url: str, mode: str) -> None:
    """PAYMENT_MODE, when given, becomes the database's mode (payment_settings, the one source of
    truth: api.complete_booking refuses in provider mode); empty, the database keeps its own."""
    if not mode:
        return
    if mode not in ("instant", "provider"):
        sys.exit(f"PAYMENT_MODE must be instant or provider (got {mode!r})")
    with psycopg.connect(owner_url, autocommit=True) as conn:
        conn.execute("SELECT api.set_payment_mode(%s)", (mode,))
    print(f"Payments: {mode} mode.")


def gateway_env(t: local.Target, standby: Cluster | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("GATEWAY_DATABASE_URL", t.gateway_url)
    if standby is not None:  # READ_REPLICA=yes: catalogue reads on the local standby
        env.setdefault("GATEWAY_DATABASE_READ_URL", local.read_url(t, standby))
    # prometheus-client's multiprocess mode: every uvicorn worker writes its samples there
    # (gateway/metrics.py); emptied by fresh_metrics_dir() before uvicorn starts.
    if not env.get("PROMETHEUS_MULTIPROC_DIR"):
        env["PROMETHEUS_MULTIPROC_DIR"] = str(local.state_dir().resolve() / "metrics")
    if t.cluster is not None:
        # no owner or superuser password
        env["PGPASSFILE"] = str(local.write_pgpass(t.cluster, gateway_only=True, standby=standby))
        if "JWT_SECRET" not in env:
            env["JWT_SECRET"] = local.kept_secret("jwt-secret")
        env.update({k: v for k, v in payment_credentials().items() if not env.get(k)})
    sandbox_dir(env)
    return env


def sandbox_dir(env: dict[str, str]) -> None:
    """PAYMENT_SANDBOX (yes unless BOOKING_ENV=production or already set: `make run` is for
    development, and the sandbox appears in provider mode) and PAYMENT_SANDBOX_DIR, where the
    sandbox's stub providers keep their state; the gateway and the worker get the same."""
    if not env.get("PAYMENT_SANDBOX") and env.get("BOOKING_ENV", "").strip() != "production":
        env["PAYMENT_SANDBOX"] = "yes"
    if not env.get("PAYMENT_SANDBOX_DIR"):
        env["PAYMENT_SANDBOX_DIR"] = str(local.state_dir().resolve() / "sandbox")


def provider_endpoints(env: dict[str, str]) -> None:
    """The providers' API endpoints the gateway would use, written out for the worker (its
    reconciliation and refunds ask the same APIs: in development the gateway's sandbox)."""
    try:
        cfg = ProviderConfig.from_env(env)
    except ProviderConfigError as exc:
        sys.exit(str(exc))
    for name, value in (("MOMO_ENDPOINT", cfg.momo_endpoint), ("ZALOPAY_ENDPOINT", cfg.zalopay_endpoint),
                        ("BANK_API_URL", cfg.bank_api_url), ("CARD_API_URL", cfg.card_api_url)):  # fmt: skip
        if value and not env.get(name):
            env[name] = value


# Development payment credentials (the sandbox signs with them, the gateway verifies): the ids are
# the providers' public sandbox ones, the keys generated once and kept in .local/ like JWT_SECRET.
DEV_PAYMENT_IDS = {"MOMO_PARTNER_CODE": "MOMOSANDBOX", "ZALOPAY_APP_ID": "2553"}
DEV_PAYMENT_KEYS = ("MOMO_ACCESS_KEY", "MOMO_SECRET_KEY", "ZALOPAY_KEY1", "ZALOPAY_KEY2",
                    "BANK_WEBHOOK_SECRET", "CARD_WEBHOOK_SECRET")  # fmt: skip


def payment_credentials() -> dict[str, str]:
    keys = {name: local.kept_secret(name.lower().replace("_", "-")) for name in DEV_PAYMENT_KEYS}
    return {**DEV_PAYMENT_IDS, **keys}


def worker_env(t: local.Target) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("WORKER_DATABASE_URL", t.worker_url)
    if t.cluster is not None:
        env["PGPASSFILE"] = str(local.write_pgpass(t.cluster, worker_only=True))  # its own line only
        # The same provider credentials as the gateway: the worker signs its status queries and
        # refunds with them.
        env.update({k: v for k, v in payment_credentials().items() if not env.get(k)})
    sandbox_dir(env)
    provider_endpoints(env)
    return env


def exporter_child(t: local.Target) -> tuple[list[str], dict[str, str], str]:
    """The PostgreSQL exporter's command line, environment and address (METRICS_EXPORTER=yes):
    logged in as booking_monitor, with its own pgpass line when the cluster is ours."""
    binary = monitor.require_binary()
    address = monitor.exporter_address(os.environ)
    pgpass = local.write_pgpass(t.cluster, monitor_only=True) if t.cluster is not None else None
    env = monitor.exporter_env(monitor.monitor_dsn(t.owner_url, os.environ), os.environ, pgpass)
    return monitor.exporter_command(binary, address), env, address


def fresh_metrics_dir(path: str) -> None:
    """Make the metrics folder, or empty it of a previous run's files: the counters of a run start
    at zero, and a former worker's pid must not be taken for a live one. Only prometheus-client's
    own files (*.db) are removed, since the folder may be one the user named."""
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.db"):
        stale.unlink(missing_ok=True)


def run_worker_wanted(env: Mapping[str, str]) -> bool:
    value = env.get("RUN_WORKER", "").strip().lower()
    if value in ("", "yes", "true", "1", "on"):
        return True
    if value in ("no", "false", "0", "off"):
        return False
    raise ConfigError(f"RUN_WORKER must be yes or no (got {value!r})")


def uvicorn_args(env: Mapping[str, str]) -> list[str]:
    """How the gateway is served; refuses (ConfigError naming the variable) wrong settings first,
    so a bad value stops `make run` at once instead of every worker failing on its own."""
    Settings.from_env(env)
    server = ServerSettings.from_env(env)
    return [
        sys.executable, "-m", "uvicorn", "--factory", "gateway.app:create_app",
        "--host", server.host, "--port", str(server.port), "--workers", str(server.workers),
        # httptools plus a request-head size limit and a head timeout (gateway/serving.py)
        "--http", "gateway.serving:BoundedHttpToolsProtocol",
        "--timeout-keep-alive", str(server.keep_alive_timeout),  # > think time (gateway/config.py)
        "--backlog", str(server.backlog),  # an onsale's burst of connects (gateway/config.py)
        # asyncio (uvloop starved accept under load), accepting in small batches (gateway/config.py)
        "--loop", "gateway.serving:GatewayLoop" if server.loop == "asyncio" else server.loop,
        "--log-config", str(LOG_CONFIG_FILE),  # every line JSON, uvicorn's own too
        "--no-access-log", "--timeout-graceful-shutdown", "10",
        # The gateway decides whose X-Forwarded-For to believe (TRUSTED_PROXIES, gateway/ratelimit.py):
        # uvicorn's own rewrite of the client address (it trusts 127.0.0.1 by default) stays off.
        "--no-proxy-headers",
    ]  # fmt: skip


def run() -> None:
    """The gateway and (unless RUN_WORKER=no) a worker, as children of this process
    (dbctl/supervise.py): Ctrl-C or SIGTERM stops both, and neither outlives it."""
    t = up()
    standby = local.start_standby(t) if local.read_replica_wanted(os.environ) else None
    if standby is not None and t.cluster is not None:
        local.write_pgpass(t.cluster, standby=standby)  # .local/pgpass: psql to the standby too
    env = gateway_env(t, standby)
    try:
        args = uvicorn_args(env)
        with_worker = run_worker_wanted(os.environ)
        wenv = worker_env(t) if with_worker else {}
        worker = WorkerSettings.from_env(wenv) if with_worker else None
        exporter = exporter_child(t) if monitor.exporter_wanted(os.environ) else None
    except (ConfigError, monitor.ExporterError) as exc:
        sys.exit(str(exc))
    server = ServerSettings.from_env(env)
    fresh_metrics_dir(env["PROMETHEUS_MULTIPROC_DIR"])
    children = [Child("gateway", args, env, stop_timeout=20)]
    if worker is not None:
        children.append(Child("worker", WORKER_ARGS, wenv, stop_timeout=worker.shutdown + 10))
        smtp = worker.smtp
        mail = f"by SMTP to {smtp.describe()}" if smtp else f"as .eml files in {worker.mail_dir}"
        print(f"Worker: confirmation mails are sent {mail}.")
    if exporter is not None:
        args_, eenv, address = exporter
        children.append(Child("exporter", args_, eenv, stop_timeout=10))
        print(f"PostgreSQL exporter on http://{address}/metrics (as booking_monitor).")
    if standby is not None:
        print(f"Catalogue reads on the standby on 127.0.0.1:{standby.port} (then the primary); "
              "`make stop` stops both.")  # fmt: skip
    them = {1: "it", 2: "both"}.get(len(children), "all three")
    print(f"Gateway on http://{server.host}:{server.port} ({server.workers} worker(s)); "
          f"Ctrl-C stops {them}, `make stop` the database.")  # fmt: skip
    sys.stdout.flush()
    sys.exit(supervise(children))


def run_worker_alone() -> None:
    """`make worker`: one worker on the database in use (the local cluster is started)."""
    t = local.target()
    env = worker_env(t)
    try:
        WorkerSettings.from_env(env)
    except ConfigError as exc:
        sys.exit(str(exc))
    sys.stdout.flush()
    os.execvpe(WORKER_ARGS[0], WORKER_ARGS, env)


def main(argv: list[str]) -> int:
    cmd = argv[1] if len(argv) > 1 else "help"
    if cmd == "up":
        up()
    elif cmd == "run":
        run()
    elif cmd == "lb":
        from dbctl import haproxy

        haproxy.run()
    elif cmd == "cluster":
        from dbctl import onebox

        onebox.cluster()
    elif cmd == "cluster-stop":
        from dbctl import onebox

        onebox.cluster_stop()
    elif cmd == "worker":
        run_worker_alone()
    elif cmd == "exporter":
        try:
            args, env, address = exporter_child(local.target())
        except monitor.ExporterError as exc:
            sys.exit(str(exc))
        print(f"PostgreSQL exporter on http://{address}/metrics (as booking_monitor); Ctrl-C stops it.")
        sys.stdout.flush()
        os.execvpe(args[0], args, env)
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
            primary = local.local_cluster()
            standby = local.local_standby(primary)
            if standby.initialised():
                standby.stop()
            primary.stop()
            print(
                "Local PostgreSQL stopped."
                if not standby.initialised()
                else "Local PostgreSQL and its standby stopped."
            )
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
