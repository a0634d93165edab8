"""The api functions the worker's role (booking_worker) may run: exactly these
(sql/worker_grants.sql grants them; tests/test_conventions.py compares the two). Their COMMENT
starts with "(worker)"."""

from __future__ import annotations

WORKER_CALLS = frozenset({
    "confirmation_email",
    "record_confirmation_attempt",
    "record_confirmation_sent",
    "webhook_delivery",
    "record_webhook_attempt",
    "close_webhook_delivery",
    # Provider payments (issue 12): the refund_payment and reconcile_payments jobs.
    "refund_request",
    "record_refund",
    "payments_to_reconcile",
    "reconcile_payment",
    "refund_email",
    "record_refund_email_attempt",
    "record_refund_email_sent",
    # Review fixes: an event's cancellation settled in batches (the refund_cancelled_event job).
    "refund_cancelled_event",
})  # fmt: skip
