"""Retries: capped exponential backoff for at least 24 hours, then the job fails for good.

`retry_in = min(cap, base * 2**attempts)`, where `attempts` counts the job's earlier runs
(procrastinate's `job.attempts`). The number of runs is computed so that the waits between
them add up to at least 24 h (mail: MAIL_RETRY_HOURS): a receiver down for a day still gets
its mail or webhook.
Failures that no retry can fix (Permanent) are not retried: the job fails at once, visible
to DBAs in `api.failed_jobs()`, and `api.retry_job(id)` runs it again once the cause is fixed.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from procrastinate.jobs import Job
from procrastinate.retry import BaseRetryStrategy, RetryDecision

HORIZON_SECONDS = 24 * 3600.0
MAIL_CAP_SECONDS = 15 * 60.0
WEBHOOK_CAP_SECONDS = 3600.0
REFUND_CAP_SECONDS = 15 * 60.0


class Permanent(Exception):
    """A failure a retry cannot fix (the order or the delivery is gone, a refused address)."""


def wait_before(attempts: int, base: float, cap: float) -> float:
    """Seconds to wait after the run numbered `attempts` (0 = the first run) failed."""
    return min(cap, base * 2.0 ** min(attempts, 60))


def runs_for(base: float, cap: float, horizon: float = HORIZON_SECONDS) -> int:
    """How many runs in all, so that the waits between them add up to at least `horizon`."""
    runs, waited = 1, 0.0
    while waited < horizon:
        waited += wait_before(runs - 1, base, cap)
        runs += 1
    return runs


class CappedExponential(BaseRetryStrategy):
    def __init__(self, base: float, cap: float, horizon: float = HORIZON_SECONDS) -> None:
        self.base = base
        self.cap = cap
        self.max_runs = runs_for(base, cap, horizon)

    def is_last_run(self, job: Job) -> bool:
        """Whether this run, if it fails, is not retried (the task records FAILED then)."""
        return job.attempts + 1 >= self.max_runs

    def get_retry_decision(self, *, exception: BaseException, job: Job) -> RetryDecision | None:
        if isinstance(exception, Permanent) or self.is_last_run(job):
            return None
        return RetryDecision(
            retry_at=datetime.now(UTC) + timedelta(seconds=wait_before(job.attempts, self.base, self.cap))
        )
