-- Helpers shared by the api functions. Not part of the contract; not callable by the gateway.
-- They run inside api functions (whose search_path is pinned) and carry no SET clause of
-- their own: a SET costs a GUC save/restore and a search-path recomputation per call and
-- stops the planner from inlining SQL helpers (measured: reserve 1,730 -> ~2,450 calls/s).
-- So every table and extension function here is schema-qualified.
-- A SQL helper the planner cannot inline (its body has a FROM or a sub-select: event_json,
-- order_json, payment_mode, ...) is written in PL/pgSQL instead: PostgreSQL 15 plans a
-- non-inlined SQL function's body anew for every statement that calls it (every call from
-- PL/pgSQL), a PL/pgSQL body's plans are cached for the session (measured: api.get_event
-- 0.207 -> 0.040 ms, api.complete_booking 1.0 -> 0.55 ms; docs/I10-PERF-NOTES.md).
-- Lock order everywhere in this project: a ticket_types row (ids ascending when several)
-- before any order_reservations row. Reservation rows taken by maintenance use SKIP LOCKED.

CREATE OR REPLACE FUNCTION internal.hold_period()
RETURNS interval
LANGUAGE sql STABLE
AS $$
  SELECT coalesce(nullif(current_setting('booking.hold_period', true), ''), '10 minutes')::interval
$$;
COMMENT ON FUNCTION internal.hold_period() IS
  'How long a reservation holds seats: setting booking.hold_period (default 10 minutes). '
  'Change without code: ALTER DATABASE booking SET booking.hold_period = ''15 minutes''.';


CREATE OR REPLACE FUNCTION internal.sale_problem(
  p_event_status text, p_event_end timestamptz, p_sale_start timestamptz, p_sale_end timestamptz)
RETURNS text
LANGUAGE sql STABLE
AS $$
  SELECT CASE
    WHEN p_event_status <> 'PUBLISHED' THEN format('the event is not on sale (it is %s)', p_event_status)
    WHEN p_sale_start IS NOT NULL AND now() < p_sale_start THEN format('sale opens at %s', to_json(p_sale_start) #>> '{}')
    WHEN p_sale_end IS NOT NULL AND now() >= p_sale_end THEN format('sale closed at %s', to_json(p_sale_end) #>> '{}')
    WHEN now() >= p_event_end THEN 'the event has ended'
  END
$$;
COMMENT ON FUNCTION internal.sale_problem(text, timestamptz, timestamptz, timestamptz) IS
  'Why a ticket type cannot be sold now (NULL when it can): event not PUBLISHED, outside the '
  'sale window, or the event is over.';


CREATE OR REPLACE FUNCTION internal.reclaim_expired_holds(p_ticket_type_id uuid)
RETURNS integer
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
COMMENT ON FUNCTION internal.reclaim_expired_holds(uuid) IS
  'Marks the expired ACTIVE holds of one ticket type EXPIRED and returns their seats to stock. '
  'Caller must hold the ticket_types row lock. Skips holds locked by others. Returns holds released.';


CREATE OR REPLACE FUNCTION internal.reservation_json(r public.order_reservations)
RETURNS json
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
COMMENT ON FUNCTION internal.reservation_json(public.order_reservations) IS 'A reservation as API JSON.';


CREATE OR REPLACE FUNCTION internal.user_json(u public.users)
RETURNS json
LANGUAGE sql STABLE
AS $$
  SELECT json_build_object(
    'id', u.id, 'email', u.email, 'full_name', u.full_name, 'role', u.role,
    'created_at', u.created_at)
$$;
COMMENT ON FUNCTION internal.user_json(public.users) IS 'A user as API JSON (never the password hash).';


CREATE OR REPLACE FUNCTION internal.ticket_type_json(tt public.ticket_types, e public.events, p_live boolean)
RETURNS json
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
COMMENT ON FUNCTION internal.ticket_type_json(public.ticket_types, public.events, boolean) IS
  'A ticket type as API JSON; money as a decimal string.';


CREATE OR REPLACE FUNCTION internal.event_json(e public.events, p_live boolean)
RETURNS json
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
COMMENT ON FUNCTION internal.event_json(public.events, boolean) IS
  'An event with its ticket types as API JSON; p_live adds available_quantity and on_sale.';


CREATE OR REPLACE FUNCTION internal.order_json(o public.orders)
RETURNS json
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
COMMENT ON FUNCTION internal.order_json(public.orders) IS
  'An order with items, payment and tickets as API JSON (the shape of complete_booking and my_bookings).';


CREATE OR REPLACE FUNCTION internal.new_ticket_code()
RETURNS text
LANGUAGE sql VOLATILE
AS $$
  -- 80 bits from pgcrypto's CSPRNG: unguessable, and collisions are not a practical concern
  -- (the UNIQUE constraint would turn one into an error, never a shared ticket).
  SELECT 'TKT-' || upper(encode(public.gen_random_bytes(10), 'hex'))
$$;
COMMENT ON FUNCTION internal.new_ticket_code() IS 'A fresh ticket code: TKT- and 20 hex digits from a CSPRNG.';


CREATE OR REPLACE FUNCTION internal.check_page(
  p_limit integer, p_after_key_given boolean, p_after_id_given boolean, p_after_key_name text)
RETURNS void
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
COMMENT ON FUNCTION internal.check_page(integer, boolean, boolean, text) IS
  'Arguments of a keyset page (the list functions): p_limit >= 1 or NULL (all), and the cursor''s '
  'sort key and id given together. Raises BKVAL.';
