"""The worker: procrastinate's App on our database, our tasks, and how a worker runs.

Tasks (queue, priority; the SQL that defers them is in sql/functions/90_delivery.sql and
95_payments.sql):
- `send_confirmation(order_id)`, queue `mail`, priority 100 (lock `mail:<order_id>`)
- `send_refund_email(order_id)`, queue `mail`, priority 90 (lock `refund-mail:<order_id>`)
- `refund_payment(refund_id)`, queue `payments`, priority 90 (lock `refund:<refund_id>`)
- `reconcile_payments`, queue `payments`, priority 10, periodic (every minute, one at a time)
- `deliver_webhook(delivery_id)`, queue `webhooks`, priority 50
- `purge_finished_jobs`, queue `housekeeping`, priority 0, periodic (hourly)
- `refund_cancelled_event(event_id)`, queue `payments`, priority 90 (lock `cancel_event:<id>`):
  a cancelled event's orders, in batches (sql/functions/95_payments.sql)

Every database call is one `api.*` function (WORKER_CALLS) in its own short transaction; no
transaction is open while a task talks SMTP or HTTP (to a webhook or a payment provider). A
worker stops gracefully on SIGTERM or SIGINT: it fetches no new job and lets running ones finish
(up to WORKER_SHUTDOWN_SECONDS).
Jobs of a worker that died (kill -9, a lost machine) are found by their missing heartbeat and
put back in the queue by any live worker (`recover_stalled`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import httpx
import psycopg
from procrastinate import App, JobContext, PsycopgConnector
from procrastinate.exceptions import ConnectorException
from procrastinate.worker import Worker
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from gateway.payments import providers
from gateway.payments.providers import ProviderConfig, ProviderError
from gateway.sqlcalls import api_call_bytes
from worker import mail, webhooks
from worker.config import WorkerSettings
from worker.retry import MAIL_CAP_SECONDS, REFUND_CAP_SECONDS, WEBHOOK_CAP_SECONDS, CappedExponential, Permanent

log = logging.getLogger("worker")

NOT_FOUND = "BKNTF"
PURGE_AFTER_HOURS = 7 * 24  # succeeded and cancelled jobs; failed ones stay for DBAs
RESTART_SECONDS = 5.0  # after losing the database
# Waiting for a pool connection: there is one per job plus spares, so a wait means the database
# is gone; psycopg's 30 s would hold a worker that lost it (its shutdown too) that long.
POOL_WAIT_SECONDS = 5.0
# Reconciliation: payments still PENDING this long after checkout are asked about (the provider's
# callback may have been lost: MoMo calls back once), at most RECONCILE_BATCH per run, and a run
# stops asking after RECONCILE_BUDGET_SECONDS (it runs every minute, one at a time).
RECONCILE_AFTER = timedelta(minutes=3)
RECONCILE_BATCH = 50
RECONCILE_BUDGET_SECONDS = 45.0
# refund_cancelled_event: orders per batch (~2 ms each, the event's ticket types held meanwhile),
# and how long it waits for orders others hold before it lets the job be retried.
CANCEL_BATCH = 200
CANCEL_IDLE_SECONDS = 1.0
CANCEL_IDLE_BATCHES = 30
CANCEL_RETRY = CappedExponential(5.0, 300.0)


# Stalled-job recovery, one row-locked statement each (procrastinate 3.10's versioned functions:
# bump with the pin, as internal.defer_job does on the SQL side).
# The row is locked (and checked again) in the CTE, before the function runs: with FOR UPDATE
# on the outer SELECT the function would run first and the lock then skip the changed row.
_STALLED = """WITH j AS (
  SELECT id FROM procrastinate_jobs
   WHERE id = %(id)s AND status = 'doing' AND worker_id IS NOT DISTINCT FROM %(worker)s
     FOR UPDATE)
"""
RETRY_STALLED = _STALLED + "SELECT procrastinate_retry_job_v2(j.id, now(), NULL, NULL, NULL) FROM j"
FAIL_STALLED = _STALLED + "SELECT procrastinate_finish_job_v1(j.id, 'failed', false) FROM j"


class WorkerError(RuntimeError):
    """The worker cannot start (database unreachable, schema missing): the message says why."""


class Retry(Exception):
    """This run failed and may be retried (the strategy decides when, or that it was the last)."""


class Runtime:
    """What the tasks share: settings, the connection pool, the HTTP client, the retry rules."""

    def __init__(self, settings: WorkerSettings, provider_config: ProviderConfig | None = None) -> None:
        self.settings = settings
        self.mail_retry = CappedExponential(
            settings.mail_retry_base, MAIL_CAP_SECONDS, settings.mail_retry_hours * 3600
        )
        self.webhook_retry = CappedExponential(settings.webhook_retry_base, WEBHOOK_CAP_SECONDS)
        self.refund_retry = CappedExponential(settings.refund_retry_base, REFUND_CAP_SECONDS)
        self._provider_config = provider_config
        self._pool: AsyncConnectionPool | None = None
        self._http: httpx.AsyncClient | None = None
        self._provider_http: httpx.AsyncClient | None = None

    @property
    def pool(self) -> AsyncConnectionPool:
        assert self._pool is not None, "the worker is not running"
        return self._pool

    @property
    def http(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = webhooks.new_client()
        return self._http

    @property
    def provider_config(self) -> ProviderConfig:
        if self._provider_config is None:
            self._provider_config = provider_config_from_env()
        return self._provider_config

    @property
    def provider_http(self) -> httpx.AsyncClient:
        """The payment providers' client (their endpoints are configured, not user data: not
        the webhooks' guarded client). Each request has ProviderConfig.timeout."""
        if self._provider_http is None:
            self._provider_http = httpx.AsyncClient(
                follow_redirects=False, timeout=httpx.Timeout(self.provider_config.timeout)
            )
        return self._provider_http

    async def call(self, function: str, **args: Any) -> Any:
        """`SELECT api.<function>(...)` in its own transaction; the one value it returns."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(api_call_bytes(function, args), args)
            row = await cur.fetchone()
            assert row is not None
            return row[0]

    async def fetch(self, function: str, missing: str, **args: Any) -> Any:
        """`call`, where BKNTF means the job's subject is gone: Permanent (`missing` says what)."""
        try:
            return await self.call(function, **args)
        except psycopg.Error as exc:
            if exc.diag.sqlstate == NOT_FOUND:
                raise Permanent(missing) from exc
            raise

    def strategy_for(self, task_name: str) -> CappedExponential | None:
        return {
            "send_confirmation": self.mail_retry, "send_refund_email": self.mail_retry,
            "deliver_webhook": self.webhook_retry, "refund_payment": self.refund_retry,
        }.get(task_name)  # fmt: skip

    # --- tasks ---------------------------------------------------------------------------

    async def send_confirmation(self, context: JobContext, order_id: str) -> str:
        data = await self.fetch(
            "confirmation_email", f"order {order_id} has no confirmation e-mail", p_order_id=order_id
        )
        if data.get("sent_at"):
            return f"already sent at {data['sent_at']}"
        smtp = self.settings.smtp
        try:
            # In a thread: drawing the QR codes and flattening the message take ~10 ms of CPU per
            # ticket-pair, SMTP waits on the network; the event loop keeps serving other jobs.
            await asyncio.to_thread(self._build_and_send, data)
        except Exception as exc:
            error = describe(exc)
            log.warning("confirmation of order %s not sent (run %d): %s", order_id, context.job.attempts + 1, error)
            await self.call("record_confirmation_attempt", p_order_id=order_id, p_error=error)
            raise
        await self.call("record_confirmation_attempt", p_order_id=order_id, p_error=None)  # counted, error cleared
        first = await self.call("record_confirmation_sent", p_order_id=order_id, p_message_id=mail.message_id(order_id))
        where = smtp.describe() if smtp else str(self.settings.mail_dir / f"{order_id}.eml")
        return f"sent to {where}" + ("" if first else " (again: it had been recorded sent meanwhile)")

    def _build_and_send(self, data: dict[str, Any]) -> None:
        msg = mail.build_message(data, self.settings.mail_from)
        self._send(msg, data["recipient"], data["order_id"])

    def _send(self, msg: Any, recipient: str, file_name: str) -> None:
        smtp = self.settings.smtp
        if smtp is not None:
            mail.send_smtp(smtp, msg, self.settings.envelope_from, recipient)
        else:
            mail.write_eml(self.settings.mail_dir, file_name, msg)

    async def send_refund_email(self, context: JobContext, order_id: str) -> str:
        """The buyer's refund notice, sent like the confirmation: read, send with no transaction
        open, record (at least once; a row that says sent sends nothing)."""
        data = await self.fetch("refund_email", f"order {order_id} has no refund e-mail", p_order_id=order_id)
        if data.get("sent_at"):
            return f"already sent at {data['sent_at']}"
        try:
            msg = mail.build_refund_message(data, self.settings.mail_from)
            await asyncio.to_thread(self._send, msg, data["recipient"], f"{order_id}-refund")
        except Exception as exc:
            error = describe(exc)
            log.warning("refund e-mail of order %s not sent (run %d): %s", order_id, context.job.attempts + 1, error)
            await self.call("record_refund_email_attempt", p_order_id=order_id, p_error=error)
            raise
        await self.call("record_refund_email_attempt", p_order_id=order_id, p_error=None)
        first = await self.call(
            "record_refund_email_sent", p_order_id=order_id, p_message_id=mail.refund_message_id(order_id)
        )
        return "refund e-mail sent" + ("" if first else " (again: it had been recorded sent meanwhile)")

    # --- payments ----------------------------------------------------------------------------

    async def refund_payment(self, context: JobContext, refund_id: str) -> str:
        """Gives a payment back through its provider: read (api.refund_request), ask the provider
        with no transaction open, record (api.record_refund). The provider's refund request id is
        derived from the refund's id (provider_refund_id), so a run after a timeout or a crash asks
        for the same refund again and the provider cannot pay it twice.

        done -> recorded DONE (the order REFUNDED, its webhooks and e-mail deferred by SQL);
        refused for good (RefundResult failed, or a ProviderError that is not retryable) ->
        recorded with last_error `refused: ...` and refusals + 1, and the job fails at once
        (Permanent): the refund stays PENDING in api.stuck_refunds with job_status failed for a
        DBA (api.retry_job asks again, under a new request id); pending or a
        retryable error -> recorded (attempts, last_error) and retried, capped exponential for
        24 h, then the job fails the same way."""
        request = await self.call("refund_request", p_refund_id=refund_id)
        if request is None:
            raise Permanent(f"refund {refund_id} does not exist")
        if request["status"] == "DONE":
            return f"nothing to do: refunded before (provider ref {request['provider_ref']})"
        error: str | None
        try:
            result = await providers.refund(
                self.provider_http, self.provider_config, method=request["provider"],
                refund_id=provider_refund_id(refund_id, request["refusals"]),
                transaction_id=request["transaction_id"],
                provider_txn_id=request["provider_txn_id"], amount=int(request["amount_vnd"]),
                description=f"Refund of order {request['order_id']}",
                requested_at=datetime.fromisoformat(request["created_at"]),
            )  # fmt: skip
        except ProviderError as exc:
            # Not an answer about this refund (a broken request, a code we do not know, missing
            # credentials): never counted as the provider's refusal, so the request id is kept and a
            # DBA's retry asks under the same one (if money did move, the provider says so).
            state, ref, error = ("pending" if exc.retryable else "broken"), None, describe(exc)
        else:
            state, ref, error = result.state, result.provider_ref, result.error
        if state == "done":
            await self.call("record_refund", p_refund_id=refund_id, p_ok=True, p_provider_ref=ref, p_error=None)
            return f"refunded {request['amount_vnd']} VND through {request['provider']} (ref {ref})"
        if state == "failed":
            error = f"refused: {error or 'the provider refused the refund'}"
        elif state == "broken":
            error = f"cannot ask: {error}"
        else:
            error = f"not yet: {error or 'the provider is still processing the refund'}"
        await self.call(
            "record_refund", p_refund_id=refund_id, p_ok=False, p_provider_ref=None, p_error=error,
            p_refused=state == "failed",
        )  # fmt: skip
        if state in ("failed", "broken"):
            log.error("refund %s of order %s: %s", refund_id, request["order_id"], error)
            raise Permanent(f"refund {refund_id}: {error}")
        if self.refund_retry.is_last_run(context.job):
            log.error("refund %s of order %s: giving up after %d runs: %s", refund_id, request["order_id"],
                      context.job.attempts + 1, error)  # fmt: skip
            raise Permanent(f"refund {refund_id}: still not done after {context.job.attempts + 1} runs: {error}")
        raise Retry(f"refund {refund_id}: {error}")

    async def reconcile_payments(self, context: JobContext, timestamp: int | None = None) -> str:
        """Asks the providers about payments still PENDING RECONCILE_AFTER after checkout, and once
        about orders that just went TIMEOUT or CANCELLED with no word from the provider (a lost
        callback: MoMo calls back once), and applies each answer through api.reconcile_payment:
        the callbacks' function and inbox, so an answer and a callback about one provider
        transaction apply once. paid -> the SQL decides (PAID; late: PAID if the seats and the
        buyer's caps allow, else a refund); failed -> CANCELLED; pending/unknown -> nothing (the
        expiry times the order out). Each question is asked with no transaction open."""
        rows = await self.call("payments_to_reconcile", p_older_than=RECONCILE_AFTER, p_limit=RECONCILE_BATCH)
        started = time.monotonic()
        outcomes: dict[str, int] = {}
        for row in rows:
            if time.monotonic() - started > RECONCILE_BUDGET_SECONDS:
                outcomes["left for the next run"] = outcomes.get("left for the next run", 0) + 1
                continue
            outcome = await self._reconcile_one(row)
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
        summary = ", ".join(f"{n} {what}" for what, n in sorted(outcomes.items()))
        return f"asked about {len(rows)} pending payment(s)" + (f": {summary}" if summary else "")

    async def _reconcile_one(self, row: dict[str, Any]) -> str:
        method, txn = row["provider"], row["transaction_id"]
        try:
            status = await providers.query_payment(
                self.provider_http, self.provider_config, method=method, transaction_id=txn
            )
        except ProviderError as exc:
            log.warning("reconciliation: %s could not tell about %s: %s", method, txn, describe(exc))
            return "not answered"
        if status.state in ("pending", "unknown"):
            return status.state  # nothing to apply (the expiry times a PENDING one out; a timed-out one is asked again)
        if status.state == "paid" and (status.amount is None or not status.provider_txn_id):
            # Recorded, a success without an amount would be refused (wrong_amount) for good, and
            # the real callback after it answered as a duplicate of that refusal.
            log.warning("reconciliation: %s says %s is paid but not how much or by which transaction", method, txn)
            return "not answered"
        answer = await self.call(
            "reconcile_payment", p_provider=method,
            # A failure may carry no provider id (MoMo sends transId 0): our reference keys it.
            p_provider_txn_id=status.provider_txn_id or f"{txn}-failed", p_transaction_id=txn,
            p_amount=status.amount, p_success=status.state == "paid", p_raw=Jsonb(status.raw),
        )  # fmt: skip
        outcome = str(answer["outcome"])
        if outcome not in ("paid", "late_paid", "cancelled", "duplicate"):
            log.warning("reconciliation: %s %s answered %s: %s", method, txn, status.state, outcome)
        else:
            log.info("reconciliation: %s %s was %s: %s", method, txn, status.state, outcome)
        return outcome

    async def deliver_webhook(self, context: JobContext, delivery_id: str) -> str:
        delivery = await self.fetch(
            "webhook_delivery", f"webhook delivery {delivery_id} does not exist", p_delivery_id=delivery_id
        )
        if delivery["status"] != "PENDING":
            return f"nothing to do: delivery {delivery['status']}"
        if not delivery["active"]:
            # Deleted or disabled after the notification was made (a delete racing the purchase):
            # nothing is sent, and the delivery must not stay PENDING for ever.
            await self.call("close_webhook_delivery", p_delivery_id=delivery_id, p_status="CANCELLED")
            return "nothing to do: webhook off, delivery CANCELLED"
        attempt = await webhooks.deliver(
            self.http, delivery, self.settings.webhook_allow_private, self.settings.webhook_timeout
        )
        outcome = attempt.outcome
        if outcome == "RETRY" and self.webhook_retry.is_last_run(context.job):
            outcome = "FAILED"
        await self.call(
            "record_webhook_attempt", p_delivery_id=delivery_id, p_outcome=outcome,
            p_status_code=attempt.status_code, p_error=attempt.error, p_duration_ms=attempt.duration_ms,
        )  # fmt: skip
        if outcome == "RETRY":
            raise Retry(f"webhook delivery {delivery_id}: {attempt.error}")
        if outcome == "FAILED":
            raise Permanent(f"webhook delivery {delivery_id} failed for good: {attempt.error}")
        if outcome != "DELIVERED":
            log.warning("webhook delivery %s: %s (%s)", delivery_id, outcome, attempt.error)
        return outcome

    # --- an event's cancellation (review fixes of issue 12) --------------------------------

    async def refund_cancelled_event(self, context: JobContext, event_id: str) -> str:
        """Settles a cancelled event's orders: api.refund_cancelled_event, one batch per call (its
        own short transaction), until none is left. Orders someone holds right now are skipped by
        a batch; when a batch finds only those, it waits a moment. Still stuck after that: Retry
        (the job runs again later; api.cancel_event queues it again if it failed for good)."""
        refunded = cancelled = idle = 0
        while True:
            batch = await self.fetch(
                "refund_cancelled_event", f"event {event_id} does not exist",
                p_event_id=event_id, p_limit=CANCEL_BATCH,
            )  # fmt: skip
            refunded += batch["refunded"]
            cancelled += batch["cancelled"]
            if batch["remaining"] == 0:
                return f"event {event_id}: {refunded} orders refunded, {cancelled} cancelled"
            idle = idle + 1 if batch["refunded"] + batch["cancelled"] == 0 else 0
            if idle > CANCEL_IDLE_BATCHES:
                raise Retry(f"event {event_id}: {batch['remaining']} orders stay locked by others")
            if idle:
                await asyncio.sleep(CANCEL_IDLE_SECONDS)

    # --- stalled jobs ----------------------------------------------------------------------

    async def recover_stalled_once(self, app: App) -> int:
        """Put back in the queue the running jobs of workers whose heartbeat stopped
        WORKER_STALLED_SECONDS ago (or that were pruned); a job out of runs fails instead.

        procrastinate's get_stalled_jobs lists them; each is then retried (or failed) only if it
        is still `doing` for the same dead worker, checked under the row lock in the same
        statement: two workers recovering at once must not requeue a job a third one has just
        taken (procrastinate's retry_job accepts any `doing` job, and the job would run twice)."""
        jobs = await app.job_manager.get_stalled_jobs(seconds_since_heartbeat=self.settings.stalled)
        recovered = 0
        for job in jobs:
            strategy = self.strategy_for(job.task_name)
            last = strategy is not None and strategy.is_last_run(job)
            async with self.pool.connection() as conn:
                cur = await conn.execute(
                    FAIL_STALLED if last else RETRY_STALLED, {"id": job.id, "worker": job.worker_id}
                )
                done = await cur.fetchone() is not None
            if not done:
                log.info("stalled job %s was recovered or taken by another worker meanwhile", job.id)
            elif last:
                log.error("stalled job %s (%s) was on its last run: failed", job.id, job.call_string)
                if job.task_name == "deliver_webhook":  # its delivery ends too (not left PENDING)
                    try:
                        await self.call(
                            "close_webhook_delivery", p_delivery_id=job.task_kwargs["delivery_id"], p_status="FAILED"
                        )
                    except psycopg.Error as exc:  # deleted meanwhile (BKNTF): nothing left to end
                        log.warning("stalled job %s: its delivery not closed: %s", job.id, describe(exc))
            else:
                log.warning("stalled job %s (%s) of a dead worker: queued again", job.id, job.call_string)
            recovered += done
        return recovered

    async def recover_stalled(self, app: App) -> None:
        """Every WORKER_STALLED_SECONDS/2 (run() calls recover_stalled_once at start)."""
        while True:
            await asyncio.sleep(self.settings.stalled / 2)
            try:
                await self.recover_stalled_once(app)
            except Exception:
                log.exception("stalled-job recovery failed; trying again later")

    async def close(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None
        if self._provider_http is not None:
            await self._provider_http.aclose()
            self._provider_http = None


def describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}"[:1000] if text else type(exc).__name__


def provider_refund_id(refund_id: str, refusals: int = 0) -> str:
    """The refund's request id at the provider (MoMo's refund orderId/requestId, ZaloPay's
    m_refund_id suffix, the bank/card API's key): `RF` + our refund's UUID in hex, the same on
    every run of the job, so a run after a timeout asks for the same refund and the provider
    cannot pay it twice; letters and digits only (every provider accepts them). After the
    provider refused it for good (no money moved, the id is spent there), a DBA's retry asks
    under `...R<refusals>`."""
    return "RF" + uuid.UUID(refund_id).hex.upper() + (f"R{refusals}" if refusals else "")


def provider_config_from_env() -> ProviderConfig:
    """The payment providers' endpoints and credentials (the gateway's variables, README)."""
    try:
        return ProviderConfig.from_env(os.environ)
    except ValueError as exc:
        raise WorkerError(f"invalid payment provider settings: {exc}") from None


def build_app(runtime: Runtime) -> App:
    app = App(connector=PsycopgConnector())
    app.task(name="send_confirmation", queue="mail", priority=100, pass_context=True, retry=runtime.mail_retry)(
        runtime.send_confirmation
    )
    app.task(name="deliver_webhook", queue="webhooks", priority=50, pass_context=True, retry=runtime.webhook_retry)(
        runtime.deliver_webhook
    )
    app.task(name="send_refund_email", queue="mail", priority=90, pass_context=True, retry=runtime.mail_retry)(
        runtime.send_refund_email
    )
    app.task(name="refund_payment", queue="payments", priority=90, pass_context=True, retry=runtime.refund_retry)(
        runtime.refund_payment
    )
    # Every minute, one run at a time (lock), and never more than one waiting (queueing lock: the
    # periodic deferrer skips a minute while one is queued).
    reconcile = app.task(
        name="reconcile_payments", queue="payments", priority=10, pass_context=True,
        lock="reconcile_payments", queueing_lock="reconcile_payments",
    )(runtime.reconcile_payments)  # fmt: skip
    app.periodic(cron="* * * * *", periodic_id="every_minute")(reconcile)

    app.task(name="refund_cancelled_event", queue="payments", priority=90, pass_context=True, retry=CANCEL_RETRY)(
        runtime.refund_cancelled_event
    )

    async def purge_finished_jobs(context: JobContext, timestamp: int) -> None:
        await context.app.job_manager.delete_old_jobs(nb_hours=PURGE_AFTER_HOURS, include_cancelled=True)

    task = app.task(name="purge_finished_jobs", queue="housekeeping", priority=0, pass_context=True)(
        purge_finished_jobs
    )
    app.periodic(cron="17 * * * *", periodic_id="hourly")(task)
    return app


async def _check_database(url: str) -> None:
    """A clear message at start instead of a pool retrying in the background."""
    try:
        conn = await psycopg.AsyncConnection.connect(url, connect_timeout=10, autocommit=True)
    except psycopg.Error as exc:
        raise WorkerError(f"cannot connect to the database as the worker: {exc}".strip()) from None
    async with conn:
        cur = await conn.execute("SELECT current_user, to_regclass('public.procrastinate_jobs') IS NOT NULL")
        row = await cur.fetchone()
    assert row is not None
    if not row[1]:
        raise WorkerError(f"logged in as {row[0]}, but the job queue's tables are missing: run `make migrate`")


async def run(
    settings: WorkerSettings,
    *,
    wait: bool = True,
    install_signal_handlers: bool = True,
    on_ready: Callable[[], None] | None = None,
    provider_config: ProviderConfig | None = None,
) -> None:
    """Run a worker until stopped (SIGTERM/SIGINT), or with wait=False until nothing is due.

    A worker that loses the database (PostgreSQL restarted, the network gone) stops with an
    error, or stops by itself when one of procrastinate's side tasks fails; it is started again
    after RESTART_SECONDS until the database answers (its running jobs, if any, are recovered
    as stalled ones). Only SIGTERM/SIGINT end it. A second signal stops it at once."""
    url = settings.database_url.get_secret_value()
    if provider_config is None:  # a malformed endpoint: a clear message, exit 1
        provider_config = provider_config_from_env()
    await _check_database(url)  # a wrong URL or a missing schema: a clear message, exit 1
    stop = asyncio.Event()
    running: list[Worker] = []
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM) if install_signal_handlers else ()

    def request_stop() -> None:
        for sig in signals:  # the next one gets Python's default: stop now
            loop.remove_signal_handler(sig)
        log.info("stop requested: no new jobs; waiting up to %g s for running ones", settings.shutdown)
        stop.set()
        for worker in running:
            worker.stop()  # type: ignore[no-untyped-call]

    for sig in signals:
        loop.add_signal_handler(sig, request_stop)
    try:
        while True:
            try:
                await _run_once(settings, wait, running, stop, on_ready, provider_config)
                if stop.is_set() or not wait:
                    return
                log.error("the worker stopped without being asked (see above); starting again in %g s", RESTART_SECONDS)
            except (psycopg.Error, ConnectorException, PoolTimeout, OSError) as exc:
                if not wait:
                    raise
                log.error("the worker lost the database: %s; starting again in %g s", describe(exc), RESTART_SECONDS)
            running.clear()
            try:
                await asyncio.wait_for(stop.wait(), RESTART_SECONDS)
                return
            except TimeoutError:
                pass
    finally:
        if not stop.is_set():
            for sig in signals:
                loop.remove_signal_handler(sig)


async def _run_once(
    settings: WorkerSettings,
    wait: bool,
    running: list[Worker],
    stop: asyncio.Event,
    on_ready: Callable[[], None] | None,
    provider_config: ProviderConfig,
) -> None:
    runtime = Runtime(settings, provider_config)
    pool = AsyncConnectionPool(
        settings.database_url.get_secret_value(), min_size=1, max_size=settings.concurrency + 4, open=False,
        name="worker", check=AsyncConnectionPool.check_connection,
        timeout=POOL_WAIT_SECONDS,
    )  # fmt: skip
    try:
        await pool.open(wait=True, timeout=30)
        runtime._pool = pool
        app = build_app(runtime)
        async with app.open_async(pool):
            await runtime.recover_stalled_once(app)
            recovery = asyncio.create_task(runtime.recover_stalled(app), name="recover_stalled")
            worker = Worker(
                app,
                queues=list(settings.queues),
                concurrency=settings.concurrency,
                wait=wait,
                name="booking",
                # New jobs are not NOTIFYed (migration 0010: it serialized purchases' commits); an idle
                # worker polls, a busy one fetches the next job as soon as one ends.
                fetch_job_polling_interval=settings.poll,
                shutdown_graceful_timeout=settings.shutdown,
                install_signal_handlers=False,  # run() handles them: a stop must end the restarts too
                update_heartbeat_interval=settings.heartbeat,
                stalled_worker_timeout=settings.stalled,
                listen_notify=True,  # a DBA's api.retry_job and procrastinate's abort requests
            )
            running.append(worker)
            if on_ready is not None:
                on_ready()
            try:
                if not stop.is_set():  # asked while starting (worker.run() forgets an earlier stop())
                    await worker.run()  # type: ignore[no-untyped-call]
            finally:
                recovery.cancel()
                await asyncio.gather(recovery, return_exceptions=True)
    finally:
        await runtime.close()
        await pool.close()
