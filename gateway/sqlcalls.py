"""The one place that builds SQL calls: `SELECT api.<function>(name => value, ...)`.

Arguments are always passed by name (no overloads in schema api) and as bind parameters;
identifiers go through psycopg.sql, never string formatting.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from psycopg import sql


def api_call(function: str, args: Mapping[str, Any], rows: bool = False) -> sql.Composed:
    """`SELECT api.f(...)` for one value, or `SELECT * FROM api.f(...)` for a set-returning one."""
    named = sql.SQL(", ").join(sql.SQL("{} => {}").format(sql.Identifier(name), sql.Placeholder(name)) for name in args)
    template = "SELECT * FROM {}.{}({})" if rows else "SELECT {}.{}({})"
    return sql.SQL(template).format(sql.Identifier("api"), sql.Identifier(function), named)
