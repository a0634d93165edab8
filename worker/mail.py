"""The confirmation e-mail of a PAID order: built from `api.confirmation_email`, sent by SMTP
(stdlib smtplib, in a thread) or written as a `.eml` file when no SMTP_URL is set.

What we guarantee: at least once. The job reads the order (one call), sends with no database
transaction open, then records the delivery (another call). A crash after the server accepted
the mail and before `api.record_confirmation_sent` committed sends one extra copy on the retry
(same Message-ID, so a mail client shows them as one); a job whose row says sent sends nothing.
"""

from __future__ import annotations

import html
import io
import os
import smtplib
import ssl
import tempfile
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime, formataddr
from pathlib import Path
from typing import Any

import segno

from worker.config import SmtpServer
from worker.retry import Permanent

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
    msg["Subject"] = f"Your tickets for {event['name']}"
    msg["From"] = mail_from
    msg["To"] = formataddr((name, data["recipient"])) if name else data["recipient"]
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


def send_smtp(server: SmtpServer, msg: EmailMessage, envelope_from: str, recipient: str) -> None:
    """Blocking (run it in a thread). smtp://: STARTTLS when the server offers it; smtps://: TLS
    from the start. A recipient refused with 5xx is Permanent (no retry: a DBA retries the job
    once the address or the server is fixed); every other failure raises for a retry."""
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
        if server.user:
            client.login(server.user, server.password or "")
        try:
            client.send_message(msg, from_addr=envelope_from, to_addrs=[recipient])
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            if codes and all(500 <= code < 600 for code in codes):
                raise Permanent(f"the server refused the recipient: {exc.recipients}") from exc
            raise


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
