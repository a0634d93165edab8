-- depends: 0003_reserve_core
-- Rate limits: the rules (DBAs change them live, every gateway at once) and the GCRA counters.

-- One rule per (route class, scope): at most max_requests per period, as a rolling window
-- (GCRA: emission interval period / max_requests, burst max_requests). No row = no limit.
-- Class login_failures / scope email is the failed-login throttle (counted per e-mail address).
CREATE TABLE rate_limit_rules (
  class text NOT NULL CHECK (class IN ('auth', 'browse', 'bookings', 'admin', 'login_failures')),
  scope text NOT NULL CHECK (scope IN ('user', 'address', 'email')),
  max_requests integer NOT NULL CHECK (max_requests >= 1),
  period interval NOT NULL CHECK (period >= interval '1 second' AND period <= interval '1 day'),
  PRIMARY KEY (class, scope),
  CHECK ((class = 'login_failures') = (scope = 'email'))
);
COMMENT ON TABLE rate_limit_rules IS
  'Rate-limit rules in force: at most max_requests per period per key (a rolling window, GCRA). '
  'Change with api.set_rate_limit(); read with api.rate_limits().';

INSERT INTO rate_limit_rules (class, scope, max_requests, period) VALUES
  ('auth', 'address', 1200, interval '1 minute'),
  ('browse', 'user', 600, interval '1 minute'),
  ('browse', 'address', 6000, interval '1 minute'),
  ('bookings', 'user', 60, interval '1 minute'),
  ('bookings', 'address', 3000, interval '1 minute'),
  ('admin', 'user', 1200, interval '1 minute'),
  ('login_failures', 'email', 10, interval '15 minutes');

-- One row per key ('<class>:<scope>:<value>'): its theoretical arrival time (GCRA). A row
-- whose tat has passed is the same as no row (api.purge_rate_limits deletes them). UNLOGGED:
-- no WAL per request; a crash empties it, which forgives everyone once.
CREATE UNLOGGED TABLE rate_limit_counters (
  key text PRIMARY KEY,
  tat timestamptz NOT NULL,
  period interval NOT NULL,  -- the rule's period when last counted
  last_ok boolean NOT NULL   -- whether every hit of the last check call fitted (api.check_rate_limits' fast path)
) WITH (fillfactor = 50);  -- room for HOT updates: every check rewrites its rows
COMMENT ON TABLE rate_limit_counters IS
  'GCRA state per rate-limit key (<class>:<scope>:<value>). Unlogged: emptied by a crash. '
  'Read with api.rate_limit_state(); clear with api.clear_rate_limit().';
