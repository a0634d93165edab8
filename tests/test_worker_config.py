"""The worker's settings and retry rule: read by their documented names, wrong values refused
naming the variable (never echoing a password), retries lasting at least 24 hours."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from psycopg.conninfo import conninfo_to_dict

from dbctl.migrate import ROOT
from gateway.config import ConfigError
from worker.config import WorkerSettings
from worker.retry import HORIZON_SECONDS, MAIL_CAP_SECONDS, WEBHOOK_CAP_SECONDS, runs_for, wait_before

BASE = {"WORKER_DATABASE_URL": "postgresql://booking_worker@127.0.0.1:5432/booking"}


def refused(pattern: str, **env: str) -> str:
    with pytest.raises(ConfigError) as info:
        WorkerSettings.from_env({**BASE, **env})
    message = str(info.value)
    assert re.search(pattern, message), message
    return message


def test_every_variable_is_read_by_its_documented_name(tmp_path: Path) -> None:
    s = WorkerSettings.from_env({
        **BASE, "SMTP_URL": "smtps://me%40x.org:p%3Ass@mail.example.com", "MAIL_FROM": "Tix <t@example.org>",
        "MAIL_DIR": str(tmp_path), "WEBHOOK_ALLOW_PRIVATE": "yes", "WORKER_CONCURRENCY": "3",
        "WORKER_QUEUES": "mail, webhooks", "MAIL_RETRY_BASE_SECONDS": "2", "WEBHOOK_RETRY_BASE_SECONDS": "4",
        "WORKER_HEARTBEAT_SECONDS": "5", "WORKER_STALLED_SECONDS": "12", "WORKER_SHUTDOWN_SECONDS": "7",
        "WEBHOOK_TIMEOUT_SECONDS": "2.5",
    })  # fmt: skip
    smtp = s.smtp
    assert smtp is not None
    assert (smtp.tls, smtp.host, smtp.port, smtp.user, smtp.password) == (
        True,
        "mail.example.com",
        465,
        "me@x.org",
        "p:ss",
    )
    assert "p:ss" not in repr(smtp) + repr(s)
    assert (s.mail_from, s.envelope_from, s.mail_dir, s.webhook_allow_private) == (
        "Tix <t@example.org>", "t@example.org", tmp_path, True,
    )  # fmt: skip
    assert (s.concurrency, s.queues, s.mail_retry_base, s.webhook_retry_base) == (3, ("mail", "webhooks"), 2, 4)
    assert (s.webhook_timeout, WorkerSettings.from_env(BASE).webhook_timeout) == (2.5, 10)
    assert (s.heartbeat, s.stalled, s.shutdown) == (5, 12, 7)
    section = (ROOT / "README.md").read_text().split("## Configuration", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"`([A-Z][A-Z0-9_]+)`", section))
    read = {name for names in WorkerSettings.env_names().values() for name in names}
    assert read <= documented, read - documented


def test_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("BOOKING_STATE_DIR", str(tmp_path))
    s = WorkerSettings.from_env(BASE)
    assert s.smtp is None and s.mail_dir == tmp_path / "mail"
    assert (s.concurrency, s.webhook_allow_private) == (10, False)
    assert s.queues == ("mail", "webhooks", "housekeeping", "payments")
    assert (s.mail_retry_base, s.webhook_retry_base, s.heartbeat, s.stalled, s.shutdown) == (5, 10, 10, 30, 30)
    assert s.envelope_from == "tickets@booking.localhost"


def test_without_worker_database_url_the_owner_url_with_the_worker_role() -> None:
    s = WorkerSettings.from_env({"DATABASE_URL": "postgresql://boss:secret@db:5433/booking?sslmode=require"})
    assert conninfo_to_dict(s.database_url.get_secret_value()) == {
        "user": "booking_worker", "host": "db", "port": "5433", "dbname": "booking", "sslmode": "require",
    }  # fmt: skip
    message = refused("WORKER_DATABASE_URL: is not set", WORKER_DATABASE_URL="")
    assert "DATABASE_URL" in message


def test_wrong_values_are_refused_naming_the_variable_and_no_password() -> None:
    message = refused("SMTP_URL: must start with smtp:// or smtps://", SMTP_URL="https://u:hunter2@mail.example.com")
    assert "hunter2" not in message
    assert "hunter2" not in refused("SMTP_URL: its port", SMTP_URL="smtp://u:hunter2@mail.example.com:99999")
    refused("SMTP_URL: needs a host", SMTP_URL="smtp://")
    refused("MAIL_FROM: must be an e-mail address.*'nobody'", MAIL_FROM="nobody")
    refused("WEBHOOK_ALLOW_PRIVATE: must be yes or no.*'maybe'", WEBHOOK_ALLOW_PRIVATE="maybe")
    refused("WORKER_CONCURRENCY", WORKER_CONCURRENCY="0")
    refused("WORKER_QUEUES: must be a comma-separated list of mail, webhooks, housekeeping, payments",
            WORKER_QUEUES="mail,x")  # fmt: skip
    refused("MAIL_RETRY_BASE_SECONDS", MAIL_RETRY_BASE_SECONDS="-1")
    refused("WEBHOOK_TIMEOUT_SECONDS", WEBHOOK_TIMEOUT_SECONDS="0")
    refused("WORKER_STALLED_SECONDS must be at least twice WORKER_HEARTBEAT_SECONDS", WORKER_STALLED_SECONDS="15")


def test_retries_are_capped_exponential_and_last_at_least_a_day() -> None:
    assert [wait_before(n, 5, MAIL_CAP_SECONDS) for n in range(10)] == [5, 10, 20, 40, 80, 160, 320, 640, 900, 900]
    for base, cap in ((5, MAIL_CAP_SECONDS), (10, WEBHOOK_CAP_SECONDS), (0.2, MAIL_CAP_SECONDS)):
        runs = runs_for(base, cap)
        waits = [wait_before(n, base, cap) for n in range(runs - 1)]
        assert sum(waits) >= HORIZON_SECONDS > sum(waits[:-1]), (base, cap)
    assert (runs_for(5, MAIL_CAP_SECONDS), runs_for(10, WEBHOOK_CAP_SECONDS)) == (104, 33)  # README says so
