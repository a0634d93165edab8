"""The worker: procrastinate's App on our database, our tasks, and how a worker runs.

Tasks (queue, priority; the SQL that defers them is in sql/functions/90_delivery.sql):
- `send_confirmation(order_id)`, queue `mail`, priority 100 (lock `mail:<order_id>`)
- `deliver_webhook(delivery_id)`, queue `webhooks`, priority 50
- `purge_finished_jobs`, queue `housekeeping`, priority 0, periodic (hourly)

Every database call is one `api.*` function (WORKER_CALLS) in its own short transaction; no
transaction is open while a task talks SMTP or HTTP. A worker stops gracefully on SIGTERM or
SIGINT: it fetches no new job and lets running ones finish (up to WORKER_SHUTDOWN_SECONDS).
Jobs of a worker that died (kill -9, a lost machine) are found by their missing heartbeat and
put back in the queue by any live worker (`recover_stalled`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import httpx
import psycopg
from procrastinate import App, JobContext, PsycopgConnector
from procrastinate.jobs import Status
from psycopg_pool import AsyncConnectionPool

from gateway.sqlcalls import api_call_bytes
from worker import mail, webhooks
from worker.config import WorkerSettings
from worker.retry import MAIL_CAP_SECONDS, WEBHOOK_CAP_SECONDS, CappedExponential, Permanent

log = logging.getLogger("worker")

NOT_FOUND = "BKNTF"
PURGE_AFTER_HOURS = 7 * 24  # succeeded and cancelled jobs; failed ones stay for DBAs
POLL_MAX_SECONDS = 5.0  # new jobs come by NOTIFY; polling finds retries that came due


class WorkerError(RuntimeError):
    """The worker cannot start (database unreachable, schema missing): the message says why."""


class Retry(Exception):
    """This run failed and may be retried (the strategy decides when, or that it was the last)."""


class Runtime:
    """What the tasks share: settings, the connection pool, the HTTP client, the retry rules."""

    def __init__(self, settings: WorkerSettings) -> None:
        self.settings = settings
        self.mail_retry = CappedExponential(settings.mail_retry_base, MAIL_CAP_SECONDS)
        self.webhook_retry = CappedExponential(settings.webhook_retry_base, WEBHOOK_CAP_SECONDS)
        self._pool: AsyncConnectionPool | None = None
        self._http: httpx.AsyncClient | None = None

    @property
    def pool(self) -> AsyncConnectionPool:
        assert self._pool is not None, "the worker is not running"
        return self._pool

    @property
    def http(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = webhooks.new_client()
        return self._http

    async def call(self, function: str, **args: Any) -> Any:
        """`SELECT api.<function>(...)` in its own transaction; the one value it returns."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(api_call_bytes(function, args), args)
            row = await cur.fetchone()
            assert row is not None
            return row[0]

    def strategy_for(self, task_name: str) -> CappedExponential | None:
        return {"send_confirmation": self.mail_retry, "deliver_webhook": self.webhook_retry}.get(task_name)

    # --- tasks ---------------------------------------------------------------------------

    async def send_confirmation(self, context: JobContext, order_id: str) -> str:
        try:
            data = await self.call("confirmation_email", p_order_id=order_id)
        except psycopg.Error as exc:
            if exc.diag.sqlstate == NOT_FOUND:
                raise Permanent(f"order {order_id} has no confirmation e-mail") from exc
            raise
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
        smtp = self.settings.smtp
        if smtp is not None:
            mail.send_smtp(smtp, msg, self.settings.envelope_from, data["recipient"])
        else:
            mail.write_eml(self.settings.mail_dir, data["order_id"], msg)

    async def deliver_webhook(self, context: JobContext, delivery_id: str) -> str:
        try:
            delivery = await self.call("webhook_delivery", p_delivery_id=delivery_id)
        except psycopg.Error as exc:
            if exc.diag.sqlstate == NOT_FOUND:
                raise Permanent(f"webhook delivery {delivery_id} does not exist") from exc
            raise
        if delivery["status"] != "PENDING" or not delivery["active"]:
            return f"nothing to do: delivery {delivery['status']}, webhook {'active' if delivery['active'] else 'off'}"
        attempt = await webhooks.deliver(self.http, delivery, self.settings.webhook_allow_private)
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

    # --- stalled jobs ----------------------------------------------------------------------

    async def recover_stalled_once(self, app: App) -> int:
        """Put back in the queue the running jobs of workers whose heartbeat stopped
        WORKER_STALLED_SECONDS ago (or that were pruned); a job out of runs fails instead."""
        jobs = await app.job_manager.get_stalled_jobs(seconds_since_heartbeat=self.settings.stalled)
        recovered = 0
        for job in jobs:
            try:
                strategy = self.strategy_for(job.task_name)
                if strategy is not None and strategy.is_last_run(job):
                    await app.job_manager.finish_job(job, status=Status.FAILED, delete_job=False)
                    log.error("stalled job %s (%s) was on its last run: failed", job.id, job.call_string)
                else:
                    await app.job_manager.retry_job(job)
                    log.warning("stalled job %s (%s) of a dead worker: queued again", job.id, job.call_string)
                recovered += 1
            except Exception as exc:  # another worker got there first: it is no longer `doing`
                log.info("stalled job %s not recovered here: %s", job.id, describe(exc))
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


def describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}"[:1000] if text else type(exc).__name__


def build_app(runtime: Runtime) -> App:
    app = App(connector=PsycopgConnector())
    app.task(name="send_confirmation", queue="mail", priority=100, pass_context=True, retry=runtime.mail_retry)(
        runtime.send_confirmation
    )
    app.task(name="deliver_webhook", queue="webhooks", priority=50, pass_context=True, retry=runtime.webhook_retry)(
        runtime.deliver_webhook
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
) -> None:
    """Run a worker until stopped (SIGTERM/SIGINT), or with wait=False until nothing is due."""
    url = settings.database_url.get_secret_value()
    await _check_database(url)
    runtime = Runtime(settings)
    pool = AsyncConnectionPool(
        url, min_size=1, max_size=settings.concurrency + 4, open=False, name="worker",
        check=AsyncConnectionPool.check_connection,
    )  # fmt: skip
    await pool.open(wait=True, timeout=30)
    try:
        runtime._pool = pool
        app = build_app(runtime)
        async with app.open_async(pool):
            await runtime.recover_stalled_once(app)
            recovery = asyncio.create_task(runtime.recover_stalled(app), name="recover_stalled")
            if on_ready is not None:
                on_ready()
            try:
                await app.run_worker_async(
                    queues=list(settings.queues),
                    concurrency=settings.concurrency,
                    wait=wait,
                    name="booking",
                    fetch_job_polling_interval=max(
                        0.2, min(POLL_MAX_SECONDS, settings.mail_retry_base, settings.webhook_retry_base)
                    ),
                    shutdown_graceful_timeout=settings.shutdown,
                    install_signal_handlers=install_signal_handlers,
                    update_heartbeat_interval=settings.heartbeat,
                    stalled_worker_timeout=settings.stalled,
                    listen_notify=True,
                )
            finally:
                recovery.cancel()
                await asyncio.gather(recovery, return_exceptions=True)
    finally:
        await runtime.close()
        await pool.close()
