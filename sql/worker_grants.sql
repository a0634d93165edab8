-- What the worker's role (booking_worker) may do: run procrastinate (its tables, sequences and
-- functions, all named procrastinate_* in schema public) and exactly the api functions the
-- worker calls (worker/calls.py WORKER_CALLS; their COMMENT says "(worker)"). No access to
-- orders, users or any other table: what a job needs it reads through those functions. The
-- functions loader revokes every api/internal grant, then runs this file (a test compares it
-- with WORKER_CALLS).
GRANT USAGE ON SCHEMA api TO booking_worker;
-- procrastinate's objects live in schema public (its default), whose USAGE nobody else has
-- (0001_seed_schema.sql): the worker may look names up there, the table grants below decide.
GRANT USAGE ON SCHEMA public TO booking_worker;
GRANT EXECUTE ON FUNCTION
  api.confirmation_email, api.record_confirmation_attempt, api.record_confirmation_sent,
  api.webhook_delivery, api.record_webhook_attempt, api.close_webhook_delivery,
  api.refund_request, api.record_refund, api.payments_to_reconcile, api.reconcile_payment,
  api.refund_email, api.record_refund_email_attempt, api.record_refund_email_sent,
  api.refund_cancelled_event
TO booking_worker;

DO $$
DECLARE
  r record;
BEGIN
  FOR r IN SELECT c.oid::regclass AS name, c.relkind FROM pg_class c
            WHERE c.relnamespace = 'public'::regnamespace AND c.relname LIKE 'procrastinate\_%'
              AND c.relkind IN ('r', 'S')
  LOOP
    IF r.relkind = 'r' THEN
      EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON TABLE %s TO booking_worker', r.name);
    ELSE
      EXECUTE format('GRANT USAGE, SELECT ON SEQUENCE %s TO booking_worker', r.name);
    END IF;
  END LOOP;
  -- procrastinate's functions: the worker's, nobody else's (the default privileges of
  -- 0001_seed_schema.sql already keep PUBLIC out; the REVOKE says so where it matters).
  FOR r IN SELECT p.oid::regprocedure AS name FROM pg_proc p
            WHERE p.pronamespace = 'public'::regnamespace AND p.proname LIKE 'procrastinate\_%'
  LOOP
    EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', r.name);
    EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO booking_worker', r.name);
  END LOOP;
END
$$;
