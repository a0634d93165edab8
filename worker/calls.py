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
})  # fmt: skip
