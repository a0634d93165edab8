-- Provider payments (issue 12): checkout into a PENDING order, provider events applied from the
-- inbox, expiry of unpaid orders, buyer cancel, refunds, the payment mode, the DBAs' views.
--
-- Lock order (every function here, and the same as the rest of the project): the inbox key (the
-- unique insert into payment_events) -> ticket_types rows (ids ascending, FOR NO KEY UPDATE) ->
-- (event, buyer) advisory locks (a success for an event with a per-buyer cap, as reserve) ->
-- order_reservations row -> orders row (FOR NO KEY UPDATE) -> payments row -> tickets rows ->
-- payment_refunds rows. Orders are locked FOR NO KEY UPDATE, never FOR UPDATE: the inbox insert
-- (its foreign key) takes FOR KEY SHARE on the order before the ticket types, and FOR UPDATE
-- would wait for that while its holder waits for our ticket type lock (a deadlock, found by
-- tests/test_payments_sql.py: a callback and the buyer's cancel at once). A function that starts from an order reads the order's ticket types
-- WITHOUT a lock first (order_items never change), locks them, then locks the order and checks
-- its status again. The expiry skips locked rows (SKIP LOCKED) and so never waits. An event's
-- cancellation batch (api.refund_cancelled_event) locks the event's types, then orders with SKIP
-- LOCKED. A wrong-amount refund locks no type (its refund row takes the order's key share, as
-- the inbox insert does). Callbacks lock the types even for PENDING -> PAID (no stock change):
-- the status is known only under the order's lock, and a type locked after the order would
-- invert this order (deadlock with api.cancel_order). No lock is
-- held across a network call: the worker reads (api.refund_request), calls the provider with no
-- transaction open, and records (api.record_refund).

-- Internal helpers (no SET clause, everything schema-qualified: see 00_internal.sql).

CREATE OR REPLACE FUNCTION internal.payment_mode()
RETURNS text
LANGUAGE plpgsql STABLE
AS $$
BEGIN
  RETURN (SELECT coalesce((SELECT s.mode FROM public.payment_settings s), 'instant'));
END;
$$;
COMMENT ON FUNCTION internal.payment_mode() IS 'The payment mode: instant or provider.';


CREATE OR REPLACE FUNCTION internal.new_transaction_id(p_method text)
RETURNS text
LANGUAGE sql VOLATILE
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
COMMENT ON FUNCTION internal.new_transaction_id(text) IS
  'A fresh payment reference in the provider''s form: MOMO BK<24 hex>, ZALOPAY yymmdd_<24 hex> '
  '(Vietnam date), BANKING/CARD TXN-<24 hex>.';


CREATE OR REPLACE FUNCTION internal.lock_order_types(p_order_id uuid)
RETURNS void
LANGUAGE plpgsql VOLATILE
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
COMMENT ON FUNCTION internal.lock_order_types(uuid) IS
  'Locks the ticket_types rows of an order (FOR NO KEY UPDATE, ids ascending). Call before locking the order.';


CREATE OR REPLACE FUNCTION internal.release_order_seats(p_order_id uuid)
RETURNS void
LANGUAGE sql VOLATILE
AS $$
  UPDATE public.ticket_types tt
     SET available_quantity = tt.available_quantity + x.seats, version = tt.version + 1
    FROM (SELECT i.ticket_type_id, sum(i.quantity)::integer AS seats
            FROM public.order_items i WHERE i.order_id = p_order_id GROUP BY i.ticket_type_id) x
   WHERE tt.id = x.ticket_type_id
$$;
COMMENT ON FUNCTION internal.release_order_seats(uuid) IS
  'Returns an order''s seats to stock. The caller holds the ticket types'' and the order''s locks.';


CREATE OR REPLACE FUNCTION internal.take_order_seats(p_order_id uuid)
RETURNS boolean
LANGUAGE plpgsql VOLATILE
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
COMMENT ON FUNCTION internal.take_order_seats(uuid) IS
  'Takes an order''s seats from stock again (a late payment) if every type has them and the event '
  'is PUBLISHED and not started; returns whether it did. The caller holds the ticket types'' locks.';


CREATE OR REPLACE FUNCTION internal.lock_order_buyer(p_order_id uuid)
RETURNS void
LANGUAGE plpgsql VOLATILE
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
COMMENT ON FUNCTION internal.lock_order_buyer(uuid) IS
  'Takes the (event, buyer) advisory locks of an order''s events that have a per-buyer cap, sorted '
  '(as internal.reserve). Call after internal.lock_order_types and before locking the order.';


CREATE OR REPLACE FUNCTION internal.order_over_cap(p_order_id uuid)
RETURNS boolean
LANGUAGE plpgsql VOLATILE
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
COMMENT ON FUNCTION internal.order_over_cap(uuid) IS
  'Whether re-taking an order''s seats would pass the buyer''s cap of a ticket type or of the event '
  '(counted as internal.reserve does, the order itself excluded). The caller holds the types'' '
  'locks and internal.lock_order_buyer''s.';


CREATE OR REPLACE FUNCTION internal.issue_order(p_order_id uuid, p_provider_txn_id text)
RETURNS void
LANGUAGE plpgsql VOLATILE
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
COMMENT ON FUNCTION internal.issue_order(uuid, text) IS
  'Makes a locked order PAID: payment SUCCESS (with the provider''s id), tickets, internal.order_paid.';


CREATE OR REPLACE FUNCTION internal.start_refund(
  p_order_id uuid, p_reason text, p_amount numeric, p_provider_txn_id text, p_event_id bigint)
RETURNS uuid
LANGUAGE plpgsql VOLATILE
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
COMMENT ON FUNCTION internal.start_refund(uuid, text, numeric, text, bigint) IS
  'Records a refund to make (payment_refunds) and defers its refund_payment job (queue payments, '
  'priority 90, lock refund:<id>) in the caller''s transaction. Returns the refund''s id.';


CREATE OR REPLACE FUNCTION internal.refund_paid_order(p_order_id uuid, p_reason text)
RETURNS void
LANGUAGE plpgsql VOLATILE
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
COMMENT ON FUNCTION internal.refund_paid_order(uuid, text) IS
  'PAID -> REFUND_PENDING: UNUSED tickets CANCELLED, seats back unless the event started '
  '(seats_kept), a refund of the payment started. The caller holds the types'' and the order''s locks.';


CREATE OR REPLACE FUNCTION internal.cancel_event_orders(p_event_id uuid, p_limit integer)
RETURNS json
LANGUAGE plpgsql VOLATILE
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
COMMENT ON FUNCTION internal.cancel_event_orders(uuid, integer) IS
  'One batch of a cancelled event''s orders: at most p_limit of its PAID orders go REFUND_PENDING '
  'with a refund job each, its PENDING ones CANCELLED (seats back). Locks the event''s ticket types '
  '(id order), then the orders (id order, SKIP LOCKED). Returns {event_id, refunded, cancelled, '
  'remaining} (remaining: PAID/PENDING orders still to do, locked ones included).';


CREATE OR REPLACE FUNCTION internal.apply_payment_event(
  p_provider text, p_provider_txn_id text, p_transaction_id text, p_amount numeric,
  p_success boolean, p_raw jsonb)
RETURNS json
LANGUAGE plpgsql VOLATILE
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
COMMENT ON FUNCTION internal.apply_payment_event(text, text, text, numeric, boolean, jsonb) IS
  'Applies one verified provider event (see api.apply_payment_event).';


-- The buyer's and the gateway's calls.

CREATE OR REPLACE FUNCTION api.checkout(
  p_user_id uuid, p_reservation_id uuid, p_payment_method text, p_idempotency_key text DEFAULT NULL)
RETURNS json
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
SET lock_timeout = '2s'
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
COMMENT ON FUNCTION api.checkout(uuid, uuid, text, text) IS
  'Provider payments: turns the owner''s ACTIVE, unexpired hold into a PENDING order with a '
  'PENDING payment (MOMO|ZALOPAY|BANKING|CARD; transaction_id in the provider''s form: MOMO '
  'BK<hex>, ZALOPAY yymmdd_<hex> in Vietnam''s date, BANKING/CARD TXN-<hex>) whose seats stay held '
  'until payment.expires_at (now + payment_settings.payment_window). Reservation COMPLETED. '
  'Returns the order JSON. Locks the reservation row. Raises BKVAL, BKNTF, BKREX, BKRNA, BKSNO, '
  'BKIDR (as api.complete_booking). With p_idempotency_key the same user, key and request within '
  '24 hours returns the first order again.';


CREATE OR REPLACE FUNCTION api.apply_payment_event(
  p_provider text, p_provider_txn_id text, p_transaction_id text, p_amount numeric,
  p_success boolean, p_raw jsonb DEFAULT NULL)
RETURNS json
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
SET lock_timeout = '2s'
AS $$
  SELECT internal.apply_payment_event(p_provider, p_provider_txn_id, p_transaction_id, p_amount, p_success, p_raw)
$$;
COMMENT ON FUNCTION api.apply_payment_event(text, text, text, numeric, boolean, jsonb) IS
  'Applies one provider callback the gateway has verified (p_provider MOMO|ZALOPAY|BANKING|CARD, '
  'the provider''s transaction id, our transaction_id, the amount, success or failure, the raw '
  'body), once: the event goes to the inbox (payment_events, unique per provider transaction). '
  'Returns {outcome, order_id}: paid (PENDING -> PAID, tickets, confirmation job, one '
  'transaction); late_paid (after the deadline or after TIMEOUT/CANCELLED, seats re-taken); '
  'refund_pending (no seats left, event cancelled, or a second payment of a paid order: a refund '
  'job); cancelled (failure: PENDING -> CANCELLED, seats back); ignored (a failure for an order '
  'no longer PENDING); wrong_amount (the order does not change; that money is refunded: a refund '
  'job, refund_id in the answer); unknown_reference (recorded only: api.unresolved_payments); '
  'duplicate (this provider transaction was applied before: nothing changes; first_outcome says '
  'what it did). Locks the inbox key, the order''s ticket types, the order, its payment. Raises BKVAL.';


CREATE OR REPLACE FUNCTION api.get_order(p_user_id uuid, p_order_id uuid)
RETURNS json
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
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
COMMENT ON FUNCTION api.get_order(uuid, uuid) IS
  'The owner''s order, whatever its status (items, payment with expires_at while PENDING, '
  'tickets). Locks nothing. Raises BKNTF (unknown or not yours).';


CREATE OR REPLACE FUNCTION api.cancel_order(p_user_id uuid, p_order_id uuid)
RETURNS json
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
SET lock_timeout = '2s'
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
COMMENT ON FUNCTION api.cancel_order(uuid, uuid) IS
  'The buyer gives up a PENDING order: CANCELLED, payment FAILED, seats back to stock (a payment '
  'arriving later is handled as a late one). Already CANCELLED: returned unchanged. Locks the '
  'order''s ticket types, then the order. Raises BKNTF (unknown or not yours), BKOST (not PENDING).';


CREATE OR REPLACE FUNCTION api.refund_order(p_order_id uuid)
RETURNS json
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
SET lock_timeout = '2s'
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
COMMENT ON FUNCTION api.refund_order(uuid) IS
  'An admin refunds a PAID order: REFUND_PENDING, UNUSED tickets CANCELLED, seats back to sale '
  'unless the event has started, a refund_payment job (the worker calls the provider, then '
  'api.record_refund makes it REFUNDED). Already REFUND_PENDING/REFUNDED: returned unchanged. '
  'Locks the order''s ticket types, the order, its payment. Raises BKNTF, BKOST (not PAID).';


-- The worker's calls (granted to booking_worker only: sql/worker_grants.sql, worker/calls.py).

CREATE OR REPLACE FUNCTION api.refund_request(p_refund_id uuid)
RETURNS json
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
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
COMMENT ON FUNCTION api.refund_request(uuid) IS
  '(worker) What a refund_payment job refunds: {refund_id, order_id, provider, transaction_id (ours), '
  'provider_txn_id, amount, amount_vnd (whole VND for the provider), reason, status PENDING|DONE, '
  'attempts, refusals (how many times the provider refused it for good: the worker asks under a new '
  'request id after each), provider_ref, last_error, created_at}; NULL when there is no such refund. '
  'Locks nothing.';


CREATE OR REPLACE FUNCTION api.record_refund(
  p_refund_id uuid, p_ok boolean, p_provider_ref text DEFAULT NULL, p_error text DEFAULT NULL,
  p_refused boolean DEFAULT false)
RETURNS json
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
SET lock_timeout = '2s'
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
COMMENT ON FUNCTION api.record_refund(uuid, boolean, text, text, boolean) IS
  '(worker) Records the provider''s answer to a refund: ok -> the refund DONE (provider_ref kept) '
  'and, for an order''s own payment, the order and payment REFUNDED with order.refunded webhooks '
  'and the buyer''s refund e-mail (order_emails kind refund, a send_refund_email job: queue mail, '
  'priority 90, lock refund-mail:<order id>), all in the same transaction; not ok -> attempts + 1 '
  'and last_error (the job retries), and with p_refused (the provider refused it for good: the job '
  'fails for a DBA) refusals + 1. A DONE refund is '
  'returned unchanged. Returns api.refund_request. Locks the order, then the refund. Raises BKVAL, BKNTF.';


CREATE OR REPLACE FUNCTION api.refund_email(p_order_id uuid)
RETURNS json
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
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
COMMENT ON FUNCTION api.refund_email(uuid) IS
  '(worker) What the refund e-mail of a REFUNDED order says: {order_id, recipient, full_name, '
  'sent_at, message_id, attempts, order (order JSON), refund {id, amount, reason, finished_at}, '
  'event {id, slug, name, location, start_time, end_time}}. Locks nothing. Raises BKNTF (no such e-mail).';


CREATE OR REPLACE FUNCTION api.record_refund_email_attempt(p_order_id uuid, p_error text)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
SET lock_timeout = '2s'
AS $$
BEGIN
  PERFORM internal.record_email_attempt(p_order_id, 'refund', p_error);
END;
$$;
COMMENT ON FUNCTION api.record_refund_email_attempt(uuid, text) IS
  '(worker) Records one attempt to send an order''s refund e-mail: attempts + 1, last_error = p_error '
  '(the first 2,000 characters; NULL clears it). Locks that order_emails row. Raises BKNTF.';


CREATE OR REPLACE FUNCTION api.record_refund_email_sent(p_order_id uuid, p_message_id text)
RETURNS boolean
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
SET lock_timeout = '2s'
AS $$
BEGIN
  RETURN internal.record_email_sent(p_order_id, 'refund', p_message_id);
END;
$$;
COMMENT ON FUNCTION api.record_refund_email_sent(uuid, text) IS
  '(worker) Records that a server (or the mail folder) accepted an order''s refund e-mail: sets '
  'sent_at and message_id once and returns true; false when recorded before. Locks that '
  'order_emails row. Raises BKNTF.';


CREATE OR REPLACE FUNCTION api.payments_to_reconcile(
  p_older_than interval DEFAULT '3 minutes', p_limit integer DEFAULT 100)
RETURNS json
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
SET lock_timeout = '2s'
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
COMMENT ON FUNCTION api.payments_to_reconcile(interval, integer) IS
  '(worker) The payments the reconcile_payments job asks the provider about, claimed (reconciled_at '
  'set; rows locked right now are skipped): PENDING orders older than p_older_than (default 3 '
  'minutes), asked every run, and orders that went TIMEOUT or CANCELLED within the hour with no '
  'provider event, asked right after and then every 5 minutes (a final answer is recorded in the '
  'inbox, which ends it); at most p_limit of each, those first (money may be waiting with no order, '
  'and the worker''s run has a time budget), oldest first: '
  '[{order_id, status, provider, transaction_id, amount, amount_vnd, created_at, expires_at}]. '
  'Locks those payments rows (SKIP LOCKED).';


CREATE OR REPLACE FUNCTION api.reconcile_payment(
  p_provider text, p_provider_txn_id text, p_transaction_id text, p_amount numeric,
  p_success boolean, p_raw jsonb DEFAULT NULL)
RETURNS json
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
SET lock_timeout = '2s'
AS $$
  SELECT internal.apply_payment_event(p_provider, p_provider_txn_id, p_transaction_id, p_amount, p_success, p_raw)
$$;
COMMENT ON FUNCTION api.reconcile_payment(text, text, text, numeric, boolean, jsonb) IS
  '(worker) The provider''s status answer for a PENDING payment, applied exactly as a callback '
  '(api.apply_payment_event: the same inbox, so a callback and a reconciliation of one provider '
  'transaction apply once). Raises BKVAL.';


-- Maintenance and the DBAs' functions.

CREATE OR REPLACE FUNCTION api.expire_pending_orders(p_limit integer DEFAULT 5000)
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
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
COMMENT ON FUNCTION api.expire_pending_orders(integer) IS
  '(DBA-only) PENDING orders past their payment deadline -> TIMEOUT, payment FAILED, seats back '
  'to stock; at most p_limit (default 5000) per call, earliest deadline first; returns how many. '
  'pg_cron runs it every minute (a DBA may call it again at once: each call is one bounded '
  'transaction). Set-based: a few statements whatever the count, so a ticket type is held '
  'briefly. Locks ticket_types rows in id order and order rows with SKIP LOCKED: never waits (a '
  'payment being applied right now wins; a late success after TIMEOUT re-takes the seats or is '
  'refunded); an order over several types expires once all of them could be locked.';


CREATE OR REPLACE FUNCTION api.set_payment_mode(p_mode text, p_payment_window interval DEFAULT NULL)
RETURNS json
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
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
COMMENT ON FUNCTION api.set_payment_mode(text, interval) IS
  '(DBA-only) Sets the payment mode: instant (complete pays at once: demos, tests) or provider '
  '(complete refuses with BKPRQ; checkout waits for the provider), and optionally how long a '
  'PENDING order holds its seats (1 minute .. 1 day). make run applies PAYMENT_MODE with it. '
  'Returns {mode, payment_window, updated_at}. Raises BKVAL.';


CREATE OR REPLACE FUNCTION api.payment_mode()
RETURNS json
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
  SELECT json_build_object('mode', s.mode, 'payment_window', s.payment_window::text, 'updated_at', s.updated_at)
    FROM payment_settings s
$$;
COMMENT ON FUNCTION api.payment_mode() IS
  '(DBA-only) The payment settings: {mode, payment_window, updated_at}. Locks nothing.';


CREATE OR REPLACE FUNCTION api.pending_payments()
RETURNS TABLE (order_id uuid, user_email text, provider text, transaction_id text, amount numeric,
               created_at timestamptz, payment_deadline timestamptz, overdue boolean)
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
  SELECT o.id, u.email::text, p.payment_method::text, p.transaction_id::text, p.amount, o.created_at,
         o.payment_deadline, o.payment_deadline <= now()
    FROM orders o JOIN payments p ON p.order_id = o.id JOIN users u ON u.id = o.user_id
   WHERE o.status = 'PENDING'
   ORDER BY o.payment_deadline NULLS FIRST, o.id
$$;
COMMENT ON FUNCTION api.pending_payments() IS
  '(DBA-only) Orders waiting for a provider (PENDING), earliest deadline first; overdue ones are '
  'for the expiry job (api.expire_pending_orders). Locks nothing.';


CREATE OR REPLACE FUNCTION api.payment_inbox(p_limit integer DEFAULT 100, p_outcome text DEFAULT NULL)
RETURNS TABLE (id bigint, received_at timestamptz, provider text, provider_txn_id text,
               transaction_id text, kind text, amount numeric, outcome text, order_id uuid, raw jsonb)
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
  SELECT e.id, e.received_at, e.provider, e.provider_txn_id, e.transaction_id, e.kind, e.amount,
         e.outcome, e.order_id, e.raw
    FROM payment_events e
   WHERE p_outcome IS NULL OR e.outcome = p_outcome
   ORDER BY e.id DESC
   LIMIT greatest(coalesce(p_limit, 100), 1)
$$;
COMMENT ON FUNCTION api.payment_inbox(integer, text) IS
  '(DBA-only) The latest provider events (newest first, at most p_limit, optionally of one '
  'outcome: e.g. wrong_amount, unknown_reference, refund_pending). Locks nothing.';


CREATE OR REPLACE FUNCTION api.stuck_refunds(p_older_than interval DEFAULT '15 minutes')
RETURNS TABLE (refund_id uuid, order_id uuid, provider text, amount numeric, reason text,
               created_at timestamptz, attempts integer, refusals integer, last_error text, job_id bigint,
               job_status text)
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
  SELECT r.id, r.order_id, r.provider, r.amount, r.reason, r.created_at, r.attempts, r.refusals, r.last_error,
         r.job_id, j.status::text
    FROM payment_refunds r LEFT JOIN procrastinate_jobs j ON j.id = r.job_id
   WHERE r.status = 'PENDING' AND r.created_at <= now() - coalesce(p_older_than, interval '0')
   ORDER BY r.created_at
$$;
COMMENT ON FUNCTION api.stuck_refunds(interval) IS
  '(DBA-only) Refunds not DONE after p_older_than (default 15 minutes), oldest first, with their '
  'attempts, refusals (the provider said no for good), last error and their job''s status. A failed '
  'job: fix the cause and api.retry_job(job_id) (after a refusal the provider is asked under a new '
  'request id), or refund by hand and record it: api.record_refund(refund_id, true, ''<their ref>''). '
  'Locks nothing.';


CREATE OR REPLACE FUNCTION api.set_pay_url(p_transaction_id text, p_pay_url text)
RETURNS text
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
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
$$;
COMMENT ON FUNCTION api.set_pay_url(text, text) IS
  'Stores where the buyer pays a PENDING payment (our transaction_id), as its provider answered '
  'the gateway after api.checkout committed; the first URL stored stays. Returns the stored URL, '
  'NULL when no PENDING payment has this transaction_id. Locks the payment row. Raises BKVAL.';


-- Review fixes (issue 12): an event's cancellation in batches, refused money for DBAs.

CREATE OR REPLACE FUNCTION api.refund_cancelled_event(p_event_id uuid, p_limit integer DEFAULT 200)
RETURNS json
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
SET lock_timeout = '2s'
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
COMMENT ON FUNCTION api.refund_cancelled_event(uuid, integer) IS
  '(worker) One batch of a cancelled event''s orders (the refund_cancelled_event job calls it until '
  'remaining is 0; a DBA may too): at most p_limit (default 200, 1..5000) PAID orders -> '
  'REFUND_PENDING with a refund_payment job each, PENDING ones -> CANCELLED, seats back. Returns '
  '{event_id, refunded, cancelled, remaining}; orders locked by someone else right now are left '
  'for a later batch (counted in remaining). Locks the event''s ticket types (id order), then the '
  'orders (SKIP LOCKED). Raises BKVAL, BKNTF, BKIST (the event is not CANCELLED).';


CREATE OR REPLACE FUNCTION api.unresolved_payments()
RETURNS TABLE (id bigint, received_at timestamptz, provider text, provider_txn_id text,
               transaction_id text, amount numeric, outcome text, order_id uuid, raw jsonb)
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
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
COMMENT ON FUNCTION api.unresolved_payments() IS
  '(DBA-only) Successful provider events whose money is neither on an order nor being refunded: '
  'unknown_reference (no such payment of that provider) and wrong_amount without an amount, '
  'oldest first, until a DBA settles them with the provider and marks them '
  '(api.resolve_payment_event). Should be empty. Locks nothing.';


CREATE OR REPLACE FUNCTION api.resolve_payment_event(p_event_id bigint, p_note text)
RETURNS json
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
SET lock_timeout = '2s'
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
COMMENT ON FUNCTION api.resolve_payment_event(bigint, text) IS
  '(DBA-only) Marks a provider event settled by hand (e.g. the money of an unknown reference '
  'returned through the provider''s dashboard), with a note; it leaves api.unresolved_payments. '
  'Returns {id, outcome, resolved_at, resolved_note}. Locks the event row. Raises BKVAL, BKNTF.';
