-- Reservations (holds). One core decides every reservation: internal.reserve. The three ways
-- in (one request, one request optimistically, a coalesced batch) only call it.
-- Invariant kept: available_quantity + seats in ACTIVE holds + seats sold = initial_quantity.

CREATE OR REPLACE FUNCTION internal.reserve(
  p_ticket_type_id uuid, p_users uuid[], p_quantities integer[], p_expected_version integer DEFAULT NULL,
  p_raise boolean DEFAULT false, OUT reservations json[], OUT sqlstates text[], OUT messages text[])
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
         ARRAY(SELECT u.id FROM public.users u WHERE u.id = ANY (p_users))
    INTO v_available, v_problem, v_known_users
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

  -- Each request in arrival order: arguments, the type, the user, the sale window, then stock.
  -- (Few statements per request: in a volatile function each one takes a fresh snapshot.)
  FOR i IN 1..v_count LOOP
    v_quantity := p_quantities[i];
    v_refused := CASE
      WHEN p_users[i] IS NULL OR v_quantity IS NULL OR v_quantity NOT BETWEEN 1 AND 10 THEN 'arguments'
      WHEN v_refusal IS NOT NULL THEN 'type'
      WHEN p_users[i] <> ALL (v_known_users) THEN 'user'
      WHEN v_problem IS NOT NULL THEN 'sale' END;
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
      ELSE
        v_refused := 'stock';
      END IF;
    END IF;
    IF v_refused IS NOT NULL THEN
      sqlstates[i] := CASE v_refused WHEN 'arguments' THEN 'BKVAL' WHEN 'type' THEN v_refusal WHEN 'user' THEN 'BKNTF'
                                     WHEN 'sale' THEN 'BKSNO' ELSE 'BKSLD' END;
      messages[i] := CASE v_refused
        WHEN 'arguments' THEN CASE WHEN p_users[i] IS NULL THEN 'user_id and ticket_type_id are required'
                                   ELSE format('quantity must be between 1 and 10, got %s', coalesce(v_quantity::text, 'null')) END
        WHEN 'type' THEN v_refusal_message
        WHEN 'user' THEN 'user not found'
        WHEN 'sale' THEN v_problem
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
COMMENT ON FUNCTION internal.reserve(uuid, uuid[], integer[], integer, boolean) IS
  'The one place a reservation is decided: requests of users p_users for p_quantities seats of '
  'one ticket type, in arrival order. For each: arguments (quantity 1..10), the type exists, '
  'the user exists, the event is PUBLISHED and inside the sale window, stock (reclaiming the '
  'type''s expired holds once when short); granted requests become ACTIVE holds for '
  'booking.hold_period. Locks the ticket_types row once (FOR NO KEY UPDATE); with '
  'p_expected_version only if its version still matches (else BKBSY: compare-and-set). Returns '
  'three arrays, one element per request: the reservation JSON, or NULL with the SQLSTATE and '
  'message (BKVAL, BKNTF, BKSNO, BKSLD, BKBSY); with p_raise the first refusal is raised '
  'instead, before any hold is written. Callers bound the number of requests (the batch: 1000), '
  'set lock_timeout and take several ticket types in id order.';


CREATE OR REPLACE FUNCTION api.reserve_tickets(p_user_id uuid, p_ticket_type_id uuid, p_quantity integer)
RETURNS json
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
SET lock_timeout = '2s'
SET plan_cache_mode = force_generic_plan  -- see internal.reserve
AS $$
BEGIN
  -- Seed method 1 (pessimistic): the core locks the ticket type row.
  RETURN (internal.reserve(p_ticket_type_id, ARRAY[p_user_id], ARRAY[p_quantity], p_raise => true)).reservations[1];
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
SET plan_cache_mode = force_generic_plan  -- see internal.reserve
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
    v_answer := internal.reserve(p_ticket_type_id, ARRAY[p_user_id], ARRAY[p_quantity], v_version);
    IF v_answer.sqlstates[1] IS NULL THEN
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
COMMENT ON FUNCTION api.reserve_tickets_optimistic(uuid, uuid, integer) IS
  'Same checks and results as api.reserve_tickets, but seed method 2: reads the ticket type''s '
  'version without a lock, then internal.reserve takes the row only if the version is unchanged '
  '(compare-and-set); up to 6 attempts with jittered exponential backoff. lock_timeout 2s. '
  'Raises BKVAL, BKNTF, BKSNO, BKSLD, BKBSY (retries exhausted).';


CREATE OR REPLACE FUNCTION api.reserve_tickets_batch(p_requests api.reserve_request[])
RETURNS TABLE (reservation json, sqlstate text, message text)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
SET lock_timeout = '2s'
SET plan_cache_mode = force_generic_plan  -- see internal.reserve
AS $$
DECLARE
  v_group record;
  v_answer record;
  v_pos integer[] := '{}';
  v_reservations json[] := '{}';
  v_sqlstates text[] := '{}';
  v_messages text[] := '{}';
BEGIN
  IF coalesce(array_length(p_requests, 1), 0) > 1000 THEN
    RAISE EXCEPTION USING ERRCODE = 'BKVAL', MESSAGE = 'at most 1000 requests per call';
  END IF;
  -- One core call per ticket type, in id order (the project's lock order).
  FOR v_group IN
    SELECT r.ticket_type_id, array_agg(r.user_id ORDER BY r.pos) AS users,
           array_agg(r.quantity ORDER BY r.pos) AS quantities, array_agg(r.pos ORDER BY r.pos) AS pos
      FROM unnest(p_requests) WITH ORDINALITY AS r(user_id, ticket_type_id, quantity, pos)
     GROUP BY r.ticket_type_id
     ORDER BY r.ticket_type_id NULLS LAST
  LOOP
    v_answer := internal.reserve(v_group.ticket_type_id, v_group.users, v_group.quantities);
    v_pos := v_pos || v_group.pos;
    v_reservations := v_reservations || v_answer.reservations;
    v_sqlstates := v_sqlstates || v_answer.sqlstates;
    v_messages := v_messages || v_answer.messages;
  END LOOP;
  RETURN QUERY
    SELECT a.reservation, a.sqlstate, a.message
      FROM unnest(v_pos, v_reservations, v_sqlstates, v_messages) AS a(pos, reservation, sqlstate, message)
     ORDER BY a.pos;
END;
$$;
COMMENT ON FUNCTION api.reserve_tickets_batch(api.reserve_request[]) IS
  'Many reservations in one transaction (the gateway coalesces concurrent reserves of a ticket '
  'type into one call): p_requests is an array of api.reserve_request (user_id, ticket_type_id, '
  'quantity), e.g. ARRAY[ROW(u, t, 2)]::api.reserve_request[]. Returns one row per request, in '
  'order: the reservation (as api.reserve_tickets returns it), or NULL with the sqlstate and '
  'message api.reserve_tickets would raise (BKVAL, BKNTF, BKSNO, BKSLD). Decided by '
  'internal.reserve, one call per ticket type in id order (each row locked once, lock_timeout '
  '2s); within a type, granted in array order while stock lasts. At most 1000 requests (else BKVAL).';


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
