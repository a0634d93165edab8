-- Orders: completing a hold into a paid order with tickets, and a user's bookings.

CREATE OR REPLACE FUNCTION api.complete_booking(
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
COMMENT ON FUNCTION api.complete_booking(uuid, uuid, text, text) IS
  'Turns the owner''s ACTIVE, unexpired hold into a PAID order in one transaction: order, '
  'item (unit price from the ticket type), SUCCESS payment (MOMO|ZALOPAY|BANKING|CARD, unique '
  'transaction id), one UNUSED ticket per seat (CSPRNG codes), reservation COMPLETED, and '
  'internal.order_paid (the confirmation e-mail''s job, order.paid webhooks). Returns the order JSON. Locks the reservation row. '
  'Raises BKPRQ (provider mode: use api.checkout), BKVAL (method), BKNTF (unknown or not yours), BKREX (expired), BKRNA (completed or '
  'cancelled; DETAIL names the order), BKSNO (event cancelled meanwhile), BKIDR (p_idempotency_key '
  'used with another request). With p_idempotency_key (1-255 visible ASCII) the same user, key '
  'and request within 24 hours returns the first order again; recorded in the same transaction.';


CREATE OR REPLACE FUNCTION api.my_bookings(
  p_user_id uuid, p_limit integer DEFAULT NULL,
  p_after_created_at timestamptz DEFAULT NULL, p_after_id uuid DEFAULT NULL)
RETURNS json
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
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
COMMENT ON FUNCTION api.my_bookings(uuid, integer, timestamptz, uuid) IS
  'The user''s orders, newest first by (created_at, id), each with items, payment and tickets. '
  'Pages: at most p_limit orders (NULL: all), after the order (p_after_created_at, p_after_id) '
  'when given (keyset: stable while orders are added). Locks nothing. Raises BKVAL (limit below 1).';
