-- Reservations (holds): reserve pessimistically or optimistically, cancel.
-- Invariant kept: available_quantity + seats in ACTIVE holds + seats sold = initial_quantity.

CREATE OR REPLACE FUNCTION api.reserve_tickets(p_user_id uuid, p_ticket_type_id uuid, p_quantity integer)
RETURNS json
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
SET lock_timeout = '2s'
AS $$
DECLARE
  v_available integer;
  v_problem text;
  v_reservation order_reservations;
BEGIN
  PERFORM internal.check_reserve_args(p_user_id, p_ticket_type_id, p_quantity);

  -- Seed method 1. NO KEY UPDATE, not UPDATE: completes insert rows that reference this
  -- ticket type (FOR KEY SHARE) and must not queue behind the onsale crowd.
  SELECT tt.available_quantity,
         internal.sale_problem(e.status, e.end_time, tt.start_sale_time, tt.end_sale_time)
    INTO v_available, v_problem
    FROM ticket_types tt JOIN events e ON e.id = tt.event_id
   WHERE tt.id = p_ticket_type_id
     FOR NO KEY UPDATE OF tt;
  IF NOT FOUND THEN
    RAISE EXCEPTION USING ERRCODE = 'BKNTF', MESSAGE = 'ticket type not found';
  END IF;
  IF v_problem IS NOT NULL THEN
    RAISE EXCEPTION USING ERRCODE = 'BKSNO', MESSAGE = v_problem;
  END IF;

  IF v_available < p_quantity THEN
    -- No seat stays stuck behind a dead hold: reclaim them under the lock we hold.
    IF internal.reclaim_expired_holds(p_ticket_type_id) > 0 THEN
      SELECT available_quantity INTO v_available FROM ticket_types WHERE id = p_ticket_type_id;
    END IF;
    IF v_available < p_quantity THEN
      RAISE EXCEPTION USING ERRCODE = 'BKSLD',
        MESSAGE = format('only %s tickets left', v_available);
    END IF;
  END IF;

  UPDATE ticket_types
     SET available_quantity = available_quantity - p_quantity, version = version + 1
   WHERE id = p_ticket_type_id;
  INSERT INTO order_reservations (user_id, ticket_type_id, quantity, status, expires_at)
  VALUES (p_user_id, p_ticket_type_id, p_quantity, 'ACTIVE', now() + internal.hold_period())
  RETURNING * INTO v_reservation;
  RETURN internal.reservation_json(v_reservation);
END;
$$;
COMMENT ON FUNCTION api.reserve_tickets(uuid, uuid, integer) IS
  'Holds p_quantity (1..10) seats of a ticket type for a user for booking.hold_period '
  '(10 minutes): checks the event is PUBLISHED and the sale window, reclaims expired holds of '
  'the type when stock is short, decrements stock and returns the ACTIVE reservation. '
  'Locks the ticket_types row (FOR NO KEY UPDATE, lock_timeout 2s -> 55P03). '
  'Raises BKVAL, BKNTF (unknown type), BKSNO (not on sale), BKSLD (sold out).';


CREATE OR REPLACE FUNCTION api.reserve_tickets_optimistic(
  p_user_id uuid, p_ticket_type_id uuid, p_quantity integer)
RETURNS json
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
SET lock_timeout = '2s'
AS $$
DECLARE
  c_attempts CONSTANT integer := 6;
  v_attempt integer;
  v_available integer;
  v_version integer;
  v_problem text;
  v_reservation order_reservations;
BEGIN
  PERFORM internal.check_reserve_args(p_user_id, p_ticket_type_id, p_quantity);

  FOR v_attempt IN 1..c_attempts LOOP
    -- Seed method 2: read without a lock, then compare-and-set on version.
    SELECT tt.available_quantity, tt.version,
           internal.sale_problem(e.status, e.end_time, tt.start_sale_time, tt.end_sale_time)
      INTO v_available, v_version, v_problem
      FROM ticket_types tt JOIN events e ON e.id = tt.event_id
     WHERE tt.id = p_ticket_type_id;
    IF NOT FOUND THEN
      RAISE EXCEPTION USING ERRCODE = 'BKNTF', MESSAGE = 'ticket type not found';
    END IF;
    IF v_problem IS NOT NULL THEN
      RAISE EXCEPTION USING ERRCODE = 'BKSNO', MESSAGE = v_problem;
    END IF;

    IF v_available < p_quantity THEN
      -- Reclaiming dead holds needs the row lock, as in the pessimistic function; it is
      -- the rare path (stock short), so the lock costs nothing on the common one.
      PERFORM 1 FROM ticket_types WHERE id = p_ticket_type_id FOR NO KEY UPDATE;
      PERFORM internal.reclaim_expired_holds(p_ticket_type_id);
      SELECT available_quantity, version INTO v_available, v_version
        FROM ticket_types WHERE id = p_ticket_type_id;
      IF v_available < p_quantity THEN
        RAISE EXCEPTION USING ERRCODE = 'BKSLD',
          MESSAGE = format('only %s tickets left', v_available);
      END IF;
    END IF;

    UPDATE ticket_types
       SET available_quantity = available_quantity - p_quantity, version = version + 1
     WHERE id = p_ticket_type_id AND version = v_version;
    IF FOUND THEN
      INSERT INTO order_reservations (user_id, ticket_type_id, quantity, status, expires_at)
      VALUES (p_user_id, p_ticket_type_id, p_quantity, 'ACTIVE', now() + internal.hold_period())
      RETURNING * INTO v_reservation;
      RETURN internal.reservation_json(v_reservation);
    END IF;

    -- Lost the race: back off (exponential, jittered, capped at 50 ms) and re-read.
    PERFORM pg_sleep(least(0.001 * power(2, v_attempt), 0.05) * (0.5 + random()));
  END LOOP;

  RAISE EXCEPTION USING ERRCODE = 'BKBSY',
    MESSAGE = format('ticket type is busy: %s attempts lost the race', c_attempts),
    HINT = 'Retry, or use the pessimistic api.reserve_tickets.';
END;
$$;
COMMENT ON FUNCTION api.reserve_tickets_optimistic(uuid, uuid, integer) IS
  'Same checks and results as api.reserve_tickets, but seed method 2: version compare-and-set '
  'with up to 6 attempts and jittered exponential backoff. Takes the ticket_types row lock '
  'only to reclaim expired holds when stock is short. Raises BKVAL, BKNTF, BKSNO, BKSLD, '
  'BKBSY (retries exhausted).';


CREATE OR REPLACE FUNCTION api.cancel_reservation(p_user_id uuid, p_reservation_id uuid)
RETURNS json
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
SET lock_timeout = '2s'
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
COMMENT ON FUNCTION api.cancel_reservation(uuid, uuid) IS
  'The owner gives an ACTIVE hold back: it becomes CANCELLED and its seats return to stock. '
  'Locks the ticket_types row, then the reservation row. Raises BKNTF (unknown or not yours), '
  'BKREX (already expired), BKRNA (completed or cancelled).';
