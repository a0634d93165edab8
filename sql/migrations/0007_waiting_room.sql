-- depends: 0004_buyer_caps_idempotency 0005_rate_limits 0006_sessions
-- The waiting room (issue 10, item 3), opt-in per event. The rules live in
-- sql/functions/80_waiting_room.sql (join, status, the serving position, the shuffle, admission
-- tokens) and in the reserve core (internal.reserve checks the admission token).

-- Per event: whether its sale goes through a waiting room, and how many people it admits per
-- minute (required while the room is on). A CHECK on events is free for reserves (they never
-- update events).
ALTER TABLE events ADD COLUMN queue_enabled BOOLEAN NOT NULL DEFAULT false;
ALTER TABLE events ADD COLUMN admission_rate_per_minute INT;
ALTER TABLE events ADD CONSTRAINT chk_events_admission_rate
  CHECK (admission_rate_per_minute BETWEEN 1 AND 1000000);
ALTER TABLE events ADD CONSTRAINT chk_events_queue_rate
  CHECK (NOT queue_enabled OR admission_rate_per_minute IS NOT NULL);
COMMENT ON COLUMN events.queue_enabled IS
  'The sale goes through a waiting room: reserves need an admission token (X-Admission-Token).';
COMMENT ON COLUMN events.admission_rate_per_minute IS
  'People the waiting room admits per minute, spread evenly (required while queue_enabled).';

-- Both show in the cached event lists: their changes drop the gateways' caches too.
DROP TRIGGER notify_events_change ON events;
CREATE TRIGGER notify_events_change
  AFTER INSERT OR DELETE OR UPDATE OF slug, name, description, banner_url, location,
    start_time, end_time, status, max_tickets_per_user, queue_enabled, admission_rate_per_minute
  ON events FOR EACH STATEMENT EXECUTE FUNCTION notify_catalog_change();

-- One row per event whose room someone joined: the serving position is a function of time,
-- base + floor(seconds since max(base_at, opened_at) * rate / 60), frozen while paused
-- (internal.waiting_room_serving). A change of rate, a pause or a resume "rebases": base takes
-- the position reached, base_at the moment. No tick job writes here.
CREATE TABLE waiting_rooms (
  event_id UUID PRIMARY KEY REFERENCES events(id) ON DELETE CASCADE,
  joined INT NOT NULL DEFAULT 0,          -- entries so far; the next joiner's seq is joined + 1
  base INT NOT NULL DEFAULT 0,            -- the serving position at base_at
  base_at TIMESTAMPTZ,                    -- NULL: from the sale's opening
  paused_at TIMESTAMPTZ,                  -- NULL: admitting
  opened_at TIMESTAMPTZ,                  -- when the sale opened (recorded by the shuffle)
  shuffle_seed TEXT,                      -- NULL: not shuffled yet (the sale has not opened)
  shuffled_entries INT,                   -- how many pre-opening joiners the shuffle ordered
  shuffled_through INT,                   -- ... namely the entries with seq up to this one
  shuffled_at TIMESTAMPTZ,
  updated_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),  -- the last rebase, shuffle or join
  -- Which incarnation of the event's room this is: a room deleted and made again (a DBA's reset)
  -- gets another, so a gateway that reloads knows the places it remembers are void.
  created_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),

  CONSTRAINT chk_waiting_rooms_counts CHECK (joined >= 0 AND base >= 0)
);
COMMENT ON TABLE waiting_rooms IS
  'Per event waiting-room state: entries joined, the serving position (base at base_at, advancing '
  'at events.admission_rate_per_minute unless paused), and the recorded shuffle of the people who '
  'joined before the sale opened (seed, count, time; api.waiting_room_audit recomputes it).';

-- One place per user per event. seq: arrival order (1, 2, ...); position: the admission order
-- (= seq for people who joined after the opening; for earlier ones, their rank in the shuffle).
CREATE TABLE waiting_room_entries (
  event_id UUID NOT NULL REFERENCES waiting_rooms(event_id) ON DELETE CASCADE,
  user_id UUID NOT NULL REFERENCES users(id) ON DELETE CASCADE,
  seq INT NOT NULL,
  position INT,                           -- NULL until the shuffle, for pre-opening joiners
  joined_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
  admitted_at TIMESTAMPTZ,                -- first time the holder was told "admitted": the token's window starts

  PRIMARY KEY (event_id, user_id),
  CONSTRAINT uq_waiting_room_entries_seq UNIQUE (event_id, seq),
  CONSTRAINT uq_waiting_room_entries_position UNIQUE (event_id, position)
);
CREATE INDEX idx_waiting_room_entries_user ON waiting_room_entries(user_id);  -- the users FK's cascade
COMMENT ON TABLE waiting_room_entries IS
  'A user''s place in an event''s waiting room: seq = arrival order, position = admission order.';

-- The key admission tokens are signed with (HMAC-SHA256). Only the owner reads it (the gateway
-- role has no table privileges at all); tokens are made and checked by SQL functions, so the
-- secret never leaves the database. One row; each database gets its own random key.
CREATE TABLE admission_secret (
  id BOOLEAN PRIMARY KEY DEFAULT true CHECK (id),
  secret BYTEA NOT NULL DEFAULT gen_random_bytes(32),
  created_at TIMESTAMPTZ NOT NULL DEFAULT NOW()
);
INSERT INTO admission_secret DEFAULT VALUES;
COMMENT ON TABLE admission_secret IS
  'The HMAC-SHA256 key of waiting-room admission tokens (one row, owner-only). '
  'api.rotate_admission_secret() replaces it: every token issued so far is void.';

-- A rate change (PATCH, or api.set_waiting_room_rate) or switching the room on/off rebases the
-- serving position with the rule as it was before the change, so the new rate applies from now
-- on, not retroactively. The rule itself is internal.waiting_room_rebase (functions loader).
CREATE FUNCTION waiting_room_rate_changed()
RETURNS TRIGGER
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  PERFORM internal.waiting_room_rebase(OLD.id, OLD.admission_rate_per_minute, OLD.queue_enabled);
  RETURN NULL;
END;
$$;
CREATE TRIGGER waiting_room_rate_changed
  AFTER UPDATE OF admission_rate_per_minute, queue_enabled ON events
  FOR EACH ROW
  WHEN (OLD.admission_rate_per_minute IS DISTINCT FROM NEW.admission_rate_per_minute
        OR OLD.queue_enabled IS DISTINCT FROM NEW.queue_enabled)
  EXECUTE FUNCTION waiting_room_rate_changed();

-- The mirror's `enabled` also reads the event's status (a draft has no room): publishing (or
-- cancelling) an event whose room row exists already (a DBA set its rate or paused it before)
-- tells the gateways too, else they kept it as off and sent every poll to the database.
CREATE FUNCTION waiting_room_event_status_changed()
RETURNS TRIGGER
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  PERFORM internal.waiting_room_notify(NEW.id, false);
  RETURN NULL;
END;
$$;
CREATE TRIGGER waiting_room_event_status_changed
  AFTER UPDATE OF status ON events
  FOR EACH ROW
  WHEN (OLD.status IS DISTINCT FROM NEW.status AND NEW.queue_enabled)
  EXECUTE FUNCTION waiting_room_event_status_changed();

-- Every gateway process mirrors each room's rule (gateway/waiting_room.py) so that a waiting
-- fan's poll is answered without a database call. Whatever the rule reads changes only here:
-- the serving base, a pause, the opening and its shuffle (this trigger; a rate change or on/off
-- rebases, so it comes through here too), and, before the opening, the ticket types' sale start
-- (the next trigger). Each change NOTIFYs channel booking_waiting_rooms with the room's new
-- state, delivered at commit; the gateways reload everything on (re)connect. A join only
-- counts (joined, updated_at): no notice.
CREATE FUNCTION waiting_room_changed()
RETURNS TRIGGER
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  IF TG_OP = 'DELETE' THEN
    PERFORM pg_notify('booking_waiting_rooms', 'd:' || OLD.event_id);
  ELSE
    PERFORM internal.waiting_room_notify(NEW.event_id, false);
  END IF;
  RETURN NULL;
END;
$$;
CREATE TRIGGER waiting_room_changed
  AFTER INSERT OR DELETE OR UPDATE OF base, base_at, paused_at, opened_at, shuffle_seed ON waiting_rooms
  FOR EACH ROW EXECUTE FUNCTION waiting_room_changed();

-- TRUNCATE (a DBA resetting every room, or every place) fires no row trigger: the gateways are
-- told to forget every place they remember ('x'), and every room too ('x:rooms').
CREATE FUNCTION waiting_rooms_truncated()
RETURNS TRIGGER
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  PERFORM pg_notify('booking_waiting_rooms', CASE WHEN TG_TABLE_NAME = 'waiting_rooms' THEN 'x:rooms' ELSE 'x' END);
  RETURN NULL;
END;
$$;
CREATE TRIGGER waiting_rooms_truncated AFTER TRUNCATE ON waiting_rooms
  FOR EACH STATEMENT EXECUTE FUNCTION waiting_rooms_truncated();
CREATE TRIGGER waiting_room_entries_truncated AFTER TRUNCATE ON waiting_room_entries
  FOR EACH STATEMENT EXECUTE FUNCTION waiting_rooms_truncated();

-- Before the opening a room's mirror holds when the sale opens (the earliest start_sale_time):
-- a change of the types moves it. Rare (admin edits); reserves never touch start_sale_time.
CREATE FUNCTION waiting_room_opening_changed()
RETURNS TRIGGER
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  PERFORM internal.waiting_room_notify(CASE WHEN TG_OP = 'DELETE' THEN OLD.event_id ELSE NEW.event_id END, true);
  RETURN NULL;
END;
$$;
CREATE TRIGGER waiting_room_opening_changed
  AFTER INSERT OR DELETE OR UPDATE OF start_sale_time ON ticket_types
  FOR EACH ROW EXECUTE FUNCTION waiting_room_opening_changed();
