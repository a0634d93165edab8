"""`python -m worker` (`make worker`; `make run` starts one next to the gateway): run a worker
until SIGTERM/SIGINT. Settings from the environment (worker/config.py, README); a wrong value
stops it at once with a message naming the variable, exit status 1."""

from __future__ import annotations

import asyncio
import logging
import sys

from gateway.config import ConfigError
from gateway.logs import JsonFormatter
from worker.app import WorkerError, run
from worker.config import WorkerSettings

log = logging.getLogger("worker")


def setup_logging() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    logging.getLogger("worker").setLevel(logging.INFO)
    # procrastinate.worker: each job's start and outcome (INFO); the rest of it only when wrong
    logging.getLogger("procrastinate").setLevel(logging.WARNING)
    logging.getLogger("procrastinate.worker").setLevel(logging.INFO)


def main() -> int:
    setup_logging()
    try:
        settings = WorkerSettings.from_env()
    except ConfigError as exc:
        log.critical("%s", exc)
        return 1
    smtp = settings.smtp
    log.info(
        "worker starting: queues %s, concurrency %d, mail %s",
        ",".join(settings.queues), settings.concurrency,
        f"by SMTP to {smtp.describe()}" if smtp else f"written as .eml files in {settings.mail_dir}",
    )  # fmt: skip
    try:
        asyncio.run(run(settings))
    except WorkerError as exc:
        log.critical("%s", exc)
        return 1
    log.info("worker stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
