-- pg_cron jobs, (re)scheduled by every migrate run. Only in the database that is
-- cron.database_name, and only where pg_cron is installed: elsewhere (tests, a second
-- database on the same server) this does nothing. cron.schedule() updates a job of the same
-- name, so this is idempotent. Jobs run as the owner role.
-- pg_cron 1.4 takes 5-field schedules only (a 6th field is silently read as minutes).
DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_cron') THEN
    RETURN;
  END IF;
  IF current_database() = current_setting('cron.database_name', true)
     AND has_schema_privilege('cron', 'USAGE') THEN
    -- The seed ran this every 5 minutes; every minute frees dead holds sooner, and reserve
    -- reclaims them itself whenever stock is short.
    PERFORM cron.schedule('booking-expire-reservations', '* * * * *',
                          'SELECT api.expire_reservations()');
    -- Provider payments (issue 12): PENDING orders past their payment deadline -> TIMEOUT.
    PERFORM cron.schedule('booking-expire-pending-orders', '* * * * *',
                          'SELECT api.expire_pending_orders()');
    PERFORM cron.schedule('booking-cleanup-reservations', '0 2 * * *',
                          'SELECT api.cleanup_reservations()');
    -- Ended sessions, expired refresh tokens, deny-list rows older than 24 h.
    PERFORM cron.schedule('booking-purge-sessions', '*/10 * * * *',
                          'SELECT api.purge_sessions()');
    -- Rate-limit counters that limit nothing any more (tat passed).
    PERFORM cron.schedule('booking-purge-rate-limits', '*/10 * * * *',
                          'SELECT api.purge_rate_limits()');
    -- Idempotency keys answer for 24 hours; older ones already count as absent.
    PERFORM cron.schedule('booking-purge-idempotency-keys', '*/10 * * * *',
                          'SELECT api.purge_idempotency_keys()');
    -- Waiting rooms whose sale opened and that no gateway could shuffle (a big room's shuffle
    -- outlasts the gateway's statement_timeout) or that nobody polled.
    PERFORM cron.schedule('booking-open-waiting-rooms', '* * * * *',
                          'SELECT api.open_waiting_rooms()');
  END IF;
END
$$;
