-- depends: 0008_procrastinate
-- Delivery (issue 11): confirmation e-mails and organizers' webhooks, sent by the worker from
-- procrastinate jobs deferred in the same transaction as the change they announce
-- (sql/functions/90_delivery.sql). The job queue is the outbox now: the old table, which
-- nothing ever read, goes.

DROP TABLE outbox;

-- One row per PAID order: its confirmation e-mail. Written with the order (internal.order_paid);
-- the worker records attempts and the first successful send (sent_at is set once).
CREATE TABLE order_emails (
  order_id UUID PRIMARY KEY REFERENCES orders(id) ON DELETE CASCADE,
  kind TEXT NOT NULL DEFAULT 'confirmation',
  recipient TEXT NOT NULL,
  job_id BIGINT,                         -- the latest send_confirmation job (procrastinate_jobs.id)
  created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
  attempts INT NOT NULL DEFAULT 0,
  last_error TEXT,
  sent_at TIMESTAMPTZ,                   -- when a server (or the mail folder) first accepted it
  message_id TEXT,
  CONSTRAINT chk_order_emails_kind CHECK (kind IN ('confirmation')),
  CONSTRAINT chk_order_emails_attempts CHECK (attempts >= 0)
);
COMMENT ON TABLE order_emails IS
  'The confirmation e-mail of each PAID order: to whom, which job sends it, attempts, when sent.';

-- Organizers' subscriptions: POST /admin/webhooks. Deleting one deactivates it (history kept).
CREATE TABLE webhooks (
  id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
  created_by UUID NOT NULL REFERENCES users(id) ON DELETE CASCADE,
  url TEXT NOT NULL,
  events TEXT[] NOT NULL,
  event_id UUID REFERENCES events(id) ON DELETE CASCADE, -- only this event's notifications when set
  secret TEXT NOT NULL,                  -- HMAC-SHA256 key of X-Booking-Signature
  active BOOLEAN NOT NULL DEFAULT true,
  disabled_at TIMESTAMPTZ,
  disabled_reason TEXT,
  created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
  CONSTRAINT chk_webhooks_url CHECK (char_length(url) <= 2048 AND url ~* '^https?://'),
  CONSTRAINT chk_webhooks_events CHECK (
    cardinality(events) > 0 AND events <@ ARRAY['order.paid', 'order.refunded', 'ticket.checked_in'])
);
-- internal.notify_webhooks reads the active ones on every paid order and check-in.
CREATE INDEX idx_webhooks_active ON webhooks (created_at) WHERE active;
CREATE INDEX idx_webhooks_created_by ON webhooks (created_by, created_at DESC);
COMMENT ON TABLE webhooks IS
  'Organizers'' webhook subscriptions: URL, events, optional event filter, signing secret.';

-- One row per (webhook, notification): the exact body sent and signed, and where it stands.
CREATE TABLE webhook_deliveries (
  id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
  webhook_id UUID NOT NULL REFERENCES webhooks(id) ON DELETE CASCADE,
  notification_id UUID NOT NULL,         -- the body's "id": the same for every webhook notified
  event_type TEXT NOT NULL,
  body TEXT NOT NULL,
  status TEXT NOT NULL DEFAULT 'PENDING',
  attempts INT NOT NULL DEFAULT 0,
  job_id BIGINT,                         -- its deliver_webhook job (procrastinate_jobs.id)
  created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
  delivered_at TIMESTAMPTZ,
  CONSTRAINT chk_webhook_deliveries_status CHECK (status IN ('PENDING', 'DELIVERED', 'FAILED', 'CANCELLED')),
  CONSTRAINT chk_webhook_deliveries_attempts CHECK (attempts >= 0)
);
CREATE INDEX idx_webhook_deliveries_webhook ON webhook_deliveries (webhook_id, created_at DESC);
CREATE INDEX idx_webhook_deliveries_pending ON webhook_deliveries (webhook_id) WHERE status = 'PENDING';

-- Every HTTP attempt of a delivery (GET /admin/webhooks/{id}/deliveries lists them).
CREATE TABLE webhook_attempts (
  id BIGSERIAL PRIMARY KEY,
  delivery_id UUID NOT NULL REFERENCES webhook_deliveries(id) ON DELETE CASCADE,
  attempt INT NOT NULL,
  attempted_at TIMESTAMPTZ NOT NULL DEFAULT now(),
  duration_ms INT,
  status_code INT,
  error TEXT,
  outcome TEXT NOT NULL,
  CONSTRAINT chk_webhook_attempts_outcome CHECK (outcome IN ('DELIVERED', 'RETRY', 'GONE', 'REFUSED', 'FAILED'))
);
CREATE INDEX idx_webhook_attempts_delivery ON webhook_attempts (delivery_id, attempt);
