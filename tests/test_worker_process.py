"""`python -m worker` as a real process: killed mid-job (kill -9), stopped mid-job (SIGTERM),
a job failed for good and retried by a DBA, a setting refused at start."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from dbctl.cluster import Cluster
from dbctl.migrate import ROOT
from tests.conftest import dba_call, url_for
from tests.worker_support import SmtpSink, eventually, jobs_of, owner_rows, paid_order, smtp_server
from worker.app import FAIL_STALLED, RETRY_STALLED
from worker.config import WORKER_ROLE

CONNECTION_ENV = {"DATABASE_URL", "WORKER_DATABASE_URL", "SMTP_URL", "PGPASSFILE", "PGPASSWORD", "PGUSER", "PGHOST"}


class Workers:
    """Worker processes for one test; every one still running at the end is killed."""

    def __init__(self, dbname: str, tmp_path: Path) -> None:
        self.dbname = dbname
        self.tmp_path = tmp_path
        self.procs: list[subprocess.Popen[str]] = []
        self.logs: list[Any] = []

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in CONNECTION_ENV and not k.startswith("WORKER_")}
        env.update(
            WORKER_DATABASE_URL=url_for(self.dbname, WORKER_ROLE), MAIL_DIR=str(self.tmp_path / "mail"),
            WORKER_HEARTBEAT_SECONDS="1", WORKER_STALLED_SECONDS="3", MAIL_RETRY_BASE_SECONDS="0.5",
            WORKER_CONCURRENCY="2",
        )  # fmt: skip
        env.update(extra)
        return env

    def start(self, **extra: str) -> subprocess.Popen[str]:
        log = open(self.tmp_path / f"worker-{len(self.procs)}.log", "w")
        self.logs.append(log)
        proc = subprocess.Popen(
            [sys.executable, "-m", "worker"], cwd=ROOT, env=self.env(**extra), stdout=log, stderr=subprocess.STDOUT,
            text=True,
        )  # fmt: skip
        self.procs.append(proc)
        eventually(lambda: proc.poll() is not None or self.registered() > 0, "the worker to register")
        return proc

    def registered(self) -> int:
        return int(owner_rows(self.dbname, "SELECT count(*) FROM procrastinate_workers")[0][0])

    def log(self, proc: subprocess.Popen[str]) -> str:
        return (self.tmp_path / f"worker-{self.procs.index(proc)}.log").read_text()

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for log in self.logs:
            log.close()


@pytest.fixture
def workers(dbname: str, tmp_path: Path) -> Iterator[Workers]:
    w = Workers(dbname, tmp_path)
    yield w
    w.close()


def mail_job(dbname: str) -> tuple[Any, ...]:
    (job,) = jobs_of(dbname, "send_confirmation")
    return job


def test_a_killed_workers_job_is_recovered_and_the_mail_arrives(
    gw: psycopg.Connection, dbname: str, workers: Workers
) -> None:
    with smtp_server(SmtpSink(hold=True)) as (sink, port):
        order = paid_order(gw, quantity=1)
        first = workers.start(SMTP_URL=f"smtp://127.0.0.1:{port}")
        assert sink.entered.wait(30), "the first worker never reached DATA"
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        sink.release.set()  # the dead worker's session ends without the mail being kept
        assert mail_job(dbname)[1] == "doing", "the killed worker's job is left running"

        second = workers.start(SMTP_URL=f"smtp://127.0.0.1:{port}")
        eventually(lambda: sink.received, "the mail from the second worker")
        eventually(lambda: mail_job(dbname)[1] == "succeeded", "the job to be recorded")
        assert len(sink.received) == 1 and sink.received[0].rcpt_tos == [order["buyer"]["email"]]
        assert "queued again" in workers.log(second)
        second.send_signal(signal.SIGTERM)
        assert second.wait(30) == 0


def test_sigterm_lets_the_running_job_finish_then_exits_0(
    gw: psycopg.Connection, dbname: str, workers: Workers
) -> None:
    with smtp_server(SmtpSink(hold=True, keep_held=True)) as (sink, port):
        paid_order(gw, quantity=1)
        proc = workers.start(SMTP_URL=f"smtp://127.0.0.1:{port}", WORKER_SHUTDOWN_SECONDS="60")
        assert sink.entered.wait(30), "the worker never reached DATA"
        proc.send_signal(signal.SIGTERM)
        time.sleep(1.5)
        assert proc.poll() is None, "the worker quit with a job running"
        sink.release.set()  # the server accepts: the job ends, then the worker
        assert proc.wait(30) == 0, workers.log(proc)
        assert len(sink.received) == 1
        assert mail_job(dbname)[1:3] == ("succeeded", 1)
        assert workers.registered() == 0, "the worker unregistered itself"


def test_a_job_failed_for_good_is_listed_and_a_dba_retry_runs_it_again(
    gw: psycopg.Connection, dbname: str, workers: Workers
) -> None:
    """The mail server refuses the recipient (550): not retried; a DBA sees the job in
    api.failed_jobs(), fixes the cause, and api.retry_job(id) sends it at once."""
    with smtp_server(SmtpSink(refuse_rcpt="550 5.1.1 no such user here")) as (sink, port):
        order = paid_order(gw, quantity=1)
        proc = workers.start(SMTP_URL=f"smtp://127.0.0.1:{port}")
        failed = eventually(lambda: dba_rows(gw, "SELECT * FROM api.failed_jobs()"), "the failed job")
        (job_id, queue, task, args, runs, failed_at) = failed[0]
        assert (queue, task, args, runs) == ("mail", "send_confirmation", {"order_id": order["id"]}, 1)
        assert failed_at is not None
        (last_error, sent_at), *_ = owner_rows(
            dbname, "SELECT last_error, sent_at FROM order_emails WHERE order_id = %s", order["id"]
        )
        assert "550" in last_error and sent_at is None

        sink.refuse_rcpt = None  # the cause is fixed
        dba_call(gw, "retry_job", p_job_id=job_id)
        eventually(lambda: sink.received, "the mail after the DBA's retry", timeout=10)
        eventually(lambda: mail_job(dbname)[1] == "succeeded", "the job to succeed")
        assert dba_rows(gw, "SELECT * FROM api.failed_jobs()") == []
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0


def dba_rows(conn: psycopg.Connection, query: str) -> list[tuple[Any, ...]]:
    return owner_rows(conn.info.dbname, query)


def test_a_wrong_setting_stops_the_worker_naming_the_variable(dbname: str, tmp_path: Path) -> None:
    env = Workers(dbname, tmp_path).env(SMTP_URL="http://user:hunter2@mail.example.com", WORKER_CONCURRENCY="0")
    done = subprocess.run(
        [sys.executable, "-m", "worker"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 1
    assert "SMTP_URL: must start with smtp:// or smtps://" in done.stderr
    assert "WORKER_CONCURRENCY" in done.stderr
    assert "hunter2" not in done.stderr and "Traceback" not in done.stderr


def test_recovery_leaves_a_job_another_worker_has_taken_meanwhile(
    gw: psycopg.Connection, connect: Any, dbname: str
) -> None:
    """Two workers may list the same stalled job; the one that comes second must not requeue it
    once a third worker has taken it (it would run twice): the retry checks, under the row
    lock, that the job is still `doing` for the dead worker it was listed with."""
    paid_order(gw, quantity=1)
    w = connect(WORKER_ROLE)
    dead = w.execute("SELECT procrastinate_register_worker_v1()").fetchone()[0]
    live = w.execute("SELECT procrastinate_register_worker_v1()").fetchone()[0]
    (job_id,) = w.execute("SELECT id FROM procrastinate_fetch_job_v2(NULL, %s)", (dead,)).fetchone()
    # the dead worker's job, requeued by one recovering worker and taken by a live one:
    assert len(w.execute(RETRY_STALLED, {"id": job_id, "worker": dead}).fetchall()) == 1
    assert w.execute("SELECT id FROM procrastinate_fetch_job_v2(NULL, %s)", (live,)).fetchone() == (job_id,)
    # a second recovering worker, still holding the old listing:
    assert w.execute(RETRY_STALLED, {"id": job_id, "worker": dead}).fetchall() == []
    assert w.execute(FAIL_STALLED, {"id": job_id, "worker": dead}).fetchall() == []
    assert mail_job(dbname)[1:3] == ("doing", 1)
    assert owner_rows(dbname, "SELECT worker_id FROM procrastinate_jobs WHERE id = %s", job_id) == [(live,)]


def test_a_worker_outlives_a_database_restart(own_cluster: Cluster, tmp_path: Path) -> None:
    """PostgreSQL stops for a few seconds: the worker logs it, keeps trying, and sends the mail
    of an order completed after the restart (no process manager needed to bring it back)."""
    env = {k: v for k, v in os.environ.items() if k not in CONNECTION_ENV and not k.startswith("WORKER_")}
    env.update(
        WORKER_DATABASE_URL=own_cluster.url(WORKER_ROLE, "booking"), MAIL_DIR=str(tmp_path / "mail"),
        WORKER_HEARTBEAT_SECONDS="1", WORKER_STALLED_SECONDS="3",
    )  # fmt: skip
    log = tmp_path / "worker.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "worker"], cwd=ROOT, env=env, stdout=out, stderr=out)
    try:
        eventually(lambda: "Starting worker" in log.read_text(), "the worker to start")
        own_cluster.stop()
        eventually(lambda: "starting again in" in log.read_text(), "the worker to notice", timeout=30)
        own_cluster.start()
        with psycopg.connect(own_cluster.url("booking_gateway", "booking"), autocommit=True) as gw:
            order = paid_order(gw, quantity=1)
        eventually(lambda: (tmp_path / "mail" / f"{order['id']}.eml").exists(), "the mail after the restart")
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
