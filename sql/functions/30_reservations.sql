-- Reservations (holds). One core decides every reservation: internal.reserve. The three ways
-- in (one request, one request optimistically, a coalesced batch) only call it.
-- Invariant kept: available_quantity + seats in ACTIVE holds + seats sold = initial_quantity.

CREATE OR REPLACE FUNCTION internal.reserve(p_requests api.reserve_request[], p_expected_version integer DEFAULT NULL)
RETURNS TABLE (reservation json, sqlstate text, message text)
LANGUAGE plpgsql
AS $$
DECLARE
  v_count integer := coalesce(array_length(p_requests, 1), 0);
  v_states text[] := array_fill(NULL::text, ARRAY[v_count]);
  v_messages text[] := array_fill(NULL::text, ARRAY[v_count]);
  v_types uuid[] := '{}';       -- ticket types and users of the well-formed requests
  v_users uuid[] := '{}';
  v_known_users uuid[];
  v_grant_pos integer[] := '{}'; -- positions granted, and their new reservation ids
  v_grant_ids uuid[] := '{}';
  v_expires timestamptz := now() + internal.hold_period();
  v_req api.reserve_request;
  v_tt record;
  v_available integer;
  v_taken integer;
  v_reclaimed boolean;
  i integer;
BEGIN
  IF v_count > 1000 THEN
    RAISE EXCEPTION USING ERRCODE = 'BKVAL', MESSAGE = 'at most 1000 requests per call';
  END IF;

  -- 1. Arguments, per request (a bad one is answered, it does not fail the others).
  FOR i IN 1..v_count LOOP
    v_req := p_requests[i];
    IF v_req.user_id IS NULL OR v_req.ticket_type_id IS NULL THEN
      v_states[i] := 'BKVAL';
      v_messages[i] := 'user_id and ticket_type_id are required';
    ELSIF v_req.quantity IS NULL OR v_req.quantity NOT BETWEEN 1 AND 10 THEN
      v_states[i] := 'BKVAL';
      v_messages[i] := format('quantity must be between 1 and 10, got %s', coalesce(v_req.quantity::text, 'null'));
    ELSE
      v_types := v_types || v_req.ticket_type_id;
      v_users := v_users || v_req.user_id;
    END IF;
  END LOOP;
  -- A token can outlive its user: answer not_found rather than trip over the foreign key.
  SELECT coalesce(array_agg(u.id), '{}') INTO v_known_users
    FROM public.users u WHERE u.id = ANY (v_users);

  -- 2. Each ticket type locked once, in id order (the project's lock order). NO KEY UPDATE, not
  -- UPDATE: completes insert rows referencing the type (FOR KEY SHARE) and must not queue
  -- behind the onsale crowd. With p_expected_version (the optimistic way in), the row is
  -- taken only if nobody changed it since the caller read it: compare-and-set.
  FOR v_tt IN
    SELECT tt.id, tt.available_quantity,
           internal.sale_problem(e.status, e.end_time, tt.start_sale_time, tt.end_sale_time) AS problem
      FROM public.ticket_types tt JOIN public.events e ON e.id = tt.event_id
     WHERE tt.id = ANY (v_types)
       AND (p_expected_version IS NULL OR tt.version = p_expected_version)
     ORDER BY tt.id
       FOR NO KEY UPDATE OF tt
  LOOP
    v_available := v_tt.available_quantity;
    v_taken := 0;
    v_reclaimed := false;
    -- Requests of this type in arrival order; checks in this order: user, sale window, stock.
    FOR i IN 1..v_count LOOP
      v_req := p_requests[i];
      CONTINUE WHEN v_states[i] IS NOT NULL OR v_req.ticket_type_id <> v_tt.id;
      IF v_req.user_id <> ALL (v_known_users) THEN
        v_states[i] := 'BKNTF';
        v_messages[i] := 'user not found';
      ELSIF v_tt.problem IS NOT NULL THEN
        v_states[i] := 'BKSNO';
        v_messages[i] := v_tt.problem;
      ELSE
        IF v_req.quantity > v_available AND NOT v_reclaimed THEN
          -- Short: no seat stays stuck behind a dead hold. Reclaim once, under our lock. The
          -- row does not count this call's grants yet (written below): subtract them.
          v_reclaimed := true;
          IF internal.reclaim_expired_holds(v_tt.id) > 0 THEN
            SELECT tt.available_quantity - v_taken INTO v_available FROM public.ticket_types tt WHERE tt.id = v_tt.id;
          END IF;
        END IF;
        IF v_req.quantity <= v_available THEN
          v_available := v_available - v_req.quantity;
          v_taken := v_taken + v_req.quantity;
          v_grant_pos := v_grant_pos || i;
          v_grant_ids := v_grant_ids || gen_random_uuid();
          v_states[i] := '';  -- granted
        ELSE
          v_states[i] := 'BKSLD';
          v_messages[i] := format('only %s tickets left', v_available);
        END IF;
      END IF;
    END LOOP;
    IF v_taken > 0 THEN
      UPDATE public.ticket_types
         SET available_quantity = available_quantity - v_taken, version = version + 1
       WHERE id = v_tt.id;
    END IF;
  END LOOP;

  -- 3. The holds, in one statement; one answer per request, in order. A request nobody
  -- answered named a ticket type that does not exist, or (compare-and-set) one that changed.
  RETURN QUERY
    WITH granted AS (
      INSERT INTO public.order_reservations AS r (id, user_id, ticket_type_id, quantity, status, expires_at)
      SELECT g.id, (p_requests[g.pos]).user_id, (p_requests[g.pos]).ticket_type_id, (p_requests[g.pos]).quantity,
             'ACTIVE', v_expires
        FROM unnest(v_grant_pos, v_grant_ids) AS g(pos, id)
      RETURNING r.id, internal.reservation_json(r) AS reservation
    )
    SELECT granted.reservation,
           CASE WHEN a.state = '' THEN NULL
                WHEN a.state IS NOT NULL THEN a.state
                WHEN p_expected_version IS NOT NULL
                 AND EXISTS (SELECT 1 FROM public.ticket_types tt WHERE tt.id = (p_requests[a.pos]).ticket_type_id)
                  THEN 'BKBSY'
                ELSE 'BKNTF' END,
           CASE WHEN a.state = '' THEN NULL
                WHEN a.state IS NOT NULL THEN a.msg
                WHEN p_expected_version IS NOT NULL
                 AND EXISTS (SELECT 1 FROM public.ticket_types tt WHERE tt.id = (p_requests[a.pos]).ticket_type_id)
                  THEN 'the ticket type changed since it was read'
                ELSE 'ticket type not found' END
      FROM unnest(v_states, v_messages) WITH ORDINALITY AS a(state, msg, pos)
      LEFT JOIN unnest(v_grant_pos, v_grant_ids) AS g(pos, id) ON g.pos = a.pos
      LEFT JOIN granted ON granted.id = g.id
     ORDER BY a.pos;
END;
$$;
COMMENT ON FUNCTION internal.reserve(api.reserve_request[], integer) IS
  'The one place a reservation is decided. For each request, in order: arguments (quantity '
  '1..10), the user exists, the ticket type exists and is on sale, stock (reclaiming expired '
  'holds of the type once when short); granted requests become ACTIVE holds for '
  'booking.hold_period. Locks each ticket_types row once, in id order (FOR NO KEY UPDATE). '
  'Returns one row per request: the reservation JSON, or NULL with the SQLSTATE and message '
  '(BKVAL, BKNTF, BKSNO, BKSLD; BKBSY when p_expected_version no longer matches). Raises BKVAL '
  'for more than 1000 requests. Callers set lock_timeout.';


CREATE OR REPLACE FUNCTION api.reserve_tickets(p_user_id uuid, p_ticket_type_id uuid, p_quantity integer)
RETURNS json
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
SET lock_timeout = '2s'
AS $$
DECLARE
  v_answer record;
BEGIN
  -- Seed method 1 (pessimistic): the core locks the ticket type row.
  SELECT * INTO v_answer
    FROM internal.reserve(ARRAY[ROW(p_user_id, p_ticket_type_id, p_quantity)::api.reserve_request]);
  IF v_answer.sqlstate IS NOT NULL THEN
    RAISE EXCEPTION USING ERRCODE = v_answer.sqlstate, MESSAGE = v_answer.message;
  END IF;
  RETURN v_answer.reservation;
END;
$$;
COMMENT ON FUNCTION api.reserve_tickets(uuid, uuid, integer) IS
  'Holds p_quantity (1..10) seats of a ticket type for a user for booking.hold_period '
  '(default 10 minutes): checks the event is PUBLISHED and the sale window, reclaims expired '
  'holds of the type when stock is short, decrements stock and returns the ACTIVE reservation. '
  'Decided by internal.reserve. Locks the ticket_types row (FOR NO KEY UPDATE, lock_timeout 2s '
  '-> 55P03). Raises BKVAL, BKNTF (unknown user or type), BKSNO (not on sale), BKSLD (sold out).';


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
  v_version integer;
  v_answer record;
BEGIN
  FOR v_attempt IN 1..c_attempts LOOP
    -- Seed method 2: read the version without a lock; the core takes the row only if the
    -- version is still the same (compare-and-set), else answers BKBSY and we try again.
    SELECT version INTO v_version FROM ticket_types WHERE id = p_ticket_type_id;
    SELECT * INTO v_answer
      FROM internal.reserve(ARRAY[ROW(p_user_id, p_ticket_type_id, p_quantity)::api.reserve_request], v_version);
    IF v_answer.sqlstate IS NULL THEN
      RETURN v_answer.reservation;
    ELSIF v_answer.sqlstate <> 'BKBSY' THEN
      RAISE EXCEPTION USING ERRCODE = v_answer.sqlstate, MESSAGE = v_answer.message;
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
  'Same checks and results as api.reserve_tickets, but seed method 2: reads the ticket type''s '
  'version without a lock, then internal.reserve takes the row only if the version is unchanged '
  '(compare-and-set); up to 6 attempts with jittered exponential backoff. lock_timeout 2s. '
  'Raises BKVAL, BKNTF, BKSNO, BKSLD, BKBSY (retries exhausted).';


CREATE OR REPLACE FUNCTION api.reserve_tickets_batch(p_requests api.reserve_request[])
RETURNS TABLE (reservation json, sqlstate text, message text)
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
SET lock_timeout = '2s'
AS $$
  SELECT * FROM internal.reserve(p_requests)
$$;
COMMENT ON FUNCTION api.reserve_tickets_batch(api.reserve_request[]) IS
  'Many reservations in one transaction (the gateway coalesces concurrent reserves into one '
  'call): p_requests is an array of api.reserve_request (user_id, ticket_type_id, quantity), '
  'e.g. ARRAY[ROW(u, t, 2)]::api.reserve_request[]. Returns one row per request, in order: the '
  'reservation (as api.reserve_tickets returns it), or NULL with the sqlstate and message '
  'api.reserve_tickets would raise (BKVAL, BKNTF, BKSNO, BKSLD). Decided by internal.reserve: '
  'within a ticket type, granted in array order while stock lasts; each ticket type row locked '
  'once, in id order (lock_timeout 2s). At most 1000 requests (else BKVAL).';


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
