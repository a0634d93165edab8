-- Coalesced reservations: many requests in one transaction, one lock per ticket type.
-- On onsale day one hot ticket type allows one commit per reservation with api.reserve_tickets;
-- granting a whole queue of requests per lock and per commit lifts that ceiling.

CREATE OR REPLACE FUNCTION api.reserve_tickets_batch(p_requests jsonb)
RETURNS TABLE (reservation json, sqlstate text, message text)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
SET lock_timeout = '2s'
AS $$
DECLARE
  c_uuid CONSTANT text := '^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$';
  v_count integer;
  v_granted json[];  -- per request: the reservation, or NULL when refused
  v_states text[];
  v_messages text[];
  v_req record;
  -- the valid requests, in arrival order
  v_pos integer[] := '{}';
  v_users uuid[] := '{}';
  v_types uuid[] := '{}';
  v_qty integer[] := '{}';
  -- the grants, inserted at the end in one statement
  v_new_ids uuid[] := '{}';
  v_new_users uuid[] := '{}';
  v_new_types uuid[] := '{}';
  v_new_qty integer[] := '{}';
  v_known_users uuid[];
  v_tt record;
  v_available integer;
  v_taken integer;
  v_reclaimed boolean;
  v_id uuid;
  v_expires timestamptz := now() + internal.hold_period();
  i integer;
BEGIN
  IF p_requests IS NULL OR jsonb_typeof(p_requests) <> 'array' THEN
    RAISE EXCEPTION USING ERRCODE = 'BKVAL', MESSAGE = 'p_requests must be a JSON array';
  END IF;
  v_count := jsonb_array_length(p_requests);
  IF v_count > 1000 THEN
    RAISE EXCEPTION USING ERRCODE = 'BKVAL', MESSAGE = 'at most 1000 requests per batch';
  END IF;
  v_granted := array_fill(NULL::json, ARRAY[v_count]);
  v_states := array_fill(NULL::text, ARRAY[v_count]);
  v_messages := array_fill(NULL::text, ARRAY[v_count]);

  -- 1. Per-request argument checks (the same as internal.check_reserve_args, without raising).
  FOR v_req IN SELECT r.ord::integer AS ord, r.elem FROM jsonb_array_elements(p_requests) WITH ORDINALITY r(elem, ord) LOOP
    IF jsonb_typeof(v_req.elem) <> 'object'
       OR coalesce(v_req.elem->>'user_id', '') !~ c_uuid
       OR coalesce(v_req.elem->>'ticket_type_id', '') !~ c_uuid THEN
      v_states[v_req.ord] := 'BKVAL';
      v_messages[v_req.ord] := 'user_id and ticket_type_id are required UUIDs';
    ELSIF jsonb_typeof(v_req.elem->'quantity') IS DISTINCT FROM 'number'
       OR (v_req.elem->>'quantity') !~ '^[0-9]+$'
       OR (v_req.elem->>'quantity')::numeric NOT BETWEEN 1 AND 10 THEN
      v_states[v_req.ord] := 'BKVAL';
      v_messages[v_req.ord] := format('quantity must be between 1 and 10, got %s',
                                      coalesce(v_req.elem->>'quantity', 'null'));
    ELSE
      v_pos := v_pos || v_req.ord;
      v_users := v_users || (v_req.elem->>'user_id')::uuid;
      v_types := v_types || (v_req.elem->>'ticket_type_id')::uuid;
      v_qty := v_qty || (v_req.elem->>'quantity')::integer;
    END IF;
  END LOOP;

  -- A request from a user who no longer exists must not fail the whole batch on the FK.
  SELECT coalesce(array_agg(u.id), '{}') INTO v_known_users FROM users u WHERE u.id = ANY(v_users);

  -- 2. Ticket types in id order (the project's lock order), each locked once.
  FOR v_tt IN
    SELECT tt.id, tt.available_quantity,
           internal.sale_problem(e.status, e.end_time, tt.start_sale_time, tt.end_sale_time) AS problem
      FROM ticket_types tt JOIN events e ON e.id = tt.event_id
     WHERE tt.id = ANY(v_types)
     ORDER BY tt.id
       FOR NO KEY UPDATE OF tt
  LOOP
    v_available := v_tt.available_quantity;
    v_taken := 0;
    v_reclaimed := false;
    FOR i IN 1..coalesce(array_length(v_pos, 1), 0) LOOP
      CONTINUE WHEN v_types[i] <> v_tt.id;
      -- Checks in the order api.reserve_tickets makes them: user, then sale window, then stock.
      IF v_users[i] <> ALL (v_known_users) THEN
        v_states[v_pos[i]] := 'BKNTF';
        v_messages[v_pos[i]] := 'user not found';
      ELSIF v_tt.problem IS NOT NULL THEN
        v_states[v_pos[i]] := 'BKSNO';
        v_messages[v_pos[i]] := v_tt.problem;
      ELSE
        IF v_qty[i] > v_available AND NOT v_reclaimed THEN
          -- Short: reclaim dead holds once, under the lock we hold, as reserve_tickets does.
          v_reclaimed := true;
          IF internal.reclaim_expired_holds(v_tt.id) > 0 THEN
            SELECT available_quantity - v_taken INTO v_available FROM ticket_types WHERE id = v_tt.id;
          END IF;
        END IF;
        IF v_qty[i] <= v_available THEN
          v_id := gen_random_uuid();
          v_available := v_available - v_qty[i];
          v_taken := v_taken + v_qty[i];
          v_new_ids := v_new_ids || v_id;
          v_new_users := v_new_users || v_users[i];
          v_new_types := v_new_types || v_tt.id;
          v_new_qty := v_new_qty || v_qty[i];
          v_granted[v_pos[i]] := json_build_object(
            'id', v_id, 'user_id', v_users[i], 'ticket_type_id', v_tt.id, 'quantity', v_qty[i], 'status', 'ACTIVE',
            'expires_at', v_expires, 'created_at', now());
        ELSE
          v_states[v_pos[i]] := 'BKSLD';
          v_messages[v_pos[i]] := format('only %s tickets left', v_available);
        END IF;
      END IF;
    END LOOP;
    IF v_taken > 0 THEN
      UPDATE ticket_types
         SET available_quantity = available_quantity - v_taken, version = version + 1
       WHERE id = v_tt.id;
    END IF;
  END LOOP;

  INSERT INTO order_reservations (id, user_id, ticket_type_id, quantity, status, expires_at, created_at)
  SELECT g.id, g.user_id, g.ticket_type_id, g.quantity, 'ACTIVE', v_expires, now()
    FROM unnest(v_new_ids, v_new_users, v_new_types, v_new_qty) AS g(id, user_id, ticket_type_id, quantity);

  -- 3. One row per request, in order; whatever is still unanswered named an unknown ticket type.
  RETURN QUERY
    SELECT g.reservation,
           CASE WHEN g.reservation IS NULL THEN coalesce(g.sqlstate, 'BKNTF') END,
           CASE WHEN g.reservation IS NULL THEN coalesce(g.message, 'ticket type not found') END
      FROM unnest(v_granted, v_states, v_messages) WITH ORDINALITY AS g(reservation, sqlstate, message, ord)
     ORDER BY g.ord;
END;
$$;
COMMENT ON FUNCTION api.reserve_tickets_batch(jsonb) IS
  'Many reservations in one transaction: p_requests is a JSON array of {user_id, '
  'ticket_type_id, quantity}. Returns one row per request, in the same order: the reservation '
  '(as api.reserve_tickets returns it), or NULL with the sqlstate and message api.reserve_tickets '
  'would raise (BKVAL, BKNTF, BKSNO, BKSLD). '
  'Within a ticket type requests are granted in array order while stock lasts (expired holds '
  'reclaimed once when short). Locks each ticket type row once, in id order (lock_timeout 2s). '
  'At most 1000 requests. The gateway uses it to coalesce concurrent reserves.';
