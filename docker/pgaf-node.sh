#!/usr/bin/env bash
# One pg_auto_failover member of docker-compose.yml, made as `make cluster` makes them
# (dbctl/autofailover.py): our own initdb (scram-sha-256) and pg_hba.conf, `pg_autoctl create ...
# --skip-pg-hba`, the passwords pg_autoctl does not set itself, our settings in booking.conf
# (read last), then `pg_autoctl run` in the foreground (it starts, watches and restarts its PostgreSQL).
#
#   pgaf-node monitor       the monitor (formation state, health checks, failover decisions)
#   pgaf-node node          a data node; PGAF_FIRST=yes on the one that may initdb (the first
#                           primary); the other is made by pg_basebackup from the primary
#
# Environment: POSTGRES_PASSWORD (the superuser's), AUTOCTL_NODE_PASSWORD (the monitor's
# autoctl_node), REPLICATION_PASSWORD (pgautofailover_replicator), PGAF_MONITOR_HOST (monitor),
# PGAF_HOSTNAME (the name the others reach this member by; the container's hostname),
# PGAF_PORT (5432), PGAF_NETWORK (who may connect: pg_hba.conf address, `samenet`), PGAF_HOME
# (/var/lib/postgresql/pgaf: a volume), PGAF_NAME (the node's name in the formation).
set -euo pipefail
role=${1:?usage: pgaf-node monitor|node}
: "${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD}" "${AUTOCTL_NODE_PASSWORD:?set AUTOCTL_NODE_PASSWORD}"
: "${REPLICATION_PASSWORD:?set REPLICATION_PASSWORD}"
home=${PGAF_HOME:-/var/lib/postgresql/pgaf}
host=${PGAF_HOSTNAME:-$(hostname)}
port=${PGAF_PORT:-5432}
network=${PGAF_NETWORK:-samenet}
monitor_host=${PGAF_MONITOR_HOST:-monitor}
monitor_port=${PGAF_MONITOR_PORT:-5432}
export PATH=/usr/lib/postgresql/15/bin:$PATH
export PGDATA=$home/data XDG_CONFIG_HOME=$home/config XDG_DATA_HOME=$home/share XDG_RUNTIME_DIR=$home/run
export PGPASSFILE=$home/pgpass PGHOST=127.0.0.1 PGPORT=$port PGUSER=postgres
umask 077
mkdir -p "$XDG_CONFIG_HOME" "$XDG_DATA_HOME" "$XDG_RUNTIME_DIR" "$home/sockets"

# pg_autoctl's own connections (the local node, the monitor, the walreceiver and pg_basebackup)
# find their passwords here, never on a command line. libpq's escapes: \ and :.
esc() { printf '%s' "$1" | sed -e 's/\\/\\\\/g' -e 's/:/\\:/g'; }
{
  printf '*:*:*:postgres:%s\n' "$(esc "$POSTGRES_PASSWORD")"
  printf '*:*:*:autoctl_node:%s\n' "$(esc "$AUTOCTL_NODE_PASSWORD")"
  printf '*:*:*:pgautofailover_replicator:%s\n' "$(esc "$REPLICATION_PASSWORD")"
} >"$PGPASSFILE"

config_file=$XDG_CONFIG_HOME/pg_autoctl${PGDATA}/pg_autoctl.cfg
# set_password DBNAME ROLE VARIABLE: the role's password from that environment variable, read by
# psql itself (\getenv), so it is never on a command line (ps). Hashed by the server (scram).
set_password() {
  printf '\\getenv pw %s\nALTER ROLE %s PASSWORD :'"'"'pw'"'"';\n' "$3" "$2" | psql -X -q -v ON_ERROR_STOP=1 -d "$1"
}

our_initdb() {
  [ -f "$PGDATA/PG_VERSION" ] && return
  local pwfile=$home/initdb-password
  printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
  initdb -D "$PGDATA" --username=postgres --auth=scram-sha-256 --pwfile="$pwfile" --encoding=UTF8 --locale=C.UTF-8
  rm -f "$pwfile"
  # Every role by password, from the compose network only and this container (pg_autoctl's keeper
  # talks to its node over the unix socket, in a folder only postgres can enter).
  cat >"$PGDATA/pg_hba.conf" <<HBA
# Written by docker/pgaf-node.sh. TYPE DATABASE USER ADDRESS METHOD
local   all          all                                      scram-sha-256
host    all          all                        127.0.0.1/32  scram-sha-256
host    all          all                        $network      scram-sha-256
host    replication  pgautofailover_replicator  $network      scram-sha-256
HBA
}

settings() {
  # Read after pg_autoctl's postgresql-auto-failover.conf, so ours win (as dbctl/autofailover.py).
  {
    echo "# Written by docker/pgaf-node.sh on every start."
    echo "listen_addresses = '*'"
    echo "port = $port"
    echo "unix_socket_directories = '$home/sockets'"
    echo "password_encryption = 'scram-sha-256'"
    if [ "$role" = monitor ]; then
      # Failover timing as `make cluster` has it (README "Single-machine cluster").
      echo "pgautofailover.health_check_period = 1000"
      echo "pgautofailover.health_check_timeout = 2000"
      echo "pgautofailover.health_check_max_retries = 2"
      echo "pgautofailover.health_check_retry_delay = 1000"
      echo "pgautofailover.node_considered_unhealthy_timeout = 5000"
      echo "pgautofailover.primary_demote_timeout = 10000"
      echo "pgautofailover.startup_grace_period = 5000"
    else
      echo "shared_preload_libraries = 'pg_cron,pg_stat_statements'"
      echo "cron.database_name = 'booking'"
      echo "cron.use_background_workers = on"
      echo "max_worker_processes = 16"
      echo "lock_timeout = '5s'"
      echo "deadlock_timeout = '1s'"
      echo "log_min_duration_statement = 1000"
      echo "log_lock_waits = on"
      echo "wal_keep_size = '1GB'"
    fi
  } >"$PGDATA/booking.conf"
  grep -qx "include_if_exists = 'booking.conf'" "$PGDATA/postgresql.conf" ||
    echo "include_if_exists = 'booking.conf'" >>"$PGDATA/postgresql.conf"
}

# `pg_autoctl run` in the background, so this script can set a password once PostgreSQL answers;
# TERM and INT (docker stop) go to it, and the script ends when it does.
run() {
  pg_autoctl run --pgdata "$PGDATA" &
  child=$!
  trap 'kill -TERM "$child" 2>/dev/null' TERM INT
}
ask() { # ask DBNAME QUERY: its answer, once PostgreSQL answers at all (5 minutes at most)
  local answer
  for _ in $(seq 1 300); do
    if answer=$(psql -X -At -d "$1" -c "$2" 2>/dev/null) && [ -n "$answer" ]; then
      printf '%s' "$answer"
      return 0
    fi
    sleep 1
  done
  echo "pgaf-node: no answer to: $2" >&2
  return 1
}

case "$role" in
monitor)
  our_initdb
  if [ ! -f "$config_file" ]; then
    pg_autoctl create monitor --pgdata "$PGDATA" --pgport "$port" --hostname "$host" \
      --no-ssl --skip-pg-hba
  fi
  settings
  run
  ask pg_auto_failover "SELECT rolname FROM pg_roles WHERE rolname = 'autoctl_node'" >/dev/null
  set_password pg_auto_failover autoctl_node AUTOCTL_NODE_PASSWORD
  ;;
node)
  if [ ! -f "$config_file" ]; then
    [ "${PGAF_FIRST:-no}" = yes ] && our_initdb
    pg_autoctl create postgres --pgdata "$PGDATA" --pgport "$port" --pghost 127.0.0.1 --listen '*' \
      --hostname "$host" --name "${PGAF_NAME:-$host}" --dbname booking --username postgres \
      --monitor "postgres://autoctl_node@$monitor_host:$monitor_port/pg_auto_failover?sslmode=prefer" \
      --no-ssl --skip-pg-hba
  fi
  pg_autoctl config set --pgdata "$PGDATA" timeout.network_partition_timeout 5 >/dev/null
  settings
  run
  # pg_autoctl makes the replication role without a password: the primary gets ours (the
  # standby has it by replication).
  if [ "$(ask booking "SELECT pg_is_in_recovery()")" = f ]; then
    set_password booking pgautofailover_replicator REPLICATION_PASSWORD
  fi
  ;;
*)
  echo "usage: pgaf-node monitor|node" >&2
  exit 2
  ;;
esac
wait "$child"
