"""The one place that builds SQL calls: `SELECT api.<function>(name => value, ...)`.

Arguments are always passed by name (no overloads in schema api) and as bind parameters;
identifiers go through psycopg.sql, never string formatting.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from psycopg import sql


def api_call(function: str, args: Mapping[str, Any], rows: bool = False) -> sql.Composed:
    """`SELECT api.f(...)` for one value, or `SELECT * FROM api.f(...)` for a set-returning one."""
    named = sql.SQL(", ").join(sql.SQL("{} => {}").format(sql.Identifier(name), sql.Placeholder(name)) for name in args)
    template = "SELECT * FROM {}.{}({})" if rows else "SELECT {}.{}({})"
    return sql.SQL(template).format(sql.Identifier("api"), sql.Identifier(function), named)


def reserve_requests(requests: Iterable[tuple[str, str, int]]) -> str:
    """(user_id, ticket_type_id, quantity) triples as an `api.reserve_request[]` literal.

    Sent as text, PostgreSQL reads it as the parameter's type. UUIDs are re-formatted and
    quantities made integers here, so nothing in the literal can need quoting.
    """
    rows = (f'"({uuid.UUID(user)},{uuid.UUID(tt)},{int(quantity)})"' for user, tt, quantity in requests)
    return "{" + ",".join(rows) + "}"
