"""A private PostgreSQL cluster: the embedded default of `make run`, and the test server.

PostgreSQL refuses to run as root, so when we are root every server binary runs as the
`postgres` OS user, on folders that user owns and can reach.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg import sql

PG_BIN = Path(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin"))


def pg_tool(name: str) -> str:
    path = PG_BIN / name
    if not path.exists():
        raise SystemExit(f"{path} not found: install postgresql-15 (make deps) or set PG_BIN to its bin folder")
    return str(path)


def _as_root() -> bool:
    return os.geteuid() == 0


def _run_as_owner(args: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    """Run a server binary; as the postgres OS user when we are root."""
    if _as_root():
        args = ["runuser", "-u", "postgres", "--", *args]
    done: subprocess.CompletedProcess[str] = subprocess.run(args, text=True, capture_output=True, check=False, **kw)  # type: ignore[call-overload]
    return done


def _postgres_can_reach(path: Path) -> bool:
    probe = _run_as_owner(["test", "-x", str(path)])
    return probe.returncode == 0


def _give_to_postgres(path: Path) -> None:
    pw = pwd.getpwnam("postgres")
    for p in [path, *path.rglob("*")]:
        os.chown(p, pw.pw_uid, pw.pw_gid)


def memory_bytes() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    return 4 << 30


def _mb(n: int) -> str:
    return f"{max(n >> 20, 1)}MB"


def tuned_settings(port: int) -> dict[str, str]:
    """postgresql.conf after the seed's section 1.6, scaled to this machine.

    The seed tunes a 4 GB server: shared_buffers 25%, effective_cache_size 75%,
    maintenance_work_mem 256MB, work_mem 10MB. We keep the ratios and cap what a shared
    development machine should give one cluster.
    """
    ram = memory_bytes()
    return {
        "listen_addresses": "'127.0.0.1'",
        "port": str(port),
        "unix_socket_directories": "''",
        "max_connections": "200",
        "shared_buffers": _mb(min(ram // 4, 4 << 30)),
        "effective_cache_size": _mb(ram * 3 // 4),
        "maintenance_work_mem": _mb(min(ram // 16, 1 << 30)),
        "work_mem": "10MB",
        "wal_buffers": "16MB",
        "checkpoint_completion_target": "0.9",
        "default_statistics_target": "100",
        "random_page_cost": "1.1",
        "effective_io_concurrency": "200",
        # Slow-query log and lock diagnostics.
        "log_min_duration_statement": "1000",
        "log_line_prefix": "'%m [%p] %u@%d '",
        "log_lock_waits": "on",
        "deadlock_timeout": "1s",
        # A safety net for ad-hoc sessions; the api functions and the gateway role set
        # tighter values of their own (docs/DESIGN-NOTES.md, "Locks, timeouts").
        "lock_timeout": "5s",
        "autovacuum": "on",
        "autovacuum_max_workers": "3",
        "autovacuum_naptime": "1min",
        "timezone": "'UTC'",
        # pg_cron runs jobs in background workers: no TCP login, no pg_hba rule needed.
        "shared_preload_libraries": "'pg_cron'",
        "cron.use_background_workers": "on",
        "max_worker_processes": "16",
    }


@dataclass
class Cluster:
    datadir: Path
    port: int
    settings: dict[str, str] = field(default_factory=dict)

    @property
    def logfile(self) -> Path:
        return self.datadir.parent / "postgresql.log"

    def superuser_conninfo(self, dbname: str = "postgres") -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname={dbname}"

    def superuser_url(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def url(self, user: str, dbname: str) -> str:
        return f"postgresql://{user}@127.0.0.1:{self.port}/{dbname}"

    def initialised(self) -> bool:
        return (self.datadir / "PG_VERSION").exists()

    def init(self) -> None:
        """initdb once; later calls only rewrite our settings file."""
        base = self.datadir.parent
        base.mkdir(parents=True, exist_ok=True)
        if _as_root():
            _give_to_postgres(base)
        os.chmod(base, 0o700)
        if not self.initialised():
            done = _run_as_owner(
                [
                    pg_tool("initdb"),
                    "-D",
                    str(self.datadir),
                    "--username=postgres",
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--locale=C.UTF-8",
                ]
            )
            if done.returncode != 0:
                raise RuntimeError(f"initdb failed:\n{done.stdout}\n{done.stderr}")
            with open(self.datadir / "postgresql.conf", "a") as f:
                f.write("\ninclude_if_exists = 'booking.conf'\n")
        conf = "".join(f"{k} = {v}\n" for k, v in self.settings.items())
        target = self.datadir / "booking.conf"
        target.write_text("# Written by dbctl on every start; edit dbctl/cluster.py instead.\n" + conf)
        if _as_root():
            _give_to_postgres(self.datadir / "booking.conf")

    def running(self) -> bool:
        if not self.initialised():
            return False
        return _run_as_owner([pg_tool("pg_ctl"), "-D", str(self.datadir), "status"]).returncode == 0

    def start(self) -> None:
        self.init()
        if self.running():
            # Settings may have changed since the last start; a restart picks them up.
            return
        done = _run_as_owner(
            [
                pg_tool("pg_ctl"),
                "-D",
                str(self.datadir),
                "-l",
                str(self.logfile),
                "-w",
                "-t",
                "60",
                "start",
            ]
        )
        if done.returncode != 0:
            tail = self.logfile.read_text()[-3000:] if self.logfile.exists() else ""
            raise RuntimeError(f"pg_ctl start failed:\n{done.stdout}\n{done.stderr}\n{tail}")
        self.wait_ready()

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            ok = subprocess.run(
                [pg_tool("pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-q"],
                check=False,
            )
            if ok.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"PostgreSQL on port {self.port} did not get ready")
            time.sleep(0.1)

    def stop(self, mode: str = "fast") -> None:
        if self.running():
            _run_as_owner([pg_tool("pg_ctl"), "-D", str(self.datadir), "-m", mode, "-w", "stop"])

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.datadir.parent, ignore_errors=True)


def create_database(cluster: Cluster, dbname: str, *, replace: bool = False) -> None:
    """CREATE DATABASE unless it exists; replace=True drops an existing one first (WITH FORCE)."""
    with psycopg.connect(cluster.superuser_conninfo(), autocommit=True) as conn:
        if replace:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname)))
        elif conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone():
            return
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))


def local_base(project: Path) -> Path:
    """Where `make run` keeps its cluster: `.local/pg` in the project (ignored by git).

    As root the postgres OS user must be able to reach that folder; a project under a
    private home (e.g. /root) cannot be, so the cluster then lives under /var/tmp.
    """
    explicit = os.environ.get("BOOKING_PGDATA")
    if explicit:
        return Path(explicit)
    base = project / ".local" / "pg"
    if _as_root():
        base.parent.mkdir(parents=True, exist_ok=True)
        if not _postgres_can_reach(base.parent):
            digest = hashlib.sha256(str(project.resolve()).encode()).hexdigest()[:10]
            return Path("/var/tmp") / f"booking-pg-{digest}"  # noqa: S108  (fixed name, kept across runs)
    return base
