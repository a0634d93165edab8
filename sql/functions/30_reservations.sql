-- Reservations (holds). One core decides every reservation: internal.reserve. The three ways
-- in (one request, one request optimistically, a coalesced batch) only call it.
-- Invariant kept: available_quantity + seats in ACTIVE holds + seats sold = initial_quantity.

CREATE OR REPLACE FUNCTION internal.reserve(
  p_ticket_type_id uuid, p_users uuid[], p_quantities integer[], p_expected_version integer DEFAULT NULL,
  p_raise boolean DEFAULT false, p_admission_tokens text[] DEFAULT NULL,
  OUT reservations json[], OUT sqlstates text[], OUT messages text[])
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
COMMENT ON FUNCTION internal.reserve(uuid, uuid[], integer[], integer, boolean, text[]) IS
  'The one place a reservation is decided: requests of users p_users for p_quantities seats of '
  'one ticket type, in arrival order. For each: arguments (quantity 1..10), the type exists, '
  'the user exists, the event is PUBLISHED and inside the sale window, the waiting room''s '
  'admission when the event has one (events.queue_enabled: p_admission_tokens[i] must be an unexpired '
  'admission token of that user for this event, else BKNAD), the buyer''s caps '
  '(ticket_types.max_per_user, events.max_tickets_per_user: unexpired ACTIVE holds + PENDING/PAID '
  'orders, counted together with the buyer''s earlier requests of the call), stock (reclaiming the '
  'type''s expired holds once when short); granted requests become ACTIVE holds for '
  'booking.hold_period. Locks the ticket_types row once (FOR NO KEY UPDATE); with '
  'p_expected_version only if its version still matches (else BKBSY: compare-and-set); under an '
  'event cap also a transaction advisory lock per (event, buyer), sorted. Returns '
  'three arrays, one element per request: the reservation JSON, or NULL with the SQLSTATE and '
  'message (BKVAL, BKNTF, BKSNO, BKNAD, BKLIM, BKSLD, BKBSY); with p_raise the first refusal is raised '
  'instead, before any hold is written. Callers bound the number of requests (the batch: 1000), '
  'set lock_timeout and take several ticket types in id order.';


CREATE OR REPLACE FUNCTION api.reserve_tickets(
  p_user_id uuid, p_ticket_type_id uuid, p_quantity integer, p_idempotency_key text DEFAULT NULL,
  p_admission_token text DEFAULT NULL)
RETURNS json
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
SET lock_timeout = '2s'
SET plan_cache_mode = force_generic_plan  -- see internal.reserve
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
COMMENT ON FUNCTION api.reserve_tickets(uuid, uuid, integer, text, text) IS
  'Holds p_quantity (1..10) seats of a ticket type for a user for booking.hold_period '
  '(default 10 minutes): checks the event is PUBLISHED and the sale window, reclaims expired '
  'holds of the type when stock is short, decrements stock and returns the ACTIVE reservation. '
  'Decided by internal.reserve. Locks the ticket_types row (FOR NO KEY UPDATE, lock_timeout 2s '
  '-> 55P03). With p_idempotency_key (1-255 visible ASCII), the same user, key and request within '
  '24 hours returns the first reservation again and holds nothing more; the key is recorded in '
  'the same transaction (only successes are recorded). For an event with a waiting room '
  '(queue_enabled), p_admission_token must be an unexpired admission token of this user for it '
  '(api.waiting_room_status hands it out), else BKNAD. Raises BKVAL, BKNTF (unknown user or type), '
  'BKSNO (not on sale), BKNAD (not admitted), BKLIM (a per-buyer cap), BKSLD (sold out), BKIDR (key used with another request).';


CREATE OR REPLACE FUNCTION api.reserve_tickets_optimistic(
  p_user_id uuid, p_ticket_type_id uuid, p_quantity integer, p_idempotency_key text DEFAULT NULL,
  p_admission_token text DEFAULT NULL)
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
COMMENT ON FUNCTION api.reserve_tickets_optimistic(uuid, uuid, integer, text, text) IS
  'Same checks, results, p_idempotency_key and p_admission_token as api.reserve_tickets, but seed method 2: reads the ticket type''s '
  'version without a lock, then internal.reserve takes the row only if the version is unchanged '
  '(compare-and-set); up to 6 attempts with jittered exponential backoff. lock_timeout 2s. '
  'Raises BKVAL, BKNTF, BKSNO, BKNAD, BKLIM, BKSLD, BKIDR, BKBSY (retries exhausted).';


CREATE OR REPLACE FUNCTION api.reserve_tickets_batch(
  p_requests api.reserve_request[], p_idempotency_keys text[] DEFAULT NULL, p_admission_tokens text[] DEFAULT NULL)
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
COMMENT ON FUNCTION api.reserve_tickets_batch(api.reserve_request[], text[], text[]) IS
  'Many reservations in one transaction (the gateway coalesces concurrent reserves of a ticket '
  'type into one call): p_requests is an array of api.reserve_request (user_id, ticket_type_id, '
  'quantity), e.g. ARRAY[ROW(u, t, 2)]::api.reserve_request[]. Returns one row per request, in '
  'order: the reservation (as api.reserve_tickets returns it), or NULL with the sqlstate and '
  'message api.reserve_tickets would raise (BKVAL, BKNTF, BKSNO, BKNAD, BKLIM, BKSLD, BKIDR). Decided by '
  'internal.reserve, one call per ticket type in id order (each row locked once, lock_timeout '
  '2s; with several types, all type rows and (event, buyer) cap locks are taken first); within a '
  'type, granted in array order while stock lasts, a buyer''s requests counted together against '
  'the caps. p_idempotency_keys (optional, aligned with p_requests, NULL elements: no key): keys '
  'claimed first, sorted by (user, key); a replay gets the recorded reservation; the same key '
  'twice in one call: the later request gets the first one''s answer; a refused request''s key '
  'is not recorded. p_admission_tokens (optional, aligned with p_requests): each request''s '
  'waiting-room admission token, needed for events with queue_enabled (else BKNAD). At most 1000 '
  'requests (else BKVAL).';


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
