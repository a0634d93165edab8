-- depends: 0010_job_queue_polling
-- Provider payments (issue 12): the payment mode, pending orders with a payment deadline, the
-- inbox of provider events, refunds. The functions are sql/functions/95_payments.sql.

-- One row: how orders are paid. 'instant' is the seed's behaviour (complete pays at once: demos,
-- tests); 'provider' makes complete refuse (BKPRQ) and checkout wait for a provider's callback.
CREATE TABLE payment_settings (
  id BOOLEAN PRIMARY KEY DEFAULT true,
  mode TEXT NOT NULL DEFAULT 'instant',
  payment_window INTERVAL NOT NULL DEFAULT '15 minutes',
  updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
  CONSTRAINT chk_payment_settings_one_row CHECK (id),
  CONSTRAINT chk_payment_settings_mode CHECK (mode IN ('instant', 'provider')),
  CONSTRAINT chk_payment_settings_window CHECK (payment_window >= interval '1 minute'
                                                AND payment_window <= interval '1 day')
);
INSERT INTO payment_settings DEFAULT VALUES;
COMMENT ON TABLE payment_settings IS
  'The payment mode (instant | provider) and how long a PENDING order holds its seats. One row; '
  'api.set_payment_mode / api.payment_mode.';

-- Order states: PENDING (waiting for the provider, seats held), PAID, CANCELLED (payment failed
-- or the buyer cancelled: seats back), TIMEOUT (deadline passed unpaid: seats back),
-- REFUND_PENDING (money in but no seats, or a refund under way: tickets CANCELLED), REFUNDED.
ALTER TABLE orders DROP CONSTRAINT chk_orders_status;
ALTER TABLE orders ADD CONSTRAINT chk_orders_status CHECK (
  status IN ('PENDING', 'PAID', 'CANCELLED', 'TIMEOUT', 'REFUND_PENDING', 'REFUNDED'));
ALTER TABLE orders ADD COLUMN payment_deadline TIMESTAMPTZ;
-- A refunded order whose event had started keeps its seats off sale (they still count as sold).
ALTER TABLE orders ADD COLUMN seats_kept BOOLEAN NOT NULL DEFAULT false;
COMMENT ON COLUMN orders.payment_deadline IS
  'Provider mode: a PENDING order holds its seats until then (api.expire_pending_orders).';
COMMENT ON COLUMN orders.seats_kept IS
  'REFUND_PENDING/REFUNDED only: true when the seats did not return to sale (the event had started).';
-- The expiry job's and the DBAs' way to the PENDING orders.
CREATE INDEX idx_orders_pending_deadline ON orders (payment_deadline) WHERE status = 'PENDING';

ALTER TABLE payments DROP CONSTRAINT chk_payments_status;
ALTER TABLE payments ADD CONSTRAINT chk_payments_status CHECK (
  status IN ('PENDING', 'SUCCESS', 'FAILED', 'REFUNDED'));
-- The provider's own id of the money that paid this order (MoMo transId, ZaloPay zp_trans_id, ...).
ALTER TABLE payments ADD COLUMN provider_txn_id TEXT;
-- When the reconciliation job last asked the provider about it (api.payments_to_reconcile).
ALTER TABLE payments ADD COLUMN reconciled_at TIMESTAMPTZ;
-- Orders that just timed out or were cancelled: reconciliation asks once more about their payment
-- (a success whose callback was lost). Recent ones only: a range of this index.
CREATE INDEX idx_orders_unpaid_updated ON orders (updated_at) WHERE status IN ('TIMEOUT', 'CANCELLED');
-- Where the buyer pays, as the provider answered when the gateway created the payment there
-- (after api.checkout committed: api.set_pay_url). NULL until then, and in the sandbox.
ALTER TABLE payments ADD COLUMN pay_url TEXT;
ALTER TABLE payments ADD CONSTRAINT chk_payments_pay_url CHECK (pay_url IS NULL OR char_length(pay_url) <= 2000);

-- The inbox: every verified callback (and every reconciliation answer), once per provider
-- transaction. The unique insert is the first lock a callback takes (the lock order).
CREATE TABLE payment_events (
  id BIGSERIAL PRIMARY KEY,
  provider TEXT NOT NULL,
  provider_txn_id TEXT NOT NULL,
  transaction_id TEXT,                   -- ours (payments.transaction_id), as the provider sent it
  kind TEXT NOT NULL,
  amount NUMERIC(14,2),
  raw JSONB,
  received_at TIMESTAMPTZ NOT NULL DEFAULT now(),
  outcome TEXT NOT NULL,
  order_id UUID REFERENCES orders(id) ON DELETE SET NULL,
  CONSTRAINT chk_payment_events_provider CHECK (provider IN ('MOMO', 'ZALOPAY', 'BANKING', 'CARD')),
  CONSTRAINT chk_payment_events_kind CHECK (kind IN ('success', 'failure', 'refund')),
  CONSTRAINT chk_payment_events_outcome CHECK (outcome IN (
    'paid', 'late_paid', 'refund_pending', 'cancelled', 'ignored', 'wrong_amount', 'unknown_reference'))
);
-- One row per provider money movement (a success); failures (whose provider ids may be
-- shared, e.g. MoMo's transId 0) once per (our reference, their id).
CREATE UNIQUE INDEX uq_payment_events_success ON payment_events (provider, provider_txn_id)
  WHERE kind = 'success';
CREATE UNIQUE INDEX uq_payment_events_other ON payment_events (provider, transaction_id, provider_txn_id, kind)
  WHERE kind <> 'success';
CREATE INDEX idx_payment_events_order ON payment_events (order_id);
CREATE INDEX idx_payment_events_received ON payment_events (received_at);
COMMENT ON TABLE payment_events IS
  'Inbox of provider events (callbacks, reconciliation answers), unique per provider transaction; '
  'outcome says what applying it did.';

-- Money to give back: an order's payment (admin refund, event cancelled, paid too late with no
-- seats left) or a duplicate payment of an order already paid. The worker's refund_payment job
-- calls the provider and records the result (api.record_refund).
CREATE TABLE payment_refunds (
  id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
  order_id UUID NOT NULL REFERENCES orders(id) ON DELETE CASCADE,
  payment_event_id BIGINT REFERENCES payment_events(id) ON DELETE SET NULL,
  provider TEXT NOT NULL,
  provider_txn_id TEXT,                  -- the provider transaction being refunded
  amount NUMERIC(14,2) NOT NULL,
  reason TEXT NOT NULL,
  status TEXT NOT NULL DEFAULT 'PENDING',
  job_id BIGINT,
  attempts INT NOT NULL DEFAULT 0,
  -- Times the provider refused it for good (the job then fails for a DBA); each refusal spends the
  -- provider's request id, so the next try (api.retry_job) asks under a new one.
  refusals INT NOT NULL DEFAULT 0,
  last_error TEXT,
  provider_ref TEXT,
  created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
  finished_at TIMESTAMPTZ,
  CONSTRAINT chk_payment_refunds_amount CHECK (amount >= 0),
  -- late_over_cap: paid after the seats went back, and re-taking them would pass the buyer's cap.
  CONSTRAINT chk_payment_refunds_reason CHECK (reason IN (
    'admin', 'event_cancelled', 'late_no_seats', 'late_over_cap', 'duplicate')),
  CONSTRAINT chk_payment_refunds_status CHECK (status IN ('PENDING', 'DONE')),
  CONSTRAINT chk_payment_refunds_attempts CHECK (attempts >= 0),
  CONSTRAINT chk_payment_refunds_refusals CHECK (refusals >= 0 AND refusals <= attempts)
);
CREATE INDEX idx_payment_refunds_order ON payment_refunds (order_id);
CREATE INDEX idx_payment_refunds_pending ON payment_refunds (created_at) WHERE status = 'PENDING';
-- One refund of an order's own payment (duplicates are refunded per provider transaction).
CREATE UNIQUE INDEX uq_payment_refunds_order ON payment_refunds (order_id) WHERE reason <> 'duplicate';
CREATE UNIQUE INDEX uq_payment_refunds_event ON payment_refunds (payment_event_id) WHERE payment_event_id IS NOT NULL;
COMMENT ON TABLE payment_refunds IS
  'Refunds to make through the provider: why, how much, where the worker stands (attempts, last error, '
  'the provider''s reference once DONE).';

-- E-mails of an order, one per kind: its confirmation (when PAID, 0009) and the refund notice
-- (when REFUNDED). The worker records attempts and the first send of each on its own row.
ALTER TABLE order_emails DROP CONSTRAINT order_emails_pkey;
ALTER TABLE order_emails ADD CONSTRAINT order_emails_pkey PRIMARY KEY (order_id, kind);
ALTER TABLE order_emails DROP CONSTRAINT chk_order_emails_kind;
ALTER TABLE order_emails ADD CONSTRAINT chk_order_emails_kind CHECK (kind IN ('confirmation', 'refund'));
COMMENT ON TABLE order_emails IS
  'The e-mails of an order, one per kind: confirmation (PAID) and refund (REFUNDED): to whom, which '
  'job sends it, attempts, when sent.';
-- Review fixes (issue 12). A verified success of the wrong amount is refunded (reason
-- 'wrong_amount': that money, not the order's payment, so an order may have several and still
-- its own refund later).
ALTER TABLE payment_refunds DROP CONSTRAINT chk_payment_refunds_reason;
ALTER TABLE payment_refunds ADD CONSTRAINT chk_payment_refunds_reason CHECK (
  reason IN ('admin', 'event_cancelled', 'late_no_seats', 'late_over_cap', 'duplicate', 'wrong_amount'));
DROP INDEX uq_payment_refunds_order;
CREATE UNIQUE INDEX uq_payment_refunds_order ON payment_refunds (order_id)
  WHERE reason NOT IN ('duplicate', 'wrong_amount');
-- Money we could not attach or give back by ourselves (an unknown reference, a wrong amount
-- with no amount to refund) waits for a DBA: api.unresolved_payments, api.resolve_payment_event.
ALTER TABLE payment_events ADD COLUMN resolved_at TIMESTAMPTZ;
ALTER TABLE payment_events ADD COLUMN resolved_note TEXT;
CREATE INDEX idx_payment_events_unresolved ON payment_events (id)
  WHERE kind = 'success' AND outcome IN ('unknown_reference', 'wrong_amount') AND resolved_at IS NULL;
COMMENT ON COLUMN payment_events.resolved_at IS
  'A DBA settled this refused success by hand (api.resolve_payment_event); resolved_note says how.';
