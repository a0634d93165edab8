"""Real parts for the worker tests: an SMTP server (aiosmtpd), an HTTP receiver (http.server),
paid orders made through the api functions, and worker settings for the test database."""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import io
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg
import segno
from aiosmtpd.controller import Controller

from dbctl.throwaway import free_port
from gateway.payments.providers import ProviderConfig
from tests.conftest import OWNER_ROLE, call, url_for
from tests.factories import make_ticket_type, make_user, reserve
from worker import app as worker_app
from worker.config import WORKER_ROLE, WorkerSettings

WAIT_SECONDS = 30.0


def eventually(check: Callable[[], Any], what: str, timeout: float = WAIT_SECONDS, step: float = 0.1) -> Any:
    """Poll until check() returns something truthy; that value."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(step)


def segno_png(code: str) -> bytes:
    """The documented QR parameters, straight from segno (not through the worker's code)."""
    buf = io.BytesIO()
    segno.make(code, error="m").save(buf, kind="png", scale=6, border=4)
    return buf.getvalue()


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    content: bytes

    @property
    def message(self) -> EmailMessage:
        msg = email.message_from_bytes(self.content, policy=email.policy.default)
        assert isinstance(msg, EmailMessage)
        return msg


@dataclass
class SmtpSink:
    """aiosmtpd handler. `replies`: SMTP answers for the first DATA commands (then 250);
    `refuse_rcpt`: an answer for every RCPT while set; `hold`: the first DATA waits until
    `release` is set, then answers 421 without keeping the mail (its client is gone by then),
    or with `keep_held` keeps it and answers 250."""

    replies: list[str] = field(default_factory=list)
    refuse_rcpt: str | None = None
    hold: bool = False
    keep_held: bool = False
    received: list[Received] = field(default_factory=list)
    data_commands: int = 0
    entered: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: list[str]) -> str:
        if self.refuse_rcpt:
            return self.refuse_rcpt
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.data_commands += 1
        if self.hold and self.data_commands == 1:
            self.entered.set()
            await asyncio.to_thread(self.release.wait)
            if not self.keep_held:
                return "421 4.3.2 shutting down"
        elif self.replies:
            return self.replies.pop(0)
        self.received.append(Received(envelope.mail_from, list(envelope.rcpt_tos), bytes(envelope.original_content)))
        return "250 2.0.0 OK"


@contextlib.contextmanager
def smtp_server(sink: SmtpSink, hostname: str = "127.0.0.1", **options: Any) -> Iterator[tuple[SmtpSink, int]]:
    """aiosmtpd on a free port of `hostname`; `options` go to its Controller (authenticator, ...)."""
    port = free_port()
    controller = Controller(sink, hostname=hostname, port=port, **options)
    controller.start()
    try:
        yield sink, port
    finally:
        sink.release.set()
        controller.stop()


@dataclass
class Hit:
    path: str
    headers: dict[str, str]
    body: bytes


class Receiver:
    """A webhook receiver on 127.0.0.1: records each POST, answers the scripted statuses
    (then 200)."""

    def __init__(self, statuses: list[int] | None = None) -> None:
        self.statuses = list(statuses or [])
        self.hits: list[Hit] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                receiver.hits.append(Hit(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/booking?src=test"


class SilentReceiver:
    """A TCP server on 127.0.0.1 that accepts connections, reads what comes, and never answers
    (a receiver that hangs)."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.accepted = threading.Event()
        self.conns: list[socket.socket] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:  # closed
                return
            self.conns.append(conn)
            self.accepted.set()

    def __enter__(self) -> SilentReceiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the accept() on Linux
        self.sock.close()
        for conn in self.conns:
            conn.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"


def paid_order(gw: psycopg.Connection, quantity: int = 2) -> dict[str, Any]:
    """A buyer, an event, and a completed (PAID) order of `quantity` tickets; the order JSON
    with `buyer` added."""
    buyer = make_user(gw)
    tt = make_ticket_type(gw, quantity=50)
    res = reserve(gw, buyer, tt, quantity)
    order: dict[str, Any] = call(
        gw, "complete_booking", p_user_id=buyer["id"], p_reservation_id=res["id"], p_payment_method="MOMO"
    )
    order["buyer"] = buyer
    order["event"] = tt["event"]
    return order


def settings_for(dbname: str, mail_dir: Path, **changes: Any) -> WorkerSettings:
    values: dict[str, Any] = {
        "database_url": url_for(dbname, WORKER_ROLE),
        "mail_dir": mail_dir,
        "concurrency": 4,
        "mail_retry_base": 0.2,
        "webhook_retry_base": 0.2,
        "heartbeat": 1.0,
        "stalled": 3.0,
        "shutdown": 10.0,
    }
    values.update(changes)
    return WorkerSettings(**values)


def run_until_idle(settings: WorkerSettings, providers: ProviderConfig | None = None) -> None:
    """One in-process worker run: what is due now, then it returns. `providers`: the payment
    providers' endpoints and credentials (default: the environment's)."""
    asyncio.run(worker_app.run(settings, wait=False, install_signal_handlers=False, provider_config=providers))


def run_until(settings: WorkerSettings, check: Callable[[], Any], what: str, timeout: float = WAIT_SECONDS,
              providers: ProviderConfig | None = None) -> Any:  # fmt: skip
    """In-process worker runs until check() is truthy (retries come due between runs)."""

    def step() -> Any:
        run_until_idle(settings, providers)
        return check()

    return eventually(step, what, timeout, step=0.1)


def owner_rows(dbname: str, query: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(url_for(dbname, OWNER_ROLE), autocommit=True) as conn:
        return conn.execute(query, params).fetchall()  # type: ignore[arg-type]


def jobs_of(dbname: str, task: str) -> list[tuple[Any, ...]]:
    """(id, status, attempts, args) of the task's jobs, oldest first."""
    return owner_rows(
        dbname, "SELECT id, status::text, attempts, args FROM procrastinate_jobs WHERE task_name = %s ORDER BY id", task
    )
