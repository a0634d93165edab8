-- The waiting room (issue 10, item 3), opt-in per event (events.queue_enabled).
--
-- Joining is one insert under the room's row lock (one place per user per event); people who
-- joined before the sale opened are shuffled once, by the first join or poll after it opens (a
-- seeded, recorded shuffle: api.waiting_room_audit recomputes it); later joiners are first come,
-- first served. The serving position is a function of time, computed on every poll, never
-- written by a tick: base + floor(seconds since max(base_at, opened_at) * rate / 60), frozen
-- while paused. Whoever's position is at most the serving position is admitted and gets an
-- admission token: HMAC-SHA256 (key: table admission_secret, owner-only) over event, user and
-- expiry, valid for internal.admission_ttl() from the first poll that said "admitted". The
-- reserve core (internal.reserve) checks it for every request of a queue-enabled event.
--
-- Locks: the waiting_rooms row (join, shuffle, rebase, pause, resume) and then entries. Never
-- together with booking locks. api.update_event holds the events row and then (trigger) the
-- waiting_rooms row; nothing takes them the other way round (a join's insert into waiting_rooms
-- takes only FOR KEY SHARE on the event, which NO KEY UPDATE does not block).

CREATE OR REPLACE FUNCTION internal.admission_ttl()
RETURNS interval
LANGUAGE sql STABLE
AS $$
  SELECT coalesce(nullif(current_setting('booking.admission_ttl', true), ''), '10 minutes')::interval
$$;
COMMENT ON FUNCTION internal.admission_ttl() IS
  'How long an admission lasts from the first poll that said "admitted": setting '
  'booking.admission_ttl (default 10 minutes, like the hold period).';


CREATE OR REPLACE FUNCTION internal.admission_token(p_event_id uuid, p_user_id uuid, p_expires bigint, p_secret bytea)
RETURNS text
LANGUAGE sql IMMUTABLE
AS $$
  -- v1.<expiry, Unix seconds>.<hex HMAC-SHA256 of "v1|event|user|expiry"> (internal.admission_valid
  -- checks the same message, written out there).
  SELECT 'v1.' || p_expires || '.'
         || encode(public.hmac(convert_to('v1|' || p_event_id || '|' || p_user_id || '|' || p_expires, 'UTF8'),
                               p_secret, 'sha256'), 'hex')
$$;
COMMENT ON FUNCTION internal.admission_token(uuid, uuid, bigint, bytea) IS
  'An admission token: v1.<expiry epoch>.<HMAC-SHA256 over event, user and expiry under admission_secret>.';


CREATE OR REPLACE FUNCTION internal.admission_valid(p_token text, p_event_id uuid, p_user_id uuid, p_secret bytea)
RETURNS boolean
LANGUAGE sql STABLE
AS $$
  -- The shape by plain string tests (a regex with a bounded repetition cost ~5 us a call here),
  -- then the expiry, then the token against the one internal.admission_token signs (written
  -- out here: the call cost ~2 us more), compared as sha256 of both so the comparison's timing
  -- says nothing about the expected MAC. CASE keeps the order: the cast runs only on digits. An
  -- expiry with leading zeros is signed by nobody, so its MAC never matches.
  SELECT CASE
    WHEN p_token IS NULL OR p_secret IS NULL OR left(p_token, 3) <> 'v1.' OR length(p_token) > 100 THEN false
    WHEN length(split_part(p_token, '.', 2)) NOT BETWEEN 1 AND 12
         OR translate(split_part(p_token, '.', 2), '0123456789', '') <> '' THEN false
    WHEN split_part(p_token, '.', 2)::bigint <= extract(epoch FROM now()) THEN false
    -- The whole token against the one that would be signed (not only its third part: anything
    -- after it, '.junk', made another string that passed, found in review).
    ELSE public.digest(p_token, 'sha256')
       = public.digest('v1.' || split_part(p_token, '.', 2) || '.'
                       || encode(public.hmac(convert_to('v1|' || p_event_id || '|' || p_user_id || '|'
                                                        || split_part(p_token, '.', 2), 'UTF8'),
                                             p_secret, 'sha256'), 'hex'), 'sha256')
  END
$$;
COMMENT ON FUNCTION internal.admission_valid(text, uuid, uuid, bytea) IS
  'True when p_token is an unexpired admission token of this user for this event.';


CREATE OR REPLACE FUNCTION internal.waiting_room_opens_at(p_event_id uuid)
RETURNS timestamptz
LANGUAGE plpgsql STABLE
AS $$
  -- The earliest start_sale_time of the event's types; -infinity (open from publication) when
  -- one of them has none; infinity (not yet: nothing is on sale) while the event has no type.
  -- Without the last rule a room opened at its first join when the admin had not added the types
  -- yet: no shuffle at the real opening (the first to find the event came first) and everyone
  -- admitted, their tokens expiring, before a type's later start_sale_time.
BEGIN
  RETURN (SELECT CASE WHEN count(*) = 0 THEN 'infinity'::timestamptz
              WHEN bool_or(t.start_sale_time IS NULL) THEN '-infinity'::timestamptz
              ELSE min(t.start_sale_time) END
    FROM public.ticket_types t WHERE t.event_id = p_event_id);
END;
$$;
COMMENT ON FUNCTION internal.waiting_room_opens_at(uuid) IS
  'When an event''s sale opens: the earliest start_sale_time of its ticket types, -infinity '
  '(at publication) when one of them has none, infinity (not yet) while it has no ticket type.';


CREATE OR REPLACE FUNCTION internal.waiting_room_serving(
  w public.waiting_rooms, p_rate integer, p_enabled boolean)
RETURNS integer
LANGUAGE sql STABLE
AS $$
  -- THE admission rule: positions up to this one are admitted. Nobody before the opening;
  -- frozen while paused (or while the room is off); otherwise one more every 60/rate seconds.
  SELECT CASE
    WHEN w.opened_at IS NULL OR now() < w.opened_at THEN 0
    WHEN w.paused_at IS NOT NULL OR NOT p_enabled OR p_rate IS NULL THEN w.base
    ELSE least(w.base + floor(extract(epoch FROM now() - greatest(w.base_at, w.opened_at)) * p_rate / 60),
               2000000000)::integer
  END
$$;
COMMENT ON FUNCTION internal.waiting_room_serving(public.waiting_rooms, integer, boolean) IS
  'The serving position now: 0 before the opening; base while paused; else base + '
  'floor(seconds since max(base_at, opened_at) * rate / 60).';


CREATE OR REPLACE FUNCTION internal.waiting_room_rebase(p_event_id uuid, p_rate integer, p_enabled boolean)
RETURNS void
LANGUAGE sql
AS $$
  -- Before a change of the rule (rate, on/off): the position reached under the old rule becomes
  -- the base, from now on. One statement: it runs on the latest row after any wait.
  UPDATE public.waiting_rooms w
     SET base = internal.waiting_room_serving(w, p_rate, p_enabled), base_at = now(), updated_at = now()
   WHERE w.event_id = p_event_id
$$;
COMMENT ON FUNCTION internal.waiting_room_rebase(uuid, integer, boolean) IS
  'Freezes the serving position reached under the old rate (p_rate, p_enabled) as the base from now on.';


CREATE OR REPLACE FUNCTION internal.waiting_room_event(p_event_id uuid)
RETURNS public.events
LANGUAGE plpgsql STABLE
AS $$
DECLARE
  v_event public.events;
BEGIN
  SELECT * INTO v_event FROM public.events WHERE id = p_event_id;
  IF NOT FOUND OR NOT v_event.queue_enabled OR v_event.status = 'DRAFT' THEN
    RAISE EXCEPTION USING ERRCODE = 'BKNTF', MESSAGE = 'this event has no waiting room';
  END IF;
  RETURN v_event;
END;
$$;
COMMENT ON FUNCTION internal.waiting_room_event(uuid) IS
  'The event, if it has a waiting room (queue_enabled, not a draft). Raises BKNTF.';


CREATE OR REPLACE FUNCTION internal.waiting_room_open(p_event_id uuid, p_wait boolean DEFAULT true)
RETURNS public.waiting_rooms
LANGUAGE plpgsql
AS $$
DECLARE
  w public.waiting_rooms;
  v_opens timestamptz;
  v_seed text;
  v_count integer;
BEGIN
  -- Once per event: when the sale has opened and nobody shuffled yet. Under the room's lock.
  SELECT * INTO w FROM public.waiting_rooms WHERE event_id = p_event_id;
  IF NOT FOUND OR w.shuffle_seed IS NOT NULL THEN
    RETURN w;
  END IF;
  v_opens := internal.waiting_room_opens_at(p_event_id);
  IF now() < v_opens THEN
    RETURN w;
  END IF;
  IF NOT p_wait THEN
    -- A poll does not queue behind a shuffle in progress (a big room's takes seconds: every poll
    -- of the crowd would hold a connection for the lock timeout, then fail): it answers "no place
    -- yet" from the row as it is, and asks again later.
    SELECT * INTO w FROM public.waiting_rooms WHERE event_id = p_event_id FOR UPDATE SKIP LOCKED;
    IF NOT FOUND THEN
      SELECT * INTO w FROM public.waiting_rooms WHERE event_id = p_event_id;
      RETURN w;
    END IF;
  ELSE
    SELECT * INTO w FROM public.waiting_rooms WHERE event_id = p_event_id FOR UPDATE;
  END IF;
  IF w.shuffle_seed IS NOT NULL THEN  -- another transaction did it while we waited
    RETURN w;
  END IF;
  -- The shuffle: everyone here now joined before the opening (a join after it shuffles first).
  -- Order: sha256(seed || user id); a DBA recomputes it from the recorded seed.
  v_seed := encode(public.gen_random_bytes(16), 'hex');
  UPDATE public.waiting_room_entries e SET position = s.rank
    FROM (SELECT x.user_id, row_number() OVER (ORDER BY internal.shuffle_key(v_seed, x.user_id), x.user_id) AS rank
            FROM public.waiting_room_entries x WHERE x.event_id = p_event_id) s
   WHERE e.event_id = p_event_id AND e.user_id = s.user_id;
  GET DIAGNOSTICS v_count = ROW_COUNT;
  UPDATE public.waiting_rooms
     SET shuffle_seed = v_seed, shuffled_entries = v_count, shuffled_through = w.joined, shuffled_at = now(),
         opened_at = CASE WHEN v_opens = '-infinity' THEN now() ELSE v_opens END, updated_at = now()
   WHERE event_id = p_event_id
  RETURNING * INTO w;
  RETURN w;
END;
$$;
COMMENT ON FUNCTION internal.waiting_room_open(uuid, boolean) IS
  'Opens the room once the sale has opened: shuffles everyone who joined before (positions '
  '1..n by sha256(seed || user id), the seed recorded) and records opened_at. Idempotent; locks '
  'the waiting_rooms row only when it shuffles. p_wait false: when another transaction holds the '
  'row (shuffling, or a join), returns the row unshuffled instead of waiting.';


CREATE OR REPLACE FUNCTION internal.shuffle_key(p_seed text, p_user_id uuid)
RETURNS bytea
LANGUAGE sql IMMUTABLE
AS $$
  SELECT public.digest(p_seed || ':' || p_user_id, 'sha256')
$$;
COMMENT ON FUNCTION internal.shuffle_key(text, uuid) IS
  'The sort key of the pre-opening shuffle: sha256(seed || '':'' || user id).';


CREATE OR REPLACE FUNCTION internal.waiting_room_answer(
  e public.events, w public.waiting_rooms, p_user_id uuid)
RETURNS json
LANGUAGE plpgsql
AS $$
DECLARE
  v_entry public.waiting_room_entries;
  v_serving integer := internal.waiting_room_serving(w, e.admission_rate_per_minute, e.queue_enabled);
  v_opens timestamptz;
  v_expires bigint;
  v_eta numeric;
BEGIN
  SELECT * INTO v_entry FROM public.waiting_room_entries WHERE event_id = e.id AND user_id = p_user_id;
  IF NOT FOUND THEN
    RAISE EXCEPTION USING ERRCODE = 'BKNTF', MESSAGE = 'you are not in this waiting room',
      HINT = 'POST /events/{event_id}/queue joins it';
  END IF;
  IF v_entry.position IS NULL THEN  -- before the opening: the shuffle decides the place
    v_opens := internal.waiting_room_opens_at(e.id);
    RETURN json_build_object('event_id', e.id, 'status', 'waiting', 'position', NULL, 'ahead', NULL,
      'eta_seconds', CASE WHEN v_opens > now() AND isfinite(v_opens) THEN ceil(extract(epoch FROM v_opens - now()))::bigint END,
      'admission_token', NULL, 'admission_expires_at', NULL);
  END IF;
  IF v_entry.position > v_serving THEN
    -- Exact time left under the current rule (null while paused): position p is served once
    -- base + elapsed * rate / 60 >= p.
    IF w.paused_at IS NULL AND e.queue_enabled THEN
      v_eta := (v_entry.position - w.base) * 60.0 / e.admission_rate_per_minute
               - extract(epoch FROM now() - greatest(w.base_at, w.opened_at));
    END IF;
    RETURN json_build_object('event_id', e.id, 'status', 'waiting', 'position', v_entry.position,
      'ahead', v_entry.position - v_serving - 1,
      'eta_seconds', CASE WHEN v_eta IS NOT NULL THEN ceil(greatest(v_eta, 0))::bigint END,
      'admission_token', NULL, 'admission_expires_at', NULL);
  END IF;
  IF v_entry.admitted_at IS NULL THEN  -- the one write of a poll: the admission's window starts
    UPDATE public.waiting_room_entries SET admitted_at = now()
     WHERE event_id = e.id AND user_id = p_user_id AND admitted_at IS NULL
    RETURNING * INTO v_entry;
    IF NOT FOUND THEN  -- a concurrent poll of the same user was first
      SELECT * INTO v_entry FROM public.waiting_room_entries WHERE event_id = e.id AND user_id = p_user_id;
    END IF;
  END IF;
  v_expires := floor(extract(epoch FROM v_entry.admitted_at + internal.admission_ttl()))::bigint;
  RETURN json_build_object('event_id', e.id, 'status', 'admitted', 'position', v_entry.position,
    'ahead', 0, 'eta_seconds', 0,
    'admission_token', internal.admission_token(e.id, p_user_id, v_expires,
                                                (SELECT s.secret FROM public.admission_secret s)),
    'admission_expires_at', to_timestamp(v_expires));
END;
$$;
COMMENT ON FUNCTION internal.waiting_room_answer(public.events, public.waiting_rooms, uuid) IS
  'A user''s place as the API answers it: {event_id, status, position, ahead, eta_seconds, '
  'admission_token, admission_expires_at}. Raises BKNTF when the user has not joined.';


-- ------------------------------------------------------------------ the gateways' mirror

CREATE OR REPLACE FUNCTION internal.waiting_room_mirror(w public.waiting_rooms, e public.events)
RETURNS json
LANGUAGE sql STABLE
AS $$
  -- What a gateway needs to compute the rule itself (gateway/waiting_room.py, the same formula as
  -- internal.waiting_room_serving): times as Unix microseconds, exact. opens_at only before the
  -- shuffle (null: at publication, i.e. already open, or not known yet: no ticket type; either
  -- way the gateway leaves the answer to the database).
  SELECT json_build_object(
    'event_id', w.event_id, 'enabled', e.queue_enabled AND e.status <> 'DRAFT',
    'rate', e.admission_rate_per_minute, 'base', w.base,
    'base_at', (extract(epoch FROM w.base_at) * 1000000)::bigint, 'paused', w.paused_at IS NOT NULL,
    'opened_at', (extract(epoch FROM w.opened_at) * 1000000)::bigint, 'shuffled', w.shuffle_seed IS NOT NULL,
    'created_at', (extract(epoch FROM w.created_at) * 1000000)::bigint,
    'opens_at', CASE WHEN w.shuffle_seed IS NULL THEN
                  (extract(epoch FROM nullif(nullif(internal.waiting_room_opens_at(w.event_id), '-infinity'), 'infinity'))
                   * 1000000)::bigint
                END)
$$;
COMMENT ON FUNCTION internal.waiting_room_mirror(public.waiting_rooms, public.events) IS
  'A room''s rule as the gateways mirror it: {event_id, enabled, rate, base, base_at, paused, '
  'opened_at, shuffled, created_at (which incarnation of the room), opens_at} (times in Unix '
  'microseconds).';


CREATE OR REPLACE FUNCTION internal.waiting_room_notify(p_event_id uuid, p_only_before_opening boolean)
RETURNS void
LANGUAGE plpgsql
AS $$
BEGIN
  -- NOTIFY booking_waiting_rooms 'r:<mirror JSON>' (delivered at commit, in commit order: every
  -- change of a room holds its row lock, so the last notice a gateway gets is the latest state).
  PERFORM pg_notify('booking_waiting_rooms', 'r:' || internal.waiting_room_mirror(w, e)::text)
     FROM public.waiting_rooms w JOIN public.events e ON e.id = w.event_id
    WHERE w.event_id = p_event_id AND (NOT p_only_before_opening OR w.shuffle_seed IS NULL);
END;
$$;
COMMENT ON FUNCTION internal.waiting_room_notify(uuid, boolean) IS
  'Tells every gateway a room''s new rule (NOTIFY booking_waiting_rooms, r:<mirror JSON>); with '
  'p_only_before_opening, only while it has not opened. No room: nothing.';


CREATE OR REPLACE FUNCTION api.waiting_room_state()
RETURNS json
LANGUAGE sql VOLATILE  -- clock_timestamp(): the server's clock when it answers
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
  SELECT json_build_object(
    'now', (extract(epoch FROM clock_timestamp()) * 1000000)::bigint,
    'rooms', coalesce((SELECT json_agg(internal.waiting_room_mirror(w, e))
                         FROM waiting_rooms w JOIN events e ON e.id = w.event_id
                        WHERE e.queue_enabled AND e.end_time > now()), '[]'::json))
$$;
COMMENT ON FUNCTION api.waiting_room_state() IS
  'What every gateway mirrors, loaded whole when its listener (re)connects: {now (this server''s '
  'clock, Unix microseconds), rooms: [internal.waiting_room_mirror of every room of an event on '
  'sale with its room on]}. Changes then come by NOTIFY booking_waiting_rooms. Locks nothing.';


CREATE OR REPLACE FUNCTION api.waiting_room_positions(p_event_id uuid, p_user_ids uuid[])
RETURNS TABLE (user_id uuid, "position" integer)
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
  -- At most 10,000 at a time: a gateway asks for the fans it knows in chunks.
  SELECT x.user_id, x.position
    FROM waiting_room_entries x
   WHERE x.event_id = p_event_id AND x.position IS NOT NULL
     AND x.user_id = ANY (p_user_ids[1:10000])
$$;
COMMENT ON FUNCTION api.waiting_room_positions(uuid, uuid[]) IS
  'The positions of these users in an event''s waiting room (those that have one; at most 10,000 '
  'users a call). A gateway asks once the opening''s shuffle is done, for every fan it knows who '
  'joined before it, so their next polls are answered from its memory instead of each one calling '
  'the database at the same moment. Reads only.';


CREATE OR REPLACE FUNCTION api.join_waiting_room_batch(p_event_id uuid, p_user_ids uuid[])
RETURNS TABLE (place json, sqlstate text, message text)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
SET lock_timeout = '2s'
AS $$
DECLARE
  e events := internal.waiting_room_event(p_event_id);
  w waiting_rooms;
  v_count integer := coalesce(cardinality(p_user_ids), 0);
  v_known boolean[];
  v_new integer;
BEGIN
  -- The gateway coalesces concurrent joins of one event into one call (gateway/onsale/join.py):
  -- one lock of the room row, one insert, one update of joined, one commit for all of them.
  IF v_count > 1000 THEN
    RAISE EXCEPTION USING ERRCODE = 'BKVAL', MESSAGE = 'at most 1000 users per call';
  END IF;
  IF e.status <> 'PUBLISHED' OR e.end_time <= now() THEN
    RAISE EXCEPTION USING ERRCODE = 'BKSNO', MESSAGE = format('the event is not on sale (it is %s)',
      CASE WHEN e.status = 'PUBLISHED' THEN 'over' ELSE e.status END);
  END IF;
  IF v_count = 0 THEN
    RETURN;
  END IF;
  SELECT array_agg(x.id IS NOT NULL ORDER BY u.ord) INTO v_known
    FROM unnest(p_user_ids) WITH ORDINALITY AS u(user_id, ord) LEFT JOIN users x ON x.id = u.user_id;
  -- Everyone known joined already (joining again: the same place, no write): no lock.
  IF EXISTS (SELECT 1 FROM unnest(p_user_ids) WITH ORDINALITY AS u(user_id, ord)
              WHERE v_known[u.ord]
                AND NOT EXISTS (SELECT 1 FROM waiting_room_entries x
                                 WHERE x.event_id = p_event_id AND x.user_id = u.user_id)) THEN
    INSERT INTO waiting_rooms (event_id) VALUES (p_event_id) ON CONFLICT DO NOTHING;
    PERFORM internal.waiting_room_open(p_event_id);  -- after the opening, shuffle before joining
    SELECT * INTO w FROM waiting_rooms WHERE event_id = p_event_id FOR UPDATE;
    -- A fresh statement after the lock: concurrent joins of these users have committed by now.
    -- New places in the order of the batch (a user named twice gets the first one's), seq after
    -- the last; after the opening, position = seq.
    INSERT INTO waiting_room_entries (event_id, user_id, seq, position)
    SELECT p_event_id, n.user_id, w.joined + n.rank, CASE WHEN w.shuffle_seed IS NOT NULL THEN w.joined + n.rank END
      FROM (SELECT f.user_id, row_number() OVER (ORDER BY f.ord)::integer AS rank
              FROM (SELECT u.user_id, min(u.ord) AS ord
                      FROM unnest(p_user_ids) WITH ORDINALITY AS u(user_id, ord)
                     WHERE v_known[u.ord]
                       AND NOT EXISTS (SELECT 1 FROM waiting_room_entries x
                                        WHERE x.event_id = p_event_id AND x.user_id = u.user_id)
                     GROUP BY u.user_id) f) n
     ORDER BY n.rank;
    GET DIAGNOSTICS v_new = ROW_COUNT;
    IF v_new > 0 THEN
      -- Idle capacity is banked for one person only: when the serving position has run more than
      -- one place past everyone who joined, it restarts at the batch's first new joiner (admitted
      -- at once) and the rate counts from now; the others queue behind. Else an hour of an empty
      -- room would let the next thousands in at once. Updates of joined alone notify nobody (the
      -- trigger waiting_room_changed watches the rule's columns only).
      IF w.shuffle_seed IS NOT NULL AND w.paused_at IS NULL
         AND internal.waiting_room_serving(w, e.admission_rate_per_minute, e.queue_enabled) > w.joined + 1 THEN
        UPDATE waiting_rooms SET joined = w.joined + v_new, base = w.joined + 1, base_at = now(), updated_at = now()
         WHERE event_id = p_event_id RETURNING * INTO w;
      ELSE
        UPDATE waiting_rooms SET joined = w.joined + v_new, updated_at = now()
         WHERE event_id = p_event_id RETURNING * INTO w;
      END IF;
    END IF;
  ELSE  -- everyone already in: do not wait for a shuffle another transaction is running
    w := internal.waiting_room_open(p_event_id, p_wait => false);
  END IF;
  -- One answer per element, in order: the place, or this element's own error.
  RETURN QUERY
    SELECT CASE WHEN v_known[u.ord] THEN internal.waiting_room_answer(e, w, u.user_id) END,
           CASE WHEN NOT v_known[u.ord] THEN 'BKNTF' END,
           CASE WHEN NOT v_known[u.ord] THEN 'user not found' END
      FROM unnest(p_user_ids) WITH ORDINALITY AS u(user_id, ord)
     ORDER BY u.ord;
END;
$$;
COMMENT ON FUNCTION api.join_waiting_room_batch(uuid, uuid[]) IS
  'Joins many users to one event''s waiting room in one transaction (the gateway coalesces '
  'concurrent joins): one row per element, in order, (place, NULL, NULL) as api.join_waiting_room '
  'answers, or (NULL, sqlstate, message) for that element alone (BKNTF: unknown user). New '
  'places take consecutive seq in the order of the array; a user named twice, or already in, gets '
  'the existing place. Locks the waiting_rooms row once. Raises for all: BKNTF (no waiting room), '
  'BKSNO (cancelled or over), BKVAL (more than 1000 users).';


CREATE OR REPLACE FUNCTION api.join_waiting_room(p_event_id uuid, p_user_id uuid)
RETURNS json
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
SET lock_timeout = '2s'
AS $$
DECLARE
  r record;
BEGIN
  -- The rule lives once: a batch of one.
  SELECT * INTO r FROM api.join_waiting_room_batch(p_event_id, ARRAY[p_user_id]);
  IF r.sqlstate IS NOT NULL THEN
    RAISE EXCEPTION USING ERRCODE = r.sqlstate, MESSAGE = r.message;
  END IF;
  RETURN r.place;
END;
$$;
COMMENT ON FUNCTION api.join_waiting_room(uuid, uuid) IS
  'Joins the event''s waiting room (one place per user: joining again returns the same place) and '
  'returns the place as api.waiting_room_status does. Before the sale opens, the place is decided '
  'by the shuffle at the opening; after, first come, first served. A batch of one: '
  'api.join_waiting_room_batch. Locks the waiting_rooms row. Raises BKNTF (no waiting room, '
  'unknown user), BKSNO (cancelled or over).';


CREATE OR REPLACE FUNCTION api.waiting_room_status(p_event_id uuid, p_user_id uuid)
RETURNS json
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
SET lock_timeout = '2s'
AS $$
DECLARE
  e events := internal.waiting_room_event(p_event_id);
  w waiting_rooms;
BEGIN
  SELECT * INTO w FROM waiting_rooms WHERE event_id = p_event_id;
  IF FOUND AND w.shuffle_seed IS NULL THEN
    w := internal.waiting_room_open(p_event_id, p_wait => false);  -- writes once per event, at the opening
  END IF;
  IF w.event_id IS NULL THEN
    RAISE EXCEPTION USING ERRCODE = 'BKNTF', MESSAGE = 'you are not in this waiting room',
      HINT = 'POST /events/{event_id}/queue joins it';
  END IF;
  RETURN internal.waiting_room_answer(e, w, p_user_id);
END;
$$;
COMMENT ON FUNCTION api.waiting_room_status(uuid, uuid) IS
  'The caller''s place now: {event_id, status: waiting | admitted, position, ahead, eta_seconds, '
  'admission_token, admission_expires_at}. Reads only, except once per event (the shuffle at the '
  'opening) and once per user (the moment they are first told "admitted"). Raises BKNTF (no '
  'waiting room, or not joined).';


-- ------------------------------------------------------------------ DBAs

CREATE OR REPLACE FUNCTION api.waiting_room(p_event_id uuid)
RETURNS TABLE (event_id uuid, queue_enabled boolean, admission_rate_per_minute integer, joined integer,
               serving integer, admitted integer, waiting integer, tokens_issued bigint, paused boolean,
               opened_at timestamptz, shuffled_entries integer, shuffle_seed text, shuffled_at timestamptz)
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
  SELECT e.id, e.queue_enabled, e.admission_rate_per_minute, coalesce(w.joined, 0),
         coalesce(internal.waiting_room_serving(w, e.admission_rate_per_minute, e.queue_enabled), 0) AS serving,
         least(coalesce(internal.waiting_room_serving(w, e.admission_rate_per_minute, e.queue_enabled), 0),
               coalesce(w.joined, 0)),
         greatest(coalesce(w.joined, 0) - coalesce(internal.waiting_room_serving(w, e.admission_rate_per_minute,
                                                                                 e.queue_enabled), 0), 0),
         (SELECT count(*) FROM waiting_room_entries x WHERE x.event_id = e.id AND x.admitted_at IS NOT NULL),
         w.paused_at IS NOT NULL, w.opened_at, w.shuffled_entries, w.shuffle_seed, w.shuffled_at
    FROM events e LEFT JOIN waiting_rooms w ON w.event_id = e.id
   WHERE e.id = p_event_id
$$;
COMMENT ON FUNCTION api.waiting_room(uuid) IS
  '(DBA-only) An event''s waiting room: SELECT * FROM api.waiting_room(''<event id>''): people '
  'joined, serving position, admitted, waiting, tokens issued, rate, paused, the opening and its '
  'shuffle (seed, count, time).';


CREATE OR REPLACE FUNCTION api.open_waiting_rooms()
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
  v_room record;
  v_opened integer := 0;
BEGIN
  -- Every room whose sale has opened and that nobody shuffled yet (no one polled or joined since
  -- the opening, or every attempt from a gateway ran out of the gateway's statement_timeout: a
  -- shuffle costs ~15 us per entry, so a few hundred thousand fans take longer than 5 s).
  FOR v_room IN
    SELECT w.event_id FROM waiting_rooms w JOIN events e ON e.id = w.event_id
     WHERE w.shuffle_seed IS NULL AND e.queue_enabled AND e.status = 'PUBLISHED'
       AND internal.waiting_room_opens_at(w.event_id) <= now()
     ORDER BY w.event_id
  LOOP
    IF (internal.waiting_room_open(v_room.event_id)).shuffle_seed IS NOT NULL THEN
      v_opened := v_opened + 1;
    END IF;
  END LOOP;
  RETURN v_opened;
END;
$$;
COMMENT ON FUNCTION api.open_waiting_rooms() IS
  '(DBA-only) Opens every waiting room whose sale has opened and that is not shuffled yet (pg_cron '
  'runs it every minute), without the gateway''s statement_timeout (a big room''s shuffle can outlast '
  'it). Returns how many rooms it shuffled (rooms shuffled meanwhile by a poll are not counted).';


CREATE OR REPLACE FUNCTION internal.waiting_room_row(p_event_id uuid)
RETURNS void
LANGUAGE plpgsql
AS $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM public.events WHERE id = p_event_id) THEN
    RAISE EXCEPTION USING ERRCODE = 'BKNTF', MESSAGE = 'event not found';
  END IF;
  INSERT INTO public.waiting_rooms (event_id) VALUES (p_event_id) ON CONFLICT DO NOTHING;
END;
$$;
COMMENT ON FUNCTION internal.waiting_room_row(uuid) IS
  'Makes sure the event''s waiting_rooms row exists (a pause before anyone joined). Raises BKNTF.';


CREATE OR REPLACE FUNCTION api.set_waiting_room_rate(p_event_id uuid, p_rate integer)
RETURNS json
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
SET lock_timeout = '2s'
AS $$
BEGIN
  IF p_rate IS NULL OR p_rate NOT BETWEEN 1 AND 1000000 THEN
    RAISE EXCEPTION USING ERRCODE = 'BKVAL', MESSAGE = 'admission_rate_per_minute must be between 1 and 1000000';
  END IF;
  PERFORM internal.waiting_room_row(p_event_id);
  -- The trigger waiting_room_rate_changed rebases under the old rate first.
  UPDATE events SET admission_rate_per_minute = p_rate WHERE id = p_event_id;
  RETURN (SELECT row_to_json(r) FROM api.waiting_room(p_event_id) r);
END;
$$;
COMMENT ON FUNCTION api.set_waiting_room_rate(uuid, integer) IS
  '(DBA-only) Changes the admission rate live (from now on; the position reached so far is kept). '
  'Returns api.waiting_room''s row as JSON. Raises BKVAL, BKNTF.';


CREATE OR REPLACE FUNCTION api.pause_waiting_room(p_event_id uuid)
RETURNS json
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
SET lock_timeout = '2s'
AS $$
BEGIN
  PERFORM internal.waiting_room_row(p_event_id);
  UPDATE waiting_rooms w
     SET base = internal.waiting_room_serving(w, e.admission_rate_per_minute, e.queue_enabled),
         base_at = now(), paused_at = now(), updated_at = now()
    FROM events e
   WHERE w.event_id = p_event_id AND e.id = w.event_id AND w.paused_at IS NULL;
  RETURN (SELECT row_to_json(r) FROM api.waiting_room(p_event_id) r);
END;
$$;
COMMENT ON FUNCTION api.pause_waiting_room(uuid) IS
  '(DBA-only) Stops admitting (the serving position freezes; people admitted keep their tokens). '
  'Idempotent. Returns api.waiting_room''s row as JSON. Raises BKNTF.';


CREATE OR REPLACE FUNCTION api.resume_waiting_room(p_event_id uuid)
RETURNS json
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
SET lock_timeout = '2s'
AS $$
BEGIN
  PERFORM internal.waiting_room_row(p_event_id);
  UPDATE waiting_rooms SET base_at = now(), paused_at = NULL, updated_at = now()
   WHERE event_id = p_event_id AND paused_at IS NOT NULL;
  RETURN (SELECT row_to_json(r) FROM api.waiting_room(p_event_id) r);
END;
$$;
COMMENT ON FUNCTION api.resume_waiting_room(uuid) IS
  '(DBA-only) Admits again at the event''s rate, counting from now. Idempotent. Returns '
  'api.waiting_room''s row as JSON. Raises BKNTF.';


CREATE OR REPLACE FUNCTION api.waiting_room_audit(p_event_id uuid)
RETURNS TABLE (user_id uuid, seq integer, recorded_position integer, recomputed_position integer)
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
  -- The shuffle again from its recorded seed: rows where the recorded position differs (none:
  -- the order is the seeded one). Later joiners must have position = seq.
  WITH w AS (SELECT * FROM waiting_rooms WHERE event_id = p_event_id AND shuffle_seed IS NOT NULL),
       pre AS (SELECT x.user_id, x.seq, x.position,
                      row_number() OVER (ORDER BY internal.shuffle_key(w.shuffle_seed, x.user_id), x.user_id)::integer AS rank
                 FROM waiting_room_entries x JOIN w ON x.event_id = w.event_id
                WHERE x.seq <= w.shuffled_through)
  SELECT pre.user_id, pre.seq, pre.position, pre.rank FROM pre WHERE pre.position IS DISTINCT FROM pre.rank
  UNION ALL
  SELECT x.user_id, x.seq, x.position, x.seq
    FROM waiting_room_entries x JOIN w ON x.event_id = w.event_id
   WHERE x.seq > w.shuffled_through AND x.position IS DISTINCT FROM x.seq
$$;
COMMENT ON FUNCTION api.waiting_room_audit(uuid) IS
  '(DBA-only) Checks an event''s recorded admission order: recomputes the opening shuffle from '
  'its seed (sha256(seed || '':'' || user id), ascending) and lists every entry whose recorded '
  'position differs; later joiners must be in arrival order (position = seq). No rows: consistent.';


CREATE OR REPLACE FUNCTION api.rotate_admission_secret()
RETURNS json
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
  v_live bigint;
BEGIN
  SELECT count(*) INTO v_live FROM waiting_room_entries
   WHERE admitted_at IS NOT NULL AND admitted_at + internal.admission_ttl() > now();
  UPDATE admission_secret SET secret = gen_random_bytes(32), created_at = now();
  -- The gateways drop the admission answers they hold (they carry tokens under the old key).
  PERFORM pg_notify('booking_waiting_rooms', 'k');
  RETURN json_build_object('rotated_at', now(), 'live_admissions', v_live);
END;
$$;
COMMENT ON FUNCTION api.rotate_admission_secret() IS
  '(DBA-only) A new key for admission tokens (when the old one may have leaked): every token '
  'issued so far stops working at once, everywhere. An admitted fan''s next poll gets a token under '
  'the new key with the same expiry (the admission window is not extended). Returns {rotated_at, '
  'live_admissions: admissions whose window was still open}. Locks the admission_secret row.';
