-- What the monitoring role (booking_monitor: the PostgreSQL exporter's login, issue 13) may run:
-- the api.monitor_* functions (their COMMENT says "(monitor)"), nothing else of ours: no table,
-- no other function. The catalog figures it reads with pg_monitor (granted by
-- sql/bootstrap.sql). The functions loader revokes every grant, then runs this file (a test
-- compares it with the functions documented "(monitor)").
GRANT USAGE ON SCHEMA api TO booking_monitor;
GRANT EXECUTE ON FUNCTION
  api.monitor_holds, api.monitor_invariants, api.monitor_jobs, api.monitor_payments,
  api.monitor_payment_events, api.monitor_waiting_rooms
TO booking_monitor;
