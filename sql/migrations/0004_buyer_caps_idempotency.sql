-- depends: 0003_reserve_core
-- Onsale abuse controls (issue 9): per-buyer caps and idempotency keys.

-- Per-buyer caps. NULL = no cap. Events get a CHECK (reserve never updates events); ticket
-- types get a column trigger instead (every reserve updates its ticket type, and PostgreSQL
-- prepares every CHECK of a table again on each UPDATE: ~11 us per reserve, see 0003).
ALTER TABLE events ADD COLUMN max_tickets_per_user INT;
ALTER TABLE events ADD CONSTRAINT chk_events_max_tickets_per_user CHECK (max_tickets_per_user >= 1);
COMMENT ON COLUMN events.max_tickets_per_user IS
  'Seats one buyer may hold or own over all ticket types of the event (ACTIVE holds + PENDING/PAID orders); NULL: no cap.';

ALTER TABLE ticket_types ADD COLUMN max_per_user INT;
COMMENT ON COLUMN ticket_types.max_per_user IS
  'Seats of this ticket type one buyer may hold or own (ACTIVE holds + PENDING/PAID orders); NULL: no cap.';

CREATE FUNCTION check_max_per_user()
RETURNS TRIGGER
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  IF NEW.max_per_user < 1 THEN
    RAISE EXCEPTION USING ERRCODE = 'check_violation', TABLE = TG_TABLE_NAME,
      MESSAGE = 'max_per_user must be at least 1 (or NULL: no cap)';
  END IF;
  RETURN NEW;
END;
$$;
CREATE TRIGGER check_max_per_user
  BEFORE INSERT OR UPDATE OF max_per_user ON ticket_types
  FOR EACH ROW EXECUTE FUNCTION check_max_per_user();

-- The caps show in the cached event lists: their changes drop the gateways' caches too.
DROP TRIGGER notify_events_change ON events;
CREATE TRIGGER notify_events_change
  AFTER INSERT OR DELETE OR UPDATE OF slug, name, description, banner_url, location,
    start_time, end_time, status, max_tickets_per_user
  ON events FOR EACH STATEMENT EXECUTE FUNCTION notify_catalog_change();
DROP TRIGGER notify_ticket_types_change ON ticket_types;
CREATE TRIGGER notify_ticket_types_change
  AFTER INSERT OR DELETE OR UPDATE OF event_id, name, price, initial_quantity,
    start_sale_time, end_sale_time, max_per_user
  ON ticket_types FOR EACH STATEMENT EXECUTE FUNCTION notify_catalog_change();

-- Counting a buyer's seats: their holds of the types that count, by (user, type). This index
-- replaces the seed's (user_id) one (which it serves too: the foreign key's cascade, lookups by
-- user), so a reserve still maintains as many indexes as before, capped or not. Orders are
-- counted through idx_orders_user_status (seed) and their items by order.
CREATE INDEX idx_order_reservations_user_type ON order_reservations(user_id, ticket_type_id);
DROP INDEX idx_order_reservations_user_id;

-- Idempotency keys: the first answer of a (user, key), recorded in the same transaction as
-- the work it guards. Logged (not UNLOGGED): after a crash the key must survive with the hold
-- or order it names. No foreign key to users: a key may be claimed for a user the core then
-- refuses (rolled back with it), and rows go after 24 hours anyway.
CREATE TABLE idempotency_keys (
  user_id UUID NOT NULL,
  key TEXT NOT NULL,
  fingerprint TEXT NOT NULL,
  response JSON,
  created_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),

  PRIMARY KEY (user_id, key)
);
CREATE INDEX idx_idempotency_keys_created_at ON idempotency_keys(created_at);
COMMENT ON TABLE idempotency_keys IS
  'Idempotency-Key records: the route and arguments (fingerprint) and the success response of a '
  'user''s keyed request; older than 24 hours counts as absent; purged by api.purge_idempotency_keys().';
