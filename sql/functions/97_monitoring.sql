-- What the PostgreSQL exporter reads (issue 13): ops/postgres-exporter/queries.yaml calls these
-- as booking_monitor, which has EXECUTE on them and no table privilege (sql/monitor_grants.sql).
-- Each is one cheap snapshot that locks nothing, run at every scrape (15 s), except
-- monitor_invariants, which the queries file caches for 5 minutes (it reads every order).
-- The catalog figures (lock waits, replication) need no table privilege: they are plain queries
-- in the queries file, run with the monitor's pg_monitor rights.


CREATE OR REPLACE FUNCTION api.monitor_holds()
RETURNS TABLE (active bigint, active_seats bigint, overdue bigint, oldest_overdue_seconds double precision)
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
  -- ACTIVE holds only (the partial index on expires_at WHERE ACTIVE): finished ones are history.
  SELECT count(*), coalesce(sum(r.quantity), 0),
         count(*) FILTER (WHERE r.expires_at < now()),
         coalesce(extract(epoch FROM now() - min(r.expires_at) FILTER (WHERE r.expires_at < now()))::float8, 0)
    FROM order_reservations r
   WHERE r.status = 'ACTIVE'
$$;
COMMENT ON FUNCTION api.monitor_holds() IS
  '(monitor) Holds now: ACTIVE holds and their seats; of them, those past expires_at that the '
  'expiry job (pg_cron, every minute) has not swept yet, and how long the oldest has been past '
  'its expiry (seconds, 0 when none). Reads ACTIVE holds only; locks nothing.';


CREATE OR REPLACE FUNCTION api.monitor_invariants()
RETURNS TABLE (check_name text, violations bigint)
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
  -- Every check of api.check_invariants, with 0 when clean (a series that exists beats one that
  -- appears only when something is wrong); a check added there and not here still shows.
  WITH found AS (SELECT v.check_name FROM api.check_invariants() v),
  names AS (
    SELECT unnest(ARRAY['stock_balance', 'stock_range', 'tickets_issued', 'order_total', 'refund_tickets',
                        'unpaid_tickets', 'refund_payment', 'refund_missing', 'pending_overdue']) AS check_name
    UNION
    SELECT f.check_name FROM found f
  )
  SELECT n.check_name, count(f.check_name)
    FROM names n LEFT JOIN found f ON f.check_name = n.check_name
   GROUP BY n.check_name
   ORDER BY n.check_name
$$;
COMMENT ON FUNCTION api.monitor_invariants() IS
  '(monitor) api.check_invariants counted per check (0 when clean). Costly: it reads every '
  'ticket type, order, order item and ticket (seconds at millions of orders), so the exporter '
  'runs it at most once per 5 minutes (cache_seconds in ops/postgres-exporter/queries.yaml). '
  'Locks nothing.';


CREATE OR REPLACE FUNCTION api.monitor_jobs()
RETURNS TABLE (queue text, task text, todo bigint, doing bigint, failed bigint, retrying bigint,
               oldest_todo_seconds double precision)
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
  -- The queue's own rows (housekeeping purges finished ones hourly; failed ones stay until a DBA
  -- retries them). The age is that of the oldest job that is due (not scheduled for later), as
  -- api.job_queue measures it: since its scheduled time, else since it was deferred.
  SELECT j.queue_name::text, j.task_name::text,
         count(*) FILTER (WHERE j.status = 'todo'),
         count(*) FILTER (WHERE j.status = 'doing'),
         count(*) FILTER (WHERE j.status = 'failed'),
         count(*) FILTER (WHERE j.status = 'todo' AND j.attempts > 0),
         coalesce(extract(epoch FROM now() - min(
           CASE WHEN j.status = 'todo' AND (j.scheduled_at IS NULL OR j.scheduled_at <= now())
                THEN coalesce(j.scheduled_at, (SELECT min(e.at) FROM procrastinate_events e
                                                WHERE e.job_id = j.id AND e.type = 'deferred')) END))::float8, 0)
    FROM procrastinate_jobs j
   GROUP BY j.queue_name, j.task_name
   ORDER BY 1, 2
$$;
COMMENT ON FUNCTION api.monitor_jobs() IS
  '(monitor) The job queue per queue and task: jobs waiting (todo), running (doing), failed for '
  'good (waiting for api.retry_job), waiting again after a failed attempt (retrying), and how '
  'long the oldest due job has waited (seconds, 0 when none). Reads every job row; locks nothing.';


CREATE OR REPLACE FUNCTION api.monitor_payments()
RETURNS TABLE (orders_pending bigint, oldest_pending_seconds double precision, pending_past_deadline bigint,
               payments_pending bigint, refunds_pending bigint, oldest_refund_seconds double precision)
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
  -- Each through an index: PENDING orders (partial index on payment_deadline), PENDING payments
  -- (status), PENDING refunds (partial index on created_at).
  SELECT o.n, o.oldest, o.late, (SELECT count(*) FROM payments p WHERE p.status = 'PENDING'), r.n, r.oldest
    FROM (SELECT count(*) AS n,
                 coalesce(extract(epoch FROM now() - min(x.created_at))::float8, 0) AS oldest,
                 count(*) FILTER (WHERE x.payment_deadline < now()) AS late
            FROM orders x WHERE x.status = 'PENDING') o,
         (SELECT count(*) AS n, coalesce(extract(epoch FROM now() - min(f.created_at))::float8, 0) AS oldest
            FROM payment_refunds f WHERE f.status = 'PENDING') r
$$;
COMMENT ON FUNCTION api.monitor_payments() IS
  '(monitor) Payments now: orders PENDING (checked out, not paid yet), the age of the oldest '
  '(seconds since checkout), those past their payment deadline (the expiry job times them out '
  'every minute), payments PENDING, refunds PENDING and the age of the oldest (seconds since it '
  'was asked for). Locks nothing.';


CREATE OR REPLACE FUNCTION api.monitor_payment_events()
RETURNS TABLE (outcome text, events bigint)
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
  -- The last 15 minutes of the inbox (index on received_at); every outcome, 0 when none.
  SELECT n.outcome, count(e.id)
    FROM unnest(ARRAY['paid', 'late_paid', 'refund_pending', 'cancelled', 'ignored', 'wrong_amount',
                      'unknown_reference']) AS n(outcome)
    LEFT JOIN payment_events e ON e.outcome = n.outcome AND e.received_at > now() - interval '15 minutes'
   GROUP BY n.outcome
   ORDER BY n.outcome
$$;
COMMENT ON FUNCTION api.monitor_payment_events() IS
  '(monitor) Provider callbacks applied in the last 15 minutes, per outcome (paid, late_paid, '
  'refund_pending, cancelled, ignored, wrong_amount, unknown_reference; 0 when none). Locks nothing.';


CREATE OR REPLACE FUNCTION api.monitor_waiting_rooms()
RETURNS TABLE (event_id uuid, event text, joined bigint, serving bigint, waiting bigint, admitted bigint,
               admission_rate_per_minute bigint, paused bigint)
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
  -- Rooms of published events with the queue on that have not ended: a handful at a time, so
  -- the per-event labels stay few. Figures as api.waiting_room computes them, from the room's row
  -- (no count of entries).
  SELECT e.id, e.slug::text, w.joined::bigint, s.serving, greatest(w.joined - s.serving, 0), least(s.serving, w.joined),
         CASE WHEN w.paused_at IS NULL AND w.opened_at IS NOT NULL THEN e.admission_rate_per_minute ELSE 0 END::bigint,
         (w.paused_at IS NOT NULL)::int::bigint
    FROM events e
    JOIN waiting_rooms w ON w.event_id = e.id
   CROSS JOIN LATERAL (SELECT coalesce(internal.waiting_room_serving(w, e.admission_rate_per_minute,
                                                                     e.queue_enabled), 0)::bigint AS serving) s
   WHERE e.queue_enabled AND e.status = 'PUBLISHED' AND e.end_time > now()
   ORDER BY e.id
$$;
COMMENT ON FUNCTION api.monitor_waiting_rooms() IS
  '(monitor) Waiting rooms of published, not yet ended events with the queue on: people joined, '
  'the serving position (positions up to it are admitted), waiting (joined past it), admitted '
  '(up to it), the admission rate per minute (0 before the opening or while paused) and paused '
  '(1/0). Reads the rooms'' rows only; locks nothing.';
