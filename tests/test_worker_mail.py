"""Confirmation e-mails end to end: a PAID order, the real worker (in this process, as the
booking_worker role), a real SMTP server (aiosmtpd on a free port) or the mail folder."""

from __future__ import annotations

import email
import email.policy
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import call
from tests.worker_support import (
    SmtpSink,
    jobs_of,
    owner_rows,
    paid_order,
    run_until,
    run_until_idle,
    segno_png,
    settings_for,
    smtp_server,
)
from worker.config import WORKER_ROLE


@pytest.fixture
def smtp() -> Iterator[tuple[SmtpSink, int]]:
    with smtp_server(SmtpSink()) as server:
        yield server


def codes_of(order: dict[str, Any]) -> set[str]:
    return {t["ticket_code"] for t in order["tickets"]}


def check_confirmation(msg: EmailMessage, order: dict[str, Any]) -> None:
    """To the buyer; text and HTML naming the event and every ticket code; exactly one inline
    PNG per ticket, referenced from the HTML, equal to segno's QR code of that ticket's code."""
    codes = codes_of(order)
    assert order["buyer"]["email"] in msg["To"]
    assert msg["Message-ID"] == f"<order-{order['id']}@booking>"
    text = msg.get_body(("plain",))
    html = msg.get_body(("html",))
    assert text is not None and html is not None
    text_body, html_body = text.get_content(), html.get_content()
    for body in (text_body, html_body):
        assert order["event"]["name"] in body
        assert all(code in body for code in codes), body
    images = [part for part in msg.walk() if part.get_content_type() == "image/png"]
    assert len(images) == len(codes)
    by_code = {}
    for part in images:
        cid = part["Content-ID"]
        code = cid.removeprefix("<ticket-").removesuffix("@booking>")
        assert f"cid:ticket-{code}@booking" in html_body
        assert part.get_filename() == f"{code}.png"
        by_code[code] = part.get_content()
    assert set(by_code) == codes
    for code, png in by_code.items():
        assert png == segno_png(code), f"the QR image of {code} is not segno's for that code"


def test_a_paid_order_gets_exactly_one_mail_with_a_qr_per_ticket(
    gw: psycopg.Connection, dbname: str, smtp: tuple[SmtpSink, int], tmp_path: Path
) -> None:
    sink, port = smtp
    order = paid_order(gw, quantity=3)
    settings = settings_for(dbname, tmp_path / "mail", smtp_url=f"smtp://127.0.0.1:{port}")
    run_until(settings, lambda: sink.received, "the confirmation mail")
    run_until_idle(settings)  # nothing else is due: still one mail

    assert len(sink.received) == 1
    got = sink.received[0]
    assert got.rcpt_tos == [order["buyer"]["email"]]
    assert got.mail_from == "tickets@booking.localhost"
    check_confirmation(got.message, order)
    (sent_at, message_id, attempts, last_error), *_ = owner_rows(
        dbname, "SELECT sent_at, message_id, attempts, last_error FROM order_emails WHERE order_id = %s", order["id"]
    )
    assert sent_at is not None and message_id == f"<order-{order['id']}@booking>"
    assert (attempts, last_error) == (1, None)
    assert [(status, n) for _, status, n, _ in jobs_of(dbname, "send_confirmation")] == [
        ("succeeded", 1)
    ]  # runs, counted when each ends
    assert not (tmp_path / "mail").exists(), "with SMTP_URL nothing goes to the mail folder"


def test_without_smtp_url_the_mail_is_an_eml_file_in_the_mail_folder(
    gw: psycopg.Connection, dbname: str, tmp_path: Path
) -> None:
    order = paid_order(gw, quantity=2)
    folder = tmp_path / "mail"
    settings = settings_for(dbname, folder)
    assert settings.smtp_url is None
    run_until(settings, lambda: (folder / f"{order['id']}.eml").exists(), "the .eml file")

    assert [p.name for p in folder.iterdir()] == [f"{order['id']}.eml"], "one file, no temp files left"
    msg = email.message_from_bytes((folder / f"{order['id']}.eml").read_bytes(), policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    check_confirmation(msg, order)


def test_refused_twice_the_mail_arrives_on_a_retry(gw: psycopg.Connection, dbname: str, tmp_path: Path) -> None:
    refusing = SmtpSink(replies=["451 4.3.0 try again later", "554 5.3.0 not now"])
    with smtp_server(refusing) as (sink, port):
        order = paid_order(gw, quantity=1)
        settings = settings_for(dbname, tmp_path, smtp_url=f"smtp://127.0.0.1:{port}", mail_retry_base=0.2)
        run_until(settings, lambda: sink.received, "the mail after two refusals")
        assert sink.data_commands == 3 and len(sink.received) == 1
        check_confirmation(sink.received[0].message, order)
        (attempts, last_error, sent_at), *_ = owner_rows(
            dbname, "SELECT attempts, last_error, sent_at FROM order_emails WHERE order_id = %s", order["id"]
        )
        assert attempts == 3 and last_error is None and sent_at is not None
        assert [(status, n) for _, status, n, _ in jobs_of(dbname, "send_confirmation")] == [("succeeded", 3)]


def test_a_mail_recorded_sent_is_not_sent_again(
    gw: psycopg.Connection, connect: Any, dbname: str, smtp: tuple[SmtpSink, int], tmp_path: Path
) -> None:
    """A job whose order_emails row says sent (a retry after the server accepted, say) does nothing."""
    sink, port = smtp
    order = paid_order(gw, quantity=1)
    worker_conn = connect(WORKER_ROLE)
    assert call(worker_conn, "record_confirmation_sent", p_order_id=order["id"], p_message_id="<earlier@x>") is True
    settings = settings_for(dbname, tmp_path, smtp_url=f"smtp://127.0.0.1:{port}")
    run_until(settings, lambda: jobs_of(dbname, "send_confirmation")[0][1] == "succeeded", "the job to finish")
    assert sink.received == [] and sink.data_commands == 0
