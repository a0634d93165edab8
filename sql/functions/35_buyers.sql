-- Buyers: per-buyer caps (counted by internal.reserve) and idempotency keys (reserve, complete).
-- Lock order (docs/DESIGN-NOTES.md, "Locks"): idempotency-key rows (sorted by (user_id, key))
-- -> ticket_types rows (ids ascending) -> per-buyer event locks (sorted) -> order_reservations rows.

CREATE OR REPLACE FUNCTION internal.buyer_lock_key(p_event_id uuid, p_user_id uuid)
RETURNS bigint
LANGUAGE sql IMMUTABLE
AS $$
  -- The transaction advisory lock that serialises one buyer's reserves in one event (the event
  -- cap spans ticket types, so their row locks alone do not). Seed 9: our own key space.
  SELECT hashtextextended(p_event_id::text || '/' || p_user_id::text, 9)
$$;
COMMENT ON FUNCTION internal.buyer_lock_key(uuid, uuid) IS
  'The pg_advisory_xact_lock key of (event, buyer): taken by reserves under an event cap.';


CREATE OR REPLACE FUNCTION internal.idempotency_ttl()
RETURNS interval
LANGUAGE sql IMMUTABLE
AS $$
  SELECT interval '24 hours'
$$;
COMMENT ON FUNCTION internal.idempotency_ttl() IS
  'How long an idempotency key answers with its first response (24 hours); older counts as absent.';


CREATE OR REPLACE FUNCTION internal.check_idempotency_key(p_key text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
  IF p_key IS NOT NULL AND p_key !~ '^[!-~]{1,255}$' THEN
    RAISE EXCEPTION USING ERRCODE = 'BKVAL',
      MESSAGE = 'Idempotency-Key must be 1 to 255 visible ASCII characters';
  END IF;
END;
$$;
COMMENT ON FUNCTION internal.check_idempotency_key(text) IS
  'An idempotency key is 1-255 visible ASCII characters (0x21-0x7E). Raises BKVAL.';


CREATE OR REPLACE FUNCTION internal.reserve_fingerprint(p_ticket_type_id uuid, p_quantity integer)
RETURNS text
LANGUAGE sql IMMUTABLE
AS $$
  -- The same for every way in (one request, optimistic, coalesced): a gateway restarted with
  -- another reserve strategy still recognises the request.
  SELECT 'reserve ' || coalesce(p_ticket_type_id::text, '-') || ' ' || coalesce(p_quantity::text, '-')
$$;
COMMENT ON FUNCTION internal.reserve_fingerprint(uuid, integer) IS
  'What an idempotency key of a reserve stands for: the route and its arguments.';


CREATE OR REPLACE FUNCTION internal.claim_idempotency_key(p_user_id uuid, p_key text, p_fingerprint text)
RETURNS json
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
COMMENT ON FUNCTION internal.claim_idempotency_key(uuid, text, text) IS
  'Claims (user, key) for a request (fingerprint) in the caller''s transaction: NULL when the '
  'caller now owns it (do the work, then internal.store_idempotent_response); the stored response '
  'when the same request was done before (within 24 hours); raises BKIDR for another request, '
  'BKVAL for a malformed key. Waits for a concurrent holder of the key.';


CREATE OR REPLACE FUNCTION internal.store_idempotent_response(p_user_id uuid, p_key text, p_response json)
RETURNS json
LANGUAGE plpgsql
AS $$
BEGIN
  UPDATE public.idempotency_keys SET response = p_response WHERE user_id = p_user_id AND key = p_key;
  RETURN p_response;
END;
$$;
COMMENT ON FUNCTION internal.store_idempotent_response(uuid, text, json) IS
  'Records the success response of a claimed key (same transaction as the work); returns it.';


CREATE OR REPLACE FUNCTION api.buyer_counts(p_email text)
RETURNS TABLE (event_id uuid, event_slug text, ticket_type_id uuid, ticket_type_name text,
               held integer, pending integer, paid integer, max_per_user integer,
               event_seats integer, max_tickets_per_user integer)
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
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
COMMENT ON FUNCTION api.buyer_counts(text) IS
  '(DBA-only) What counts against a buyer''s caps, per ticket type the buyer ever reserved or '
  'bought: seats in unexpired ACTIVE holds, in PENDING and in PAID orders, the type''s '
  'max_per_user, the buyer''s seats in the whole event (held + pending + paid) and the event''s '
  'max_tickets_per_user (NULL: no cap). E.g. SELECT * FROM api.buyer_counts(''fan@example.com''). '
  'Locks nothing.';


CREATE OR REPLACE FUNCTION api.purge_idempotency_keys()
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
  v_deleted integer;
BEGIN
  DELETE FROM idempotency_keys WHERE created_at <= now() - internal.idempotency_ttl();
  GET DIAGNOSTICS v_deleted = ROW_COUNT;
  RETURN v_deleted;
END;
$$;
COMMENT ON FUNCTION api.purge_idempotency_keys() IS
  '(DBA-only) Deletes idempotency keys older than 24 hours (they already count as absent); '
  'returns how many. pg_cron runs it every 10 minutes.';
