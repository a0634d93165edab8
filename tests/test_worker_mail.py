"""Confirmation e-mails end to end: a PAID order, the real worker (in this process, as the
booking_worker role), a real SMTP server (aiosmtpd on a free port) or the mail folder."""

from __future__ import annotations

import email
import email.policy
import ipaddress
import socket
import uuid
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import psycopg
import pytest
from aiosmtpd.smtp import AuthResult, LoginPassword

from tests.conftest import call
from tests.factories import make_event, reserve
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
from worker import mail
from worker.config import WORKER_ROLE, SmtpServer


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


def test_control_characters_in_names_do_not_stop_the_mail_nor_add_headers(
    gw: psycopg.Connection, dbname: str, smtp: tuple[SmtpSink, int], tmp_path: Path
) -> None:
    """A buyer's name with CR LF (typed through psql, or a client that slipped it in) and an
    event's name with a newline: EmailMessage refused such headers, so the mail never went.
    The values are collapsed to one line: one mail, to the buyer only, no Bcc header."""
    sink, port = smtp
    buyer = call(
        gw, "register_user", p_email=f"eve-{uuid.uuid4().hex[:8]}@example.com", p_password_hash="$argon2id$x",
        p_full_name="Eve\r\nBcc: x@y.z",
    )  # fmt: skip
    event = make_event(gw, publish=False)
    tt = call(gw, "create_ticket_type", p_event_id=event["id"], p_name="Standard", p_price="100.00",
              p_initial_quantity=5)  # fmt: skip
    call(gw, "publish_event", p_event_id=event["id"])
    owner_rows(dbname, "UPDATE users SET full_name = %s WHERE id = %s RETURNING id", "Eve\r\nBcc: x@y.z", buyer["id"])
    owner_rows(dbname, "UPDATE events SET name = %s WHERE id = %s RETURNING id", "Gala\nNight\t2026", event["id"])
    order = call(
        gw, "complete_booking", p_user_id=buyer["id"], p_reservation_id=reserve(gw, buyer, tt, 1)["id"],
        p_payment_method="MOMO",
    )  # fmt: skip
    settings = settings_for(dbname, tmp_path, smtp_url=f"smtp://127.0.0.1:{port}")
    run_until(settings, lambda: sink.received, "the confirmation mail")
    run_until_idle(settings)

    assert len(sink.received) == 1
    got = sink.received[0]
    assert got.rcpt_tos == [buyer["email"]], "the buyer only"
    msg = got.message
    assert msg["Bcc"] is None
    headers = got.content.split(b"\r\n\r\n", 1)[0].decode()
    assert "\nBcc:" not in headers and "\nbcc:" not in headers.lower()
    assert str(msg["Subject"]) == "Your tickets for Gala Night 2026"
    (to,) = msg["To"].addresses
    assert (to.display_name, to.addr_spec) == ("Eve Bcc: x@y.z", buyer["email"])
    (sent_at,), *_ = owner_rows(dbname, "SELECT sent_at FROM order_emails WHERE order_id = %s", order["id"])
    assert sent_at is not None


@pytest.mark.parametrize("name", ['Nguyễn Văn "Bảo", Jr.', "O'Brien, Ann <admin@example.com>", "José Ñ (Müller)"])
def test_odd_display_names_are_quoted_and_encoded(name: str) -> None:
    """Quotes, commas, angle brackets and non-ASCII in the name: the To header parses back to
    exactly one address, the recipient's, with the name as given."""
    data = {
        "order_id": str(uuid.uuid4()), "recipient": "buyer@example.com", "full_name": name,
        "event": {"name": 'Café, "Live"'}, "tickets": [], "order": {},
    }  # fmt: skip
    raw = mail.build_message(data, "Booking <tickets@example.com>").as_bytes()
    raw.decode("ascii")  # every header encoded (RFC 2047), the body too
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    (to,) = msg["To"].addresses
    assert (to.display_name, to.addr_spec) == (name, "buyer@example.com")
    assert str(msg["Subject"]) == 'Your tickets for Café, "Live"'


@pytest.mark.parametrize(
    ("url", "needs_tls"),
    [
        ("smtp://user:pw@mail.example.com:587", True),
        ("smtp://user:pw@10.0.0.5", True),
        ("smtp://user:pw@[2001:db8::1]:587", True),
        ("smtp://user:pw@localhost.example.com", True),
        ("smtp://user:pw@127.0.0.1:2525", False),
        ("smtp://user:pw@127.1.2.3", False),
        ("smtp://user:pw@[::1]:25", False),
        ("smtp://user:pw@LocalHost", False),
        ("smtps://user:pw@mail.example.com", False),  # TLS from the start
        ("smtp://mail.example.com", False),  # no login
    ],
)
def test_a_login_needs_tls_unless_the_server_is_on_this_machine(url: str, needs_tls: bool) -> None:
    assert mail.login_needs_tls(SmtpServer.parse(url)) is needs_tls


class Logins:
    """aiosmtpd authenticator: accepts user/secret, records every AUTH it sees."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def __call__(self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        pair = (auth_data.login.decode(), auth_data.password.decode())
        self.seen.append(pair)
        return AuthResult(success=pair == ("user", "s3cret"))


def test_credentials_on_loopback_without_starttls_still_log_in(
    gw: psycopg.Connection, dbname: str, tmp_path: Path
) -> None:
    logins = Logins()
    with smtp_server(SmtpSink(), authenticator=logins, auth_require_tls=False) as (sink, port):
        order = paid_order(gw, quantity=1)
        settings = settings_for(dbname, tmp_path, smtp_url=f"smtp://user:s3cret@127.0.0.1:{port}")
        run_until(settings, lambda: sink.received, "the mail after logging in")
        assert logins.seen == [("user", "s3cret")]
        assert sink.received[0].rcpt_tos == [order["buyer"]["email"]]


def non_loopback_ipv4() -> str | None:
    """This machine's address on its default route (no packet is sent), if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))
        except OSError:
            return None
        address = str(s.getsockname()[0])
    return None if ipaddress.ip_address(address).is_loopback else address


def test_credentials_are_never_sent_in_clear_to_a_server_off_this_machine(
    gw: psycopg.Connection, dbname: str, tmp_path: Path
) -> None:
    """The server listens on this machine's network address (not loopback), offers AUTH but no
    STARTTLS: the worker does not log in, sends nothing, records why and retries."""
    address = non_loopback_ipv4()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address")
    logins = Logins()
    with smtp_server(SmtpSink(), hostname=address, authenticator=logins, auth_require_tls=False) as (sink, port):
        order = paid_order(gw, quantity=1)
        settings = settings_for(dbname, tmp_path, smtp_url=f"smtp://user:s3cret@{address}:{port}")
        run_until(settings, lambda: jobs_of(dbname, "send_confirmation")[0][2] >= 1, "the first run to be recorded")
        assert logins.seen == [] and sink.received == [] and sink.data_commands == 0
        (attempts, last_error, sent_at), *_ = owner_rows(
            dbname, "SELECT attempts, last_error, sent_at FROM order_emails WHERE order_id = %s", order["id"]
        )
        assert attempts >= 1 and sent_at is None
        assert "CleartextLoginRefused" in last_error and "STARTTLS" in last_error
        assert jobs_of(dbname, "send_confirmation")[0][1] == "todo", "retried"
