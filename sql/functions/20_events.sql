-- Events and ticket types: the public catalogue and its administration.
-- Every change fires the catalogue NOTIFY (triggers in migration 0002) so gateways drop
-- their cached lists at once.

CREATE OR REPLACE FUNCTION internal.check_event(
  p_slug text, p_name text, p_location text, p_banner_url text,
  p_start_time timestamptz, p_end_time timestamptz)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
AS $$
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
$$;
COMMENT ON FUNCTION internal.check_event(text, text, text, text, timestamptz, timestamptz) IS
  'Field checks for an event, before they meet the column types. Raises BKVAL.';


CREATE OR REPLACE FUNCTION internal.check_ticket_type(
  p_name text, p_price numeric, p_initial_quantity integer,
  p_start_sale_time timestamptz, p_end_sale_time timestamptz)
RETURNS void
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
COMMENT ON FUNCTION internal.check_ticket_type(text, numeric, integer, timestamptz, timestamptz) IS
  'Field checks for a ticket type, before they meet the column types. Raises BKVAL.';


CREATE OR REPLACE FUNCTION internal.check_cap(p_name text, p_cap integer)
RETURNS integer
LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
  IF p_cap < 1 OR p_cap > 1000000 THEN
    RAISE EXCEPTION USING ERRCODE = 'BKVAL', MESSAGE = format('%s must be between 1 and 1000000, or null (no cap)', p_name);
  END IF;
  RETURN p_cap;
END;
$$;
COMMENT ON FUNCTION internal.check_cap(text, integer) IS
  'A per-buyer cap (max_per_user, max_tickets_per_user): 1..1000000 or NULL (no cap). Raises BKVAL.';


CREATE OR REPLACE FUNCTION internal.check_waiting_room(p_queue_enabled boolean, p_rate integer)
RETURNS void
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
COMMENT ON FUNCTION internal.check_waiting_room(boolean, integer) IS
  'An event''s waiting-room settings: the rate 1..1000000, required when queue_enabled. Raises BKVAL.';


CREATE OR REPLACE FUNCTION internal.cap_change(p_changes jsonb, p_name text, p_current integer)
RETURNS integer
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
COMMENT ON FUNCTION internal.cap_change(jsonb, text, integer) IS
  'The new value of a cap in a patch (p_current when not named; NULL clears it). Raises BKVAL.';


CREATE OR REPLACE FUNCTION internal.check_change_keys(p_changes jsonb, p_allowed text[])
RETURNS void
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
COMMENT ON FUNCTION internal.check_change_keys(jsonb, text[]) IS
  'Rejects a patch that is not an object or names fields outside p_allowed. Raises BKVAL.';


CREATE OR REPLACE FUNCTION api.list_published_events(
  p_query text DEFAULT NULL, p_limit integer DEFAULT NULL,
  p_after_start_time timestamptz DEFAULT NULL, p_after_id uuid DEFAULT NULL)
RETURNS json
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
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
COMMENT ON FUNCTION api.list_published_events(text, integer, timestamptz, uuid) IS
  'Published events that have not ended, by (start_time, id), each with its ticket types (no '
  'live stock: this list is cached by gateways). p_query searches names: full-text (seed index) '
  'or a partial word (trigram index). Pages: at most p_limit events (NULL: all), after the '
  'event (p_after_start_time, p_after_id) when given (keyset: stable while events are added). '
  'Locks nothing. Raises BKVAL (query over 200 characters, limit below 1).';


CREATE OR REPLACE FUNCTION api.get_event(p_id_or_slug text)
RETURNS json
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
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
$$;
COMMENT ON FUNCTION api.get_event(text) IS
  'One event by id or slug with its ticket types and LIVE available_quantity / on_sale. '
  'Drafts are not found. Locks nothing. Raises BKNTF.';


CREATE OR REPLACE FUNCTION api.admin_get_event(p_event_id uuid)
RETURNS json
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
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
COMMENT ON FUNCTION api.admin_get_event(uuid) IS
  'Admin view of one event in any status (drafts included), with live stock. Locks nothing. '
  'Raises BKNTF.';


CREATE OR REPLACE FUNCTION api.create_event(
  p_slug text, p_name text, p_location text, p_start_time timestamptz, p_end_time timestamptz,
  p_description text DEFAULT NULL, p_banner_url text DEFAULT NULL, p_max_tickets_per_user integer DEFAULT NULL,
  p_queue_enabled boolean DEFAULT false, p_admission_rate_per_minute integer DEFAULT NULL)
RETURNS json
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
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
COMMENT ON FUNCTION api.create_event(text, text, text, timestamptz, timestamptz, text, text, integer, boolean, integer) IS
  'Creates an event in status DRAFT and returns it. p_max_tickets_per_user: seats one buyer may '
  'hold or own over all its ticket types (NULL: no cap). p_queue_enabled: the sale goes through '
  'a waiting room admitting p_admission_rate_per_minute people a minute (1..1000000, required '
  'then). Raises BKVAL (fields), BKSLG (slug taken).';


CREATE OR REPLACE FUNCTION api.update_event(p_event_id uuid, p_changes jsonb)
RETURNS json
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
SET lock_timeout = '2s'
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
COMMENT ON FUNCTION api.update_event(uuid, jsonb) IS
  'Patches an event: p_changes is a JSON object with any of slug, name, description, '
  'banner_url, location, start_time, end_time, max_tickets_per_user (null: no cap; applies to '
  'reserves from now on, seats already held stay), queue_enabled, admission_rate_per_minute (a '
  'change applies from now on: the waiting room keeps the position it reached). Locks the event '
  'row (and, through a trigger, its waiting_rooms row). Raises BKVAL, BKNTF, '
  'BKSLG, BKIST (cancelled or ended events are frozen).';


CREATE OR REPLACE FUNCTION internal.set_event_status(p_event_id uuid, p_to text, p_from text[])
RETURNS json
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
COMMENT ON FUNCTION internal.set_event_status(uuid, text, text[]) IS
  'Moves an event to p_to if its status is one of p_from (same status: no-op). Locks the event row.';


CREATE OR REPLACE FUNCTION api.publish_event(p_event_id uuid)
RETURNS json
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
SET lock_timeout = '2s'
AS $$
  SELECT internal.set_event_status(p_event_id, 'PUBLISHED', ARRAY['DRAFT'])
$$;
COMMENT ON FUNCTION api.publish_event(uuid) IS
  'DRAFT -> PUBLISHED (already published: returns it unchanged). Locks the event row. '
  'Raises BKNTF, BKIST.';


CREATE OR REPLACE FUNCTION api.cancel_event(p_event_id uuid)
RETURNS json
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
SET lock_timeout = '2s'
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
COMMENT ON FUNCTION api.cancel_event(uuid) IS
  'DRAFT/PUBLISHED -> CANCELLED. Sales stop at once; active holds can no longer be completed '
  'and return to stock when they expire. One refund_cancelled_event job (queue payments, lock '
  'cancel_event:<id>) then settles the orders in batches (api.refund_cancelled_event): every PAID '
  'order becomes REFUND_PENDING (tickets CANCELLED, seats back, a refund_payment job each: the '
  'worker refunds through the provider), every PENDING one CANCELLED. Already CANCELLED: '
  'returned unchanged, the job queued again if none is waiting or running. Locks the event row '
  'only. Raises BKNTF, BKIST.';


CREATE OR REPLACE FUNCTION api.create_ticket_type(
  p_event_id uuid, p_name text, p_price numeric, p_initial_quantity integer,
  p_start_sale_time timestamptz DEFAULT NULL, p_end_sale_time timestamptz DEFAULT NULL,
  p_max_per_user integer DEFAULT NULL)
RETURNS json
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
SET lock_timeout = '2s'
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
COMMENT ON FUNCTION api.create_ticket_type(uuid, text, numeric, integer, timestamptz, timestamptz, integer) IS
  'Adds a ticket type to an event with available_quantity = initial_quantity. NULL sale '
  'times mean open from publication / until the event ends. p_max_per_user: seats of it one '
  'buyer may hold or own (NULL: no cap). Raises BKVAL, BKNTF, BKIST.';


CREATE OR REPLACE FUNCTION api.update_ticket_type(p_ticket_type_id uuid, p_changes jsonb)
RETURNS json
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
SET lock_timeout = '2s'
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
COMMENT ON FUNCTION api.update_ticket_type(uuid, jsonb) IS
  'Patches a ticket type: p_changes with any of name, price, start_sale_time, end_sale_time, '
  'max_per_user (null: no cap; applies to reserves from now on) (stock is changed only by bookings). Locks the ticket type row (same lock reserve takes). '
  'Raises BKVAL, BKNTF.';
