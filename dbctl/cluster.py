"""A private PostgreSQL cluster: the embedded default of `make run`, and the test server.

PostgreSQL refuses to run as root, so when we are root every server binary runs as the
`postgres` OS user, on folders that user owns and can reach.

Authentication: dbctl writes pg_hba.conf itself. A cluster given a password (the one
`make run` starts) takes TCP connections on 127.0.0.1/::1 only, every role by
scram-sha-256; unix sockets are off. A cluster without one (throwaway clusters of tests and
bench, in private temporary folders) trusts 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

REPLICATION_ROLE = "booking_replicator"  # the login standbys stream with (dbctl/replica.py)
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


def _trusted_owners() -> set[int]:
    return {0, pwd.getpwnam("postgres").pw_uid}


def _give_to_postgres(path: Path) -> None:
    pw = pwd.getpwnam("postgres")
    for p in [path, *path.rglob("*")]:
        # Never follow a link: as root, a planted link would hand its target to postgres.
        os.chown(p, pw.pw_uid, pw.pw_gid, follow_symlinks=False)


def write_private(path: Path, text: str, *, for_postgres: bool = False) -> None:
    """Replace a file with one only its owner can read (mode 600, written whole, then renamed).
    for_postgres: owned by the postgres OS user when we are root (files the server reads)."""
    tmp = path.with_name(path.name + ".new")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    if for_postgres and _as_root():
        _give_to_postgres(tmp)
    tmp.replace(path)


def set_password(conn: psycopg.Connection, role: str, password: str) -> None:
    """ALTER ROLE ... PASSWORD with the verifier computed here: the clear text never reaches
    the server (nor its log)."""
    verifier = conn.pgconn.encrypt_password(password.encode(), role.encode())
    conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(role), sql.Literal(verifier.decode())))


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
        # pg_cron runs jobs in background workers: no login, so no pg_hba rule and no password.
        "shared_preload_libraries": "'pg_cron'",
        "cron.use_background_workers": "on",
        "max_worker_processes": "16",
    }


def private_folder(base: Path) -> None:
    """The folder a cluster's data lives in: made if missing, postgres's (as root), mode 700.
    Refused when it is a link or someone else's (e.g. /var/tmp/booking-pg-*: a folder another
    user made first is not ours to chown)."""
    if _as_root() and (base.is_symlink() or (base.exists() and base.stat().st_uid not in _trusted_owners())):
        raise RuntimeError(f"{base} is a link or belongs to another user: refusing to use it")
    base.mkdir(parents=True, exist_ok=True)
    if _as_root():
        _give_to_postgres(base)
    os.chmod(base, 0o700)


@dataclass
class Cluster:
    datadir: Path
    port: int
    settings: dict[str, str] = field(default_factory=dict)
    # The superuser's password; None: a throwaway cluster that trusts 127.0.0.1.
    password: str | None = field(default=None, repr=False)

    @property
    def logfile(self) -> Path:
        return self.datadir.parent / "postgresql.log"

    def superuser_conninfo(self, dbname: str = "postgres") -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname={dbname}"

    def superuser_url(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def url(self, user: str, dbname: str) -> str:
        return f"postgresql://{user}@127.0.0.1:{self.port}/{dbname}"

    def connect(self, dbname: str = "postgres") -> psycopg.Connection:
        """An autocommit superuser connection (the password is passed, never put in a URL)."""
        conninfo = self.superuser_conninfo(dbname)
        if self.password:
            conninfo = make_conninfo(conninfo, password=self.password)
        return psycopg.connect(conninfo, autocommit=True)

    @property
    def auth_method(self) -> str:
        return "scram-sha-256" if self.password else "trust"

    def hba_conf(self) -> str:
        m = self.auth_method
        return (
            "# Written by dbctl (dbctl/cluster.py). TCP on loopback only; unix sockets are off.\n"
            "# TYPE  DATABASE  USER  ADDRESS       METHOD\n"
            f"host    all       all   127.0.0.1/32  {m}\n"
            f"host    all       all   ::1/128       {m}\n"
            "# Streaming standbys (dbctl/replica.py): `all` does not cover replication connections.\n"
            f"host    replication  {REPLICATION_ROLE}  127.0.0.1/32  {m}\n"
        )

    def initialised(self) -> bool:
        return (self.datadir / "PG_VERSION").exists()

    def init(self) -> bool:
        """initdb once; later calls only rewrite our settings file. True when it changed."""
        private_folder(self.datadir.parent)
        if not self.initialised():
            self._initdb()
        conf = "".join(f"{k} = {v}\n" for k, v in self.settings.items())
        text = "# Written by dbctl on every start; edit dbctl/cluster.py instead.\n" + conf
        target = self.datadir / "booking.conf"
        if target.exists() and target.read_text() == text:
            return False
        target.write_text(text)
        if _as_root():
            _give_to_postgres(target)
        return True

    def _initdb(self) -> None:
        args = [
            pg_tool("initdb"), "-D", str(self.datadir), "--username=postgres",
            f"--auth={self.auth_method}", "--encoding=UTF8", "--locale=C.UTF-8",
        ]  # fmt: skip
        pwfile = self.datadir.parent / "initdb-password"
        if self.password:
            write_private(pwfile, self.password + "\n", for_postgres=True)
            args.append(f"--pwfile={pwfile}")
        try:
            done = _run_as_owner(args)
        finally:
            pwfile.unlink(missing_ok=True)
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed:\n{done.stdout}\n{done.stderr}")
        with open(self.datadir / "postgresql.conf", "a") as f:
            f.write("\ninclude_if_exists = 'booking.conf'\n")
        write_private(self.datadir / "pg_hba.conf", self.hba_conf(), for_postgres=True)

    def running(self) -> bool:
        if not self.initialised():
            return False
        return _run_as_owner([pg_tool("pg_ctl"), "-D", str(self.datadir), "status"]).returncode == 0

    def start(self) -> None:
        """Start (or find running), then make sure our authentication rules are in force.

        A server already running re-reads booking.conf when it changed; settings that need a
        restart (shared_buffers, port, ...) apply after `make stop`, then `make run`.
        """
        changed = self.init()
        if self.running():
            if changed:
                self._reload()
                print(
                    "PostgreSQL settings changed: reloaded. Those that need a restart apply after"
                    f" `make stop`, then `make run` (log: {self.logfile}).",
                    file=sys.stderr,
                )
        else:
            done = _run_as_owner(
                [pg_tool("pg_ctl"), "-D", str(self.datadir), "-l", str(self.logfile), "-w", "-t", "60", "start"]
            )
            if done.returncode != 0:
                tail = self.logfile.read_text()[-3000:] if self.logfile.exists() else ""
                raise RuntimeError(f"pg_ctl start failed:\n{done.stdout}\n{done.stderr}\n{tail}")
        self.wait_ready()
        self._enforce_auth()

    def _reload(self) -> None:
        _run_as_owner([pg_tool("pg_ctl"), "-D", str(self.datadir), "reload"])

    def _enforce_auth(self) -> None:
        """Bring pg_hba.conf to ours. A cluster initialised by an older dbctl trusts every
        local connection: while it still does, give the superuser and every login role
        without a password this cluster's password, then switch the rules and reload."""
        hba = self.datadir / "pg_hba.conf"
        if hba.read_text() == self.hba_conf():
            return
        if self.password:
            with self.connect() as conn:
                set_password(conn, "postgres", self.password)
                roles = conn.execute("SELECT rolname FROM pg_authid WHERE rolcanlogin AND rolpassword IS NULL")
                for (role,) in roles.fetchall():
                    set_password(conn, role, self.password)
        write_private(hba, self.hba_conf(), for_postgres=True)
        self._reload()
        if self.password:
            self._wait_password_required()

    def _wait_password_required(self, timeout: float = 30.0) -> None:
        """The reload is asynchronous: wait until a login without a password is refused."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                psycopg.connect(
                    self.superuser_conninfo(), password="", passfile=str(self.datadir.parent / "none")
                ).close()
            except psycopg.OperationalError:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"PostgreSQL on port {self.port} still accepts logins without a password")
            time.sleep(0.1)

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
    with cluster.connect() as conn:
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
