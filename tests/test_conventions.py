"""STYLE.md as assertions: documented, search_path-pinned, registered errors, no overloads."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import psycopg
import pytest

from dbctl.migrate import ROOT
from worker.calls import WORKER_CALLS

REGISTRY = tomllib.loads((ROOT / "sql" / "errors.toml").read_text())
SQL_TEXT = "\n".join(p.read_text() for p in sorted((ROOT / "sql").rglob("*.sql")) if p.name != "schema.sql")


def test_every_api_function_documents_itself(owner: psycopg.Connection) -> None:
    rows = owner.execute(
        "SELECT p.oid::regprocedure::text FROM pg_proc p"
        " WHERE p.pronamespace = 'api'::regnamespace AND coalesce(obj_description(p.oid, 'pg_proc'), '') = ''"
    ).fetchall()
    assert rows == []


def test_every_api_function_pins_search_path(owner: psycopg.Connection) -> None:
    rows = owner.execute(
        "SELECT p.oid::regprocedure::text FROM pg_proc p"
        " WHERE p.pronamespace = 'api'::regnamespace"
        "   AND NOT EXISTS (SELECT 1 FROM unnest(p.proconfig) c WHERE c LIKE 'search_path=%pg_temp')"
    ).fetchall()
    assert rows == []


TABLES = (
    "users|events|ticket_types|order_reservations|orders|order_items|payments|tickets"
    "|order_emails|webhooks|webhook_deliveries|webhook_attempts|procrastinate_[a-z_0-9]+"
)
UNQUALIFIED = re.compile(rf"\b(FROM|JOIN|UPDATE|INTO|TABLE)\s+({TABLES})\b|(?<!public\.)gen_random_bytes\(", re.I)


def test_internal_helpers_have_no_set_clause_and_qualify_every_table(owner: psycopg.Connection) -> None:
    """Helpers run inside api functions (search_path pinned there); without a SET clause the
    planner can inline them, so they must not depend on search_path at all."""
    rows = owner.execute(
        "SELECT p.oid::regprocedure::text, p.proconfig, p.prosecdef, p.prosrc FROM pg_proc p"
        " WHERE p.pronamespace = 'internal'::regnamespace"
    ).fetchall()
    assert rows
    for signature, config, secdef, source in rows:
        assert config is None and not secdef, signature
        assert not UNQUALIFIED.search(source), (signature, UNQUALIFIED.search(source))


def test_the_unqualified_pattern_catches_what_it_should() -> None:
    assert UNQUALIFIED.search("UPDATE ticket_types SET") and UNQUALIFIED.search("x FROM users u")
    assert UNQUALIFIED.search("encode(gen_random_bytes(10), 'hex')")
    assert not UNQUALIFIED.search("FROM public.users") and not UNQUALIFIED.search("public.gen_random_bytes(1)")


def test_security_definer_only_in_api_and_owned_by_the_owner(owner: psycopg.Connection) -> None:
    rows = owner.execute(
        "SELECT p.oid::regprocedure::text, pg_get_userbyid(p.proowner) FROM pg_proc p"
        " WHERE p.prosecdef AND p.pronamespace <> 'api'::regnamespace"
        "    OR (p.pronamespace = 'api'::regnamespace AND (NOT p.prosecdef"
        "        OR pg_get_userbyid(p.proowner) <> 'booking_owner'))"
    ).fetchall()
    assert rows == []


def test_no_overloads_in_api(owner: psycopg.Connection) -> None:
    rows = owner.execute(
        "SELECT proname FROM pg_proc WHERE pronamespace = 'api'::regnamespace GROUP BY proname HAVING count(*) > 1"
    ).fetchall()
    assert rows == []


def test_every_raised_errcode_is_registered() -> None:
    used = set(re.findall(r"ERRCODE\s*=\s*'([0-9A-Z]{5})'", SQL_TEXT))
    used |= set(re.findall(r"'(BK[0-9A-Z]{3})'", SQL_TEXT))  # also codes chosen in CASE expressions
    assert used, "the pattern found nothing: it is broken"
    assert used <= set(REGISTRY), used - set(REGISTRY)


def test_no_bare_raise_exception() -> None:
    bare = re.findall(r"RAISE EXCEPTION\s+'", SQL_TEXT)
    assert bare == [], "RAISE EXCEPTION 'text' is P0001: use ERRCODE from sql/errors.toml"


def test_registry_is_well_formed() -> None:
    codes = [v["code"] for v in REGISTRY.values()]
    assert len(codes) == len(set(codes))
    for sqlstate, entry in REGISTRY.items():
        assert re.fullmatch(r"BK[0-9A-Z]{3}", sqlstate)
        assert 400 <= entry["status"] <= 599 and entry["meaning"]


def test_gateway_role_can_execute_the_api_functions_but_no_dba_only_or_internal_one(owner: psycopg.Connection) -> None:
    """sql/gateway_grants.sql grants exactly the routed functions (test_gateway compares them
    with the route table); here: never a DBA-only one, never the worker's, never a helper,
    never PUBLIC."""
    rows = owner.execute(
        "SELECT p.oid::regprocedure::text, n.nspname,"
        "       coalesce(obj_description(p.oid, 'pg_proc'), '') ~ '^[(](DBA-only|worker|monitor)[)]',"
        "       has_function_privilege('booking_gateway', p.oid, 'EXECUTE'),"
        "       coalesce(array_to_string(p.proacl, ','), '') ~ '(^|,)=X'"
        "  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname IN ('api', 'internal')"
    ).fetchall()
    wrong = [r[0] for r in rows if r[3] != (r[1] == "api" and not r[2]) or r[4]]
    assert rows and wrong == []


def test_worker_role_executes_exactly_the_worker_calls(owner: psycopg.Connection) -> None:
    """sql/worker_grants.sql grants exactly WORKER_CALLS (worker/calls.py), each documented
    "(worker)"; of schema internal nothing."""
    rows = owner.execute(
        "SELECT p.proname, n.nspname, coalesce(obj_description(p.oid, 'pg_proc'), '') LIKE '(worker)%'"
        "  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
        " WHERE n.nspname IN ('api', 'internal') AND has_function_privilege('booking_worker', p.oid, 'EXECUTE')"
    ).fetchall()
    assert {r[0] for r in rows} == WORKER_CALLS and {r[1] for r in rows} == {"api"}
    assert all(r[2] for r in rows), rows
    documented = owner.execute(
        "SELECT proname FROM pg_proc WHERE pronamespace = 'api'::regnamespace"
        " AND obj_description(oid, 'pg_proc') LIKE '(worker)%'"
    ).fetchall()
    assert {r[0] for r in documented} == WORKER_CALLS
    assert not owner.execute("SELECT has_schema_privilege('booking_worker', 'internal', 'USAGE')").fetchone()[0]  # type: ignore[index]
    assert not owner.execute("SELECT has_schema_privilege('booking_gateway', 'internal', 'USAGE')").fetchone()[0]  # type: ignore[index]


def test_function_files_are_named_by_domain() -> None:
    files = sorted(p.name for p in (ROOT / "sql" / "functions").glob("*.sql"))
    assert all(re.fullmatch(r"\d\d_[a-z_]+\.sql", f) for f in files), files


def test_migrations_have_no_psql_meta_commands() -> None:
    for path in Path(ROOT / "sql" / "migrations").glob("*.sql"):
        assert not re.search(r"^\\", path.read_text(), re.MULTILINE), path


DBA_ONLY_CALLS = {
    "set_user_role": "'a@b.co', 'admin'",
    "expire_reservations": "",
    "cleanup_reservations": "",
    "check_invariants": "",
    "buyer_counts": "'a@b.co'",
    "purge_idempotency_keys": "",
    "waiting_room": "gen_random_uuid()",
    "set_waiting_room_rate": "gen_random_uuid(), 10",
    "pause_waiting_room": "gen_random_uuid()",
    "resume_waiting_room": "gen_random_uuid()",
    "waiting_room_audit": "gen_random_uuid()",
    "rotate_admission_secret": "",
    "open_waiting_rooms": "",
    "job_queue": "",
    "failed_jobs": "",
    "retry_job": "1",
    "retry_failed_jobs": "",
    "resend_confirmation": "gen_random_uuid()",
    "set_payment_mode": "'provider'",
    "payment_mode": "",
    "expire_pending_orders": "",
    "pending_payments": "",
    "payment_inbox": "",
    "stuck_refunds": "",
    "unresolved_payments": "",
    "resolve_payment_event": "1, 'x'",
}


def test_the_gateway_role_cannot_run_dba_only_functions(gw: psycopg.Connection) -> None:
    """Logged in as booking_gateway: whoever holds its credential cannot make anyone an admin."""
    for function, args in DBA_ONLY_CALLS.items():
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            gw.execute(f"SELECT api.{function}({args})")
