"""Pages of a list: `limit`, an opaque keyset `cursor`, and the `Link: <...>; rel="next"` header.

A cursor names the last item of the previous page by its sort key (events: start_time and id;
orders: created_at and id), so pages stay stable while items are added. It is base64url of
that pair; a client only copies it from the Link header. The body stays a JSON array.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request

from gateway.errors import validation_failed
from gateway.models import UUID_PATTERN, clean_text
from gateway.routes import PAGE_DEFAULT, PAGE_MAX

CURSOR_MAX = 200
_UUID = re.compile(UUID_PATTERN)
_DIGITS = re.compile(r"[0-9]{1,6}")


@dataclass(frozen=True)
class Page:
    body: str  # the JSON array
    next_cursor: str | None  # None on the last page
    etag: str


def page_limit(request: Request) -> int:
    raw = request.query_params.get("limit")
    if raw is None:
        return PAGE_DEFAULT
    if not _DIGITS.fullmatch(raw) or not 1 <= int(raw) <= PAGE_MAX:
        raise validation_failed(f"limit: must be a whole number from 1 to {PAGE_MAX}")
    return int(raw)


def page_after(request: Request) -> tuple[datetime, str] | None:
    """The (sort time, id) a cursor names, or None for the first page."""
    raw = request.query_params.get("cursor")
    if raw is None:
        return None
    clean_text("cursor", raw, CURSOR_MAX)
    try:
        time_text, item_id = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
        after = datetime.fromisoformat(time_text)
        if after.tzinfo is None or not _UUID.fullmatch(item_id):
            raise ValueError(item_id)
        after = after.astimezone(UTC)
    except (ValueError, TypeError, binascii.Error, OverflowError, UnicodeDecodeError) as exc:
        raise validation_failed('cursor: not a cursor this service gave (copy it from the Link rel="next")') from exc
    return after, item_id


def make_page(text: str | None, limit: int, sort_key: str) -> Page:
    """`text` is what the SQL returned for limit + 1 items: the extra one says a next page exists."""
    body = text or "[]"
    next_cursor = None
    items: list[Any] = json.loads(body)
    if len(items) > limit:
        items = items[:limit]
        last = items[-1]
        next_cursor = _encode(last[sort_key], last["id"])
        body = json.dumps(items, ensure_ascii=False, separators=(",", ":"))
    # The tag covers the next page's cursor too: a page whose items are unchanged but which
    # gained a next page (items added after it) is a different answer (its Link header).
    etag = '"' + hashlib.blake2b(f"{body}\n{next_cursor or ''}".encode(), digest_size=16).hexdigest() + '"'
    return Page(body, next_cursor, etag)


def next_link(request: Request, cursor: str) -> str:
    params = [(k, v) for k, v in request.query_params.multi_items() if k != "cursor"] + [("cursor", cursor)]
    return f'<{request.url.path}?{urlencode(params)}>; rel="next"'


def etag_matches(request: Request, etag: str) -> bool:
    """If-None-Match (RFC 9110 13.1.2): `*` or any of the listed tags, compared weakly."""
    header = request.headers.get("if-none-match")
    if header is None:
        return False
    if header.strip() == "*":
        return True
    return any(tag.strip().removeprefix("W/") == etag for tag in header.split(","))


def _encode(sort_value: str, item_id: str) -> str:
    raw = json.dumps([sort_value, item_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")
