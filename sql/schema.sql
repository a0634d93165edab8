--
-- PostgreSQL database dump
--






SET statement_timeout = 0;
SET lock_timeout = 0;
SET idle_in_transaction_session_timeout = 0;
SET client_encoding = 'UTF8';
SET standard_conforming_strings = on;
SELECT pg_catalog.set_config('search_path', '', false);
SET check_function_bodies = false;
SET xmloption = content;
SET client_min_messages = warning;
SET row_security = off;

--
-- Name: api; Type: SCHEMA; Schema: -; Owner: booking_owner
--

CREATE SCHEMA api;


ALTER SCHEMA api OWNER TO booking_owner;

--
-- Name: internal; Type: SCHEMA; Schema: -; Owner: booking_owner
--

CREATE SCHEMA internal;


ALTER SCHEMA internal OWNER TO booking_owner;

--
-- Name: pg_trgm; Type: EXTENSION; Schema: -; Owner: -
--

CREATE EXTENSION IF NOT EXISTS pg_trgm WITH SCHEMA public;


--
-- Name: EXTENSION pg_trgm; Type: COMMENT; Schema: -; Owner: 
--

COMMENT ON EXTENSION pg_trgm IS 'text similarity measurement and index searching based on trigrams';


--
-- Name: pgcrypto; Type: EXTENSION; Schema: -; Owner: -
--

CREATE EXTENSION IF NOT EXISTS pgcrypto WITH SCHEMA public;


--
-- Name: EXTENSION pgcrypto; Type: COMMENT; Schema: -; Owner: 
--

COMMENT ON EXTENSION pgcrypto IS 'cryptographic functions';


--
-- Name: reserve_request; Type: TYPE; Schema: api; Owner: booking_owner
--

CREATE TYPE api.reserve_request AS (
	user_id uuid,
	ticket_type_id uuid,
	quantity integer
);


ALTER TYPE api.reserve_request OWNER TO booking_owner;

--
-- Name: TYPE reserve_request; Type: COMMENT; Schema: api; Owner: booking_owner
--

COMMENT ON TYPE api.reserve_request IS 'One reservation request (user, ticket type, quantity 1..10) for api.reserve_tickets_batch.';


--
-- Name: procrastinate_job_event_type; Type: TYPE; Schema: public; Owner: booking_owner
--

CREATE TYPE public.procrastinate_job_event_type AS ENUM (
    'deferred',
    'started',
    'deferred_for_retry',
    'failed',
    'succeeded',
    'cancelled',
    'abort_requested',
    'aborted',
    'scheduled',
    'retried'
);


ALTER TYPE public.procrastinate_job_event_type OWNER TO booking_owner;

--
-- Name: procrastinate_job_status; Type: TYPE; Schema: public; Owner: booking_owner
--

CREATE TYPE public.procrastinate_job_status AS ENUM (
    'todo',
    'doing',
    'succeeded',
    'failed',
    'cancelled',
    'aborting',
    'aborted'
);


ALTER TYPE public.procrastinate_job_status OWNER TO booking_owner;

--
-- Name: procrastinate_job_to_defer_v1; Type: TYPE; Schema: public; Owner: booking_owner
--

CREATE TYPE public.procrastinate_job_to_defer_v1 AS (
	queue_name character varying,
	task_name character varying,
	priority integer,
	lock text,
	queueing_lock text,
	args jsonb,
	scheduled_at timestamp with time zone
);


ALTER TYPE public.procrastinate_job_to_defer_v1 OWNER TO booking_owner;

--
-- Name: admin_get_event(uuid); Type: FUNCTION; Schema: api; Owner: booking_owner
--

CREATE FUNCTION api.admin_get_event(p_event_id uuid) RETURNS json
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
DECLARE
  v_event events;
BEGIN
  SELECT * INTO v_event FROM events WHERE id = p_event_id;
  IF NOT FOUND THEN
    RAISE EXCEPTION USING ERRCODE = 'BKNTF', MESSAGE = 'event not found';
  END IF;
  RETURN internal.event_json(v_event, true);
END;
$$;


ALTER FUNCTION api.admin_get_event(p_event_id uuid) OWNER TO booking_owner;

--
-- Name: FUNCTION admin_get_event(p_event_id uuid); Type: COMMENT; Schema: api; Owner: booking_owner
--

COMMENT ON FUNCTION api.admin_get_event(p_event_id uuid) IS 'Admin view of one event in any status (drafts included), with live stock. Locks nothing. Raises BKNTF.';


--
-- Name: apply_payment_event(text, text, text, numeric, boolean, jsonb); Type: FUNCTION; Schema: api; Owner: booking_owner
--

CREATE FUNCTION api.apply_payment_event(p_provider text, p_provider_txn_id text, p_transaction_id text, p_amount numeric, p_success boolean, p_raw jsonb DEFAULT NULL::jsonb) RETURNS json
    LANGUAGE sql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    SET lock_timeout TO '2s'
    AS $$
  SELECT internal.apply_payment_event(p_provider, p_provider_txn_id, p_transaction_id, p_amount, p_success, p_raw)
$$;


ALTER FUNCTION api.apply_payment_event(p_provider text, p_provider_txn_id text, p_transaction_id text, p_amount numeric, p_success boolean, p_raw jsonb) OWNER TO booking_owner;

--
-- Name: FUNCTION apply_payment_event(p_provider text, p_provider_txn_id text, p_transaction_id text, p_amount numeric, p_success boolean, p_raw jsonb); Type: COMMENT; Schema: api; Owner: booking_owner
--

COMMENT ON FUNCTION api.apply_payment_event(p_provider text, p_provider_txn_id text, p_transaction_id text, p_amount numeric, p_success boolean, p_raw jsonb) IS 'Applies one provider callback the gateway has verified (p_provider MOMO|ZALOPAY|BANKING|CARD, the provider''s transaction id, our transaction_id, the amount, success or failure, the raw body), once: the event goes to the inbox (payment_events, unique per provider transaction). Returns {outcome, order_id}: paid (PENDING -> PAID, tickets, confirmation job, one transaction); late_paid (after the deadline or after TIMEOUT/CANCELLED, seats re-taken); refund_pending (no seats left, event cancelled, or a second payment of a paid order: a refund job); cancelled (failure: PENDING -> CANCELLED, seats back); ignored (a failure for an order no longer PENDING); wrong_amount (the order does not change; that money is refunded: a refund job, refund_id in the answer); unknown_reference (recorded only: api.unresolved_payments); duplicate (this provider transaction was applied before: nothing changes; first_outcome says what it did). Locks the inbox key, the order''s ticket types, the order, its payment. Raises BKVAL.';


--
-- Name: buyer_counts(text); Type: FUNCTION; Schema: api; Owner: booking_owner
--

CREATE FUNCTION api.buyer_counts(p_email text) RETURNS TABLE(event_id uuid, event_slug text, ticket_type_id uuid, ticket_type_name text, held integer, pending integer, paid integer, max_per_user integer, event_seats integer, max_tickets_per_user integer)
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
  WITH buyer AS (SELECT u.id FROM users u WHERE u.email = lower(btrim(p_email))),
  per_type AS (
    SELECT tt.id AS ticket_type_id,
           coalesce((SELECT sum(r.quantity) FROM order_reservations r, buyer
                      WHERE r.user_id = buyer.id AND r.ticket_type_id = tt.id
                        AND r.status = 'ACTIVE' AND r.expires_at > now()), 0)::integer AS held,
           coalesce((SELECT sum(i.quantity) FROM orders o JOIN order_items i ON i.order_id = o.id, buyer
                      WHERE o.user_id = buyer.id AND i.ticket_type_id = tt.id AND o.status = 'PENDING'), 0)::integer AS pending,
           coalesce((SELECT sum(i.quantity) FROM orders o JOIN order_items i ON i.order_id = o.id, buyer
                      WHERE o.user_id = buyer.id AND i.ticket_type_id = tt.id AND o.status = 'PAID'), 0)::integer AS paid
      FROM ticket_types tt
     WHERE tt.id IN (SELECT r.ticket_type_id FROM order_reservations r, buyer WHERE r.user_id = buyer.id
                     UNION
                     SELECT i.ticket_type_id FROM orders o JOIN order_items i ON i.order_id = o.id, buyer
                      WHERE o.user_id = buyer.id))
  SELECT e.id, e.slug::text, tt.id, tt.name::text, p.held, p.pending, p.paid, tt.max_per_user,
         (sum(p.held + p.pending + p.paid) OVER (PARTITION BY e.id))::integer, e.max_tickets_per_user
    FROM per_type p JOIN ticket_types tt ON tt.id = p.ticket_type_id JOIN events e ON e.id = tt.event_id
   ORDER BY e.start_time, e.id, tt.name, tt.id
$$;


ALTER FUNCTION api.buyer_counts(p_email text) OWNER TO booking_owner;

--
-- Name: FUNCTION buyer_counts(p_email text); Type: COMMENT; Schema: api; Owner: booking_owner
--

COMMENT ON FUNCTION api.buyer_counts(p_email text) IS '(DBA-only) What counts against a buyer''s caps, per ticket type the buyer ever reserved or bought: seats in unexpired ACTIVE holds, in PENDING and in PAID orders, the type''s max_per_user, the buyer''s seats in the whole event (held + pending + paid) and the event''s max_tickets_per_user (NULL: no cap). E.g. SELECT * FROM api.buyer_counts(''fan@example.com''). Locks nothing.';


--
-- Name: cancel_event(uuid); Type: FUNCTION; Schema: api; Owner: booking_owner
--

CREATE FUNCTION api.cancel_event(p_event_id uuid) RETURNS json
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    SET lock_timeout TO '2s'
    AS $$
DECLARE
  v_event json;
BEGIN
  v_event := internal.set_event_status(p_event_id, 'CANCELLED', ARRAY['DRAFT', 'PUBLISHED']);
  -- Only the status flips here (sales stop at once): the orders are settled by one
  -- refund_cancelled_event job, in batches of a few hundred, each its own short transaction
  -- (sql/functions/95_payments.sql), so an event of thousands of orders cancels in one short
  -- transaction. A repeated cancel queues the job again if none is waiting or running (a
  -- failed or lost one); a job with nothing left to do ends at once.
  IF NOT EXISTS (SELECT 1 FROM procrastinate_jobs j  -- the job's lock names the event
                  WHERE j.status IN ('todo', 'doing') AND j.lock = 'cancel_event:' || p_event_id
                    AND j.task_name = 'refund_cancelled_event') THEN
    PERFORM internal.defer_job('refund_cancelled_event', 'payments', 90,
                               jsonb_build_object('event_id', p_event_id), 'cancel_event:' || p_event_id);
  END IF;
  RETURN v_event;
END;
$$;


ALTER FUNCTION api.cancel_event(p_event_id uuid) OWNER TO booking_owner;

--
-- Name: FUNCTION cancel_event(p_event_id uuid); Type: COMMENT; Schema: api; Owner: booking_owner
--

COMMENT ON FUNCTION api.cancel_event(p_event_id uuid) IS 'DRAFT/PUBLISHED -> CANCELLED. Sales stop at once; active holds can no longer be completed and return to stock when they expire. One refund_cancelled_event job (queue payments, lock cancel_event:<id>) then settles the orders in batches (api.refund_cancelled_event): every PAID order becomes REFUND_PENDING (tickets CANCELLED, seats back, a refund_payment job each: the worker refunds through the provider), every PENDING one CANCELLED. Already CANCELLED: returned unchanged, the job queued again if none is waiting or running. Locks the event row only. Raises BKNTF, BKIST.';


--
-- Name: cancel_order(uuid, uuid); Type: FUNCTION; Schema: api; Owner: booking_owner
--

CREATE FUNCTION api.cancel_order(p_user_id uuid, p_order_id uuid) RETURNS json
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    SET lock_timeout TO '2s'
    AS $$
DECLARE
  v_order orders;
BEGIN
  SELECT * INTO v_order FROM orders WHERE id = p_order_id;
  IF NOT FOUND OR v_order.user_id IS DISTINCT FROM p_user_id THEN
    RAISE EXCEPTION USING ERRCODE = 'BKNTF', MESSAGE = 'order not found';
  END IF;
  PERFORM internal.lock_order_types(p_order_id);
  SELECT * INTO STRICT v_order FROM orders WHERE id = p_order_id FOR NO KEY UPDATE;
  IF v_order.status = 'CANCELLED' THEN
    RETURN internal.order_json(v_order);  -- idempotent: a retried request succeeds
  END IF;
  IF v_order.status <> 'PENDING' THEN
    RAISE EXCEPTION USING ERRCODE = 'BKOST',
      MESSAGE = format('only a PENDING order can be cancelled (it is %s)', v_order.status);
  END IF;
  UPDATE orders SET status = 'CANCELLED', updated_at = now() WHERE id = p_order_id RETURNING * INTO v_order;
  UPDATE payments SET status = 'FAILED' WHERE order_id = p_order_id;
  PERFORM internal.release_order_seats(p_order_id);
  RETURN internal.order_json(v_order);
END;
$$;


ALTER FUNCTION api.cancel_order(p_user_id uuid, p_order_id uuid) OWNER TO booking_owner;

--
-- Name: FUNCTION cancel_order(p_user_id uuid, p_order_id uuid); Type: COMMENT; Schema: api; Owner: booking_owner
--

COMMENT ON FUNCTION api.cancel_order(p_user_id uuid, p_order_id uuid) IS 'The buyer gives up a PENDING order: CANCELLED, payment FAILED, seats back to stock (a payment arriving later is handled as a late one). Already CANCELLED: returned unchanged. Locks the order''s ticket types, then the order. Raises BKNTF (unknown or not yours), BKOST (not PENDING).';


--
-- Name: cancel_reservation(uuid, uuid); Type: FUNCTION; Schema: api; Owner: booking_owner
--

CREATE FUNCTION api.cancel_reservation(p_user_id uuid, p_reservation_id uuid) RETURNS json
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    SET lock_timeout TO '2s'
    AS $$
DECLARE
  v_ticket_type_id uuid;
  v_reservation order_reservations;
BEGIN
  SELECT ticket_type_id INTO v_ticket_type_id
    FROM order_reservations WHERE id = p_reservation_id AND user_id = p_user_id;
  IF NOT FOUND THEN
    RAISE EXCEPTION USING ERRCODE = 'BKNTF', MESSAGE = 'reservation not found';
  END IF;

  -- Lock order: the ticket type first, then the reservation.
  PERFORM 1 FROM ticket_types WHERE id = v_ticket_type_id FOR NO KEY UPDATE;
  SELECT * INTO v_reservation FROM order_reservations WHERE id = p_reservation_id FOR UPDATE;
  IF v_reservation.status <> 'ACTIVE' THEN
    RAISE EXCEPTION USING ERRCODE = CASE v_reservation.status WHEN 'EXPIRED' THEN 'BKREX' ELSE 'BKRNA' END,
      MESSAGE = format('reservation is %s', lower(v_reservation.status));
  END IF;

  UPDATE order_reservations SET status = 'CANCELLED' WHERE id = p_reservation_id
  RETURNING * INTO v_reservation;
  UPDATE ticket_types
     SET available_quantity = available_quantity + v_reservation.quantity, version = version + 1
   WHERE id = v_ticket_type_id;
  RETURN internal.reservation_json(v_reservation);
END;
$$;


ALTER FUNCTION api.cancel_reservation(p_user_id uuid, p_reservation_id uuid) OWNER TO booking_owner;

--
-- Name: FUNCTION cancel_reservation(p_user_id uuid, p_reservation_id uuid); Type: COMMENT; Schema: api; Owner: booking_owner
--

COMMENT ON FUNCTION api.cancel_reservation(p_user_id uuid, p_reservation_id uuid) IS 'The owner gives an ACTIVE hold back: it becomes CANCELLED and its seats return to stock. Locks the ticket_types row, then the reservation row. Raises BKNTF (unknown or not yours), BKREX (already expired), BKRNA (completed or cancelled).';


--
-- Name: check_in(text); Type: FUNCTION; Schema: api; Owner: booking_owner
--

CREATE FUNCTION api.check_in(p_ticket_code text) RETURNS json
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    SET lock_timeout TO '2s'
    AS $$
DECLARE
  v_ticket tickets;
BEGIN
  -- Two scanners at once: the second UPDATE waits, re-reads CHECKED_IN and matches nothing.
  UPDATE tickets SET status = 'CHECKED_IN', checkin_time = now()
   WHERE ticket_code = p_ticket_code AND status = 'UNUSED'
  RETURNING * INTO v_ticket;
  IF NOT FOUND THEN
    SELECT * INTO v_ticket FROM tickets WHERE ticket_code = p_ticket_code;
    IF NOT FOUND THEN
      RAISE EXCEPTION USING ERRCODE = 'BKNTF', MESSAGE = 'ticket not found';
    ELSIF v_ticket.status = 'CHECKED_IN' THEN
      RAISE EXCEPTION USING ERRCODE = 'BKACI', MESSAGE = 'ticket already checked in',
        DETAIL = format('checked in at %s', to_json(v_ticket.checkin_time) #>> '{}');
    ELSE
      RAISE EXCEPTION USING ERRCODE = 'BKTCN', MESSAGE = 'ticket is cancelled';
    END IF;
  END IF;
  PERFORM internal.notify_webhooks('ticket.checked_in', tt.event_id, jsonb_build_object(
            'ticket_code', v_ticket.ticket_code, 'ticket_type_id', v_ticket.ticket_type_id,
            'order_id', v_ticket.order_id, 'event_id', tt.event_id, 'status', v_ticket.status,
            'checkin_time', v_ticket.checkin_time))
     FROM ticket_types tt WHERE tt.id = v_ticket.ticket_type_id;
  RETURN json_build_object('ticket_code', v_ticket.ticket_code, 'ticket_type_id', v_ticket.ticket_type_id,
                           'status', v_ticket.status, 'checkin_time', v_ticket.checkin_time);
END;
$$;


ALTER FUNCTION api.check_in(p_ticket_code text) OWNER TO booking_owner;

--
-- Name: FUNCTION check_in(p_ticket_code text); Type: COMMENT; Schema: api; Owner: booking_owner
--

COMMENT ON FUNCTION api.check_in(p_ticket_code text) IS 'Marks an UNUSED ticket CHECKED_IN with the time and notifies ticket.checked_in webhooks (internal.notify_webhooks, same transaction). Locks the ticket row. Raises BKNTF, BKACI (checked in before; DETAIL has when), BKTCN (cancelled ticket).';


--
-- Name: check_invariants(); Type: FUNCTION; Schema: api; Owner: booking_owner
--

CREATE FUNCTION api.check_invariants() RETURNS TABLE(check_name text, subject_id uuid, detail text)
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
  WITH held AS (
    SELECT ticket_type_id, sum(quantity) AS seats
      FROM order_reservations WHERE status = 'ACTIVE' GROUP BY ticket_type_id
  ), sold AS (
    SELECT i.ticket_type_id, sum(i.quantity) AS seats
      FROM order_items i JOIN orders o ON o.id = i.order_id
     WHERE o.status IN ('PENDING', 'PAID')
        OR (o.status IN ('REFUND_PENDING', 'REFUNDED') AND o.seats_kept)  -- refunded after the start
     GROUP BY i.ticket_type_id
  ), issued AS (
    SELECT order_id, count(*) AS tickets FROM tickets GROUP BY order_id
  ), ordered AS (
    SELECT order_id, sum(quantity) AS seats, sum(quantity * unit_price) AS amount
      FROM order_items GROUP BY order_id
  )
  SELECT 'stock_balance', tt.id,
         format('available %s + held %s + sold %s <> initial %s', tt.available_quantity,
                coalesce(h.seats, 0), coalesce(s.seats, 0), tt.initial_quantity)
    FROM ticket_types tt
    LEFT JOIN held h ON h.ticket_type_id = tt.id
    LEFT JOIN sold s ON s.ticket_type_id = tt.id
   WHERE tt.available_quantity + coalesce(h.seats, 0) + coalesce(s.seats, 0) <> tt.initial_quantity
  UNION ALL
  SELECT 'stock_range', tt.id,
         format('available %s outside 0..%s', tt.available_quantity, tt.initial_quantity)
    FROM ticket_types tt
   WHERE tt.available_quantity < 0 OR tt.available_quantity > tt.initial_quantity
  UNION ALL
  SELECT 'tickets_issued', o.id,
         format('order has %s tickets for %s seats', coalesce(t.tickets, 0), coalesce(x.seats, 0))
    FROM orders o
    LEFT JOIN issued t ON t.order_id = o.id
    LEFT JOIN ordered x ON x.order_id = o.id
   WHERE o.status = 'PAID' AND coalesce(t.tickets, 0) <> coalesce(x.seats, 0)
  UNION ALL
  SELECT 'order_total', o.id,
         format('total %s, items %s, payment %s', o.total_amount, x.amount, p.amount)
    FROM orders o
    LEFT JOIN ordered x ON x.order_id = o.id
    LEFT JOIN payments p ON p.order_id = o.id
   WHERE o.status = 'PAID'
     AND (o.total_amount IS DISTINCT FROM x.amount OR p.amount IS DISTINCT FROM o.total_amount
          OR p.status IS DISTINCT FROM 'SUCCESS')
  UNION ALL
  -- Issue 12: a refund (pending or done) leaves no ticket usable.
  SELECT 'refund_tickets', o.id, format('%s order has %s UNUSED tickets', o.status, count(*))
    FROM orders o JOIN tickets t ON t.order_id = o.id
   WHERE o.status IN ('REFUND_PENDING', 'REFUNDED') AND t.status = 'UNUSED'
   GROUP BY o.id, o.status
  UNION ALL
  -- Orders that never became PAID have no tickets at all.
  SELECT 'unpaid_tickets', o.id, format('%s order has %s tickets', o.status, count(*))
    FROM orders o JOIN tickets t ON t.order_id = o.id
   WHERE o.status IN ('PENDING', 'CANCELLED', 'TIMEOUT')
   GROUP BY o.id, o.status
  UNION ALL
  -- The money of a refunded order went back; one still refunding has its money in.
  SELECT 'refund_payment', o.id, format('%s order, payment %s', o.status, p.status)
    FROM orders o LEFT JOIN payments p ON p.order_id = o.id
   WHERE (o.status = 'REFUNDED' AND p.status IS DISTINCT FROM 'REFUNDED')
      OR (o.status = 'REFUND_PENDING' AND p.status IS DISTINCT FROM 'SUCCESS')
  UNION ALL
  SELECT 'refund_missing', o.id, 'REFUND_PENDING order without a pending refund'
    FROM orders o
   WHERE o.status = 'REFUND_PENDING'
     AND NOT EXISTS (SELECT 1 FROM payment_refunds r
                      WHERE r.order_id = o.id AND r.reason NOT IN ('duplicate', 'wrong_amount') AND r.status = 'PENDING')
  UNION ALL
  -- The expiry job runs every minute and skips only what is locked at that moment.
  SELECT 'pending_overdue', o.id, format('PENDING since %s, deadline %s', o.created_at, o.payment_deadline)
    FROM orders o
   WHERE o.status = 'PENDING' AND o.payment_deadline < now() - interval '5 minutes'
$$;


ALTER FUNCTION api.check_invariants() OWNER TO booking_owner;

--
-- Name: FUNCTION check_invariants(); Type: COMMENT; Schema: api; Owner: booking_owner
--

COMMENT ON FUNCTION api.check_invariants() IS '(DBA-only) One row per violation, none when consistent: stock_balance (available + ACTIVE holds + sold <> initial), stock_range, tickets_issued (PAID order whose tickets <> seats), order_total (order, items and SUCCESS payment disagree), refund_tickets (REFUND_PENDING/REFUNDED order with UNUSED tickets), unpaid_tickets (PENDING/CANCELLED/TIMEOUT order with tickets), refund_payment (REFUNDED order whose payment is not REFUNDED, REFUND_PENDING one whose payment is not SUCCESS), refund_missing (REFUND_PENDING without a pending refund), pending_overdue (PENDING more than 5 minutes past its payment deadline). Sold = PENDING + PAID orders + refunded ones whose seats were kept (event started). One snapshot; locks nothing.';


--
-- Name: check_rate_limits(text[], uuid[], text[]); Type: FUNCTION; Schema: api; Owner: booking_owner
--

CREATE FUNCTION api.check_rate_limits(p_classes text[], p_user_ids uuid[], p_addresses text[]) RETURNS TABLE(request integer, retry_after integer)
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    SET lock_timeout TO '2s'
    AS $$
DECLARE
  v_n integer := coalesce(cardinality(p_classes), 0);
  v_now timestamptz := clock_timestamp();
  v_all_fit boolean;
  v_ri integer[];          -- (request, key) pairs, ordered by request: the request's position
  v_rj integer[];          -- ... and the key's position in v_key
  v_key text[];            -- the call's distinct keys, sorted
  v_t interval[];          -- their emission intervals
  v_tol interval[];        -- their tolerances
  v_cur timestamptz[];     -- their tat as stored now
  v_tat timestamptz[];     -- their tat before this call, then as the exact pass moves it
  v_total integer;
  v_m integer := 1;
  v_first integer;
  v_i integer;
  v_j integer;
  v_ok boolean;
  v_wait interval;
BEGIN
  IF v_n = 0 THEN
    RETURN;
  END IF;
  IF v_n > 1000 OR coalesce(cardinality(p_user_ids), 0) <> v_n OR coalesce(cardinality(p_addresses), 0) <> v_n THEN
    RAISE EXCEPTION USING ERRCODE = 'BKVAL',
      MESSAGE = 'p_classes, p_user_ids and p_addresses must be aligned arrays of at most 1000 requests';
  END IF;

  -- Fast path, one statement: every key of the call (one per rule of a request's class that
  -- applies) with its number of hits h, upserted in key order (the row locks: no deadlock
  -- between concurrent calls). A key moves by h * T when all its h hits fit (last_ok), else it
  -- stays. When every key fits, every request passes: that is what the exact pass below would
  -- decide too, so the call is done with one write per key.
  WITH hits AS (
    SELECT rl.class || ':' || rl.scope || ':' || CASE rl.scope WHEN 'user' THEN r.u::text ELSE r.a END AS key,
           rl.period, rl.period / rl.max_requests AS t
      FROM unnest(p_classes, p_user_ids, p_addresses) AS r(c, u, a)
      JOIN rate_limit_rules rl
        ON rl.class = r.c
       AND ((rl.scope = 'user' AND r.u IS NOT NULL) OR (rl.scope = 'address' AND r.a IS NOT NULL))
  ), keys AS (
    SELECT key, min(period) AS period, count(*)::integer * min(t) AS step FROM hits GROUP BY key
  ), counted AS (
    -- A new key: fits when its h hits fit in an empty window ((h - 1) * T <= period - T).
    INSERT INTO rate_limit_counters AS c (key, tat, period, last_ok)
    -- (A new key that does not fit starts at now, the same as empty, for the exact pass.)
    SELECT k.key, CASE WHEN k.step <= k.period THEN v_now + k.step ELSE v_now END, k.period,
           k.step <= k.period
      FROM keys k ORDER BY k.key
    ON CONFLICT (key) DO UPDATE
       SET tat = CASE WHEN excluded.last_ok AND greatest(c.tat, v_now) + (excluded.tat - v_now) - v_now <= excluded.period
                      THEN greatest(c.tat, v_now) + (excluded.tat - v_now) ELSE c.tat END,
           last_ok = excluded.last_ok
                     AND greatest(c.tat, v_now) + (excluded.tat - v_now) - v_now <= excluded.period,
           period = excluded.period
    RETURNING c.last_ok
  )
  SELECT bool_and(last_ok) INTO v_all_fit FROM counted;
  IF v_all_fit IS NULL OR v_all_fit THEN
    RETURN;  -- no key (no rule applies), or everyone passes
  END IF;

  -- Exact pass (some key is over its limit): the rows are locked by the upsert. Each key's tat
  -- before this call: a key that moved moved by h * T from max(tat, now).
  WITH hits AS (
    SELECT r.i::integer AS i,
           rl.class || ':' || rl.scope || ':' || CASE rl.scope WHEN 'user' THEN r.u::text ELSE r.a END AS key,
           rl.period / rl.max_requests AS t,
           rl.period - rl.period / rl.max_requests AS tol
      FROM unnest(p_classes, p_user_ids, p_addresses) WITH ORDINALITY AS r(c, u, a, i)
      JOIN rate_limit_rules rl
        ON rl.class = r.c
       AND ((rl.scope = 'user' AND r.u IS NOT NULL) OR (rl.scope = 'address' AND r.a IS NOT NULL))
  ), ranked AS (
    SELECT h.*, dense_rank() OVER (ORDER BY h.key)::integer AS j, count(*) OVER (PARTITION BY h.key)::integer AS n
      FROM hits h
  ), keys AS (
    SELECT DISTINCT ON (j) j, key, t, tol, n FROM ranked ORDER BY j
  )
  SELECT (SELECT array_agg(i ORDER BY i, j) FROM ranked),
         (SELECT array_agg(j ORDER BY i, j) FROM ranked),
         array_agg(k.key ORDER BY k.j), array_agg(k.t ORDER BY k.j), array_agg(k.tol ORDER BY k.j),
         array_agg(c.tat ORDER BY k.j),
         array_agg(CASE WHEN c.last_ok THEN c.tat - k.n * k.t ELSE c.tat END ORDER BY k.j)
    INTO v_ri, v_rj, v_key, v_t, v_tol, v_cur, v_tat
    FROM keys k JOIN rate_limit_counters c USING (key);

  -- In arrival order: a request passes when every one of its keys allows it; only then do its
  -- keys move. A refused request is reported with the wait its slowest key needs.
  v_total := cardinality(v_ri);
  WHILE v_m <= v_total LOOP
    v_i := v_ri[v_m];
    v_first := v_m;
    v_ok := true;
    v_wait := interval '0';
    WHILE v_m <= v_total AND v_ri[v_m] = v_i LOOP
      v_j := v_rj[v_m];
      IF greatest(v_tat[v_j], v_now) - v_now > v_tol[v_j] THEN
        v_ok := false;
        v_wait := greatest(v_wait, greatest(v_tat[v_j], v_now) - v_now - v_tol[v_j]);
      END IF;
      v_m := v_m + 1;
    END LOOP;
    IF v_ok THEN
      FOR v_first IN v_first .. v_m - 1 LOOP
        v_j := v_rj[v_first];
        v_tat[v_j] := greatest(v_tat[v_j], v_now) + v_t[v_j];
      END LOOP;
    ELSE
      request := v_i;
      retry_after := greatest(1, ceil(extract(epoch FROM v_wait)))::integer;
      RETURN NEXT;
    END IF;
  END LOOP;

  UPDATE rate_limit_counters c SET tat = u.tat
    FROM unnest(v_key, v_tat, v_cur) AS u(key, tat, cur)
   WHERE c.key = u.key AND u.tat <> u.cur;
END;
$$;


ALTER FUNCTION api.check_rate_limits(p_classes text[], p_user_ids uuid[], p_addresses text[]) OWNER TO booking_owner;

--
-- Name: FUNCTION check_rate_limits(p_classes text[], p_user_ids uuid[], p_addresses text[]); Type: COMMENT; Schema: api; Owner: booking_owner
--

COMMENT ON FUNCTION api.check_rate_limits(p_classes text[], p_user_ids uuid[], p_addresses text[]) IS 'The gateway''s rate-limit check for a batch of requests (aligned arrays: route class, the caller''s user id or NULL, the client address key or NULL). Returns the REFUSED requests only: (position in the arrays from 1, seconds to wait); no row = allowed. Requests are decided in array order (GCRA against every rule of the class in rate_limit_rules); a refused one counts nothing. Locks the counters of its keys in key order, in its own transaction. Raises BKVAL.';


--
-- Name: checkout(uuid, uuid, text, text); Type: FUNCTION; Schema: api; Owner: booking_owner
--

CREATE FUNCTION api.checkout(p_user_id uuid, p_reservation_id uuid, p_payment_method text, p_idempotency_key text DEFAULT NULL::text) RETURNS json
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    SET lock_timeout TO '2s'
    AS $$
DECLARE
  v_reservation order_reservations;
  v_price numeric(10,2);
  v_event_status text;
  v_order orders;
  v_stored json;
BEGIN
  -- The key first, then the reservation row (the lock order); as api.complete_booking.
  IF p_idempotency_key IS NOT NULL THEN
    v_stored := internal.claim_idempotency_key(p_user_id, p_idempotency_key,
      'checkout ' || coalesce(p_reservation_id::text, '-') || ' ' || coalesce(p_payment_method, '-'));
    IF v_stored IS NOT NULL THEN
      -- The first answer, with the pay_url the gateway stored after giving it (api.set_pay_url).
      RETURN coalesce((SELECT jsonb_set(v_stored::jsonb, '{payment,pay_url}', to_jsonb(p.pay_url))::json
                         FROM payments p
                        WHERE p.transaction_id = v_stored -> 'payment' ->> 'transaction_id'
                          AND p.pay_url IS NOT NULL), v_stored);
    END IF;
  END IF;
  IF p_payment_method IS NULL OR p_payment_method NOT IN ('MOMO', 'ZALOPAY', 'BANKING', 'CARD') THEN
    RAISE EXCEPTION USING ERRCODE = 'BKVAL',
      MESSAGE = 'payment_method must be one of MOMO, ZALOPAY, BANKING, CARD';
  END IF;

  SELECT * INTO v_reservation FROM order_reservations WHERE id = p_reservation_id FOR UPDATE;
  IF NOT FOUND OR v_reservation.user_id IS DISTINCT FROM p_user_id THEN
    RAISE EXCEPTION USING ERRCODE = 'BKNTF', MESSAGE = 'reservation not found';
  END IF;
  IF v_reservation.status = 'EXPIRED'
     OR (v_reservation.status = 'ACTIVE' AND v_reservation.expires_at <= clock_timestamp()) THEN
    RAISE EXCEPTION USING ERRCODE = 'BKREX', MESSAGE = 'reservation hold ran out';
  END IF;
  IF v_reservation.status <> 'ACTIVE' THEN
    RAISE EXCEPTION USING ERRCODE = 'BKRNA',
      MESSAGE = format('reservation is %s', lower(v_reservation.status)),
      DETAIL = coalesce('order ' || (SELECT id FROM orders WHERE reservation_id = p_reservation_id), '');
  END IF;

  SELECT tt.price, e.status INTO v_price, v_event_status
    FROM ticket_types tt JOIN events e ON e.id = tt.event_id
   WHERE tt.id = v_reservation.ticket_type_id;
  IF v_event_status <> 'PUBLISHED' THEN
    RAISE EXCEPTION USING ERRCODE = 'BKSNO',
      MESSAGE = format('the event is not on sale (it is %s)', v_event_status);
  END IF;

  -- The hold's seats move to the PENDING order (stock unchanged: held -> sold) until the
  -- payment deadline; api.expire_pending_orders returns them if nobody paid.
  INSERT INTO orders (user_id, total_amount, status, reservation_id, payment_deadline)
  VALUES (p_user_id, v_price * v_reservation.quantity, 'PENDING', p_reservation_id,
          now() + (SELECT s.payment_window FROM payment_settings s))
  RETURNING * INTO v_order;
  INSERT INTO order_items (order_id, ticket_type_id, quantity, unit_price)
  VALUES (v_order.id, v_reservation.ticket_type_id, v_reservation.quantity, v_price);
  INSERT INTO payments (order_id, transaction_id, payment_method, amount, status)
  VALUES (v_order.id, internal.new_transaction_id(p_payment_method), p_payment_method, v_order.total_amount, 'PENDING');
  UPDATE order_reservations SET status = 'COMPLETED' WHERE id = p_reservation_id;

  IF p_idempotency_key IS NOT NULL THEN
    RETURN internal.store_idempotent_response(p_user_id, p_idempotency_key, internal.order_json(v_order));
  END IF;
  RETURN internal.order_json(v_order);
END;
$$;


ALTER FUNCTION api.checkout(p_user_id uuid, p_reservation_id uuid, p_payment_method text, p_idempotency_key text) OWNER TO booking_owner;

--
-- Name: FUNCTION checkout(p_user_id uuid, p_reservation_id uuid, p_payment_method text, p_idempotency_key text); Type: COMMENT; Schema: api; Owner: booking_owner
--

COMMENT ON FUNCTION api.checkout(p_user_id uuid, p_reservation_id uuid, p_payment_method text, p_idempotency_key text) IS 'Provider payments: turns the owner''s ACTIVE, unexpired hold into a PENDING order with a PENDING payment (MOMO|ZALOPAY|BANKING|CARD; transaction_id in the provider''s form: MOMO BK<hex>, ZALOPAY yymmdd_<hex> in Vietnam''s date, BANKING/CARD TXN-<hex>) whose seats stay held until payment.expires_at (now + payment_settings.payment_window). Reservation COMPLETED. Returns the order JSON. Locks the reservation row. Raises BKVAL, BKNTF, BKREX, BKRNA, BKSNO, BKIDR (as api.complete_booking). With p_idempotency_key the same user, key and request within 24 hours returns the first order again.';


--
-- Name: cleanup_reservations(interval); Type: FUNCTION; Schema: api; Owner: booking_owner
--

CREATE FUNCTION api.cleanup_reservations(p_older_than interval DEFAULT '30 days'::interval) RETURNS integer
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
DECLARE
  v_batch integer;
  v_deleted integer := 0;
BEGIN
  IF p_older_than IS NULL OR p_older_than < interval '1 day' THEN
    RAISE EXCEPTION USING ERRCODE = 'BKVAL', MESSAGE = 'p_older_than must be at least 1 day';
  END IF;
  -- Batches keep each statement short; finished holds are cold rows nobody else locks, and
  -- SKIP LOCKED makes sure of it. Orders keep their data (reservation_id becomes NULL).
  LOOP
    DELETE FROM order_reservations
     WHERE id IN (SELECT id FROM order_reservations
                   WHERE status IN ('COMPLETED', 'EXPIRED', 'CANCELLED')
                     AND created_at < now() - p_older_than
                   LIMIT 5000
                     FOR UPDATE SKIP LOCKED);
    GET DIAGNOSTICS v_batch = ROW_COUNT;
    v_deleted := v_deleted + v_batch;
    EXIT WHEN v_batch < 5000;
  END LOOP;
  RETURN v_deleted;
END;
$$;


ALTER FUNCTION api.cleanup_reservations(p_older_than interval) OWNER TO booking_owner;

--
-- Name: FUNCTION cleanup_reservations(p_older_than interval); Type: COMMENT; Schema: api; Owner: booking_owner
--

COMMENT ON FUNCTION api.cleanup_reservations(p_older_than interval) IS '(DBA-only) Deletes COMPLETED, EXPIRED and CANCELLED holds created more than p_older_than (default 30 days) ago, in batches of 5000; orders that pointed to them keep everything else (reservation_id set NULL). pg_cron runs it daily at 02:00. Returns rows deleted. Never touches ACTIVE holds or ticket types. Raises BKVAL.';


--
-- Name: clear_rate_limit(text); Type: FUNCTION; Schema: api; Owner: booking_owner
--

CREATE FUNCTION api.clear_rate_limit(p_key_prefix text) RETURNS integer
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
DECLARE
  v_count integer;
BEGIN
  IF p_key_prefix IS NULL THEN
    RAISE EXCEPTION USING ERRCODE = 'BKVAL', MESSAGE = 'a key prefix is required ('''' clears every counter)';
  END IF;
  DELETE FROM rate_limit_counters c WHERE starts_with(c.key, p_key_prefix);
  GET DIAGNOSTICS v_count = ROW_COUNT;
  RETURN v_count;
END;
$$;


ALTER FUNCTION api.clear_rate_limit(p_key_prefix text) OWNER TO booking_owner;

--
-- Name: FUNCTION clear_rate_limit(p_key_prefix text); Type: COMMENT; Schema: api; Owner: booking_owner
--

COMMENT ON FUNCTION api.clear_rate_limit(p_key_prefix text) IS '(DBA-only) Forgets the counters whose key starts with a prefix, e.g. lifts a login throttle: SELECT api.clear_rate_limit(''login_failures:email:a@b.co''). Returns how many. Locks those counter rows. Raises BKVAL.';


--
-- Name: close_webhook_delivery(uuid, text); Type: FUNCTION; Schema: api; Owner: booking_owner
--

CREATE FUNCTION api.close_webhook_delivery(p_delivery_id uuid, p_status text) RETURNS boolean
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    SET lock_timeout TO '2s'
    AS $$
BEGIN
  IF p_status IS NULL OR p_status NOT IN ('CANCELLED', 'FAILED') THEN
    RAISE EXCEPTION USING ERRCODE = 'BKVAL', MESSAGE = 'status must be CANCELLED or FAILED';
  END IF;
  UPDATE webhook_deliveries SET status = p_status WHERE id = p_delivery_id AND status = 'PENDING';
  IF FOUND THEN
    RETURN true;
  END IF;
  IF NOT EXISTS (SELECT 1 FROM webhook_deliveries WHERE id = p_delivery_id) THEN
    RAISE EXCEPTION USING ERRCODE = 'BKNTF', MESSAGE = 'webhook delivery not found';
  END IF;
  RETURN false;
END;
$$;


ALTER FUNCTION api.close_webhook_delivery(p_delivery_id uuid, p_status text) OWNER TO booking_owner;

--
-- Name: FUNCTION close_webhook_delivery(p_delivery_id uuid, p_status text); Type: COMMENT; Schema: api; Owner: booking_owner
--

COMMENT ON FUNCTION api.close_webhook_delivery(p_delivery_id uuid, p_status text) IS '(worker) Ends a PENDING delivery without an attempt: CANCELLED (its webhook was deleted or disabled after the notification was made) or FAILED (its job was given up, e.g. a stalled job on its last run). Returns false when it was not PENDING. Locks the delivery row. Raises BKVAL, BKNTF.';


--
-- Name: complete_booking(uuid, uuid, text, text); Type: FUNCTION; Schema: api; Owner: booking_owner
--

CREATE FUNCTION api.complete_booking(p_user_id uuid, p_reservation_id uuid, p_payment_method text, p_idempotency_key text DEFAULT NULL::text) RETURNS json
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    SET lock_timeout TO '2s'
    AS $$
DECLARE
  v_reservation order_reservations;
  v_price numeric(10,2);
  v_event_status text;
  v_order orders;
  v_stored json;
BEGIN
  -- Provider mode: only a provider's confirmed payment makes an order PAID (api.checkout,
  -- api.apply_payment_event). Checked here, in SQL, so no client can skip it.
  IF internal.payment_mode() = 'provider' THEN
    RAISE EXCEPTION USING ERRCODE = 'BKPRQ',
      MESSAGE = 'payment required: check out with a payment provider (provider mode)';
  END IF;
  -- A key is claimed first (before the reservation row: the lock order) and records the order
  -- in this same transaction: a retry after a lost answer gets the same order, not BKRNA.
  IF p_idempotency_key IS NOT NULL THEN
    v_stored := internal.claim_idempotency_key(p_user_id, p_idempotency_key,
      'complete ' || coalesce(p_reservation_id::text, '-') || ' ' || coalesce(p_payment_method, '-'));
    IF v_stored IS NOT NULL THEN
      RETURN v_stored;
    END IF;
  END IF;
  IF p_payment_method IS NULL OR p_payment_method NOT IN ('MOMO', 'ZALOPAY', 'BANKING', 'CARD') THEN
    RAISE EXCEPTION USING ERRCODE = 'BKVAL',
      MESSAGE = 'payment_method must be one of MOMO, ZALOPAY, BANKING, CARD';
  END IF;

  -- Only the reservation row is locked. Inserting rows that reference the ticket type takes
  -- FOR KEY SHARE on it, which never waits for reserve's FOR NO KEY UPDATE: no lock cycle.
  SELECT * INTO v_reservation FROM order_reservations WHERE id = p_reservation_id FOR UPDATE;
  IF NOT FOUND OR v_reservation.user_id IS DISTINCT FROM p_user_id THEN
    RAISE EXCEPTION USING ERRCODE = 'BKNTF', MESSAGE = 'reservation not found';
  END IF;
  IF v_reservation.status = 'EXPIRED'
     OR (v_reservation.status = 'ACTIVE' AND v_reservation.expires_at <= clock_timestamp()) THEN
    RAISE EXCEPTION USING ERRCODE = 'BKREX', MESSAGE = 'reservation hold ran out';
  END IF;
  IF v_reservation.status <> 'ACTIVE' THEN
    RAISE EXCEPTION USING ERRCODE = 'BKRNA',
      MESSAGE = format('reservation is %s', lower(v_reservation.status)),
      DETAIL = coalesce('order ' || (SELECT id FROM orders WHERE reservation_id = p_reservation_id), '');
  END IF;

  SELECT tt.price, e.status INTO v_price, v_event_status
    FROM ticket_types tt JOIN events e ON e.id = tt.event_id
   WHERE tt.id = v_reservation.ticket_type_id;
  IF v_event_status <> 'PUBLISHED' THEN
    RAISE EXCEPTION USING ERRCODE = 'BKSNO',
      MESSAGE = format('the event is not on sale (it is %s)', v_event_status);
  END IF;

  -- Everything below commits together: a paid order always has its payment and tickets.
  INSERT INTO orders (user_id, total_amount, status, reservation_id)
  VALUES (p_user_id, v_price * v_reservation.quantity, 'PAID', p_reservation_id)
  RETURNING * INTO v_order;
  INSERT INTO order_items (order_id, ticket_type_id, quantity, unit_price)
  VALUES (v_order.id, v_reservation.ticket_type_id, v_reservation.quantity, v_price);
  INSERT INTO payments (order_id, transaction_id, payment_method, amount, status, payment_time)
  VALUES (v_order.id, 'TXN-' || upper(encode(gen_random_bytes(12), 'hex')), p_payment_method,
          v_order.total_amount, 'SUCCESS', now());
  INSERT INTO tickets (order_id, ticket_type_id, ticket_code, status)
  SELECT v_order.id, v_reservation.ticket_type_id, internal.new_ticket_code(), 'UNUSED'
    FROM generate_series(1, v_reservation.quantity);
  UPDATE order_reservations SET status = 'COMPLETED' WHERE id = p_reservation_id;

  -- The confirmation e-mail's job and the order.paid webhooks, committed with the order.
  PERFORM internal.order_paid(v_order.id);

  IF p_idempotency_key IS NOT NULL THEN
    RETURN internal.store_idempotent_response(p_user_id, p_idempotency_key, internal.order_json(v_order));
  END IF;
  RETURN internal.order_json(v_order);
END;
$$;


ALTER FUNCTION api.complete_booking(p_user_id uuid, p_reservation_id uuid, p_payment_method text, p_idempotency_key text) OWNER TO booking_owner;

--
-- Name: FUNCTION complete_booking(p_user_id uuid, p_reservation_id uuid, p_payment_method text, p_idempotency_key text); Type: COMMENT; Schema: api; Owner: booking_owner
--

COMMENT ON FUNCTION api.complete_booking(p_user_id uuid, p_reservation_id uuid, p_payment_method text, p_idempotency_key text) IS 'Turns the owner''s ACTIVE, unexpired hold into a PAID order in one transaction: order, item (unit price from the ticket type), SUCCESS payment (MOMO|ZALOPAY|BANKING|CARD, unique transaction id), one UNUSED ticket per seat (CSPRNG codes), reservation COMPLETED, and internal.order_paid (the confirmation e-mail''s job, order.paid webhooks). Returns the order JSON. Locks the reservation row. Raises BKPRQ (provider mode: use api.checkout), BKVAL (method), BKNTF (unknown or not yours), BKREX (expired), BKRNA (completed or cancelled; DETAIL names the order), BKSNO (event cancelled meanwhile), BKIDR (p_idempotency_key used with another request). With p_idempotency_key (1-255 visible ASCII) the same user, key and request within 24 hours returns the first order again; recorded in the same transaction.';


--
-- Name: confirmation_email(uuid); Type: FUNCTION; Schema: api; Owner: booking_owner
--

CREATE FUNCTION api.confirmation_email(p_order_id uuid) RETURNS json
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
DECLARE
  v_result json;
BEGIN
  SELECT json_build_object(
           'order_id', m.order_id,
           'recipient', m.recipient,
           'full_name', u.full_name,
           'sent_at', m.sent_at,
           'message_id', m.message_id,
           'attempts', m.attempts,
           'order', internal.order_json(o),
           'event', (SELECT json_build_object('id', e.id, 'slug', e.slug, 'name', e.name, 'location', e.location,
                                              'start_time', e.start_time, 'end_time', e.end_time)
                       FROM order_items i
                       JOIN ticket_types tt ON tt.id = i.ticket_type_id
                       JOIN events e ON e.id = tt.event_id
                      WHERE i.order_id = o.id
                      ORDER BY i.id LIMIT 1),
           'tickets', coalesce((SELECT json_agg(json_build_object('ticket_code', t.ticket_code,
                                                                  'ticket_type_name', tt.name,
                                                                  'status', t.status) ORDER BY t.ticket_code)
                                  FROM tickets t JOIN ticket_types tt ON tt.id = t.ticket_type_id
                                 WHERE t.order_id = o.id), '[]'::json))
    INTO v_result
    FROM order_emails m
    JOIN orders o ON o.id = m.order_id
    JOIN users u ON u.id = o.user_id
   WHERE m.order_id = p_order_id AND m.kind = 'confirmation';
  IF v_result IS NULL THEN
    RAISE EXCEPTION USING ERRCODE = 'BKNTF', MESSAGE = 'no confirmation e-mail for this order';
  END IF;
  RETURN v_result;
END;
$$;


ALTER FUNCTION api.confirmation_email(p_order_id uuid) OWNER TO booking_owner;

--
-- Name: FUNCTION confirmation_email(p_order_id uuid); Type: COMMENT; Schema: api; Owner: booking_owner
--

COMMENT ON FUNCTION api.confirmation_email(p_order_id uuid) IS '(worker) What the confirmation e-mail of an order says: {order_id, recipient, full_name, sent_at, message_id, attempts, order (order JSON), event {id, slug, name, location, start_time, end_time}, tickets [{ticket_code, ticket_type_name, status}]}. Locks nothing. Raises BKNTF (no such e-mail).';


--
-- Name: create_event(text, text, text, timestamp with time zone, timestamp with time zone, text, text, integer, boolean, integer); Type: FUNCTION; Schema: api; Owner: booking_owner
--

CREATE FUNCTION api.create_event(p_slug text, p_name text, p_location text, p_start_time timestamp with time zone, p_end_time timestamp with time zone, p_description text DEFAULT NULL::text, p_banner_url text DEFAULT NULL::text, p_max_tickets_per_user integer DEFAULT NULL::integer, p_queue_enabled boolean DEFAULT false, p_admission_rate_per_minute integer DEFAULT NULL::integer) RETURNS json
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
DECLARE
  v_event events;
BEGIN
  PERFORM internal.check_event(p_slug, p_name, p_location, p_banner_url, p_start_time, p_end_time);
  PERFORM internal.check_cap('max_tickets_per_user', p_max_tickets_per_user);
  PERFORM internal.check_waiting_room(p_queue_enabled, p_admission_rate_per_minute);

  INSERT INTO events (slug, name, description, banner_url, location, start_time, end_time, status,
                      max_tickets_per_user, queue_enabled, admission_rate_per_minute)
  VALUES (p_slug, btrim(p_name), p_description, p_banner_url, btrim(p_location),
          p_start_time, p_end_time, 'DRAFT', p_max_tickets_per_user, coalesce(p_queue_enabled, false),
          p_admission_rate_per_minute)
  ON CONFLICT (slug) DO NOTHING
  RETURNING * INTO v_event;
  IF NOT FOUND THEN
    RAISE EXCEPTION USING ERRCODE = 'BKSLG', MESSAGE = 'an event with this slug exists';
  END IF;
  RETURN internal.event_json(v_event, true);
END;
$$;


ALTER FUNCTION api.create_event(p_slug text, p_name text, p_location text, p_start_time timestamp with time zone, p_end_time timestamp with time zone, p_description text, p_banner_url text, p_max_tickets_per_user integer, p_queue_enabled boolean, p_admission_rate_per_minute integer) OWNER TO booking_owner;

--
-- Name: FUNCTION create_event(p_slug text, p_name text, p_location text, p_start_time timestamp with time zone, p_end_time timestamp with time zone, p_description text, p_banner_url text, p_max_tickets_per_user integer, p_queue_enabled boolean, p_admission_rate_per_minute integer); Type: COMMENT; Schema: api; Owner: booking_owner
--

COMMENT ON FUNCTION api.create_event(p_slug text, p_name text, p_location text, p_start_time timestamp with time zone, p_end_time timestamp with time zone, p_description text, p_banner_url text, p_max_tickets_per_user integer, p_queue_enabled boolean, p_admission_rate_per_minute integer) IS 'Creates an event in status DRAFT and returns it. p_max_tickets_per_user: seats one buyer may hold or own over all its ticket types (NULL: no cap). p_queue_enabled: the sale goes through a waiting room admitting p_admission_rate_per_minute people a minute (1..1000000, required then). Raises BKVAL (fields), BKSLG (slug taken).';


--
-- Name: create_session(uuid, bytea, integer, integer); Type: FUNCTION; Schema: api; Owner: booking_owner
--

CREATE FUNCTION api.create_session(p_user_id uuid, p_refresh_hash bytea, p_session_ttl_seconds integer DEFAULT 2592000, p_refresh_ttl_seconds integer DEFAULT 1209600) RETURNS json
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
DECLARE
  v_session sessions;
  v_role text;
BEGIN
  PERFORM internal.check_refresh_args(p_refresh_hash, p_refresh_ttl_seconds);
  PERFORM internal.check_refresh_args(p_refresh_hash, p_session_ttl_seconds);
  INSERT INTO sessions (user_id, expires_at)
  SELECT u.id, now() + make_interval(secs => p_session_ttl_seconds) FROM users u WHERE u.id = p_user_id
  RETURNING * INTO v_session;
  IF NOT FOUND THEN
    RAISE EXCEPTION USING ERRCODE = 'BKUNA', MESSAGE = 'no such user';
  END IF;
  INSERT INTO refresh_tokens (token_hash, session_id, expires_at)
  VALUES (p_refresh_hash, v_session.id,
          least(now() + make_interval(secs => p_refresh_ttl_seconds), v_session.expires_at));
  SELECT u.role INTO v_role FROM users u WHERE u.id = p_user_id;
  RETURN json_build_object('session_id', v_session.id, 'user_id', v_session.user_id, 'role', v_role,
                           'expires_at', v_session.expires_at);
END;
$$;


ALTER FUNCTION api.create_session(p_user_id uuid, p_refresh_hash bytea, p_session_ttl_seconds integer, p_refresh_ttl_seconds integer) OWNER TO booking_owner;

--
-- Name: FUNCTION create_session(p_user_id uuid, p_refresh_hash bytea, p_session_ttl_seconds integer, p_refresh_ttl_seconds integer); Type: COMMENT; Schema: api; Owner: booking_owner
--

COMMENT ON FUNCTION api.create_session(p_user_id uuid, p_refresh_hash bytea, p_session_ttl_seconds integer, p_refresh_ttl_seconds integer) IS 'Login, after the gateway checked the password: a new session (absolute lifetime p_session_ttl_seconds) and its first refresh token, given as its sha256 (idle lifetime p_refresh_ttl_seconds). Returns {session_id, user_id, role, expires_at}; the access token carries session_id as `sid`. Locks nothing beyond the new rows. Raises BKVAL, BKUNA (no such user).';


--
-- Name: create_ticket_type(uuid, text, numeric, integer, timestamp with time zone, timestamp with time zone, integer); Type: FUNCTION; Schema: api; Owner: booking_owner
--

CREATE FUNCTION api.create_ticket_type(p_event_id uuid, p_name text, p_price numeric, p_initial_quantity integer, p_start_sale_time timestamp with time zone DEFAULT NULL::timestamp with time zone, p_end_sale_time timestamp with time zone DEFAULT NULL::timestamp with time zone, p_max_per_user integer DEFAULT NULL::integer) RETURNS json
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    SET lock_timeout TO '2s'
    AS $$
DECLARE
  v_event events;
  v_tt ticket_types;
BEGIN
  PERFORM internal.check_ticket_type(p_name, p_price, p_initial_quantity, p_start_sale_time, p_end_sale_time);
  PERFORM internal.check_cap('max_per_user', p_max_per_user);

  SELECT * INTO v_event FROM events WHERE id = p_event_id FOR KEY SHARE;
  IF NOT FOUND THEN
    RAISE EXCEPTION USING ERRCODE = 'BKNTF', MESSAGE = 'event not found';
  END IF;
  IF v_event.status IN ('CANCELLED', 'ENDED') THEN
    RAISE EXCEPTION USING ERRCODE = 'BKIST',
      MESSAGE = format('cannot add ticket types to a %s event', v_event.status);
  END IF;

  INSERT INTO ticket_types (event_id, name, price, initial_quantity, available_quantity,
                            start_sale_time, end_sale_time, max_per_user)
  VALUES (p_event_id, btrim(p_name), p_price, p_initial_quantity, p_initial_quantity,
          p_start_sale_time, p_end_sale_time, p_max_per_user)
  RETURNING * INTO v_tt;
  RETURN internal.ticket_type_json(v_tt, v_event, true);
END;
$$;


ALTER FUNCTION api.create_ticket_type(p_event_id uuid, p_name text, p_price numeric, p_initial_quantity integer, p_start_sale_time timestamp with time zone, p_end_sale_time timestamp with time zone, p_max_per_user integer) OWNER TO booking_owner;

--
-- Name: FUNCTION create_ticket_type(p_event_id uuid, p_name text, p_price numeric, p_initial_quantity integer, p_start_sale_time timestamp with time zone, p_end_sale_time timestamp with time zone, p_max_per_user integer); Type: COMMENT; Schema: api; Owner: booking_owner
--

COMMENT ON FUNCTION api.create_ticket_type(p_event_id uuid, p_name text, p_price numeric, p_initial_quantity integer, p_start_sale_time timestamp with time zone, p_end_sale_time timestamp with time zone, p_max_per_user integer) IS 'Adds a ticket type to an event with available_quantity = initial_quantity. NULL sale times mean open from publication / until the event ends. p_max_per_user: seats of it one buyer may hold or own (NULL: no cap). Raises BKVAL, BKNTF, BKIST.';


--
-- Name: create_webhook(uuid, text, text[], uuid); Type: FUNCTION; Schema: api; Owner: booking_owner
--

CREATE FUNCTION api.create_webhook(p_user_id uuid, p_url text, p_events text[], p_event_id uuid DEFAULT NULL::uuid) RETURNS json
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $_$
DECLARE
  v_allowed CONSTANT text[] := ARRAY['order.paid', 'order.refunded', 'ticket.checked_in'];
  v_unknown text;
  v_webhook webhooks;
BEGIN
  IF p_url IS NULL OR char_length(p_url) > 2048 THEN
    RAISE EXCEPTION USING ERRCODE = 'BKVAL', MESSAGE = 'url is required and at most 2048 characters';
  END IF;
  IF p_url !~* '^https?://[^/?#@[:space:]]+([/?#][^[:space:][:cntrl:]]*)?$' THEN
    RAISE EXCEPTION USING ERRCODE = 'BKVAL',
      MESSAGE = 'url must be an http:// or https:// URL with a host (no spaces, no user:password@)';
  END IF;
  IF p_events IS NULL OR cardinality(p_events) = 0 THEN
    RAISE EXCEPTION USING ERRCODE = 'BKVAL',
      MESSAGE = 'events must name at least one of ' || array_to_string(v_allowed, ', ');
  END IF;
  SELECT string_agg(coalesce(x, 'null'), ', ') INTO v_unknown
    FROM unnest(p_events) x WHERE x IS NULL OR x <> ALL (v_allowed);
  IF v_unknown IS NOT NULL THEN
    RAISE EXCEPTION USING ERRCODE = 'BKVAL',
      MESSAGE = format('unknown event type(s) %s; allowed: %s', v_unknown, array_to_string(v_allowed, ', '));
  END IF;
  IF p_event_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM events WHERE id = p_event_id) THEN
    RAISE EXCEPTION USING ERRCODE = 'BKNTF', MESSAGE = 'event not found';
  END IF;
  IF NOT EXISTS (SELECT 1 FROM users WHERE id = p_user_id) THEN
    RAISE EXCEPTION USING ERRCODE = 'BKNTF', MESSAGE = 'user not found';
  END IF;

  INSERT INTO webhooks (created_by, url, events, event_id, secret)
  VALUES (p_user_id, p_url,
          ARRAY(SELECT x FROM unnest(v_allowed) x WHERE x = ANY (p_events)),  -- canonical order, no repeats
          p_event_id, 'whsec_' || encode(gen_random_bytes(24), 'hex'))
  RETURNING * INTO v_webhook;
  RETURN json_build_object('id', v_webhook.id, 'url', v_webhook.url, 'events', v_webhook.events,
                           'event_id', v_webhook.event_id, 'secret', v_webhook.secret,
                           'active', v_webhook.active, 'created_at', v_webhook.created_at);
END;
$_$;


ALTER FUNCTION api.create_webhook(p_user_id uuid, p_url text, p_events text[], p_event_id uuid) OWNER TO booking_owner;

--
-- Name: FUNCTION create_webhook(p_user_id uuid, p_url text, p_events text[], p_event_id uuid); Type: COMMENT; Schema: api; Owner: booking_owner
--

COMMENT ON FUNCTION api.create_webhook(p_user_id uuid, p_url text, p_events text[], p_event_id uuid) IS 'An admin subscribes p_url (http or https, at most 2048 characters) to p_events (order.paid, order.refunded, ticket.checked_in), of every event or only p_event_id. Returns {id, url, events, event_id, secret (whsec_ + 48 hex: the HMAC-SHA256 key of X-Booking-Signature, shown only here), active, created_at}. Whether the address is allowed is the gateway''s and the worker''s check (gateway/netguard.py). Raises BKVAL (url, events), BKNTF (unknown event or user).';


--
-- Name: delete_webhook(uuid, uuid); Type: FUNCTION; Schema: api; Owner: booking_owner
--

CREATE FUNCTION api.delete_webhook(p_user_id uuid, p_webhook_id uuid) RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    SET lock_timeout TO '2s'
    AS $$
BEGIN
  UPDATE webhooks
     SET active = false, disabled_at = coalesce(disabled_at, now()),
         disabled_reason = coalesce(disabled_reason, 'deleted by its owner')
   WHERE id = p_webhook_id AND created_by = p_user_id;
  IF NOT FOUND THEN
    RAISE EXCEPTION USING ERRCODE = 'BKNTF', MESSAGE = 'webhook not found';
  END IF;
  UPDATE webhook_deliveries SET status = 'CANCELLED' WHERE webhook_id = p_webhook_id AND status = 'PENDING';
END;
$$;


ALTER FUNCTION api.delete_webhook(p_user_id uuid, p_webhook_id uuid) OWNER TO booking_owner;

--
-- Name: FUNCTION delete_webhook(p_user_id uuid, p_webhook_id uuid); Type: COMMENT; Schema: api; Owner: booking_owner
--

COMMENT ON FUNCTION api.delete_webhook(p_user_id uuid, p_webhook_id uuid) IS 'Deactivates one of the caller''s webhooks (its history stays listable) and cancels its PENDING deliveries (their jobs find them CANCELLED and send nothing). Deleting again is a no-op. Locks the webhook''s row, then its deliveries''. Raises BKNTF (unknown or not the caller''s).';


--
-- Name: end_session(uuid, uuid); Type: FUNCTION; Schema: api; Owner: booking_owner
--

CREATE FUNCTION api.end_session(p_user_id uuid, p_session_id uuid) RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
BEGIN
  IF p_session_id IS NULL THEN
    RAISE EXCEPTION USING ERRCODE = 'BKVAL', MESSAGE = 'p_session_id is required';
  END IF;
  -- The gateway passes the session of a token it verified; a row gone already (purged after
  -- its end) still goes on the deny-list, so the token stops working anyway.
  IF EXISTS (SELECT 1 FROM sessions s WHERE s.id = p_session_id AND s.user_id IS DISTINCT FROM p_user_id) THEN
    RAISE EXCEPTION USING ERRCODE = 'BKNTF', MESSAGE = 'session not found';
  END IF;
  PERFORM internal.revoke_sessions(ARRAY[p_session_id], 'logout', true);
END;
$$;


ALTER FUNCTION api.end_session(p_user_id uuid, p_session_id uuid) OWNER TO booking_owner;

--
-- Name: FUNCTION end_session(p_user_id uuid, p_session_id uuid); Type: COMMENT; Schema: api; Owner: booking_owner
--

COMMENT ON FUNCTION api.end_session(p_user_id uuid, p_session_id uuid) IS 'Logout: revokes the caller''s session (its refresh tokens and, via the deny-list and NOTIFY booking_revocations, its access tokens on every gateway). Locks the session row. Raises BKNTF (another user''s session), BKVAL.';


--
-- Name: expire_pending_orders(integer); Type: FUNCTION; Schema: api; Owner: booking_owner
--

CREATE FUNCTION api.expire_pending_orders(p_limit integer DEFAULT 5000) RETURNS integer
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
DECLARE
  v_candidates uuid[];
  v_types uuid[];
  v_expired uuid[];
BEGIN
  -- Set-based and bounded, so a hot ticket type is held for a few statements, not for a loop
  -- over its orders (4000 overdue orders one by one held it ~1.8 s, near reserves' 2 s
  -- lock_timeout). 1. The earliest-due overdue orders, at most p_limit, read without a lock.
  SELECT array_agg(x.id) INTO v_candidates
    FROM (SELECT o.id FROM orders o
           WHERE o.status = 'PENDING' AND o.payment_deadline <= now()
           ORDER BY o.payment_deadline, o.id
           LIMIT greatest(coalesce(p_limit, 5000), 1)) x;
  IF v_candidates IS NULL THEN
    RETURN 0;
  END IF;
  -- 2. Their ticket types in id order, skipping any someone holds right now (a callback paying
  -- an order of it, a reserve): the next run picks those up.
  SELECT array_agg(t.id) INTO v_types
    FROM (SELECT tt.id FROM ticket_types tt
           WHERE tt.id IN (SELECT i.ticket_type_id FROM order_items i WHERE i.order_id = ANY (v_candidates))
           ORDER BY tt.id
             FOR NO KEY UPDATE SKIP LOCKED) t;
  IF v_types IS NULL THEN
    RETURN 0;
  END IF;
  -- 3. The orders ALL of whose types are held (an order over several types too), SKIP LOCKED,
  -- still PENDING and overdue under the lock: TIMEOUT. Nothing here waits, so the expiry can
  -- neither deadlock with a callback nor hold up the onsale.
  WITH due AS (
    SELECT o.id FROM orders o
     WHERE o.id = ANY (v_candidates) AND o.status = 'PENDING' AND o.payment_deadline <= now()
       AND NOT EXISTS (SELECT 1 FROM order_items i
                        WHERE i.order_id = o.id AND i.ticket_type_id <> ALL (v_types))
     ORDER BY o.id
       FOR NO KEY UPDATE SKIP LOCKED
  ), expired AS (
    UPDATE orders o SET status = 'TIMEOUT', updated_at = now() FROM due WHERE o.id = due.id RETURNING o.id
  )
  SELECT array_agg(expired.id) INTO v_expired FROM expired;
  IF v_expired IS NULL THEN
    RETURN 0;
  END IF;
  -- 4. Their payments, and the seats back: one update per table.
  UPDATE payments SET status = 'FAILED' WHERE order_id = ANY (v_expired) AND status = 'PENDING';
  UPDATE ticket_types tt
     SET available_quantity = tt.available_quantity + x.seats, version = tt.version + 1
    FROM (SELECT i.ticket_type_id, sum(i.quantity)::integer AS seats
            FROM order_items i WHERE i.order_id = ANY (v_expired) GROUP BY i.ticket_type_id) x
   WHERE tt.id = x.ticket_type_id;
  RETURN cardinality(v_expired);
END;
$$;


ALTER FUNCTION api.expire_pending_orders(p_limit integer) OWNER TO booking_owner;

--
-- Name: FUNCTION expire_pending_orders(p_limit integer); Type: COMMENT; Schema: api; Owner: booking_owner
--

COMMENT ON FUNCTION api.expire_pending_orders(p_limit integer) IS '(DBA-only) PENDING orders past their payment deadline -> TIMEOUT, payment FAILED, seats back to stock; at most p_limit (default 5000) per call, earliest deadline first; returns how many. pg_cron runs it every minute (a DBA may call it again at once: each call is one bounded transaction). Set-based: a few statements whatever the count, so a ticket type is held briefly. Locks ticket_types rows in id order and order rows with SKIP LOCKED: never waits (a payment being applied right now wins; a late success after TIMEOUT re-takes the seats or is refunded); an order over several types expires once all of them could be locked.';


--
-- Name: expire_reservations(); Type: FUNCTION; Schema: api; Owner: booking_owner
--

CREATE FUNCTION api.expire_reservations() RETURNS integer
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
DECLARE
  v_ticket_type_id uuid;
  v_released integer := 0;
BEGIN
  -- Ticket types in id order (the project's lock order), skipping any that live traffic
  -- holds right now: such a type is retried on the next run, and its own reserves reclaim
  -- dead holds when short. Nothing here ever waits, so it can neither deadlock nor block.
  FOR v_ticket_type_id IN
    SELECT tt.id
      FROM ticket_types tt
     WHERE tt.id IN (SELECT r.ticket_type_id FROM order_reservations r
                      WHERE r.status = 'ACTIVE' AND r.expires_at <= now())
     ORDER BY tt.id
     LIMIT 1000
       FOR NO KEY UPDATE SKIP LOCKED
  LOOP
    v_released := v_released + internal.reclaim_expired_holds(v_ticket_type_id);
  END LOOP;
  RETURN v_released;
END;
$$;


ALTER FUNCTION api.expire_reservations() OWNER TO booking_owner;

--
-- Name: FUNCTION expire_reservations(); Type: COMMENT; Schema: api; Owner: booking_owner
--

COMMENT ON FUNCTION api.expire_reservations() IS '(DBA-only) Releases expired ACTIVE holds back to stock (status EXPIRED) and returns how many holds it released. pg_cron runs it every minute. Locks ticket_types rows in id order and reservation rows with SKIP LOCKED: never waits, never deadlocks with live traffic; what it skips it releases on a later run. At most 1000 ticket types per call.';


--
-- Name: failed_jobs(integer); Type: FUNCTION; Schema: api; Owner: booking_owner
--

CREATE FUNCTION api.failed_jobs(p_limit integer DEFAULT 100) RETURNS TABLE(id bigint, queue_name text, task_name text, args jsonb, attempts integer, failed_at timestamp with time zone)
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
BEGIN
  IF p_limit IS NULL OR p_limit < 1 THEN
    RAISE EXCEPTION USING ERRCODE = 'BKVAL', MESSAGE = 'limit must be at least 1';
  END IF;
  RETURN QUERY
    SELECT j.id, j.queue_name::text, j.task_name::text, j.args, j.attempts,
           (SELECT max(e.at) FROM procrastinate_events e WHERE e.job_id = j.id)
      FROM procrastinate_jobs j
     WHERE j.status = 'failed'
     ORDER BY j.id DESC
     LIMIT p_limit;
END;
$$;


ALTER FUNCTION api.failed_jobs(p_limit integer) OWNER TO booking_owner;

--
-- Name: FUNCTION failed_jobs(p_limit integer); Type: COMMENT; Schema: api; Owner: booking_owner
--

COMMENT ON FUNCTION api.failed_jobs(p_limit integer) IS '(DBA-only) Jobs that failed for good (retries exhausted, or an error not retried), newest first, at most p_limit: id, queue, task, args, attempts, when it failed (its last event). Retry one with api.retry_job(id), all with api.retry_failed_jobs(). Locks nothing.';


--
-- Name: get_event(text); Type: FUNCTION; Schema: api; Owner: booking_owner
--

CREATE FUNCTION api.get_event(p_id_or_slug text) RETURNS json
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $_$
DECLARE
  v_event events;
BEGIN
  IF p_id_or_slug ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' THEN
    SELECT * INTO v_event FROM events WHERE id = p_id_or_slug::uuid;
  ELSE
    SELECT * INTO v_event FROM events WHERE slug = p_id_or_slug;
  END IF;
  IF NOT FOUND OR v_event.status = 'DRAFT' THEN
    RAISE EXCEPTION USING ERRCODE = 'BKNTF', MESSAGE = 'event not found';
  END IF;
  RETURN internal.event_json(v_event, true);
END;
$_$;


ALTER FUNCTION api.get_event(p_id_or_slug text) OWNER TO booking_owner;

--
-- Name: FUNCTION get_event(p_id_or_slug text); Type: COMMENT; Schema: api; Owner: booking_owner
--

COMMENT ON FUNCTION api.get_event(p_id_or_slug text) IS 'One event by id or slug with its ticket types and LIVE available_quantity / on_sale. Drafts are not found. Locks nothing. Raises BKNTF.';


--
-- Name: get_order(uuid, uuid); Type: FUNCTION; Schema: api; Owner: booking_owner
--

CREATE FUNCTION api.get_order(p_user_id uuid, p_order_id uuid) RETURNS json
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
DECLARE
  v_order orders;
BEGIN
  SELECT * INTO v_order FROM orders WHERE id = p_order_id;
  IF NOT FOUND OR v_order.user_id IS DISTINCT FROM p_user_id THEN
    RAISE EXCEPTION USING ERRCODE = 'BKNTF', MESSAGE = 'order not found';
  END IF;
  RETURN internal.order_json(v_order);
END;
$$;


ALTER FUNCTION api.get_order(p_user_id uuid, p_order_id uuid) OWNER TO booking_owner;

--
-- Name: FUNCTION get_order(p_user_id uuid, p_order_id uuid); Type: COMMENT; Schema: api; Owner: booking_owner
--

COMMENT ON FUNCTION api.get_order(p_user_id uuid, p_order_id uuid) IS 'The owner''s order, whatever its status (items, payment with expires_at while PENDING, tickets). Locks nothing. Raises BKNTF (unknown or not yours).';


--
-- Name: get_user(uuid); Type: FUNCTION; Schema: api; Owner: booking_owner
--

CREATE FUNCTION api.get_user(p_user_id uuid) RETURNS json
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
DECLARE
  v_user users;
BEGIN
  SELECT * INTO v_user FROM users WHERE id = p_user_id;
  IF NOT FOUND THEN
    RAISE EXCEPTION USING ERRCODE = 'BKNTF', MESSAGE = 'user not found';
  END IF;
  RETURN internal.user_json(v_user);
END;
$$;


ALTER FUNCTION api.get_user(p_user_id uuid) OWNER TO booking_owner;

--
-- Name: FUNCTION get_user(p_user_id uuid); Type: COMMENT; Schema: api; Owner: booking_owner
--

COMMENT ON FUNCTION api.get_user(p_user_id uuid) IS 'A user as JSON {id, email, full_name, role, created_at}. Locks nothing. Raises BKNTF.';


--
-- Name: get_user_credentials(text, boolean); Type: FUNCTION; Schema: api; Owner: booking_owner
--

CREATE FUNCTION api.get_user_credentials(p_email text, p_count_attempt boolean DEFAULT false) RETURNS json
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
DECLARE
  v_email text := lower(btrim(p_email));
  v_wait integer := 0;
BEGIN
  -- The failed-login throttle (sql/functions/70_rate_limits.sql), in this call so login needs
  -- no extra round trip: the attempt is counted before the password is checked, the same for
  -- known and unknown addresses.
  IF p_count_attempt THEN
    v_wait := internal.login_attempt(v_email);
  END IF;
  RETURN (SELECT json_build_object('id', u.id, 'role', u.role, 'password_hash', u.password_hash,
                                   'retry_after', nullif(v_wait, 0))
            FROM (SELECT v_email AS email) e
            LEFT JOIN users u ON u.email = e.email);
END;
$$;


ALTER FUNCTION api.get_user_credentials(p_email text, p_count_attempt boolean) OWNER TO booking_owner;

--
-- Name: FUNCTION get_user_credentials(p_email text, p_count_attempt boolean); Type: COMMENT; Schema: api; Owner: booking_owner
--

COMMENT ON FUNCTION api.get_user_credentials(p_email text, p_count_attempt boolean) IS 'Login lookup: {id, role, password_hash, retry_after} for an e-mail; id, role and password_hash are NULL when there is no such user (the gateway then verifies against a dummy hash so timing does not tell). With p_count_attempt (the gateway, rate limits on) it first counts one attempt against the failed-login throttle: retry_after is then the seconds to wait when the address is throttled (nothing counted), else NULL; a successful login gives the attempt back (api.record_login_success). Locks only that counter row.';


--
-- Name: job_queue(); Type: FUNCTION; Schema: api; Owner: booking_owner
--

CREATE FUNCTION api.job_queue() RETURNS TABLE(queue_name text, task_name text, status text, jobs bigint, oldest_due_wait interval)
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
  SELECT j.queue_name::text, j.task_name::text, j.status::text, count(*),
         CASE WHEN j.status = 'todo' THEN now() - min(
           CASE WHEN j.scheduled_at IS NULL OR j.scheduled_at <= now()
                THEN coalesce(j.scheduled_at, (SELECT min(e.at) FROM procrastinate_events e
                                                WHERE e.job_id = j.id AND e.type = 'deferred')) END) END
    FROM procrastinate_jobs j
   GROUP BY j.queue_name, j.task_name, j.status
   ORDER BY j.queue_name, j.task_name, j.status
$$;


ALTER FUNCTION api.job_queue() OWNER TO booking_owner;

--
-- Name: FUNCTION job_queue(); Type: COMMENT; Schema: api; Owner: booking_owner
--

COMMENT ON FUNCTION api.job_queue() IS '(DBA-only) The job queue at a glance: jobs per queue, task and status (todo, doing, succeeded, failed, cancelled, aborted) and, for todo, how long the oldest job that is due (not scheduled for later) has waited. Queues: mail (send_confirmation), webhooks (deliver_webhook), housekeeping. Locks nothing; reads every job (procrastinate_jobs is purged by housekeeping).';


--
-- Name: join_waiting_room(uuid, uuid); Type: FUNCTION; Schema: api; Owner: booking_owner
--

CREATE FUNCTION api.join_waiting_room(p_event_id uuid, p_user_id uuid) RETURNS json
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    SET lock_timeout TO '2s'
    AS $$
DECLARE
  r record;
BEGIN
  -- The rule lives once: a batch of one.
  SELECT * INTO r FROM api.join_waiting_room_batch(p_event_id, ARRAY[p_user_id]);
  IF r.sqlstate IS NOT NULL THEN
    RAISE EXCEPTION USING ERRCODE = r.sqlstate, MESSAGE = r.message;
  END IF;
  RETURN r.place;
END;
$$;


ALTER FUNCTION api.join_waiting_room(p_event_id uuid, p_user_id uuid) OWNER TO booking_owner;

--
-- Name: FUNCTION join_waiting_room(p_event_id uuid, p_user_id uuid); Type: COMMENT; Schema: api; Owner: booking_owner
--

COMMENT ON FUNCTION api.join_waiting_room(p_event_id uuid, p_user_id uuid) IS 'Joins the event''s waiting room (one place per user: joining again returns the same place) and returns the place as api.waiting_room_status does. Before the sale opens, the place is decided by the shuffle at the opening; after, first come, first served. A batch of one: api.join_waiting_room_batch. Locks the waiting_rooms row. Raises BKNTF (no waiting room, unknown user), BKSNO (cancelled or over).';


--
-- Name: join_waiting_room_batch(uuid, uuid[]); Type: FUNCTION; Schema: api; Owner: booking_owner
--

CREATE FUNCTION api.join_waiting_room_batch(p_event_id uuid, p_user_ids uuid[]) RETURNS TABLE(place json, sqlstate text, message text)
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    SET lock_timeout TO '2s'
    AS $$
DECLARE
  e events := internal.waiting_room_event(p_event_id);
  w waiting_rooms;
  v_count integer := coalesce(cardinality(p_user_ids), 0);
  v_known boolean[];
  v_new integer;
BEGIN
  -- The gateway coalesces concurrent joins of one event into one call (gateway/onsale/join.py):
  -- one lock of the room row, one insert, one update of joined, one commit for all of them.
  IF v_count > 1000 THEN
    RAISE EXCEPTION USING ERRCODE = 'BKVAL', MESSAGE = 'at most 1000 users per call';
  END IF;
  IF e.status <> 'PUBLISHED' OR e.end_time <= now() THEN
    RAISE EXCEPTION USING ERRCODE = 'BKSNO', MESSAGE = format('the event is not on sale (it is %s)',
      CASE WHEN e.status = 'PUBLISHED' THEN 'over' ELSE e.status END);
  END IF;
  IF v_count = 0 THEN
    RETURN;
  END IF;
  SELECT array_agg(x.id IS NOT NULL ORDER BY u.ord) INTO v_known
    FROM unnest(p_user_ids) WITH ORDINALITY AS u(user_id, ord) LEFT JOIN users x ON x.id = u.user_id;
  -- Everyone known joined already (joining again: the same place, no write): no lock.
  IF EXISTS (SELECT 1 FROM unnest(p_user_ids) WITH ORDINALITY AS u(user_id, ord)
              WHERE v_known[u.ord]
                AND NOT EXISTS (SELECT 1 FROM waiting_room_entries x
                                 WHERE x.event_id = p_event_id AND x.user_id = u.user_id)) THEN
    INSERT INTO waiting_rooms (event_id) VALUES (p_event_id) ON CONFLICT DO NOTHING;
    PERFORM internal.waiting_room_open(p_event_id);  -- after the opening, shuffle before joining
    SELECT * INTO w FROM waiting_rooms WHERE event_id = p_event_id FOR UPDATE;
    -- A fresh statement after the lock: concurrent joins of these users have committed by now.
    -- New places in the order of the batch (a user named twice gets the first one's), seq after
    -- the last; after the opening, position = seq.
    INSERT INTO waiting_room_entries (event_id, user_id, seq, position)
    SELECT p_event_id, n.user_id, w.joined + n.rank, CASE WHEN w.shuffle_seed IS NOT NULL THEN w.joined + n.rank END
      FROM (SELECT f.user_id, row_number() OVER (ORDER BY f.ord)::integer AS rank
              FROM (SELECT u.user_id, min(u.ord) AS ord
                      FROM unnest(p_user_ids) WITH ORDINALITY AS u(user_id, ord)
                     WHERE v_known[u.ord]
                       AND NOT EXISTS (SELECT 1 FROM waiting_room_entries x
                                        WHERE x.event_id = p_event_id AND x.user_id = u.user_id)
                     GROUP BY u.user_id) f) n
     ORDER BY n.rank;
    GET DIAGNOSTICS v_new = ROW_COUNT;
    IF v_new > 0 THEN
      -- Idle capacity is banked for one person only: when the serving position has run more than
      -- one place past everyone who joined, it restarts at the batch's first new joiner (admitted
      -- at once) and the rate counts from now; the others queue behind. Else an hour of an empty
      -- room would let the next thousands in at once. Updates of joined alone notify nobody (the
      -- trigger waiting_room_changed watches the rule's columns only).
      IF w.shuffle_seed IS NOT NULL AND w.paused_at IS NULL
         AND internal.waiting_room_serving(w, e.admission_rate_per_minute, e.queue_enabled) > w.joined + 1 THEN
        UPDATE waiting_rooms SET joined = w.joined + v_new, base = w.joined + 1, base_at = now(), updated_at = now()
         WHERE event_id = p_event_id RETURNING * INTO w;
      ELSE
        UPDATE waiting_rooms SET joined = w.joined + v_new, updated_at = now()
         WHERE event_id = p_event_id RETURNING * INTO w;
      END IF;
    END IF;
  ELSE  -- everyone already in: do not wait for a shuffle another transaction is running
    w := internal.waiting_room_open(p_event_id, p_wait => false);
  END IF;
  -- One answer per element, in order: the place, or this element's own error.
  RETURN QUERY
    SELECT CASE WHEN v_known[u.ord] THEN internal.waiting_room_answer(e, w, u.user_id) END,
           CASE WHEN NOT v_known[u.ord] THEN 'BKNTF' END,
           CASE WHEN NOT v_known[u.ord] THEN 'user not found' END
      FROM unnest(p_user_ids) WITH ORDINALITY AS u(user_id, ord)
     ORDER BY u.ord;
END;
$$;


ALTER FUNCTION api.join_waiting_room_batch(p_event_id uuid, p_user_ids uuid[]) OWNER TO booking_owner;

--
-- Name: FUNCTION join_waiting_room_batch(p_event_id uuid, p_user_ids uuid[]); Type: COMMENT; Schema: api; Owner: booking_owner
--

COMMENT ON FUNCTION api.join_waiting_room_batch(p_event_id uuid, p_user_ids uuid[]) IS 'Joins many users to one event''s waiting room in one transaction (the gateway coalesces concurrent joins): one row per element, in order, (place, NULL, NULL) as api.join_waiting_room answers, or (NULL, sqlstate, message) for that element alone (BKNTF: unknown user). New places take consecutive seq in the order of the array; a user named twice, or already in, gets the existing place. Locks the waiting_rooms row once. Raises for all: BKNTF (no waiting room), BKSNO (cancelled or over), BKVAL (more than 1000 users).';


--
-- Name: list_published_events(text, integer, timestamp with time zone, uuid); Type: FUNCTION; Schema: api; Owner: booking_owner
--

CREATE FUNCTION api.list_published_events(p_query text DEFAULT NULL::text, p_limit integer DEFAULT NULL::integer, p_after_start_time timestamp with time zone DEFAULT NULL::timestamp with time zone, p_after_id uuid DEFAULT NULL::uuid) RETURNS json
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
DECLARE
  v_query text := nullif(btrim(p_query), '');
  v_like text;
BEGIN
  IF length(v_query) > 200 THEN
    RAISE EXCEPTION USING ERRCODE = 'BKVAL', MESSAGE = 'query must be at most 200 characters';
  END IF;
  PERFORM internal.check_page(p_limit, p_after_start_time IS NOT NULL, p_after_id IS NOT NULL, 'p_after_start_time');
  v_like := '%' || replace(replace(replace(v_query, '\', '\\'), '%', '\%'), '_', '\_') || '%';
  RETURN coalesce((
    SELECT json_agg(internal.event_json(page, false) ORDER BY page.start_time, page.id)
      FROM (SELECT e.*
              FROM events e
             WHERE e.status = 'PUBLISHED'
               AND e.end_time > now()
               AND (p_after_id IS NULL OR (e.start_time, e.id) > (p_after_start_time, p_after_id))
               AND (v_query IS NULL
                    OR to_tsvector('english', e.name) @@ websearch_to_tsquery('english', v_query)
                    OR e.name ILIKE v_like)
             ORDER BY e.start_time, e.id
             LIMIT p_limit) page), '[]'::json);
END;
$$;


ALTER FUNCTION api.list_published_events(p_query text, p_limit integer, p_after_start_time timestamp with time zone, p_after_id uuid) OWNER TO booking_owner;

--
-- Name: FUNCTION list_published_events(p_query text, p_limit integer, p_after_start_time timestamp with time zone, p_after_id uuid); Type: COMMENT; Schema: api; Owner: booking_owner
--

COMMENT ON FUNCTION api.list_published_events(p_query text, p_limit integer, p_after_start_time timestamp with time zone, p_after_id uuid) IS 'Published events that have not ended, by (start_time, id), each with its ticket types (no live stock: this list is cached by gateways). p_query searches names: full-text (seed index) or a partial word (trigram index). Pages: at most p_limit events (NULL: all), after the event (p_after_start_time, p_after_id) when given (keyset: stable while events are added). Locks nothing. Raises BKVAL (query over 200 characters, limit below 1).';


--
-- Name: list_webhooks(uuid); Type: FUNCTION; Schema: api; Owner: booking_owner
--

CREATE FUNCTION api.list_webhooks(p_user_id uuid) RETURNS json
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
  SELECT coalesce(json_agg(json_build_object(
           'id', w.id, 'url', w.url, 'events', w.events, 'event_id', w.event_id, 'active', w.active,
           'disabled_at', w.disabled_at, 'disabled_reason', w.disabled_reason, 'created_at', w.created_at)
           ORDER BY w.created_at DESC, w.id DESC), '[]'::json)
    FROM webhooks w
   WHERE w.created_by = p_user_id
$$;


ALTER FUNCTION api.list_webhooks(p_user_id uuid) OWNER TO booking_owner;

--
-- Name: FUNCTION list_webhooks(p_user_id uuid); Type: COMMENT; Schema: api; Owner: booking_owner
--

COMMENT ON FUNCTION api.list_webhooks(p_user_id uuid) IS 'The caller''s webhooks, newest first, deleted and disabled ones included (active false, disabled_at, disabled_reason); never the secrets. Locks nothing.';


--
-- Name: monitor_holds(); Type: FUNCTION; Schema: api; Owner: booking_owner
--

CREATE FUNCTION api.monitor_holds() RETURNS TABLE(active bigint, active_seats bigint, overdue bigint, oldest_overdue_seconds double precision)
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
  -- ACTIVE holds only (the partial index on expires_at WHERE ACTIVE): finished ones are history.
  SELECT count(*), coalesce(sum(r.quantity), 0),
         count(*) FILTER (WHERE r.expires_at < now()),
         coalesce(extract(epoch FROM now() - min(r.expires_at) FILTER (WHERE r.expires_at < now()))::float8, 0)
    FROM order_reservations r
   WHERE r.status = 'ACTIVE'
$$;


ALTER FUNCTION api.monitor_holds() OWNER TO booking_owner;

--
-- Name: FUNCTION monitor_holds(); Type: COMMENT; Schema: api; Owner: booking_owner
--

COMMENT ON FUNCTION api.monitor_holds() IS '(monitor) Holds now: ACTIVE holds and their seats; of them, those past expires_at that the expiry job (pg_cron, every minute) has not swept yet, and how long the oldest has been past its expiry (seconds, 0 when none). Reads ACTIVE holds only; locks nothing.';


--
-- Name: monitor_invariants(); Type: FUNCTION; Schema: api; Owner: booking_owner
--

CREATE FUNCTION api.monitor_invariants() RETURNS TABLE(check_name text, violations bigint)
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
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


ALTER FUNCTION api.monitor_invariants() OWNER TO booking_owner;

--
-- Name: FUNCTION monitor_invariants(); Type: COMMENT; Schema: api; Owner: booking_owner
--

COMMENT ON FUNCTION api.monitor_invariants() IS '(monitor) api.check_invariants counted per check (0 when clean). Costly: it reads every ticket type, order, order item and ticket (seconds at millions of orders), so the exporter runs it at most once per 5 minutes (cache_seconds in ops/postgres-exporter/queries.yaml). Locks nothing.';


--
-- Name: monitor_jobs(); Type: FUNCTION; Schema: api; Owner: booking_owner
--

CREATE FUNCTION api.monitor_jobs() RETURNS TABLE(queue text, task text, todo bigint, doing bigint, failed bigint, retrying bigint, oldest_todo_seconds double precision)
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
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


ALTER FUNCTION api.monitor_jobs() OWNER TO booking_owner;

--
-- Name: FUNCTION monitor_jobs(); Type: COMMENT; Schema: api; Owner: booking_owner
--

COMMENT ON FUNCTION api.monitor_jobs() IS '(monitor) The job queue per queue and task: jobs waiting (todo), running (doing), failed for good (waiting for api.retry_job), waiting again after a failed attempt (retrying), and how long the oldest due job has waited (seconds, 0 when none). Reads every job row; locks nothing.';


--
-- Name: monitor_payment_events(); Type: FUNCTION; Schema: api; Owner: booking_owner
--

CREATE FUNCTION api.monitor_payment_events() RETURNS TABLE(outcome text, events bigint)
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
  -- The last 15 minutes of the inbox (index on received_at); every outcome, 0 when none.
  SELECT n.outcome, count(e.id)
    FROM unnest(ARRAY['paid', 'late_paid', 'refund_pending', 'cancelled', 'ignored', 'wrong_amount',
                      'unknown_reference']) AS n(outcome)
    LEFT JOIN payment_events e ON e.outcome = n.outcome AND e.received_at > now() - interval '15 minutes'
   GROUP BY n.outcome
   ORDER BY n.outcome
$$;


ALTER FUNCTION api.monitor_payment_events() OWNER TO booking_owner;

--
-- Name: FUNCTION monitor_payment_events(); Type: COMMENT; Schema: api; Owner: booking_owner
--

COMMENT ON FUNCTION api.monitor_payment_events() IS '(monitor) Provider callbacks applied in the last 15 minutes, per outcome (paid, late_paid, refund_pending, cancelled, ignored, wrong_amount, unknown_reference; 0 when none). Locks nothing.';


--
-- Name: monitor_payments(); Type: FUNCTION; Schema: api; Owner: booking_owner
--

CREATE FUNCTION api.monitor_payments() RETURNS TABLE(orders_pending bigint, oldest_pending_seconds double precision, pending_past_deadline bigint, payments_pending bigint, refunds_pending bigint, oldest_refund_seconds double precision)
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
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


ALTER FUNCTION api.monitor_payments() OWNER TO booking_owner;

--
-- Name: FUNCTION monitor_payments(); Type: COMMENT; Schema: api; Owner: booking_owner
--

COMMENT ON FUNCTION api.monitor_payments() IS '(monitor) Payments now: orders PENDING (checked out, not paid yet), the age of the oldest (seconds since checkout), those past their payment deadline (the expiry job times them out every minute), payments PENDING, refunds PENDING and the age of the oldest (seconds since it was asked for). Locks nothing.';


--
-- Name: monitor_waiting_rooms(); Type: FUNCTION; Schema: api; Owner: booking_owner
--

CREATE FUNCTION api.monitor_waiting_rooms() RETURNS TABLE(event_id uuid, event text, joined bigint, serving bigint, waiting bigint, admitted bigint, admission_rate_per_minute bigint, paused bigint)
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
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


ALTER FUNCTION api.monitor_waiting_rooms() OWNER TO booking_owner;

--
-- Name: FUNCTION monitor_waiting_rooms(); Type: COMMENT; Schema: api; Owner: booking_owner
--

COMMENT ON FUNCTION api.monitor_waiting_rooms() IS '(monitor) Waiting rooms of published, not yet ended events with the queue on: people joined, the serving position (positions up to it are admitted), waiting (joined past it), admitted (up to it), the admission rate per minute (0 before the opening or while paused) and paused (1/0). Reads the rooms'' rows only; locks nothing.';


--
-- Name: my_bookings(uuid, integer, timestamp with time zone, uuid); Type: FUNCTION; Schema: api; Owner: booking_owner
--

CREATE FUNCTION api.my_bookings(p_user_id uuid, p_limit integer DEFAULT NULL::integer, p_after_created_at timestamp with time zone DEFAULT NULL::timestamp with time zone, p_after_id uuid DEFAULT NULL::uuid) RETURNS json
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
BEGIN
  PERFORM internal.check_page(p_limit, p_after_created_at IS NOT NULL, p_after_id IS NOT NULL, 'p_after_created_at');
  RETURN coalesce((
    SELECT json_agg(internal.order_json(page) ORDER BY page.created_at DESC, page.id DESC)
      FROM (SELECT o.*
              FROM orders o
             WHERE o.user_id = p_user_id
               AND (p_after_id IS NULL OR (o.created_at, o.id) < (p_after_created_at, p_after_id))
             ORDER BY o.created_at DESC, o.id DESC
             LIMIT p_limit) page), '[]'::json);
END;
$$;


ALTER FUNCTION api.my_bookings(p_user_id uuid, p_limit integer, p_after_created_at timestamp with time zone, p_after_id uuid) OWNER TO booking_owner;

--
-- Name: FUNCTION my_bookings(p_user_id uuid, p_limit integer, p_after_created_at timestamp with time zone, p_after_id uuid); Type: COMMENT; Schema: api; Owner: booking_owner
--

COMMENT ON FUNCTION api.my_bookings(p_user_id uuid, p_limit integer, p_after_created_at timestamp with time zone, p_after_id uuid) IS 'The user''s orders, newest first by (created_at, id), each with items, payment and tickets. Pages: at most p_limit orders (NULL: all), after the order (p_after_created_at, p_after_id) when given (keyset: stable while orders are added). Locks nothing. Raises BKVAL (limit below 1).';


--
-- Name: open_waiting_rooms(); Type: FUNCTION; Schema: api; Owner: booking_owner
--

CREATE FUNCTION api.open_waiting_rooms() RETURNS integer
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
DECLARE
  v_room record;
  v_opened integer := 0;
BEGIN
  -- Every room whose sale has opened and that nobody shuffled yet (no one polled or joined since
  -- the opening, or every attempt from a gateway ran out of the gateway's statement_timeout: a
  -- shuffle costs ~15 us per entry, so a few hundred thousand fans take longer than 5 s).
  FOR v_room IN
    SELECT w.event_id FROM waiting_rooms w JOIN events e ON e.id = w.event_id
     WHERE w.shuffle_seed IS NULL AND e.queue_enabled AND e.status = 'PUBLISHED'
       AND internal.waiting_room_opens_at(w.event_id) <= now()
     ORDER BY w.event_id
  LOOP
    IF (internal.waiting_room_open(v_room.event_id)).shuffle_seed IS NOT NULL THEN
      v_opened := v_opened + 1;
    END IF;
  END LOOP;
  RETURN v_opened;
END;
$$;


ALTER FUNCTION api.open_waiting_rooms() OWNER TO booking_owner;

--
-- Name: FUNCTION open_waiting_rooms(); Type: COMMENT; Schema: api; Owner: booking_owner
--

COMMENT ON FUNCTION api.open_waiting_rooms() IS '(DBA-only) Opens every waiting room whose sale has opened and that is not shuffled yet (pg_cron runs it every minute), without the gateway''s statement_timeout (a big room''s shuffle can outlast it). Returns how many rooms it shuffled (rooms shuffled meanwhile by a poll are not counted).';


--
-- Name: pause_waiting_room(uuid); Type: FUNCTION; Schema: api; Owner: booking_owner
--

CREATE FUNCTION api.pause_waiting_room(p_event_id uuid) RETURNS json
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    SET lock_timeout TO '2s'
    AS $$
BEGIN
  PERFORM internal.waiting_room_row(p_event_id);
  UPDATE waiting_rooms w
     SET base = internal.waiting_room_serving(w, e.admission_rate_per_minute, e.queue_enabled),
         base_at = now(), paused_at = now(), updated_at = now()
    FROM events e
   WHERE w.event_id = p_event_id AND e.id = w.event_id AND w.paused_at IS NULL;
  RETURN (SELECT row_to_json(r) FROM api.waiting_room(p_event_id) r);
END;
$$;


ALTER FUNCTION api.pause_waiting_room(p_event_id uuid) OWNER TO booking_owner;

--
-- Name: FUNCTION pause_waiting_room(p_event_id uuid); Type: COMMENT; Schema: api; Owner: booking_owner
--

COMMENT ON FUNCTION api.pause_waiting_room(p_event_id uuid) IS '(DBA-only) Stops admitting (the serving position freezes; people admitted keep their tokens). Idempotent. Returns api.waiting_room''s row as JSON. Raises BKNTF.';


--
-- Name: payment_inbox(integer, text); Type: FUNCTION; Schema: api; Owner: booking_owner
--

CREATE FUNCTION api.payment_inbox(p_limit integer DEFAULT 100, p_outcome text DEFAULT NULL::text) RETURNS TABLE(id bigint, received_at timestamp with time zone, provider text, provider_txn_id text, transaction_id text, kind text, amount numeric, outcome text, order_id uuid, raw jsonb)
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
  SELECT e.id, e.received_at, e.provider, e.provider_txn_id, e.transaction_id, e.kind, e.amount,
         e.outcome, e.order_id, e.raw
    FROM payment_events e
   WHERE p_outcome IS NULL OR e.outcome = p_outcome
   ORDER BY e.id DESC
   LIMIT greatest(coalesce(p_limit, 100), 1)
$$;


ALTER FUNCTION api.payment_inbox(p_limit integer, p_outcome text) OWNER TO booking_owner;

--
-- Name: FUNCTION payment_inbox(p_limit integer, p_outcome text); Type: COMMENT; Schema: api; Owner: booking_owner
--

COMMENT ON FUNCTION api.payment_inbox(p_limit integer, p_outcome text) IS '(DBA-only) The latest provider events (newest first, at most p_limit, optionally of one outcome: e.g. wrong_amount, unknown_reference, refund_pending). Locks nothing.';


--
-- Name: payment_mode(); Type: FUNCTION; Schema: api; Owner: booking_owner
--

CREATE FUNCTION api.payment_mode() RETURNS json
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
  SELECT json_build_object('mode', s.mode, 'payment_window', s.payment_window::text, 'updated_at', s.updated_at)
    FROM payment_settings s
$$;


ALTER FUNCTION api.payment_mode() OWNER TO booking_owner;

--
-- Name: FUNCTION payment_mode(); Type: COMMENT; Schema: api; Owner: booking_owner
--

COMMENT ON FUNCTION api.payment_mode() IS '(DBA-only) The payment settings: {mode, payment_window, updated_at}. Locks nothing.';


--
-- Name: payments_to_reconcile(interval, integer); Type: FUNCTION; Schema: api; Owner: booking_owner
--

CREATE FUNCTION api.payments_to_reconcile(p_older_than interval DEFAULT '00:03:00'::interval, p_limit integer DEFAULT 100) RETURNS json
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    SET lock_timeout TO '2s'
    AS $$
DECLARE
  v_result json;
BEGIN
  -- Claimed (reconciled_at = now()) with SKIP LOCKED: a payment a callback, the expiry or an
  -- event cancellation holds right now is left for the next run, and this never waits (it
  -- locks payment rows only, after nothing: no cycle with the lock order).
  WITH due AS (
    -- PENDING after p_older_than: asked every run until paid, failed or expired.
    (SELECT p.id FROM orders o JOIN payments p ON p.order_id = o.id
      WHERE o.status = 'PENDING' AND o.created_at <= now() - p_older_than
      ORDER BY o.created_at LIMIT greatest(coalesce(p_limit, 100), 1))
    UNION ALL
    -- Timed out or cancelled within the hour with no word from the provider at all (a success
    -- whose callback was lost is a late payment): asked right after, then every 5 minutes until
    -- the provider gives a final answer (the worker records a failure too, which ends it: an
    -- inbox row) or the hour is over; a question that went unanswered is asked again.
    (SELECT p.id FROM orders o JOIN payments p ON p.order_id = o.id
      WHERE o.status IN ('TIMEOUT', 'CANCELLED') AND o.updated_at > now() - interval '1 hour'
        AND p.status = 'FAILED'
        AND (p.reconciled_at IS NULL OR p.reconciled_at < o.updated_at
             OR p.reconciled_at < now() - interval '5 minutes')
        AND NOT EXISTS (SELECT 1 FROM payment_events e WHERE e.order_id = o.id)
      ORDER BY o.updated_at LIMIT greatest(coalesce(p_limit, 100), 1))),
  claimed AS (
    UPDATE payments p SET reconciled_at = now()
     WHERE p.id IN (SELECT x.id FROM payments x WHERE x.id IN (SELECT due.id FROM due) FOR UPDATE SKIP LOCKED)
     RETURNING p.order_id, p.payment_method, p.transaction_id, p.amount)
  SELECT coalesce(json_agg(json_build_object(
           'order_id', o.id, 'status', o.status, 'provider', c.payment_method, 'transaction_id', c.transaction_id,
           'amount', c.amount::text, 'amount_vnd', round(c.amount)::bigint, 'created_at', o.created_at,
           'expires_at', o.payment_deadline) ORDER BY o.status = 'PENDING', o.created_at), '[]'::json)
    INTO v_result
    FROM claimed c JOIN orders o ON o.id = c.order_id;
  RETURN v_result;
END;
$$;


ALTER FUNCTION api.payments_to_reconcile(p_older_than interval, p_limit integer) OWNER TO booking_owner;

--
-- Name: FUNCTION payments_to_reconcile(p_older_than interval, p_limit integer); Type: COMMENT; Schema: api; Owner: booking_owner
--

COMMENT ON FUNCTION api.payments_to_reconcile(p_older_than interval, p_limit integer) IS '(worker) The payments the reconcile_payments job asks the provider about, claimed (reconciled_at set; rows locked right now are skipped): PENDING orders older than p_older_than (default 3 minutes), asked every run, and orders that went TIMEOUT or CANCELLED within the hour with no provider event, asked right after and then every 5 minutes (a final answer is recorded in the inbox, which ends it); at most p_limit of each, those first (money may be waiting with no order, and the worker''s run has a time budget), oldest first: [{order_id, status, provider, transaction_id, amount, amount_vnd, created_at, expires_at}]. Locks those payments rows (SKIP LOCKED).';


--
-- Name: pending_payments(); Type: FUNCTION; Schema: api; Owner: booking_owner
--

CREATE FUNCTION api.pending_payments() RETURNS TABLE(order_id uuid, user_email text, provider text, transaction_id text, amount numeric, created_at timestamp with time zone, payment_deadline timestamp with time zone, overdue boolean)
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
  SELECT o.id, u.email::text, p.payment_method::text, p.transaction_id::text, p.amount, o.created_at,
         o.payment_deadline, o.payment_deadline <= now()
    FROM orders o JOIN payments p ON p.order_id = o.id JOIN users u ON u.id = o.user_id
   WHERE o.status = 'PENDING'
   ORDER BY o.payment_deadline NULLS FIRST, o.id
$$;


ALTER FUNCTION api.pending_payments() OWNER TO booking_owner;

--
-- Name: FUNCTION pending_payments(); Type: COMMENT; Schema: api; Owner: booking_owner
--

COMMENT ON FUNCTION api.pending_payments() IS '(DBA-only) Orders waiting for a provider (PENDING), earliest deadline first; overdue ones are for the expiry job (api.expire_pending_orders). Locks nothing.';


--
-- Name: publish_event(uuid); Type: FUNCTION; Schema: api; Owner: booking_owner
--

CREATE FUNCTION api.publish_event(p_event_id uuid) RETURNS json
    LANGUAGE sql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    SET lock_timeout TO '2s'
    AS $$
  SELECT internal.set_event_status(p_event_id, 'PUBLISHED', ARRAY['DRAFT'])
$$;


ALTER FUNCTION api.publish_event(p_event_id uuid) OWNER TO booking_owner;

--
-- Name: FUNCTION publish_event(p_event_id uuid); Type: COMMENT; Schema: api; Owner: booking_owner
--

COMMENT ON FUNCTION api.publish_event(p_event_id uuid) IS 'DRAFT -> PUBLISHED (already published: returns it unchanged). Locks the event row. Raises BKNTF, BKIST.';


--
-- Name: purge_idempotency_keys(); Type: FUNCTION; Schema: api; Owner: booking_owner
--

CREATE FUNCTION api.purge_idempotency_keys() RETURNS integer
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
DECLARE
  v_deleted integer;
BEGIN
  DELETE FROM idempotency_keys WHERE created_at <= now() - internal.idempotency_ttl();
  GET DIAGNOSTICS v_deleted = ROW_COUNT;
  RETURN v_deleted;
END;
$$;


ALTER FUNCTION api.purge_idempotency_keys() OWNER TO booking_owner;

--
-- Name: FUNCTION purge_idempotency_keys(); Type: COMMENT; Schema: api; Owner: booking_owner
--

COMMENT ON FUNCTION api.purge_idempotency_keys() IS '(DBA-only) Deletes idempotency keys older than 24 hours (they already count as absent); returns how many. pg_cron runs it every 10 minutes.';


--
-- Name: purge_rate_limits(); Type: FUNCTION; Schema: api; Owner: booking_owner
--

CREATE FUNCTION api.purge_rate_limits() RETURNS integer
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
DECLARE
  v_count integer;
BEGIN
  -- A counter whose tat has passed is the same as no counter.
  DELETE FROM rate_limit_counters c WHERE c.tat < now();
  GET DIAGNOSTICS v_count = ROW_COUNT;
  RETURN v_count;
END;
$$;


ALTER FUNCTION api.purge_rate_limits() OWNER TO booking_owner;

--
-- Name: FUNCTION purge_rate_limits(); Type: COMMENT; Schema: api; Owner: booking_owner
--

COMMENT ON FUNCTION api.purge_rate_limits() IS '(DBA-only) pg_cron runs it every 10 minutes. Deletes the rate-limit counters that no longer limit anything (tat passed). Returns how many. Locks those rows.';


--
-- Name: purge_sessions(); Type: FUNCTION; Schema: api; Owner: booking_owner
--

CREATE FUNCTION api.purge_sessions() RETURNS json
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
DECLARE
  v_tokens integer;
  v_sessions integer;
  v_denied integer;
  v_roles integer;
BEGIN
  -- 24 h: longer than any access token lives (JWT_TTL_SECONDS <= 86400).
  -- Ended sessions are kept 24 h too, so a DBA can still revoke the access tokens refreshed
  -- just before their end.
  DELETE FROM sessions WHERE expires_at < now() - interval '24 hours' OR revoked_at < now() - interval '24 hours';
  GET DIAGNOSTICS v_sessions = ROW_COUNT;
  DELETE FROM refresh_tokens WHERE expires_at <= now();
  GET DIAGNOSTICS v_tokens = ROW_COUNT;
  DELETE FROM revoked_sessions WHERE revoked_at < now() - interval '24 hours';
  GET DIAGNOSTICS v_denied = ROW_COUNT;
  DELETE FROM role_changes WHERE changed_at < now() - interval '24 hours';
  GET DIAGNOSTICS v_roles = ROW_COUNT;
  RETURN json_build_object('sessions', v_sessions, 'refresh_tokens', v_tokens,
                           'revoked_sessions', v_denied, 'role_changes', v_roles);
END;
$$;


ALTER FUNCTION api.purge_sessions() OWNER TO booking_owner;

--
-- Name: FUNCTION purge_sessions(); Type: COMMENT; Schema: api; Owner: booking_owner
--

COMMENT ON FUNCTION api.purge_sessions() IS '(DBA-only) Deletes ended sessions (past their end or revoked, over 24 h ago, with their tokens), expired refresh tokens, and deny-list and role-change rows older than 24 h. pg_cron runs it every 10 minutes. Returns the counts deleted ({sessions, refresh_tokens (expired ones of live sessions), revoked_sessions, role_changes}).';


--
-- Name: rate_limit_state(text); Type: FUNCTION; Schema: api; Owner: booking_owner
--

CREATE FUNCTION api.rate_limit_state(p_key_prefix text) RETURNS TABLE(key text, tat timestamp with time zone, remaining integer, retry_after integer)
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
  SELECT c.key, c.tat,
         CASE WHEN r.class IS NULL THEN NULL
              ELSE greatest(0, floor(extract(epoch FROM (r.period - (greatest(c.tat, now()) - now())))
                                     / extract(epoch FROM r.period / r.max_requests)))::integer END,
         CASE WHEN r.class IS NULL THEN NULL
              ELSE greatest(0, ceil(extract(epoch FROM greatest(c.tat, now()) - now()
                                                  - (r.period - r.period / r.max_requests))))::integer END
    FROM rate_limit_counters c
    LEFT JOIN rate_limit_rules r ON c.key LIKE r.class || ':' || r.scope || ':%'
   WHERE starts_with(c.key, coalesce(p_key_prefix, ''))
   ORDER BY c.key
   LIMIT 1000
$$;


ALTER FUNCTION api.rate_limit_state(p_key_prefix text) OWNER TO booking_owner;

--
-- Name: FUNCTION rate_limit_state(p_key_prefix text); Type: COMMENT; Schema: api; Owner: booking_owner
--

COMMENT ON FUNCTION api.rate_limit_state(p_key_prefix text) IS '(DBA-only) Counters whose key starts with a prefix (at most 1000): SELECT * FROM api.rate_limit_state(''login_failures:email:a@b.co''). remaining = requests allowed right now; retry_after = seconds until the next is allowed (0: now). Keys: <class>:<scope>:<user uuid | address | e-mail>. Locks nothing.';


--
-- Name: rate_limits(); Type: FUNCTION; Schema: api; Owner: booking_owner
--

CREATE FUNCTION api.rate_limits() RETURNS TABLE(class text, scope text, max_requests integer, period interval, emission_interval interval)
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
  SELECT r.class, r.scope, r.max_requests, r.period, r.period / r.max_requests
    FROM rate_limit_rules r ORDER BY r.class, r.scope
$$;


ALTER FUNCTION api.rate_limits() OWNER TO booking_owner;

--
-- Name: FUNCTION rate_limits(); Type: COMMENT; Schema: api; Owner: booking_owner
--

COMMENT ON FUNCTION api.rate_limits() IS '(DBA-only) The rate-limit rules in force: SELECT * FROM api.rate_limits(). Each allows max_requests per period per key (a rolling window; one more every emission_interval). Locks nothing.';


--
-- Name: reconcile_payment(text, text, text, numeric, boolean, jsonb); Type: FUNCTION; Schema: api; Owner: booking_owner
--

CREATE FUNCTION api.reconcile_payment(p_provider text, p_provider_txn_id text, p_transaction_id text, p_amount numeric, p_success boolean, p_raw jsonb DEFAULT NULL::jsonb) RETURNS json
    LANGUAGE sql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    SET lock_timeout TO '2s'
    AS $$
  SELECT internal.apply_payment_event(p_provider, p_provider_txn_id, p_transaction_id, p_amount, p_success, p_raw)
$$;


ALTER FUNCTION api.reconcile_payment(p_provider text, p_provider_txn_id text, p_transaction_id text, p_amount numeric, p_success boolean, p_raw jsonb) OWNER TO booking_owner;

--
-- Name: FUNCTION reconcile_payment(p_provider text, p_provider_txn_id text, p_transaction_id text, p_amount numeric, p_success boolean, p_raw jsonb); Type: COMMENT; Schema: api; Owner: booking_owner
--

COMMENT ON FUNCTION api.reconcile_payment(p_provider text, p_provider_txn_id text, p_transaction_id text, p_amount numeric, p_success boolean, p_raw jsonb) IS '(worker) The provider''s status answer for a PENDING payment, applied exactly as a callback (api.apply_payment_event: the same inbox, so a callback and a reconciliation of one provider transaction apply once). Raises BKVAL.';


--
-- Name: record_confirmation_attempt(uuid, text); Type: FUNCTION; Schema: api; Owner: booking_owner
--

CREATE FUNCTION api.record_confirmation_attempt(p_order_id uuid, p_error text) RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    SET lock_timeout TO '2s'
    AS $$
BEGIN
  PERFORM internal.record_email_attempt(p_order_id, 'confirmation', p_error);
END;
$$;


ALTER FUNCTION api.record_confirmation_attempt(p_order_id uuid, p_error text) OWNER TO booking_owner;

--
-- Name: FUNCTION record_confirmation_attempt(p_order_id uuid, p_error text); Type: COMMENT; Schema: api; Owner: booking_owner
--

COMMENT ON FUNCTION api.record_confirmation_attempt(p_order_id uuid, p_error text) IS '(worker) Records one attempt to send an order''s confirmation: attempts + 1, last_error = p_error (the first 2,000 characters; NULL clears it). Locks the order_emails row. Raises BKNTF.';


--
-- Name: record_confirmation_sent(uuid, text); Type: FUNCTION; Schema: api; Owner: booking_owner
--

CREATE FUNCTION api.record_confirmation_sent(p_order_id uuid, p_message_id text) RETURNS boolean
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    SET lock_timeout TO '2s'
    AS $$
BEGIN
  RETURN internal.record_email_sent(p_order_id, 'confirmation', p_message_id);
END;
$$;


ALTER FUNCTION api.record_confirmation_sent(p_order_id uuid, p_message_id text) OWNER TO booking_owner;

--
-- Name: FUNCTION record_confirmation_sent(p_order_id uuid, p_message_id text); Type: COMMENT; Schema: api; Owner: booking_owner
--

COMMENT ON FUNCTION api.record_confirmation_sent(p_order_id uuid, p_message_id text) IS '(worker) Records that a server (or the mail folder) accepted an order''s confirmation: sets sent_at and message_id once and returns true; false when it was recorded before (the first time is kept). Does not count an attempt. Locks the order_emails row. Raises BKNTF.';


--
-- Name: record_login_success(text); Type: FUNCTION; Schema: api; Owner: booking_owner
--

CREATE FUNCTION api.record_login_success(p_email text) RETURNS void
    LANGUAGE sql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
  -- The attempt api.get_user_credentials counted was a success: it counts nothing.
  UPDATE rate_limit_counters c SET tat = c.tat - r.period / r.max_requests
    FROM rate_limit_rules r
   WHERE c.key = 'login_failures:email:' || lower(btrim(p_email))
     AND r.class = 'login_failures' AND r.scope = 'email'
$$;


ALTER FUNCTION api.record_login_success(p_email text) OWNER TO booking_owner;

--
-- Name: FUNCTION record_login_success(p_email text); Type: COMMENT; Schema: api; Owner: booking_owner
--

COMMENT ON FUNCTION api.record_login_success(p_email text) IS 'A login for this e-mail address succeeded: gives back the attempt api.get_user_credentials (p_count_attempt) counted, so only failed logins are throttled. Locks that counter row.';


--
-- Name: record_refund(uuid, boolean, text, text, boolean); Type: FUNCTION; Schema: api; Owner: booking_owner
--

CREATE FUNCTION api.record_refund(p_refund_id uuid, p_ok boolean, p_provider_ref text DEFAULT NULL::text, p_error text DEFAULT NULL::text, p_refused boolean DEFAULT false) RETURNS json
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    SET lock_timeout TO '2s'
    AS $$
DECLARE
  v_refund payment_refunds;
  v_order orders;
  v_event events;
BEGIN
  IF p_ok IS NULL THEN
    RAISE EXCEPTION USING ERRCODE = 'BKVAL', MESSAGE = 'p_ok is required';
  END IF;
  SELECT * INTO v_refund FROM payment_refunds WHERE id = p_refund_id;
  IF NOT FOUND THEN
    RAISE EXCEPTION USING ERRCODE = 'BKNTF', MESSAGE = 'refund not found';
  END IF;
  -- The order before its refund rows (the lock order); no ticket type lock is needed: the
  -- seats were settled when the refund started.
  SELECT * INTO STRICT v_order FROM orders WHERE id = v_refund.order_id FOR NO KEY UPDATE;
  SELECT * INTO STRICT v_refund FROM payment_refunds WHERE id = p_refund_id FOR UPDATE;
  IF v_refund.status = 'DONE' THEN
    RETURN api.refund_request(p_refund_id);  -- recorded before: a retried job changes nothing
  END IF;
  IF NOT p_ok THEN
    UPDATE payment_refunds
       SET attempts = attempts + 1, last_error = left(p_error, 2000),
           refusals = refusals + CASE WHEN p_refused THEN 1 ELSE 0 END
     WHERE id = p_refund_id;
    RETURN api.refund_request(p_refund_id);
  END IF;
  UPDATE payment_refunds
     SET status = 'DONE', attempts = attempts + 1, provider_ref = left(p_provider_ref, 255),
         last_error = NULL, finished_at = now()
   WHERE id = p_refund_id;
  IF v_refund.reason NOT IN ('duplicate', 'wrong_amount') AND v_order.status = 'REFUND_PENDING' THEN
    UPDATE orders SET status = 'REFUNDED', updated_at = now() WHERE id = v_order.id RETURNING * INTO v_order;
    UPDATE payments SET status = 'REFUNDED' WHERE order_id = v_order.id;
    SELECT e.* INTO v_event
      FROM order_items i JOIN ticket_types tt ON tt.id = i.ticket_type_id JOIN events e ON e.id = tt.event_id
     WHERE i.order_id = v_order.id ORDER BY i.id LIMIT 1;
    PERFORM internal.notify_webhooks('order.refunded', v_event.id,
      internal.order_json(v_order)::jsonb || jsonb_build_object(
        'event', jsonb_build_object('id', v_event.id, 'slug', v_event.slug, 'name', v_event.name,
                                    'start_time', v_event.start_time),
        'refund', jsonb_build_object('id', v_refund.id, 'amount', v_refund.amount::text, 'reason', v_refund.reason)));
    -- The buyer's refund e-mail (once: an order becomes REFUNDED once). Its own lock, not the
    -- confirmation's mail:<order>: a confirmation still being retried must not hold it back.
    INSERT INTO order_emails (order_id, kind, recipient, job_id)
    SELECT v_order.id, 'refund', u.email,
           internal.defer_job('send_refund_email', 'mail', 90, jsonb_build_object('order_id', v_order.id),
                              'refund-mail:' || v_order.id)
      FROM users u WHERE u.id = v_order.user_id;
  END IF;
  RETURN api.refund_request(p_refund_id);
END;
$$;


ALTER FUNCTION api.record_refund(p_refund_id uuid, p_ok boolean, p_provider_ref text, p_error text, p_refused boolean) OWNER TO booking_owner;

--
-- Name: FUNCTION record_refund(p_refund_id uuid, p_ok boolean, p_provider_ref text, p_error text, p_refused boolean); Type: COMMENT; Schema: api; Owner: booking_owner
--

COMMENT ON FUNCTION api.record_refund(p_refund_id uuid, p_ok boolean, p_provider_ref text, p_error text, p_refused boolean) IS '(worker) Records the provider''s answer to a refund: ok -> the refund DONE (provider_ref kept) and, for an order''s own payment, the order and payment REFUNDED with order.refunded webhooks and the buyer''s refund e-mail (order_emails kind refund, a send_refund_email job: queue mail, priority 90, lock refund-mail:<order id>), all in the same transaction; not ok -> attempts + 1 and last_error (the job retries), and with p_refused (the provider refused it for good: the job fails for a DBA) refusals + 1. A DONE refund is returned unchanged. Returns api.refund_request. Locks the order, then the refund. Raises BKVAL, BKNTF.';


--
-- Name: record_refund_email_attempt(uuid, text); Type: FUNCTION; Schema: api; Owner: booking_owner
--

CREATE FUNCTION api.record_refund_email_attempt(p_order_id uuid, p_error text) RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    SET lock_timeout TO '2s'
    AS $$
BEGIN
  PERFORM internal.record_email_attempt(p_order_id, 'refund', p_error);
END;
$$;


ALTER FUNCTION api.record_refund_email_attempt(p_order_id uuid, p_error text) OWNER TO booking_owner;

--
-- Name: FUNCTION record_refund_email_attempt(p_order_id uuid, p_error text); Type: COMMENT; Schema: api; Owner: booking_owner
--

COMMENT ON FUNCTION api.record_refund_email_attempt(p_order_id uuid, p_error text) IS '(worker) Records one attempt to send an order''s refund e-mail: attempts + 1, last_error = p_error (the first 2,000 characters; NULL clears it). Locks that order_emails row. Raises BKNTF.';


--
-- Name: record_refund_email_sent(uuid, text); Type: FUNCTION; Schema: api; Owner: booking_owner
--

CREATE FUNCTION api.record_refund_email_sent(p_order_id uuid, p_message_id text) RETURNS boolean
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    SET lock_timeout TO '2s'
    AS $$
BEGIN
  RETURN internal.record_email_sent(p_order_id, 'refund', p_message_id);
END;
$$;


ALTER FUNCTION api.record_refund_email_sent(p_order_id uuid, p_message_id text) OWNER TO booking_owner;

--
-- Name: FUNCTION record_refund_email_sent(p_order_id uuid, p_message_id text); Type: COMMENT; Schema: api; Owner: booking_owner
--

COMMENT ON FUNCTION api.record_refund_email_sent(p_order_id uuid, p_message_id text) IS '(worker) Records that a server (or the mail folder) accepted an order''s refund e-mail: sets sent_at and message_id once and returns true; false when recorded before. Locks that order_emails row. Raises BKNTF.';


--
-- Name: record_webhook_attempt(uuid, text, integer, text, integer); Type: FUNCTION; Schema: api; Owner: booking_owner
--

CREATE FUNCTION api.record_webhook_attempt(p_delivery_id uuid, p_outcome text, p_status_code integer, p_error text, p_duration_ms integer) RETURNS json
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    SET lock_timeout TO '2s'
    AS $$
DECLARE
  v_delivery webhook_deliveries;
BEGIN
  IF p_outcome IS NULL OR p_outcome NOT IN ('DELIVERED', 'RETRY', 'GONE', 'REFUSED', 'FAILED') THEN
    RAISE EXCEPTION USING ERRCODE = 'BKVAL',
      MESSAGE = 'outcome must be one of DELIVERED, RETRY, GONE, REFUSED, FAILED';
  END IF;
  IF p_outcome = 'GONE' THEN
    -- The lock order: the webhook's row before its deliveries' (delete_webhook takes the same).
    -- NO KEY UPDATE: a purchase inserting a delivery (FOR KEY SHARE on the webhook) never waits.
    PERFORM 1 FROM webhooks w
     WHERE w.id = (SELECT d.webhook_id FROM webhook_deliveries d WHERE d.id = p_delivery_id)
       FOR NO KEY UPDATE;
  END IF;
  SELECT * INTO v_delivery FROM webhook_deliveries WHERE id = p_delivery_id FOR UPDATE;
  IF NOT FOUND THEN
    RAISE EXCEPTION USING ERRCODE = 'BKNTF', MESSAGE = 'webhook delivery not found';
  END IF;

  INSERT INTO webhook_attempts (delivery_id, attempt, duration_ms, status_code, error, outcome)
  VALUES (p_delivery_id, v_delivery.attempts + 1, p_duration_ms, p_status_code, left(p_error, 2000), p_outcome);
  UPDATE webhook_deliveries
     SET attempts = attempts + 1,
         status = CASE
                    WHEN p_outcome = 'DELIVERED' THEN 'DELIVERED'
                    WHEN p_outcome = 'RETRY' OR status = 'DELIVERED' THEN status
                    ELSE 'FAILED'
                  END,
         delivered_at = CASE WHEN p_outcome = 'DELIVERED' THEN coalesce(delivered_at, now()) ELSE delivered_at END
   WHERE id = p_delivery_id
  RETURNING * INTO v_delivery;

  IF p_outcome = 'GONE' THEN
    UPDATE webhooks
       SET active = false, disabled_at = now(), disabled_reason = 'the receiver answered 410 Gone'
     WHERE id = v_delivery.webhook_id AND active;
    UPDATE webhook_deliveries SET status = 'CANCELLED'
     WHERE webhook_id = v_delivery.webhook_id AND status = 'PENDING' AND id <> p_delivery_id;
  END IF;

  RETURN json_build_object(
    'id', v_delivery.id, 'webhook_id', v_delivery.webhook_id, 'notification_id', v_delivery.notification_id,
    'event_type', v_delivery.event_type, 'status', v_delivery.status, 'attempts', v_delivery.attempts,
    'created_at', v_delivery.created_at, 'delivered_at', v_delivery.delivered_at);
END;
$$;


ALTER FUNCTION api.record_webhook_attempt(p_delivery_id uuid, p_outcome text, p_status_code integer, p_error text, p_duration_ms integer) OWNER TO booking_owner;

--
-- Name: FUNCTION record_webhook_attempt(p_delivery_id uuid, p_outcome text, p_status_code integer, p_error text, p_duration_ms integer); Type: COMMENT; Schema: api; Owner: booking_owner
--

COMMENT ON FUNCTION api.record_webhook_attempt(p_delivery_id uuid, p_outcome text, p_status_code integer, p_error text, p_duration_ms integer) IS '(worker) Records one HTTP attempt of a delivery (attempt = attempts + 1, the answer''s status code, error, duration) and returns the delivery after it {id, webhook_id, notification_id, event_type, status, attempts, created_at, delivered_at}. p_outcome: DELIVERED (2xx: DELIVERED, delivered_at), RETRY (stays PENDING; the job retries), GONE (410: FAILED, the webhook disabled, its other PENDING deliveries CANCELLED), REFUSED (address not allowed: FAILED), FAILED (the last attempt). Locks the delivery row (GONE: the webhook''s row first). Raises BKVAL (outcome), BKNTF.';


--
-- Name: refresh_session(bytea, bytea, integer, integer); Type: FUNCTION; Schema: api; Owner: booking_owner
--

CREATE FUNCTION api.refresh_session(p_refresh_hash bytea, p_new_refresh_hash bytea, p_refresh_ttl_seconds integer DEFAULT 1209600, p_grace_seconds integer DEFAULT 10) RETURNS json
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
DECLARE
  v_session_id uuid;
  v_session sessions;
  v_token refresh_tokens;
  v_outcome text;
BEGIN
  PERFORM internal.check_refresh_args(p_new_refresh_hash, p_refresh_ttl_seconds);
  IF p_grace_seconds IS NULL OR p_grace_seconds < 0 THEN
    RAISE EXCEPTION USING ERRCODE = 'BKVAL', MESSAGE = 'the grace period is 0 seconds or more';
  END IF;
  SELECT t.session_id INTO v_session_id FROM refresh_tokens t WHERE t.token_hash = p_refresh_hash;
  IF NOT FOUND THEN
    RAISE EXCEPTION USING ERRCODE = 'BKUNA', MESSAGE = 'unknown refresh token';
  END IF;
  -- The session row first (lock order), so refreshes of one session take turns; then the token.
  SELECT * INTO v_session FROM sessions s WHERE s.id = v_session_id FOR NO KEY UPDATE;
  SELECT * INTO v_token FROM refresh_tokens t WHERE t.token_hash = p_refresh_hash FOR UPDATE;
  IF v_session.id IS NULL OR v_token.token_hash IS NULL THEN  -- deleted meanwhile
    RAISE EXCEPTION USING ERRCODE = 'BKUNA', MESSAGE = 'unknown refresh token';
  END IF;
  IF v_session.expires_at <= now() OR v_token.expires_at <= now() THEN
    RAISE EXCEPTION USING ERRCODE = 'BKUNA', MESSAGE = 'the refresh token has expired';
  END IF;
  -- clock_timestamp(), not now(): this transaction may have begun before the one that spent
  -- the token, and waited for it on the session lock.
  IF v_token.used_at IS NOT NULL
     AND v_token.used_at <= clock_timestamp() - make_interval(secs => p_grace_seconds) THEN
    -- A spent token again (RFC 9700 4.14.2): someone holds a copy. End the whole session (also
    -- one that only stopped refreshing, after a role change: its access tokens go on the
    -- deny-list now), and say so by the answer rather than an error, so this revocation commits.
    PERFORM internal.revoke_sessions(ARRAY[v_session.id], 'reuse', true);
    RETURN json_build_object('outcome', 'reused', 'session_id', v_session.id, 'user_id', v_session.user_id);
  END IF;
  IF v_session.revoked_at IS NOT NULL THEN
    RAISE EXCEPTION USING ERRCODE = 'BKUNA', MESSAGE = 'the session has been revoked';
  END IF;

  IF v_token.used_at IS NULL THEN
    v_outcome := 'rotated';
    UPDATE refresh_tokens SET used_at = now() WHERE token_hash = p_refresh_hash;
  ELSE
    v_outcome := 'grace';  -- two tabs refreshing at once: each gets a pair
  END IF;

  INSERT INTO refresh_tokens (token_hash, session_id, parent_hash, expires_at)
  VALUES (p_new_refresh_hash, v_session.id, p_refresh_hash,
          least(now() + make_interval(secs => p_refresh_ttl_seconds), v_session.expires_at));
  RETURN json_build_object(
    'outcome', v_outcome, 'session_id', v_session.id, 'user_id', v_session.user_id,
    'role', (SELECT u.role FROM users u WHERE u.id = v_session.user_id));
END;
$$;


ALTER FUNCTION api.refresh_session(p_refresh_hash bytea, p_new_refresh_hash bytea, p_refresh_ttl_seconds integer, p_grace_seconds integer) OWNER TO booking_owner;

--
-- Name: FUNCTION refresh_session(p_refresh_hash bytea, p_new_refresh_hash bytea, p_refresh_ttl_seconds integer, p_grace_seconds integer); Type: COMMENT; Schema: api; Owner: booking_owner
--

COMMENT ON FUNCTION api.refresh_session(p_refresh_hash bytea, p_new_refresh_hash bytea, p_refresh_ttl_seconds integer, p_grace_seconds integer) IS 'Rotates a refresh token (given as its sha256): marks it used and stores the new one (p_new_refresh_hash). Returns {outcome, session_id, user_id, role}: outcome "rotated"; "grace" when the token was spent less than p_grace_seconds ago (two tabs refreshing at once: another pair); "reused" when it was spent before that: the whole session is revoked (deny-list + NOTIFY, committed) and no pair is issued. Locks the session row, then the token row. Raises BKUNA (unknown, expired, or the session revoked), BKVAL.';


--
-- Name: refund_cancelled_event(uuid, integer); Type: FUNCTION; Schema: api; Owner: booking_owner
--

CREATE FUNCTION api.refund_cancelled_event(p_event_id uuid, p_limit integer DEFAULT 200) RETURNS json
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    SET lock_timeout TO '2s'
    AS $$
DECLARE
  v_status text;
BEGIN
  IF p_limit IS NOT NULL AND (p_limit < 1 OR p_limit > 5000) THEN
    RAISE EXCEPTION USING ERRCODE = 'BKVAL', MESSAGE = 'p_limit must be between 1 and 5000';
  END IF;
  SELECT e.status INTO v_status FROM events e WHERE e.id = p_event_id;
  IF NOT FOUND THEN
    RAISE EXCEPTION USING ERRCODE = 'BKNTF', MESSAGE = 'event not found';
  END IF;
  IF v_status <> 'CANCELLED' THEN  -- a cancellation is final; anything else is a mistake
    RAISE EXCEPTION USING ERRCODE = 'BKIST', MESSAGE = format('the event is %s, not CANCELLED', v_status);
  END IF;
  RETURN internal.cancel_event_orders(p_event_id, coalesce(p_limit, 200));
END;
$$;


ALTER FUNCTION api.refund_cancelled_event(p_event_id uuid, p_limit integer) OWNER TO booking_owner;

--
-- Name: FUNCTION refund_cancelled_event(p_event_id uuid, p_limit integer); Type: COMMENT; Schema: api; Owner: booking_owner
--

COMMENT ON FUNCTION api.refund_cancelled_event(p_event_id uuid, p_limit integer) IS '(worker) One batch of a cancelled event''s orders (the refund_cancelled_event job calls it until remaining is 0; a DBA may too): at most p_limit (default 200, 1..5000) PAID orders -> REFUND_PENDING with a refund_payment job each, PENDING ones -> CANCELLED, seats back. Returns {event_id, refunded, cancelled, remaining}; orders locked by someone else right now are left for a later batch (counted in remaining). Locks the event''s ticket types (id order), then the orders (SKIP LOCKED). Raises BKVAL, BKNTF, BKIST (the event is not CANCELLED).';


--
-- Name: refund_email(uuid); Type: FUNCTION; Schema: api; Owner: booking_owner
--

CREATE FUNCTION api.refund_email(p_order_id uuid) RETURNS json
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
DECLARE
  v_result json;
BEGIN
  SELECT json_build_object(
           'order_id', m.order_id,
           'recipient', m.recipient,
           'full_name', u.full_name,
           'sent_at', m.sent_at,
           'message_id', m.message_id,
           'attempts', m.attempts,
           'order', internal.order_json(o),
           'refund', (SELECT json_build_object('id', r.id, 'amount', r.amount::text, 'reason', r.reason,
                                               'finished_at', r.finished_at)
                        FROM payment_refunds r
                       WHERE r.order_id = o.id AND r.reason NOT IN ('duplicate', 'wrong_amount')),
           'event', (SELECT json_build_object('id', e.id, 'slug', e.slug, 'name', e.name, 'location', e.location,
                                              'start_time', e.start_time, 'end_time', e.end_time)
                       FROM order_items i
                       JOIN ticket_types tt ON tt.id = i.ticket_type_id
                       JOIN events e ON e.id = tt.event_id
                      WHERE i.order_id = o.id
                      ORDER BY i.id LIMIT 1))
    INTO v_result
    FROM order_emails m
    JOIN orders o ON o.id = m.order_id
    JOIN users u ON u.id = o.user_id
   WHERE m.order_id = p_order_id AND m.kind = 'refund';
  IF v_result IS NULL THEN
    RAISE EXCEPTION USING ERRCODE = 'BKNTF', MESSAGE = 'no refund e-mail for this order';
  END IF;
  RETURN v_result;
END;
$$;


ALTER FUNCTION api.refund_email(p_order_id uuid) OWNER TO booking_owner;

--
-- Name: FUNCTION refund_email(p_order_id uuid); Type: COMMENT; Schema: api; Owner: booking_owner
--

COMMENT ON FUNCTION api.refund_email(p_order_id uuid) IS '(worker) What the refund e-mail of a REFUNDED order says: {order_id, recipient, full_name, sent_at, message_id, attempts, order (order JSON), refund {id, amount, reason, finished_at}, event {id, slug, name, location, start_time, end_time}}. Locks nothing. Raises BKNTF (no such e-mail).';


--
-- Name: refund_order(uuid); Type: FUNCTION; Schema: api; Owner: booking_owner
--

CREATE FUNCTION api.refund_order(p_order_id uuid) RETURNS json
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    SET lock_timeout TO '2s'
    AS $$
DECLARE
  v_order orders;
BEGIN
  IF NOT EXISTS (SELECT 1 FROM orders WHERE id = p_order_id) THEN
    RAISE EXCEPTION USING ERRCODE = 'BKNTF', MESSAGE = 'order not found';
  END IF;
  PERFORM internal.lock_order_types(p_order_id);
  SELECT * INTO STRICT v_order FROM orders WHERE id = p_order_id FOR NO KEY UPDATE;
  IF v_order.status IN ('REFUND_PENDING', 'REFUNDED') THEN
    RETURN internal.order_json(v_order);  -- idempotent
  END IF;
  IF v_order.status <> 'PAID' THEN
    RAISE EXCEPTION USING ERRCODE = 'BKOST',
      MESSAGE = format('only a PAID order can be refunded (it is %s)', v_order.status);
  END IF;
  PERFORM internal.refund_paid_order(p_order_id, 'admin');
  SELECT * INTO STRICT v_order FROM orders WHERE id = p_order_id;
  RETURN internal.order_json(v_order);
END;
$$;


ALTER FUNCTION api.refund_order(p_order_id uuid) OWNER TO booking_owner;

--
-- Name: FUNCTION refund_order(p_order_id uuid); Type: COMMENT; Schema: api; Owner: booking_owner
--

COMMENT ON FUNCTION api.refund_order(p_order_id uuid) IS 'An admin refunds a PAID order: REFUND_PENDING, UNUSED tickets CANCELLED, seats back to sale unless the event has started, a refund_payment job (the worker calls the provider, then api.record_refund makes it REFUNDED). Already REFUND_PENDING/REFUNDED: returned unchanged. Locks the order''s ticket types, the order, its payment. Raises BKNTF, BKOST (not PAID).';


--
-- Name: refund_request(uuid); Type: FUNCTION; Schema: api; Owner: booking_owner
--

CREATE FUNCTION api.refund_request(p_refund_id uuid) RETURNS json
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
  SELECT json_build_object(
           'refund_id', r.id, 'order_id', r.order_id, 'provider', r.provider,
           'transaction_id', p.transaction_id, 'provider_txn_id', r.provider_txn_id,
           'amount', r.amount::text, 'amount_vnd', round(r.amount)::bigint, 'reason', r.reason,
           'status', r.status, 'attempts', r.attempts, 'refusals', r.refusals, 'provider_ref', r.provider_ref,
           'last_error', r.last_error, 'created_at', r.created_at)
    FROM payment_refunds r JOIN payments p ON p.order_id = r.order_id
   WHERE r.id = p_refund_id
$$;


ALTER FUNCTION api.refund_request(p_refund_id uuid) OWNER TO booking_owner;

--
-- Name: FUNCTION refund_request(p_refund_id uuid); Type: COMMENT; Schema: api; Owner: booking_owner
--

COMMENT ON FUNCTION api.refund_request(p_refund_id uuid) IS '(worker) What a refund_payment job refunds: {refund_id, order_id, provider, transaction_id (ours), provider_txn_id, amount, amount_vnd (whole VND for the provider), reason, status PENDING|DONE, attempts, refusals (how many times the provider refused it for good: the worker asks under a new request id after each), provider_ref, last_error, created_at}; NULL when there is no such refund. Locks nothing.';


--
-- Name: register_user(text, text, text); Type: FUNCTION; Schema: api; Owner: booking_owner
--

CREATE FUNCTION api.register_user(p_email text, p_password_hash text, p_full_name text) RETURNS json
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $_$
DECLARE
  v_email text := lower(btrim(p_email));
  v_user users;
BEGIN
  IF v_email IS NULL OR length(v_email) > 255
     OR v_email !~* '^[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}$' THEN
    RAISE EXCEPTION USING ERRCODE = 'BKVAL', MESSAGE = 'email is not a valid address';
  END IF;
  IF p_password_hash IS NULL OR length(p_password_hash) NOT BETWEEN 1 AND 255 THEN
    RAISE EXCEPTION USING ERRCODE = 'BKVAL', MESSAGE = 'password_hash is required';
  END IF;
  IF p_full_name IS NULL OR length(btrim(p_full_name)) NOT BETWEEN 1 AND 255 THEN
    RAISE EXCEPTION USING ERRCODE = 'BKVAL', MESSAGE = 'full_name must be 1 to 255 characters';
  END IF;

  INSERT INTO users (email, password_hash, full_name)
  VALUES (v_email, p_password_hash, btrim(p_full_name))
  ON CONFLICT (email) DO NOTHING
  RETURNING * INTO v_user;
  IF NOT FOUND THEN
    RAISE EXCEPTION USING ERRCODE = 'BKEML', MESSAGE = 'a user with this email exists';
  END IF;
  RETURN internal.user_json(v_user);
END;
$_$;


ALTER FUNCTION api.register_user(p_email text, p_password_hash text, p_full_name text) OWNER TO booking_owner;

--
-- Name: FUNCTION register_user(p_email text, p_password_hash text, p_full_name text); Type: COMMENT; Schema: api; Owner: booking_owner
--

COMMENT ON FUNCTION api.register_user(p_email text, p_password_hash text, p_full_name text) IS 'Creates a user with role "user" and returns it as JSON. The e-mail is trimmed and lower-cased. Pass a password HASH (the gateway uses argon2). Locks nothing beyond the new row. Raises BKVAL (bad e-mail/name), BKEML (e-mail taken).';


--
-- Name: resend_confirmation(uuid); Type: FUNCTION; Schema: api; Owner: booking_owner
--

CREATE FUNCTION api.resend_confirmation(p_order_id uuid) RETURNS bigint
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    SET lock_timeout TO '2s'
    AS $$
DECLARE
  v_job bigint;
BEGIN
  PERFORM 1 FROM order_emails WHERE order_id = p_order_id AND kind = 'confirmation' FOR UPDATE;
  IF NOT FOUND THEN
    RAISE EXCEPTION USING ERRCODE = 'BKNTF', MESSAGE = 'no confirmation e-mail for this order';
  END IF;
  v_job := internal.defer_job('send_confirmation', 'mail', 100, jsonb_build_object('order_id', p_order_id),
                              'mail:' || p_order_id);
  UPDATE order_emails SET sent_at = NULL, message_id = NULL, last_error = NULL, job_id = v_job
   WHERE order_id = p_order_id AND kind = 'confirmation';
  RETURN v_job;
END;
$$;


ALTER FUNCTION api.resend_confirmation(p_order_id uuid) OWNER TO booking_owner;

--
-- Name: FUNCTION resend_confirmation(p_order_id uuid); Type: COMMENT; Schema: api; Owner: booking_owner
--

COMMENT ON FUNCTION api.resend_confirmation(p_order_id uuid) IS '(DBA-only) Sends an order''s confirmation e-mail again (to the recipient recorded then): clears sent_at and defers a new send_confirmation job; returns its id. Locks the order_emails row. Raises BKNTF (no such order or e-mail).';


--
-- Name: reserve_tickets(uuid, uuid, integer, text, text); Type: FUNCTION; Schema: api; Owner: booking_owner
--

CREATE FUNCTION api.reserve_tickets(p_user_id uuid, p_ticket_type_id uuid, p_quantity integer, p_idempotency_key text DEFAULT NULL::text, p_admission_token text DEFAULT NULL::text) RETURNS json
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    SET lock_timeout TO '2s'
    SET plan_cache_mode TO 'force_generic_plan'
    AS $$
DECLARE
  v_stored json;
BEGIN
  IF p_idempotency_key IS NULL THEN
    -- Seed method 1 (pessimistic): the core locks the ticket type row.
    RETURN (internal.reserve(p_ticket_type_id, ARRAY[p_user_id], ARRAY[p_quantity], p_raise => true,
                             p_admission_tokens => ARRAY[p_admission_token])).reservations[1];
  END IF;
  -- Keyed: claim the key first (lock order), then the same work, then record its answer in
  -- this transaction. A refusal raises and rolls the claim back with everything else.
  v_stored := internal.claim_idempotency_key(p_user_id, p_idempotency_key,
                                             internal.reserve_fingerprint(p_ticket_type_id, p_quantity));
  IF v_stored IS NOT NULL THEN
    RETURN v_stored;
  END IF;
  RETURN internal.store_idempotent_response(p_user_id, p_idempotency_key,
    (internal.reserve(p_ticket_type_id, ARRAY[p_user_id], ARRAY[p_quantity], p_raise => true,
                      p_admission_tokens => ARRAY[p_admission_token])).reservations[1]);
END;
$$;


ALTER FUNCTION api.reserve_tickets(p_user_id uuid, p_ticket_type_id uuid, p_quantity integer, p_idempotency_key text, p_admission_token text) OWNER TO booking_owner;

--
-- Name: FUNCTION reserve_tickets(p_user_id uuid, p_ticket_type_id uuid, p_quantity integer, p_idempotency_key text, p_admission_token text); Type: COMMENT; Schema: api; Owner: booking_owner
--

COMMENT ON FUNCTION api.reserve_tickets(p_user_id uuid, p_ticket_type_id uuid, p_quantity integer, p_idempotency_key text, p_admission_token text) IS 'Holds p_quantity (1..10) seats of a ticket type for a user for booking.hold_period (default 10 minutes): checks the event is PUBLISHED and the sale window, reclaims expired holds of the type when stock is short, decrements stock and returns the ACTIVE reservation. Decided by internal.reserve. Locks the ticket_types row (FOR NO KEY UPDATE, lock_timeout 2s -> 55P03). With p_idempotency_key (1-255 visible ASCII), the same user, key and request within 24 hours returns the first reservation again and holds nothing more; the key is recorded in the same transaction (only successes are recorded). For an event with a waiting room (queue_enabled), p_admission_token must be an unexpired admission token of this user for it (api.waiting_room_status hands it out), else BKNAD. Raises BKVAL, BKNTF (unknown user or type), BKSNO (not on sale), BKNAD (not admitted), BKLIM (a per-buyer cap), BKSLD (sold out), BKIDR (key used with another request).';


--
-- Name: reserve_tickets_batch(api.reserve_request[], text[], text[]); Type: FUNCTION; Schema: api; Owner: booking_owner
--

CREATE FUNCTION api.reserve_tickets_batch(p_requests api.reserve_request[], p_idempotency_keys text[] DEFAULT NULL::text[], p_admission_tokens text[] DEFAULT NULL::text[]) RETURNS TABLE(reservation json, sqlstate text, message text)
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    SET lock_timeout TO '2s'
    SET plan_cache_mode TO 'force_generic_plan'
    AS $$
DECLARE
  v_group record;
  v_answer record;
  v_pos integer[] := '{}';
  v_reservations json[] := '{}';
  v_sqlstates text[] := '{}';
  v_messages text[] := '{}';
  v_count integer := coalesce(array_length(p_requests, 1), 0);
  -- Keyed requests only (p_idempotency_keys given):
  v_work_pos integer[];   -- original position of each request still to decide
  v_ids text[];           -- 'user/key' of the keys named in the call ...
  v_fingerprints text[];  -- ... their recorded fingerprint
  v_responses json[];     -- ... and response (stored before: a replay)
  v_claimed text[];       -- the keys this call claimed: decided here, recorded below
  v_first integer[];      -- per key (index in v_ids): the position whose answer it gets
  v_id text;
  v_fp text;
  i integer;
  j integer;
  n integer;
  v_originals api.reserve_request[];  -- p_requests as given (p_requests becomes the undecided ones)
  o_reservations json[];
  o_sqlstates text[];
  o_messages text[];
BEGIN
  IF v_count > 1000 THEN
    RAISE EXCEPTION USING ERRCODE = 'BKVAL', MESSAGE = 'at most 1000 requests per call';
  END IF;
  IF p_admission_tokens IS NOT NULL AND cardinality(p_admission_tokens) <> v_count THEN
    RAISE EXCEPTION USING ERRCODE = 'BKVAL',
      MESSAGE = 'p_admission_tokens must have one element (or NULL) per request';
  END IF;

  IF p_idempotency_keys IS NOT NULL THEN
    -- Idempotency keys, claimed FIRST (lock order), sorted by (user, key), all in one statement.
    -- A key named twice in the call is claimed once: its later requests get the first one's
    -- answer (or BKIDR if they differ). Replays get the recorded answer; only the rest is decided.
    IF cardinality(p_idempotency_keys) <> v_count THEN
      RAISE EXCEPTION USING ERRCODE = 'BKVAL',
        MESSAGE = 'p_idempotency_keys must have one element (or NULL) per request';
    END IF;
    PERFORM internal.check_idempotency_key(k) FROM unnest(p_idempotency_keys) k;
    WITH firsts AS (
           SELECT DISTINCT ON (r.user_id, k.key) r.user_id, k.key,
                  internal.reserve_fingerprint(r.ticket_type_id, r.quantity) AS fingerprint
             FROM unnest(p_requests) WITH ORDINALITY AS r(user_id, ticket_type_id, quantity, pos)
             JOIN unnest(p_idempotency_keys) WITH ORDINALITY AS k(key, pos) ON k.pos = r.pos
            WHERE r.user_id IS NOT NULL AND k.key IS NOT NULL
            ORDER BY r.user_id, k.key, r.pos),
         claimed AS (
           INSERT INTO idempotency_keys AS k (user_id, key, fingerprint)
           SELECT f.user_id, f.key, f.fingerprint FROM firsts f ORDER BY f.user_id, f.key
           ON CONFLICT (user_id, key) DO UPDATE
             SET fingerprint = EXCLUDED.fingerprint, response = NULL, created_at = now()
             WHERE k.created_at <= now() - internal.idempotency_ttl()
           RETURNING k.user_id, k.key)
    SELECT array_agg(c.user_id || '/' || c.key) INTO v_claimed FROM claimed c;
    -- A fresh statement: sees the answers committed by the requests the claim waited for.
    SELECT array_agg(k.user_id || '/' || k.key), array_agg(k.fingerprint), array_agg(k.response)
      INTO v_ids, v_fingerprints, v_responses
      FROM idempotency_keys k
     WHERE (k.user_id, k.key) IN (SELECT r.user_id, x.key
                                    FROM unnest(p_requests) WITH ORDINALITY AS r(user_id, ticket_type_id, quantity, pos)
                                    JOIN unnest(p_idempotency_keys) WITH ORDINALITY AS x(key, pos) ON x.pos = r.pos);
    v_claimed := coalesce(v_claimed, '{}');
    v_first := array_fill(NULL::integer, ARRAY[coalesce(cardinality(v_ids), 0) + 1]);
    o_reservations := array_fill(NULL::json, ARRAY[v_count]);
    o_sqlstates := array_fill(NULL::text, ARRAY[v_count]);
    o_messages := array_fill(NULL::text, ARRAY[v_count]);
    v_work_pos := '{}';
    FOR i IN 1..v_count LOOP
      v_id := (p_requests[i]).user_id || '/' || p_idempotency_keys[i];
      j := array_position(v_ids, v_id);
      IF j IS NULL THEN  -- no key (or no user: the core refuses it)
        v_work_pos := v_work_pos || i;
        CONTINUE;
      END IF;
      v_fp := internal.reserve_fingerprint((p_requests[i]).ticket_type_id, (p_requests[i]).quantity);
      IF v_fingerprints[j] IS DISTINCT FROM v_fp THEN
        o_sqlstates[i] := 'BKIDR'; o_messages[i] := 'this Idempotency-Key was used with a different request';
      ELSIF v_id = ANY (v_claimed) THEN
        IF v_first[j] IS NULL THEN  -- the first request with this key: decided below
          v_first[j] := i;
          v_work_pos := v_work_pos || i;
        END IF;                     -- later ones: copied from it below
      ELSIF v_responses[j] IS NULL THEN  -- cannot happen: only successes are committed with their key
        o_sqlstates[i] := 'BKBSY'; o_messages[i] := 'the request with this Idempotency-Key is unfinished';
      ELSE
        o_reservations[i] := v_responses[j];
      END IF;
    END LOOP;
    v_originals := p_requests;
    p_requests := ARRAY(SELECT p_requests[u.w] FROM unnest(v_work_pos) WITH ORDINALITY AS u(w, ord) ORDER BY u.ord);
    IF p_admission_tokens IS NOT NULL THEN  -- kept aligned with the requests still to decide
      p_admission_tokens := ARRAY(SELECT p_admission_tokens[u.w]
                                    FROM unnest(v_work_pos) WITH ORDINALITY AS u(w, ord) ORDER BY u.ord);
    END IF;
  END IF;

  -- One core call per ticket type, in id order (the project's lock order). With several types
  -- and an event cap, the core of type A would take (event, buyer) locks and then wait for
  -- type B's row, while a reserve of B holds B's row and waits for the same (event, buyer)
  -- lock: a deadlock. So a call with several types first takes ALL its type rows (ids
  -- ascending), then ALL its (event, buyer) locks (sorted); the cores then find them held.
  FOR v_group IN
    SELECT r.ticket_type_id, array_agg(r.user_id ORDER BY r.pos) AS users,
           array_agg(r.quantity ORDER BY r.pos) AS quantities, array_agg(r.pos ORDER BY r.pos) AS pos,
           -- (no tokens sent: the filter keeps every row out of this aggregate's sort)
           array_agg(p_admission_tokens[r.pos] ORDER BY r.pos) FILTER (WHERE p_admission_tokens IS NOT NULL) AS tokens,
           count(*) OVER () AS types
      FROM unnest(p_requests) WITH ORDINALITY AS r(user_id, ticket_type_id, quantity, pos)
     GROUP BY r.ticket_type_id
     ORDER BY r.ticket_type_id NULLS LAST
  LOOP
    IF v_group.types > 1 AND v_pos = '{}' THEN
      PERFORM 1 FROM ticket_types t
        WHERE t.id IN (SELECT r.ticket_type_id FROM unnest(p_requests) r)
        ORDER BY t.id FOR NO KEY UPDATE OF t;
      PERFORM pg_advisory_xact_lock(l.key)
         FROM (SELECT DISTINCT internal.buyer_lock_key(t.event_id, r.user_id) AS key
                 FROM unnest(p_requests) r
                 JOIN ticket_types t ON t.id = r.ticket_type_id
                 JOIN events e ON e.id = t.event_id
                WHERE e.max_tickets_per_user IS NOT NULL AND r.user_id IS NOT NULL
                ORDER BY 1) l;
    END IF;
    v_answer := internal.reserve(v_group.ticket_type_id, v_group.users, v_group.quantities,
                                 p_admission_tokens => v_group.tokens);
    v_pos := v_pos || v_group.pos;
    v_reservations := v_reservations || v_answer.reservations;
    v_sqlstates := v_sqlstates || v_answer.sqlstates;
    v_messages := v_messages || v_answer.messages;
  END LOOP;

  IF p_idempotency_keys IS NULL THEN
    RETURN QUERY
      SELECT a.reservation, a.sqlstate, a.message
        FROM unnest(v_pos, v_reservations, v_sqlstates, v_messages) AS a(pos, reservation, sqlstate, message)
       ORDER BY a.pos;
    RETURN;
  END IF;

  -- Keyed: answers back to their original positions; later requests with a key the call
  -- claimed get its first request's answer; a claimed key records that answer when it is a
  -- hold, and is given back when it was refused (only successes are recorded).
  FOR n IN 1..coalesce(cardinality(v_pos), 0) LOOP
    i := v_work_pos[v_pos[n]];
    o_reservations[i] := v_reservations[n];
    o_sqlstates[i] := v_sqlstates[n];
    o_messages[i] := v_messages[n];
  END LOOP;
  FOR i IN 1..v_count LOOP
    IF o_reservations[i] IS NULL AND o_sqlstates[i] IS NULL THEN
      j := v_first[array_position(v_ids, (v_originals[i]).user_id || '/' || p_idempotency_keys[i])];
      o_reservations[i] := o_reservations[j];
      o_sqlstates[i] := o_sqlstates[j];
      o_messages[i] := o_messages[j];
    END IF;
  END LOOP;
  UPDATE idempotency_keys k SET response = o_reservations[f.pos]
    FROM unnest(v_ids, v_first) AS f(id, pos)
   WHERE f.pos IS NOT NULL AND o_reservations[f.pos] IS NOT NULL
     AND k.user_id = left(f.id, 36)::uuid AND k.key = substr(f.id, 38);
  DELETE FROM idempotency_keys k
   USING unnest(v_ids, v_first) AS f(id, pos)
   WHERE f.pos IS NOT NULL AND o_reservations[f.pos] IS NULL
     AND k.user_id = left(f.id, 36)::uuid AND k.key = substr(f.id, 38);
  RETURN QUERY SELECT * FROM unnest(o_reservations, o_sqlstates, o_messages);
END;
$$;


ALTER FUNCTION api.reserve_tickets_batch(p_requests api.reserve_request[], p_idempotency_keys text[], p_admission_tokens text[]) OWNER TO booking_owner;

--
-- Name: FUNCTION reserve_tickets_batch(p_requests api.reserve_request[], p_idempotency_keys text[], p_admission_tokens text[]); Type: COMMENT; Schema: api; Owner: booking_owner
--

COMMENT ON FUNCTION api.reserve_tickets_batch(p_requests api.reserve_request[], p_idempotency_keys text[], p_admission_tokens text[]) IS 'Many reservations in one transaction (the gateway coalesces concurrent reserves of a ticket type into one call): p_requests is an array of api.reserve_request (user_id, ticket_type_id, quantity), e.g. ARRAY[ROW(u, t, 2)]::api.reserve_request[]. Returns one row per request, in order: the reservation (as api.reserve_tickets returns it), or NULL with the sqlstate and message api.reserve_tickets would raise (BKVAL, BKNTF, BKSNO, BKNAD, BKLIM, BKSLD, BKIDR). Decided by internal.reserve, one call per ticket type in id order (each row locked once, lock_timeout 2s; with several types, all type rows and (event, buyer) cap locks are taken first); within a type, granted in array order while stock lasts, a buyer''s requests counted together against the caps. p_idempotency_keys (optional, aligned with p_requests, NULL elements: no key): keys claimed first, sorted by (user, key); a replay gets the recorded reservation; the same key twice in one call: the later request gets the first one''s answer; a refused request''s key is not recorded. p_admission_tokens (optional, aligned with p_requests): each request''s waiting-room admission token, needed for events with queue_enabled (else BKNAD). At most 1000 requests (else BKVAL).';


--
-- Name: reserve_tickets_optimistic(uuid, uuid, integer, text, text); Type: FUNCTION; Schema: api; Owner: booking_owner
--

CREATE FUNCTION api.reserve_tickets_optimistic(p_user_id uuid, p_ticket_type_id uuid, p_quantity integer, p_idempotency_key text DEFAULT NULL::text, p_admission_token text DEFAULT NULL::text) RETURNS json
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    SET lock_timeout TO '2s'
    SET plan_cache_mode TO 'force_generic_plan'
    AS $$
DECLARE
  c_attempts CONSTANT integer := 6;
  v_version integer;
  v_answer record;
  v_stored json;
BEGIN
  IF p_idempotency_key IS NOT NULL THEN  -- claimed first, as in api.reserve_tickets
    v_stored := internal.claim_idempotency_key(p_user_id, p_idempotency_key,
                                               internal.reserve_fingerprint(p_ticket_type_id, p_quantity));
    IF v_stored IS NOT NULL THEN
      RETURN v_stored;
    END IF;
  END IF;
  FOR v_attempt IN 1..c_attempts LOOP
    -- Seed method 2: read the version without a lock; the core takes the row only if the
    -- version is still the same (compare-and-set), else answers BKBSY and we try again.
    SELECT version INTO v_version FROM ticket_types WHERE id = p_ticket_type_id;
    v_answer := internal.reserve(p_ticket_type_id, ARRAY[p_user_id], ARRAY[p_quantity], v_version,
                                 p_admission_tokens => ARRAY[p_admission_token]);
    IF v_answer.sqlstates[1] IS NULL THEN
      IF p_idempotency_key IS NOT NULL THEN
        PERFORM internal.store_idempotent_response(p_user_id, p_idempotency_key, v_answer.reservations[1]);
      END IF;
      RETURN v_answer.reservations[1];
    ELSIF v_answer.sqlstates[1] <> 'BKBSY' THEN
      RAISE EXCEPTION USING ERRCODE = v_answer.sqlstates[1], MESSAGE = v_answer.messages[1];
    END IF;
    -- Lost the race: back off (exponential, jittered, capped at 50 ms) and re-read.
    PERFORM pg_sleep(least(0.001 * power(2, v_attempt), 0.05) * (0.5 + random()));
  END LOOP;

  RAISE EXCEPTION USING ERRCODE = 'BKBSY',
    MESSAGE = format('ticket type is busy: %s attempts lost the race', c_attempts),
    HINT = 'Retry, or use the pessimistic api.reserve_tickets.';
END;
$$;


ALTER FUNCTION api.reserve_tickets_optimistic(p_user_id uuid, p_ticket_type_id uuid, p_quantity integer, p_idempotency_key text, p_admission_token text) OWNER TO booking_owner;

--
-- Name: FUNCTION reserve_tickets_optimistic(p_user_id uuid, p_ticket_type_id uuid, p_quantity integer, p_idempotency_key text, p_admission_token text); Type: COMMENT; Schema: api; Owner: booking_owner
--

COMMENT ON FUNCTION api.reserve_tickets_optimistic(p_user_id uuid, p_ticket_type_id uuid, p_quantity integer, p_idempotency_key text, p_admission_token text) IS 'Same checks, results, p_idempotency_key and p_admission_token as api.reserve_tickets, but seed method 2: reads the ticket type''s version without a lock, then internal.reserve takes the row only if the version is unchanged (compare-and-set); up to 6 attempts with jittered exponential backoff. lock_timeout 2s. Raises BKVAL, BKNTF, BKSNO, BKNAD, BKLIM, BKSLD, BKIDR, BKBSY (retries exhausted).';


--
-- Name: resolve_payment_event(bigint, text); Type: FUNCTION; Schema: api; Owner: booking_owner
--

CREATE FUNCTION api.resolve_payment_event(p_event_id bigint, p_note text) RETURNS json
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    SET lock_timeout TO '2s'
    AS $$
DECLARE
  v_event payment_events;
BEGIN
  IF p_note IS NULL OR btrim(p_note) = '' OR char_length(p_note) > 2000 THEN
    RAISE EXCEPTION USING ERRCODE = 'BKVAL', MESSAGE = 'a note (1-2000 characters) says how it was settled';
  END IF;
  UPDATE payment_events SET resolved_at = coalesce(resolved_at, now()), resolved_note = btrim(p_note)
   WHERE id = p_event_id
  RETURNING * INTO v_event;
  IF NOT FOUND THEN
    RAISE EXCEPTION USING ERRCODE = 'BKNTF', MESSAGE = 'payment event not found';
  END IF;
  RETURN json_build_object('id', v_event.id, 'outcome', v_event.outcome, 'resolved_at', v_event.resolved_at,
                           'resolved_note', v_event.resolved_note);
END;
$$;


ALTER FUNCTION api.resolve_payment_event(p_event_id bigint, p_note text) OWNER TO booking_owner;

--
-- Name: FUNCTION resolve_payment_event(p_event_id bigint, p_note text); Type: COMMENT; Schema: api; Owner: booking_owner
--

COMMENT ON FUNCTION api.resolve_payment_event(p_event_id bigint, p_note text) IS '(DBA-only) Marks a provider event settled by hand (e.g. the money of an unknown reference returned through the provider''s dashboard), with a note; it leaves api.unresolved_payments. Returns {id, outcome, resolved_at, resolved_note}. Locks the event row. Raises BKVAL, BKNTF.';


--
-- Name: resume_waiting_room(uuid); Type: FUNCTION; Schema: api; Owner: booking_owner
--

CREATE FUNCTION api.resume_waiting_room(p_event_id uuid) RETURNS json
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    SET lock_timeout TO '2s'
    AS $$
BEGIN
  PERFORM internal.waiting_room_row(p_event_id);
  UPDATE waiting_rooms SET base_at = now(), paused_at = NULL, updated_at = now()
   WHERE event_id = p_event_id AND paused_at IS NOT NULL;
  RETURN (SELECT row_to_json(r) FROM api.waiting_room(p_event_id) r);
END;
$$;


ALTER FUNCTION api.resume_waiting_room(p_event_id uuid) OWNER TO booking_owner;

--
-- Name: FUNCTION resume_waiting_room(p_event_id uuid); Type: COMMENT; Schema: api; Owner: booking_owner
--

COMMENT ON FUNCTION api.resume_waiting_room(p_event_id uuid) IS '(DBA-only) Admits again at the event''s rate, counting from now. Idempotent. Returns api.waiting_room''s row as JSON. Raises BKNTF.';


--
-- Name: retry_failed_jobs(text); Type: FUNCTION; Schema: api; Owner: booking_owner
--

CREATE FUNCTION api.retry_failed_jobs(p_task text DEFAULT NULL::text) RETURNS integer
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    SET lock_timeout TO '2s'
    AS $$
DECLARE
  v_job bigint;
  v_count integer := 0;
BEGIN
  FOR v_job IN
    SELECT j.id FROM procrastinate_jobs j
     WHERE j.status = 'failed' AND (p_task IS NULL OR j.task_name = p_task)
     ORDER BY j.id
       FOR UPDATE SKIP LOCKED
  LOOP
    PERFORM api.retry_job(v_job);
    v_count := v_count + 1;
  END LOOP;
  RETURN v_count;
END;
$$;


ALTER FUNCTION api.retry_failed_jobs(p_task text) OWNER TO booking_owner;

--
-- Name: FUNCTION retry_failed_jobs(p_task text); Type: COMMENT; Schema: api; Owner: booking_owner
--

COMMENT ON FUNCTION api.retry_failed_jobs(p_task text) IS '(DBA-only) api.retry_job for every failed job (of task p_task, e.g. send_confirmation or deliver_webhook, when given); returns how many. Locks those job rows.';


--
-- Name: retry_job(bigint); Type: FUNCTION; Schema: api; Owner: booking_owner
--

CREATE FUNCTION api.retry_job(p_job_id bigint) RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    SET lock_timeout TO '2s'
    AS $$
DECLARE
  v_queue text;
BEGIN
  SELECT j.queue_name INTO v_queue FROM procrastinate_jobs j WHERE j.id = p_job_id AND j.status = 'failed' FOR UPDATE;
  IF NOT FOUND THEN
    RAISE EXCEPTION USING ERRCODE = 'BKNTF', MESSAGE = format('no failed job %s', p_job_id);
  END IF;
  PERFORM procrastinate_retry_job_v2(p_job_id, now(), NULL, NULL, NULL);
  -- A webhook delivery that failed for good is PENDING again (its webhook still active), or
  -- the retried job would find nothing to send.
  UPDATE webhook_deliveries d SET status = 'PENDING'
    FROM procrastinate_jobs j, webhooks w
   WHERE j.id = p_job_id AND j.task_name = 'deliver_webhook'
     AND d.id = (j.args ->> 'delivery_id')::uuid AND d.status = 'FAILED'
     AND w.id = d.webhook_id AND w.active;
  -- Only inserts notify; a listening worker takes the job now rather than at its next poll.
  PERFORM pg_notify('procrastinate_queue_v1#' || v_queue, json_build_object('type', 'job_inserted', 'job_id', p_job_id)::text);
  PERFORM pg_notify('procrastinate_any_queue_v1', json_build_object('type', 'job_inserted', 'job_id', p_job_id)::text);
END;
$$;


ALTER FUNCTION api.retry_job(p_job_id bigint) OWNER TO booking_owner;

--
-- Name: FUNCTION retry_job(p_job_id bigint); Type: COMMENT; Schema: api; Owner: booking_owner
--

COMMENT ON FUNCTION api.retry_job(p_job_id bigint) IS '(DBA-only) Puts a failed job back in the queue, due now (procrastinate''s retry: attempts + 1, so a job whose retries were exhausted gets one more try), and wakes the workers; a deliver_webhook job''s FAILED delivery is PENDING again when its webhook is active. Locks the job row (then the delivery''s). Raises BKNTF (no failed job with this id).';


--
-- Name: revocation_state(); Type: FUNCTION; Schema: api; Owner: booking_owner
--

CREATE FUNCTION api.revocation_state() RETURNS json
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
  SELECT json_build_object(
    'sessions', coalesce((SELECT json_agg(r.session_id) FROM revoked_sessions r
                           WHERE r.revoked_at > now() - interval '24 hours'), '[]'::json),
    'roles', coalesce((SELECT json_agg(json_build_object(
                                'user_id', c.user_id, 'role', c.role,
                                'changed_at', extract(epoch FROM c.changed_at)::float8))
                         FROM role_changes c
                        WHERE c.changed_at > now() - interval '24 hours'), '[]'::json))
$$;


ALTER FUNCTION api.revocation_state() OWNER TO booking_owner;

--
-- Name: FUNCTION revocation_state(); Type: COMMENT; Schema: api; Owner: booking_owner
--

COMMENT ON FUNCTION api.revocation_state() IS 'What every gateway holds in memory, loaded whole when its listener (re)connects: {sessions: [revoked session ids], roles: [{user_id, role, changed_at (epoch s)}]} of the last 24 h. Locks nothing.';


--
-- Name: revoke_session(uuid); Type: FUNCTION; Schema: api; Owner: booking_owner
--

CREATE FUNCTION api.revoke_session(p_session_id uuid) RETURNS boolean
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM sessions s WHERE s.id = p_session_id) THEN
    RAISE EXCEPTION USING ERRCODE = 'BKNTF', MESSAGE = 'session not found';
  END IF;
  RETURN internal.revoke_sessions(ARRAY[p_session_id], 'dba', true) > 0;
END;
$$;


ALTER FUNCTION api.revoke_session(p_session_id uuid) OWNER TO booking_owner;

--
-- Name: FUNCTION revoke_session(p_session_id uuid); Type: COMMENT; Schema: api; Owner: booking_owner
--

COMMENT ON FUNCTION api.revoke_session(p_session_id uuid) IS '(DBA-only) Ends one session at once on every gateway (refresh and access tokens). Returns false when it was revoked already (it is denied all the same). Locks the session row. Raises BKNTF.';


--
-- Name: revoke_user_sessions(text); Type: FUNCTION; Schema: api; Owner: booking_owner
--

CREATE FUNCTION api.revoke_user_sessions(p_email text) RETURNS integer
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
DECLARE
  v_user_id uuid;
BEGIN
  SELECT u.id INTO v_user_id FROM users u WHERE u.email = lower(btrim(p_email));
  IF NOT FOUND THEN
    RAISE EXCEPTION USING ERRCODE = 'BKNTF', MESSAGE = 'user not found';
  END IF;
  RETURN internal.revoke_sessions(
    -- Also sessions past their end: an access token refreshed just before the end lives on
    -- for up to JWT_TTL_SECONDS (purge keeps ended sessions 24 h for this).
    ARRAY(SELECT s.id FROM sessions s WHERE s.user_id = v_user_id ORDER BY s.id),
    'dba', true);
END;
$$;


ALTER FUNCTION api.revoke_user_sessions(p_email text) OWNER TO booking_owner;

--
-- Name: FUNCTION revoke_user_sessions(p_email text); Type: COMMENT; Schema: api; Owner: booking_owner
--

COMMENT ON FUNCTION api.revoke_user_sessions(p_email text) IS '(DBA-only) Ends every live session of a user at once on every gateway: SELECT api.revoke_user_sessions(''a@b.co''). Returns how many were newly revoked. Locks those session rows. Raises BKNTF.';


--
-- Name: rotate_admission_secret(); Type: FUNCTION; Schema: api; Owner: booking_owner
--

CREATE FUNCTION api.rotate_admission_secret() RETURNS json
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
DECLARE
  v_live bigint;
BEGIN
  SELECT count(*) INTO v_live FROM waiting_room_entries
   WHERE admitted_at IS NOT NULL AND admitted_at + internal.admission_ttl() > now();
  UPDATE admission_secret SET secret = gen_random_bytes(32), created_at = now();
  -- The gateways drop the admission answers they hold (they carry tokens under the old key).
  PERFORM pg_notify('booking_waiting_rooms', 'k');
  RETURN json_build_object('rotated_at', now(), 'live_admissions', v_live);
END;
$$;


ALTER FUNCTION api.rotate_admission_secret() OWNER TO booking_owner;

--
-- Name: FUNCTION rotate_admission_secret(); Type: COMMENT; Schema: api; Owner: booking_owner
--

COMMENT ON FUNCTION api.rotate_admission_secret() IS '(DBA-only) A new key for admission tokens (when the old one may have leaked): every token issued so far stops working at once, everywhere. An admitted fan''s next poll gets a token under the new key with the same expiry (the admission window is not extended). Returns {rotated_at, live_admissions: admissions whose window was still open}. Locks the admission_secret row.';


--
-- Name: set_pay_url(text, text); Type: FUNCTION; Schema: api; Owner: booking_owner
--

CREATE FUNCTION api.set_pay_url(p_transaction_id text, p_pay_url text) RETURNS text
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $_$
DECLARE
  v_url text;
BEGIN
  IF p_pay_url IS NULL OR char_length(p_pay_url) > 2000 OR p_pay_url !~ '^https?://\S+$' THEN
    RAISE EXCEPTION USING ERRCODE = 'BKVAL', MESSAGE = 'pay_url must be an http(s) URL of at most 2000 characters';
  END IF;
  -- The first URL stored stays (two replays asking the provider at once keep one answer).
  UPDATE payments SET pay_url = coalesce(pay_url, p_pay_url)
   WHERE transaction_id = p_transaction_id AND status = 'PENDING'
  RETURNING pay_url INTO v_url;
  RETURN v_url;
END;
$_$;


ALTER FUNCTION api.set_pay_url(p_transaction_id text, p_pay_url text) OWNER TO booking_owner;

--
-- Name: FUNCTION set_pay_url(p_transaction_id text, p_pay_url text); Type: COMMENT; Schema: api; Owner: booking_owner
--

COMMENT ON FUNCTION api.set_pay_url(p_transaction_id text, p_pay_url text) IS 'Stores where the buyer pays a PENDING payment (our transaction_id), as its provider answered the gateway after api.checkout committed; the first URL stored stays. Returns the stored URL, NULL when no PENDING payment has this transaction_id. Locks the payment row. Raises BKVAL.';


--
-- Name: set_payment_mode(text, interval); Type: FUNCTION; Schema: api; Owner: booking_owner
--

CREATE FUNCTION api.set_payment_mode(p_mode text, p_payment_window interval DEFAULT NULL::interval) RETURNS json
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
DECLARE
  v_settings payment_settings;
BEGIN
  IF p_mode IS NULL OR lower(p_mode) NOT IN ('instant', 'provider') THEN
    RAISE EXCEPTION USING ERRCODE = 'BKVAL', MESSAGE = 'mode must be instant or provider';
  END IF;
  IF p_payment_window IS NOT NULL
     AND (p_payment_window < interval '1 minute' OR p_payment_window > interval '1 day') THEN
    RAISE EXCEPTION USING ERRCODE = 'BKVAL', MESSAGE = 'payment_window must be between 1 minute and 1 day';
  END IF;
  UPDATE payment_settings
     SET mode = lower(p_mode), payment_window = coalesce(p_payment_window, payment_window), updated_at = now()
   RETURNING * INTO v_settings;
  RETURN json_build_object('mode', v_settings.mode, 'payment_window', v_settings.payment_window::text,
                           'updated_at', v_settings.updated_at);
END;
$$;


ALTER FUNCTION api.set_payment_mode(p_mode text, p_payment_window interval) OWNER TO booking_owner;

--
-- Name: FUNCTION set_payment_mode(p_mode text, p_payment_window interval); Type: COMMENT; Schema: api; Owner: booking_owner
--

COMMENT ON FUNCTION api.set_payment_mode(p_mode text, p_payment_window interval) IS '(DBA-only) Sets the payment mode: instant (complete pays at once: demos, tests) or provider (complete refuses with BKPRQ; checkout waits for the provider), and optionally how long a PENDING order holds its seats (1 minute .. 1 day). make run applies PAYMENT_MODE with it. Returns {mode, payment_window, updated_at}. Raises BKVAL.';


--
-- Name: set_rate_limit(text, text, integer, interval); Type: FUNCTION; Schema: api; Owner: booking_owner
--

CREATE FUNCTION api.set_rate_limit(p_class text, p_scope text, p_max_requests integer, p_period interval) RETURNS json
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
DECLARE
  v_rule rate_limit_rules;
BEGIN
  IF p_max_requests IS NULL THEN
    DELETE FROM rate_limit_rules WHERE class = p_class AND scope = p_scope RETURNING * INTO v_rule;
    RETURN json_build_object('class', p_class, 'scope', p_scope, 'removed', v_rule.class IS NOT NULL);
  END IF;
  IF p_class IS NULL OR p_scope IS NULL OR p_period IS NULL OR p_max_requests < 1
     OR p_period < interval '1 second' OR p_period > interval '1 day'
     OR p_class NOT IN ('auth', 'browse', 'bookings', 'admin', 'login_failures')
     OR p_scope NOT IN ('user', 'address', 'email')
     OR (p_class = 'login_failures') <> (p_scope = 'email') THEN
    RAISE EXCEPTION USING ERRCODE = 'BKVAL',
      MESSAGE = 'class auth|browse|bookings|admin with scope user|address, or login_failures with scope email; '
                'max_requests >= 1; period 1 second .. 1 day';
  END IF;
  INSERT INTO rate_limit_rules (class, scope, max_requests, period)
  VALUES (p_class, p_scope, p_max_requests, p_period)
  ON CONFLICT (class, scope) DO UPDATE SET max_requests = EXCLUDED.max_requests, period = EXCLUDED.period
  RETURNING * INTO v_rule;
  RETURN json_build_object('class', v_rule.class, 'scope', v_rule.scope,
                           'max_requests', v_rule.max_requests, 'period', v_rule.period);
END;
$$;


ALTER FUNCTION api.set_rate_limit(p_class text, p_scope text, p_max_requests integer, p_period interval) OWNER TO booking_owner;

--
-- Name: FUNCTION set_rate_limit(p_class text, p_scope text, p_max_requests integer, p_period interval); Type: COMMENT; Schema: api; Owner: booking_owner
--

COMMENT ON FUNCTION api.set_rate_limit(p_class text, p_scope text, p_max_requests integer, p_period interval) IS '(DBA-only) Sets a rate-limit rule, live for every gateway: SELECT api.set_rate_limit(''bookings'', ''user'', 120, ''1 minute''). A NULL max_requests removes the rule (no limit for that class and scope). Existing counters keep their state. Locks the rule row. Raises BKVAL.';


--
-- Name: set_user_role(text, text); Type: FUNCTION; Schema: api; Owner: booking_owner
--

CREATE FUNCTION api.set_user_role(p_email text, p_role text) RETURNS json
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
DECLARE
  v_user users;
  v_old_role text;
  v_change role_changes;
BEGIN
  IF p_role IS NULL OR p_role NOT IN ('admin', 'user') THEN
    RAISE EXCEPTION USING ERRCODE = 'BKVAL', MESSAGE = 'role must be admin or user';
  END IF;
  SELECT u.role INTO v_old_role FROM users u WHERE u.email = lower(btrim(p_email)) FOR NO KEY UPDATE;
  IF NOT FOUND THEN
    RAISE EXCEPTION USING ERRCODE = 'BKNTF', MESSAGE = 'user not found';
  END IF;
  UPDATE users SET role = p_role WHERE email = lower(btrim(p_email)) RETURNING * INTO v_user;
  IF v_old_role IS DISTINCT FROM p_role THEN
    -- At once (issue 9): every gateway applies the new role to the user's older tokens, and the
    -- user's sessions can no longer be refreshed (their next token comes from a new login).
    INSERT INTO role_changes AS c (user_id, role) VALUES (v_user.id, p_role)
    ON CONFLICT (user_id) DO UPDATE SET role = EXCLUDED.role, changed_at = EXCLUDED.changed_at
    RETURNING * INTO v_change;
    PERFORM pg_notify('booking_revocations',
                      format('r:%s:%s:%s', v_change.user_id, v_change.role, extract(epoch FROM v_change.changed_at)));
    PERFORM internal.revoke_sessions(
      ARRAY(SELECT s.id FROM sessions s WHERE s.user_id = v_user.id AND s.revoked_at IS NULL ORDER BY s.id),
      'role_changed', false);
  END IF;
  RETURN internal.user_json(v_user);
END;
$$;


ALTER FUNCTION api.set_user_role(p_email text, p_role text) OWNER TO booking_owner;

--
-- Name: FUNCTION set_user_role(p_email text, p_role text); Type: COMMENT; Schema: api; Owner: booking_owner
--

COMMENT ON FUNCTION api.set_user_role(p_email text, p_role text) IS '(DBA-only) Sets a user''s role (admin | user): SELECT api.set_user_role(''a@b.co'', ''admin''). A change takes effect at once: every gateway applies the new role to the user''s tokens (role_changes + NOTIFY booking_revocations), and the user''s sessions stop refreshing (log in again). Locks the user row, then the user''s session rows. Raises BKVAL, BKNTF.';


--
-- Name: set_waiting_room_rate(uuid, integer); Type: FUNCTION; Schema: api; Owner: booking_owner
--

CREATE FUNCTION api.set_waiting_room_rate(p_event_id uuid, p_rate integer) RETURNS json
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    SET lock_timeout TO '2s'
    AS $$
BEGIN
  IF p_rate IS NULL OR p_rate NOT BETWEEN 1 AND 1000000 THEN
    RAISE EXCEPTION USING ERRCODE = 'BKVAL', MESSAGE = 'admission_rate_per_minute must be between 1 and 1000000';
  END IF;
  PERFORM internal.waiting_room_row(p_event_id);
  -- The trigger waiting_room_rate_changed rebases under the old rate first.
  UPDATE events SET admission_rate_per_minute = p_rate WHERE id = p_event_id;
  RETURN (SELECT row_to_json(r) FROM api.waiting_room(p_event_id) r);
END;
$$;


ALTER FUNCTION api.set_waiting_room_rate(p_event_id uuid, p_rate integer) OWNER TO booking_owner;

--
-- Name: FUNCTION set_waiting_room_rate(p_event_id uuid, p_rate integer); Type: COMMENT; Schema: api; Owner: booking_owner
--

COMMENT ON FUNCTION api.set_waiting_room_rate(p_event_id uuid, p_rate integer) IS '(DBA-only) Changes the admission rate live (from now on; the position reached so far is kept). Returns api.waiting_room''s row as JSON. Raises BKVAL, BKNTF.';


--
-- Name: stuck_refunds(interval); Type: FUNCTION; Schema: api; Owner: booking_owner
--

CREATE FUNCTION api.stuck_refunds(p_older_than interval DEFAULT '00:15:00'::interval) RETURNS TABLE(refund_id uuid, order_id uuid, provider text, amount numeric, reason text, created_at timestamp with time zone, attempts integer, refusals integer, last_error text, job_id bigint, job_status text)
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
  SELECT r.id, r.order_id, r.provider, r.amount, r.reason, r.created_at, r.attempts, r.refusals, r.last_error,
         r.job_id, j.status::text
    FROM payment_refunds r LEFT JOIN procrastinate_jobs j ON j.id = r.job_id
   WHERE r.status = 'PENDING' AND r.created_at <= now() - coalesce(p_older_than, interval '0')
   ORDER BY r.created_at
$$;


ALTER FUNCTION api.stuck_refunds(p_older_than interval) OWNER TO booking_owner;

--
-- Name: FUNCTION stuck_refunds(p_older_than interval); Type: COMMENT; Schema: api; Owner: booking_owner
--

COMMENT ON FUNCTION api.stuck_refunds(p_older_than interval) IS '(DBA-only) Refunds not DONE after p_older_than (default 15 minutes), oldest first, with their attempts, refusals (the provider said no for good), last error and their job''s status. A failed job: fix the cause and api.retry_job(job_id) (after a refusal the provider is asked under a new request id), or refund by hand and record it: api.record_refund(refund_id, true, ''<their ref>''). Locks nothing.';


--
-- Name: unresolved_payments(); Type: FUNCTION; Schema: api; Owner: booking_owner
--

CREATE FUNCTION api.unresolved_payments() RETURNS TABLE(id bigint, received_at timestamp with time zone, provider text, provider_txn_id text, transaction_id text, amount numeric, outcome text, order_id uuid, raw jsonb)
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
  -- Verified money we kept without an order to put it on or a refund of it: an unknown
  -- reference, or a wrong amount with no amount to give back.
  SELECT e.id, e.received_at, e.provider, e.provider_txn_id, e.transaction_id, e.amount, e.outcome,
         e.order_id, e.raw
    FROM payment_events e
   WHERE e.kind = 'success' AND e.outcome IN ('unknown_reference', 'wrong_amount') AND e.resolved_at IS NULL
     AND NOT EXISTS (SELECT 1 FROM payment_refunds r WHERE r.payment_event_id = e.id)
   ORDER BY e.id
$$;


ALTER FUNCTION api.unresolved_payments() OWNER TO booking_owner;

--
-- Name: FUNCTION unresolved_payments(); Type: COMMENT; Schema: api; Owner: booking_owner
--

COMMENT ON FUNCTION api.unresolved_payments() IS '(DBA-only) Successful provider events whose money is neither on an order nor being refunded: unknown_reference (no such payment of that provider) and wrong_amount without an amount, oldest first, until a DBA settles them with the provider and marks them (api.resolve_payment_event). Should be empty. Locks nothing.';


--
-- Name: update_event(uuid, jsonb); Type: FUNCTION; Schema: api; Owner: booking_owner
--

CREATE FUNCTION api.update_event(p_event_id uuid, p_changes jsonb) RETURNS json
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    SET lock_timeout TO '2s'
    AS $$
DECLARE
  v_event events;
  v_slug text;
  v_name text;
  v_description text;
  v_banner_url text;
  v_location text;
  v_start timestamptz;
  v_end timestamptz;
  v_cap integer;
  v_queue boolean;
  v_rate integer;
BEGIN
  PERFORM internal.check_change_keys(p_changes,
    ARRAY['slug', 'name', 'description', 'banner_url', 'location', 'start_time', 'end_time',
          'max_tickets_per_user', 'queue_enabled', 'admission_rate_per_minute']);
  SELECT * INTO v_event FROM events WHERE id = p_event_id FOR NO KEY UPDATE;
  IF NOT FOUND THEN
    RAISE EXCEPTION USING ERRCODE = 'BKNTF', MESSAGE = 'event not found';
  END IF;
  IF v_event.status IN ('CANCELLED', 'ENDED') THEN
    RAISE EXCEPTION USING ERRCODE = 'BKIST', MESSAGE = format('a %s event cannot be edited', v_event.status);
  END IF;

  -- Merge into plain text values first: a too-long value is a BKVAL, not a type error.
  v_slug := CASE WHEN p_changes ? 'slug' THEN p_changes->>'slug' ELSE v_event.slug END;
  v_name := CASE WHEN p_changes ? 'name' THEN btrim(p_changes->>'name') ELSE v_event.name END;
  v_description := CASE WHEN p_changes ? 'description' THEN p_changes->>'description' ELSE v_event.description END;
  v_banner_url := CASE WHEN p_changes ? 'banner_url' THEN p_changes->>'banner_url' ELSE v_event.banner_url END;
  v_location := CASE WHEN p_changes ? 'location' THEN btrim(p_changes->>'location') ELSE v_event.location END;
  v_start := CASE WHEN p_changes ? 'start_time' THEN (p_changes->>'start_time')::timestamptz ELSE v_event.start_time END;
  v_end := CASE WHEN p_changes ? 'end_time' THEN (p_changes->>'end_time')::timestamptz ELSE v_event.end_time END;
  PERFORM internal.check_event(v_slug, v_name, v_location, v_banner_url, v_start, v_end);
  v_cap := internal.cap_change(p_changes, 'max_tickets_per_user', v_event.max_tickets_per_user);
  v_queue := v_event.queue_enabled;
  IF p_changes ? 'queue_enabled' THEN
    IF jsonb_typeof(p_changes -> 'queue_enabled') <> 'boolean' THEN
      RAISE EXCEPTION USING ERRCODE = 'BKVAL', MESSAGE = 'queue_enabled must be true or false';
    END IF;
    v_queue := (p_changes ->> 'queue_enabled')::boolean;
  END IF;
  v_rate := internal.cap_change(p_changes, 'admission_rate_per_minute', v_event.admission_rate_per_minute);
  PERFORM internal.check_waiting_room(v_queue, v_rate);
  IF v_slug <> v_event.slug AND EXISTS (SELECT 1 FROM events WHERE slug = v_slug) THEN
    RAISE EXCEPTION USING ERRCODE = 'BKSLG', MESSAGE = 'an event with this slug exists';
  END IF;

  UPDATE events
     SET slug = v_slug, name = v_name, description = v_description, banner_url = v_banner_url,
         location = v_location, start_time = v_start, end_time = v_end, max_tickets_per_user = v_cap,
         queue_enabled = v_queue, admission_rate_per_minute = v_rate
   WHERE id = p_event_id
  RETURNING * INTO v_event;
  RETURN internal.event_json(v_event, true);
END;
$$;


ALTER FUNCTION api.update_event(p_event_id uuid, p_changes jsonb) OWNER TO booking_owner;

--
-- Name: FUNCTION update_event(p_event_id uuid, p_changes jsonb); Type: COMMENT; Schema: api; Owner: booking_owner
--

COMMENT ON FUNCTION api.update_event(p_event_id uuid, p_changes jsonb) IS 'Patches an event: p_changes is a JSON object with any of slug, name, description, banner_url, location, start_time, end_time, max_tickets_per_user (null: no cap; applies to reserves from now on, seats already held stay), queue_enabled, admission_rate_per_minute (a change applies from now on: the waiting room keeps the position it reached). Locks the event row (and, through a trigger, its waiting_rooms row). Raises BKVAL, BKNTF, BKSLG, BKIST (cancelled or ended events are frozen).';


--
-- Name: update_ticket_type(uuid, jsonb); Type: FUNCTION; Schema: api; Owner: booking_owner
--

CREATE FUNCTION api.update_ticket_type(p_ticket_type_id uuid, p_changes jsonb) RETURNS json
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    SET lock_timeout TO '2s'
    AS $$
DECLARE
  v_tt ticket_types;
  v_event events;
  v_name text;
  v_price numeric;
  v_start timestamptz;
  v_end timestamptz;
  v_cap integer;
BEGIN
  PERFORM internal.check_change_keys(p_changes,
    ARRAY['name', 'price', 'start_sale_time', 'end_sale_time', 'max_per_user']);
  SELECT * INTO v_tt FROM ticket_types WHERE id = p_ticket_type_id FOR NO KEY UPDATE;
  IF NOT FOUND THEN
    RAISE EXCEPTION USING ERRCODE = 'BKNTF', MESSAGE = 'ticket type not found';
  END IF;

  v_name := CASE WHEN p_changes ? 'name' THEN btrim(p_changes->>'name') ELSE v_tt.name END;
  v_price := CASE WHEN p_changes ? 'price' THEN (p_changes->>'price')::numeric ELSE v_tt.price END;
  v_start := CASE WHEN p_changes ? 'start_sale_time'
                  THEN (p_changes->>'start_sale_time')::timestamptz ELSE v_tt.start_sale_time END;
  v_end := CASE WHEN p_changes ? 'end_sale_time'
                THEN (p_changes->>'end_sale_time')::timestamptz ELSE v_tt.end_sale_time END;
  PERFORM internal.check_ticket_type(v_name, v_price, v_tt.initial_quantity, v_start, v_end);
  v_cap := internal.cap_change(p_changes, 'max_per_user', v_tt.max_per_user);

  UPDATE ticket_types
     SET name = v_name, price = v_price, start_sale_time = v_start, end_sale_time = v_end,
         max_per_user = v_cap
   WHERE id = p_ticket_type_id
  RETURNING * INTO v_tt;
  SELECT * INTO v_event FROM events WHERE id = v_tt.event_id;
  RETURN internal.ticket_type_json(v_tt, v_event, true);
END;
$$;


ALTER FUNCTION api.update_ticket_type(p_ticket_type_id uuid, p_changes jsonb) OWNER TO booking_owner;

--
-- Name: FUNCTION update_ticket_type(p_ticket_type_id uuid, p_changes jsonb); Type: COMMENT; Schema: api; Owner: booking_owner
--

COMMENT ON FUNCTION api.update_ticket_type(p_ticket_type_id uuid, p_changes jsonb) IS 'Patches a ticket type: p_changes with any of name, price, start_sale_time, end_sale_time, max_per_user (null: no cap; applies to reserves from now on) (stock is changed only by bookings). Locks the ticket type row (same lock reserve takes). Raises BKVAL, BKNTF.';


--
-- Name: user_sessions(text); Type: FUNCTION; Schema: api; Owner: booking_owner
--

CREATE FUNCTION api.user_sessions(p_email text) RETURNS TABLE(session_id uuid, created_at timestamp with time zone, expires_at timestamp with time zone, revoked_at timestamp with time zone, revoked_reason text, access_denied boolean, refresh_tokens bigint, last_refresh timestamp with time zone)
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
  SELECT s.id, s.created_at, s.expires_at, s.revoked_at, s.revoked_reason,
         EXISTS (SELECT 1 FROM revoked_sessions r WHERE r.session_id = s.id),
         (SELECT count(*) FROM refresh_tokens t WHERE t.session_id = s.id),
         (SELECT max(t.created_at) FROM refresh_tokens t WHERE t.session_id = s.id AND t.parent_hash IS NOT NULL)
    FROM sessions s JOIN users u ON u.id = s.user_id
   WHERE u.email = lower(btrim(p_email))
   ORDER BY s.created_at DESC
$$;


ALTER FUNCTION api.user_sessions(p_email text) OWNER TO booking_owner;

--
-- Name: FUNCTION user_sessions(p_email text); Type: COMMENT; Schema: api; Owner: booking_owner
--

COMMENT ON FUNCTION api.user_sessions(p_email text) IS '(DBA-only) A user''s sessions, newest first: SELECT * FROM api.user_sessions(''a@b.co''). access_denied: its access tokens are refused (deny-list); revoked_at alone stops refreshing. Locks nothing.';


--
-- Name: waiting_room(uuid); Type: FUNCTION; Schema: api; Owner: booking_owner
--

CREATE FUNCTION api.waiting_room(p_event_id uuid) RETURNS TABLE(event_id uuid, queue_enabled boolean, admission_rate_per_minute integer, joined integer, serving integer, admitted integer, waiting integer, tokens_issued bigint, paused boolean, opened_at timestamp with time zone, shuffled_entries integer, shuffle_seed text, shuffled_at timestamp with time zone)
    LANGUAGE sql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
  SELECT e.id, e.queue_enabled, e.admission_rate_per_minute, coalesce(w.joined, 0),
         coalesce(internal.waiting_room_serving(w, e.admission_rate_per_minute, e.queue_enabled), 0) AS serving,
         least(coalesce(internal.waiting_room_serving(w, e.admission_rate_per_minute, e.queue_enabled), 0),
               coalesce(w.joined, 0)),
         greatest(coalesce(w.joined, 0) - coalesce(internal.waiting_room_serving(w, e.admission_rate_per_minute,
                                                                                 e.queue_enabled), 0), 0),
         (SELECT count(*) FROM waiting_room_entries x WHERE x.event_id = e.id AND x.admitted_at IS NOT NULL),
         w.paused_at IS NOT NULL, w.opened_at, w.shuffled_entries, w.shuffle_seed, w.shuffled_at
    FROM events e LEFT JOIN waiting_rooms w ON w.event_id = e.id
   WHERE e.id = p_event_id
$$;


ALTER FUNCTION api.waiting_room(p_event_id uuid) OWNER TO booking_owner;

--
-- Name: FUNCTION waiting_room(p_event_id uuid); Type: COMMENT; Schema: api; Owner: booking_owner
--

COMMENT ON FUNCTION api.waiting_room(p_event_id uuid) IS '(DBA-only) An event''s waiting room: SELECT * FROM api.waiting_room(''<event id>''): people joined, serving position, admitted, waiting, tokens issued, rate, paused, the opening and its shuffle (seed, count, time).';


--
-- Name: waiting_room_audit(uuid); Type: FUNCTION; Schema: api; Owner: booking_owner
--

CREATE FUNCTION api.waiting_room_audit(p_event_id uuid) RETURNS TABLE(user_id uuid, seq integer, recorded_position integer, recomputed_position integer)
    LANGUAGE sql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
  -- The shuffle again from its recorded seed: rows where the recorded position differs (none:
  -- the order is the seeded one). Later joiners must have position = seq.
  WITH w AS (SELECT * FROM waiting_rooms WHERE event_id = p_event_id AND shuffle_seed IS NOT NULL),
       pre AS (SELECT x.user_id, x.seq, x.position,
                      row_number() OVER (ORDER BY internal.shuffle_key(w.shuffle_seed, x.user_id), x.user_id)::integer AS rank
                 FROM waiting_room_entries x JOIN w ON x.event_id = w.event_id
                WHERE x.seq <= w.shuffled_through)
  SELECT pre.user_id, pre.seq, pre.position, pre.rank FROM pre WHERE pre.position IS DISTINCT FROM pre.rank
  UNION ALL
  SELECT x.user_id, x.seq, x.position, x.seq
    FROM waiting_room_entries x JOIN w ON x.event_id = w.event_id
   WHERE x.seq > w.shuffled_through AND x.position IS DISTINCT FROM x.seq
$$;


ALTER FUNCTION api.waiting_room_audit(p_event_id uuid) OWNER TO booking_owner;

--
-- Name: FUNCTION waiting_room_audit(p_event_id uuid); Type: COMMENT; Schema: api; Owner: booking_owner
--

COMMENT ON FUNCTION api.waiting_room_audit(p_event_id uuid) IS '(DBA-only) Checks an event''s recorded admission order: recomputes the opening shuffle from its seed (sha256(seed || '':'' || user id), ascending) and lists every entry whose recorded position differs; later joiners must be in arrival order (position = seq). No rows: consistent.';


--
-- Name: waiting_room_positions(uuid, uuid[]); Type: FUNCTION; Schema: api; Owner: booking_owner
--

CREATE FUNCTION api.waiting_room_positions(p_event_id uuid, p_user_ids uuid[]) RETURNS TABLE(user_id uuid, "position" integer)
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
  -- At most 10,000 at a time: a gateway asks for the fans it knows in chunks.
  SELECT x.user_id, x.position
    FROM waiting_room_entries x
   WHERE x.event_id = p_event_id AND x.position IS NOT NULL
     AND x.user_id = ANY (p_user_ids[1:10000])
$$;


ALTER FUNCTION api.waiting_room_positions(p_event_id uuid, p_user_ids uuid[]) OWNER TO booking_owner;

--
-- Name: FUNCTION waiting_room_positions(p_event_id uuid, p_user_ids uuid[]); Type: COMMENT; Schema: api; Owner: booking_owner
--

COMMENT ON FUNCTION api.waiting_room_positions(p_event_id uuid, p_user_ids uuid[]) IS 'The positions of these users in an event''s waiting room (those that have one; at most 10,000 users a call). A gateway asks once the opening''s shuffle is done, for every fan it knows who joined before it, so their next polls are answered from its memory instead of each one calling the database at the same moment. Reads only.';


--
-- Name: waiting_room_state(); Type: FUNCTION; Schema: api; Owner: booking_owner
--

CREATE FUNCTION api.waiting_room_state() RETURNS json
    LANGUAGE sql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
  SELECT json_build_object(
    'now', (extract(epoch FROM clock_timestamp()) * 1000000)::bigint,
    'rooms', coalesce((SELECT json_agg(internal.waiting_room_mirror(w, e))
                         FROM waiting_rooms w JOIN events e ON e.id = w.event_id
                        WHERE e.queue_enabled AND e.end_time > now()), '[]'::json))
$$;


ALTER FUNCTION api.waiting_room_state() OWNER TO booking_owner;

--
-- Name: FUNCTION waiting_room_state(); Type: COMMENT; Schema: api; Owner: booking_owner
--

COMMENT ON FUNCTION api.waiting_room_state() IS 'What every gateway mirrors, loaded whole when its listener (re)connects: {now (this server''s clock, Unix microseconds), rooms: [internal.waiting_room_mirror of every room of an event on sale with its room on]}. Changes then come by NOTIFY booking_waiting_rooms. Locks nothing.';


--
-- Name: waiting_room_status(uuid, uuid); Type: FUNCTION; Schema: api; Owner: booking_owner
--

CREATE FUNCTION api.waiting_room_status(p_event_id uuid, p_user_id uuid) RETURNS json
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    SET lock_timeout TO '2s'
    AS $$
DECLARE
  e events := internal.waiting_room_event(p_event_id);
  w waiting_rooms;
BEGIN
  SELECT * INTO w FROM waiting_rooms WHERE event_id = p_event_id;
  IF FOUND AND w.shuffle_seed IS NULL THEN
    w := internal.waiting_room_open(p_event_id, p_wait => false);  -- writes once per event, at the opening
  END IF;
  IF w.event_id IS NULL THEN
    RAISE EXCEPTION USING ERRCODE = 'BKNTF', MESSAGE = 'you are not in this waiting room',
      HINT = 'POST /events/{event_id}/queue joins it';
  END IF;
  RETURN internal.waiting_room_answer(e, w, p_user_id);
END;
$$;


ALTER FUNCTION api.waiting_room_status(p_event_id uuid, p_user_id uuid) OWNER TO booking_owner;

--
-- Name: FUNCTION waiting_room_status(p_event_id uuid, p_user_id uuid); Type: COMMENT; Schema: api; Owner: booking_owner
--

COMMENT ON FUNCTION api.waiting_room_status(p_event_id uuid, p_user_id uuid) IS 'The caller''s place now: {event_id, status: waiting | admitted, position, ahead, eta_seconds, admission_token, admission_expires_at}. Reads only, except once per event (the shuffle at the opening) and once per user (the moment they are first told "admitted"). Raises BKNTF (no waiting room, or not joined).';


--
-- Name: webhook_attempts(uuid, uuid, integer); Type: FUNCTION; Schema: api; Owner: booking_owner
--

CREATE FUNCTION api.webhook_attempts(p_user_id uuid, p_webhook_id uuid, p_limit integer DEFAULT NULL::integer) RETURNS json
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
BEGIN
  IF p_limit < 1 THEN
    RAISE EXCEPTION USING ERRCODE = 'BKVAL', MESSAGE = 'limit must be at least 1';
  END IF;
  IF NOT EXISTS (SELECT 1 FROM webhooks WHERE id = p_webhook_id AND created_by = p_user_id) THEN
    RAISE EXCEPTION USING ERRCODE = 'BKNTF', MESSAGE = 'webhook not found';
  END IF;
  RETURN coalesce((
    SELECT json_agg(json_build_object(
             'delivery_id', page.delivery_id, 'notification_id', page.notification_id,
             'event_type', page.event_type, 'attempt', page.attempt, 'attempted_at', page.attempted_at,
             'status_code', page.status_code, 'error', page.error, 'duration_ms', page.duration_ms,
             'outcome', page.outcome, 'delivery_status', page.delivery_status)
             ORDER BY page.attempted_at DESC, page.id DESC)
      FROM (SELECT a.id, a.delivery_id, d.notification_id, d.event_type, a.attempt, a.attempted_at,
                   a.status_code, a.error, a.duration_ms, a.outcome, d.status AS delivery_status
              FROM webhook_deliveries d JOIN webhook_attempts a ON a.delivery_id = d.id
             WHERE d.webhook_id = p_webhook_id
             ORDER BY a.attempted_at DESC, a.id DESC
             LIMIT p_limit) page), '[]'::json);
END;
$$;


ALTER FUNCTION api.webhook_attempts(p_user_id uuid, p_webhook_id uuid, p_limit integer) OWNER TO booking_owner;

--
-- Name: FUNCTION webhook_attempts(p_user_id uuid, p_webhook_id uuid, p_limit integer); Type: COMMENT; Schema: api; Owner: booking_owner
--

COMMENT ON FUNCTION api.webhook_attempts(p_user_id uuid, p_webhook_id uuid, p_limit integer) IS 'The HTTP attempts of one of the caller''s webhooks, newest first, at most p_limit (NULL: all): {delivery_id, notification_id, event_type, attempt, attempted_at, status_code, error, duration_ms, outcome, delivery_status}. Locks nothing. Raises BKVAL (limit below 1), BKNTF (unknown or not the caller''s).';


--
-- Name: webhook_delivery(uuid); Type: FUNCTION; Schema: api; Owner: booking_owner
--

CREATE FUNCTION api.webhook_delivery(p_delivery_id uuid) RETURNS json
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
DECLARE
  v_result json;
BEGIN
  SELECT json_build_object(
           'id', d.id, 'webhook_id', d.webhook_id, 'url', w.url, 'secret', w.secret, 'active', w.active,
           'event_type', d.event_type, 'notification_id', d.notification_id, 'body', d.body,
           'status', d.status, 'attempts', d.attempts, 'created_at', d.created_at)
    INTO v_result
    FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id
   WHERE d.id = p_delivery_id;
  IF v_result IS NULL THEN
    RAISE EXCEPTION USING ERRCODE = 'BKNTF', MESSAGE = 'webhook delivery not found';
  END IF;
  RETURN v_result;
END;
$$;


ALTER FUNCTION api.webhook_delivery(p_delivery_id uuid) OWNER TO booking_owner;

--
-- Name: FUNCTION webhook_delivery(p_delivery_id uuid); Type: COMMENT; Schema: api; Owner: booking_owner
--

COMMENT ON FUNCTION api.webhook_delivery(p_delivery_id uuid) IS '(worker) What one webhook delivery sends and where: {id, webhook_id, url, secret, active, event_type, notification_id, body (the exact bytes to send and sign), status, attempts, created_at}. Locks nothing. Raises BKNTF.';


--
-- Name: admission_token(uuid, uuid, bigint, bytea); Type: FUNCTION; Schema: internal; Owner: booking_owner
--

CREATE FUNCTION internal.admission_token(p_event_id uuid, p_user_id uuid, p_expires bigint, p_secret bytea) RETURNS text
    LANGUAGE sql IMMUTABLE
    AS $$
  -- v1.<expiry, Unix seconds>.<hex HMAC-SHA256 of "v1|event|user|expiry"> (internal.admission_valid
  -- checks the same message, written out there).
  SELECT 'v1.' || p_expires || '.'
         || encode(public.hmac(convert_to('v1|' || p_event_id || '|' || p_user_id || '|' || p_expires, 'UTF8'),
                               p_secret, 'sha256'), 'hex')
$$;


ALTER FUNCTION internal.admission_token(p_event_id uuid, p_user_id uuid, p_expires bigint, p_secret bytea) OWNER TO booking_owner;

--
-- Name: FUNCTION admission_token(p_event_id uuid, p_user_id uuid, p_expires bigint, p_secret bytea); Type: COMMENT; Schema: internal; Owner: booking_owner
--

COMMENT ON FUNCTION internal.admission_token(p_event_id uuid, p_user_id uuid, p_expires bigint, p_secret bytea) IS 'An admission token: v1.<expiry epoch>.<HMAC-SHA256 over event, user and expiry under admission_secret>.';


--
-- Name: admission_ttl(); Type: FUNCTION; Schema: internal; Owner: booking_owner
--

CREATE FUNCTION internal.admission_ttl() RETURNS interval
    LANGUAGE sql STABLE
    AS $$
  SELECT coalesce(nullif(current_setting('booking.admission_ttl', true), ''), '10 minutes')::interval
$$;


ALTER FUNCTION internal.admission_ttl() OWNER TO booking_owner;

--
-- Name: FUNCTION admission_ttl(); Type: COMMENT; Schema: internal; Owner: booking_owner
--

COMMENT ON FUNCTION internal.admission_ttl() IS 'How long an admission lasts from the first poll that said "admitted": setting booking.admission_ttl (default 10 minutes, like the hold period).';


--
-- Name: admission_valid(text, uuid, uuid, bytea); Type: FUNCTION; Schema: internal; Owner: booking_owner
--

CREATE FUNCTION internal.admission_valid(p_token text, p_event_id uuid, p_user_id uuid, p_secret bytea) RETURNS boolean
    LANGUAGE sql STABLE
    AS $$
  -- The shape by plain string tests (a regex with a bounded repetition cost ~5 us a call here),
  -- then the expiry, then the token against the one internal.admission_token signs (written
  -- out here: the call cost ~2 us more), compared as sha256 of both so the comparison's timing
  -- says nothing about the expected MAC. CASE keeps the order: the cast runs only on digits. An
  -- expiry with leading zeros is signed by nobody, so its MAC never matches.
  SELECT CASE
    WHEN p_token IS NULL OR p_secret IS NULL OR left(p_token, 3) <> 'v1.' OR length(p_token) > 100 THEN false
    WHEN length(split_part(p_token, '.', 2)) NOT BETWEEN 1 AND 12
         OR translate(split_part(p_token, '.', 2), '0123456789', '') <> '' THEN false
    WHEN split_part(p_token, '.', 2)::bigint <= extract(epoch FROM now()) THEN false
    -- The whole token against the one that would be signed (not only its third part: anything
    -- after it, '.junk', made another string that passed, found in review).
    ELSE public.digest(p_token, 'sha256')
       = public.digest('v1.' || split_part(p_token, '.', 2) || '.'
                       || encode(public.hmac(convert_to('v1|' || p_event_id || '|' || p_user_id || '|'
                                                        || split_part(p_token, '.', 2), 'UTF8'),
                                             p_secret, 'sha256'), 'hex'), 'sha256')
  END
$$;


ALTER FUNCTION internal.admission_valid(p_token text, p_event_id uuid, p_user_id uuid, p_secret bytea) OWNER TO booking_owner;

--
-- Name: FUNCTION admission_valid(p_token text, p_event_id uuid, p_user_id uuid, p_secret bytea); Type: COMMENT; Schema: internal; Owner: booking_owner
--

COMMENT ON FUNCTION internal.admission_valid(p_token text, p_event_id uuid, p_user_id uuid, p_secret bytea) IS 'True when p_token is an unexpired admission token of this user for this event.';


--
-- Name: apply_payment_event(text, text, text, numeric, boolean, jsonb); Type: FUNCTION; Schema: internal; Owner: booking_owner
--

CREATE FUNCTION internal.apply_payment_event(p_provider text, p_provider_txn_id text, p_transaction_id text, p_amount numeric, p_success boolean, p_raw jsonb) RETURNS json
    LANGUAGE plpgsql
    AS $$
DECLARE
  v_provider text := upper(btrim(p_provider));
  v_kind text;
  v_payment public.payments;
  v_order public.orders;
  v_event_id bigint;
  v_outcome text;
  v_prior record;
  v_reason text;
BEGIN
  IF v_provider = 'BANK' THEN
    v_provider := 'BANKING';
  END IF;
  IF v_provider IS NULL OR v_provider NOT IN ('MOMO', 'ZALOPAY', 'BANKING', 'CARD') THEN
    RAISE EXCEPTION USING ERRCODE = 'BKVAL', MESSAGE = 'provider must be one of MOMO, ZALOPAY, BANKING, CARD';
  END IF;
  -- NULL fails every comparison here explicitly: a NULL reference would escape the inbox's
  -- unique indexes (NULLs are distinct) and so be applied twice.
  IF p_provider_txn_id IS NULL OR p_provider_txn_id = '' OR char_length(p_provider_txn_id) > 255
     OR p_transaction_id IS NULL OR p_transaction_id = '' OR char_length(p_transaction_id) > 255
     OR p_success IS NULL THEN
    RAISE EXCEPTION USING ERRCODE = 'BKVAL',
      MESSAGE = 'provider_txn_id and transaction_id (1-255 characters each) and success are required';
  END IF;
  IF p_amount < 0 OR p_amount >= 1e12 THEN
    RAISE EXCEPTION USING ERRCODE = 'BKVAL', MESSAGE = 'amount must be between 0 and 999999999999.99';
  END IF;
  v_kind := CASE WHEN p_success THEN 'success' ELSE 'failure' END;

  -- Our payment, read without a lock (the reference and method never change).
  SELECT * INTO v_payment FROM public.payments WHERE transaction_id = p_transaction_id;
  v_outcome := CASE
    WHEN NOT FOUND OR v_payment.payment_method <> v_provider THEN 'unknown_reference'
    WHEN p_success AND (p_amount IS NULL OR (p_amount <> v_payment.amount AND p_amount <> round(v_payment.amount)))
      THEN 'wrong_amount'
  END;

  -- 1. The inbox key: the first lock. A second copy of the same provider event waits here for
  -- the first one's commit, then finds it and changes nothing.
  INSERT INTO public.payment_events AS pe
         (provider, provider_txn_id, transaction_id, kind, amount, raw, outcome, order_id)
  VALUES (v_provider, p_provider_txn_id, p_transaction_id, v_kind, p_amount, p_raw,
          coalesce(v_outcome, 'ignored'), CASE WHEN v_outcome = 'unknown_reference' THEN NULL ELSE v_payment.order_id END)
  ON CONFLICT DO NOTHING
  RETURNING pe.id INTO v_event_id;
  IF v_event_id IS NULL THEN
    SELECT pe.outcome, pe.order_id INTO v_prior FROM public.payment_events pe
     WHERE pe.provider = v_provider AND pe.provider_txn_id = p_provider_txn_id
       AND (pe.kind = 'success' OR (pe.kind = v_kind AND pe.transaction_id IS NOT DISTINCT FROM p_transaction_id))
     ORDER BY pe.id LIMIT 1;
    RETURN json_build_object('outcome', 'duplicate', 'order_id', v_prior.order_id, 'first_outcome', v_prior.outcome);
  END IF;
  IF v_outcome = 'wrong_amount' AND p_amount > 0 THEN
    -- Verified money of the wrong amount: it goes back as it came (the order does not change,
    -- no seats, no ticket type lock; the refund row locks the order's key only). Without an
    -- amount there is nothing to refund: api.unresolved_payments lists it for a DBA, as it
    -- lists unknown references.
    RETURN json_build_object('outcome', v_outcome, 'order_id', v_payment.order_id,
      'refund_id', internal.start_refund(v_payment.order_id, 'wrong_amount', p_amount, p_provider_txn_id, v_event_id));
  END IF;
  IF v_outcome IS NOT NULL THEN
    RETURN json_build_object('outcome', v_outcome,
                             'order_id', CASE WHEN v_outcome = 'unknown_reference' THEN NULL ELSE v_payment.order_id END);
  END IF;

  -- 2. The order's ticket types, then 3. the order, re-checked under its lock.
  -- A success may re-take seats (a late payment): the buyer's cap locks too, as reserve takes them.
  PERFORM internal.lock_order_types(v_payment.order_id);
  IF p_success THEN
    PERFORM internal.lock_order_buyer(v_payment.order_id);
  END IF;
  SELECT * INTO STRICT v_order FROM public.orders WHERE id = v_payment.order_id FOR NO KEY UPDATE;
  SELECT * INTO STRICT v_payment FROM public.payments WHERE id = v_payment.id FOR UPDATE;

  IF NOT p_success THEN
    IF v_order.status = 'PENDING' THEN
      UPDATE public.orders SET status = 'CANCELLED', updated_at = now() WHERE id = v_order.id;
      UPDATE public.payments SET status = 'FAILED' WHERE id = v_payment.id;
      PERFORM internal.release_order_seats(v_order.id);
      v_outcome := 'cancelled';
    ELSE
      v_outcome := 'ignored';
    END IF;
  ELSIF v_order.status = 'PENDING' THEN
    IF EXISTS (SELECT 1 FROM public.order_items i
                 JOIN public.ticket_types tt ON tt.id = i.ticket_type_id
                 JOIN public.events e ON e.id = tt.event_id
                WHERE i.order_id = v_order.id AND e.status <> 'PUBLISHED') THEN
      -- The event was cancelled meanwhile: the money goes back, and so do the seats.
      UPDATE public.orders SET status = 'REFUND_PENDING', updated_at = now() WHERE id = v_order.id;
      UPDATE public.payments SET status = 'SUCCESS', payment_time = now(), provider_txn_id = p_provider_txn_id
       WHERE id = v_payment.id;
      PERFORM internal.release_order_seats(v_order.id);
      PERFORM internal.start_refund(v_order.id, 'event_cancelled', p_amount, p_provider_txn_id, v_event_id);
      v_outcome := 'refund_pending';
    ELSE
      -- Its seats are still held (a PENDING order counts as sold until the expiry releases
      -- it), so a success past the deadline that beat the expiry pays with them too.
      PERFORM internal.issue_order(v_order.id, p_provider_txn_id);
      v_outcome := CASE WHEN v_order.payment_deadline < now() THEN 'late_paid' ELSE 'paid' END;
    END IF;
  ELSIF v_order.status IN ('TIMEOUT', 'CANCELLED') THEN
    -- Money after the seats went back: re-take them under the types' locks if they can still
    -- be had and the buyer's caps allow them (the buyer may have bought others meanwhile), else
    -- give the money back. Never a paid order without tickets, never an oversell, never past a cap.
    IF internal.order_over_cap(v_order.id) THEN
      v_reason := 'late_over_cap';
    ELSIF internal.take_order_seats(v_order.id) THEN
      PERFORM internal.issue_order(v_order.id, p_provider_txn_id);
      v_outcome := 'late_paid';
    ELSE
      v_reason := 'late_no_seats';
    END IF;
    IF v_reason IS NOT NULL THEN
      UPDATE public.orders SET status = 'REFUND_PENDING', updated_at = now() WHERE id = v_order.id;
      UPDATE public.payments SET status = 'SUCCESS', payment_time = now(), provider_txn_id = p_provider_txn_id
       WHERE id = v_payment.id;
      PERFORM internal.start_refund(v_order.id, v_reason, p_amount, p_provider_txn_id, v_event_id);
      v_outcome := 'refund_pending';
    END IF;
  ELSE
    -- PAID, REFUND_PENDING or REFUNDED already, by another provider transaction: this money
    -- is a duplicate and goes back; the order does not change.
    PERFORM internal.start_refund(v_order.id, 'duplicate', p_amount, p_provider_txn_id, v_event_id);
    v_outcome := 'refund_pending';
  END IF;

  UPDATE public.payment_events SET outcome = v_outcome WHERE id = v_event_id;
  RETURN json_build_object('outcome', v_outcome, 'order_id', v_order.id);
END;
$$;


ALTER FUNCTION internal.apply_payment_event(p_provider text, p_provider_txn_id text, p_transaction_id text, p_amount numeric, p_success boolean, p_raw jsonb) OWNER TO booking_owner;

--
-- Name: FUNCTION apply_payment_event(p_provider text, p_provider_txn_id text, p_transaction_id text, p_amount numeric, p_success boolean, p_raw jsonb); Type: COMMENT; Schema: internal; Owner: booking_owner
--

COMMENT ON FUNCTION internal.apply_payment_event(p_provider text, p_provider_txn_id text, p_transaction_id text, p_amount numeric, p_success boolean, p_raw jsonb) IS 'Applies one verified provider event (see api.apply_payment_event).';


--
-- Name: buyer_lock_key(uuid, uuid); Type: FUNCTION; Schema: internal; Owner: booking_owner
--

CREATE FUNCTION internal.buyer_lock_key(p_event_id uuid, p_user_id uuid) RETURNS bigint
    LANGUAGE sql IMMUTABLE
    AS $$
  -- The transaction advisory lock that serialises one buyer's reserves in one event (the event
  -- cap spans ticket types, so their row locks alone do not). Seed 9: our own key space.
  SELECT hashtextextended(p_event_id::text || '/' || p_user_id::text, 9)
$$;


ALTER FUNCTION internal.buyer_lock_key(p_event_id uuid, p_user_id uuid) OWNER TO booking_owner;

--
-- Name: FUNCTION buyer_lock_key(p_event_id uuid, p_user_id uuid); Type: COMMENT; Schema: internal; Owner: booking_owner
--

COMMENT ON FUNCTION internal.buyer_lock_key(p_event_id uuid, p_user_id uuid) IS 'The pg_advisory_xact_lock key of (event, buyer): taken by reserves under an event cap.';


--
-- Name: cancel_event_orders(uuid, integer); Type: FUNCTION; Schema: internal; Owner: booking_owner
--

CREATE FUNCTION internal.cancel_event_orders(p_event_id uuid, p_limit integer) RETURNS json
    LANGUAGE plpgsql
    AS $$
DECLARE
  v_order record;
  v_refunded integer := 0;
  v_cancelled integer := 0;
  v_remaining integer;
BEGIN
  -- One batch of a cancelled event's orders (the refund_cancelled_event job calls this until
  -- none is left, each batch its own short transaction): the event's ticket types in id order,
  -- then at most p_limit of its PAID and PENDING orders in id order, SKIP LOCKED (an order a
  -- callback, a refund or the buyer holds right now is left for a later batch; a callback sees
  -- the event cancelled by itself). PAID ones are refunded through refund_payment jobs (tickets
  -- CANCELLED), PENDING ones cancelled (a payment arriving later finds the event cancelled and
  -- is refunded).
  PERFORM 1 FROM public.ticket_types tt WHERE tt.event_id = p_event_id ORDER BY tt.id FOR NO KEY UPDATE;
  FOR v_order IN
    SELECT o.id, o.status FROM public.orders o
     WHERE o.status IN ('PAID', 'PENDING')
       AND o.id IN (SELECT i.order_id FROM public.order_items i
                      JOIN public.ticket_types tt ON tt.id = i.ticket_type_id
                     WHERE tt.event_id = p_event_id)
     ORDER BY o.id
     LIMIT greatest(coalesce(p_limit, 200), 1)
       FOR NO KEY UPDATE SKIP LOCKED
  LOOP
    IF v_order.status = 'PAID' THEN
      PERFORM internal.refund_paid_order(v_order.id, 'event_cancelled');
      v_refunded := v_refunded + 1;
    ELSE
      UPDATE public.orders SET status = 'CANCELLED', updated_at = now() WHERE id = v_order.id;
      UPDATE public.payments SET status = 'FAILED' WHERE order_id = v_order.id;
      PERFORM internal.release_order_seats(v_order.id);
      v_cancelled := v_cancelled + 1;
    END IF;
  END LOOP;
  SELECT count(*) INTO v_remaining FROM public.orders o
   WHERE o.status IN ('PAID', 'PENDING')
     AND o.id IN (SELECT i.order_id FROM public.order_items i
                    JOIN public.ticket_types tt ON tt.id = i.ticket_type_id
                   WHERE tt.event_id = p_event_id);
  RETURN json_build_object('event_id', p_event_id, 'refunded', v_refunded, 'cancelled', v_cancelled,
                           'remaining', v_remaining);
END;
$$;


ALTER FUNCTION internal.cancel_event_orders(p_event_id uuid, p_limit integer) OWNER TO booking_owner;

--
-- Name: FUNCTION cancel_event_orders(p_event_id uuid, p_limit integer); Type: COMMENT; Schema: internal; Owner: booking_owner
--

COMMENT ON FUNCTION internal.cancel_event_orders(p_event_id uuid, p_limit integer) IS 'One batch of a cancelled event''s orders: at most p_limit of its PAID orders go REFUND_PENDING with a refund job each, its PENDING ones CANCELLED (seats back). Locks the event''s ticket types (id order), then the orders (id order, SKIP LOCKED). Returns {event_id, refunded, cancelled, remaining} (remaining: PAID/PENDING orders still to do, locked ones included).';


--
-- Name: cap_change(jsonb, text, integer); Type: FUNCTION; Schema: internal; Owner: booking_owner
--

CREATE FUNCTION internal.cap_change(p_changes jsonb, p_name text, p_current integer) RETURNS integer
    LANGUAGE plpgsql IMMUTABLE
    AS $$
DECLARE
  v_value jsonb := p_changes -> p_name;
BEGIN
  IF NOT p_changes ? p_name THEN
    RETURN p_current;
  ELSIF jsonb_typeof(v_value) = 'null' THEN
    RETURN NULL;
  ELSIF jsonb_typeof(v_value) <> 'number' OR v_value::numeric <> trunc(v_value::numeric)
        OR v_value::numeric NOT BETWEEN 1 AND 1000000 THEN
    RAISE EXCEPTION USING ERRCODE = 'BKVAL', MESSAGE = format('%s must be between 1 and 1000000, or null (no cap)', p_name);
  END IF;
  RETURN v_value::numeric::integer;
END;
$$;


ALTER FUNCTION internal.cap_change(p_changes jsonb, p_name text, p_current integer) OWNER TO booking_owner;

--
-- Name: FUNCTION cap_change(p_changes jsonb, p_name text, p_current integer); Type: COMMENT; Schema: internal; Owner: booking_owner
--

COMMENT ON FUNCTION internal.cap_change(p_changes jsonb, p_name text, p_current integer) IS 'The new value of a cap in a patch (p_current when not named; NULL clears it). Raises BKVAL.';


--
-- Name: check_cap(text, integer); Type: FUNCTION; Schema: internal; Owner: booking_owner
--

CREATE FUNCTION internal.check_cap(p_name text, p_cap integer) RETURNS integer
    LANGUAGE plpgsql IMMUTABLE
    AS $$
BEGIN
  IF p_cap < 1 OR p_cap > 1000000 THEN
    RAISE EXCEPTION USING ERRCODE = 'BKVAL', MESSAGE = format('%s must be between 1 and 1000000, or null (no cap)', p_name);
  END IF;
  RETURN p_cap;
END;
$$;


ALTER FUNCTION internal.check_cap(p_name text, p_cap integer) OWNER TO booking_owner;

--
-- Name: FUNCTION check_cap(p_name text, p_cap integer); Type: COMMENT; Schema: internal; Owner: booking_owner
--

COMMENT ON FUNCTION internal.check_cap(p_name text, p_cap integer) IS 'A per-buyer cap (max_per_user, max_tickets_per_user): 1..1000000 or NULL (no cap). Raises BKVAL.';


--
-- Name: check_change_keys(jsonb, text[]); Type: FUNCTION; Schema: internal; Owner: booking_owner
--

CREATE FUNCTION internal.check_change_keys(p_changes jsonb, p_allowed text[]) RETURNS void
    LANGUAGE plpgsql IMMUTABLE
    AS $$
DECLARE
  v_unknown text;
BEGIN
  IF p_changes IS NULL OR jsonb_typeof(p_changes) <> 'object' THEN
    RAISE EXCEPTION USING ERRCODE = 'BKVAL', MESSAGE = 'changes must be a JSON object';
  END IF;
  SELECT string_agg(k, ', ') INTO v_unknown
    FROM jsonb_object_keys(p_changes) k WHERE k <> ALL (p_allowed);
  IF v_unknown IS NOT NULL THEN
    RAISE EXCEPTION USING ERRCODE = 'BKVAL', MESSAGE = format('unknown fields: %s', v_unknown),
      HINT = format('allowed: %s', array_to_string(p_allowed, ', '));
  END IF;
END;
$$;


ALTER FUNCTION internal.check_change_keys(p_changes jsonb, p_allowed text[]) OWNER TO booking_owner;

--
-- Name: FUNCTION check_change_keys(p_changes jsonb, p_allowed text[]); Type: COMMENT; Schema: internal; Owner: booking_owner
--

COMMENT ON FUNCTION internal.check_change_keys(p_changes jsonb, p_allowed text[]) IS 'Rejects a patch that is not an object or names fields outside p_allowed. Raises BKVAL.';


--
-- Name: check_event(text, text, text, text, timestamp with time zone, timestamp with time zone); Type: FUNCTION; Schema: internal; Owner: booking_owner
--

CREATE FUNCTION internal.check_event(p_slug text, p_name text, p_location text, p_banner_url text, p_start_time timestamp with time zone, p_end_time timestamp with time zone) RETURNS void
    LANGUAGE plpgsql IMMUTABLE
    AS $_$
BEGIN
  IF p_slug IS NULL OR p_slug !~ '^[a-z0-9]+(-[a-z0-9]+)*$' OR length(p_slug) > 255 THEN
    RAISE EXCEPTION USING ERRCODE = 'BKVAL',
      MESSAGE = 'slug must be 1-255 lower-case letters, digits and single hyphens';
  END IF;
  IF p_name IS NULL OR length(btrim(p_name)) NOT BETWEEN 1 AND 500 THEN
    RAISE EXCEPTION USING ERRCODE = 'BKVAL', MESSAGE = 'name must be 1 to 500 characters';
  END IF;
  IF p_location IS NULL OR length(btrim(p_location)) NOT BETWEEN 1 AND 500 THEN
    RAISE EXCEPTION USING ERRCODE = 'BKVAL', MESSAGE = 'location must be 1 to 500 characters';
  END IF;
  IF length(p_banner_url) > 500 THEN
    RAISE EXCEPTION USING ERRCODE = 'BKVAL', MESSAGE = 'banner_url must be at most 500 characters';
  END IF;
  IF p_start_time IS NULL OR p_end_time IS NULL OR p_end_time <= p_start_time THEN
    RAISE EXCEPTION USING ERRCODE = 'BKVAL', MESSAGE = 'end_time must be after start_time';
  END IF;
END;
$_$;


ALTER FUNCTION internal.check_event(p_slug text, p_name text, p_location text, p_banner_url text, p_start_time timestamp with time zone, p_end_time timestamp with time zone) OWNER TO booking_owner;

--
-- Name: FUNCTION check_event(p_slug text, p_name text, p_location text, p_banner_url text, p_start_time timestamp with time zone, p_end_time timestamp with time zone); Type: COMMENT; Schema: internal; Owner: booking_owner
--

COMMENT ON FUNCTION internal.check_event(p_slug text, p_name text, p_location text, p_banner_url text, p_start_time timestamp with time zone, p_end_time timestamp with time zone) IS 'Field checks for an event, before they meet the column types. Raises BKVAL.';


--
-- Name: check_idempotency_key(text); Type: FUNCTION; Schema: internal; Owner: booking_owner
--

CREATE FUNCTION internal.check_idempotency_key(p_key text) RETURNS void
    LANGUAGE plpgsql IMMUTABLE
    AS $_$
BEGIN
  IF p_key IS NOT NULL AND p_key !~ '^[!-~]{1,255}$' THEN
    RAISE EXCEPTION USING ERRCODE = 'BKVAL',
      MESSAGE = 'Idempotency-Key must be 1 to 255 visible ASCII characters';
  END IF;
END;
$_$;


ALTER FUNCTION internal.check_idempotency_key(p_key text) OWNER TO booking_owner;

--
-- Name: FUNCTION check_idempotency_key(p_key text); Type: COMMENT; Schema: internal; Owner: booking_owner
--

COMMENT ON FUNCTION internal.check_idempotency_key(p_key text) IS 'An idempotency key is 1-255 visible ASCII characters (0x21-0x7E). Raises BKVAL.';


--
-- Name: check_page(integer, boolean, boolean, text); Type: FUNCTION; Schema: internal; Owner: booking_owner
--

CREATE FUNCTION internal.check_page(p_limit integer, p_after_key_given boolean, p_after_id_given boolean, p_after_key_name text) RETURNS void
    LANGUAGE plpgsql IMMUTABLE
    AS $$
BEGIN
  IF p_limit < 1 THEN
    RAISE EXCEPTION USING ERRCODE = 'BKVAL', MESSAGE = 'limit must be at least 1';
  END IF;
  IF p_after_key_given <> p_after_id_given THEN
    RAISE EXCEPTION USING ERRCODE = 'BKVAL', MESSAGE = format('%s and p_after_id go together', p_after_key_name);
  END IF;
END;
$$;


ALTER FUNCTION internal.check_page(p_limit integer, p_after_key_given boolean, p_after_id_given boolean, p_after_key_name text) OWNER TO booking_owner;

--
-- Name: FUNCTION check_page(p_limit integer, p_after_key_given boolean, p_after_id_given boolean, p_after_key_name text); Type: COMMENT; Schema: internal; Owner: booking_owner
--

COMMENT ON FUNCTION internal.check_page(p_limit integer, p_after_key_given boolean, p_after_id_given boolean, p_after_key_name text) IS 'Arguments of a keyset page (the list functions): p_limit >= 1 or NULL (all), and the cursor''s sort key and id given together. Raises BKVAL.';


--
-- Name: check_refresh_args(bytea, integer); Type: FUNCTION; Schema: internal; Owner: booking_owner
--

CREATE FUNCTION internal.check_refresh_args(p_hash bytea, p_ttl_seconds integer) RETURNS void
    LANGUAGE plpgsql IMMUTABLE
    AS $$
BEGIN
  IF p_hash IS NULL OR length(p_hash) <> 32 THEN
    RAISE EXCEPTION USING ERRCODE = 'BKVAL', MESSAGE = 'a refresh token hash is 32 bytes (sha256)';
  END IF;
  IF p_ttl_seconds IS NULL OR p_ttl_seconds < 1 THEN
    RAISE EXCEPTION USING ERRCODE = 'BKVAL', MESSAGE = 'lifetimes are at least 1 second';
  END IF;
END;
$$;


ALTER FUNCTION internal.check_refresh_args(p_hash bytea, p_ttl_seconds integer) OWNER TO booking_owner;

--
-- Name: FUNCTION check_refresh_args(p_hash bytea, p_ttl_seconds integer); Type: COMMENT; Schema: internal; Owner: booking_owner
--

COMMENT ON FUNCTION internal.check_refresh_args(p_hash bytea, p_ttl_seconds integer) IS 'A new refresh token''s hash is 32 bytes and its lifetime at least 1 s. Raises BKVAL.';


--
-- Name: check_ticket_type(text, numeric, integer, timestamp with time zone, timestamp with time zone); Type: FUNCTION; Schema: internal; Owner: booking_owner
--

CREATE FUNCTION internal.check_ticket_type(p_name text, p_price numeric, p_initial_quantity integer, p_start_sale_time timestamp with time zone, p_end_sale_time timestamp with time zone) RETURNS void
    LANGUAGE plpgsql IMMUTABLE
    AS $$
BEGIN
  IF p_name IS NULL OR length(btrim(p_name)) NOT BETWEEN 1 AND 100 THEN
    RAISE EXCEPTION USING ERRCODE = 'BKVAL', MESSAGE = 'name must be 1 to 100 characters';
  END IF;
  IF p_price IS NULL OR p_price < 0 OR p_price > 99999999.99 OR p_price <> round(p_price, 2) THEN
    RAISE EXCEPTION USING ERRCODE = 'BKVAL',
      MESSAGE = 'price must be between 0 and 99999999.99 with at most two decimals';
  END IF;
  IF p_initial_quantity IS NULL OR p_initial_quantity < 0 OR p_initial_quantity > 1000000 THEN
    RAISE EXCEPTION USING ERRCODE = 'BKVAL', MESSAGE = 'initial_quantity must be between 0 and 1000000';
  END IF;
  IF p_start_sale_time IS NOT NULL AND p_end_sale_time IS NOT NULL
     AND p_end_sale_time <= p_start_sale_time THEN
    RAISE EXCEPTION USING ERRCODE = 'BKVAL', MESSAGE = 'end_sale_time must be after start_sale_time';
  END IF;
END;
$$;


ALTER FUNCTION internal.check_ticket_type(p_name text, p_price numeric, p_initial_quantity integer, p_start_sale_time timestamp with time zone, p_end_sale_time timestamp with time zone) OWNER TO booking_owner;

--
-- Name: FUNCTION check_ticket_type(p_name text, p_price numeric, p_initial_quantity integer, p_start_sale_time timestamp with time zone, p_end_sale_time timestamp with time zone); Type: COMMENT; Schema: internal; Owner: booking_owner
--

COMMENT ON FUNCTION internal.check_ticket_type(p_name text, p_price numeric, p_initial_quantity integer, p_start_sale_time timestamp with time zone, p_end_sale_time timestamp with time zone) IS 'Field checks for a ticket type, before they meet the column types. Raises BKVAL.';


--
-- Name: check_waiting_room(boolean, integer); Type: FUNCTION; Schema: internal; Owner: booking_owner
--

CREATE FUNCTION internal.check_waiting_room(p_queue_enabled boolean, p_rate integer) RETURNS void
    LANGUAGE plpgsql IMMUTABLE
    AS $$
BEGIN
  IF p_rate < 1 OR p_rate > 1000000 THEN
    RAISE EXCEPTION USING ERRCODE = 'BKVAL', MESSAGE = 'admission_rate_per_minute must be between 1 and 1000000';
  END IF;
  IF p_queue_enabled AND p_rate IS NULL THEN
    RAISE EXCEPTION USING ERRCODE = 'BKVAL',
      MESSAGE = 'admission_rate_per_minute is required while queue_enabled is true';
  END IF;
END;
$$;


ALTER FUNCTION internal.check_waiting_room(p_queue_enabled boolean, p_rate integer) OWNER TO booking_owner;

--
-- Name: FUNCTION check_waiting_room(p_queue_enabled boolean, p_rate integer); Type: COMMENT; Schema: internal; Owner: booking_owner
--

COMMENT ON FUNCTION internal.check_waiting_room(p_queue_enabled boolean, p_rate integer) IS 'An event''s waiting-room settings: the rate 1..1000000, required when queue_enabled. Raises BKVAL.';


--
-- Name: claim_idempotency_key(uuid, text, text); Type: FUNCTION; Schema: internal; Owner: booking_owner
--

CREATE FUNCTION internal.claim_idempotency_key(p_user_id uuid, p_key text, p_fingerprint text) RETURNS json
    LANGUAGE plpgsql
    AS $$
DECLARE
  v_fingerprint text;
  v_response json;
BEGIN
  PERFORM internal.check_idempotency_key(p_key);
  -- Claim: a new row, or an expired one taken over. A concurrent request with the same key
  -- waits here on the uncommitted row; if that one rolls back (a refusal), this one claims.
  INSERT INTO public.idempotency_keys AS k (user_id, key, fingerprint)
  VALUES (p_user_id, p_key, p_fingerprint)
  ON CONFLICT (user_id, key) DO UPDATE
    SET fingerprint = EXCLUDED.fingerprint, response = NULL, created_at = now()
    WHERE k.created_at <= now() - internal.idempotency_ttl()
  RETURNING k.fingerprint INTO v_fingerprint;
  IF FOUND THEN
    RETURN NULL;  -- ours: do the work, then internal.store_idempotent_response
  END IF;
  -- Someone's committed answer (a fresh statement: it sees what the first request committed).
  SELECT k.fingerprint, k.response INTO v_fingerprint, v_response
    FROM public.idempotency_keys k WHERE k.user_id = p_user_id AND k.key = p_key;
  IF v_fingerprint IS DISTINCT FROM p_fingerprint THEN
    RAISE EXCEPTION USING ERRCODE = 'BKIDR',
      MESSAGE = 'this Idempotency-Key was used with a different request';
  END IF;
  IF v_response IS NULL THEN  -- cannot happen: only successes are committed with their key
    RAISE EXCEPTION USING ERRCODE = 'BKBSY', MESSAGE = 'the request with this Idempotency-Key is unfinished';
  END IF;
  RETURN v_response;
END;
$$;


ALTER FUNCTION internal.claim_idempotency_key(p_user_id uuid, p_key text, p_fingerprint text) OWNER TO booking_owner;

--
-- Name: FUNCTION claim_idempotency_key(p_user_id uuid, p_key text, p_fingerprint text); Type: COMMENT; Schema: internal; Owner: booking_owner
--

COMMENT ON FUNCTION internal.claim_idempotency_key(p_user_id uuid, p_key text, p_fingerprint text) IS 'Claims (user, key) for a request (fingerprint) in the caller''s transaction: NULL when the caller now owns it (do the work, then internal.store_idempotent_response); the stored response when the same request was done before (within 24 hours); raises BKIDR for another request, BKVAL for a malformed key. Waits for a concurrent holder of the key.';


--
-- Name: defer_job(text, text, integer, jsonb, text); Type: FUNCTION; Schema: internal; Owner: booking_owner
--

CREATE FUNCTION internal.defer_job(p_task text, p_queue text, p_priority integer, p_args jsonb, p_lock text DEFAULT NULL::text) RETURNS bigint
    LANGUAGE sql
    AS $$
  -- The one place that names procrastinate's versioned defer function (upgrade: here).
  SELECT (public.procrastinate_defer_jobs_v1(ARRAY[
            ROW(p_queue, p_task, p_priority, p_lock, NULL, p_args, NULL)::public.procrastinate_job_to_defer_v1
          ]))[1]
$$;


ALTER FUNCTION internal.defer_job(p_task text, p_queue text, p_priority integer, p_args jsonb, p_lock text) OWNER TO booking_owner;

--
-- Name: FUNCTION defer_job(p_task text, p_queue text, p_priority integer, p_args jsonb, p_lock text); Type: COMMENT; Schema: internal; Owner: booking_owner
--

COMMENT ON FUNCTION internal.defer_job(p_task text, p_queue text, p_priority integer, p_args jsonb, p_lock text) IS 'Defers one procrastinate job (task, queue, priority: higher runs first, args, optional lock: two jobs with one lock never run at once) in the caller''s transaction; returns its id. No NOTIFY (migration 0010): idle workers poll every WORKER_POLL_SECONDS.';


SET default_tablespace = '';

SET default_table_access_method = heap;

--
-- Name: events; Type: TABLE; Schema: public; Owner: booking_owner
--

CREATE TABLE public.events (
    id uuid DEFAULT gen_random_uuid() NOT NULL,
    slug character varying(255) NOT NULL,
    name character varying(500) NOT NULL,
    description text,
    banner_url character varying(500),
    location character varying(500) NOT NULL,
    start_time timestamp with time zone NOT NULL,
    end_time timestamp with time zone NOT NULL,
    status character varying(20) DEFAULT 'DRAFT'::character varying NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    max_tickets_per_user integer,
    queue_enabled boolean DEFAULT false NOT NULL,
    admission_rate_per_minute integer,
    CONSTRAINT chk_events_admission_rate CHECK (((admission_rate_per_minute >= 1) AND (admission_rate_per_minute <= 1000000))),
    CONSTRAINT chk_events_max_tickets_per_user CHECK ((max_tickets_per_user >= 1)),
    CONSTRAINT chk_events_queue_rate CHECK (((NOT queue_enabled) OR (admission_rate_per_minute IS NOT NULL))),
    CONSTRAINT chk_events_status CHECK (((status)::text = ANY ((ARRAY['DRAFT'::character varying, 'PUBLISHED'::character varying, 'CANCELLED'::character varying, 'ENDED'::character varying])::text[]))),
    CONSTRAINT chk_events_time CHECK ((end_time > start_time)),
    CONSTRAINT chk_events_times_rfc3339 CHECK (((start_time >= '0001-01-01 00:00:00+00'::timestamp with time zone) AND (start_time < '10000-01-01 00:00:00+00'::timestamp with time zone) AND (end_time >= '0001-01-01 00:00:00+00'::timestamp with time zone) AND (end_time < '10000-01-01 00:00:00+00'::timestamp with time zone)))
);


ALTER TABLE public.events OWNER TO booking_owner;

--
-- Name: COLUMN events.max_tickets_per_user; Type: COMMENT; Schema: public; Owner: booking_owner
--

COMMENT ON COLUMN public.events.max_tickets_per_user IS 'Seats one buyer may hold or own over all ticket types of the event (ACTIVE holds + PENDING/PAID orders); NULL: no cap.';


--
-- Name: COLUMN events.queue_enabled; Type: COMMENT; Schema: public; Owner: booking_owner
--

COMMENT ON COLUMN public.events.queue_enabled IS 'The sale goes through a waiting room: reserves need an admission token (X-Admission-Token).';


--
-- Name: COLUMN events.admission_rate_per_minute; Type: COMMENT; Schema: public; Owner: booking_owner
--

COMMENT ON COLUMN public.events.admission_rate_per_minute IS 'People the waiting room admits per minute, spread evenly (required while queue_enabled).';


--
-- Name: event_json(public.events, boolean); Type: FUNCTION; Schema: internal; Owner: booking_owner
--

CREATE FUNCTION internal.event_json(e public.events, p_live boolean) RETURNS json
    LANGUAGE plpgsql STABLE
    AS $$
BEGIN
  RETURN (SELECT json_build_object(
    'id', e.id, 'slug', e.slug, 'name', e.name, 'description', e.description,
    'banner_url', e.banner_url, 'location', e.location,
    'start_time', e.start_time, 'end_time', e.end_time, 'status', e.status,
    'max_tickets_per_user', e.max_tickets_per_user,
    'queue_enabled', e.queue_enabled, 'admission_rate_per_minute', e.admission_rate_per_minute,
    'ticket_types', coalesce((
      SELECT json_agg(internal.ticket_type_json(tt, e, p_live) ORDER BY tt.price, tt.name, tt.id)
        FROM public.ticket_types tt WHERE tt.event_id = e.id), '[]'::json)));
END;
$$;


ALTER FUNCTION internal.event_json(e public.events, p_live boolean) OWNER TO booking_owner;

--
-- Name: FUNCTION event_json(e public.events, p_live boolean); Type: COMMENT; Schema: internal; Owner: booking_owner
--

COMMENT ON FUNCTION internal.event_json(e public.events, p_live boolean) IS 'An event with its ticket types as API JSON; p_live adds available_quantity and on_sale.';


--
-- Name: hold_period(); Type: FUNCTION; Schema: internal; Owner: booking_owner
--

CREATE FUNCTION internal.hold_period() RETURNS interval
    LANGUAGE sql STABLE
    AS $$
  SELECT coalesce(nullif(current_setting('booking.hold_period', true), ''), '10 minutes')::interval
$$;


ALTER FUNCTION internal.hold_period() OWNER TO booking_owner;

--
-- Name: FUNCTION hold_period(); Type: COMMENT; Schema: internal; Owner: booking_owner
--

COMMENT ON FUNCTION internal.hold_period() IS 'How long a reservation holds seats: setting booking.hold_period (default 10 minutes). Change without code: ALTER DATABASE booking SET booking.hold_period = ''15 minutes''.';


--
-- Name: idempotency_ttl(); Type: FUNCTION; Schema: internal; Owner: booking_owner
--

CREATE FUNCTION internal.idempotency_ttl() RETURNS interval
    LANGUAGE sql IMMUTABLE
    AS $$
  SELECT interval '24 hours'
$$;


ALTER FUNCTION internal.idempotency_ttl() OWNER TO booking_owner;

--
-- Name: FUNCTION idempotency_ttl(); Type: COMMENT; Schema: internal; Owner: booking_owner
--

COMMENT ON FUNCTION internal.idempotency_ttl() IS 'How long an idempotency key answers with its first response (24 hours); older counts as absent.';


--
-- Name: issue_order(uuid, text); Type: FUNCTION; Schema: internal; Owner: booking_owner
--

CREATE FUNCTION internal.issue_order(p_order_id uuid, p_provider_txn_id text) RETURNS void
    LANGUAGE plpgsql
    AS $$
BEGIN
  -- One transaction with the caller: PAID, SUCCESS payment, one ticket per seat, the
  -- confirmation job and the order.paid webhooks. Never a paid order without tickets.
  UPDATE public.orders SET status = 'PAID', updated_at = now() WHERE id = p_order_id;
  UPDATE public.payments
     SET status = 'SUCCESS', payment_time = now(), provider_txn_id = p_provider_txn_id
   WHERE order_id = p_order_id;
  INSERT INTO public.tickets (order_id, ticket_type_id, ticket_code, status)
  SELECT p_order_id, i.ticket_type_id, internal.new_ticket_code(), 'UNUSED'
    FROM public.order_items i, generate_series(1, i.quantity)
   WHERE i.order_id = p_order_id;
  PERFORM internal.order_paid(p_order_id);
END;
$$;


ALTER FUNCTION internal.issue_order(p_order_id uuid, p_provider_txn_id text) OWNER TO booking_owner;

--
-- Name: FUNCTION issue_order(p_order_id uuid, p_provider_txn_id text); Type: COMMENT; Schema: internal; Owner: booking_owner
--

COMMENT ON FUNCTION internal.issue_order(p_order_id uuid, p_provider_txn_id text) IS 'Makes a locked order PAID: payment SUCCESS (with the provider''s id), tickets, internal.order_paid.';


--
-- Name: lock_order_buyer(uuid); Type: FUNCTION; Schema: internal; Owner: booking_owner
--

CREATE FUNCTION internal.lock_order_buyer(p_order_id uuid) RETURNS void
    LANGUAGE plpgsql
    AS $$
BEGIN
  -- Only for events with a per-buyer event cap: the (event, buyer) transaction advisory locks
  -- reserve takes for that cap (sorted), so a late payment re-taking seats and the buyer's own
  -- reserve of another type of the event count one after the other. Taken after the order's
  -- ticket types and before the order (the lock order of both: types -> these -> the rest).
  PERFORM pg_advisory_xact_lock(l.key)
     FROM (SELECT DISTINCT internal.buyer_lock_key(tt.event_id, o.user_id) AS key
             FROM public.orders o
             JOIN public.order_items i ON i.order_id = o.id
             JOIN public.ticket_types tt ON tt.id = i.ticket_type_id
             JOIN public.events e ON e.id = tt.event_id
            WHERE o.id = p_order_id AND e.max_tickets_per_user IS NOT NULL
            ORDER BY 1) l;
END;
$$;


ALTER FUNCTION internal.lock_order_buyer(p_order_id uuid) OWNER TO booking_owner;

--
-- Name: FUNCTION lock_order_buyer(p_order_id uuid); Type: COMMENT; Schema: internal; Owner: booking_owner
--

COMMENT ON FUNCTION internal.lock_order_buyer(p_order_id uuid) IS 'Takes the (event, buyer) advisory locks of an order''s events that have a per-buyer cap, sorted (as internal.reserve). Call after internal.lock_order_types and before locking the order.';


--
-- Name: lock_order_types(uuid); Type: FUNCTION; Schema: internal; Owner: booking_owner
--

CREATE FUNCTION internal.lock_order_types(p_order_id uuid) RETURNS void
    LANGUAGE plpgsql
    AS $$
BEGIN
  -- order_items never change, so reading them without a lock is safe; the types are then
  -- locked in id order (the project's lock order), before the order row.
  PERFORM 1 FROM public.ticket_types tt
    WHERE tt.id IN (SELECT i.ticket_type_id FROM public.order_items i WHERE i.order_id = p_order_id)
    ORDER BY tt.id
      FOR NO KEY UPDATE;
END;
$$;


ALTER FUNCTION internal.lock_order_types(p_order_id uuid) OWNER TO booking_owner;

--
-- Name: FUNCTION lock_order_types(p_order_id uuid); Type: COMMENT; Schema: internal; Owner: booking_owner
--

COMMENT ON FUNCTION internal.lock_order_types(p_order_id uuid) IS 'Locks the ticket_types rows of an order (FOR NO KEY UPDATE, ids ascending). Call before locking the order.';


--
-- Name: login_attempt(text); Type: FUNCTION; Schema: internal; Owner: booking_owner
--

CREATE FUNCTION internal.login_attempt(p_email text) RETURNS integer
    LANGUAGE plpgsql
    AS $$
DECLARE
  v_rule public.rate_limit_rules;
  v_now timestamptz := clock_timestamp();
  v_key text := 'login_failures:email:' || lower(btrim(p_email));
  v_t interval;
  v_tol interval;
  v_tat timestamptz;
BEGIN
  SELECT * INTO v_rule FROM public.rate_limit_rules r WHERE r.class = 'login_failures' AND r.scope = 'email';
  IF NOT FOUND OR p_email IS NULL THEN
    RETURN 0;
  END IF;
  v_t := v_rule.period / v_rule.max_requests;
  v_tol := v_rule.period - v_t;
  -- One attempt counted, atomically, BEFORE the password is checked: concurrent guesses wait
  -- on this row and each sees the others' counts (a check-then-count would let a burst through).
  INSERT INTO public.rate_limit_counters AS c (key, tat, period, last_ok)
  VALUES (v_key, v_now + v_t, v_rule.period, true)
  ON CONFLICT (key) DO UPDATE
     SET tat = greatest(c.tat, v_now) + v_t, period = excluded.period
   WHERE greatest(c.tat, v_now) - v_now <= v_tol
  RETURNING c.tat INTO v_tat;
  IF v_tat IS NOT NULL THEN
    RETURN 0;  -- counted: go on and check the password
  END IF;
  SELECT c.tat INTO v_tat FROM public.rate_limit_counters c WHERE c.key = v_key;
  RETURN greatest(1, ceil(extract(epoch FROM greatest(v_tat, v_now) - v_now - v_tol)))::integer;
END;
$$;


ALTER FUNCTION internal.login_attempt(p_email text) OWNER TO booking_owner;

--
-- Name: FUNCTION login_attempt(p_email text); Type: COMMENT; Schema: internal; Owner: booking_owner
--

COMMENT ON FUNCTION internal.login_attempt(p_email text) IS 'The failed-login throttle (rule login_failures / email): counts one login attempt for an e-mail address (trimmed, lower-cased; known or not) and returns 0, or, when the address is throttled, counts nothing and returns the seconds to wait. api.record_login_success gives a successful attempt back, so only failures stay counted. Locks that address''s counter row.';


--
-- Name: new_ticket_code(); Type: FUNCTION; Schema: internal; Owner: booking_owner
--

CREATE FUNCTION internal.new_ticket_code() RETURNS text
    LANGUAGE sql
    AS $$
  -- 80 bits from pgcrypto's CSPRNG: unguessable, and collisions are not a practical concern
  -- (the UNIQUE constraint would turn one into an error, never a shared ticket).
  SELECT 'TKT-' || upper(encode(public.gen_random_bytes(10), 'hex'))
$$;


ALTER FUNCTION internal.new_ticket_code() OWNER TO booking_owner;

--
-- Name: FUNCTION new_ticket_code(); Type: COMMENT; Schema: internal; Owner: booking_owner
--

COMMENT ON FUNCTION internal.new_ticket_code() IS 'A fresh ticket code: TKT- and 20 hex digits from a CSPRNG.';


--
-- Name: new_transaction_id(text); Type: FUNCTION; Schema: internal; Owner: booking_owner
--

CREATE FUNCTION internal.new_transaction_id(p_method text) RETURNS text
    LANGUAGE sql
    AS $$
  -- The reference the provider is given: MoMo orderId, ZaloPay app_trans_id (yymmdd_ in
  -- Vietnam's date, as ZaloPay requires), the transfer reference for bank and card.
  SELECT CASE p_method
           WHEN 'MOMO' THEN 'BK' || upper(encode(public.gen_random_bytes(12), 'hex'))
           WHEN 'ZALOPAY' THEN to_char(now() AT TIME ZONE 'Asia/Ho_Chi_Minh', 'YYMMDD') || '_'
                               || upper(encode(public.gen_random_bytes(12), 'hex'))
           ELSE 'TXN-' || upper(encode(public.gen_random_bytes(12), 'hex'))
         END
$$;


ALTER FUNCTION internal.new_transaction_id(p_method text) OWNER TO booking_owner;

--
-- Name: FUNCTION new_transaction_id(p_method text); Type: COMMENT; Schema: internal; Owner: booking_owner
--

COMMENT ON FUNCTION internal.new_transaction_id(p_method text) IS 'A fresh payment reference in the provider''s form: MOMO BK<24 hex>, ZALOPAY yymmdd_<24 hex> (Vietnam date), BANKING/CARD TXN-<24 hex>.';


--
-- Name: notify_webhooks(text, uuid, jsonb); Type: FUNCTION; Schema: internal; Owner: booking_owner
--

CREATE FUNCTION internal.notify_webhooks(p_type text, p_event_id uuid, p_data jsonb) RETURNS integer
    LANGUAGE plpgsql
    AS $$
DECLARE
  v_webhook uuid;
  v_notification uuid;
  v_body text;
  v_delivery uuid;
  v_count integer := 0;
BEGIN
  IF p_type IS NULL OR p_type NOT IN ('order.paid', 'order.refunded', 'ticket.checked_in') THEN
    RAISE EXCEPTION USING ERRCODE = 'BKVAL', MESSAGE = format('unknown notification type %s', p_type);
  END IF;
  FOR v_webhook IN
    SELECT w.id FROM public.webhooks w
      JOIN public.users u ON u.id = w.created_by AND u.role = 'admin'  -- a demoted admin's hear nothing
     WHERE w.active AND p_type = ANY (w.events) AND (w.event_id IS NULL OR w.event_id = p_event_id)
     ORDER BY w.id
  LOOP
    IF v_body IS NULL THEN
      v_notification := gen_random_uuid();
      v_body := json_build_object('id', v_notification, 'type', p_type, 'created_at', now(), 'data', p_data)::text;
    END IF;
    v_delivery := gen_random_uuid();
    INSERT INTO public.webhook_deliveries (id, webhook_id, notification_id, event_type, body, job_id)
    VALUES (v_delivery, v_webhook, v_notification, p_type, v_body,
            internal.defer_job('deliver_webhook', 'webhooks', 50, jsonb_build_object('delivery_id', v_delivery)));
    v_count := v_count + 1;
  END LOOP;
  RETURN v_count;
END;
$$;


ALTER FUNCTION internal.notify_webhooks(p_type text, p_event_id uuid, p_data jsonb) OWNER TO booking_owner;

--
-- Name: FUNCTION notify_webhooks(p_type text, p_event_id uuid, p_data jsonb); Type: COMMENT; Schema: internal; Owner: booking_owner
--

COMMENT ON FUNCTION internal.notify_webhooks(p_type text, p_event_id uuid, p_data jsonb) IS 'One notification (order.paid, order.refunded, ticket.checked_in) of event p_event_id: for every active webhook subscribed to p_type (all events, or this one) a webhook_deliveries row with the body {id, type, created_at, data} (one id per call: what receivers de-duplicate on) and a deliver_webhook job (queue webhooks, priority 50), in the caller''s transaction. Returns how many. With no webhooks: one indexed query.';


--
-- Name: orders; Type: TABLE; Schema: public; Owner: booking_owner
--

CREATE TABLE public.orders (
    id uuid DEFAULT gen_random_uuid() NOT NULL,
    user_id uuid NOT NULL,
    total_amount numeric(10,2) NOT NULL,
    status character varying(20) DEFAULT 'PENDING'::character varying NOT NULL,
    reservation_id uuid,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    payment_deadline timestamp with time zone,
    seats_kept boolean DEFAULT false NOT NULL,
    CONSTRAINT chk_orders_amount CHECK ((total_amount >= (0)::numeric)),
    CONSTRAINT chk_orders_status CHECK (((status)::text = ANY ((ARRAY['PENDING'::character varying, 'PAID'::character varying, 'CANCELLED'::character varying, 'TIMEOUT'::character varying, 'REFUND_PENDING'::character varying, 'REFUNDED'::character varying])::text[])))
);


ALTER TABLE public.orders OWNER TO booking_owner;

--
-- Name: COLUMN orders.payment_deadline; Type: COMMENT; Schema: public; Owner: booking_owner
--

COMMENT ON COLUMN public.orders.payment_deadline IS 'Provider mode: a PENDING order holds its seats until then (api.expire_pending_orders).';


--
-- Name: COLUMN orders.seats_kept; Type: COMMENT; Schema: public; Owner: booking_owner
--

COMMENT ON COLUMN public.orders.seats_kept IS 'REFUND_PENDING/REFUNDED only: true when the seats did not return to sale (the event had started).';


--
-- Name: order_json(public.orders); Type: FUNCTION; Schema: internal; Owner: booking_owner
--

CREATE FUNCTION internal.order_json(o public.orders) RETURNS json
    LANGUAGE plpgsql STABLE
    AS $$
BEGIN
  RETURN (SELECT json_build_object(
    'id', o.id,
    'status', o.status,
    'total_amount', o.total_amount::text,
    'created_at', o.created_at,
    'reservation_id', o.reservation_id,
    'items', coalesce((
      SELECT json_agg(json_build_object(
               'ticket_type_id', i.ticket_type_id, 'ticket_type_name', tt.name,
               'event_id', e.id, 'event_name', e.name, 'event_start_time', e.start_time,
               'quantity', i.quantity, 'unit_price', i.unit_price::text) ORDER BY i.id)
        FROM public.order_items i
        JOIN public.ticket_types tt ON tt.id = i.ticket_type_id
        JOIN public.events e ON e.id = tt.event_id
       WHERE i.order_id = o.id), '[]'::json),
    'payment', (
      SELECT CASE WHEN o.payment_deadline IS NULL THEN json_build_object(
               'method', p.payment_method, 'amount', p.amount::text, 'status', p.status,
               'transaction_id', p.transaction_id, 'payment_time', p.payment_time)
             WHEN p.status = 'PENDING' THEN json_build_object(  -- provider mode (checkout): where
               'method', p.payment_method, 'amount', p.amount::text, 'status', p.status,  -- and until
               'transaction_id', p.transaction_id, 'payment_time', p.payment_time,  -- when it may be paid
               'expires_at', o.payment_deadline, 'pay_url', p.pay_url)
             ELSE json_build_object(
               'method', p.payment_method, 'amount', p.amount::text, 'status', p.status,
               'transaction_id', p.transaction_id, 'payment_time', p.payment_time,
               'expires_at', o.payment_deadline) END
        FROM public.payments p WHERE p.order_id = o.id),
    'tickets', coalesce((
      SELECT json_agg(json_build_object(
               'ticket_code', t.ticket_code, 'ticket_type_id', t.ticket_type_id,
               'status', t.status, 'checkin_time', t.checkin_time) ORDER BY t.ticket_code)
        FROM public.tickets t WHERE t.order_id = o.id), '[]'::json)));
END;
$$;


ALTER FUNCTION internal.order_json(o public.orders) OWNER TO booking_owner;

--
-- Name: FUNCTION order_json(o public.orders); Type: COMMENT; Schema: internal; Owner: booking_owner
--

COMMENT ON FUNCTION internal.order_json(o public.orders) IS 'An order with items, payment and tickets as API JSON (the shape of complete_booking and my_bookings).';


--
-- Name: order_over_cap(uuid); Type: FUNCTION; Schema: internal; Owner: booking_owner
--

CREATE FUNCTION internal.order_over_cap(p_order_id uuid) RETURNS boolean
    LANGUAGE plpgsql
    AS $$
DECLARE
  v_user uuid;
BEGIN
  -- Would this order's seats, added to the buyer's other seats, pass a per-buyer cap (issue 9)?
  -- Counted as internal.reserve counts them: seats in unexpired ACTIVE holds + PENDING and PAID
  -- orders (this one excluded: it is TIMEOUT or CANCELLED when asked). The caller holds the
  -- types' row locks (the type cap) and the (event, buyer) locks (internal.lock_order_buyer).
  SELECT o.user_id INTO v_user FROM public.orders o WHERE o.id = p_order_id;
  RETURN EXISTS (
    WITH mine AS (
      SELECT i.ticket_type_id, tt.event_id, tt.max_per_user, e.max_tickets_per_user, sum(i.quantity) AS seats
        FROM public.order_items i
        JOIN public.ticket_types tt ON tt.id = i.ticket_type_id
        JOIN public.events e ON e.id = tt.event_id
       WHERE i.order_id = p_order_id
       GROUP BY 1, 2, 3, 4),
    other AS (
      SELECT r.ticket_type_id, r.quantity AS seats
        FROM public.order_reservations r
       WHERE r.user_id = v_user AND r.status = 'ACTIVE' AND r.expires_at > now()
         AND r.ticket_type_id IN (SELECT t.id FROM public.ticket_types t WHERE t.event_id IN (SELECT m.event_id FROM mine m))
      UNION ALL
      SELECT i.ticket_type_id, i.quantity
        FROM public.orders o JOIN public.order_items i ON i.order_id = o.id
       WHERE o.user_id = v_user AND o.status IN ('PENDING', 'PAID') AND o.id <> p_order_id
         AND i.ticket_type_id IN (SELECT t.id FROM public.ticket_types t WHERE t.event_id IN (SELECT m.event_id FROM mine m)))
    SELECT 1 FROM mine m
     WHERE m.max_per_user IS NOT NULL
       AND m.seats + coalesce((SELECT sum(x.seats) FROM other x WHERE x.ticket_type_id = m.ticket_type_id), 0)
           > m.max_per_user
    UNION ALL
    SELECT 1 FROM (SELECT m.event_id, max(m.max_tickets_per_user) AS cap, sum(m.seats) AS seats
                     FROM mine m GROUP BY m.event_id) ev
     WHERE ev.cap IS NOT NULL
       AND ev.seats + coalesce((SELECT sum(x.seats) FROM other x JOIN public.ticket_types t ON t.id = x.ticket_type_id
                                 WHERE t.event_id = ev.event_id), 0) > ev.cap);
END;
$$;


ALTER FUNCTION internal.order_over_cap(p_order_id uuid) OWNER TO booking_owner;

--
-- Name: FUNCTION order_over_cap(p_order_id uuid); Type: COMMENT; Schema: internal; Owner: booking_owner
--

COMMENT ON FUNCTION internal.order_over_cap(p_order_id uuid) IS 'Whether re-taking an order''s seats would pass the buyer''s cap of a ticket type or of the event (counted as internal.reserve does, the order itself excluded). The caller holds the types'' locks and internal.lock_order_buyer''s.';


--
-- Name: order_paid(uuid); Type: FUNCTION; Schema: internal; Owner: booking_owner
--

CREATE FUNCTION internal.order_paid(p_order_id uuid) RETURNS void
    LANGUAGE plpgsql
    AS $$
DECLARE
  v_order public.orders;
  v_user public.users;
  v_event public.events;
BEGIN
  SELECT * INTO STRICT v_order FROM public.orders WHERE id = p_order_id;
  SELECT * INTO STRICT v_user FROM public.users WHERE id = v_order.user_id;
  INSERT INTO public.order_emails (order_id, kind, recipient, job_id)
  VALUES (p_order_id, 'confirmation', v_user.email,
          internal.defer_job('send_confirmation', 'mail', 100, jsonb_build_object('order_id', p_order_id),
                             'mail:' || p_order_id));

  -- The webhook body costs an order_json: build it only when someone subscribed.
  IF EXISTS (SELECT 1 FROM public.webhooks w WHERE w.active AND 'order.paid' = ANY (w.events)) THEN
    SELECT e.* INTO v_event
      FROM public.order_items i
      JOIN public.ticket_types tt ON tt.id = i.ticket_type_id
      JOIN public.events e ON e.id = tt.event_id
     WHERE i.order_id = p_order_id
     ORDER BY i.id LIMIT 1;
    PERFORM internal.notify_webhooks('order.paid', v_event.id,
      internal.order_json(v_order)::jsonb || jsonb_build_object(
        'event', jsonb_build_object('id', v_event.id, 'slug', v_event.slug, 'name', v_event.name,
                                    'start_time', v_event.start_time),
        'buyer', jsonb_build_object('id', v_user.id, 'email', v_user.email, 'full_name', v_user.full_name)));
  END IF;
END;
$$;


ALTER FUNCTION internal.order_paid(p_order_id uuid) OWNER TO booking_owner;

--
-- Name: FUNCTION order_paid(p_order_id uuid); Type: COMMENT; Schema: internal; Owner: booking_owner
--

COMMENT ON FUNCTION internal.order_paid(p_order_id uuid) IS 'Everything announced when an order becomes PAID, in the caller''s transaction: its order_emails row (to the buyer) and send_confirmation job (queue mail, priority 100, lock mail:<order id>), and the order.paid webhooks (order JSON + event + buyer). Called by api.complete_booking (and whatever else makes an order PAID).';


--
-- Name: payment_mode(); Type: FUNCTION; Schema: internal; Owner: booking_owner
--

CREATE FUNCTION internal.payment_mode() RETURNS text
    LANGUAGE plpgsql STABLE
    AS $$
BEGIN
  RETURN (SELECT coalesce((SELECT s.mode FROM public.payment_settings s), 'instant'));
END;
$$;


ALTER FUNCTION internal.payment_mode() OWNER TO booking_owner;

--
-- Name: FUNCTION payment_mode(); Type: COMMENT; Schema: internal; Owner: booking_owner
--

COMMENT ON FUNCTION internal.payment_mode() IS 'The payment mode: instant or provider.';


--
-- Name: reclaim_expired_holds(uuid); Type: FUNCTION; Schema: internal; Owner: booking_owner
--

CREATE FUNCTION internal.reclaim_expired_holds(p_ticket_type_id uuid) RETURNS integer
    LANGUAGE plpgsql
    AS $$
DECLARE
  v_holds integer;
  v_seats integer;
BEGIN
  -- The caller holds the ticket type's row lock. Holds someone is completing or cancelling
  -- right now are locked by them: skip those rather than wait (no lock-order inversion).
  WITH expired AS (
    UPDATE public.order_reservations r
       SET status = 'EXPIRED'
     WHERE r.id IN (SELECT x.id
                      FROM public.order_reservations x
                     WHERE x.ticket_type_id = p_ticket_type_id
                       AND x.status = 'ACTIVE'
                       AND x.expires_at <= now()
                       FOR UPDATE SKIP LOCKED)
    RETURNING r.quantity
  )
  SELECT count(*), coalesce(sum(quantity), 0) INTO v_holds, v_seats FROM expired;

  IF v_seats > 0 THEN
    UPDATE public.ticket_types
       SET available_quantity = available_quantity + v_seats, version = version + 1
     WHERE id = p_ticket_type_id;
  END IF;
  RETURN v_holds;
END;
$$;


ALTER FUNCTION internal.reclaim_expired_holds(p_ticket_type_id uuid) OWNER TO booking_owner;

--
-- Name: FUNCTION reclaim_expired_holds(p_ticket_type_id uuid); Type: COMMENT; Schema: internal; Owner: booking_owner
--

COMMENT ON FUNCTION internal.reclaim_expired_holds(p_ticket_type_id uuid) IS 'Marks the expired ACTIVE holds of one ticket type EXPIRED and returns their seats to stock. Caller must hold the ticket_types row lock. Skips holds locked by others. Returns holds released.';


--
-- Name: record_email_attempt(uuid, text, text); Type: FUNCTION; Schema: internal; Owner: booking_owner
--

CREATE FUNCTION internal.record_email_attempt(p_order_id uuid, p_kind text, p_error text) RETURNS void
    LANGUAGE plpgsql
    AS $$
BEGIN
  UPDATE public.order_emails SET attempts = attempts + 1, last_error = left(p_error, 2000)
   WHERE order_id = p_order_id AND kind = p_kind;
  IF NOT FOUND THEN
    RAISE EXCEPTION USING ERRCODE = 'BKNTF', MESSAGE = format('no %s e-mail for this order', p_kind);
  END IF;
END;
$$;


ALTER FUNCTION internal.record_email_attempt(p_order_id uuid, p_kind text, p_error text) OWNER TO booking_owner;

--
-- Name: FUNCTION record_email_attempt(p_order_id uuid, p_kind text, p_error text); Type: COMMENT; Schema: internal; Owner: booking_owner
--

COMMENT ON FUNCTION internal.record_email_attempt(p_order_id uuid, p_kind text, p_error text) IS 'One attempt to send an order''s e-mail of a kind (confirmation, refund): attempts + 1, last_error = p_error (the first 2,000 characters; NULL clears it). Locks that order_emails row. Raises BKNTF.';


--
-- Name: record_email_sent(uuid, text, text); Type: FUNCTION; Schema: internal; Owner: booking_owner
--

CREATE FUNCTION internal.record_email_sent(p_order_id uuid, p_kind text, p_message_id text) RETURNS boolean
    LANGUAGE plpgsql
    AS $$
BEGIN
  UPDATE public.order_emails SET sent_at = now(), message_id = p_message_id, last_error = NULL
   WHERE order_id = p_order_id AND kind = p_kind AND sent_at IS NULL;
  IF FOUND THEN
    RETURN true;
  END IF;
  IF NOT EXISTS (SELECT 1 FROM public.order_emails WHERE order_id = p_order_id AND kind = p_kind) THEN
    RAISE EXCEPTION USING ERRCODE = 'BKNTF', MESSAGE = format('no %s e-mail for this order', p_kind);
  END IF;
  RETURN false;
END;
$$;


ALTER FUNCTION internal.record_email_sent(p_order_id uuid, p_kind text, p_message_id text) OWNER TO booking_owner;

--
-- Name: FUNCTION record_email_sent(p_order_id uuid, p_kind text, p_message_id text); Type: COMMENT; Schema: internal; Owner: booking_owner
--

COMMENT ON FUNCTION internal.record_email_sent(p_order_id uuid, p_kind text, p_message_id text) IS 'A server (or the mail folder) accepted an order''s e-mail of a kind: sets sent_at and message_id once and returns true; false when recorded before (the first time is kept). Locks that order_emails row. Raises BKNTF.';


--
-- Name: refund_paid_order(uuid, text); Type: FUNCTION; Schema: internal; Owner: booking_owner
--

CREATE FUNCTION internal.refund_paid_order(p_order_id uuid, p_reason text) RETURNS void
    LANGUAGE plpgsql
    AS $$
DECLARE
  v_started boolean;
  v_payment public.payments;
BEGIN
  -- The caller holds the order's ticket types and the order (PAID). Tickets not yet used are
  -- CANCELLED; the seats return to sale unless the event has started.
  SELECT bool_or(e.start_time <= now()) INTO v_started
    FROM public.order_items i
    JOIN public.ticket_types tt ON tt.id = i.ticket_type_id
    JOIN public.events e ON e.id = tt.event_id
   WHERE i.order_id = p_order_id;
  SELECT * INTO v_payment FROM public.payments WHERE order_id = p_order_id FOR UPDATE;
  UPDATE public.orders SET status = 'REFUND_PENDING', seats_kept = coalesce(v_started, false), updated_at = now()
   WHERE id = p_order_id;
  UPDATE public.tickets SET status = 'CANCELLED' WHERE order_id = p_order_id AND status = 'UNUSED';
  IF NOT coalesce(v_started, false) THEN
    PERFORM internal.release_order_seats(p_order_id);
  END IF;
  PERFORM internal.start_refund(p_order_id, p_reason, v_payment.amount, v_payment.provider_txn_id, NULL);
END;
$$;


ALTER FUNCTION internal.refund_paid_order(p_order_id uuid, p_reason text) OWNER TO booking_owner;

--
-- Name: FUNCTION refund_paid_order(p_order_id uuid, p_reason text); Type: COMMENT; Schema: internal; Owner: booking_owner
--

COMMENT ON FUNCTION internal.refund_paid_order(p_order_id uuid, p_reason text) IS 'PAID -> REFUND_PENDING: UNUSED tickets CANCELLED, seats back unless the event started (seats_kept), a refund of the payment started. The caller holds the types'' and the order''s locks.';


--
-- Name: release_order_seats(uuid); Type: FUNCTION; Schema: internal; Owner: booking_owner
--

CREATE FUNCTION internal.release_order_seats(p_order_id uuid) RETURNS void
    LANGUAGE sql
    AS $$
  UPDATE public.ticket_types tt
     SET available_quantity = tt.available_quantity + x.seats, version = tt.version + 1
    FROM (SELECT i.ticket_type_id, sum(i.quantity)::integer AS seats
            FROM public.order_items i WHERE i.order_id = p_order_id GROUP BY i.ticket_type_id) x
   WHERE tt.id = x.ticket_type_id
$$;


ALTER FUNCTION internal.release_order_seats(p_order_id uuid) OWNER TO booking_owner;

--
-- Name: FUNCTION release_order_seats(p_order_id uuid); Type: COMMENT; Schema: internal; Owner: booking_owner
--

COMMENT ON FUNCTION internal.release_order_seats(p_order_id uuid) IS 'Returns an order''s seats to stock. The caller holds the ticket types'' and the order''s locks.';


--
-- Name: order_reservations; Type: TABLE; Schema: public; Owner: booking_owner
--

CREATE TABLE public.order_reservations (
    id uuid DEFAULT gen_random_uuid() NOT NULL,
    user_id uuid NOT NULL,
    ticket_type_id uuid NOT NULL,
    quantity integer NOT NULL,
    status character varying(20) DEFAULT 'ACTIVE'::character varying NOT NULL,
    expires_at timestamp with time zone NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT chk_reservations_quantity CHECK ((quantity > 0)),
    CONSTRAINT chk_reservations_status CHECK (((status)::text = ANY ((ARRAY['ACTIVE'::character varying, 'COMPLETED'::character varying, 'EXPIRED'::character varying, 'CANCELLED'::character varying])::text[])))
);


ALTER TABLE public.order_reservations OWNER TO booking_owner;

--
-- Name: reservation_json(public.order_reservations); Type: FUNCTION; Schema: internal; Owner: booking_owner
--

CREATE FUNCTION internal.reservation_json(r public.order_reservations) RETURNS json
    LANGUAGE sql STABLE
    AS $$
  SELECT json_build_object(
    'id', r.id,
    'user_id', r.user_id,
    'ticket_type_id', r.ticket_type_id,
    'quantity', r.quantity,
    'status', r.status,
    'expires_at', r.expires_at,
    'created_at', r.created_at)
$$;


ALTER FUNCTION internal.reservation_json(r public.order_reservations) OWNER TO booking_owner;

--
-- Name: FUNCTION reservation_json(r public.order_reservations); Type: COMMENT; Schema: internal; Owner: booking_owner
--

COMMENT ON FUNCTION internal.reservation_json(r public.order_reservations) IS 'A reservation as API JSON.';


--
-- Name: reserve(uuid, uuid[], integer[], integer, boolean, text[]); Type: FUNCTION; Schema: internal; Owner: booking_owner
--

CREATE FUNCTION internal.reserve(p_ticket_type_id uuid, p_users uuid[], p_quantities integer[], p_expected_version integer DEFAULT NULL::integer, p_raise boolean DEFAULT false, p_admission_tokens text[] DEFAULT NULL::text[], OUT reservations json[], OUT sqlstates text[], OUT messages text[]) RETURNS record
    LANGUAGE plpgsql
    AS $$
DECLARE
  v_count integer := coalesce(array_length(p_users, 1), 0);
  v_known_users uuid[];
  v_available integer;
  v_problem text;          -- why the type is not on sale now (internal.sale_problem)
  v_refusal text;          -- or why no request can be answered: no such type, or it changed
  v_refusal_message text;
  v_taken integer := 0;
  v_reclaimed boolean := false;
  v_grant_pos integer[] := '{}';  -- positions granted
  v_refused text;          -- why this request is refused (NULL: granted)
  v_granted record;
  v_json json;
  v_quantity integer;
  i integer;
  -- Per-buyer caps (only when the type or its event has one): the call's buyers, and each
  -- one's seats of this type and of the whole event, kept up to date as requests are granted.
  v_event_id uuid;
  v_type_cap integer;
  v_event_cap integer;
  v_buyers uuid[];
  v_type_seats integer[];
  v_event_seats integer[];
  v_counted_types uuid[];  -- the types whose seats count: this one, or every type of the event
  k integer;
  -- The waiting room (only when the event has one): each request needs an admission token.
  v_queue boolean;
  v_secret bytea;
BEGIN
  IF NOT p_raise THEN  -- (raising, a refusal is never returned: only grants, set below)
    reservations := array_fill(NULL::json, ARRAY[v_count]);
    sqlstates := array_fill(NULL::text, ARRAY[v_count]);
    messages := array_fill(NULL::text, ARRAY[v_count]);
  END IF;

  -- The ticket type's row, locked (one lock per call whatever the number of requests). NO KEY
  -- UPDATE, not UPDATE: completes insert rows referencing the type (FOR KEY SHARE) and must
  -- not queue behind the onsale crowd. With p_expected_version (the optimistic way in) the row
  -- is taken only if nobody changed it since the caller read it: compare-and-set.
  SELECT tt.available_quantity, internal.sale_problem(e.status, e.end_time, tt.start_sale_time, tt.end_sale_time),
         -- A token can outlive its user: answer not_found rather than trip over the foreign key.
         ARRAY(SELECT u.id FROM public.users u WHERE u.id = ANY (p_users)),
         e.id, tt.max_per_user, e.max_tickets_per_user, e.queue_enabled
    INTO v_available, v_problem, v_known_users, v_event_id, v_type_cap, v_event_cap, v_queue
    FROM public.ticket_types tt JOIN public.events e ON e.id = tt.event_id
   WHERE tt.id = p_ticket_type_id AND (p_expected_version IS NULL OR tt.version = p_expected_version)
     FOR NO KEY UPDATE OF tt;
  IF NOT FOUND THEN  -- every request of the call gets the same answer
    IF p_ticket_type_id IS NULL THEN
      v_refusal := 'BKVAL'; v_refusal_message := 'user_id and ticket_type_id are required';
    ELSIF p_expected_version IS NOT NULL AND EXISTS (SELECT 1 FROM public.ticket_types WHERE id = p_ticket_type_id) THEN
      v_refusal := 'BKBSY'; v_refusal_message := 'the ticket type changed since it was read';
    ELSE
      v_refusal := 'BKNTF'; v_refusal_message := 'ticket type not found';
    END IF;
  END IF;

  -- Per-buyer caps, only when one is set (no cap: no statement here). The type cap is decided
  -- under the ticket type's row lock (taken above). The event cap spans the event's types:
  -- a transaction advisory lock per (event, buyer), sorted, serialises one buyer's reserves
  -- across them (lock order: ticket_types rows -> these locks -> order_reservations rows; a
  -- batch over several types takes all its type rows and all these locks first). Then ONE
  -- statement counts every buyer of the call (a fresh snapshot: it sees what the lock waited
  -- for): seats in unexpired ACTIVE holds + PENDING/PAID orders, of this type and of the event.
  IF (v_type_cap IS NOT NULL OR v_event_cap IS NOT NULL) AND v_problem IS NULL AND v_refusal IS NULL
     AND cardinality(v_known_users) > 0 THEN
    v_counted_types := ARRAY[p_ticket_type_id];
    IF v_event_cap IS NOT NULL THEN
      PERFORM pg_advisory_xact_lock(l.key)
         FROM (SELECT DISTINCT internal.buyer_lock_key(v_event_id, u) AS key FROM unnest(v_known_users) u
                ORDER BY 1) l;
      -- Read after the lock: a type created meanwhile, and reserved by this buyer, counts too.
      v_counted_types := ARRAY(SELECT t.id FROM public.ticket_types t WHERE t.event_id = v_event_id);
    END IF;
    SELECT array_agg(b.id), array_agg(coalesce(h.type_seats, 0) + coalesce(o.type_seats, 0)),
           array_agg(coalesce(h.event_seats, 0) + coalesce(o.event_seats, 0))
      INTO v_buyers, v_type_seats, v_event_seats
      FROM unnest(v_known_users) AS b(id)
      LEFT JOIN LATERAL (
        -- Only (user, type) in WHERE: the planner must take idx_order_reservations_user_type
        -- (a buyer's few rows), not AND in the partial index of every live hold by expiry.
        SELECT sum(r.quantity) FILTER (WHERE r.ticket_type_id = p_ticket_type_id AND r.status = 'ACTIVE'
                                             AND r.expires_at > now())::integer AS type_seats,
               sum(r.quantity) FILTER (WHERE r.status = 'ACTIVE' AND r.expires_at > now())::integer AS event_seats
          FROM public.order_reservations r
         WHERE r.user_id = b.id AND r.ticket_type_id = ANY (v_counted_types)) h ON true
      LEFT JOIN LATERAL (
        SELECT sum(i.quantity) FILTER (WHERE i.ticket_type_id = p_ticket_type_id)::integer AS type_seats,
               sum(i.quantity)::integer AS event_seats
          FROM public.orders o JOIN public.order_items i ON i.order_id = o.id
         WHERE o.user_id = b.id AND o.status IN ('PENDING', 'PAID') AND i.ticket_type_id = ANY (v_counted_types)) o ON true;
  END IF;

  -- The waiting room: the key its admission tokens are signed with (owner-only table). No room:
  -- no statement here, and one false test per request below.
  IF v_queue THEN
    SELECT s.secret INTO v_secret FROM public.admission_secret s;
  END IF;

  -- Each request in arrival order: arguments, the type, the user, the sale window, the waiting
  -- room's admission, the caps, then stock.
  -- (Few statements per request: in a volatile function each one takes a fresh snapshot.)
  FOR i IN 1..v_count LOOP
    v_quantity := p_quantities[i];
    v_refused := CASE
      WHEN p_users[i] IS NULL OR v_quantity IS NULL OR v_quantity NOT BETWEEN 1 AND 10 THEN 'arguments'
      WHEN v_refusal IS NOT NULL THEN 'type'
      WHEN p_users[i] <> ALL (v_known_users) THEN 'user'
      WHEN v_problem IS NOT NULL THEN 'sale'
      WHEN v_queue AND NOT internal.admission_valid(p_admission_tokens[i], v_event_id, p_users[i], v_secret)
        THEN 'admission' END;
    IF v_refused IS NULL AND v_buyers IS NOT NULL THEN  -- a cap is set
      k := array_position(v_buyers, p_users[i]);
      IF v_quantity > v_type_cap - v_type_seats[k] THEN
        v_refused := 'type cap';
      ELSIF v_quantity > v_event_cap - v_event_seats[k] THEN
        v_refused := 'event cap';
      END IF;
    END IF;
    IF v_refused IS NULL THEN
      IF v_quantity > v_available - v_taken AND NOT v_reclaimed THEN
        -- Short: no seat stays stuck behind a dead hold. Reclaim once, under our lock. The
        -- row's stock does not count this call's grants (v_taken) yet: they are written below.
        v_reclaimed := true;
        IF internal.reclaim_expired_holds(p_ticket_type_id) > 0 THEN
          SELECT tt.available_quantity INTO v_available FROM public.ticket_types tt WHERE tt.id = p_ticket_type_id;
        END IF;
      END IF;
      IF v_quantity <= v_available - v_taken THEN
        v_taken := v_taken + v_quantity;
        v_grant_pos := v_grant_pos || i;
        IF v_buyers IS NOT NULL THEN  -- the buyer's next request in this call counts this one
          v_type_seats[k] := v_type_seats[k] + v_quantity;
          v_event_seats[k] := v_event_seats[k] + v_quantity;
        END IF;
      ELSE
        v_refused := 'stock';
      END IF;
    END IF;
    IF v_refused IS NOT NULL THEN
      sqlstates[i] := CASE v_refused WHEN 'arguments' THEN 'BKVAL' WHEN 'type' THEN v_refusal WHEN 'user' THEN 'BKNTF'
                                     WHEN 'sale' THEN 'BKSNO' WHEN 'type cap' THEN 'BKLIM'
                                     WHEN 'event cap' THEN 'BKLIM' WHEN 'admission' THEN 'BKNAD' ELSE 'BKSLD' END;
      messages[i] := CASE v_refused
        WHEN 'arguments' THEN CASE WHEN p_users[i] IS NULL THEN 'user_id and ticket_type_id are required'
                                   ELSE format('quantity must be between 1 and 10, got %s', coalesce(v_quantity::text, 'null')) END
        WHEN 'type' THEN v_refusal_message
        WHEN 'user' THEN 'user not found'
        WHEN 'sale' THEN v_problem
        WHEN 'admission' THEN 'this event sells through its waiting room: an unexpired admission token '
                              'of yours for it is required (X-Admission-Token)'
        WHEN 'type cap' THEN format('at most %s tickets of this ticket type per buyer (you have %s)', v_type_cap, v_type_seats[k])
        WHEN 'event cap' THEN format('at most %s tickets of this event per buyer (you have %s)', v_event_cap, v_event_seats[k])
        ELSE format('only %s tickets left', v_available - v_taken) END;
    END IF;
  END LOOP;

  -- p_raise: the first refusal is raised, before any hold is written (api.reserve_tickets); a
  -- reclaim of expired holds made on its way rolls back with it, as it always did.
  IF p_raise AND v_count > coalesce(array_length(v_grant_pos, 1), 0) THEN
    FOR i IN 1..v_count LOOP
      IF sqlstates[i] IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = sqlstates[i], MESSAGE = messages[i];
      END IF;
    END LOOP;
  END IF;

  -- The grants: stock once, then the holds, each answered with its API JSON (the one helper) at
  -- its request's position. One hold (every unbatched reserve) is a plain INSERT ... VALUES:
  -- ~10 us cheaper per call than the many-row form, measured.
  IF v_taken > 0 THEN
    UPDATE public.ticket_types
       SET available_quantity = available_quantity - v_taken, version = version + 1
     WHERE id = p_ticket_type_id;
    IF array_length(v_grant_pos, 1) = 1 THEN
      INSERT INTO public.order_reservations AS r (user_id, ticket_type_id, quantity, status, expires_at)
      VALUES (p_users[v_grant_pos[1]], p_ticket_type_id, p_quantities[v_grant_pos[1]], 'ACTIVE', now() + internal.hold_period())
      RETURNING internal.reservation_json(r) INTO v_json;
      reservations[v_grant_pos[1]] := v_json;
    ELSE
      FOR v_granted IN
        WITH g AS MATERIALIZED (SELECT gen_random_uuid() AS id, pos FROM unnest(v_grant_pos) AS pos),
             ins AS (
               INSERT INTO public.order_reservations AS r (id, user_id, ticket_type_id, quantity, status, expires_at)
               SELECT g.id, p_users[g.pos], p_ticket_type_id, p_quantities[g.pos], 'ACTIVE', now() + internal.hold_period()
                 FROM g
               RETURNING r.id, internal.reservation_json(r) AS reservation)
        SELECT g.pos, ins.reservation FROM ins JOIN g ON g.id = ins.id
      LOOP
        reservations[v_granted.pos] := v_granted.reservation;
      END LOOP;
    END IF;
  END IF;
END;
$$;


ALTER FUNCTION internal.reserve(p_ticket_type_id uuid, p_users uuid[], p_quantities integer[], p_expected_version integer, p_raise boolean, p_admission_tokens text[], OUT reservations json[], OUT sqlstates text[], OUT messages text[]) OWNER TO booking_owner;

--
-- Name: FUNCTION reserve(p_ticket_type_id uuid, p_users uuid[], p_quantities integer[], p_expected_version integer, p_raise boolean, p_admission_tokens text[], OUT reservations json[], OUT sqlstates text[], OUT messages text[]); Type: COMMENT; Schema: internal; Owner: booking_owner
--

COMMENT ON FUNCTION internal.reserve(p_ticket_type_id uuid, p_users uuid[], p_quantities integer[], p_expected_version integer, p_raise boolean, p_admission_tokens text[], OUT reservations json[], OUT sqlstates text[], OUT messages text[]) IS 'The one place a reservation is decided: requests of users p_users for p_quantities seats of one ticket type, in arrival order. For each: arguments (quantity 1..10), the type exists, the user exists, the event is PUBLISHED and inside the sale window, the waiting room''s admission when the event has one (events.queue_enabled: p_admission_tokens[i] must be an unexpired admission token of that user for this event, else BKNAD), the buyer''s caps (ticket_types.max_per_user, events.max_tickets_per_user: unexpired ACTIVE holds + PENDING/PAID orders, counted together with the buyer''s earlier requests of the call), stock (reclaiming the type''s expired holds once when short); granted requests become ACTIVE holds for booking.hold_period. Locks the ticket_types row once (FOR NO KEY UPDATE); with p_expected_version only if its version still matches (else BKBSY: compare-and-set); under an event cap also a transaction advisory lock per (event, buyer), sorted. Returns three arrays, one element per request: the reservation JSON, or NULL with the SQLSTATE and message (BKVAL, BKNTF, BKSNO, BKNAD, BKLIM, BKSLD, BKBSY); with p_raise the first refusal is raised instead, before any hold is written. Callers bound the number of requests (the batch: 1000), set lock_timeout and take several ticket types in id order.';


--
-- Name: reserve_fingerprint(uuid, integer); Type: FUNCTION; Schema: internal; Owner: booking_owner
--

CREATE FUNCTION internal.reserve_fingerprint(p_ticket_type_id uuid, p_quantity integer) RETURNS text
    LANGUAGE sql IMMUTABLE
    AS $$
  -- The same for every way in (one request, optimistic, coalesced): a gateway restarted with
  -- another reserve strategy still recognises the request.
  SELECT 'reserve ' || coalesce(p_ticket_type_id::text, '-') || ' ' || coalesce(p_quantity::text, '-')
$$;


ALTER FUNCTION internal.reserve_fingerprint(p_ticket_type_id uuid, p_quantity integer) OWNER TO booking_owner;

--
-- Name: FUNCTION reserve_fingerprint(p_ticket_type_id uuid, p_quantity integer); Type: COMMENT; Schema: internal; Owner: booking_owner
--

COMMENT ON FUNCTION internal.reserve_fingerprint(p_ticket_type_id uuid, p_quantity integer) IS 'What an idempotency key of a reserve stands for: the route and its arguments.';


--
-- Name: revoke_sessions(uuid[], text, boolean); Type: FUNCTION; Schema: internal; Owner: booking_owner
--

CREATE FUNCTION internal.revoke_sessions(p_session_ids uuid[], p_reason text, p_deny boolean) RETURNS integer
    LANGUAGE plpgsql
    AS $$
DECLARE
  v_ended integer;
BEGIN
  -- Ends refreshing (the first reason stays), and with p_deny the access tokens too.
  -- Rows locked in id order: two revocations of overlapping sessions cannot deadlock.
  UPDATE public.sessions s
     SET revoked_at = now(), revoked_reason = p_reason
   WHERE s.id IN (SELECT x.id FROM public.sessions x
                   WHERE x.id = ANY (p_session_ids) AND x.revoked_at IS NULL
                   ORDER BY x.id FOR NO KEY UPDATE);
  GET DIAGNOSTICS v_ended = ROW_COUNT;
  IF p_deny THEN
    INSERT INTO public.revoked_sessions (session_id)
    SELECT DISTINCT x FROM unnest(p_session_ids) x ORDER BY x
    ON CONFLICT (session_id) DO NOTHING;
    PERFORM pg_notify('booking_revocations', 's:' || x) FROM unnest(p_session_ids) x;
  END IF;
  RETURN v_ended;
END;
$$;


ALTER FUNCTION internal.revoke_sessions(p_session_ids uuid[], p_reason text, p_deny boolean) OWNER TO booking_owner;

--
-- Name: FUNCTION revoke_sessions(p_session_ids uuid[], p_reason text, p_deny boolean); Type: COMMENT; Schema: internal; Owner: booking_owner
--

COMMENT ON FUNCTION internal.revoke_sessions(p_session_ids uuid[], p_reason text, p_deny boolean) IS 'Marks sessions revoked (no more refresh); with p_deny also puts them on the deny-list and notifies the gateways (their access tokens are refused at once). Returns sessions newly revoked.';


--
-- Name: sale_problem(text, timestamp with time zone, timestamp with time zone, timestamp with time zone); Type: FUNCTION; Schema: internal; Owner: booking_owner
--

CREATE FUNCTION internal.sale_problem(p_event_status text, p_event_end timestamp with time zone, p_sale_start timestamp with time zone, p_sale_end timestamp with time zone) RETURNS text
    LANGUAGE sql STABLE
    AS $$
  SELECT CASE
    WHEN p_event_status <> 'PUBLISHED' THEN format('the event is not on sale (it is %s)', p_event_status)
    WHEN p_sale_start IS NOT NULL AND now() < p_sale_start THEN format('sale opens at %s', to_json(p_sale_start) #>> '{}')
    WHEN p_sale_end IS NOT NULL AND now() >= p_sale_end THEN format('sale closed at %s', to_json(p_sale_end) #>> '{}')
    WHEN now() >= p_event_end THEN 'the event has ended'
  END
$$;


ALTER FUNCTION internal.sale_problem(p_event_status text, p_event_end timestamp with time zone, p_sale_start timestamp with time zone, p_sale_end timestamp with time zone) OWNER TO booking_owner;

--
-- Name: FUNCTION sale_problem(p_event_status text, p_event_end timestamp with time zone, p_sale_start timestamp with time zone, p_sale_end timestamp with time zone); Type: COMMENT; Schema: internal; Owner: booking_owner
--

COMMENT ON FUNCTION internal.sale_problem(p_event_status text, p_event_end timestamp with time zone, p_sale_start timestamp with time zone, p_sale_end timestamp with time zone) IS 'Why a ticket type cannot be sold now (NULL when it can): event not PUBLISHED, outside the sale window, or the event is over.';


--
-- Name: set_event_status(uuid, text, text[]); Type: FUNCTION; Schema: internal; Owner: booking_owner
--

CREATE FUNCTION internal.set_event_status(p_event_id uuid, p_to text, p_from text[]) RETURNS json
    LANGUAGE plpgsql
    AS $$
DECLARE
  v_event public.events;
BEGIN
  SELECT * INTO v_event FROM public.events WHERE id = p_event_id FOR NO KEY UPDATE;
  IF NOT FOUND THEN
    RAISE EXCEPTION USING ERRCODE = 'BKNTF', MESSAGE = 'event not found';
  END IF;
  IF v_event.status = p_to THEN
    RETURN internal.event_json(v_event, true);  -- idempotent: a retried request succeeds
  END IF;
  IF v_event.status <> ALL (p_from) THEN
    RAISE EXCEPTION USING ERRCODE = 'BKIST',
      MESSAGE = format('cannot move an event from %s to %s', v_event.status, p_to);
  END IF;
  UPDATE public.events SET status = p_to WHERE id = p_event_id RETURNING * INTO v_event;
  RETURN internal.event_json(v_event, true);
END;
$$;


ALTER FUNCTION internal.set_event_status(p_event_id uuid, p_to text, p_from text[]) OWNER TO booking_owner;

--
-- Name: FUNCTION set_event_status(p_event_id uuid, p_to text, p_from text[]); Type: COMMENT; Schema: internal; Owner: booking_owner
--

COMMENT ON FUNCTION internal.set_event_status(p_event_id uuid, p_to text, p_from text[]) IS 'Moves an event to p_to if its status is one of p_from (same status: no-op). Locks the event row.';


--
-- Name: shuffle_key(text, uuid); Type: FUNCTION; Schema: internal; Owner: booking_owner
--

CREATE FUNCTION internal.shuffle_key(p_seed text, p_user_id uuid) RETURNS bytea
    LANGUAGE sql IMMUTABLE
    AS $$
  SELECT public.digest(p_seed || ':' || p_user_id, 'sha256')
$$;


ALTER FUNCTION internal.shuffle_key(p_seed text, p_user_id uuid) OWNER TO booking_owner;

--
-- Name: FUNCTION shuffle_key(p_seed text, p_user_id uuid); Type: COMMENT; Schema: internal; Owner: booking_owner
--

COMMENT ON FUNCTION internal.shuffle_key(p_seed text, p_user_id uuid) IS 'The sort key of the pre-opening shuffle: sha256(seed || '':'' || user id).';


--
-- Name: start_refund(uuid, text, numeric, text, bigint); Type: FUNCTION; Schema: internal; Owner: booking_owner
--

CREATE FUNCTION internal.start_refund(p_order_id uuid, p_reason text, p_amount numeric, p_provider_txn_id text, p_event_id bigint) RETURNS uuid
    LANGUAGE plpgsql
    AS $$
DECLARE
  v_refund uuid := gen_random_uuid();
  v_method text;
BEGIN
  SELECT p.payment_method INTO v_method FROM public.payments p WHERE p.order_id = p_order_id;
  INSERT INTO public.payment_refunds (id, order_id, payment_event_id, provider, provider_txn_id, amount, reason, job_id)
  VALUES (v_refund, p_order_id, p_event_id, v_method, p_provider_txn_id, p_amount, p_reason,
          internal.defer_job('refund_payment', 'payments', 90, jsonb_build_object('refund_id', v_refund),
                             'refund:' || v_refund));
  RETURN v_refund;
END;
$$;


ALTER FUNCTION internal.start_refund(p_order_id uuid, p_reason text, p_amount numeric, p_provider_txn_id text, p_event_id bigint) OWNER TO booking_owner;

--
-- Name: FUNCTION start_refund(p_order_id uuid, p_reason text, p_amount numeric, p_provider_txn_id text, p_event_id bigint); Type: COMMENT; Schema: internal; Owner: booking_owner
--

COMMENT ON FUNCTION internal.start_refund(p_order_id uuid, p_reason text, p_amount numeric, p_provider_txn_id text, p_event_id bigint) IS 'Records a refund to make (payment_refunds) and defers its refund_payment job (queue payments, priority 90, lock refund:<id>) in the caller''s transaction. Returns the refund''s id.';


--
-- Name: store_idempotent_response(uuid, text, json); Type: FUNCTION; Schema: internal; Owner: booking_owner
--

CREATE FUNCTION internal.store_idempotent_response(p_user_id uuid, p_key text, p_response json) RETURNS json
    LANGUAGE plpgsql
    AS $$
BEGIN
  UPDATE public.idempotency_keys SET response = p_response WHERE user_id = p_user_id AND key = p_key;
  RETURN p_response;
END;
$$;


ALTER FUNCTION internal.store_idempotent_response(p_user_id uuid, p_key text, p_response json) OWNER TO booking_owner;

--
-- Name: FUNCTION store_idempotent_response(p_user_id uuid, p_key text, p_response json); Type: COMMENT; Schema: internal; Owner: booking_owner
--

COMMENT ON FUNCTION internal.store_idempotent_response(p_user_id uuid, p_key text, p_response json) IS 'Records the success response of a claimed key (same transaction as the work); returns it.';


--
-- Name: take_order_seats(uuid); Type: FUNCTION; Schema: internal; Owner: booking_owner
--

CREATE FUNCTION internal.take_order_seats(p_order_id uuid) RETURNS boolean
    LANGUAGE plpgsql
    AS $$
BEGIN
  -- The caller holds the ticket types' locks: the check and the take are one decision.
  IF EXISTS (SELECT 1
               FROM (SELECT i.ticket_type_id, sum(i.quantity) AS seats
                       FROM public.order_items i WHERE i.order_id = p_order_id GROUP BY i.ticket_type_id) x
               JOIN public.ticket_types tt ON tt.id = x.ticket_type_id
               JOIN public.events e ON e.id = tt.event_id
              WHERE tt.available_quantity < x.seats OR e.status <> 'PUBLISHED' OR e.start_time <= now()) THEN
    RETURN false;
  END IF;
  UPDATE public.ticket_types tt
     SET available_quantity = tt.available_quantity - x.seats, version = tt.version + 1
    FROM (SELECT i.ticket_type_id, sum(i.quantity)::integer AS seats
            FROM public.order_items i WHERE i.order_id = p_order_id GROUP BY i.ticket_type_id) x
   WHERE tt.id = x.ticket_type_id;
  RETURN true;
END;
$$;


ALTER FUNCTION internal.take_order_seats(p_order_id uuid) OWNER TO booking_owner;

--
-- Name: FUNCTION take_order_seats(p_order_id uuid); Type: COMMENT; Schema: internal; Owner: booking_owner
--

COMMENT ON FUNCTION internal.take_order_seats(p_order_id uuid) IS 'Takes an order''s seats from stock again (a late payment) if every type has them and the event is PUBLISHED and not started; returns whether it did. The caller holds the ticket types'' locks.';


--
-- Name: ticket_types; Type: TABLE; Schema: public; Owner: booking_owner
--

CREATE TABLE public.ticket_types (
    id uuid DEFAULT gen_random_uuid() NOT NULL,
    event_id uuid NOT NULL,
    name character varying(100) NOT NULL,
    price numeric(10,2) NOT NULL,
    initial_quantity integer NOT NULL,
    available_quantity integer NOT NULL,
    start_sale_time timestamp with time zone,
    end_sale_time timestamp with time zone,
    version integer DEFAULT 1 NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    max_per_user integer,
    CONSTRAINT chk_ticket_types_available_lte_initial CHECK ((available_quantity <= initial_quantity)),
    CONSTRAINT chk_ticket_types_price CHECK ((price >= (0)::numeric)),
    CONSTRAINT chk_ticket_types_quantity CHECK (((initial_quantity >= 0) AND (available_quantity >= 0)))
);


ALTER TABLE public.ticket_types OWNER TO booking_owner;

--
-- Name: COLUMN ticket_types.max_per_user; Type: COMMENT; Schema: public; Owner: booking_owner
--

COMMENT ON COLUMN public.ticket_types.max_per_user IS 'Seats of this ticket type one buyer may hold or own (ACTIVE holds + PENDING/PAID orders); NULL: no cap.';


--
-- Name: ticket_type_json(public.ticket_types, public.events, boolean); Type: FUNCTION; Schema: internal; Owner: booking_owner
--

CREATE FUNCTION internal.ticket_type_json(tt public.ticket_types, e public.events, p_live boolean) RETURNS json
    LANGUAGE sql STABLE
    AS $$
  SELECT CASE WHEN p_live THEN
    json_build_object(
      'id', tt.id, 'event_id', tt.event_id, 'name', tt.name, 'price', tt.price::text,
      'initial_quantity', tt.initial_quantity,
      'start_sale_time', tt.start_sale_time, 'end_sale_time', tt.end_sale_time,
      'max_per_user', tt.max_per_user,
      'available_quantity', tt.available_quantity,
      'on_sale', internal.sale_problem(e.status, e.end_time, tt.start_sale_time, tt.end_sale_time) IS NULL)
  ELSE
    json_build_object(
      'id', tt.id, 'event_id', tt.event_id, 'name', tt.name, 'price', tt.price::text,
      'initial_quantity', tt.initial_quantity,
      'start_sale_time', tt.start_sale_time, 'end_sale_time', tt.end_sale_time,
      'max_per_user', tt.max_per_user)
  END
$$;


ALTER FUNCTION internal.ticket_type_json(tt public.ticket_types, e public.events, p_live boolean) OWNER TO booking_owner;

--
-- Name: FUNCTION ticket_type_json(tt public.ticket_types, e public.events, p_live boolean); Type: COMMENT; Schema: internal; Owner: booking_owner
--

COMMENT ON FUNCTION internal.ticket_type_json(tt public.ticket_types, e public.events, p_live boolean) IS 'A ticket type as API JSON; money as a decimal string.';


--
-- Name: users; Type: TABLE; Schema: public; Owner: booking_owner
--

CREATE TABLE public.users (
    id uuid DEFAULT gen_random_uuid() NOT NULL,
    email character varying(255) NOT NULL,
    password_hash character varying(255) NOT NULL,
    full_name character varying(255) NOT NULL,
    profile_data jsonb DEFAULT '{}'::jsonb,
    role character varying(20) DEFAULT 'user'::character varying NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT chk_users_email_format CHECK (((email)::text ~* '^[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}$'::text)),
    CONSTRAINT chk_users_role CHECK (((role)::text = ANY ((ARRAY['admin'::character varying, 'user'::character varying])::text[])))
);


ALTER TABLE public.users OWNER TO booking_owner;

--
-- Name: user_json(public.users); Type: FUNCTION; Schema: internal; Owner: booking_owner
--

CREATE FUNCTION internal.user_json(u public.users) RETURNS json
    LANGUAGE sql STABLE
    AS $$
  SELECT json_build_object(
    'id', u.id, 'email', u.email, 'full_name', u.full_name, 'role', u.role,
    'created_at', u.created_at)
$$;


ALTER FUNCTION internal.user_json(u public.users) OWNER TO booking_owner;

--
-- Name: FUNCTION user_json(u public.users); Type: COMMENT; Schema: internal; Owner: booking_owner
--

COMMENT ON FUNCTION internal.user_json(u public.users) IS 'A user as API JSON (never the password hash).';


--
-- Name: waiting_rooms; Type: TABLE; Schema: public; Owner: booking_owner
--

CREATE TABLE public.waiting_rooms (
    event_id uuid NOT NULL,
    joined integer DEFAULT 0 NOT NULL,
    base integer DEFAULT 0 NOT NULL,
    base_at timestamp with time zone,
    paused_at timestamp with time zone,
    opened_at timestamp with time zone,
    shuffle_seed text,
    shuffled_entries integer,
    shuffled_through integer,
    shuffled_at timestamp with time zone,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    created_at timestamp with time zone DEFAULT clock_timestamp() NOT NULL,
    CONSTRAINT chk_waiting_rooms_counts CHECK (((joined >= 0) AND (base >= 0)))
);


ALTER TABLE public.waiting_rooms OWNER TO booking_owner;

--
-- Name: TABLE waiting_rooms; Type: COMMENT; Schema: public; Owner: booking_owner
--

COMMENT ON TABLE public.waiting_rooms IS 'Per event waiting-room state: entries joined, the serving position (base at base_at, advancing at events.admission_rate_per_minute unless paused), and the recorded shuffle of the people who joined before the sale opened (seed, count, time; api.waiting_room_audit recomputes it).';


--
-- Name: waiting_room_answer(public.events, public.waiting_rooms, uuid); Type: FUNCTION; Schema: internal; Owner: booking_owner
--

CREATE FUNCTION internal.waiting_room_answer(e public.events, w public.waiting_rooms, p_user_id uuid) RETURNS json
    LANGUAGE plpgsql
    AS $$
DECLARE
  v_entry public.waiting_room_entries;
  v_serving integer := internal.waiting_room_serving(w, e.admission_rate_per_minute, e.queue_enabled);
  v_opens timestamptz;
  v_expires bigint;
  v_eta numeric;
BEGIN
  SELECT * INTO v_entry FROM public.waiting_room_entries WHERE event_id = e.id AND user_id = p_user_id;
  IF NOT FOUND THEN
    RAISE EXCEPTION USING ERRCODE = 'BKNTF', MESSAGE = 'you are not in this waiting room',
      HINT = 'POST /events/{event_id}/queue joins it';
  END IF;
  IF v_entry.position IS NULL THEN  -- before the opening: the shuffle decides the place
    v_opens := internal.waiting_room_opens_at(e.id);
    RETURN json_build_object('event_id', e.id, 'status', 'waiting', 'position', NULL, 'ahead', NULL,
      'eta_seconds', CASE WHEN v_opens > now() AND isfinite(v_opens) THEN ceil(extract(epoch FROM v_opens - now()))::bigint END,
      'admission_token', NULL, 'admission_expires_at', NULL);
  END IF;
  IF v_entry.position > v_serving THEN
    -- Exact time left under the current rule (null while paused): position p is served once
    -- base + elapsed * rate / 60 >= p.
    IF w.paused_at IS NULL AND e.queue_enabled THEN
      v_eta := (v_entry.position - w.base) * 60.0 / e.admission_rate_per_minute
               - extract(epoch FROM now() - greatest(w.base_at, w.opened_at));
    END IF;
    RETURN json_build_object('event_id', e.id, 'status', 'waiting', 'position', v_entry.position,
      'ahead', v_entry.position - v_serving - 1,
      'eta_seconds', CASE WHEN v_eta IS NOT NULL THEN ceil(greatest(v_eta, 0))::bigint END,
      'admission_token', NULL, 'admission_expires_at', NULL);
  END IF;
  IF v_entry.admitted_at IS NULL THEN  -- the one write of a poll: the admission's window starts
    UPDATE public.waiting_room_entries SET admitted_at = now()
     WHERE event_id = e.id AND user_id = p_user_id AND admitted_at IS NULL
    RETURNING * INTO v_entry;
    IF NOT FOUND THEN  -- a concurrent poll of the same user was first
      SELECT * INTO v_entry FROM public.waiting_room_entries WHERE event_id = e.id AND user_id = p_user_id;
    END IF;
  END IF;
  v_expires := floor(extract(epoch FROM v_entry.admitted_at + internal.admission_ttl()))::bigint;
  RETURN json_build_object('event_id', e.id, 'status', 'admitted', 'position', v_entry.position,
    'ahead', 0, 'eta_seconds', 0,
    'admission_token', internal.admission_token(e.id, p_user_id, v_expires,
                                                (SELECT s.secret FROM public.admission_secret s)),
    'admission_expires_at', to_timestamp(v_expires));
END;
$$;


ALTER FUNCTION internal.waiting_room_answer(e public.events, w public.waiting_rooms, p_user_id uuid) OWNER TO booking_owner;

--
-- Name: FUNCTION waiting_room_answer(e public.events, w public.waiting_rooms, p_user_id uuid); Type: COMMENT; Schema: internal; Owner: booking_owner
--

COMMENT ON FUNCTION internal.waiting_room_answer(e public.events, w public.waiting_rooms, p_user_id uuid) IS 'A user''s place as the API answers it: {event_id, status, position, ahead, eta_seconds, admission_token, admission_expires_at}. Raises BKNTF when the user has not joined.';


--
-- Name: waiting_room_event(uuid); Type: FUNCTION; Schema: internal; Owner: booking_owner
--

CREATE FUNCTION internal.waiting_room_event(p_event_id uuid) RETURNS public.events
    LANGUAGE plpgsql STABLE
    AS $$
DECLARE
  v_event public.events;
BEGIN
  SELECT * INTO v_event FROM public.events WHERE id = p_event_id;
  IF NOT FOUND OR NOT v_event.queue_enabled OR v_event.status = 'DRAFT' THEN
    RAISE EXCEPTION USING ERRCODE = 'BKNTF', MESSAGE = 'this event has no waiting room';
  END IF;
  RETURN v_event;
END;
$$;


ALTER FUNCTION internal.waiting_room_event(p_event_id uuid) OWNER TO booking_owner;

--
-- Name: FUNCTION waiting_room_event(p_event_id uuid); Type: COMMENT; Schema: internal; Owner: booking_owner
--

COMMENT ON FUNCTION internal.waiting_room_event(p_event_id uuid) IS 'The event, if it has a waiting room (queue_enabled, not a draft). Raises BKNTF.';


--
-- Name: waiting_room_mirror(public.waiting_rooms, public.events); Type: FUNCTION; Schema: internal; Owner: booking_owner
--

CREATE FUNCTION internal.waiting_room_mirror(w public.waiting_rooms, e public.events) RETURNS json
    LANGUAGE sql STABLE
    AS $$
  -- What a gateway needs to compute the rule itself (gateway/waiting_room.py, the same formula as
  -- internal.waiting_room_serving): times as Unix microseconds, exact. opens_at only before the
  -- shuffle (null: at publication, i.e. already open, or not known yet: no ticket type; either
  -- way the gateway leaves the answer to the database).
  SELECT json_build_object(
    'event_id', w.event_id, 'enabled', e.queue_enabled AND e.status <> 'DRAFT',
    'rate', e.admission_rate_per_minute, 'base', w.base,
    'base_at', (extract(epoch FROM w.base_at) * 1000000)::bigint, 'paused', w.paused_at IS NOT NULL,
    'opened_at', (extract(epoch FROM w.opened_at) * 1000000)::bigint, 'shuffled', w.shuffle_seed IS NOT NULL,
    'created_at', (extract(epoch FROM w.created_at) * 1000000)::bigint,
    'opens_at', CASE WHEN w.shuffle_seed IS NULL THEN
                  (extract(epoch FROM nullif(nullif(internal.waiting_room_opens_at(w.event_id), '-infinity'), 'infinity'))
                   * 1000000)::bigint
                END)
$$;


ALTER FUNCTION internal.waiting_room_mirror(w public.waiting_rooms, e public.events) OWNER TO booking_owner;

--
-- Name: FUNCTION waiting_room_mirror(w public.waiting_rooms, e public.events); Type: COMMENT; Schema: internal; Owner: booking_owner
--

COMMENT ON FUNCTION internal.waiting_room_mirror(w public.waiting_rooms, e public.events) IS 'A room''s rule as the gateways mirror it: {event_id, enabled, rate, base, base_at, paused, opened_at, shuffled, created_at (which incarnation of the room), opens_at} (times in Unix microseconds).';


--
-- Name: waiting_room_notify(uuid, boolean); Type: FUNCTION; Schema: internal; Owner: booking_owner
--

CREATE FUNCTION internal.waiting_room_notify(p_event_id uuid, p_only_before_opening boolean) RETURNS void
    LANGUAGE plpgsql
    AS $$
BEGIN
  -- NOTIFY booking_waiting_rooms 'r:<mirror JSON>' (delivered at commit, in commit order: every
  -- change of a room holds its row lock, so the last notice a gateway gets is the latest state).
  PERFORM pg_notify('booking_waiting_rooms', 'r:' || internal.waiting_room_mirror(w, e)::text)
     FROM public.waiting_rooms w JOIN public.events e ON e.id = w.event_id
    WHERE w.event_id = p_event_id AND (NOT p_only_before_opening OR w.shuffle_seed IS NULL);
END;
$$;


ALTER FUNCTION internal.waiting_room_notify(p_event_id uuid, p_only_before_opening boolean) OWNER TO booking_owner;

--
-- Name: FUNCTION waiting_room_notify(p_event_id uuid, p_only_before_opening boolean); Type: COMMENT; Schema: internal; Owner: booking_owner
--

COMMENT ON FUNCTION internal.waiting_room_notify(p_event_id uuid, p_only_before_opening boolean) IS 'Tells every gateway a room''s new rule (NOTIFY booking_waiting_rooms, r:<mirror JSON>); with p_only_before_opening, only while it has not opened. No room: nothing.';


--
-- Name: waiting_room_open(uuid, boolean); Type: FUNCTION; Schema: internal; Owner: booking_owner
--

CREATE FUNCTION internal.waiting_room_open(p_event_id uuid, p_wait boolean DEFAULT true) RETURNS public.waiting_rooms
    LANGUAGE plpgsql
    AS $$
DECLARE
  w public.waiting_rooms;
  v_opens timestamptz;
  v_seed text;
  v_count integer;
BEGIN
  -- Once per event: when the sale has opened and nobody shuffled yet. Under the room's lock.
  SELECT * INTO w FROM public.waiting_rooms WHERE event_id = p_event_id;
  IF NOT FOUND OR w.shuffle_seed IS NOT NULL THEN
    RETURN w;
  END IF;
  v_opens := internal.waiting_room_opens_at(p_event_id);
  IF now() < v_opens THEN
    RETURN w;
  END IF;
  IF NOT p_wait THEN
    -- A poll does not queue behind a shuffle in progress (a big room's takes seconds: every poll
    -- of the crowd would hold a connection for the lock timeout, then fail): it answers "no place
    -- yet" from the row as it is, and asks again later.
    SELECT * INTO w FROM public.waiting_rooms WHERE event_id = p_event_id FOR UPDATE SKIP LOCKED;
    IF NOT FOUND THEN
      SELECT * INTO w FROM public.waiting_rooms WHERE event_id = p_event_id;
      RETURN w;
    END IF;
  ELSE
    SELECT * INTO w FROM public.waiting_rooms WHERE event_id = p_event_id FOR UPDATE;
  END IF;
  IF w.shuffle_seed IS NOT NULL THEN  -- another transaction did it while we waited
    RETURN w;
  END IF;
  -- The shuffle: everyone here now joined before the opening (a join after it shuffles first).
  -- Order: sha256(seed || user id); a DBA recomputes it from the recorded seed.
  v_seed := encode(public.gen_random_bytes(16), 'hex');
  UPDATE public.waiting_room_entries e SET position = s.rank
    FROM (SELECT x.user_id, row_number() OVER (ORDER BY internal.shuffle_key(v_seed, x.user_id), x.user_id) AS rank
            FROM public.waiting_room_entries x WHERE x.event_id = p_event_id) s
   WHERE e.event_id = p_event_id AND e.user_id = s.user_id;
  GET DIAGNOSTICS v_count = ROW_COUNT;
  UPDATE public.waiting_rooms
     SET shuffle_seed = v_seed, shuffled_entries = v_count, shuffled_through = w.joined, shuffled_at = now(),
         opened_at = CASE WHEN v_opens = '-infinity' THEN now() ELSE v_opens END, updated_at = now()
   WHERE event_id = p_event_id
  RETURNING * INTO w;
  RETURN w;
END;
$$;


ALTER FUNCTION internal.waiting_room_open(p_event_id uuid, p_wait boolean) OWNER TO booking_owner;

--
-- Name: FUNCTION waiting_room_open(p_event_id uuid, p_wait boolean); Type: COMMENT; Schema: internal; Owner: booking_owner
--

COMMENT ON FUNCTION internal.waiting_room_open(p_event_id uuid, p_wait boolean) IS 'Opens the room once the sale has opened: shuffles everyone who joined before (positions 1..n by sha256(seed || user id), the seed recorded) and records opened_at. Idempotent; locks the waiting_rooms row only when it shuffles. p_wait false: when another transaction holds the row (shuffling, or a join), returns the row unshuffled instead of waiting.';


--
-- Name: waiting_room_opens_at(uuid); Type: FUNCTION; Schema: internal; Owner: booking_owner
--

CREATE FUNCTION internal.waiting_room_opens_at(p_event_id uuid) RETURNS timestamp with time zone
    LANGUAGE plpgsql STABLE
    AS $$
  -- The earliest start_sale_time of the event's types; -infinity (open from publication) when
  -- one of them has none; infinity (not yet: nothing is on sale) while the event has no type.
  -- Without the last rule a room opened at its first join when the admin had not added the types
  -- yet: no shuffle at the real opening (the first to find the event came first) and everyone
  -- admitted, their tokens expiring, before a type's later start_sale_time.
BEGIN
  RETURN (SELECT CASE WHEN count(*) = 0 THEN 'infinity'::timestamptz
              WHEN bool_or(t.start_sale_time IS NULL) THEN '-infinity'::timestamptz
              ELSE min(t.start_sale_time) END
    FROM public.ticket_types t WHERE t.event_id = p_event_id);
END;
$$;


ALTER FUNCTION internal.waiting_room_opens_at(p_event_id uuid) OWNER TO booking_owner;

--
-- Name: FUNCTION waiting_room_opens_at(p_event_id uuid); Type: COMMENT; Schema: internal; Owner: booking_owner
--

COMMENT ON FUNCTION internal.waiting_room_opens_at(p_event_id uuid) IS 'When an event''s sale opens: the earliest start_sale_time of its ticket types, -infinity (at publication) when one of them has none, infinity (not yet) while it has no ticket type.';


--
-- Name: waiting_room_rebase(uuid, integer, boolean); Type: FUNCTION; Schema: internal; Owner: booking_owner
--

CREATE FUNCTION internal.waiting_room_rebase(p_event_id uuid, p_rate integer, p_enabled boolean) RETURNS void
    LANGUAGE sql
    AS $$
  -- Before a change of the rule (rate, on/off): the position reached under the old rule becomes
  -- the base, from now on. One statement: it runs on the latest row after any wait.
  UPDATE public.waiting_rooms w
     SET base = internal.waiting_room_serving(w, p_rate, p_enabled), base_at = now(), updated_at = now()
   WHERE w.event_id = p_event_id
$$;


ALTER FUNCTION internal.waiting_room_rebase(p_event_id uuid, p_rate integer, p_enabled boolean) OWNER TO booking_owner;

--
-- Name: FUNCTION waiting_room_rebase(p_event_id uuid, p_rate integer, p_enabled boolean); Type: COMMENT; Schema: internal; Owner: booking_owner
--

COMMENT ON FUNCTION internal.waiting_room_rebase(p_event_id uuid, p_rate integer, p_enabled boolean) IS 'Freezes the serving position reached under the old rate (p_rate, p_enabled) as the base from now on.';


--
-- Name: waiting_room_row(uuid); Type: FUNCTION; Schema: internal; Owner: booking_owner
--

CREATE FUNCTION internal.waiting_room_row(p_event_id uuid) RETURNS void
    LANGUAGE plpgsql
    AS $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM public.events WHERE id = p_event_id) THEN
    RAISE EXCEPTION USING ERRCODE = 'BKNTF', MESSAGE = 'event not found';
  END IF;
  INSERT INTO public.waiting_rooms (event_id) VALUES (p_event_id) ON CONFLICT DO NOTHING;
END;
$$;


ALTER FUNCTION internal.waiting_room_row(p_event_id uuid) OWNER TO booking_owner;

--
-- Name: FUNCTION waiting_room_row(p_event_id uuid); Type: COMMENT; Schema: internal; Owner: booking_owner
--

COMMENT ON FUNCTION internal.waiting_room_row(p_event_id uuid) IS 'Makes sure the event''s waiting_rooms row exists (a pause before anyone joined). Raises BKNTF.';


--
-- Name: waiting_room_serving(public.waiting_rooms, integer, boolean); Type: FUNCTION; Schema: internal; Owner: booking_owner
--

CREATE FUNCTION internal.waiting_room_serving(w public.waiting_rooms, p_rate integer, p_enabled boolean) RETURNS integer
    LANGUAGE sql STABLE
    AS $$
  -- THE admission rule: positions up to this one are admitted. Nobody before the opening;
  -- frozen while paused (or while the room is off); otherwise one more every 60/rate seconds.
  SELECT CASE
    WHEN w.opened_at IS NULL OR now() < w.opened_at THEN 0
    WHEN w.paused_at IS NOT NULL OR NOT p_enabled OR p_rate IS NULL THEN w.base
    ELSE least(w.base + floor(extract(epoch FROM now() - greatest(w.base_at, w.opened_at)) * p_rate / 60),
               2000000000)::integer
  END
$$;


ALTER FUNCTION internal.waiting_room_serving(w public.waiting_rooms, p_rate integer, p_enabled boolean) OWNER TO booking_owner;

--
-- Name: FUNCTION waiting_room_serving(w public.waiting_rooms, p_rate integer, p_enabled boolean); Type: COMMENT; Schema: internal; Owner: booking_owner
--

COMMENT ON FUNCTION internal.waiting_room_serving(w public.waiting_rooms, p_rate integer, p_enabled boolean) IS 'The serving position now: 0 before the opening; base while paused; else base + floor(seconds since max(base_at, opened_at) * rate / 60).';


--
-- Name: check_max_per_user(); Type: FUNCTION; Schema: public; Owner: booking_owner
--

CREATE FUNCTION public.check_max_per_user() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
BEGIN
  IF NEW.max_per_user < 1 THEN
    RAISE EXCEPTION USING ERRCODE = 'check_violation', TABLE = TG_TABLE_NAME,
      MESSAGE = 'max_per_user must be at least 1 (or NULL: no cap)';
  END IF;
  RETURN NEW;
END;
$$;


ALTER FUNCTION public.check_max_per_user() OWNER TO booking_owner;

--
-- Name: check_sale_times_rfc3339(); Type: FUNCTION; Schema: public; Owner: booking_owner
--

CREATE FUNCTION public.check_sale_times_rfc3339() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
BEGIN
  IF NOT (NEW.start_sale_time IS NULL OR (NEW.start_sale_time >= '0001-01-01 00:00:00+00'
                                          AND NEW.start_sale_time < '10000-01-01 00:00:00+00'))
     OR NOT (NEW.end_sale_time IS NULL OR (NEW.end_sale_time >= '0001-01-01 00:00:00+00'
                                           AND NEW.end_sale_time < '10000-01-01 00:00:00+00')) THEN
    RAISE EXCEPTION USING ERRCODE = 'check_violation', TABLE = TG_TABLE_NAME,
      MESSAGE = 'sale times must lie within the years 0001..9999 (UTC)';
  END IF;
  RETURN NEW;
END;
$$;


ALTER FUNCTION public.check_sale_times_rfc3339() OWNER TO booking_owner;

--
-- Name: notify_catalog_change(); Type: FUNCTION; Schema: public; Owner: booking_owner
--

CREATE FUNCTION public.notify_catalog_change() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
BEGIN
  PERFORM pg_notify('booking_catalog', TG_TABLE_NAME);
  RETURN NULL;
END;
$$;


ALTER FUNCTION public.notify_catalog_change() OWNER TO booking_owner;

--
-- Name: procrastinate_cancel_job_v1(bigint, boolean, boolean); Type: FUNCTION; Schema: public; Owner: booking_owner
--

CREATE FUNCTION public.procrastinate_cancel_job_v1(job_id bigint, abort boolean, delete_job boolean) RETURNS bigint
    LANGUAGE plpgsql
    AS $$
DECLARE
    _job_id bigint;
BEGIN
    IF delete_job THEN
        DELETE FROM procrastinate_jobs
        WHERE id = job_id AND status = 'todo'
        RETURNING id INTO _job_id;
    END IF;
    IF _job_id IS NULL THEN
        IF abort THEN
            UPDATE procrastinate_jobs
            SET abort_requested = true,
                status = CASE status
                    WHEN 'todo' THEN 'cancelled'::procrastinate_job_status ELSE status
                END
            WHERE id = job_id AND status IN ('todo', 'doing')
            RETURNING id INTO _job_id;
        ELSE
            UPDATE procrastinate_jobs
            SET status = 'cancelled'::procrastinate_job_status
            WHERE id = job_id AND status = 'todo'
            RETURNING id INTO _job_id;
        END IF;
    END IF;
    RETURN _job_id;
END;
$$;


ALTER FUNCTION public.procrastinate_cancel_job_v1(job_id bigint, abort boolean, delete_job boolean) OWNER TO booking_owner;

--
-- Name: procrastinate_defer_jobs_v1(public.procrastinate_job_to_defer_v1[]); Type: FUNCTION; Schema: public; Owner: booking_owner
--

CREATE FUNCTION public.procrastinate_defer_jobs_v1(jobs public.procrastinate_job_to_defer_v1[]) RETURNS bigint[]
    LANGUAGE plpgsql
    AS $$
DECLARE
    job_ids bigint[];
BEGIN
    WITH inserted_jobs AS (
        INSERT INTO procrastinate_jobs (queue_name, task_name, priority, lock, queueing_lock, args, scheduled_at)
        SELECT (job).queue_name,
               (job).task_name,
               (job).priority,
               (job).lock,
               (job).queueing_lock,
               (job).args,
               (job).scheduled_at
        FROM unnest(jobs) AS job
        RETURNING id
    )
    SELECT array_agg(id) FROM inserted_jobs INTO job_ids;

    RETURN job_ids;
END;
$$;


ALTER FUNCTION public.procrastinate_defer_jobs_v1(jobs public.procrastinate_job_to_defer_v1[]) OWNER TO booking_owner;

--
-- Name: procrastinate_defer_periodic_job_v2(character varying, character varying, character varying, character varying, integer, character varying, bigint, jsonb); Type: FUNCTION; Schema: public; Owner: booking_owner
--

CREATE FUNCTION public.procrastinate_defer_periodic_job_v2(_queue_name character varying, _lock character varying, _queueing_lock character varying, _task_name character varying, _priority integer, _periodic_id character varying, _defer_timestamp bigint, _args jsonb) RETURNS bigint
    LANGUAGE plpgsql
    AS $$
DECLARE
	_job_id bigint;
	_defer_id bigint;
BEGIN
    INSERT
        INTO procrastinate_periodic_defers (task_name, periodic_id, defer_timestamp)
        VALUES (_task_name, _periodic_id, _defer_timestamp)
        ON CONFLICT DO NOTHING
        RETURNING id into _defer_id;

    IF _defer_id IS NULL THEN
        RETURN NULL;
    END IF;

    UPDATE procrastinate_periodic_defers
        SET job_id = (
            SELECT COALESCE((
                SELECT unnest(procrastinate_defer_jobs_v1(
                    ARRAY[
                        ROW(
                            _queue_name,
                            _task_name,
                            _priority,
                            _lock,
                            _queueing_lock,
                            _args,
                            NULL::timestamptz
                        )
                    ]::procrastinate_job_to_defer_v1[]
                ))
            ), NULL)
        )
        WHERE id = _defer_id
        RETURNING job_id INTO _job_id;

    DELETE
        FROM procrastinate_periodic_defers
        USING (
            SELECT id
            FROM procrastinate_periodic_defers
            WHERE procrastinate_periodic_defers.task_name = _task_name
            AND procrastinate_periodic_defers.periodic_id = _periodic_id
            AND procrastinate_periodic_defers.defer_timestamp < _defer_timestamp
            ORDER BY id
            FOR UPDATE
        ) to_delete
        WHERE procrastinate_periodic_defers.id = to_delete.id;

    RETURN _job_id;
END;
$$;


ALTER FUNCTION public.procrastinate_defer_periodic_job_v2(_queue_name character varying, _lock character varying, _queueing_lock character varying, _task_name character varying, _priority integer, _periodic_id character varying, _defer_timestamp bigint, _args jsonb) OWNER TO booking_owner;

--
-- Name: procrastinate_jobs; Type: TABLE; Schema: public; Owner: booking_owner
--

CREATE TABLE public.procrastinate_jobs (
    id bigint NOT NULL,
    queue_name character varying(128) NOT NULL,
    task_name character varying(128) NOT NULL,
    priority integer DEFAULT 0 NOT NULL,
    lock text,
    queueing_lock text,
    args jsonb DEFAULT '{}'::jsonb NOT NULL,
    status public.procrastinate_job_status DEFAULT 'todo'::public.procrastinate_job_status NOT NULL,
    scheduled_at timestamp with time zone,
    attempts integer DEFAULT 0 NOT NULL,
    abort_requested boolean DEFAULT false NOT NULL,
    worker_id bigint,
    CONSTRAINT check_not_todo_abort_requested CHECK ((NOT ((status = 'todo'::public.procrastinate_job_status) AND (abort_requested = true))))
);


ALTER TABLE public.procrastinate_jobs OWNER TO booking_owner;

--
-- Name: procrastinate_fetch_job_v2(character varying[], bigint); Type: FUNCTION; Schema: public; Owner: booking_owner
--

CREATE FUNCTION public.procrastinate_fetch_job_v2(target_queue_names character varying[], p_worker_id bigint) RETURNS public.procrastinate_jobs
    LANGUAGE plpgsql
    AS $$
DECLARE
	found_jobs procrastinate_jobs;
BEGIN
    WITH candidate AS (
        SELECT jobs.*
            FROM procrastinate_jobs AS jobs
            WHERE
                -- reject the job if its lock has earlier or higher priority jobs
                NOT EXISTS (
                    SELECT 1
                        FROM procrastinate_jobs AS other_jobs
                        WHERE
                            jobs.lock IS NOT NULL
                            AND other_jobs.lock = jobs.lock
                            AND (
                                -- job with same lock is already running
                                other_jobs.status = 'doing'
                                OR
                                -- job with same lock is waiting and has higher priority (or same priority but was queued first)
                                (
                                    other_jobs.status = 'todo'
                                    AND (
                                        other_jobs.priority > jobs.priority
                                        OR (
                                        other_jobs.priority = jobs.priority
                                        AND other_jobs.id < jobs.id
                                        )
                                    )
                                )
                            )
                )
                AND jobs.status = 'todo'
                AND (target_queue_names IS NULL OR jobs.queue_name = ANY( target_queue_names ))
                AND (jobs.scheduled_at IS NULL OR jobs.scheduled_at <= now())
            ORDER BY jobs.priority DESC, jobs.id ASC LIMIT 1
            FOR UPDATE OF jobs SKIP LOCKED
    )
    UPDATE procrastinate_jobs
        SET status = 'doing', worker_id = p_worker_id
        FROM candidate
        WHERE procrastinate_jobs.id = candidate.id
        RETURNING procrastinate_jobs.* INTO found_jobs;

 RETURN found_jobs;
END;
$$;


ALTER FUNCTION public.procrastinate_fetch_job_v2(target_queue_names character varying[], p_worker_id bigint) OWNER TO booking_owner;

--
-- Name: procrastinate_finish_job_v1(bigint, public.procrastinate_job_status, boolean); Type: FUNCTION; Schema: public; Owner: booking_owner
--

CREATE FUNCTION public.procrastinate_finish_job_v1(job_id bigint, end_status public.procrastinate_job_status, delete_job boolean) RETURNS void
    LANGUAGE plpgsql
    AS $$
DECLARE
    _job_id bigint;
BEGIN
    IF end_status NOT IN ('succeeded', 'failed', 'aborted') THEN
        RAISE 'End status should be either "succeeded", "failed" or "aborted" (job id: %)', job_id;
    END IF;
    IF delete_job THEN
        DELETE FROM procrastinate_jobs
        WHERE id = job_id AND status IN ('todo', 'doing')
        RETURNING id INTO _job_id;
    ELSE
        UPDATE procrastinate_jobs
        SET status = end_status,
            abort_requested = false,
            attempts = CASE status
                WHEN 'doing' THEN attempts + 1 ELSE attempts
            END
        WHERE id = job_id AND status IN ('todo', 'doing')
        RETURNING id INTO _job_id;
    END IF;
    IF _job_id IS NULL THEN
        RAISE 'Job was not found or not in "doing" or "todo" status (job id: %)', job_id;
    END IF;
END;
$$;


ALTER FUNCTION public.procrastinate_finish_job_v1(job_id bigint, end_status public.procrastinate_job_status, delete_job boolean) OWNER TO booking_owner;

--
-- Name: procrastinate_notify_queue_abort_job_v1(); Type: FUNCTION; Schema: public; Owner: booking_owner
--

CREATE FUNCTION public.procrastinate_notify_queue_abort_job_v1() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
DECLARE
    payload TEXT;
BEGIN
    SELECT json_build_object('type', 'abort_job_requested', 'job_id', NEW.id)::text INTO payload;
	PERFORM pg_notify('procrastinate_queue_v1#' || NEW.queue_name, payload);
	PERFORM pg_notify('procrastinate_any_queue_v1', payload);
	RETURN NEW;
END;
$$;


ALTER FUNCTION public.procrastinate_notify_queue_abort_job_v1() OWNER TO booking_owner;

--
-- Name: procrastinate_notify_queue_job_inserted_v1(); Type: FUNCTION; Schema: public; Owner: booking_owner
--

CREATE FUNCTION public.procrastinate_notify_queue_job_inserted_v1() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
DECLARE
    payload TEXT;
BEGIN
    SELECT json_build_object('type', 'job_inserted', 'job_id', NEW.id)::text INTO payload;
	PERFORM pg_notify('procrastinate_queue_v1#' || NEW.queue_name, payload);
	PERFORM pg_notify('procrastinate_any_queue_v1', payload);
	RETURN NEW;
END;
$$;


ALTER FUNCTION public.procrastinate_notify_queue_job_inserted_v1() OWNER TO booking_owner;

--
-- Name: procrastinate_prune_stalled_workers_v1(double precision); Type: FUNCTION; Schema: public; Owner: booking_owner
--

CREATE FUNCTION public.procrastinate_prune_stalled_workers_v1(seconds_since_heartbeat double precision) RETURNS TABLE(worker_id bigint)
    LANGUAGE plpgsql
    AS $$
BEGIN
    RETURN QUERY
    DELETE FROM procrastinate_workers
    WHERE last_heartbeat < NOW() - (seconds_since_heartbeat || 'SECOND')::INTERVAL
    RETURNING procrastinate_workers.id;
END;
$$;


ALTER FUNCTION public.procrastinate_prune_stalled_workers_v1(seconds_since_heartbeat double precision) OWNER TO booking_owner;

--
-- Name: procrastinate_register_worker_v1(); Type: FUNCTION; Schema: public; Owner: booking_owner
--

CREATE FUNCTION public.procrastinate_register_worker_v1() RETURNS TABLE(worker_id bigint)
    LANGUAGE plpgsql
    AS $$
BEGIN
    RETURN QUERY
    INSERT INTO procrastinate_workers DEFAULT VALUES
    RETURNING procrastinate_workers.id;
END;
$$;


ALTER FUNCTION public.procrastinate_register_worker_v1() OWNER TO booking_owner;

--
-- Name: procrastinate_retry_job_v1(bigint, timestamp with time zone, integer, character varying, character varying); Type: FUNCTION; Schema: public; Owner: booking_owner
--

CREATE FUNCTION public.procrastinate_retry_job_v1(job_id bigint, retry_at timestamp with time zone, new_priority integer, new_queue_name character varying, new_lock character varying) RETURNS void
    LANGUAGE plpgsql
    AS $$
DECLARE
    _job_id bigint;
    _abort_requested boolean;
BEGIN
    SELECT abort_requested FROM procrastinate_jobs
    WHERE id = job_id AND status = 'doing'
    FOR UPDATE
    INTO _abort_requested;
    IF _abort_requested THEN
        UPDATE procrastinate_jobs
        SET status = 'failed'::procrastinate_job_status
        WHERE id = job_id AND status = 'doing'
        RETURNING id INTO _job_id;
    ELSE
        UPDATE procrastinate_jobs
        SET status = 'todo'::procrastinate_job_status,
            attempts = attempts + 1,
            scheduled_at = retry_at,
            priority = COALESCE(new_priority, priority),
            queue_name = COALESCE(new_queue_name, queue_name),
            lock = COALESCE(new_lock, lock)
        WHERE id = job_id AND status = 'doing'
        RETURNING id INTO _job_id;
    END IF;

    IF _job_id IS NULL THEN
        RAISE 'Job was not found or not in "doing" status (job id: %)', job_id;
    END IF;
END;
$$;


ALTER FUNCTION public.procrastinate_retry_job_v1(job_id bigint, retry_at timestamp with time zone, new_priority integer, new_queue_name character varying, new_lock character varying) OWNER TO booking_owner;

--
-- Name: procrastinate_retry_job_v2(bigint, timestamp with time zone, integer, character varying, character varying); Type: FUNCTION; Schema: public; Owner: booking_owner
--

CREATE FUNCTION public.procrastinate_retry_job_v2(job_id bigint, retry_at timestamp with time zone, new_priority integer, new_queue_name character varying, new_lock character varying) RETURNS void
    LANGUAGE plpgsql
    AS $$
DECLARE
    _job_id bigint;
    _abort_requested boolean;
    _current_status procrastinate_job_status;
BEGIN
    SELECT status, abort_requested FROM procrastinate_jobs
    WHERE id = job_id AND status IN ('doing', 'failed')
    FOR UPDATE
    INTO _current_status, _abort_requested;
    IF _current_status = 'doing' AND _abort_requested THEN
        UPDATE procrastinate_jobs
        SET status = 'failed'::procrastinate_job_status
        WHERE id = job_id AND status = 'doing'
        RETURNING id INTO _job_id;
    ELSE
        UPDATE procrastinate_jobs
        SET status = 'todo'::procrastinate_job_status,
            attempts = attempts + 1,
            scheduled_at = retry_at,
            priority = COALESCE(new_priority, priority),
            queue_name = COALESCE(new_queue_name, queue_name),
            lock = COALESCE(new_lock, lock)
        WHERE id = job_id AND status IN ('doing', 'failed')
        RETURNING id INTO _job_id;
    END IF;

    IF _job_id IS NULL THEN
        RAISE 'Job was not found or has an invalid status to retry (job id: %)', job_id;
    END IF;

END;
$$;


ALTER FUNCTION public.procrastinate_retry_job_v2(job_id bigint, retry_at timestamp with time zone, new_priority integer, new_queue_name character varying, new_lock character varying) OWNER TO booking_owner;

--
-- Name: procrastinate_trigger_abort_requested_events_procedure_v1(); Type: FUNCTION; Schema: public; Owner: booking_owner
--

CREATE FUNCTION public.procrastinate_trigger_abort_requested_events_procedure_v1() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    INSERT INTO procrastinate_events(job_id, type)
        VALUES (NEW.id, 'abort_requested'::procrastinate_job_event_type);
    RETURN NEW;
END;
$$;


ALTER FUNCTION public.procrastinate_trigger_abort_requested_events_procedure_v1() OWNER TO booking_owner;

--
-- Name: procrastinate_trigger_function_scheduled_events_v1(); Type: FUNCTION; Schema: public; Owner: booking_owner
--

CREATE FUNCTION public.procrastinate_trigger_function_scheduled_events_v1() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    INSERT INTO procrastinate_events(job_id, type, at)
        VALUES (NEW.id, 'scheduled'::procrastinate_job_event_type, NEW.scheduled_at);

	RETURN NEW;
END;
$$;


ALTER FUNCTION public.procrastinate_trigger_function_scheduled_events_v1() OWNER TO booking_owner;

--
-- Name: procrastinate_trigger_function_status_events_insert_v1(); Type: FUNCTION; Schema: public; Owner: booking_owner
--

CREATE FUNCTION public.procrastinate_trigger_function_status_events_insert_v1() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    INSERT INTO procrastinate_events(job_id, type)
        VALUES (NEW.id, 'deferred'::procrastinate_job_event_type);
	RETURN NEW;
END;
$$;


ALTER FUNCTION public.procrastinate_trigger_function_status_events_insert_v1() OWNER TO booking_owner;

--
-- Name: procrastinate_trigger_function_status_events_update_v1(); Type: FUNCTION; Schema: public; Owner: booking_owner
--

CREATE FUNCTION public.procrastinate_trigger_function_status_events_update_v1() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    WITH t AS (
        SELECT CASE
            WHEN OLD.status = 'todo'::procrastinate_job_status
                AND NEW.status = 'doing'::procrastinate_job_status
                THEN 'started'::procrastinate_job_event_type
            WHEN OLD.status = 'doing'::procrastinate_job_status
                AND NEW.status = 'todo'::procrastinate_job_status
                THEN 'deferred_for_retry'::procrastinate_job_event_type
            WHEN OLD.status = 'doing'::procrastinate_job_status
                AND NEW.status = 'failed'::procrastinate_job_status
                THEN 'failed'::procrastinate_job_event_type
            WHEN OLD.status = 'doing'::procrastinate_job_status
                AND NEW.status = 'succeeded'::procrastinate_job_status
                THEN 'succeeded'::procrastinate_job_event_type
            WHEN OLD.status = 'todo'::procrastinate_job_status
                AND (
                    NEW.status = 'cancelled'::procrastinate_job_status
                    OR NEW.status = 'failed'::procrastinate_job_status
                    OR NEW.status = 'succeeded'::procrastinate_job_status
                )
                THEN 'cancelled'::procrastinate_job_event_type
            WHEN OLD.status = 'doing'::procrastinate_job_status
                AND NEW.status = 'aborted'::procrastinate_job_status
                THEN 'aborted'::procrastinate_job_event_type
            WHEN OLD.status = 'failed'::procrastinate_job_status
                AND NEW.status = 'todo'::procrastinate_job_status
                THEN 'retried'::procrastinate_job_event_type
            ELSE NULL
        END as event_type
    )
    INSERT INTO procrastinate_events(job_id, type)
        SELECT NEW.id, t.event_type
        FROM t
        WHERE t.event_type IS NOT NULL;
	RETURN NEW;
END;
$$;


ALTER FUNCTION public.procrastinate_trigger_function_status_events_update_v1() OWNER TO booking_owner;

--
-- Name: procrastinate_unlink_periodic_defers_v1(); Type: FUNCTION; Schema: public; Owner: booking_owner
--

CREATE FUNCTION public.procrastinate_unlink_periodic_defers_v1() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    UPDATE procrastinate_periodic_defers
    SET job_id = NULL
    WHERE job_id = OLD.id;
    RETURN OLD;
END;
$$;


ALTER FUNCTION public.procrastinate_unlink_periodic_defers_v1() OWNER TO booking_owner;

--
-- Name: procrastinate_unregister_worker_v1(bigint); Type: FUNCTION; Schema: public; Owner: booking_owner
--

CREATE FUNCTION public.procrastinate_unregister_worker_v1(worker_id bigint) RETURNS void
    LANGUAGE plpgsql
    AS $$
BEGIN
    DELETE FROM procrastinate_workers
    WHERE id = worker_id;
END;
$$;


ALTER FUNCTION public.procrastinate_unregister_worker_v1(worker_id bigint) OWNER TO booking_owner;

--
-- Name: procrastinate_update_heartbeat_v1(bigint); Type: FUNCTION; Schema: public; Owner: booking_owner
--

CREATE FUNCTION public.procrastinate_update_heartbeat_v1(worker_id bigint) RETURNS void
    LANGUAGE plpgsql
    AS $$
BEGIN
    UPDATE procrastinate_workers
    SET last_heartbeat = NOW()
    WHERE id = worker_id;
END;
$$;


ALTER FUNCTION public.procrastinate_update_heartbeat_v1(worker_id bigint) OWNER TO booking_owner;

--
-- Name: revoke_deleted_user_sessions(); Type: FUNCTION; Schema: public; Owner: booking_owner
--

CREATE FUNCTION public.revoke_deleted_user_sessions() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
BEGIN
  INSERT INTO public.revoked_sessions (session_id)
  SELECT s.id FROM public.sessions s WHERE s.user_id = OLD.id
  ON CONFLICT (session_id) DO UPDATE SET revoked_at = EXCLUDED.revoked_at;
  PERFORM pg_notify('booking_revocations', 's:' || s.id) FROM public.sessions s WHERE s.user_id = OLD.id;
  RETURN OLD;
END;
$$;


ALTER FUNCTION public.revoke_deleted_user_sessions() OWNER TO booking_owner;

--
-- Name: update_updated_at_column(); Type: FUNCTION; Schema: public; Owner: booking_owner
--

CREATE FUNCTION public.update_updated_at_column() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
BEGIN
  NEW.updated_at = NOW();
  RETURN NEW;
END;
$$;


ALTER FUNCTION public.update_updated_at_column() OWNER TO booking_owner;

--
-- Name: waiting_room_changed(); Type: FUNCTION; Schema: public; Owner: booking_owner
--

CREATE FUNCTION public.waiting_room_changed() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
BEGIN
  IF TG_OP = 'DELETE' THEN
    PERFORM pg_notify('booking_waiting_rooms', 'd:' || OLD.event_id);
  ELSE
    PERFORM internal.waiting_room_notify(NEW.event_id, false);
  END IF;
  RETURN NULL;
END;
$$;


ALTER FUNCTION public.waiting_room_changed() OWNER TO booking_owner;

--
-- Name: waiting_room_event_status_changed(); Type: FUNCTION; Schema: public; Owner: booking_owner
--

CREATE FUNCTION public.waiting_room_event_status_changed() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
BEGIN
  PERFORM internal.waiting_room_notify(NEW.id, false);
  RETURN NULL;
END;
$$;


ALTER FUNCTION public.waiting_room_event_status_changed() OWNER TO booking_owner;

--
-- Name: waiting_room_opening_changed(); Type: FUNCTION; Schema: public; Owner: booking_owner
--

CREATE FUNCTION public.waiting_room_opening_changed() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
BEGIN
  PERFORM internal.waiting_room_notify(CASE WHEN TG_OP = 'DELETE' THEN OLD.event_id ELSE NEW.event_id END, true);
  RETURN NULL;
END;
$$;


ALTER FUNCTION public.waiting_room_opening_changed() OWNER TO booking_owner;

--
-- Name: waiting_room_rate_changed(); Type: FUNCTION; Schema: public; Owner: booking_owner
--

CREATE FUNCTION public.waiting_room_rate_changed() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
BEGIN
  PERFORM internal.waiting_room_rebase(OLD.id, OLD.admission_rate_per_minute, OLD.queue_enabled);
  RETURN NULL;
END;
$$;


ALTER FUNCTION public.waiting_room_rate_changed() OWNER TO booking_owner;

--
-- Name: waiting_rooms_truncated(); Type: FUNCTION; Schema: public; Owner: booking_owner
--

CREATE FUNCTION public.waiting_rooms_truncated() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
BEGIN
  PERFORM pg_notify('booking_waiting_rooms', CASE WHEN TG_TABLE_NAME = 'waiting_rooms' THEN 'x:rooms' ELSE 'x' END);
  RETURN NULL;
END;
$$;


ALTER FUNCTION public.waiting_rooms_truncated() OWNER TO booking_owner;

--
-- Name: admission_secret; Type: TABLE; Schema: public; Owner: booking_owner
--

CREATE TABLE public.admission_secret (
    id boolean DEFAULT true NOT NULL,
    secret bytea DEFAULT public.gen_random_bytes(32) NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT admission_secret_id_check CHECK (id)
);


ALTER TABLE public.admission_secret OWNER TO booking_owner;

--
-- Name: TABLE admission_secret; Type: COMMENT; Schema: public; Owner: booking_owner
--

COMMENT ON TABLE public.admission_secret IS 'The HMAC-SHA256 key of waiting-room admission tokens (one row, owner-only). api.rotate_admission_secret() replaces it: every token issued so far is void.';


--
-- Name: idempotency_keys; Type: TABLE; Schema: public; Owner: booking_owner
--

CREATE TABLE public.idempotency_keys (
    user_id uuid NOT NULL,
    key text NOT NULL,
    fingerprint text NOT NULL,
    response json,
    created_at timestamp with time zone DEFAULT now() NOT NULL
);


ALTER TABLE public.idempotency_keys OWNER TO booking_owner;

--
-- Name: TABLE idempotency_keys; Type: COMMENT; Schema: public; Owner: booking_owner
--

COMMENT ON TABLE public.idempotency_keys IS 'Idempotency-Key records: the route and arguments (fingerprint) and the success response of a user''s keyed request; older than 24 hours counts as absent; purged by api.purge_idempotency_keys().';


--
-- Name: order_emails; Type: TABLE; Schema: public; Owner: booking_owner
--

CREATE TABLE public.order_emails (
    order_id uuid NOT NULL,
    kind text DEFAULT 'confirmation'::text NOT NULL,
    recipient text NOT NULL,
    job_id bigint,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    attempts integer DEFAULT 0 NOT NULL,
    last_error text,
    sent_at timestamp with time zone,
    message_id text,
    CONSTRAINT chk_order_emails_attempts CHECK ((attempts >= 0)),
    CONSTRAINT chk_order_emails_kind CHECK ((kind = ANY (ARRAY['confirmation'::text, 'refund'::text])))
);


ALTER TABLE public.order_emails OWNER TO booking_owner;

--
-- Name: TABLE order_emails; Type: COMMENT; Schema: public; Owner: booking_owner
--

COMMENT ON TABLE public.order_emails IS 'The e-mails of an order, one per kind: confirmation (PAID) and refund (REFUNDED): to whom, which job sends it, attempts, when sent.';


--
-- Name: order_items; Type: TABLE; Schema: public; Owner: booking_owner
--

CREATE TABLE public.order_items (
    id uuid DEFAULT gen_random_uuid() NOT NULL,
    order_id uuid NOT NULL,
    ticket_type_id uuid NOT NULL,
    quantity integer NOT NULL,
    unit_price numeric(10,2) NOT NULL,
    CONSTRAINT chk_order_items_price CHECK ((unit_price >= (0)::numeric)),
    CONSTRAINT chk_order_items_quantity CHECK ((quantity > 0))
);


ALTER TABLE public.order_items OWNER TO booking_owner;

--
-- Name: payment_events; Type: TABLE; Schema: public; Owner: booking_owner
--

CREATE TABLE public.payment_events (
    id bigint NOT NULL,
    provider text NOT NULL,
    provider_txn_id text NOT NULL,
    transaction_id text,
    kind text NOT NULL,
    amount numeric(14,2),
    raw jsonb,
    received_at timestamp with time zone DEFAULT now() NOT NULL,
    outcome text NOT NULL,
    order_id uuid,
    resolved_at timestamp with time zone,
    resolved_note text,
    CONSTRAINT chk_payment_events_kind CHECK ((kind = ANY (ARRAY['success'::text, 'failure'::text, 'refund'::text]))),
    CONSTRAINT chk_payment_events_outcome CHECK ((outcome = ANY (ARRAY['paid'::text, 'late_paid'::text, 'refund_pending'::text, 'cancelled'::text, 'ignored'::text, 'wrong_amount'::text, 'unknown_reference'::text]))),
    CONSTRAINT chk_payment_events_provider CHECK ((provider = ANY (ARRAY['MOMO'::text, 'ZALOPAY'::text, 'BANKING'::text, 'CARD'::text])))
);


ALTER TABLE public.payment_events OWNER TO booking_owner;

--
-- Name: TABLE payment_events; Type: COMMENT; Schema: public; Owner: booking_owner
--

COMMENT ON TABLE public.payment_events IS 'Inbox of provider events (callbacks, reconciliation answers), unique per provider transaction; outcome says what applying it did.';


--
-- Name: COLUMN payment_events.resolved_at; Type: COMMENT; Schema: public; Owner: booking_owner
--

COMMENT ON COLUMN public.payment_events.resolved_at IS 'A DBA settled this refused success by hand (api.resolve_payment_event); resolved_note says how.';


--
-- Name: payment_events_id_seq; Type: SEQUENCE; Schema: public; Owner: booking_owner
--

CREATE SEQUENCE public.payment_events_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;


ALTER TABLE public.payment_events_id_seq OWNER TO booking_owner;

--
-- Name: payment_events_id_seq; Type: SEQUENCE OWNED BY; Schema: public; Owner: booking_owner
--

ALTER SEQUENCE public.payment_events_id_seq OWNED BY public.payment_events.id;


--
-- Name: payment_refunds; Type: TABLE; Schema: public; Owner: booking_owner
--

CREATE TABLE public.payment_refunds (
    id uuid DEFAULT gen_random_uuid() NOT NULL,
    order_id uuid NOT NULL,
    payment_event_id bigint,
    provider text NOT NULL,
    provider_txn_id text,
    amount numeric(14,2) NOT NULL,
    reason text NOT NULL,
    status text DEFAULT 'PENDING'::text NOT NULL,
    job_id bigint,
    attempts integer DEFAULT 0 NOT NULL,
    refusals integer DEFAULT 0 NOT NULL,
    last_error text,
    provider_ref text,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    finished_at timestamp with time zone,
    CONSTRAINT chk_payment_refunds_amount CHECK ((amount >= (0)::numeric)),
    CONSTRAINT chk_payment_refunds_attempts CHECK ((attempts >= 0)),
    CONSTRAINT chk_payment_refunds_reason CHECK ((reason = ANY (ARRAY['admin'::text, 'event_cancelled'::text, 'late_no_seats'::text, 'late_over_cap'::text, 'duplicate'::text, 'wrong_amount'::text]))),
    CONSTRAINT chk_payment_refunds_refusals CHECK (((refusals >= 0) AND (refusals <= attempts))),
    CONSTRAINT chk_payment_refunds_status CHECK ((status = ANY (ARRAY['PENDING'::text, 'DONE'::text])))
);


ALTER TABLE public.payment_refunds OWNER TO booking_owner;

--
-- Name: TABLE payment_refunds; Type: COMMENT; Schema: public; Owner: booking_owner
--

COMMENT ON TABLE public.payment_refunds IS 'Refunds to make through the provider: why, how much, where the worker stands (attempts, last error, the provider''s reference once DONE).';


--
-- Name: payment_settings; Type: TABLE; Schema: public; Owner: booking_owner
--

CREATE TABLE public.payment_settings (
    id boolean DEFAULT true NOT NULL,
    mode text DEFAULT 'instant'::text NOT NULL,
    payment_window interval DEFAULT '00:15:00'::interval NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT chk_payment_settings_mode CHECK ((mode = ANY (ARRAY['instant'::text, 'provider'::text]))),
    CONSTRAINT chk_payment_settings_one_row CHECK (id),
    CONSTRAINT chk_payment_settings_window CHECK (((payment_window >= '00:01:00'::interval) AND (payment_window <= '1 day'::interval)))
);


ALTER TABLE public.payment_settings OWNER TO booking_owner;

--
-- Name: TABLE payment_settings; Type: COMMENT; Schema: public; Owner: booking_owner
--

COMMENT ON TABLE public.payment_settings IS 'The payment mode (instant | provider) and how long a PENDING order holds its seats. One row; api.set_payment_mode / api.payment_mode.';


--
-- Name: payments; Type: TABLE; Schema: public; Owner: booking_owner
--

CREATE TABLE public.payments (
    id uuid DEFAULT gen_random_uuid() NOT NULL,
    order_id uuid NOT NULL,
    transaction_id character varying(255),
    payment_method character varying(50) NOT NULL,
    amount numeric(10,2) NOT NULL,
    status character varying(20) DEFAULT 'PENDING'::character varying NOT NULL,
    payment_time timestamp with time zone,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    provider_txn_id text,
    reconciled_at timestamp with time zone,
    pay_url text,
    CONSTRAINT chk_payments_amount CHECK ((amount >= (0)::numeric)),
    CONSTRAINT chk_payments_method CHECK (((payment_method)::text = ANY ((ARRAY['MOMO'::character varying, 'ZALOPAY'::character varying, 'BANKING'::character varying, 'CARD'::character varying])::text[]))),
    CONSTRAINT chk_payments_pay_url CHECK (((pay_url IS NULL) OR (char_length(pay_url) <= 2000))),
    CONSTRAINT chk_payments_status CHECK (((status)::text = ANY ((ARRAY['PENDING'::character varying, 'SUCCESS'::character varying, 'FAILED'::character varying, 'REFUNDED'::character varying])::text[])))
);


ALTER TABLE public.payments OWNER TO booking_owner;

--
-- Name: procrastinate_events; Type: TABLE; Schema: public; Owner: booking_owner
--

CREATE TABLE public.procrastinate_events (
    id bigint NOT NULL,
    job_id bigint NOT NULL,
    type public.procrastinate_job_event_type,
    at timestamp with time zone DEFAULT now()
);


ALTER TABLE public.procrastinate_events OWNER TO booking_owner;

--
-- Name: procrastinate_events_id_seq; Type: SEQUENCE; Schema: public; Owner: booking_owner
--

CREATE SEQUENCE public.procrastinate_events_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;


ALTER TABLE public.procrastinate_events_id_seq OWNER TO booking_owner;

--
-- Name: procrastinate_events_id_seq; Type: SEQUENCE OWNED BY; Schema: public; Owner: booking_owner
--

ALTER SEQUENCE public.procrastinate_events_id_seq OWNED BY public.procrastinate_events.id;


--
-- Name: procrastinate_jobs_id_seq; Type: SEQUENCE; Schema: public; Owner: booking_owner
--

CREATE SEQUENCE public.procrastinate_jobs_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;


ALTER TABLE public.procrastinate_jobs_id_seq OWNER TO booking_owner;

--
-- Name: procrastinate_jobs_id_seq; Type: SEQUENCE OWNED BY; Schema: public; Owner: booking_owner
--

ALTER SEQUENCE public.procrastinate_jobs_id_seq OWNED BY public.procrastinate_jobs.id;


--
-- Name: procrastinate_periodic_defers; Type: TABLE; Schema: public; Owner: booking_owner
--

CREATE TABLE public.procrastinate_periodic_defers (
    id bigint NOT NULL,
    task_name character varying(128) NOT NULL,
    defer_timestamp bigint,
    job_id bigint,
    periodic_id character varying(128) DEFAULT ''::character varying NOT NULL
);


ALTER TABLE public.procrastinate_periodic_defers OWNER TO booking_owner;

--
-- Name: procrastinate_periodic_defers_id_seq; Type: SEQUENCE; Schema: public; Owner: booking_owner
--

CREATE SEQUENCE public.procrastinate_periodic_defers_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;


ALTER TABLE public.procrastinate_periodic_defers_id_seq OWNER TO booking_owner;

--
-- Name: procrastinate_periodic_defers_id_seq; Type: SEQUENCE OWNED BY; Schema: public; Owner: booking_owner
--

ALTER SEQUENCE public.procrastinate_periodic_defers_id_seq OWNED BY public.procrastinate_periodic_defers.id;


--
-- Name: procrastinate_workers; Type: TABLE; Schema: public; Owner: booking_owner
--

CREATE TABLE public.procrastinate_workers (
    id bigint NOT NULL,
    last_heartbeat timestamp with time zone DEFAULT now() NOT NULL
);


ALTER TABLE public.procrastinate_workers OWNER TO booking_owner;

--
-- Name: procrastinate_workers_id_seq; Type: SEQUENCE; Schema: public; Owner: booking_owner
--

ALTER TABLE public.procrastinate_workers ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME public.procrastinate_workers_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);


--
-- Name: rate_limit_counters; Type: TABLE; Schema: public; Owner: booking_owner
--

CREATE UNLOGGED TABLE public.rate_limit_counters (
    key text NOT NULL,
    tat timestamp with time zone NOT NULL,
    period interval NOT NULL,
    last_ok boolean NOT NULL
)
WITH (fillfactor='50');


ALTER TABLE public.rate_limit_counters OWNER TO booking_owner;

--
-- Name: TABLE rate_limit_counters; Type: COMMENT; Schema: public; Owner: booking_owner
--

COMMENT ON TABLE public.rate_limit_counters IS 'GCRA state per rate-limit key (<class>:<scope>:<value>). Unlogged: emptied by a crash. Read with api.rate_limit_state(); clear with api.clear_rate_limit().';


--
-- Name: rate_limit_rules; Type: TABLE; Schema: public; Owner: booking_owner
--

CREATE TABLE public.rate_limit_rules (
    class text NOT NULL,
    scope text NOT NULL,
    max_requests integer NOT NULL,
    period interval NOT NULL,
    CONSTRAINT rate_limit_rules_check CHECK (((class = 'login_failures'::text) = (scope = 'email'::text))),
    CONSTRAINT rate_limit_rules_class_check CHECK ((class = ANY (ARRAY['auth'::text, 'browse'::text, 'bookings'::text, 'admin'::text, 'login_failures'::text]))),
    CONSTRAINT rate_limit_rules_max_requests_check CHECK ((max_requests >= 1)),
    CONSTRAINT rate_limit_rules_period_check CHECK (((period >= '00:00:01'::interval) AND (period <= '1 day'::interval))),
    CONSTRAINT rate_limit_rules_scope_check CHECK ((scope = ANY (ARRAY['user'::text, 'address'::text, 'email'::text])))
);


ALTER TABLE public.rate_limit_rules OWNER TO booking_owner;

--
-- Name: TABLE rate_limit_rules; Type: COMMENT; Schema: public; Owner: booking_owner
--

COMMENT ON TABLE public.rate_limit_rules IS 'Rate-limit rules in force: at most max_requests per period per key (a rolling window, GCRA). Change with api.set_rate_limit(); read with api.rate_limits().';


--
-- Name: refresh_tokens; Type: TABLE; Schema: public; Owner: booking_owner
--

CREATE TABLE public.refresh_tokens (
    token_hash bytea NOT NULL,
    session_id uuid NOT NULL,
    parent_hash bytea,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    expires_at timestamp with time zone NOT NULL,
    used_at timestamp with time zone,
    CONSTRAINT chk_refresh_tokens_hash CHECK ((length(token_hash) = 32))
);


ALTER TABLE public.refresh_tokens OWNER TO booking_owner;

--
-- Name: TABLE refresh_tokens; Type: COMMENT; Schema: public; Owner: booking_owner
--

COMMENT ON TABLE public.refresh_tokens IS 'Refresh tokens by sha256. A rotation marks the token used and adds its child.';


--
-- Name: revoked_sessions; Type: TABLE; Schema: public; Owner: booking_owner
--

CREATE TABLE public.revoked_sessions (
    session_id uuid NOT NULL,
    revoked_at timestamp with time zone DEFAULT now() NOT NULL
);


ALTER TABLE public.revoked_sessions OWNER TO booking_owner;

--
-- Name: TABLE revoked_sessions; Type: COMMENT; Schema: public; Owner: booking_owner
--

COMMENT ON TABLE public.revoked_sessions IS 'Sessions whose access tokens every gateway refuses (logout, reuse, DBA, user deleted). Kept 24 h.';


--
-- Name: role_changes; Type: TABLE; Schema: public; Owner: booking_owner
--

CREATE TABLE public.role_changes (
    user_id uuid NOT NULL,
    role text NOT NULL,
    changed_at timestamp with time zone DEFAULT now() NOT NULL
);


ALTER TABLE public.role_changes OWNER TO booking_owner;

--
-- Name: TABLE role_changes; Type: COMMENT; Schema: public; Owner: booking_owner
--

COMMENT ON TABLE public.role_changes IS 'The latest role change of each user in the last 24 h; gateways apply it to older tokens.';


--
-- Name: sessions; Type: TABLE; Schema: public; Owner: booking_owner
--

CREATE TABLE public.sessions (
    id uuid DEFAULT gen_random_uuid() NOT NULL,
    user_id uuid NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    expires_at timestamp with time zone NOT NULL,
    revoked_at timestamp with time zone,
    revoked_reason text,
    CONSTRAINT chk_sessions_reason CHECK ((revoked_reason = ANY (ARRAY['logout'::text, 'reuse'::text, 'role_changed'::text, 'dba'::text]))),
    CONSTRAINT chk_sessions_revoked CHECK (((revoked_at IS NULL) = (revoked_reason IS NULL)))
);


ALTER TABLE public.sessions OWNER TO booking_owner;

--
-- Name: TABLE sessions; Type: COMMENT; Schema: public; Owner: booking_owner
--

COMMENT ON TABLE public.sessions IS 'One row per login. Access tokens carry its id as `sid`. revoked_at ends refreshing; whether its access tokens are refused too is revoked_sessions (a role change stops refresh only).';


--
-- Name: tickets; Type: TABLE; Schema: public; Owner: booking_owner
--

CREATE TABLE public.tickets (
    id uuid DEFAULT gen_random_uuid() NOT NULL,
    order_id uuid NOT NULL,
    ticket_type_id uuid NOT NULL,
    ticket_code character varying(50) NOT NULL,
    owner_name character varying(255),
    status character varying(20) DEFAULT 'UNUSED'::character varying NOT NULL,
    checkin_time timestamp with time zone,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT chk_tickets_status CHECK (((status)::text = ANY ((ARRAY['UNUSED'::character varying, 'CHECKED_IN'::character varying, 'CANCELLED'::character varying])::text[])))
);


ALTER TABLE public.tickets OWNER TO booking_owner;

--
-- Name: waiting_room_entries; Type: TABLE; Schema: public; Owner: booking_owner
--

CREATE TABLE public.waiting_room_entries (
    event_id uuid NOT NULL,
    user_id uuid NOT NULL,
    seq integer NOT NULL,
    "position" integer,
    joined_at timestamp with time zone DEFAULT now() NOT NULL,
    admitted_at timestamp with time zone
);


ALTER TABLE public.waiting_room_entries OWNER TO booking_owner;

--
-- Name: TABLE waiting_room_entries; Type: COMMENT; Schema: public; Owner: booking_owner
--

COMMENT ON TABLE public.waiting_room_entries IS 'A user''s place in an event''s waiting room: seq = arrival order, position = admission order.';


--
-- Name: webhook_attempts; Type: TABLE; Schema: public; Owner: booking_owner
--

CREATE TABLE public.webhook_attempts (
    id bigint NOT NULL,
    delivery_id uuid NOT NULL,
    attempt integer NOT NULL,
    attempted_at timestamp with time zone DEFAULT now() NOT NULL,
    duration_ms integer,
    status_code integer,
    error text,
    outcome text NOT NULL,
    CONSTRAINT chk_webhook_attempts_outcome CHECK ((outcome = ANY (ARRAY['DELIVERED'::text, 'RETRY'::text, 'GONE'::text, 'REFUSED'::text, 'FAILED'::text])))
);


ALTER TABLE public.webhook_attempts OWNER TO booking_owner;

--
-- Name: webhook_attempts_id_seq; Type: SEQUENCE; Schema: public; Owner: booking_owner
--

CREATE SEQUENCE public.webhook_attempts_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;


ALTER TABLE public.webhook_attempts_id_seq OWNER TO booking_owner;

--
-- Name: webhook_attempts_id_seq; Type: SEQUENCE OWNED BY; Schema: public; Owner: booking_owner
--

ALTER SEQUENCE public.webhook_attempts_id_seq OWNED BY public.webhook_attempts.id;


--
-- Name: webhook_deliveries; Type: TABLE; Schema: public; Owner: booking_owner
--

CREATE TABLE public.webhook_deliveries (
    id uuid DEFAULT gen_random_uuid() NOT NULL,
    webhook_id uuid NOT NULL,
    notification_id uuid NOT NULL,
    event_type text NOT NULL,
    body text NOT NULL,
    status text DEFAULT 'PENDING'::text NOT NULL,
    attempts integer DEFAULT 0 NOT NULL,
    job_id bigint,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    delivered_at timestamp with time zone,
    CONSTRAINT chk_webhook_deliveries_attempts CHECK ((attempts >= 0)),
    CONSTRAINT chk_webhook_deliveries_status CHECK ((status = ANY (ARRAY['PENDING'::text, 'DELIVERED'::text, 'FAILED'::text, 'CANCELLED'::text])))
);


ALTER TABLE public.webhook_deliveries OWNER TO booking_owner;

--
-- Name: webhooks; Type: TABLE; Schema: public; Owner: booking_owner
--

CREATE TABLE public.webhooks (
    id uuid DEFAULT gen_random_uuid() NOT NULL,
    created_by uuid NOT NULL,
    url text NOT NULL,
    events text[] NOT NULL,
    event_id uuid,
    secret text NOT NULL,
    active boolean DEFAULT true NOT NULL,
    disabled_at timestamp with time zone,
    disabled_reason text,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT chk_webhooks_events CHECK (((cardinality(events) > 0) AND (events <@ ARRAY['order.paid'::text, 'order.refunded'::text, 'ticket.checked_in'::text]))),
    CONSTRAINT chk_webhooks_url CHECK (((char_length(url) <= 2048) AND (url ~* '^https?://'::text)))
);


ALTER TABLE public.webhooks OWNER TO booking_owner;

--
-- Name: TABLE webhooks; Type: COMMENT; Schema: public; Owner: booking_owner
--

COMMENT ON TABLE public.webhooks IS 'Organizers'' webhook subscriptions: URL, events, optional event filter, signing secret.';


--
-- Name: payment_events id; Type: DEFAULT; Schema: public; Owner: booking_owner
--

ALTER TABLE ONLY public.payment_events ALTER COLUMN id SET DEFAULT nextval('public.payment_events_id_seq'::regclass);


--
-- Name: procrastinate_events id; Type: DEFAULT; Schema: public; Owner: booking_owner
--

ALTER TABLE ONLY public.procrastinate_events ALTER COLUMN id SET DEFAULT nextval('public.procrastinate_events_id_seq'::regclass);


--
-- Name: procrastinate_jobs id; Type: DEFAULT; Schema: public; Owner: booking_owner
--

ALTER TABLE ONLY public.procrastinate_jobs ALTER COLUMN id SET DEFAULT nextval('public.procrastinate_jobs_id_seq'::regclass);


--
-- Name: procrastinate_periodic_defers id; Type: DEFAULT; Schema: public; Owner: booking_owner
--

ALTER TABLE ONLY public.procrastinate_periodic_defers ALTER COLUMN id SET DEFAULT nextval('public.procrastinate_periodic_defers_id_seq'::regclass);


--
-- Name: webhook_attempts id; Type: DEFAULT; Schema: public; Owner: booking_owner
--

ALTER TABLE ONLY public.webhook_attempts ALTER COLUMN id SET DEFAULT nextval('public.webhook_attempts_id_seq'::regclass);


--
-- Name: admission_secret admission_secret_pkey; Type: CONSTRAINT; Schema: public; Owner: booking_owner
--

ALTER TABLE ONLY public.admission_secret
    ADD CONSTRAINT admission_secret_pkey PRIMARY KEY (id);


--
-- Name: events events_pkey; Type: CONSTRAINT; Schema: public; Owner: booking_owner
--

ALTER TABLE ONLY public.events
    ADD CONSTRAINT events_pkey PRIMARY KEY (id);


--
-- Name: events events_slug_key; Type: CONSTRAINT; Schema: public; Owner: booking_owner
--

ALTER TABLE ONLY public.events
    ADD CONSTRAINT events_slug_key UNIQUE (slug);


--
-- Name: idempotency_keys idempotency_keys_pkey; Type: CONSTRAINT; Schema: public; Owner: booking_owner
--

ALTER TABLE ONLY public.idempotency_keys
    ADD CONSTRAINT idempotency_keys_pkey PRIMARY KEY (user_id, key);


--
-- Name: order_emails order_emails_pkey; Type: CONSTRAINT; Schema: public; Owner: booking_owner
--

ALTER TABLE ONLY public.order_emails
    ADD CONSTRAINT order_emails_pkey PRIMARY KEY (order_id, kind);


--
-- Name: order_items order_items_pkey; Type: CONSTRAINT; Schema: public; Owner: booking_owner
--

ALTER TABLE ONLY public.order_items
    ADD CONSTRAINT order_items_pkey PRIMARY KEY (id);


--
-- Name: order_reservations order_reservations_pkey; Type: CONSTRAINT; Schema: public; Owner: booking_owner
--

ALTER TABLE ONLY public.order_reservations
    ADD CONSTRAINT order_reservations_pkey PRIMARY KEY (id);


--
-- Name: orders orders_pkey; Type: CONSTRAINT; Schema: public; Owner: booking_owner
--

ALTER TABLE ONLY public.orders
    ADD CONSTRAINT orders_pkey PRIMARY KEY (id);


--
-- Name: payment_events payment_events_pkey; Type: CONSTRAINT; Schema: public; Owner: booking_owner
--

ALTER TABLE ONLY public.payment_events
    ADD CONSTRAINT payment_events_pkey PRIMARY KEY (id);


--
-- Name: payment_refunds payment_refunds_pkey; Type: CONSTRAINT; Schema: public; Owner: booking_owner
--

ALTER TABLE ONLY public.payment_refunds
    ADD CONSTRAINT payment_refunds_pkey PRIMARY KEY (id);


--
-- Name: payment_settings payment_settings_pkey; Type: CONSTRAINT; Schema: public; Owner: booking_owner
--

ALTER TABLE ONLY public.payment_settings
    ADD CONSTRAINT payment_settings_pkey PRIMARY KEY (id);


--
-- Name: payments payments_order_id_key; Type: CONSTRAINT; Schema: public; Owner: booking_owner
--

ALTER TABLE ONLY public.payments
    ADD CONSTRAINT payments_order_id_key UNIQUE (order_id);


--
-- Name: payments payments_pkey; Type: CONSTRAINT; Schema: public; Owner: booking_owner
--

ALTER TABLE ONLY public.payments
    ADD CONSTRAINT payments_pkey PRIMARY KEY (id);


--
-- Name: payments payments_transaction_id_key; Type: CONSTRAINT; Schema: public; Owner: booking_owner
--

ALTER TABLE ONLY public.payments
    ADD CONSTRAINT payments_transaction_id_key UNIQUE (transaction_id);


--
-- Name: procrastinate_events procrastinate_events_pkey; Type: CONSTRAINT; Schema: public; Owner: booking_owner
--

ALTER TABLE ONLY public.procrastinate_events
    ADD CONSTRAINT procrastinate_events_pkey PRIMARY KEY (id);


--
-- Name: procrastinate_jobs procrastinate_jobs_pkey; Type: CONSTRAINT; Schema: public; Owner: booking_owner
--

ALTER TABLE ONLY public.procrastinate_jobs
    ADD CONSTRAINT procrastinate_jobs_pkey PRIMARY KEY (id);


--
-- Name: procrastinate_periodic_defers procrastinate_periodic_defers_pkey; Type: CONSTRAINT; Schema: public; Owner: booking_owner
--

ALTER TABLE ONLY public.procrastinate_periodic_defers
    ADD CONSTRAINT procrastinate_periodic_defers_pkey PRIMARY KEY (id);


--
-- Name: procrastinate_periodic_defers procrastinate_periodic_defers_unique; Type: CONSTRAINT; Schema: public; Owner: booking_owner
--

ALTER TABLE ONLY public.procrastinate_periodic_defers
    ADD CONSTRAINT procrastinate_periodic_defers_unique UNIQUE (task_name, periodic_id, defer_timestamp);


--
-- Name: procrastinate_workers procrastinate_workers_pkey; Type: CONSTRAINT; Schema: public; Owner: booking_owner
--

ALTER TABLE ONLY public.procrastinate_workers
    ADD CONSTRAINT procrastinate_workers_pkey PRIMARY KEY (id);


--
-- Name: rate_limit_counters rate_limit_counters_pkey; Type: CONSTRAINT; Schema: public; Owner: booking_owner
--

ALTER TABLE ONLY public.rate_limit_counters
    ADD CONSTRAINT rate_limit_counters_pkey PRIMARY KEY (key);


--
-- Name: rate_limit_rules rate_limit_rules_pkey; Type: CONSTRAINT; Schema: public; Owner: booking_owner
--

ALTER TABLE ONLY public.rate_limit_rules
    ADD CONSTRAINT rate_limit_rules_pkey PRIMARY KEY (class, scope);


--
-- Name: refresh_tokens refresh_tokens_pkey; Type: CONSTRAINT; Schema: public; Owner: booking_owner
--

ALTER TABLE ONLY public.refresh_tokens
    ADD CONSTRAINT refresh_tokens_pkey PRIMARY KEY (token_hash);


--
-- Name: revoked_sessions revoked_sessions_pkey; Type: CONSTRAINT; Schema: public; Owner: booking_owner
--

ALTER TABLE ONLY public.revoked_sessions
    ADD CONSTRAINT revoked_sessions_pkey PRIMARY KEY (session_id);


--
-- Name: role_changes role_changes_pkey; Type: CONSTRAINT; Schema: public; Owner: booking_owner
--

ALTER TABLE ONLY public.role_changes
    ADD CONSTRAINT role_changes_pkey PRIMARY KEY (user_id);


--
-- Name: sessions sessions_pkey; Type: CONSTRAINT; Schema: public; Owner: booking_owner
--

ALTER TABLE ONLY public.sessions
    ADD CONSTRAINT sessions_pkey PRIMARY KEY (id);


--
-- Name: ticket_types ticket_types_pkey; Type: CONSTRAINT; Schema: public; Owner: booking_owner
--

ALTER TABLE ONLY public.ticket_types
    ADD CONSTRAINT ticket_types_pkey PRIMARY KEY (id);


--
-- Name: tickets tickets_pkey; Type: CONSTRAINT; Schema: public; Owner: booking_owner
--

ALTER TABLE ONLY public.tickets
    ADD CONSTRAINT tickets_pkey PRIMARY KEY (id);


--
-- Name: tickets tickets_ticket_code_key; Type: CONSTRAINT; Schema: public; Owner: booking_owner
--

ALTER TABLE ONLY public.tickets
    ADD CONSTRAINT tickets_ticket_code_key UNIQUE (ticket_code);


--
-- Name: waiting_room_entries uq_waiting_room_entries_position; Type: CONSTRAINT; Schema: public; Owner: booking_owner
--

ALTER TABLE ONLY public.waiting_room_entries
    ADD CONSTRAINT uq_waiting_room_entries_position UNIQUE (event_id, "position");


--
-- Name: waiting_room_entries uq_waiting_room_entries_seq; Type: CONSTRAINT; Schema: public; Owner: booking_owner
--

ALTER TABLE ONLY public.waiting_room_entries
    ADD CONSTRAINT uq_waiting_room_entries_seq UNIQUE (event_id, seq);


--
-- Name: users users_email_key; Type: CONSTRAINT; Schema: public; Owner: booking_owner
--

ALTER TABLE ONLY public.users
    ADD CONSTRAINT users_email_key UNIQUE (email);


--
-- Name: users users_pkey; Type: CONSTRAINT; Schema: public; Owner: booking_owner
--

ALTER TABLE ONLY public.users
    ADD CONSTRAINT users_pkey PRIMARY KEY (id);


--
-- Name: waiting_room_entries waiting_room_entries_pkey; Type: CONSTRAINT; Schema: public; Owner: booking_owner
--

ALTER TABLE ONLY public.waiting_room_entries
    ADD CONSTRAINT waiting_room_entries_pkey PRIMARY KEY (event_id, user_id);


--
-- Name: waiting_rooms waiting_rooms_pkey; Type: CONSTRAINT; Schema: public; Owner: booking_owner
--

ALTER TABLE ONLY public.waiting_rooms
    ADD CONSTRAINT waiting_rooms_pkey PRIMARY KEY (event_id);


--
-- Name: webhook_attempts webhook_attempts_pkey; Type: CONSTRAINT; Schema: public; Owner: booking_owner
--

ALTER TABLE ONLY public.webhook_attempts
    ADD CONSTRAINT webhook_attempts_pkey PRIMARY KEY (id);


--
-- Name: webhook_deliveries webhook_deliveries_pkey; Type: CONSTRAINT; Schema: public; Owner: booking_owner
--

ALTER TABLE ONLY public.webhook_deliveries
    ADD CONSTRAINT webhook_deliveries_pkey PRIMARY KEY (id);


--
-- Name: webhooks webhooks_pkey; Type: CONSTRAINT; Schema: public; Owner: booking_owner
--

ALTER TABLE ONLY public.webhooks
    ADD CONSTRAINT webhooks_pkey PRIMARY KEY (id);


--
-- Name: idx_events_name_text; Type: INDEX; Schema: public; Owner: booking_owner
--

CREATE INDEX idx_events_name_text ON public.events USING gin (to_tsvector('english'::regconfig, (name)::text));


--
-- Name: idx_events_name_trgm; Type: INDEX; Schema: public; Owner: booking_owner
--

CREATE INDEX idx_events_name_trgm ON public.events USING gin (name public.gin_trgm_ops);


--
-- Name: idx_events_slug; Type: INDEX; Schema: public; Owner: booking_owner
--

CREATE INDEX idx_events_slug ON public.events USING btree (slug);


--
-- Name: idx_events_start_time; Type: INDEX; Schema: public; Owner: booking_owner
--

CREATE INDEX idx_events_start_time ON public.events USING btree (start_time);


--
-- Name: idx_events_status; Type: INDEX; Schema: public; Owner: booking_owner
--

CREATE INDEX idx_events_status ON public.events USING btree (status);


--
-- Name: idx_events_status_start_time; Type: INDEX; Schema: public; Owner: booking_owner
--

CREATE INDEX idx_events_status_start_time ON public.events USING btree (status, start_time);


--
-- Name: idx_idempotency_keys_created_at; Type: INDEX; Schema: public; Owner: booking_owner
--

CREATE INDEX idx_idempotency_keys_created_at ON public.idempotency_keys USING btree (created_at);


--
-- Name: idx_order_items_order_id; Type: INDEX; Schema: public; Owner: booking_owner
--

CREATE INDEX idx_order_items_order_id ON public.order_items USING btree (order_id);


--
-- Name: idx_order_items_ticket_type_id; Type: INDEX; Schema: public; Owner: booking_owner
--

CREATE INDEX idx_order_items_ticket_type_id ON public.order_items USING btree (ticket_type_id);


--
-- Name: idx_order_reservations_active_type_expiry; Type: INDEX; Schema: public; Owner: booking_owner
--

CREATE INDEX idx_order_reservations_active_type_expiry ON public.order_reservations USING btree (ticket_type_id, expires_at) WHERE ((status)::text = 'ACTIVE'::text);


--
-- Name: idx_order_reservations_expires_at; Type: INDEX; Schema: public; Owner: booking_owner
--

CREATE INDEX idx_order_reservations_expires_at ON public.order_reservations USING btree (expires_at) WHERE ((status)::text = 'ACTIVE'::text);


--
-- Name: idx_order_reservations_finished_created; Type: INDEX; Schema: public; Owner: booking_owner
--

CREATE INDEX idx_order_reservations_finished_created ON public.order_reservations USING btree (created_at) WHERE ((status)::text <> 'ACTIVE'::text);


--
-- Name: idx_order_reservations_status; Type: INDEX; Schema: public; Owner: booking_owner
--

CREATE INDEX idx_order_reservations_status ON public.order_reservations USING btree (status);


--
-- Name: idx_order_reservations_ticket_type_id; Type: INDEX; Schema: public; Owner: booking_owner
--

CREATE INDEX idx_order_reservations_ticket_type_id ON public.order_reservations USING btree (ticket_type_id);


--
-- Name: idx_order_reservations_user_type; Type: INDEX; Schema: public; Owner: booking_owner
--

CREATE INDEX idx_order_reservations_user_type ON public.order_reservations USING btree (user_id, ticket_type_id);


--
-- Name: idx_orders_created_at; Type: INDEX; Schema: public; Owner: booking_owner
--

CREATE INDEX idx_orders_created_at ON public.orders USING btree (created_at);


--
-- Name: idx_orders_pending_deadline; Type: INDEX; Schema: public; Owner: booking_owner
--

CREATE INDEX idx_orders_pending_deadline ON public.orders USING btree (payment_deadline) WHERE ((status)::text = 'PENDING'::text);


--
-- Name: idx_orders_reservation_id; Type: INDEX; Schema: public; Owner: booking_owner
--

CREATE INDEX idx_orders_reservation_id ON public.orders USING btree (reservation_id);


--
-- Name: idx_orders_status; Type: INDEX; Schema: public; Owner: booking_owner
--

CREATE INDEX idx_orders_status ON public.orders USING btree (status);


--
-- Name: idx_orders_unpaid_updated; Type: INDEX; Schema: public; Owner: booking_owner
--

CREATE INDEX idx_orders_unpaid_updated ON public.orders USING btree (updated_at) WHERE ((status)::text = ANY ((ARRAY['TIMEOUT'::character varying, 'CANCELLED'::character varying])::text[]));


--
-- Name: idx_orders_user_created; Type: INDEX; Schema: public; Owner: booking_owner
--

CREATE INDEX idx_orders_user_created ON public.orders USING btree (user_id, created_at DESC);


--
-- Name: idx_orders_user_id; Type: INDEX; Schema: public; Owner: booking_owner
--

CREATE INDEX idx_orders_user_id ON public.orders USING btree (user_id);


--
-- Name: idx_orders_user_status; Type: INDEX; Schema: public; Owner: booking_owner
--

CREATE INDEX idx_orders_user_status ON public.orders USING btree (user_id, status);


--
-- Name: idx_payment_events_order; Type: INDEX; Schema: public; Owner: booking_owner
--

CREATE INDEX idx_payment_events_order ON public.payment_events USING btree (order_id);


--
-- Name: idx_payment_events_received; Type: INDEX; Schema: public; Owner: booking_owner
--

CREATE INDEX idx_payment_events_received ON public.payment_events USING btree (received_at);


--
-- Name: idx_payment_events_unresolved; Type: INDEX; Schema: public; Owner: booking_owner
--

CREATE INDEX idx_payment_events_unresolved ON public.payment_events USING btree (id) WHERE ((kind = 'success'::text) AND (outcome = ANY (ARRAY['unknown_reference'::text, 'wrong_amount'::text])) AND (resolved_at IS NULL));


--
-- Name: idx_payment_refunds_order; Type: INDEX; Schema: public; Owner: booking_owner
--

CREATE INDEX idx_payment_refunds_order ON public.payment_refunds USING btree (order_id);


--
-- Name: idx_payment_refunds_pending; Type: INDEX; Schema: public; Owner: booking_owner
--

CREATE INDEX idx_payment_refunds_pending ON public.payment_refunds USING btree (created_at) WHERE (status = 'PENDING'::text);


--
-- Name: idx_payments_order_id; Type: INDEX; Schema: public; Owner: booking_owner
--

CREATE INDEX idx_payments_order_id ON public.payments USING btree (order_id);


--
-- Name: idx_payments_payment_time; Type: INDEX; Schema: public; Owner: booking_owner
--

CREATE INDEX idx_payments_payment_time ON public.payments USING btree (payment_time);


--
-- Name: idx_payments_status; Type: INDEX; Schema: public; Owner: booking_owner
--

CREATE INDEX idx_payments_status ON public.payments USING btree (status);


--
-- Name: idx_payments_transaction_id; Type: INDEX; Schema: public; Owner: booking_owner
--

CREATE INDEX idx_payments_transaction_id ON public.payments USING btree (transaction_id);


--
-- Name: idx_procrastinate_jobs_worker_not_null; Type: INDEX; Schema: public; Owner: booking_owner
--

CREATE INDEX idx_procrastinate_jobs_worker_not_null ON public.procrastinate_jobs USING btree (worker_id) WHERE ((worker_id IS NOT NULL) AND (status = 'doing'::public.procrastinate_job_status));


--
-- Name: idx_procrastinate_workers_last_heartbeat; Type: INDEX; Schema: public; Owner: booking_owner
--

CREATE INDEX idx_procrastinate_workers_last_heartbeat ON public.procrastinate_workers USING btree (last_heartbeat);


--
-- Name: idx_refresh_tokens_expires_at; Type: INDEX; Schema: public; Owner: booking_owner
--

CREATE INDEX idx_refresh_tokens_expires_at ON public.refresh_tokens USING btree (expires_at);


--
-- Name: idx_refresh_tokens_session_id; Type: INDEX; Schema: public; Owner: booking_owner
--

CREATE INDEX idx_refresh_tokens_session_id ON public.refresh_tokens USING btree (session_id);


--
-- Name: idx_revoked_sessions_revoked_at; Type: INDEX; Schema: public; Owner: booking_owner
--

CREATE INDEX idx_revoked_sessions_revoked_at ON public.revoked_sessions USING btree (revoked_at);


--
-- Name: idx_role_changes_changed_at; Type: INDEX; Schema: public; Owner: booking_owner
--

CREATE INDEX idx_role_changes_changed_at ON public.role_changes USING btree (changed_at);


--
-- Name: idx_sessions_expires_at; Type: INDEX; Schema: public; Owner: booking_owner
--

CREATE INDEX idx_sessions_expires_at ON public.sessions USING btree (expires_at);


--
-- Name: idx_sessions_user_id; Type: INDEX; Schema: public; Owner: booking_owner
--

CREATE INDEX idx_sessions_user_id ON public.sessions USING btree (user_id);


--
-- Name: idx_ticket_types_available; Type: INDEX; Schema: public; Owner: booking_owner
--

CREATE INDEX idx_ticket_types_available ON public.ticket_types USING btree (available_quantity) WHERE (available_quantity > 0);


--
-- Name: idx_ticket_types_event_id; Type: INDEX; Schema: public; Owner: booking_owner
--

CREATE INDEX idx_ticket_types_event_id ON public.ticket_types USING btree (event_id);


--
-- Name: idx_ticket_types_sale_time; Type: INDEX; Schema: public; Owner: booking_owner
--

CREATE INDEX idx_ticket_types_sale_time ON public.ticket_types USING btree (start_sale_time, end_sale_time);


--
-- Name: idx_tickets_order_id; Type: INDEX; Schema: public; Owner: booking_owner
--

CREATE INDEX idx_tickets_order_id ON public.tickets USING btree (order_id);


--
-- Name: idx_tickets_owner_name; Type: INDEX; Schema: public; Owner: booking_owner
--

CREATE INDEX idx_tickets_owner_name ON public.tickets USING btree (owner_name);


--
-- Name: idx_tickets_status; Type: INDEX; Schema: public; Owner: booking_owner
--

CREATE INDEX idx_tickets_status ON public.tickets USING btree (status);


--
-- Name: idx_tickets_ticket_code; Type: INDEX; Schema: public; Owner: booking_owner
--

CREATE INDEX idx_tickets_ticket_code ON public.tickets USING btree (ticket_code);


--
-- Name: idx_tickets_ticket_type_id; Type: INDEX; Schema: public; Owner: booking_owner
--

CREATE INDEX idx_tickets_ticket_type_id ON public.tickets USING btree (ticket_type_id);


--
-- Name: idx_users_created_at; Type: INDEX; Schema: public; Owner: booking_owner
--

CREATE INDEX idx_users_created_at ON public.users USING btree (created_at);


--
-- Name: idx_users_email; Type: INDEX; Schema: public; Owner: booking_owner
--

CREATE INDEX idx_users_email ON public.users USING btree (email);


--
-- Name: idx_users_role; Type: INDEX; Schema: public; Owner: booking_owner
--

CREATE INDEX idx_users_role ON public.users USING btree (role);


--
-- Name: idx_waiting_room_entries_user; Type: INDEX; Schema: public; Owner: booking_owner
--

CREATE INDEX idx_waiting_room_entries_user ON public.waiting_room_entries USING btree (user_id);


--
-- Name: idx_webhook_attempts_delivery; Type: INDEX; Schema: public; Owner: booking_owner
--

CREATE INDEX idx_webhook_attempts_delivery ON public.webhook_attempts USING btree (delivery_id, attempt);


--
-- Name: idx_webhook_deliveries_pending; Type: INDEX; Schema: public; Owner: booking_owner
--

CREATE INDEX idx_webhook_deliveries_pending ON public.webhook_deliveries USING btree (webhook_id) WHERE (status = 'PENDING'::text);


--
-- Name: idx_webhook_deliveries_webhook; Type: INDEX; Schema: public; Owner: booking_owner
--

CREATE INDEX idx_webhook_deliveries_webhook ON public.webhook_deliveries USING btree (webhook_id, created_at DESC);


--
-- Name: idx_webhooks_active; Type: INDEX; Schema: public; Owner: booking_owner
--

CREATE INDEX idx_webhooks_active ON public.webhooks USING btree (created_at) WHERE active;


--
-- Name: idx_webhooks_created_by; Type: INDEX; Schema: public; Owner: booking_owner
--

CREATE INDEX idx_webhooks_created_by ON public.webhooks USING btree (created_by, created_at DESC);


--
-- Name: procrastinate_events_job_id_fkey_v1; Type: INDEX; Schema: public; Owner: booking_owner
--

CREATE INDEX procrastinate_events_job_id_fkey_v1 ON public.procrastinate_events USING btree (job_id);


--
-- Name: procrastinate_jobs_id_lock_idx_v1; Type: INDEX; Schema: public; Owner: booking_owner
--

CREATE INDEX procrastinate_jobs_id_lock_idx_v1 ON public.procrastinate_jobs USING btree (id, lock) WHERE (status = ANY (ARRAY['todo'::public.procrastinate_job_status, 'doing'::public.procrastinate_job_status]));


--
-- Name: procrastinate_jobs_lock_idx_v1; Type: INDEX; Schema: public; Owner: booking_owner
--

CREATE UNIQUE INDEX procrastinate_jobs_lock_idx_v1 ON public.procrastinate_jobs USING btree (lock) WHERE (status = 'doing'::public.procrastinate_job_status);


--
-- Name: procrastinate_jobs_priority_idx_v1; Type: INDEX; Schema: public; Owner: booking_owner
--

CREATE INDEX procrastinate_jobs_priority_idx_v1 ON public.procrastinate_jobs USING btree (priority DESC, id) WHERE (status = 'todo'::public.procrastinate_job_status);


--
-- Name: procrastinate_jobs_queue_name_idx_v1; Type: INDEX; Schema: public; Owner: booking_owner
--

CREATE INDEX procrastinate_jobs_queue_name_idx_v1 ON public.procrastinate_jobs USING btree (queue_name);


--
-- Name: procrastinate_jobs_queueing_lock_idx_v1; Type: INDEX; Schema: public; Owner: booking_owner
--

CREATE UNIQUE INDEX procrastinate_jobs_queueing_lock_idx_v1 ON public.procrastinate_jobs USING btree (queueing_lock) WHERE (status = 'todo'::public.procrastinate_job_status);


--
-- Name: procrastinate_periodic_defers_job_id_fkey_v1; Type: INDEX; Schema: public; Owner: booking_owner
--

CREATE INDEX procrastinate_periodic_defers_job_id_fkey_v1 ON public.procrastinate_periodic_defers USING btree (job_id);


--
-- Name: uq_payment_events_other; Type: INDEX; Schema: public; Owner: booking_owner
--

CREATE UNIQUE INDEX uq_payment_events_other ON public.payment_events USING btree (provider, transaction_id, provider_txn_id, kind) WHERE (kind <> 'success'::text);


--
-- Name: uq_payment_events_success; Type: INDEX; Schema: public; Owner: booking_owner
--

CREATE UNIQUE INDEX uq_payment_events_success ON public.payment_events USING btree (provider, provider_txn_id) WHERE (kind = 'success'::text);


--
-- Name: uq_payment_refunds_event; Type: INDEX; Schema: public; Owner: booking_owner
--

CREATE UNIQUE INDEX uq_payment_refunds_event ON public.payment_refunds USING btree (payment_event_id) WHERE (payment_event_id IS NOT NULL);


--
-- Name: uq_payment_refunds_order; Type: INDEX; Schema: public; Owner: booking_owner
--

CREATE UNIQUE INDEX uq_payment_refunds_order ON public.payment_refunds USING btree (order_id) WHERE (reason <> ALL (ARRAY['duplicate'::text, 'wrong_amount'::text]));


--
-- Name: ticket_types check_max_per_user; Type: TRIGGER; Schema: public; Owner: booking_owner
--

CREATE TRIGGER check_max_per_user BEFORE INSERT OR UPDATE OF max_per_user ON public.ticket_types FOR EACH ROW EXECUTE FUNCTION public.check_max_per_user();


--
-- Name: ticket_types check_sale_times_rfc3339; Type: TRIGGER; Schema: public; Owner: booking_owner
--

CREATE TRIGGER check_sale_times_rfc3339 BEFORE INSERT OR UPDATE OF start_sale_time, end_sale_time ON public.ticket_types FOR EACH ROW EXECUTE FUNCTION public.check_sale_times_rfc3339();


--
-- Name: events notify_events_change; Type: TRIGGER; Schema: public; Owner: booking_owner
--

CREATE TRIGGER notify_events_change AFTER INSERT OR DELETE OR UPDATE OF slug, name, description, banner_url, location, start_time, end_time, status, max_tickets_per_user, queue_enabled, admission_rate_per_minute ON public.events FOR EACH STATEMENT EXECUTE FUNCTION public.notify_catalog_change();


--
-- Name: ticket_types notify_ticket_types_change; Type: TRIGGER; Schema: public; Owner: booking_owner
--

CREATE TRIGGER notify_ticket_types_change AFTER INSERT OR DELETE OR UPDATE OF event_id, name, price, initial_quantity, start_sale_time, end_sale_time, max_per_user ON public.ticket_types FOR EACH STATEMENT EXECUTE FUNCTION public.notify_catalog_change();


--
-- Name: procrastinate_jobs procrastinate_jobs_notify_queue_job_aborted_v1; Type: TRIGGER; Schema: public; Owner: booking_owner
--

CREATE TRIGGER procrastinate_jobs_notify_queue_job_aborted_v1 AFTER UPDATE OF abort_requested ON public.procrastinate_jobs FOR EACH ROW WHEN (((old.abort_requested = false) AND (new.abort_requested = true) AND (new.status = 'doing'::public.procrastinate_job_status))) EXECUTE FUNCTION public.procrastinate_notify_queue_abort_job_v1();


--
-- Name: procrastinate_jobs procrastinate_trigger_abort_requested_events_v1; Type: TRIGGER; Schema: public; Owner: booking_owner
--

CREATE TRIGGER procrastinate_trigger_abort_requested_events_v1 AFTER UPDATE OF abort_requested ON public.procrastinate_jobs FOR EACH ROW WHEN ((new.abort_requested = true)) EXECUTE FUNCTION public.procrastinate_trigger_abort_requested_events_procedure_v1();


--
-- Name: procrastinate_jobs procrastinate_trigger_delete_jobs_v1; Type: TRIGGER; Schema: public; Owner: booking_owner
--

CREATE TRIGGER procrastinate_trigger_delete_jobs_v1 BEFORE DELETE ON public.procrastinate_jobs FOR EACH ROW EXECUTE FUNCTION public.procrastinate_unlink_periodic_defers_v1();


--
-- Name: procrastinate_jobs procrastinate_trigger_scheduled_events_v1; Type: TRIGGER; Schema: public; Owner: booking_owner
--

CREATE TRIGGER procrastinate_trigger_scheduled_events_v1 AFTER INSERT OR UPDATE ON public.procrastinate_jobs FOR EACH ROW WHEN (((new.scheduled_at IS NOT NULL) AND (new.status = 'todo'::public.procrastinate_job_status))) EXECUTE FUNCTION public.procrastinate_trigger_function_scheduled_events_v1();


--
-- Name: procrastinate_jobs procrastinate_trigger_status_events_insert_v1; Type: TRIGGER; Schema: public; Owner: booking_owner
--

CREATE TRIGGER procrastinate_trigger_status_events_insert_v1 AFTER INSERT ON public.procrastinate_jobs FOR EACH ROW WHEN ((new.status = 'todo'::public.procrastinate_job_status)) EXECUTE FUNCTION public.procrastinate_trigger_function_status_events_insert_v1();


--
-- Name: procrastinate_jobs procrastinate_trigger_status_events_update_v1; Type: TRIGGER; Schema: public; Owner: booking_owner
--

CREATE TRIGGER procrastinate_trigger_status_events_update_v1 AFTER UPDATE OF status ON public.procrastinate_jobs FOR EACH ROW EXECUTE FUNCTION public.procrastinate_trigger_function_status_events_update_v1();


--
-- Name: users revoke_deleted_user_sessions; Type: TRIGGER; Schema: public; Owner: booking_owner
--

CREATE TRIGGER revoke_deleted_user_sessions BEFORE DELETE ON public.users FOR EACH ROW EXECUTE FUNCTION public.revoke_deleted_user_sessions();


--
-- Name: events update_events_updated_at; Type: TRIGGER; Schema: public; Owner: booking_owner
--

CREATE TRIGGER update_events_updated_at BEFORE UPDATE ON public.events FOR EACH ROW EXECUTE FUNCTION public.update_updated_at_column();


--
-- Name: orders update_orders_updated_at; Type: TRIGGER; Schema: public; Owner: booking_owner
--

CREATE TRIGGER update_orders_updated_at BEFORE UPDATE ON public.orders FOR EACH ROW EXECUTE FUNCTION public.update_updated_at_column();


--
-- Name: ticket_types update_ticket_types_updated_at; Type: TRIGGER; Schema: public; Owner: booking_owner
--

CREATE TRIGGER update_ticket_types_updated_at BEFORE UPDATE ON public.ticket_types FOR EACH ROW EXECUTE FUNCTION public.update_updated_at_column();


--
-- Name: users update_users_updated_at; Type: TRIGGER; Schema: public; Owner: booking_owner
--

CREATE TRIGGER update_users_updated_at BEFORE UPDATE ON public.users FOR EACH ROW EXECUTE FUNCTION public.update_updated_at_column();


--
-- Name: waiting_rooms waiting_room_changed; Type: TRIGGER; Schema: public; Owner: booking_owner
--

CREATE TRIGGER waiting_room_changed AFTER INSERT OR DELETE OR UPDATE OF base, base_at, paused_at, opened_at, shuffle_seed ON public.waiting_rooms FOR EACH ROW EXECUTE FUNCTION public.waiting_room_changed();


--
-- Name: waiting_room_entries waiting_room_entries_truncated; Type: TRIGGER; Schema: public; Owner: booking_owner
--

CREATE TRIGGER waiting_room_entries_truncated AFTER TRUNCATE ON public.waiting_room_entries FOR EACH STATEMENT EXECUTE FUNCTION public.waiting_rooms_truncated();


--
-- Name: events waiting_room_event_status_changed; Type: TRIGGER; Schema: public; Owner: booking_owner
--

CREATE TRIGGER waiting_room_event_status_changed AFTER UPDATE OF status ON public.events FOR EACH ROW WHEN ((((old.status)::text IS DISTINCT FROM (new.status)::text) AND new.queue_enabled)) EXECUTE FUNCTION public.waiting_room_event_status_changed();


--
-- Name: ticket_types waiting_room_opening_changed; Type: TRIGGER; Schema: public; Owner: booking_owner
--

CREATE TRIGGER waiting_room_opening_changed AFTER INSERT OR DELETE OR UPDATE OF start_sale_time ON public.ticket_types FOR EACH ROW EXECUTE FUNCTION public.waiting_room_opening_changed();


--
-- Name: events waiting_room_rate_changed; Type: TRIGGER; Schema: public; Owner: booking_owner
--

CREATE TRIGGER waiting_room_rate_changed AFTER UPDATE OF admission_rate_per_minute, queue_enabled ON public.events FOR EACH ROW WHEN (((old.admission_rate_per_minute IS DISTINCT FROM new.admission_rate_per_minute) OR (old.queue_enabled IS DISTINCT FROM new.queue_enabled))) EXECUTE FUNCTION public.waiting_room_rate_changed();


--
-- Name: waiting_rooms waiting_rooms_truncated; Type: TRIGGER; Schema: public; Owner: booking_owner
--

CREATE TRIGGER waiting_rooms_truncated AFTER TRUNCATE ON public.waiting_rooms FOR EACH STATEMENT EXECUTE FUNCTION public.waiting_rooms_truncated();


--
-- Name: order_items fk_order_items_order; Type: FK CONSTRAINT; Schema: public; Owner: booking_owner
--

ALTER TABLE ONLY public.order_items
    ADD CONSTRAINT fk_order_items_order FOREIGN KEY (order_id) REFERENCES public.orders(id) ON DELETE CASCADE;


--
-- Name: order_items fk_order_items_ticket_type; Type: FK CONSTRAINT; Schema: public; Owner: booking_owner
--

ALTER TABLE ONLY public.order_items
    ADD CONSTRAINT fk_order_items_ticket_type FOREIGN KEY (ticket_type_id) REFERENCES public.ticket_types(id) ON DELETE RESTRICT;


--
-- Name: orders fk_orders_reservation; Type: FK CONSTRAINT; Schema: public; Owner: booking_owner
--

ALTER TABLE ONLY public.orders
    ADD CONSTRAINT fk_orders_reservation FOREIGN KEY (reservation_id) REFERENCES public.order_reservations(id) ON DELETE SET NULL;


--
-- Name: orders fk_orders_user; Type: FK CONSTRAINT; Schema: public; Owner: booking_owner
--

ALTER TABLE ONLY public.orders
    ADD CONSTRAINT fk_orders_user FOREIGN KEY (user_id) REFERENCES public.users(id) ON DELETE RESTRICT;


--
-- Name: payments fk_payments_order; Type: FK CONSTRAINT; Schema: public; Owner: booking_owner
--

ALTER TABLE ONLY public.payments
    ADD CONSTRAINT fk_payments_order FOREIGN KEY (order_id) REFERENCES public.orders(id) ON DELETE CASCADE;


--
-- Name: order_reservations fk_reservations_ticket_type; Type: FK CONSTRAINT; Schema: public; Owner: booking_owner
--

ALTER TABLE ONLY public.order_reservations
    ADD CONSTRAINT fk_reservations_ticket_type FOREIGN KEY (ticket_type_id) REFERENCES public.ticket_types(id) ON DELETE CASCADE;


--
-- Name: order_reservations fk_reservations_user; Type: FK CONSTRAINT; Schema: public; Owner: booking_owner
--

ALTER TABLE ONLY public.order_reservations
    ADD CONSTRAINT fk_reservations_user FOREIGN KEY (user_id) REFERENCES public.users(id) ON DELETE CASCADE;


--
-- Name: ticket_types fk_ticket_types_event; Type: FK CONSTRAINT; Schema: public; Owner: booking_owner
--

ALTER TABLE ONLY public.ticket_types
    ADD CONSTRAINT fk_ticket_types_event FOREIGN KEY (event_id) REFERENCES public.events(id) ON DELETE CASCADE;


--
-- Name: tickets fk_tickets_order; Type: FK CONSTRAINT; Schema: public; Owner: booking_owner
--

ALTER TABLE ONLY public.tickets
    ADD CONSTRAINT fk_tickets_order FOREIGN KEY (order_id) REFERENCES public.orders(id) ON DELETE CASCADE;


--
-- Name: tickets fk_tickets_ticket_type; Type: FK CONSTRAINT; Schema: public; Owner: booking_owner
--

ALTER TABLE ONLY public.tickets
    ADD CONSTRAINT fk_tickets_ticket_type FOREIGN KEY (ticket_type_id) REFERENCES public.ticket_types(id) ON DELETE RESTRICT;


--
-- Name: order_emails order_emails_order_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: booking_owner
--

ALTER TABLE ONLY public.order_emails
    ADD CONSTRAINT order_emails_order_id_fkey FOREIGN KEY (order_id) REFERENCES public.orders(id) ON DELETE CASCADE;


--
-- Name: payment_events payment_events_order_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: booking_owner
--

ALTER TABLE ONLY public.payment_events
    ADD CONSTRAINT payment_events_order_id_fkey FOREIGN KEY (order_id) REFERENCES public.orders(id) ON DELETE SET NULL;


--
-- Name: payment_refunds payment_refunds_order_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: booking_owner
--

ALTER TABLE ONLY public.payment_refunds
    ADD CONSTRAINT payment_refunds_order_id_fkey FOREIGN KEY (order_id) REFERENCES public.orders(id) ON DELETE CASCADE;


--
-- Name: payment_refunds payment_refunds_payment_event_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: booking_owner
--

ALTER TABLE ONLY public.payment_refunds
    ADD CONSTRAINT payment_refunds_payment_event_id_fkey FOREIGN KEY (payment_event_id) REFERENCES public.payment_events(id) ON DELETE SET NULL;


--
-- Name: procrastinate_events procrastinate_events_job_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: booking_owner
--

ALTER TABLE ONLY public.procrastinate_events
    ADD CONSTRAINT procrastinate_events_job_id_fkey FOREIGN KEY (job_id) REFERENCES public.procrastinate_jobs(id) ON DELETE CASCADE;


--
-- Name: procrastinate_jobs procrastinate_jobs_worker_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: booking_owner
--

ALTER TABLE ONLY public.procrastinate_jobs
    ADD CONSTRAINT procrastinate_jobs_worker_id_fkey FOREIGN KEY (worker_id) REFERENCES public.procrastinate_workers(id) ON DELETE SET NULL;


--
-- Name: procrastinate_periodic_defers procrastinate_periodic_defers_job_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: booking_owner
--

ALTER TABLE ONLY public.procrastinate_periodic_defers
    ADD CONSTRAINT procrastinate_periodic_defers_job_id_fkey FOREIGN KEY (job_id) REFERENCES public.procrastinate_jobs(id);


--
-- Name: refresh_tokens refresh_tokens_session_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: booking_owner
--

ALTER TABLE ONLY public.refresh_tokens
    ADD CONSTRAINT refresh_tokens_session_id_fkey FOREIGN KEY (session_id) REFERENCES public.sessions(id) ON DELETE CASCADE;


--
-- Name: sessions sessions_user_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: booking_owner
--

ALTER TABLE ONLY public.sessions
    ADD CONSTRAINT sessions_user_id_fkey FOREIGN KEY (user_id) REFERENCES public.users(id) ON DELETE CASCADE;


--
-- Name: waiting_room_entries waiting_room_entries_event_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: booking_owner
--

ALTER TABLE ONLY public.waiting_room_entries
    ADD CONSTRAINT waiting_room_entries_event_id_fkey FOREIGN KEY (event_id) REFERENCES public.waiting_rooms(event_id) ON DELETE CASCADE;


--
-- Name: waiting_room_entries waiting_room_entries_user_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: booking_owner
--

ALTER TABLE ONLY public.waiting_room_entries
    ADD CONSTRAINT waiting_room_entries_user_id_fkey FOREIGN KEY (user_id) REFERENCES public.users(id) ON DELETE CASCADE;


--
-- Name: waiting_rooms waiting_rooms_event_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: booking_owner
--

ALTER TABLE ONLY public.waiting_rooms
    ADD CONSTRAINT waiting_rooms_event_id_fkey FOREIGN KEY (event_id) REFERENCES public.events(id) ON DELETE CASCADE;


--
-- Name: webhook_attempts webhook_attempts_delivery_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: booking_owner
--

ALTER TABLE ONLY public.webhook_attempts
    ADD CONSTRAINT webhook_attempts_delivery_id_fkey FOREIGN KEY (delivery_id) REFERENCES public.webhook_deliveries(id) ON DELETE CASCADE;


--
-- Name: webhook_deliveries webhook_deliveries_webhook_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: booking_owner
--

ALTER TABLE ONLY public.webhook_deliveries
    ADD CONSTRAINT webhook_deliveries_webhook_id_fkey FOREIGN KEY (webhook_id) REFERENCES public.webhooks(id) ON DELETE CASCADE;


--
-- Name: webhooks webhooks_created_by_fkey; Type: FK CONSTRAINT; Schema: public; Owner: booking_owner
--

ALTER TABLE ONLY public.webhooks
    ADD CONSTRAINT webhooks_created_by_fkey FOREIGN KEY (created_by) REFERENCES public.users(id) ON DELETE CASCADE;


--
-- Name: webhooks webhooks_event_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: booking_owner
--

ALTER TABLE ONLY public.webhooks
    ADD CONSTRAINT webhooks_event_id_fkey FOREIGN KEY (event_id) REFERENCES public.events(id) ON DELETE CASCADE;


--
-- Name: SCHEMA api; Type: ACL; Schema: -; Owner: booking_owner
--

GRANT USAGE ON SCHEMA api TO booking_gateway;
GRANT USAGE ON SCHEMA api TO booking_worker;
GRANT USAGE ON SCHEMA api TO booking_monitor;


--
-- Name: SCHEMA public; Type: ACL; Schema: -; Owner: pg_database_owner
--

REVOKE USAGE ON SCHEMA public FROM PUBLIC;
GRANT ALL ON SCHEMA public TO booking_owner;
GRANT USAGE ON SCHEMA public TO booking_worker;


--
-- Name: FUNCTION admin_get_event(p_event_id uuid); Type: ACL; Schema: api; Owner: booking_owner
--

REVOKE ALL ON FUNCTION api.admin_get_event(p_event_id uuid) FROM PUBLIC;
GRANT ALL ON FUNCTION api.admin_get_event(p_event_id uuid) TO booking_gateway;


--
-- Name: FUNCTION apply_payment_event(p_provider text, p_provider_txn_id text, p_transaction_id text, p_amount numeric, p_success boolean, p_raw jsonb); Type: ACL; Schema: api; Owner: booking_owner
--

REVOKE ALL ON FUNCTION api.apply_payment_event(p_provider text, p_provider_txn_id text, p_transaction_id text, p_amount numeric, p_success boolean, p_raw jsonb) FROM PUBLIC;
GRANT ALL ON FUNCTION api.apply_payment_event(p_provider text, p_provider_txn_id text, p_transaction_id text, p_amount numeric, p_success boolean, p_raw jsonb) TO booking_gateway;


--
-- Name: FUNCTION buyer_counts(p_email text); Type: ACL; Schema: api; Owner: booking_owner
--

REVOKE ALL ON FUNCTION api.buyer_counts(p_email text) FROM PUBLIC;


--
-- Name: FUNCTION cancel_event(p_event_id uuid); Type: ACL; Schema: api; Owner: booking_owner
--

REVOKE ALL ON FUNCTION api.cancel_event(p_event_id uuid) FROM PUBLIC;
GRANT ALL ON FUNCTION api.cancel_event(p_event_id uuid) TO booking_gateway;


--
-- Name: FUNCTION cancel_order(p_user_id uuid, p_order_id uuid); Type: ACL; Schema: api; Owner: booking_owner
--

REVOKE ALL ON FUNCTION api.cancel_order(p_user_id uuid, p_order_id uuid) FROM PUBLIC;
GRANT ALL ON FUNCTION api.cancel_order(p_user_id uuid, p_order_id uuid) TO booking_gateway;


--
-- Name: FUNCTION cancel_reservation(p_user_id uuid, p_reservation_id uuid); Type: ACL; Schema: api; Owner: booking_owner
--

REVOKE ALL ON FUNCTION api.cancel_reservation(p_user_id uuid, p_reservation_id uuid) FROM PUBLIC;
GRANT ALL ON FUNCTION api.cancel_reservation(p_user_id uuid, p_reservation_id uuid) TO booking_gateway;


--
-- Name: FUNCTION check_in(p_ticket_code text); Type: ACL; Schema: api; Owner: booking_owner
--

REVOKE ALL ON FUNCTION api.check_in(p_ticket_code text) FROM PUBLIC;
GRANT ALL ON FUNCTION api.check_in(p_ticket_code text) TO booking_gateway;


--
-- Name: FUNCTION check_invariants(); Type: ACL; Schema: api; Owner: booking_owner
--

REVOKE ALL ON FUNCTION api.check_invariants() FROM PUBLIC;


--
-- Name: FUNCTION check_rate_limits(p_classes text[], p_user_ids uuid[], p_addresses text[]); Type: ACL; Schema: api; Owner: booking_owner
--

REVOKE ALL ON FUNCTION api.check_rate_limits(p_classes text[], p_user_ids uuid[], p_addresses text[]) FROM PUBLIC;
GRANT ALL ON FUNCTION api.check_rate_limits(p_classes text[], p_user_ids uuid[], p_addresses text[]) TO booking_gateway;


--
-- Name: FUNCTION checkout(p_user_id uuid, p_reservation_id uuid, p_payment_method text, p_idempotency_key text); Type: ACL; Schema: api; Owner: booking_owner
--

REVOKE ALL ON FUNCTION api.checkout(p_user_id uuid, p_reservation_id uuid, p_payment_method text, p_idempotency_key text) FROM PUBLIC;
GRANT ALL ON FUNCTION api.checkout(p_user_id uuid, p_reservation_id uuid, p_payment_method text, p_idempotency_key text) TO booking_gateway;


--
-- Name: FUNCTION cleanup_reservations(p_older_than interval); Type: ACL; Schema: api; Owner: booking_owner
--

REVOKE ALL ON FUNCTION api.cleanup_reservations(p_older_than interval) FROM PUBLIC;


--
-- Name: FUNCTION clear_rate_limit(p_key_prefix text); Type: ACL; Schema: api; Owner: booking_owner
--

REVOKE ALL ON FUNCTION api.clear_rate_limit(p_key_prefix text) FROM PUBLIC;


--
-- Name: FUNCTION close_webhook_delivery(p_delivery_id uuid, p_status text); Type: ACL; Schema: api; Owner: booking_owner
--

REVOKE ALL ON FUNCTION api.close_webhook_delivery(p_delivery_id uuid, p_status text) FROM PUBLIC;
GRANT ALL ON FUNCTION api.close_webhook_delivery(p_delivery_id uuid, p_status text) TO booking_worker;


--
-- Name: FUNCTION complete_booking(p_user_id uuid, p_reservation_id uuid, p_payment_method text, p_idempotency_key text); Type: ACL; Schema: api; Owner: booking_owner
--

REVOKE ALL ON FUNCTION api.complete_booking(p_user_id uuid, p_reservation_id uuid, p_payment_method text, p_idempotency_key text) FROM PUBLIC;
GRANT ALL ON FUNCTION api.complete_booking(p_user_id uuid, p_reservation_id uuid, p_payment_method text, p_idempotency_key text) TO booking_gateway;


--
-- Name: FUNCTION confirmation_email(p_order_id uuid); Type: ACL; Schema: api; Owner: booking_owner
--

REVOKE ALL ON FUNCTION api.confirmation_email(p_order_id uuid) FROM PUBLIC;
GRANT ALL ON FUNCTION api.confirmation_email(p_order_id uuid) TO booking_worker;


--
-- Name: FUNCTION create_event(p_slug text, p_name text, p_location text, p_start_time timestamp with time zone, p_end_time timestamp with time zone, p_description text, p_banner_url text, p_max_tickets_per_user integer, p_queue_enabled boolean, p_admission_rate_per_minute integer); Type: ACL; Schema: api; Owner: booking_owner
--

REVOKE ALL ON FUNCTION api.create_event(p_slug text, p_name text, p_location text, p_start_time timestamp with time zone, p_end_time timestamp with time zone, p_description text, p_banner_url text, p_max_tickets_per_user integer, p_queue_enabled boolean, p_admission_rate_per_minute integer) FROM PUBLIC;
GRANT ALL ON FUNCTION api.create_event(p_slug text, p_name text, p_location text, p_start_time timestamp with time zone, p_end_time timestamp with time zone, p_description text, p_banner_url text, p_max_tickets_per_user integer, p_queue_enabled boolean, p_admission_rate_per_minute integer) TO booking_gateway;


--
-- Name: FUNCTION create_session(p_user_id uuid, p_refresh_hash bytea, p_session_ttl_seconds integer, p_refresh_ttl_seconds integer); Type: ACL; Schema: api; Owner: booking_owner
--

REVOKE ALL ON FUNCTION api.create_session(p_user_id uuid, p_refresh_hash bytea, p_session_ttl_seconds integer, p_refresh_ttl_seconds integer) FROM PUBLIC;
GRANT ALL ON FUNCTION api.create_session(p_user_id uuid, p_refresh_hash bytea, p_session_ttl_seconds integer, p_refresh_ttl_seconds integer) TO booking_gateway;


--
-- Name: FUNCTION create_ticket_type(p_event_id uuid, p_name text, p_price numeric, p_initial_quantity integer, p_start_sale_time timestamp with time zone, p_end_sale_time timestamp with time zone, p_max_per_user integer); Type: ACL; Schema: api; Owner: booking_owner
--

REVOKE ALL ON FUNCTION api.create_ticket_type(p_event_id uuid, p_name text, p_price numeric, p_initial_quantity integer, p_start_sale_time timestamp with time zone, p_end_sale_time timestamp with time zone, p_max_per_user integer) FROM PUBLIC;
GRANT ALL ON FUNCTION api.create_ticket_type(p_event_id uuid, p_name text, p_price numeric, p_initial_quantity integer, p_start_sale_time timestamp with time zone, p_end_sale_time timestamp with time zone, p_max_per_user integer) TO booking_gateway;


--
-- Name: FUNCTION create_webhook(p_user_id uuid, p_url text, p_events text[], p_event_id uuid); Type: ACL; Schema: api; Owner: booking_owner
--

REVOKE ALL ON FUNCTION api.create_webhook(p_user_id uuid, p_url text, p_events text[], p_event_id uuid) FROM PUBLIC;
GRANT ALL ON FUNCTION api.create_webhook(p_user_id uuid, p_url text, p_events text[], p_event_id uuid) TO booking_gateway;


--
-- Name: FUNCTION delete_webhook(p_user_id uuid, p_webhook_id uuid); Type: ACL; Schema: api; Owner: booking_owner
--

REVOKE ALL ON FUNCTION api.delete_webhook(p_user_id uuid, p_webhook_id uuid) FROM PUBLIC;
GRANT ALL ON FUNCTION api.delete_webhook(p_user_id uuid, p_webhook_id uuid) TO booking_gateway;


--
-- Name: FUNCTION end_session(p_user_id uuid, p_session_id uuid); Type: ACL; Schema: api; Owner: booking_owner
--

REVOKE ALL ON FUNCTION api.end_session(p_user_id uuid, p_session_id uuid) FROM PUBLIC;
GRANT ALL ON FUNCTION api.end_session(p_user_id uuid, p_session_id uuid) TO booking_gateway;


--
-- Name: FUNCTION expire_pending_orders(p_limit integer); Type: ACL; Schema: api; Owner: booking_owner
--

REVOKE ALL ON FUNCTION api.expire_pending_orders(p_limit integer) FROM PUBLIC;


--
-- Name: FUNCTION expire_reservations(); Type: ACL; Schema: api; Owner: booking_owner
--

REVOKE ALL ON FUNCTION api.expire_reservations() FROM PUBLIC;


--
-- Name: FUNCTION failed_jobs(p_limit integer); Type: ACL; Schema: api; Owner: booking_owner
--

REVOKE ALL ON FUNCTION api.failed_jobs(p_limit integer) FROM PUBLIC;


--
-- Name: FUNCTION get_event(p_id_or_slug text); Type: ACL; Schema: api; Owner: booking_owner
--

REVOKE ALL ON FUNCTION api.get_event(p_id_or_slug text) FROM PUBLIC;
GRANT ALL ON FUNCTION api.get_event(p_id_or_slug text) TO booking_gateway;


--
-- Name: FUNCTION get_order(p_user_id uuid, p_order_id uuid); Type: ACL; Schema: api; Owner: booking_owner
--

REVOKE ALL ON FUNCTION api.get_order(p_user_id uuid, p_order_id uuid) FROM PUBLIC;
GRANT ALL ON FUNCTION api.get_order(p_user_id uuid, p_order_id uuid) TO booking_gateway;


--
-- Name: FUNCTION get_user(p_user_id uuid); Type: ACL; Schema: api; Owner: booking_owner
--

REVOKE ALL ON FUNCTION api.get_user(p_user_id uuid) FROM PUBLIC;
GRANT ALL ON FUNCTION api.get_user(p_user_id uuid) TO booking_gateway;


--
-- Name: FUNCTION get_user_credentials(p_email text, p_count_attempt boolean); Type: ACL; Schema: api; Owner: booking_owner
--

REVOKE ALL ON FUNCTION api.get_user_credentials(p_email text, p_count_attempt boolean) FROM PUBLIC;
GRANT ALL ON FUNCTION api.get_user_credentials(p_email text, p_count_attempt boolean) TO booking_gateway;


--
-- Name: FUNCTION job_queue(); Type: ACL; Schema: api; Owner: booking_owner
--

REVOKE ALL ON FUNCTION api.job_queue() FROM PUBLIC;


--
-- Name: FUNCTION join_waiting_room(p_event_id uuid, p_user_id uuid); Type: ACL; Schema: api; Owner: booking_owner
--

REVOKE ALL ON FUNCTION api.join_waiting_room(p_event_id uuid, p_user_id uuid) FROM PUBLIC;
GRANT ALL ON FUNCTION api.join_waiting_room(p_event_id uuid, p_user_id uuid) TO booking_gateway;


--
-- Name: FUNCTION join_waiting_room_batch(p_event_id uuid, p_user_ids uuid[]); Type: ACL; Schema: api; Owner: booking_owner
--

REVOKE ALL ON FUNCTION api.join_waiting_room_batch(p_event_id uuid, p_user_ids uuid[]) FROM PUBLIC;
GRANT ALL ON FUNCTION api.join_waiting_room_batch(p_event_id uuid, p_user_ids uuid[]) TO booking_gateway;


--
-- Name: FUNCTION list_published_events(p_query text, p_limit integer, p_after_start_time timestamp with time zone, p_after_id uuid); Type: ACL; Schema: api; Owner: booking_owner
--

REVOKE ALL ON FUNCTION api.list_published_events(p_query text, p_limit integer, p_after_start_time timestamp with time zone, p_after_id uuid) FROM PUBLIC;
GRANT ALL ON FUNCTION api.list_published_events(p_query text, p_limit integer, p_after_start_time timestamp with time zone, p_after_id uuid) TO booking_gateway;


--
-- Name: FUNCTION list_webhooks(p_user_id uuid); Type: ACL; Schema: api; Owner: booking_owner
--

REVOKE ALL ON FUNCTION api.list_webhooks(p_user_id uuid) FROM PUBLIC;
GRANT ALL ON FUNCTION api.list_webhooks(p_user_id uuid) TO booking_gateway;


--
-- Name: FUNCTION monitor_holds(); Type: ACL; Schema: api; Owner: booking_owner
--

REVOKE ALL ON FUNCTION api.monitor_holds() FROM PUBLIC;
GRANT ALL ON FUNCTION api.monitor_holds() TO booking_monitor;


--
-- Name: FUNCTION monitor_invariants(); Type: ACL; Schema: api; Owner: booking_owner
--

REVOKE ALL ON FUNCTION api.monitor_invariants() FROM PUBLIC;
GRANT ALL ON FUNCTION api.monitor_invariants() TO booking_monitor;


--
-- Name: FUNCTION monitor_jobs(); Type: ACL; Schema: api; Owner: booking_owner
--

REVOKE ALL ON FUNCTION api.monitor_jobs() FROM PUBLIC;
GRANT ALL ON FUNCTION api.monitor_jobs() TO booking_monitor;


--
-- Name: FUNCTION monitor_payment_events(); Type: ACL; Schema: api; Owner: booking_owner
--

REVOKE ALL ON FUNCTION api.monitor_payment_events() FROM PUBLIC;
GRANT ALL ON FUNCTION api.monitor_payment_events() TO booking_monitor;


--
-- Name: FUNCTION monitor_payments(); Type: ACL; Schema: api; Owner: booking_owner
--

REVOKE ALL ON FUNCTION api.monitor_payments() FROM PUBLIC;
GRANT ALL ON FUNCTION api.monitor_payments() TO booking_monitor;


--
-- Name: FUNCTION monitor_waiting_rooms(); Type: ACL; Schema: api; Owner: booking_owner
--

REVOKE ALL ON FUNCTION api.monitor_waiting_rooms() FROM PUBLIC;
GRANT ALL ON FUNCTION api.monitor_waiting_rooms() TO booking_monitor;


--
-- Name: FUNCTION my_bookings(p_user_id uuid, p_limit integer, p_after_created_at timestamp with time zone, p_after_id uuid); Type: ACL; Schema: api; Owner: booking_owner
--

REVOKE ALL ON FUNCTION api.my_bookings(p_user_id uuid, p_limit integer, p_after_created_at timestamp with time zone, p_after_id uuid) FROM PUBLIC;
GRANT ALL ON FUNCTION api.my_bookings(p_user_id uuid, p_limit integer, p_after_created_at timestamp with time zone, p_after_id uuid) TO booking_gateway;


--
-- Name: FUNCTION open_waiting_rooms(); Type: ACL; Schema: api; Owner: booking_owner
--

REVOKE ALL ON FUNCTION api.open_waiting_rooms() FROM PUBLIC;


--
-- Name: FUNCTION pause_waiting_room(p_event_id uuid); Type: ACL; Schema: api; Owner: booking_owner
--

REVOKE ALL ON FUNCTION api.pause_waiting_room(p_event_id uuid) FROM PUBLIC;


--
-- Name: FUNCTION payment_inbox(p_limit integer, p_outcome text); Type: ACL; Schema: api; Owner: booking_owner
--

REVOKE ALL ON FUNCTION api.payment_inbox(p_limit integer, p_outcome text) FROM PUBLIC;


--
-- Name: FUNCTION payment_mode(); Type: ACL; Schema: api; Owner: booking_owner
--

REVOKE ALL ON FUNCTION api.payment_mode() FROM PUBLIC;


--
-- Name: FUNCTION payments_to_reconcile(p_older_than interval, p_limit integer); Type: ACL; Schema: api; Owner: booking_owner
--

REVOKE ALL ON FUNCTION api.payments_to_reconcile(p_older_than interval, p_limit integer) FROM PUBLIC;
GRANT ALL ON FUNCTION api.payments_to_reconcile(p_older_than interval, p_limit integer) TO booking_worker;


--
-- Name: FUNCTION pending_payments(); Type: ACL; Schema: api; Owner: booking_owner
--

REVOKE ALL ON FUNCTION api.pending_payments() FROM PUBLIC;


--
-- Name: FUNCTION publish_event(p_event_id uuid); Type: ACL; Schema: api; Owner: booking_owner
--

REVOKE ALL ON FUNCTION api.publish_event(p_event_id uuid) FROM PUBLIC;
GRANT ALL ON FUNCTION api.publish_event(p_event_id uuid) TO booking_gateway;


--
-- Name: FUNCTION purge_idempotency_keys(); Type: ACL; Schema: api; Owner: booking_owner
--

REVOKE ALL ON FUNCTION api.purge_idempotency_keys() FROM PUBLIC;


--
-- Name: FUNCTION purge_rate_limits(); Type: ACL; Schema: api; Owner: booking_owner
--

REVOKE ALL ON FUNCTION api.purge_rate_limits() FROM PUBLIC;


--
-- Name: FUNCTION purge_sessions(); Type: ACL; Schema: api; Owner: booking_owner
--

REVOKE ALL ON FUNCTION api.purge_sessions() FROM PUBLIC;


--
-- Name: FUNCTION rate_limit_state(p_key_prefix text); Type: ACL; Schema: api; Owner: booking_owner
--

REVOKE ALL ON FUNCTION api.rate_limit_state(p_key_prefix text) FROM PUBLIC;


--
-- Name: FUNCTION rate_limits(); Type: ACL; Schema: api; Owner: booking_owner
--

REVOKE ALL ON FUNCTION api.rate_limits() FROM PUBLIC;


--
-- Name: FUNCTION reconcile_payment(p_provider text, p_provider_txn_id text, p_transaction_id text, p_amount numeric, p_success boolean, p_raw jsonb); Type: ACL; Schema: api; Owner: booking_owner
--

REVOKE ALL ON FUNCTION api.reconcile_payment(p_provider text, p_provider_txn_id text, p_transaction_id text, p_amount numeric, p_success boolean, p_raw jsonb) FROM PUBLIC;
GRANT ALL ON FUNCTION api.reconcile_payment(p_provider text, p_provider_txn_id text, p_transaction_id text, p_amount numeric, p_success boolean, p_raw jsonb) TO booking_worker;


--
-- Name: FUNCTION record_confirmation_attempt(p_order_id uuid, p_error text); Type: ACL; Schema: api; Owner: booking_owner
--

REVOKE ALL ON FUNCTION api.record_confirmation_attempt(p_order_id uuid, p_error text) FROM PUBLIC;
GRANT ALL ON FUNCTION api.record_confirmation_attempt(p_order_id uuid, p_error text) TO booking_worker;


--
-- Name: FUNCTION record_confirmation_sent(p_order_id uuid, p_message_id text); Type: ACL; Schema: api; Owner: booking_owner
--

REVOKE ALL ON FUNCTION api.record_confirmation_sent(p_order_id uuid, p_message_id text) FROM PUBLIC;
GRANT ALL ON FUNCTION api.record_confirmation_sent(p_order_id uuid, p_message_id text) TO booking_worker;


--
-- Name: FUNCTION record_login_success(p_email text); Type: ACL; Schema: api; Owner: booking_owner
--

REVOKE ALL ON FUNCTION api.record_login_success(p_email text) FROM PUBLIC;
GRANT ALL ON FUNCTION api.record_login_success(p_email text) TO booking_gateway;


--
-- Name: FUNCTION record_refund(p_refund_id uuid, p_ok boolean, p_provider_ref text, p_error text, p_refused boolean); Type: ACL; Schema: api; Owner: booking_owner
--

REVOKE ALL ON FUNCTION api.record_refund(p_refund_id uuid, p_ok boolean, p_provider_ref text, p_error text, p_refused boolean) FROM PUBLIC;
GRANT ALL ON FUNCTION api.record_refund(p_refund_id uuid, p_ok boolean, p_provider_ref text, p_error text, p_refused boolean) TO booking_worker;


--
-- Name: FUNCTION record_refund_email_attempt(p_order_id uuid, p_error text); Type: ACL; Schema: api; Owner: booking_owner
--

REVOKE ALL ON FUNCTION api.record_refund_email_attempt(p_order_id uuid, p_error text) FROM PUBLIC;
GRANT ALL ON FUNCTION api.record_refund_email_attempt(p_order_id uuid, p_error text) TO booking_worker;


--
-- Name: FUNCTION record_refund_email_sent(p_order_id uuid, p_message_id text); Type: ACL; Schema: api; Owner: booking_owner
--

REVOKE ALL ON FUNCTION api.record_refund_email_sent(p_order_id uuid, p_message_id text) FROM PUBLIC;
GRANT ALL ON FUNCTION api.record_refund_email_sent(p_order_id uuid, p_message_id text) TO booking_worker;


--
-- Name: FUNCTION record_webhook_attempt(p_delivery_id uuid, p_outcome text, p_status_code integer, p_error text, p_duration_ms integer); Type: ACL; Schema: api; Owner: booking_owner
--

REVOKE ALL ON FUNCTION api.record_webhook_attempt(p_delivery_id uuid, p_outcome text, p_status_code integer, p_error text, p_duration_ms integer) FROM PUBLIC;
GRANT ALL ON FUNCTION api.record_webhook_attempt(p_delivery_id uuid, p_outcome text, p_status_code integer, p_error text, p_duration_ms integer) TO booking_worker;


--
-- Name: FUNCTION refresh_session(p_refresh_hash bytea, p_new_refresh_hash bytea, p_refresh_ttl_seconds integer, p_grace_seconds integer); Type: ACL; Schema: api; Owner: booking_owner
--

REVOKE ALL ON FUNCTION api.refresh_session(p_refresh_hash bytea, p_new_refresh_hash bytea, p_refresh_ttl_seconds integer, p_grace_seconds integer) FROM PUBLIC;
GRANT ALL ON FUNCTION api.refresh_session(p_refresh_hash bytea, p_new_refresh_hash bytea, p_refresh_ttl_seconds integer, p_grace_seconds integer) TO booking_gateway;


--
-- Name: FUNCTION refund_cancelled_event(p_event_id uuid, p_limit integer); Type: ACL; Schema: api; Owner: booking_owner
--

REVOKE ALL ON FUNCTION api.refund_cancelled_event(p_event_id uuid, p_limit integer) FROM PUBLIC;
GRANT ALL ON FUNCTION api.refund_cancelled_event(p_event_id uuid, p_limit integer) TO booking_worker;


--
-- Name: FUNCTION refund_email(p_order_id uuid); Type: ACL; Schema: api; Owner: booking_owner
--

REVOKE ALL ON FUNCTION api.refund_email(p_order_id uuid) FROM PUBLIC;
GRANT ALL ON FUNCTION api.refund_email(p_order_id uuid) TO booking_worker;


--
-- Name: FUNCTION refund_order(p_order_id uuid); Type: ACL; Schema: api; Owner: booking_owner
--

REVOKE ALL ON FUNCTION api.refund_order(p_order_id uuid) FROM PUBLIC;
GRANT ALL ON FUNCTION api.refund_order(p_order_id uuid) TO booking_gateway;


--
-- Name: FUNCTION refund_request(p_refund_id uuid); Type: ACL; Schema: api; Owner: booking_owner
--

REVOKE ALL ON FUNCTION api.refund_request(p_refund_id uuid) FROM PUBLIC;
GRANT ALL ON FUNCTION api.refund_request(p_refund_id uuid) TO booking_worker;


--
-- Name: FUNCTION register_user(p_email text, p_password_hash text, p_full_name text); Type: ACL; Schema: api; Owner: booking_owner
--

REVOKE ALL ON FUNCTION api.register_user(p_email text, p_password_hash text, p_full_name text) FROM PUBLIC;
GRANT ALL ON FUNCTION api.register_user(p_email text, p_password_hash text, p_full_name text) TO booking_gateway;


--
-- Name: FUNCTION resend_confirmation(p_order_id uuid); Type: ACL; Schema: api; Owner: booking_owner
--

REVOKE ALL ON FUNCTION api.resend_confirmation(p_order_id uuid) FROM PUBLIC;


--
-- Name: FUNCTION reserve_tickets(p_user_id uuid, p_ticket_type_id uuid, p_quantity integer, p_idempotency_key text, p_admission_token text); Type: ACL; Schema: api; Owner: booking_owner
--

REVOKE ALL ON FUNCTION api.reserve_tickets(p_user_id uuid, p_ticket_type_id uuid, p_quantity integer, p_idempotency_key text, p_admission_token text) FROM PUBLIC;
GRANT ALL ON FUNCTION api.reserve_tickets(p_user_id uuid, p_ticket_type_id uuid, p_quantity integer, p_idempotency_key text, p_admission_token text) TO booking_gateway;


--
-- Name: FUNCTION reserve_tickets_batch(p_requests api.reserve_request[], p_idempotency_keys text[], p_admission_tokens text[]); Type: ACL; Schema: api; Owner: booking_owner
--

REVOKE ALL ON FUNCTION api.reserve_tickets_batch(p_requests api.reserve_request[], p_idempotency_keys text[], p_admission_tokens text[]) FROM PUBLIC;
GRANT ALL ON FUNCTION api.reserve_tickets_batch(p_requests api.reserve_request[], p_idempotency_keys text[], p_admission_tokens text[]) TO booking_gateway;


--
-- Name: FUNCTION reserve_tickets_optimistic(p_user_id uuid, p_ticket_type_id uuid, p_quantity integer, p_idempotency_key text, p_admission_token text); Type: ACL; Schema: api; Owner: booking_owner
--

REVOKE ALL ON FUNCTION api.reserve_tickets_optimistic(p_user_id uuid, p_ticket_type_id uuid, p_quantity integer, p_idempotency_key text, p_admission_token text) FROM PUBLIC;
GRANT ALL ON FUNCTION api.reserve_tickets_optimistic(p_user_id uuid, p_ticket_type_id uuid, p_quantity integer, p_idempotency_key text, p_admission_token text) TO booking_gateway;


--
-- Name: FUNCTION resolve_payment_event(p_event_id bigint, p_note text); Type: ACL; Schema: api; Owner: booking_owner
--

REVOKE ALL ON FUNCTION api.resolve_payment_event(p_event_id bigint, p_note text) FROM PUBLIC;


--
-- Name: FUNCTION resume_waiting_room(p_event_id uuid); Type: ACL; Schema: api; Owner: booking_owner
--

REVOKE ALL ON FUNCTION api.resume_waiting_room(p_event_id uuid) FROM PUBLIC;


--
-- Name: FUNCTION retry_failed_jobs(p_task text); Type: ACL; Schema: api; Owner: booking_owner
--

REVOKE ALL ON FUNCTION api.retry_failed_jobs(p_task text) FROM PUBLIC;


--
-- Name: FUNCTION retry_job(p_job_id bigint); Type: ACL; Schema: api; Owner: booking_owner
--

REVOKE ALL ON FUNCTION api.retry_job(p_job_id bigint) FROM PUBLIC;


--
-- Name: FUNCTION revocation_state(); Type: ACL; Schema: api; Owner: booking_owner
--

REVOKE ALL ON FUNCTION api.revocation_state() FROM PUBLIC;
GRANT ALL ON FUNCTION api.revocation_state() TO booking_gateway;


--
-- Name: FUNCTION revoke_session(p_session_id uuid); Type: ACL; Schema: api; Owner: booking_owner
--

REVOKE ALL ON FUNCTION api.revoke_session(p_session_id uuid) FROM PUBLIC;


--
-- Name: FUNCTION revoke_user_sessions(p_email text); Type: ACL; Schema: api; Owner: booking_owner
--

REVOKE ALL ON FUNCTION api.revoke_user_sessions(p_email text) FROM PUBLIC;


--
-- Name: FUNCTION rotate_admission_secret(); Type: ACL; Schema: api; Owner: booking_owner
--

REVOKE ALL ON FUNCTION api.rotate_admission_secret() FROM PUBLIC;


--
-- Name: FUNCTION set_pay_url(p_transaction_id text, p_pay_url text); Type: ACL; Schema: api; Owner: booking_owner
--

REVOKE ALL ON FUNCTION api.set_pay_url(p_transaction_id text, p_pay_url text) FROM PUBLIC;
GRANT ALL ON FUNCTION api.set_pay_url(p_transaction_id text, p_pay_url text) TO booking_gateway;


--
-- Name: FUNCTION set_payment_mode(p_mode text, p_payment_window interval); Type: ACL; Schema: api; Owner: booking_owner
--

REVOKE ALL ON FUNCTION api.set_payment_mode(p_mode text, p_payment_window interval) FROM PUBLIC;


--
-- Name: FUNCTION set_rate_limit(p_class text, p_scope text, p_max_requests integer, p_period interval); Type: ACL; Schema: api; Owner: booking_owner
--

REVOKE ALL ON FUNCTION api.set_rate_limit(p_class text, p_scope text, p_max_requests integer, p_period interval) FROM PUBLIC;


--
-- Name: FUNCTION set_user_role(p_email text, p_role text); Type: ACL; Schema: api; Owner: booking_owner
--

REVOKE ALL ON FUNCTION api.set_user_role(p_email text, p_role text) FROM PUBLIC;


--
-- Name: FUNCTION set_waiting_room_rate(p_event_id uuid, p_rate integer); Type: ACL; Schema: api; Owner: booking_owner
--

REVOKE ALL ON FUNCTION api.set_waiting_room_rate(p_event_id uuid, p_rate integer) FROM PUBLIC;


--
-- Name: FUNCTION stuck_refunds(p_older_than interval); Type: ACL; Schema: api; Owner: booking_owner
--

REVOKE ALL ON FUNCTION api.stuck_refunds(p_older_than interval) FROM PUBLIC;


--
-- Name: FUNCTION unresolved_payments(); Type: ACL; Schema: api; Owner: booking_owner
--

REVOKE ALL ON FUNCTION api.unresolved_payments() FROM PUBLIC;


--
-- Name: FUNCTION update_event(p_event_id uuid, p_changes jsonb); Type: ACL; Schema: api; Owner: booking_owner
--

REVOKE ALL ON FUNCTION api.update_event(p_event_id uuid, p_changes jsonb) FROM PUBLIC;
GRANT ALL ON FUNCTION api.update_event(p_event_id uuid, p_changes jsonb) TO booking_gateway;


--
-- Name: FUNCTION update_ticket_type(p_ticket_type_id uuid, p_changes jsonb); Type: ACL; Schema: api; Owner: booking_owner
--

REVOKE ALL ON FUNCTION api.update_ticket_type(p_ticket_type_id uuid, p_changes jsonb) FROM PUBLIC;
GRANT ALL ON FUNCTION api.update_ticket_type(p_ticket_type_id uuid, p_changes jsonb) TO booking_gateway;


--
-- Name: FUNCTION user_sessions(p_email text); Type: ACL; Schema: api; Owner: booking_owner
--

REVOKE ALL ON FUNCTION api.user_sessions(p_email text) FROM PUBLIC;


--
-- Name: FUNCTION waiting_room(p_event_id uuid); Type: ACL; Schema: api; Owner: booking_owner
--

REVOKE ALL ON FUNCTION api.waiting_room(p_event_id uuid) FROM PUBLIC;


--
-- Name: FUNCTION waiting_room_audit(p_event_id uuid); Type: ACL; Schema: api; Owner: booking_owner
--

REVOKE ALL ON FUNCTION api.waiting_room_audit(p_event_id uuid) FROM PUBLIC;


--
-- Name: FUNCTION waiting_room_positions(p_event_id uuid, p_user_ids uuid[]); Type: ACL; Schema: api; Owner: booking_owner
--

REVOKE ALL ON FUNCTION api.waiting_room_positions(p_event_id uuid, p_user_ids uuid[]) FROM PUBLIC;
GRANT ALL ON FUNCTION api.waiting_room_positions(p_event_id uuid, p_user_ids uuid[]) TO booking_gateway;


--
-- Name: FUNCTION waiting_room_state(); Type: ACL; Schema: api; Owner: booking_owner
--

REVOKE ALL ON FUNCTION api.waiting_room_state() FROM PUBLIC;
GRANT ALL ON FUNCTION api.waiting_room_state() TO booking_gateway;


--
-- Name: FUNCTION waiting_room_status(p_event_id uuid, p_user_id uuid); Type: ACL; Schema: api; Owner: booking_owner
--

REVOKE ALL ON FUNCTION api.waiting_room_status(p_event_id uuid, p_user_id uuid) FROM PUBLIC;
GRANT ALL ON FUNCTION api.waiting_room_status(p_event_id uuid, p_user_id uuid) TO booking_gateway;


--
-- Name: FUNCTION webhook_attempts(p_user_id uuid, p_webhook_id uuid, p_limit integer); Type: ACL; Schema: api; Owner: booking_owner
--

REVOKE ALL ON FUNCTION api.webhook_attempts(p_user_id uuid, p_webhook_id uuid, p_limit integer) FROM PUBLIC;
GRANT ALL ON FUNCTION api.webhook_attempts(p_user_id uuid, p_webhook_id uuid, p_limit integer) TO booking_gateway;


--
-- Name: FUNCTION webhook_delivery(p_delivery_id uuid); Type: ACL; Schema: api; Owner: booking_owner
--

REVOKE ALL ON FUNCTION api.webhook_delivery(p_delivery_id uuid) FROM PUBLIC;
GRANT ALL ON FUNCTION api.webhook_delivery(p_delivery_id uuid) TO booking_worker;


--
-- Name: FUNCTION admission_token(p_event_id uuid, p_user_id uuid, p_expires bigint, p_secret bytea); Type: ACL; Schema: internal; Owner: booking_owner
--

REVOKE ALL ON FUNCTION internal.admission_token(p_event_id uuid, p_user_id uuid, p_expires bigint, p_secret bytea) FROM PUBLIC;


--
-- Name: FUNCTION admission_ttl(); Type: ACL; Schema: internal; Owner: booking_owner
--

REVOKE ALL ON FUNCTION internal.admission_ttl() FROM PUBLIC;


--
-- Name: FUNCTION admission_valid(p_token text, p_event_id uuid, p_user_id uuid, p_secret bytea); Type: ACL; Schema: internal; Owner: booking_owner
--

REVOKE ALL ON FUNCTION internal.admission_valid(p_token text, p_event_id uuid, p_user_id uuid, p_secret bytea) FROM PUBLIC;


--
-- Name: FUNCTION apply_payment_event(p_provider text, p_provider_txn_id text, p_transaction_id text, p_amount numeric, p_success boolean, p_raw jsonb); Type: ACL; Schema: internal; Owner: booking_owner
--

REVOKE ALL ON FUNCTION internal.apply_payment_event(p_provider text, p_provider_txn_id text, p_transaction_id text, p_amount numeric, p_success boolean, p_raw jsonb) FROM PUBLIC;


--
-- Name: FUNCTION buyer_lock_key(p_event_id uuid, p_user_id uuid); Type: ACL; Schema: internal; Owner: booking_owner
--

REVOKE ALL ON FUNCTION internal.buyer_lock_key(p_event_id uuid, p_user_id uuid) FROM PUBLIC;


--
-- Name: FUNCTION cancel_event_orders(p_event_id uuid, p_limit integer); Type: ACL; Schema: internal; Owner: booking_owner
--

REVOKE ALL ON FUNCTION internal.cancel_event_orders(p_event_id uuid, p_limit integer) FROM PUBLIC;


--
-- Name: FUNCTION cap_change(p_changes jsonb, p_name text, p_current integer); Type: ACL; Schema: internal; Owner: booking_owner
--

REVOKE ALL ON FUNCTION internal.cap_change(p_changes jsonb, p_name text, p_current integer) FROM PUBLIC;


--
-- Name: FUNCTION check_cap(p_name text, p_cap integer); Type: ACL; Schema: internal; Owner: booking_owner
--

REVOKE ALL ON FUNCTION internal.check_cap(p_name text, p_cap integer) FROM PUBLIC;


--
-- Name: FUNCTION check_change_keys(p_changes jsonb, p_allowed text[]); Type: ACL; Schema: internal; Owner: booking_owner
--

REVOKE ALL ON FUNCTION internal.check_change_keys(p_changes jsonb, p_allowed text[]) FROM PUBLIC;


--
-- Name: FUNCTION check_event(p_slug text, p_name text, p_location text, p_banner_url text, p_start_time timestamp with time zone, p_end_time timestamp with time zone); Type: ACL; Schema: internal; Owner: booking_owner
--

REVOKE ALL ON FUNCTION internal.check_event(p_slug text, p_name text, p_location text, p_banner_url text, p_start_time timestamp with time zone, p_end_time timestamp with time zone) FROM PUBLIC;


--
-- Name: FUNCTION check_idempotency_key(p_key text); Type: ACL; Schema: internal; Owner: booking_owner
--

REVOKE ALL ON FUNCTION internal.check_idempotency_key(p_key text) FROM PUBLIC;


--
-- Name: FUNCTION check_page(p_limit integer, p_after_key_given boolean, p_after_id_given boolean, p_after_key_name text); Type: ACL; Schema: internal; Owner: booking_owner
--

REVOKE ALL ON FUNCTION internal.check_page(p_limit integer, p_after_key_given boolean, p_after_id_given boolean, p_after_key_name text) FROM PUBLIC;


--
-- Name: FUNCTION check_refresh_args(p_hash bytea, p_ttl_seconds integer); Type: ACL; Schema: internal; Owner: booking_owner
--

REVOKE ALL ON FUNCTION internal.check_refresh_args(p_hash bytea, p_ttl_seconds integer) FROM PUBLIC;


--
-- Name: FUNCTION check_ticket_type(p_name text, p_price numeric, p_initial_quantity integer, p_start_sale_time timestamp with time zone, p_end_sale_time timestamp with time zone); Type: ACL; Schema: internal; Owner: booking_owner
--

REVOKE ALL ON FUNCTION internal.check_ticket_type(p_name text, p_price numeric, p_initial_quantity integer, p_start_sale_time timestamp with time zone, p_end_sale_time timestamp with time zone) FROM PUBLIC;


--
-- Name: FUNCTION check_waiting_room(p_queue_enabled boolean, p_rate integer); Type: ACL; Schema: internal; Owner: booking_owner
--

REVOKE ALL ON FUNCTION internal.check_waiting_room(p_queue_enabled boolean, p_rate integer) FROM PUBLIC;


--
-- Name: FUNCTION claim_idempotency_key(p_user_id uuid, p_key text, p_fingerprint text); Type: ACL; Schema: internal; Owner: booking_owner
--

REVOKE ALL ON FUNCTION internal.claim_idempotency_key(p_user_id uuid, p_key text, p_fingerprint text) FROM PUBLIC;


--
-- Name: FUNCTION defer_job(p_task text, p_queue text, p_priority integer, p_args jsonb, p_lock text); Type: ACL; Schema: internal; Owner: booking_owner
--

REVOKE ALL ON FUNCTION internal.defer_job(p_task text, p_queue text, p_priority integer, p_args jsonb, p_lock text) FROM PUBLIC;


--
-- Name: FUNCTION event_json(e public.events, p_live boolean); Type: ACL; Schema: internal; Owner: booking_owner
--

REVOKE ALL ON FUNCTION internal.event_json(e public.events, p_live boolean) FROM PUBLIC;


--
-- Name: FUNCTION hold_period(); Type: ACL; Schema: internal; Owner: booking_owner
--

REVOKE ALL ON FUNCTION internal.hold_period() FROM PUBLIC;


--
-- Name: FUNCTION idempotency_ttl(); Type: ACL; Schema: internal; Owner: booking_owner
--

REVOKE ALL ON FUNCTION internal.idempotency_ttl() FROM PUBLIC;


--
-- Name: FUNCTION issue_order(p_order_id uuid, p_provider_txn_id text); Type: ACL; Schema: internal; Owner: booking_owner
--

REVOKE ALL ON FUNCTION internal.issue_order(p_order_id uuid, p_provider_txn_id text) FROM PUBLIC;


--
-- Name: FUNCTION lock_order_buyer(p_order_id uuid); Type: ACL; Schema: internal; Owner: booking_owner
--

REVOKE ALL ON FUNCTION internal.lock_order_buyer(p_order_id uuid) FROM PUBLIC;


--
-- Name: FUNCTION lock_order_types(p_order_id uuid); Type: ACL; Schema: internal; Owner: booking_owner
--

REVOKE ALL ON FUNCTION internal.lock_order_types(p_order_id uuid) FROM PUBLIC;


--
-- Name: FUNCTION login_attempt(p_email text); Type: ACL; Schema: internal; Owner: booking_owner
--

REVOKE ALL ON FUNCTION internal.login_attempt(p_email text) FROM PUBLIC;


--
-- Name: FUNCTION new_ticket_code(); Type: ACL; Schema: internal; Owner: booking_owner
--

REVOKE ALL ON FUNCTION internal.new_ticket_code() FROM PUBLIC;


--
-- Name: FUNCTION new_transaction_id(p_method text); Type: ACL; Schema: internal; Owner: booking_owner
--

REVOKE ALL ON FUNCTION internal.new_transaction_id(p_method text) FROM PUBLIC;


--
-- Name: FUNCTION notify_webhooks(p_type text, p_event_id uuid, p_data jsonb); Type: ACL; Schema: internal; Owner: booking_owner
--

REVOKE ALL ON FUNCTION internal.notify_webhooks(p_type text, p_event_id uuid, p_data jsonb) FROM PUBLIC;


--
-- Name: FUNCTION order_json(o public.orders); Type: ACL; Schema: internal; Owner: booking_owner
--

REVOKE ALL ON FUNCTION internal.order_json(o public.orders) FROM PUBLIC;


--
-- Name: FUNCTION order_over_cap(p_order_id uuid); Type: ACL; Schema: internal; Owner: booking_owner
--

REVOKE ALL ON FUNCTION internal.order_over_cap(p_order_id uuid) FROM PUBLIC;


--
-- Name: FUNCTION order_paid(p_order_id uuid); Type: ACL; Schema: internal; Owner: booking_owner
--

REVOKE ALL ON FUNCTION internal.order_paid(p_order_id uuid) FROM PUBLIC;


--
-- Name: FUNCTION payment_mode(); Type: ACL; Schema: internal; Owner: booking_owner
--

REVOKE ALL ON FUNCTION internal.payment_mode() FROM PUBLIC;


--
-- Name: FUNCTION reclaim_expired_holds(p_ticket_type_id uuid); Type: ACL; Schema: internal; Owner: booking_owner
--

REVOKE ALL ON FUNCTION internal.reclaim_expired_holds(p_ticket_type_id uuid) FROM PUBLIC;


--
-- Name: FUNCTION record_email_attempt(p_order_id uuid, p_kind text, p_error text); Type: ACL; Schema: internal; Owner: booking_owner
--

REVOKE ALL ON FUNCTION internal.record_email_attempt(p_order_id uuid, p_kind text, p_error text) FROM PUBLIC;


--
-- Name: FUNCTION record_email_sent(p_order_id uuid, p_kind text, p_message_id text); Type: ACL; Schema: internal; Owner: booking_owner
--

REVOKE ALL ON FUNCTION internal.record_email_sent(p_order_id uuid, p_kind text, p_message_id text) FROM PUBLIC;


--
-- Name: FUNCTION refund_paid_order(p_order_id uuid, p_reason text); Type: ACL; Schema: internal; Owner: booking_owner
--

REVOKE ALL ON FUNCTION internal.refund_paid_order(p_order_id uuid, p_reason text) FROM PUBLIC;


--
-- Name: FUNCTION release_order_seats(p_order_id uuid); Type: ACL; Schema: internal; Owner: booking_owner
--

REVOKE ALL ON FUNCTION internal.release_order_seats(p_order_id uuid) FROM PUBLIC;


--
-- Name: FUNCTION reservation_json(r public.order_reservations); Type: ACL; Schema: internal; Owner: booking_owner
--

REVOKE ALL ON FUNCTION internal.reservation_json(r public.order_reservations) FROM PUBLIC;


--
-- Name: FUNCTION reserve(p_ticket_type_id uuid, p_users uuid[], p_quantities integer[], p_expected_version integer, p_raise boolean, p_admission_tokens text[], OUT reservations json[], OUT sqlstates text[], OUT messages text[]); Type: ACL; Schema: internal; Owner: booking_owner
--

REVOKE ALL ON FUNCTION internal.reserve(p_ticket_type_id uuid, p_users uuid[], p_quantities integer[], p_expected_version integer, p_raise boolean, p_admission_tokens text[], OUT reservations json[], OUT sqlstates text[], OUT messages text[]) FROM PUBLIC;


--
-- Name: FUNCTION reserve_fingerprint(p_ticket_type_id uuid, p_quantity integer); Type: ACL; Schema: internal; Owner: booking_owner
--

REVOKE ALL ON FUNCTION internal.reserve_fingerprint(p_ticket_type_id uuid, p_quantity integer) FROM PUBLIC;


--
-- Name: FUNCTION revoke_sessions(p_session_ids uuid[], p_reason text, p_deny boolean); Type: ACL; Schema: internal; Owner: booking_owner
--

REVOKE ALL ON FUNCTION internal.revoke_sessions(p_session_ids uuid[], p_reason text, p_deny boolean) FROM PUBLIC;


--
-- Name: FUNCTION sale_problem(p_event_status text, p_event_end timestamp with time zone, p_sale_start timestamp with time zone, p_sale_end timestamp with time zone); Type: ACL; Schema: internal; Owner: booking_owner
--

REVOKE ALL ON FUNCTION internal.sale_problem(p_event_status text, p_event_end timestamp with time zone, p_sale_start timestamp with time zone, p_sale_end timestamp with time zone) FROM PUBLIC;


--
-- Name: FUNCTION set_event_status(p_event_id uuid, p_to text, p_from text[]); Type: ACL; Schema: internal; Owner: booking_owner
--

REVOKE ALL ON FUNCTION internal.set_event_status(p_event_id uuid, p_to text, p_from text[]) FROM PUBLIC;


--
-- Name: FUNCTION shuffle_key(p_seed text, p_user_id uuid); Type: ACL; Schema: internal; Owner: booking_owner
--

REVOKE ALL ON FUNCTION internal.shuffle_key(p_seed text, p_user_id uuid) FROM PUBLIC;


--
-- Name: FUNCTION start_refund(p_order_id uuid, p_reason text, p_amount numeric, p_provider_txn_id text, p_event_id bigint); Type: ACL; Schema: internal; Owner: booking_owner
--

REVOKE ALL ON FUNCTION internal.start_refund(p_order_id uuid, p_reason text, p_amount numeric, p_provider_txn_id text, p_event_id bigint) FROM PUBLIC;


--
-- Name: FUNCTION store_idempotent_response(p_user_id uuid, p_key text, p_response json); Type: ACL; Schema: internal; Owner: booking_owner
--

REVOKE ALL ON FUNCTION internal.store_idempotent_response(p_user_id uuid, p_key text, p_response json) FROM PUBLIC;


--
-- Name: FUNCTION take_order_seats(p_order_id uuid); Type: ACL; Schema: internal; Owner: booking_owner
--

REVOKE ALL ON FUNCTION internal.take_order_seats(p_order_id uuid) FROM PUBLIC;


--
-- Name: FUNCTION ticket_type_json(tt public.ticket_types, e public.events, p_live boolean); Type: ACL; Schema: internal; Owner: booking_owner
--

REVOKE ALL ON FUNCTION internal.ticket_type_json(tt public.ticket_types, e public.events, p_live boolean) FROM PUBLIC;


--
-- Name: FUNCTION user_json(u public.users); Type: ACL; Schema: internal; Owner: booking_owner
--

REVOKE ALL ON FUNCTION internal.user_json(u public.users) FROM PUBLIC;


--
-- Name: FUNCTION waiting_room_answer(e public.events, w public.waiting_rooms, p_user_id uuid); Type: ACL; Schema: internal; Owner: booking_owner
--

REVOKE ALL ON FUNCTION internal.waiting_room_answer(e public.events, w public.waiting_rooms, p_user_id uuid) FROM PUBLIC;


--
-- Name: FUNCTION waiting_room_event(p_event_id uuid); Type: ACL; Schema: internal; Owner: booking_owner
--

REVOKE ALL ON FUNCTION internal.waiting_room_event(p_event_id uuid) FROM PUBLIC;


--
-- Name: FUNCTION waiting_room_mirror(w public.waiting_rooms, e public.events); Type: ACL; Schema: internal; Owner: booking_owner
--

REVOKE ALL ON FUNCTION internal.waiting_room_mirror(w public.waiting_rooms, e public.events) FROM PUBLIC;


--
-- Name: FUNCTION waiting_room_notify(p_event_id uuid, p_only_before_opening boolean); Type: ACL; Schema: internal; Owner: booking_owner
--

REVOKE ALL ON FUNCTION internal.waiting_room_notify(p_event_id uuid, p_only_before_opening boolean) FROM PUBLIC;


--
-- Name: FUNCTION waiting_room_open(p_event_id uuid, p_wait boolean); Type: ACL; Schema: internal; Owner: booking_owner
--

REVOKE ALL ON FUNCTION internal.waiting_room_open(p_event_id uuid, p_wait boolean) FROM PUBLIC;


--
-- Name: FUNCTION waiting_room_opens_at(p_event_id uuid); Type: ACL; Schema: internal; Owner: booking_owner
--

REVOKE ALL ON FUNCTION internal.waiting_room_opens_at(p_event_id uuid) FROM PUBLIC;


--
-- Name: FUNCTION waiting_room_rebase(p_event_id uuid, p_rate integer, p_enabled boolean); Type: ACL; Schema: internal; Owner: booking_owner
--

REVOKE ALL ON FUNCTION internal.waiting_room_rebase(p_event_id uuid, p_rate integer, p_enabled boolean) FROM PUBLIC;


--
-- Name: FUNCTION waiting_room_row(p_event_id uuid); Type: ACL; Schema: internal; Owner: booking_owner
--

REVOKE ALL ON FUNCTION internal.waiting_room_row(p_event_id uuid) FROM PUBLIC;


--
-- Name: FUNCTION waiting_room_serving(w public.waiting_rooms, p_rate integer, p_enabled boolean); Type: ACL; Schema: internal; Owner: booking_owner
--

REVOKE ALL ON FUNCTION internal.waiting_room_serving(w public.waiting_rooms, p_rate integer, p_enabled boolean) FROM PUBLIC;


--
-- Name: FUNCTION check_max_per_user(); Type: ACL; Schema: public; Owner: booking_owner
--

REVOKE ALL ON FUNCTION public.check_max_per_user() FROM PUBLIC;


--
-- Name: FUNCTION check_sale_times_rfc3339(); Type: ACL; Schema: public; Owner: booking_owner
--

REVOKE ALL ON FUNCTION public.check_sale_times_rfc3339() FROM PUBLIC;


--
-- Name: FUNCTION notify_catalog_change(); Type: ACL; Schema: public; Owner: booking_owner
--

REVOKE ALL ON FUNCTION public.notify_catalog_change() FROM PUBLIC;


--
-- Name: FUNCTION procrastinate_cancel_job_v1(job_id bigint, abort boolean, delete_job boolean); Type: ACL; Schema: public; Owner: booking_owner
--

REVOKE ALL ON FUNCTION public.procrastinate_cancel_job_v1(job_id bigint, abort boolean, delete_job boolean) FROM PUBLIC;
GRANT ALL ON FUNCTION public.procrastinate_cancel_job_v1(job_id bigint, abort boolean, delete_job boolean) TO booking_worker;


--
-- Name: FUNCTION procrastinate_defer_jobs_v1(jobs public.procrastinate_job_to_defer_v1[]); Type: ACL; Schema: public; Owner: booking_owner
--

REVOKE ALL ON FUNCTION public.procrastinate_defer_jobs_v1(jobs public.procrastinate_job_to_defer_v1[]) FROM PUBLIC;
GRANT ALL ON FUNCTION public.procrastinate_defer_jobs_v1(jobs public.procrastinate_job_to_defer_v1[]) TO booking_worker;


--
-- Name: FUNCTION procrastinate_defer_periodic_job_v2(_queue_name character varying, _lock character varying, _queueing_lock character varying, _task_name character varying, _priority integer, _periodic_id character varying, _defer_timestamp bigint, _args jsonb); Type: ACL; Schema: public; Owner: booking_owner
--

REVOKE ALL ON FUNCTION public.procrastinate_defer_periodic_job_v2(_queue_name character varying, _lock character varying, _queueing_lock character varying, _task_name character varying, _priority integer, _periodic_id character varying, _defer_timestamp bigint, _args jsonb) FROM PUBLIC;
GRANT ALL ON FUNCTION public.procrastinate_defer_periodic_job_v2(_queue_name character varying, _lock character varying, _queueing_lock character varying, _task_name character varying, _priority integer, _periodic_id character varying, _defer_timestamp bigint, _args jsonb) TO booking_worker;


--
-- Name: TABLE procrastinate_jobs; Type: ACL; Schema: public; Owner: booking_owner
--

GRANT SELECT,INSERT,DELETE,UPDATE ON TABLE public.procrastinate_jobs TO booking_worker;


--
-- Name: FUNCTION procrastinate_fetch_job_v2(target_queue_names character varying[], p_worker_id bigint); Type: ACL; Schema: public; Owner: booking_owner
--

REVOKE ALL ON FUNCTION public.procrastinate_fetch_job_v2(target_queue_names character varying[], p_worker_id bigint) FROM PUBLIC;
GRANT ALL ON FUNCTION public.procrastinate_fetch_job_v2(target_queue_names character varying[], p_worker_id bigint) TO booking_worker;


--
-- Name: FUNCTION procrastinate_finish_job_v1(job_id bigint, end_status public.procrastinate_job_status, delete_job boolean); Type: ACL; Schema: public; Owner: booking_owner
--

REVOKE ALL ON FUNCTION public.procrastinate_finish_job_v1(job_id bigint, end_status public.procrastinate_job_status, delete_job boolean) FROM PUBLIC;
GRANT ALL ON FUNCTION public.procrastinate_finish_job_v1(job_id bigint, end_status public.procrastinate_job_status, delete_job boolean) TO booking_worker;


--
-- Name: FUNCTION procrastinate_notify_queue_abort_job_v1(); Type: ACL; Schema: public; Owner: booking_owner
--

REVOKE ALL ON FUNCTION public.procrastinate_notify_queue_abort_job_v1() FROM PUBLIC;
GRANT ALL ON FUNCTION public.procrastinate_notify_queue_abort_job_v1() TO booking_worker;


--
-- Name: FUNCTION procrastinate_notify_queue_job_inserted_v1(); Type: ACL; Schema: public; Owner: booking_owner
--

REVOKE ALL ON FUNCTION public.procrastinate_notify_queue_job_inserted_v1() FROM PUBLIC;
GRANT ALL ON FUNCTION public.procrastinate_notify_queue_job_inserted_v1() TO booking_worker;


--
-- Name: FUNCTION procrastinate_prune_stalled_workers_v1(seconds_since_heartbeat double precision); Type: ACL; Schema: public; Owner: booking_owner
--

REVOKE ALL ON FUNCTION public.procrastinate_prune_stalled_workers_v1(seconds_since_heartbeat double precision) FROM PUBLIC;
GRANT ALL ON FUNCTION public.procrastinate_prune_stalled_workers_v1(seconds_since_heartbeat double precision) TO booking_worker;


--
-- Name: FUNCTION procrastinate_register_worker_v1(); Type: ACL; Schema: public; Owner: booking_owner
--

REVOKE ALL ON FUNCTION public.procrastinate_register_worker_v1() FROM PUBLIC;
GRANT ALL ON FUNCTION public.procrastinate_register_worker_v1() TO booking_worker;


--
-- Name: FUNCTION procrastinate_retry_job_v1(job_id bigint, retry_at timestamp with time zone, new_priority integer, new_queue_name character varying, new_lock character varying); Type: ACL; Schema: public; Owner: booking_owner
--

REVOKE ALL ON FUNCTION public.procrastinate_retry_job_v1(job_id bigint, retry_at timestamp with time zone, new_priority integer, new_queue_name character varying, new_lock character varying) FROM PUBLIC;
GRANT ALL ON FUNCTION public.procrastinate_retry_job_v1(job_id bigint, retry_at timestamp with time zone, new_priority integer, new_queue_name character varying, new_lock character varying) TO booking_worker;


--
-- Name: FUNCTION procrastinate_retry_job_v2(job_id bigint, retry_at timestamp with time zone, new_priority integer, new_queue_name character varying, new_lock character varying); Type: ACL; Schema: public; Owner: booking_owner
--

REVOKE ALL ON FUNCTION public.procrastinate_retry_job_v2(job_id bigint, retry_at timestamp with time zone, new_priority integer, new_queue_name character varying, new_lock character varying) FROM PUBLIC;
GRANT ALL ON FUNCTION public.procrastinate_retry_job_v2(job_id bigint, retry_at timestamp with time zone, new_priority integer, new_queue_name character varying, new_lock character varying) TO booking_worker;


--
-- Name: FUNCTION procrastinate_trigger_abort_requested_events_procedure_v1(); Type: ACL; Schema: public; Owner: booking_owner
--

REVOKE ALL ON FUNCTION public.procrastinate_trigger_abort_requested_events_procedure_v1() FROM PUBLIC;
GRANT ALL ON FUNCTION public.procrastinate_trigger_abort_requested_events_procedure_v1() TO booking_worker;


--
-- Name: FUNCTION procrastinate_trigger_function_scheduled_events_v1(); Type: ACL; Schema: public; Owner: booking_owner
--

REVOKE ALL ON FUNCTION public.procrastinate_trigger_function_scheduled_events_v1() FROM PUBLIC;
GRANT ALL ON FUNCTION public.procrastinate_trigger_function_scheduled_events_v1() TO booking_worker;


--
-- Name: FUNCTION procrastinate_trigger_function_status_events_insert_v1(); Type: ACL; Schema: public; Owner: booking_owner
--

REVOKE ALL ON FUNCTION public.procrastinate_trigger_function_status_events_insert_v1() FROM PUBLIC;
GRANT ALL ON FUNCTION public.procrastinate_trigger_function_status_events_insert_v1() TO booking_worker;


--
-- Name: FUNCTION procrastinate_trigger_function_status_events_update_v1(); Type: ACL; Schema: public; Owner: booking_owner
--

REVOKE ALL ON FUNCTION public.procrastinate_trigger_function_status_events_update_v1() FROM PUBLIC;
GRANT ALL ON FUNCTION public.procrastinate_trigger_function_status_events_update_v1() TO booking_worker;


--
-- Name: FUNCTION procrastinate_unlink_periodic_defers_v1(); Type: ACL; Schema: public; Owner: booking_owner
--

REVOKE ALL ON FUNCTION public.procrastinate_unlink_periodic_defers_v1() FROM PUBLIC;
GRANT ALL ON FUNCTION public.procrastinate_unlink_periodic_defers_v1() TO booking_worker;


--
-- Name: FUNCTION procrastinate_unregister_worker_v1(worker_id bigint); Type: ACL; Schema: public; Owner: booking_owner
--

REVOKE ALL ON FUNCTION public.procrastinate_unregister_worker_v1(worker_id bigint) FROM PUBLIC;
GRANT ALL ON FUNCTION public.procrastinate_unregister_worker_v1(worker_id bigint) TO booking_worker;


--
-- Name: FUNCTION procrastinate_update_heartbeat_v1(worker_id bigint); Type: ACL; Schema: public; Owner: booking_owner
--

REVOKE ALL ON FUNCTION public.procrastinate_update_heartbeat_v1(worker_id bigint) FROM PUBLIC;
GRANT ALL ON FUNCTION public.procrastinate_update_heartbeat_v1(worker_id bigint) TO booking_worker;


--
-- Name: FUNCTION revoke_deleted_user_sessions(); Type: ACL; Schema: public; Owner: booking_owner
--

REVOKE ALL ON FUNCTION public.revoke_deleted_user_sessions() FROM PUBLIC;


--
-- Name: FUNCTION update_updated_at_column(); Type: ACL; Schema: public; Owner: booking_owner
--

REVOKE ALL ON FUNCTION public.update_updated_at_column() FROM PUBLIC;


--
-- Name: FUNCTION waiting_room_changed(); Type: ACL; Schema: public; Owner: booking_owner
--

REVOKE ALL ON FUNCTION public.waiting_room_changed() FROM PUBLIC;


--
-- Name: FUNCTION waiting_room_event_status_changed(); Type: ACL; Schema: public; Owner: booking_owner
--

REVOKE ALL ON FUNCTION public.waiting_room_event_status_changed() FROM PUBLIC;


--
-- Name: FUNCTION waiting_room_opening_changed(); Type: ACL; Schema: public; Owner: booking_owner
--

REVOKE ALL ON FUNCTION public.waiting_room_opening_changed() FROM PUBLIC;


--
-- Name: FUNCTION waiting_room_rate_changed(); Type: ACL; Schema: public; Owner: booking_owner
--

REVOKE ALL ON FUNCTION public.waiting_room_rate_changed() FROM PUBLIC;


--
-- Name: FUNCTION waiting_rooms_truncated(); Type: ACL; Schema: public; Owner: booking_owner
--

REVOKE ALL ON FUNCTION public.waiting_rooms_truncated() FROM PUBLIC;


--
-- Name: TABLE procrastinate_events; Type: ACL; Schema: public; Owner: booking_owner
--

GRANT SELECT,INSERT,DELETE,UPDATE ON TABLE public.procrastinate_events TO booking_worker;


--
-- Name: SEQUENCE procrastinate_events_id_seq; Type: ACL; Schema: public; Owner: booking_owner
--

GRANT SELECT,USAGE ON SEQUENCE public.procrastinate_events_id_seq TO booking_worker;


--
-- Name: SEQUENCE procrastinate_jobs_id_seq; Type: ACL; Schema: public; Owner: booking_owner
--

GRANT SELECT,USAGE ON SEQUENCE public.procrastinate_jobs_id_seq TO booking_worker;


--
-- Name: TABLE procrastinate_periodic_defers; Type: ACL; Schema: public; Owner: booking_owner
--

GRANT SELECT,INSERT,DELETE,UPDATE ON TABLE public.procrastinate_periodic_defers TO booking_worker;


--
-- Name: SEQUENCE procrastinate_periodic_defers_id_seq; Type: ACL; Schema: public; Owner: booking_owner
--

GRANT SELECT,USAGE ON SEQUENCE public.procrastinate_periodic_defers_id_seq TO booking_worker;


--
-- Name: TABLE procrastinate_workers; Type: ACL; Schema: public; Owner: booking_owner
--

GRANT SELECT,INSERT,DELETE,UPDATE ON TABLE public.procrastinate_workers TO booking_worker;


--
-- Name: SEQUENCE procrastinate_workers_id_seq; Type: ACL; Schema: public; Owner: booking_owner
--

GRANT SELECT,USAGE ON SEQUENCE public.procrastinate_workers_id_seq TO booking_worker;


--
-- Name: DEFAULT PRIVILEGES FOR FUNCTIONS; Type: DEFAULT ACL; Schema: -; Owner: booking_owner
--

ALTER DEFAULT PRIVILEGES FOR ROLE booking_owner REVOKE ALL ON FUNCTIONS  FROM PUBLIC;


--
-- PostgreSQL database dump complete
--



