"""The one place that builds SQL calls: `SELECT api.<function>(name => value, ...)`.

Arguments are always passed by name (no overloads in schema api) and as bind parameters;
identifiers go through psycopg.sql, never string formatting.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from psycopg import sql


def api_call(function: str, args: Mapping[str, Any], rows: bool = False) -> sql.Composed:
    """`SELECT api.f(...)` for one value, or `SELECT * FROM api.f(...)` for a set-returning one."""
    named = sql.SQL(", ").join(sql.SQL("{} => {}").format(sql.Identifier(name), sql.Placeholder(name)) for name in args)
    template = "SELECT * FROM {}.{}({})" if rows else "SELECT {}.{}({})"
    return sql.SQL(template).format(sql.Identifier("api"), sql.Identifier(function), named)


def api_call_bytes(function: str, args: Mapping[str, Any], rows: bool = False) -> bytes:
    """api_call() rendered once per function and argument names: building and rendering the
    Composed on every call cost the gateway ~25 us of CPU per database call (measured, issue 10)."""
    return _rendered(function, tuple(args), rows)


@functools.lru_cache(maxsize=1024)  # keys come from the code (function and argument names), not from clients
def _rendered(function: str, names: tuple[str, ...], rows: bool) -> bytes:
    # No connection: identifiers are quoted the standard way (the names are ASCII, the
    # connections UTF8); the same bytes psycopg renders from the Composed on a connection.
    return api_call(function, dict.fromkeys(names), rows).as_bytes(None)


# The bind parameter of fenced_call_bytes (never an api argument: those are all p_*).
FENCE = "replay_fence"


@functools.lru_cache(maxsize=64)
def fenced_call_bytes(function: str, names: tuple[str, ...]) -> bytes:
    """`SELECT api.f(...)` answering no row on a standby that has not replayed the WAL up to
    `%(replay_fence)s` (a pg_lsn as text): a catalogue read on the read pool (gateway/db.py
    ReadRouter). A primary, or a promoted standby, always answers."""
    query = sql.SQL(
        "{} WHERE NOT pg_catalog.pg_is_in_recovery() OR pg_catalog.pg_last_wal_replay_lsn() >= {}::pg_catalog.pg_lsn"
    ).format(api_call(function, dict.fromkeys(names)), sql.Placeholder(FENCE))
    return query.as_bytes(None)


def reserve_requests(requests: Iterable[tuple[str, str, int]]) -> str:
    """(user_id, ticket_type_id, quantity) triples as an `api.reserve_request[]` literal.

    Sent as text, PostgreSQL reads it as the parameter's type. UUIDs are re-formatted and
    quantities made integers here, so nothing in the literal can need quoting.
    """
    rows = (f'"({uuid.UUID(user)},{uuid.UUID(tt)},{int(quantity)})"' for user, tt, quantity in requests)
    return "{" + ",".join(rows) + "}"
