"""The confirmation e-mail of a PAID order (built from `api.confirmation_email`) and the refund
notice of a REFUNDED one (`api.refund_email`), sent by SMTP (stdlib smtplib, in a thread) or
written as a `.eml` file when no SMTP_URL is set.

What we guarantee: at least once. The job reads the order (one call), sends with no database
transaction open, then records the delivery (another call). A crash after the server accepted
the mail and before `api.record_confirmation_sent` committed sends one extra copy on the retry
(same Message-ID, so a mail client shows them as one); a job whose row says sent sends nothing.
"""

from __future__ import annotations

import html
import io
import ipaddress
import os
import re
import smtplib
import ssl
import tempfile
from datetime import datetime
from decimal import Decimal
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import segno

from worker.config import SmtpServer

SMTP_TIMEOUT_SECONDS = 30
DOOR_TEXT = (
    "At the door, show the QR code of each ticket (on your phone or printed); the ticket code "
    "under it works too. Each code lets one person in, once."
)


QR_SCALE, QR_BORDER = 6, 4


def qr_png(code: str) -> tuple[bytes, int]:
    """The ticket's QR code as PNG, exactly these parameters (tests compare the bytes), and its
    width (= height) in pixels."""
    qr = segno.make(code, error="m")
    buf = io.BytesIO()
    qr.save(buf, kind="png", scale=QR_SCALE, border=QR_BORDER)
    width, _ = qr.symbol_size(scale=QR_SCALE, border=QR_BORDER)
    return buf.getvalue(), int(width)


def message_id(order_id: str) -> str:
    """Stable per order: a second copy after a crash is recognisably the same mail."""
    return f"<order-{order_id}@booking>"


def content_id(code: str) -> str:
    return f"<ticket-{code}@booking>"


# Runs of whitespace and control characters (C0, DEL, C1; line and paragraph separators): a header
# value built from data (a buyer's name, an event's name) becomes one line of single spaces.
_FOLD = re.compile(r"[\s\x00-\x1f\x7f-\x9f\u2028\u2029]+")


def header_text(value: str) -> str:
    """`value` safe for a header: a CR or LF in a name typed through psql (or any control character)
    would make EmailMessage refuse the header, and the mail would never go."""
    return _FOLD.sub(" ", value).strip()


def _when(value: str | None) -> str:
    if not value:
        return "to be announced"
    moment = datetime.fromisoformat(value)
    return moment.strftime("%A %d %B %Y, %H:%M %Z").strip()


def build_message(data: dict[str, Any], mail_from: str) -> EmailMessage:
    """Text and HTML alternatives; one inline PNG per ticket, referenced from the HTML by cid."""
    event: dict[str, Any] = data["event"]
    tickets: list[dict[str, Any]] = data["tickets"]
    order: dict[str, Any] = data.get("order") or {}
    name = data.get("full_name") or ""
    when = _when(event.get("start_time"))
    where = event.get("location") or ""
    total = order.get("total_amount")

    msg = EmailMessage()
    # Every header built from data goes through header_text; the display name through Address, which
    # quotes (commas, quotes) and encodes (non-ASCII) it as RFC 5322/2047 want.
    msg["Subject"] = header_text(f"Your tickets for {event['name']}")
    msg["From"] = mail_from
    msg["To"] = Address(display_name=header_text(name), addr_spec=data["recipient"])
    msg["Message-ID"] = message_id(data["order_id"])
    msg["Date"] = format_datetime(datetime.now().astimezone())

    lines = [
        f"Hello {name}," if name else "Hello,",
        "",
        f"Thank you for your order {data['order_id']}. Your tickets for {event['name']}:",
        f"When: {when}",
        *([f"Where: {where}"] if where else []),
        *([f"Total paid: {total}"] if total else []),
        "",
        *(f"  {t['ticket_code']}  ({t.get('ticket_type_name') or 'ticket'})" for t in tickets),
        "",
        DOOR_TEXT,
        "The QR codes are in the HTML version of this mail.",
    ]
    msg.set_content("\n".join(lines) + "\n")

    e = html.escape
    qrs = {t["ticket_code"]: qr_png(t["ticket_code"]) for t in tickets}
    rows = "".join(
        f'<tr><td style="padding:12px 0"><img src="cid:{content_id(t["ticket_code"])[1:-1]}" '
        f'alt="QR code of ticket {e(t["ticket_code"])}" width="{qrs[t["ticket_code"]][1]}" '
        f'height="{qrs[t["ticket_code"]][1]}"></td>'
        f'<td style="padding:12px"><strong style="font-family:monospace;font-size:16px">{e(t["ticket_code"])}'
        f"</strong><br>{e(t.get('ticket_type_name') or 'ticket')}</td></tr>"
        for t in tickets
    )
    body = f"""<!DOCTYPE html>
<html><body style="font-family:sans-serif;color:#222">
<p>{"Hello " + e(name) + "," if name else "Hello,"}</p>
<p>Thank you for your order <code>{e(data["order_id"])}</code>. Your tickets for
<strong>{e(event["name"])}</strong>:</p>
<p>When: {e(when)}{"<br>Where: " + e(where) if where else ""}{"<br>Total paid: " + e(str(total)) if total else ""}</p>
<table>{rows}</table>
<p>{e(DOOR_TEXT)}</p>
</body></html>
"""
    msg.add_alternative(body, subtype="html")
    html_part = next(part for part in msg.iter_parts() if part.get_content_type() == "text/html")
    for t in tickets:
        code = t["ticket_code"]
        html_part.add_related(
            qrs[code][0], maintype="image", subtype="png", cid=content_id(code), filename=f"{code}.png",
            disposition="inline",
        )  # fmt: skip
    return msg


def refund_message_id(order_id: str) -> str:
    """Stable per order, and not the confirmation's: the refund notice is a mail of its own."""
    return f"<refund-{order_id}@booking>"


REFUND_REASONS = {
    "admin": "The organizer refunded your order.",
    "event_cancelled": "The event was cancelled.",
    "late_no_seats": "Your payment reached us after your order's time to pay had run out, and its "
    "tickets were no longer available.",
    "late_over_cap": "Your payment reached us after your order's time to pay had run out, and its "
    "tickets would have passed the number of tickets one buyer may have.",
}


MONEY_BACK_TEXT = (
    "The money goes back to the account or card you paid with; your bank or wallet may take a few days to show it."
)


def money(amount: str | None) -> str:
    """`300000.00` -> `300,000 VND` (`150000.50` -> `150,000.50 VND`)."""
    if not amount:
        return ""
    value = Decimal(amount)
    text = f"{value:,.0f}" if value == value.to_integral_value() else f"{value:,.2f}"
    return f"{text} VND"


def build_refund_message(data: dict[str, Any], mail_from: str) -> EmailMessage:
    """The refund notice of a REFUNDED order (api.refund_email): which order, which event, how much
    and why; text and HTML alternatives, no images."""
    event: dict[str, Any] = data.get("event") or {}
    refund: dict[str, Any] = data.get("refund") or {}
    name = data.get("full_name") or ""
    event_name = event.get("name") or "your event"
    amount = money(refund.get("amount") or (data.get("order") or {}).get("total_amount"))
    why = REFUND_REASONS.get(str(refund.get("reason")), "")
    had_tickets = refund.get("reason") in ("admin", "event_cancelled")

    msg = EmailMessage()
    msg["Subject"] = header_text(f"Your order for {event_name} was refunded")
    msg["From"] = mail_from
    msg["To"] = Address(display_name=header_text(name), addr_spec=data["recipient"])
    msg["Message-ID"] = refund_message_id(data["order_id"])
    msg["Date"] = format_datetime(datetime.now().astimezone())

    lines = [
        f"Hello {name}," if name else "Hello,",
        "",
        f"Your order {data['order_id']} for {event_name} ({_when(event.get('start_time'))}) was refunded.",
        *([f"Amount refunded: {amount}"] if amount else []),
        *([why] if why else []),
        *(["Its tickets are no longer valid."] if had_tickets else []),
        "",
        MONEY_BACK_TEXT,
    ]
    msg.set_content("\n".join(lines) + "\n")
    e = html.escape
    body = f"""<!DOCTYPE html>
<html><body style="font-family:sans-serif;color:#222">
<p>{"Hello " + e(name) + "," if name else "Hello,"}</p>
<p>Your order <code>{e(data["order_id"])}</code> for <strong>{e(event_name)}</strong>
({e(_when(event.get("start_time")))}) was refunded.</p>
{"<p>Amount refunded: <strong>" + e(amount) + "</strong></p>" if amount else ""}
{"<p>" + e(why) + "</p>" if why else ""}
{"<p>Its tickets are no longer valid.</p>" if had_tickets else ""}
<p>{e(MONEY_BACK_TEXT)}</p>
</body></html>
"""
    msg.add_alternative(body, subtype="html")
    return msg


class CleartextLoginRefused(smtplib.SMTPException):
    """SMTP_URL has a user name, the server is not on this machine and offers no STARTTLS: the
    password would cross the network in clear. Raised before AUTH (the attempt fails and is
    retried, the error recorded in order_emails.last_error)."""


def login_needs_tls(server: SmtpServer) -> bool:
    """Whether logging in to `server` requires TLS first: yes when SMTP_URL carries a user name,
    unless the connection is TLS from the start (smtps://) or the host is a loopback address
    (`localhost`, 127.0.0.0/8, ::1: a local relay, nothing crosses the network)."""
    if not server.user or server.tls:
        return False
    host = server.host.lower().rstrip(".")
    if host == "localhost":
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        return True


def send_smtp(server: SmtpServer, msg: EmailMessage, envelope_from: str, recipient: str) -> None:
    """Blocking (run it in a thread). smtp://: STARTTLS when the server offers it, and required
    before logging in to a server not on this machine (login_needs_tls); smtps://: TLS from the
    start. Every failure raises for a retry, 5xx answers too: the server named by
    SMTP_URL is our relay, and its 5xx (relay denied, authentication, a policy, a refused
    recipient) is usually its configuration, which someone fixes; the retries stop after 24 h
    and the failed job waits for a DBA."""
    context = ssl.create_default_context()
    client: smtplib.SMTP
    if server.tls:
        client = smtplib.SMTP_SSL(server.host, server.port, timeout=SMTP_TIMEOUT_SECONDS, context=context)
    else:
        client = smtplib.SMTP(server.host, server.port, timeout=SMTP_TIMEOUT_SECONDS)
    with client:
        client.ehlo()
        if not server.tls and client.has_extn("starttls"):
            client.starttls(context=context)
            client.ehlo()
        elif login_needs_tls(server):
            raise CleartextLoginRefused(
                f"{server.host} offers no STARTTLS: not sending the SMTP password in clear "
                "(use smtps://, or a server that offers STARTTLS)"
            )
        if server.user:
            client.login(server.user, server.password or "")
        client.send_message(msg, from_addr=envelope_from, to_addrs=[recipient])


def write_eml(folder: Path, order_id: str, msg: EmailMessage) -> Path:
    """`folder/<order_id>.eml`, written whole or not at all (a temp file renamed into place)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{order_id}.eml"
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{order_id}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(msg.as_bytes())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
