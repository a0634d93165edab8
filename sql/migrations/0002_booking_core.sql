-- depends: 0001_seed_schema
-- What the booking core needs beyond the seed schema.

-- A hold the user gives back is CANCELLED (the seed had no cancel).
ALTER TABLE order_reservations DROP CONSTRAINT chk_reservations_status;
ALTER TABLE order_reservations ADD CONSTRAINT chk_reservations_status
  CHECK (status IN ('ACTIVE', 'COMPLETED', 'EXPIRED', 'CANCELLED'));

-- Reserve reclaims dead holds of one ticket type; expiry finds them across types.
CREATE INDEX idx_order_reservations_active_type_expiry
  ON order_reservations(ticket_type_id, expires_at) WHERE status = 'ACTIVE';
-- Cleanup finds old finished holds.
CREATE INDEX idx_order_reservations_finished_created
  ON order_reservations(created_at) WHERE status <> 'ACTIVE';
-- Deleting a reservation sets orders.reservation_id to NULL: without this, a seq scan each.
CREATE INDEX idx_orders_reservation_id ON orders(reservation_id);
-- My bookings, newest first.
CREATE INDEX idx_orders_user_created ON orders(user_id, created_at DESC);
-- Partial-word search on event names (the full-text index is the seed's).
CREATE INDEX idx_events_name_trgm ON events USING gin(name gin_trgm_ops);

-- Durable outbox: written in the same transaction as the change it announces, sent later.
CREATE TABLE outbox (
  id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  topic VARCHAR(100) NOT NULL,
  payload JSONB NOT NULL,
  created_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
  available_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
  attempts INT NOT NULL DEFAULT 0,
  processed_at TIMESTAMPTZ,
  last_error TEXT,

  CONSTRAINT chk_outbox_attempts CHECK (attempts >= 0)
);
CREATE INDEX idx_outbox_pending ON outbox(available_at) WHERE processed_at IS NULL;

-- Gateways cache event lists; any change to what a list shows tells them to drop it.
-- Column lists keep reserve's stock updates (available_quantity, version) silent.
CREATE OR REPLACE FUNCTION notify_catalog_change()
RETURNS TRIGGER
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  PERFORM pg_notify('booking_catalog', TG_TABLE_NAME);
  RETURN NULL;
END;
$$;

CREATE TRIGGER notify_events_change
  AFTER INSERT OR DELETE OR UPDATE OF slug, name, description, banner_url, location,
    start_time, end_time, status
  ON events FOR EACH STATEMENT EXECUTE FUNCTION notify_catalog_change();
CREATE TRIGGER notify_ticket_types_change
  AFTER INSERT OR DELETE OR UPDATE OF event_id, name, price, initial_quantity,
    start_sale_time, end_sale_time
  ON ticket_types FOR EACH STATEMENT EXECUTE FUNCTION notify_catalog_change();
