"""A pg_auto_failover formation on one machine: a monitor and two data nodes (issue 13 item 4).

pg_autoctl (Debian `pg-auto-failover-cli`, the monitor's extension in `postgresql-15-auto-failover`)
runs each node: `pg_autoctl run` starts and watches its PostgreSQL (a "keeper") and reports to the
monitor, which decides which node is the primary and tells the standby to promote when the
primary is lost. Everything runs as the `postgres` OS user (PostgreSQL refuses root), with its
files under one folder (`Formation.base`: the data folders, pg_autoctl's own config/state/pid
files through XDG_CONFIG_HOME, XDG_DATA_HOME and XDG_RUNTIME_DIR, a pgpass file, the logs).

Authentication is the local cluster's (dbctl/cluster.py): dbctl runs initdb itself with
scram-sha-256 and its own pg_hba.conf (TCP on 127.0.0.1 only, every role by password; unix
sockets off) and tells pg_autoctl `--skip-pg-hba` (left to itself it would initdb with `trust`
and add `trust` rules). One password, kept in the state folder, is the superuser's, the roles'
(booking_*), the monitor's `autoctl_node` and the replication role's `pgautofailover_replicator`;
pg_autoctl, pg_basebackup and the walreceiver find it in the formation's pgpass file.

Synchronous replication: both nodes have pg_auto_failover's replication quorum (the default) and
the formation's number_sync_standbys is 0, the only value two nodes allow: the primary runs with
synchronous_standby_names = 'ANY 1 (standby)', so a commit (a 201) returns once the standby has
it. When the standby is lost the monitor moves the primary to wait_primary and turns synchronous
replication off until the standby is back (docs/DESIGN-NOTES.md, "Failover").

Settings: our tuned ones (dbctl/cluster.py tuned_settings, pg_cron for the booking database) in
each node's booking.conf, included last in postgresql.conf, so they win over pg_autoctl's
postgresql-auto-failover.conf (its md5 password_encryption, its 6 GB shared_buffers, ...). The
monitor's failover timing is tuned for a demo (MONITOR_TIMING, README "Single-machine cluster").
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from dbctl.cluster import PG_BIN, Cluster, _as_root, memory_bytes, set_password, tuned_settings, write_private
from dbctl.migrate import ROLE_PASSWORD_VARIABLES, role_password_for

AUTOCTL_PLACES = ("/usr/bin/pg_autoctl", "/usr/lib/postgresql/15/bin/pg_autoctl")
PACKAGES = ("postgresql-15-auto-failover", "pg-auto-failover-cli")
MONITOR_DB = "pg_auto_failover"
DB = "booking"
NODE_NAMES = ("node1", "node2")
REPLICATOR = "pgautofailover_replicator"

# The monitor's failover timing (pgautofailover.* settings, milliseconds). pg_auto_failover's
# defaults take ~50 s from a lost primary to a writable new one: the node is unhealthy after 20 s
# without a report and a failed health check, then the promoted standby stays read-only for
# primary_demote_timeout (30 s), the time the old primary is given to notice it is alone and stop
# (a keeper cut off from the monitor and its standby demotes its node after
# network_partition_timeout). For a demo on one machine: a check every second, unhealthy after
# 5 s, and 10 s for the old primary to demote itself, which KEEPER_TIMEOUTS keeps below (5 s).
MONITOR_TIMING = {
    "pgautofailover.health_check_period": "1000",
    "pgautofailover.health_check_timeout": "2000",
    "pgautofailover.health_check_max_retries": "2",
    "pgautofailover.health_check_retry_delay": "1000",
    "pgautofailover.node_considered_unhealthy_timeout": "5000",
    "pgautofailover.primary_demote_timeout": "10000",
    "pgautofailover.startup_grace_period": "5000",
}
KEEPER_TIMEOUTS = {"timeout.network_partition_timeout": "5"}

# Tests and the drill: no fsync (a killed process loses nothing the kernel has; the machine stays
# up) and small shared buffers; synchronous_commit stays on: it is what makes replication synchronous.
FAST_UNSAFE = {"fsync": "off", "shared_buffers": "128MB", "log_min_duration_statement": "-1"}


class FormationError(RuntimeError):
    pass


def autoctl_binary() -> str | None:
    found = shutil.which("pg_autoctl")
    return found or next((p for p in AUTOCTL_PLACES if os.access(p, os.X_OK)), None)


def require_autoctl() -> str:
    found = autoctl_binary()
    if found is None:
        raise FormationError(
            f"pg_autoctl is not installed: scripts/install-system-deps {' '.join(PACKAGES)} (make cluster does it)"
        )
    return found


def monitor_extension_installed() -> bool:
    done = subprocess.run([str(PG_BIN / "pg_config"), "--sharedir"], capture_output=True, text=True, check=False)
    share = Path(done.stdout.strip() or "/usr/share/postgresql/15")
    return (share / "extension" / "pgautofailover.control").exists()


class _Node(Cluster):
    """A data node's folder, initialised by dbctl: our pg_hba.conf plus the replication rule the
    standby (and pg_basebackup) need."""

    def hba_conf(self) -> str:
        return super().hba_conf() + (
            f"host    replication  {REPLICATOR}  127.0.0.1/32  {self.auth_method}\n"
            # pg_autoctl talks to its own node over the private socket (dbctl/autofailover.py)
            f"local   all       all                 {self.auth_method}\n"
        )


def _own(*paths: Path) -> None:
    """Give these files/folders (not what is below them) to the postgres OS user when we are root."""
    if _as_root():
        pw = pwd.getpwnam("postgres")
        for path in paths:
            os.chown(path, pw.pw_uid, pw.pw_gid, follow_symlinks=False)


def _alive(pid: int, command: str) -> bool:
    """A live process running `command` (a zombie, killed but not yet reaped by its parent, is not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X") and command in cmdline


@dataclass
class Formation:
    base: Path  # owned by postgres (mode 700): everything of the formation is in here
    monitor_port: int
    node_ports: tuple[int, int]
    password: str = field(repr=False)
    fast: bool = False  # FAST_UNSAFE settings (tests, the drill's throwaway formations)
    _procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict, repr=False)

    # ---- where things are -------------------------------------------------------------------
    def datadir(self, name: str) -> Path:
        return self.base / name

    def port_of(self, name: str) -> int:
        return self.monitor_port if name == "monitor" else self.node_ports[NODE_NAMES.index(name)]

    def name_of(self, port: int) -> str:
        return NODE_NAMES[self.node_ports.index(port)]

    @property
    def sockets(self) -> Path:
        return self.base / "sockets"

    @property
    def pgpass(self) -> Path:
        return self.base / "pgpass"

    def log(self, name: str) -> Path:
        return self.base / "logs" / f"{name}.log"

    def _config_file(self, name: str) -> Path:
        # pg_autoctl keeps its config at $XDG_CONFIG_HOME/pg_autoctl/<absolute PGDATA>/pg_autoctl.cfg
        return self.base / "xdg" / "config" / "pg_autoctl" / str(self.datadir(name)).lstrip("/") / "pg_autoctl.cfg"

    def _pidfile(self, name: str) -> Path:
        return self.base / "xdg" / "run" / "pg_autoctl" / str(self.datadir(name)).lstrip("/") / "pg_autoctl.pid"

    @property
    def monitor_uri(self) -> str:
        return f"postgres://autoctl_node@127.0.0.1:{self.monitor_port}/{MONITOR_DB}?sslmode=prefer"

    def hosts(self) -> str:
        return ",".join(f"127.0.0.1:{p}" for p in self.node_ports)

    def url(self, user: str, attrs: str = "read-write", dbname: str = DB) -> str:
        """A multi-host URL: libpq tries both nodes and keeps the one that fits target_session_attrs
        (read-write: the primary; prefer-standby: the standby, else the primary)."""
        return f"postgresql://{user}@{self.hosts()}/{dbname}?target_session_attrs={attrs}&connect_timeout=3"

    def node_url(self, name: str, user: str = "postgres", dbname: str = DB) -> str:
        return f"postgresql://{user}@127.0.0.1:{self.port_of(name)}/{dbname}?connect_timeout=3"

    # ---- settings ---------------------------------------------------------------------------
    def _settings(self, name: str) -> dict[str, str]:
        port = self.port_of(name)
        base = tuned_settings(port)
        # Two data nodes and a monitor on one machine: each node gets 1/8 of the memory (<= 2 GB).
        base["shared_buffers"] = f"{max(min(memory_bytes() // 8, 2 << 30) >> 20, 128)}MB"
        base["password_encryption"] = "'scram-sha-256'"  # noqa: S105  (pg_autoctl's file says md5)
        base["wal_keep_size"] = "'1GB'"  # pg_autoctl's 8 GB is a lot for a laptop
        if name == "monitor":
            keep = ("listen_addresses", "port", "unix_socket_directories", "password_encryption", "timezone",
                    "log_line_prefix")  # fmt: skip
            settings = {k: v for k, v in base.items() if k in keep}
            settings.update({"shared_buffers": "128MB", "max_connections": "50"})
            settings.update(MONITOR_TIMING)
            return settings
        # pg_autoctl starts PostgreSQL with no TCP address for crash recovery before a pg_rewind:
        # it needs a unix socket. A private folder (mode 700, postgres's): nobody else reaches it,
        # and its `local` rule in pg_hba.conf asks for a password all the same (_Node.hba_conf).
        base["unix_socket_directories"] = f"'{self.sockets}'"
        base["shared_preload_libraries"] = "'pg_cron,pg_stat_statements'"  # pg_autoctl wants the latter
        base["cron.database_name"] = f"'{DB}'"
        if self.fast:
            base.update(FAST_UNSAFE)
        return base

    def _cluster(self, name: str) -> Cluster:
        cls = Cluster if name == "monitor" else _Node
        return cls(self.datadir(name), self.port_of(name), self._settings(name), password=self.password)

    # ---- running pg_autoctl as postgres -----------------------------------------------------
    def env(self) -> dict[str, str]:
        xdg = self.base / "xdg"
        home = pwd.getpwnam("postgres").pw_dir if _as_root() else os.environ.get("HOME", str(self.base))
        return {
            "PATH": f"{PG_BIN}:/usr/bin:/bin",
            "HOME": home,
            "LANG": "C.UTF-8",
            "XDG_CONFIG_HOME": str(xdg / "config"),
            "XDG_DATA_HOME": str(xdg / "share"),
            "XDG_RUNTIME_DIR": str(xdg / "run"),
            "PGPASSFILE": str(self.pgpass),
            "PGHOST": "127.0.0.1",  # never the unix socket (it is off)
            "PG_CONFIG": str(PG_BIN / "pg_config"),
        }

    def _user(self) -> dict[str, Any]:
        return {"user": "postgres", "group": "postgres", "extra_groups": []} if _as_root() else {}

    def autoctl(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [require_autoctl(), *args], env=self.env(), cwd=self.base, capture_output=True, text=True,
            check=False, timeout=timeout, **self._user(),
        )  # fmt: skip
        if check and done.returncode != 0:
            raise FormationError(f"pg_autoctl {' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        return done

    def _psql_conn(self, name: str, dbname: str = DB) -> psycopg.Connection[Any]:
        return psycopg.connect(
            f"host=127.0.0.1 port={self.port_of(name)} user=postgres dbname={dbname} connect_timeout=3",
            password=self.password, autocommit=True,
        )  # fmt: skip

    # ---- create ------------------------------------------------------------------------------
    def prepare(self) -> None:
        if _as_root() and (self.base.is_symlink() or (self.base.exists() and self.base.stat().st_uid not in
                                                      (0, pwd.getpwnam("postgres").pw_uid))):  # fmt: skip
            raise FormationError(f"{self.base} is a link or belongs to another user: refusing to use it")
        self.base.mkdir(parents=True, exist_ok=True)
        os.chmod(self.base, 0o700)
        made = [self.base]
        for sub in ("logs", "sockets", "xdg", "xdg/config", "xdg/share", "xdg/run"):
            (self.base / sub).mkdir(exist_ok=True)
            os.chmod(self.base / sub, 0o700)
            made.append(self.base / sub)

        # The formation's password for every role on every node (libpq's `*` fields), as the local
        # cluster has, after the gateway's, worker's and monitor's own (dbctl/migrate.py
        # role_password_for); host `*`: also pg_autoctl's connections over the private unix socket.
        def field(value: str) -> str:
            return value.replace("\\", "\\\\").replace(":", "\\:")

        own = [f"*:*:*:{role}:{field(role_password_for(role, self.password))}\n" for role in ROLE_PASSWORD_VARIABLES]
        text = "# Written by dbctl (dbctl/autofailover.py).\n" + "".join(own) + f"*:*:*:*:{field(self.password)}\n"
        write_private(self.pgpass, text)
        _own(*made, self.pgpass)

    def running(self, name: str) -> bool:
        pid = self.pid(name)
        return pid is not None

    def pid(self, name: str) -> int | None:
        """The pid of the node's `pg_autoctl run`, when it is alive."""
        try:
            pid = int(self._pidfile(name).read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        return pid if _alive(pid, "pg_autoctl") else None

    def postmaster_pid(self, name: str) -> int | None:
        try:
            return int((self.datadir(name) / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def start(self, name: str) -> None:
        """`pg_autoctl run` for one node, detached (its own session: kill_node can take the whole
        group, keeper and postmaster, as a lost machine would)."""
        if self.running(name):
            return
        # A pidfile naming a dead (or zombie) process would make pg_autoctl refuse to start.
        self._pidfile(name).unlink(missing_ok=True)
        log = self.log(name)
        with log.open("ab") as out:
            self._procs[name] = subprocess.Popen(
                [require_autoctl(), "run", "--pgdata", str(self.datadir(name))], env=self.env(), cwd=self.base,
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                **self._user(),
            )  # fmt: skip
        _own(log)
        deadline = time.monotonic() + 30
        while not self.running(name):
            if time.monotonic() > deadline:
                raise FormationError(f"pg_autoctl run for {name} did not start; see {log}")
            time.sleep(0.2)

    def _wait_connect(self, name: str, dbname: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._psql_conn(name, dbname).close()
                return
            except psycopg.OperationalError as exc:
                if time.monotonic() > deadline:
                    raise FormationError(f"{name} does not answer: {exc}; see {self.log(name)}") from None
            time.sleep(0.3)

    def _append_include_last(self, name: str) -> None:
        """Our booking.conf must be read after pg_autoctl's file (it prepends its include)."""
        conf = self.datadir(name) / "postgresql.conf"
        line = "include_if_exists = 'booking.conf'"
        lines = [x for x in conf.read_text().splitlines() if x.strip() != line]
        text = "\n".join(lines) + f"\n{line}\n"
        if conf.read_text() != text:
            conf.write_text(text)

    def _write_settings(self, name: str) -> None:
        cluster = self._cluster(name)
        text = "# Written by dbctl on every start; edit dbctl/autofailover.py instead.\n"
        text += "".join(f"{k} = {v}\n" for k, v in cluster.settings.items())
        target = self.datadir(name) / "booking.conf"
        target.write_text(text)
        self._append_include_last(name)
        _own(target, self.datadir(name) / "postgresql.conf")

    def _initdb(self, name: str) -> None:
        """initdb as the local cluster does it: our password, our pg_hba.conf."""
        cluster = self._cluster(name)
        if not cluster.initialised():
            cluster._initdb()

    def create_monitor(self) -> None:
        name = "monitor"
        self._initdb(name)
        if not self._config_file(name).exists():
            args = ["create", "monitor", "--pgdata", str(self.datadir(name)), "--pgport", str(self.monitor_port),
                    "--hostname", "127.0.0.1", "--pgctl", str(PG_BIN / "pg_ctl"),
                    "--no-ssl", "--skip-pg-hba"]  # fmt: skip
            self.autoctl(*args)
        self.autoctl("config", "set", "--pgdata", str(self.datadir(name)), "postgresql.listen_addresses", "127.0.0.1")
        self._write_settings(name)
        self.start(name)
        self._wait_connect(name, MONITOR_DB)
        with self._psql_conn(name, MONITOR_DB) as conn:
            set_password(conn, "autoctl_node", self.password)
            conn.execute("SELECT pg_reload_conf()")

    def create_node(self, name: str) -> None:
        data = self.datadir(name)
        first = name == NODE_NAMES[0] or not any(self._config_file(n).exists() for n in NODE_NAMES if n != name)
        if not self._config_file(name).exists():
            if first:
                self._initdb(name)  # the primary; the standby is pg_basebackup's copy of it
            args = ["create", "postgres", "--pgdata", str(data), "--pgport", str(self.port_of(name)),
                    "--pghost", "127.0.0.1", "--listen", "127.0.0.1", "--hostname", "127.0.0.1", "--name", name,
                    "--dbname", DB, "--username", "postgres", "--monitor", self.monitor_uri,
                    "--pgctl", str(PG_BIN / "pg_ctl"), "--no-ssl", "--skip-pg-hba"]  # fmt: skip
            self.autoctl(*args, timeout=600)
        # No replication.password in pg_autoctl's config: set there, it is on a command line (ps)
        # and in primary_conninfo; the walreceiver, pg_basebackup and pg_rewind find it in the
        # formation's pgpass (PGPASSFILE of every pg_autoctl and the PostgreSQL it starts).
        for key, value in KEEPER_TIMEOUTS.items():
            self.autoctl("config", "set", "--pgdata", str(data), key, value)
        self._write_settings(name)  # a standby's copy came from the primary: its port is its own
        self.start(name)
        self._wait_connect(name, DB)

    def set_replicator_password(self) -> None:
        """pg_autoctl creates the replication role without a password (ours is set here, on the
        primary; the standby gets it by replication)."""
        primary = self.primary()
        if primary is None:
            raise FormationError("no primary to set the replication password on")
        with self._psql_conn(primary) as conn:
            if conn.execute("SELECT pg_is_in_recovery()").fetchone() == (False,):
                set_password(conn, REPLICATOR, self.password)

    def create(self) -> None:
        """Create what is missing and start everything (idempotent): monitor, node1, node2."""
        require_autoctl()
        self.prepare()
        if all(self._config_file(name).exists() for name in ("monitor", *NODE_NAMES)):
            # Made before: start all three and let the monitor sort the roles out. Either node
            # may have been the primary when it stopped (a failover, a switchover): waiting for
            # node1 alone would find the monitor still naming node2, not started yet.
            self.start_all()
            self.wait_healthy(timeout=180)
            return
        self.create_monitor()
        self.create_node(NODE_NAMES[0])
        self.wait_primary(timeout=120)
        self.set_replicator_password()
        self.create_node(NODE_NAMES[1])
        self.wait_healthy(timeout=180)

    def start_all(self) -> None:
        self.prepare()
        for name in ("monitor", *NODE_NAMES):
            self._write_settings(name)
            self.start(name)

    # ---- state -------------------------------------------------------------------------------
    def state(self) -> list[dict[str, Any]]:
        """The monitor's view: one dict per node (name, port, reported and assigned state, ...)."""
        with psycopg.connect(
            f"host=127.0.0.1 port={self.monitor_port} user=autoctl_node dbname={MONITOR_DB} connect_timeout=3",
            password=self.password, autocommit=True,
        ) as conn:  # fmt: skip
            cur = conn.execute(
                "SELECT nodename, nodeport, reportedstate::text, goalstate::text, health, reportedlsn::text"
                " FROM pgautofailover.node ORDER BY nodeid"
            )
            cols = ("name", "port", "reported", "assigned", "health", "lsn")
            return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]

    def primary(self) -> str | None:
        """The node the monitor has as primary (reported and assigned), if any."""
        try:
            for node in self.state():
                if node["reported"] == node["assigned"] and node["assigned"] in ("single", "wait_primary", "primary"):
                    return str(node["name"])
        except psycopg.Error:
            return None
        return None

    def writable(self) -> str | None:
        """The node that takes writes now (asked through the read-write URL), if any."""
        try:
            with psycopg.connect(self.url("postgres", dbname=DB), password=self.password, autocommit=True) as conn:
                port = conn.info.port
        except psycopg.OperationalError:
            return None
        return self.name_of(int(port))

    def wait_primary(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while True:
            name = self.primary()
            if name is not None:
                return name
            if time.monotonic() > deadline:
                raise FormationError(f"no primary after {timeout:g} s; see {self.base / 'logs'}")
            time.sleep(0.3)

    def wait_healthy(self, timeout: float) -> tuple[str, str]:
        """Until one node is primary and the other secondary (synchronous replication on)."""
        deadline = time.monotonic() + timeout
        states: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            try:
                states = self.state()
            except psycopg.Error:
                states = []
            by = {n["reported"]: n["name"] for n in states if n["reported"] == n["assigned"]}
            if "primary" in by and "secondary" in by:
                primary, standby = str(by["primary"]), str(by["secondary"])
                if self.synchronous(primary):
                    return primary, standby
            time.sleep(0.3)
        raise FormationError(f"the formation is not primary + secondary after {timeout:g} s: {states}")

    def synchronous(self, primary: str) -> bool:
        try:
            with self._psql_conn(primary) as conn:
                row = conn.execute(
                    "SELECT current_setting('synchronous_standby_names'), "
                    " (SELECT count(*) FROM pg_stat_replication WHERE sync_state IN ('sync', 'quorum'))"
                ).fetchone()
        except psycopg.Error:
            return False
        return bool(row and row[0] and row[1])

    # ---- stop, kill --------------------------------------------------------------------------
    def stop(self, name: str, timeout: float = 60) -> None:
        if not self.running(name):
            return
        self.autoctl("stop", "--pgdata", str(self.datadir(name)), check=False)
        deadline = time.monotonic() + timeout
        while self.running(name) and time.monotonic() < deadline:
            time.sleep(0.2)
        proc = self._procs.pop(name, None)
        if proc is not None and not self.running(name):
            proc.wait()
        pid = self.pid(name)
        if pid is not None:  # did not stop in time: as a lost machine
            self.kill_node(name)

    def stop_all(self) -> None:
        """Standby first (so the primary is not failed over), then the primary, then the monitor."""
        order = list(NODE_NAMES)
        primary = self.primary()
        if primary in order:
            order.remove(primary)
            order.append(primary)
        for name in [*order, "monitor"]:
            self.stop(name)

    def kill_node(self, name: str) -> None:
        """kill -9 the node's pg_autoctl (supervisor, keeper, postgres controller) and its
        postmaster, all in one process group: the machine is gone. Backends die as they find their
        postmaster gone."""
        pid = self.pid(name)
        postmaster = self.postmaster_pid(name)
        if pid is not None:
            try:
                os.killpg(os.getpgid(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass
        if postmaster is not None:
            try:
                os.kill(postmaster, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc = self._procs.pop(name, None)
        if proc is not None:
            proc.wait()  # reap it here (when we started it): a zombie still "exists" for pg_autoctl

    def kill_postmaster(self, name: str) -> int | None:
        """kill -9 the postmaster alone (its keeper stays, and starts PostgreSQL again)."""
        pid = self.postmaster_pid(name)
        if pid is not None:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                return None
        return pid

    def destroy(self) -> None:
        for name in ("monitor", *NODE_NAMES):
            self.kill_node(name)
        time.sleep(0.5)
        shutil.rmtree(self.base, ignore_errors=True)
