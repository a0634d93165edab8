-- One-time, superuser-only setup of a database for the booking system.
-- `make run` and the tests run it for you; on a server you manage, a superuser runs it
-- once per database (psql -d booking -f sql/bootstrap.sql). It is idempotent.
--
-- booking_owner   owns every object; migrations run as this role.
-- booking_gateway the HTTP gateway's login: USAGE on schema api and EXECUTE on its
--                 functions, nothing else (granted by the migrations).
-- booking_worker  the job worker's login (worker/): procrastinate's tables and functions and
--                 EXECUTE on its api functions, nothing else (sql/worker_grants.sql).
-- booking_monitor the PostgreSQL exporter's login (issue 13): pg_monitor (statistics, locks,
--                 replication) and EXECUTE on the api.monitor_* functions, nothing else
--                 (sql/monitor_grants.sql); read-only.

DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'booking_owner') THEN
    CREATE ROLE booking_owner LOGIN;
  END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'booking_gateway') THEN
    CREATE ROLE booking_gateway LOGIN;
  END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'booking_worker') THEN
    CREATE ROLE booking_worker LOGIN;
  END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'booking_monitor') THEN
    CREATE ROLE booking_monitor LOGIN;
  END IF;
  EXECUTE format('ALTER DATABASE %I OWNER TO booking_owner', current_database());
END
$$;

-- The gateway never waits long: a stuck lock or a runaway statement becomes a 503 `busy`.
-- The api functions set tighter lock timeouts of their own.
ALTER ROLE booking_gateway SET statement_timeout = '5s';
ALTER ROLE booking_gateway SET lock_timeout = '2s';
ALTER ROLE booking_gateway SET idle_in_transaction_session_timeout = '10s';
ALTER ROLE booking_gateway SET timezone = 'UTC';
ALTER ROLE booking_owner SET timezone = 'UTC';
-- The worker's statements are short (it sends mail and webhooks with no transaction open).
ALTER ROLE booking_worker SET statement_timeout = '30s';
ALTER ROLE booking_worker SET lock_timeout = '2s';
ALTER ROLE booking_worker SET idle_in_transaction_session_timeout = '60s';
ALTER ROLE booking_worker SET timezone = 'UTC';
-- The monitor reads, never writes, never waits for a lock; its slowest query
-- (api.monitor_invariants, cached 5 minutes by the exporter) reads every order.
GRANT pg_monitor TO booking_monitor;
ALTER ROLE booking_monitor SET default_transaction_read_only = on;
ALTER ROLE booking_monitor SET statement_timeout = '20s';
ALTER ROLE booking_monitor SET lock_timeout = '1s';
ALTER ROLE booking_monitor SET idle_in_transaction_session_timeout = '60s';
ALTER ROLE booking_monitor SET timezone = 'UTC';

-- pg_cron lives only in the database named by cron.database_name; elsewhere this is a no-op.
DO $$
BEGIN
  IF current_database() = current_setting('cron.database_name', true)
     AND EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'pg_cron')
     AND current_setting('shared_preload_libraries') LIKE '%pg_cron%' THEN
    CREATE EXTENSION IF NOT EXISTS pg_cron;
    GRANT USAGE ON SCHEMA cron TO booking_owner;
    -- Lets migrations read cron.database_name (superuser-only otherwise).
    GRANT pg_read_all_settings TO booking_owner;
  END IF;
END
$$;
