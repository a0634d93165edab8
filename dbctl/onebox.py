"""`make cluster` / `make cluster-stop`: the whole stage-3 layout on one machine, in the background.

A pg_auto_failover formation (dbctl/autofailover.py: monitor on CLUSTER_PG_PORT, nodes on the next
two ports), HAProxy on HAPROXY_PORT over GATEWAY_INSTANCES single-worker gateways (dbctl/haproxy.py)
and a job worker. The gateways and the worker get the multi-host URL with
target_session_attrs=read-write (they find the primary, whichever node it is, by themselves) and
the gateways GATEWAY_DATABASE_READ_URL with prefer-standby. Processes run detached (logs and pid
files in `.local/cluster/`); `make cluster-stop` stops them and the formation, keeping the data.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg

from dbctl import autofailover, haproxy, local
from dbctl.cluster import _as_root, _postgres_can_reach, write_private
from dbctl.migrate import (
    GATEWAY_ROLE,
    OWNER_ROLE,
    ROLE_PASSWORD_VARIABLES,
    ROOT,
    WORKER_ROLE,
    migrate,
    role_password_for,
)
from gateway.config import ConfigError


def formation_base(project: Path = ROOT) -> Path:
    """The formation's folder: BOOKING_CLUSTER_DIR, else `.local/cluster-pg`, else (as root, when the
    postgres user cannot reach the project) /var/tmp/booking-cluster-<hash>, as dbctl/cluster.py does."""
    explicit = os.environ.get("BOOKING_CLUSTER_DIR")
    if explicit:
        return Path(explicit)
    state = local.state_dir()
    base = state / "cluster-pg"
    if _as_root():
        state.mkdir(parents=True, exist_ok=True)
        if not _postgres_can_reach(state):
            digest = hashlib.sha256(str(project.resolve()).encode()).hexdigest()[:10]
            return Path("/var/tmp") / f"booking-cluster-{digest}"  # noqa: S108  (fixed name, kept across runs)
    return base


def formation_from_env(env: Mapping[str, str]) -> autofailover.Formation:
    raw = env.get("CLUSTER_PG_PORT", "").strip() or "54340"
    try:
        port = int(raw)
    except ValueError:
        raise ConfigError(f"CLUSTER_PG_PORT must be a whole number (got {raw!r})") from None
    if not 1 <= port <= 65533:
        raise ConfigError(f"CLUSTER_PG_PORT must be between 1 and 65533 (got {port})")
    # The local cluster's password: the superuser's, the owner's and pg_auto_failover's roles'; the
    # gateway, worker and monitor roles get their own (dbctl/migrate.py role_password_for).
    password = local.kept_secret(local.PASSWORD_FILE)
    return autofailover.Formation(formation_base(), port, (port + 1, port + 2), password)


def app_dir() -> Path:
    path = local.state_dir().resolve() / "cluster"
    (path / "logs").mkdir(parents=True, exist_ok=True)
    (path / "pids").mkdir(parents=True, exist_ok=True)
    return path


def role_pgpass(f: autofailover.Formation, role: str, folder: Path) -> Path:
    """A pgpass with one role's line, for every node's port (the process never gets another role's:
    its password is its own, derived from the local one as dbctl/migrate.py role_password_for)."""
    secret = role_password_for(role, f.password).replace("\\", "\\\\").replace(":", "\\:")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"pgpass-{role}"
    write_private(path, f"# Written by dbctl for make cluster.\n127.0.0.1:*:*:{role}:{secret}\n")
    return path


@dataclass
class Apps:
    """HAProxy, N gateways and a worker over a formation, detached, with pid files."""

    f: autofailover.Formation
    layout: haproxy.Layout
    folder: Path
    worker: bool = True

    def gateway_env(self, port: int, n: int, base_env: Mapping[str, str]) -> dict[str, str]:
        from dbctl import __main__ as main

        env = dict(base_env)
        env.update({
            "GATEWAY_DATABASE_URL": self.f.url(GATEWAY_ROLE),
            "GATEWAY_DATABASE_READ_URL": self.f.url(GATEWAY_ROLE, "prefer-standby"),
            "PGPASSFILE": str(role_pgpass(self.f, GATEWAY_ROLE, self.folder)),
        })  # fmt: skip
        env.setdefault("JWT_SECRET", local.kept_secret("jwt-secret"))
        env.update({k: v for k, v in main.payment_credentials().items() if not env.get(k)})
        main.sandbox_dir(env)
        return haproxy.gateway_env(env, self.layout, port, self.folder / "metrics" / f"gw{n}")

    def worker_env(self, base_env: Mapping[str, str]) -> dict[str, str]:
        from dbctl import __main__ as main

        env = dict(base_env)
        env.update(
            {
                "WORKER_DATABASE_URL": self.f.url(WORKER_ROLE),
                "PGPASSFILE": str(role_pgpass(self.f, WORKER_ROLE, self.folder)),
            }
        )
        env.update({k: v for k, v in main.payment_credentials().items() if not env.get(k)})
        main.sandbox_dir(env)
        # The providers' APIs the worker asks (reconciliation, refunds): in development the
        # gateways' sandbox, reached through HAProxy (GATEWAY_PORT, which the default would use,
        # is no gateway of this layout).
        probe = dict(env)
        probe["PUBLIC_BASE_URL"] = env.get("PUBLIC_BASE_URL") or f"http://{self.layout.host}:{self.layout.port}"
        main.provider_endpoints(probe)
        for name in ("MOMO_ENDPOINT", "ZALOPAY_ENDPOINT", "BANK_API_URL", "CARD_API_URL"):
            if probe.get(name) and not env.get(name):
                env[name] = probe[name]
        return env

    def pidfile(self, name: str) -> Path:
        (self.folder / "pids").mkdir(parents=True, exist_ok=True)
        return self.folder / "pids" / f"{name}.pid"

    def spawn(self, name: str, args: list[str], env: Mapping[str, str]) -> subprocess.Popen[bytes]:
        (self.folder / "logs").mkdir(parents=True, exist_ok=True)
        with (self.folder / "logs" / f"{name}.log").open("ab") as out:
            proc = subprocess.Popen(args, env=dict(env), cwd=ROOT, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        self.pidfile(name).write_text(f"{proc.pid}\n")
        return proc

    def names(self) -> list[str]:
        return [f"gw{n}" for n in range(1, len(self.layout.gateway_ports) + 1)] + ["haproxy", "worker"]

    def pid(self, name: str) -> int | None:
        try:
            pid = int(self.pidfile(name).read_text())
        except (OSError, ValueError):
            return None
        # A stale pid file (a reboot) may name another process now: only ours by its command line.
        marker = {"haproxy": "haproxy", "worker": "worker"}.get(name, "uvicorn")
        return pid if autofailover._alive(pid, marker) else None

    def start(self, base_env: Mapping[str, str]) -> dict[str, subprocess.Popen[bytes]]:
        from dbctl import __main__ as main
        from worker.config import WorkerSettings

        binary = haproxy.require_binary()
        procs: dict[str, subprocess.Popen[bytes]] = {}
        for n, port in enumerate(self.layout.gateway_ports, 1):
            if self.pid(f"gw{n}") is None:
                env = self.gateway_env(port, n, base_env)
                main.fresh_metrics_dir(env["PROMETHEUS_MULTIPROC_DIR"])
                procs[f"gw{n}"] = self.spawn(f"gw{n}", main.uvicorn_args(env), env)
        if self.pid("haproxy") is None:
            config = self.folder / "haproxy.cfg"
            config.write_text(haproxy.render(self.layout.gateway_ports, self.layout.host))
            procs["haproxy"] = self.spawn("haproxy", haproxy.haproxy_command(binary, config),
                                          haproxy.haproxy_env(self.layout, base_env))  # fmt: skip
        if self.worker and self.pid("worker") is None:
            wenv = self.worker_env(base_env)
            WorkerSettings.from_env(wenv)
            procs["worker"] = self.spawn("worker", main.WORKER_ARGS, wenv)
        return procs

    def wait_ready(self, timeout: float = 60) -> None:
        url = f"http://{self.layout.host}:{self.layout.port}/readyz"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise ConfigError(f"{url} did not answer 200 in {timeout:g} s; see {self.folder / 'logs'}")

    def stop(self, timeout: float = 30) -> None:
        for name in ["haproxy", *self.names()]:  # HAProxy first: no new requests to the gateways
            pid = self.pid(name)
            if pid is None:
                continue
            # HAProxy: SIGUSR1, its soft stop (stop listening, finish the requests in flight; SIGTERM
            # would cut them). The gateways and the worker drain on SIGTERM.
            os.kill(pid, signal.SIGUSR1 if name == "haproxy" else signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while self.pid(name) is not None and time.monotonic() < deadline:
                time.sleep(0.1)
            if self.pid(name) is not None:
                try:
                    os.killpg(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            self.pidfile(name).unlink(missing_ok=True)


def bring_up(f: autofailover.Formation) -> None:
    """The formation up (created when missing), then migrate and seed through the read-write URL."""
    from dbctl import __main__ as main
    from dbctl.seed import seed

    os.environ["PGPASSFILE"] = str(f.pgpass)  # migrations and seeds log in as postgres / the owner
    f.create()
    owner = f.url(OWNER_ROLE)
    applied = migrate(owner, f.url("postgres"), role_password=f.password)
    if applied:
        print(f"Applied migrations: {', '.join(applied)}")
    seed(owner, login_file=app_dir() / "admin-login.txt")  # not make run's: another database
    main.apply_payment_mode(owner, os.environ.get("PAYMENT_MODE") or "instant")

    # For psql and pg_autoctl by hand (README): every role, every port of the formation.
    def field(value: str) -> str:
        return value.replace("\\", "\\\\").replace(":", "\\:")

    lines = [f"127.0.0.1:*:*:{role}:{field(role_password_for(role, f.password))}\n" for role in ROLE_PASSWORD_VARIABLES]
    lines.append(f"127.0.0.1:*:*:*:{field(f.password)}\n")
    write_private(app_dir() / "pgpass", "# Written by dbctl for make cluster.\n" + "".join(lines))


def cluster() -> None:
    try:
        layout = haproxy.Layout.from_env(os.environ)
        haproxy.require_binary()
        f = formation_from_env(os.environ)
        autofailover.require_autoctl()
    except (ConfigError, autofailover.FormationError) as exc:
        sys.exit(str(exc))
    try:
        bring_up(f)
        primary, standby = f.wait_healthy(120)
        apps = Apps(f, layout, app_dir(), worker=_worker_wanted())
        apps.start(os.environ)
        apps.wait_ready()
    except (ConfigError, autofailover.FormationError) as exc:
        sys.exit(str(exc))
    except (psycopg.Error, RuntimeError, OSError) as exc:  # a migration, the seed, a process: no traceback
        sys.exit(f"make cluster failed: {exc}; logs in {app_dir() / 'logs'} and {f.base / 'logs'}")
    ports = ", ".join(str(p) for p in layout.gateway_ports)
    print(
        f"Cluster up. HAProxy on http://{layout.host}:{layout.port} (stats http://{layout.host}:{layout.stats_port}/)"
        f" over {len(layout.gateway_ports)} gateway(s) on {ports}, and a worker.\n"
        f"pg_auto_failover: monitor 127.0.0.1:{f.monitor_port}, primary {primary} "
        f"(127.0.0.1:{f.port_of(primary)}), standby {standby} (127.0.0.1:{f.port_of(standby)}), synchronous.\n"
        f"Database (read-write): {f.url(OWNER_ROLE)}\n"
        f"Logs: {app_dir() / 'logs'} and {f.base / 'logs'}.  `make cluster-stop` stops it all (data kept)."
    )


def cluster_stop() -> None:
    try:
        layout = haproxy.Layout.from_env(os.environ)
        f = formation_from_env(os.environ)
    except ConfigError as exc:
        sys.exit(str(exc))
    Apps(f, layout, app_dir()).stop()
    if f.base.exists():
        f.stop_all()
    print("Cluster stopped (gateways, HAProxy, worker, pg_auto_failover nodes and monitor); data kept in "
          f"{f.base}.")  # fmt: skip


def _worker_wanted() -> bool:
    from dbctl import __main__ as main

    return main.run_worker_wanted(os.environ)
